//! Command-line flags, each with its `FLOW_SERVER_*` environment twin, and their validation.
//!
//! Upstream's names keep working: `FLOW_SERVER_LISTEN_ADDR` (also Go's `:8080` form),
//! `FLOW_SERVER_RING_CAPACITY`, `FLOW_SERVER_BACKEND` (`memory`/`mem`, plus `jetstream`).
//! Invalid values are refused before any port is bound: [`Args::config`] returns a one-line
//! reason and `main` exits with 64 (`EX_USAGE`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::Parser;

use crate::auth::Auth;
use crate::hub::HubConfig;
use crate::state::StateLimits;

/// Exit code for an invalid configuration (`EX_USAGE`).
pub const EX_USAGE: i32 = 64;

/// openova-flow event router: POST FlowMessages, GET snapshots, stream them over SSE.
#[derive(Debug, Clone, Parser)]
#[command(name = "flow-server", version, about, long_about = None)]
pub struct Args {
    /// Address to listen on (`host:port`, or `:port` for every interface).
    #[arg(
        long,
        env = "FLOW_SERVER_LISTEN_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub listen_addr: String,

    /// Events kept per flow for Last-Event-ID replay.
    #[arg(long, env = "FLOW_SERVER_RING_CAPACITY", default_value = "4096")]
    pub ring_capacity: String,

    /// Bytes kept per flow for replay (bounds a flow's ring whatever the event sizes).
    #[arg(long, env = "FLOW_SERVER_RING_MAX_BYTES", default_value = "67108864")]
    pub ring_max_bytes: String,

    /// Event store: `memory` (embedded, single replica) or `jetstream` (NATS JetStream, several
    /// replicas share one event log).
    #[arg(long, env = "FLOW_SERVER_BACKEND", default_value = "memory")]
    pub backend: String,

    /// NATS server URL for the `jetstream` backend.
    #[arg(
        long,
        env = "FLOW_SERVER_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,

    /// JetStream stream holding the events (created if missing).
    #[arg(
        long,
        env = "FLOW_SERVER_NATS_STREAM",
        default_value = "FLOW_SERVER_EVENTS"
    )]
    pub nats_stream: String,

    /// Subject prefix of the stream; a flow's events go to `<prefix>.<hex(flowId)>`.
    #[arg(
        long,
        env = "FLOW_SERVER_NATS_SUBJECT_PREFIX",
        default_value = "flowserver.events"
    )]
    pub nats_subject_prefix: String,

    /// Bearer tokens allowed to POST events and DELETE flows, comma-separated. Empty = open.
    #[arg(
        long,
        env = "FLOW_SERVER_INGEST_TOKENS",
        default_value = "",
        hide_env_values = true
    )]
    pub ingest_tokens: String,

    /// Bearer tokens allowed to read snapshots and streams (header or `?access_token=`),
    /// comma-separated. Empty = open.
    #[arg(
        long,
        env = "FLOW_SERVER_READ_TOKENS",
        default_value = "",
        hide_env_values = true
    )]
    pub read_tokens: String,

    /// Interval of the named `heartbeat` SSE event (`15s`, `500ms`, `2m`).
    #[arg(long, env = "FLOW_SERVER_HEARTBEAT_INTERVAL", default_value = "15s")]
    pub heartbeat_interval: String,

    /// `retry:` hint sent to SSE clients: how long they wait before reconnecting.
    #[arg(long, env = "FLOW_SERVER_RETRY", default_value = "3s")]
    pub retry: String,

    /// Flows held at once; at the bound the least recently used idle flow is evicted.
    #[arg(long, env = "FLOW_SERVER_MAX_FLOWS", default_value = "10000")]
    pub max_flows: String,

    /// Nodes one flow may hold (more is refused with 422).
    #[arg(long, env = "FLOW_SERVER_MAX_NODES", default_value = "10000")]
    pub max_nodes: String,

    /// Relationships one flow may hold (more is refused with 422).
    #[arg(long, env = "FLOW_SERVER_MAX_RELATIONSHIPS", default_value = "50000")]
    pub max_relationships: String,

    /// A flow without subscribers and without events for this long is evicted (`0` = never).
    #[arg(long, env = "FLOW_SERVER_FLOW_IDLE_TTL", default_value = "24h")]
    pub flow_idle_ttl: String,

    /// A subscriber further behind than this many events gets a fresh snapshot instead
    /// (`0` = the ring capacity).
    #[arg(long, env = "FLOW_SERVER_SUBSCRIBER_LAG_LIMIT", default_value = "0")]
    pub subscriber_lag_limit: String,

    /// A subscriber resynchronised this many times in a row without catching up is closed.
    #[arg(long, env = "FLOW_SERVER_MAX_RESYNCS", default_value = "3")]
    pub max_resyncs: String,

    /// Timeout of every non-streaming request.
    #[arg(long, env = "FLOW_SERVER_REQUEST_TIMEOUT", default_value = "10s")]
    pub request_timeout: String,

    /// On SIGTERM/SIGINT: streams end at once, then connections get this long to finish.
    #[arg(long, env = "FLOW_SERVER_SHUTDOWN_GRACE", default_value = "5s")]
    pub shutdown_grace: String,

    /// Log format: `text` or `json`. Filter with `RUST_LOG` (default `info`).
    #[arg(long, env = "FLOW_SERVER_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// Which event store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendConfig {
    /// In-process state; the default.
    Memory,
    /// NATS JetStream.
    JetStream {
        /// Server URL.
        url: String,
        /// Stream name.
        stream: String,
        /// Subject prefix.
        subject_prefix: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// SSE settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamConfig {
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// `retry:` hint.
    pub retry: Duration,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_secs(15),
            retry: Duration::from_secs(3),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// Event store.
    pub backend: BackendConfig,
    /// Hub bounds.
    pub hub: HubConfig,
    /// Tokens.
    pub auth: Auth,
    /// SSE settings.
    pub stream: StreamConfig,
    /// Idle-flow TTL; None = never evict.
    pub idle_ttl: Option<Duration>,
    /// Non-streaming request timeout.
    pub request_timeout: Duration,
    /// Drain bound at shutdown.
    pub shutdown_grace: Duration,
    /// Log format.
    pub log_format: LogFormat,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            backend: BackendConfig::Memory,
            hub: HubConfig::default(),
            auth: Auth::default(),
            stream: StreamConfig::default(),
            idle_ttl: Some(Duration::from_secs(24 * 3600)),
            request_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
            log_format: LogFormat::Text,
        }
    }
}

impl Args {
    /// Validates every flag; the error is a one-line reason naming the flag and its env.
    pub fn config(&self) -> Result<Config, String> {
        let listen = parse_listen(&self.listen_addr)
            .map_err(|e| format!("--listen-addr / FLOW_SERVER_LISTEN_ADDR: {e}"))?;
        let ring_capacity = positive(
            &self.ring_capacity,
            "--ring-capacity / FLOW_SERVER_RING_CAPACITY",
        )?;
        let ring_max_bytes = positive(
            &self.ring_max_bytes,
            "--ring-max-bytes / FLOW_SERVER_RING_MAX_BYTES",
        )?;
        let backend = match self.backend.trim().to_ascii_lowercase().as_str() {
            "memory" | "mem" => BackendConfig::Memory,
            "jetstream" | "nats" => {
                if self.nats_url.trim().is_empty() {
                    return Err(
                        "--nats-url / FLOW_SERVER_NATS_URL is required with --backend jetstream"
                            .into(),
                    );
                }
                if !valid_subject(&self.nats_subject_prefix) {
                    return Err(format!(
                        "--nats-subject-prefix / FLOW_SERVER_NATS_SUBJECT_PREFIX: {:?} is not a NATS subject",
                        self.nats_subject_prefix
                    ));
                }
                if self.nats_stream.is_empty()
                    || !self
                        .nats_stream
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    return Err(format!(
                        "--nats-stream / FLOW_SERVER_NATS_STREAM: {:?} is not a stream name",
                        self.nats_stream
                    ));
                }
                BackendConfig::JetStream {
                    url: self.nats_url.trim().to_owned(),
                    stream: self.nats_stream.clone(),
                    subject_prefix: self.nats_subject_prefix.clone(),
                }
            }
            "pg" | "postgres" => {
                return Err("--backend / FLOW_SERVER_BACKEND: the Postgres backend of upstream is not provided; use `memory` or `jetstream`".into());
            }
            other => {
                return Err(format!(
                    "--backend / FLOW_SERVER_BACKEND: {other:?} is not one of memory, jetstream"
                ));
            }
        };
        let heartbeat = duration(
            &self.heartbeat_interval,
            "--heartbeat-interval / FLOW_SERVER_HEARTBEAT_INTERVAL",
        )?;
        if heartbeat.is_zero() {
            return Err("--heartbeat-interval / FLOW_SERVER_HEARTBEAT_INTERVAL must be > 0".into());
        }
        let retry = duration(&self.retry, "--retry / FLOW_SERVER_RETRY")?;
        let max_flows = positive(&self.max_flows, "--max-flows / FLOW_SERVER_MAX_FLOWS")?;
        let max_nodes = positive(&self.max_nodes, "--max-nodes / FLOW_SERVER_MAX_NODES")?;
        let max_rels = positive(
            &self.max_relationships,
            "--max-relationships / FLOW_SERVER_MAX_RELATIONSHIPS",
        )?;
        let ttl = duration(
            &self.flow_idle_ttl,
            "--flow-idle-ttl / FLOW_SERVER_FLOW_IDLE_TTL",
        )?;
        let lag: usize = self.subscriber_lag_limit.trim().parse().map_err(|_| {
            format!(
                "--subscriber-lag-limit / FLOW_SERVER_SUBSCRIBER_LAG_LIMIT: {:?} is not a number",
                self.subscriber_lag_limit
            )
        })?;
        let lag = if lag == 0 {
            ring_capacity
        } else {
            lag.min(ring_capacity)
        };
        let max_resyncs: u32 = self.max_resyncs.trim().parse().map_err(|_| {
            format!(
                "--max-resyncs / FLOW_SERVER_MAX_RESYNCS: {:?} is not a number",
                self.max_resyncs
            )
        })?;
        let request_timeout = duration(
            &self.request_timeout,
            "--request-timeout / FLOW_SERVER_REQUEST_TIMEOUT",
        )?;
        if request_timeout.is_zero() {
            return Err("--request-timeout / FLOW_SERVER_REQUEST_TIMEOUT must be > 0".into());
        }
        let shutdown_grace = duration(
            &self.shutdown_grace,
            "--shutdown-grace / FLOW_SERVER_SHUTDOWN_GRACE",
        )?;
        let log_format = match self.log_format.trim() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(format!(
                    "--log-format / FLOW_SERVER_LOG_FORMAT: {other:?} is not one of text, json"
                ));
            }
        };
        let log_origin = matches!(backend, BackendConfig::JetStream { .. });
        Ok(Config {
            listen,
            backend,
            hub: HubConfig {
                ring_capacity,
                ring_max_bytes,
                limits: StateLimits {
                    max_nodes,
                    max_rels,
                },
                max_flows,
                lag_limit: u64::try_from(lag).unwrap_or(u64::MAX),
                max_resyncs,
                log_origin,
            },
            auth: Auth::new(tokens(&self.ingest_tokens), tokens(&self.read_tokens)),
            stream: StreamConfig { heartbeat, retry },
            idle_ttl: (!ttl.is_zero()).then_some(ttl),
            request_timeout,
            shutdown_grace,
            log_format,
        })
    }
}

fn tokens(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn positive(s: &str, what: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{what}: {s:?} is not a positive integer")),
    }
}

fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty()
                && t != "*"
                && t != ">"
                && t.chars()
                    .all(|c| c.is_ascii_graphic() && c != '*' && c != '>')
        })
}

/// `host:port`, `[v6]:port`, or Go's `:port` (every interface).
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Some(port) = s.strip_prefix(':') {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?} has no valid port"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some((host, port)) = s.rsplit_once(':')
        && host == "localhost"
    {
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{s:?} has no valid port"))?;
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not host:port with an IP address host"))
}

/// `500ms`, `15s`, `2m`, `24h`, or plain seconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    Some(match unit.trim() {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

fn duration(s: &str, what: &str) -> Result<Duration, String> {
    parse_duration(s)
        .ok_or_else(|| format!("{what}: {s:?} is not a duration like 500ms, 15s, 2m, 24h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["flow-server"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn defaults_are_a_loopback_memory_server() {
        let c = args(&[]).config().unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.backend, BackendConfig::Memory);
        assert_eq!(c.hub.ring_capacity, 4096);
        assert_eq!(c.stream.heartbeat, Duration::from_secs(15));
        assert!(c.auth.is_open());
    }

    #[test]
    fn upstream_listen_form_and_backend_aliases_work() {
        let c = args(&["--listen-addr", ":9090", "--backend", "mem"])
            .config()
            .unwrap();
        assert_eq!(c.listen, "0.0.0.0:9090".parse().unwrap());
        let c = args(&[
            "--backend",
            "jetstream",
            "--nats-url",
            "nats://127.0.0.1:4222",
        ])
        .config()
        .unwrap();
        assert!(matches!(c.backend, BackendConfig::JetStream { .. }));
        assert!(c.hub.log_origin);
    }

    #[test]
    fn invalid_values_are_refused_with_the_flag_name() {
        for (flag, value, needle) in [
            ("--ring-capacity", "0", "FLOW_SERVER_RING_CAPACITY"),
            ("--ring-capacity", "many", "FLOW_SERVER_RING_CAPACITY"),
            ("--backend", "pg", "FLOW_SERVER_BACKEND"),
            ("--backend", "redis", "FLOW_SERVER_BACKEND"),
            ("--listen-addr", "nowhere", "FLOW_SERVER_LISTEN_ADDR"),
            (
                "--heartbeat-interval",
                "0s",
                "FLOW_SERVER_HEARTBEAT_INTERVAL",
            ),
            ("--flow-idle-ttl", "soon", "FLOW_SERVER_FLOW_IDLE_TTL"),
            ("--log-format", "xml", "FLOW_SERVER_LOG_FORMAT"),
        ] {
            let err = args(&[flag, value]).config().unwrap_err();
            assert!(err.contains(needle), "{flag} {value}: {err}");
        }
    }

    #[test]
    fn tokens_are_split_and_trimmed() {
        assert_eq!(tokens(" a, b ,,c"), vec!["a", "b", "c"]);
        assert!(tokens("").is_empty());
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("15"), Some(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_duration("x"), None);
    }
}
