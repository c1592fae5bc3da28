//! End to end: Gateway API routes served by the mesh's ingress gateway and sidecars, through
//! real processes. An HTTPRoute with weights and a header match routes like the equivalent
//! VirtualService; its filters redirect, rewrite and modify headers; a cross-namespace
//! backend is refused until a ReferenceGrant allows it; a route bound to a Service routes a
//! sidecar's calls; a GRPCRoute routes by method; a TCPRoute gets a listener on the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

const FIXTURE: &str = "crates/skein/tests/fixtures/gateway-api";

/// Requests per share measurement: the 20 % share's standard deviation is 1.8 points.
const N: usize = 500;

struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }

    /// The echo's JSON (the body between its outer braces).
    fn json(&self) -> serde_json::Value {
        let (Some(a), Some(b)) = (self.body.find('{'), self.body.rfind('}')) else {
            panic!("not the echo's JSON ({}): {}", self.status, self.body);
        };
        serde_json::from_str(&self.body[a..=b]).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One GET on a fresh connection to the ingress at `base`, for `host`.
fn get_host(base: &str, host: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let authority = base.strip_prefix("http://").expect("http base");
    let authority = authority.trim_end_matches('/');
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s =
        TcpStream::connect(authority).unwrap_or_else(|e| panic!("connect {authority}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(req.as_bytes()).expect("write");
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

/// The share (in %) of `n` answers for `host` that v2 served; every answer must be a 200.
fn v2_share(base: &str, host: &str, n: usize) -> f64 {
    let mut v2 = 0;
    for _ in 0..n {
        let a = get_host(base, host, "/", &[]);
        assert_eq!(a.status, 200, "{host}: {}", a.body);
        if a.json()["version"] == "v2" {
            v2 += 1;
        }
    }
    v2 as f64 * 100.0 / n as f64
}

#[test]
fn gateway_api_routes_through_the_gateway_and_the_sidecars() {
    let sk = Skein::new();
    sk.up(FIXTURE, &[]);
    let base = sk.http_base();

    // The route is in the gateway's config, as `proxy-config routes` shows it.
    let out = sk.run(&["proxy-config", "istio-ingressgateway", "routes"]);
    let routes = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(routes.contains("gwapi.example.com"), "{routes}");

    // 1. Weights and a header match, as the equivalent VirtualService routes them.
    for host in ["gwapi.example.com", "vs.example.com"] {
        for _ in 0..50 {
            let a = get_host(&base, host, "/", &[("x-canary", "true")]);
            assert_eq!(a.status, 200, "{host}: {}", a.body);
            assert_eq!(
                a.json()["version"],
                "v2",
                "{host}: the header match goes to v2"
            );
        }
    }
    let route = v2_share(&base, "gwapi.example.com", N);
    let vs = v2_share(&base, "vs.example.com", N);
    eprintln!("v2 share over {N} requests: HTTPRoute {route:.1} %, VirtualService {vs:.1} %");
    assert!((route - 20.0).abs() < 7.0, "HTTPRoute's v2 share {route} %");
    assert!((vs - 20.0).abs() < 7.0, "VirtualService's v2 share {vs} %");
    assert!(
        (route - vs).abs() < 8.0,
        "HTTPRoute {route} % vs VirtualService {vs} %"
    );

    // The same route on the gateway's HTTPS port (TLS with the ingress certificate).
    let https = sk.https_base();
    let addr = https.trim_start_matches("https://").trim_end_matches('/');
    let port = addr.rsplit_once(':').map(|(_, p)| p).expect("a port");
    let ca = sk.state.path().join("certs/ingress.crt");
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20", "--cacert"])
        .arg(&ca)
        .args(["--connect-to", &format!("localhost:{port}:{addr}")])
        .args(["-H", "Host: gwapi.example.com", "-H", "x-canary: true"])
        .arg(format!("https://localhost:{port}/"))
        .output()
        .expect("curl (scripts/test installs it)");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(echo["version"], "v2", "{echo}");

    // 2. A redirect: 302, the matched prefix replaced, to the filter's host name.
    let a = get_host(&base, "filters.example.com", "/old/page?x=1", &[]);
    assert_eq!(a.status, 302, "{}", a.head);
    let location = a.header("location").unwrap_or_default();
    assert_eq!(
        location, "http://moved.example.com/new/page?x=1",
        "{}",
        a.head
    );
    // To https: the scheme's own port, not the one the request came to.
    let a = get_host(&base, "filters.example.com:8080", "/login", &[]);
    assert_eq!(a.status, 301, "{}", a.head);
    assert_eq!(
        a.header("location").as_deref(),
        Some("https://filters.example.com/login"),
        "{}",
        a.head
    );
    // PathPrefix is segment-wise: /older is not under /old.
    let a = get_host(&base, "filters.example.com", "/older", &[]);
    assert_eq!(a.status, 404, "{}", a.head);

    // 3. A rewrite and header modifiers.
    let a = get_host(
        &base,
        "filters.example.com",
        "/api/posts?page=2",
        &[("x-secret", "s3cret"), ("x-route", "from-client")],
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let echo = a.json();
    assert_eq!(echo["path"], "/v2/posts?page=2");
    assert_eq!(echo["version"], "v1");
    assert_eq!(echo["headers"]["x-route"], "filters");
    assert!(echo["headers"].get("x-secret").is_none(), "{echo}");
    assert_eq!(a.header("x-served-by").as_deref(), Some("gateway-api"));
    let a = get_host(&base, "filters.example.com", "/api", &[]);
    assert_eq!(a.json()["path"], "/v2");

    // A GRPCRoute: the exact method wins over the service's prefix written before it.
    for (path, status, version) in [
        ("/pkg.Echo/Say", 200, "v2"),
        ("/pkg.Echo/Other", 200, "v1"),
        ("/other.Svc/Say", 404, ""),
    ] {
        let a = get_host(&base, "grpc.example.com", path, &[]);
        assert_eq!(a.status, status, "{path}: {}", a.head);
        if status == 200 {
            assert_eq!(a.json()["version"], version, "{path}");
        }
    }

    // 4. A backend in another namespace: refused (500) without a ReferenceGrant.
    let a = get_host(&base, "cross.example.com", "/", &[]);
    assert_eq!(a.status, 500, "{}", a.body);
    let out = sk.run(&["analyze", "-o", "json"]);
    let findings = String::from_utf8_lossy(&out.stdout);
    assert!(findings.contains("RefNotPermitted"), "{findings}");
    sk.apply_yaml(
        "grant.yaml",
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: from-shared, namespace: echo}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shared}]\n  to: [{group: \"\", kind: Service, name: echo-v2}]\n",
    );
    let echo = eventually(Duration::from_secs(30), "the grant to take effect", || {
        let a = get_host(&base, "cross.example.com", "/", &[]);
        (a.status == 200).then(|| a.json())
    });
    assert_eq!(echo["version"], "v2");

    // 5. A TCPRoute: the gateway's listener of its own, on its pod's address.
    let gw = sk.pods("istio-ingressgateway");
    let ip = gw[0]["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("the gateway's address: {gw:?}"));
    let mut v2 = 0;
    for _ in 0..60 {
        let a = get_host(&format!("http://{ip}:15080"), "anything", "/tcp", &[]);
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.json()["path"], "/tcp");
        if a.json()["version"] == "v2" {
            v2 += 1;
        }
    }
    eprintln!("TCPRoute 50/50: {v2} of 60 connections to v2");
    assert!((10..=50).contains(&v2), "{v2} of 60 connections to v2");

    // 6. Mesh routing: a sidecar calling the Service echo gets the HTTPRoute bound to it.
    let script = "for i in $(seq 1 200); do curl -s http://echo.echo:8080/; echo; done; \
                  for i in $(seq 1 20); do curl -s -H 'x-canary: true' http://echo.echo:8080/; echo; done";
    let out = sk.run(&["exec", "-n", "echo", "--", "sh", "-c", script]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let versions: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["version"].as_str().unwrap_or("").to_string()
        })
        .collect();
    assert_eq!(versions.len(), 220, "{text}");
    assert!(
        versions[200..].iter().all(|v| v == "v2"),
        "the header match goes to v2: {:?}",
        &versions[200..]
    );
    let mesh = versions[..200].iter().filter(|v| *v == "v2").count() as f64 / 2.0;
    eprintln!("v2 share over 200 sidecar requests: {mesh:.1} %");
    assert!(
        (mesh - 20.0).abs() < 9.0,
        "the mesh route's v2 share {mesh} %"
    );
}
