//! [`PowerDns`]: a real PowerDNS Authoritative server (4.7) with the gsqlite3 backend, LUA records
//! and the HTTP API, on free loopback ports.
//!
//! Each instance has its own temp dir holding `pdns.conf`, the SQLite database (schema loaded with
//! the `sqlite3` CLI), the control socket and the log, so any number of instances can run at once.
//! Packet and query caches are off and LUA health checks run every second, so a record change or a
//! backend flip shows in the next answer. Ready = the API answers and DNS accepts TCP.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use serde_json::json;
use tempfile::TempDir;

use crate::process::{ServerProcess, find_program, http_client, random_hex, require_file, run};
use crate::{HarnessError, Result};

const INSTALL: &str =
    "scripts/setup.sh (or: apt-get install -y pdns-server pdns-backend-sqlite3 sqlite3)";
/// The gsqlite3 schema shipped by `pdns-backend-sqlite3`.
const SCHEMA: &str = "/usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql";
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Starts retried with fresh ports when another process took one first.
const START_ATTEMPTS: usize = 5;

/// A running PowerDNS Authoritative server, owned by the test. Drop kills it and deletes its data.
#[derive(Debug)]
pub struct PowerDns {
    // Declared before `dir` so the server is killed before its directory is removed.
    process: ServerProcess,
    dns_port: u16,
    web_port: u16,
    /// The address both listeners are on.
    ip: Ipv4Addr,
    api_key: String,
    http: reqwest::Client,
    dir: TempDir,
}

impl PowerDns {
    /// Starts a fresh server on 127.0.0.1 with an empty database and waits until its API and
    /// DNS answer.
    pub async fn start() -> Result<Self> {
        Self::start_on(Ipv4Addr::LOCALHOST).await
    }

    /// As [`PowerDns::start`], with both listeners on `ip` (an address of this host, e.g. a
    /// bridge that network namespaces reach it through); the API also admits 10.0.0.0/8.
    pub async fn start_on(ip: Ipv4Addr) -> Result<Self> {
        Self::start_in(None, ip).await
    }

    /// As [`PowerDns::start_on`], the server running in network namespace `netns` when given
    /// (`ip netns exec`, which execs: the process is the server), `ip` being an address of
    /// that namespace.
    pub async fn start_in(netns: Option<&str>, ip: Ipv4Addr) -> Result<Self> {
        let binary = find_program("pdns_server", INSTALL)?;
        let sqlite = find_program("sqlite3", INSTALL)?;
        require_file(Path::new(SCHEMA), INSTALL)?;
        let mut dir = tempfile::Builder::new()
            .prefix("testkit-pdns-")
            .tempdir()
            .map_err(HarnessError::io("creating the PowerDNS temp dir"))?;
        let db = dir.path().join("pdns.sqlite3");
        let schema = std::fs::File::open(SCHEMA).map_err(HarnessError::io(SCHEMA))?;
        run(tokio::process::Command::new(&sqlite)
            .arg("-bail")
            .arg(&db)
            .stdin(std::process::Stdio::from(schema)))
        .await?;
        let api_key = random_hex(16)?;
        let http = http_client()?;

        let mut last_err = None;
        for attempt in 0..START_ATTEMPTS {
            let dns_port = crate::free_udp_tcp_port()?;
            let web_port = crate::free_port()?;
            let conf = config(dir.path(), &db, ip, dns_port, web_port, &api_key);
            std::fs::write(dir.path().join("pdns.conf"), conf)
                .map_err(HarnessError::io("writing pdns.conf"))?;
            let mut cmd = crate::process::command_in(netns, &binary);
            cmd.arg(format!("--config-dir={}", dir.path().display()))
                .current_dir(dir.path());
            let log = dir.path().join(format!("pdns-{attempt}.log"));
            // A DNS bind failure ends pdns_server; a webserver bind failure only logs.
            let process = ServerProcess::spawn("pdns_server", cmd, &log, false)?
                .with_port_taken_markers(&["Address already in use"]);
            let mut server = Self {
                process,
                dns_port,
                web_port,
                ip,
                api_key: api_key.clone(),
                http: http.clone(),
                dir,
            };
            match server.wait_ready().await {
                Ok(()) => return Ok(server),
                Err(e @ HarnessError::PortTaken { .. }) => {
                    last_err = Some(e);
                    dir = take_dir(server);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| HarnessError::State {
            context: "starting PowerDNS".into(),
            detail: "no attempt made".into(),
        }))
    }

    /// The DNS listener (UDP and TCP) on 127.0.0.1 (or the address it was started on).
    pub fn dns_addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.dns_port))
    }

    /// The webserver root, `http://127.0.0.1:PORT` (or the address it was started on); the
    /// API lives under `/api/v1`.
    pub fn api_url(&self) -> String {
        format!("http://{}:{}", self.ip, self.web_port)
    }

    /// The API key (send it as `X-API-Key`); random per instance.
    pub fn api_key(&self) -> &str {
        &self.api_key
    }

    /// The directory holding `pdns.conf`, the database and the logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's current log file.
    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Creates a Native zone with `ns1.<zone>` as NS and an explicit SOA (minimum TTL 60).
    /// `zone` may omit the trailing dot.
    pub async fn create_zone(&self, zone: &str) -> Result<()> {
        let zone = canonical(zone);
        let body = json!({
            "name": zone,
            "kind": "Native",
            "nameservers": [format!("ns1.{zone}")],
            "rrsets": [{
                "name": zone,
                "type": "SOA",
                "ttl": 60,
                "records": [{
                    "content": format!("ns1.{zone} hostmaster.{zone} 1 10800 3600 604800 60"),
                    "disabled": false,
                }],
            }],
        });
        let url = format!("{}/zones", self.server_url());
        self.send(
            format!("creating zone {zone}"),
            self.http.post(url).json(&body),
        )
        .await
    }

    /// Replaces the rrset `name`/`rtype` in `zone` with `contents` (PATCH, changetype REPLACE).
    ///
    /// For LUA records `rtype` is `"LUA"` and each content is `<TYPE> "<lua>"`, e.g.
    /// `A "ifportup(8001, {'127.0.0.2', '127.0.0.3'})"`.
    pub async fn put_rrset(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
        ttl: u32,
        contents: &[&str],
    ) -> Result<()> {
        let records: Vec<_> = contents
            .iter()
            .map(|c| json!({"content": c, "disabled": false}))
            .collect();
        self.patch_rrset(
            zone,
            json!({
                "name": canonical(name),
                "type": rtype,
                "ttl": ttl,
                "changetype": "REPLACE",
                "records": records,
            }),
        )
        .await
    }

    /// Deletes the rrset `name`/`rtype` from `zone` (PATCH, changetype DELETE).
    pub async fn delete_rrset(&self, zone: &str, name: &str, rtype: &str) -> Result<()> {
        self.patch_rrset(
            zone,
            json!({"name": canonical(name), "type": rtype, "changetype": "DELETE"}),
        )
        .await
    }

    /// A hickory resolver that asks only this server (UDP, TCP on truncation or error), with its
    /// cache off so every lookup is a real query.
    pub fn resolver(&self) -> TokioResolver {
        let servers = NameServerConfigGroup::from_ips_clear(
            &[Ipv4Addr::LOCALHOST.into()],
            self.dns_port,
            true,
        );
        let config = ResolverConfig::from_parts(None, vec![], servers);
        let mut opts = ResolverOpts::default();
        opts.cache_size = 0;
        opts.positive_max_ttl = Some(Duration::ZERO);
        opts.negative_max_ttl = Some(Duration::ZERO);
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 2;
        opts.recursion_desired = false;
        opts.ndots = 0;
        TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build()
    }

    /// `http://127.0.0.1:PORT/api/v1/servers/localhost`.
    fn server_url(&self) -> String {
        format!("{}/api/v1/servers/localhost", self.api_url())
    }

    async fn patch_rrset(&self, zone: &str, rrset: serde_json::Value) -> Result<()> {
        let zone = canonical(zone);
        let url = format!("{}/zones/{zone}", self.server_url());
        let context = format!("patching {} {} in {zone}", rrset["name"], rrset["type"]);
        self.send(
            context,
            self.http.patch(url).json(&json!({"rrsets": [rrset]})),
        )
        .await
    }

    async fn send(&self, context: String, req: reqwest::RequestBuilder) -> Result<()> {
        let resp = req
            .header("X-API-Key", &self.api_key)
            .send()
            .await
            .map_err(HarnessError::http(context.clone()))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let body = resp.text().await.unwrap_or_default();
        Err(HarnessError::Api {
            context,
            status: status.as_u16(),
            body,
        })
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let url = self.server_url();
        let key = self.api_key.clone();
        let http = self.http.clone();
        let dns = self.dns_addr();
        self.process
            .wait_ready("PowerDNS API and DNS listener", START_TIMEOUT, || async {
                let resp = http
                    .get(&url)
                    .header("X-API-Key", &key)
                    .send()
                    .await
                    .map_err(|e| format!("API: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("API: HTTP {}", resp.status()));
                }
                tokio::net::TcpStream::connect(dns)
                    .await
                    .map_err(|e| format!("DNS TCP {dns}: {e}"))?;
                Ok(())
            })
            .await
    }
}

/// Kills the server of a failed attempt and moves its temp dir out for the next one.
fn take_dir(server: PowerDns) -> TempDir {
    let PowerDns { process, dir, .. } = server;
    drop(process); // kills and reaps
    dir
}

/// `name` with a trailing dot.
fn canonical(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}

/// The `pdns.conf` of one instance. Everything lives in `dir`; nothing is shared with another
/// instance or with a packaged PowerDNS.
fn config(
    dir: &Path,
    db: &Path,
    ip: Ipv4Addr,
    dns_port: u16,
    web_port: u16,
    api_key: &str,
) -> String {
    let dir = dir.display();
    format!(
        "\
launch=gsqlite3
gsqlite3-database={db}
local-address={ip}
local-port={dns_port}
reuseport=no
socket-dir={dir}
daemon=no
guardian=no
disable-syslog=yes
api=yes
api-key={api_key}
webserver=yes
webserver-address={ip}
webserver-port={web_port}
webserver-allow-from=127.0.0.0/8,10.0.0.0/8
enable-lua-records=yes
lua-health-checks-interval=1
security-poll-suffix=
cache-ttl=0
query-cache-ttl=0
negquery-cache-ttl=0
zone-cache-refresh-interval=0
",
        db = db.display(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_canonical() {
        assert_eq!(canonical("feas.test"), "feas.test.");
        assert_eq!(canonical("feas.test."), "feas.test.");
    }

    #[test]
    fn config_keeps_everything_in_the_instance_dir() {
        let conf = config(
            Path::new("/t/x"),
            Path::new("/t/x/db"),
            Ipv4Addr::LOCALHOST,
            5300,
            8081,
            "k",
        );
        assert!(conf.contains("socket-dir=/t/x\n"));
        assert!(conf.contains("local-port=5300\n"));
        assert!(conf.contains("webserver-port=8081\n"));
        assert!(conf.contains("enable-lua-records=yes\n"));
    }
}
