-- Chat buffers: a markdown scratch buffer per conversation. The user writes under the
-- last "## You" header and sends; the answer streams in under "## Assistant" as
-- chat/delta notifications arrive. Two extmarks keep their place while the user edits:
-- `prompt` (the end of the last "## You" header) and `answer` (where text streams in).
-- Buffer variables for statuslines and scripts: b:assistant_busy,
-- b:assistant_conversation_id, b:assistant_role (the daemon's role a new conversation
-- starts with; the daemon keeps it for the conversation). Files queued with
-- :AssistantAttach (attach.lua) show as "📎 name" lines under the last "## You" (the
-- `prompt` mark moves past them) and go with the next message.
local rpc = require("assistant.rpc")
local M = {}

local api = vim.api
local ns = api.nvim_create_namespace("assistant_chat")
-- buf -> { conversation_id, role, request, prompt, answer, streamed, attached, shown }
-- (`shown`: how many of `attached` have their "📎" line yet; not while a request runs)
local state = {}
local pending = {} -- attachments for the next chat buffer opened (no chat was in sight)
local CLIP = "📎 "
local count = 0
local CANCELLED = -32800

local function a()
  return require("assistant")
end

local function lines_of(text)
  return vim.split(text, "\n", { plain = true })
end

local function buf_end(buf)
  local last = api.nvim_buf_line_count(buf) - 1
  return last, #api.nvim_buf_get_lines(buf, last, last + 1, true)[1]
end

local function mark_pos(buf, id)
  local pos = api.nvim_buf_get_extmark_by_id(buf, ns, id, {})
  if not pos[1] then
    return buf_end(buf) -- the mark is gone (the user cleared the buffer): use the end
  end
  return pos[1], pos[2]
end

-- Insert text at the answer mark (it moves past the text); windows whose cursor was on
-- the last line follow the stream.
local function insert(buf, st, text)
  local last = api.nvim_buf_line_count(buf)
  local follow = {}
  for _, win in ipairs(vim.fn.win_findbuf(buf)) do
    if api.nvim_win_get_cursor(win)[1] == last then
      follow[#follow + 1] = win
    end
  end
  local row, col = mark_pos(buf, st.answer)
  api.nvim_buf_set_text(buf, row, col, row, col, lines_of(text))
  for _, win in ipairs(follow) do
    api.nvim_win_set_cursor(win, { api.nvim_buf_line_count(buf), 0 })
  end
end

local function set_busy(buf, st, id)
  st.request = id
  vim.b[buf].assistant_busy = id ~= nil
  vim.b[buf].assistant_conversation_id = st.conversation_id
end

-- Open a new prompt ("## You") after the answer and put the cursor there.
-- Show attachment `att` as a "📎 name" line under the last "## You" (the prompt mark
-- moves past it).
local function show(buf, st, att)
  local row, col = mark_pos(buf, st.prompt)
  local line = CLIP .. att.name:gsub("\n", " ")
  api.nvim_buf_set_text(buf, row, col, row, col, { "", line })
  st.prompt = api.nvim_buf_set_extmark(buf, ns, row + 1, #line, { id = st.prompt, right_gravity = false })
  st.shown = st.shown + 1
end

local function new_prompt(buf, st)
  insert(buf, st, "\n\n## You\n")
  local row = mark_pos(buf, st.answer)
  st.prompt = api.nvim_buf_set_extmark(buf, ns, row - 1, #"## You", { id = st.prompt, right_gravity = false })
  st.shown = 0
  for _, att in ipairs(st.attached) do -- attached while the answer came
    show(buf, st, att)
  end
  if api.nvim_get_current_buf() == buf then
    api.nvim_win_set_cursor(0, { api.nvim_buf_line_count(buf), 0 })
  end
end

local function finish(buf, err, result)
  local st = state[buf]
  if not st or not api.nvim_buf_is_valid(buf) then
    return
  end
  local sep = st.streamed > 0 and "\n\n" or ""
  if err and err.code == CANCELLED then
    insert(buf, st, sep .. "_[cancelled]_") -- cancelled before it started: nothing stored
  elseif err then
    local data = type(err.data) == "table" and err.data or {}
    st.conversation_id = a().val(data.conversation_id, st.conversation_id)
    insert(buf, st, sep .. "> **error:** " .. a().describe(err))
  else
    st.conversation_id = a().val(result.conversation_id, st.conversation_id)
    local title = a().val(result.title)
    if type(title) == "string" and title ~= "" and api.nvim_buf_get_lines(buf, 0, 1, true)[1] == "# Chat" then
      api.nvim_buf_set_lines(buf, 0, 1, true, { "# " .. title:gsub("\n", " ") }) -- a summarized page's title
    end
    if st.streamed == 0 and type(result.text) == "string" and result.text ~= "" then
      insert(buf, st, result.text) -- a result without deltas (stream = false)
      sep = "\n\n"
    end
    if result.finish_reason == "cancelled" then
      insert(buf, st, sep .. "_[cancelled]_")
    end
  end
  set_busy(buf, st, nil)
  new_prompt(buf, st)
end

local function on_notify(buf, method, params)
  local st = state[buf]
  if not st or not api.nvim_buf_is_valid(buf) then
    return
  end
  if method == "chat/delta" and type(params.text) == "string" then
    st.streamed = st.streamed + #params.text
    insert(buf, st, params.text)
  elseif method == "summarize/progress" then
    a().echo(("%s %s/%s"):format(params.stage, a().val(params.done, "?"), a().val(params.total, "?")))
  end
end

--- Queue attachment `att` (attach.lua) for the next message of chat buffer `buf` (nil:
--- of the next chat buffer opened), shown as a "📎 name" line under the last "## You".
function M.attach(buf, att)
  local st = buf and state[buf]
  if not st then
    pending[#pending + 1] = att
    return
  end
  st.attached[#st.attached + 1] = att
  if not st.request then -- else it shows under the next "## You", when the answer is in
    show(buf, st, att)
  end
end

--- Drop the attachments queued for chat buffer `buf` (nil: for the next one) and their
--- "📎" lines; how many there were.
function M.detach(buf)
  local st = buf and state[buf]
  if not st then
    local n = #pending
    pending = {}
    return n
  end
  local n = st.shown
  local row, col = mark_pos(buf, st.prompt)
  local lines = api.nvim_buf_get_lines(buf, math.max(row - n + 1, 0), row + 1, true)
  local intact = n > 0 and row >= n
  for _, l in ipairs(lines) do
    intact = intact and l:sub(1, #CLIP) == CLIP
  end
  if intact then -- the lines are as they were put there: take them out again
    local above = api.nvim_buf_get_lines(buf, row - n, row - n + 1, true)[1]
    api.nvim_buf_set_text(buf, row - n, #above, row, col, { "" })
  end
  n = #st.attached
  st.attached, st.shown = {}, 0
  return n
end

--- Show `shown` as the user's turn and run `method` with `params`; the answer streams
--- into the buffer. chat/send's conversation_id is filled in from the buffer.
function M.run(buf, shown, method, params)
  local st = state[buf]
  if st.request then
    return a().echo("a request is still running here (cancel it first)", "WarningMsg")
  end
  local row, col = mark_pos(buf, st.prompt)
  local erow, ecol = buf_end(buf)
  api.nvim_buf_set_text(buf, row, col, erow, ecol, lines_of("\n" .. shown .. "\n\n## Assistant\n\n"))
  erow, ecol = buf_end(buf)
  st.answer = api.nvim_buf_set_extmark(buf, ns, erow, ecol, { id = st.answer })
  st.streamed = 0
  if method == "chat/send" then
    params.conversation_id = st.conversation_id
    local context = vim.deepcopy(params.context or {})
    for _, att in ipairs(st.attached) do
      context[#context + 1] = require("assistant.attach").item(att)
    end
    params.context = #context > 0 and context or nil
    st.attached, st.shown = {}, 0
  end
  if not st.conversation_id then -- a continued conversation keeps its role in the daemon
    params.role = params.role or st.role
  end
  params.model = params.model or a().config.model
  local id = rpc.request(method, params, function(err, result)
    finish(buf, err, result)
  end, function(m, p)
    on_notify(buf, m, p)
  end)
  set_busy(buf, st, id)
  return id
end

--- Send `message` (default: the text under the last "## You") with optional context.
function M.submit(buf, message, context)
  local st = state[buf]
  if not message then
    local row, col = mark_pos(buf, st.prompt)
    local lines = api.nvim_buf_get_lines(buf, row, -1, true)
    lines[1] = lines[1]:sub(col + 1)
    message = vim.trim(table.concat(lines, "\n"))
  end
  if message == "" then
    return a().echo("write a message under the last \"## You\" first", "WarningMsg")
  end
  return M.run(buf, message, "chat/send", { message = message, context = context })
end

--- Cancel this buffer's request; false when it has none.
function M.cancel(buf)
  local st = state[buf]
  return st ~= nil and st.request ~= nil and rpc.cancel(st.request)
end

function M.is_chat(buf)
  return state[buf] ~= nil
end

local function render(conv)
  local out = { "# " .. a().val(conv.title, "Chat"), "" }
  local names = { user = "You", assistant = "Assistant", system = "System" }
  for _, m in ipairs(conv.messages or {}) do
    vim.list_extend(out, { "## " .. (names[m.role] or m.role) })
    for _, c in ipairs(type(m.context) == "table" and m.context or {}) do
      out[#out + 1] = CLIP .. tostring(a().val(c.name, "?")):gsub("\n", " ")
    end
    vim.list_extend(out, lines_of(a().val(m.content, "")))
    if m.status == "partial" then
      vim.list_extend(out, { "", "_[partial]_" })
    end
    out[#out + 1] = ""
  end
  vim.list_extend(out, { "## You", "" })
  return out
end

local function map(buf, mode, lhs, fn)
  if lhs then
    vim.keymap.set(mode, lhs, fn, { buffer = buf, nowait = true, silent = true })
  end
end

--- Open a chat buffer. opts.split: nil (this window) or an Ex command ("split", ...);
--- opts.conversation: a conversations/get result to show and continue; opts.role: the
--- daemon's role (roles/list) its conversation starts with.
function M.open(opts)
  opts = opts or {}
  local conv = opts.conversation
  if opts.split then
    vim.cmd(opts.split)
  end
  local buf = api.nvim_create_buf(true, true)
  repeat
    count = count + 1
  until vim.fn.bufexists(("assistant://chat/%d"):format(count)) == 0
  api.nvim_buf_set_name(buf, ("assistant://chat/%d"):format(count))
  api.nvim_win_set_buf(0, buf)
  vim.bo[buf].filetype = "markdown"
  local lines = conv and render(conv) or { "# Chat", "", "## You", "" }
  api.nvim_buf_set_lines(buf, 0, -1, true, lines)
  local st = { conversation_id = conv and conv.id, role = opts.role, streamed = 0, attached = {}, shown = 0 }
  vim.b[buf].assistant_role = opts.role
  st.prompt = api.nvim_buf_set_extmark(buf, ns, #lines - 2, #"## You", { right_gravity = false })
  state[buf] = st
  local queued = pending
  pending = {}
  for _, att in ipairs(queued) do
    M.attach(buf, att)
  end
  set_busy(buf, st, nil)
  local keys = a().config.keys
  map(buf, "n", keys.send, function()
    M.submit(buf)
  end)
  map(buf, "i", keys.send_insert, function()
    vim.cmd("stopinsert")
    M.submit(buf)
  end)
  map(buf, "n", keys.cancel, function()
    a().cancel()
  end)
  api.nvim_create_autocmd("BufWipeout", {
    buffer = buf,
    once = true,
    callback = function()
      M.cancel(buf)
      state[buf] = nil
    end,
  })
  api.nvim_win_set_cursor(0, { api.nvim_buf_line_count(buf), 0 })
  return buf
end

return M
