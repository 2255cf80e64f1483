//! The lab network's partitions are packet drops: a connect across a cut HANGS until the
//! client's timeout (it is neither accepted nor refused), and healing restores it. Needs root
//! (network namespaces); CI runs as root.

use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use continuum_lab::net::{CLIENTS, Direction, Net};

/// What a connect from this namespace to `addr` does within 700 ms.
#[derive(Debug, PartialEq, Eq)]
enum Connect {
    Accepted,
    Refused,
    Hung,
}

fn connect(addr: SocketAddr) -> Connect {
    match TcpStream::connect_timeout(&addr, Duration::from_millis(700)) {
        Ok(_) => Connect::Accepted,
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Connect::Hung,
        Err(_) => Connect::Refused,
    }
}

/// The listener process, killed when dropped (also when an assertion fails: an orphan would
/// hold the test's stdout open).
struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP listener on `addr` inside namespace `netns` (python3's socket module), accepting for
/// as long as the returned guard lives.
fn listener(netns: &str, addr: SocketAddr) -> Listener {
    let script = format!(
        "import socket,time\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('{}',{}))\ns.listen(64)\nprint('ready',flush=True)\n\
         while True:\n    c,_=s.accept()\n    c.close()\n",
        addr.ip(),
        addr.port()
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning the listener");
    // Wait for its "ready" line.
    use std::io::BufRead as _;
    let out = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufReader::new(out)
        .read_line(&mut line)
        .expect("listener output");
    assert_eq!(line.trim(), "ready");
    Listener(child)
}

#[test]
fn cuts_black_hole_connects_one_or_both_ways_and_heal_restores_them() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return;
    }
    let mut net = Net::up(&["h1", "h2"]).expect("the lab network");
    let h1 = SocketAddr::from((net.ip("h1").unwrap(), 9000));
    let ns1 = net.netns("h1").unwrap().unwrap().to_owned();
    let _l = listener(&ns1, h1);
    assert_eq!(connect(h1), Connect::Accepted, "no cut: connects");
    // A port nobody listens on is refused, not hung: the two outcomes are told apart.
    let closed = SocketAddr::from((h1.ip(), 9001));
    assert_eq!(connect(closed), Connect::Refused);

    net.cut("h1", CLIENTS, Direction::Both).unwrap();
    assert_eq!(
        connect(h1),
        Connect::Hung,
        "cut both ways: the SYN vanishes"
    );
    assert_eq!(
        connect(closed),
        Connect::Hung,
        "not even a reset comes back"
    );
    net.heal_all().unwrap();
    assert_eq!(connect(h1), Connect::Accepted, "healed");

    // One way, from the clients' side: only what h1 receives from here is dropped.
    net.cut(CLIENTS, "h1", Direction::OneWay).unwrap();
    assert_eq!(connect(h1), Connect::Hung);
    net.heal_all().unwrap();
    // One way, from h1's side: the SYN arrives, the SYN-ACK vanishes.
    net.cut("h1", CLIENTS, Direction::OneWay).unwrap();
    assert_eq!(connect(h1), Connect::Hung);
    assert_eq!(net.cuts(), ["h1->clients"]);
    net.heal_all().unwrap();
    assert_eq!(connect(h1), Connect::Accepted);
}

#[test]
fn an_unknown_host_is_a_clear_error() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: network namespaces need root (CI runs as root)");
        return;
    }
    let mut net = Net::up(&["h1"]).expect("the lab network");
    let e = net.cut("h1", "nowhere", Direction::Both).unwrap_err();
    assert!(e.to_string().contains("no host nowhere"), "{e}");
}
