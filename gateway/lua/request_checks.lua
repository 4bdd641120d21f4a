-- The catalytic.request_checks filter (envoy.yaml.tmpl): client mistakes the transcoder would let
-- through or answer badly, refused before it, for every request whose method and path match a
-- REST binding of the schema render.py builds from the descriptor set (gateway/schema.py):
-- - path variables and query parameters whose percent-escapes do not decode to UTF-8 (they
--   would reach a service as a string it cannot parse: a 500): 400 naming them;
-- - a body on a binding that reads one, without content-type application/json: 415;
-- - unknown JSON body keys, which the transcoder drops silently (envoy#46623), values of the
--   wrong JSON type (`"dimensions": "2"`, which it would coerce), and bodies that are not JSON:
--   400 INVALID_ARGUMENT with a BadRequest naming the field (json.lua).
-- On the way back, the transcoder's own 400s are reshaped the same way (transcoder_errors.lua).
-- Native gRPC passes untouched. render.py bundles this file with the modules it requires and the
-- generated schema into the filter's inline_string. Lua 5.1 (Envoy runs LuaJIT).
-- Unit tests: tests/unit/gateway/test_lua_filters.py.
local SCHEMA = require("schema")
local json = require("json")
local status = require("status")
local text = require("text")
local transcoder_errors = require("transcoder_errors")

local find, sub, match, gmatch, lower = string.find, string.sub, string.match, string.gmatch,
  string.lower
local is_utf8, shorten, unescape = text.is_utf8, text.shorten, text.percent_decode
local respond, reject = status.respond, status.reject

local function by_method(rows)  -- method -> {{the rest of the row}, ...}
  local out = {}
  for _, row in ipairs(rows) do
    out[row[1]] = out[row[1]] or {}
    table.insert(out[row[1]], {row[2], row[3], row[4]})
  end
  return out
end
local ROUTES = by_method(SCHEMA.routes)  -- {pattern, message}
local PATHS = by_method(SCHEMA.paths)  -- {pattern, variables, reads a body}

local NOT_UTF8 = "must be valid UTF-8 once percent-decoded"

-- application/json, with no parameter but charset=utf-8 (JSON is UTF-8; the transcoder reads
-- nothing else). +json media types are not JSON bodies we know the meaning of (merge-patch,
-- problem): refused too.
local function is_json(content_type)
  local media, params = match(lower(content_type), "^%s*([^;%s]+)%s*(.*)$")
  if media ~= "application/json" then return false end
  for name, v in gmatch(params, ';%s*([^=;%s]+)%s*=%s*"?([^;"%s]*)"?%s*') do
    if name == "charset" and v ~= "utf-8" then return false end
  end
  return true
end

function envoy_on_request(handle)
  local headers = handle:headers()
  local content_type = headers:get("content-type") or ""
  -- Native gRPC: not ours (on a REST path the router answers it with 415).
  if find(lower(content_type), "^application/grpc") then return end
  local full = headers:get(":path")
  local q = find(full, "?", 1, true)
  local path = q and sub(full, 1, q - 1) or full
  -- Headers are read now: the handle's header object expires at handle:body().
  local method = headers:get(":method")
  local route, hit
  for _, candidate in ipairs(PATHS[method] or {}) do
    hit = {find(path, candidate[1])}
    if hit[1] ~= nil then
      route = candidate
      break
    end
  end
  if route == nil then return end  -- the transcoder answers 404
  -- Percent-escapes that do not decode to UTF-8 would reach a service as a string field it
  -- cannot parse (a 500): refuse them, naming the parameter.
  for k, variable in ipairs(route[2]) do
    if not is_utf8(unescape(hit[k + 2])) then return reject(handle, variable, NOT_UTF8) end
  end
  if q then
    for pair in gmatch(sub(full, q + 1), "[^&]+") do
      local name, value = match(pair, "^([^=]*)=?(.*)$")
      local decoded = unescape(name)
      if not is_utf8(decoded) or not is_utf8(unescape(value)) then
        if not is_utf8(decoded) then decoded = is_utf8(name) and name or "query" end
        return reject(handle, shorten(decoded), NOT_UTF8)
      end
    end
  end
  if not route[3] then return end  -- the binding reads no body
  local body = handle:body()
  if body == nil or body:length() == 0 then return end
  if not is_json(content_type) then
    local given = shorten(content_type)
    local message = "a request body needs content-type: application/json"
    if given ~= "" and is_utf8(given) then
      message = "content-type " .. given .. " is not supported: send JSON with "
        .. "content-type: application/json"
    end
    return respond(handle, "415", message)
  end
  local message
  for _, candidate in ipairs(ROUTES[method] or {}) do
    if find(path, candidate[1]) then
      message = candidate[2]
      break
    end
  end
  if message == nil then return end  -- a scalar or opaque body: the transcoder's
  local ok, problem = pcall(json.body_problem, body:getBytes(0, body:length()), message, SCHEMA)
  if not ok then  -- a bug in this script: log it, let the transcoder answer
    handle:logErr("request_checks: " .. tostring(problem))
    return
  end
  if problem == nil then return end
  local field = shorten(problem.field)
  if not is_utf8(field) then return end  -- the transcoder refuses it as well
  if problem.unknown then
    return respond(handle, "400", 'unknown field "' .. field .. '"', field, "unknown field")
  end
  reject(handle, field, problem.description)
end

-- The transcoder's own 400s (a query value it cannot parse, a body this filter let pass), in
-- the shape of every other 400: "<field>: <what is wrong>" and a BadRequest naming the field.
function envoy_on_response(handle)
  local headers = handle:headers()
  if headers:get(":status") ~= "400" then return end
  if not find(headers:get("content-type") or "", "^application/json") then return end
  local body = handle:body()
  if body == nil or body:length() > 65536 then return end
  local reply = body:getBytes(0, body:length())
  -- The services' 400s and this filter's carry details: left as they are.
  if find(reply, '"details"', 1, true) then return end
  local _, quote = find(reply, '^{"code":3,"message":"')
  if quote == nil then return end
  local message = json.read_string(reply, quote)
  if message == nil or not is_utf8(message) then return end
  local field, description = transcoder_errors.explain(message, SCHEMA.enums)
  field, description = shorten(field), shorten(description)
  if not is_utf8(field) or not is_utf8(description) then return end
  body:setBytes(status.body(field .. ": " .. description, field, description))
end
