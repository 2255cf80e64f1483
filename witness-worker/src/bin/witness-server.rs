//! `witness-server`: the lease witness as a native service, for tests, the lab, and operators
//! who run their witness in a third site. Same HTTP API as the Cloudflare Worker.

use anyhow::Context;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use witness_worker::auth::Tokens;
use witness_worker::server::{Witness, serve, system_clock};
use witness_worker::store::{FileStore, StartMode, StoreError};

/// Lease witness with compare-and-set, fencing epochs and idempotent retries.
///
/// API: GET|PUT|DELETE /lease/<slot> (bearer token, If-Match: <generation>), GET /healthz,
/// GET /metrics. State is fsynced to --state before any answer.
///
/// The state file must exist: a witness that started empty would grant epochs it has already
/// granted. Create it on the first start with --init (refused when the state file exists, so
/// a restart script that keeps --init cannot wipe it); orchestrators that pass the same flags
/// on every start use --init-if-new-volume instead. Beside the state a marker
/// `<state>.created` lets a later start tell a lost state from a new one: a lost state is
/// refused even with --init (restore it from a backup).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "WITNESS_LISTEN_ADDR", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// State file (JSON; must exist unless --init or --init-if-new-volume; keep it on durable
    /// storage).
    #[arg(long, env = "WITNESS_STATE")]
    state: PathBuf,
    /// First start of a new witness: create the state file, then serve. Refused when the state
    /// file already exists (it is never overwritten) or when its marker says it was lost.
    #[arg(long, env = "WITNESS_INIT", conflicts_with = "init_if_new_volume")]
    init: bool,
    /// For orchestrators that pass the same flags on every start (the Helm chart): open the
    /// state file when it exists; create it only when its directory exists and is empty apart
    /// from lost+found (a new volume); refuse otherwise.
    #[arg(long, env = "WITNESS_INIT_IF_NEW_VOLUME")]
    init_if_new_volume: bool,
    /// Tokens file: YAML map of bearer token -> what it is bound to. `tok-a: {holders:
    /// [region-a], slots: [app-1]}` may act as region-a on slot app-1 only (403
    /// forbidden_slot elsewhere); the list form `tok-a: [region-a]` and an object without
    /// `slots` allow every slot. `"*"` = any holder / every slot.
    #[arg(long, env = "WITNESS_TOKENS")]
    tokens: PathBuf,
}

fn load_tokens(path: &PathBuf) -> anyhow::Result<Tokens> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading tokens file {}", path.display()))?;
    let tokens: Tokens = serde_yaml::from_str(&text).with_context(|| {
        format!(
            "tokens file {} is not a map of token -> [holders] or token -> {{holders: [..], slots: [..]}}",
            path.display()
        )
    })?;
    let tokens = tokens.validated()?;
    anyhow::ensure!(
        !tokens.is_empty(),
        "tokens file {} has no tokens; every request would be refused",
        path.display()
    );
    Ok(tokens)
}

/// What to do about a state file that cannot be opened, in terms of this command's flags.
fn with_hint(e: StoreError, mode: StartMode) -> anyhow::Error {
    let hint = match (&e, mode) {
        (StoreError::Missing { .. }, _) => {
            "if this is the first start of a new witness, start it once with --init \
             (WITNESS_INIT=true) to create the state file; otherwise restore the state file"
        }
        (StoreError::Exists { .. }, _) => {
            "start without --init: the existing state is kept; remove --init from restart scripts"
        }
        (StoreError::Lost { .. }, _) => {
            "restore the state file from a backup (--init does not apply to a lost state)"
        }
        (StoreError::NotNewVolume { .. } | StoreError::NoDirectory { .. }, _) => {
            "--init-if-new-volume only creates the state in a new, empty volume; use --init \
             to create it explicitly"
        }
        _ => return e.into(),
    };
    anyhow::anyhow!("{e}\nhint: {hint}")
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        // Unwritable log lines are dropped, never reported with a panicking `eprintln!`.
        .log_internal_errors(false)
        .init();
    let Args {
        listen,
        state,
        tokens,
        init,
        init_if_new_volume,
    } = Args::parse();
    let mode = match (init, init_if_new_volume) {
        (true, _) => StartMode::Init,
        (false, true) => StartMode::InitIfNewVolume,
        (false, false) => StartMode::Existing,
    };
    let setup = (|| -> anyhow::Result<_> {
        let tokens = load_tokens(&tokens)?;
        let store = FileStore::start(&state, mode).map_err(|e| with_hint(e, mode))?;
        Ok((tokens, store))
    })();
    let (tokens, store) = match setup {
        Ok(x) => x,
        Err(e) => {
            eprintln!("witness-server: {e:#}");
            std::process::exit(64);
        }
    };
    let n = tokens.len();
    let witness = Witness::new(store, tokens, system_clock());
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("witness-server: cannot listen on {listen}: {e}");
            std::process::exit(69);
        }
    };
    tracing::info!(%listen, state = %state.display(), ?mode, tokens = n, "witness-server listening");
    if let Err(e) = serve(listener, witness, shutdown_signal()).await {
        eprintln!("witness-server: {e}");
        std::process::exit(1);
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
