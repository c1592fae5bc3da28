//! DestinationRule outlierDetection: ejection after consecutive errors, ejection time backoff,
//! maxEjectionPercent, panic below minHealthPercent, gateway errors, TCP connect failures, and
//! the admin view. Real sockets on paused time: an ejection starts and ends at its exact
//! virtual millisecond, and the tests check both sides of each end.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skein_proxy::test_util::*;
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn, route_to};
use skein_snapshot::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, sleep_until};

const NS: &str = "blog-system";
const URL: &str = "http://svc:8080/";

/// An upstream pod whose answer status can be switched at run time (0: 200).
#[derive(Clone)]
struct Pod {
    name: String,
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    requests: Arc<AtomicUsize>,
}

impl Pod {
    async fn start(name: &str) -> Pod {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind pod");
        let pod = Pod {
            name: name.to_string(),
            addr: listener.local_addr().expect("addr"),
            status: Arc::new(AtomicU16::new(0)),
            requests: Arc::new(AtomicUsize::new(0)),
        };
        let p = pod.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let p = p.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let p = p.clone();
                        async move {
                            p.requests.fetch_add(1, Ordering::SeqCst);
                            let code = match p.status.load(Ordering::SeqCst) {
                                0 => 200,
                                c => c,
                            };
                            let mut r = http::Response::new(Full::new(Bytes::from(p.name.clone())));
                            *r.status_mut() =
                                http::StatusCode::from_u16(code).expect("status code");
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        pod
    }

    fn fail_with(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn od(base_ms: u64, interval_ms: u64, max_pct: u32, min_health: u32) -> OutlierDetection {
    OutlierDetection {
        consecutive_5xx_errors: 5,
        consecutive_gateway_errors: None,
        interval_ms,
        base_ejection_time_ms: base_ms,
        max_ejection_percent: max_pct,
        min_health_percent: min_health,
    }
}

fn snapshot(version: &str, pods: &[&Pod], od: OutlierDetection) -> (Snapshot, String) {
    let addrs: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let mut c = cluster(&fqdn("svc", NS), 8080, None, &refs);
    c.lb_policy = LbPolicy::RoundRobin;
    c.outlier_detection = Some(od);
    let name = c.name.clone();
    let snap = SnapshotBuilder::new(version, NS, "web")
        .cluster(c)
        .service_routes("svc", 8080, vec![route_to(&name)])
        .build();
    (snap, name)
}

async fn admin_json(h: &skein_proxy::ProxyHandle, path: &str) -> Resp {
    let admin = h.addrs.admin.expect("admin bound");
    H1Client::connect(admin)
        .await
        .send("GET", &format!("http://{admin}{path}"), &[])
        .await
}

/// `endpoint_status` of `cluster` from /config_dump, by address.
async fn status_of(
    h: &skein_proxy::ProxyHandle,
    cluster: &str,
    addr: SocketAddr,
) -> serde_json::Value {
    let dump = admin_json(h, "/config_dump").await.json();
    dump["endpoint_status"][cluster]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|e| e["address"] == serde_json::json!(addr.to_string()))
                .cloned()
        })
        .unwrap_or(serde_json::Value::Null)
}

/// Sends requests until `pod` has answered `n` in total (bounded).
async fn until_pod_got(c: &mut H1Client, pod: &Pod, n: usize) {
    for _ in 0..200 {
        if pod.requests() >= n {
            return;
        }
        c.get(URL).await;
    }
    panic!("{} never got {n} requests", pod.name);
}

#[tokio::test(start_paused = true)]
async fn five_5xx_eject_for_base_time_then_twice_as_long() {
    let (a, b, bad) = (
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("bad").await,
    );
    bad.fail_with(500);
    let (snap, name) = snapshot("v1", &[&a, &b, &bad], od(300, 10_000, 100, 0));
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;

    until_pod_got(&mut c, &bad, 5).await;
    let ejected_at = Instant::now();
    let st = status_of(&h, &name, bad.addr).await;
    assert_eq!(st["status"], "ejected", "{st}");
    assert_eq!(st["ejections"], 1, "{st}");
    assert_eq!(st["ejected_until_ms"], 300, "baseEjectionTime: {st}");
    let clusters = admin_json(&h, "/clusters").await.body;
    assert!(
        clusters.contains(&format!(
            "{name}::{}::health_flags::/failed_outlier_check",
            bad.addr
        )),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("{name}::{}::health_flags::healthy", a.addr)),
        "{clusters}"
    );

    // Ejected: nothing reaches it, every request succeeds, up to the last millisecond.
    for _ in 0..20 {
        assert_eq!(c.get(URL).await.status, 200);
    }
    sleep_until(ejected_at + Duration::from_millis(299)).await;
    for _ in 0..4 {
        assert_eq!(c.get(URL).await.status, 200);
    }
    assert_eq!(bad.requests(), 5, "still ejected at 299 ms of 300");

    // Back after baseEjectionTime (300 ms).
    sleep_until(ejected_at + Duration::from_millis(300)).await;
    until_pod_got(&mut c, &bad, 6).await;
    // Still failing: five more errors eject it again, for 2 x 300 ms.
    until_pod_got(&mut c, &bad, 10).await;
    let again = Instant::now();
    let st = status_of(&h, &name, bad.addr).await;
    assert_eq!(st["status"], "ejected", "{st}");
    assert_eq!(st["ejections"], 2, "{st}");
    assert_eq!(
        st["ejected_until_ms"], 600,
        "second ejection lasts 600 ms: {st}"
    );
    sleep_until(again + Duration::from_millis(599)).await;
    for _ in 0..9 {
        assert_eq!(c.get(URL).await.status, 200);
    }
    assert_eq!(
        bad.requests(),
        10,
        "still ejected 599 ms into a 600 ms ejection"
    );
    sleep_until(again + Duration::from_millis(600)).await;
    bad.fail_with(0);
    until_pod_got(&mut c, &bad, 11).await;
    let st = status_of(&h, &name, bad.addr).await;
    assert_eq!(st["status"], "healthy", "{st}");
    assert_eq!(st["consecutive_5xx"], 0, "{st}");
    let stats = admin_json(&h, "/stats/prometheus").await.body;
    assert!(
        stats.contains(&format!(
            "skein_outlier_ejections_total{{cluster=\"{name}\"}} 2"
        )),
        "{stats}"
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_ejection_percent_bounds_ejections() {
    let (a, bad1, bad2) = (
        Pod::start("a").await,
        Pod::start("bad1").await,
        Pod::start("bad2").await,
    );
    bad1.fail_with(500);
    bad2.fail_with(503);
    let (snap, name) = snapshot("v1", &[&a, &bad1, &bad2], od(10_000, 10_000, 50, 0));
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    for _ in 0..60 {
        c.get(URL).await;
    }
    let dump = admin_json(&h, "/config_dump").await.json();
    let eps = dump["endpoint_status"][&name]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let ejected = eps.iter().filter(|e| e["status"] == "ejected").count();
    assert_eq!(ejected, 1, "50% of 3 allows one: {eps:?}");
    // The one not ejected still gets its share.
    let (r1, r2) = (bad1.requests(), bad2.requests());
    for _ in 0..20 {
        c.get(URL).await;
    }
    assert!(
        bad1.requests() > r1 || bad2.requests() > r2,
        "the second failing pod must keep receiving traffic"
    );
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn panic_below_min_health_percent_uses_all_endpoints() {
    let (a, bad1, bad2) = (
        Pod::start("a").await,
        Pod::start("bad1").await,
        Pod::start("bad2").await,
    );
    bad1.fail_with(500);
    bad2.fail_with(500);
    let (snap, name) = snapshot("v1", &[&a, &bad1, &bad2], od(10_000, 10_000, 100, 50));
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    until_pod_got(&mut c, &bad1, 5).await;
    until_pod_got(&mut c, &bad2, 5).await;
    for addr in [bad1.addr, bad2.addr] {
        assert_eq!(status_of(&h, &name, addr).await["status"], "ejected");
    }
    // 1 of 3 healthy < 50%: panic, the balancer ignores ejections.
    let before = [a.requests(), bad1.requests(), bad2.requests()];
    for _ in 0..30 {
        c.get(URL).await;
    }
    let after = [a.requests(), bad1.requests(), bad2.requests()];
    for i in 0..3 {
        assert!(
            after[i] >= before[i] + 5,
            "all pods get traffic in panic: {before:?} -> {after:?}"
        );
    }
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn all_ejected_without_panic_is_503_uh() {
    let bad = Pod::start("bad").await;
    bad.fail_with(502);
    let (snap, _) = snapshot("v1", &[&bad], od(10_000, 10_000, 100, 0));
    let (h, log) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    for _ in 0..5 {
        assert_eq!(c.get(URL).await.status, 502);
    }
    let r = c.get(URL).await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "no healthy upstream");
    assert_eq!(bad.requests(), 5);
    let lines = log_lines(&log, 6).await;
    assert!(lines[5].contains(" 503 UH "), "{}", lines[5]);
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn gateway_errors_eject_on_502_503_504_not_500() {
    let (a, b, bad) = (
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("bad").await,
    );
    let mut o = od(10_000, 10_000, 100, 0);
    o.consecutive_5xx_errors = 0;
    o.consecutive_gateway_errors = Some(3);
    let (snap, name) = snapshot("v1", &[&a, &b, &bad], o);
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    bad.fail_with(500);
    until_pod_got(&mut c, &bad, 10).await;
    assert_eq!(status_of(&h, &name, bad.addr).await["status"], "healthy");
    bad.fail_with(502);
    until_pod_got(&mut c, &bad, 11).await;
    bad.fail_with(504);
    until_pod_got(&mut c, &bad, 12).await;
    bad.fail_with(503);
    until_pod_got(&mut c, &bad, 13).await;
    let st = status_of(&h, &name, bad.addr).await;
    assert_eq!(st["status"], "ejected", "{st}");
    for _ in 0..10 {
        assert_eq!(c.get(URL).await.status, 200);
    }
    assert_eq!(bad.requests(), 13);
    h.shutdown().await;
}

async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test(start_paused = true)]
async fn tcp_connect_failures_eject_for_a_tcp_cluster() {
    let echo = echo_server().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let mut c = cluster(
        &fqdn("mysql", NS),
        3306,
        None,
        &[&echo.to_string(), &closed.to_string()],
    );
    c.protocol = Protocol::Tcp;
    c.lb_policy = LbPolicy::RoundRobin;
    c.connection_pool.connect_timeout_ms = 1000;
    c.outlier_detection = Some(od(10_000, 10_000, 50, 0));
    let name = c.name.clone();
    let snap = SnapshotBuilder::new("v1", NS, "was")
        .cluster(c)
        .tcp_listener(&name, "127.0.0.1:0".parse().expect("addr"), &name)
        .build();
    let (h, _) = sidecar(snap).await;
    let addr = h.listener_addr(&name).expect("tcp listener bound");
    let mut ok = 0;
    for _ in 0..10 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        let got = tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("bounded read");
        if got.is_ok() && &buf == b"ping" {
            ok += 1;
        }
    }
    // Five connect failures eject the closed endpoint; the other five went to the echo.
    assert_eq!(ok, 5);
    let st = status_of(&h, &name, closed).await;
    assert_eq!(st["status"], "ejected", "{st}");
    for _ in 0..5 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(b"pong").await.expect("write");
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut buf))
            .await
            .expect("bounded read")
            .expect("ejected endpoint skipped: every connection reaches the echo");
        assert_eq!(&buf, b"pong");
    }
    h.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn ejection_survives_a_push_that_changes_endpoints() {
    let (a, b, bad) = (
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("bad").await,
    );
    bad.fail_with(500);
    let (snap, name) = snapshot("v1", &[&a, &b, &bad], od(10_000, 10_000, 100, 0));
    let (h, _) = sidecar(snap).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    until_pod_got(&mut c, &bad, 5).await;
    let d = Pod::start("d").await;
    let (snap2, _) = snapshot("v2", &[&bad, &a, &d], od(10_000, 10_000, 100, 0));
    h.apply(snap2).expect("apply v2");
    for _ in 0..20 {
        assert_eq!(c.get(URL).await.status, 200);
    }
    assert_eq!(bad.requests(), 5, "still ejected after the push");
    assert!(d.requests() > 0);
    let st = status_of(&h, &name, bad.addr).await;
    assert_eq!(st["status"], "ejected", "{st}");
    assert_eq!(st["ejections"], 1, "{st}");
    h.shutdown().await;
}
