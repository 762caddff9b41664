//! Memory measurements with idle subscribers: per connection, per channel and per HTTP/2
//! stream.

use std::time::Duration;

use super::process::stats;
use super::{Error, Run, ServerProc};
use crate::client;

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
