-- The `retry-after` of a 429 reply, from the google.rpc.RetryInfo in its JSON body.
--
-- RESOURCE_EXHAUSTED reaches REST callers as 429. The services send `retry-after` with the
-- status, as a gRPC trailer, and the transcoder copies no trailer but grpc-status and
-- grpc-message into the reply's headers (HTTP/1.1 has nowhere else for them), so the header is
-- rebuilt from the body: whole seconds, rounded up, at least 1, as the services compute it.
-- Lua 5.1 (Envoy runs LuaJIT). Unit tests: tests/unit/gateway/test_lua_filters.py.
local M = {}

-- The header's value for a reply body (the transcoder prints the delay as a Duration:
-- "retry_delay":"1.500s"), or nil when the body has no RetryInfo delay.
function M.seconds(body)
  local delay = string.match(body, '"retry_delay"%s*:%s*"(%d+%.?%d*)s"')
  if delay == nil then return nil end
  return string.format("%d", math.max(1, math.ceil(tonumber(delay))))
end

return M
