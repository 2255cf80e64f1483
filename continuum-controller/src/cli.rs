//! What every binary of the Continuum crates starts with: the tracing subscriber (RUST_LOG,
//! default `info`) and the shutdown signal (SIGINT or SIGTERM).

/// Installs the `tracing` subscriber: `RUST_LOG` or `info`.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // A log line that cannot be written (a full disk under stdout) is dropped. The default
        // reports it with `eprintln!`, which PANICS when stderr is on the same full disk: the
        // lab's state-directory fault killed the controller (exit 101) that way.
        .log_internal_errors(false)
        .init();
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = term => {}
    }
}
