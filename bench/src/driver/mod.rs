//! The load generator's scenarios: start servers as child processes, open subscribers, publish
//! through `POST /publish`, verify every delivery and measure.
//!
//! - [`ServerProc`]: a server under test, a child process of the load generator.
//! - [`fanout`]: publish to subscribers and measure throughput, CPU and latency.
//! - [`idle`], [`idle_channels`], [`idle_h2`]: memory per idle connection, channel and HTTP/2
//!   stream.
//! - [`resume_storm`]: clients resuming from far back that never read (scenario 7).
//! - [`fleet`]: several servers on one broker, and a broker restart (scenario 10).
//! - [`HubProc`], [`rounds`]: the `ssehub` hub binary, published to over HTTP (scenario 11).
//! - [`mux_vs_single`]: one multiplexed connection per client against one connection per
//!   channel (scenario 12).
//! - [`crowd`]: as many connections as one machine holds on one channel, from source addresses
//!   spread over 127.0.0.0/8 (scenario 13).

mod crowd;
mod crowd_worker;
mod fanout;
mod fleet;
mod hub;
mod idle;
mod mux;
mod process;
mod storm;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client;

pub use crowd::{
    Crowd, FD_HEADROOM, check_fd_limits, crowd, fds_needed, processes_needed, system_fds_left,
};
pub use crowd_worker::{WorkerReport, WorkerSpec, worker as crowd_worker};
pub use fanout::{Fanout, fanout};
pub use fleet::{Fleet, fleet};
pub use hub::{HUB_CHANNEL, HubProc, Publish, Rounds, Target, rounds};
pub use idle::{idle, idle_channels, idle_h2};
pub use mux::{MuxVsSingle, Streams, mux_vs_single};
pub use process::ServerProc;
pub use storm::{Storm, resume_storm};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The measurements of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    /// Scenario number (1..13; 0 for the chart's runs).
    pub scenario: u32,
    /// What this run is (server, backend, variant).
    pub label: String,
    /// `ssehub` or `baseline`.
    pub server: String,
    /// Subscribers measured.
    pub subscribers: usize,
    /// Channels.
    pub channels: usize,
    /// Events per channel.
    pub events: u64,
    /// Deliveries expected (subscribers × events).
    pub expected: u64,
    /// Deliveries received.
    pub delivered: u64,
    /// Deliveries missing.
    pub lost: u64,
    /// Deliveries received twice or out of order.
    pub duplicates: u64,
    /// Connection or publish errors.
    pub errors: u64,
    /// From the publish request to the last delivery, s.
    pub secs: f64,
    /// Deliveries per second.
    pub deliveries_per_s: f64,
    /// Server CPU (user + system, all server processes) during the run, s.
    pub cpu_s: f64,
    /// Deliveries per server CPU-second.
    pub deliveries_per_cpu_s: f64,
    /// How long the publish request took (all events published), s.
    pub publish_secs: f64,
    /// Events published per second of `publish_secs`.
    pub publishes_per_s: f64,
    /// Share of the server CPU spent in the kernel (system time).
    pub sys_share: f64,
    /// Server write system calls per delivery.
    pub writes_per_delivery: f64,
    /// Publish→receive latency percentiles, µs.
    pub p50_us: u64,
    /// 99th percentile, µs.
    pub p99_us: u64,
    /// 99.9th percentile, µs.
    pub p999_us: u64,
    /// Largest publish→receive latency, µs (scenario 13; 0 where not measured).
    pub max_us: u64,
    /// Per round, the largest publish→receive latency, µs: when that round's event had reached
    /// every subscriber (scenario 13; empty elsewhere).
    pub rounds_max_us: Vec<u64>,
    /// Peak RSS of the server process(es), KiB.
    pub peak_rss_kib: u64,
    /// Server memory per idle connection, KiB (scenario 3, and 13: all of them idle against
    /// none); per idle channel (8), per HTTP/2 stream (9), per client of `channels`
    /// subscriptions (12).
    pub kib_per_conn: f64,
    /// Free-form notes (slow consumer outcome, memory slope).
    pub note: String,
}

impl Run {
    /// Add what one subscriber received: its events, duplicates, error, and its first `take`
    /// latencies into `hist`.
    fn absorb(&mut self, r: &client::Received, hist: &mut Histogram<u64>, take: usize) {
        self.delivered += r.events;
        self.duplicates += r.duplicates;
        if r.error.is_some() {
            self.errors += 1;
        }
        for us in r.latencies_us.iter().take(take) {
            hist.saturating_record(u64::from(*us).max(1));
        }
    }

    /// The latency percentiles from `hist`.
    fn percentiles(&mut self, hist: &Histogram<u64>) {
        self.p50_us = hist.value_at_quantile(0.50);
        self.p99_us = hist.value_at_quantile(0.99);
        self.p999_us = hist.value_at_quantile(0.999);
    }
}
