//! The one NATS connection of a broker: connecting, its events (connected, disconnected, slow
//! consumer) broadcast to the feeds, the round trip that proves the server has seen what was
//! sent, and the headers every message carries.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use ssehub_core::{Error, EventName, Result};
use tokio::sync::broadcast;

use crate::builder::NatsBrokerBuilder;
use crate::error::{NatsError, boxed};
use crate::subject::{escape_token, unescape_token};

/// Header carrying the (escaped) event name.
const EVENT_HEADER: &str = "Ssehub-Event";

/// What happened to the connection, as the feeds need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnEvent {
    Connected,
    Disconnected,
    SlowConsumer,
}

/// The client and the stream of its connection events. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    pub(crate) client: async_nats::Client,
    events: broadcast::Sender<ConnEvent>,
    /// The bound of one request.
    pub(crate) timeout: Duration,
}

impl Connection {
    /// Connect with the builder's settings; returns once connected (or fails after the connect
    /// timeout).
    pub(crate) async fn open(config: &NatsBrokerBuilder) -> Result<Self> {
        let (events_tx, _) = broadcast::channel(64);
        let max_delay = config.reconnect_max_delay;
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(config.connect_timeout)
            .request_timeout(Some(config.response_timeout))
            .ping_interval(config.ping_interval)
            .retry_on_initial_connect()
            .max_reconnects(None)
            .reconnect_delay_callback(move |attempts| {
                Duration::from_millis(50 * attempts as u64).min(max_delay)
            })
            .event_callback(on_event(events_tx.clone()));
        if let Some(token) = &config.token {
            options = options.token(token.clone());
        }
        if let Some((user, password)) = &config.user_password {
            options = options.user_and_password(user.clone(), password.clone());
        }
        // `retry_on_initial_connect` returns at once; wait for the first connection ourselves.
        let client = options
            .connect(config.url.as_str())
            .await
            .map_err(NatsError::Connect)?;
        let deadline = tokio::time::Instant::now() + config.connect_timeout;
        // Connected, and the server's INFO stored: async-nats reports the state a moment before
        // it stores the INFO, and the broker reads the server's `max_payload` from it next.
        while client.connection_state() != async_nats::connection::State::Connected
            || client.try_server_info().is_none()
        {
            if tokio::time::Instant::now() >= deadline {
                return Err(NatsError::NotConnected.into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Connection {
            client,
            events: events_tx,
            timeout: config.response_timeout,
        })
    }

    /// Connection events from now on.
    pub(crate) fn events(&self) -> broadcast::Receiver<ConnEvent> {
        self.events.subscribe()
    }

    /// How many times the client connected: a new value means a new connection.
    pub(crate) fn generation(&self) -> u64 {
        self.client.statistics().connects.load(Ordering::Acquire)
    }

    pub(crate) fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// A message to ourselves through the server: when it returns, the server has processed
    /// everything this connection sent before it (a flush only empties our socket buffer).
    pub(crate) async fn round_trip(&self) -> Result<()> {
        let probe = async {
            let subject = self.client.new_inbox();
            let mut sub = self
                .client
                .subscribe(subject.clone())
                .await
                .map_err(|e| NatsError::Subscribe(boxed(e)))?;
            self.client
                .publish(subject, Bytes::from_static(b"probe"))
                .await
                .map_err(|e| NatsError::Publish(boxed(e)))?;
            sub.next().await.ok_or(NatsError::ProbeTimeout)?;
            Ok::<(), Error>(())
        };
        tokio::time::timeout(self.timeout, probe)
            .await
            .map_err(|_| Error::from(NatsError::ProbeTimeout))?
    }
}

/// The client's event callback: counts reconnects and broadcasts what the feeds react to.
fn on_event(
    events_tx: broadcast::Sender<ConnEvent>,
) -> impl Fn(async_nats::Event) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>
+ Send
+ Sync
+ 'static {
    // The first `Connected` is the initial connect, not a reconnect.
    let was_disconnected = Arc::new(AtomicBool::new(false));
    move |event| {
        let events_tx = events_tx.clone();
        let was_disconnected = was_disconnected.clone();
        Box::pin(async move {
            let ev = match event {
                async_nats::Event::Connected => {
                    if was_disconnected.swap(false, Ordering::AcqRel) {
                        ssehub_core::metric_names::broker_reconnected("nats");
                    }
                    Some(ConnEvent::Connected)
                }
                async_nats::Event::Disconnected => {
                    was_disconnected.store(true, Ordering::Release);
                    Some(ConnEvent::Disconnected)
                }
                async_nats::Event::SlowConsumer(_) => Some(ConnEvent::SlowConsumer),
                other => {
                    tracing::debug!(event = %other, "nats connection event");
                    None
                }
            };
            if let Some(ev) = ev {
                tracing::debug!(?ev, "nats connection event");
                let _ = events_tx.send(ev);
            }
        })
    }
}

/// Headers of an event: its escaped name, and `extra` (the epoch or the id).
pub(crate) fn headers_for(event: &EventName, extra: (&'static str, &str)) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let mut name = String::new();
    escape_token(event.as_str(), &mut name);
    headers.insert(EVENT_HEADER, name.as_str());
    headers.insert(extra.0, extra.1);
    headers
}

/// The event name of a message; `None` when its header is not a valid escaped name.
pub(crate) fn event_of(headers: Option<&HeaderMap>) -> Option<EventName> {
    let Some(value) = headers.and_then(|h| h.get(EVENT_HEADER)) else {
        return Some(EventName::MESSAGE);
    };
    EventName::new(unescape_token(value.as_str())?).ok()
}
