-- luacheck --config clients/nvim/.luacheckrc clients/nvim tests/nvim
std = "luajit"
globals = { "vim" }
max_line_length = 120
