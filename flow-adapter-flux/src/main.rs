//! `flow-adapter-flux`: parse flags (env twins), validate (exit 64), then `emit` (with the
//! health server, until SIGTERM) or `recover` (once; exit 1 on guardrail or failure).

use std::sync::Arc;

use clap::Parser;
use flow_adapter_flux::args::{Args, Command, EX_USAGE};
use flow_adapter_flux::http::{HttpState, serve};
use flow_adapter_flux::{Health, Metrics, emit, recover};

fn init_logs(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Unwritable log lines are dropped, never reported with a panicking `eprintln!`.
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .log_internal_errors(false);
    if format == "json" {
        b.json().init();
    } else {
        b.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(EX_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return Ok(());
        }
    };
    if !matches!(args.log_format.as_str(), "text" | "json") {
        eprintln!(
            "flow-adapter-flux: invalid configuration: --log-format / FLOW_ADAPTER_LOG_FORMAT must be text or json"
        );
        std::process::exit(EX_USAGE);
    }
    // kube's rustls connector needs one process-wide provider; Err means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match args.command {
        Command::Emit(e) => {
            let hostname = std::env::var("HOSTNAME").unwrap_or_default();
            let settings = match e.config(&hostname) {
                Ok(s) => s,
                Err(reason) => {
                    eprintln!("flow-adapter-flux: invalid configuration: {reason}");
                    std::process::exit(EX_USAGE);
                }
            };
            init_logs(&args.log_format);
            let client = kube::Client::try_default().await?;
            let metrics = Arc::new(Metrics::new());
            let health = Arc::new(Health::default());
            let listener = tokio::net::TcpListener::bind(settings.health).await?;
            tracing::info!(
                health = %listener.local_addr()?,
                region = %settings.emit.ctx.region,
                flow = %settings.emit.ctx.flow_id,
                namespace = ?settings.emit.ctx.namespace,
                leader_election = settings.lease.is_some(),
                "flow-adapter-flux emit starting"
            );
            let http = serve(
                listener,
                HttpState {
                    metrics: metrics.clone(),
                    health: health.clone(),
                },
                shutdown_signal(),
            );
            let run = emit::run(client, settings.emit, settings.lease, metrics, health);
            tokio::select! {
                r = http => r?,
                r = run => r?,
            }
            tracing::info!("flow-adapter-flux stopped");
            Ok(())
        }
        Command::Recover(r) => {
            let cfg = match r.config() {
                Ok(c) => c,
                Err(reason) => {
                    eprintln!("flow-adapter-flux: invalid configuration: {reason}");
                    std::process::exit(EX_USAGE);
                }
            };
            init_logs(&args.log_format);
            let client = kube::Client::try_default().await?;
            let now = k8s_openapi::jiff::Timestamp::now().as_millisecond();
            let summary = recover::run(client, &cfg, now).await?;
            std::process::exit(summary.exit_code());
        }
    }
}
