-- A stand-in for the part of Envoy's Lua filter API (envoy.filters.http.lua) that the gateway's
-- filters use, recording what they do, for tests/unit/gateway/lua.py. Only what Envoy documents:
-- headers() (get, add, replace, remove, pairs), body() (length, getBytes, setBytes), respond(),
-- streamInfo():dynamicMetadata():set(), logTrace...logCritical. As in Envoy, a header object
-- read before body() may not be used after it, and respond() ends the script.
local M = {}

-- What respond() raises to end the script; run() treats it as a normal end.
local RESPONDED = setmetatable({}, {__tostring = function() return "respond() ended the script" end})

local function header_map(entries, state)
  local methods = {}
  local map = setmetatable({}, {__index = methods})
  local function check()
    if state.expired[map] then error("headers() object used after body()", 3) end
  end
  function methods.get(self, name) check(); return rawget(self, name) end
  function methods.add(self, name, value)
    check()
    local old = rawget(self, name)
    rawset(self, name, old == nil and value or old .. "," .. value)
  end
  function methods.replace(self, name, value) check(); rawset(self, name, value) end
  function methods.remove(self, name) check(); rawset(self, name, nil) end
  for name, value in pairs(entries) do rawset(map, name, value) end
  return map
end

local function buffer(bytes)
  local body = {bytes = bytes}
  function body.length(self) return #self.bytes end
  function body.getBytes(self, index, length)
    if index < 0 or length < 0 or index + length > #self.bytes then
      error("getBytes out of range", 2)
    end
    return string.sub(self.bytes, index + 1, index + length)
  end
  function body.setBytes(self, bytes) self.bytes = bytes end
  return body
end

-- A handle for one direction of a stream: `headers` a table of name -> value, `body` a string or
-- nil (no body). After the script: handle.headers_now (the header map, possibly changed),
-- handle.buffer (the body, possibly changed), handle.response ({headers, body} or nil),
-- handle.metadata (namespace -> key -> value), handle.logs ({level, message} ...).
function M.handle(headers, body)
  local state = {expired = setmetatable({}, {__mode = "k"})}
  local handle = {metadata = {}, logs = {}, response = nil, body_calls = 0}
  handle.headers_now = header_map(headers, state)
  handle.buffer = body ~= nil and buffer(body) or nil

  function handle.headers(self)
    return self.headers_now
  end
  function handle.body(self)
    self.body_calls = self.body_calls + 1
    -- The header object the script holds expires; a fresh headers() call gives a live one.
    state.expired[self.headers_now] = true
    local live = header_map({}, state)
    for name, value in pairs(self.headers_now) do rawset(live, name, value) end
    self.headers_now = live
    return self.buffer
  end
  function handle.respond(self, response_headers, response_body)
    self.response = {headers = response_headers, body = response_body}
    error(RESPONDED, 0)
  end
  function handle.streamInfo(self)
    local metadata = self.metadata
    return {
      dynamicMetadata = function()
        return {
          set = function(_, namespace, key, value)
            metadata[namespace] = metadata[namespace] or {}
            metadata[namespace][key] = value
          end,
        }
      end,
    }
  end
  for _, level in ipairs({"Trace", "Debug", "Info", "Warn", "Err", "Critical"}) do
    handle["log" .. level] = function(self, message)
      table.insert(self.logs, {level, message})
    end
  end
  return handle
end

-- From now on reading or writing an undefined global is an error: a typo or a missing `local` in
-- the filters fails the tests (their only globals are Envoy's hooks, set when they load).
function M.strict()
  setmetatable(_G, {
    __newindex = function(_, name) error("assignment to undefined global " .. tostring(name), 2) end,
    __index = function(_, name) error("undefined global " .. tostring(name), 2) end,
  })
end

-- Runs envoy_on_request or envoy_on_response (`fn`) with the handle, as Envoy would.
function M.run(fn, handle)
  local ok, err = pcall(fn, handle)
  if not ok and err ~= RESPONDED then error(err, 0) end
  return handle
end

return M
