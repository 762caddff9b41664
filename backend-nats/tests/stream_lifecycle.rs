//! The JetStream stream over its life: the limits it is created with, an existing stream with
//! other limits, a stream deleted and created again (its new epoch reaches publishes at once),
//! and replays that leave no consumer behind.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use ssehub_core::backend::StreamPosition;
use ssehub_core::conformance::{unique_id, unique_topic};
use ssehub_core::{Broker, Delivery, EventId, Message, Replay, Subscription};
use ssehub_nats::NatsBroker;
use ssehub_nats::async_nats::connection::State;
use ssehub_nats::async_nats::jetstream::{self, stream};
use ssehub_test_support::nats::{NatsOptions, NatsServer, nats_url};
use ssehub_test_support::proxy::TcpProxy;
use ssehub_test_support::server::BrokerServer;

const WAIT: Duration = Duration::from_secs(30);

/// A prefix and stream name of this test alone.
fn names(case: &str) -> (String, String) {
    let id: String = unique_id(case)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    (format!("life.{id}"), format!("LIFE_{id}"))
}

fn builder(url: &str, prefix: &str, stream: &str) -> ssehub_nats::NatsBrokerBuilder {
    NatsBroker::builder(url)
        .prefix(prefix)
        .stream(stream)
        .connect_timeout(Duration::from_secs(10))
        .response_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_millis(500))
        .reconnect_max_delay(Duration::from_millis(100))
}

async fn stream_info(client: &ssehub_nats::async_nats::Client, name: &str) -> stream::Info {
    let js = jetstream::new(client.clone());
    let mut s = js.get_stream(name).await.expect("stream");
    s.info().await.expect("info").clone()
}

fn epoch_of(id: &EventId) -> String {
    StreamPosition::from_event_id(id)
        .expect("an id of ours")
        .epoch()
        .to_string()
}

async fn next(sub: &mut Subscription) -> Delivery {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("subscription ended"),
        Err(_) => panic!("nothing delivered within {WAIT:?}"),
    }
}

/// A stream the broker creates forgets events after a day and holds at most 1 GiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_stream_is_bounded_in_age_and_bytes() {
    let Some(url) = nats_url().await else { return };
    let (prefix, name) = names("defaults");
    let b = builder(&url, &prefix, &name)
        .build()
        .await
        .expect("connect");
    let info = stream_info(b.client(), &name).await;
    assert_eq!(info.config.max_age, Duration::from_secs(24 * 3600));
    assert_eq!(info.config.max_bytes, 1 << 30);
    let js = jetstream::new(b.client().clone());
    js.delete_stream(&name).await.expect("clean up");
}

/// `max_bytes` and `history_ttl` set the created stream's limits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_and_history_ttl_set_the_stream_limits() {
    let Some(url) = nats_url().await else { return };
    let (prefix, name) = names("limits");
    let b = builder(&url, &prefix, &name)
        .max_bytes(8 << 20)
        .history_ttl(Duration::from_secs(90))
        .build()
        .await
        .expect("connect");
    let info = stream_info(b.client(), &name).await;
    assert_eq!(info.config.max_bytes, 8 << 20);
    assert_eq!(info.config.max_age, Duration::from_secs(90));
    let js = jetstream::new(b.client().clone());
    js.delete_stream(&name).await.expect("clean up");
}

/// Warnings logged while a future runs on this thread.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Warnings {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().expect("lock").push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The republish setting live delivery reads (see the crate docs), as a user who makes the
/// stream by hand sets it.
fn republish(prefix: &str) -> stream::Republish {
    stream::Republish {
        source: format!("{prefix}.>"),
        destination: format!("_ssehub_live.{prefix}.>"),
        headers_only: false,
    }
}

/// A stream made by hand (as an operator would) for `prefix`: `per_subject` messages kept per
/// subject (the server's default when `None`), with ssehub's republish setting or without.
async fn hand_made(
    url: &str,
    prefix: &str,
    name: &str,
    per_subject: Option<i64>,
    with_republish: bool,
) -> jetstream::Context {
    let client = ssehub_nats::async_nats::connect(url).await.expect("client");
    let js = jetstream::new(client);
    let mut config = stream::Config {
        name: name.to_owned(),
        subjects: vec![format!("{prefix}.>")],
        storage: stream::StorageType::File,
        republish: with_republish.then(|| republish(prefix)),
        ..Default::default()
    };
    if let Some(n) = per_subject {
        config.max_messages_per_subject = n;
    }
    js.create_stream(config).await.expect("create the stream");
    js
}

/// A stream made without the republish setting (by hand, or by an ssehub before live delivery
/// used it) gets it where the server can add it (2.10 and newer); a 2.9 server cannot, and the
/// broker refuses to start with an error that says what to do, instead of running with silent
/// live feeds.
#[tokio::test(flavor = "current_thread")]
async fn a_stream_without_republish_gets_it_or_a_clear_error() {
    let Some(url) = nats_url().await else { return };
    let (prefix, name) = names("norepublish");
    let js = hand_made(&url, &prefix, &name, None, false).await;
    match builder(&url, &prefix, &name).build().await {
        Ok(_) => {
            let mut stream = js.get_stream(&name).await.expect("stream");
            let info = stream.info().await.expect("info");
            assert_eq!(info.config.republish, Some(republish(&prefix)));
        }
        Err(e) => {
            let text = format!("{e} {e:?}");
            assert!(
                text.contains("republish") && text.contains("delete the stream"),
                "{text}"
            );
        }
    }
    js.delete_stream(&name).await.expect("clean up");
}

/// A stream that already exists with other limits is used as it is, and a warning names each
/// setting that differs, with both values.
#[tokio::test(flavor = "current_thread")]
async fn an_existing_stream_with_other_limits_is_reported() {
    let Some(url) = nats_url().await else { return };
    let (prefix, name) = names("mismatch");
    let js = hand_made(&url, &prefix, &name, Some(7), true).await;
    let warnings = Warnings::default();
    let guard = tracing::dispatcher::set_default(&tracing::Dispatch::new(warnings.clone()));
    let b = builder(&url, &prefix, &name)
        .history(50)
        .build()
        .await
        .expect("connect");
    drop(guard);
    assert_eq!(
        b.capabilities().history,
        Some(7),
        "the stream's own history"
    );
    let text = warnings.0.lock().expect("lock").join("\n");
    for want in ["max_msgs_per_subject", "7", "50", "max_age", "max_bytes"] {
        assert!(text.contains(want), "no {want:?} in the warnings: {text}");
    }
    js.delete_stream(&name).await.expect("clean up");
}

/// A stream that keeps every event of a subject (`max_msgs_per_subject = -1`) has history: the
/// broker reports it as unbounded by count, and resumes replay from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unlimited_history_per_subject_is_history() {
    let Some(url) = nats_url().await else { return };
    let (prefix, name) = names("unlimited");
    let js = hand_made(&url, &prefix, &name, Some(-1), true).await;
    let b = builder(&url, &prefix, &name)
        .build()
        .await
        .expect("connect");
    assert_eq!(b.capabilities().history, Some(usize::MAX));
    let topic = unique_topic("unlimited");
    let first = b.publish(&topic, Message::new("1")).await.expect("publish");
    b.publish(&topic, Message::new("2")).await.expect("publish");
    match b.replay(&topic, &first, usize::MAX).await.expect("replay") {
        Replay::Events(ev) => assert_eq!(ev.len(), 1),
        Replay::Gap(_) => panic!("gap"),
    }
    js.delete_stream(&name).await.expect("clean up");
}

/// The stream is deleted and created again by another node. The node whose feed notices it sends
/// its subscribers a gap and publishes under the new epoch at once; a node without a feed
/// notices on its first publish (its ack comes from the new stream) and uses the new epoch from
/// its next publish on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recreated_stream_gives_its_epoch_to_publishes_at_once() {
    let Some(server) =
        ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)
    else {
        return;
    };
    let (prefix, name) = names("epoch");
    let a = builder(&server.url(), &prefix, &name)
        .build()
        .await
        .expect("a");
    let b = builder(&server.url(), &prefix, &name)
        .build()
        .await
        .expect("b");
    let c = builder(&server.url(), &prefix, &name)
        .build()
        .await
        .expect("c");
    let topic = unique_topic("epoch");
    let mut sub = a.subscribe(&topic).await.expect("subscribe");
    for i in 0..3 {
        a.publish(&topic, Message::new(i.to_string()))
            .await
            .expect("publish");
        c.publish(&topic, Message::new(i.to_string()))
            .await
            .expect("publish");
    }
    for _ in 0..6 {
        assert!(matches!(next(&mut sub).await, Delivery::Event(_)));
    }
    let old = a.epoch();
    let js = jetstream::new(b.client().clone());
    js.delete_stream(&name).await.expect("delete the stream");
    b.health().await.expect("B creates the stream again");
    let new = b.epoch();
    assert_ne!(old, new);

    // C has no feed. Its first publish lands in the new stream at a sequence it had already seen
    // from the old one, which shows the stream was created again.
    let _ = c
        .publish(&topic, Message::new("c1"))
        .await
        .expect("publish");
    let id = c
        .publish(&topic, Message::new("c2"))
        .await
        .expect("publish");
    assert_eq!(epoch_of(&id), new, "C publishes under the new epoch");

    // B publishes into the new stream, past every sequence the old one had: A's feed reads the
    // new stream and notices.
    for i in 0..10 {
        b.publish(&topic, Message::new(format!("new-{i}")))
            .await
            .expect("publish");
    }
    assert_eq!(next(&mut sub).await, Delivery::Gap, "A's feed sends a gap");
    let id = a.publish(&topic, Message::new("a")).await.expect("publish");
    assert_eq!(epoch_of(&id), new, "A publishes under the new epoch");
}

/// A node cut off while the stream was deleted and created again checks the stream before its
/// first publish after the reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publish_after_a_reconnect_uses_the_current_stream() {
    let Some(server) =
        ssehub_test_support::or_skip(NatsServer::start(NatsOptions::default()).await)
    else {
        return;
    };
    let (prefix, name) = names("reconnect");
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], server.port()));
    let proxy = TcpProxy::start(upstream).await.expect("proxy");
    let a = builder(&format!("nats://{}", proxy.addr()), &prefix, &name)
        .build()
        .await
        .expect("a");
    let b = builder(&server.url(), &prefix, &name)
        .build()
        .await
        .expect("b");
    let topic = unique_topic("reconnect");
    for i in 0..5 {
        a.publish(&topic, Message::new(i.to_string()))
            .await
            .expect("publish");
    }
    proxy.refuse(true);
    proxy.drop_all();
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.client().connection_state() == State::Connected {
        assert!(tokio::time::Instant::now() < deadline, "never disconnected");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let js = jetstream::new(b.client().clone());
    js.delete_stream(&name).await.expect("delete the stream");
    b.health().await.expect("B creates the stream again");
    for i in 0..10 {
        b.publish(&topic, Message::new(format!("new-{i}")))
            .await
            .expect("publish");
    }
    proxy.refuse(false);
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.client().connection_state() != State::Connected {
        assert!(tokio::time::Instant::now() < deadline, "never reconnected");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let id = a.publish(&topic, Message::new("a")).await.expect("publish");
    assert_eq!(epoch_of(&id), b.epoch());
}

/// Replays that read events leave no consumer on the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_leave_no_consumers() {
    let Some(url) = nats_url().await else { return };
    let (prefix, name) = names("consumers");
    let b = builder(&url, &prefix, &name)
        .build()
        .await
        .expect("connect");
    let topic = unique_topic("consumers");
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            b.publish(&topic, Message::new(i.to_string()))
                .await
                .expect("publish"),
        );
    }
    let before = stream_info(b.client(), &name).await.state.consumer_count;
    for (i, id) in ids.iter().enumerate().take(5) {
        match b.replay(&topic, id, usize::MAX).await.expect("replay") {
            Replay::Events(ev) => assert_eq!(ev.len(), 9 - i),
            Replay::Gap(_) => panic!("gap"),
        }
        // A page, then the rest.
        match b.replay(&topic, id, 2).await.expect("replay") {
            Replay::Events(ev) => assert_eq!(ev.len(), 2),
            Replay::Gap(_) => panic!("gap"),
        }
    }
    let after = stream_info(b.client(), &name).await.state.consumer_count;
    assert_eq!(after, before, "replays left {} consumers", after - before);
    let js = jetstream::new(b.client().clone());
    js.delete_stream(&name).await.expect("clean up");
}
