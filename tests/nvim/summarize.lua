-- :AssistantSummarize with the cursor on a URL inside prose: the summary streams into
-- a chat split, and a follow-up continues the stored conversation.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api

H.run(function()
  local url = os.getenv("NVIM_TEST_URL")
  vim.cmd("enew")
  api.nvim_buf_set_lines(0, 0, -1, true, { "Notes", "Read (see " .. url .. "), then decide." })
  api.nvim_win_set_cursor(0, { 2, #"Read (see " + 8 })
  R.url_at_cursor = require("assistant.edit").url_at_cursor()
  vim.cmd("AssistantSummarize")
  local buf = api.nvim_get_current_buf()
  R.windows = #api.nvim_list_wins()
  H.wait(20000, H.idle(buf), "the summary")
  R.lines = H.lines(buf)
  R.conversation = vim.b[buf].assistant_conversation_id
  H.send(buf, "[[reply:follow-up answer]] and the details?")
  H.wait(10000, H.idle(buf), "the follow-up")
  R.after = vim.b[buf].assistant_conversation_id
end)
