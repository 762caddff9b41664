//! Core mode: events over core NATS only. Ids are `<node>-<counter>` of the publishing node;
//! there is no history, and a dropped connection is a gap.
//!
//! A publish answers `Ok` only once the server has routed the event: after the event, the
//! publish sends a probe to this node's own inbox over the same connection and waits for it to
//! come back. The server handles a connection's messages in order, so the probe coming back on
//! the connection that sent the event means the server had handed the event to every
//! subscription it knew of. A probe that does not come back within the response timeout, or
//! that came back over another connection (a reconnect in between), fails the publish with a
//! temporary error: the event may or may not have been delivered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use ssehub_core::backend::{Fanout, IdempotencyWindow, Offset, StreamPosition};
use ssehub_core::{Delivery, Envelope, EventId, GapCause, Message, Replay, Result};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

use crate::carrier::Carrier;
use crate::connection::{ConnEvent, Connection, event_of, headers_for};
use crate::error::{NatsError, boxed};

/// Header carrying the whole event id.
const ID_HEADER: &str = "Ssehub-Id";

pub(crate) struct CoreNats {
    conn: Connection,
    /// The epoch of this node's ids.
    node: String,
    counter: AtomicU64,
    /// Ids are given in publish order; the idempotency keys this node published with, checked
    /// and recorded under the same lock.
    publish_lock: tokio::sync::Mutex<IdempotencyWindow>,
    probes: Probes,
}

impl CoreNats {
    pub(crate) async fn new(conn: Connection, node: String, window: Duration) -> Result<Self> {
        Ok(CoreNats {
            probes: Probes::start(&conn).await?,
            conn,
            node,
            counter: AtomicU64::new(0),
            publish_lock: tokio::sync::Mutex::new(IdempotencyWindow::new(window)),
        })
    }
}

/// Probes to this node's own inbox, numbered; each publish waits for its own to come back.
struct Probes {
    /// Probe `n` goes to `<root>.<n>`.
    root: String,
    next: AtomicU64,
    /// The highest probe that came back.
    back: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Probes {
    async fn start(conn: &Connection) -> Result<Self> {
        let root = conn.client.new_inbox();
        let mut sub = conn
            .client
            .subscribe(format!("{root}.*"))
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        let back = watch::Sender::new(0u64);
        let tx = back.clone();
        let task = tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let n = msg.subject.rsplit('.').next().and_then(|n| n.parse().ok());
                if let Some(n) = n {
                    tx.send_if_modified(|back| {
                        let newer = n > *back;
                        *back = (*back).max(n);
                        newer
                    });
                }
            }
        });
        Ok(Probes {
            root,
            next: AtomicU64::new(0),
            back,
            task,
        })
    }

    /// Send a probe after everything sent so far and wait for it: `Ok` when it came back on the
    /// connection `generation`, so the server had handled all that connection sent before it.
    async fn confirm(&self, conn: &Connection, generation: u64) -> Result<()> {
        let n = self.next.fetch_add(1, Ordering::AcqRel) + 1;
        let mut back = self.back.subscribe();
        let mut events = conn.events();
        conn.client
            .publish(format!("{}.{n}", self.root), Bytes::new())
            .await
            .map_err(|e| NatsError::Unconfirmed(Some(boxed(e))))?;
        let came_back = async {
            tokio::select! {
                back = back.wait_for(|back| *back >= n) => back.is_ok(),
                // A disconnect loses the probe: no need to wait for the timeout.
                _ = async {
                    while !matches!(events.recv().await, Ok(ConnEvent::Disconnected) | Err(_)) {}
                } => false,
            }
        };
        match tokio::time::timeout(conn.timeout, came_back).await {
            Ok(true) if conn.generation() == generation => Ok(()),
            _ => Err(NatsError::Unconfirmed(None).into()),
        }
    }
}

#[async_trait]
impl Carrier for CoreNats {
    async fn publish_many(&self, subject: String, messages: Vec<Message>) -> Result<Vec<EventId>> {
        let (ids, generation) = {
            let mut keys = self.publish_lock.lock().await;
            if !self.conn.connected() {
                return Err(NatsError::NotConnected.into());
            }
            let generation = self.conn.generation();
            let mut ids = Vec::with_capacity(messages.len());
            for message in messages {
                // async-nats does not resend: a generated key has nothing to guard here.
                let key = message
                    .idempotency_key
                    .as_ref()
                    .filter(|k| !k.is_generated());
                if let Some(key) = key
                    && let Some(id) = keys.get(&subject, key)
                {
                    ids.push(id);
                    continue;
                }
                let n = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
                let Some(pos) = StreamPosition::new(&self.node, Offset::Seq(n)) else {
                    unreachable!("the node id is hex digits")
                };
                let id = pos.to_event_id();
                let headers = headers_for(&message.event, (ID_HEADER, id.as_str()));
                self.conn
                    .client
                    .publish_with_headers(subject.clone(), headers, message.data)
                    .await
                    .map_err(|e| NatsError::Publish(boxed(e)))?;
                if let Some(key) = key {
                    keys.insert(&subject, key, id.clone());
                }
                ids.push(id);
            }
            (ids, generation)
        };
        // One confirmation for the batch. Not `flush`: it returns once the events left our
        // socket, which a server killed a moment ago still lets happen.
        self.probes.confirm(&self.conn, generation).await?;
        Ok(ids)
    }

    async fn start_feed(&self, subject: String, fanout: Arc<Fanout>) -> Result<JoinHandle<()>> {
        let sub = self
            .conn
            .client
            .subscribe(subject)
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        let events = self.conn.events();
        // A flush only means the SUB left our socket; a round trip on the same connection means
        // the server registered it, so an event published from any connection after `subscribe`
        // returns reaches us.
        self.conn.round_trip().await?;
        Ok(tokio::spawn(feed(sub, events, fanout)))
    }

    async fn replay(
        &self,
        _subject: &str,
        _after: &StreamPosition,
        _limit: usize,
    ) -> Result<Replay> {
        // Core NATS keeps no history (its capabilities say so).
        Ok(Replay::Gap(GapCause::Unknown))
    }

    fn history(&self) -> Option<usize> {
        None
    }

    fn idempotency(&self) -> Option<Duration> {
        None
    }

    fn epoch(&self) -> String {
        self.node.clone()
    }

    async fn check(&self) -> Result<()> {
        Ok(())
    }
}

/// Hand every message of a core subscription to the fan-out; a disconnect is a gap.
async fn feed(
    mut sub: async_nats::Subscriber,
    mut events: broadcast::Receiver<ConnEvent>,
    fanout: Arc<Fanout>,
) {
    let mut gap_sent = false;
    loop {
        tokio::select! {
            msg = sub.next() => {
                let Some(msg) = msg else {
                    fanout.gap();
                    return;
                };
                let id = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(ID_HEADER))
                    .and_then(|v| EventId::parse(v.as_str()).ok());
                match (id, event_of(msg.headers.as_ref())) {
                    (Some(id), Some(event)) => {
                        gap_sent = false;
                        fanout.send(Delivery::Event(Envelope { id, event, data: msg.payload }));
                    }
                    _ => tracing::warn!(subject = %msg.subject, "nats: ignored a message without valid ssehub headers"),
                }
            }
            ev = events.recv() => match ev {
                Ok(ConnEvent::Disconnected | ConnEvent::SlowConsumer)
                | Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Core NATS does not keep what was sent while we were away or dropped.
                    if !gap_sent {
                        gap_sent = true;
                        fanout.gap();
                    }
                }
                Ok(ConnEvent::Connected) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}
