//! [`NatsServer`]: a real `nats-server` with JetStream on a dynamic loopback port.
//!
//! Started as `nats-server -a 127.0.0.1 -p -1 -m -1 -js -sd <tmp>/store --ports_file_dir <tmp>`;
//! the server picks its own free ports and writes them to a ports file, so there is no port race.
//! Ready = the monitoring endpoint `/healthz` answers 200. [`NatsServer::restart`] keeps the ports
//! and the JetStream store, so clients reconnect and streams survive.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{ServerProcess, find_program, http_client};
use crate::{HarnessError, Result};

const INSTALL: &str = "scripts/setup.sh (or: apt-get install -y nats-server)";
/// How long a start or restart may take before it is an error.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running `nats-server` with JetStream, owned by the test. Drop kills it and deletes its store.
#[derive(Debug)]
pub struct NatsServer {
    // Declared before `dir` so the server is killed before its directory is removed.
    process: ServerProcess,
    binary: PathBuf,
    port: u16,
    monitor_port: u16,
    /// The address it listens on (client and monitoring).
    ip: Ipv4Addr,
    /// The network namespace it runs in (`None`: this one).
    netns: Option<String>,
    dir: TempDir,
}

impl NatsServer {
    /// Starts a fresh server on 127.0.0.1 with an empty JetStream store and waits until it is
    /// healthy.
    pub async fn start() -> Result<Self> {
        Self::start_on(Ipv4Addr::LOCALHOST).await
    }

    /// As [`NatsServer::start`], listening on `ip` (an address of this host, e.g. a bridge
    /// that network namespaces reach it through).
    pub async fn start_on(ip: Ipv4Addr) -> Result<Self> {
        Self::start_in(None, ip).await
    }

    /// As [`NatsServer::start_on`], the server running in network namespace `netns` when
    /// given (`ip netns exec`), `ip` being an address of that namespace. A restart
    /// ([`NatsServer::restart`]) runs it on this namespace's side again.
    pub async fn start_in(netns: Option<&str>, ip: Ipv4Addr) -> Result<Self> {
        let binary = find_program("nats-server", INSTALL)?;
        let dir = tempfile::Builder::new()
            .prefix("testkit-nats-")
            .tempdir()
            .map_err(HarnessError::io("creating the NATS temp dir"))?;
        let process = spawn(&binary, dir.path(), ip, None, netns)?;
        let mut server = Self {
            process,
            binary,
            port: 0,
            monitor_port: 0,
            ip,
            netns: netns.map(str::to_owned),
            dir,
        };
        let (port, monitor_port) = server.read_ports_file().await?;
        server.port = port;
        server.monitor_port = monitor_port;
        server.wait_healthy().await?;
        Ok(server)
    }

    /// The client URL, `nats://127.0.0.1:PORT` (or the address it was started on).
    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.ip, self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The monitoring URL, `http://127.0.0.1:PORT` (`/healthz`, `/jsz`, `/varz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.monitor_port)
    }

    /// The JetStream store directory (`-sd`).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Stops the server gracefully (SIGTERM, then SIGKILL after 10 s) and starts it again on the
    /// same ports with the same JetStream store. Connected clients reconnect on their own.
    pub async fn restart(&mut self) -> Result<()> {
        self.process.terminate(Duration::from_secs(10)).await?;
        self.process = spawn(
            &self.binary,
            self.dir.path(),
            self.ip,
            Some((self.port, self.monitor_port)),
            self.netns.as_deref(),
        )?;
        self.wait_healthy().await
    }

    async fn read_ports_file(&mut self) -> Result<(u16, u16)> {
        let path = self
            .dir
            .path()
            .join(format!("nats-server_{}.ports", self.process.pid()));
        let process = &mut self.process;
        let deadline = tokio::time::Instant::now() + START_TIMEOUT;
        loop {
            process.check_alive()?;
            let last = match std::fs::read_to_string(&path) {
                Ok(text) => match parse_ports(&text) {
                    Ok(ports) => return Ok(ports),
                    Err(e) => e,
                },
                Err(e) => e.to_string(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("nats-server ports file {}", path.display()),
                    after: START_TIMEOUT,
                    last: format!("{last}; log:\n{}", process.log_tail(20)),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_healthy(&mut self) -> Result<()> {
        let url = format!("{}/healthz", self.monitor_url());
        let client = http_client()?;
        self.process
            .wait_ready("nats-server /healthz", START_TIMEOUT, || async {
                let resp = client.get(&url).send().await.map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("HTTP {}", resp.status()))
                }
            })
            .await
    }
}

fn spawn(
    binary: &Path,
    dir: &Path,
    ip: Ipv4Addr,
    ports: Option<(u16, u16)>,
    netns: Option<&str>,
) -> Result<ServerProcess> {
    let (port, monitor) = match ports {
        Some((p, m)) => (p.to_string(), m.to_string()),
        None => ("-1".to_owned(), "-1".to_owned()),
    };
    let mut cmd = crate::process::command_in(netns, binary);
    cmd.arg("-a")
        .arg(ip.to_string())
        .arg("-p")
        .arg(&port)
        .arg("-m")
        .arg(&monitor)
        .arg("-js")
        .arg("-sd")
        .arg(dir.join("store"))
        .arg("--ports_file_dir")
        .arg(dir);
    ServerProcess::spawn("nats-server", cmd, &dir.join("nats.log"), false)
}

/// Parses `{"nats":["nats://127.0.0.1:P"],"monitoring":["http://127.0.0.1:M"]}`.
fn parse_ports(text: &str) -> std::result::Result<(u16, u16), String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let port_of = |key: &str| -> std::result::Result<u16, String> {
        let url = v[key][0]
            .as_str()
            .ok_or_else(|| format!("no `{key}` entry in ports file: {text}"))?;
        url.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .ok_or_else(|| format!("no port in `{url}`"))
    };
    Ok((port_of("nats")?, port_of("monitoring")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_file_is_parsed() {
        let text = r#"{"nats":["nats://127.0.0.1:36541"],"monitoring":["http://127.0.0.1:40775"]}"#;
        assert_eq!(parse_ports(text).unwrap(), (36541, 40775));
        assert!(parse_ports("{}").is_err());
    }
}
