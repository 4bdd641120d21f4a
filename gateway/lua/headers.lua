-- The envoy.filters.http.lua filter (envoy.yaml.tmpl): header names on the way in; on the way
-- out `www-authenticate` on 401 replies and `retry-after` on 429 replies. Every other reply
-- passes untouched and unbuffered. render.py bundles this file with the modules it requires
-- into the filter's inline_string. Lua 5.1 (Envoy runs LuaJIT).
-- Unit tests: tests/unit/gateway/test_lua_filters.py.
local retry_after = require("retry_after")
local status = require("status")

local NAMES = "names may only use a-z, 0-9, -, _ and ."

-- Header names gRPC cannot carry as metadata (anything but a-z, 0-9, "-", "_", "."; HTTP allows
-- "+", "!", "~"...) make the services fail the call with INTERNAL, which would turn a client
-- mistake into a 500: refuse them here.
function envoy_on_request(handle)
  for name, _ in pairs(handle:headers()) do
    if string.find(name, "^[^:]") and string.find(name, "[^a-z0-9%-_%.]") then
      return status.reject(handle, "headers", NAMES)
    end
  end
end

function envoy_on_response(handle)
  local headers = handle:headers()
  local code = headers:get(":status")
  -- UNAUTHENTICATED reaches REST callers as 401: say which scheme to use.
  if code == "401" then
    if headers:get("www-authenticate") == nil then
      headers:add("www-authenticate", 'Bearer realm="catalytic"')
    end
    return
  end
  if code ~= "429" or headers:get("retry-after") ~= nil then
    return
  end
  -- Only 429 bodies (small) are read.
  local body = handle:body()
  if body == nil then
    return
  end
  local seconds = retry_after.seconds(body:getBytes(0, math.min(body:length(), 65536)))
  if seconds ~= nil then
    handle:headers():add("retry-after", seconds)
  end
end
