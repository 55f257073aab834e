-- What a plugin manager does: clients/nvim joins 'runtimepath' after startup (its
-- plugin/ file never runs) and setup() is called. The commands exist and the options
-- apply; the socket path follows the contract's rule.
local R = {}
local ok, err = xpcall(function()
  vim.opt.rtp:append(vim.fn.getcwd() .. "/clients/nvim")
  R.commands_before = vim.fn.exists(":AssistantChat") == 2
  local a = require("assistant")
  local rpc = require("assistant.rpc")
  R.from_env = rpc.socket_path()
  a.setup({ socket = "~/my.sock", cmd = { "/opt/bin/assistantd" }, keys = { send = "<C-s>" } })
  local names = {}
  for _, name in ipairs({ "Chat", "Ask", "Replace", "Summarize", "Conversations", "Cancel" }) do
    names[name] = vim.fn.exists(":Assistant" .. name) == 2
  end
  R.commands = names
  R.from_setup = rpc.socket_path()
  R.cmd = a.config.cmd
  R.keys = a.config.keys
  vim.cmd("AssistantChat")
  R.send_map = vim.fn.maparg("<C-s>", "n") ~= ""
  R.cr_map = vim.fn.maparg("<CR>", "n") ~= ""
  R.cancel_map = vim.fn.maparg("<C-c>", "n") ~= ""
end, debug.traceback)
if not ok then
  R.error = tostring(err)
end
local f = assert(io.open(os.getenv("NVIM_TEST_OUT"), "w"))
f:write(vim.json.encode(R))
f:close()
vim.cmd("qa!")
