//! criterion micro-benchmarks: framing one event, and the per-subscriber cost of fan-out
//! (publish through a `ChannelManager` over `MemoryBroker` to N sessions, draining them).
//!
//! ```text
//! cargo bench -p ssehub-bench --bench micro
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_main};
use futures_util::StreamExt;
use ssehub_bench::server::BenchEvent;
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

/// Every benchmark of this file (what `criterion_group!` would generate, documented).
fn benches() {
    let mut c = Criterion::default().configure_from_args();
    framing(&mut c);
    fanout(&mut c);
}

criterion_main!(benches);
