//! Shared pieces of the PowerDNS tests: loopback HTTP backends that PowerDNS health-checks, and a
//! harness bundling a real PowerDNS with our backend client and verifier.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)] // shared by several test files

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use pdm_client::{PowerDnsBackend, PowerDnsConfig, Verifier};
use testkit::PowerDns;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Loopback addresses standing in for the regions' load balancers.
pub const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
pub const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
pub const C: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);

pub fn set(ips: &[Ipv4Addr]) -> BTreeSet<Ipv4Addr> {
    ips.iter().copied().collect()
}

/// A tiny HTTP server answering `200 ok` to anything, which can be stopped (connections refused)
/// and started again on the same address.
pub struct HttpBackend {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl HttpBackend {
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let mut b = Self { addr, task: None };
        b.restart().await?;
        Ok(b)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes the listening socket: from now on connections are refused.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await; // the listener is dropped once this returns
        }
    }

    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop().await;
        let listener = TcpListener::bind(self.addr).await?;
        self.task = Some(tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") && seen.len() < 16_384 {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                        )
                        .await;
                    let _ = conn.shutdown().await;
                });
            }
        }));
        Ok(())
    }
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts one backend per address, all on the same port (a probe URL names one port).
pub async fn backends(ips: &[Ipv4Addr]) -> (u16, Vec<HttpBackend>) {
    for _ in 0..20 {
        let port = testkit::free_port().expect("free port");
        let mut out = Vec::new();
        for ip in ips {
            match HttpBackend::start(SocketAddr::from((*ip, port))).await {
                Ok(b) => out.push(b),
                Err(_) => break,
            }
        }
        if out.len() == ips.len() {
            return (port, out);
        }
    }
    panic!("no common free port for the backends");
}

/// A real PowerDNS plus our client and a verifier pointed at it.
pub struct Lab {
    pub pdns: PowerDns,
    pub dns: PowerDnsBackend,
    pub verifier: Verifier,
}

impl Lab {
    pub async fn start() -> Self {
        let pdns = PowerDns::start().await.expect("PowerDNS starts");
        let dns = PowerDnsBackend::new(PowerDnsConfig::new(pdns.api_url(), pdns.api_key()))
            .expect("backend config");
        let verifier = Verifier::new([pdns.dns_addr()])
            .expect("verifier")
            .poll(Duration::from_millis(20));
        Self {
            pdns,
            dns,
            verifier,
        }
    }

    /// Waits until `name` answers `expected` three times in a row; panics with the server log
    /// otherwise.
    pub async fn settle(&self, name: &str, expected: &BTreeSet<Ipv4Addr>) {
        let v = self.verifier.clone().consecutive(3);
        if let Err(e) = v.wait_for(name, expected, Duration::from_secs(15)).await {
            panic!("{e}\n--- PowerDNS log ---\n{}", self.pdns.log_tail(30));
        }
    }
}

/// min / median / max of some durations, for printing.
pub fn stats(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    match (s.first(), s.get(s.len() / 2), s.last()) {
        (Some(min), Some(med), Some(max)) => format!(
            "n={} min {:.1} ms, median {:.1} ms, max {:.1} ms",
            s.len(),
            ms(*min),
            ms(*med),
            ms(*max)
        ),
        _ => "no samples".into(),
    }
}
