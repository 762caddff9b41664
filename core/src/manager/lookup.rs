//! What a manager can tell about a channel besides its live events: who is on it
//! ([`ChannelManager::presence`]), what it published ([`ChannelManager::history`]), and channels
//! addressed by a whole [`Topic`] ([`ChannelManager::channel_at`]).

use serde::Serialize;

use super::{Channel, ChannelManager, PublishOptions};
use crate::broker::{Envelope, Replay};
use crate::error::Result;
use crate::id::{EventId, Topic};
use crate::presence::ChannelPresence;

/// Events of a channel's history, from [`ChannelManager::history`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct History {
    /// The events after the id asked for, oldest first, at most the limit asked for (when
    /// exactly that many, more may follow: ask again after the last one).
    pub events: Vec<Envelope>,
    /// `false` when history no longer reaches back to the id asked for (it is older than the
    /// broker's window, from another epoch, or unknown), or the broker keeps no history: the
    /// events after it cannot all be told, and `events` is empty.
    pub complete: bool,
}

impl<E: Serialize + Send + Sync + 'static> ChannelManager<E> {
    /// A handle on the channel of a whole `topic`, which need not have this manager's prefix
    /// and suffix: for apps whose channel names do not fit one key part (longer than
    /// [`MAX_RESOURCE_ID_LEN`](crate::MAX_RESOURCE_ID_LEN), or several parts such as
    /// `app:comments:123`). Its sessions, publishes, presence and history are this manager's
    /// (its hub, limits and event names); [`on_presence`](Self::on_presence) reports only the
    /// topics of this manager's shape.
    ///
    /// ```
    /// use ssehub_core::{ChannelManager, Topic};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
    /// let manager = ChannelManager::<u64>::builder(ssehub_memory::MemoryBroker::new()).build()?;
    /// let channel = manager.channel_at(Topic::new("hub:comments~123")?);
    /// channel.publish(&7).await?;
    /// assert_eq!(channel.topic().as_str(), "hub:comments~123");
    /// # Ok(()) }
    /// ```
    pub fn channel_at(&self, topic: Topic) -> Channel<E> {
        Channel {
            topic,
            manager: self.clone(),
        }
    }

    /// Who is on the resource's channel across every live node: its session count and its
    /// users (sessions opened with [`SubscribeOptions::user`](crate::SubscribeOptions::user))
    /// with their session counts. A table look-up, no broker round trip; as current as
    /// [`cluster_session_count`](Self::cluster_session_count) (see
    /// [`PresenceConfig`](crate::PresenceConfig)).
    ///
    /// ```
    /// use ssehub_core::{ChannelManager, SubscribeOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
    /// let manager = ChannelManager::<u64>::builder(ssehub_memory::MemoryBroker::new()).build()?;
    /// let info = serde_json::json!({"name": "Alice"});
    /// let _a = manager.subscribe("7", SubscribeOptions::new().user("alice", Some(info))).await?;
    /// let _b = manager.subscribe("7", SubscribeOptions::new()).await?;
    /// let presence = manager.presence("7")?;
    /// assert_eq!(presence.sessions, 2);
    /// assert_eq!(presence.users.len(), 1);
    /// assert_eq!((presence.users[0].user.as_str(), presence.users[0].sessions), ("alice", 1));
    /// # Ok(()) }
    /// ```
    pub fn presence(&self, resource_id: &str) -> Result<ChannelPresence> {
        let topic = self.topic(resource_id)?;
        Ok(self.inner.hub.presence().snapshot(&topic))
    }

    /// The resource's events published after `since`, at most `limit` (oldest first), from the
    /// broker's history ([`Broker::replay`](crate::Broker::replay)), with
    /// [`History::complete`] `false` when history no longer reaches back to `since`.
    ///
    /// ```
    /// use ssehub_core::ChannelManager;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> ssehub_core::Result<()> {
    /// let manager = ChannelManager::<u64>::builder(ssehub_memory::MemoryBroker::new()).build()?;
    /// let first = manager.publish("7", &1).await?;
    /// manager.publish("7", &2).await?;
    /// let history = manager.history("7", &first, 100).await?;
    /// assert!(history.complete);
    /// assert_eq!(&history.events[0].data[..], b"2");
    /// # Ok(()) }
    /// ```
    pub async fn history(
        &self,
        resource_id: &str,
        since: &EventId,
        limit: usize,
    ) -> Result<History> {
        let topic = self.topic(resource_id)?;
        self.history_of(&topic, since, limit).await
    }

    async fn history_of(&self, topic: &Topic, since: &EventId, limit: usize) -> Result<History> {
        let broker = self.inner.hub.broker();
        if broker.capabilities().history.is_none() {
            return Ok(History::default());
        }
        let answer = {
            let _permit = self.inner.hub.replay_permits().acquire().await;
            broker.replay(topic, since, limit.max(1)).await?
        };
        Ok(match answer {
            Replay::Events(mut events) => {
                events.truncate(limit);
                History {
                    events,
                    complete: true,
                }
            }
            Replay::Gap(_) => History::default(),
        })
    }
}

impl<E: Serialize + Send + Sync + 'static> Channel<E> {
    /// Publish `events` to this channel as one batch
    /// ([`ChannelManager::publish_many_with`]).
    pub async fn publish_many_with<'a>(
        &self,
        events: impl IntoIterator<Item = &'a E>,
        options: PublishOptions,
    ) -> Result<Vec<EventId>>
    where
        E: 'a,
    {
        self.manager
            .publish_many_to(&self.topic, events, options)
            .await
    }

    /// Who is on this channel across every live node ([`ChannelManager::presence`]).
    pub fn presence(&self) -> ChannelPresence {
        self.manager.inner.hub.presence().snapshot(&self.topic)
    }

    /// This channel's events after `since` ([`ChannelManager::history`]).
    pub async fn history(&self, since: &EventId, limit: usize) -> Result<History> {
        self.manager.history_of(&self.topic, since, limit).await
    }
}
