//! Presence: each node writes its session count of a topic into a hash with a per-node expiry,
//! and reads the sum over the nodes whose entry is still within the presence window.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;
use ssehub_core::Topic;

use crate::error::{RResult, timed};
use crate::keys::Keys;

pub(crate) struct Presence {
    script: Script,
    window: Duration,
}

impl Presence {
    pub(crate) fn new(window: Duration) -> Self {
        Presence {
            script: Script::new(include_str!("scripts/presence.lua")),
            window,
        }
    }

    /// Write this node's count `local` of `topic` and answer the count over live nodes.
    pub(crate) async fn report(
        &self,
        con: &ConnectionManager,
        keys: &Keys,
        limit: Duration,
        node: &str,
        topic: &Topic,
        local: usize,
    ) -> RResult<usize> {
        let window_ms = u64::try_from(self.window.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let (counts, expiry) = keys.presence(topic.as_str());
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(counts)
            .key(expiry)
            .arg(node)
            .arg(local)
            .arg(window_ms);
        let mut con = con.clone();
        let total: i64 = timed(limit, "presence", invocation.invoke_async(&mut con)).await?;
        Ok(usize::try_from(total).unwrap_or(0))
    }
}
