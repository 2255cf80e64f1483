//! `pdm-client`: render a LUA body, flip a record, show a record. For operators doing a manual
//! failover; continuum-controller uses the library.
//!
//! ```text
//! pdm-client render --placement active-hotstandby --primary hz-fsn-rtz-prod \
//!     --region hz-fsn-rtz-prod=5.1.2.3,5.1.2.4 --region hz-hel-rtz-prod=5.5.6.7 \
//!     --probe-url https://probe.example.com/healthz
//! pdm-client flip --powerdns-url http://127.0.0.1:8081 --zone example.com --hostname api.example.com \
//!     --epoch 9 --placement active-hotstandby --primary hz-hel-rtz-prod --region … --probe-url … \
//!     --verify 127.0.0.1:53
//! pdm-client show --powerdns-url http://127.0.0.1:8081 --zone example.com --hostname api.example.com
//! ```
//!
//! Secrets come from the environment: `PDM_CLIENT_POWERDNS_API_KEY`, `PDM_CLIENT_PDM_TOKEN`.
//! Exit status: 0 done, 64 invalid input (nothing written), 3 refused by fencing (a higher epoch
//! is stored), 1 any other failure.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use pdm_client::{
    DnsControl, DnsUpdate, Error, PdmClient, PdmConfig, Placement, PlacementSpec, PowerDnsBackend,
    PowerDnsConfig, RegionSpec, Verifier, lua,
};
use tracing_subscriber::EnvFilter;

/// Exit status for invalid input (`EX_USAGE`).
const EX_USAGE: u8 = 64;
/// Exit status when fencing refused the write (a higher epoch is stored).
const EX_FENCED: u8 = 3;

#[derive(Parser)]
#[command(
    name = "pdm-client",
    version,
    about = "Render and flip Continuum's PowerDNS LUA records"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the LUA body (and the RRset content) for a placement; writes nothing.
    Render(RenderArgs),
    /// Write the record for the given primary (fenced by --epoch) and optionally verify it.
    Flip(FlipArgs),
    /// Print the stored LUA record and its fence (PowerDNS backend only).
    Show(ShowArgs),
}

#[derive(Args)]
struct SpecArgs {
    /// single-region, active-active, active-hotstandby, active-passive-warm or weighted-canary.
    #[arg(long)]
    placement: Placement,
    /// The primary region.
    #[arg(long)]
    primary: String,
    /// A region: `name=ip[,ip…][@weight]` (weight: weighted-canary, per address). Repeat.
    #[arg(long = "region", required = true, value_parser = parse_region)]
    regions: Vec<RegionSpec>,
    /// HTTP(S) health-check URL (ifurlup).
    #[arg(long, conflicts_with = "probe_port")]
    probe_url: Option<String>,
    /// TCP health-check port (ifportup).
    #[arg(long)]
    probe_port: Option<u16>,
    /// Seconds between checks.
    #[arg(long, default_value_t = lua::DEFAULT_INTERVAL_SECS)]
    interval: u32,
    /// Seconds before a check fails.
    #[arg(long, default_value_t = lua::DEFAULT_TIMEOUT_SECS)]
    timeout: u32,
    /// DNS TTL (default: 30, active-passive-warm 300).
    #[arg(long)]
    ttl: Option<u32>,
    /// active-active: answer the closest healthy address (needs PowerDNS's GeoIP backend).
    #[arg(long)]
    closest: bool,
}

impl SpecArgs {
    fn spec(&self) -> PlacementSpec {
        let mut spec =
            PlacementSpec::new(self.placement, &self.primary).timing(self.interval, self.timeout);
        spec.regions = self.regions.clone();
        spec.ttl = self.ttl;
        spec.closest = self.closest;
        if let Some(url) = &self.probe_url {
            spec = spec.probe_url(url);
        }
        if let Some(port) = self.probe_port {
            spec = spec.probe_port(port);
        }
        spec
    }
}

#[derive(Args)]
struct RenderArgs {
    #[command(flatten)]
    spec: SpecArgs,
}

#[derive(Args)]
struct BackendArgs {
    /// PowerDNS webserver root, e.g. http://127.0.0.1:8081.
    #[arg(long, env = "PDM_CLIENT_POWERDNS_URL", conflicts_with = "pdm_url")]
    powerdns_url: Option<String>,
    /// PowerDNS API key (X-API-Key).
    #[arg(long, env = "PDM_CLIENT_POWERDNS_API_KEY", hide_env_values = true)]
    powerdns_key: Option<String>,
    /// PowerDNS server id.
    #[arg(long, default_value = "localhost")]
    powerdns_server: String,
    /// PDM base URL (upstream's PDM_API_URL).
    #[arg(long, env = "PDM_CLIENT_PDM_URL")]
    pdm_url: Option<String>,
    /// PDM token (X-Catalyst-Token).
    #[arg(long, env = "PDM_CLIENT_PDM_TOKEN", hide_env_values = true)]
    pdm_token: Option<String>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 5)]
    http_timeout: u64,
}

impl BackendArgs {
    fn powerdns(&self) -> anyhow::Result<PowerDnsBackend> {
        let url = self
            .powerdns_url
            .clone()
            .ok_or_else(|| anyhow!("--powerdns-url is required"))?;
        let key = self.powerdns_key.clone().ok_or_else(|| {
            anyhow!("--powerdns-key (or PDM_CLIENT_POWERDNS_API_KEY) is required")
        })?;
        let mut config = PowerDnsConfig::new(url, key);
        config.server_id = self.powerdns_server.clone();
        config.timeout = Duration::from_secs(self.http_timeout);
        Ok(PowerDnsBackend::new(config)?)
    }

    fn backend(&self) -> anyhow::Result<Arc<dyn DnsControl>> {
        if self.powerdns_url.is_some() {
            return Ok(Arc::new(self.powerdns()?));
        }
        let Some(url) = &self.pdm_url else {
            bail!("one of --powerdns-url or --pdm-url is required");
        };
        let mut config = PdmConfig::new(url);
        config.token = self.pdm_token.clone();
        config.timeout = Duration::from_secs(self.http_timeout);
        Ok(Arc::new(PdmClient::new(config)?))
    }
}

#[derive(Args)]
struct FlipArgs {
    #[command(flatten)]
    backend: BackendArgs,
    #[command(flatten)]
    spec: SpecArgs,
    /// The zone.
    #[arg(long)]
    zone: String,
    /// A hostname in the zone. Repeat for several (one body for all).
    #[arg(long = "hostname", required = true)]
    hostnames: Vec<String>,
    /// Fencing epoch (the witness lease epoch); a record with a higher one is not replaced.
    #[arg(long)]
    epoch: u64,
    /// Writer named in the fence comment.
    #[arg(long, default_value = "operator")]
    writer: String,
    /// Authoritative server(s) to verify the answer on, e.g. 127.0.0.1:53. Repeat.
    #[arg(long = "verify")]
    verify: Vec<SocketAddr>,
    /// Seconds to wait for the authoritative answer.
    #[arg(long, default_value_t = 30)]
    verify_timeout: u64,
}

#[derive(Args)]
struct ShowArgs {
    #[command(flatten)]
    backend: BackendArgs,
    /// The zone.
    #[arg(long)]
    zone: String,
    /// The hostname.
    #[arg(long)]
    hostname: String,
}

/// `name=ip[,ip…][@weight]`.
fn parse_region(s: &str) -> Result<RegionSpec, String> {
    let (name, rest) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected name=ip[,ip…][@weight]"))?;
    let (ips, weight) = match rest.split_once('@') {
        Some((ips, w)) => (
            ips,
            Some(w.parse::<u32>().map_err(|e| format!("weight {w:?}: {e}"))?),
        ),
        None => (rest, None),
    };
    let ips: Vec<&str> = ips
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let mut region = RegionSpec::new(name.trim(), ips);
    region.weight = weight;
    Ok(region)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Unwritable log lines are dropped, never reported with a panicking `eprintln!`.
        .log_internal_errors(false)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pdm-client: {e:#}");
            let ours = || e.chain().filter_map(|c| c.downcast_ref::<Error>());
            if ours().any(|c| matches!(c, Error::StaleEpoch { .. } | Error::Superseded { .. })) {
                return ExitCode::from(EX_FENCED);
            }
            let usage = ours().any(|c| {
                matches!(
                    c,
                    Error::Lua(_) | Error::InvalidUpdate(_) | Error::Config(_)
                )
            }) || e
                .chain()
                .any(|c| c.downcast_ref::<lua::LuaError>().is_some());
            if usage {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Render(args) => {
            let rendered = lua::render(&args.spec.spec())?;
            println!("{}", rendered.body);
            println!(
                "# RRset content (type LUA, TTL {}): {}",
                rendered.ttl,
                rendered.body.rrset_content()
            );
            if let Some(healthy) = &rendered.healthy_answer {
                println!("# answer while healthy: {healthy:?}");
            }
            if let Some(failover) = &rendered.failover_answer {
                println!("# answer while the primary fails its checks: {failover:?}");
            }
            Ok(())
        }
        Command::Flip(args) => {
            let rendered = lua::render(&args.spec.spec())?;
            let update = DnsUpdate::new(&args.zone, args.epoch)
                .writer(&args.writer)
                .records(&args.hostnames, &rendered);
            update.validate()?;
            let backend = args.backend.backend()?;
            let applied = backend.apply(&update).await.context("writing the record")?;
            println!(
                "wrote epoch {} via {} (previous epoch {:?}, changed {:?})",
                applied.epoch,
                backend.backend(),
                applied.previous_epoch,
                applied.changed
            );
            if args.verify.is_empty() {
                return Ok(());
            }
            let Some(expected) = rendered.healthy_answer.as_ref() else {
                bail!(
                    "placement {} has no single expected answer to verify",
                    rendered.placement
                );
            };
            let verifier = Verifier::new(args.verify.iter().copied())?.consecutive(2);
            for host in &update
                .record_updates()
                .iter()
                .map(|r| r.hostname.clone())
                .collect::<Vec<_>>()
            {
                let v = verifier
                    .wait_for(host, expected, Duration::from_secs(args.verify_timeout))
                    .await?;
                println!(
                    "{host}: authoritative answer is {expected:?} after {:?}",
                    v.elapsed
                );
            }
            Ok(())
        }
        Command::Show(args) => {
            let backend = args.backend.powerdns()?;
            match backend.read_lua(&args.zone, &args.hostname).await? {
                None => println!("{}: no LUA record", args.hostname),
                Some(p) => {
                    println!("{} LUA TTL {}", p.hostname, p.ttl);
                    for c in &p.contents {
                        println!("  {c}");
                    }
                    match &p.fence {
                        Some(f) => println!(
                            "  fence: epoch {} writer {} primary {}",
                            f.epoch, f.writer, f.primary
                        ),
                        None => println!("  fence: none"),
                    }
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_parse_with_and_without_weight() {
        let r = parse_region("hz-fsn-rtz-prod=5.1.2.3, 5.1.2.4@95").unwrap();
        assert_eq!(r.name, "hz-fsn-rtz-prod");
        assert_eq!(r.lb_ips, ["5.1.2.3", "5.1.2.4"]);
        assert_eq!(r.weight, Some(95));
        assert!(parse_region("nope").is_err());
        assert!(parse_region("a=1.2.3.4@x").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
