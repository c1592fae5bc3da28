//! Downstream limits, one at a time: request head size and header count (431), the header
//! read timeout, connection caps that shed idle connections, HTTP/2 settings and idle timeout,
//! the opaque TCP idle timeout and the ClientHello timeout. Paused time throughout.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skein_proxy::test_util::*;
use skein_proxy::{Limits, ProxyConfig, ProxyHandle};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s
}

/// A sidecar with `limits`, an inbound listener in front of `app` and an empty snapshot.
async fn proxy(limits: Limits, app: SocketAddr) -> ProxyHandle {
    let mut cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_inbound("127.0.0.1:0".parse().expect("addr"), app);
    cfg.limits = limits;
    let h = skein_proxy::start(cfg).await.expect("start");
    h.apply(SnapshotBuilder::new("v1", "blog-system", "was").build())
        .expect("apply");
    h
}

/// An HTTP app: `/slow` answers after an hour, anything else at once.
async fn app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: http::Request<_>| async move {
                    if req.uri().path() == "/slow" {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                    }
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                });
                let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                b.http2().max_header_list_size(1 << 20);
                let _ = b.serve_connection(TokioIo::new(s), svc).await;
            });
        }
    });
    addr
}

/// Reads what the proxy sends until it closes or 5 s (paused) pass; None when still open.
async fn read_until_closed(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(out),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// What the proxy sends before it closes (or within 5 s, paused).
async fn head_then_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// The status of the first response on `s` (reads one response head).
async fn status_of(s: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status")
}

fn head_with(headers: usize, value_len: usize) -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nHost: was-service:8080\r\n".to_vec();
    for i in 0..headers {
        req.extend_from_slice(format!("x-h-{i}: {}\r\n", "v".repeat(value_len)).as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req
}

#[tokio::test(start_paused = true)]
async fn request_heads_over_60_kib_or_100_headers_get_431() {
    let h = proxy(Limits::default(), app().await).await;
    let inbound = h.addrs.inbound.expect("inbound");
    // 59 headers of 1 KiB: under 60 KiB, served.
    let mut s = connect(inbound).await;
    s.write_all(&head_with(59, 1000)).await.expect("write");
    assert_eq!(status_of(&mut s).await, 200);
    // 61 KiB of headers.
    let mut s = connect(inbound).await;
    s.write_all(&head_with(61, 1024)).await.expect("write");
    let got = head_then_close(&mut s).await;
    assert!(
        got.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    // 95 small headers, 96 with Host: served. (The app, itself limited to 100, also gets
    // the proxy's `x-request-id` and, for the unsampled request, `x-b3-traceid`,
    // `x-b3-spanid` and `x-b3-sampled`.)
    let mut s = connect(inbound).await;
    s.write_all(&head_with(95, 4)).await.expect("write");
    assert_eq!(status_of(&mut s).await, 200);
    // 100 more, 101 with Host.
    let mut s = connect(inbound).await;
    s.write_all(&head_with(100, 4)).await.expect("write");
    let got = head_then_close(&mut s).await;
    assert!(
        got.starts_with(b"HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_head_not_finished_within_the_timeout_is_closed() {
    let h = proxy(Limits::default(), app().await).await;
    let mut s = connect(h.addrs.inbound.expect("inbound")).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: was-service:8080\r\nx-slow: 1\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut b = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut b))
            .await
            .is_err(),
        "still open after 8.5 s"
    );
    // 10 s after it opened (hyper's own default would be 30 s).
    let closed = read_until_closed(&mut s).await;
    assert!(closed.is_some(), "closed by the 10 s header timeout");
}

/// A keep-alive connection waiting for its next request is left open (closing it at the head
/// timeout races a client reusing its pooled connection: the request it just sent is lost);
/// the next head is timed from its first byte.
#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_outlives_the_head_timeout_and_its_next_head_is_timed() {
    let h = proxy(Limits::default(), app().await).await;
    let mut s = connect(h.addrs.inbound.expect("inbound")).await;
    let req = b"POST / HTTP/1.1\r\nHost: was-service:8080\r\ncontent-length: 5\r\n\r\nhello";
    s.write_all(req).await.expect("write");
    assert_eq!(status_of(&mut s).await, 200);
    let mut body = [0u8; 2];
    s.read_exact(&mut body).await.expect("body");
    // 40 s idle: four head timeouts.
    let mut b = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_secs(40), s.read(&mut b))
            .await
            .is_err(),
        "an idle keep-alive connection is not closed"
    );
    s.write_all(req).await.expect("write");
    assert_eq!(
        status_of(&mut s).await,
        200,
        "served on the same connection"
    );
    s.read_exact(&mut body).await.expect("body");
    // 30 s idle, then half a head: closed 10 to 15 s after its first byte.
    tokio::time::sleep(Duration::from_secs(30)).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: was-ser")
        .await
        .expect("write");
    let started = tokio::time::Instant::now();
    assert!(
        tokio::time::timeout(Duration::from_secs(9), s.read(&mut b))
            .await
            .is_err(),
        "still open 9 s after the head began"
    );
    let closed = tokio::time::timeout(Duration::from_secs(7), s.read(&mut b)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "closed by the head timeout: {closed:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(10) && waited <= Duration::from_secs(15),
        "{waited:?}"
    );
}

/// An HTTP/2 connection with no stream open is idle, not a head coming in.
#[tokio::test(start_paused = true)]
async fn an_http2_connection_without_streams_is_not_timed_as_a_head() {
    let h = proxy(Limits::default(), app().await).await;
    let s = connect(h.addrs.inbound.expect("inbound")).await;
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(s))
        .await
        .expect("h2 handshake");
    let conn = tokio::spawn(conn);
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert!(
        !conn.is_finished(),
        "still open after 40 s without a stream"
    );
    let req = http::Request::builder()
        .uri("http://was-service:8080/")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let resp = send.send_request(req).await.expect("served");
    assert_eq!(resp.status(), 200);
}

#[tokio::test(start_paused = true)]
async fn at_the_listener_cap_idle_connections_are_shed_then_new_ones_refused() {
    let limits = Limits {
        max_connections_per_listener: 2,
        ..Limits::default()
    };
    let h = proxy(limits, app().await).await;
    let inbound = h.addrs.inbound.expect("inbound");
    let req = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: was-service:8080\r\n\r\n");
    // a: served, then idle on keep-alive.
    let mut a = connect(inbound).await;
    a.write_all(req("/").as_bytes()).await.expect("write");
    assert_eq!(status_of(&mut a).await, 200);
    let mut a_rest = [0u8; 2];
    a.read_exact(&mut a_rest).await.expect("body");
    // b: a request in flight.
    let mut b = connect(inbound).await;
    b.write_all(req("/slow").as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    // c: over the cap; a, the idle one, makes room.
    let mut c = connect(inbound).await;
    c.write_all(req("/").as_bytes()).await.expect("write");
    assert_eq!(status_of(&mut c).await, 200);
    assert!(
        read_until_closed(&mut a).await.is_some(),
        "the idle connection is shed"
    );
    // c busy as well: no idle connection left, so d is refused.
    let mut c_rest = [0u8; 2];
    c.read_exact(&mut c_rest).await.expect("body");
    c.write_all(req("/slow").as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut d = connect(inbound).await;
    let _ = d.write_all(req("/").as_bytes()).await;
    let got = read_until_closed(&mut d).await.expect("refused at once");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    // The busy ones were left alone.
    let mut one = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), b.read(&mut one))
            .await
            .is_err(),
        "b is still waiting for its response"
    );
}

#[tokio::test(start_paused = true)]
async fn h2_offers_100_streams_and_takes_heads_up_to_60_kib_then_idles_out() {
    let h = proxy(Limits::default(), app().await).await;
    let s = connect(h.addrs.inbound.expect("inbound")).await;
    let (mut tx, mut conn) = h2::client::handshake(s).await.expect("h2 handshake");
    // Let the server's SETTINGS arrive.
    let _ = tokio::time::timeout(Duration::from_millis(200), &mut conn).await;
    assert_eq!(conn.max_concurrent_send_streams(), 100);
    let conn = tokio::spawn(conn);
    // 20 KiB of headers: over hyper's own 16 KiB default, under the 60 KiB limit.
    let mut req = http::Request::get("http://was-service:8080/");
    for i in 0..20 {
        req = req.header(format!("x-h-{i}"), "v".repeat(1000));
    }
    let (resp, _) = tx
        .send_request(req.body(()).expect("req"), true)
        .expect("send");
    assert_eq!(resp.await.expect("response").status(), 200);
    // 61 KiB: 431.
    let mut req = http::Request::get("http://was-service:8080/");
    for i in 0..61 {
        req = req.header(format!("x-h-{i}"), "v".repeat(1024));
    }
    let (resp, _) = tx
        .send_request(req.body(()).expect("req"), true)
        .expect("send");
    assert_eq!(resp.await.expect("response").status(), 431);
    // Idle for an hour and a quarter: the proxy closes the connection.
    drop(tx);
    let ended = tokio::time::timeout(Duration::from_secs(5000), conn).await;
    assert!(ended.is_ok(), "the idle connection was closed");
}

const DB: &str = "outbound|3306||mysql.blog-system.svc.cluster.local";

#[tokio::test(start_paused = true)]
async fn opaque_tcp_closes_after_an_idle_hour() {
    let echo = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let echo_addr = echo.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut c = cluster(
        &fqdn("mysql", "blog-system"),
        3306,
        None,
        &[&echo_addr.to_string()],
    );
    c.protocol = Protocol::Tcp;
    let name = c.name.clone();
    let snap = SnapshotBuilder::new("v1", "blog-system", "was")
        .cluster(c)
        .tcp_listener(&name, "127.0.0.1:0".parse().expect("addr"), &name)
        .build();
    let (h, _log) = sidecar(snap).await;
    let mut s = connect(h.listener_addr(DB).expect("tcp listener")).await;
    let mut b = [0u8; 4];
    for _ in 0..2 {
        s.write_all(b"ping").await.expect("write");
        s.read_exact(&mut b).await.expect("echo");
        // Under an hour of silence: still open.
        tokio::time::sleep(Duration::from_secs(50 * 60)).await;
    }
    s.write_all(b"ping").await.expect("write");
    s.read_exact(&mut b)
        .await
        .expect("still forwarding after 50 min idle");
    tokio::time::sleep(Duration::from_secs(76 * 60)).await;
    let closed = read_until_closed(&mut s).await;
    assert_eq!(closed, Some(Vec::new()), "closed after an idle hour");
}

#[tokio::test(start_paused = true)]
async fn an_unfinished_client_hello_is_closed_after_15_s() {
    let app = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app_addr = app.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = app.accept().await {
            // Holds what it is given; never closes first.
            tokio::spawn(async move {
                let _s = s;
                std::future::pending::<()>().await;
            });
        }
    });
    let h = proxy(Limits::default(), app_addr).await;
    let mut s = connect(h.addrs.inbound.expect("inbound")).await;
    // A TLS record header announcing a 512-byte handshake, and only part of it.
    s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01])
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_secs(13)).await;
    let mut b = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), s.read(&mut b))
            .await
            .is_err(),
        "still waiting for the hello after 13.5 s"
    );
    let closed = read_until_closed(&mut s).await;
    assert_eq!(
        closed,
        Some(Vec::new()),
        "closed at 15 s, not passed through"
    );
}

/// A response body that sends one chunk and then nothing more (a long download).
struct Trickle(bool);

impl http_body::Body for Trickle {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.0 {
            return std::task::Poll::Pending;
        }
        self.0 = true;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from("first")))))
    }
}

#[tokio::test(start_paused = true)]
async fn a_connection_still_sending_its_response_is_not_shed() {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req: http::Request<_>| async move {
                    Ok::<_, Infallible>(http::Response::new(Trickle(false)))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let limits = Limits {
        max_connections_per_listener: 1,
        ..Limits::default()
    };
    let h = proxy(limits, app).await;
    let inbound = h.addrs.inbound.expect("inbound");
    let mut a = connect(inbound).await;
    a.write_all(b"GET /download HTTP/1.1\r\nHost: was-service:8080\r\n\r\n")
        .await
        .expect("write");
    assert_eq!(status_of(&mut a).await, 200);
    let mut chunk = [0u8; 10];
    a.read_exact(&mut chunk).await.expect("first chunk");
    assert_eq!(&chunk, b"5\r\nfirst\r\n");
    // The head is sent, the body is still coming: a newcomer is refused, a stays.
    let mut b = connect(inbound).await;
    let _ = b
        .write_all(b"GET / HTTP/1.1\r\nHost: was-service:8080\r\n\r\n")
        .await;
    assert_eq!(read_until_closed(&mut b).await, Some(Vec::new()));
    let mut one = [0u8; 1];
    assert!(
        tokio::time::timeout(Duration::from_millis(200), a.read(&mut one))
            .await
            .is_err(),
        "the downloading connection is still open"
    );
}
