-- Text as the gateway's Lua filters check and repeat it: UTF-8 validation, percent-decoding,
-- shortening, JSON string literals. Lua 5.1 (Envoy runs LuaJIT): strings are bytes.
-- Unit tests: tests/unit/gateway/test_lua_text.py.
local M = {}

local find, sub, byte, char, gsub = string.find, string.sub, string.byte, string.char, string.gsub

M.MAX_REPORTED = 256  -- bytes of a client's text repeated in a reply

-- Valid UTF-8 (RFC 3629: shortest forms only, no surrogates, nothing above U+10FFFF)? Text
-- that is not gets no reply from the filters: theirs must be valid JSON.
function M.is_utf8(t)
  if not find(t, "[\128-\255]") then return true end
  local i, n = 1, #t
  while i <= n do
    local c = byte(t, i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c >= 0xC2 and c <= 0xDF then len = 2
    elseif c >= 0xE0 and c <= 0xEF then
      len = 3
      if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
    elseif c >= 0xF0 and c <= 0xF4 then
      len = 4
      if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
    elseif c >= 0x80 then return false end
    for k = i + 1, i + len - 1 do
      local d = byte(t, k)
      if d == nil or d < lo or d > hi then return false end
      lo, hi = 0x80, 0xBF
    end
    i = i + len
  end
  return true
end

-- Percent-decoding: every %XX becomes its byte (the result need not be UTF-8); a "%" not
-- followed by two hex digits stays as it is. "+" stays "+": it is a space only in query
-- strings, and that is the transcoder's business (query_param_unescape_plus).
function M.percent_decode(t)
  return (gsub(t, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- A name as reported: at most MAX_REPORTED bytes, cut on a UTF-8 character boundary and then
-- ending in "...".
function M.shorten(t)
  if #t <= M.MAX_REPORTED then return t end
  local cut = M.MAX_REPORTED
  while cut > 0 and byte(t, cut + 1) >= 0x80 and byte(t, cut + 1) < 0xC0 do
    cut = cut - 1
  end
  return sub(t, 1, cut) .. "..."
end

-- A JSON string literal of the UTF-8 text t: quotes, backslashes and control characters escaped.
function M.json_string(t)
  local escaped = gsub(t, '[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return string.format("\\u%04x", byte(c))
  end)
  return '"' .. escaped .. '"'
end

return M
