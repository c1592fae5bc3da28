//! One proxy hop vs direct, on loopback. Bounded: 10 000 requests over 16 keep-alive
//! connections per run (plus 800 warm-up requests), and 2 000 requests over one connection
//! (no queueing: the added latency of the hop itself).
//!
//! Run: `cargo test --release -p skein-proxy --test integration bench:: -- --ignored --nocapture`

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skein_proxy::{AccessLogSink, ProxyConfig};
use skein_snapshot::build::SnapshotBuilder;
use tokio::net::{TcpListener, TcpStream};

const CONNS: usize = 16;
const REQUESTS: usize = 10_000;
const SERIAL: usize = 2_000;
const WARMUP: usize = 800;

async fn tiny_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                        b"hello from upstream",
                    ))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// Runs `total` requests over `CONNS` connections; returns sorted latencies and wall time.
async fn load(target: SocketAddr, url: &'static str, total: usize) -> (Vec<Duration>, Duration) {
    load_on(target, url, total, CONNS).await
}

async fn load_on(
    target: SocketAddr,
    url: &'static str,
    total: usize,
    conns: usize,
) -> (Vec<Duration>, Duration) {
    let per_conn = total / conns;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conns {
        tasks.push(tokio::spawn(async move {
            let s = TcpStream::connect(target).await.expect("connect");
            let _ = s.set_nodelay(true);
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            let mut lat = Vec::with_capacity(per_conn);
            for _ in 0..per_conn {
                let req = http::Request::get(url)
                    .header("host", "bench:8080")
                    .body(Full::new(Bytes::new()))
                    .expect("req");
                let t = Instant::now();
                tx.ready().await.expect("ready");
                let resp = tx.send_request(req).await.expect("send");
                assert_eq!(resp.status(), 200);
                let _ = resp.into_body().collect().await.expect("body");
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    let wall = started.elapsed();
    all.sort();
    (all, wall)
}

fn pct(v: &[Duration], p: f64) -> f64 {
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e6
}

/// Starts a sidecar on its own single-worker runtime (the sidecar default).
fn proxy_thread(
    upstream: SocketAddr,
    log: AccessLogSink,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let snap = SnapshotBuilder::new("bench", "ns", "client")
                .http_service("bench", 8080, &[&upstream.to_string()])
                .build();
            let cfg =
                ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr")).with_access_log(log);
            let h = skein_proxy::start(cfg).await.expect("start");
            h.apply(snap).expect("apply");
            addr_tx
                .send(h.addrs.outbound_http.expect("outbound"))
                .expect("send addr");
            let _ = stop_rx.await;
            h.shutdown().await;
        });
    });
    (addr_rx.recv().expect("proxy address"), stop_tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; run in release with --ignored --nocapture"]
async fn one_hop_overhead() {
    let upstream = tiny_upstream().await;
    let report = |name: &str, lat: &[Duration], wall: Duration| {
        println!(
            "{name:<22} p50 {:>7.1} us  p90 {:>7.1} us  p99 {:>7.1} us  {:>8.0} req/s",
            pct(lat, 0.50),
            pct(lat, 0.90),
            pct(lat, 0.99),
            lat.len() as f64 / wall.as_secs_f64()
        );
    };
    load(upstream, "/", WARMUP).await;
    let (direct, dwall) = load(upstream, "/", REQUESTS).await;
    report("direct", &direct, dwall);

    let (proxy, stop) = proxy_thread(upstream, AccessLogSink::Off);
    load(proxy, "http://bench:8080/", WARMUP).await;
    let (via, vwall) = load(proxy, "http://bench:8080/", REQUESTS).await;
    report("via proxy (no log)", &via, vwall);
    let (sd, sdw) = load_on(upstream, "/", SERIAL, 1).await;
    let (sp, spw) = load_on(proxy, "http://bench:8080/", SERIAL, 1).await;
    report("serial direct", &sd, sdw);
    report("serial via proxy", &sp, spw);
    println!(
        "serial (1 connection): added p50 +{:.1} us, p99 +{:.1} us",
        pct(&sp, 0.5) - pct(&sd, 0.5),
        pct(&sp, 0.99) - pct(&sd, 0.99)
    );
    let _ = stop.send(());

    let (proxy, stop) = proxy_thread(upstream, AccessLogSink::File("/dev/null".into()));
    load(proxy, "http://bench:8080/", WARMUP).await;
    let (vial, vlwall) = load(proxy, "http://bench:8080/", REQUESTS).await;
    report("via proxy (access log)", &vial, vlwall);
    let _ = stop.send(());

    println!(
        "added by one hop: p50 +{:.1} us, p99 +{:.1} us (no log); p50 +{:.1} us, p99 +{:.1} us (log)",
        pct(&via, 0.5) - pct(&direct, 0.5),
        pct(&via, 0.99) - pct(&direct, 0.99),
        pct(&vial, 0.5) - pct(&direct, 0.5),
        pct(&vial, 0.99) - pct(&direct, 0.99),
    );
}
