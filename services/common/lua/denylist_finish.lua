-- Declares the denylist loaded after a rebuild (denylist.py), if nothing undid the rebuild.
--
-- KEYS[1]: the loaded marker, KEYS[2]: the rebuild lock. ARGV[1]: the claimant's token.
-- The lock must still hold the token and this process's run_id: else Redis was flushed (the
-- lock is gone, and maybe entries written meanwhile), restarted, or the claim expired and
-- another replica took over. Returns 1 when the marker was set, 0 when the rebuild must start
-- again.
local run_id = string.match(redis.call('INFO', 'server'), 'run_id:(%x+)')
if redis.call('GET', KEYS[2]) ~= ARGV[1] .. ':' .. run_id then
  return 0
end
redis.call('SET', KEYS[1], run_id)
redis.call('DEL', KEYS[2])
return 1
