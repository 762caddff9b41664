//! Core mode: events over core NATS only. Ids are `<node>-<counter>` of the publishing node;
//! there is no history, and a dropped connection is a gap.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use futures_util::StreamExt;
use ssehub_core::backend::{Fanout, Offset, StreamPosition};
use ssehub_core::{Delivery, Envelope, EventId, Message, Replay, Result};
use tokio::sync::broadcast;
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
    /// Ids are given in publish order.
    publish_lock: tokio::sync::Mutex<()>,
}

impl CoreNats {
    pub(crate) fn new(conn: Connection, node: String) -> Self {
        CoreNats {
            conn,
            node,
            counter: AtomicU64::new(0),
            publish_lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[async_trait]
impl Carrier for CoreNats {
    async fn publish(&self, subject: String, message: Message) -> Result<EventId> {
        let id = {
            let _order = self.publish_lock.lock().await;
            if !self.conn.connected() {
                return Err(NatsError::NotConnected.into());
            }
            let n = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
            let Some(pos) = StreamPosition::new(&self.node, Offset::Seq(n)) else {
                unreachable!("the node id is hex digits")
            };
            let id = pos.to_event_id();
            let headers = headers_for(&message.event, (ID_HEADER, id.as_str()));
            self.conn
                .client
                .publish_with_headers(subject, headers, message.data)
                .await
                .map_err(|e| NatsError::Publish(boxed(e)))?;
            id
        };
        // The flush returns once the event left our socket (not once the server routed it: core
        // NATS is at-most-once); a publish buffered during an outage errors here.
        match tokio::time::timeout(self.conn.timeout, self.conn.client.flush()).await {
            Ok(Ok(())) if self.conn.connected() => Ok(id),
            Ok(Ok(())) => Err(NatsError::Unconfirmed(None).into()),
            Ok(Err(e)) => Err(NatsError::Unconfirmed(Some(boxed(e))).into()),
            Err(_) => Err(NatsError::Unconfirmed(None).into()),
        }
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
        Ok(Replay::Gap)
    }

    fn history(&self) -> Option<usize> {
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
