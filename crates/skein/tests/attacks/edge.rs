//! The edge of the mesh, through the real ingress gateway of `examples/blog-system`: headers
//! only the proxy may write, and AuthorizationPolicy at the gateway on normalised paths.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

const EXAMPLE: &str = "examples/blog-system";

/// A raw HTTP/1.1 request with exactly the header lines given (no `Connection: close` of the
/// helper's, so a client's single `Connection` header is what the proxy sees).
fn raw(base: &str, method: &str, path: &str, headers: &[&str], body: &str) -> (u16, String) {
    let authority = base.strip_prefix("http://").expect("http base");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for h in headers {
        req.push_str(h);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    let mut s = TcpStream::connect(authority).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    s.write_all(req.as_bytes()).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn count_titled(base: &str, title: &str) -> usize {
    let r = get(&format!("{base}/api/posts?size=100"));
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
        .as_array()
        .expect("posts")
        .iter()
        .filter(|p| p["title"] == title)
        .count()
}

#[test]
fn a_client_cannot_make_the_canary_write_or_forge_a_mirror_marker() {
    let skein = Skein::new();
    skein.up(EXAMPLE, &[]);
    let base = skein.http_base();
    // `Connection: x-skein-mirror` used to strip the marker off the mirrored copy: the canary
    // then wrote the post as well (two posts).
    let (status, resp) = raw(
        &base,
        "POST",
        "/api/posts",
        &["Connection: x-skein-mirror, close"],
        r#"{"title":"edge-hop","content":"c","author":"e2e"}"#,
    );
    assert_eq!(status, 201, "{resp}");
    // A forged marker used to get 202 and nothing written.
    let (status, resp) = raw(
        &base,
        "POST",
        "/api/posts",
        &["x-skein-mirror: 1", "Connection: close"],
        r#"{"title":"edge-forged","content":"c","author":"e2e"}"#,
    );
    assert_eq!(status, 201, "{resp}");
    // The mirrored copies reach the canary asynchronously; give them time to (not) write.
    std::thread::sleep(Duration::from_secs(2));
    eventually(Duration::from_secs(10), "exactly one post each", || {
        (count_titled(&base, "edge-hop") == 1 && count_titled(&base, "edge-forged") == 1)
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(count_titled(&base, "edge-hop"), 1);
    assert_eq!(count_titled(&base, "edge-forged"), 1);
}

#[test]
fn a_deny_policy_at_the_gateway_holds_on_every_spelling_of_the_path() {
    let skein = Skein::new();
    skein.up(EXAMPLE, &[]);
    let base = skein.http_base();
    skein.apply_yaml(
        "deny-admin.yaml",
        r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-admin
  namespace: istio-system
spec:
  selector:
    matchLabels:
      istio: ingressgateway
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/admin*"]
"#,
    );
    eventually(Duration::from_secs(20), "the gateway denies /admin", || {
        (get(&format!("{base}/admin")).status == 403).then_some(())
    });
    for p in [
        "/admin",
        "/admin/x",
        "/board/../admin",
        "/%61dmin",
        "/./admin",
        "/%2e/admin",
    ] {
        let r = get(&format!("{base}{p}"));
        assert_eq!(r.status, 403, "{p}: {r:?}");
        assert_eq!(r.body, "RBAC: access denied", "{p}");
    }
    let r = get(&format!("{base}/api/posts"));
    assert_eq!(r.status, 200, "{r:?}");
    // The access log is written in batches (within 100 ms): wait for the line.
    let gateway = skein.pods("istio-ingressgateway")[0]["name"]
        .as_str()
        .expect("gateway pod")
        .to_string();
    let wanted = "rbac_access_denied_matched_policy[ns[istio-system]-policy[deny-admin]-rule[0]]";
    eventually(
        Duration::from_secs(5),
        "the denial in the access log",
        || skein.proxy_log(&gateway).contains(wanted).then_some(()),
    );
}
