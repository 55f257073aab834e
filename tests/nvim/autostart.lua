-- No daemon runs: the first request starts `assistantd` (autostart) on the socket of
-- the contract's default rule, and the chat answer arrives. When that daemon shuts
-- down, the next request finds the connection gone and starts a new one.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local rpc = require("assistant.rpc")

H.run(function()
  R.socket = rpc.socket_path()
  vim.cmd("AssistantChat [[reply:started for you]] hi")
  local buf = vim.api.nvim_get_current_buf()
  H.wait(30000, H.idle(buf), "the autostarted daemon's answer")
  local first_pid
  rpc.request("daemon/status", nil, function(_, res)
    first_pid = res.pid
    rpc.request("daemon/shutdown", nil, function() end)
  end)
  H.wait(10000, function()
    return first_pid ~= nil and vim.loop.fs_stat(R.socket) == nil
  end, "the daemon to shut down")
  H.send(buf, "[[reply:back again]] still there?")
  H.wait(30000, H.idle(buf), "the restarted daemon's answer")
  R.lines = H.lines(buf)
  local second_pid
  rpc.request("daemon/status", nil, function(_, res)
    second_pid = res.pid
  end)
  H.wait(5000, function()
    return second_pid ~= nil
  end, "the new daemon's status")
  R.pids = { first_pid, second_pid }
end)
