-- :AssistantConversations with vim.ui.select answered by the test (it picks the first
-- item, as a user would): the conversation opens in a chat buffer and continues.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api

H.run(function()
  local offered = nil
  vim.ui.select = function(items, opts, on_choice) -- test input: the user's pick
    offered = {}
    for _, item in ipairs(items) do
      offered[#offered + 1] = { id = item.id, shown = opts.format_item(item) }
    end
    on_choice(items[1], 1)
  end
  local before = api.nvim_get_current_buf()
  vim.cmd("AssistantConversations")
  H.wait(5000, function()
    return api.nvim_get_current_buf() ~= before
  end, "the picked conversation")
  local buf = api.nvim_get_current_buf()
  R.offered = offered
  R.opened = vim.b[buf].assistant_conversation_id
  R.lines = H.lines(buf)
  H.send(buf, "[[reply:continued]] go on")
  H.wait(10000, H.idle(buf), "the answer")
  R.after = vim.b[buf].assistant_conversation_id
end)
