//! The echo workload's controls, through the real binary on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Echo {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(env: &[(&str, &str)]) -> Echo {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port");
    let child = Command::new(env!("CARGO_BIN_EXE_echo"))
        .env("LISTEN_ADDR", addr.to_string())
        .env("POD_NAME", "echo-test")
        .env("VERSION", "v9")
        .envs(env.iter().copied())
        .stderr(Stdio::null())
        .spawn()
        .expect("start echo");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "echo did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Echo { child, addr }
}

/// (status, body); status 0 when the connection closed without an answer.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn says_who_answered_and_misbehaves_on_request() {
    let e = start(&[]);
    let (status, body) = get(e.addr, "/hello?x=1");
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(v["pod"], "echo-test");
    assert_eq!(v["version"], "v9");
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(v["headers"]["host"], "echo");

    assert_eq!(get(e.addr, "/?status=418").0, 418);
    let every: Vec<u16> = (0..4)
        .map(|_| get(e.addr, "/?fail_every=2&fail_status=502").0)
        .collect();
    assert_eq!(every.iter().filter(|s| **s == 502).count(), 2, "{every:?}");
    let started = Instant::now();
    assert_eq!(get(e.addr, "/?delay_ms=200").0, 200);
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        get(e.addr, "/?reset=1").0,
        0,
        "the connection is closed unanswered"
    );
    let failed = (0..200)
        .filter(|_| get(e.addr, "/?fail_pct=50").0 == 503)
        .count();
    assert!((60..=140).contains(&failed), "about half fail: {failed}");
}

#[test]
fn a_broken_pod_fails_everything_but_health() {
    let e = start(&[("FAIL_STATUS", "500")]);
    assert_eq!(get(e.addr, "/").0, 500);
    assert_eq!(get(e.addr, "/healthz").0, 200);
}
