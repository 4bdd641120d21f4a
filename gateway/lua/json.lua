-- JSON bodies checked against the request schema (proto3 JSON mapping), in one pass.
--
-- `body_problem(text, message, schema)` walks a JSON text as the body of `message` and returns
-- its first problem: an unknown key, a value of the wrong JSON type, or text that is not JSON.
-- It never builds the value: keys are decoded (escapes included: "na\u006de" is "name", as the
-- transcoder reads it), every other string is skipped with a plain string.find, so the base64
-- `values` field of a big lattice costs one search. What it leaves to the transcoder (nesting
-- deeper than MAX_DEPTH, more than MAX_STEPS values) passes unchecked.
-- `read_string(text, i)` decodes the JSON string at text[i] (the transcoder's 400 messages).
-- Lua 5.1 (Envoy runs LuaJIT); unit tests: tests/unit/gateway/test_lua_json.py.
local M = {}

local find, sub, byte, char = string.find, string.sub, string.byte, string.char
local match, gsub = string.match, string.gsub
local floor, concat = math.floor, table.concat
-- The schema of the current walk (gateway/schema.py): message -> {key = message below, or
-- true}, message -> {key = JSON type}. Set by body_problem.
local MESSAGES, KINDS
local MAX_DEPTH = 32
-- Work bound: after this many steps (values, runs of blanks, escapes) the walk
-- gives up and the body passes unchecked, so a body of millions of tiny values
-- costs Envoy milliseconds, not seconds. Real bodies take a few dozen.
local MAX_STEPS = 20000
local steps = 0

-- The walk stops early with error(PASS) (too much JSON, or JSON this parser
-- leaves to the transcoder), error(MALFORMED) (not JSON), or
-- error({field = "random.seed", description = ...}) for a value of the wrong
-- type, error({field = "random.sede", unknown = true}) for an unknown key.
local PASS, MALFORMED = {}, {}

-- What a value of each JSON type must be (proto3 JSON mapping). Strings are
-- never coerced into numbers or booleans; 64-bit integers take a string of
-- digits as well (their canonical form); floats take "NaN", "Infinity" and
-- "-Infinity" (the proto3 JSON spellings: a NaN or infinite constant fill
-- blocks every vertex).
local DESCRIBE = {
  int32 = "must be an integer from -2147483648 to 2147483647 (a JSON number)",
  uint32 = "must be an integer from 0 to 4294967295 (a JSON number)",
  int64 = "must be an integer from -9223372036854775808 to 9223372036854775807 "
    .. "(a JSON number or a string of digits)",
  uint64 = "must be an integer from 0 to 18446744073709551615 "
    .. "(a JSON number or a string of digits)",
  float = 'must be a JSON number within the range of a 32-bit float, '
    .. 'or "NaN", "Infinity", "-Infinity"',
  double = 'must be a JSON number, or "NaN", "Infinity", "-Infinity"',
  bool = "must be true or false",
  string = "must be a string",
  bytes = "must be a string (base64)",
  enum = "must be a value name (a string) or number",
  message = "must be a JSON object",
  map = "must be a JSON object",
  list = "must be a JSON list",
}
local INT32 = {int32 = {-2147483648, 2147483647}, uint32 = {0, 4294967295}}
local INT64 = {int64 = "9223372036854775807", uint64 = "18446744073709551615"}
local NONFINITE = {NaN = true, Infinity = true, ["-Infinity"] = true}
local FLOAT_MAX = 3.4028234663852886e38

local function bad(path, description)
  if path == "" then path = "body" end
  error({field = path, description = description})
end

-- The position of the first non-blank byte from i. Each run of one kind of
-- blank takes one find: a one-byte pattern is ten times faster than a class.
local BLANK_RUN = {[32] = "^ +", [10] = "^\n+", [13] = "^\r+", [9] = "^\t+"}
local function ws(s, i)
  local run = BLANK_RUN[byte(s, i)]
  while run ~= nil do
    steps = steps + 1
    if steps > MAX_STEPS then error(PASS) end
    local _, e = find(s, run, i)
    i = e + 1
    run = BLANK_RUN[byte(s, i)]
  end
  return i
end

-- s[i] is '"': the position after the closing quote, which is the first quote
-- not preceded by an odd number of backslashes. Escapes are not decoded.
local function skip_string(s, i)
  local j = i + 1
  while true do
    local q = find(s, '"', j, true)
    if q == nil then error(MALFORMED) end
    local k = q - 1
    while byte(s, k) == 92 do k = k - 1 end
    if (q - 1 - k) % 2 == 0 then return q + 1 end
    steps = steps + 1
    if steps > MAX_STEPS then error(PASS) end
    j = q + 1
  end
end

-- The position after the JSON number at s[i]: -?int(.frac)?(e[+-]?exp)?
local function number_end(s, i)
  local _, e = find(s, "^%-?%d+", i)
  if e == nil then error(MALFORMED) end
  local _, f = find(s, "^%.%d+", e + 1)
  local _, x = find(s, "^[eE][%-+]?%d+", (f or e) + 1)
  return (x or f or e) + 1
end

local function utf8(cp)
  if cp < 0x80 then return char(cp) end
  if cp < 0x800 then return char(0xC0 + floor(cp / 0x40), 0x80 + cp % 0x40) end
  if cp < 0x10000 then
    return char(0xE0 + floor(cp / 0x1000), 0x80 + floor(cp / 0x40) % 0x40,
                0x80 + cp % 0x40)
  end
  return char(0xF0 + floor(cp / 0x40000), 0x80 + floor(cp / 0x1000) % 0x40,
              0x80 + floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local function hex4(s, i)  -- the 4 hex digits at s[i] as a number
  local h = sub(s, i, i + 3)
  if #h ~= 4 or find(h, "%X") then error(MALFORMED) end
  return tonumber(h, 16)
end

local ESCAPES = {['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f",
                 n = "\n", r = "\r", t = "\t"}

-- A string's text from the bytes between its quotes, escapes decoded as the
-- transcoder decodes them ("na\u006de" is the key "name").
local function decode(raw)
  if not find(raw, "\\", 1, true) then return raw end
  local out, n, i = {}, 0, 1
  while true do
    local b = find(raw, "\\", i, true)
    n = n + 1
    if b == nil then
      out[n] = sub(raw, i)
      return concat(out)
    end
    out[n] = sub(raw, i, b - 1)
    steps = steps + 1
    if steps > MAX_STEPS then error(PASS) end
    local c = sub(raw, b + 1, b + 1)
    n = n + 1
    if c == "u" then
      local cp = hex4(raw, b + 2)
      i = b + 6
      if cp >= 0xD800 and cp <= 0xDBFF then  -- high surrogate: a pair
        if sub(raw, i, i + 1) ~= "\\u" then error(PASS) end
        local low = hex4(raw, i + 2)
        if low < 0xDC00 or low > 0xDFFF then error(PASS) end
        cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
        i = i + 6
      elseif cp >= 0xDC00 and cp <= 0xDFFF then  -- lone low surrogate
        error(PASS)
      end
      out[n] = utf8(cp)
    else
      out[n] = ESCAPES[c]
      if out[n] == nil then error(MALFORMED) end
      i = b + 2
    end
  end
end

local function join(path, key)
  if path == "" then return key end
  return path .. "." .. key
end

-- Decimal digits (no sign) within a magnitude given as digits?
local function fits(digits, limit)
  digits = gsub(digits, "^0+(%d)", "%1")
  return #digits < #limit or (#digits == #limit and digits <= limit)
end

-- A whole number within the range of an integer kind? `text` is a JSON
-- number, or the content of a string for the 64-bit kinds.
local function integer_in_range(kind, text)
  local sign, digits = match(text, "^(%-?)(%d+)$")
  local v = tonumber(text)
  if v == nil then return false end
  if digits == nil and v ~= floor(v) then return false end  -- 2.5, 1e-3
  if INT32[kind] ~= nil then return v >= INT32[kind][1] and v <= INT32[kind][2] end
  if digits == nil then  -- 1e3: the transcoder reads it as a double
    return v >= (kind == "uint64" and 0 or -2 ^ 63) and v < 2 ^ (kind == "uint64" and 64 or 63)
  end
  if sign == "-" then
    return kind == "int64" and fits(digits, "9223372036854775808")
  end
  return fits(digits, INT64[kind])
end

-- The scalar at s[i] checked against its kind; the position after it.
local function scalar(s, i, kind, path)
  local c = byte(s, i)
  local after, text, quoted
  if c == 34 then
    after = skip_string(s, i)
    text, quoted = sub(s, i + 1, after - 2), true
  elseif c == 116 and sub(s, i, i + 3) == "true" then
    after, text = i + 4, "true"
  elseif c == 102 and sub(s, i, i + 4) == "false" then
    after, text = i + 5, "false"
  elseif c == 123 or c == 91 then
    bad(path, DESCRIBE[kind])
  else
    after = number_end(s, i)
    text = sub(s, i, after - 1)
  end
  local literal = not quoted and (text == "true" or text == "false")
  local number = not quoted and not literal
  local ok = true  -- a kind this script does not know: the transcoder decides
  if kind == "string" or kind == "bytes" then
    ok = quoted
  elseif kind == "bool" then
    ok = literal
  elseif kind == "enum" then
    ok = quoted or (number and find(text, "^%-?%d+$") ~= nil)
  elseif kind == "float" or kind == "double" then
    if quoted then
      ok = NONFINITE[text] == true
    elseif number then
      local v = math.abs(tonumber(text))
      ok = v < math.huge and (kind == "double" or v <= FLOAT_MAX)
    else
      ok = false
    end
  elseif kind == "int64" or kind == "uint64" then
    ok = (number or (quoted and find(text, "^%-?%d+$") ~= nil))
      and integer_in_range(kind, text)
  elseif INT32[kind] ~= nil then
    ok = number and integer_in_range(kind, text)
  end
  if not ok then bad(path, DESCRIBE[kind]) end
  return after
end

-- The JSON value at s[i]. `kind` is its JSON type (nil: anything, and then
-- `path` may be nil too); `name` the message of an object checked below.
-- Returns the position after the value.
local value

local function object(s, i, name, path, depth)
  local keys, kinds = MESSAGES[name or ""], KINDS[name or ""]
  i = ws(s, i + 1)
  if byte(s, i) == 125 then return i + 1 end  -- {}
  while true do
    if byte(s, i) ~= 34 then error(MALFORMED) end  -- a key: "..."
    local after = skip_string(s, i)
    local below, below_path, kind = nil, nil, nil
    if keys ~= nil then
      local key = decode(sub(s, i + 1, after - 2))
      local accepted = keys[key]
      if accepted == nil then error({field = join(path, key), unknown = true}) end
      below_path, kind = join(path, key), kinds[key]
      if accepted ~= true then below = accepted end
    end
    i = ws(s, after)
    if byte(s, i) ~= 58 then error(MALFORMED) end  -- :
    i = ws(s, value(s, ws(s, i + 1), below, below_path, depth + 1, kind))
    local c = byte(s, i)
    if c == 125 then return i + 1 end  -- }
    if c ~= 44 then error(MALFORMED) end  -- ,
    i = ws(s, i + 1)
  end
end

-- A list; with a kind, each element is checked, its path `items[0]`.
local function array(s, i, name, path, depth, kind)
  i = ws(s, i + 1)
  if byte(s, i) == 93 then return i + 1 end  -- []
  local index = 0
  while true do
    local element_path = path and (path .. "[" .. index .. "]")
    i = ws(s, value(s, i, name, element_path, depth + 1, kind))
    local c = byte(s, i)
    if c == 93 then return i + 1 end  -- ]
    if c ~= 44 then error(MALFORMED) end  -- ,
    i = ws(s, i + 1)
    index = index + 1
  end
end

value = function(s, i, name, path, depth, kind)
  steps = steps + 1
  if depth > MAX_DEPTH or steps > MAX_STEPS then error(PASS) end
  local c = byte(s, i)
  -- The text ends where a value should be: not JSON, whatever the value's kind would have been.
  if c == nil then error(MALFORMED) end
  if kind ~= nil and kind ~= "any" then
    if c == 110 and sub(s, i, i + 3) == "null" then return i + 4 end  -- the default
    local element = match(kind, "^(.*)%[%]$")
    if element ~= nil then
      if c ~= 91 then bad(path, DESCRIBE.list) end
      return array(s, i, name, path, depth, element)
    end
    if kind == "message" or kind == "map" then
      if c ~= 123 then bad(path, DESCRIBE[kind]) end
      return object(s, i, kind == "message" and name or nil, path, depth)
    end
    return scalar(s, i, kind, path)
  end
  if c == 123 then return object(s, i, nil, path, depth) end  -- {
  if c == 91 then return array(s, i, nil, path, depth, nil) end  -- [
  if c == 34 then return skip_string(s, i) end  -- "
  if c == 116 and sub(s, i, i + 3) == "true" then return i + 4 end
  if c == 102 and sub(s, i, i + 4) == "false" then return i + 5 end
  if c == 110 and sub(s, i, i + 3) == "null" then return i + 4 end
  return number_end(s, i)
end

-- The first problem of the JSON text s as the body of `message` under `schema` (the table
-- gateway/schema.py writes): nil, or {field, description} or {field, unknown = true}. nil as
-- well when s is over the work bound or has what only the transcoder can judge.
function M.body_problem(s, message, schema)
  MESSAGES, KINDS = schema.messages, schema.kinds
  steps = 0
  local ok, err = pcall(function()
    local i = ws(s, value(s, ws(s, 1), message, "", 1, "message"))
    if i <= #s then error(MALFORMED) end  -- something after the value
  end)
  if ok or err == PASS then return nil end
  if err == MALFORMED then return {field = "body", description = "is not valid JSON"} end
  if type(err) == "table" then return err end
  error(err, 0)  -- a bug in this module: the caller logs it
end

-- The text of the JSON string whose opening quote is at s[i], escapes decoded, and the position
-- after its closing quote; nil when there is no such string (or it has a lone surrogate).
function M.read_string(s, i)
  steps = 0
  local ok, after = pcall(skip_string, s, i)
  if not ok then return nil end
  local decoded, text = pcall(decode, sub(s, i + 1, after - 2))
  if not decoded then return nil end
  return text, after
end

M.DESCRIBE = DESCRIBE
return M
