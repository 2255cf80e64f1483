//! Command line: `emit` and `recover`, every flag with its environment twin (upstream's names
//! where upstream had one: `REGION_KEY`, `FLOW_SERVER_URL`, `FLOW_ID`, `NAMESPACE_FILTER`,
//! `POST_TIMEOUT`, `HEALTH_LISTEN_ADDR`; new ones are prefixed `FLOW_ADAPTER_` or
//! `STUCK_HR_RECOVERY_`). Invalid values are refused before anything starts: `config()`
//! returns a one-line reason and `main` exits with 64 (`EX_USAGE`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::leader::LeaseConfig;
use crate::mapper::MapContext;
use crate::recover::RecoverConfig;
use crate::sink::{Backoff, SinkConfig};
use crate::watch::EmitConfig;

/// Exit code for an invalid configuration (`EX_USAGE`).
pub const EX_USAGE: i32 = 64;

/// Flux HelmRelease/HelmChart → openova-flow emitter, and the stuck-HelmRelease repair job.
#[derive(Debug, Clone, Parser)]
#[command(name = "flow-adapter-flux", version, about, long_about = None)]
pub struct Args {
    /// Log format: `text` or `json`. Filter with `RUST_LOG` (default `info`).
    #[arg(
        long,
        env = "FLOW_ADAPTER_LOG_FORMAT",
        default_value = "text",
        global = true
    )]
    pub log_format: String,

    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The two modes.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Watch HelmReleases and HelmCharts and POST FlowMessages to flow-server (leader only).
    Emit(Box<EmitArgs>),
    /// Repair stuck HelmReleases once and exit (a CronJob).
    Recover(RecoverArgs),
}

/// Flags of `emit`.
#[derive(Debug, Clone, clap::Args)]
pub struct EmitArgs {
    /// Region of this cluster: node ids are `{REGION_KEY}/{name}` and the region node is
    /// `{REGION_KEY}`.
    #[arg(long, env = "REGION_KEY")]
    pub region_key: String,

    /// flow-server base URL; events go to `{url}/v1/flows/{FLOW_ID}/events`.
    #[arg(long, env = "FLOW_SERVER_URL")]
    pub flow_server_url: String,

    /// The flow all nodes belong to.
    #[arg(long, env = "FLOW_ID")]
    pub flow_id: String,

    /// Namespace to watch; empty = all namespaces (ids then carry the namespace).
    #[arg(long, env = "NAMESPACE_FILTER", default_value = "flux-system")]
    pub namespace_filter: String,

    /// Bearer token for flow-server (one of its FLOW_SERVER_INGEST_TOKENS; it should also be a
    /// read token so stale nodes can be pruned at start). Empty = none.
    #[arg(
        long,
        env = "FLOW_SERVER_TOKEN",
        default_value = "",
        hide_env_values = true
    )]
    pub flow_server_token: String,

    /// Timeout of one request to flow-server.
    #[arg(long, env = "POST_TIMEOUT", default_value = "10s")]
    pub post_timeout: String,

    /// Address of `/healthz`, `/readyz`, `/metrics` (`host:port` or `:port`).
    #[arg(long, env = "HEALTH_LISTEN_ADDR", default_value = ":8081")]
    pub health_listen_addr: String,

    /// Most items (nodes, relationships) per POST.
    #[arg(long, env = "FLOW_ADAPTER_BATCH_SIZE", default_value = "200")]
    pub batch_size: usize,

    /// Bound of the coalescing queue, in keys (one per node and relationship).
    #[arg(long, env = "FLOW_ADAPTER_QUEUE_CAPACITY", default_value = "20000")]
    pub queue_capacity: usize,

    /// First retry delay; it doubles per failure, with jitter.
    #[arg(long, env = "FLOW_ADAPTER_BACKOFF_INITIAL", default_value = "200ms")]
    pub backoff_initial: String,

    /// Longest retry delay.
    #[arg(long, env = "FLOW_ADAPTER_BACKOFF_MAX", default_value = "30s")]
    pub backoff_max: String,

    /// Re-send the full state this often (`0` = only after reconnects and re-lists).
    #[arg(long, env = "FLOW_ADAPTER_RESYNC_INTERVAL", default_value = "10m")]
    pub resync_interval: String,

    /// Elect one emitter per cluster with a Lease (`false` only for a single replica).
    #[arg(long, env = "FLOW_ADAPTER_LEADER_ELECTION", default_value = "true", action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Lease name.
    #[arg(
        long,
        env = "FLOW_ADAPTER_LEASE_NAME",
        default_value = "flow-adapter-flux"
    )]
    pub lease_name: String,

    /// Lease namespace (the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "flux-system")]
    pub lease_namespace: String,

    /// This pod's identity in the Lease (downward API `metadata.name`; falls back to
    /// `HOSTNAME`).
    #[arg(long, env = "POD_NAME", default_value = "")]
    pub identity: String,

    /// Lease validity after a renewal.
    #[arg(long, env = "FLOW_ADAPTER_LEASE_DURATION", default_value = "15s")]
    pub lease_duration: String,

    /// A leader that could not renew for this long stops emitting.
    #[arg(long, env = "FLOW_ADAPTER_RENEW_DEADLINE", default_value = "10s")]
    pub renew_deadline: String,

    /// Time between lease rounds.
    #[arg(long, env = "FLOW_ADAPTER_RETRY_PERIOD", default_value = "2s")]
    pub retry_period: String,
}

/// Flags of `recover`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecoverArgs {
    /// Namespace to scan; empty = all namespaces.
    #[arg(long, env = "STUCK_HR_RECOVERY_NAMESPACE", default_value = "")]
    pub namespace: String,

    /// How long a release must be stuck before it is repaired (`300`, `300s`, `5m`, `1h`).
    #[arg(long, env = "STUCK_HR_RECOVERY_THRESHOLD", default_value = "5m")]
    pub stuck_threshold: String,

    /// Most releases repaired per run, both branches together; more candidates than this →
    /// nothing is changed and the run exits 1.
    #[arg(long, env = "STUCK_HR_RECOVERY_GUARDRAIL", default_value = "10")]
    pub guardrail: usize,

    /// Plan and log only; write nothing.
    #[arg(long, env = "STUCK_HR_RECOVERY_DRY_RUN", default_value = "false", action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,

    /// Pause between suspend and resume in the suspend toggle.
    #[arg(long, env = "STUCK_HR_RECOVERY_TOGGLE_PAUSE", default_value = "5s")]
    pub toggle_pause: String,
}

/// Validated `emit` settings.
#[derive(Debug, Clone)]
pub struct EmitSettings {
    /// Pipeline settings.
    pub emit: EmitConfig,
    /// Lease settings (None = election off).
    pub lease: Option<LeaseConfig>,
    /// Health address.
    pub health: SocketAddr,
}

impl EmitArgs {
    /// Validates; `hostname` is the fallback identity.
    pub fn config(&self, hostname: &str) -> Result<EmitSettings, String> {
        let req = |v: &str, what: &str| {
            if v.trim().is_empty() {
                Err(format!("{what} is required"))
            } else {
                Ok(v.trim().to_owned())
            }
        };
        let region = req(&self.region_key, "--region-key / REGION_KEY")?;
        let url = req(&self.flow_server_url, "--flow-server-url / FLOW_SERVER_URL")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "--flow-server-url / FLOW_SERVER_URL: {url:?} is not an http(s) URL"
            ));
        }
        let flow_id = req(&self.flow_id, "--flow-id / FLOW_ID")?;
        let post_timeout = positive_duration(&self.post_timeout, "--post-timeout / POST_TIMEOUT")?;
        let health = parse_listen(&self.health_listen_addr)
            .map_err(|e| format!("--health-listen-addr / HEALTH_LISTEN_ADDR: {e}"))?;
        if self.batch_size == 0 {
            return Err("--batch-size / FLOW_ADAPTER_BATCH_SIZE must be > 0".into());
        }
        if self.queue_capacity == 0 {
            return Err("--queue-capacity / FLOW_ADAPTER_QUEUE_CAPACITY must be > 0".into());
        }
        let backoff = Backoff {
            initial: positive_duration(
                &self.backoff_initial,
                "--backoff-initial / FLOW_ADAPTER_BACKOFF_INITIAL",
            )?,
            max: positive_duration(
                &self.backoff_max,
                "--backoff-max / FLOW_ADAPTER_BACKOFF_MAX",
            )?,
        };
        let resync = duration(
            &self.resync_interval,
            "--resync-interval / FLOW_ADAPTER_RESYNC_INTERVAL",
        )?;
        let ns = self.namespace_filter.trim();
        let lease = if self.leader_election {
            let identity = if self.identity.trim().is_empty() {
                hostname.trim()
            } else {
                self.identity.trim()
            };
            if identity.is_empty() {
                return Err(
                    "--identity / POD_NAME (or HOSTNAME) is required with leader election".into(),
                );
            }
            let lease_duration = positive_duration(
                &self.lease_duration,
                "--lease-duration / FLOW_ADAPTER_LEASE_DURATION",
            )?;
            let renew_deadline = positive_duration(
                &self.renew_deadline,
                "--renew-deadline / FLOW_ADAPTER_RENEW_DEADLINE",
            )?;
            let retry_period = positive_duration(
                &self.retry_period,
                "--retry-period / FLOW_ADAPTER_RETRY_PERIOD",
            )?;
            if !(retry_period < renew_deadline && renew_deadline < lease_duration) {
                return Err("need FLOW_ADAPTER_RETRY_PERIOD < FLOW_ADAPTER_RENEW_DEADLINE < FLOW_ADAPTER_LEASE_DURATION".into());
            }
            Some(LeaseConfig {
                name: req(&self.lease_name, "--lease-name / FLOW_ADAPTER_LEASE_NAME")?,
                namespace: req(&self.lease_namespace, "--lease-namespace / POD_NAMESPACE")?,
                identity: identity.to_owned(),
                lease_duration,
                renew_deadline,
                retry_period,
            })
        } else {
            None
        };
        Ok(EmitSettings {
            emit: EmitConfig {
                ctx: MapContext::new(&region, &flow_id, (!ns.is_empty()).then_some(ns)),
                sink: SinkConfig {
                    base_url: url,
                    flow_id,
                    token: Some(self.flow_server_token.trim().to_owned()).filter(|t| !t.is_empty()),
                    batch_max: self.batch_size,
                    backoff,
                    post_timeout,
                    resync_interval: (!resync.is_zero()).then_some(resync),
                },
                queue_capacity: self.queue_capacity,
            },
            lease,
            health,
        })
    }
}

impl RecoverArgs {
    /// Validates.
    pub fn config(&self) -> Result<RecoverConfig, String> {
        let threshold = duration(
            &self.stuck_threshold,
            "--stuck-threshold / STUCK_HR_RECOVERY_THRESHOLD",
        )?;
        let toggle_pause = duration(
            &self.toggle_pause,
            "--toggle-pause / STUCK_HR_RECOVERY_TOGGLE_PAUSE",
        )?;
        let ns = self.namespace.trim();
        Ok(RecoverConfig {
            namespace: (!ns.is_empty()).then(|| ns.to_owned()),
            threshold,
            guardrail: self.guardrail,
            dry_run: self.dry_run,
            toggle_pause,
        })
    }
}

/// `500ms`, `15s`, `2m`, `1h`, or plain seconds.
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
        .ok_or_else(|| format!("{what}: {s:?} is not a duration like 500ms, 15s, 5m, 1h"))
}

fn positive_duration(s: &str, what: &str) -> Result<Duration, String> {
    let d = duration(s, what)?;
    if d.is_zero() {
        return Err(format!("{what} must be > 0"));
    }
    Ok(d)
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
    s.parse()
        .map_err(|_| format!("{s:?} is not host:port with an IP address host"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Args {
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn emit_reads_upstream_names_and_defaults_to_flux_system_with_election() {
        let a = parse(&[
            "x",
            "emit",
            "--region-key",
            "fsn1",
            "--flow-server-url",
            "http://fs:8080/",
            "--flow-id",
            "d1",
            "--identity",
            "pod-a",
        ]);
        let Command::Emit(e) = a.command else {
            panic!()
        };
        let c = e.config("").unwrap();
        assert_eq!(c.emit.ctx.namespace.as_deref(), Some("flux-system"));
        assert_eq!(c.emit.ctx.region, "fsn1");
        assert_eq!(c.lease.unwrap().identity, "pod-a");
        assert_eq!(c.health, "0.0.0.0:8081".parse().unwrap());
    }

    #[test]
    fn a_missing_required_value_is_refused_with_its_env_name() {
        let a = parse(&[
            "x",
            "emit",
            "--region-key",
            " ",
            "--flow-server-url",
            "http://x",
            "--flow-id",
            "f",
        ]);
        let Command::Emit(e) = a.command else {
            panic!()
        };
        assert!(e.config("h").unwrap_err().contains("REGION_KEY"));
    }

    #[test]
    fn recover_parses_thresholds_like_upstream() {
        let a = parse(&["x", "recover", "--stuck-threshold", "300", "--dry-run"]);
        let Command::Recover(r) = a.command else {
            panic!()
        };
        let c = r.config().unwrap();
        assert_eq!(c.threshold, Duration::from_secs(300));
        assert!(c.dry_run);
        assert_eq!(c.guardrail, 10);
        assert_eq!(c.namespace, None);
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("5x"), None);
    }
}
