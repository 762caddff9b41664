//! Building blocks for [`Broker`](crate::Broker) implementations: what every backend needs and
//! none should write again, so a backend crate holds only its own I/O.
//!
//! - [`StreamPosition`]: the event id every backend fills (epoch + offset), with its one
//!   canonical text form, parsing and order.
//! - [`Fanout`] and [`SubscriptionCount`]: one topic's deliveries handed to each local
//!   subscription through a bounded queue, with the lag→gap rule and the subscription count.
//! - [`Backoff`]: the wait between two attempts of a reconnect or retry loop.
//! - [`check_payload`], [`node_id`], [`lock`]: the payload limit, a random node id, a mutex lock
//!   that survives poisoning.
//!
//! # Example
//!
//! ```
//! use ssehub_core::backend::{check_payload, Backoff, Offset, StreamPosition};
//! use ssehub_core::Message;
//! use std::time::Duration;
//!
//! let id = StreamPosition::new("e1", Offset::Seq(7)).unwrap().to_event_id();
//! assert_eq!(id.as_str(), "e1-7");
//! assert!(check_payload(&Message::new("hi"), 1).is_err());
//! let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(120));
//! let waits: Vec<_> = (0..4).map(|_| backoff.next_delay().as_millis()).collect();
//! assert_eq!(waits, [50, 100, 120, 120]);
//! ```

mod fanout;
mod position;

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

pub use fanout::{CountGuard, Fanout, SubscriptionCount};
pub use position::{MAX_EPOCH_LEN, Offset, StreamPosition, is_epoch, parse_canonical};

use crate::broker::Message;
use crate::error::{Error, Result};

/// Refuse a payload over `max` bytes with [`Error::PayloadTooLarge`].
pub fn check_payload(message: &Message, max: usize) -> Result<()> {
    let size = message.data.len();
    if size > max {
        return Err(Error::PayloadTooLarge { size, max });
    }
    Ok(())
}

/// A random 16-hex-digit id for this node (presence entries, health probes, epochs).
#[must_use]
pub fn node_id() -> String {
    format!("{:016x}", rand::random::<u64>() | 1)
}

/// Lock a mutex; a lock poisoned by a panic elsewhere is used as it is (every structure kept
/// under these locks stays valid between statements).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The wait before each attempt of a retry loop: `first`, doubling up to `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits from `first`, doubling, capped at `max` (`max` is at least `first`).
    #[must_use]
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            next: first,
        }
    }

    /// The wait before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// Sleep for [`next_delay`](Self::next_delay).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Start over from `first` (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}
