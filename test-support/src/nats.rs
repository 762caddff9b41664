//! A NATS server for tests: `SSEHUB_NATS_URL`, else an own `nats-server -js` on a free port.
//!
//! # Example
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! if let Some(url) = ssehub_test_support::nats::nats_url().await {
//!     println!("testing against {url}");
//! }
//! # }
//! ```

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::{TempDir, free_port, skip, wait_for_port, which};

/// Options for [`NatsServer::start`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Enable JetStream (`-js`, file storage in the server's temp dir). Default: true.
    pub jetstream: bool,
    /// Extra server configuration (nats-server config syntax, such as `write_deadline: "1s"`),
    /// written to a file passed with `-c`. Default: none.
    pub config: Option<String>,
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            jetstream: true,
            config: None,
        }
    }
}

impl NatsOptions {
    /// These options with extra server configuration (see [`NatsOptions::config`]).
    #[must_use]
    pub fn with_config(mut self, config: impl Into<String>) -> Self {
        self.config = Some(config.into());
        self
    }
}

/// An own `nats-server` process on a free loopback port, with its store in a temp dir. It can be
/// killed and restarted on the same port and store (fault tests); it is killed when dropped.
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    options: NatsOptions,
    dir: TempDir,
    child: crate::BrokerProcess,
}

impl NatsServer {
    /// Start a server; `None` (after [`skip`]) when the binary is missing or it does not start.
    pub async fn start(options: NatsOptions) -> Option<NatsServer> {
        let Some(binary) = which("nats-server") else {
            skip("nats-server is not installed and SSEHUB_NATS_URL is not set");
            return None;
        };
        let dir = match TempDir::new("nats") {
            Ok(d) => d,
            Err(e) => {
                skip(&format!("no temp dir for nats-server: {e}"));
                return None;
            }
        };
        let mut server = NatsServer {
            binary,
            port: free_port(),
            options,
            dir,
            child: crate::BrokerProcess::default(),
        };
        if let Err(why) = server.restart().await {
            skip(&why);
            return None;
        }
        Some(server)
    }

    /// The client URL.
    #[must_use]
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the server wrote to its log file so far (empty when it cannot be read).
    #[must_use]
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }

    /// Freeze the process (SIGSTOP): its connections stay open but nothing answers.
    pub fn freeze(&self) -> bool {
        self.child.freeze()
    }

    /// Let a frozen process run again (SIGCONT).
    pub fn thaw(&self) -> bool {
        self.child.thaw()
    }

    /// Kill the process (SIGKILL) and wait for it to exit.
    pub fn kill(&mut self) {
        self.child.kill();
    }

    /// (Re)start the process on the same port and store dir; waits until it accepts connections.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill();
        let mut cmd = Command::new(&self.binary);
        cmd.arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string());
        if self.options.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.dir.path());
        }
        if let Some(config) = &self.options.config {
            let file = self.dir.path().join("nats.conf");
            std::fs::write(&file, config).map_err(|e| format!("cannot write {file:?}: {e}"))?;
            cmd.arg("-c").arg(file);
        }
        cmd.arg("-l").arg(self.dir.path().join("nats.log"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start nats-server: {e}"))?;
        self.child.set(child);
        if !wait_for_port(self.port, Duration::from_secs(20)).await {
            self.kill();
            return Err(format!("nats-server did not listen on port {}", self.port));
        }
        // JetStream needs a moment after the port opens; give it a bounded wait.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The NATS URL for ordinary tests: `SSEHUB_NATS_URL`, else one own `nats-server -js` shared by
/// the whole test process, else `None` after [`skip`]. Never a server a test may kill.
pub async fn nats_url() -> Option<String> {
    if let Ok(url) = std::env::var("SSEHUB_NATS_URL")
        && !url.is_empty()
    {
        return Some(url);
    }
    static SHARED: OnceLock<Result<(u16, PathBuf), String>> = OnceLock::new();
    let shared = SHARED.get_or_init(start_shared);
    match shared {
        Ok((port, _)) => {
            if !wait_for_port(*port, Duration::from_secs(20)).await {
                skip("the shared test nats-server does not answer");
                return None;
            }
            Some(format!("nats://127.0.0.1:{port}"))
        }
        Err(why) => {
            skip(why);
            None
        }
    }
}

/// Start the process-wide server, supervised by a small shell that kills it (and removes its
/// store) as soon as the test process exits, so no server outlives the tests.
fn start_shared() -> Result<(u16, PathBuf), String> {
    let binary = which("nats-server")
        .ok_or("nats-server is not installed and SSEHUB_NATS_URL is not set")?;
    let dir = std::env::temp_dir().join(format!("ssehub-nats-shared-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("no temp dir for nats-server: {e}"))?;
    let port = free_port();
    let script = r#"
        "$1" -js -a 127.0.0.1 -p "$2" -sd "$3" >/dev/null 2>&1 &
        server=$!
        tail --pid="$4" -f /dev/null 2>/dev/null || while kill -0 "$4" 2>/dev/null; do sleep 1; done
        kill -9 "$server" 2>/dev/null
        wait "$server" 2>/dev/null
        rm -rf "$3"
    "#;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("ssehub-nats-supervisor")
        .arg(&binary)
        .arg(port.to_string())
        .arg(&dir)
        .arg(std::process::id().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start nats-server: {e}"))?;
    Ok((port, dir))
}
