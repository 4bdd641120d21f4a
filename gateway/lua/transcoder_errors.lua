-- The transcoder's own 400 messages, reshaped like every other 400 of the gateway.
--
-- A query value it cannot parse, or a body request_checks let pass, comes back from the
-- transcoder as {"code":3,"message":"<what protobuf said>\n"} (through local_reply_config):
-- "page_size: invalid value \"x\" for type TYPE_INT32", ": Root element must be a message.",
-- "Could not find field ...". `explain` turns such a message into the field to blame and what
-- is wrong with it, without proto type names. Lua 5.1 (Envoy runs LuaJIT).
-- Unit tests: tests/unit/gateway/test_lua_filters.py.
local json = require("json")

local M = {}

local match, gsub, concat = string.match, string.gsub, table.concat

local TYPE_KINDS = {
  TYPE_INT32 = "int32", TYPE_SINT32 = "int32", TYPE_SFIXED32 = "int32",
  TYPE_UINT32 = "uint32", TYPE_FIXED32 = "uint32", TYPE_INT64 = "int64",
  TYPE_SINT64 = "int64", TYPE_SFIXED64 = "int64", TYPE_UINT64 = "uint64",
  TYPE_FIXED64 = "uint64", TYPE_FLOAT = "float", TYPE_DOUBLE = "double",
  TYPE_BOOL = "bool", TYPE_STRING = "string", TYPE_BYTES = "bytes",
}

-- (field, description) for a transcoder message; `enums` is the schema's enum name -> {value
-- names}, to list the names an enum accepts. The field is "body" when none is named.
function M.explain(message, enums)
  message = gsub(message, "%s+$", "")
  local field, rest = match(message, "^([%w_%.%[%]]+): (.+)$")
  if field == nil then
    local unknown = match(message, '^Could not find field "(.-)" in the type')
    if unknown ~= nil then return unknown, "unknown query parameter" end
    local clash = match(message, "^The binding value .- of the field (%S+) is conflicting")
    if clash ~= nil then return clash, "differs between the path and the body" end
    field = "body"
    rest = gsub(message, "^:%s*", "")
    rest = gsub(rest, "%s*\n.*$", "")
  end
  local given, type_name = match(rest, "^invalid value (.*) for type (%S+)$")
  if given ~= nil then
    local kind = TYPE_KINDS[type_name]
    local enum = enums[match(type_name, "^type%.googleapis%.com/(.+)$") or ""]
    if kind ~= nil then
      rest = "invalid value " .. given .. ": " .. gsub(json.DESCRIBE[kind], " %(.*%)$", "")
    elseif enum ~= nil then
      rest = "invalid value " .. given .. ": must be one of " .. concat(enum, ", ")
    else
      rest = "invalid value " .. given
    end
  end
  return field, rest
end

return M
