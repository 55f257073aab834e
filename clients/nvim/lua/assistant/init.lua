-- assistant.nvim: a thin client of the assistantd daemon (see clients/nvim/README.md).
-- Layout: rpc.lua speaks the socket protocol, chat.lua owns chat buffers, edit.lua the
-- commands that work on the text being edited, attach.lua :AssistantAttach, list.lua
-- the live conversation list, health.lua is :checkhealth assistant.
local M = {}

M.config = {
  socket = nil, -- nil: $ASSISTANTD_SOCKET, else $XDG_RUNTIME_DIR/assistantd/assistantd.sock
  autostart = true, -- start `assistantd` in the background when nothing answers
  cmd = { "assistantd", "--quiet" }, -- how to start it (`--socket PATH` is appended)
  model = nil, -- nil: the daemon's default_model
  chat_split = nil, -- how :AssistantChat opens its buffer: nil (this window), "split", "vsplit", "tabnew"
  split = "split", -- how answers to :AssistantAsk/:AssistantSummarize/picked conversations open
  keys = { send = "<CR>", send_insert = "<M-CR>", cancel = "<C-c>" }, -- chat buffer keys; false disables one
  -- :AssistantReplace's prompt is the daemon's `code-edit` role (edit it in the daemon's
  -- config.toml, [roles.code-edit]); a string here is sent as the system prompt instead.
  replace_system = nil,
}

function M.setup(opts)
  opts = opts or {}
  M.config = vim.tbl_deep_extend("force", M.config, opts)
  M.config.cmd = opts.cmd or M.config.cmd -- a list replaces, not merges by index
  M.create_commands()
end

--- The user commands (plugin/assistant.lua and setup() both call this; redefining is harmless).
function M.create_commands()
  local function cmd(name, fn, opts)
    vim.api.nvim_create_user_command(name, fn, opts)
  end
  local roles = "customlist,v:lua.require'assistant'.complete_role"
  cmd("AssistantChat", function(o)
    M.chat(o.args)
  end, { nargs = "*", complete = roles, desc = "Open a chat buffer ([@role], and send [message])" })
  cmd("AssistantAsk", function(o)
    require("assistant.edit").ask(o)
  end, { nargs = "*", range = true, complete = roles,
    desc = "Ask ([@role]) about the selection; the answer opens in a split" })
  cmd("AssistantReplace", function(o)
    require("assistant.edit").replace(o)
  end, { nargs = "*", range = true, complete = roles,
    desc = "Replace the selection with the answer to [instruction] (role: [@role], else code-edit)" })
  cmd("AssistantSummarize", function(o)
    require("assistant.edit").summarize(o.args)
  end, { nargs = "*", complete = roles, desc = "Summarize ([@role]) [url] or the URL under the cursor" })
  cmd("AssistantConversations", function(o)
    if o.bang then
      return require("assistant.list").open(o.args)
    end
    M.conversations(o.args)
  end, { nargs = "*", bang = true,
    desc = "Pick a stored conversation ([query] searches) and continue it; with !, a live list buffer" })
  cmd("AssistantAttach", function(o)
    require("assistant.attach").command(o)
  end, { nargs = "?", bang = true, complete = "file",
    desc = "Attach [file] (default: this buffer) to the next message of a chat; ! drops them" })
  cmd("AssistantCancel", function()
    M.cancel()
  end, { desc = "Cancel this chat buffer's request, else the newest one in flight" })
end

--- A command's arguments as (role, rest): a first word "@NAME" names one of the
--- daemon's roles (roles/list); without one, role is nil.
function M.split_role(args)
  local role, rest = (args or ""):match("^%s*@([^%s]+)%s*(.-)%s*$")
  if role then
    return role, rest
  end
  return nil, args or ""
end

--- The daemon's role names (roles/list), waiting at most `ms` for them; {} when the
--- daemon does not answer in time. Used for completion, so it never starts a daemon.
function M.role_names(ms)
  local names, done = {}, false
  require("assistant.rpc").request("roles/list", nil, function(err, res)
    if not err then
      for _, r in ipairs(res.roles) do
        names[#names + 1] = r.name
      end
    end
    done = true
  end, nil, false)
  vim.wait(ms or 1000, function()
    return done
  end, 10)
  return names
end

--- Command-line completion of the first argument: "@" and a role name.
function M.complete_role(lead, line, pos)
  local before = line:sub(1, pos)
  if not lead:match("^@") or before:match("^%S*%s+%S+%s") then
    return {}
  end
  local out = {}
  for _, name in ipairs(M.role_names()) do
    if ("@" .. name):sub(1, #lead) == lead then
      out[#out + 1] = "@" .. name
    end
  end
  return out
end

--- One line that says what went wrong, from a JSON-RPC error object.
function M.describe(err)
  local msg = tostring(err.message or "error")
  local data = type(err.data) == "table" and err.data or {}
  for _, k in ipairs({ "message", "reason", "provider", "url" }) do
    if type(data[k]) == "string" and not msg:find(data[k], 1, true) then
      msg = msg .. " (" .. k .. ": " .. data[k] .. ")"
    end
  end
  return msg
end

function M.echo(msg, hl)
  vim.api.nvim_echo({ { "assistant: " .. msg, hl or "None" } }, false, {})
end

function M.error(msg)
  vim.notify("assistant: " .. msg, vim.log.levels.ERROR)
end

--- Nil-safe field: the daemon's JSON nulls decode to vim.NIL.
function M.val(v, default)
  if v == nil or v == vim.NIL then
    return default
  end
  return v
end

-- Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
local function days(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end

--- The daemon's UTC time ("2025-01-05T14:03:22.123Z") as local "YYYY-MM-DD HH:MM".
function M.when(iso)
  local y, mo, d, h, mi, s = tostring(M.val(iso, "")):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then
    return tostring(M.val(iso, "?"))
  end
  local t = days(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(s)
  return os.date("%Y-%m-%d %H:%M", t)
end

--- A conversation's title on one line.
function M.title(c)
  local t = M.val(c.title, "")
  return t == "" and "(untitled)" or (t:gsub("%s+", " "))
end

local config_warned = nil -- the config_error last warned about: one warning per change

--- config/changed (pushed by the daemon after each reload attempt): warn when the new
--- config was not applied, once per distinct error, and say when one is applied again.
function M.config_changed(p)
  if p.config_ok == false then
    local why = tostring(M.val(p.config_error, "unknown error"))
    if why ~= config_warned then
      config_warned = why
      vim.notify("assistant: the daemon did not apply its changed config (it keeps the last good one): "
        .. why, vim.log.levels.WARN)
    end
  elseif p.config_ok == true and config_warned then
    config_warned = nil
    vim.notify("assistant: the daemon applied its config again", vim.log.levels.INFO)
  end
end

--- :AssistantChat [@role] [message]
function M.chat(args)
  local chat = require("assistant.chat")
  local role, message = M.split_role(args)
  local buf = chat.open({ split = M.config.chat_split, role = role })
  if message and message ~= "" then
    chat.submit(buf, message)
  end
  return buf
end

--- :AssistantConversations [query]: pick a stored conversation and continue it.
function M.conversations(query)
  local rpc = require("assistant.rpc")
  local params = { limit = 50 }
  if query and query ~= "" then
    params.query = query
  end
  rpc.request("conversations/list", params, function(err, res)
    if err then
      return M.error(M.describe(err))
    end
    if #res.conversations == 0 then
      return M.echo("no stored conversations")
    end
    vim.ui.select(res.conversations, {
      prompt = "Conversation",
      format_item = function(c)
        return ("%s  %s  (%d messages)"):format(M.when(c.updated_at), M.title(c), c.message_count or 0)
      end,
    }, function(choice)
      if choice then
        M.open_conversation(choice.id)
      end
    end)
  end)
end

function M.open_conversation(id)
  require("assistant.rpc").request("conversations/get", { id = id }, function(err, conv)
    if err then
      return M.error(M.describe(err))
    end
    require("assistant.chat").open({ split = M.config.split, conversation = conv })
  end)
end

--- :AssistantCancel: the request of this chat buffer, else the newest one in flight.
function M.cancel()
  local chat = require("assistant.chat")
  local rpc = require("assistant.rpc")
  if chat.cancel(vim.api.nvim_get_current_buf()) or rpc.cancel(rpc.last_pending()) then
    M.echo("cancelling…")
  else
    M.echo("nothing to cancel")
  end
end

return M
