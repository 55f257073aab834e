-- Commands on the text being edited: ask about the selection (answer in a chat split),
-- replace the selection with the answer (one undo step), summarize the URL under the
-- cursor.
local rpc = require("assistant.rpc")
local chat = require("assistant.chat")
local M = {}

local api = vim.api
local ns = api.nvim_create_namespace("assistant_edit")

local function a()
  return require("assistant")
end

-- Bytes in the UTF-8 character that starts with byte b.
local function char_len(b)
  return b >= 0xF0 and 4 or b >= 0xE0 and 3 or b >= 0xC0 and 2 or 1
end

--- The command's range as 0-based, end-exclusive positions: charwise when it came from
--- a charwise visual selection (`v`), otherwise whole lines.
function M.selection(cmd)
  local buf = api.nvim_get_current_buf()
  local l1, l2 = cmd.line1, cmd.line2
  local sr, sc, er = l1 - 1, 0, l2 - 1
  local last = api.nvim_buf_get_lines(buf, er, er + 1, true)[1]
  local ec = #last
  local vs, ve = vim.fn.getpos("'<"), vim.fn.getpos("'>")
  local charwise = cmd.range > 0 and vim.fn.visualmode() == "v" and vs[2] == l1 and ve[2] == l2
  if charwise then
    sc = vs[3] - 1
    ec = ve[3] > #last and #last or ve[3] - 1 + char_len(last:byte(ve[3]))
  end
  local text = table.concat(api.nvim_buf_get_text(buf, sr, sc, er, ec, {}), "\n")
  local name = vim.fn.expand("%:t")
  name = (name ~= "" and name or "buffer") .. (":%d-%d"):format(l1, l2)
  return { buf = buf, sr = sr, sc = sc, er = er, ec = ec, text = text, name = name,
    linewise = not charwise, filetype = vim.bo[buf].filetype }
end

-- The command's text, or ask for it (vim.ui.input is asynchronous with some UIs).
local function with_input(args, prompt, fn)
  if args and args ~= "" then
    return fn(args)
  end
  vim.ui.input({ prompt = prompt }, function(text)
    if text and text ~= "" then
      fn(text)
    end
  end)
end

--- :[range]AssistantAsk [@role] [question]: the answer streams into a chat split that
--- can continue; the selection goes as the message's context.
function M.ask(cmd)
  local sel = cmd.range > 0 and M.selection(cmd) or nil
  local role, args = a().split_role(cmd.args)
  with_input(args, "Ask: ", function(question)
    local buf = chat.open({ split = a().config.split, role = role })
    if not sel then
      return chat.submit(buf, question)
    end
    local shown = ("%s\n\n```%s\n%s\n```"):format(question, sel.filetype, sel.text)
    local ctx = { { name = sel.name, text = sel.text } }
    chat.run(buf, shown, "chat/send", { message = question, context = ctx })
  end)
end

-- A reply wholly inside one code fence loses the fence (models add them unasked).
local function unfence(text)
  local inner = text:match("^%s*```[^\n]*\n(.-)\n?```%s*$")
  return inner or text
end

-- Replace the marked range with text as one undo step of its own.
local function apply(sel, mark, text)
  if not api.nvim_buf_is_valid(sel.buf) then
    return
  end
  local pos = api.nvim_buf_get_extmark_by_id(sel.buf, ns, mark, { details = true })
  api.nvim_buf_del_extmark(sel.buf, ns, mark)
  if sel.linewise then
    text = text:gsub("\n$", "")
  end
  api.nvim_buf_call(sel.buf, function()
    vim.cmd("let &l:undolevels = &l:undolevels") -- close the undo block before ours
    api.nvim_buf_set_text(sel.buf, pos[1], pos[2], pos[3].end_row, pos[3].end_col,
      vim.split(text, "\n", { plain = true }))
  end)
end

--- :[range]AssistantReplace [@role] [instruction]: the selection is replaced by the
--- answer when it is complete (nothing changes if it fails or is cancelled); `u`
--- restores it. The prompt is the daemon's `code-edit` role unless another is named.
function M.replace(cmd)
  local sel = M.selection(cmd)
  local role, args = a().split_role(cmd.args)
  with_input(args, "Replace with: ", function(instruction)
    local mark = api.nvim_buf_set_extmark(sel.buf, ns, sel.sr, sel.sc, { end_row = sel.er, end_col = sel.ec })
    local chars = 0
    local params = { message = instruction, role = role or "code-edit", model = a().config.model,
      system = not role and a().config.replace_system or nil, context = { { name = sel.name, text = sel.text } } }
    rpc.request("chat/send", params, function(err, result)
      if err and err.code ~= -32800 then
        api.nvim_buf_del_extmark(sel.buf, ns, mark)
        return a().error(a().describe(err))
      end
      if err or result.finish_reason == "cancelled" then
        api.nvim_buf_del_extmark(sel.buf, ns, mark)
        return a().echo("cancelled; the text is unchanged")
      end
      apply(sel, mark, unfence(result.text))
      a().echo(("replaced %d lines (u to undo)"):format(sel.er - sel.sr + 1))
    end, function(method, p)
      if method == "chat/delta" then
        chars = chars + #p.text
        a().echo(("writing… %d chars (:AssistantCancel to stop)"):format(chars))
      end
    end)
    a().echo("thinking… (:AssistantCancel to stop)")
  end)
end

local URL_CHARS = "[%w%-%._~:/%?#%[%]@!%$&'%(%)%*%+,;=%%]"

--- The http(s) URL under the cursor in the current line, or nil.
function M.url_at_cursor()
  local line = api.nvim_get_current_line()
  local col = api.nvim_win_get_cursor(0)[2] + 1
  for s, url in line:gmatch("()(https?://" .. URL_CHARS .. "+)") do
    url = url:gsub("[%.,;:!%?'%)%]]+$", "") -- trailing punctuation belongs to the prose
    if col >= s and col < s + #url then
      return url
    end
  end
end

--- :AssistantSummarize [@role] [url]: the summary streams into a chat split (stored as
--- a conversation, so follow-up questions continue it); progress goes to the echo area.
function M.summarize(args)
  local role, url = a().split_role(args)
  url = url ~= "" and url or M.url_at_cursor()
  if not url then
    return a().error("no http(s) URL under the cursor")
  end
  local buf = chat.open({ split = a().config.split })
  chat.run(buf, "Summarize " .. url, "summarize/url", { url = url, role = role })
  a().echo("fetching " .. url)
  return buf
end

return M
