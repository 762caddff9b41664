//! Drives Debian's headless Chromium through WebDriver (`fantoccini` talking to Debian's
//! `chromedriver`), to test pages as a person would see them.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> Result<(), String> {
//! let browser = ssehub_test_support::chromium::Browser::launch("http://127.0.0.1:3000/").await?;
//! let title = browser.eval("document.title").await?;
//! # let _ = title; Ok(()) }
//! ```

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::wd::Capabilities;
use serde_json::json;

use crate::{free_port, temp_dir, wait_for_port, which};

/// A headless Chromium showing one page, driven by its own `chromedriver`; both are killed
/// when dropped.
pub struct Browser {
    client: fantoccini::Client,
    driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

impl std::fmt::Debug for Browser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Browser").finish_non_exhaustive()
    }
}

/// Whether browser tests can run: `true` when Chromium and chromedriver are installed;
/// otherwise a skip message, or a panic under `SSEHUB_REQUIRE_BROWSER=1` (CI sets it).
#[must_use]
pub fn available() -> bool {
    available_with(&[])
}

/// [`available`], with more prerequisites of one test: each is what it is (named in the skip
/// message, e.g. "the React demo build (clients/typescript/demo/dist): npm run build:demo") and
/// whether it is there. A test whose prerequisites are missing skips with a message naming
/// every one, or panics under `SSEHUB_REQUIRE_BROWSER=1`: a browser test never passes silently
/// having tested nothing.
#[must_use]
pub fn available_with(prerequisites: &[(&str, bool)]) -> bool {
    let mut missing: Vec<String> = Vec::new();
    if binary().is_none() {
        missing.push("chromium (Debian: chromium)".into());
    }
    if driver().is_none() {
        missing.push("chromedriver (Debian: chromium-driver)".into());
    }
    missing.extend(
        prerequisites
            .iter()
            .filter(|(_, there)| !there)
            .map(|(what, _)| (*what).to_owned()),
    );
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join("; ");
    assert!(
        std::env::var("SSEHUB_REQUIRE_BROWSER").as_deref() != Ok("1"),
        "SSEHUB_REQUIRE_BROWSER=1 but this browser test lacks: {missing}"
    );
    eprintln!("skipped: this browser test lacks: {missing}");
    false
}

/// What browser tests lack (`"chromium"`, `"chromedriver"`), or `None` when both are there.
#[must_use]
pub fn missing() -> Option<&'static str> {
    if binary().is_none() {
        Some("chromium")
    } else if driver().is_none() {
        Some("chromedriver")
    } else {
        None
    }
}

/// The Chromium binary, if installed.
#[must_use]
pub fn binary() -> Option<PathBuf> {
    which("chromium").or_else(|| which("chromium-browser"))
}

/// The chromedriver binary (Debian: `chromium-driver`), if installed.
#[must_use]
pub fn driver() -> Option<PathBuf> {
    which("chromedriver")
}

impl Browser {
    /// Start Chromium headless through its own chromedriver and open `url`. A start that fails
    /// (chromedriver not answering on a loaded machine, its port taken meanwhile) is tried again
    /// with a new chromedriver on a new port, up to three times in all.
    pub async fn launch(url: &str) -> Result<Self, String> {
        let mut last = String::new();
        for attempt in 1..=3 {
            match Self::launch_once(url).await {
                Ok(browser) => return Ok(browser),
                Err(e) => {
                    eprintln!("chromium start {attempt} of 3 failed: {e}");
                    last = e;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
        Err(last)
    }

    async fn launch_once(url: &str) -> Result<Self, String> {
        let bin = binary().ok_or("chromium is not installed")?;
        let driver_bin = driver().ok_or("chromedriver is not installed")?;
        let profile = temp_dir("chromium").map_err(|e| e.to_string())?;
        let port = free_port();
        // Its own process group: dropping the browser kills chromedriver and Chromium together.
        let driver = tokio::process::Command::new(driver_bin)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start chromedriver: {e}"))?;
        if !wait_for_port(port, Duration::from_secs(30)).await {
            return Err("chromedriver did not listen".into());
        }
        let mut caps = Capabilities::new();
        caps.insert("pageLoadStrategy".into(), json!("eager"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": bin,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-dev-shm-usage",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            fantoccini::ClientBuilder::new(connector)
                .capabilities(caps)
                .connect(&format!("http://127.0.0.1:{port}")),
        )
        .await
        .map_err(|_| "no WebDriver session in time")?
        .map_err(|e| format!("WebDriver session: {e}"))?;
        let browser = Browser {
            client,
            driver,
            _profile: profile,
        };
        tokio::time::timeout(Duration::from_secs(30), browser.client.goto(url))
            .await
            .map_err(|_| format!("{url} did not load in time"))?
            .map_err(|e| format!("cannot open {url}: {e}"))?;
        Ok(browser)
    }

    /// Evaluate a JavaScript expression in the page and return its value (a promise is awaited).
    pub async fn eval(&self, expression: &str) -> Result<serde_json::Value, String> {
        let script = format!("return (\n{expression}\n);");
        tokio::time::timeout(
            Duration::from_secs(20),
            self.client.execute(&script, Vec::new()),
        )
        .await
        .map_err(|_| "the browser did not answer")?
        .map_err(|e| format!("page exception: {e}"))
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

/// A command to chromedriver's `goog/cdp/execute`: a Chrome DevTools Protocol command run in
/// the current tab.
#[derive(Debug)]
struct Cdp(serde_json::Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &reqwest::Url,
        session_id: Option<&str>,
    ) -> Result<reqwest::Url, <reqwest::Url as std::str::FromStr>::Err> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &reqwest::Url) -> (reqwest::Method, Option<String>) {
        (reqwest::Method::POST, Some(self.0.to_string()))
    }
}

/// Several tabs of one browser (one profile: they share its Web Locks, `BroadcastChannel`s and
/// its six HTTP/1.1 connections per origin). WebDriver drives one tab at a time, the current
/// one: [`Browser::eval`] and [`Browser::wait_for`] run there.
impl Browser {
    /// The current tab's handle.
    pub async fn tab(&self) -> Result<String, String> {
        let handle = self
            .client
            .window()
            .await
            .map_err(|e| format!("window handle: {e}"))?;
        Ok(handle.into())
    }

    /// Every open tab's handle.
    pub async fn tabs(&self) -> Result<Vec<String>, String> {
        let handles = self
            .client
            .windows()
            .await
            .map_err(|e| format!("window handles: {e}"))?;
        Ok(handles.into_iter().map(String::from).collect())
    }

    /// Open `url` in a new tab, which becomes the current one; its handle.
    pub async fn new_tab(&self, url: &str) -> Result<String, String> {
        let tab = self
            .client
            .new_window(true)
            .await
            .map_err(|e| format!("new tab: {e}"))?;
        let handle: String = tab.handle.into();
        self.switch_to(&handle).await?;
        tokio::time::timeout(Duration::from_secs(30), self.client.goto(url))
            .await
            .map_err(|_| format!("{url} did not load in time"))?
            .map_err(|e| format!("cannot open {url}: {e}"))?;
        Ok(handle)
    }

    /// Make the tab `handle` the current one.
    pub async fn switch_to(&self, handle: &str) -> Result<(), String> {
        let handle = fantoccini::wd::WindowHandle::try_from(handle.to_owned())
            .map_err(|e| format!("window handle {handle}: {e}"))?;
        self.client
            .switch_to_window(handle)
            .await
            .map_err(|e| format!("switch to a tab: {e}"))
    }

    /// Close the current tab (as a person would: the page gets `pagehide`, its locks are
    /// released). Switch to another one before driving the browser again.
    pub async fn close_tab(&self) -> Result<(), String> {
        self.client
            .close_window()
            .await
            .map_err(|e| format!("close a tab: {e}"))
    }

    /// Run a Chrome DevTools Protocol command in the current tab (e.g.
    /// `Network.emulateNetworkConditions`) and return its result.
    pub async fn cdp(
        &self,
        command: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        tokio::time::timeout(
            Duration::from_secs(20),
            self.client
                .issue_cmd(Cdp(json!({ "cmd": command, "params": params }))),
        )
        .await
        .map_err(|_| "the browser did not answer")?
        .map_err(|e| format!("{command}: {e}"))
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver's process group holds Chromium and its helpers: kill them all.
        if let Some(pid) = self.driver.id() {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.driver.start_kill();
    }
}
