//! The command line, its environment variables and the `--config` TOML file: every setting has
//! all three forms, and a flag or variable wins over the file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use serde::Deserialize;

/// The default listening address (loopback: development mode is allowed there).
pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:8080";
/// The default largest `data` of one event: 1 MiB.
pub(crate) const DEFAULT_MAX_DATA_BYTES: usize = 1024 * 1024;
/// The default largest request body: 16 MiB (a batch of events).
pub(crate) const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The default most channels on one stream.
pub(crate) const DEFAULT_MAX_CHANNELS: usize = 32;
/// The default most open streams on one hub.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// ssehub: a Server-Sent Events hub with an HTTP publish API.
#[derive(Debug, Parser)]
#[command(name = "ssehub", version, about, args_override_self = true)]
pub(crate) struct Cli {
    /// Listen on HOST:PORT [default: 127.0.0.1:8080]
    #[arg(long, env = "SSEHUB_ADDR", value_name = "HOST:PORT")]
    addr: Option<String>,
    /// memory, redis://…, rediss://…, redis+cluster://host:port,… or nats://… [default: memory]
    #[arg(long, env = "SSEHUB_BACKEND", value_name = "URL")]
    backend: Option<String>,
    /// A key that may publish to any channel (`Authorization: Bearer KEY`); repeatable, comma-separated in the variable
    #[arg(
        long = "publish-key",
        env = "SSEHUB_PUBLISH_KEY",
        value_name = "KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    publish_key: Vec<String>,
    /// The HS256 secret of the JWTs
    #[arg(
        long,
        env = "SSEHUB_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    jwt_secret: Option<String>,
    /// A PEM public key verifying RS256, ES256 or EdDSA JWTs
    #[arg(long, env = "SSEHUB_JWT_PUBLIC_KEY", value_name = "PATH")]
    jwt_public_key: Option<PathBuf>,
    /// Seconds of clock skew allowed on a JWT's `exp` [default: 0]
    #[arg(long, env = "SSEHUB_JWT_LEEWAY", value_name = "SECS")]
    jwt_leeway: Option<u64>,
    #[arg(
        long = "cors-origin",
        env = "SSEHUB_CORS_ORIGIN",
        value_name = "ORIGIN",
        value_delimiter = ',',
        help = "An origin allowed by CORS (e.g. https://app.example.com, or * for any); repeatable"
    )]
    cors_origin: Vec<String>,
    /// The largest `data` of one event, in bytes [default: 1048576]
    #[arg(long, env = "SSEHUB_MAX_DATA_BYTES", value_name = "BYTES")]
    max_data_bytes: Option<usize>,
    /// The largest request body, in bytes [default: 16777216]
    #[arg(long, env = "SSEHUB_MAX_BODY_BYTES", value_name = "BYTES")]
    max_body_bytes: Option<usize>,
    /// The most channels on one stream [default: 32]
    #[arg(long, env = "SSEHUB_MAX_CHANNELS_PER_CONNECTION", value_name = "N")]
    max_channels_per_connection: Option<usize>,
    /// The most open streams on this hub [default: 10000]
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS", value_name = "N")]
    max_connections: Option<usize>,
    /// Seconds a client has to send a whole request head (and the next one on an idle
    /// keep-alive connection) [default: 10]
    #[arg(long, env = "SSEHUB_HEADER_TIMEOUT", value_name = "SECS")]
    header_timeout: Option<u64>,
    /// The most connections open at once from one client address [default: no limit]
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS_PER_IP", value_name = "N")]
    max_connections_per_ip: Option<usize>,
    /// Serve event streams with the lean HTTP/1 driver (no read buffer, a write buffer only
    /// while writing); false serves every request with hyper [default: true]
    #[arg(long, env = "SSEHUB_LEAN_STREAMS", value_name = "BOOL")]
    lean_streams: Option<bool>,
    /// Log format: text or json [default: text]
    #[arg(long, env = "SSEHUB_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<String>,
    /// A TOML file with the same keys (`addr`, `backend`, `publish-key`, …); flags and variables win
    #[arg(long, env = "SSEHUB_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

/// The `--config` file: the flags' names as keys (`publish-key` or `publish_key`), a list or a
/// single string for the repeatable ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct File {
    addr: Option<String>,
    backend: Option<String>,
    #[serde(default, alias = "publish_key", alias = "publish-keys")]
    publish_key: OneOrMany,
    #[serde(alias = "jwt_secret")]
    jwt_secret: Option<String>,
    #[serde(alias = "jwt_public_key")]
    jwt_public_key: Option<PathBuf>,
    #[serde(alias = "jwt_leeway")]
    jwt_leeway: Option<u64>,
    #[serde(default, alias = "cors_origin", alias = "cors-origins")]
    cors_origin: OneOrMany,
    #[serde(alias = "max_data_bytes")]
    max_data_bytes: Option<usize>,
    #[serde(alias = "max_body_bytes")]
    max_body_bytes: Option<usize>,
    #[serde(alias = "max_channels_per_connection")]
    max_channels_per_connection: Option<usize>,
    #[serde(alias = "max_connections")]
    max_connections: Option<usize>,
    #[serde(alias = "header_timeout")]
    header_timeout: Option<u64>,
    #[serde(alias = "max_connections_per_ip")]
    max_connections_per_ip: Option<usize>,
    #[serde(alias = "lean_streams")]
    lean_streams: Option<bool>,
    #[serde(alias = "log_format")]
    log_format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => s.split(',').map(str::to_owned).collect(),
            OneOrMany::Many(v) => v,
        }
    }
}

/// The settings in force.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) addr: String,
    pub(crate) backend: String,
    pub(crate) publish_keys: Vec<String>,
    pub(crate) jwt_secret: Option<String>,
    pub(crate) jwt_public_key: Option<PathBuf>,
    pub(crate) jwt_leeway: u64,
    pub(crate) cors_origins: Vec<String>,
    pub(crate) max_data_bytes: usize,
    pub(crate) max_body_bytes: usize,
    pub(crate) max_channels: usize,
    pub(crate) max_connections: usize,
    pub(crate) header_timeout: std::time::Duration,
    pub(crate) max_connections_per_ip: Option<usize>,
    pub(crate) lean_streams: bool,
    pub(crate) json_logs: bool,
}

impl Config {
    /// The settings from the command line, the environment and the `--config` file.
    pub(crate) fn load() -> Result<Config, String> {
        Self::from_cli(Cli::parse())
    }

    fn from_cli(cli: Cli) -> Result<Config, String> {
        let file = match &cli.config {
            None => File::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--config {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))?
            }
        };
        let nonempty = |v: Vec<String>| -> Vec<String> {
            v.into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let publish_keys = if cli.publish_key.is_empty() {
            nonempty(file.publish_key.into_vec())
        } else {
            nonempty(cli.publish_key)
        };
        let cors_origins = if cli.cors_origin.is_empty() {
            nonempty(file.cors_origin.into_vec())
        } else {
            nonempty(cli.cors_origin)
        };
        let log_format = cli.log_format.or(file.log_format);
        let json_logs = match log_format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => return Err(format!("--log-format {other}: text or json")),
        };
        let positive = |name: &str, v: Option<usize>, default: usize| match v {
            Some(0) => Err(format!("--{name} must be at least 1")),
            Some(n) => Ok(n),
            None => Ok(default),
        };
        Ok(Config {
            addr: cli
                .addr
                .or(file.addr)
                .unwrap_or_else(|| DEFAULT_ADDR.to_owned()),
            backend: cli
                .backend
                .or(file.backend)
                .unwrap_or_else(|| "memory".to_owned()),
            publish_keys,
            jwt_secret: cli.jwt_secret.or(file.jwt_secret).filter(|s| !s.is_empty()),
            jwt_public_key: cli.jwt_public_key.or(file.jwt_public_key),
            jwt_leeway: cli.jwt_leeway.or(file.jwt_leeway).unwrap_or(0),
            cors_origins,
            max_data_bytes: positive(
                "max-data-bytes",
                cli.max_data_bytes.or(file.max_data_bytes),
                DEFAULT_MAX_DATA_BYTES,
            )?,
            max_body_bytes: positive(
                "max-body-bytes",
                cli.max_body_bytes.or(file.max_body_bytes),
                DEFAULT_MAX_BODY_BYTES,
            )?,
            max_channels: positive(
                "max-channels-per-connection",
                cli.max_channels_per_connection
                    .or(file.max_channels_per_connection),
                DEFAULT_MAX_CHANNELS,
            )?,
            max_connections: positive(
                "max-connections",
                cli.max_connections.or(file.max_connections),
                DEFAULT_MAX_CONNECTIONS,
            )?,
            header_timeout: std::time::Duration::from_secs(positive(
                "header-timeout",
                cli.header_timeout
                    .or(file.header_timeout)
                    .and_then(|s| usize::try_from(s).ok()),
                10,
            )? as u64),
            max_connections_per_ip: match cli.max_connections_per_ip.or(file.max_connections_per_ip)
            {
                Some(n) => Some(positive("max-connections-per-ip", Some(n), n)?),
                None => None,
            },
            lean_streams: cli.lean_streams.or(file.lean_streams).unwrap_or(true),
            json_logs,
        })
    }

    /// Development mode: no publish key and no JWT key, so anyone may publish and subscribe.
    pub(crate) fn development(&self) -> bool {
        self.publish_keys.is_empty() && self.jwt_secret.is_none() && self.jwt_public_key.is_none()
    }

    /// The addresses to listen on, refusing development mode anywhere but on loopback.
    pub(crate) async fn listen_addrs(&self) -> Result<Vec<SocketAddr>, String> {
        let addrs: Vec<SocketAddr> = match self.addr.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) => tokio::net::lookup_host(&self.addr)
                .await
                .map_err(|e| format!("--addr {}: {e}", self.addr))?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(format!("--addr {}: no address", self.addr));
        }
        if self.development() && !addrs.iter().all(|a| a.ip().is_loopback()) {
            return Err(format!(
                "refusing to start on {} without credentials: set --publish-key (SSEHUB_PUBLISH_KEY) \
                 and --jwt-secret (SSEHUB_JWT_SECRET) or --jwt-public-key (SSEHUB_JWT_PUBLIC_KEY); \
                 development mode (no credentials) listens on a loopback address only",
                self.addr
            ));
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::from_cli(Cli::try_parse_from(args).unwrap()).unwrap()
    }

    #[test]
    fn defaults_and_repeatable_flags() {
        let c = parse(&["ssehub"]);
        assert_eq!(c.addr, DEFAULT_ADDR);
        assert_eq!(c.backend, "memory");
        assert!(c.development());
        assert_eq!(c.max_channels, 32);
        let c = parse(&["ssehub", "--publish-key", "a,b", "--publish-key", "c"]);
        assert_eq!(c.publish_keys, ["a", "b", "c"]);
        assert!(!c.development());
    }

    #[test]
    fn the_file_has_the_same_keys_and_flags_win() {
        let dir = std::env::temp_dir().join(format!("ssehub-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hub.toml");
        std::fs::write(
            &path,
            "addr = \"0.0.0.0:9000\"\npublish-key = [\"k1\", \"k2\"]\njwt-secret = \"s\"\n\
             cors-origin = \"https://a.example\"\nmax-connections = 5\n",
        )
        .unwrap();
        let c = parse(&[
            "ssehub",
            "--config",
            path.to_str().unwrap(),
            "--addr",
            "127.0.0.1:1",
        ]);
        assert_eq!(c.addr, "127.0.0.1:1");
        assert_eq!(c.publish_keys, ["k1", "k2"]);
        assert_eq!(c.jwt_secret.as_deref(), Some("s"));
        assert_eq!(c.cors_origins, ["https://a.example"]);
        assert_eq!(c.max_connections, 5);
        std::fs::write(&path, "nope = 1\n").unwrap();
        let cli = Cli::try_parse_from(["ssehub", "--config", path.to_str().unwrap()]).unwrap();
        assert!(Config::from_cli(cli).is_err());
    }

    #[tokio::test]
    async fn development_mode_only_on_loopback() {
        let c = parse(&["ssehub", "--addr", "0.0.0.0:0"]);
        let e = c.listen_addrs().await.unwrap_err();
        assert!(
            e.contains("--publish-key") && e.contains("--jwt-secret"),
            "{e}"
        );
        assert!(
            parse(&["ssehub", "--addr", "[::1]:0"])
                .listen_addrs()
                .await
                .is_ok()
        );
        let c = parse(&["ssehub", "--addr", "0.0.0.0:0", "--publish-key", "k"]);
        assert!(c.listen_addrs().await.is_ok());
    }
}
