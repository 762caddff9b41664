-- Publish one event: keep the topic epoch (set once), append to the stream trimmed to about
-- ARGV[2] entries, publish `epoch \n id \n event \n data` to the live channel, refresh the TTL.
-- KEYS: stream, epoch. ARGV: new epoch, history, event, data, channel, ttl ms (0: none).
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[3], 'd', ARGV[4])
redis.call('PUBLISH', ARGV[5], epoch .. '\n' .. id .. '\n' .. ARGV[3] .. '\n' .. ARGV[4])
local ttl = tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {epoch, id}
