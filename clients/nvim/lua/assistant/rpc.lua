-- The daemon's wire protocol over its Unix socket: newline-delimited JSON-RPC 2.0 on
-- a vim.loop pipe. One shared connection; many requests in flight, matched by id;
-- notifications routed to their request by params.request_id. Nothing here blocks:
-- reads are libuv callbacks, and every message is handled in the main loop through
-- vim.schedule, so handlers may touch buffers.
local uv = vim.uv or vim.loop
local M = {}

local START_TIMEOUT_MS = 15000

local function opts()
  return require("assistant").config
end

local conn = nil -- { pipe, state = "connecting"|"open", queue = {lines to send}, parts = {read chunks} }
local pending = {} -- id -> { method, on_done, on_notify }
local next_id = 0
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
end

local function dispatch(line)
  local ok, msg = pcall(decode, line)
  if not ok or type(msg) ~= "table" then
    return
  end
  if msg.method then
    local params = type(msg.params) == "table" and msg.params or {}
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
  for id in pairs(pending) do
    if not best or id > best then
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

return M
