//! Building blocks for [`Broker`](crate::Broker) implementations: what every backend needs and
//! none should write again, so a backend crate holds only its own I/O.
//!
//! - [`StreamPosition`]: the event id every backend fills (epoch + offset), with its one
//!   canonical text form, parsing and order.
//! - [`Fanout`] and [`SubscriptionCount`]: one topic's deliveries handed to each local
//!   subscription through a bounded queue, with the lag→gap rule and the subscription count.
//! - [`Backoff`]: the wait between two attempts of a reconnect or retry loop.
//! - [`check_payload`], [`batches`], [`node_id`], [`lock`]: the payload limit, a publish batch's
//!   bounds, a random node id, a mutex lock
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
pub(crate) use position::epoch_len;
pub use position::{MAX_EPOCH_LEN, Offset, StreamPosition, is_epoch, parse_canonical};

use crate::broker::{Message, Signals};

/// The [`Signals`] stream of a backend that hands the signals it receives to a
/// `tokio::sync::broadcast` channel: a receiver that falls behind skips what it missed
/// (signals repeat themselves).
pub fn signal_stream(rx: tokio::sync::broadcast::Receiver<bytes::Bytes>) -> Signals {
    use tokio::sync::broadcast::error::RecvError;
    Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(payload) => return Some((payload, rx)),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return None,
            }
        }
    }))
}

pub use crate::broker::{check_payload, partly_published};
pub use crate::idempotency::IdempotencyWindow;

/// `messages` as consecutive batches of at most `max_events` events and `max_bytes` of payload
/// each (a batch holds at least one event, whatever its size), for a backend's
/// [`publish_many`](crate::Broker::publish_many).
///
/// ```
/// use ssehub_core::Message;
/// use ssehub_core::backend::batches;
///
/// let m: Vec<Message> = (0..5).map(|i| Message::new(vec![0u8; i * 10])).collect();
/// let sizes: Vec<usize> = batches(&m, 2, 1_000).map(|b| b.len()).collect();
/// assert_eq!(sizes, [2, 2, 1]);
/// let sizes: Vec<usize> = batches(&m, 10, 35).map(|b| b.len()).collect();
/// assert_eq!(sizes, [3, 1, 1]); // 0+10+20, 30, 40 (alone, over the bound)
/// ```
pub fn batches(
    messages: &[Message],
    max_events: usize,
    max_bytes: usize,
) -> impl Iterator<Item = &[Message]> {
    let mut rest = messages;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = 0;
        let mut bytes = 0;
        while n < rest.len() && n < max_events.max(1) {
            let size = rest[n].data.len();
            if n > 0 && bytes + size > max_bytes {
                break;
            }
            bytes += size;
            n += 1;
        }
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        Some(batch)
    })
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

/// The setters every networked broker's builder shares, one name and one meaning each: expands
/// inside the builder's `impl` block, over fields of the same names. Each backend states its
/// defaults (as text for the docs); what is particular to a backend goes in its builder's own
/// docs.
///
/// # Example
///
/// ```
/// use std::time::Duration;
///
/// /// A builder.
/// pub struct MyBrokerBuilder {
///     max_payload: usize,
///     subscriber_buffer: usize,
///     connect_timeout: Duration,
///     response_timeout: Duration,
///     health_timeout: Duration,
///     reconnect_max_delay: Duration,
///     ping_interval: Duration,
/// }
///
/// impl MyBrokerBuilder {
///     ssehub_core::broker_builder_setters! {
///         max_payload = "1 MiB",
///         subscriber_buffer = "4,096",
///         connect_timeout = "2 seconds",
///         response_timeout = "5 seconds",
///         health_timeout = "2 seconds",
///         reconnect_max_delay = "2 seconds",
///         ping_interval = "5 seconds",
///     }
/// }
///
/// let b = MyBrokerBuilder {
///     max_payload: 0, subscriber_buffer: 0, connect_timeout: Duration::ZERO,
///     response_timeout: Duration::ZERO, health_timeout: Duration::ZERO,
///     reconnect_max_delay: Duration::ZERO, ping_interval: Duration::ZERO,
/// }
/// .subscriber_buffer(0)
/// .reconnect_max_delay(Duration::ZERO);
/// assert_eq!(b.subscriber_buffer, 1);
/// assert_eq!(b.reconnect_max_delay, Duration::from_millis(50));
/// ```
#[macro_export]
macro_rules! broker_builder_setters {
    (
        max_payload = $max_payload:literal,
        subscriber_buffer = $buffer:literal,
        connect_timeout = $connect:literal,
        response_timeout = $response:literal,
        health_timeout = $health:literal,
        reconnect_max_delay = $reconnect:literal,
        ping_interval = $ping:literal $(,)?
    ) => {
        #[doc = concat!("Largest payload accepted, in bytes. Default: ", $max_payload, ".")]
        pub fn max_payload(mut self, bytes: usize) -> Self {
            self.max_payload = bytes;
            self
        }

        #[doc = concat!(
            "Events one local subscription may fall behind before it receives a gap (its ",
            "sessions get a `reset`). At least 1. Default: ", $buffer, "."
        )]
        pub fn subscriber_buffer(mut self, events: usize) -> Self {
            self.subscriber_buffer = events.max(1);
            self
        }

        #[doc = concat!("Time allowed to open a connection. Default: ", $connect, ".")]
        pub fn connect_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.connect_timeout = timeout.max(::std::time::Duration::from_millis(10));
            self
        }

        #[doc = concat!(
            "Time allowed for one answer of the server: a command, a publish's confirmation, ",
            "a read of history. Default: ", $response, "."
        )]
        pub fn response_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.response_timeout = timeout.max(::std::time::Duration::from_millis(10));
            self
        }

        #[doc = concat!(
            "Time [`Broker::health`](ssehub_core::Broker::health) allows its probe. Default: ",
            $health, "."
        )]
        pub fn health_timeout(mut self, timeout: ::std::time::Duration) -> Self {
            self.health_timeout = timeout.max(::std::time::Duration::from_millis(10));
            self
        }

        #[doc = concat!(
            "Longest wait between two reconnect attempts (at least 50 ms). Default: ",
            $reconnect, "."
        )]
        pub fn reconnect_max_delay(mut self, delay: ::std::time::Duration) -> Self {
            self.reconnect_max_delay = delay.max(::std::time::Duration::from_millis(50));
            self
        }

        #[doc = concat!(
            "How often a connection that is otherwise quiet pings the server, so a server ",
            "that stops answering (a frozen process, a half-open connection, a silent network) ",
            "is noticed and the broker reconnects and recovers (see the builder's docs for the ",
            "bound). At least 10 ms. Default: ", $ping, "."
        )]
        pub fn ping_interval(mut self, interval: ::std::time::Duration) -> Self {
            self.ping_interval = interval.max(::std::time::Duration::from_millis(10));
            self
        }
    };
}
