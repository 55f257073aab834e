-- :checkhealth assistant. Neovim 0.9+ has vim.health.start/ok/...; 0.7 and 0.8 have
-- require("health").report_start/report_ok/...
local M = {}

local h
if vim.health and vim.health.start then
  h = vim.health
else
  local old = require("health")
  h = { start = old.report_start, ok = old.report_ok, info = old.report_info,
    warn = old.report_warn, error = old.report_error }
end

local STATUS_TIMEOUT_MS = 3000

-- daemon/status on the plugin's connection, waited for here (a health check is a
-- synchronous report); never starts the daemon.
local function status()
  local done, err, res = false, nil, nil
  require("assistant.rpc").request("daemon/status", nil, function(e, r)
    done, err, res = true, e, r
  end, nil, false)
  if not vim.wait(STATUS_TIMEOUT_MS, function()
    return done
  end, 20) then
    return nil, { message = ("no answer within %d ms"):format(STATUS_TIMEOUT_MS) }
  end
  return res, err
end

function M.check()
  local a = require("assistant")
  h.start("assistant")
  if vim.fn.has("nvim-0.7") == 0 then
    h.error("Neovim 0.7 or later is needed")
  end
  local path = require("assistant.rpc").socket_path()
  local st = (vim.uv or vim.loop).fs_stat(path)
  if not st then
    local how = a.config.autostart and "it starts on first use (autostart is on), or run `assistantd`"
      or "run `assistantd`, or set autostart = true in setup()"
    return h.error("no daemon socket at " .. path, { how })
  end
  if st.type ~= "socket" then
    return h.error(path .. " is not a socket (" .. st.type .. ")")
  end
  h.ok("socket " .. path)
  local res, err = status()
  if not res then
    return h.error("the daemon does not answer daemon/status: " .. a.describe(err),
      { "restart it: `assistantctl daemon restart`" })
  end
  local version = ("assistantd %s, pid %s, up %.0f s"):format(res.version, res.pid, res.uptime_s)
  if res.protocol == 1 then
    h.ok(version .. ", protocol 1")
  else
    h.error(version .. (", protocol %s; this plugin speaks protocol 1"):format(tostring(res.protocol)))
  end
  if res.config_ok then
    h.ok("config " .. res.config_path)
  else
    h.error("config not applied: " .. tostring(a.val(res.config_error, "?")), { "fix " .. res.config_path })
  end
  h.ok("default model: " .. tostring(a.config.model or a.val(res.default_model, "(daemon default)")))
  h.info("providers: " .. table.concat(res.providers or {}, ", "))
  if a.val(res.keyring_error) then
    h.warn("keyring: " .. res.keyring_error)
  end
end

return M
