//! Durable publishes on Redis with replicas: after the publish script, `WAIT 1` on the master
//! that ran it, so a publish returns once a replica holds the event. Redis replicates
//! asynchronously: without it, a master that dies (or is paused past the cluster's node timeout
//! and replaced) after answering loses the events its replica had not copied yet, silently.
//!
//! A master without replicas is not waited on (`WAIT 1` would block until its timeout): which
//! masters have a replica is read from `INFO replication` (one server) or `CLUSTER NODES` (a
//! cluster) at most every [`REFRESH`], and read again at once when a wait fails.

use std::sync::Mutex;
use std::time::Duration;

use redis::Value;
use ssehub_core::backend::lock;
use tokio::time::Instant;

use crate::connection::RedisConnection;
use crate::error::{RResult, RedisError, timed};
use crate::keys::slot_of;

/// How long a reading of which masters have replicas stands.
const REFRESH: Duration = Duration::from_secs(5);

/// Which masters have a replica: one server's answer, or per cluster slot range.
#[derive(Debug)]
enum Table {
    Server(bool),
    /// `(first slot, last slot)` of the ranges whose master has an online replica.
    Cluster(Vec<(u16, u16)>),
}

impl Table {
    fn has_replica(&self, key: &str) -> bool {
        match self {
            Table::Server(has) => *has,
            Table::Cluster(ranges) => {
                let slot = slot_of(key);
                ranges.iter().any(|(a, b)| (*a..=*b).contains(&slot))
            }
        }
    }
}

/// The replica look-ups of one broker.
#[derive(Debug, Default)]
pub(crate) struct Replicas {
    read: Mutex<Option<(Instant, Table)>>,
}

impl Replicas {
    /// Whether the master holding `key` has a replica (as last read, at most [`REFRESH`] ago).
    async fn has_replica(
        &self,
        con: &RedisConnection,
        key: &str,
        limit: Duration,
    ) -> RResult<bool> {
        if let Some((at, table)) = lock(&self.read).as_ref()
            && at.elapsed() < REFRESH
        {
            return Ok(table.has_replica(key));
        }
        let table = read_table(con, limit).await?;
        let has = table.has_replica(key);
        *lock(&self.read) = Some((Instant::now(), table));
        Ok(has)
    }

    /// After a publish of `key`'s topic: return once a replica holds it, when its master has
    /// one. An error when no replica acknowledged within `timeout` (the event may be stored on
    /// the master only: the publish fails, and a retry with its idempotency key stores it once).
    pub(crate) async fn wait(
        &self,
        con: &RedisConnection,
        key: &str,
        timeout: Duration,
        limit: Duration,
    ) -> RResult<()> {
        if !self.has_replica(con, key, limit).await? {
            return Ok(());
        }
        let ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let mut wait = redis::cmd("WAIT");
        wait.arg(1).arg(ms);
        let acked = timed(
            limit + timeout,
            "waiting for a replica",
            con.on_master_of(key, wait),
        )
        .await?;
        if matches!(acked, Value::Int(n) if n >= 1) {
            return Ok(());
        }
        // The topology may have changed (a replica gone, a failover): read it again next time.
        *lock(&self.read) = None;
        Err(RedisError::NotReplicated)
    }
}

async fn read_table(con: &RedisConnection, limit: Duration) -> RResult<Table> {
    if con.is_cluster() {
        let nodes: String = timed(
            limit,
            "reading the cluster's nodes",
            redis::cmd("CLUSTER")
                .arg("NODES")
                .query_async(&mut con.clone()),
        )
        .await?;
        Ok(Table::Cluster(replicated_ranges(&nodes)))
    } else {
        let info: String = timed(
            limit,
            "reading the replication info",
            redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut con.clone()),
        )
        .await?;
        let replicas = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_slaves:"))
            .and_then(|n| n.trim().parse::<u64>().ok())
            .unwrap_or(0);
        Ok(Table::Server(replicas > 0))
    }
}

/// The slot ranges whose (live) master has at least one replica, from `CLUSTER NODES`
/// (`<id> <addr> <flags> <master id> <ping> <pong> <epoch> <link> <slot>...`).
fn replicated_ranges(nodes: &str) -> Vec<(u16, u16)> {
    let lines: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|f: &Vec<&str>| f.len() >= 8)
        .collect();
    let healthy = |f: &[&str]| f[7] == "connected" && !f[2].contains("fail");
    // A replica counts whatever its state: one that is down now may still be promoted later
    // with what it copied, so a publish it did not copy is not acknowledged (the shard's
    // publishes fail while it is down, as with Redis's own `min-replicas-to-write`; remove a
    // replica for good with `CLUSTER FORGET`).
    let with_replica: Vec<&str> = lines
        .iter()
        .filter(|f| f[2].contains("slave"))
        .map(|f| f[3])
        .collect();
    let mut ranges = Vec::new();
    for f in &lines {
        if !f[2].contains("master") || !healthy(f) || !with_replica.contains(&f[0]) {
            continue;
        }
        for slots in &f[8..] {
            if slots.starts_with('[') {
                continue; // a slot being migrated or imported
            }
            let (a, b) = slots.split_once('-').unwrap_or((slots, slots));
            if let (Ok(a), Ok(b)) = (a.parse(), b.parse()) {
                ranges.push((a, b));
            }
        }
    }
    ranges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_the_hash_tag() {
        // Known values from the Redis cluster specification's examples.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(
            slot_of("{user1000}.following"),
            slot_of("{user1000}.followers")
        );
        assert_eq!(slot_of("a{}b"), slot_of("a{}b"));
    }

    #[test]
    fn ranges_of_masters_with_a_replica() {
        let nodes = "\
a1 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460
a2 127.0.0.1:7001@17001 master - 0 0 2 connected 5461-10922
a3 127.0.0.1:7002@17002 master - 0 0 3 connected 10923-16383 [16000->-x]
r1 127.0.0.1:7003@17003 slave a1 0 0 1 connected
r2 127.0.0.1:7004@17004 slave,fail a2 0 0 2 disconnected
r3 127.0.0.1:7005@17005 slave a3 0 0 3 connected
";
        assert_eq!(
            replicated_ranges(nodes),
            [(0, 5460), (5461, 10922), (10923, 16383)]
        );
        let without = nodes.replace("r1 ", "x1 ").replace("slave a1", "master -");
        assert_eq!(replicated_ranges(&without), [(5461, 10922), (10923, 16383)]);
    }
}
