//! Requests that never reached an app go to another host: a refused connect (Istio's default
//! policy retries connect-failure twice), and a peer sidecar whose app is down (its 503 says
//! nothing was delivered). Only a peer reached over mTLS can say that: the same 503 from a
//! plaintext upstream is an answer like any other.

use std::net::SocketAddr;

use skein_proxy::test_util::pki::{Ca, spiffe};
use skein_proxy::test_util::*;
use skein_proxy::{ProxyConfig, ProxyHandle, SourceConfig};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn, route_to};
use skein_snapshot::*;

const NS: &str = "blog-system";
const URL: &str = "http://svc:8080/api/posts";

/// An address where nothing listens (bound, then released).
async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

fn snapshot(endpoints: &[&str], retries: Option<RetryPolicy>) -> Snapshot {
    let f = fqdn("svc", NS);
    let name = outbound_cluster_name(8080, None, &f);
    SnapshotBuilder::new("v1", NS, "web")
        .cluster(cluster(&f, 8080, None, endpoints))
        .with_last_cluster(|c| c.lb_policy = LbPolicy::RoundRobin)
        .service_routes(
            "svc",
            8080,
            vec![Route {
                retries,
                ..route_to(&name)
            }],
        )
        .build()
}

#[tokio::test(start_paused = true)]
async fn a_refused_connect_goes_to_another_host_under_the_default_policy() {
    let live = Upstream::start("live").await;
    let dead = dead_addr().await.to_string();
    let (h, _) = sidecar(snapshot(&[&dead, &live.addr_str()], None)).await;
    for i in 0..10 {
        let r = get(outbound(&h), URL, &[]).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert_eq!(r.upstream(), "live");
    }
}

#[tokio::test(start_paused = true)]
async fn a_policy_without_connect_failure_does_not_retry_it() {
    let live = Upstream::start("live").await;
    let dead = dead_addr().await.to_string();
    let retries = RetryPolicy {
        attempts: 3,
        retry_on: vec!["retriable-4xx".into()],
        ..Default::default()
    };
    let (h, _) = sidecar(snapshot(&[&dead, &live.addr_str()], Some(retries))).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let r = get(outbound(&h), URL, &[]).await;
        if r.status == 503 {
            assert!(r.body.contains("connection failure"), "{r:?}");
        }
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&503),
        "round robin hits the dead host: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
}

/// A server-side sidecar in front of `app` (with a workload certificate from `ca` when
/// given); returns the proxy and its inbound address.
async fn server_sidecar(app: SocketAddr, ca: Option<&Ca>) -> (ProxyHandle, SocketAddr) {
    let mut cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_inbound("127.0.0.1:0".parse().expect("addr"), app)
        .with_source(SourceConfig::Static(Box::new(Snapshot {
            version: "v1".into(),
            ..Default::default()
        })));
    cfg.identity = ca.map(|ca| ca.identity(&spiffe(NS, "was")));
    let h = skein_proxy::start(cfg).await.expect("server sidecar");
    let inbound = h.addrs.inbound.expect("inbound");
    (h, inbound)
}

/// A client sidecar whose `svc` cluster is ISTIO_MUTUAL with a certificate from `ca`.
async fn mesh_client(endpoints: &[&str], ca: &Ca) -> ProxyHandle {
    let mut cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"));
    cfg.identity = Some(ca.identity(&spiffe(NS, "web")));
    let h = skein_proxy::start(cfg).await.expect("client sidecar");
    let mut snap = snapshot(endpoints, None);
    for c in &mut snap.clusters {
        c.tls = UpstreamTls::IstioMutual;
    }
    h.apply(snap).expect("apply");
    h
}

#[tokio::test(start_paused = true)]
async fn a_peer_whose_app_is_down_is_skipped_for_a_bodiless_request() {
    let live = Upstream::start("live").await;
    let ca = Ca::new("mesh");
    let (_down, down_inbound) = server_sidecar(dead_addr().await, Some(&ca)).await;
    let (_up, up_inbound) = server_sidecar(live.addr, Some(&ca)).await;
    let h = mesh_client(&[&down_inbound.to_string(), &up_inbound.to_string()], &ca).await;
    for i in 0..10 {
        let r = get(outbound(&h), URL, &[]).await;
        assert_eq!(r.status, 200, "request {i}: {r:?}");
        assert!(
            !r.headers.contains_key("x-skein-not-delivered"),
            "the marker is for proxies"
        );
    }

    // A request with a body is not replayed: the peer's 503 reaches the client.
    let mut c = H1Client::connect(outbound(&h)).await;
    let mut saw_503 = false;
    for _ in 0..4 {
        let r = c
            .send_body("POST", URL, &[], "{\"title\":\"t\"}")
            .await
            .expect("a response");
        saw_503 |= r.status == 503;
        assert!(!r.headers.contains_key("x-skein-not-delivered"));
    }
    assert!(saw_503, "a POST to the dead app's pod is not retried");
}

/// An app that reads a request and dies before answering (closes the connection).
async fn dying_app() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                drop(s);
            });
        }
    });
    a
}

#[tokio::test(start_paused = true)]
async fn a_get_whose_app_died_mid_request_goes_elsewhere_but_a_post_does_not() {
    let live = Upstream::start("live").await;
    let ca = Ca::new("mesh");
    let (_dying, dying_inbound) = server_sidecar(dying_app().await, Some(&ca)).await;
    let (_up, up_inbound) = server_sidecar(live.addr, Some(&ca)).await;
    let h = mesh_client(&[&dying_inbound.to_string(), &up_inbound.to_string()], &ca).await;
    for i in 0..6 {
        let r = get(outbound(&h), URL, &[]).await;
        assert_eq!(r.status, 200, "GET {i}: {r:?}");
    }
    let mut c = H1Client::connect(outbound(&h)).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = c
            .send_body("POST", URL, &[], "{\"title\":\"t\"}")
            .await
            .expect("a response");
        assert!(!r.headers.contains_key("x-skein-not-delivered"));
        statuses.push(r.status);
    }
    assert!(
        statuses.contains(&503),
        "a POST is never replayed: {statuses:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_plaintext_upstreams_not_delivered_503_is_not_retried() {
    // The same down pod, reached in plaintext: its marked 503 could come from any app, so it
    // goes back to the client and the next host is not tried for it.
    let live = Upstream::start("live").await;
    let (_down, down_inbound) = server_sidecar(dead_addr().await, None).await;
    let (_up, up_inbound) = server_sidecar(live.addr, None).await;
    let (h, _) = sidecar(snapshot(
        &[&down_inbound.to_string(), &up_inbound.to_string()],
        None,
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = get(outbound(&h), URL, &[]).await;
        assert!(!r.headers.contains_key("x-skein-not-delivered"));
        statuses.push(r.status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    assert!(statuses.contains(&200), "{statuses:?}");
}
