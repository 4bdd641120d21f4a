-- Is a credential revoked? Run by every service on every authenticated call (denylist.py).
--
-- KEYS[1]: the loaded marker, KEYS[2]: the credential's denylist key.
-- Returns 1 listed, 0 not listed, or -1 when this Redis cannot say: the marker is missing
-- (flushed, restarted empty) or names another Redis process (restarted from files that may
-- lack the last writes, or a replica promoted after a failover). The denylist is then
-- rebuilt from PostgreSQL before anything is let through.
local loaded = redis.call('GET', KEYS[1])
if not loaded then
  return -1
end
if loaded ~= string.match(redis.call('INFO', 'server'), 'run_id:(%x+)') then
  return -1
end
return redis.call('EXISTS', KEYS[2])
