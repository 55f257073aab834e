-- The live conversation list (:AssistantConversations!): a scratch buffer with one line
-- per stored conversation, newest first. It subscribes to the daemon's pushed
-- conversations/changed events, so a conversation created, answered, renamed or deleted
-- by any client shows here without asking; a burst of events lists again once,
-- DEBOUNCE_MS after its first event. A list in no window only notes that it is stale and
-- lists again when it is shown. <CR> continues the conversation under the cursor in a
-- chat buffer; R lists again.
local rpc = require("assistant.rpc")
local M = {}

local api = vim.api
local ns = api.nvim_create_namespace("assistant_list")
local DEBOUNCE_MS = 100
local LIMIT = 200 -- newest first; the header says when there are more
local NAME = "assistant://conversations"
local TITLE_WIDTH = 60
local HEADER = 2 -- lines above the first conversation
local lists = {} -- buf -> { query, convs, total, ids = {row -> id}, note, placed, scheduled, inflight, again, stale }
local offs = {} -- remove the shared event handlers when the last list is wiped out
local schedule

local function a()
  return require("assistant")
end

local function width(s)
  return vim.fn.strdisplaywidth(s)
end

-- A title on one line of at most TITLE_WIDTH cells (a longer one ends with "…").
local function title_of(c)
  local t = a().title(c)
  if width(t) <= TITLE_WIDTH then
    return t
  end
  local n = TITLE_WIDTH - 1 -- characters; wide ones take two cells
  t = vim.fn.strcharpart(t, 0, n)
  while width(t) > TITLE_WIDTH - 1 do
    n = n - 1
    t = vim.fn.strcharpart(t, 0, n)
  end
  return t .. "…"
end

-- Write the list, keeping each window's cursor on the conversation it was on.
local function render(buf, st)
  if not api.nvim_buf_is_valid(buf) then
    return
  end
  local cursors = {}
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    local row = api.nvim_win_get_cursor(win)[1]
    cursors[win] = { id = st.ids[row], row = row }
  end
  local convs = st.convs or {}
  local head = st.query ~= "" and ("# Conversations matching %q"):format(st.query) or "# Conversations"
  if st.convs then
    head = head .. (#convs < st.total and (": %d of %d, newest first"):format(#convs, st.total)
      or (": %d, newest first"):format(#convs))
  end
  local lines = { head, st.note or "<CR> continues the conversation under the cursor, R lists again" }
  local titles, tw = {}, 0
  for i, c in ipairs(convs) do
    titles[i] = title_of(c)
    tw = math.max(tw, width(titles[i]))
  end
  local ids, rows = {}, {}
  for i, c in ipairs(convs) do
    local title = titles[i] .. (" "):rep(tw - width(titles[i]))
    lines[#lines + 1] = ("%s  %3d msgs  %s  %s"):format(a().when(c.updated_at), c.message_count or 0, title, c.id)
    ids[#lines], rows[c.id] = c.id, #lines
  end
  if not st.convs then
    lines[#lines + 1] = "(listing…)"
  elseif #convs == 0 then
    lines[#lines + 1] = st.query ~= "" and "(none matches)" or "(no stored conversations)"
  end
  vim.bo[buf].modifiable = true
  api.nvim_buf_set_lines(buf, 0, -1, true, lines)
  vim.bo[buf].modifiable = false
  api.nvim_buf_clear_namespace(buf, ns, 0, -1)
  api.nvim_buf_add_highlight(buf, ns, "Title", 0, 0, -1)
  api.nvim_buf_add_highlight(buf, ns, st.note and "WarningMsg" or "Comment", 1, 0, -1)
  for row, id in pairs(ids) do
    local line = lines[row]
    api.nvim_buf_add_highlight(buf, ns, "Comment", row - 1, 0, #"YYYY-MM-DD HH:MM")
    api.nvim_buf_add_highlight(buf, ns, "Comment", row - 1, #line - #id, -1)
  end
  st.ids = ids
  for win, cur in pairs(cursors) do
    local row = cur.id and rows[cur.id] or math.min(cur.row, #lines)
    if not st.placed and #convs > 0 then
      row = HEADER + 1 -- a new listing starts on its newest conversation
    end
    api.nvim_win_set_cursor(win, { row, 0 })
  end
  st.placed = st.placed or #convs > 0
end

-- conversations/list now; a request already in flight is followed by one more.
local function refresh(buf)
  local st = lists[buf]
  if not st then
    return
  end
  if st.inflight then
    st.again = true
    return
  end
  st.inflight, st.stale = true, false
  local query = st.query
  local params = { limit = LIMIT }
  if query ~= "" then
    params.query = query
  end
  rpc.request("conversations/list", params, function(err, res)
    st.inflight = false
    if lists[buf] ~= st then
      return
    end
    if err then
      st.note, st.stale = "! " .. a().describe(err) .. " (R lists again)", true
    elseif query == st.query then -- else the list was reopened with a new query meanwhile
      st.note, st.convs, st.total = nil, res.conversations, res.total
    end
    render(buf, st)
    if st.again then
      st.again = false
      schedule(buf)
    end
  end)
end

-- List again after DEBOUNCE_MS (events arriving meanwhile join it); later, when shown.
schedule = function(buf)
  local st = lists[buf]
  if not st then
    return
  end
  if #vim.fn.win_findbuf(buf) == 0 then
    st.stale = true
    return
  end
  if st.scheduled then
    return
  end
  st.scheduled = true
  vim.defer_fn(function()
    st.scheduled = false
    if lists[buf] == st then
      refresh(buf)
    end
  end, DEBOUNCE_MS)
end

local function each(fn)
  return function(params)
    for buf, st in pairs(lists) do
      fn(buf, st, params)
    end
  end
end

-- One set of handlers serves every list; "$/subscribed" catches up after a reconnect.
local function listen()
  if #offs > 0 then
    return
  end
  offs = {
    rpc.on("conversations/changed", each(schedule)),
    rpc.on("$/subscribed", each(schedule)),
    rpc.on("$/disconnected", each(function(buf, st, p)
      st.stale, st.note = true, "! not connected: " .. tostring(p.reason) .. " (R lists again)"
      render(buf, st)
    end)),
  }
end

local function unlisten()
  for _, off in ipairs(offs) do
    off()
  end
  offs = {}
end

--- The conversation id on line `row` of list buffer `buf`, or nil.
function M.id_at(buf, row)
  local st = lists[buf]
  return st and st.ids[row]
end

local function create()
  local buf = api.nvim_create_buf(true, true)
  api.nvim_buf_set_name(buf, NAME)
  vim.bo[buf].filetype = "assistant_conversations"
  vim.bo[buf].modifiable = false
  lists[buf] = { query = "", ids = {} }
  local function map(lhs, fn)
    vim.keymap.set("n", lhs, fn, { buffer = buf, nowait = true, silent = true })
  end
  map("<CR>", function()
    local id = M.id_at(buf, api.nvim_win_get_cursor(0)[1])
    if id then
      a().open_conversation(id)
    end
  end)
  map("R", function()
    refresh(buf)
  end)
  api.nvim_create_autocmd({ "BufEnter", "BufWinEnter" }, {
    buffer = buf,
    callback = function()
      if lists[buf] and lists[buf].stale then
        refresh(buf)
      end
    end,
  })
  api.nvim_create_autocmd("BufWipeout", {
    buffer = buf,
    once = true,
    callback = function()
      lists[buf] = nil
      if next(lists) == nil then
        unlisten()
      end
    end,
  })
  listen()
  return buf
end

--- :AssistantConversations! [query]: show the list (one buffer, reused) in this window.
function M.open(query)
  local buf = next(lists) or create()
  local st = lists[buf]
  st.query, st.convs, st.placed = query or "", nil, false -- "(listing…)" until it answers
  api.nvim_win_set_buf(0, buf)
  render(buf, st)
  refresh(buf)
  return buf
end

return M
