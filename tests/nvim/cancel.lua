-- Cancelling: :AssistantCancel in a chat buffer whose answer hangs, the chat buffer's
-- cancel key (<C-c>) during a slow stream, and :AssistantCancel elsewhere for a
-- :AssistantReplace in flight (the text stays as it was).
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api
local uv = vim.loop

local function cancel_chat(message, how)
  vim.cmd("AssistantChat")
  local buf = api.nvim_get_current_buf()
  H.send(buf, message)
  vim.wait(500) -- the request reaches the upstream
  local t0 = uv.hrtime()
  if how == "key" then
    H.keys("<C-c>")
  else
    vim.cmd("AssistantCancel")
  end
  H.wait(5000, H.idle(buf), "the cancelled result")
  return { cancel_ms = (uv.hrtime() - t0) / 1e6, lines = H.lines(buf),
    conversation = vim.b[buf].assistant_conversation_id }
end

H.run(function()
  -- The daemon's first answer loads its provider code; cancel requests already streaming.
  vim.cmd("AssistantChat [[reply:warm]] up")
  H.wait(10000, H.idle(vim.api.nvim_get_current_buf()), "the warm-up answer")
  R.command = cancel_chat("[[hang]] wait forever", "command")
  R.key = cancel_chat("[[slow:0.2]] [[words:50]] go slowly", "key")

  vim.cmd("enew")
  api.nvim_buf_set_lines(0, 0, -1, true, { "keep me" })
  local buf = api.nvim_get_current_buf()
  local tick = api.nvim_buf_get_changedtick(buf)
  vim.cmd("AssistantReplace [[hang]] never mind")
  vim.wait(500)
  vim.cmd("AssistantCancel")
  local rpc = require("assistant.rpc")
  H.wait(5000, function()
    return rpc.last_pending() == nil
  end, "the cancelled replace")
  R.replace_lines = H.lines(buf)
  R.replace_changed = api.nvim_buf_get_changedtick(buf) ~= tick
end)
