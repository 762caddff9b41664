-- Publish a batch of events, in order: keep the topic epoch (set once), append each to the
-- stream trimmed to about ARGV[2] entries and publish `epoch \n id \n event \n data` to the live
-- channel, then refresh the TTL. One event is a batch of one.
-- KEYS: stream, epoch. ARGV: new epoch, history, channel, ttl ms (0: none), the publish command
-- (PUBLISH, or SPUBLISH on a cluster: the channel shares the keys' slot), then per event: event
-- name, data. Returns {epoch, id, id, ...}.
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
local out = {epoch}
for i = 6, #ARGV, 2 do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i], 'd', ARGV[i + 1])
  redis.call(ARGV[5], ARGV[3], epoch .. '\n' .. id .. '\n' .. ARGV[i] .. '\n' .. ARGV[i + 1])
  out[#out + 1] = id
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return out
