//! [`HarnessError`]: everything that can go wrong while starting, driving or stopping a harness.

use std::time::Duration;

/// Shorthand for results of harness operations.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;

/// Why a harness could not start, answer or stop.
///
/// Every variant carries enough context (the command, the log tail, the last error seen) to
/// debug a failing test from its output alone.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A required program or file is not installed. Tests never skip on this: they fail loudly
    /// and say how to install it.
    #[error("{what} not found (looked in: {looked_in}); install it with `{install}`")]
    MissingBinary {
        /// The program or file that is missing.
        what: String,
        /// Where it was searched for.
        looked_in: String,
        /// The command that installs it.
        install: String,
    },

    /// A filesystem or process-spawn operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A helper command (initdb, pg_ctl, sqlite3, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}):\n{output}")]
    Command {
        /// The command line that was run.
        command: String,
        /// Its exit status.
        status: String,
        /// Its captured stdout and stderr.
        output: String,
    },

    /// A server process exited while it was expected to run.
    #[error("{what} exited unexpectedly ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// Which server.
        what: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },

    /// A server could not bind a port another process took first (harnesses retry on this).
    #[error("{what} could not bind its port; last log lines:\n{log_tail}")]
    PortTaken {
        /// Which server.
        what: String,
        /// The end of its log.
        log_tail: String,
    },

    /// A condition was not met before its deadline.
    #[error("timed out after {after:?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it was awaited.
        after: Duration,
        /// The last error or value seen while polling.
        last: String,
    },

    /// An HTTP request to a harnessed server failed at the transport level.
    #[error("{context}: {source}")]
    Http {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// A harnessed server's HTTP API answered with an error status.
    #[error("{context}: HTTP {status}: {body}")]
    Api {
        /// What was being done.
        context: String,
        /// The HTTP status code.
        status: u16,
        /// The response body.
        body: String,
    },

    /// A PostgreSQL query or connection failed.
    #[error("{context}: {source}")]
    Postgres {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: tokio_postgres::Error,
    },

    /// A system call failed (signalling a server, chown to the `postgres` user, a user lookup).
    #[error("{context}: {source}")]
    Sys {
        /// What was being done.
        context: String,
        /// The underlying errno.
        #[source]
        source: nix::Error,
    },

    /// An operation cannot work in the harness's current state (e.g. killing a server that is
    /// not running), or a search ran out of candidates (e.g. no free port).
    #[error("{context}: {detail}")]
    State {
        /// What was being done.
        context: String,
        /// Why it cannot be done.
        detail: String,
    },

    /// Output of a harnessed process could not be understood.
    #[error("{context}: {detail}")]
    Parse {
        /// What was being parsed.
        context: String,
        /// What was wrong with it.
        detail: String,
    },
}

impl HarnessError {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// Wraps a reqwest error with what was being done.
    pub(crate) fn http(context: impl Into<String>) -> impl FnOnce(reqwest::Error) -> Self {
        let context = context.into();
        move |source| Self::Http { context, source }
    }

    /// Wraps a tokio-postgres error with what was being done.
    pub(crate) fn pg(context: impl Into<String>) -> impl FnOnce(tokio_postgres::Error) -> Self {
        let context = context.into();
        move |source| Self::Postgres { context, source }
    }
}
