//! The Kubernetes-mode commands: `continuum-controller operator` (run the controller of one
//! region) and `continuum-controller k status|plan|switchover|approve-failback` (kubectl-plugin
//! style, against the cluster of the current kubeconfig context).
//!
//! `k switchover` and `k approve-failback` write the request into the Continuum object of EVERY
//! cluster given (`--context` plus `--peer-context`): each region's controller reads its own
//! copy, and both must see the same request id (the target promotes only for a request naming
//! it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use super::cnpg::{LagSource, NoLag, PgLag};
use super::leader::{self, LeaderConfig, Lost};
use super::reconcile::{self, Context, KubePeerProbe, Settings};
use crate::crd::Continuum;
use crate::decide::{self, Mono};
use crate::metrics::{self, Metrics};

/// Errors of the Kubernetes-mode commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No usable kubeconfig / in-cluster config.
    #[error("kube config: {0}")]
    Config(String),
    /// A Kubernetes call failed.
    #[error("kube: {0}")]
    Kube(#[from] kube::Error),
    /// The health/metrics listener failed.
    #[error("listen: {0}")]
    Listen(#[from] std::io::Error),
    /// This replica lost the in-region leader Lease: exit (and be restarted) before acting.
    #[error("leadership lost: {0:?}")]
    LostLeadership(Lost),
    /// A bad argument or object.
    #[error("{0}")]
    Invalid(String),
}

/// `continuum-controller operator` options.
#[derive(Debug, Clone, clap::Args)]
pub struct OperatorArgs {
    /// This region's id (one of each Continuum's regions).
    #[arg(long, env = "CONTINUUM_REGION")]
    pub region: String,
    /// Watch Continuum objects only in this namespace (default: all namespaces).
    #[arg(long, env = "CONTINUUM_NAMESPACE")]
    pub namespace: Option<String>,
    /// Witness URL used when a Continuum names none (`leaseClient.config.workerURL`).
    #[arg(long, env = "CONTINUUM_WITNESS_URL")]
    pub witness_url: Option<String>,
    /// Witness bearer token (mount it from a Secret: `valueFrom.secretKeyRef`).
    #[arg(
        long,
        env = "CONTINUUM_WITNESS_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    pub witness_token: String,
    /// NATS URL of the audit stream (`catalyst.audit`); absent: audit events are only logged.
    #[arg(long, env = "CONTINUUM_NATS_URL")]
    pub nats_url: Option<String>,
    /// Address of `/healthz`, `/readyz`, `/metrics`.
    #[arg(long, env = "CONTINUUM_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// Kubeconfig of the PEER region's cluster (read-only use: the CNPG demotion token of a
    /// planned switchover, the `peer-api` probe). Without it planned switchovers stop at
    /// `CnpgPeerAccessMissing` and only the HTTP probe sees the peer.
    #[arg(long, env = "CONTINUUM_PEER_KUBECONFIG")]
    pub peer_kubeconfig: Option<PathBuf>,
    /// libpq conninfo of the local CNPG Cluster's read-write service, for replication lag and
    /// the synchronous-replication report (CNPG's status carries neither). Absent: lag is
    /// unknown and automatic failover needs a synchronous report.
    #[arg(long, env = "CONTINUUM_PG_CONNINFO", hide_env_values = true)]
    pub pg_conninfo: Option<String>,
    /// Namespace of the in-region leader election Lease (the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// This replica's identity in the leader Lease (the pod name).
    #[arg(long, env = "POD_NAME", default_value = "continuum-controller")]
    pub identity: String,
    /// `leaseDurationSeconds` of the in-region leader Lease (renew deadline 2/3 of it, retry
    /// every 1/7).
    #[arg(long, env = "CONTINUUM_LEADER_LEASE_SECONDS", default_value_t = 15)]
    pub leader_lease_seconds: u64,
    /// Longest pause between two rounds of one Continuum, ms.
    #[arg(long, env = "CONTINUUM_TICK_MS", default_value_t = 2_000)]
    pub tick_ms: u64,
}

async fn client_for(
    kubeconfig: Option<&PathBuf>,
    context: Option<&str>,
) -> Result<kube::Client, CliError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let opts = KubeConfigOptions {
        context: context.map(str::to_owned),
        ..KubeConfigOptions::default()
    };
    let config = match kubeconfig {
        Some(p) => {
            let kc = Kubeconfig::read_from(p).map_err(|e| CliError::Config(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &opts)
                .await
                .map_err(|e| CliError::Config(e.to_string()))?
        }
        None if context.is_some() => kube::Config::from_kubeconfig(&opts)
            .await
            .map_err(|e| CliError::Config(e.to_string()))?,
        None => kube::Config::infer()
            .await
            .map_err(|e| CliError::Config(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(CliError::Kube)
}

/// Runs the region's controller: leader election first, then the controller; returns
/// `LostLeadership` the moment the Lease is lost or its task dies (the caller exits).
pub async fn operator(
    args: OperatorArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), CliError> {
    let client = client_for(None, None).await?;
    let peer = match &args.peer_kubeconfig {
        Some(p) => Some(client_for(Some(p), None).await?),
        None => None,
    };
    run_operator(client, peer, args, shutdown).await
}

/// [`operator`] with the clients given (this region's cluster, the peer's).
pub async fn run_operator(
    client: kube::Client,
    peer: Option<kube::Client>,
    args: OperatorArgs,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), CliError> {
    let metrics = Arc::new(Metrics::new());
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = tokio::spawn(metrics::serve(args.listen, metrics.clone(), async {
        let _ = http_stopped.await;
    }));
    // Ready while standing by too: a replica waiting for the Lease must not block rollouts.
    metrics.set_ready(true);
    let mut lc = LeaderConfig::new(
        &args.lease_namespace,
        &format!("continuum-controller-{}", args.region),
        &args.identity,
    );
    lc.lease_duration = Duration::from_secs(args.leader_lease_seconds.max(1));
    lc.renew_deadline = lc.lease_duration * 2 / 3;
    lc.renew_every = (lc.lease_duration / 7).max(Duration::from_millis(100));
    let mut leadership = leader::acquire(client.clone(), lc).await;
    let lag: Arc<dyn LagSource> = match &args.pg_conninfo {
        Some(c) => Arc::new(PgLag(crate::adapters::postgres::PgDatabase::new(
            crate::adapters::postgres::PgConfig::new(c, &args.region, ""),
        ))),
        None => Arc::new(NoLag),
    };
    let mut settings = Settings::new(&args.region, &args.witness_token);
    settings.witness_url = args.witness_url.clone();
    settings.nats_url = args.nats_url.clone();
    settings.probes = Arc::new(KubePeerProbe::new(peer.clone()));
    settings.peer = peer;
    settings.lag = lag;
    settings.tick = Duration::from_millis(args.tick_ms.max(100));
    let ctx = Context::new(client, settings, metrics.clone());
    let run = reconcile::run(ctx, args.namespace.as_deref(), shutdown);
    let result = tokio::select! {
        () = run => Ok(()),
        lost = leadership.lost() => Err(CliError::LostLeadership(lost)),
    };
    metrics.set_ready(false);
    let _ = stop_http.send(());
    if listener.is_finished() {
        listener
            .await
            .map_err(|e| CliError::Invalid(e.to_string()))??;
    }
    result
}

/// `continuum-controller k …`.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Kubeconfig file (default: `$KUBECONFIG`, then `~/.kube/config`, then in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context of this region's cluster (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Kubeconfig contexts of the other regions' clusters (`switchover` and `approve-failback`
    /// write the request into each).
    #[arg(long = "peer-context", global = true)]
    pub peer_contexts: Vec<String>,
    /// Namespace (default: the context's, or `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub cmd: KubeCmd,
}

/// The `k` commands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KubeCmd {
    /// Table of Continuum objects: phase, primary, lease, epoch, lag, operation, conditions.
    Status {
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// `table` or `json`.
        #[arg(short = 'o', long, default_value = "table")]
        output: String,
    },
    /// What a switchover to `--to` would do now, planned by the decision core from the
    /// object's status as the lease holder's controller last wrote it (no write).
    Plan {
        /// Continuum name.
        name: String,
        /// Target region.
        #[arg(long)]
        to: String,
    },
    /// Request a planned switchover to `--to` (in every given cluster).
    Switchover {
        /// Continuum name.
        name: String,
        /// Target region.
        #[arg(long)]
        to: String,
        /// Request id (default: `sw-<unix seconds>`); a completed id never runs again.
        #[arg(long)]
        id: Option<String>,
    },
    /// Approve the pending failback to the home primary (in every given cluster).
    ApproveFailback {
        /// Continuum name.
        name: String,
        /// Request id (default: the requested one, else `fb-<unix seconds>`).
        #[arg(long)]
        id: Option<String>,
    },
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a `k` command, writing its output to stdout.
pub async fn kube_command(args: KubeArgs) -> Result<(), CliError> {
    let client = client_for(args.kubeconfig.as_ref(), args.context.as_deref()).await?;
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    match &args.cmd {
        KubeCmd::Status {
            all_namespaces,
            output,
        } => {
            let api: Api<Continuum> = if *all_namespaces {
                Api::all(client)
            } else {
                Api::namespaced(client, &ns)
            };
            let list = api.list(&ListParams::default()).await?;
            if output == "json" {
                let v: Vec<_> = list
                    .items
                    .iter()
                    .map(|c| json!({"name": c.key(), "status": c.status}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                print!("{}", status_table(&list.items));
            }
            Ok(())
        }
        KubeCmd::Plan { name, to } => {
            let api: Api<Continuum> = Api::namespaced(client, &ns);
            let obj = api.get(name).await?;
            print!("{}", plan_text(&obj, to)?);
            Ok(())
        }
        KubeCmd::Switchover { name, to, id } => {
            let id = id.clone().unwrap_or_else(|| format!("sw-{}", unix_secs()));
            let patch = json!({"spec": {"switchover": {
                "requested": true, "id": id, "targetRegion": to,
                "requestedBy": "continuum-controller k switchover"}}});
            write_everywhere(&args, client, &ns, name, &patch).await?;
            println!("continuum {ns}/{name}: switchover {id} to {to} requested");
            Ok(())
        }
        KubeCmd::ApproveFailback { name, id } => {
            let api: Api<Continuum> = Api::namespaced(client.clone(), &ns);
            let obj = api.get(name).await?;
            let id = id
                .clone()
                .or_else(|| obj.spec.failback.as_ref().and_then(|f| f.id.clone()))
                .unwrap_or_else(|| format!("fb-{}", unix_secs()));
            let patch = json!({"spec": {"failback": {
                "requested": true, "id": id, "approved": true,
                "approvedBy": "continuum-controller k approve-failback"}}});
            write_everywhere(&args, client, &ns, name, &patch).await?;
            println!("continuum {ns}/{name}: failback {id} approved");
            Ok(())
        }
    }
}

async fn write_everywhere(
    args: &KubeArgs,
    client: kube::Client,
    ns: &str,
    name: &str,
    patch: &serde_json::Value,
) -> Result<(), CliError> {
    let mut clients = vec![client];
    for c in &args.peer_contexts {
        clients.push(client_for(args.kubeconfig.as_ref(), Some(c)).await?);
    }
    for c in clients {
        let api: Api<Continuum> = Api::namespaced(c, ns);
        api.patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
    }
    Ok(())
}

/// The `k status` table (pure).
pub fn status_table(items: &[Continuum]) -> String {
    let mut out = format!(
        "{:<28} {:<13} {:<9} {:<9} {:<6} {:<7} {:<22} CONDITIONS\n",
        "NAME", "PHASE", "PRIMARY", "LEASE", "EPOCH", "LAG", "OPERATION"
    );
    for c in items {
        let (ns, name) = c.key();
        let st = c.status.clone().unwrap_or_default();
        let conds: Vec<String> = st
            .conditions
            .iter()
            .filter(|x| x.status == crate::crd::ConditionStatus::True)
            .map(|x| x.type_.clone())
            .collect();
        out.push_str(&format!(
            "{:<28} {:<13} {:<9} {:<9} {:<6} {:<7} {:<22} {}\n",
            format!("{ns}/{name}"),
            st.phase
                .map_or_else(|| "-".to_owned(), |p| format!("{p:?}")),
            st.current_primary.as_deref().unwrap_or("-"),
            st.lease_holder.as_deref().unwrap_or("-"),
            st.epoch.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            st.max_replication_lag.as_deref().unwrap_or("-"),
            st.operation
                .as_ref()
                .map_or_else(|| "-".to_owned(), |o| format!("{}:{}", o.id, o.step)),
            conds.join(",")
        ));
    }
    out
}

/// The `k plan` text (pure): the decision core's plan for a switchover to `to`, from the
/// status as the holder's controller wrote it (authority assumed fresh when `LeaseHeld=True`).
pub fn plan_text(obj: &Continuum, to: &str) -> Result<String, CliError> {
    let mut spec = obj
        .to_decide_spec()
        .map_err(|e| CliError::Invalid(e.to_string()))?;
    if !spec.regions.iter().any(|r| r == to) {
        return Err(CliError::Invalid(format!(
            "{to} is not one of {:?}",
            spec.regions
        )));
    }
    let st = obj.status.clone().unwrap_or_default();
    let holder = st.lease_holder.clone().unwrap_or_default();
    let epoch = st.epoch.and_then(|e| u64::try_from(e).ok()).unwrap_or(0);
    let region = if holder.is_empty() {
        spec.primary.clone()
    } else {
        holder.clone()
    };
    spec.switchover = Some(decide::SwitchoverRequest {
        id: "plan".to_owned(),
        target: to.to_owned(),
    });
    let now = Mono(10_000);
    let lease = contract::LeaseState {
        holder: holder.clone(),
        acquired_at: Some(contract::Millis(0)),
        expires_at: Some(contract::Millis(spec.timing.ttl_ms)),
        generation: 1,
        epoch,
        report: None,
    };
    let held = st.conditions.iter().any(|c| {
        c.type_ == crate::crd::conditions::LEASE_HELD
            && c.status == crate::crd::ConditionStatus::True
    });
    let o = decide::Observed {
        region: region.clone(),
        spec: spec.clone(),
        local: decide::Local {
            db: if st.current_primary.as_deref() == Some(region.as_str()) {
                decide::DbRole::Primary
            } else {
                decide::DbRole::Standby
            },
            read_only: false,
            drained: false,
            sync_suspended: false,
        },
        lease: Some(decide::LeaseObs {
            state: lease,
            witness_now: contract::Millis(0),
            received_at: now,
        }),
        renewed: held.then_some(decide::Renewed {
            sent_at: now,
            epoch,
        }),
        replication: decide::Replication {
            streaming: st.standby_available.unwrap_or(false),
            sync: false,
            lag_bytes: st
                .replication_lag_bytes
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(u64::MAX),
            lag_seconds: st
                .replication_lag_seconds
                .and_then(|v| u64::try_from(v).ok())
                .unwrap_or(u64::MAX),
            needs_rebuild: false,
        },
        probes: Vec::new(),
        operation: st.operation.clone(),
        completed: st.completed_requests.clone(),
        last_change: None,
    };
    let plan = decide::decide(&o, now);
    let mut out = format!(
        "continuum {}: switchover to {to}, planned from {region}'s status (lease {holder}@{epoch}, primary {})\n",
        spec.name,
        st.current_primary.as_deref().unwrap_or("-")
    );
    if plan.steps.is_empty() {
        out.push_str("  (no steps now)\n");
    }
    for (i, s) in plan.steps.iter().enumerate() {
        out.push_str(&format!("  {}. {}\n", i + 1, s.name()));
    }
    for c in &plan.conditions {
        out.push_str(&format!(
            "  condition {}: {}\n",
            crate::crd::condition_type(c.kind),
            c.message
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ConditionStatus, ContinuumStatus, Phase, StatusCondition};

    fn obj() -> Continuum {
        let mut c: Continuum = serde_json::from_value(json!({
            "apiVersion": "dr.openova.io/v1", "kind": "Continuum",
            "metadata": {"name": "shop", "namespace": "shop"},
            "spec": {"applicationRef": "shop", "primaryRegion": "eu-1",
                "hotStandbyRegions": ["us-1"],
                "leaseClient": {"kind": "cloudflare-kv", "config": {"ttlSeconds": 30, "renewSeconds": 10}},
                "rpo": "5s", "autoFailover": true}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        c.status = Some(ContinuumStatus {
            phase: Some(Phase::Healthy),
            current_primary: Some("eu-1".into()),
            lease_holder: Some("eu-1".into()),
            epoch: Some(3),
            max_replication_lag: Some("0s".into()),
            replication_lag_seconds: Some(0),
            replication_lag_bytes: Some(0),
            standby_available: Some(true),
            conditions: vec![StatusCondition {
                type_: "LeaseHeld".into(),
                status: ConditionStatus::True,
                reason: None,
                message: None,
                last_transition_time: None,
                observed_generation: None,
            }],
            ..ContinuumStatus::default()
        });
        c
    }

    #[test]
    fn the_status_table_shows_one_row_per_continuum() {
        let t = status_table(&[obj()]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("NAME"));
        assert!(lines[1].starts_with("shop/shop"));
        for col in ["Healthy", "eu-1", "3", "0s", "LeaseHeld"] {
            assert!(lines[1].contains(col), "{col} in {}", lines[1]);
        }
    }

    #[test]
    fn plan_shows_the_switchover_sequence_from_the_holders_status() {
        let t = plan_text(&obj(), "us-1").unwrap_or_else(|e| panic!("{e}"));
        assert!(t.contains("drain"), "{t}");
        assert!(t.contains("demote"), "{t}");
        assert!(plan_text(&obj(), "ap-9").is_err());
    }
}
