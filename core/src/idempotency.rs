//! Idempotent publishing: a publish that carries an [`IdempotencyKey`] already seen for the same
//! topic within the broker's window is not stored again; it answers the first one's id.
//!
//! [`ChannelManager`](crate::ChannelManager) gives every logical publish a key of its own
//! ([`IdempotencyKey::generate`]), so a resend inside a client library (redis-rs's cluster
//! client resends a script after a moved slot or a lost connection) never stores an event twice.
//! Such a key only has to outlive one call, so brokers remember it briefly
//! ([`GENERATED_KEY_WINDOW`]) or not at all where nothing resends (the memory broker, NATS):
//! remembering a key per publish for minutes would cost memory in proportion to the publish
//! rate. An app whose own retries cross calls or processes (a worker that retries a failed HTTP
//! call, a request repeated by a proxy) makes its key with [`IdempotencyKey::new`] and passes it
//! with [`PublishOptions::idempotency_key`](crate::PublishOptions::idempotency_key): that key is
//! remembered for the broker's whole window.
//!
//! # Example
//!
//! ```
//! use ssehub_core::{ChannelManager, IdempotencyKey, PublishOptions};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
//! let manager = ChannelManager::<u64>::builder(ssehub_memory::MemoryBroker::new()).build()?;
//! let key = IdempotencyKey::new("order-7-shipped")?;
//! let first = manager.publish_with("7", &1, PublishOptions::new().idempotency_key(key.clone())).await?;
//! // The same key again (a retry after a lost reply): nothing is stored, the first id answers.
//! let again = manager.publish_with("7", &1, PublishOptions::new().idempotency_key(key)).await?;
//! assert_eq!(first, again);
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::id::EventId;

/// The default window in which a repeated key is recognized: 2 minutes.
pub const DEFAULT_IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(120);

/// How long a broker that remembers [generated](IdempotencyKey::generate) keys (Redis: its
/// client resends inside one call) remembers them: longer than any one call takes.
pub const GENERATED_KEY_WINDOW: Duration = Duration::from_secs(30);

/// What makes a publish idempotent: 1 to [`IdempotencyKey::MAX_LEN`] visible ASCII characters
/// (`!` to `~`: what an HTTP `Idempotency-Key` header may hold), scoped to the topic it is
/// published to.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>, Origin);

/// Where a key comes from: the caller, or [`IdempotencyKey::generate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Origin {
    Caller,
    Generated,
}

impl IdempotencyKey {
    /// The longest key [`new`](Self::new) accepts, in bytes.
    pub const MAX_LEN: usize = 255;

    /// Validate a caller's key.
    ///
    /// ```
    /// use ssehub_core::IdempotencyKey;
    ///
    /// assert!(IdempotencyKey::new("retry-4f1c").is_ok());
    /// assert!(IdempotencyKey::new("").is_err());
    /// assert!(IdempotencyKey::new("has space").is_err());
    /// assert!(IdempotencyKey::new("x".repeat(256)).is_err());
    /// ```
    pub fn new(key: impl AsRef<str>) -> Result<Self> {
        let key = key.as_ref();
        let fail = |reason: &'static str| {
            Err(Error::InvalidIdempotencyKey {
                reason: Cow::Borrowed(reason),
            })
        };
        if key.is_empty() {
            return fail("empty");
        }
        if key.len() > Self::MAX_LEN {
            return fail("longer than 255 bytes");
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return fail("only visible ASCII characters (! to ~) are allowed");
        }
        Ok(IdempotencyKey(Arc::from(key), Origin::Caller))
    }

    /// A fresh key: 128 random bits, as `g-` and 32 hex digits. It guards one publish call
    /// against its client library's resends, and brokers remember it only briefly
    /// ([`GENERATED_KEY_WINDOW`]); to retry a publish yourself, make the key with
    /// [`new`](Self::new).
    #[must_use]
    pub fn generate() -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let bits: u128 = rand::random();
        // Written in place: one allocation per key (a publish makes one).
        let mut text = [0u8; 34];
        text[..2].copy_from_slice(b"g-");
        for (i, digit) in text[2..].iter_mut().enumerate() {
            *digit = HEX[((bits >> (124 - 4 * i)) & 0xf) as usize];
        }
        IdempotencyKey(
            Arc::from(std::str::from_utf8(&text).unwrap_or_default()),
            Origin::Generated,
        )
    }

    /// The key of the event at `index` of a batch published under this key: `key#index`. It may
    /// be longer than [`MAX_LEN`](Self::MAX_LEN); brokers take it as it is.
    #[must_use]
    pub fn part(&self, index: usize) -> Self {
        IdempotencyKey(Arc::from(format!("{}#{index}", self.0)), self.1)
    }

    /// Whether this key was made by [`generate`](Self::generate) (it only has to outlive one
    /// publish call), not given by the caller.
    #[must_use]
    pub fn is_generated(&self) -> bool {
        self.1 == Origin::Generated
    }

    /// The key as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdempotencyKey({})", self.0)
    }
}

/// The keys a node published with recently, per topic (or any scope of the backend's: a NATS
/// subject), and the ids they got: the idempotency of
/// a backend that has no broker-side window (the memory backend; core NATS, per node). Check and
/// record under the same lock as the publish, so two publishes of one key cannot both store.
#[derive(Debug)]
pub struct IdempotencyWindow {
    window: Duration,
    /// The ids by scope, then by key: a look-up borrows the scope, it allocates nothing.
    ids: HashMap<Arc<str>, HashMap<IdempotencyKey, EventId>>,
    /// Insertion order, for expiry (every entry lives the same time).
    order: VecDeque<(Instant, Arc<str>, IdempotencyKey)>,
}

impl IdempotencyWindow {
    /// Remember keys for `window`.
    #[must_use]
    pub fn new(window: Duration) -> Self {
        IdempotencyWindow {
            window,
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// How long a key is remembered.
    #[must_use]
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The id `key` got in `scope` (a topic) within the window, if it was seen.
    pub fn get(&mut self, scope: &str, key: &IdempotencyKey) -> Option<EventId> {
        if self.order.is_empty() {
            return None;
        }
        self.expire(Instant::now());
        self.ids.get(scope)?.get(key).cloned()
    }

    /// Remember that `key` got `id` in `scope`.
    pub fn insert(&mut self, scope: &str, key: &IdempotencyKey, id: EventId) {
        if self.window.is_zero() {
            return;
        }
        let now = Instant::now();
        self.expire(now);
        let scope = match self.ids.get_key_value(scope) {
            Some((scope, _)) => scope.clone(),
            None => Arc::from(scope),
        };
        let keys = self.ids.entry(scope.clone()).or_default();
        if keys.insert(key.clone(), id).is_none() {
            self.order.push_back((now, scope, key.clone()));
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, ..)) = self.order.front()
            && now.duration_since(*at) >= self.window
        {
            if let Some((_, scope, key)) = self.order.pop_front()
                && let Some(keys) = self.ids.get_mut(&scope)
            {
                keys.remove(&key);
                if keys.is_empty() {
                    self.ids.remove(&scope);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_window_forgets_keys_after_its_time() {
        let mut w = IdempotencyWindow::new(Duration::from_secs(120));
        let topic = "t";
        let key = IdempotencyKey::new("k").unwrap();
        let id = EventId::parse("e-1").unwrap();
        assert_eq!(w.get(topic, &key), None);
        w.insert(topic, &key, id.clone());
        tokio::time::advance(Duration::from_secs(119)).await;
        assert_eq!(w.get(topic, &key), Some(id));
        assert_eq!(w.get("other", &key), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(w.get(topic, &key), None);
        assert!(w.order.is_empty() && w.ids.is_empty());
    }

    #[test]
    fn generated_keys_are_valid_and_distinct() {
        let a = IdempotencyKey::generate();
        let b = IdempotencyKey::generate();
        assert_ne!(a, b);
        assert!(a.is_generated() && !IdempotencyKey::new(a.as_str()).unwrap().is_generated());
        assert_eq!(
            IdempotencyKey::new(a.as_str()).unwrap().as_str(),
            a.as_str()
        );
        assert_eq!(a.part(3).as_str(), format!("{a}#3"));
    }
}
