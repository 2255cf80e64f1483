//! Free loopback ports for harnessed servers.
//!
//! Ports are drawn at random from below the kernel's ephemeral range, so an outgoing connection
//! cannot take a port between the check here and the server's own `bind`. A port is never handed
//! out twice by one process, and each candidate is checked by binding it on 127.0.0.1. Harnesses
//! whose server still loses a race retry with fresh ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{HarnessError, Result};

/// Lowest port drawn.
const LOW: u16 = 15_000;
/// How many candidates are tried before giving up.
const ATTEMPTS: usize = 500;

/// A TCP port on 127.0.0.1 that is free right now and was not handed out before by this process.
pub fn free_port() -> Result<u16> {
    pick(false)
}

/// A port on 127.0.0.1 that is free for both TCP and UDP (for DNS servers).
pub fn free_udp_tcp_port() -> Result<u16> {
    pick(true)
}

fn pick(udp_too: bool) -> Result<u16> {
    let high = ephemeral_low().max(LOW + 1_000);
    let span = u64::from(high - LOW);
    for _ in 0..ATTEMPTS {
        let port = LOW + u16::try_from(next_random() % span).unwrap_or(0);
        if !claim(port) {
            continue;
        }
        let tcp_ok = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        let udp_ok = !udp_too || UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok();
        if tcp_ok && udp_ok {
            return Ok(port);
        }
    }
    Err(HarnessError::State {
        context: "free_port".into(),
        detail: format!("no free loopback port found in {ATTEMPTS} attempts in {LOW}..{high}"),
    })
}

/// Records `port` as handed out; false if it was already.
fn claim(port: u16) -> bool {
    static USED: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let used = USED.get_or_init(|| Mutex::new(HashSet::new()));
    // A poisoned lock only means another test panicked while holding it; the set is still valid.
    let mut used = used
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    used.insert(port)
}

/// Start of the kernel's ephemeral port range (32768 when unreadable).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// xorshift64*, seeded from the clock and the pid; good enough to spread ports across processes.
fn next_random() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9);
        x = nanos ^ (u64::from(std::process::id()) << 32) | 1;
    }
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    STATE.store(x, Ordering::Relaxed);
    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().unwrap()).collect();
        let unique: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(unique.len(), ports.len());
        assert!(
            ports
                .iter()
                .all(|p| *p >= LOW && *p < ephemeral_low().max(LOW + 1_000))
        );
    }

    #[test]
    fn udp_tcp_port_is_bindable_for_both() {
        let port = free_udp_tcp_port().unwrap();
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
        UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).unwrap();
    }
}
