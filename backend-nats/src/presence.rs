//! Presence: every node answers requests on `_ssehub_presence.<prefix>.<topic>` with its local
//! session count of the topic; `cluster_sessions` asks and sums the answers that arrive within
//! the presence window.

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use ssehub_core::backend::lock;
use ssehub_core::{Result, Topic};
use tokio::task::JoinHandle;

use crate::Inner;
use crate::error::{NatsError, boxed};
use crate::subject::{subject_topic, topic_subject};

impl Inner {
    fn presence_root(&self) -> String {
        format!("_ssehub_presence.{}", self.config.prefix)
    }

    /// The local count of `topic` as last reported, when the topic is live on this node.
    fn local_count(&self, topic: &Topic) -> usize {
        let live = lock(&self.topics)
            .get(topic)
            .is_some_and(|w| w.strong_count() > 0);
        if !live {
            return 0;
        }
        lock(&self.presence)
            .get(topic.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// Answer other nodes' presence requests with this node's counts.
    pub(crate) async fn presence_responder(self: &Arc<Self>) -> Result<JoinHandle<()>> {
        let client = &self.conn.client;
        let mut sub = client
            .subscribe(format!("{}.>", self.presence_root()))
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        client
            .flush()
            .await
            .map_err(|e| NatsError::Subscribe(boxed(e)))?;
        let weak = Arc::downgrade(self);
        Ok(tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                let Some(inner) = weak.upgrade() else { return };
                let Some(reply) = msg.reply.clone() else {
                    continue;
                };
                if msg.payload.as_ref() == inner.node.as_bytes() {
                    continue; // our own request
                }
                let Some(topic) = subject_topic(&inner.presence_root(), &msg.subject) else {
                    continue;
                };
                let count = inner.local_count(&topic);
                let _ = inner
                    .conn
                    .client
                    .publish(reply, Bytes::from(count.to_string()))
                    .await;
            }
        }))
    }

    /// Record this node's count `local` of `topic`, ask the other nodes for theirs, and answer
    /// the sum of what arrives within the presence window.
    pub(crate) async fn cluster_sessions(&self, topic: &Topic, local: usize) -> Result<usize> {
        {
            // Kept only while the topic is live here: its last subscription removes the entry,
            // and a count reported after that is not kept (same lock order as that removal).
            let topics = lock(&self.topics);
            let live = topics.get(topic).is_some_and(|w| w.strong_count() > 0);
            let mut presence = lock(&self.presence);
            if local == 0 || !live {
                presence.remove(topic.as_str());
            } else {
                presence.insert(topic.as_str().to_string(), local);
            }
        }
        let client = &self.conn.client;
        let subject = topic_subject(&self.presence_root(), topic);
        let inbox = client.new_inbox();
        let fail = |e| NatsError::Presence(boxed(e));
        let mut sub = client.subscribe(inbox.clone()).await.map_err(fail)?;
        client
            .publish_with_reply(subject, inbox, Bytes::from(self.node.clone()))
            .await
            .map_err(|e| NatsError::Presence(boxed(e)))?;
        client
            .flush()
            .await
            .map_err(|e| NatsError::Presence(boxed(e)))?;
        let mut total = local;
        let deadline = tokio::time::sleep(self.config.presence_window);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                msg = sub.next() => match msg {
                    Some(msg) => {
                        let n = std::str::from_utf8(&msg.payload).ok().and_then(|s| s.parse::<usize>().ok());
                        total = total.saturating_add(n.unwrap_or(0));
                    }
                    None => break,
                }
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use ssehub_core::Broker;
    use ssehub_core::backend::lock;
    use ssehub_core::conformance::unique_topic;

    use crate::{Mode, NatsBroker};

    async fn broker(mode: Mode) -> Option<NatsBroker> {
        let url = ssehub_test_support::nats::nats_url().await?;
        Some(
            NatsBroker::builder(url)
                .prefix("ssehubtest.presence")
                .stream("SSEHUB_TEST_PRESENCE")
                .mode(mode)
                .build()
                .await
                .expect("connect"),
        )
    }

    /// The presence entry of a topic goes with the topic's last local subscription.
    async fn presence_entry_goes_with_the_last_subscription(mode: Mode) {
        let Some(b) = broker(mode).await else { return };
        let topic = unique_topic("presence-map");
        let first = b.subscribe(&topic).await.expect("subscribe");
        let second = b.subscribe(&topic).await.expect("subscribe");
        assert_eq!(b.cluster_sessions(&topic, 2).await.expect("presence"), 2);
        assert!(lock(&b.inner.presence).contains_key(topic.as_str()));
        drop(first);
        assert!(
            lock(&b.inner.presence).contains_key(topic.as_str()),
            "a subscription is left"
        );
        drop(second);
        assert!(
            lock(&b.inner.presence).is_empty(),
            "entries left after the last subscription: {:?}",
            lock(&b.inner.presence)
        );
        // A count reported after the topic is gone here is not kept either.
        assert_eq!(b.cluster_sessions(&topic, 1).await.expect("presence"), 1);
        assert!(lock(&b.inner.presence).is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_entry_goes_with_the_last_subscription_core() {
        presence_entry_goes_with_the_last_subscription(Mode::Core).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn presence_entry_goes_with_the_last_subscription_jetstream() {
        presence_entry_goes_with_the_last_subscription(Mode::JetStream).await;
    }
}
