//! The edge of the mesh: headers only the proxy may write, path normalisation before routing
//! and authorization, the trusted client address, and AuthorizationPolicy at the gateway.

use std::sync::atomic::Ordering;
use std::time::Duration;

use skein_proxy::test_util::*;
use skein_proxy::{ProxyConfig, ProxyHandle};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn, route_to};
use skein_snapshot::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NS: &str = "blog-system";
const HOST: &str = "http://blog.example.com";

/// A gateway routing `blog.example.com` to `web` (mirrored to `canary` when given), with
/// `authz` selecting the gateway.
async fn gateway(
    web: &Upstream,
    canary: Option<&Upstream>,
    authz: Vec<AuthzPolicy>,
) -> ProxyHandle {
    let c = cluster(&fqdn("web-service", NS), 80, None, &[&web.addr_str()]);
    let mut route = route_to(&c.name);
    let mut b = SnapshotBuilder::new("g1", "istio-system", "ingress");
    if let Some(canary) = canary {
        let m = cluster(&fqdn("web-canary", NS), 80, None, &[&canary.addr_str()]);
        route.mirror = Some(Mirror {
            cluster: m.name.clone(),
            percentage: None,
        });
        b = b.cluster(m);
    }
    let mut snap = b
        .vhost(
            GATEWAY_ROUTE,
            VirtualHost {
                name: "blog".into(),
                domains: vec!["blog.example.com".into()],
                routes: vec![route],
            },
        )
        .cluster(c)
        .build();
    snap.inbound.authz = authz;
    let cfg = ProxyConfig::gateway("127.0.0.1:0".parse().expect("addr"));
    let h = skein_proxy::start(cfg).await.expect("start");
    h.apply(snap).expect("apply");
    h
}

fn gw(h: &ProxyHandle) -> std::net::SocketAddr {
    h.addrs.gateway_http.expect("gateway http")
}

/// Waits (on paused time) until `u` has seen `n` requests.
async fn seen(u: &Upstream, n: usize) {
    for _ in 0..200 {
        if u.requests.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "upstream saw {} requests, not {n}",
        u.requests.load(Ordering::SeqCst)
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_cannot_remove_or_forge_the_mirror_marker() {
    let web = Upstream::start("web").await;
    let canary = Upstream::start("canary").await;
    let h = gateway(&web, Some(&canary), vec![]).await;
    let mut c = H1Client::connect(gw(&h)).await;
    // `Connection: x-skein-mirror` used to strip the marker off the mirrored copy too.
    let r = c
        .send(
            "POST",
            &format!("{HOST}/api/posts"),
            &[("connection", "x-skein-mirror")],
        )
        .await;
    assert_eq!(r.status, 200);
    seen(&canary, 1).await;
    assert_eq!(
        canary.mirrored.load(Ordering::SeqCst),
        1,
        "the copy is marked"
    );
    // A forged marker does not reach the primary; the copy is still marked by the proxy.
    let mut c = H1Client::connect(gw(&h)).await;
    let r = c
        .send(
            "POST",
            &format!("{HOST}/api/posts"),
            &[("x-skein-mirror", "1")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.seen_header("x-skein-mirror").is_empty(), "{r:?}");
    seen(&canary, 2).await;
    assert_eq!(
        web.mirrored.load(Ordering::SeqCst),
        0,
        "the primary never sees it"
    );
    assert_eq!(canary.mirrored.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_gateway_removes_proxy_owned_and_envoy_internal_headers() {
    let web = Upstream::start("web").await;
    let h = gateway(&web, None, vec![]).await;
    let r = get(
        gw(&h),
        &format!("{HOST}/board"),
        &[
            ("x-skein-not-delivered", "connect-failure"),
            ("x-skein-anything", "1"),
            ("x-envoy-retry-on", "5xx"),
            ("x-envoy-max-retries", "9"),
            ("x-envoy-internal", "true"),
            (
                "x-forwarded-client-cert",
                "By=spiffe://cluster.local/ns/blog/sa/admin",
            ),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-custom", "kept"),
        ],
    )
    .await;
    assert_eq!(r.status, 200);
    for gone in [
        "x-skein-not-delivered",
        "x-skein-anything",
        "x-envoy-retry-on",
        "x-envoy-max-retries",
        "x-envoy-internal",
        "x-forwarded-client-cert",
    ] {
        assert!(r.seen_header(gone).is_empty(), "{gone} reached the app");
    }
    assert_eq!(r.seen_header("x-custom"), ["kept"]);
    assert_eq!(r.seen_header("x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
}

#[tokio::test(start_paused = true)]
async fn a_plaintext_inbound_request_cannot_carry_proxy_owned_headers() {
    let app = Upstream::start("app").await;
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_inbound("127.0.0.1:0".parse().expect("addr"), app.addr);
    let h = skein_proxy::start(cfg).await.expect("start");
    h.apply(SnapshotBuilder::new("v1", NS, "web").build())
        .expect("apply");
    let inbound = h.addrs.inbound.expect("inbound");
    let r = get(
        inbound,
        "http://web:8080/api/posts",
        &[("x-skein-mirror", "1"), ("x-envoy-force-trace", "1")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.seen_header("x-skein-mirror").is_empty());
    assert!(r.seen_header("x-envoy-force-trace").is_empty());
}

#[tokio::test(start_paused = true)]
async fn paths_are_normalised_before_routing_and_the_app_gets_the_normal_form() {
    let web = Upstream::start("web").await;
    let h = gateway(&web, None, vec![]).await;
    for (sent, got) in [
        ("/api/x/../admin", "/api/admin"),
        ("/api/./posts?x=1", "/api/posts?x=1"),
        ("/api/%2e%2e/admin", "/admin"),
        ("/../../etc/passwd", "/etc/passwd"),
        ("//api/posts", "//api/posts"),
        ("/a/%2F/b", "/a/%2F/b"),
    ] {
        let r = get(gw(&h), &format!("{HOST}{sent}"), &[]).await;
        assert_eq!(r.status, 200, "{sent}");
        assert_eq!(r.json()["path"], got, "{sent}");
    }
    let r = get(gw(&h), &format!("{HOST}/a/%00/b"), &[]).await;
    assert_eq!(r.status, 400);
    // `OPTIONS *` is not origin-form: Envoy's 404 absolute_path_rejected.
    let mut s = tokio::net::TcpStream::connect(gw(&h))
        .await
        .expect("connect");
    s.set_nodelay(true).expect("nodelay");
    s.write_all(b"OPTIONS * HTTP/1.1\r\nhost: blog.example.com\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
}

fn deny_admin() -> AuthzPolicy {
    AuthzPolicy {
        name: "deny-admin".into(),
        namespace: "istio-system".into(),
        action: AuthzAction::Deny,
        rules: vec![AuthzRule {
            to: vec![AuthzOperation {
                paths: vec!["/admin*".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[tokio::test(start_paused = true)]
async fn the_gateway_enforces_its_policies_on_the_normalised_path() {
    let web = Upstream::start("web").await;
    let h = gateway(&web, None, vec![deny_admin()]).await;
    for p in [
        "/admin",
        "/admin/users",
        "/api/../admin",
        "/%61dmin",
        "/./admin",
    ] {
        let r = get(gw(&h), &format!("{HOST}{p}"), &[]).await;
        assert_eq!(r.status, 403, "{p}");
        assert_eq!(r.body, "RBAC: access denied");
    }
    assert_eq!(
        web.requests.load(Ordering::SeqCst),
        0,
        "nothing reached the app"
    );
    let r = get(gw(&h), &format!("{HOST}/board"), &[]).await;
    assert_eq!(r.status, 200);
    // `//admin` is not `/admin*` (BASE does not merge slashes), as in Istio.
    let r = get(gw(&h), &format!("{HOST}//admin"), &[]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(start_paused = true)]
async fn remote_ip_blocks_use_the_peer_at_the_gateway_not_a_forged_xff() {
    let web = Upstream::start("web").await;
    let deny_loopback = AuthzPolicy {
        name: "deny-local".into(),
        namespace: "istio-system".into(),
        action: AuthzAction::Deny,
        rules: vec![AuthzRule {
            from: vec![AuthzSource {
                remote_ip_blocks: vec!["127.0.0.0/8".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let h = gateway(&web, None, vec![deny_loopback]).await;
    // The leftmost XFF entry is the client's choice; the gateway's client is its peer.
    let r = get(
        gw(&h),
        &format!("{HOST}/board"),
        &[("x-forwarded-for", "8.8.8.8")],
    )
    .await;
    assert_eq!(r.status, 403);
    let r = get(gw(&h), &format!("{HOST}/board"), &[]).await;
    assert_eq!(r.status, 403);
}
