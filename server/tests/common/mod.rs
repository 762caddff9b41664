//! Runs the built `ssehub` binary for the end-to-end tests: start it on a free port, read its
//! address from its `ssehub listening on http://…` line, sign tokens, publish over HTTP.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The publish key and JWT secret of every hub the tests start (unless they say otherwise).
pub const KEY: &str = "test-publish-key";
pub const SECRET: &str = "test-jwt-secret";

/// A running hub; killed when dropped.
pub struct Hub {
    pub addr: SocketAddr,
    child: Child,
    pub log: Arc<Mutex<String>>,
}

impl Hub {
    /// `ssehub --addr 127.0.0.1:0 ARGS…`, once it listens.
    pub async fn start(args: &[&str]) -> Hub {
        Self::try_start(args).await.unwrap()
    }

    /// A hub with the test key and secret on `backend`.
    pub async fn with_backend(backend: &str) -> Hub {
        Hub::start(&[
            "--backend",
            backend,
            "--publish-key",
            KEY,
            "--jwt-secret",
            SECRET,
        ])
        .await
    }

    pub async fn try_start(args: &[&str]) -> Result<Hub, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ssehub"))
            .arg("--addr")
            .arg("127.0.0.1:0")
            .args(args)
            .env("RUST_LOG", "warn")
            .env_remove("SSEHUB_ADDR")
            .env_remove("SSEHUB_BACKEND")
            .env_remove("SSEHUB_PUBLISH_KEY")
            .env_remove("SSEHUB_JWT_SECRET")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| e.to_string())?;
        let stderr = child.stderr.take().unwrap();
        let mut lines = BufReader::new(stderr).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let addr = loop {
            let line = tokio::time::timeout_at(deadline, lines.next_line())
                .await
                .map_err(|_| format!("no address in time: {}", log.lock().unwrap()))?
                .map_err(|e| e.to_string())?;
            let Some(line) = line else {
                return Err(format!("the hub exited: {}", log.lock().unwrap()));
            };
            log.lock().unwrap().push_str(&line);
            log.lock().unwrap().push('\n');
            if let Some(a) = line.strip_prefix("ssehub listening on http://") {
                break a.trim().parse::<SocketAddr>().unwrap();
            }
        };
        // Keep reading, so the hub never blocks on a full pipe.
        let keep = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut l = keep.lock().unwrap();
                if l.len() < 1 << 20 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        Ok(Hub { addr, child, log })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Publish `data` to `channel` with the test key; the id.
    pub async fn publish(&self, channel: &str, data: Value) -> String {
        let res = client()
            .post(self.url(&format!("/v1/publish/{channel}")))
            .bearer_auth(KEY)
            .json(&json!({ "data": data }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// `GET /v1/presence/{channel}` with the test key.
    pub async fn presence(&self, channel: &str) -> Value {
        self.get_json(&format!("/v1/presence/{channel}")).await
    }

    /// `GET path` with the test key; the JSON answer.
    pub async fn get_json(&self, path: &str) -> Value {
        client()
            .get(self.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Send SIGTERM (graceful shutdown) and wait for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap()
            .unwrap()
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A channel name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}/t{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An HS256 token signed with `secret` carrying `claims`.
pub fn token_with(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// A subscribe token for `sub`, allowing `patterns`, valid for an hour.
pub fn token(sub: &str, patterns: &[&str]) -> String {
    token_with(
        SECRET,
        &json!({ "sub": sub, "exp": now() + 3600, "ssehub.subscribe": patterns }),
    )
}

/// `/v1/sse?channel=…&channel=…`
pub fn sse_path(channels: &[&str], extra: &str) -> String {
    let mut path = String::from("/v1/sse?");
    for (i, c) in channels.iter().enumerate() {
        if i > 0 {
            path.push('&');
        }
        path.push_str("channel=");
        path.push_str(c);
    }
    path.push_str(extra);
    path
}

/// Wait until `f` holds (at most 15 s).
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not reached"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
