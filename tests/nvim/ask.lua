-- :AssistantAsk on a visual selection: the answer streams into a chat split, the text
-- is untouched, and the split continues as a chat.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api

H.run(function()
  vim.cmd("enew")
  vim.bo.filetype = "lua"
  api.nvim_buf_set_lines(0, 0, -1, true, { "local x = 1", "return x + 1", "-- end" })
  local src = api.nvim_get_current_buf()
  H.keys("1GVj<Esc>")
  vim.cmd("'<,'>AssistantAsk [[reply:It returns two.]] what does this return?")
  local buf = api.nvim_get_current_buf()
  R.windows = #api.nvim_list_wins()
  R.split_is_new = buf ~= src
  R.filetype = vim.bo[buf].filetype
  H.wait(10000, H.idle(buf), "the answer")
  R.conversation = vim.b[buf].assistant_conversation_id
  R.source = H.lines(src)
  R.lines = H.lines(buf)
  H.send(buf, "[[reply:Yes.]] sure?")
  H.wait(10000, H.idle(buf), "the follow-up")
  R.followup_conversation = vim.b[buf].assistant_conversation_id
end)
