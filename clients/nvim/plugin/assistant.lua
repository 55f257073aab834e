-- Defines the :Assistant* commands; the modules behind them load on first use, so
-- startup costs nothing. setup() is optional (see :help assistant-setup) and defines
-- the same commands, for plugin managers that add clients/nvim to 'runtimepath' late.
if vim.g.loaded_assistant or vim.fn.has("nvim-0.7") == 0 then
  return
end
vim.g.loaded_assistant = true
require("assistant").create_commands()
