//! `flow-loadgen`: drives a running flow-server on loopback and prints what it measured.
//!
//! P publishers (one keep-alive connection each, one POST per event, optionally pipelined and
//! rate-limited) and S SSE subscribers over F flows, for a bounded time. Prints ingest events/s,
//! deliveries/s, publish→deliver latency p50/p99/p999, the server's RSS (`--server-pid`), and
//! `lost=N duplicated=N` computed from the seqs each subscriber received (a subscriber expects
//! exactly `last + 1` after its snapshot; a resync snapshot is counted apart, never as loss).
//!
//! Run with e.g.:
//! `cargo run --release -p flow-server --bin flow-loadgen -- --publishers 4 --subscribers 0 --flows 1 --duration 10s`
//!
//! Only loopback targets are accepted; every loop is bounded by `--duration`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A keep-alive connection with Nagle off, and the `Authorization` header line to send on it
/// (empty without a token).
async fn connect(args: &Args, role: &str) -> anyhow::Result<(TcpStream, String)> {
    let conn = TcpStream::connect(args.addr)
        .await
        .with_context(|| format!("{role} connect"))?;
    conn.set_nodelay(true)?;
    let auth = args
        .token
        .as_ref()
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    Ok((conn, auth))
}

/// Load generator for flow-server (loopback only).
#[derive(Debug, Parser)]
#[command(
    name = "flow-loadgen",
    version,
    about = "Load generator for flow-server (loopback only): ingest rate, SSE delivery rate and latency, server RSS, lost/duplicated counts"
)]
struct Args {
    /// Server address (must be a loopback address).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Publisher connections.
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// SSE subscribers.
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    /// Flows; publisher i and subscriber j use flow i % F and j % F.
    #[arg(long, default_value_t = 1)]
    flows: usize,
    /// How long publishers publish (subscribers-only runs hold the connections this long).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Events per second per publisher; 0 = as fast as the server answers.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Requests written back to back per publisher before reading the answers (HTTP/1.1
    /// pipelining; still one POST per event).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    /// Approximate size of each event body in bytes.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// PID of the server, to read its RSS from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Bearer token for posting and reading.
    #[arg(long)]
    token: Option<String>,
    /// Flow id prefix.
    #[arg(long, default_value = "loadgen")]
    flow_prefix: String,
    /// Subscribers connecting at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    flow_server::args::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration"))
}

// === impl Histogram ===

/// Log-bucketed latency histogram (about 2 % resolution), shared by every subscriber.
struct Histogram {
    buckets: Vec<AtomicU64>,
}

const BUCKETS: usize = 1400;
const GROWTH: f64 = 1.02;

impl Histogram {
    fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    fn record(&self, micros: u64) {
        let idx = if micros <= 1 {
            0
        } else {
            ((micros as f64).ln() / GROWTH.ln()) as usize
        };
        if let Some(b) = self.buckets.get(idx.min(BUCKETS - 1)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Upper bound of the bucket holding quantile `q`, in milliseconds.
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.count();
        if total == 0 {
            return 0.0;
        }
        let want = ((total as f64) * q).ceil() as u64;
        let mut seen = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            seen += b.load(Ordering::Relaxed);
            if seen >= want {
                return GROWTH.powi(i as i32 + 1) / 1000.0;
            }
        }
        GROWTH.powi(BUCKETS as i32) / 1000.0
    }
}

// === shared counters ===

#[derive(Default)]
struct Totals {
    posted: AtomicU64,
    post_errors: AtomicU64,
    deliveries: AtomicU64,
    lost: AtomicU64,
    duplicated: AtomicU64,
    resyncs: AtomicU64,
    connected: AtomicU64,
    /// Highest seq answered per flow (index = flow number).
    last_seq: Vec<AtomicU64>,
    /// Highest seq delivered per subscriber (index = subscriber number).
    sub_last: Vec<AtomicU64>,
}

/// The loadgen's clock: microseconds since start, carried in every event.
fn micros_since(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_u64_at(b: &[u8]) -> Option<u64> {
    let end = b
        .iter()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(b.len());
    std::str::from_utf8(&b[..end]).ok()?.parse().ok()
}

// === publishers ===

async fn publisher(
    args: Arc<Args>,
    n: usize,
    t0: Instant,
    stop: Arc<AtomicBool>,
    totals: Arc<Totals>,
) -> anyhow::Result<()> {
    let flow_no = n % args.flows;
    let flow = format!("{}-{flow_no}", args.flow_prefix);
    let (mut conn, auth) = connect(&args, "publisher").await?;
    let pad = "x".repeat(args.payload_bytes.saturating_sub(150));
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut sent: u64 = 0;
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(sent as f64 / args.rate);
            tokio::time::sleep_until(due).await;
            if stop.load(Ordering::Relaxed) {
                break;
            }
        }
        let mut out = Vec::with_capacity(args.pipeline * (args.payload_bytes + 200));
        for _ in 0..args.pipeline {
            let body = format!(
                r#"{{"type":"upsert-nodes","nodes":[{{"id":"p{n}","flowId":"{flow}","label":"{pad}","status":"running","meta":{{"t":{}}}}}]}}"#,
                micros_since(t0)
            );
            out.extend_from_slice(
                format!(
                    "POST /v1/flows/{flow}/events HTTP/1.1\r\nHost: loadgen\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(body.as_bytes());
        }
        conn.write_all(&out).await?;
        sent += args.pipeline as u64;
        // Read exactly `pipeline` responses.
        let mut answered = 0;
        while answered < args.pipeline {
            if let Some((len, status, seq)) = parse_response(&pending) {
                pending.drain(..len);
                answered += 1;
                if status == 200 {
                    totals.posted.fetch_add(1, Ordering::Relaxed);
                    if let (Some(seq), Some(slot)) = (seq, totals.last_seq.get(flow_no)) {
                        slot.fetch_max(seq, Ordering::Relaxed);
                    }
                } else {
                    totals.post_errors.fetch_add(1, Ordering::Relaxed);
                }
                continue;
            }
            let k = conn.read(&mut buf).await?;
            if k == 0 {
                bail!("server closed a publisher connection");
            }
            pending.extend_from_slice(&buf[..k]);
        }
    }
    Ok(())
}

/// One complete HTTP response at the start of `b`: (bytes, status, seq).
fn parse_response(b: &[u8]) -> Option<(usize, u16, Option<u64>)> {
    let head_end = find(b, b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&b[..head_end]).ok()?;
    let status: u16 = head.get(9..12)?.parse().ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    if b.len() < head_end + len {
        return None;
    }
    let body = &b[head_end..head_end + len];
    let seq = find(body, b"\"seq\":").and_then(|i| parse_u64_at(&body[i + 6..]));
    Some((head_end + len, status, seq))
}

// === subscribers ===

/// Chunked transfer decoding, incremental.
#[derive(Default)]
struct Dechunk {
    /// Bytes left in the current chunk's data; None while reading a size line.
    left: Option<usize>,
    line: Vec<u8>,
    /// Bytes of CRLF still to skip after a chunk's data.
    skip: usize,
}

impl Dechunk {
    /// Appends the data bytes of `input` to `out`; returns false at the last chunk.
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> bool {
        while !input.is_empty() {
            if self.skip > 0 {
                let k = self.skip.min(input.len());
                self.skip -= k;
                input = &input[k..];
                continue;
            }
            match self.left {
                Some(left) => {
                    let k = left.min(input.len());
                    out.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    if left == k {
                        self.left = None;
                        self.skip = 2;
                    } else {
                        self.left = Some(left - k);
                    }
                }
                None => {
                    let Some(nl) = input.iter().position(|&c| c == b'\n') else {
                        self.line.extend_from_slice(input);
                        return true;
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let line = String::from_utf8_lossy(&self.line).trim().to_owned();
                    self.line.clear();
                    let size = usize::from_str_radix(line.split(';').next().unwrap_or(""), 16)
                        .unwrap_or(0);
                    if size == 0 {
                        return false;
                    }
                    self.left = Some(size);
                }
            }
        }
        true
    }
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    args: Arc<Args>,
    n: usize,
    t0: Instant,
    done: Arc<AtomicBool>,
    totals: Arc<Totals>,
    hist: Arc<Histogram>,
    ready: tokio::sync::mpsc::Sender<()>,
) -> anyhow::Result<()> {
    let flow = format!("{}-{}", args.flow_prefix, n % args.flows);
    let (mut conn, auth) = connect(&args, "subscriber").await?;
    conn.write_all(
        format!("GET /v1/flows/{flow}/stream HTTP/1.1\r\nHost: loadgen\r\nAccept: text/event-stream\r\n{auth}\r\n")
            .as_bytes(),
    )
    .await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut raw = Vec::new();
    // Response head.
    let body_start = loop {
        let k = conn.read(&mut buf).await?;
        if k == 0 {
            bail!("closed before the response head");
        }
        raw.extend_from_slice(&buf[..k]);
        if let Some(i) = find(&raw, b"\r\n\r\n") {
            if !raw.starts_with(b"HTTP/1.1 200") {
                bail!("stream answered {}", String::from_utf8_lossy(&raw[..i]));
            }
            break i + 4;
        }
    };
    let mut de = Dechunk::default();
    let mut data = Vec::new();
    de.feed(&raw[body_start..], &mut data);
    let mut last: Option<u64> = None;
    let mut announced = false;
    let mut ready = Some(ready);
    loop {
        // Complete frames.
        let mut consumed = 0;
        while let Some(end) = find(&data[consumed..], b"\n\n") {
            let frame = &data[consumed..consumed + end];
            consumed += end + 2;
            let Some(id_at) = find(frame, b"id: ") else {
                continue;
            };
            let Some(seq) = parse_u64_at(&frame[id_at + 4..]) else {
                continue;
            };
            if frame.starts_with(b"event: snapshot") {
                if last.is_some() {
                    totals.resyncs.fetch_add(1, Ordering::Relaxed);
                }
                last = Some(seq);
                if !announced {
                    announced = true;
                    totals.connected.fetch_add(1, Ordering::Relaxed);
                    if let Some(r) = ready.take() {
                        let _ = r.send(()).await;
                    }
                }
            } else {
                totals.deliveries.fetch_add(1, Ordering::Relaxed);
                if let Some(t_at) = find(frame, b"\"t\":")
                    && let Some(t) = parse_u64_at(&frame[t_at + 4..])
                {
                    hist.record(micros_since(t0).saturating_sub(t));
                }
                match last {
                    Some(l) if seq == l + 1 => last = Some(seq),
                    Some(l) if seq <= l => {
                        totals.duplicated.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(l) => {
                        totals.lost.fetch_add(seq - l - 1, Ordering::Relaxed);
                        last = Some(seq);
                    }
                    None => last = Some(seq),
                }
            }
            if let (Some(l), Some(slot)) = (last, totals.sub_last.get(n)) {
                slot.store(l, Ordering::Relaxed);
            }
        }
        data.drain(..consumed);
        if done.load(Ordering::Relaxed) {
            return Ok(());
        }
        let k = conn.read(&mut buf).await?;
        if k == 0 {
            if done.load(Ordering::Relaxed) {
                return Ok(());
            }
            bail!("server closed a stream");
        }
        if !de.feed(&buf[..k], &mut data) {
            return Ok(());
        }
    }
}

fn rss_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> Option<u64> {
        status
            .lines()
            .find(|l| l.starts_with(key))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    Some((kb("VmRSS:")?, kb("VmHWM:")?))
}

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
    {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    if !args.addr.ip().is_loopback() {
        bail!(
            "flow-loadgen only targets loopback addresses, not {}",
            args.addr
        );
    }
    if args.flows == 0 || args.pipeline == 0 {
        bail!("--flows and --pipeline must be at least 1");
    }
    raise_fd_limit();
    let t0 = Instant::now();
    let totals = Arc::new(Totals {
        last_seq: (0..args.flows).map(|_| AtomicU64::new(0)).collect(),
        sub_last: (0..args.subscribers).map(|_| AtomicU64::new(0)).collect(),
        ..Totals::default()
    });
    let hist = Arc::new(Histogram::new());
    println!(
        "flow-loadgen: addr={} publishers={} subscribers={} flows={} duration={:?} rate={}/s/publisher pipeline={} payload~{}B",
        args.addr,
        args.publishers,
        args.subscribers,
        args.flows,
        args.duration,
        args.rate,
        args.pipeline,
        args.payload_bytes
    );

    // Subscribers first; each reports once its snapshot arrived.
    let sub_done = Arc::new(AtomicBool::new(false));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(args.subscribers.max(1));
    let gate = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency.max(1)));
    let mut subs = Vec::with_capacity(args.subscribers);
    let connect_started = Instant::now();
    for n in 0..args.subscribers {
        let (args, done, totals, hist, ready, gate) = (
            args.clone(),
            sub_done.clone(),
            totals.clone(),
            hist.clone(),
            ready_tx.clone(),
            gate.clone(),
        );
        subs.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let (tx, mut rx) = tokio::sync::mpsc::channel(1);
            let task = subscriber(args, n, t0, done, totals, hist, tx);
            tokio::pin!(task);
            let r = tokio::select! {
                r = &mut task => r,
                _ = rx.recv() => {
                    drop(permit);
                    let _ = ready.send(()).await;
                    task.await
                }
            };
            if let Err(e) = &r {
                eprintln!("subscriber {n}: {e:#}");
            }
            r
        }));
    }
    drop(ready_tx);
    let mut connected = 0;
    let connect_deadline = Instant::now() + Duration::from_secs(120);
    while connected < args.subscribers {
        match tokio::time::timeout_at(connect_deadline, ready_rx.recv()).await {
            Ok(Some(())) => connected += 1,
            _ => break,
        }
    }
    if args.subscribers > 0 {
        println!(
            "subscribers: {connected}/{} connected (snapshot received) in {:.2}s",
            args.subscribers,
            connect_started.elapsed().as_secs_f64()
        );
    }
    let rss_before = args.server_pid.and_then(rss_of);

    // Publish for the duration.
    let stop = Arc::new(AtomicBool::new(false));
    let mut pubs = Vec::new();
    for n in 0..args.publishers {
        pubs.push(tokio::spawn(publisher(
            args.clone(),
            n,
            t0,
            stop.clone(),
            totals.clone(),
        )));
    }
    let started = Instant::now();
    let mut rss_peak = rss_before.map_or(0, |r| r.0);
    let deadline = started + args.duration;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(250).min(deadline - Instant::now())).await;
        if let Some((rss, _)) = args.server_pid.and_then(rss_of) {
            rss_peak = rss_peak.max(rss);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for p in pubs {
        match p.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("publisher: {e:#}"),
            Err(e) => eprintln!("publisher task: {e}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let delivered_at_stop = totals.deliveries.load(Ordering::Relaxed);

    // Let subscribers drain up to the last seq of their flow (bounded).
    let drain_deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < drain_deadline {
        let behind = (0..args.subscribers).any(|n| {
            let want = totals.last_seq[n % args.flows].load(Ordering::Relaxed);
            totals.sub_last[n].load(Ordering::Relaxed) < want
        });
        if !behind {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drain = started.elapsed().as_secs_f64() - elapsed;
    // Events never delivered by the end count as lost.
    let mut tail_lost = 0;
    for n in 0..args.subscribers {
        let want = totals.last_seq[n % args.flows].load(Ordering::Relaxed);
        let got = totals.sub_last[n].load(Ordering::Relaxed);
        if got > 0 && want > got {
            tail_lost += want - got;
        }
    }
    let rss_after = args.server_pid.and_then(rss_of);
    sub_done.store(true, Ordering::Relaxed);
    for s in &subs {
        s.abort();
    }

    let posted = totals.posted.load(Ordering::Relaxed);
    let deliveries = totals.deliveries.load(Ordering::Relaxed);
    println!(
        "ingest: {posted} events in {elapsed:.2}s = {:.0} events/s (errors={})",
        posted as f64 / elapsed,
        totals.post_errors.load(Ordering::Relaxed)
    );
    if args.subscribers > 0 {
        println!(
            "deliveries: {deliveries} = {:.0}/s over the publish window ({delivered_at_stop} by its end, drain {drain:.2}s)",
            deliveries as f64 / elapsed
        );
        println!(
            "latency: p50={:.2}ms p99={:.2}ms p999={:.2}ms (samples={})",
            hist.quantile_ms(0.50),
            hist.quantile_ms(0.99),
            hist.quantile_ms(0.999),
            hist.count()
        );
    }
    match (rss_before, rss_after) {
        (Some((before, _)), Some((after, hwm))) => println!(
            "server rss: {:.1} MiB with subscribers connected, {:.1} MiB peak during publishing, {:.1} MiB at end (VmHWM {:.1} MiB)",
            before as f64 / 1024.0,
            rss_peak as f64 / 1024.0,
            after as f64 / 1024.0,
            hwm as f64 / 1024.0
        ),
        _ => println!("server rss: unknown (pass --server-pid)"),
    }
    println!(
        "lost={} duplicated={} resyncs={}",
        totals.lost.load(Ordering::Relaxed) + tail_lost,
        totals.duplicated.load(Ordering::Relaxed),
        totals.resyncs.load(Ordering::Relaxed)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dechunking_handles_split_input() {
        let input = b"5\r\nhello\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
        for split in 1..input.len() {
            let mut d = Dechunk::default();
            let mut out = Vec::new();
            let more = d.feed(&input[..split], &mut out) && d.feed(&input[split..], &mut out);
            assert_eq!(out, b"helloabc", "split at {split}");
            assert!(!more);
        }
    }

    #[test]
    fn responses_are_parsed() {
        let r = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"seq\":42}HTTP/1.1";
        assert_eq!(parse_response(r), Some((r.len() - 8, 200, Some(42))));
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n{\"se"),
            None
        );
    }

    #[test]
    fn histogram_quantiles_are_ordered() {
        let h = Histogram::new();
        for us in 1..=10_000 {
            h.record(us);
        }
        let (p50, p99) = (h.quantile_ms(0.5), h.quantile_ms(0.99));
        assert!(p50 > 4.5 && p50 < 5.5, "{p50}");
        assert!(p99 > 9.5 && p99 < 10.5, "{p99}");
    }
}
