-- :AssistantAttach [path]: queue a file (default: the current buffer's) for the next
-- message of a chat. The target is the current chat buffer, else a chat buffer shown in
-- this tab, else the next chat buffer :AssistantChat or :AssistantAsk opens. A file
-- goes as `{path}` (the daemon reads it, so images and PDFs work); a buffer with unsaved
-- changes, or no file at all, goes as its text (`{name, text}`), taken when sent.
local chat = require("assistant.chat")
local M = {}

local api = vim.api

local function a()
  return require("assistant")
end

-- The loaded buffer that shows the file at `path` (absolute), or nil.
local function buffer_of(path)
  for _, b in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(b) and api.nvim_buf_get_name(b) == path then
      return b
    end
  end
end

-- The chat buffer to attach to: this one, else one shown in this tab (nil: the next one).
local function target()
  local cur = api.nvim_get_current_buf()
  if chat.is_chat(cur) then
    return cur
  end
  for _, win in ipairs(api.nvim_tabpage_list_wins(0)) do
    local b = api.nvim_win_get_buf(win)
    if chat.is_chat(b) then
      return b
    end
  end
end

--- An attachment for `path` (a file name as typed; nil: the current buffer), or nil and
--- why not.
function M.attachment(path)
  if not path then
    local buf = api.nvim_get_current_buf()
    local file = api.nvim_buf_get_name(buf)
    local name = file ~= "" and vim.fn.fnamemodify(file, ":t") or "buffer"
    return { buf = buf, name = name, path = file ~= "" and vim.fn.fnamemodify(file, ":p") or nil }
  end
  if path:match("^[%%#<~$]") then
    path = vim.fn.expand(path)
  end
  path = vim.fn.fnamemodify(path, ":p")
  local buf = buffer_of(path)
  if not buf and vim.fn.filereadable(path) == 0 then
    return nil, (vim.fn.isdirectory(path) == 1 and "a folder: " or "no such file: ") .. path
  end
  return { buf = buf, name = vim.fn.fnamemodify(path, ":t"), path = path }
end

--- The context item an attachment sends now: its buffer's text while that buffer has
--- unsaved changes (or no file), else its path; nil when neither is left.
function M.item(att)
  local buf = att.buf
  if buf and api.nvim_buf_is_valid(buf) and api.nvim_buf_is_loaded(buf) then
    local file = api.nvim_buf_get_name(buf)
    if file == "" or vim.bo[buf].modified or vim.fn.filereadable(file) == 0 then
      local text = table.concat(api.nvim_buf_get_lines(buf, 0, -1, true), "\n")
      return { name = att.name, text = vim.bo[buf].eol and text .. "\n" or text }
    end
  end
  return att.path and { path = att.path } or nil
end

local function add(att)
  local buf = target()
  chat.attach(buf, att)
  if buf then
    a().echo(("attached %s to %s"):format(att.name, api.nvim_buf_get_name(buf)))
  else
    a().echo(("attached %s to the next :AssistantChat or :AssistantAsk"):format(att.name))
  end
end

--- :AssistantAttach[!] [path]: with no path, the current buffer (in a chat buffer: ask
--- for one, with file completion); with !, drop what is queued.
function M.command(cmd)
  if cmd.bang then
    local n = chat.detach(target())
    return a().echo(("dropped %d attachment(s)"):format(n))
  end
  local function go(path)
    local att, why = M.attachment(path)
    if not att then
      return a().error(why)
    end
    add(att)
  end
  if cmd.args ~= "" then
    return go(cmd.args)
  end
  if not chat.is_chat(api.nvim_get_current_buf()) then
    return go(nil)
  end
  vim.ui.input({ prompt = "Attach: ", completion = "file" }, function(path)
    if path and path ~= "" then
      go(path)
    end
  end)
end

return M
