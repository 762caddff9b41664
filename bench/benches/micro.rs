//! criterion micro-benchmarks: framing one event, the per-subscriber cost of fan-out (publish
//! through a `ChannelManager` over `MemoryBroker` to N sessions, draining them), and a
//! multiplexed stream of 10 channels against 10 single sessions (one event on each channel,
//! drained: the multiplexed one re-frames each event with an id of all 10 positions).
//!
//! ```text
//! cargo bench -p ssehub-bench --bench micro
//! ```

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use futures_util::StreamExt;
use ssehub_bench::server::BenchEvent;
use ssehub_core::multiplex::MultiplexedSession;
use ssehub_core::{ChannelManager, EventId, EventName, Session, Sse, SubscribeOptions, Transport};
use ssehub_memory::MemoryBroker;

fn event() -> BenchEvent {
    BenchEvent {
        n: 12_345,
        t: 1_700_000_000_000_000_000,
        pad: "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
    }
}

fn framing(c: &mut Criterion) {
    let id = EventId::parse("2718281-12345").expect("valid id");
    let data = serde_json::to_vec(&event()).expect("serializable");
    let mut g = c.benchmark_group("framing");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("sse_event", |b| {
        b.iter(|| Sse.event(Some(&id), &EventName::MESSAGE, black_box(&data)));
    });
    let multi = b"line one\nline two\r\nline three".repeat(4);
    g.bench_function("sse_event_multiline", |b| {
        b.iter(|| Sse.event(Some(&id), &EventName::MESSAGE, black_box(&multi)));
    });
    g.finish();
}

fn fanout(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("fanout_per_subscriber");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    for n in [1usize, 10, 100, 1000] {
        let (manager, mut sessions) = rt.block_on(async {
            let manager = ChannelManager::<BenchEvent>::builder(MemoryBroker::new())
                .build()
                .expect("manager");
            let mut sessions: Vec<Session> = Vec::with_capacity(n);
            for _ in 0..n {
                sessions.push(
                    manager
                        .subscribe("c", SubscribeOptions::new())
                        .await
                        .expect("session"),
                );
            }
            (manager, sessions)
        });
        let ev = event();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    manager.publish("c", &ev).await.expect("publish");
                    for s in &mut sessions {
                        black_box(s.next().await);
                    }
                });
            });
        });
    }
    g.finish();
}

/// Read `stream` until `events` frames (each ends with an empty line) have come.
async fn drain<S: futures_util::Stream<Item = bytes::Bytes> + Unpin>(
    stream: &mut S,
    events: usize,
) {
    let mut got = 0;
    while got < events {
        let chunk = stream.next().await.expect("a frame");
        got += chunk.windows(2).filter(|w| w == b"\n\n").count();
        black_box(chunk);
    }
}

fn multiplexed(c: &mut Criterion) {
    const CHANNELS: usize = 10;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut g = c.benchmark_group("ten_channels");
    g.measurement_time(Duration::from_secs(3));
    g.warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(CHANNELS as u64));
    let manager = ChannelManager::<BenchEvent>::builder(MemoryBroker::new())
        .build()
        .expect("manager");
    let names: Vec<String> = (0..CHANNELS).map(|i| format!("c{i}")).collect();
    let ev = event();
    let (mut mux, mut singles) = rt.block_on(async {
        let mut mux = MultiplexedSession::new(Arc::new(Sse), None, None);
        let mut singles = Vec::new();
        for name in &names {
            let tagged = SubscribeOptions::new().for_multiplex().from_tail(true);
            let session = manager.subscribe(name, tagged).await.expect("session");
            mux = mux.channel(name, session).expect("channel");
            singles.push(
                manager
                    .subscribe(name, SubscribeOptions::new())
                    .await
                    .expect("session"),
            );
        }
        // Every channel at a position, so each id carries 10 of them.
        for name in &names {
            manager.publish(name, &ev).await.expect("publish");
        }
        (mux, singles)
    });
    rt.block_on(async {
        drain(&mut mux, CHANNELS).await;
        for s in &mut singles {
            drain(s, 1).await;
        }
    });
    // Both consumers drain every round, so each bench publishes once per channel and reads its
    // own consumer; the other's frames are drained outside the measured part.
    g.bench_function("multiplexed", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(async {
                    for name in &names {
                        manager.publish(name, &ev).await.expect("publish");
                    }
                    let start = std::time::Instant::now();
                    drain(&mut mux, CHANNELS).await;
                    spent += start.elapsed();
                    for s in &mut singles {
                        drain(s, 1).await;
                    }
                });
            }
            spent
        });
    });
    g.bench_function("single", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                rt.block_on(async {
                    for name in &names {
                        manager.publish(name, &ev).await.expect("publish");
                    }
                    let start = std::time::Instant::now();
                    for s in &mut singles {
                        drain(s, 1).await;
                    }
                    spent += start.elapsed();
                    drain(&mut mux, CHANNELS).await;
                });
            }
            spent
        });
    });
    g.finish();
}

/// Every benchmark of this file (what `criterion_group!` would generate, documented).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    framing(&mut c);
    fanout(&mut c);
    multiplexed(&mut c);
}

criterion_main!(benches);
