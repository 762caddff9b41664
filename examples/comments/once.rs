//! Requests made once: a `POST` with an `Idempotency-Key` header counts once, whichever node a
//! repeat of it reaches within the window, and answers the first request's numbers.
//!
//! The store remembers, under the request's key, what the first request counted and when, in
//! the same atomic step as the count (a map under one lock; one Lua script on Redis), so a
//! process that dies in between leaves either both or neither. The handler then publishes with
//! the same key as the event's idempotency key: a repeat publishes again, and the broker stores
//! nothing new, unless the first request died before its publish.

use std::time::Duration;
#[cfg(feature = "nats")]
use std::time::Instant;

#[cfg(feature = "redis")]
use ssehub::backends::redis::redis;
use ssehub::{BoxError, DEFAULT_IDEMPOTENCY_WINDOW};

use super::events::{Vote, Votes};
use super::store::Store;

/// How long a request's key is remembered: as long as the broker remembers its event's.
pub const ONCE_WINDOW: Duration = DEFAULT_IDEMPOTENCY_WINDOW;

/// A request's idempotency key, and when (ms since the epoch) it was made.
#[derive(Clone, Copy, Debug)]
pub struct Once<'a> {
    /// The `Idempotency-Key` header.
    pub key: &'a str,
    /// The request's time, the event's timestamp.
    pub at: u64,
}

/// What a request counted, as remembered: `count at` or `up down at`.
fn record(numbers: &[u64]) -> String {
    numbers
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" ")
}

fn numbers(record: &str) -> Result<Vec<u64>, BoxError> {
    record
        .split(' ')
        .map(|n| {
            n.parse()
                .map_err(|_| format!("bad record {record:?}").into())
        })
        .collect()
}

impl Store {
    /// Count one more comment on `id` once for `once.key`: the count and timestamp of the first
    /// request with that key.
    pub async fn add_comment_once(&self, id: &str, once: Once<'_>) -> Result<(u64, u64), BoxError> {
        let n = self.once(id, "comments", None, once).await?;
        match n[..] {
            [count, at] => Ok((count, at)),
            _ => Err("bad comment record".into()),
        }
    }

    /// Count one vote on `id` once for `once.key`: the totals and timestamp of the first
    /// request with that key.
    pub async fn vote_once(
        &self,
        id: &str,
        vote: Vote,
        once: Once<'_>,
    ) -> Result<(Votes, u64), BoxError> {
        let n = self.once(id, "votes", Some(vote), once).await?;
        match n[..] {
            [up, down, at] => Ok((Votes { up, down }, at)),
            _ => Err("bad vote record".into()),
        }
    }

    async fn once(
        &self,
        id: &str,
        kind: &str,
        vote: Option<Vote>,
        once: Once<'_>,
    ) -> Result<Vec<u64>, BoxError> {
        match self {
            Store::Memory(data) => {
                let mut data = data.lock().unwrap_or_else(|e| e.into_inner());
                let key = format!("{kind}:{id}:{}", once.key);
                if let Some(seen) = data.seen(&key, ONCE_WINDOW) {
                    return numbers(&seen);
                }
                let counted = match vote {
                    None => {
                        let count = data.comments.entry(id.to_owned()).or_insert(0);
                        *count += 1;
                        record(&[*count, once.at])
                    }
                    Some(vote) => {
                        let votes = data.votes.entry(id.to_owned()).or_default();
                        votes.add(vote);
                        record(&[votes.up, votes.down, once.at])
                    }
                };
                data.remember(key, counted.clone());
                numbers(&counted)
            }
            #[cfg(feature = "redis")]
            Store::Redis(con) => {
                let op = match vote {
                    None => "comment",
                    Some(Vote::Up) => "up",
                    Some(Vote::Down) => "down",
                };
                let counted: String = redis::Script::new(ONCE_SCRIPT)
                    .key(super::store::redis_once_key(kind, id, once.key))
                    .key(super::store::redis_key(kind, id))
                    .arg(op)
                    .arg(once.at)
                    .arg(ONCE_WINDOW.as_millis() as u64)
                    .invoke_async(&mut con.clone())
                    .await?;
                numbers(&counted)
            }
            #[cfg(feature = "nats")]
            Store::Nats(kv) => nats_once(kv, id, kind, vote, once).await,
        }
    }
}

/// KEYS: the request's key, the counter (same slot: both carry the `{kind:id}` hash tag).
/// ARGV: `comment`, `up` or `down`; the request's time; the window in ms. Answers the record.
#[cfg(feature = "redis")]
const ONCE_SCRIPT: &str = r"
local seen = redis.call('GET', KEYS[1])
if seen then return seen end
local counted
if ARGV[1] == 'comment' then
  counted = redis.call('INCR', KEYS[2]) .. ' ' .. ARGV[2]
else
  redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
  local t = redis.call('HMGET', KEYS[2], 'up', 'down')
  counted = (t[1] or '0') .. ' ' .. (t[2] or '0') .. ' ' .. ARGV[2]
end
redis.call('SET', KEYS[1], counted, 'PX', ARGV[3])
return counted
";

/// NATS has no transaction across keys: the request's key is created first (`pending`), the
/// count updated, then the record written. A repeat that finds it pending waits for the record
/// (bounded); a first request that fails removes its key so a retry can count.
#[cfg(feature = "nats")]
async fn nats_once(
    kv: &ssehub::backends::nats::async_nats::jetstream::kv::Store,
    id: &str,
    kind: &str,
    vote: Option<Vote>,
    once: Once<'_>,
) -> Result<Vec<u64>, BoxError> {
    use ssehub::backends::nats::async_nats::jetstream::kv::CreateErrorKind;
    const PENDING: &str = "pending";
    let key = super::store::nats_once_key(kind, id, once.key);
    match kv.create(&key, PENDING.into()).await {
        Ok(_) => {}
        Err(e) if e.kind() == CreateErrorKind::AlreadyExists => {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let seen = kv.get(&key).await?.unwrap_or_default();
                let seen = std::str::from_utf8(&seen)?;
                if seen != PENDING && !seen.is_empty() {
                    return numbers(seen);
                }
                if Instant::now() > deadline {
                    return Err("a request with this key is still in progress".into());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Err(e) => return Err(e.into()),
    }
    let counted = match vote {
        None => self_count(kv, id, once).await,
        Some(vote) => self_vote(kv, id, vote, once).await,
    };
    match counted {
        Ok(counted) => {
            kv.put(&key, counted.clone().into()).await?;
            numbers(&counted)
        }
        Err(e) => {
            let _ = kv.delete(&key).await;
            Err(e)
        }
    }
}

#[cfg(feature = "nats")]
async fn self_count(
    kv: &ssehub::backends::nats::async_nats::jetstream::kv::Store,
    id: &str,
    once: Once<'_>,
) -> Result<String, BoxError> {
    let count = super::store::nats_update(
        kv,
        &super::store::nats_key("comments", id),
        |c: &mut u64| *c += 1,
    )
    .await?;
    Ok(record(&[count, once.at]))
}

#[cfg(feature = "nats")]
async fn self_vote(
    kv: &ssehub::backends::nats::async_nats::jetstream::kv::Store,
    id: &str,
    vote: Vote,
    once: Once<'_>,
) -> Result<String, BoxError> {
    let votes =
        super::store::nats_update(kv, &super::store::nats_key("votes", id), |v: &mut Votes| {
            v.add(vote)
        })
        .await?;
    Ok(record(&[votes.up, votes.down, once.at]))
}
