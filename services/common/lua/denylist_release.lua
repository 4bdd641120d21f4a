-- Gives up a claim on the denylist rebuild (denylist.py) after the rebuild failed, so that the
-- next attempt, here or in another replica, need not wait for the claim to lapse.
--
-- KEYS[1]: the rebuild lock. ARGV[1]: the claimant's token. Deletes the lock only while it is
-- still the caller's; returns how many keys it deleted.
local held = redis.call('GET', KEYS[1])
if held and string.sub(held, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  return redis.call('DEL', KEYS[1])
end
return 0
