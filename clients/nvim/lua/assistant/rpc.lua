-- The daemon's wire protocol over its Unix socket: newline-delimited JSON-RPC 2.0 on
-- a vim.loop pipe. One shared connection; many requests in flight, matched by id;
-- notifications routed to their request by params.request_id, and pushed events (no
-- request_id) to the handlers registered with M.on(method, fn). Nothing here blocks:
-- reads are libuv callbacks, and every message is handled in the main loop through
-- vim.schedule, so handlers may touch buffers.
local uv = vim.uv or vim.loop
local M = {}

local START_TIMEOUT_MS = 15000

local function opts()
  return require("assistant").config
end

local conn = nil -- { pipe, state = "connecting"|"open", queue = {lines to send}, parts = {read chunks} }
local pending = {} -- id -> { method, on_done, on_notify, internal }
local next_id = 0
local handlers = {} -- method -> list of fn(params), for notifications without request_id
M.UNAVAILABLE = -1 -- not a protocol code: no daemon answered, or the connection broke

local function encode(v)
  return vim.json and vim.json.encode(v) or vim.fn.json_encode(v)
end

local function decode(s)
  return vim.json and vim.json.decode(s) or vim.fn.json_decode(s)
end

--- The socket path by the contract's rule (setup's `socket` first).
function M.socket_path()
  local configured = opts().socket
  if configured and configured ~= "" then
    return vim.fn.expand(configured)
  end
  local env = os.getenv("ASSISTANTD_SOCKET")
  if env and env ~= "" then
    return env
  end
  local runtime = os.getenv("XDG_RUNTIME_DIR")
  if not runtime or runtime == "" then
    if uv.os_uname().sysname == "Darwin" then
      runtime = uv.os_homedir() .. "/Library/Caches/TemporaryItems"
    else
      runtime = "/run/user/" .. uv.getuid()
    end
  end
  return runtime .. "/assistantd/assistantd.sock"
end

-- Call the handlers of a pushed event (or of a local "$/" one). A failing handler is
-- reported and stops neither the others nor the connection.
local function emit(method, params)
  for _, fn in ipairs(vim.list_slice(handlers[method] or {})) do -- a copy: handlers may remove themselves
    local ok, err = pcall(fn, params)
    if not ok then
      vim.notify(("assistant: %s handler failed: %s"):format(method, err), vim.log.levels.ERROR)
    end
  end
end

-- The daemon events some handler wants, sorted; local "$/..." names are never sent.
local function events()
  local out = {}
  for method, fns in pairs(handlers) do
    if #fns > 0 and not vim.startswith(method, "$/") then
      out[#out + 1] = method
    end
  end
  table.sort(out)
  return out
end

-- A daemon/subscribe request line for the current set. `fresh`: the first message of a
-- new connection, whose success tells "$/subscribed" handlers to catch up on what they
-- missed. A refusal (an older daemon) only means no pushed events: nothing to report.
local function subscription(fresh)
  next_id = next_id + 1
  local list = events()
  pending[next_id] = { method = "daemon/subscribe", internal = true, on_done = function(err, res)
    if not err and fresh then
      emit("$/subscribed", res)
    end
  end }
  local msg = { jsonrpc = "2.0", id = next_id, method = "daemon/subscribe", params = { events = list } }
  return encode(msg) .. "\n"
end

-- Fail every request in flight (the connection is gone) and forget the connection.
local function drop(reason)
  local c = conn
  conn = nil
  if c and c.pipe and not c.pipe:is_closing() then
    c.pipe:close()
  end
  local failed = pending
  pending = {}
  for id, p in pairs(failed) do
    p.on_done({ code = M.UNAVAILABLE, message = reason }, nil, id) -- a client-side code
  end
  if c then
    emit("$/disconnected", { reason = reason }) -- pushed events stop until the next connection
  end
end

local function dispatch(line)
  local ok, msg = pcall(decode, line)
  if not ok or type(msg) ~= "table" then
    return
  end
  if msg.method then
    local params = type(msg.params) == "table" and msg.params or {}
    if params.request_id == nil or params.request_id == vim.NIL then
      if not vim.startswith(msg.method, "$/") then
        emit(msg.method, params) -- a pushed event (daemon/subscribe)
      end
      return
    end
    local p = pending[params.request_id]
    if p and p.on_notify then
      p.on_notify(msg.method, params)
    end
    return
  end
  local p = pending[msg.id]
  if not p then
    return
  end
  pending[msg.id] = nil
  if type(msg.error) == "table" then
    p.on_done(msg.error, nil, msg.id)
  else
    p.on_done(nil, msg.result, msg.id)
  end
end

-- libuv callback (a "fast" context): only buffer bytes here; handle lines in the main loop.
local function on_read(c, err, chunk)
  if err or not chunk then
    vim.schedule(function()
      if conn == c then
        drop(err and ("connection error: " .. err) or "the daemon closed the connection")
      end
    end)
    return
  end
  table.insert(c.parts, chunk)
  if not chunk:find("\n", 1, true) then
    return -- a long line arrives in many chunks: join them once, at its end
  end
  local data = table.concat(c.parts)
  local lines = {}
  for line in data:gmatch("([^\n]*)\n") do
    lines[#lines + 1] = line
  end
  c.parts = { data:match("[^\n]*$") }
  vim.schedule(function()
    for _, line in ipairs(lines) do
      dispatch(line)
    end
  end)
end

local function open(c)
  c.state = "open"
  c.pipe:read_start(function(err, chunk)
    on_read(c, err, chunk)
  end)
  for _, line in ipairs(c.queue) do
    c.pipe:write(line)
  end
  c.queue = {}
end

--- Start the daemon in the background, detached from the editor (it outlives it);
--- on_exit(code) runs in a fast context if it exits while the editor runs.
function M.spawn_daemon(path, on_exit)
  local cmd = opts().cmd
  local args = vim.list_extend(vim.list_slice(cmd, 2), { "--socket", path })
  local handle
  local err
  handle, err = uv.spawn(cmd[1], { args = args, detached = true }, function(code)
    handle:close()
    on_exit(code)
  end)
  if not handle then
    return false, ("cannot start %s: %s"):format(cmd[1], tostring(err))
  end
  handle:unref()
  return true
end

-- Try to connect; when nothing listens, start the daemon once and retry until it answers.
local function connect(c, path, started, autostart)
  c.pipe = uv.new_pipe(false)
  c.pipe:connect(path, function(err)
    vim.schedule(function()
      if conn ~= c then
        return
      end
      if not err then
        return open(c)
      end
      c.pipe:close()
      if not autostart then
        return drop(("the daemon is not running on %s (%s) and autostart is off"):format(path, err))
      end
      if not started then
        local ok, why = M.spawn_daemon(path, function(code)
          -- a failed start: give a concurrent start (it exits 1 too) two more seconds
          c.deadline = code ~= 0 and math.min(c.deadline, uv.now() + 2000) or c.deadline
          c.exit_code = code
        end)
        if not ok then
          return drop(why)
        end
        vim.api.nvim_echo({ { "assistant: starting assistantd…", "Comment" } }, false, {})
      end
      if uv.now() > c.deadline then
        local exited = c.exit_code and (", it exited with code %d; see its log"):format(c.exit_code) or ""
        return drop(("the daemon did not answer on %s (%s)%s"):format(path, err, exited))
      end
      vim.defer_fn(function()
        if conn == c then
          connect(c, path, true, true)
        end
      end, 100)
    end)
  end)
end

local function send(line, autostart)
  if not conn then
    conn = { state = "connecting", queue = {}, parts = {}, deadline = uv.now() + START_TIMEOUT_MS }
    if #events() > 0 then
      conn.queue[1] = subscription(true) -- every new connection subscribes first
    end
    connect(conn, M.socket_path(), false, autostart ~= false and opts().autostart)
  end
  if conn.state == "open" then
    conn.pipe:write(line)
  else
    table.insert(conn.queue, line)
  end
end

--- Send a request. on_done(err, result, id) runs once; on_notify(method, params) for
--- each notification of this request. Returns the request id. `autostart = false`
--- connects without starting the daemon (for :checkhealth).
function M.request(method, params, on_done, on_notify, autostart)
  next_id = next_id + 1
  local id = next_id
  pending[id] = { method = method, on_done = on_done, on_notify = on_notify }
  local msg = { jsonrpc = "2.0", id = id, method = method, params = params or vim.empty_dict() }
  send(encode(msg) .. "\n", autostart)
  return id
end

function M.notify(method, params)
  send(encode({ jsonrpc = "2.0", method = method, params = params or vim.empty_dict() }) .. "\n")
end

--- Ask the daemon to end request `id` (chat/send and summarize/* answer "cancelled").
function M.cancel(id)
  if id and pending[id] and conn then
    M.notify("$/cancelRequest", { id = id })
    return true
  end
  return false
end

--- The newest request still in flight (for :AssistantCancel outside a chat buffer).
function M.last_pending()
  local best = nil
  for id, p in pairs(pending) do
    if not p.internal and (not best or id > best) then
      best = id
    end
  end
  return best
end

function M.is_pending(id)
  return pending[id] ~= nil
end

--- Close the connection (requests in flight fail; the daemon cancels them).
function M.close()
  drop("connection closed")
end

-- Tell an open (or opening) connection when the set of wanted events changed.
local function resubscribe(before)
  if conn and table.concat(events(), ",") ~= before then
    send(subscription(false))
  end
end

--- Call fn(params) for every `method` notification that carries no request_id: the
--- daemon's pushed events ("conversations/changed", "config/changed", "local/state").
--- While a method has handlers the connection subscribes to it (daemon/subscribe, sent
--- at once on a live connection and first on every new one); registering never
--- connects. Two local events: "$/subscribed" ({events}) when a new connection's
--- subscription is accepted (events may have been missed before it), "$/disconnected"
--- ({reason}) when the connection breaks. Returns a function that removes the handler.
function M.on(method, fn)
  local before = table.concat(events(), ",")
  handlers[method] = handlers[method] or {}
  table.insert(handlers[method], fn)
  resubscribe(before)
  return function()
    M.off(method, fn)
  end
end

function M.off(method, fn)
  local before = table.concat(events(), ",")
  for i, f in ipairs(handlers[method] or {}) do
    if f == fn then
      table.remove(handlers[method], i)
      break
    end
  end
  resubscribe(before)
end

-- A config the daemon could not apply concerns every user of the plugin: any connection
-- it opens hears of it.
M.on("config/changed", function(params)
  require("assistant").config_changed(params)
end)

return M
