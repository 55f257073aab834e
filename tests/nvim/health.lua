-- :checkhealth assistant; $NVIM_TEST_SOCKET, when set, is passed to setup().
local H = dofile("tests/nvim/helpers.lua")

H.run(function()
  local socket = os.getenv("NVIM_TEST_SOCKET")
  if socket then
    require("assistant").setup({ socket = socket })
  end
  vim.cmd("checkhealth assistant")
  H.result.lines = H.lines(0)
end)
