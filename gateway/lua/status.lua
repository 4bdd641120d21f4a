-- The gateway's own 400 and 415 replies: a google.rpc.Status JSON body, with a
-- google.rpc.BadRequest naming the field when there is one (the services' 400s have the same
-- shape), marked so that local_reply_config leaves it as it is. Lua 5.1 (Envoy runs LuaJIT).
-- Unit tests: tests/unit/gateway/test_lua_filters.py.
local text = require("text")

local M = {}

local json_string = text.json_string

-- The body: code 3 INVALID_ARGUMENT; `field` (and its `description`) optional.
function M.body(message, field, description)
  local body = '{"code":3,"message":' .. json_string(message)
  if field ~= nil then
    body = body .. ',"details":[{"@type":"type.googleapis.com/google.rpc.BadRequest",'
      .. '"field_violations":[{"field":' .. json_string(field)
      .. ',"description":' .. json_string(description) .. '}]}]'
  end
  return body .. "}"
end

-- Answers the request with `status` ("400", "415") and that body.
function M.respond(handle, status, message, field, description)
  -- Marks the reply for local_reply_config (envoy.yaml.tmpl), which then keeps the body.
  handle:streamInfo():dynamicMetadata():set("catalytic.request_checks", "reply", status)
  handle:respond({[":status"] = status, ["content-type"] = "application/json"},
                 M.body(message, field, description))
end

-- 400 "<field>: <description>" naming the field.
function M.reject(handle, field, description)
  M.respond(handle, "400", field .. ": " .. description, field, description)
end

return M
