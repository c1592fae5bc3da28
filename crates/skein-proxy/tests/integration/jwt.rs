//! RequestAuthentication at a sidecar's inbound: a real proxy in front of a real upstream,
//! tokens signed in the test with the test RSA key. Time is paused as elsewhere; a token's
//! `exp` is checked against the wall clock, which pausing does not stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;
use skein_proxy::test_util::pki::NS;
use skein_proxy::test_util::*;
use skein_proxy::{AccessLogSink, ProxyConfig, ProxyHandle};
use skein_snapshot::build::SnapshotBuilder;
use skein_snapshot::*;

const KEY: &[u8] = include_bytes!("../../src/policy/jwt/testdata/rsa-test-key.pem");
const JWKS: &str = include_str!("../../src/policy/jwt/testdata/rsa-test-jwks.json");
const ISS: &str = "https://issuer.example";
const STEP: Duration = Duration::from_secs(5);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f).await.expect("in time")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(claims: serde_json::Value) -> String {
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("test-rsa".into());
    encode(&h, &claims, &EncodingKey::from_rsa_pem(KEY).expect("key")).expect("signs")
}

fn claims(groups: &[&str]) -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "aud": "blog", "exp": now() + 600, "groups": groups})
}

/// The inbound policy: a RequestAuthentication for ISS and an ALLOW policy that wants a
/// request principal in group `admin`.
fn policy() -> InboundPolicy {
    InboundPolicy {
        jwt: vec![JwtRule {
            policy: format!("{NS}/jwt"),
            issuer: ISS.into(),
            audiences: vec!["blog".into()],
            jwks: Some(JWKS.into()),
            output_payload_to_header: Some("x-jwt-payload".into()),
            ..Default::default()
        }],
        authz: vec![AuthzPolicy {
            name: "admins".into(),
            namespace: NS.into(),
            action: AuthzAction::Allow,
            rules: vec![AuthzRule {
                from: vec![AuthzSource {
                    request_principals: vec!["*".into()],
                    ..Default::default()
                }],
                when: vec![AuthzCondition {
                    key: "request.auth.claims[groups]".into(),
                    values: vec!["admin".into()],
                    not_values: vec![],
                }],
                ..Default::default()
            }],
        }],
        ..Default::default()
    }
}

async fn server(app: SocketAddr) -> (ProxyHandle, PathBuf) {
    let log = temp_path("jwt");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()))
        .with_inbound("127.0.0.1:0".parse().expect("addr"), app);
    let h = within(skein_proxy::start(cfg)).await.expect("start");
    let mut snap = SnapshotBuilder::new("v1", NS, "was").build();
    snap.inbound = policy();
    h.apply(snap).expect("snapshot");
    (h, log)
}

#[tokio::test(start_paused = true)]
async fn jwt_is_verified_before_authorization_and_bad_tokens_get_401() {
    let app = Upstream::start("app").await;
    let (h, log) = server(app.addr).await;
    let inbound = h.addrs.inbound.expect("inbound");
    let url = "http://was-service:8080/api/posts?page=1";
    let send = |auth: Option<String>| async move {
        let v = auth.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = v
            .as_deref()
            .map(|v| vec![("authorization", v)])
            .unwrap_or_default();
        within(H1Client::connect(inbound).await.send("GET", url, &headers)).await
    };

    let admin = token(claims(&["admin"]));
    let ok = send(Some(admin.clone())).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.seen_header("authorization").is_empty(), "{}", ok.body);
    assert_eq!(
        ok.seen_header("x-jwt-payload"),
        [admin.split('.').nth(1).unwrap().to_string()]
    );

    let user = send(Some(token(claims(&["dev"])))).await;
    assert_eq!(
        (user.status, user.body.as_str()),
        (403, "RBAC: access denied")
    );
    let none = send(None).await;
    assert_eq!(
        (none.status, none.body.as_str()),
        (403, "RBAC: access denied")
    );

    let mut expired = claims(&["admin"]);
    expired["exp"] = json!(now() - 120);
    let bad = send(Some(token(expired))).await;
    assert_eq!((bad.status, bad.body.as_str()), (401, "Jwt is expired"));
    assert_eq!(
        header(&bad.headers, "www-authenticate").as_deref(),
        Some("Bearer realm=\"http://was-service:8080/api/posts\", error=\"invalid_token\"")
    );
    let mut other = claims(&["admin"]);
    other["iss"] = json!("https://other.example");
    let bad = send(Some(token(other))).await;
    assert_eq!(
        (bad.status, bad.body.as_str()),
        (401, "Jwt issuer is not configured")
    );
    // Neither refused request reached the app.
    assert_eq!(app.accepts(), 1);

    let lines = log_lines(&log, 5).await;
    let expired_line = lines
        .iter()
        .find(|l| l.contains(" 401 "))
        .expect("401 line");
    assert!(
        expired_line.contains("jwt_authn_access_denied{Jwt_is_expired}"),
        "{expired_line}"
    );
    assert!(expired_line.contains(" inbound|"), "{expired_line}");
}

/// A key server on loopback: every request gets the test JWKS; the Host headers it saw.
async fn key_server() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let hosts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = std::sync::Arc::clone(&hosts);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            if let Some(h) = head.lines().find_map(|l| {
                l.strip_prefix("host: ")
                    .or_else(|| l.strip_prefix("Host: "))
            }) {
                seen.lock().expect("lock").push(h.to_string());
            }
            let resp = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{JWKS}",
                JWKS.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (addr, hosts)
}

#[tokio::test(start_paused = true)]
async fn jwks_uri_is_fetched_through_the_sidecars_own_outbound_route() {
    let app = Upstream::start("app").await;
    let (keys, hosts) = key_server().await;
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_inbound("127.0.0.1:0".parse().expect("addr"), app.addr);
    let h = within(skein_proxy::start(cfg)).await.expect("start");
    // The key server is a mesh Service to this sidecar: reached by name, through its routes.
    let mut snap = SnapshotBuilder::new("v1", NS, "was")
        .http_service("keys", 8080, &[&keys.to_string()])
        .build();
    let mut inbound = policy();
    inbound.jwt[0].jwks = None;
    inbound.jwt[0].jwks_uri = Some("http://keys:8080/jwks.json".into());
    snap.inbound = inbound;
    h.apply(snap).expect("snapshot");
    let inbound = h.addrs.inbound.expect("inbound");
    let auth = format!("Bearer {}", token(claims(&["admin"])));
    let r = within(H1Client::connect(inbound).await.send(
        "GET",
        "http://was-service:8080/api/posts",
        &[("authorization", &auth)],
    ))
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(*hosts.lock().expect("lock"), ["keys:8080"]);
}

#[tokio::test(start_paused = true)]
async fn a_gateway_checks_tokens_before_its_authorization_policies() {
    use skein_snapshot::build::{cluster, fqdn, route_to};
    let web = Upstream::start("web").await;
    let c = cluster(&fqdn("web-service", NS), 80, None, &[&web.addr_str()]);
    let mut snap = SnapshotBuilder::new("g1", "istio-system", "ingress")
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
    snap.inbound = policy();
    let h = within(skein_proxy::start(ProxyConfig::gateway(
        "127.0.0.1:0".parse().expect("addr"),
    )))
    .await
    .expect("start");
    h.apply(snap).expect("apply");
    let gw = h.addrs.gateway_http.expect("gateway http");
    let send = |t: String| async move {
        let auth = format!("Bearer {t}");
        within(H1Client::connect(gw).await.send(
            "GET",
            "http://blog.example.com/api/posts",
            &[("authorization", &auth)],
        ))
        .await
    };
    let ok = send(token(claims(&["admin"]))).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(ok.seen_header("authorization").is_empty(), "{}", ok.body);
    let mut c = claims(&["admin"]);
    c["aud"] = json!("billing");
    let bad = send(token(c)).await;
    assert_eq!(
        (bad.status, bad.body.as_str()),
        (401, "Audiences in Jwt are not allowed")
    );
    assert_eq!(
        header(&bad.headers, "www-authenticate").as_deref(),
        Some("Bearer realm=\"http://blog.example.com/api/posts\", error=\"invalid_token\"")
    );
    let dev = send(token(claims(&["dev"]))).await;
    assert_eq!(dev.status, 403);
}
