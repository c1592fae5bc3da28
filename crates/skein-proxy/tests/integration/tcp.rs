//! Opaque TCP forwarding and inbound protocol detection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skein_proxy::test_util::*;
use skein_proxy::{AccessLogSink, ProxyConfig};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP echo server.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// An app that serves HTTP/1 and h2c, echoes anything else, and greets clients that say
/// nothing (a server-first protocol such as MySQL).
async fn polyglot_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut b = [0u8; 4];
                let peeked = tokio::time::timeout(Duration::from_millis(300), s.peek(&mut b)).await;
                match peeked {
                    Ok(Ok(n)) if n >= 3 && (&b[..3] == b"GET" || &b[..3] == b"PRI") => {
                        let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                            let v = format!("{:?}", req.version());
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(v))))
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(s), svc)
                            .await;
                    }
                    Ok(Ok(_)) => {
                        let (mut r, mut w) = s.split();
                        let _ = w.write_all(b"echo:").await;
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                    _ => {
                        let _ = s.write_all(b"hello\n").await;
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                }
            });
        }
    });
    addr
}

async fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut buf))
        .await
        .expect("read timed out")
        .expect("read");
    buf
}

fn mysql_snapshot(endpoints: &[&str], max_connections: u32) -> Snapshot {
    let mut c = cluster(&fqdn("mysql", "blog-system"), 3306, None, endpoints);
    c.protocol = Protocol::Tcp;
    c.connection_pool.max_connections = max_connections;
    c.connection_pool.connect_timeout_ms = 1000;
    let name = c.name.clone();
    SnapshotBuilder::new("v1", "blog-system", "was")
        .cluster(c)
        .tcp_listener(&name, "127.0.0.1:0".parse().expect("addr"), &name)
        .build()
}

const MYSQL: &str = "outbound|3306||mysql.blog-system.svc.cluster.local";

#[tokio::test(start_paused = true)]
async fn tcp_listener_forwards_bytes_and_enforces_max_connections() {
    let echo = echo_server().await;
    let (h, log) = sidecar(mysql_snapshot(&[&echo.to_string()], 1)).await;
    let addr = h.listener_addr(MYSQL).expect("tcp listener bound");
    let mut c1 = TcpStream::connect(addr).await.expect("connect");
    c1.write_all(b"ping").await.expect("write");
    assert_eq!(read_n(&mut c1, 4).await, b"ping");

    // Second connection overflows maxConnections=1: closed at once.
    let mut c2 = TcpStream::connect(addr).await.expect("connect");
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(1), c2.read(&mut buf))
        .await
        .expect("overflow must close at once")
        .unwrap_or(0);
    assert_eq!(n, 0);

    drop(c1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c3 = TcpStream::connect(addr).await.expect("connect");
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    c3.write_all(&payload).await.expect("write");
    assert_eq!(read_n(&mut c3, payload.len()).await, payload);
    drop(c3);

    let lines = log_lines(&log, 3).await;
    let uo = lines.iter().find(|l| l.contains(" UO ")).expect("UO line");
    assert!(uo.contains(&format!(" {MYSQL} ")), "{uo}");
    assert!(
        uo.starts_with('[') && uo.contains("\"- - -\" 0 UO "),
        "{uo}"
    );
    let ok = lines
        .iter()
        .find(|l| l.contains(" 4 4 "))
        .expect("first stream line");
    assert!(ok.contains(&format!("\"{echo}\"")), "{ok}");
}

#[tokio::test(start_paused = true)]
async fn tcp_connect_failure_is_uf() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let (h, log) = sidecar(mysql_snapshot(&[&closed.to_string()], u32::MAX)).await;
    let mut c = TcpStream::connect(h.listener_addr(MYSQL).expect("bound"))
        .await
        .expect("connect");
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].contains(" 0 UF "), "{}", lines[0]);
}

#[tokio::test(start_paused = true)]
async fn inbound_detects_http1_h2c_and_opaque_tcp_on_one_port() {
    let app = polyglot_app().await;
    let log = temp_path("inbound");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_inbound("127.0.0.1:0".parse().expect("addr"), app)
        .with_access_log(AccessLogSink::File(log.clone()));
    let h = skein_proxy::start(cfg).await.expect("start");
    h.apply(SnapshotBuilder::new("v1", "blog-system", "was").build())
        .expect("apply");
    let inbound = h.addrs.inbound.expect("inbound bound");

    // HTTP/1.1.
    let r = get(inbound, "http://was-service:8080/api/posts", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "HTTP/1.1"));

    // h2c prior knowledge: the app is reached over HTTP/2 as well.
    let stream = TcpStream::connect(inbound).await.expect("connect");
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            http::Request::get("http://was-service:8080/")
                .body(Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("h2 send");
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(&body[..], b"HTTP/2.0");

    // Opaque bytes.
    let mut s = TcpStream::connect(inbound).await.expect("connect");
    s.write_all(b"\x00\x01binary").await.expect("write");
    assert_eq!(read_n(&mut s, 13).await, b"echo:\x00\x01binary");

    // Server-first: the client says nothing; detection times out to TCP and the app greets.
    let mut s = TcpStream::connect(inbound).await.expect("connect");
    assert_eq!(read_n(&mut s, 6).await, b"hello\n");

    let port = app.port();
    let lines = log_lines(&log, 2).await;
    let http_line = lines
        .iter()
        .find(|l| l.contains("\"GET /api/posts HTTP/1.1\""))
        .expect("line");
    assert!(
        http_line.contains(&format!(" inbound|{port}|| ")),
        "{http_line}"
    );
}

#[tokio::test(start_paused = true)]
async fn sidecar_serves_several_inbound_ports_each_with_its_own_cluster() {
    let web = Upstream::start("web").await;
    let metrics = Upstream::start("metrics").await;
    let log = temp_path("inbounds");
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let cfg = ProxyConfig::sidecar(any)
        .with_inbound(any, web.addr)
        .with_inbound(any, metrics.addr)
        .with_access_log(AccessLogSink::File(log.clone()));
    let h = skein_proxy::start(cfg).await.expect("start");
    assert_eq!(h.addrs.inbounds.len(), 2);
    assert_eq!(h.addrs.inbound, h.addrs.inbounds.first().copied());
    let (in_web, in_metrics) = (h.addrs.inbounds[0], h.addrs.inbounds[1]);
    let web_cluster = inbound_cluster_name(web.addr.port());
    let metrics_cluster = inbound_cluster_name(metrics.addr.port());

    // The snapshot's `inbound|PORT||` policy applies to that port only: no requests allowed.
    let snap = |version: &str| {
        SnapshotBuilder::new(version, "blog-system", "was")
            .cluster(Cluster {
                name: metrics_cluster.clone(),
                connection_pool: ConnectionPool {
                    http2_max_requests: 0,
                    ..Default::default()
                },
                ..Default::default()
            })
            .build()
    };
    h.apply(snap("v1")).expect("apply");

    for _ in 0..3 {
        let r = get(in_web, "http://was-service:8080/", &[]).await;
        assert_eq!((r.status, r.upstream().as_str()), (200, "web"));
    }
    let r = get(in_metrics, "http://was-service:9090/", &[]).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("overflow"), "{}", r.body);
    assert_eq!(
        metrics.requests.load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    let lines = log_lines(&log, 4).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!(" {web_cluster} ")) && l.contains(" 200 ")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!(" {metrics_cluster} ")) && l.contains(" 503 UO ")),
        "{lines:?}"
    );

    // A push that leaves the inbound clusters alone keeps them (and their counters).
    h.apply(snap("v2")).expect("apply v2");
    let clusters = h.clusters_text();
    assert!(
        clusters.contains(&format!("{web_cluster}::{}::rq_total::3", web.addr)),
        "{clusters}"
    );
    assert!(
        clusters.contains(&format!("{metrics_cluster}::{}::", metrics.addr)),
        "{clusters}"
    );

    // Two inbound listeners for one port would share a cluster: refused at start.
    let dup = ProxyConfig::sidecar(any)
        .with_inbound(any, web.addr)
        .with_inbound(any, web.addr);
    let err = skein_proxy::start(dup).await.expect_err("duplicate port");
    assert!(err.to_string().contains(&web_cluster), "{err}");
}

/// A stream with bytes at least every second outlives a 2 s idle timeout; once quiet it is
/// closed (both sides) between 2 and 2.5 s after its last byte, and logged with its counts.
#[tokio::test(start_paused = true)]
async fn tcp_idle_timeout_closes_quiet_streams_only() {
    let echo = echo_server().await;
    let log = temp_path("tcp-idle");
    let mut cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()));
    cfg.limits = skein_proxy::Limits {
        tcp_idle_timeout: Duration::from_secs(2),
        ..skein_proxy::Limits::default()
    };
    let h = skein_proxy::start(cfg).await.expect("start");
    h.apply(mysql_snapshot(&[&echo.to_string()], 10))
        .expect("apply");
    let addr = h.listener_addr(MYSQL).expect("tcp listener bound");
    let mut c = TcpStream::connect(addr).await.expect("connect");
    c.write_all(b"ping").await.expect("write");
    assert_eq!(read_n(&mut c, 4).await, b"ping");
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        c.write_all(b"x").await.expect("write while active");
        assert_eq!(read_n(&mut c, 1).await, b"x");
    }
    let quiet = tokio::time::Instant::now();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("the idle stream is closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_secs(2) && after <= Duration::from_millis(2600),
        "closed {after:?} after the last byte"
    );
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].contains(" 10 10 "), "{lines:?}");
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 241) as u8).wrapping_add(seed))
        .collect()
}

/// Plain TCP on both sides (spliced in the kernel): several MiB each way at once arrive
/// intact, each side's EOF reaches the other, and the access log has the exact counts.
#[tokio::test]
async fn plain_tcp_bulk_both_ways_is_intact_half_closed_and_counted() {
    const UP: usize = 6 * 1024 * 1024 + 5;
    const DOWN: usize = 4 * 1024 * 1024 + 77;
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = l.local_addr().expect("addr");
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let (mut r, mut w) = s.split();
        let reply = pattern(DOWN, 5);
        let send = async {
            w.write_all(&reply).await.expect("app write");
            w.shutdown().await.expect("app shutdown");
        };
        let mut got = Vec::new();
        let ((), read) = tokio::join!(send, r.read_to_end(&mut got));
        read.expect("app read");
        let _ = got_tx.send(got);
    });
    let (h, log) = sidecar(mysql_snapshot(&[&app.to_string()], 10)).await;
    let addr = h.listener_addr(MYSQL).expect("tcp listener bound");
    let up = pattern(UP, 1);
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&up).await.expect("client write");
        w.shutdown().await.expect("client shutdown");
    };
    let mut down = Vec::new();
    let ((), read) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(send, r.read_to_end(&mut down))
    })
    .await
    .expect("transfer finished");
    read.expect("client read");
    assert!(
        down == pattern(DOWN, 5),
        "reply differs ({} bytes)",
        down.len()
    );
    let got = tokio::time::timeout(Duration::from_secs(5), got_rx)
        .await
        .expect("app done")
        .expect("app result");
    assert!(got == up, "upload differs ({} bytes)", got.len());
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].contains(&format!(" {UP} {DOWN} ")), "{lines:?}");
}
