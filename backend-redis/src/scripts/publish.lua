-- Publish a batch of events, in order: keep the topic epoch (set once), append each to the
-- stream trimmed to about ARGV[2] entries and publish `epoch \n id \n prev \n event \n data` to
-- the live channel (`prev`: the stream's entry before it, empty for the first: a subscriber
-- that delivered another one before it knows it missed something), then refresh the TTL. One
-- event is a batch of one.
-- An event with an idempotency key (KEYS[k], in the topic's slot) whose key is still set is not
-- appended nor published: it answers the `epoch id` stored under the key by its first publish.
-- KEYS: stream, epoch, then the idempotency keys. ARGV: new epoch, history, channel, ttl ms
-- (0: none), the publish command (PUBLISH, or SPUBLISH on a cluster: the channel shares the
-- keys' slot), (unused), then per event: event name, data, the index k of its idempotency key
-- in KEYS (0: none), how long the key is remembered in ms. Returns {epoch, id or "epoch id",
-- ...}.
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[2])
local out = {epoch}
local prev = ''
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if newest[1] then
  prev = newest[1][1]
end
for i = 7, #ARGV, 4 do
  local k = tonumber(ARGV[i + 2])
  local first = false
  if k > 0 then
    first = redis.call('GET', KEYS[k])
  end
  if first then
    out[#out + 1] = first
  else
    local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[i], 'd', ARGV[i + 1])
    redis.call(ARGV[5], ARGV[3], epoch .. '\n' .. id .. '\n' .. prev .. '\n' .. ARGV[i] .. '\n' .. ARGV[i + 1])
    prev = id
    if k > 0 then
      redis.call('SET', KEYS[k], epoch .. ' ' .. id, 'PX', ARGV[i + 3])
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
