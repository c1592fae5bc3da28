//! Access log, admin endpoint, config swaps, drain, file source, gateway.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use skein_proxy::test_util::*;
use skein_proxy::{AccessLogSink, ProxyConfig, SourceConfig, TlsListenerConfig};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn, route_to};
use skein_snapshot::*;
use tokio::net::TcpStream;

const NS: &str = "blog-system";

fn was_snapshot(version: &str, up: &Upstream) -> Snapshot {
    SnapshotBuilder::new(version, NS, "web")
        .http_service("was-service", 8080, &[&up.addr_str()])
        .build()
}

/// Wall clock: the line's durations (`>= 30` ms for a 30 ms upstream delay) are measured with
/// `std::time::Instant`, which paused time does not move; a slow machine only makes them longer.
#[tokio::test]
async fn access_log_line_has_every_istio_field() {
    let up = Upstream::start("was").await;
    let (h, log) = sidecar(was_snapshot("v1", &up)).await;
    let proxy = outbound(&h);
    let stream = TcpStream::connect(proxy).await.expect("connect");
    let client_addr = stream.local_addr().expect("local");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::post("http://was-service:8080/api/posts?x=1")
        .header("host", "was-service:8080")
        .header("user-agent", "test-agent")
        .header("x-request-id", "req-1")
        .header("x-status", "201")
        .header("x-delay-ms", "30")
        .body(Full::new(Bytes::from_static(b"hello")))
        .expect("req");
    let resp = tx.send_request(req).await.expect("send");
    assert_eq!(resp.status(), 201);
    let body = resp.into_body().collect().await.expect("body").to_bytes();

    let line = log_lines(&log, 1).await.remove(0);
    let re = regex::Regex::new(concat!(
        r#"^\[(?P<time>\S+)\] "(?P<method>\S+) (?P<path>\S+) (?P<proto>\S+)" "#,
        r#"(?P<code>\d+) (?P<flags>\S+) (?P<details>\S+) (?P<term>\S+) "(?P<tfail>[^"]*)" "#,
        r#"(?P<rx>\d+) (?P<tx>\d+) (?P<dur>\d+) (?P<ust>\S+) "(?P<xff>[^"]*)" "(?P<ua>[^"]*)" "#,
        r#""(?P<rid>[^"]*)" "(?P<auth>[^"]*)" "(?P<uhost>[^"]*)" (?P<cluster>\S+) "#,
        r#"(?P<ulocal>\S+) (?P<dlocal>\S+) (?P<dremote>\S+) (?P<sni>\S+) (?P<route>\S+)$"#
    ))
    .expect("regex");
    let c = re
        .captures(&line)
        .unwrap_or_else(|| panic!("unparsable line: {line}"));
    let time = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$").expect("re");
    assert!(time.is_match(&c["time"]), "{line}");
    assert_eq!(&c["method"], "POST");
    assert_eq!(&c["path"], "/api/posts?x=1");
    assert_eq!(&c["proto"], "HTTP/1.1");
    assert_eq!(&c["code"], "201");
    assert_eq!(&c["flags"], "-");
    assert_eq!(&c["details"], "via_upstream");
    assert_eq!(&c["term"], "-");
    assert_eq!(&c["tfail"], "-");
    assert_eq!(&c["rx"], "5");
    assert_eq!(c["tx"].parse::<usize>().expect("tx"), body.len());
    assert!(c["dur"].parse::<u64>().expect("dur") >= 30, "{line}");
    assert!(c["ust"].parse::<u64>().expect("ust") >= 30, "{line}");
    assert_eq!(&c["xff"], "-");
    assert_eq!(&c["ua"], "test-agent");
    assert_eq!(&c["rid"], "req-1");
    assert_eq!(&c["auth"], "was-service:8080");
    assert_eq!(&c["uhost"], up.addr_str());
    assert_eq!(
        &c["cluster"],
        "outbound|8080||was-service.blog-system.svc.cluster.local"
    );
    assert!(c["ulocal"].starts_with("127.0.0.1:"), "{line}");
    assert_eq!(&c["dlocal"], proxy.to_string());
    assert_eq!(&c["dremote"], client_addr.to_string());
    assert_eq!(&c["sni"], "-");
    assert_eq!(&c["route"], "default");
}

#[tokio::test(start_paused = true)]
async fn downstream_disconnect_is_logged_dc() {
    let up = Upstream::start("was").await;
    let (h, log) = sidecar(was_snapshot("v1", &up)).await;
    let proxy = outbound(&h);
    let req = tokio::spawn(async move {
        get(
            proxy,
            "http://was-service:8080/slow",
            &[("x-delay-ms", "2000")],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    req.abort();
    let lines = log_lines(&log, 1).await;
    assert!(
        lines[0].contains("\"GET /slow HTTP/1.1\" 0 DC "),
        "{}",
        lines[0]
    );
}

async fn admin_get(addr: std::net::SocketAddr, path: &str, method: &str) -> Resp {
    let mut c = H1Client::connect(addr).await;
    c.send(method, &format!("http://{addr}{path}"), &[]).await
}

#[tokio::test(start_paused = true)]
async fn admin_ready_config_dump_stats_clusters_quit() {
    let up = Upstream::start("was").await;
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"));
    let h = skein_proxy::start(cfg).await.expect("start");
    let admin = h.addrs.admin.expect("admin bound");
    assert_eq!(admin_get(admin, "/ready", "GET").await.status, 503);
    h.apply(was_snapshot("v42", &up)).expect("apply");
    assert_eq!(admin_get(admin, "/ready", "GET").await.status, 200);

    let dump = admin_get(admin, "/config_dump", "GET").await.json();
    assert_eq!(dump["version"], "v42");
    assert_eq!(
        dump["snapshot"]["clusters"][0]["name"],
        "outbound|8080||was-service.blog-system.svc.cluster.local"
    );

    for _ in 0..3 {
        assert_eq!(
            get(outbound(&h), "http://was-service:8080/", &[])
                .await
                .status,
            200
        );
    }
    let r = get(
        outbound(&h),
        "http://was-service:8080/",
        &[("x-status", "503")],
    )
    .await;
    assert_eq!(r.status, 503);
    let stats = admin_get(admin, "/stats/prometheus", "GET").await.body;
    let series = stats
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains("response_code=\"200\""))
        .unwrap_or_else(|| panic!("no istio_requests_total series in:\n{stats}"));
    for label in [
        "reporter=\"source\"",
        "source_workload=\"web\"",
        "destination_service=\"was-service.blog-system.svc.cluster.local\"",
        "response_flags=\"-\"",
    ] {
        assert!(series.contains(label), "{label} missing in {series}");
    }
    assert!(series.ends_with(" 3"), "{series}");
    assert!(stats.contains("response_code=\"503\""), "{stats}");
    assert!(
        stats.lines().any(
            |l| l.starts_with("istio_request_duration_milliseconds_bucket{")
                && l.contains("le=\"0.5\"")
        ),
        "{stats}"
    );
    assert!(stats.contains("le=\"3600000.0\""), "{stats}");

    let clusters = admin_get(admin, "/clusters", "GET").await.body;
    let want = format!(
        "outbound|8080||was-service.blog-system.svc.cluster.local::{}::rq_total::4",
        up.addr
    );
    assert!(
        clusters.lines().any(|l| l == want),
        "{want} not in:\n{clusters}"
    );

    let quit = tokio::spawn(async move {
        h.quit_requested().await;
        h
    });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(admin_get(admin, "/quitquitquit", "POST").await.status, 200);
    let h = tokio::time::timeout(Duration::from_secs(2), quit)
        .await
        .expect("quit signalled")
        .expect("task");
    assert!(h.shutdown().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_swap_under_load_loses_nothing() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let snap_a = was_snapshot("va", &a);
    // v2 routes the same host to a different cluster (a subset of b); a's cluster is gone.
    let f = fqdn("was-service", NS);
    let cb = cluster(&f, 8080, Some("v2"), &[&b.addr_str()]);
    let snap_b = SnapshotBuilder::new("vb", NS, "web")
        .service_routes("was-service", 8080, vec![route_to(&cb.name)])
        .cluster(cb)
        .build();
    let (h, _) = sidecar(snap_a.clone()).await;
    let proxy = outbound(&h);

    // A slow request in flight on config A.
    let slow = tokio::spawn(async move {
        get(
            proxy,
            "http://was-service:8080/slow",
            &[("x-delay-ms", "600")],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, total) = (stop.clone(), failures.clone(), total.clone());
        clients.push(tokio::spawn(async move {
            let mut c = H1Client::connect(proxy).await;
            while !stop.load(Ordering::Relaxed) && total.load(Ordering::Relaxed) < 20_000 {
                match c.try_send("GET", "http://was-service:8080/", &[]).await {
                    Ok(r) if r.status == 200 => {}
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                total.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..40 {
        let s = if i % 2 == 0 { &snap_b } else { &snap_a };
        h.apply(s.clone()).expect("apply");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    h.apply(snap_b.clone()).expect("apply");
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.expect("client");
    }
    let slow = slow.await.expect("slow");
    assert_eq!(slow.status, 200);
    assert_eq!(
        slow.upstream(),
        "a",
        "in-flight request finished on the old config"
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "of {}",
        total.load(Ordering::Relaxed)
    );
    assert!(total.load(Ordering::Relaxed) > 100);
    assert_eq!(
        get(proxy, "http://was-service:8080/", &[]).await.upstream(),
        "b"
    );
    assert_eq!(h.version(), "vb");
}

#[tokio::test(start_paused = true)]
async fn graceful_drain_finishes_in_flight_and_refuses_new() {
    let up = Upstream::start("was").await;
    let (h, _) = sidecar(was_snapshot("v1", &up)).await;
    let proxy = outbound(&h);
    let slow = tokio::spawn(async move {
        get(
            proxy,
            "http://was-service:8080/slow",
            &[("x-delay-ms", "500")],
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drained = tokio::spawn(h.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(proxy).await.is_err(),
        "new connections refused"
    );
    let r = slow.await.expect("slow");
    assert_eq!(r.status, 200);
    let done = tokio::time::timeout(Duration::from_secs(3), drained)
        .await
        .expect("drain bounded")
        .expect("task");
    assert!(done, "drain completed before its timeout");
}

/// Wall clock: the file source notices a change by the file's metadata, and the 30 ms between
/// the two writes must be real for their modification times to differ.
#[tokio::test]
async fn file_source_reloads_on_change_and_keeps_last_good() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let path = temp_path("snapshot");
    std::fs::write(&path, was_snapshot("v1", &a).to_json()).expect("write");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr")).with_source(
        SourceConfig::File {
            path: path.clone(),
            poll_interval: Duration::from_millis(20),
        },
    );
    let h = skein_proxy::start(cfg).await.expect("start");
    let url = "http://was-service:8080/";
    assert_eq!(get(outbound(&h), url, &[]).await.upstream(), "a");
    tokio::time::sleep(Duration::from_millis(30)).await;
    std::fs::write(&path, was_snapshot("v2", &b).to_json()).expect("write");
    for _ in 0..100 {
        if h.version() == "v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(h.version(), "v2");
    assert_eq!(get(outbound(&h), url, &[]).await.upstream(), "b");
    std::fs::write(&path, "{ not json").expect("write");
    h.reload();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(h.version(), "v2");
    assert_eq!(get(outbound(&h), url, &[]).await.upstream(), "b");
}

#[tokio::test(start_paused = true)]
async fn gateway_routes_http_and_https_by_host() {
    let web = Upstream::start("web").await;
    let cert =
        rcgen::generate_simple_self_signed(vec!["blog.example.com".to_string()]).expect("cert");
    let cert_path = temp_path("cert");
    let key_path = temp_path("key");
    std::fs::write(&cert_path, cert.cert.pem()).expect("write cert");
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
    let log = temp_path("gw");
    let mut cfg = ProxyConfig::gateway("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()));
    cfg.gateway_https = Some(TlsListenerConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        cert_path,
        key_path,
    });
    let c = cluster(&fqdn("web-service", NS), 80, None, &[&web.addr_str()]);
    let snap = SnapshotBuilder::new("g1", "istio-system", "ingress")
        .vhost(
            GATEWAY_ROUTE,
            VirtualHost {
                name: "blog".into(),
                domains: vec!["blog.example.com".into()],
                routes: vec![route_to(&c.name)],
            },
        )
        .cluster(c)
        .build();
    let h = skein_proxy::start(cfg).await.expect("start");
    h.apply(snap).expect("apply");
    let http_addr = h.addrs.gateway_http.expect("http");
    let r = get(http_addr, "http://blog.example.com/board", &[]).await;
    assert_eq!(r.upstream(), "web");
    assert_eq!(r.seen_header("x-forwarded-for"), ["127.0.0.1"]);
    let r = get(http_addr, "http://other.example.com/", &[]).await;
    assert_eq!(r.status, 404);

    // HTTPS with SNI.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = TcpStream::connect(h.addrs.gateway_https.expect("https"))
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("blog.example.com").expect("name");
    let stream = connector.connect(name, tcp).await.expect("tls handshake");
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let req = http::Request::get("/api/posts")
        .header("host", "blog.example.com")
        .body(Full::new(Bytes::new()))
        .expect("req");
    let resp = tx.send_request(req).await.expect("send");
    assert_eq!(resp.status(), 200);
    let lines = log_lines(&log, 3).await;
    let tls_line = lines
        .iter()
        .find(|l| l.contains("/api/posts"))
        .expect("line");
    assert!(tls_line.contains(" blog.example.com default"), "{tls_line}");
    assert!(
        lines.iter().any(|l| l.contains(" 404 NR route_not_found ")),
        "{lines:#?}"
    );
}

/// The writer holds lines for a moment to batch them; a proxy that shuts down (drain on
/// SIGTERM) still writes every line of the requests it served.
#[tokio::test]
async fn shutdown_writes_the_access_log_lines_still_held() {
    let up = Upstream::start("was").await;
    let (h, log) = sidecar(was_snapshot("v1", &up)).await;
    let proxy = outbound(&h);
    for _ in 0..3 {
        let r = get(proxy, "http://was-service:8080/x", &[]).await;
        assert_eq!(r.status, 200);
    }
    assert!(h.shutdown().await, "drained");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(text.lines().count(), 3, "{text}");
}
