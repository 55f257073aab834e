-- A slow streamed answer: the event loop keeps running (a 10 ms timer keeps ticking),
-- the buffer grows delta by delta, and the final buffer holds the whole answer. Then a
-- second message in the same buffer continues the conversation.
local H = dofile("tests/nvim/helpers.lua")
local uv = vim.loop
local R = H.result

H.run(function()
  vim.cmd("AssistantChat")
  local buf = vim.api.nvim_get_current_buf()
  local samples, ticks, max_gap, last_tick = {}, 0, 0, uv.hrtime()
  local timer = uv.new_timer()
  timer:start(10, 10, vim.schedule_wrap(function()
    local now = uv.hrtime()
    max_gap = math.max(max_gap, (now - last_tick) / 1e6)
    last_tick, ticks = now, ticks + 1
    samples[#samples + 1] = #H.text(buf)
  end))
  local t0 = uv.hrtime()
  H.send(buf, "[[slow:0.05]] [[words:20]] count please")
  R.send_returned_ms = (uv.hrtime() - t0) / 1e6
  R.busy_after_send = vim.b[buf].assistant_busy
  H.wait(15000, H.idle(buf), "the first answer")
  R.stream_ms = (uv.hrtime() - t0) / 1e6
  timer:stop()
  timer:close()
  R.ticks, R.max_gap_ms = ticks, max_gap
  local distinct = {}
  for _, n in ipairs(samples) do
    distinct[n] = true
  end
  R.distinct_sizes = vim.tbl_count(distinct)
  R.first_lines = H.lines(buf)
  R.first_conversation = vim.b[buf].assistant_conversation_id

  H.send(buf, "[[reply:second answer]] and again")
  H.wait(10000, H.idle(buf), "the second answer")
  R.second_conversation = vim.b[buf].assistant_conversation_id
  R.lines = H.lines(buf)
  R.cursor = vim.api.nvim_win_get_cursor(0)
end)
