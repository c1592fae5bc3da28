//! blog-web in-process in front of an in-process blog-was.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use axum::extract::Request;
use axum::middleware::{self, Next};
use blog::hosts::Resolver;
use blog::server::ServerHandle;
use blog::was::{self, AppState, Db};
use blog::web::{self, Config, NoProxy};
use common::Http;
use http::{HeaderMap, Method, StatusCode};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WAS_NAME: &str = "was-service.blog-system.svc.cluster.local";

/// A was on SQLite whose router also records the headers of every request it gets.
struct TestWas {
    handle: ServerHandle,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
    _dir: tempfile::TempDir,
}

impl TestWas {
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("blog.db").display());
        let db = Db::connect(&url, &Resolver::default()).await?;
        let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
        let record = {
            let seen = seen.clone();
            move |req: Request, next: Next| {
                let seen = seen.clone();
                async move {
                    if let Ok(mut s) = seen.lock() {
                        s.push(req.headers().clone());
                    }
                    next.run(req).await
                }
            }
        };
        let app = was::router(AppState::new(db, "blog-was-abc-1", "v7", 4096))
            .layer(middleware::from_fn(record));
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        Ok(Self {
            handle: ServerHandle::spawn(listener, app)?,
            seen,
            _dir: dir,
        })
    }

    fn port(&self) -> u16 {
        self.handle.local_addr().port()
    }

    fn last_seen(&self) -> HeaderMap {
        self.seen
            .lock()
            .ok()
            .and_then(|s| s.last().cloned())
            .unwrap_or_default()
    }
}

fn hosts_file(dir: &tempfile::TempDir) -> Result<PathBuf> {
    let path = dir.path().join("hosts");
    std::fs::write(
        &path,
        format!("# skein\n127.0.0.1 was-service was-service.blog-system {WAS_NAME}\n"),
    )?;
    Ok(path)
}

fn web_config(was_url: &str) -> Result<Config> {
    let mut c = Config::new(was_url)?;
    c.listen_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    c.pod_name = "blog-web-77f-zz9".into();
    c.version = "v3".into();
    Ok(c)
}

fn check_web_identity(r: &common::Resp, what: &str) -> Result<()> {
    ensure!(
        r.header("x-web-version") == Some("v3"),
        "{what}: x-web-version {:?}",
        r.header("x-web-version")
    );
    ensure!(
        r.header("x-web-pod") == Some("blog-web-77f-zz9"),
        "{what}: x-web-pod {:?}",
        r.header("x-web-pod")
    );
    Ok(())
}

/// A port nothing listens on.
fn closed_port() -> Result<u16> {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(l.local_addr()?.port())
}

#[tokio::test]
async fn static_pages_and_health() -> Result<()> {
    let was = TestWas::start().await?;
    let dir = tempfile::tempdir()?;
    let mut cfg = web_config(&format!("http://{WAS_NAME}:{}", was.port()))?;
    cfg.hosts_file = Some(hosts_file(&dir)?);
    let web = web::start(cfg).await?;
    let c = Http::new(format!("http://{}", web.local_addr()));

    let r = c.get("/health").await?;
    ensure!(
        r.status == StatusCode::OK && r.text() == "ok",
        "health: {} {}",
        r.status,
        r.text()
    );
    ensure!(
        r.header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "health type"
    );
    check_web_identity(&r, "/health")?;

    for (path, marker) in [
        ("/", "data-page=\"home\""),
        ("/index.html", "data-page=\"home\""),
        ("/board", "data-page=\"board\""),
        ("/posts/1", "data-page=\"post\""),
        ("/posts/12345", "data-page=\"post\""),
    ] {
        let r = c.get(path).await?;
        ensure!(r.status == StatusCode::OK, "{path}: {}", r.status);
        ensure!(
            r.header("content-type") == Some("text/html; charset=utf-8"),
            "{path}: {:?}",
            r.header("content-type")
        );
        ensure!(
            r.header("cache-control") == Some("no-cache"),
            "{path}: cache-control"
        );
        let body = r.text();
        ensure!(
            body.contains(marker) && body.contains("Skein Blog"),
            "{path}: {body}"
        );
        ensure!(
            !body.contains("http://") && !body.contains("https://"),
            "{path} loads something external"
        );
        check_web_identity(&r, path)?;
    }

    for (path, ctype) in [
        ("/assets/style.css", "text/css; charset=utf-8"),
        ("/assets/app.js", "text/javascript; charset=utf-8"),
        ("/assets/favicon.svg", "image/svg+xml"),
    ] {
        let r = c.get(path).await?;
        ensure!(r.status == StatusCode::OK, "{path}: {}", r.status);
        ensure!(
            r.header("content-type") == Some(ctype),
            "{path}: {:?}",
            r.header("content-type")
        );
        ensure!(
            r.header("cache-control")
                .is_some_and(|v| v.contains("max-age")),
            "{path}: cache-control"
        );
        check_web_identity(&r, path)?;
        let etag = r.header("etag").context("etag")?.to_owned();
        let r = c
            .send(Method::GET, path, &[("if-none-match", &etag)], None)
            .await?;
        ensure!(
            r.status == StatusCode::NOT_MODIFIED && r.body.is_empty(),
            "{path}: conditional GET {}",
            r.status
        );
        check_web_identity(&r, path)?;
    }

    for path in [
        "/nope",
        "/posts/abc",
        "/posts/0",
        "/assets/missing.css",
        "/board/extra",
    ] {
        let r = c.get(path).await?;
        ensure!(r.status == StatusCode::NOT_FOUND, "{path}: {}", r.status);
        ensure!(
            r.header("content-type") == Some("text/html; charset=utf-8"),
            "{path}: type"
        );
        ensure!(r.text().contains("Page not found"), "{path}: body");
        check_web_identity(&r, path)?;
    }
    let r = c.send(Method::HEAD, "/", &[], None).await?;
    ensure!(
        r.status == StatusCode::OK && r.body.is_empty(),
        "HEAD /: {}",
        r.status
    );
    web.shutdown().await?;
    was.handle.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn api_is_proxied_with_headers_and_hosts_file_resolution() -> Result<()> {
    let was = TestWas::start().await?;
    let dir = tempfile::tempdir()?;
    // The was is only reachable by a name that the hosts file resolves.
    let mut cfg = web_config(&format!("http://{WAS_NAME}:{}", was.port()))?;
    cfg.hosts_file = Some(hosts_file(&dir)?);
    let web = web::start(cfg).await?;
    let c = Http::new(format!("http://{}", web.local_addr()));

    let r = c
        .send(
            Method::GET,
            "/api/posts?page=0&size=5",
            &[
                ("x-request-id", "req-123"),
                (
                    "traceparent",
                    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ),
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "secret"),
            ],
            None,
        )
        .await?;
    ensure!(
        r.status == StatusCode::OK,
        "list via web: {} {}",
        r.status,
        r.text()
    );
    ensure!(r.json()[0]["title"] == "First Post", "body: {}", r.text());
    ensure!(r.header("x-total-count") == Some("1"), "x-total-count");
    ensure!(
        r.header("x-was-version") == Some("v7") && r.header("x-was-pod") == Some("blog-was-abc-1"),
        "was headers: {:?}",
        r.headers
    );
    check_web_identity(&r, "proxied list")?;

    let seen = was.last_seen();
    let h = |n: &str| seen.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    ensure!(
        h("host").as_deref() == Some("was-service"),
        "Host at the was: {:?}",
        h("host")
    );
    ensure!(
        h("x-request-id").as_deref() == Some("req-123"),
        "x-request-id"
    );
    ensure!(
        h("traceparent").is_some_and(|t| t.starts_with("00-0af7")),
        "traceparent"
    );
    ensure!(
        h("x-b3-traceid").is_some() && h("x-b3-spanid").is_some(),
        "b3 headers"
    );
    ensure!(
        h("x-forwarded-for").as_deref() == Some("203.0.113.9, 127.0.0.1"),
        "xff {:?}",
        h("x-forwarded-for")
    );
    ensure!(h("x-forwarded-proto").as_deref() == Some("http"), "xfp");
    ensure!(
        h("x-forwarded-host").is_some_and(|v| v.starts_with("127.0.0.1:")),
        "xfh {:?}",
        h("x-forwarded-host")
    );
    ensure!(
        h("x-hop").is_none(),
        "a header named in Connection was forwarded"
    );

    // Writes and the was's errors pass through, with both pods' headers.
    let r = c
        .json(
            Method::POST,
            "/api/posts",
            &json!({"title": "Via web", "content": "hi", "author": "w"}),
        )
        .await?;
    ensure!(
        r.status == StatusCode::CREATED,
        "create via web: {} {}",
        r.status,
        r.text()
    );
    let id = r.json()["id"].as_i64().context("id")?;
    ensure!(
        r.header("location") == Some(format!("/api/posts/{id}").as_str()),
        "location"
    );
    check_web_identity(&r, "create")?;
    let r = c
        .json(
            Method::PUT,
            &format!("/api/posts/{id}"),
            &json!({"title": "Edited"}),
        )
        .await?;
    ensure!(
        r.status == StatusCode::OK && r.json()["title"] == "Edited",
        "update via web: {}",
        r.text()
    );
    let r = c
        .json(Method::POST, "/api/posts", &json!({"title": " "}))
        .await?;
    ensure!(
        r.status == StatusCode::BAD_REQUEST && r.json()["error"] == "validation_failed",
        "400 via web: {}",
        r.text()
    );
    ensure!(
        r.header("x-was-pod") == Some("blog-was-abc-1"),
        "was headers on errors"
    );
    check_web_identity(&r, "400")?;
    // A streamed body over the was's limit: the was's 413 comes back.
    let big = json!({"title": "big", "content": "x".repeat(100_000)});
    let r = c.json(Method::POST, "/api/posts", &big).await?;
    ensure!(
        r.status == StatusCode::PAYLOAD_TOO_LARGE,
        "413 via web: {} {}",
        r.status,
        r.text()
    );
    check_web_identity(&r, "413")?;
    let r = c.get("/api/posts/999").await?;
    ensure!(
        r.status == StatusCode::NOT_FOUND && r.json()["error"] == "not_found",
        "404 via web"
    );
    let r = c.delete(&format!("/api/posts/{id}")).await?;
    ensure!(
        r.status == StatusCode::NO_CONTENT,
        "delete via web: {}",
        r.status
    );
    ensure!(
        c.get("/api/posts").await?.header("x-total-count") == Some("1"),
        "count after delete"
    );

    // Without the hosts file the name does not resolve: proof that the file was used.
    let cfg = web_config(&format!("http://{WAS_NAME}:{}", was.port()))?;
    let web2 = web::start(cfg).await?;
    let r = Http::new(format!("http://{}", web2.local_addr()))
        .get("/api/posts")
        .await?;
    ensure!(
        r.status == StatusCode::BAD_GATEWAY,
        "unresolvable upstream: {}",
        r.status
    );
    web2.shutdown().await?;

    web.shutdown().await?;
    was.handle.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn bad_gateway_when_the_was_is_down() -> Result<()> {
    let cfg = web_config(&format!("http://127.0.0.1:{}", closed_port()?))?;
    let web = web::start(cfg).await?;
    let c = Http::new(format!("http://{}", web.local_addr()));
    for (method, path) in [
        (Method::GET, "/api/posts"),
        (Method::POST, "/api/posts"),
        (Method::DELETE, "/api/posts/1"),
    ] {
        let r = c
            .send(
                method.clone(),
                path,
                &[("content-type", "application/json")],
                Some(b"{}".to_vec()),
            )
            .await?;
        ensure!(
            r.status == StatusCode::BAD_GATEWAY,
            "{method} {path}: {}",
            r.status
        );
        ensure!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("application/json")),
            "type"
        );
        let v = r.json();
        ensure!(
            v["error"] == "bad_gateway" && v["message"].is_string(),
            "{v}"
        );
        ensure!(
            !r.text().contains("127.0.0.1"),
            "leaks the upstream address: {}",
            r.text()
        );
        check_web_identity(&r, "502")?;
    }
    // The site itself still works.
    ensure!(c.get("/health").await?.status == StatusCode::OK, "health");
    ensure!(c.get("/").await?.status == StatusCode::OK, "home");
    web.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn gateway_timeout_when_the_was_hangs() -> Result<()> {
    // Accepts connections and never answers.
    let hang = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = hang.local_addr()?.port();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hang.accept().await {
            held.push(s);
        }
    });
    let mut cfg = web_config(&format!("http://127.0.0.1:{port}"))?;
    cfg.upstream_timeout = Duration::from_millis(300);
    let web = web::start(cfg).await?;
    let c = Http::new(format!("http://{}", web.local_addr()));
    let started = std::time::Instant::now();
    let r = c.get("/api/posts").await?;
    ensure!(r.status == StatusCode::GATEWAY_TIMEOUT, "{}", r.status);
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    ensure!(r.json()["error"] == "gateway_timeout", "{}", r.text());
    check_web_identity(&r, "504")?;
    web.shutdown().await?;
    holder.abort();
    Ok(())
}

/// A forward proxy: records the request head of each new connection, then relays the bytes
/// to `target` unchanged.
async fn recording_proxy(target: SocketAddr) -> Result<(SocketAddr, Arc<Mutex<Vec<String>>>)> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let addr = listener.local_addr()?;
    let heads: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match client.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if let Ok(mut r) = record.lock() {
                    r.push(String::from_utf8_lossy(&buf).into_owned());
                }
                let Ok(mut upstream) = TcpStream::connect(target).await else {
                    return;
                };
                if upstream.write_all(&buf).await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Ok((addr, heads))
}

#[tokio::test]
async fn http_proxy_gets_absolute_form_requests() -> Result<()> {
    let was = TestWas::start().await?;
    let (proxy_addr, heads) = recording_proxy(was.handle.local_addr()).await?;
    // The default WAS_URL; neither DNS nor a hosts file knows the name: only the proxy does.
    let mut cfg = web_config(web::DEFAULT_WAS_URL)?;
    cfg.http_proxy = Some(web::parse_proxy(&format!("http://{proxy_addr}"))?);
    let web = web::start(cfg).await?;
    let c = Http::new(format!("http://{}", web.local_addr()));

    let r = c.get("/api/posts").await?;
    ensure!(
        r.status == StatusCode::OK,
        "via proxy: {} {}",
        r.status,
        r.text()
    );
    ensure!(r.json()[0]["title"] == "First Post", "body");
    ensure!(
        r.header("x-was-pod") == Some("blog-was-abc-1"),
        "was headers"
    );
    check_web_identity(&r, "via proxy")?;

    let head = heads
        .lock()
        .ok()
        .and_then(|h| h.first().cloned())
        .context("the proxy saw nothing")?;
    let mut lines = head.lines();
    ensure!(
        lines.next()
            == Some("GET http://was-service.blog-system.svc.cluster.local:8080/api/posts HTTP/1.1"),
        "request line: {head}"
    );
    ensure!(
        lines.any(|l| l.eq_ignore_ascii_case("host: was-service")),
        "Host header: {head}"
    );
    ensure!(
        was.last_seen()
            .get("host")
            .is_some_and(|h| h == "was-service"),
        "Host at the was"
    );
    web.shutdown().await?;

    // NO_PROXY sends matching hosts directly (resolved through the hosts file).
    let dir = tempfile::tempdir()?;
    let seen_before = heads.lock().map(|h| h.len()).unwrap_or_default();
    let mut cfg = web_config(&format!("http://{WAS_NAME}:{}", was.port()))?;
    cfg.http_proxy = Some(web::parse_proxy(&proxy_addr.to_string())?);
    cfg.no_proxy = NoProxy::parse("localhost,.svc.cluster.local");
    cfg.hosts_file = Some(hosts_file(&dir)?);
    let web = web::start(cfg).await?;
    let r = Http::new(format!("http://{}", web.local_addr()))
        .get("/api/posts")
        .await?;
    ensure!(r.status == StatusCode::OK, "direct: {}", r.status);
    ensure!(
        heads.lock().map(|h| h.len()).unwrap_or_default() == seen_before,
        "NO_PROXY host went through the proxy"
    );
    web.shutdown().await?;
    was.handle.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn mirrored_writes_are_acknowledged_not_forwarded() -> Result<()> {
    let was = TestWas::start().await?;
    let dir = tempfile::tempdir()?;
    let mut cfg = web_config(&format!("http://{WAS_NAME}:{}", was.port()))?;
    cfg.hosts_file = Some(hosts_file(&dir)?);
    let web = web::start(cfg).await?;
    let c = Http::new(format!("http://{}", web.local_addr()));
    let seen = || was.seen.lock().map(|s| s.len()).unwrap_or(usize::MAX);
    let mirror = [
        ("x-skein-mirror", "1"),
        ("content-type", "application/json"),
    ];
    for method in [Method::POST, Method::PUT, Method::DELETE] {
        let r = c
            .send(
                method.clone(),
                "/api/posts/1",
                &mirror,
                Some(b"{\"title\":\"x\"}".to_vec()),
            )
            .await?;
        ensure!(r.status == StatusCode::ACCEPTED, "{method}: {}", r.status);
        ensure!(r.json()["mirrored"] == true, "{method}: {}", r.text());
    }
    ensure!(seen() == 0, "no mirrored write reached the was");
    // A mirrored read goes through: the canary sees real read traffic.
    let r = c.send(Method::GET, "/api/posts", &mirror, None).await?;
    ensure!(r.status == StatusCode::OK, "mirrored GET: {}", r.status);
    ensure!(seen() == 1, "the read was forwarded");
    web.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn metrics_are_served_on_their_own_listener_only() -> Result<()> {
    let was = TestWas::start().await?;
    let dir = tempfile::tempdir()?;
    let mut cfg = web_config(&format!("http://{WAS_NAME}:{}", was.port()))?;
    cfg.hosts_file = Some(hosts_file(&dir)?);
    cfg.metrics_addr = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
    let web = web::start(cfg).await?;
    let metrics_addr = web.companion_addr().context("a metrics listener")?;
    let c = Http::new(format!("http://{}", web.local_addr()));
    for _ in 0..2 {
        ensure!(c.get("/").await?.status == StatusCode::OK);
    }
    ensure!(c.get("/posts/7").await?.status == StatusCode::OK);
    // Not on the public port.
    ensure!(c.get("/metrics").await?.status == StatusCode::NOT_FOUND);
    let m = Http::new(format!("http://{metrics_addr}"));
    let r = m.get("/metrics").await?;
    ensure!(r.status == StatusCode::OK, "{}", r.text());
    let text = r.text();
    for line in [
        "http_server_requests_seconds_count{exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/\"} 2",
        "http_server_requests_seconds_count{exception=\"none\",method=\"GET\",outcome=\"SUCCESS\",status=\"200\",uri=\"/posts/{id}\"} 1",
        "http_server_requests_seconds_count{exception=\"none\",method=\"GET\",outcome=\"CLIENT_ERROR\",status=\"404\",uri=\"UNKNOWN\"} 1",
    ] {
        ensure!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    web.shutdown().await?;
    ensure!(
        std::net::TcpStream::connect(metrics_addr).is_err(),
        "the metrics listener stops with the web"
    );
    Ok(())
}
