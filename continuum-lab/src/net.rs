//! The lab's network: one Linux network namespace per host, joined by a bridge, with
//! partitions made of nftables DROP rules (packets vanish: a connect hangs until the client's
//! timeout, a request already sent never gets its answer).
//!
//! Hosts (addresses on a private /24 picked per lab):
//! - `.1`: this namespace, on the bridge: the clients (the drill's writer, hostile client and
//!   checker) and the shared services (PowerDNS, NATS);
//! - `.2`, `.3`: `region-a`, `region-b`, each a namespace with its PostgreSQL, its controller
//!   (and route front) and its database watchdog;
//! - `.4`: `witness`, a namespace with the `witness-server`.
//!
//! Every rule lives in the namespace of a region or the witness (table `inet lab`, chains on
//! the input and output hooks), so the host namespace's own firewall is never touched, and
//! deleting the namespaces removes every rule. Needs root, `ip` (iproute2) and `nft`
//! (nftables).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Network errors: the kernel or a tool refused.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// Namespaces need root.
    #[error(
        "network namespaces need root (this process runs as uid {0}); run as root, or pass \
         --net loopback for the loopback lab (TCP-proxy partitions, no packet drops)"
    )]
    NotRoot(u32),
    /// A command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command line.
        command: String,
        /// Its stderr, or why it did not run.
        detail: String,
    },
    /// No such host.
    #[error("no host {0} in the lab network (hosts: region-a, region-b, witness, shared, clients)")]
    UnknownHost(String),
}

/// The host this process is on: the drill's clients.
pub const CLIENTS: &str = "clients";
/// The witness's host.
pub const WITNESS: &str = "witness";
/// The shared services' host: PowerDNS and NATS.
pub const SHARED: &str = "shared";

/// Which way a cut drops packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// Both ways.
    Both,
    /// Only packets from the first host to the second (the answers would still flow, but
    /// nothing is ever sent to be answered: TCP connects from the first host hang, and the
    /// second host's connects get no answer either).
    OneWay,
}

/// A namespaced host.
#[derive(Debug, Clone)]
struct Host {
    netns: String,
    ip: Ipv4Addr,
}

/// The lab network. Dropping it deletes the namespaces (and with them the veths and the rules)
/// and the bridge.
#[derive(Debug)]
pub struct Net {
    bridge: String,
    gateway: Ipv4Addr,
    hosts: BTreeMap<String, Host>,
    /// Cuts in force.
    cuts: BTreeSet<Rule>,
    /// The cuts as asked for, for logs.
    described: Vec<String>,
}

static LABS: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// Creates the bridge and one namespace per host of `hosts` (the regions and the witness),
    /// each with its veth on the bridge, its loopback up, a default route to the bridge, and
    /// an empty `inet lab` table.
    pub fn up(hosts: &[&str]) -> Result<Net, NetError> {
        let uid = nix::unistd::geteuid();
        if !uid.is_root() {
            return Err(NetError::NotRoot(uid.as_raw()));
        }
        which("ip", "apt-get install -y iproute2")?;
        which("nft", "apt-get install -y nftables")?;
        let n = LABS.fetch_add(1, Ordering::SeqCst);
        // Short names (interface names are at most 15 bytes): `ovl<pid-ish><n>`.
        let tag = format!("ovl{}{}", std::process::id() % 100_000, n % 10);
        // A /24 per (process, lab): two labs of different processes or of one process never
        // share a subnet (within 2,500 consecutive pids).
        let pid = std::process::id();
        let octet2 = 100 + ((pid / 25) % 100) as u8;
        let octet3 = ((pid % 25) * 10 + n % 10) as u8 + 1;
        let gateway = Ipv4Addr::new(10, octet2, octet3, 1);
        let bridge = format!("{tag}br");
        let mut net = Net {
            bridge: bridge.clone(),
            gateway,
            hosts: BTreeMap::new(),
            cuts: BTreeSet::new(),
            described: Vec::new(),
        };
        // A bridge left by a crashed lab of the same tag: remove it first.
        let _ = run_quiet(&["ip", "link", "del", &bridge]);
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for (i, name) in hosts.iter().enumerate() {
            let netns = format!("{tag}-{name}");
            let ip = Ipv4Addr::new(10, octet2, octet3, 2 + i as u8);
            let outer = format!("{tag}{i}o");
            let _ = run_quiet(&["ip", "netns", "del", &netns]);
            run(&["ip", "netns", "add", &netns])?;
            net.hosts.insert(
                (*name).to_owned(),
                Host {
                    netns: netns.clone(),
                    ip,
                },
            );
            run(&[
                "ip", "link", "add", &outer, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ])?;
            run(&["ip", "link", "set", &outer, "master", &bridge, "up"])?;
            let ns = |args: &[&str]| {
                let mut v = vec!["ip", "-n", netns.as_str()];
                v.extend_from_slice(args);
                run(&v)
            };
            ns(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
            ns(&["link", "set", "eth0", "up"])?;
            ns(&["link", "set", "lo", "up"])?;
            ns(&["route", "add", "default", "via", &gateway.to_string()])?;
            net.apply(name)?;
        }
        Ok(net)
    }

    /// The address of `host` ([`CLIENTS`] is the bridge's).
    pub fn ip(&self, host: &str) -> Result<Ipv4Addr, NetError> {
        if host == CLIENTS {
            return Ok(self.gateway);
        }
        self.hosts
            .get(host)
            .map(|h| h.ip)
            .ok_or_else(|| NetError::UnknownHost(host.to_owned()))
    }

    /// The namespace of `host` (`None` for [`CLIENTS`], this namespace).
    pub fn netns(&self, host: &str) -> Result<Option<&str>, NetError> {
        if host == CLIENTS {
            return Ok(None);
        }
        self.hosts
            .get(host)
            .map(|h| Some(h.netns.as_str()))
            .ok_or_else(|| NetError::UnknownHost(host.to_owned()))
    }

    /// Every host with its namespace and address, for `lab up` to print.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "{CLIENTS}: {} (this namespace, bridge {})",
            self.gateway, self.bridge
        )];
        lines.extend(
            self.hosts.iter().map(|(name, h)| {
                format!("{name}: {} (enter: ip netns exec {} bash)", h.ip, h.netns)
            }),
        );
        lines
    }

    /// Drops packets from `from` to `to` (and back, for [`Direction::Both`]). One of them must
    /// be a namespaced host (the rules live in its namespace).
    pub fn cut(&mut self, from: &str, to: &str, dir: Direction) -> Result<(), NetError> {
        self.ip(to)?;
        self.ip(from)?;
        let both = dir == Direction::Both;
        // The rules live on a namespaced side: `from`'s output (and input), or, when `from` is
        // this namespace, `to`'s input (and output).
        let rule = if from == CLIENTS {
            Rule {
                owner: to.to_owned(),
                peer: from.to_owned(),
                drop_out: both,
                drop_in: true,
            }
        } else {
            Rule {
                owner: from.to_owned(),
                peer: to.to_owned(),
                drop_out: true,
                drop_in: both,
            }
        };
        let owner = rule.owner.clone();
        self.cuts.insert(rule);
        self.described.push(match dir {
            Direction::Both => format!("{from}<->{to}"),
            Direction::OneWay => format!("{from}->{to}"),
        });
        self.apply(&owner)
    }

    /// Removes every cut.
    pub fn heal_all(&mut self) -> Result<(), NetError> {
        let owners: BTreeSet<String> = self.cuts.iter().map(|c| c.owner.clone()).collect();
        self.cuts.clear();
        self.described.clear();
        for o in owners {
            self.apply(&o)?;
        }
        Ok(())
    }

    /// The cuts in force, as `from->to` / `from<->to`.
    pub fn cuts(&self) -> &[String] {
        &self.described
    }

    /// Rewrites `owner`'s table from the cuts in force, in one `nft -f` transaction.
    fn apply(&self, owner: &str) -> Result<(), NetError> {
        let Some(host) = self.hosts.get(owner) else {
            return Err(NetError::UnknownHost(owner.to_owned()));
        };
        let mut rules = String::from(
            "table inet lab {}\nflush table inet lab\ntable inet lab {\n\
             chain in { type filter hook input priority 0; policy accept; }\n\
             chain out { type filter hook output priority 0; policy accept; }\n}\n",
        );
        for r in self.cuts.iter().filter(|c| c.owner == owner) {
            let ip = self.ip(&r.peer)?;
            if r.drop_out {
                rules.push_str(&format!("add rule inet lab out ip daddr {ip} drop\n"));
            }
            if r.drop_in {
                rules.push_str(&format!("add rule inet lab in ip saddr {ip} drop\n"));
            }
        }
        nft(&host.netns, &rules)
    }
}

/// DROP rules in `owner`'s namespace for the packets it exchanges with `peer`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    owner: String,
    peer: String,
    drop_out: bool,
    drop_in: bool,
}

impl Drop for Net {
    fn drop(&mut self) {
        for h in self.hosts.values() {
            let _ = run_quiet(&["ip", "netns", "del", &h.netns]);
        }
        let _ = run_quiet(&["ip", "link", "del", &self.bridge]);
    }
}

fn which(program: &str, install: &str) -> Result<(), NetError> {
    let found = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| d.join(program).is_file())
    });
    if found {
        Ok(())
    } else {
        Err(NetError::Command {
            command: program.to_owned(),
            detail: format!("not installed ({install}, or scripts/setup.sh)"),
        })
    }
}

fn run(argv: &[&str]) -> Result<(), NetError> {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| NetError::Command {
            command: argv.join(" "),
            detail: e.to_string(),
        })?;
    checked(argv.join(" "), &out, "")
}

/// `Ok` when the command succeeded, else its stderr (and `context`) in the error.
fn checked(command: String, out: &std::process::Output, context: &str) -> Result<(), NetError> {
    if out.status.success() {
        return Ok(());
    }
    Err(NetError::Command {
        command,
        detail: format!("{}{context}", String::from_utf8_lossy(&out.stderr).trim()),
    })
}

fn run_quiet(argv: &[&str]) -> bool {
    Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Loads `rules` into `netns`'s nftables (`nft -f -`, one atomic transaction).
fn nft(netns: &str, rules: &str) -> Result<(), NetError> {
    use std::io::Write as _;
    let command = format!("ip netns exec {netns} nft -f -");
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Command {
            command: command.clone(),
            detail: e.to_string(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(rules.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| NetError::Command {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    checked(command, &out, &format!("\nrules:\n{rules}"))
}
