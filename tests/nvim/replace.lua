-- :AssistantReplace on a charwise and on a linewise selection: the text is replaced by
-- the answer when it is complete, and one `u` restores the original each time.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api

local function replace_and_undo(select_keys, instruction)
  local buf = api.nvim_get_current_buf()
  local before = H.lines(buf)
  H.keys(select_keys .. "<Esc>")
  vim.cmd("'<,'>AssistantReplace " .. instruction)
  local tick = api.nvim_buf_get_changedtick(buf)
  H.wait(10000, function()
    return api.nvim_buf_get_changedtick(buf) ~= tick
  end, "the replacement")
  local after = H.lines(buf)
  vim.cmd("normal! u")
  return { before = before, after = after, undone = H.lines(buf) }
end

H.run(function()
  vim.cmd("enew")
  api.nvim_buf_set_lines(0, 0, -1, true, { "alpha", "beta gamma", "delta" })
  R.charwise = replace_and_undo("2G0ve", "[[reply:REPLACED]]")
  R.linewise = replace_and_undo("1GVj", "[[reply:ONE TWO]] make it short")
  R.windows = #api.nvim_list_wins()
end)
