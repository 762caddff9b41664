//! The load generator's scenarios: start servers as child processes, open subscribers, publish
//! through `POST /publish`, verify every delivery and measure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::client::{self, Conn};
use crate::proc;
use crate::server::{Kind, PublishAnswer, PublishParams, Stats};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// One server under test, a child process of the load generator.
#[derive(Debug)]
pub struct ServerProc {
    /// Which server.
    pub kind: Kind,
    child: Child,
    port: u16,
}

impl ServerProc {
    /// Re-exec `exe --serve KIND --port P --backend B` and wait until it listens.
    pub async fn start(
        exe: &PathBuf,
        kind: Kind,
        backend: &str,
        metrics: bool,
    ) -> Result<Self, Error> {
        let port = ssehub_test_support::free_port();
        let mut cmd = Command::new(exe);
        cmd.args([
            "--serve",
            kind.as_str(),
            "--port",
            &port.to_string(),
            "--backend",
            backend,
        ]);
        if metrics {
            cmd.arg("--metrics");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?;
        let server = ServerProc { kind, child, port };
        if !ssehub_test_support::wait_for_port(port, Duration::from_secs(20)).await {
            return Err(format!("{} server did not listen on {port}", kind.as_str()).into());
        }
        Ok(server)
    }

    /// Its address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// CPU seconds used so far.
    #[must_use]
    pub fn cpu(&self) -> f64 {
        proc::cpu_seconds(self.child.id())
    }

    /// System (kernel) CPU seconds so far.
    #[must_use]
    pub fn sys_cpu(&self) -> f64 {
        proc::cpu_split(self.child.id()).1
    }

    /// Write system calls so far.
    #[must_use]
    pub fn write_syscalls(&self) -> u64 {
        proc::io_counter(self.child.id(), "syscw")
    }

    /// Peak RSS so far, KiB.
    #[must_use]
    pub fn peak_rss_kib(&self) -> u64 {
        proc::status_kib(self.child.id(), "VmHWM")
    }

    /// Current RSS, KiB.
    #[must_use]
    pub fn rss_kib(&self) -> u64 {
        proc::status_kib(self.child.id(), "VmRSS")
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request with `Connection: close`; the body of the answer.
async fn request(addr: SocketAddr, method: &str, path: &str) -> Result<String, Error> {
    let mut s = TcpStream::connect(addr).await?;
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    if !text.starts_with("HTTP/1.1 200") {
        return Err(format!("{method} {path}: {}", text.lines().next().unwrap_or("")).into());
    }
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default())
}

async fn publish(addr: SocketAddr, p: &PublishParams) -> Result<PublishAnswer, Error> {
    let q = format!(
        "/publish?channel={}&channels={}&count={}&rate={}&pad={}&batch={}&shuffle={}&first={}&retry={}",
        p.channel, p.channels, p.count, p.rate, p.pad, p.batch, p.shuffle, p.first, p.retry
    );
    Ok(serde_json::from_str(&request(addr, "POST", &q).await?)?)
}

async fn stats(addr: SocketAddr) -> Result<Stats, Error> {
    Ok(serde_json::from_str(
        &request(addr, "GET", "/stats").await?,
    )?)
}

/// The measurements of one run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Run {
    /// Scenario number (1..6; 0 for the chart's runs).
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
    /// Peak RSS of the server process(es), KiB.
    pub peak_rss_kib: u64,
    /// Server memory per idle connection, KiB (scenario 3).
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

/// What one fan-out run does.
#[derive(Clone, Debug)]
pub struct Fanout {
    /// Paths subscribed, round robin (e.g. one per channel).
    pub paths: Vec<String>,
    /// Subscribers (round robin over paths and servers).
    pub subscribers: usize,
    /// What to publish.
    pub publish: PublishParams,
    /// Add one subscriber that never reads (scenario 6).
    pub slow: bool,
    /// Give up waiting after this long.
    pub timeout: Duration,
}

/// Run one fan-out against `servers` (published through the first).
pub async fn fanout(servers: &[ServerProc], f: &Fanout) -> Result<Run, Error> {
    let addrs: Vec<SocketAddr> = servers.iter().map(ServerProc::addr).collect();
    let conns = client::open_many(&addrs, &f.paths, f.subscribers, 250).await?;
    let slow: Option<Conn> = if f.slow {
        Some(client::connect(addrs[0], &f.paths[0], Some(4096)).await?)
    } else {
        None
    };
    let channels = if f.publish.channels == 0 {
        1
    } else {
        f.publish.channels
    };
    let per_sub = f.publish.count;
    let cpu0: f64 = servers.iter().map(ServerProc::cpu).sum();
    let sys0: f64 = servers.iter().map(ServerProc::sys_cpu).sum();
    let w0: u64 = servers.iter().map(ServerProc::write_syscalls).sum();
    let t0 = Instant::now();
    let deadline = t0 + f.timeout;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| tokio::spawn(c.read_events(per_sub, deadline)))
        .collect();
    let answer = publish(addrs[0], &f.publish).await?;
    let publish_secs = t0.elapsed().as_secs_f64();
    let mut run = Run {
        subscribers: f.subscribers,
        channels,
        events: per_sub,
        expected: f.subscribers as u64 * per_sub,
        errors: answer.errors,
        publish_secs,
        ..Run::default()
    };
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut last = t0;
    for t in tasks {
        let r = t.await?;
        run.absorb(&r, &mut hist, usize::MAX);
        if let Some(at) = r.last_at {
            last = last.max(at);
        }
    }
    let cpu1: f64 = servers.iter().map(ServerProc::cpu).sum();
    let sys1: f64 = servers.iter().map(ServerProc::sys_cpu).sum();
    let w1: u64 = servers.iter().map(ServerProc::write_syscalls).sum();
    run.lost = run.expected.saturating_sub(run.delivered);
    run.secs = (last - t0).as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    {
        run.deliveries_per_s = run.delivered as f64 / run.secs.max(1e-9);
        run.cpu_s = cpu1 - cpu0;
        run.deliveries_per_cpu_s = run.delivered as f64 / run.cpu_s.max(0.01);
        run.sys_share = (sys1 - sys0) / run.cpu_s.max(0.01);
        run.writes_per_delivery = (w1 - w0) as f64 / run.delivered.max(1) as f64;
    }
    run.percentiles(&hist);
    run.peak_rss_kib = servers.iter().map(ServerProc::peak_rss_kib).sum();
    if let Some(conn) = slow {
        let st = stats(addrs[0]).await?;
        // Now read what the slow one was sent: a prefix of the events, then the end.
        let r = conn
            .read_events(per_sub, Instant::now() + Duration::from_secs(15))
            .await;
        let cut = r.ended && r.events < per_sub && r.gaps == 0;
        run.note = format!(
            "slow subscriber: got {} of {} events, stream ended: {}, server-side cut-offs: {} -> {}",
            r.events,
            per_sub,
            r.ended,
            st.slow_disconnects,
            if cut { "cut off" } else { "NOT cut off" }
        );
        // Being cut off depends on sizes (the smoke run is too small to overflow anything), so
        // it is a target, not an error; what the slow one did get must be a clean prefix.
        if r.duplicates > 0 || r.gaps > 0 || r.error.is_some() {
            run.errors += 1;
        }
    }
    Ok(run)
}

/// Memory per idle connection: RSS at `low` and at `high` connections on one channel.
pub async fn idle(server: &ServerProc, low: usize, high: usize) -> Result<Run, Error> {
    let addrs = [server.addr()];
    let paths = ["/sse/idle".to_owned()];
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = server.rss_kib();
    let mut conns = client::open_many(&addrs, &paths, low, 250).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_low = server.rss_kib();
    conns.extend(client::open_many(&addrs, &paths, high - low, 250).await?);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_high = server.rss_kib();
    let st = stats(server.addr()).await?;
    #[allow(clippy::cast_precision_loss)]
    let per_conn = (rss_high.saturating_sub(rss_low)) as f64 / (high - low) as f64;
    let errors = u64::from(st.sessions != high);
    drop(conns);
    Ok(Run {
        subscribers: high,
        channels: 1,
        peak_rss_kib: server.peak_rss_kib(),
        errors,
        note: format!(
            "RSS {rss0} KiB idle, {rss_low} KiB at {low}, {rss_high} KiB at {high}: {per_conn:.2} KiB per connection; server sessions {}",
            st.sessions
        ),
        kib_per_conn: per_conn,
        ..Run::default()
    })
}

/// Memory per idle channel: `n` idle connections each on its own channel (on `spread`) against
/// `n` on one channel (on `one`, a fresh server of the same kind and backend). The connections
/// cost the same on both, so the difference is what `n` channels cost.
pub async fn idle_channels(spread: &ServerProc, one: &ServerProc, n: usize) -> Result<Run, Error> {
    let mut rss = Vec::new();
    let mut sessions = Vec::new();
    for (server, paths) in [
        (
            spread,
            (0..n).map(|c| format!("/sse/ch{c}")).collect::<Vec<_>>(),
        ),
        (one, vec!["/sse/one".to_owned()]),
    ] {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = server.rss_kib();
        let conns = client::open_many(&[server.addr()], &paths, n, 250).await?;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        rss.push((before, server.rss_kib()));
        sessions.push(stats(server.addr()).await?.sessions);
        drop(conns);
    }
    let grown = |(before, after): (u64, u64)| after.saturating_sub(before);
    #[allow(clippy::cast_precision_loss)]
    let per_channel = (grown(rss[0]) as f64 - grown(rss[1]) as f64) / n as f64;
    Ok(Run {
        subscribers: n,
        channels: n,
        peak_rss_kib: spread.peak_rss_kib(),
        errors: u64::from(sessions.iter().any(|s| *s != n)),
        note: format!(
            "{n} connections on {n} channels: RSS {} -> {} KiB; on one channel: {} -> {} KiB; \
             {per_channel:.2} KiB per channel; sessions {sessions:?}",
            rss[0].0, rss[0].1, rss[1].0, rss[1].1
        ),
        kib_per_conn: per_channel,
        ..Run::default()
    })
}

/// Memory per idle HTTP/2 stream: `conns` h2c connections (prior knowledge), `low` and then
/// `high` streams on each, one channel. The slope between the two is the cost of a stream.
pub async fn idle_h2(
    server: &ServerProc,
    conns: usize,
    low: usize,
    high: usize,
) -> Result<Run, Error> {
    let url = format!("http://{}/sse/h2", server.addr());
    let clients: Vec<reqwest::Client> = (0..conns)
        .map(|_| {
            reqwest::Client::builder()
                .http2_prior_knowledge()
                .pool_max_idle_per_host(1)
                .build()
        })
        .collect::<Result<_, _>>()?;
    let open = |per: usize| {
        let clients = clients.clone();
        let url = url.clone();
        async move {
            let mut streams = Vec::with_capacity(clients.len() * per);
            for _ in 0..per {
                let wave = clients.iter().map(|c| {
                    let req = c.get(&url);
                    async move {
                        let mut res = req.send().await?;
                        if res.version() != reqwest::Version::HTTP_2 {
                            return Err(Error::from("not HTTP/2"));
                        }
                        // The retry hint: the session exists.
                        res.chunk().await?;
                        Ok::<_, Error>(res)
                    }
                });
                for r in futures_util::future::join_all(wave).await {
                    streams.push(r?);
                }
            }
            Ok::<_, Error>(streams)
        }
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rss0 = server.rss_kib();
    let mut streams = open(low).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_low = server.rss_kib();
    streams.extend(open(high - low).await?);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let rss_high = server.rss_kib();
    let st = stats(server.addr()).await?;
    let added = conns * (high - low);
    #[allow(clippy::cast_precision_loss)]
    let per_stream = rss_high.saturating_sub(rss_low) as f64 / added as f64;
    drop(streams);
    Ok(Run {
        subscribers: conns * high,
        channels: 1,
        peak_rss_kib: server.peak_rss_kib(),
        errors: u64::from(st.sessions != conns * high),
        note: format!(
            "{conns} HTTP/2 connections: RSS {rss0} KiB idle, {rss_low} KiB at {} streams, \
             {rss_high} KiB at {} streams: {per_stream:.2} KiB per stream; server sessions {}",
            conns * low,
            conns * high,
            st.sessions
        ),
        kib_per_conn: per_stream,
        ..Run::default()
    })
}

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

/// What the fleet scenario does.
#[derive(Clone, Debug)]
pub struct Fleet {
    /// Channels; each is subscribed twice, on two different servers when there are several.
    pub channels: usize,
    /// Rounds: each publishes one event to every channel, in a random order.
    pub rounds: u64,
    /// Give up waiting after this long (per phase).
    pub timeout: Duration,
}

/// Wait until `progress` reaches `target` or `deadline`; when it got there.
async fn reach(progress: &std::sync::atomic::AtomicU64, target: u64, deadline: Instant) -> Instant {
    while progress.load(std::sync::atomic::Ordering::Relaxed) < target && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Instant::now()
}

/// The fleet scenario: `servers` share one broker; every channel is subscribed by two
/// connections of the multiplexed endpoint (connection `c` carries channels `c` and
/// `c + channels/2`), spread round robin over the servers; every round publishes one event to
/// each channel (in a random order) through the first server. `objects` describes the
/// broker-side objects once every channel is live, before the first round. Then `restart` (when given) takes
/// the broker away and brings it back, and one more round is published (each event retried
/// until accepted): the recovery time is from the broker's return until every subscriber got
/// that round.
pub async fn fleet(
    servers: &[ServerProc],
    f: &Fleet,
    objects: impl AsyncFnOnce() -> String,
    restart: Option<impl AsyncFnOnce()>,
) -> Result<Run, Error> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let addrs: Vec<SocketAddr> = servers.iter().map(ServerProc::addr).collect();
    let n = f.channels.max(2);
    let paths: Vec<String> = (0..n)
        .map(|c| format!("/mux?channel=bench/{c}&channel=bench/{}", (c + n / 2) % n))
        .collect();
    let conns = client::open_many(&addrs, &paths, n, 250).await?;
    // Every channel is live now (each connection's head came after its subscriptions).
    let objects = objects().await;
    let recovery_rounds = u64::from(restart.is_some());
    let per_conn = 2 * (f.rounds + recovery_rounds);
    let progress = Arc::new(AtomicU64::new(0));
    let cpu0: f64 = servers.iter().map(ServerProc::cpu).sum();
    let t0 = Instant::now();
    let deadline = t0 + f.timeout * 3;
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|c| {
            let progress = progress.clone();
            tokio::spawn(async move { c.read_counting(per_conn, deadline, Some(&progress)).await })
        })
        .collect();
    let round = |count: u64, first: u64, retry: bool| PublishParams {
        channels: n,
        count,
        shuffle: true,
        first,
        retry,
        pad: 64,
        ..PublishParams::default()
    };
    let answer = publish(addrs[0], &round(f.rounds, 0, false)).await?;
    let publish_secs = t0.elapsed().as_secs_f64();
    let live = 2 * n as u64 * f.rounds;
    let t1 = reach(&progress, live, t0 + f.timeout).await;
    let delivered_live = progress.load(Ordering::Relaxed);
    let cpu1: f64 = servers.iter().map(ServerProc::cpu).sum();
    let rss: Vec<u64> = servers.iter().map(ServerProc::rss_kib).collect();
    let mut run = Run {
        subscribers: 2 * n,
        channels: n,
        events: f.rounds + recovery_rounds,
        expected: 2 * n as u64 * (f.rounds + recovery_rounds),
        errors: answer.errors,
        publish_secs,
        ..Run::default()
    };
    #[allow(clippy::cast_precision_loss)]
    {
        run.secs = (t1 - t0).as_secs_f64();
        run.deliveries_per_s = delivered_live as f64 / run.secs.max(1e-9);
        run.cpu_s = cpu1 - cpu0;
        run.deliveries_per_cpu_s = delivered_live as f64 / run.cpu_s.max(0.01);
    }
    let mut recovery = String::from("no restart");
    if let Some(restart) = restart {
        restart().await;
        let back = Instant::now();
        let answer = publish(addrs[0], &round(1, f.rounds, true)).await?;
        let published = back.elapsed().as_secs_f64();
        run.errors += answer.errors;
        let done = reach(&progress, run.expected, back + f.timeout).await;
        recovery = format!(
            "after the broker restart: the round published in {published:.2} s ({} refused), every subscriber had it {:.2} s after the broker was back",
            answer.errors,
            (done - back).as_secs_f64()
        );
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    let mut gaps = 0;
    // The live rounds' latencies only: the round after a restart measures recovery.
    let live = usize::try_from(2 * f.rounds).unwrap_or(usize::MAX);
    for t in tasks {
        let r = t.await?;
        run.absorb(&r, &mut hist, live);
        gaps += r.gaps;
    }
    run.lost = run.expected.saturating_sub(run.delivered);
    run.percentiles(&hist);
    run.peak_rss_kib = servers.iter().map(ServerProc::peak_rss_kib).sum();
    let per_node: Vec<String> = rss
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    run.note = format!(
        "RSS per node (MiB, after the live rounds): {}; broker objects: {objects}; {recovery}; gaps {gaps}",
        per_node.join(" / ")
    );
    Ok(run)
}
