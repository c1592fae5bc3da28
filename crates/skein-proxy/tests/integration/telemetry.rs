//! Istio's standard metrics over real connections: request/response wire bytes, TCP byte
//! counters reported while a connection is open, gRPC message counts and status over h2, and
//! the exchange's gaps (no frame; local replies).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use skein_proxy::test_util::pki::{Ca, NS, raw_client, spiffe};
use skein_proxy::test_util::*;
use skein_proxy::{AccessLogSink, ProxyConfig, ProxyHandle, StaticIdentity};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on every single wait.
const STEP: Duration = Duration::from_secs(5);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .expect("finished within the step timeout")
}

async fn stats(h: &ProxyHandle) -> String {
    let a = h.addrs.admin.expect("admin");
    within(get(a, &format!("http://{a}/stats/prometheus"), &[]))
        .await
        .body
}

/// The value of the first series named `name` whose line has every label in `want`.
fn value(page: &str, name: &str, want: &[&str]) -> Option<f64> {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| want.iter().all(|w| l.contains(w)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn line<'a>(page: &'a str, name: &str, want: &[&str]) -> &'a str {
    page.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| want.iter().all(|w| l.contains(w)))
        .unwrap_or_else(|| panic!("no {name} with {want:?} in:\n{page}"))
}

async fn proxy(snap: Snapshot, id: Option<StaticIdentity>, app: Option<SocketAddr>) -> ProxyHandle {
    let mut cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(temp_path("telemetry")));
    if let Some(app) = app {
        cfg = cfg.with_inbound("127.0.0.1:0".parse().expect("addr"), app);
    }
    cfg.identity = id;
    let h = within(skein_proxy::start(cfg)).await.expect("start");
    h.apply(snap).expect("snapshot");
    h
}

fn labelled(n: &mut Node, app: &str, version: &str) {
    n.labels.insert("app".into(), app.into());
    n.labels.insert("version".into(), version.into());
    n.ip = Some("127.0.0.1".parse().expect("ip"));
}

/// Reads one HTTP/1.1 response with a `content-length` off `s`: all its bytes.
async fn read_response(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("content-length");
            if got.len() >= end + 4 + len {
                return got;
            }
        }
        let n = within(s.read(&mut buf)).await.expect("read");
        assert!(
            n > 0,
            "closed mid-response: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

#[tokio::test(start_paused = true)]
async fn request_and_response_bytes_are_the_downstream_wire_bytes() {
    let app = Upstream::start("app").await;
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&app.addr_str()])
        .build();
    labelled(&mut snap.node, "web", "v1");
    let h = proxy(snap, None, None).await;
    let raw = b"POST http://was-service:8080/api/posts HTTP/1.1\r\nhost: was-service:8080\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n\r\nhello world";
    let mut s = within(TcpStream::connect(outbound(&h)))
        .await
        .expect("connect");
    s.write_all(raw).await.expect("write");
    let resp = read_response(&mut s).await;
    assert!(
        resp.starts_with(b"HTTP/1.1 200 OK\r\n"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    drop(s);
    let page = stats(&h).await;
    let service = format!("destination_service=\"{}\"", fqdn("was-service", NS));
    let want = [
        "reporter=\"source\"",
        "response_code=\"200\"",
        "request_protocol=\"http\"",
        service.as_str(),
    ];
    let sum = |name: &str| value(&page, name, &want).unwrap_or_else(|| panic!("{name}:\n{page}"));
    assert_eq!(sum("istio_request_bytes_sum"), raw.len() as f64);
    assert_eq!(sum("istio_request_bytes_count"), 1.0);
    assert_eq!(sum("istio_response_bytes_sum"), resp.len() as f64);
    // Envoy's boundaries, in bytes: 168 bytes fall in (100, 250].
    assert_eq!(
        value(
            &page,
            "istio_request_bytes_bucket",
            &[&want[..], &["le=\"100.0\""]].concat()
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &page,
            "istio_request_bytes_bucket",
            &[&want[..], &["le=\"250.0\""]].concat()
        ),
        Some(1.0)
    );
    // All 25 labels (and `le`).
    let l = line(&page, "istio_response_bytes_bucket", &want);
    assert_eq!(l.matches("=\"").count(), 26, "{l}");
}

async fn echo_app() -> SocketAddr {
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

async fn echo(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(payload).await.expect("write");
    let mut got = vec![0u8; payload.len()];
    within(s.read_exact(&mut got)).await.expect("echo");
    assert_eq!(got, payload);
}

#[tokio::test(start_paused = true)]
async fn tcp_bytes_are_reported_every_interval_while_the_connection_is_open() {
    let app = echo_app().await;
    let mut c = cluster(&fqdn("mysql", NS), 3306, None, &[&app.to_string()]);
    c.protocol = Protocol::Tcp;
    let name = c.name.clone();
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .cluster(c)
        .tcp_listener(&name, "127.0.0.1:0".parse().expect("addr"), &name)
        .build();
    labelled(&mut snap.node, "web", "v1");
    snap.telemetry.metrics.reporting_interval_ms = 2_000;
    let h = proxy(snap, None, None).await;
    let listener = h.listener_addr(&name).expect("tcp listener");
    let want = [
        "reporter=\"source\"",
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
    ];

    let mut s = within(TcpStream::connect(listener)).await.expect("connect");
    echo(&mut s, &[1u8; 100]).await;
    let page = stats(&h).await;
    assert_eq!(
        value(&page, "istio_tcp_connections_opened_total", &want),
        Some(1.0)
    );
    assert_eq!(
        value(&page, "istio_tcp_received_bytes_total", &want),
        Some(0.0),
        "{page}"
    );
    // One interval later, still open: the bytes so far are there, the close is not.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let page = stats(&h).await;
    assert_eq!(
        value(&page, "istio_tcp_received_bytes_total", &want),
        Some(100.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "istio_tcp_sent_bytes_total", &want),
        Some(100.0)
    );
    assert_eq!(
        value(&page, "istio_tcp_connections_closed_total", &want),
        Some(0.0)
    );
    let l = line(&page, "istio_tcp_sent_bytes_total", &want);
    assert!(
        !l.contains("response_code=") && !l.contains("grpc_response_status="),
        "{l}"
    );
    echo(&mut s, &[2u8; 50]).await;
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let page = stats(&h).await;
    assert_eq!(
        value(&page, "istio_tcp_received_bytes_total", &want),
        Some(150.0),
        "{page}"
    );
    // The close adds what is left and counts once.
    s.write_all(&[3u8; 7]).await.expect("write");
    let mut got = [0u8; 7];
    within(s.read_exact(&mut got)).await.expect("echo");
    drop(s);
    let mut closed = None;
    for _ in 0..50 {
        let page = stats(&h).await;
        closed = value(&page, "istio_tcp_connections_closed_total", &want);
        if closed == Some(1.0) {
            assert_eq!(
                value(&page, "istio_tcp_received_bytes_total", &want),
                Some(157.0)
            );
            assert_eq!(
                value(&page, "istio_tcp_sent_bytes_total", &want),
                Some(157.0)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(closed, Some(1.0));
}

/// A gRPC server over h2c: answers `/pkg.Svc/Echo` with two messages and `grpc-status: 0`
/// in trailers, anything else trailers-only with `grpc-status: 5`.
async fn grpc_app() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(s).await.expect("h2");
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    tokio::spawn(async move {
                        let (parts, mut body) = req.into_parts();
                        while let Some(Ok(d)) = body.data().await {
                            let _ = body.flow_control().release_capacity(d.len());
                        }
                        let ok = parts.uri.path() == "/pkg.Svc/Echo";
                        let mut resp = http::Response::builder()
                            .status(200)
                            .header("content-type", "application/grpc");
                        if !ok {
                            resp = resp.header("grpc-status", "5");
                        }
                        let resp = resp.body(()).expect("response");
                        let mut tx = respond.send_response(resp, !ok).expect("send");
                        if ok {
                            let mut data = grpc_message(b"one");
                            data.extend(grpc_message(b"two, longer"));
                            tx.send_data(Bytes::from(data), false).expect("data");
                            let mut t = http::HeaderMap::new();
                            t.insert("grpc-status", "0".parse().expect("v"));
                            tx.send_trailers(t).expect("trailers");
                        }
                    });
                }
            });
        }
    });
    addr
}

fn grpc_message(payload: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8];
    m.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    m.extend_from_slice(payload);
    m
}

#[tokio::test(start_paused = true)]
async fn grpc_over_h2_counts_messages_both_ways_and_reads_the_status() {
    let app = grpc_app().await;
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&app.to_string()])
        .with_last_cluster(|c| c.protocol = Protocol::Http2)
        .build();
    labelled(&mut snap.node, "web", "v1");
    let h = proxy(snap, None, None).await;
    let s = within(TcpStream::connect(outbound(&h)))
        .await
        .expect("connect");
    let (client, conn) = within(h2::client::handshake(s))
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let call = |path: &'static str, frames: Vec<Vec<u8>>| {
        let client = client.clone();
        async move {
            let req = http::Request::post(format!("http://was-service:8080{path}"))
                .header("content-type", "application/grpc+proto")
                .header("te", "trailers")
                .body(())
                .expect("request");
            let mut client = within(client.ready()).await.expect("ready");
            let (resp, mut tx) = client.send_request(req, false).expect("send");
            let last = frames.len() - 1;
            for (i, f) in frames.into_iter().enumerate() {
                tx.send_data(Bytes::from(f), i == last).expect("data");
            }
            let resp = within(resp).await.expect("response");
            let status = resp.status();
            let trailers_only = resp.headers().get("grpc-status").cloned();
            let mut body = resp.into_body();
            let mut got = Vec::new();
            while let Some(d) = within(body.data()).await {
                let d = d.expect("data");
                let _ = body.flow_control().release_capacity(d.len());
                got.extend_from_slice(&d);
            }
            let trailers = within(body.trailers()).await.expect("trailers");
            (status, got, trailers_only, trailers)
        }
    };
    // Three messages; the frames split a prefix and a payload.
    let mut body = grpc_message(b"alpha");
    body.extend(grpc_message(b""));
    body.extend(grpc_message(&[9u8; 70]));
    let (a, b) = body.split_at(7);
    let (status, got, _, trailers) = call("/pkg.Svc/Echo", vec![a.to_vec(), b.to_vec()]).await;
    assert_eq!(status, 200);
    assert_eq!(got.len(), 2 * 5 + 3 + 11);
    assert_eq!(
        trailers
            .and_then(|t| t.get("grpc-status").cloned())
            .as_ref()
            .map(|v| v.as_bytes()),
        Some(&b"0"[..])
    );
    let (_, _, only, _) = call("/pkg.Svc/Missing", vec![grpc_message(b"x")]).await;
    assert_eq!(only.as_ref().map(|v| v.as_bytes()), Some(&b"5"[..]));

    let page = stats(&h).await;
    let ok = [
        "reporter=\"source\"",
        "request_protocol=\"grpc\"",
        "grpc_response_status=\"0\"",
        "response_code=\"200\"",
    ];
    assert_eq!(
        value(&page, "istio_request_messages_total", &ok),
        Some(3.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "istio_response_messages_total", &ok),
        Some(2.0)
    );
    assert_eq!(value(&page, "istio_requests_total", &ok), Some(1.0));
    let missing = ["request_protocol=\"grpc\"", "grpc_response_status=\"5\""];
    assert_eq!(
        value(&page, "istio_requests_total", &missing),
        Some(1.0),
        "{page}"
    );
    assert_eq!(
        value(&page, "istio_request_messages_total", &missing),
        Some(1.0)
    );
    assert_eq!(
        value(&page, "istio_response_messages_total", &missing),
        Some(0.0)
    );
}

/// A sidecar in front of `app` over mesh mTLS (STRICT), with `authz` policies.
async fn server(ca: &Ca, app: SocketAddr, authz: Vec<AuthzPolicy>) -> ProxyHandle {
    let mut snap = SnapshotBuilder::new("v1", NS, "db").build();
    snap.node.service_account = "db".into();
    labelled(&mut snap.node, "mysql", "v8");
    snap.inbound = InboundPolicy {
        mtls: MtlsMode::Permissive,
        authz,
        ..Default::default()
    };
    proxy(snap, Some(ca.identity(&spiffe(NS, "db"))), Some(app)).await
}

/// Connects with ALPN `istio-peer-exchange` and sends `first` without an exchange frame;
/// the server's frame is read and skipped. `wait` bounds the echo of `first`.
async fn without_a_frame(inbound: SocketAddr, id: &StaticIdentity, first: &[u8], wait: Duration) {
    let tcp = within(TcpStream::connect(inbound)).await.expect("connect");
    let tls =
        tokio_rustls::TlsConnector::from(raw_client(Some(id), &[b"istio-peer-exchange", b"istio"]));
    let name =
        rustls::pki_types::ServerName::try_from("outbound_.3306_._.mysql.blog.svc.cluster.local")
            .expect("sni");
    let mut s = within(tls.connect(name, tcp)).await.expect("tls");
    s.write_all(first).await.expect("write");
    let mut head = [0u8; 8];
    within(s.read_exact(&mut head)).await.expect("server frame");
    assert_eq!(&head[..4], &[0x3D, 0x23, 0x04, 0x67]);
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    let mut frame = vec![0u8; len];
    within(s.read_exact(&mut frame))
        .await
        .expect("server frame body");
    let mut got = vec![0u8; first.len()];
    tokio::time::timeout(wait, s.read_exact(&mut got))
        .await
        .expect("echo in time")
        .expect("echo: the connection stays open");
    assert_eq!(got, first);
    // And it goes on.
    s.write_all(b"more").await.expect("write");
    let mut more = [0u8; 4];
    within(s.read_exact(&mut more)).await.expect("echo");
    assert_eq!(&more, b"more");
}

#[tokio::test(start_paused = true)]
async fn a_tcp_peer_without_an_exchange_frame_passes_through_as_unknown() {
    let ca = Ca::new("mesh-root");
    let app = echo_app().await;
    let srv = server(&ca, app, Vec::new()).await;
    let inbound = srv.addrs.inbound.expect("inbound");
    let web = ca.identity(&spiffe(NS, "web"));
    // Bytes that are not a frame: passed on at once.
    without_a_frame(inbound, &web, b"\x0a\x00\x00\x00\x0a5.7.0-log", STEP).await;
    // Fewer bytes than a frame's head: passed on when the exchange gives up.
    without_a_frame(inbound, &web, b"hi", Duration::from_secs(15)).await;
    let page = stats(&srv).await;
    let l = line(
        &page,
        "istio_tcp_connections_opened_total",
        &["reporter=\"destination\""],
    );
    for label in [
        "source_workload=\"unknown\"",
        "source_canonical_revision=\"latest\"",
        &format!("source_principal=\"{}\"", spiffe(NS, "web")),
        &format!("destination_principal=\"{}\"", spiffe(NS, "db")),
        "connection_security_policy=\"mutual_tls\"",
        "destination_workload=\"db\"",
        // No Service targets the port: InboundPassthroughCluster, as Istio labels it.
        "destination_service=\"mysql\"",
        "destination_service_name=\"InboundPassthroughCluster\"",
        &format!("destination_service_namespace=\"{NS}\""),
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
    ] {
        assert!(l.contains(label), "{label} missing in {l}");
    }
    assert!(l.ends_with(" 2"), "{l}");
}

#[tokio::test(start_paused = true)]
async fn inbound_local_replies_answer_the_exchange_headers() {
    let ca = Ca::new("mesh-root");
    // An app that is not there: the inbound side answers 503 itself.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        l.local_addr().expect("addr")
    };
    let srv = server(&ca, gone, Vec::new()).await;
    let inbound = srv.addrs.inbound.expect("inbound");
    let url = "http://mysql:3306/";
    let pair = [
        ("x-envoy-peer-metadata", "CgA="),
        (
            "x-envoy-peer-metadata-id",
            "sidecar~127.0.0.2~web-0.blog-system~blog-system.svc.cluster.local",
        ),
    ];
    let mut c = H1Client::connect(inbound).await;
    let r = within(c.send("GET", url, &pair)).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let id = r
        .headers
        .get("x-envoy-peer-metadata-id")
        .expect("the pair is answered");
    assert!(
        id.to_str()
            .expect("ascii")
            .starts_with("sidecar~127.0.0.1~db-0."),
        "{id:?}"
    );
    assert!(r.headers.contains_key("x-envoy-peer-metadata"));
    let r = within(c.send("GET", url, &[])).await;
    assert_eq!(r.status, 503);
    assert!(!r.headers.contains_key("x-envoy-peer-metadata-id"));

    // RBAC: a denial answers the pair as well.
    let app = Upstream::start("app").await;
    let deny = AuthzPolicy {
        name: "deny-all".into(),
        namespace: NS.into(),
        action: AuthzAction::Deny,
        rules: vec![AuthzRule::default()],
    };
    let srv = server(&ca, app.addr, vec![deny]).await;
    let mut c = H1Client::connect(srv.addrs.inbound.expect("inbound")).await;
    let r = within(c.send("GET", url, &pair)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.headers.contains_key("x-envoy-peer-metadata-id"));
    assert!(r.headers.contains_key("x-envoy-peer-metadata"));
    let r = within(c.send("GET", url, &[])).await;
    assert_eq!(r.status, 403);
    assert!(!r.headers.contains_key("x-envoy-peer-metadata-id"));
    // The denial is counted with its wire bytes.
    let page = stats(&srv).await;
    let want = ["reporter=\"destination\"", "response_code=\"403\""];
    assert_eq!(
        value(&page, "istio_response_bytes_count", &want),
        Some(2.0),
        "{page}"
    );
}

/// A mesh TLS upstream (identity `id`) that picks ALPN `istio-peer-exchange` but answers
/// with a server-first greeting instead of a frame, then echoes.
async fn frameless_upstream(id: &StaticIdentity, greeting: &'static [u8]) -> SocketAddr {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(id.cert_chain_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("chain");
    let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("cert");
    cfg.alpn_protocols = vec![b"istio-peer-exchange".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut s) = acceptor.accept(tcp).await else {
                    return;
                };
                // The client's frame is read and dropped; none is sent back.
                let mut head = [0u8; 8];
                if s.read_exact(&mut head).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
                let mut body = vec![0u8; len];
                if s.read_exact(&mut body).await.is_err() {
                    return;
                }
                let _ = s.write_all(greeting).await;
                let _ = s.flush().await;
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

// Wall clock: with paused time the runtime advanced to the step timeout before the raw
// rustls upstream's records were read (every wait is still bounded by STEP).
#[tokio::test]
async fn an_upstream_without_an_exchange_frame_is_passed_through_as_unknown() {
    let ca = Ca::new("mesh-root");
    let greeting: &[u8] = b"\x0a\x00\x00\x00\x0a8.0.36\x00greeting";
    let up = frameless_upstream(&ca.identity(&spiffe(NS, "db")), greeting).await;
    let mut c = cluster(&fqdn("mysql", NS), 3306, None, &[&up.to_string()]);
    c.protocol = Protocol::Tcp;
    c.tls = UpstreamTls::IstioMutual;
    c.identities = vec![spiffe(NS, "db")];
    let name = c.name.clone();
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .cluster(c)
        .tcp_listener(&name, "127.0.0.1:0".parse().expect("addr"), &name)
        .build();
    labelled(&mut snap.node, "web", "v1");
    let h = proxy(snap, Some(ca.identity(&spiffe(NS, "web"))), None).await;
    let mut s = within(TcpStream::connect(
        h.listener_addr(&name).expect("listener"),
    ))
    .await
    .expect("connect");
    // The greeting arrives whole (its first bytes were read as a would-be frame head).
    let mut got = vec![0u8; greeting.len()];
    within(s.read_exact(&mut got)).await.expect("greeting");
    assert_eq!(got, greeting);
    echo(&mut s, b"ping").await;
    drop(s);
    let mut page = String::new();
    for _ in 0..50 {
        page = stats(&h).await;
        if value(
            &page,
            "istio_tcp_connections_closed_total",
            &["reporter=\"source\""],
        ) == Some(1.0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let l = line(
        &page,
        "istio_tcp_connections_opened_total",
        &["reporter=\"source\""],
    );
    for label in [
        "destination_workload=\"unknown\"",
        "destination_canonical_revision=\"latest\"",
        "response_flags=\"-\"",
        "request_protocol=\"tcp\"",
    ] {
        assert!(l.contains(label), "{label} missing in {l}");
    }
    assert_eq!(
        value(
            &page,
            "istio_tcp_received_bytes_total",
            &["reporter=\"source\""]
        ),
        Some(4.0)
    );
    assert_eq!(
        value(
            &page,
            "istio_tcp_sent_bytes_total",
            &["reporter=\"source\""]
        ),
        Some((greeting.len() + 4) as f64)
    );
}

fn mysql_workload() -> EndpointWorkload {
    EndpointWorkload {
        name: "mysql".into(),
        namespace: "db".into(),
        canonical_service: "mysql-db".into(),
        canonical_revision: "8".into(),
        cluster: "Kubernetes".into(),
    }
}

/// The source reporter's labels of a destination that has no sidecar, from its endpoint.
const ENDPOINT_LABELS: [&str; 6] = [
    "destination_workload=\"mysql\"",
    "destination_workload_namespace=\"db\"",
    "destination_canonical_service=\"mysql-db\"",
    "destination_canonical_revision=\"8\"",
    "destination_service_namespace=\"db\"",
    "destination_cluster=\"Kubernetes\"",
];

#[tokio::test(start_paused = true)]
async fn a_plain_upstream_is_labelled_from_its_endpoint_over_http_and_tcp() {
    let app = Upstream::start("app").await;
    let echo_addr = echo_app().await;
    let mut tcp = cluster(&fqdn("mysql", NS), 3306, None, &[&echo_addr.to_string()]);
    tcp.protocol = Protocol::Tcp;
    tcp.endpoints[0].workload = Some(mysql_workload());
    let tcp_name = tcp.name.clone();
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&app.addr_str()])
        .cluster(tcp)
        .tcp_listener(&tcp_name, "127.0.0.1:0".parse().expect("addr"), &tcp_name)
        .build();
    let http_name = cluster(&fqdn("was-service", NS), 8080, None, &[]).name;
    let c = snap
        .clusters
        .iter_mut()
        .find(|c| c.name == http_name)
        .expect("http cluster");
    c.endpoints[0].workload = Some(mysql_workload());
    labelled(&mut snap.node, "web", "v1");
    let h = proxy(snap, None, None).await;

    let a = outbound(&h);
    for _ in 0..2 {
        let r = within(get(a, "http://was-service:8080/", &[])).await;
        assert_eq!(r.status, 200);
    }
    let mut s = within(TcpStream::connect(h.listener_addr(&tcp_name).expect("tcp")))
        .await
        .expect("connect");
    echo(&mut s, b"ping").await;
    let page = stats(&h).await;
    let http = [
        &["reporter=\"source\"", "response_code=\"200\""][..],
        &ENDPOINT_LABELS,
    ]
    .concat();
    assert_eq!(
        value(&page, "istio_requests_total", &http),
        Some(2.0),
        "{page}"
    );
    // The endpoint says nothing about app and version.
    let l = line(&page, "istio_requests_total", &http);
    assert!(l.contains("destination_app=\"unknown\""), "{l}");
    assert!(l.contains("source_workload=\"web\""), "{l}");
    let tcp = [
        &["reporter=\"source\"", "request_protocol=\"tcp\""][..],
        &ENDPOINT_LABELS,
    ]
    .concat();
    assert_eq!(
        value(&page, "istio_tcp_connections_opened_total", &tcp),
        Some(1.0),
        "{page}"
    );
}
