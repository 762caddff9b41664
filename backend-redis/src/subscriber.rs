//! The subscriber: one actor per broker owns the one pub/sub connection, subscribes per topic on
//! demand, hands each topic's messages to its [`Fanout`], reconnects with backoff and fills
//! what was missed from the streams (or sends a gap), and answers health probes.
//!
//! The connection's messages reach the actor through a bounded queue (`pushes`); when a burst
//! overflows it while the actor is busy, the actor replaces the connection, and the reconnect's
//! fill (`fill`) reads what was dropped from the streams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use redis::{AsyncConnectionConfig, Client, ConnectionInfo, PushInfo, PushKind};
use ssehub_core::backend::{Backoff, Fanout, Offset, SubscriptionCount, lock};
use ssehub_core::{Envelope, Subscription, Topic};
use tokio::sync::{mpsc, oneshot};

use crate::builder::RedisBrokerBuilder;
use crate::connection::{Subscriber, cluster_client};
use crate::error::{RResult, RedisError, timed};
use crate::fill::{Live, Position, TopicSub, check, fill_all, fill_some};
use crate::history::History;
use crate::pushes::{self, Push};
use crate::reply::{into_bytes, parse_message};

/// Health probes waiting for their message to come back, by token.
pub(crate) type Probes = Arc<Mutex<HashMap<String, oneshot::Sender<()>>>>;

/// The node's own channels besides the topics': its health probes and the signals between
/// nodes (presence).
#[derive(Clone)]
pub(crate) struct NodeChannels {
    pub(crate) probe_channel: String,
    pub(crate) probes: Probes,
    pub(crate) signal_channel: String,
    pub(crate) signals: tokio::sync::broadcast::Sender<bytes::Bytes>,
}

pub(crate) enum Command {
    Subscribe {
        topic: Topic,
        reply: oneshot::Sender<RResult<Subscription>>,
    },
    /// A subscription of this channel was dropped.
    Release { channel: String },
}

/// Held by each subscription stream; tells the actor when the stream is gone.
struct Release {
    actor: mpsc::UnboundedSender<Command>,
    channel: String,
}

impl Drop for Release {
    fn drop(&mut self) {
        let channel = std::mem::take(&mut self.channel);
        let _ = self.actor.send(Command::Release { channel });
    }
}

/// How the subscriber connects.
pub(crate) enum Connect {
    /// One server, with a RESP3 client.
    Server(Client),
    /// A cluster through any of these nodes.
    Cluster(Vec<ConnectionInfo>),
}

pub(crate) struct Actor {
    config: RedisBrokerBuilder,
    history: History,
    connect: Connect,
    node: NodeChannels,
    subscriptions: SubscriptionCount,
    topics: HashMap<String, TopicSub>,
    /// Topic channels whose subscription the server dropped: subscribed again and filled.
    lost: Vec<String>,
    /// Topic channels whose live events showed a hole: filled from their streams.
    holes: Vec<String>,
    /// Where the next liveness check starts (round robin over the topics).
    check_cursor: usize,
    rx: mpsc::UnboundedReceiver<Command>,
    /// To hand each subscription a way to say it is gone, without keeping the actor alive.
    tx: mpsc::WeakUnboundedSender<Command>,
}

type Conn = (Subscriber, mpsc::Receiver<Push>);

enum Outcome {
    /// The connection failed: reconnect.
    Reconnect,
    /// Every handle is gone: stop.
    Stop,
}

impl Actor {
    pub(crate) fn new(
        config: RedisBrokerBuilder,
        history: History,
        connect: Connect,
        node: NodeChannels,
        subscriptions: SubscriptionCount,
    ) -> (Self, mpsc::UnboundedSender<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let actor = Actor {
            config,
            history,
            connect,
            node,
            subscriptions,
            topics: HashMap::new(),
            lost: Vec::new(),
            holes: Vec::new(),
            check_cursor: 0,
            rx,
            tx: tx.downgrade(),
        };
        (actor, tx)
    }

    /// Open the subscriber connection and subscribe the node's own channels.
    pub(crate) async fn open(&mut self) -> RResult<Conn> {
        let (tx, rx) = pushes::channel(self.config.push_buffer);
        let limit = self.config.op_timeout();
        let mut con = match &self.connect {
            Connect::Server(client) => {
                let cfg = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.config.connect_timeout))
                    .set_response_timeout(Some(self.config.response_timeout))
                    .set_push_sender(tx);
                Subscriber::Server(
                    timed(
                        limit,
                        "connecting the subscriber",
                        client.get_multiplexed_async_connection_with_config(&cfg),
                    )
                    .await?,
                )
            }
            Connect::Cluster(nodes) => {
                let client = cluster_client(nodes, &self.config, Some(tx))
                    .map_err(RedisError::redis("opening cluster client"))?;
                Subscriber::Cluster(
                    timed(
                        limit,
                        "connecting the subscriber",
                        client.get_async_connection(),
                    )
                    .await?,
                )
            }
        };
        let own = [&self.node.probe_channel, &self.node.signal_channel];
        timed(limit, "subscribe", con.subscribe_node(&own)).await?;
        Ok((con, rx))
    }

    pub(crate) async fn run(mut self, first: Conn) {
        let mut conn = Some(first);
        let mut backoff = Backoff::new(
            std::time::Duration::from_millis(50),
            self.config.reconnect_max_delay,
        );
        loop {
            let (mut con, mut pushes) = match conn.take() {
                Some(c) => c,
                None => match self.reconnect().await {
                    Ok(Some(c)) => {
                        backoff.reset();
                        ssehub_core::metric_names::broker_reconnected("redis");
                        c
                    }
                    Ok(None) => return,
                    Err(e) => {
                        tracing::debug!(error = %e, "redis subscriber reconnect failed");
                        if self.wait(backoff.next_delay()).await.is_none() {
                            return;
                        }
                        continue;
                    }
                },
            };
            match self.serve(&mut con, &mut pushes).await {
                Outcome::Stop => return,
                Outcome::Reconnect => {
                    tracing::warn!("redis subscriber connection lost, reconnecting");
                }
            }
        }
    }

    /// A command while the connection is down: subscribes fail, releases are applied.
    fn while_down(&mut self, cmd: Command) {
        match cmd {
            Command::Subscribe { reply, .. } => {
                let _ = reply.send(Err(RedisError::Disconnected));
            }
            Command::Release { channel } => {
                self.release_local(&channel);
            }
        }
    }

    /// Sleep, answering commands meanwhile. `None` when every handle is gone.
    async fn wait(&mut self, delay: std::time::Duration) -> Option<()> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                () = &mut sleep => return Some(()),
                cmd = self.rx.recv() => self.while_down(cmd?),
            }
        }
    }

    /// Forget the topic if its last subscription is gone; `true` when it was removed.
    fn release_local(&mut self, channel: &str) -> bool {
        if self
            .topics
            .get(channel)
            .is_some_and(|t| t.fanout.is_empty())
        {
            self.topics.remove(channel);
            return true;
        }
        false
    }

    /// Open a new connection, re-subscribe every live topic, and fill what was missed.
    async fn reconnect(&mut self) -> RResult<Option<Conn>> {
        // Forget topics whose subscriptions were all dropped while down.
        while let Ok(cmd) = self.rx.try_recv() {
            self.while_down(cmd);
        }
        if self.rx.is_closed() && self.topics.is_empty() {
            return Ok(None);
        }
        let (mut con, pushes) = self.open().await?;
        let channels: Vec<String> = self.topics.keys().cloned().collect();
        if !channels.is_empty() {
            let limit = self.config.op_timeout();
            timed(limit, "re-subscribe", con.subscribe_topics(&channels)).await?;
        }
        fill_all(&self.history, &mut self.topics).await?;
        Ok(Some((con, pushes)))
    }

    /// Serve commands and pushes until the connection fails or every handle is gone.
    ///
    /// Every ping tick also runs the liveness check ([`check`]): a topic whose stream holds
    /// events it did not deliver is filled, and subscribed again when they are older than
    /// [`LIVE_GRACE`](crate::fill::LIVE_GRACE). Neither redis-rs nor a cluster reports every
    /// lost subscription (a sharded subscription moved by a failover, or dead after a cluster
    /// restart with no disconnection); this bounds how long one can go unnoticed to about two
    /// ping intervals for up to [`CHECK_PER_TICK`](crate::fill::CHECK_PER_TICK) topics (more
    /// topics are checked round robin), and nothing is lost meanwhile: the streams hold it.
    async fn serve(&mut self, con: &mut Subscriber, pushes: &mut mpsc::Receiver<Push>) -> Outcome {
        let limit = self.config.op_timeout();
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            tokio::select! {
                push = pushes.recv() => match push {
                    None => return Outcome::Reconnect,
                    Some(Push::Overflow) => {
                        tracing::warn!(
                            bound = self.config.push_buffer,
                            "redis subscriber fell behind its push buffer; replacing the \
                             connection and filling from the streams"
                        );
                        return Outcome::Reconnect;
                    }
                    Some(Push::Info(p)) if p.kind == PushKind::Disconnection => {
                        return Outcome::Reconnect;
                    }
                    Some(Push::Info(p)) => {
                        self.on_push(p);
                        if !self.lost.is_empty() {
                            let lost = std::mem::take(&mut self.lost);
                            if self.resubscribe(con, lost).await.is_err() {
                                return Outcome::Reconnect;
                            }
                        }
                        if !self.holes.is_empty() {
                            // What the hole held is in the streams, and so is the event that
                            // showed it. A fill that fails for now is retried by the check.
                            let holes = std::mem::take(&mut self.holes);
                            if let Err(e) = fill_some(&self.history, &mut self.topics, holes).await {
                                tracing::debug!(error = %e, "redis: filling a hole failed; the next check tries again");
                            }
                        }
                    }
                },
                cmd = self.rx.recv() => match cmd {
                    None => return Outcome::Stop,
                    Some(Command::Subscribe { topic, reply }) => {
                        if let Err(e) = self.on_subscribe(con, topic, reply).await
                            && e.is_temporary()
                        {
                            return Outcome::Reconnect;
                        }
                    }
                    Some(Command::Release { channel }) => {
                        if self.release_local(&channel)
                            && timed(limit, "unsubscribe", con.unsubscribe_topic(&channel)).await.is_err()
                        {
                            return Outcome::Reconnect;
                        }
                    }
                },
                _ = ping.tick() => {
                    let res: RResult<()> = timed(limit, "ping", con.ping()).await;
                    if res.is_err() {
                        return Outcome::Reconnect;
                    }
                    match check(&self.history, &mut self.topics, &mut self.check_cursor).await {
                        Ok(stale) if stale.is_empty() => {}
                        Ok(stale) => {
                            if self.resubscribe(con, stale).await.is_err() {
                                return Outcome::Reconnect;
                            }
                        }
                        Err(e) => tracing::debug!(error = %e, "redis: liveness check fill failed; the next check tries again"),
                    }
                }
            }
        }
    }

    /// Subscribe these topic channels again (the server or the client library lost them), then
    /// fill them from their streams.
    async fn resubscribe(&mut self, con: &mut Subscriber, channels: Vec<String>) -> RResult<()> {
        let channels: Vec<String> = channels
            .into_iter()
            .filter(|c| self.topics.contains_key(c))
            .collect();
        if channels.is_empty() {
            return Ok(());
        }
        let limit = self.config.op_timeout();
        timed(limit, "re-subscribe", con.subscribe_topics(&channels)).await?;
        // What was published before the new subscription took effect is in the streams. A fill
        // that fails for now is retried by the next liveness check.
        if let Err(e) = fill_some(&self.history, &mut self.topics, channels).await {
            tracing::debug!(error = %e, "redis: filling re-subscribed topics failed; the next check tries again");
        }
        Ok(())
    }

    /// A new subscription of `topic`: joins the topic's fan-out, subscribing the connection to
    /// the topic's channel first when it is the topic's first.
    async fn on_subscribe(
        &mut self,
        con: &mut Subscriber,
        topic: Topic,
        reply: oneshot::Sender<RResult<Subscription>>,
    ) -> RResult<()> {
        let channel = self.history.keys.channel(topic.as_str());
        if !self.topics.contains_key(&channel) {
            // The stream's tail before subscribing: events after it arrive live (or are filled
            // from the stream after a reconnect).
            let res: RResult<(Position, Option<Offset>)> = async {
                let (epoch, last) = self.history.tail(topic.as_str()).await?;
                let limit = self.config.op_timeout();
                timed(
                    limit,
                    "subscribe",
                    con.subscribe_topics(std::slice::from_ref(&channel)),
                )
                .await?;
                // The tail once the subscription is confirmed: events up to it were published
                // around the subscription (not this subscription's to deliver); a first live
                // event that follows on a later one shows events the subscription missed.
                let (_, confirmed) = self.history.tail(topic.as_str()).await?;
                Ok((Position { epoch, last }, confirmed))
            }
            .await;
            match res {
                Ok((pos, confirmed)) => {
                    let fanout = Fanout::new(self.config.subscriber_buffer);
                    let sub = TopicSub::new(topic, fanout, pos).confirmed_at(confirmed);
                    self.topics.insert(channel.clone(), sub);
                }
                Err(e) => {
                    let temporary = e.is_temporary();
                    let _ = reply.send(Err(e));
                    return if temporary {
                        Err(RedisError::Disconnected)
                    } else {
                        Ok(())
                    };
                }
            }
        }
        let (Some(t), Some(actor)) = (self.topics.get(&channel), self.tx.upgrade()) else {
            let _ = reply.send(Err(RedisError::Disconnected));
            return Ok(());
        };
        // If the caller gave up, the subscription drops here and releases itself.
        let release = Release { actor, channel };
        let _ = reply.send(Ok(t.fanout.subscribe(&self.subscriptions, release)));
        Ok(())
    }

    fn on_push(&mut self, push: PushInfo) {
        if matches!(push.kind, PushKind::Unsubscribe | PushKind::SUnsubscribe) {
            // The server dropped a subscription we did not give up (Redis 7 sends `sunsubscribe`
            // when a slot moves: a failover, a reshard), or the reply to our own release. A
            // topic we still hold is a possible loss: subscribe it again and fill it.
            if let Some(channel) = push.data.into_iter().next().and_then(into_bytes)
                && let Ok(channel) = String::from_utf8(channel)
                && self.topics.contains_key(&channel)
                && !self.lost.contains(&channel)
            {
                tracing::warn!(
                    channel,
                    "redis: the server dropped a live subscription; subscribing again and filling"
                );
                self.lost.push(channel);
            }
            return;
        }
        if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
            return;
        }
        let mut data = push.data.into_iter();
        let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
            return;
        };
        let (Some(channel), Some(payload)) = (into_bytes(channel), into_bytes(payload)) else {
            return;
        };
        let Ok(channel) = String::from_utf8(channel) else {
            return;
        };
        if channel == self.node.probe_channel {
            if let Ok(token) = std::str::from_utf8(&payload)
                && let Some(tx) = lock(&self.node.probes).remove(token)
            {
                let _ = tx.send(());
            }
            return;
        }
        if channel == self.node.signal_channel {
            // Nobody listening is no error: signals are at most once.
            let _ = self.node.signals.send(bytes::Bytes::from(payload));
            return;
        }
        let Some(t) = self.topics.get_mut(&channel) else {
            return;
        };
        match parse_message(&payload) {
            Some(m) => {
                let id = m.pos.to_event_id();
                let env = Envelope {
                    id,
                    event: m.event,
                    data: m.data,
                };
                if t.live(&m.pos, m.prev, env) == Live::Hole && !self.holes.contains(&channel) {
                    self.holes.push(channel);
                }
            }
            None => {
                tracing::warn!(channel, "malformed message on a redis channel");
                t.fanout.gap();
            }
        }
    }
}
