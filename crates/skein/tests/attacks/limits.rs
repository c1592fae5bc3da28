//! Overload from outside: 2,000 clients each trickling 400 KB of request headers into the
//! ingress gateway (slowloris with huge heads). The gateway must stay small (request heads are
//! capped at 60 KiB, connections per listener and per proxy are capped and the oldest idle
//! ones shed) and keep answering ordinary requests quickly.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::*;

/// Attacking connections kept open at once.
const ATTACKERS: usize = 2000;
/// Header bytes each attacker sends in all (over as many connections as it takes).
const PER_ATTACKER: usize = 400 * 1000;
/// Sent to each attacker's connection per round.
const CHUNK: usize = 8 * 1024;
/// Time between rounds: 400 KB at 8 KiB per 200 ms takes about 10 s.
const ROUND: Duration = Duration::from_millis(200);
/// The attack stops after this long even if not every byte was sent.
const ATTACK_FOR: Duration = Duration::from_secs(14);
const RSS_LIMIT_KIB: u64 = 64 * 1024;
const LATENCY_LIMIT: Duration = Duration::from_millis(100);

/// One ordinary `GET /health` on a new connection: its status, or None when the gateway
/// closed the connection without an answer (at its cap, with the flood's connections to
/// shed, a client whose head it has not read yet on a busy machine can be the one shed).
fn probe(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(
        format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .ok()?;
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let line = String::from_utf8_lossy(&raw);
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// `VmRSS` and `VmHWM` of a process, in KiB.
fn memory_kib(pid: u64) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

struct Attacker {
    conn: Option<TcpStream>,
    sent: usize,
    /// Header lines of the current connection sent or queued so far.
    lines: usize,
    /// What is left of the current chunk (a write may take only part of it).
    pending: Vec<u8>,
}

#[derive(Debug, Default)]
struct Outcomes {
    connections: usize,
    refused_connects: usize,
    closed_by_gateway: usize,
    answered_431: usize,
    bytes: usize,
}

fn open(addr: SocketAddr) -> Option<TcpStream> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    s.set_nodelay(true).ok()?;
    s.set_nonblocking(true).ok()?;
    Some(s)
}

/// The next piece of an endless request head: a request line, then 1 KiB header lines
/// numbered from `*line` on.
fn chunk(line: &mut usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(CHUNK + 64);
    if *line == 0 {
        out.extend_from_slice(b"GET /health HTTP/1.1\r\nHost: slow.example\r\n");
    }
    let i = line;
    while out.len() < CHUNK {
        out.extend_from_slice(format!("x-pad-{i}: ").as_bytes());
        out.extend(std::iter::repeat_n(b'a', 1000));
        out.extend_from_slice(b"\r\n");
        *i += 1;
    }
    out
}

/// One round over every attacker: read what the gateway said, send the next chunk, reconnect
/// the ones the gateway closed.
fn attack_round(addr: SocketAddr, attackers: &mut [Attacker], out: &mut Outcomes) {
    let mut buf = [0u8; 512];
    for a in attackers.iter_mut() {
        if a.sent >= PER_ATTACKER {
            a.conn = None;
            continue;
        }
        let mut closed = false;
        if let Some(c) = a.conn.as_mut() {
            match c.read(&mut buf) {
                Ok(0) => closed = true,
                Ok(n) => {
                    if buf[..n].starts_with(b"HTTP/1.1 431") {
                        out.answered_431 += 1;
                    }
                    closed = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => closed = true,
            }
        }
        if closed {
            out.closed_by_gateway += 1;
            a.conn = None;
        }
        if a.conn.is_none() {
            a.conn = open(addr);
            a.lines = 0;
            a.pending.clear();
            match a.conn {
                Some(_) => out.connections += 1,
                None => {
                    out.refused_connects += 1;
                    continue;
                }
            }
        }
        let Some(c) = a.conn.as_mut() else { continue };
        if a.pending.is_empty() {
            a.pending = chunk(&mut a.lines);
        }
        match c.write(&a.pending) {
            Ok(n) => {
                a.sent += n;
                out.bytes += n;
                a.pending.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => {
                out.closed_by_gateway += 1;
                a.conn = None;
            }
        }
    }
}

#[test]
fn slow_huge_headers_keep_the_gateway_small_and_responsive() {
    let skein = Skein::new();
    skein.up("examples/blog-system", &[]);
    let base = skein.http_base();
    let gateway = skein.status()["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| {
            p["name"]
                .as_str()
                .is_some_and(|n| n.contains("ingressgateway"))
        })
        .cloned()
        .expect("an ingress gateway pod");
    let pid = gateway["pid"].as_u64().expect("gateway pid");
    assert_eq!(get(&format!("{base}/health")).status, 200);
    let (rss_before, _) = memory_kib(pid).expect("gateway memory");
    let addr: SocketAddr = base
        .strip_prefix("http://")
        .expect("http base")
        .parse()
        .expect("ingress address");

    let done = Arc::new(AtomicBool::new(false));
    // Memory, sampled while the attack runs.
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                if let Some((rss, _)) = memory_kib(pid) {
                    peak = peak.max(rss);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    // Ordinary requests, each on a new connection, while the attack runs; one closed
    // without an answer is tried once more, as a client would, and counted.
    let prober = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            // Let the attack fill the gateway first.
            std::thread::sleep(Duration::from_secs(2));
            let (mut seen, mut unanswered) = (Vec::new(), 0);
            while !done.load(Ordering::Relaxed) {
                let t = Instant::now();
                let status = probe(addr).or_else(|| {
                    unanswered += 1;
                    probe(addr)
                });
                seen.push((status.unwrap_or(0), t.elapsed()));
                std::thread::sleep(Duration::from_millis(250));
            }
            (seen, unanswered)
        })
    };

    let mut attackers: Vec<Attacker> = (0..ATTACKERS)
        .map(|_| Attacker {
            conn: None,
            sent: 0,
            lines: 0,
            pending: Vec::new(),
        })
        .collect();
    let mut outcomes = Outcomes::default();
    let started = Instant::now();
    while started.elapsed() < ATTACK_FOR && attackers.iter().any(|a| a.sent < PER_ATTACKER) {
        let round = Instant::now();
        attack_round(addr, &mut attackers, &mut outcomes);
        if let Some(rest) = ROUND.checked_sub(round.elapsed()) {
            std::thread::sleep(rest);
        }
    }
    let attack_time = started.elapsed();
    let open_at_end = attackers.iter().filter(|a| a.conn.is_some()).count();
    done.store(true, Ordering::Relaxed);
    let peak_rss = sampler.join().expect("sampler");
    let (probes, unanswered) = prober.join().expect("prober");
    let (rss_after, hwm) = memory_kib(pid).expect("gateway still running");
    drop(attackers);

    let mut latencies: Vec<Duration> = probes.iter().map(|(_, d)| *d).collect();
    latencies.sort();
    let median = latencies.get(latencies.len() / 2).copied();
    let p90 = latencies.get(latencies.len() * 9 / 10).copied();
    let slowest = latencies.last().copied();
    eprintln!(
        "gateway RSS: {rss_before} KiB before, peak {peak_rss} KiB during, {rss_after} KiB after \
         (VmHWM {hwm} KiB); attack {attack_time:?}: {outcomes:?}, {open_at_end} open at the end; \
         ordinary requests: {} (median {median:?}, p90 {p90:?}, slowest {slowest:?}), \
         {unanswered} closed unanswered and tried again",
        probes.len()
    );
    assert!(
        outcomes.bytes >= ATTACKERS * 100 * 1000,
        "the attack sent too little to mean anything: {outcomes:?}"
    );
    assert!(
        hwm < RSS_LIMIT_KIB,
        "the gateway grew to {hwm} KiB (limit {RSS_LIMIT_KIB} KiB)"
    );
    assert!(probes.len() >= 5, "too few ordinary requests: {probes:?}");
    assert!(
        probes.iter().all(|(s, _)| *s == 200),
        "every ordinary request is answered, at the latest when tried again: {probes:?}"
    );
    assert!(
        unanswered * 10 <= probes.len(),
        "at most one ordinary connection in ten is closed unanswered: {unanswered} of {}",
        probes.len()
    );
    // The 90th percentile: a 2-core machine shared with builds has the odd slow request
    // whatever the gateway does.
    assert!(
        p90.is_some_and(|m| m < LATENCY_LIMIT),
        "ordinary requests answer in under {LATENCY_LIMIT:?}: {probes:?}"
    );
    // And the gateway is fine afterwards.
    assert_eq!(get(&format!("{base}/health")).status, 200);
}
