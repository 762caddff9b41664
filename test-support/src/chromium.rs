//! Drives Debian's headless Chromium through the DevTools protocol, to test pages as a person
//! would see them.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! let browser = ssehub_test_support::chromium::Browser::launch("http://127.0.0.1:3000/").await?;
//! let title = browser.eval("document.title").await?;
//! # let _ = title; Ok(()) }
//! ```

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::Message;

use crate::{TempDir, free_port, which};

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium showing one page; killed when dropped.
pub struct Browser {
    child: tokio::process::Child,
    ws: Mutex<Ws>,
    next_id: AtomicU64,
    _profile: TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

/// Whether browser tests can run: `true` when Chromium is installed; otherwise a skip message,
/// or a panic under `SSEHUB_REQUIRE_BROWSER=1` (CI sets it).
#[must_use]
pub fn available() -> bool {
    if binary().is_some() {
        return true;
    }
    assert!(
        std::env::var("SSEHUB_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "SSEHUB_REQUIRE_BROWSER=1 but chromium is not installed"
    );
    eprintln!("skipped: chromium is not installed");
    false
}

/// The Chromium binary, if installed.
#[must_use]
pub fn binary() -> Option<std::path::PathBuf> {
    which("chromium").or_else(|| which("chromium-browser"))
}

async fn http_get(port: u16, path: &str) -> Result<String, String> {
    let fetch = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        let req =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        // Read the head, then exactly Content-Length bytes (DevTools may keep the socket open).
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = s.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&raw);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                });
                if len.is_some_and(|len| body.len() >= len) {
                    break;
                }
            }
        }
        let text = String::from_utf8_lossy(&raw).into_owned();
        Ok::<_, String>(
            text.split_once("\r\n\r\n")
                .map(|(_, b)| b.to_owned())
                .unwrap_or_default(),
        )
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| "devtools http timed out".to_owned())?
}

impl Browser {
    /// Start Chromium headless on `url` and attach to the page.
    pub async fn launch(url: &str) -> Result<Self, String> {
        let bin = binary().ok_or("chromium is not installed")?;
        let profile = TempDir::new("chromium").map_err(|e| e.to_string())?;
        let port = free_port();
        let child = tokio::process::Command::new(bin)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-allow-origins=*",
            ])
            .arg(format!("--remote-debugging-port={port}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start chromium: {e}"))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let ws_url = loop {
            if tokio::time::Instant::now() > deadline {
                return Err("chromium's DevTools endpoint did not come up".into());
            }
            if let Ok(body) = http_get(port, "/json/list").await
                && let Ok(serde_json::Value::Array(targets)) = serde_json::from_str(&body)
                && let Some(ws) = targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            {
                break ws.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let mut attempt = 0;
        let ws = loop {
            match tokio_tungstenite::connect_async(ws_url.as_str()).await {
                Ok((ws, _)) => break ws,
                Err(e) if attempt >= 50 => return Err(format!("devtools websocket {ws_url}: {e}")),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Ok(Browser {
            child,
            ws: Mutex::new(ws),
            next_id: AtomicU64::new(1),
            _profile: profile,
        })
    }

    /// Evaluate a JavaScript expression in the page and return its value.
    pub async fn eval(&self, expression: &str) -> Result<serde_json::Value, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = serde_json::json!({
            "id": id,
            "method": "Runtime.evaluate",
            "params": { "expression": expression, "returnByValue": true, "awaitPromise": true },
        });
        let mut ws = self.ws.lock().await;
        ws.send(Message::Text(msg.to_string().into()))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
                .await
                .map_err(|_| "devtools did not answer")?
                .ok_or("devtools closed")?
                .map_err(|e| e.to_string())?;
            if let Message::Text(t) = m {
                let v: serde_json::Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                if v["id"] == id {
                    if let Some(ex) = v["result"].get("exceptionDetails") {
                        return Err(format!("page exception: {ex}"));
                    }
                    return Ok(v["result"]["result"]["value"].clone());
                }
            }
        }
    }

    /// Poll `expression` until it equals `expected` (at most `limit`); the last value otherwise.
    pub async fn wait_for(
        &self,
        expression: &str,
        expected: &serde_json::Value,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let v = self.eval(expression).await?;
            if &v == expected {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("{expression} is {v}, expected {expected}"));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
