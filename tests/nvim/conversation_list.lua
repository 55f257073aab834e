-- :AssistantConversations! while another client (the Python test, on its own
-- connection) changes conversations. The two sides take turns through files in
-- $NVIM_TEST_SIGNALS: the test writes go-STEP.json after its change, this side waits for
-- the list buffer to show it (strings `present` and `absent`) and answers seen-STEP.json,
-- and the test times the round trip. Nothing here asks the daemon for the list: only the
-- pushed conversations/changed events can update the buffer.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api
local rpc = require("assistant.rpc")
local dir = os.getenv("NVIM_TEST_SIGNALS")

local notes = {}
vim.notify = function(msg, level) -- test input/output: what a notification plugin would show
  notes[#notes + 1] = { msg = msg, level = level }
end

local function signal(name, data)
  local tmp = ("%s/%s.tmp"):format(dir, name)
  local f = assert(io.open(tmp, "w"))
  f:write(vim.json.encode(data))
  f:close()
  assert(os.rename(tmp, ("%s/%s.json"):format(dir, name))) -- the test never reads half a file
end

local function await(name)
  local path = ("%s/%s.json"):format(dir, name)
  H.wait(30000, function()
    return vim.loop.fs_stat(path) ~= nil
  end, "the test's " .. name)
  local f = assert(io.open(path))
  local data = vim.json.decode(f:read("*a"))
  f:close()
  return data
end

local function shows(buf, want)
  return function()
    local text = H.text(buf)
    for _, s in ipairs(want.present or {}) do
      if not text:find(s, 1, true) then
        return false
      end
    end
    for _, s in ipairs(want.absent or {}) do
      if text:find(s, 1, true) then
        return false
      end
    end
    return true
  end
end

-- Wait for the test's change `step` to show in the list buffer; answer with the lines.
local function step(buf, name)
  local want = await("go-" .. name)
  local t0 = vim.loop.hrtime()
  H.wait(10000, shows(buf, want), name .. " in the list: " .. vim.inspect(want))
  local cursor = api.nvim_win_get_cursor(vim.fn.win_findbuf(buf)[1])
  R[name] = { ms = (vim.loop.hrtime() - t0) / 1e6, lines = H.lines(buf), cursor = cursor[1] }
  signal("seen-" .. name, R[name])
end

local function warnings()
  local n = 0
  for _, note in ipairs(notes) do
    n = n + (note.level == vim.log.levels.WARN and 1 or 0)
  end
  return n
end

H.run(function()
  local first = await("go-open").id
  vim.cmd("AssistantConversations!")
  local buf = api.nvim_get_current_buf()
  local list_win = api.nvim_get_current_win()
  H.wait(5000, shows(buf, { present = { first } }), "the first listing")
  R.name = api.nvim_buf_get_name(buf)
  R.modifiable = vim.bo[buf].modifiable
  R.open_cursor = api.nvim_win_get_cursor(list_win)[1]
  signal("seen-open", { lines = H.lines(buf) })

  step(buf, "rename") -- renamed by the other client
  step(buf, "create") -- a new conversation from the other client
  step(buf, "delete") -- the renamed one deleted

  -- <CR> on the new conversation's line continues it in a chat split.
  api.nvim_win_set_cursor(list_win, { 3, 0 }) -- the first conversation, under the header
  R.cursor_id = require("assistant.list").id_at(buf, 3)
  H.keys("<CR>")
  H.wait(5000, function()
    return api.nvim_get_current_buf() ~= buf
  end, "the chat buffer")
  local chat = api.nvim_get_current_buf()
  R.opened = { id = vim.b[chat].assistant_conversation_id, lines = H.lines(chat),
    windows = #api.nvim_list_wins(), list_shown = #vim.fn.win_findbuf(buf) }

  -- A lost connection shows in the header; R connects again and re-subscribes.
  rpc.close()
  R.disconnected_header = H.lines(buf)[2]
  api.nvim_set_current_win(list_win)
  H.keys("R")
  H.wait(5000, function()
    return not H.lines(buf)[2]:find("not connected", 1, true)
  end, "the list after reconnecting")
  signal("seen-reconnect", {})
  step(buf, "rename_again") -- heard on the new connection

  -- A config the daemon cannot apply: one warning per change, and word when it is fixed.
  R.broken_events = 0
  rpc.on("config/changed", function(p)
    R.broken_events = R.broken_events + (p.config_ok == false and 1 or 0)
  end)
  await("go-config_broken")
  H.wait(10000, function()
    return warnings() > 0
  end, "the config warning")
  signal("seen-config_broken", {})
  local heard = R.broken_events
  await("go-config_again") -- the same broken file read again (SIGHUP)
  H.wait(10000, function()
    return R.broken_events > heard
  end, "the second config/changed")
  signal("seen-config_again", {})
  await("go-config_fixed")
  H.wait(10000, function()
    return #notes > warnings()
  end, "the config applied again")
  R.notes = notes
end)
