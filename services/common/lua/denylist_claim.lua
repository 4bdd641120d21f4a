-- Claims the rebuild of the denylist (denylist.py), so that one replica rebuilds at a time.
--
-- KEYS[1]: the loaded marker, KEYS[2]: the rebuild lock. ARGV[1]: the claimant's random token,
-- ARGV[2]: how long the claim lasts (ms).
-- Returns 1 when the denylist is loaded in this Redis process already, 2 when the caller now
-- holds the claim, 0 when another does. The lock holds the token and this process's run_id,
-- so that finishing can tell whether Redis was flushed or restarted in between.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if redis.call('GET', KEYS[1]) == run_id then
  return 1
end
local held = redis.call('GET', KEYS[2])
if held and string.match(held, ':(%x+)$') ~= run_id then
  -- A claim made in another Redis process (restored from its files): its rebuild can never
  -- finish, so nobody need wait for it to lapse.
  redis.call('DEL', KEYS[2])
end
if redis.call('SET', KEYS[2], ARGV[1] .. ':' .. run_id, 'NX', 'PX', ARGV[2]) then
  return 2
end
return 0
