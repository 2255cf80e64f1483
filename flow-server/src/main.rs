//! `flow-server`: parse flags (env twins), validate (exit 64), log, bind, serve until SIGTERM.

use clap::Parser;
use flow_server::args::{Args, EX_USAGE};
use flow_server::{AppState, serve, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            std::process::exit(EX_USAGE);
        }
        Err(e) => {
            // --help, --version
            let _ = e.print();
            return Ok(());
        }
    };
    let config = match args.config() {
        Ok(c) => c,
        Err(reason) => {
            eprintln!("flow-server: invalid configuration: {reason}");
            std::process::exit(EX_USAGE);
        }
    };
    telemetry::init(config.log_format);
    raise_fd_limit();
    if !config.listen.ip().is_loopback() && config.auth.is_open() {
        tracing::warn!(
            listen = %config.listen,
            "!!! NO TOKENS CONFIGURED on a non-loopback address: anyone who can reach this port can post, delete and read every flow. Set FLOW_SERVER_INGEST_TOKENS and FLOW_SERVER_READ_TOKENS."
        );
    } else if !config.listen.ip().is_loopback() {
        for (side, open) in [
            (
                "ingest",
                config.auth.is_open_for(flow_server::auth::Access::Ingest),
            ),
            (
                "read",
                config.auth.is_open_for(flow_server::auth::Access::Read),
            ),
        ] {
            if open {
                tracing::warn!(listen = %config.listen, side, "no tokens for this side on a non-loopback address: it is open to anyone who can reach the port");
            }
        }
    }
    let state = AppState::connect(&config).await?;
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    tracing::info!(
        listen = %listener.local_addr()?,
        backend = ?config.backend,
        ring_capacity = config.hub.ring_capacity,
        "flow-server listening"
    );
    serve(listener, state, shutdown::signal()).await?;
    tracing::info!("flow-server stopped");
    Ok(())
}

/// Many idle SSE connections need many descriptors: raise the soft limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(error = %e, soft, hard, "cannot raise the open-file limit");
    }
}
