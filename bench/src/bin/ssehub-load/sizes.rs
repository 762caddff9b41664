//! The sizes of the scenarios: full, or tiny for `--smoke`.

use std::time::Duration;

use ssehub_bench::driver;

/// Sizes of the scenarios: full, or tiny for `--smoke`.
pub(crate) struct Sizes {
    pub(crate) s1_subs: usize,
    pub(crate) s1_events: u64,
    pub(crate) s2_subs: usize,
    pub(crate) s2_events: u64,
    pub(crate) s3_low: usize,
    pub(crate) s3_high: usize,
    pub(crate) s4_channels: usize,
    pub(crate) s4_subs_per: usize,
    pub(crate) s4_events: u64,
    pub(crate) s5_subs: usize,
    pub(crate) s5_burst: u64,
    pub(crate) s5_rate_events: u64,
    pub(crate) s6_subs: usize,
    pub(crate) s6_events: u64,
    pub(crate) s6_rate: f64,
    pub(crate) storm: driver::Storm,
    pub(crate) s8_channels: usize,
    pub(crate) s9_conns: usize,
    pub(crate) s9_low: usize,
    pub(crate) s9_high: usize,
    pub(crate) fleet: driver::Fleet,
    pub(crate) s11_subs: usize,
    pub(crate) s11_rounds: u64,
    pub(crate) s11_burst: u64,
    pub(crate) s11_batch: usize,
    pub(crate) mux: driver::MuxVsSingle,
    pub(crate) crowd: driver::Crowd,
    pub(crate) chart_subs: Vec<usize>,
    pub(crate) chart_events: u64,
    pub(crate) timeout: Duration,
}

impl Sizes {
    /// Full sizes, or tiny ones for `--smoke`.
    pub(crate) fn new(smoke: bool) -> Self {
        if smoke {
            Sizes {
                s1_subs: 20,
                s1_events: 50,
                s2_subs: 20,
                s2_events: 10,
                s3_low: 20,
                s3_high: 100,
                s4_channels: 20,
                s4_subs_per: 2,
                s4_events: 5,
                s5_subs: 10,
                s5_burst: 20,
                s5_rate_events: 5,
                s6_subs: 5,
                s6_events: 200,
                s6_rate: 1000.0,
                storm: driver::Storm {
                    history: 100,
                    pad: 4096,
                    clients: 50,
                    probe_events: 20,
                    timeout: Duration::from_secs(20),
                },
                s8_channels: 50,
                s9_conns: 2,
                s9_low: 2,
                s9_high: 5,
                fleet: driver::Fleet {
                    channels: 200,
                    rounds: 2,
                    timeout: Duration::from_secs(60),
                },
                s11_subs: 20,
                s11_rounds: 2,
                s11_burst: 25,
                s11_batch: 10,
                mux: driver::MuxVsSingle {
                    clients: 5,
                    channels: 10,
                    rounds: 3,
                    burst: 1,
                    pad: 64,
                    timeout: Duration::from_secs(20),
                },
                crowd: driver::Crowd {
                    connections: 200,
                    rounds: 2,
                    pad: 64,
                    concurrency: 100,
                    open_timeout: Duration::from_secs(30),
                    settle: Duration::from_millis(300),
                    round_timeout: Duration::from_secs(20),
                },
                chart_subs: vec![5, 10, 20, 40],
                chart_events: 20,
                timeout: Duration::from_secs(20),
            }
        } else {
            Sizes {
                s1_subs: 1000,
                s1_events: 1000,
                s2_subs: 1000,
                s2_events: 300,
                s3_low: 1000,
                s3_high: 10_000,
                s4_channels: 1000,
                s4_subs_per: 5,
                s4_events: 20,
                s5_subs: 1000,
                s5_burst: 500,
                s5_rate_events: 200,
                s6_subs: 100,
                s6_events: 6000,
                s6_rate: 2000.0,
                storm: driver::Storm {
                    history: 1000,
                    pad: 4096,
                    clients: 2000,
                    probe_events: 300,
                    timeout: Duration::from_secs(90),
                },
                s8_channels: 10_000,
                s9_conns: 100,
                s9_low: 10,
                s9_high: 100,
                fleet: driver::Fleet {
                    channels: 10_000,
                    rounds: 3,
                    timeout: Duration::from_secs(180),
                },
                s11_subs: 1000,
                s11_rounds: 20,
                s11_burst: 1000,
                s11_batch: 100,
                // (b): 10,000 connections.
                mux: driver::MuxVsSingle {
                    clients: 1000,
                    channels: 10,
                    rounds: 200,
                    burst: 1,
                    pad: 64,
                    timeout: Duration::from_secs(90),
                },
                // 100,000 connections on one channel, per server.
                crowd: driver::Crowd {
                    connections: 100_000,
                    rounds: 5,
                    pad: 64,
                    concurrency: 500,
                    open_timeout: Duration::from_secs(180),
                    settle: Duration::from_secs(2),
                    round_timeout: Duration::from_secs(60),
                },
                chart_subs: vec![100, 300, 1000, 3000],
                chart_events: 300,
                timeout: Duration::from_secs(90),
            }
        }
    }
}
