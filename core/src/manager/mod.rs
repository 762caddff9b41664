//! The typed channel manager.
//!
//! # Example
//!
//! ```
//! use serde::Serialize;
//! use ssehub_core::ChannelManager;
//!
//! #[derive(Serialize)]
//! #[serde(rename_all = "camelCase", tag = "type", rename = "comment-added")]
//! struct CommentEvent { discussion_id: String, comment_count: u64, timestamp: u64 }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
//! let broker = ssehub_memory::MemoryBroker::new();
//! let comments = ChannelManager::<CommentEvent>::builder(broker)
//!     .key_prefix("discussion")
//!     .key_suffix("comments")
//!     .build()?;
//!
//! comments.publish("123", &CommentEvent {
//!     discussion_id: "123".into(), comment_count: 5, timestamp: 1_700_000_000_000,
//! }).await?;
//! assert_eq!(comments.session_count("123"), 0);
//! assert_eq!(comments.topic("123")?.as_str(), "discussion:123:comments");
//! # Ok(()) }
//! ```

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::broker::{Broker, Message, Replay};
use crate::error::{Error, Result};
use crate::hub::{Hub, HubConfig};
use crate::id::{EventId, EventName, Topic};
use crate::idempotency::IdempotencyKey;
use crate::presence::PresenceConfig;
use crate::session::{OverflowPolicy, QueueLimits, ReplayLimits, Replayer, Session, SessionRun};
use crate::transport::ResetReason;

mod builder;
mod lookup;
mod options;

pub use builder::ChannelManagerBuilder;
pub use lookup::History;
pub use options::{PublishOptions, SubscribeOptions};

/// The resource id of `topic` when it has this prefix and suffix.
fn resource_of<'a>(
    topic: &'a Topic,
    prefix: Option<&str>,
    suffix: Option<&str>,
) -> Option<&'a str> {
    let mut rest = topic.as_str();
    if let Some(p) = prefix {
        rest = rest.strip_prefix(p)?.strip_prefix(':')?;
    }
    if let Some(s) = suffix {
        rest = rest.strip_suffix(s)?.strip_suffix(':')?;
    }
    (!rest.is_empty() && !rest.contains(':')).then_some(rest)
}

type NameFn<E> = dyn Fn(&E) -> &'static str + Send + Sync;

/// Broadcasts typed events to the sessions of channels named `prefix:resourceId:suffix`.
///
/// Cheap to clone (all clones share one hub). Events are serialized to JSON once per publish;
/// each node frames an event once and shares the bytes with all its sessions.
pub struct ChannelManager<E> {
    inner: Arc<Inner<E>>,
}

struct Inner<E> {
    hub: Hub,
    key_prefix: Option<String>,
    key_suffix: Option<String>,
    event_name: Option<Arc<NameFn<E>>>,
    max_event_bytes: usize,
    max_lifetime: Option<Duration>,
    _event: PhantomData<fn(&E)>,
}

impl<E> Clone for ChannelManager<E> {
    fn clone(&self) -> Self {
        ChannelManager {
            inner: self.inner.clone(),
        }
    }
}

impl<E> fmt::Debug for ChannelManager<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelManager")
            .field("key_prefix", &self.inner.key_prefix)
            .field("key_suffix", &self.inner.key_suffix)
            .field("broker", self.inner.hub.broker())
            .field("channels", &self.inner.hub.channel_count())
            .finish_non_exhaustive()
    }
}

impl<E: Serialize + Send + Sync + 'static> ChannelManager<E> {
    /// Start building a manager over `broker`.
    pub fn builder(broker: impl Broker) -> ChannelManagerBuilder<E> {
        Self::builder_dyn(Arc::new(broker))
    }

    /// [`builder`](Self::builder) for a broker that is already shared.
    pub fn builder_dyn(broker: Arc<dyn Broker>) -> ChannelManagerBuilder<E> {
        ChannelManagerBuilder {
            broker,
            key_prefix: None,
            key_suffix: None,
            event_name: None,
            max_event_bytes: None,
            hub: HubConfig {
                linger: Duration::from_secs(5),
                queue: QueueLimits::default(),
                overflow: OverflowPolicy::Disconnect,
                max_sessions: None,
                max_sessions_per_channel: None,
                max_channels: Some(10_000),
                replay: ReplayLimits::default(),
                max_concurrent_replays: 16,
                presence: PresenceConfig::default(),
                presence_events: false,
            },
            max_lifetime: None,
        }
    }

    /// The topic of a resource: `prefix:resourceId:suffix`, validated.
    pub fn topic(&self, resource_id: &str) -> Result<Topic> {
        Topic::from_parts(
            self.inner.key_prefix.as_deref(),
            resource_id,
            self.inner.key_suffix.as_deref(),
        )
    }

    /// A handle on one resource's channel. Creates nothing: a channel
    /// exists on a node only while it has sessions.
    pub fn channel(&self, resource_id: &str) -> Result<Channel<E>> {
        Ok(Channel {
            topic: self.topic(resource_id)?,
            manager: self.clone(),
        })
    }

    /// Serialize `event` once and publish it to every session of the resource, on every node.
    /// Returns the broker-assigned id. The publish carries a fresh idempotency key, so a client
    /// library that resends it stores it once.
    pub async fn publish(&self, resource_id: &str, event: &E) -> Result<EventId> {
        self.publish_with(resource_id, event, PublishOptions::new())
            .await
    }

    /// Publish with this SSE event name, whatever the builder's
    /// [`event_name`](ChannelManagerBuilder::event_name) would say. The name is validated
    /// ([`EventName::new`]: no control characters, not `reset`).
    pub async fn publish_named(&self, resource_id: &str, event: &E, name: &str) -> Result<EventId> {
        self.publish_with(resource_id, event, PublishOptions::new().event(name))
            .await
    }

    /// Publish with these [`PublishOptions`]: an event name, an idempotency key. A repeat of
    /// a key within the broker's window (a retry after a lost reply, on any node) stores
    /// nothing and answers the first publish's id.
    pub async fn publish_with(
        &self,
        resource_id: &str,
        event: &E,
        options: PublishOptions,
    ) -> Result<EventId> {
        let topic = self.topic(resource_id)?;
        self.publish_to(&topic, event, options).await
    }

    /// Publish `events` to the resource, in this order, as one batch
    /// ([`Broker::publish_many`]): the same events and ids as publishing them one after the
    /// other, without a broker round trip each. Every event is serialized (and checked against
    /// the size limit) before any is sent, and each carries a fresh idempotency key. A broker
    /// error after some events were stored is [`Error::PartlyPublished`], with their ids.
    pub async fn publish_many<'a>(
        &self,
        resource_id: &str,
        events: impl IntoIterator<Item = &'a E>,
    ) -> Result<Vec<EventId>>
    where
        E: 'a,
    {
        self.publish_many_with(resource_id, events, PublishOptions::new())
            .await
    }

    /// [`publish_many`](Self::publish_many) with these [`PublishOptions`]: the event name of
    /// every event, and a batch key whose [`part(i)`](IdempotencyKey::part) is event `i`'s, so
    /// publishing the same batch again under the same key stores nothing twice and answers the
    /// same ids (also after [`Error::PartlyPublished`]).
    pub async fn publish_many_with<'a>(
        &self,
        resource_id: &str,
        events: impl IntoIterator<Item = &'a E>,
        options: PublishOptions,
    ) -> Result<Vec<EventId>>
    where
        E: 'a,
    {
        let topic = self.topic(resource_id)?;
        self.publish_many_to(&topic, events, options).await
    }

    async fn publish_many_to<'a>(
        &self,
        topic: &Topic,
        events: impl IntoIterator<Item = &'a E>,
        options: PublishOptions,
    ) -> Result<Vec<EventId>>
    where
        E: 'a,
    {
        let topic = topic.clone();
        let name = options.event_name()?;
        let messages = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let mut message = self.encode(e)?;
                if let Some(name) = &name {
                    message.event = name.clone();
                }
                message.idempotency_key = Some(match &options.idempotency_key {
                    Some(key) => key.part(i),
                    None => IdempotencyKey::generate(),
                });
                Ok(message)
            })
            .collect::<Result<Vec<Message>>>()?;
        let n = messages.len() as u64;
        let result = self.inner.hub.broker().publish_many(&topic, messages).await;
        match &result {
            Ok(_) => metrics::counter!(crate::metric_names::EVENTS_PUBLISHED).increment(n),
            Err(e) => {
                if let Error::PartlyPublished { published, .. } = e {
                    metrics::counter!(crate::metric_names::EVENTS_PUBLISHED)
                        .increment(published.len() as u64);
                }
                metrics::counter!(crate::metric_names::PUBLISH_ERRORS).increment(1);
                tracing::debug!(%topic, error = %e, "batch publish failed");
            }
        }
        result
    }

    async fn publish_to(
        &self,
        topic: &Topic,
        event: &E,
        options: PublishOptions,
    ) -> Result<EventId> {
        let mut message = self.encode(event)?;
        if let Some(name) = options.event_name()? {
            message.event = name;
        }
        message.idempotency_key = Some(
            options
                .idempotency_key
                .unwrap_or_else(IdempotencyKey::generate),
        );
        let result = self.inner.hub.broker().publish(topic, message).await;
        match &result {
            Ok(id) => {
                metrics::counter!(crate::metric_names::EVENTS_PUBLISHED).increment(1);
                tracing::trace!(%topic, %id, "published");
            }
            Err(e) => {
                metrics::counter!(crate::metric_names::PUBLISH_ERRORS).increment(1);
                tracing::debug!(%topic, error = %e, "publish failed");
            }
        }
        result
    }

    fn encode(&self, event: &E) -> Result<Message> {
        let data = serde_json::to_vec(event)?;
        if data.len() > self.inner.max_event_bytes {
            return Err(Error::PayloadTooLarge {
                size: data.len(),
                max: self.inner.max_event_bytes,
            });
        }
        let name = match &self.inner.event_name {
            Some(f) => EventName::from_static(f(event))?,
            None => EventName::MESSAGE,
        };
        Ok(Message {
            event: name,
            data: Bytes::from(data),
            idempotency_key: None,
        })
    }

    /// Sessions of the resource on this node (0 for an invalid id).
    pub fn session_count(&self, resource_id: &str) -> usize {
        self.topic(resource_id)
            .map_or(0, |t| self.inner.hub.session_count(&t))
    }

    /// Sessions of the resource on every live node, as this node knows them (see
    /// [`PresenceConfig`]): a table look-up, no broker round trip. On a broker without
    /// signals (one node), this node's count.
    pub async fn cluster_session_count(&self, resource_id: &str) -> Result<usize> {
        let topic = self.topic(resource_id)?;
        Ok(self.inner.hub.presence().cluster_count(&topic))
    }

    /// Call `watcher` with a resource id and its new cluster-wide session count whenever it
    /// changes (at most once per [`PresenceConfig::coalesce`] per resource), for every
    /// resource of this manager, on every node.
    pub fn on_presence(&self, watcher: impl Fn(&str, usize) + Send + Sync + 'static) {
        let prefix = self.inner.key_prefix.clone();
        let suffix = self.inner.key_suffix.clone();
        self.inner.hub.presence().watch(
            false,
            Arc::new(move |topic: &Topic, change| {
                if change.sessions_changed
                    && let Some(id) = resource_of(topic, prefix.as_deref(), suffix.as_deref())
                {
                    watcher(id, change.sessions);
                }
            }),
        );
    }

    /// Remove the resource's channel now if it has no session.
    /// Returns `true` when no channel remains. Channels also go by themselves after the linger.
    pub fn cleanup_if_empty(&self, resource_id: &str) -> bool {
        self.topic(resource_id)
            .map_or(true, |t| self.inner.hub.cleanup_if_empty(&t))
    }

    /// Channels with a live broker subscription on this node.
    pub fn channel_count(&self) -> usize {
        self.inner.hub.channel_count()
    }

    /// Sessions on this node, all channels together.
    pub fn total_sessions(&self) -> usize {
        self.inner.hub.total_sessions()
    }

    /// The broker behind this manager.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        self.inner.hub.broker()
    }

    /// Whether [`shutdown`](Self::shutdown) has been called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.hub.is_shutting_down()
    }

    /// End every session cleanly and refuse new ones. Each stream drains what is queued, then
    /// gets a final `retry:` hint of `retry_base` plus up to `retry_jitter` (spread per session,
    /// so clients do not all come back at once), then ends.
    pub fn shutdown(&self, retry_base: Duration, retry_jitter: Duration) {
        let jitter_ms = u64::try_from(retry_jitter.as_millis()).unwrap_or(u64::MAX);
        self.inner.hub.shutdown(&|transport, rand| {
            let extra = if jitter_ms == 0 {
                0
            } else {
                rand % jitter_ms.saturating_add(1)
            };
            Some(transport.retry(retry_base.saturating_add(Duration::from_millis(extra))))
        });
    }

    /// Open a session on the resource's channel.
    ///
    /// The session joins the live feed first (live events are buffered from then on), and
    /// then:
    ///
    /// - **exact resume** (a last event id the broker can replay from): the retry hint, then
    ///   exactly the missed events, de-duplicated against the buffered live events, read a page
    ///   at a time ([`ReplayLimits`]); **no initial event**;
    /// - **otherwise** (a fresh connect, or an id that cannot be resumed): the retry hint, the
    ///   `reset` event when an id was given, then the initial event — computed after the join,
    ///   so nothing published meanwhile is lost and the snapshot is never older than what
    ///   follows it;
    ///
    /// then the live events.
    ///
    /// A replay the broker cannot answer right now fails the call with a temporary error
    /// ([`Error::is_temporary`]): the HTTP adapter answers with a retry hint, and the client comes
    /// back with the same id.
    pub async fn subscribe(
        &self,
        resource_id: &str,
        options: SubscribeOptions<E>,
    ) -> Result<Session> {
        let topic = self.topic(resource_id)?;
        self.subscribe_topic(&topic, options).await
    }

    async fn subscribe_topic(
        &self,
        topic: &Topic,
        options: SubscribeOptions<E>,
    ) -> Result<Session> {
        let transport = options.transport;
        let hub = &self.inner.hub;
        let (shared, membership) = hub.join(topic, transport.clone()).await?;
        let user = options.user.map(|u| hub.presence().join_user(topic, u));
        if let Some(every) = options.keep_alive {
            hub.keep_alive(&shared, every);
        }
        let mut head = Vec::with_capacity(3);
        if let Some(retry) = options.retry {
            head.push(transport.retry(retry));
        }
        let mut first_page = Vec::new();
        let mut more = false;
        let mut resumed_from = None;
        let mut reset = None;
        if let Some(raw) = options.last_event_id.as_deref() {
            match EventId::parse(raw) {
                Err(_) => reset = Some(ResetReason::MalformedId),
                Ok(_) if hub.broker().capabilities().history.is_none() => {
                    reset = Some(ResetReason::NoHistory);
                }
                Ok(id) => {
                    let page = shared.replay_limits().page();
                    let answer = {
                        let _permit = hub.replay_permits().acquire().await;
                        hub.broker().replay(topic, &id, page).await
                    };
                    match answer {
                        Ok(Replay::Events(events)) => {
                            metrics::counter!(crate::metric_names::REPLAYS).increment(1);
                            metrics::counter!(crate::metric_names::REPLAYED_EVENTS)
                                .increment(events.len() as u64);
                            more = events.len() >= page;
                            first_page = events;
                            resumed_from = Some(id);
                        }
                        Ok(Replay::Gap(cause)) => reset = Some(cause.reset_reason()),
                        // The broker could not answer now (a timeout, a reconnect): refuse the
                        // stream with a temporary error, so the client comes back with the same
                        // id and loses nothing. A `reset` here would make it refetch for no
                        // reason.
                        Err(e) if e.is_temporary() => {
                            tracing::debug!(%topic, error = %e, "replay failed; the client retries");
                            return Err(e);
                        }
                        Err(e) => {
                            tracing::warn!(%topic, error = %e, "replay failed; sending reset");
                            reset = Some(ResetReason::BrokerGap);
                        }
                    }
                }
            }
        }
        if let Some(reason) = reset {
            crate::metric_names::resets_sent(reason, 1);
            head.push(transport.reset(reason, None));
        }
        // A fresh start may still get a position: the topic's newest event, read before the
        // snapshot so the snapshot covers everything up to it.
        let mut start = resumed_from.clone();
        if start.is_none() && options.from_tail && hub.broker().capabilities().history.is_some() {
            match hub.broker().tail(topic).await {
                Ok(tail) => start = tail,
                // No position: on a reconnect the channel starts afresh (its initial event).
                Err(e) => tracing::debug!(%topic, error = %e, "no tail for a fresh session"),
            }
        }
        // The snapshot rule: an exact resume carries exactly the missed events; anything else
        // starts from the initial event, computed now that live events are being buffered, so
        // it is never older than the first live event after it.
        if resumed_from.is_none()
            && let Some(initial) = options.initial_event
            && let Some(event) = initial.get().await
        {
            let m = self.encode(&event)?;
            head.push(transport.event(None, &m.event, &m.data));
        }
        shared.start(head, start.clone(), first_page, more);
        let replayer = more.then(|| Replayer {
            broker: hub.broker().clone(),
            topic: topic.clone(),
            permits: hub.replay_permits().clone(),
        });
        let run = SessionRun {
            replayer,
            retry: options.retry.unwrap_or(Duration::from_secs(1)),
            max_lifetime: self.inner.max_lifetime,
            start_position: start,
            user,
        };
        Ok(Session::new(shared, membership, run))
    }

    /// End, at once, every open session of the resource's channel on this node; returns how
    /// many were closed. Their clients reconnect and go through `authorize` again, so a user
    /// whose access was revoked is cut off mid-stream. Call it on every node (for example from
    /// a message the app publishes) to cut the user off everywhere.
    pub fn close_channel(&self, resource_id: &str) -> Result<usize> {
        let topic = self.topic(resource_id)?;
        Ok(self.inner.hub.revoke(&|t| *t == topic))
    }

    /// [`close_channel`](Self::close_channel) for every channel whose topic `select` picks (for
    /// example all of one user's channels); returns how many sessions were closed.
    pub fn close_where(&self, select: impl Fn(&Topic) -> bool) -> usize {
        self.inner.hub.revoke(&select)
    }
}

/// A handle on one resource's channel, from [`ChannelManager::channel`].
pub struct Channel<E> {
    topic: Topic,
    manager: ChannelManager<E>,
}

impl<E> fmt::Debug for Channel<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("topic", &self.topic)
            .finish()
    }
}

impl<E: Serialize + Send + Sync + 'static> Channel<E> {
    /// The channel's topic.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Publish to this channel.
    pub async fn publish(&self, event: &E) -> Result<EventId> {
        self.publish_with(event, PublishOptions::new()).await
    }

    /// Publish to this channel with this SSE event name
    /// ([`ChannelManager::publish_named`]).
    pub async fn publish_named(&self, event: &E, name: &str) -> Result<EventId> {
        self.publish_with(event, PublishOptions::new().event(name))
            .await
    }

    /// Publish to this channel with these options ([`ChannelManager::publish_with`]).
    pub async fn publish_with(&self, event: &E, options: PublishOptions) -> Result<EventId> {
        self.manager.publish_to(&self.topic, event, options).await
    }

    /// Sessions of this channel on this node.
    pub fn session_count(&self) -> usize {
        self.manager.inner.hub.session_count(&self.topic)
    }

    /// Open a session on this channel.
    pub async fn subscribe(&self, options: SubscribeOptions<E>) -> Result<Session> {
        self.manager.subscribe_topic(&self.topic, options).await
    }
}
