//! Load balancing, circuit breaking, connection pools, HTTP/2.
//!
//! On paused time: the pool ages idle connections by tokio's clock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use skein_proxy::test_util::*;
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::*;
use tokio::time::Instant;

const NS: &str = "ns";
const URL: &str = "http://svc:80/";

async fn upstreams(n: usize) -> Vec<Upstream> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(Upstream::start(&format!("u{i}")).await);
    }
    v
}

/// One service `svc:80` whose cluster has the given endpoints and is tuned by `f`.
fn snapshot(ups: &[Upstream], f: impl FnOnce(&mut Cluster)) -> Snapshot {
    let addrs: Vec<String> = ups.iter().map(Upstream::addr_str).collect();
    let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
    let mut c = cluster(&fqdn("svc", NS), 80, None, &refs);
    f(&mut c);
    let name = c.name.clone();
    SnapshotBuilder::new("v1", NS, "client")
        .cluster(c)
        .service_routes("svc", 80, vec![skein_snapshot::build::route_to(&name)])
        .build()
}

#[tokio::test(start_paused = true)]
async fn round_robin_alternates_exactly() {
    let ups = upstreams(3).await;
    let (h, _) = sidecar(snapshot(&ups, |c| c.lb_policy = LbPolicy::RoundRobin)).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let mut seq = Vec::new();
    for _ in 0..12 {
        seq.push(c.get(URL).await.upstream());
    }
    for i in 0..9 {
        assert_eq!(seq[i], seq[i + 3], "period 3: {seq:?}");
        assert_ne!(seq[i], seq[i + 1], "alternates: {seq:?}");
    }
    assert_eq!(tally(seq).len(), 3);
}

#[tokio::test(start_paused = true)]
async fn least_request_prefers_the_idle_host() {
    let ups = upstreams(2).await;
    let (h, _) = sidecar(snapshot(&ups, |c| c.lb_policy = LbPolicy::LeastRequest)).await;
    let proxy = outbound(&h);
    let slow = tokio::spawn(async move { get(proxy, URL, &[("x-delay-ms", "800")]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut c = H1Client::connect(proxy).await;
    let mut fast = Vec::new();
    for _ in 0..20 {
        fast.push(c.get(URL).await.upstream());
    }
    let slow_host = slow.await.expect("slow request").upstream();
    let t = tally(fast);
    assert_eq!(t.len(), 1, "all fast requests on one host: {t:?}");
    assert!(
        !t.contains_key(&slow_host),
        "fast requests avoided busy {slow_host}: {t:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn consistent_hash_is_sticky_per_key_and_spreads() {
    let ups = upstreams(4).await;
    let (h, _) = sidecar(snapshot(&ups, |c| {
        c.lb_policy = LbPolicy::ConsistentHash(ConsistentHash {
            key: HashKey::Header("x-user".into()),
            minimum_ring_size: 1024,
        })
    }))
    .await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let mut owners = Vec::new();
    for user in 0..40 {
        let u = format!("user-{user}");
        let first = c.send("GET", URL, &[("x-user", &u)]).await.upstream();
        for _ in 0..4 {
            assert_eq!(
                c.send("GET", URL, &[("x-user", &u)]).await.upstream(),
                first,
                "{u}"
            );
        }
        owners.push(first);
    }
    assert!(
        tally(owners.clone()).len() >= 3,
        "keys spread: {:?}",
        tally(owners)
    );
}

#[tokio::test(start_paused = true)]
async fn consistent_hash_by_query_and_cookie() {
    let ups = upstreams(3).await;
    for key in [
        HashKey::QueryParam("id".into()),
        HashKey::Cookie {
            name: "session".into(),
            path: None,
            ttl_ms: None,
        },
    ] {
        let (h, _) = sidecar(snapshot(&ups, |c| {
            c.lb_policy = LbPolicy::ConsistentHash(ConsistentHash {
                key: key.clone(),
                minimum_ring_size: 256,
            })
        }))
        .await;
        let mut c = H1Client::connect(outbound(&h)).await;
        let mut owners = Vec::new();
        for k in 0..20 {
            let url = format!("http://svc/?a=1&id=k{k}");
            let cookie = format!("x=1; session=k{k}");
            let hdrs = [("cookie", cookie.as_str())];
            let first = c.send("GET", &url, &hdrs).await.upstream();
            for _ in 0..3 {
                assert_eq!(
                    c.send("GET", &url, &hdrs).await.upstream(),
                    first,
                    "{key:?}"
                );
            }
            owners.push(first);
        }
        assert!(tally(owners).len() >= 2, "{key:?} spreads");
    }
}

#[tokio::test(start_paused = true)]
async fn random_covers_every_host() {
    let ups = upstreams(4).await;
    let (h, _) = sidecar(snapshot(&ups, |c| c.lb_policy = LbPolicy::Random)).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen.push(c.get(URL).await.upstream());
    }
    assert_eq!(tally(seen).len(), 4);
}

#[tokio::test(start_paused = true)]
async fn overflow_returns_503_uo_at_once() {
    let ups = upstreams(1).await;
    let (h, log) = sidecar(snapshot(&ups, |c| {
        c.connection_pool.max_connections = 1;
        c.connection_pool.http1_max_pending_requests = 1;
    }))
    .await;
    let proxy = outbound(&h);
    let mut tasks = Vec::new();
    for _ in 0..5 {
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = get(proxy, URL, &[("x-delay-ms", "500")]).await;
            (r, t.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all = tokio::time::timeout(Duration::from_secs(5), async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("task"));
        }
        out
    })
    .await
    .expect("no request may hang");
    let ok = all.iter().filter(|(r, _)| r.status == 200).count();
    let uo: Vec<_> = all.iter().filter(|(r, _)| r.status == 503).collect();
    assert_eq!(ok, 2, "one active + one pending succeed");
    assert_eq!(uo.len(), 3);
    for (r, took) in &uo {
        assert_eq!(
            r.body,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow"
        );
        assert!(
            *took < Duration::from_millis(300),
            "overflow is immediate: {took:?}"
        );
    }
    assert_eq!(ups[0].accepts(), 1, "max_connections=1");
    let lines = log_lines(&log, 5).await;
    assert_eq!(
        lines.iter().filter(|l| l.contains(" 503 UO ")).count(),
        3,
        "{lines:#?}"
    );
}

#[tokio::test(start_paused = true)]
async fn max_requests_overflow_is_503_uo() {
    let ups = upstreams(1).await;
    let (h, _) = sidecar(snapshot(&ups, |c| c.connection_pool.http2_max_requests = 1)).await;
    let proxy = outbound(&h);
    let slow = tokio::spawn(async move { get(proxy, URL, &[("x-delay-ms", "400")]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = tokio::time::timeout(Duration::from_secs(2), get(proxy, URL, &[]))
        .await
        .expect("no hang");
    assert_eq!(r.status, 503);
    assert_eq!(slow.await.expect("slow").status, 200);
    assert_eq!(get(proxy, URL, &[]).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn max_requests_per_connection_retires_connections() {
    let ups = upstreams(1).await;
    let (h, _) = sidecar(snapshot(&ups, |c| {
        c.connection_pool.max_requests_per_connection = 2
    }))
    .await;
    let mut c = H1Client::connect(outbound(&h)).await;
    for _ in 0..6 {
        assert_eq!(c.get(URL).await.status, 200);
    }
    assert_eq!(ups[0].accepts(), 3);
}

#[tokio::test(start_paused = true)]
async fn keep_alive_reuses_one_upstream_connection() {
    let ups = upstreams(1).await;
    let (h, _) = sidecar(snapshot(&ups, |_| {})).await;
    let mut c = H1Client::connect(outbound(&h)).await;
    for _ in 0..20 {
        assert_eq!(c.get(URL).await.status, 200);
    }
    // Other downstream connections share the pool.
    for _ in 0..5 {
        assert_eq!(get(outbound(&h), URL, &[]).await.status, 200);
    }
    assert_eq!(ups[0].accepts(), 1);
    assert_eq!(ups[0].requests.load(Ordering::SeqCst), 25);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_closes_idle_connections() {
    let ups = upstreams(1).await;
    let (h, _) = sidecar(snapshot(&ups, |c| c.connection_pool.idle_timeout_ms = 200)).await;
    assert_eq!(get(outbound(&h), URL, &[]).await.status, 200);
    // Within the idle timeout the connection is reused ...
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(get(outbound(&h), URL, &[]).await.status, 200);
    assert_eq!(ups[0].accepts(), 1);
    // ... and once it has been idle longer, a new one is opened.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(get(outbound(&h), URL, &[]).await.status, 200);
    assert_eq!(ups[0].accepts(), 2);
}

async fn h2_client(
    addr: std::net::SocketAddr,
) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    tx
}

#[tokio::test(start_paused = true)]
async fn h2c_downstream_and_h2_upstream() {
    let ups = upstreams(1).await;
    // HTTP/1 cluster: h2c downstream, HTTP/1.1 upstream.
    let (h, log) = sidecar(snapshot(&ups, |c| c.protocol = Protocol::Http1)).await;
    let mut tx = h2_client(outbound(&h)).await;
    let req = http::Request::get("http://svc/h2")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let resp = tx.send_request(req).await.expect("h2 request");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let j: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(j["version"], "HTTP/1.1");
    assert_eq!(j["host"], "svc");
    let lines = log_lines(&log, 1).await;
    assert!(lines[0].contains("\"GET /h2 HTTP/2\" 200 "), "{}", lines[0]);

    // HTTP/2 cluster: concurrent requests multiplex on one upstream connection.
    let ups = upstreams(1).await;
    h.apply(snapshot(&ups, |c| c.protocol = Protocol::Http2))
        .expect("apply");
    let mut tasks = Vec::new();
    for i in 0..10 {
        let mut tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let req = http::Request::get(format!("http://svc/r{i}"))
                .header("x-delay-ms", "100")
                .body(Full::new(Bytes::new()))
                .expect("req");
            let resp = tx.send_request(req).await.expect("send");
            let body = resp.into_body().collect().await.expect("body").to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).expect("json")
        }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task")["version"], "HTTP/2.0");
    }
    // And an HTTP/1.1 client to the same h2 cluster.
    let r = get(outbound(&h), URL, &[]).await;
    assert_eq!(r.json()["version"], "HTTP/2.0");
    assert_eq!(ups[0].accepts(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_endpoints_is_uh_and_refused_connect_is_uf() {
    let (h, log) = sidecar(snapshot(&[], |_| {})).await;
    let r = get(outbound(&h), URL, &[]).await;
    assert_eq!((r.status, r.body.as_str()), (503, "no healthy upstream"));
    // A closed port.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let mut c = cluster(&fqdn("svc", NS), 80, None, &[&closed.to_string()]);
    c.connection_pool.connect_timeout_ms = 1000;
    let name = c.name.clone();
    let snap = SnapshotBuilder::new("v2", NS, "client")
        .cluster(c)
        .service_routes("svc", 80, vec![skein_snapshot::build::route_to(&name)])
        .build();
    h.apply(snap).expect("apply");
    let r = get(outbound(&h), URL, &[]).await;
    assert_eq!(r.status, 503);
    assert!(
        r.body.ends_with("reset reason: connection failure"),
        "{}",
        r.body
    );
    let lines = log_lines(&log, 2).await;
    assert!(
        lines[0].contains(" 503 UH no_healthy_upstream "),
        "{}",
        lines[0]
    );
    // Istio's default policy retried the connect failure twice: Envoy logs UF,URX.
    assert!(lines[1].contains(" 503 UF,URX "), "{}", lines[1]);
}

/// An HTTP/1.1 server that answers one request per connection and closes it 50 ms later
/// without saying `Connection: close` (an upstream idle timeout).
async fn closing_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let accepts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let a = accepts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            });
        }
    });
    (addr, accepts)
}

#[tokio::test(start_paused = true)]
async fn upstream_closing_idle_connections_does_not_fail_requests() {
    let (addr, accepts) = closing_upstream().await;
    let mut c = cluster(&fqdn("svc", NS), 80, None, &[&addr.to_string()]);
    c.protocol = Protocol::Http1;
    let name = c.name.clone();
    let snap = SnapshotBuilder::new("v1", NS, "client")
        .cluster(c)
        .service_routes("svc", 80, vec![skein_snapshot::build::route_to(&name)])
        .build();
    let (h, _) = sidecar(snap).await;
    let mut client = H1Client::connect(outbound(&h)).await;
    for _ in 0..5 {
        let r = client.get(URL).await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    assert_eq!(accepts.load(Ordering::SeqCst), 5);
}
