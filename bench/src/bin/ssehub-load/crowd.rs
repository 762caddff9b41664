//! Scenario 13: 100,000 connections on one machine, all on one channel: (a) ssehub with its
//! lean HTTP/1 driver on the memory backend, (b) the baseline, (c) ssehub lean on Redis, (d)
//! ssehub on hyper (lean off) on the memory backend; each in a fresh server.

use std::path::PathBuf;
use std::time::Duration;

use ssehub_bench::driver::{self, Run, ServerProc};
use ssehub_bench::server::{Kind, now_ns};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Error;
use crate::sizes::Sizes;

/// The label of run (a).
pub(crate) const LEAN: &str = "(a) lean, memory";
/// The label of run (b).
pub(crate) const BASELINE: &str = "(b) memory";
/// The label of run (c).
pub(crate) const LEAN_REDIS: &str = "(c) lean, redis";
/// The label of run (d).
pub(crate) const HYPER: &str = "(d) hyper, memory";

/// The shared local Redis.
const LOCAL_REDIS: &str = "redis://127.0.0.1:6379";

/// Whether a Redis answers `PING` at 127.0.0.1:6379 within a second.
async fn local_redis_answers() -> bool {
    let ping = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", 6379)).await?;
        s.write_all(b"PING\r\n").await?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).await?;
        Ok::<_, std::io::Error>(&buf == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Ok(true))
    )
}

/// The size of scenario 13: `z`'s, with `SSEHUB_CROWD_CONNECTIONS` connections when set; and
/// the server processes that hold them: `SSEHUB_CROWD_PROCESSES` when set, else as many as
/// this process's descriptor limit (raised already; the servers inherit it) needs.
fn crowd(z: &Sizes) -> Result<(driver::Crowd, usize), Error> {
    let mut c = z.crowd.clone();
    if let Ok(v) = std::env::var("SSEHUB_CROWD_CONNECTIONS") {
        c.connections = v
            .parse()
            .map_err(|e| format!("SSEHUB_CROWD_CONNECTIONS={v:?}: {e}"))?;
    }
    let processes = match std::env::var("SSEHUB_CROWD_PROCESSES") {
        Ok(v) => v
            .parse::<usize>()
            .map_err(|e| format!("SSEHUB_CROWD_PROCESSES={v:?}: {e}"))?
            .max(1),
        Err(_) => driver::processes_needed(c.connections, ssehub_bench::fd_limits().0),
    };
    Ok((c, processes))
}

/// Whether the descriptor limits hold scenario 13's connections over its processes: checked
/// before any scenario runs, so that a limit too low fails at once.
pub(crate) fn check_fd_limit(z: &Sizes) -> Result<(), Error> {
    let (c, processes) = crowd(z)?;
    driver::check_fd_limits(c.connections, processes, &[]).map(|_| ())
}

/// Scenario 13: the runs named by `SSEHUB_CROWD_RUNS` (`a,b,c,d`, the default: all), each on
/// fresh servers, `SSEHUB_CROWD_CONNECTIONS` connections (default: the size's), held by
/// `SSEHUB_CROWD_PROCESSES` server processes (default: as many as the descriptor limit needs).
pub(crate) async fn scenario13(exe: &PathBuf, z: &Sizes) -> Result<Vec<Run>, Error> {
    let (c, processes) = crowd(z)?;
    let which = std::env::var("SSEHUB_CROWD_RUNS").unwrap_or_else(|_| "a,b,c,d".into());
    let which: Vec<&str> = which.split(',').map(str::trim).collect();
    if let Some(w) = which.iter().find(|w| !["a", "b", "c", "d"].contains(w)) {
        return Err(format!("SSEHUB_CROWD_RUNS: no run {w:?} (a, b, c, d)").into());
    }
    let nofile = ssehub_bench::raise_fd_limit();
    eprintln!(
        "  {} connections, {} rounds, {processes} server process(es) and as many client \
         processes; fd limit {nofile} (each needs {})",
        c.connections,
        c.rounds,
        driver::fds_needed(c.connections.div_ceil(processes))
    );
    // Redis: `SSEHUB_REDIS_URL`, else the shared local one, else one of our own.
    let mut own_redis = None;
    let redis_url = if !which.contains(&"c") {
        String::new()
    } else if let Ok(url) = std::env::var(ssehub_test_support::redis::ENV_URL) {
        url
    } else if local_redis_answers().await {
        LOCAL_REDIS.to_owned()
    } else {
        use ssehub_test_support::server::BrokerServer as _;
        let r = ssehub_test_support::redis::RedisServer::start(
            ssehub_test_support::redis::RedisOptions::new(),
        )
        .await?;
        let url = r.url();
        own_redis = Some(r);
        url
    };
    let mut runs = Vec::new();
    for (key, label, kind, backend, lean) in [
        ("a", LEAN, Kind::Ssehub, "memory", "1"),
        ("b", BASELINE, Kind::Baseline, "memory", "0"),
        ("c", LEAN_REDIS, Kind::Ssehub, redis_url.as_str(), "1"),
        ("d", HYPER, Kind::Ssehub, "memory", "0"),
    ] {
        if !which.contains(&key) {
            continue;
        }
        let mut servers = Vec::with_capacity(processes);
        for _ in 0..processes {
            servers.push(
                ServerProc::start_with_env(
                    exe,
                    kind,
                    backend,
                    false,
                    &[("SSEHUB_BENCH_LEAN", lean)],
                )
                .await?,
            );
        }
        // A channel of its own: nothing from an earlier run in a shared Redis.
        let channel = format!("crowd{key}{}", now_ns() / 1_000_000);
        let shared = backend != "memory";
        let mut run = driver::crowd(exe, &servers, shared, &c, &channel).await?;
        drop(servers);
        run.scenario = 13;
        run.server = kind.as_str().into();
        run.label = label.into();
        if backend.starts_with("redis") {
            let whose = if own_redis.is_some() {
                "a redis-server of its own"
            } else if backend == LOCAL_REDIS {
                "the shared local Redis"
            } else {
                "$SSEHUB_REDIS_URL"
            };
            run.note = format!("backend {backend} ({whose}); {}", run.note);
        }
        eprintln!(
            "  done: {} {}: {:.2} KiB per connection, {:.0} deliveries/CPU-s, p50 {} us, p99 {} us, max {} us",
            run.server,
            run.label,
            run.kib_per_conn,
            run.deliveries_per_cpu_s,
            run.p50_us,
            run.p99_us,
            run.max_us
        );
        runs.push(run);
        // The closed connections' sockets leave the kernel before the next server starts.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(own_redis);
    Ok(runs)
}
