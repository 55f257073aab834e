-- Shared by the Lua test scripts that tests/test_nvim.py runs in `nvim --headless`:
-- load the plugin as Neovim would, run a scenario, write its findings as JSON to
-- $NVIM_TEST_OUT (an "error" key when it failed) and quit.
vim.cmd("runtime plugin/assistant.lua")
local H = { result = {} }
local api = vim.api

--- Wait for cond (the event loop keeps running), or fail the scenario.
function H.wait(ms, cond, what)
  if not vim.wait(ms, cond, 10) then
    error("timed out after " .. ms .. " ms waiting for " .. what)
  end
end

function H.lines(buf)
  return api.nvim_buf_get_lines(buf or 0, 0, -1, true)
end

function H.text(buf)
  return table.concat(H.lines(buf), "\n")
end

--- Type keys as the user would (mappings apply) and run them now.
function H.keys(keys)
  api.nvim_feedkeys(api.nvim_replace_termcodes(keys, true, false, true), "mx", false)
end

--- Write `message` under the chat buffer's last "## You" and press the send key.
function H.send(buf, message)
  api.nvim_buf_set_lines(buf, -2, -1, true, vim.split(message, "\n", { plain = true }))
  H.keys("<CR>")
end

function H.idle(buf)
  return function()
    return vim.b[buf].assistant_busy == false
  end
end

function H.run(fn)
  local ok, err = xpcall(fn, debug.traceback)
  if not ok then
    H.result.error = tostring(err)
  end
  local f = assert(io.open(os.getenv("NVIM_TEST_OUT"), "w"))
  f:write(vim.json.encode(H.result))
  f:close()
  vim.cmd("qa!")
end

return H
