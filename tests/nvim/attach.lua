-- :AssistantAttach: files queued from a file buffer go with the next :AssistantChat's
-- message (a text file and a PNG, by path); with the chat in sight, an unnamed buffer
-- and a buffer with unsaved changes go as their text; in the chat buffer a path is asked
-- for; :AssistantAttach! drops what is queued; one attached while an answer streams
-- shows under the next "## You"; a file queued before :AssistantAsk goes with the
-- question; a reopened conversation shows its attachments.
local H = dofile("tests/nvim/helpers.lua")
local R = H.result
local api = vim.api
local dir = os.getenv("ATTACH_DIR")
local notes = vim.fn.fnameescape(dir .. "/notes.txt")

local function show(buf)
  api.nvim_set_current_win(vim.fn.win_findbuf(buf)[1])
end

H.run(function()
  vim.o.hidden = true
  vim.cmd("edit " .. notes)
  vim.cmd("AssistantAttach")
  vim.cmd("AssistantAttach " .. vim.fn.fnameescape(dir .. "/dot.png"))
  vim.cmd("AssistantChat")
  local buf = api.nvim_get_current_buf()
  R.queued_lines = H.lines(buf)
  H.send(buf, "[[reply:seen]] look at these")
  H.wait(10000, H.idle(buf), "the first answer")
  R.first_lines = H.lines(buf)
  R.conversation = vim.b[buf].assistant_conversation_id

  vim.cmd("split")
  vim.cmd("enew")
  api.nvim_buf_set_lines(0, 0, -1, true, { "draft FACT-11" })
  vim.cmd("AssistantAttach")
  vim.cmd("edit " .. notes)
  api.nvim_buf_set_lines(0, 0, 1, true, { "edited, not saved FACT-12" })
  vim.cmd("AssistantAttach")
  show(buf)
  R.unsaved_queued = H.lines(buf)
  H.send(buf, "[[reply:ok]] drafts")
  H.wait(10000, H.idle(buf), "the second answer")

  vim.ui.input = function(opts, on_confirm) -- in a chat buffer, with no path: one is asked for
    R.input = { prompt = opts.prompt, completion = opts.completion }
    on_confirm(dir .. "/notes.txt")
  end
  vim.cmd("AssistantAttach")
  R.before_drop = H.lines(buf)
  vim.cmd("AssistantAttach!")
  R.after_drop = H.lines(buf)
  H.send(buf, "[[reply:plain]] nothing attached")
  H.wait(10000, H.idle(buf), "the third answer")

  H.send(buf, "[[reply:busy answer]] busy") -- attached while the answer is on its way:
  vim.cmd("AssistantAttach " .. vim.fn.fnameescape(dir .. "/dot.png")) -- shown after it
  R.busy_lines = H.lines(buf)
  H.wait(10000, H.idle(buf), "the fourth answer")
  R.after_busy = H.lines(buf)
  H.send(buf, "[[reply:after]] with it")
  H.wait(10000, H.idle(buf), "the fifth answer")

  vim.cmd("buffer " .. notes)
  vim.cmd("edit!") -- its changes dropped: now the file on disk goes
  vim.cmd("only")
  vim.cmd("AssistantAttach")
  vim.cmd("AssistantAsk [[reply:asked]] what is in it?")
  local ask = api.nvim_get_current_buf()
  H.wait(10000, H.idle(ask), "the ask's answer")
  R.ask_lines = H.lines(ask)

  require("assistant").open_conversation(R.conversation)
  H.wait(10000, function()
    return api.nvim_get_current_buf() ~= ask
  end, "the reopened conversation")
  R.reopened = H.lines(0)
end)
