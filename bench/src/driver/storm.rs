//! The resume storm (scenario 7): many clients resuming from far back in a channel's history,
//! never reading, while another channel is probed for latency.

use std::time::Duration;

use tokio::time::Instant;

use super::process::{publish, stats};
use super::{Error, Fanout, Run, ServerProc, fanout};
use crate::client;
use crate::server::PublishParams;

/// What the resume storm does (scenario 7).
#[derive(Clone, Debug)]
pub struct Storm {
    /// Events in the stormed channel's history.
    pub history: u64,
    /// Bytes of padding per history event.
    pub pad: usize,
    /// Clients that resume from the oldest id and never read.
    pub clients: usize,
    /// Events of the latency probe on another channel (at 100 ev/s).
    pub probe_events: u64,
    /// Give up waiting after this long.
    pub timeout: Duration,
}

/// Scenario 7: `clients` connections resume from the oldest id of a channel whose history holds
/// `history` events of `pad` bytes, and never read. Measured: the server's RSS before and with
/// them, and the publish→delivery latency of another channel (1 subscriber, 100 ev/s) without
/// and during the storm. Returns the idle probe, the storm probe and the storm itself.
pub async fn resume_storm(server: &ServerProc, s: &Storm) -> Result<Vec<Run>, Error> {
    let addr = server.addr();
    let probe = |events| Fanout {
        paths: vec!["/sse/probe".into()],
        subscribers: 1,
        publish: PublishParams {
            channel: "probe".into(),
            channels: 0,
            count: events,
            rate: 100.0,
            pad: 64,
            batch: 0,
            ..PublishParams::default()
        },
        slow: false,
        timeout: s.timeout,
    };
    let mut idle = fanout(std::slice::from_ref(server), &probe(s.probe_events)).await?;
    idle.label = "probe, idle".into();
    let history = publish(
        addr,
        &PublishParams {
            channel: "storm".into(),
            channels: 0,
            count: s.history,
            rate: 0.0,
            pad: s.pad,
            batch: 0,
            ..PublishParams::default()
        },
    )
    .await?;
    if history.first_id.is_empty() {
        return Err("the server gave no event id to resume from".into());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = server.rss_kib();
    let path = format!("/sse/storm?lastEventId={}", history.first_id);
    let t0 = Instant::now();
    // The storm connects while the probe runs: publishing elsewhere must not stall.
    let connecting = tokio::spawn({
        let path = path.clone();
        let clients = s.clients;
        async move {
            let mut conns = Vec::with_capacity(clients);
            let mut errors = 0u64;
            for _ in 0..clients {
                // A tiny receive buffer: the client takes next to nothing and never reads.
                match client::connect(addr, &path, Some(4096)).await {
                    Ok(c) => conns.push(c),
                    Err(_) => errors += 1,
                }
            }
            (conns, errors)
        }
    });
    let mut during = fanout(std::slice::from_ref(server), &probe(s.probe_events)).await?;
    during.label = "probe, during the storm".into();
    let (conns, connect_errors) = connecting.await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_storm = server.rss_kib();
    let st = stats(addr).await?;
    #[allow(clippy::cast_precision_loss)]
    let per_client = rss_storm.saturating_sub(rss_before) as f64 / s.clients.max(1) as f64;
    let storm = Run {
        label: "storm".into(),
        subscribers: s.clients,
        channels: 1,
        events: s.history,
        // Sessions may already be fewer than clients: the server's write timeout frees the
        // ones blocked longest (they never read). That is the point, not an error.
        errors: connect_errors,
        peak_rss_kib: server.peak_rss_kib(),
        kib_per_conn: per_client,
        note: format!(
            "{} clients resuming from the oldest of {} events of {} B, never reading: RSS {rss_before} KiB before, {rss_storm} KiB with them ({per_client:.1} KiB per client, {} sessions open, connected in {connect_secs:.1} s)",
            conns.len(),
            s.history,
            s.pad,
            st.sessions
        ),
        ..Run::default()
    };
    drop(conns);
    Ok(vec![idle, during, storm])
}
