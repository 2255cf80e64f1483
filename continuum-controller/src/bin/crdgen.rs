//! `crdgen`: prints the Continuum CRD (`continuums.dr.openova.io`) as YAML, writes it to a file,
//! or checks a committed file for drift.
//!
//! ```text
//! cargo run -p continuum-controller --bin crdgen                       # print
//! cargo run -p continuum-controller --bin crdgen -- --out charts/continuum-controller/crds/continuums.dr.openova.io.yaml
//! cargo run -p continuum-controller --bin crdgen -- --check charts/continuum-controller/crds/continuums.dr.openova.io.yaml
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;

/// Generate the Continuum CRD from the Rust types.
#[derive(Debug, Parser)]
#[command(name = "crdgen", version, about)]
struct Args {
    /// Write the CRD to this file instead of standard output.
    #[arg(long, conflicts_with = "check")]
    out: Option<PathBuf>,
    /// Compare this file with the generated CRD; exit 1 when they differ (drift).
    #[arg(long)]
    check: Option<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    let Args { out, check } = Args::parse();
    let yaml = continuum_controller::crd::crd_yaml()?;
    if let Some(path) = check {
        let committed = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        if committed == yaml {
            return Ok(ExitCode::SUCCESS);
        }
        let line = committed
            .lines()
            .zip(yaml.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(yaml.lines().count()))
            + 1;
        eprintln!(
            "crdgen: {} is out of date with the Rust types (first difference at line {line}); \
             regenerate it with `cargo run -p continuum-controller --bin crdgen -- --out {}`",
            path.display(),
            path.display()
        );
        return Ok(ExitCode::from(1));
    }
    match out {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&path, &yaml).with_context(|| format!("writing {}", path.display()))?;
        }
        None => print!("{yaml}"),
    }
    Ok(ExitCode::SUCCESS)
}
