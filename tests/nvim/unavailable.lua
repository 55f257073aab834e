-- No daemon: with autostart off, a chat message ends at once with an error in the
-- buffer; with a start command that cannot run, or one that exits at once, the error
-- says so instead of waiting for the whole start timeout.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result

local function chat_error(opts)
  require("assistant").setup(opts)
  local t0 = vim.loop.hrtime()
  vim.cmd("AssistantChat hello?")
  local buf = vim.api.nvim_get_current_buf()
  H.wait(10000, H.idle(buf), "the error")
  return { ms = (vim.loop.hrtime() - t0) / 1e6, lines = H.lines(buf) }
end

H.run(function()
  R.off = chat_error({ autostart = false })
  R.missing = chat_error({ autostart = true, cmd = { "/nonexistent/assistantd" } })
  R.exits = chat_error({ autostart = true, cmd = { "false" } })
end)
