-- Publish a batch of events, in order: keep the topic epoch (set once), append each to the
-- stream trimmed to about ARGV[2] entries and publish `epoch \n id \n event \n data` to the live
-- channel, then refresh the TTL. One event is a batch of one.
-- An event with an idempotency key (KEYS[k], in the topic's slot) whose key is still set is not
-- appended nor published: it answers the `epoch id` stored under the key by its first publish.
-- KEYS: stream, epoch, then the idempotency keys. ARGV: new epoch, history, channel, ttl ms
-- (0: none), the publish command (PUBLISH, or SPUBLISH on a cluster: the channel shares the
-- keys' slot), idempotency window ms, then per event: event name, data, the index k of its
-- idempotency key in KEYS (0: none). Returns {epoch, id or "epoch id", ...}.
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
local out = {epoch}
for i = 7, #ARGV, 3 do
  local k = tonumber(ARGV[i + 2])
  local first = false
  if k > 0 then
    first = redis.call('GET', KEYS[k])
  end
  if first then
    out[#out + 1] = first
  else
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i], 'd', ARGV[i + 1])
    redis.call(ARGV[5], ARGV[3], epoch .. '\n' .. id .. '\n' .. ARGV[i] .. '\n' .. ARGV[i + 1])
    if k > 0 then
      redis.call('SET', KEYS[k], epoch .. ' ' .. id, 'PX', ARGV[6])
    end
    out[#out + 1] = id
  end
end
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return out
