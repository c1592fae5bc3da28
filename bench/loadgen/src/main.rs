//! Fixed-rate (open-loop) HTTP/1.1 keep-alive load generator, std only.
//!
//! loadgen --addr 127.0.0.1:8080 --host HOST --rate 1000 --conns 16 --secs 10 [--path /]
//! loadgen tcp-sink --listen ADDR            (opaque TCP: reads a length-prefixed blob, acks 1 byte)
//! loadgen tcp-send --addr ADDR --mb 1024    (sends one blob, prints MB/s)
//!
//! Each connection sends on its own fixed schedule (rate/conns per second, connections
//! staggered evenly). Latency is measured from the *scheduled* send time, so a stalled
//! response also counts the requests queued behind it (no coordinated omission). Prints one
//! JSON object: requests, errors, achieved rate and latency percentiles in microseconds.
//! Bounded: stops after `secs` seconds (plus at most 5 s for answers in flight).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("tcp-sink") => return tcp_sink(&args[2..]),
        Some("tcp-send") => return tcp_send(&args[2..]),
        _ => {}
    }
    let mut o: HashMap<String, String> = HashMap::new();
    let mut i = 1;
    while i + 1 < args.len() {
        o.insert(args[i].trim_start_matches("--").into(), args[i + 1].clone());
        i += 2;
    }
    let addr: SocketAddr = o.get("addr").expect("--addr").parse().expect("ip:port");
    let host = o.get("host").cloned().unwrap_or_else(|| addr.to_string());
    let path = o.get("path").cloned().unwrap_or_else(|| "/".into());
    let rate: f64 = o.get("rate").map_or(1000.0, |v| v.parse().expect("rate"));
    let conns: usize = o.get("conns").map_or(16, |v| v.parse().expect("conns"));
    let secs: f64 = o.get("secs").map_or(10.0, |v| v.parse().expect("secs"));
    let req = Arc::new(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: skein-bench\r\n\r\n").into_bytes());

    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let per_conn = ((secs * rate) / conns as f64).round() as usize;
    let start = Instant::now() + Duration::from_millis(50);
    let deadline = start + Duration::from_secs_f64(secs) + Duration::from_secs(5);
    let mut handles = Vec::new();
    for c in 0..conns {
        let req = req.clone();
        let offset = interval.mul_f64(c as f64 / conns as f64);
        handles.push(std::thread::spawn(move || {
            let mut lat: Vec<u32> = Vec::with_capacity(per_conn);
            let mut errors = 0usize;
            let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
            for k in 0..per_conn {
                let sched = start + offset + interval * k as u32;
                let now = Instant::now();
                if now >= deadline {
                    errors += per_conn - k;
                    break;
                }
                if sched > now {
                    std::thread::sleep(sched - now);
                }
                if conn.is_none() {
                    match TcpStream::connect(addr) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                            let r = BufReader::with_capacity(64 * 1024, s.try_clone().expect("clone"));
                            conn = Some((s, r));
                        }
                        Err(_) => {
                            errors += 1;
                            continue;
                        }
                    }
                }
                let (s, r) = conn.as_mut().expect("conn");
                let resp = if s.write_all(&req).is_ok() { read_response(r).ok() } else { None };
                match resp {
                    Some((true, keep)) => {
                        lat.push(sched.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        if !keep {
                            conn = None;
                        }
                    }
                    _ => {
                        errors += 1;
                        conn = None;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    for h in handles {
        let (l, e) = h.join().expect("thread");
        all.extend(l);
        errors += e;
    }
    let wall = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| -> u32 {
        if all.is_empty() {
            return 0;
        }
        let idx = ((p / 100.0) * all.len() as f64).ceil() as usize;
        all[idx.clamp(1, all.len()) - 1]
    };
    println!(
        "{{\"requests\":{},\"errors\":{},\"rate\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        all.len(),
        errors,
        all.len() as f64 / wall,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(99.9),
        all.last().copied().unwrap_or(0)
    );
}

/// Reads one response (Content-Length or chunked): (is it a 2xx, may the connection be reused).
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(bool, bool)> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        return Ok((false, false));
    }
    let ok = line.split(' ').nth(1).is_some_and(|c| c.starts_with('2'));
    let mut len: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok((false, false));
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "content-length" {
                len = v.parse().ok();
            } else if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
            let mut buf = vec![0u8; n + 2];
            r.read_exact(&mut buf)?;
            if n == 0 {
                break;
            }
        }
    } else if let Some(n) = len {
        let mut buf = vec![0u8; n];
        r.read_exact(&mut buf)?;
    }
    Ok((ok, !close))
}

fn opts(args: &[String]) -> HashMap<String, String> {
    args.chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].trim_start_matches("--").to_string(), c[1].clone()))
        .collect()
}

/// Accepts connections; each sends an 8-byte big-endian length and that many bytes, which are
/// read and dropped, then gets a one-byte ack. Runs until killed (bench/run stops it by pid).
fn tcp_sink(args: &[String]) {
    let o = opts(args);
    let l = std::net::TcpListener::bind(o.get("listen").expect("--listen").as_str()).expect("bind");
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        std::thread::spawn(move || {
            let mut len = [0u8; 8];
            if s.read_exact(&mut len).is_err() {
                return;
            }
            let mut left = u64::from_be_bytes(len);
            let mut buf = vec![0u8; 256 * 1024];
            while left > 0 {
                let want = buf.len().min(left as usize);
                match s.read(&mut buf[..want]) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => left -= n as u64,
                }
            }
            let _ = s.write_all(b"k");
        });
    }
}

/// Sends `mb` MiB through `addr` on one connection and waits for the sink's ack; prints JSON.
fn tcp_send(args: &[String]) {
    let o = opts(args);
    let addr: SocketAddr = o.get("addr").expect("--addr").parse().expect("ip:port");
    let mb: u64 = o.get("mb").map_or(1024, |v| v.parse().expect("mb"));
    let total = mb * 1024 * 1024;
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    s.write_all(&total.to_be_bytes()).expect("write");
    let buf = vec![0x5au8; 256 * 1024];
    let mut left = total;
    while left > 0 {
        let n = buf.len().min(left as usize);
        s.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    let mut ack = [0u8; 1];
    let ok = s.read_exact(&mut ack).is_ok() && ack[0] == b'k';
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\":{},\"ok\":{},\"secs\":{:.3},\"mib_per_s\":{:.1}}}",
        total,
        ok,
        secs,
        total as f64 / 1048576.0 / secs
    );
}
