-- Two chat buffers stream at once over the plugin's one connection: each answer's
-- deltas reach only its own buffer (routed by request_id).
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api

H.run(function()
  vim.cmd("AssistantChat")
  local one = api.nvim_get_current_buf()
  H.send(one, "[[slow:0.03]] [[reply:a1 a2 a3 a4 a5 a6 a7 a8 a9 a10]] first")
  vim.cmd("AssistantChat")
  local two = api.nvim_get_current_buf()
  H.send(two, "[[slow:0.03]] [[reply:b1 b2 b3 b4 b5 b6 b7 b8 b9 b10]] second")
  R.both_busy = vim.b[one].assistant_busy and vim.b[two].assistant_busy
  H.wait(10000, function()
    return H.idle(one)() and H.idle(two)()
  end, "both answers")
  R.one, R.two = H.lines(one), H.lines(two)
  R.conversations = { vim.b[one].assistant_conversation_id, vim.b[two].assistant_conversation_id }
end)
