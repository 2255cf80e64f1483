//! [`Workerd`]: the real `workerd` runtime serving a Worker bundle directory on loopback.
//!
//! workerd is driven through Miniflare (pinned in `tools/node`) by `testkit/workerd/run.mjs`: a
//! Node runner that takes a JSON config, prints the URL when ready and disposes Miniflare (which
//! stops workerd) on SIGTERM or when its stdin closes. Node runs in its own process group and
//! drop SIGKILLs the whole group, so workerd never survives the harness; if the test process dies
//! without dropping, the runner sees its stdin close and shuts down by itself.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use tempfile::TempDir;

use crate::process::{ServerProcess, find_program, require_file};
use crate::{HarnessError, Result};

const NODE_INSTALL: &str = "scripts/setup.sh (or: apt-get install -y nodejs npm)";
const MINIFLARE_INSTALL: &str = "scripts/setup.sh (or: cd tools/node && npm ci)";
/// workerd needs 1.5 s on two idle cores; give a loaded machine plenty more.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Compatibility date used unless the config sets one.
pub const DEFAULT_COMPATIBILITY_DATE: &str = "2025-01-01";

/// What to serve: a bundle directory and its bindings. Build it with [`WorkerdConfig::new`] and
/// the builder methods.
#[derive(Debug, Clone)]
pub struct WorkerdConfig {
    bundle_dir: PathBuf,
    main: String,
    compatibility_date: String,
    compatibility_flags: Vec<String>,
    bindings: BTreeMap<String, String>,
    kv_namespaces: Vec<String>,
    durable_objects: BTreeMap<String, (String, bool)>,
    persist_dir: Option<PathBuf>,
}

impl WorkerdConfig {
    /// Serves `bundle_dir` (Miniflare's `modulesRoot`) with entry module `main`, a path relative
    /// to it. `**/*.js` load as ES modules and `**/*.wasm` as compiled wasm modules.
    pub fn new(bundle_dir: impl Into<PathBuf>, main: impl Into<String>) -> Self {
        Self {
            bundle_dir: bundle_dir.into(),
            main: main.into(),
            compatibility_date: DEFAULT_COMPATIBILITY_DATE.into(),
            compatibility_flags: Vec::new(),
            bindings: BTreeMap::new(),
            kv_namespaces: Vec::new(),
            durable_objects: BTreeMap::new(),
            persist_dir: None,
        }
    }

    /// Sets the compatibility date (default [`DEFAULT_COMPATIBILITY_DATE`]).
    pub fn compatibility_date(mut self, date: impl Into<String>) -> Self {
        self.compatibility_date = date.into();
        self
    }

    /// Adds a compatibility flag (e.g. `nodejs_compat`).
    pub fn compatibility_flag(mut self, flag: impl Into<String>) -> Self {
        self.compatibility_flags.push(flag.into());
        self
    }

    /// Adds a plain-text binding (a var) `env.NAME = value`.
    pub fn binding(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.bindings.insert(name.into(), value.into());
        self
    }

    /// Adds a KV namespace binding.
    pub fn kv_namespace(mut self, binding: impl Into<String>) -> Self {
        self.kv_namespaces.push(binding.into());
        self
    }

    /// Adds a Durable Object namespace `binding` for the exported class `class_name`, backed by
    /// SQLite or by the key-value store.
    pub fn durable_object(
        mut self,
        binding: impl Into<String>,
        class_name: impl Into<String>,
        use_sqlite: bool,
    ) -> Self {
        self.durable_objects
            .insert(binding.into(), (class_name.into(), use_sqlite));
        self
    }

    /// Keeps KV and Durable Object state in `dir` (it survives [`Workerd::restart`] and new
    /// instances given the same dir). Without it, state is in memory.
    pub fn persist_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.persist_dir = Some(dir.into());
        self
    }

    /// The JSON the runner reads.
    fn to_json(&self, node_tools: &Path, port: u16, ready_file: &Path) -> serde_json::Value {
        let durable_objects: serde_json::Map<String, serde_json::Value> = self
            .durable_objects
            .iter()
            .map(|(binding, (class, sqlite))| {
                (
                    binding.clone(),
                    json!({"className": class, "useSQLite": sqlite}),
                )
            })
            .collect();
        json!({
            "nodeTools": node_tools,
            "bundleDir": self.bundle_dir,
            "main": self.main,
            "port": port,
            "compatibilityDate": self.compatibility_date,
            "compatibilityFlags": self.compatibility_flags,
            "bindings": self.bindings,
            "kvNamespaces": self.kv_namespaces,
            "durableObjects": durable_objects,
            "persistDir": self.persist_dir,
            "readyFile": ready_file,
        })
    }
}

/// A running workerd (through Miniflare) serving one Worker. Drop kills the runner's whole
/// process group and deletes its temp dir (not the bundle or the persist dir).
#[derive(Debug)]
pub struct Workerd {
    // Declared before `dir` so the runner is killed before its directory is removed.
    process: ServerProcess,
    url: String,
    port: u16,
    config: WorkerdConfig,
    dir: TempDir,
}

impl Workerd {
    /// Starts the Worker on a free loopback port and waits until workerd serves it.
    pub async fn start(config: WorkerdConfig) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("testkit-workerd-")
            .tempdir()
            .map_err(HarnessError::io("creating the workerd temp dir"))?;
        let (process, url, port) = launch(&config, dir.path(), 0).await?;
        Ok(Self {
            process,
            url,
            port,
            config,
            dir,
        })
    }

    /// The Worker's base URL, `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The port workerd listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The end of the runner's log (Miniflare, workerd and the Worker's console output).
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Stops the runner cleanly (SIGTERM; SIGKILL to the group after 10 s) and starts it again on
    /// the same port; persisted state is kept.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.terminate(Duration::from_secs(10)).await?;
        let (process, url, _) = launch(&self.config, self.dir.path(), self.port).await?;
        self.process = process;
        self.url = url;
        Ok(())
    }

    /// Stops the runner cleanly (SIGTERM, then SIGKILL to the group after 10 s).
    pub async fn shutdown(mut self) -> Result<()> {
        self.process.terminate(Duration::from_secs(10)).await?;
        Ok(())
    }
}

/// Spawns the runner and waits for its ready file; returns the process, URL and port.
async fn launch(
    config: &WorkerdConfig,
    dir: &Path,
    port: u16,
) -> Result<(ServerProcess, String, u16)> {
    let node = find_program("node", NODE_INSTALL)?;
    let tools = node_tools_dir();
    require_file(
        &tools.join("node_modules/miniflare/package.json"),
        MINIFLARE_INSTALL,
    )?;
    require_file(
        &tools.join("node_modules/@cloudflare/workerd-linux-64/bin/workerd"),
        MINIFLARE_INSTALL,
    )?;
    let runner = runner_path();
    require_file(
        &runner,
        "the testkit crate's workerd/run.mjs (part of this repo)",
    )?;
    require_file(
        &config.bundle_dir.join(&config.main),
        "the Worker bundle (build it first)",
    )?;

    let ready_file = dir.join("ready");
    let _ = std::fs::remove_file(&ready_file);
    let config_file = dir.join("config.json");
    let json = config.to_json(&tools, port, &ready_file);
    std::fs::write(&config_file, json.to_string())
        .map_err(HarnessError::io("writing the workerd runner config"))?;

    // Miniflare leaves its scratch dir in the temp dir; keep that inside ours so drop removes it.
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).map_err(HarnessError::io("creating the runner's TMPDIR"))?;
    let mut cmd = Command::new(node);
    cmd.arg(&runner)
        .arg(&config_file)
        .current_dir(dir)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::piped());
    // The runner's stdin pipe stays open inside `process` for as long as it lives; the runner
    // shuts down when it closes.
    let mut process = ServerProcess::spawn("workerd runner", cmd, &dir.join("workerd.log"), true)?;

    process
        .wait_ready("workerd to serve the Worker", START_TIMEOUT, || {
            let ready = ready_file.exists();
            async move {
                if ready {
                    Ok(())
                } else {
                    Err("runner has not reported ready".to_owned())
                }
            }
        })
        .await?;
    let url = std::fs::read_to_string(&ready_file)
        .map_err(HarnessError::io("reading the workerd ready file"))?
        .trim()
        .to_owned();
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| HarnessError::Parse {
            context: "workerd ready URL".into(),
            detail: format!("no port in `{url}`"),
        })?;
    Ok((process, url, port))
}

/// `tools/node` of this workspace.
fn node_tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/node")
}

/// `testkit/workerd/run.mjs`.
pub fn runner_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workerd/run.mjs")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_has_the_runner_fields() {
        let cfg = WorkerdConfig::new("/b", "index.js")
            .binding("GREETING", "hello")
            .kv_namespace("CONFIG")
            .durable_object("LEASES", "LeaseObject", true)
            .persist_dir("/p");
        let v = cfg.to_json(Path::new("/tools"), 0, Path::new("/r"));
        assert_eq!(v["bundleDir"], "/b");
        assert_eq!(v["main"], "index.js");
        assert_eq!(v["bindings"]["GREETING"], "hello");
        assert_eq!(v["kvNamespaces"][0], "CONFIG");
        assert_eq!(v["durableObjects"]["LEASES"]["className"], "LeaseObject");
        assert_eq!(v["durableObjects"]["LEASES"]["useSQLite"], true);
        assert_eq!(v["persistDir"], "/p");
    }
}
