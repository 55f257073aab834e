-- The daemon's roles from the commands: `@role` as the first argument of :AssistantChat,
-- :AssistantAsk and :AssistantReplace, completion of role names, and a chat buffer
-- whose conversation keeps its role when it continues.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api

H.run(function()
  R.completion = vim.fn.getcompletion("AssistantAsk @po", "cmdline")
  R.completion_later_word = vim.fn.getcompletion("AssistantAsk why @po", "cmdline")

  vim.cmd("AssistantChat @poet [[reply:first]] hello")
  local chat = api.nvim_get_current_buf()
  R.chat_role = vim.b[chat].assistant_role
  H.wait(10000, H.idle(chat), "the chat answer")
  H.send(chat, "[[reply:second]] again")
  H.wait(10000, H.idle(chat), "the follow-up")
  R.chat_conversation = vim.b[chat].assistant_conversation_id
  R.chat_lines = H.lines(chat)

  vim.cmd("enew")
  api.nvim_buf_set_lines(0, 0, -1, true, { "alpha", "beta" })
  local src = api.nvim_get_current_buf()
  H.keys("1GV<Esc>")
  vim.cmd("'<,'>AssistantAsk @poet [[reply:asked]] what is it?")
  local ask = api.nvim_get_current_buf()
  H.wait(10000, H.idle(ask), "the ask answer")
  vim.cmd("close")

  api.nvim_set_current_buf(src)
  local tick = api.nvim_buf_get_changedtick(src)
  H.keys("2GV<Esc>")
  vim.cmd("'<,'>AssistantReplace @poet [[reply:BETA]]")
  H.wait(10000, function()
    return api.nvim_buf_get_changedtick(src) ~= tick
  end, "the role's replacement")
  tick = api.nvim_buf_get_changedtick(src)
  H.keys("1GV<Esc>")
  vim.cmd("'<,'>AssistantReplace [[reply:ALPHA]]")
  H.wait(10000, function()
    return api.nvim_buf_get_changedtick(src) ~= tick
  end, "the code-edit replacement")
  R.source = H.lines(src)
end)
