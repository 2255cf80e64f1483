//! `continuum-controller`: for now, prints what the decision core would do for an observed
//! state (`plan`), and a sample observed state to start from (`sample`). The standalone `run`,
//! `status`, `lab` and `drill` commands come with the adapters.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use continuum_controller::decide::{self, Mono, Observed};

/// DR orchestrator for one region of a Continuum.
#[derive(Debug, Parser)]
#[command(name = "continuum-controller", version, about)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Print the plan the decision core makes for an observed state (JSON), without doing it.
    Plan {
        /// File with the observed state as JSON (see `sample`).
        #[arg(long, env = "CONTINUUM_OBSERVED")]
        observed: std::path::PathBuf,
        /// Local monotonic "now" in milliseconds, on the same clock as the file's instants.
        #[arg(long, default_value_t = 0)]
        now_ms: i64,
    },
    /// Print a sample observed state: primary `a` renewed at 0 (plan it at 10000: renew; at
    /// 18000: self-fence).
    Sample,
}

fn main() -> anyhow::Result<()> {
    let Args { cmd } = Args::parse();
    match cmd {
        Cmd::Plan { observed, now_ms } => {
            let body = std::fs::read(&observed)
                .with_context(|| format!("reading {}", observed.display()))?;
            let o: Observed = serde_json::from_slice(&body).context("decoding observed state")?;
            if let Err(e) = o.spec.timing.validate() {
                eprintln!("invalid timing: {e}");
                std::process::exit(64);
            }
            let plan = decide::decide(&o, Mono(now_ms));
            println!("{}", serde_json::to_string_pretty(&plan)?);
        }
        Cmd::Sample => println!("{}", serde_json::to_string_pretty(&decide::sample())?),
    }
    Ok(())
}
