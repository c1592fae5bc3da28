//! The server on a real socket over a state directory with a status file (no Prometheus):
//! hostile parameters, methods, headers, the page's stand-in, and the tracing store's
//! pass-through against a real (misbehaving) server.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

async fn start(tracing: Option<String>) -> (SocketAddr, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let status = skein_runtime::Status {
        pods: vec![skein_runtime::PodStatus {
            name: "web-1".into(),
            namespace: "blog-system".into(),
            workload: "web".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    status.write(&dir.path().join("status.json")).unwrap();
    let cfg = Config {
        state: dir.path().to_path_buf(),
        prometheus: None,
        tracing,
        version: "test".into(),
    };
    let router = router(cfg).unwrap();
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, router).await });
    (addr, dir)
}

/// A raw request, so methods and paths are sent as written.
async fn raw(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, head.to_ascii_lowercase(), body.to_string())
}

fn error_of(body: &str) -> String {
    let v: Json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

#[tokio::test]
async fn hostile_parameters_get_a_400_with_a_message() {
    let (addr, _dir) = start(None).await;
    for (path, word) in [
        (
            "/api/namespaces/graph?namespaces=blog-system%22%7D%20or%20vector(1)",
            "namespace",
        ),
        (
            "/api/namespaces/graph?namespaces=blog-system&duration=0s",
            "duration",
        ),
        (
            "/api/namespaces/graph?namespaces=blog-system&duration=99999999999999999999s",
            "duration",
        ),
        (
            "/api/namespaces/graph?namespaces=blog-system&graphType=all",
            "graphType",
        ),
        (
            "/api/namespaces/graph?namespaces=blog-system&injectServiceNodes=yes",
            "injectServiceNodes",
        ),
        (
            "/api/namespaces/graph?namespaces=blog-system&responseTime=12",
            "responseTime",
        ),
        ("/api/namespaces/graph", "namespaces"),
        ("/api/namespaces/Blog/health", "namespace"),
        (
            "/api/namespaces/blog-system/health?rateInterval=1y",
            "rateInterval",
        ),
        (
            "/api/namespaces/blog-system/pods/web-1/logs?tailLines=100000000",
            "tailLines",
        ),
        (
            "/api/namespaces/blog-system/pods/web-1/logs?code=5x",
            "code",
        ),
        (
            "/api/namespaces/blog-system/pods/web-1/logs?flags=UF%22",
            "flags",
        ),
        (
            "/api/namespaces/blog-system/pods/web-1/logs?container=..%2F..%2Fetc",
            "container",
        ),
        (
            "/api/namespaces/blog-system/workloads/web/metrics?duration=1d&step=1s",
            "step",
        ),
        ("/api/namespaces/blog-system/workloads/We_b", "workload"),
    ] {
        let (code, _, body) = raw(addr, "GET", path).await;
        assert_eq!(code, 400, "{path}: {body}");
        assert!(error_of(&body).contains(word), "{path}: {body}");
    }
    let long = format!("/api/namespaces/graph?namespaces={}", "a,".repeat(3000));
    let (code, _, body) = raw(addr, "GET", &long).await;
    assert_eq!(code, 400, "{body}");
    // Unknown things are 404s; metrics without Prometheus say so.
    let (code, _, body) = raw(addr, "GET", "/api/namespaces/nope/workloads").await;
    assert_eq!(code, 404);
    assert!(error_of(&body).contains("nope"));
    let (code, _, _) = raw(addr, "GET", "/api/namespaces/blog-system/workloads/was").await;
    assert_eq!(code, 404);
    let (code, _, _) = raw(addr, "GET", "/api/nothing-here").await;
    assert_eq!(code, 404);
    let (code, _, body) = raw(addr, "GET", "/api/namespaces/graph?namespaces=blog-system").await;
    assert_eq!(code, 503, "{body}");
    assert!(error_of(&body).contains("prometheus"));
}

#[tokio::test]
async fn read_only_with_the_security_headers() {
    let (addr, _dir) = start(None).await;
    let (code, head, body) = raw(addr, "GET", "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok"));
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    assert!(
        head.contains(&format!("content-security-policy: {CSP}")),
        "{head}"
    );
    for m in ["POST", "PUT", "DELETE", "PATCH"] {
        let (code, head, body) = raw(addr, m, "/api/istio/config").await;
        assert_eq!(code, 405, "{m}");
        assert!(head.contains("allow: get, head"), "{head}");
        assert!(error_of(&body).contains("read-only"));
    }
    let (code, _, _) = raw(addr, "HEAD", "/api/namespaces").await;
    assert_eq!(code, 200);
    let (code, _, body) = raw(addr, "GET", "/api/namespaces").await;
    assert_eq!(code, 200);
    assert!(body.contains("\"blog-system\""), "{body}");
}

#[tokio::test]
async fn the_page_or_its_stand_in() {
    let (addr, _dir) = start(None).await;
    // Without ui/dist in the build, `/` and client-side routes say how to build the page.
    for path in ["/", "/graph/blog-system", "/index.html"] {
        let (code, head, body) = raw(addr, "GET", path).await;
        assert_eq!(code, 200, "{path}");
        assert!(head.contains("content-type: text/html"), "{head}");
        assert!(head.contains("cache-control: no-cache"), "{head}");
        if !assets::present() {
            assert!(body.contains("./scripts/build-ui"), "{body}");
        }
    }
    let (code, _, body) = raw(addr, "GET", "/assets/missing-0123.js").await;
    assert_eq!(code, 404, "{body}");
    assert_eq!(
        assets::content_type("assets/index-abc.js"),
        "text/javascript; charset=utf-8"
    );
    assert_eq!(
        assets::content_type("assets/index-abc.css"),
        "text/css; charset=utf-8"
    );
    assert_eq!(assets::content_type("favicon.svg"), "image/svg+xml");
}

/// A tracing store that answers `body_len` bytes of JSON, or never answers.
async fn fake_store(body_len: Option<usize>) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).into_owned();
                let Some(len) = body_len else {
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    return;
                };
                let path = req.split(' ').nth(1).unwrap_or("").to_string();
                let body = if len == 0 {
                    format!("{{\"data\":[\"web.blog-system\"],\"path\":{path:?}}}")
                } else {
                    "x".repeat(len)
                };
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn the_jaeger_pass_through_is_bounded() {
    let good = fake_store(Some(0)).await;
    let (addr, _dir) = start(Some(format!("http://{good}"))).await;
    let (code, head, body) = raw(
        addr,
        "GET",
        "/jaeger/api/traces?service=web.blog-system&limit=20",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(head.contains("content-type: application/json"));
    let v: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(v["path"], "/api/traces?service=web.blog-system&limit=20");
    let (code, _, body) = raw(
        addr,
        "GET",
        "/jaeger/api/services/web.blog-system/operations",
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = raw(addr, "GET", "/jaeger/api/x%00y").await;
    assert_eq!(code, 400);

    // Larger than the bound: a 502 with a message, not the body.
    let huge = fake_store(Some(MAX_TRACING_BODY + 1)).await;
    let (addr, _dir2) = start(Some(format!("http://{huge}"))).await;
    let (code, _, body) = raw(addr, "GET", "/jaeger/api/services").await;
    assert_eq!(code, 502);
    assert!(body.len() < 1024, "{} bytes", body.len());
    error_of(&body);

    // Down: a 502 that says so.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let (addr, _dir3) = start(Some(format!("http://{down}"))).await;
    let (code, _, body) = raw(addr, "GET", "/jaeger/api/services").await;
    assert_eq!(code, 502);
    assert!(error_of(&body).contains("did not answer"), "{body}");
    let (addr, _dir4) = start(None).await;
    let (code, _, body) = raw(addr, "GET", "/jaeger/api/services").await;
    assert_eq!(code, 503);
    assert!(error_of(&body).contains("not running"));
}
