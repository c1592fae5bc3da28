//! Istio mTLS between two in-process sidecars, PeerAuthentication modes and
//! AuthorizationPolicy, over real TCP and real TLS on 127.0.0.1.
//!
//! Topology: app --HTTP_PROXY--> client sidecar --mTLS--> server sidecar inbound --> app
//! upstream. Certificates come from a test CA made with rcgen.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use skein_proxy::test_util::pki::{Ca, NS, raw_client, spiffe};
use skein_proxy::test_util::*;
use skein_proxy::{AccessLogSink, ProxyConfig, ProxyHandle, StaticIdentity};
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn};
use skein_snapshot::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Bound on every single wait.
const STEP: Duration = Duration::from_secs(5);
const URL: &str = "http://was-service:8080/api/posts";

fn was_fqdn() -> String {
    fqdn("was-service", NS)
}

fn was_sni() -> String {
    format!("outbound_.8080_._.{}", was_fqdn())
}

struct Side {
    h: ProxyHandle,
    log: PathBuf,
}

impl Side {
    fn inbound(&self) -> SocketAddr {
        self.h.addrs.inbound.expect("inbound bound")
    }
    fn outbound(&self) -> SocketAddr {
        outbound(&self.h)
    }
    async fn lines(&self, n: usize) -> Vec<String> {
        log_lines(&self.log, n).await
    }
    async fn admin(&self, path: &str) -> Resp {
        let a = self.h.addrs.admin.expect("admin");
        within(get(a, &format!("http://{a}{path}"), &[])).await
    }
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .expect("finished within the step timeout")
}

/// A sidecar in front of `app` whose inbound enforces `policy`.
async fn server(app: SocketAddr, id: Option<StaticIdentity>, policy: InboundPolicy) -> Side {
    server_with(app, id, policy, |_| {}).await
}

/// [`server`] with `tune` applied to its snapshot's node.
async fn server_with(
    app: SocketAddr,
    id: Option<StaticIdentity>,
    policy: InboundPolicy,
    tune: impl FnOnce(&mut Node),
) -> Side {
    let log = temp_path("server");
    let mut cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()))
        .with_inbound("127.0.0.1:0".parse().expect("addr"), app);
    cfg.identity = id;
    let h = within(skein_proxy::start(cfg)).await.expect("server start");
    let mut snap = SnapshotBuilder::new("v1", NS, "was").build();
    snap.node.service_account = "was".into();
    tune(&mut snap.node);
    snap.inbound = policy;
    h.apply(snap).expect("server snapshot");
    Side { h, log }
}

fn mode(m: MtlsMode) -> InboundPolicy {
    InboundPolicy {
        mtls: m,
        ..Default::default()
    }
}

/// A sidecar whose `was-service:8080` goes to `server_inbound`; `tune` sets the cluster's TLS.
async fn client(
    server_inbound: SocketAddr,
    id: Option<StaticIdentity>,
    tune: impl FnOnce(&mut Cluster),
) -> Side {
    let log = temp_path("client");
    let mut cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()));
    cfg.identity = id;
    let h = within(skein_proxy::start(cfg)).await.expect("client start");
    let snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&server_inbound.to_string()])
        .with_last_cluster(tune)
        .build();
    h.apply(snap).expect("client snapshot");
    Side { h, log }
}

/// DestinationRule ISTIO_MUTUAL, expecting the server to be `sa`.
fn istio_mutual(sa: &'static str) -> impl FnOnce(&mut Cluster) {
    move |c: &mut Cluster| {
        c.tls = UpstreamTls::IstioMutual;
        c.identities = vec![spiffe(NS, sa)];
    }
}

fn xfcc(r: &Resp) -> String {
    r.seen_header("x-forwarded-client-cert").join(",")
}

fn requests(u: &Upstream) -> usize {
    u.requests.load(Ordering::SeqCst)
}

/// A plaintext HTTP/1.1 request straight to an inbound listener.
async fn plain_get(inbound: SocketAddr, path: &str) -> Result<Resp, hyper::Error> {
    let url = format!("http://was-service:8080{path}");
    within(async {
        H1Client::connect(inbound)
            .await
            .try_send("GET", &url, &[])
            .await
    })
    .await
}

/// Reads until EOF or `n` bytes; the bytes read.
async fn read_some(s: &mut (impl AsyncReadExt + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match within(s.read(&mut buf[got..])).await {
            Ok(0) | Err(_) => break,
            Ok(k) => got += k,
        }
    }
    buf.truncate(got);
    buf
}

#[tokio::test(start_paused = true)]
async fn http_flows_over_mtls_between_two_sidecars_and_the_server_sees_the_peer() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let srv = server(
        app.addr,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Strict),
    )
    .await;
    let cli = client(
        srv.inbound(),
        Some(ca.identity(&spiffe(NS, "web"))),
        istio_mutual("was"),
    )
    .await;

    let mut c = H1Client::connect(cli.outbound()).await;
    for _ in 0..5 {
        let r = within(c.send("GET", URL, &[])).await;
        assert_eq!(
            (r.status, r.upstream().as_str()),
            (200, "app"),
            "{}",
            r.body
        );
        // The server sidecar names the caller to the app (Envoy's x-forwarded-client-cert).
        let x = xfcc(&r);
        assert!(x.contains(&format!("URI={}", spiffe(NS, "web"))), "{x}");
        assert!(x.contains(&format!("By={}", spiffe(NS, "was"))), "{x}");
        assert!(x.contains("Hash="), "{x}");
    }
    // One pooled mTLS connection carried all five requests.
    let clusters = cli.h.clusters_text();
    let ep = format!(
        "{}::{}::cx_active::1",
        outbound_cluster_name(8080, None, &was_fqdn()),
        srv.inbound()
    );
    assert!(clusters.contains(&ep), "{clusters}");

    // The server logged the SNI the client asked for (%REQUESTED_SERVER_NAME%).
    let lines = srv.lines(5).await;
    assert!(
        lines
            .iter()
            .all(|l| l.contains(&format!(" {} ", was_sni())) && l.contains(" 200 ")),
        "{lines:?}"
    );
    // It really was TLS: the same port refuses plaintext under STRICT.
    assert!(plain_get(srv.inbound(), "/api/posts").await.is_err());
    assert_eq!(requests(&app), 5);
    let refused = srv.lines(6).await;
    assert!(
        refused
            .iter()
            .any(|l| l.contains(" 0 NR filter_chain_not_found ")),
        "{refused:?}"
    );

    // Both sides show their identity.
    let status = srv.h.identity_status();
    assert!(status.loaded, "{status:?}");
    assert_eq!(status.identity.as_deref(), Some(spiffe(NS, "was").as_str()));
    let dump: serde_json::Value =
        serde_json::from_str(&cli.admin("/config_dump").await.body).expect("json");
    assert_eq!(dump["identity"]["identity"], spiffe(NS, "web"), "{dump}");
    assert_eq!(dump["identity"]["loaded"], true);
    assert!(dump["identity"]["not_after"].is_i64(), "{dump}");
    let control: serde_json::Value =
        serde_json::from_str(&cli.admin("/control").await.body).expect("json");
    assert_eq!(
        control["identity"]["identity"],
        spiffe(NS, "web"),
        "{control}"
    );
}

#[tokio::test(start_paused = true)]
async fn h2_upstreams_use_mtls_with_alpn_h2() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let srv = server(
        app.addr,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Strict),
    )
    .await;
    let cli = client(srv.inbound(), Some(ca.identity(&spiffe(NS, "web"))), |c| {
        istio_mutual("was")(c);
        c.protocol = Protocol::Http2;
    })
    .await;
    for _ in 0..3 {
        let r = within(get(cli.outbound(), URL, &[])).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(xfcc(&r).contains(&spiffe(NS, "web")), "{}", r.body);
    }
    let lines = srv.lines(3).await;
    assert!(lines.iter().all(|l| l.contains("HTTP/2")), "{lines:?}");
}

#[tokio::test(start_paused = true)]
async fn auto_mtls_follows_the_endpoint_label() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let srv = server(
        app.addr,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Permissive),
    )
    .await;
    let labelled = client(srv.inbound(), Some(ca.identity(&spiffe(NS, "web"))), |c| {
        c.auto_mtls = true;
        c.endpoints[0]
            .labels
            .insert("security.istio.io/tlsMode".into(), "istio".into());
    })
    .await;
    let r = within(get(labelled.outbound(), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        xfcc(&r).contains(&spiffe(NS, "web")),
        "mTLS expected: {}",
        r.body
    );

    // No label: no sidecar there, plaintext (PERMISSIVE takes it, no peer identity).
    let unlabelled = client(srv.inbound(), Some(ca.identity(&spiffe(NS, "web"))), |c| {
        c.auto_mtls = true;
    })
    .await;
    let r = within(get(unlabelled.outbound(), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(xfcc(&r), "", "plaintext expected: {}", r.body);
}

#[tokio::test(start_paused = true)]
async fn a_server_from_another_ca_is_refused_with_uf_and_nothing_reaches_the_app() {
    let ca = Ca::new("mesh-root");
    let rogue = Ca::new("rogue-root");
    let app = Upstream::start("app").await;
    let srv = server(
        app.addr,
        Some(rogue.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Strict),
    )
    .await;
    let cli = client(
        srv.inbound(),
        Some(ca.identity(&spiffe(NS, "web"))),
        istio_mutual("was"),
    )
    .await;
    let r = within(get(cli.outbound(), URL, &[])).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        r.body.contains("transport failure reason: TLS_error"),
        "{}",
        r.body
    );
    assert_eq!(requests(&app), 0);
    let line = &cli.lines(1).await[0];
    // Istio's default policy retried the connect failure twice: Envoy logs UF,URX.
    assert!(line.contains(" 503 UF,URX "), "{line}");
    assert!(
        line.contains("\"TLS_error: invalid peer certificate"),
        "{line}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_expired_client_certificate_or_none_is_refused() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let srv = server(
        app.addr,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Strict),
    )
    .await;
    let now = time::OffsetDateTime::now_utc();
    let expired = ca.identity_valid(
        &spiffe(NS, "web"),
        now - time::Duration::days(2),
        now - time::Duration::days(1),
    );
    let cli = client(srv.inbound(), Some(expired.clone()), istio_mutual("was")).await;
    assert!(cli.h.identity_status().expired);
    let r = within(get(cli.outbound(), URL, &[])).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(requests(&app), 0);

    // The same with a bare TLS client: expired certificate, then no certificate at all.
    for id in [Some(&expired), None] {
        let tcp = within(TcpStream::connect(srv.inbound()))
            .await
            .expect("connect");
        let tls = tokio_rustls::TlsConnector::from(raw_client(id, &[b"http/1.1"]));
        let name = rustls::pki_types::ServerName::try_from(was_sni()).expect("sni");
        // TLS 1.3: the client finishes first; the server's refusal arrives as an alert.
        if let Ok(mut s) = within(tls.connect(name, tcp)).await {
            let _ = s
                .write_all(b"GET / HTTP/1.1\r\nhost: was-service\r\n\r\n")
                .await;
            assert!(read_some(&mut s, 1).await.is_empty());
        }
    }
    assert_eq!(requests(&app), 0);
}

#[tokio::test(start_paused = true)]
async fn a_server_with_an_identity_not_in_the_cluster_is_refused() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let srv = server(
        app.addr,
        Some(ca.identity(&spiffe(NS, "impostor"))),
        mode(MtlsMode::Strict),
    )
    .await;
    let cli = client(
        srv.inbound(),
        Some(ca.identity(&spiffe(NS, "web"))),
        istio_mutual("was"),
    )
    .await;
    let r = within(get(cli.outbound(), URL, &[])).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("impostor"), "{}", r.body);
    assert_eq!(requests(&app), 0);
    let line = &cli.lines(1).await[0];
    // Istio's default policy retried the connect failure twice: Envoy logs UF,URX.
    assert!(line.contains(" 503 UF,URX "), "{line}");
    assert!(
        line.contains("is not one of the service's identities"),
        "{line}"
    );
}

#[tokio::test(start_paused = true)]
async fn no_certificate_yet_fails_the_connect_with_uf() {
    let app = Upstream::start("app").await;
    let cli = client(app.addr, None, istio_mutual("was")).await;
    let r = within(get(cli.outbound(), URL, &[])).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(requests(&app), 0);
    let line = &cli.lines(1).await[0];
    // Istio's default policy retried the connect failure twice: Envoy logs UF,URX.
    assert!(line.contains(" 503 UF,URX "), "{line}");
    assert!(
        line.contains("no workload certificate loaded yet"),
        "{line}"
    );
    // DISABLE stays plaintext even without a certificate.
    let plain = client(app.addr, None, |c| c.tls = UpstreamTls::Disable).await;
    assert_eq!(within(get(plain.outbound(), URL, &[])).await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn strict_refuses_plaintext_and_permissive_takes_both_on_one_port() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let web = ca.identity(&spiffe(NS, "web"));

    let strict = server(
        app.addr,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Strict),
    )
    .await;
    assert!(plain_get(strict.inbound(), "/").await.is_err());
    // Plaintext that is not HTTP: closed without reaching the app.
    let mut raw = within(TcpStream::connect(strict.inbound()))
        .await
        .expect("connect");
    raw.write_all(b"\x00\x01hello").await.expect("write");
    assert!(read_some(&mut raw, 1).await.is_empty());
    assert_eq!(requests(&app), 0);

    let permissive = server(
        app.addr,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Permissive),
    )
    .await;
    let r = plain_get(permissive.inbound(), "/plain")
        .await
        .expect("plaintext");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(xfcc(&r), "");
    let cli = client(permissive.inbound(), Some(web), istio_mutual("was")).await;
    let r = within(get(cli.outbound(), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(xfcc(&r).contains(&spiffe(NS, "web")), "{}", r.body);

    // A plaintext request cannot forge the caller's identity.
    let mut c = H1Client::connect(permissive.inbound()).await;
    let forged = within(c.send(
        "GET",
        "http://was-service:8080/",
        &[(
            "x-forwarded-client-cert",
            "URI=spiffe://cluster.local/ns/x/sa/admin",
        )],
    ))
    .await;
    assert_eq!(xfcc(&forged), "");

    // A port-level STRICT overrides the workload's PERMISSIVE.
    let mut ports = mode(MtlsMode::Permissive);
    ports.port_mtls.insert(app.addr.port(), MtlsMode::Strict);
    let port_strict = server(app.addr, Some(ca.identity(&spiffe(NS, "was"))), ports).await;
    assert!(plain_get(port_strict.inbound(), "/").await.is_err());
}

/// A TCP app that echoes.
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

/// A client sidecar with an opaque TCP listener to `server_inbound` over ISTIO_MUTUAL.
async fn tcp_client(server_inbound: SocketAddr, id: StaticIdentity) -> (Side, SocketAddr) {
    let log = temp_path("tcp-client");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()))
        .with_identity(id);
    let h = within(skein_proxy::start(cfg)).await.expect("start");
    let mut c = cluster(
        &fqdn("mysql", NS),
        3306,
        None,
        &[&server_inbound.to_string()],
    );
    c.protocol = Protocol::Tcp;
    c.tls = UpstreamTls::IstioMutual;
    c.identities = vec![spiffe(NS, "db")];
    let name = c.name.clone();
    let snap = SnapshotBuilder::new("v1", NS, "web")
        .cluster(c)
        .tcp_listener(&name, "127.0.0.1:0".parse().expect("addr"), &name)
        .build();
    h.apply(snap).expect("snapshot");
    let addr = h.listener_addr(&name).expect("tcp listener");
    (Side { h, log }, addr)
}

async fn echo_roundtrip(addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut s = within(TcpStream::connect(addr)).await.expect("connect");
    s.write_all(payload).await.expect("write");
    read_some(&mut s, payload.len()).await
}

#[tokio::test(start_paused = true)]
async fn opaque_tcp_gets_mtls_and_strict_refuses_plaintext_tcp() {
    let ca = Ca::new("mesh-root");
    let echo = echo_app().await;
    let srv = server(
        echo,
        Some(ca.identity(&spiffe(NS, "db"))),
        mode(MtlsMode::Strict),
    )
    .await;
    let (_cli, listener) = tcp_client(srv.inbound(), ca.identity(&spiffe(NS, "web"))).await;
    let payload: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo_roundtrip(listener, &payload).await, payload);
    // A server-first protocol (the client says nothing) works over mTLS too.
    let mut quiet = within(TcpStream::connect(listener)).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(300)).await;
    quiet.write_all(b"late").await.expect("write");
    assert_eq!(read_some(&mut quiet, 4).await, b"late");
    drop(quiet);
    // Plaintext TCP straight to the inbound: refused.
    assert!(echo_roundtrip(srv.inbound(), b"hello").await.is_empty());
    // PERMISSIVE on one port: plaintext TCP and mTLS TCP both reach the app.
    let permissive = server(
        echo,
        Some(ca.identity(&spiffe(NS, "db"))),
        mode(MtlsMode::Permissive),
    )
    .await;
    assert_eq!(
        echo_roundtrip(permissive.inbound(), b"plain").await,
        b"plain"
    );
    let (_cli2, listener2) =
        tcp_client(permissive.inbound(), ca.identity(&spiffe(NS, "web"))).await;
    assert_eq!(echo_roundtrip(listener2, b"secret").await, b"secret");
    let both = permissive.lines(2).await;
    assert!(
        both.iter()
            .any(|l| l.contains(" 6 6 ") && l.contains(" outbound_.3306_")),
        "{both:?}"
    );
    let lines = srv.lines(3).await;
    assert!(
        lines.iter().any(|l| l.contains(" 50000 50000 ")
            && l.contains(&format!("outbound_.3306_._.{}", fqdn("mysql", NS)))),
        "{lines:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn permissive_passes_the_apps_own_tls_through() {
    let ca = Ca::new("mesh-root");
    let echo = echo_app().await;
    let srv = server(
        echo,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Permissive),
    )
    .await;
    // A ClientHello for the app (not Istio's SNI, no istio ALPN): forwarded byte for byte,
    // so the echo app sends the hello back.
    let tcp = within(TcpStream::connect(srv.inbound()))
        .await
        .expect("connect");
    let tls = tokio_rustls::TlsConnector::from(raw_client(None, &[b"h2"]));
    let name = rustls::pki_types::ServerName::try_from("app.example.com").expect("sni");
    let err = within(tls.connect(name, tcp))
        .await
        .expect_err("echoed hello is no ServerHello");
    assert!(!err.to_string().is_empty());
    let lines = srv.lines(1).await;
    assert!(lines[0].contains(" app.example.com "), "{lines:?}");
}

fn policy(name: &str, action: AuthzAction, rules: Vec<AuthzRule>) -> AuthzPolicy {
    AuthzPolicy {
        name: name.into(),
        namespace: NS.into(),
        action,
        rules,
    }
}

#[tokio::test(start_paused = true)]
async fn authorization_policy_denies_with_rbac_403_and_logs_the_policy() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let inbound = InboundPolicy {
        mtls: MtlsMode::Permissive,
        port_mtls: Default::default(),
        jwt: vec![],
        authz: vec![
            policy(
                "allow-web",
                AuthzAction::Allow,
                vec![AuthzRule {
                    from: vec![AuthzSource {
                        principals: vec![format!("cluster.local/ns/{NS}/sa/web")],
                        ..Default::default()
                    }],
                    to: vec![AuthzOperation {
                        paths: vec!["/api/*".into(), "/admin*".into()],
                        ..Default::default()
                    }],
                    when: vec![],
                }],
            ),
            policy(
                "deny-admin",
                AuthzAction::Deny,
                vec![AuthzRule {
                    to: vec![AuthzOperation {
                        paths: vec!["/admin*".into()],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            ),
        ],
    };
    let srv = server(app.addr, Some(ca.identity(&spiffe(NS, "was"))), inbound).await;
    let cli = client(
        srv.inbound(),
        Some(ca.identity(&spiffe(NS, "web"))),
        istio_mutual("was"),
    )
    .await;

    let ok = within(get(cli.outbound(), URL, &[])).await;
    assert_eq!(ok.status, 200, "{}", ok.body);

    let admin = within(get(cli.outbound(), "http://was-service:8080/admin/x", &[])).await;
    assert_eq!(admin.status, 403);
    assert_eq!(admin.body, "RBAC: access denied");
    assert_eq!(
        header(&admin.headers, "content-type").as_deref(),
        Some("text/plain")
    );

    let other = within(get(
        cli.outbound(),
        "http://was-service:8080/other?q=1",
        &[],
    ))
    .await;
    assert_eq!(
        (other.status, other.body.as_str()),
        (403, "RBAC: access denied")
    );

    // Plaintext has no principal: the ALLOW policy does not match.
    let plain = plain_get(srv.inbound(), "/api/posts")
        .await
        .expect("answer");
    assert_eq!(plain.status, 403);
    assert_eq!(requests(&app), 1);

    let lines = srv.lines(4).await;
    let deny = lines
        .iter()
        .find(|l| l.contains("/admin/x"))
        .expect("admin line");
    assert!(
        deny.contains(
            " 403 - rbac_access_denied_matched_policy[ns[blog]-policy[deny-admin]-rule[0]] "
        ),
        "{deny}"
    );
    let none = lines
        .iter()
        .find(|l| l.contains("/other"))
        .expect("other line");
    assert!(
        none.contains(" 403 - rbac_access_denied_matched_policy[none] "),
        "{none}"
    );
    // Denials are counted like any response.
    let metrics = srv.admin("/stats/prometheus").await.body;
    // Series are per peer (principal, mutual_tls or none): sum them.
    let denied: u64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("istio_requests_total")
                && l.contains("reporter=\"destination\"")
                && l.contains("response_code=\"403\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(denied, 3, "{metrics}");
    assert!(
        metrics.contains("source_principal=\"spiffe://cluster.local/ns/blog/sa/web\"")
            && metrics.contains("connection_security_policy=\"mutual_tls\""),
        "the mTLS peer labels the inbound series: {metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn authorization_policy_closes_denied_tcp_connections() {
    let ca = Ca::new("mesh-root");
    let echo = echo_app().await;
    let inbound = InboundPolicy {
        mtls: MtlsMode::Permissive,
        port_mtls: Default::default(),
        jwt: vec![],
        // Deny callers without a mesh identity; a DENY with an HTTP-only field applies to TCP
        // too (Istio drops the field), so it also shuts out `web`.
        authz: vec![
            policy(
                "require-mtls",
                AuthzAction::Deny,
                vec![AuthzRule {
                    from: vec![AuthzSource {
                        not_principals: vec!["*".into()],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            ),
            policy(
                "no-get-for-web",
                AuthzAction::Deny,
                vec![AuthzRule {
                    from: vec![AuthzSource {
                        principals: vec![format!("cluster.local/ns/{NS}/sa/web")],
                        ..Default::default()
                    }],
                    to: vec![AuthzOperation {
                        methods: vec!["GET".into()],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            ),
        ],
    };
    let srv = server(echo, Some(ca.identity(&spiffe(NS, "db"))), inbound).await;
    assert!(echo_roundtrip(srv.inbound(), b"plain").await.is_empty());
    let (_web, web_listener) = tcp_client(srv.inbound(), ca.identity(&spiffe(NS, "web"))).await;
    assert!(echo_roundtrip(web_listener, b"web").await.is_empty());
    let (_api, api_listener) = tcp_client(srv.inbound(), ca.identity(&spiffe(NS, "api"))).await;
    assert_eq!(echo_roundtrip(api_listener, b"api").await, b"api");

    let lines = srv.lines(3).await;
    assert!(
        lines.iter().any(|l| l.contains(
            " 0 - rbac_access_denied_matched_policy[ns[blog]-policy[require-mtls]-rule[0]] "
        )),
        "{lines:?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(
            " 0 - rbac_access_denied_matched_policy[ns[blog]-policy[no-get-for-web]-rule[0]] "
        )),
        "{lines:?}"
    );
}

/// Sequential requests over one keep-alive connection, with and without mTLS; prints the
/// added latency of the TLS hop and the time of a fresh mTLS connection (handshake included).
/// Wall clock: it measures real latency (and asserts only that every request succeeds).
#[tokio::test]
async fn measure_mtls_overhead() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let srv = server(
        app.addr,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Permissive),
    )
    .await;
    let web = ca.identity(&spiffe(NS, "web"));
    let tls = client(srv.inbound(), Some(web.clone()), istio_mutual("was")).await;
    let plain = client(srv.inbound(), Some(web), |c| c.tls = UpstreamTls::Disable).await;
    let mut per = Vec::new();
    for side in [&plain, &tls] {
        let mut c = H1Client::connect(side.outbound()).await;
        for _ in 0..20 {
            within(c.send("GET", URL, &[])).await;
        }
        let n = 300;
        let t0 = Instant::now();
        for _ in 0..n {
            assert_eq!(within(c.send("GET", URL, &[])).await.status, 200);
        }
        per.push(t0.elapsed() / n);
    }
    // A fresh mTLS connection per request (maxRequestsPerConnection 1).
    let fresh = client(srv.inbound(), Some(ca.identity(&spiffe(NS, "web"))), |c| {
        istio_mutual("was")(c);
        c.connection_pool.max_requests_per_connection = 1;
    })
    .await;
    let mut c = H1Client::connect(fresh.outbound()).await;
    let n = 100;
    let t0 = Instant::now();
    for _ in 0..n {
        assert_eq!(within(c.send("GET", URL, &[])).await.status, 200);
    }
    let handshake = t0.elapsed() / n;
    println!(
        "two-sidecar request, keep-alive: plaintext {:?}, mTLS {:?}; new mTLS connection per request: {:?}",
        per[0], per[1], handshake
    );
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect()
}

/// Sum of a counter's samples in a Prometheus text page.
fn counter_sum(page: &str, name: &str) -> u64 {
    page.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Several MiB each way at once through the pair (adaptive copy buffers, full TLS records):
/// both streams arrive intact, each side's EOF reaches the other (half-close), and the access
/// logs and the Istio TCP byte counters of both sidecars are exact.
#[tokio::test]
async fn opaque_tcp_bulk_both_ways_over_mtls_is_intact_and_counted_exactly() {
    const UP: usize = 6 * 1024 * 1024 + 123;
    const DOWN: usize = 5 * 1024 * 1024 + 7;
    let ca = Ca::new("mesh-root");
    // The app reads until the client's EOF while it sends its own stream, then closes.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = l.local_addr().expect("addr");
    let (got_tx, got_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.expect("accept");
        let (mut r, mut w) = s.split();
        let reply = pattern(DOWN, 9);
        let send = async {
            w.write_all(&reply).await.expect("app write");
            w.shutdown().await.expect("app shutdown");
        };
        let mut got = Vec::new();
        let ((), read) = tokio::join!(send, r.read_to_end(&mut got));
        read.expect("app read");
        let _ = got_tx.send(got);
    });
    let srv = server(
        app,
        Some(ca.identity(&spiffe(NS, "db"))),
        mode(MtlsMode::Strict),
    )
    .await;
    let (cli, listener) = tcp_client(srv.inbound(), ca.identity(&spiffe(NS, "web"))).await;
    let up = pattern(UP, 3);
    let mut s = within(TcpStream::connect(listener)).await.expect("connect");
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(&up).await.expect("client write");
        w.shutdown().await.expect("client shutdown");
    };
    let mut down = Vec::new();
    let ((), read) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(send, r.read_to_end(&mut down))
    })
    .await
    .expect("transfer finished");
    read.expect("client read");
    assert!(
        down == pattern(DOWN, 9),
        "reply differs ({} bytes)",
        down.len()
    );
    let got = within(got_rx).await.expect("app result");
    assert!(got == up, "upload differs ({} bytes)", got.len());
    drop(s);

    let counts = format!(" {UP} {DOWN} ");
    for side in [&srv, &cli] {
        let lines = side.lines(1).await;
        assert!(lines.iter().any(|l| l.contains(&counts)), "{lines:?}");
        let mut page = String::new();
        for _ in 0..100 {
            page = side.admin("/stats/prometheus").await.body;
            if counter_sum(&page, "istio_tcp_received_bytes_total") == UP as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(
            counter_sum(&page, "istio_tcp_received_bytes_total"),
            UP as u64
        );
        assert_eq!(
            counter_sum(&page, "istio_tcp_sent_bytes_total"),
            DOWN as u64
        );
    }
}

// --- peer metadata exchange ---------------------------------------------------------------

const PEER_HEADERS: [&str; 2] = ["x-envoy-peer-metadata", "x-envoy-peer-metadata-id"];

fn labelled(app: &str, version: &str) -> impl FnOnce(&mut Node) {
    let (app, version) = (app.to_string(), version.to_string());
    move |n: &mut Node| {
        n.labels.insert("app".into(), app);
        n.labels.insert("version".into(), version);
        n.cluster_id = "Kubernetes".into();
        n.ip = Some("127.0.0.1".parse().expect("ip"));
    }
}

/// The `istio_requests_total` series of `stats` that has every label in `want`.
fn series<'a>(stats: &'a str, want: &[&str]) -> Option<&'a str> {
    stats
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .find(|l| want.iter().all(|w| l.contains(w)))
}

#[tokio::test(start_paused = true)]
async fn peer_metadata_labels_both_reporters_and_never_reaches_the_app_or_the_client() {
    let ca = Ca::new("mesh-root");
    let app = Upstream::start("app").await;
    let srv = server_with(
        app.addr,
        Some(ca.identity(&spiffe(NS, "was"))),
        mode(MtlsMode::Strict),
        labelled("was", "v2"),
    )
    .await;
    let log = temp_path("client");
    let mut cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()));
    cfg.identity = Some(ca.identity(&spiffe(NS, "web")));
    let h = within(skein_proxy::start(cfg)).await.expect("client start");
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&srv.inbound().to_string()])
        .with_last_cluster(istio_mutual("was"))
        .build();
    labelled("web", "v1")(&mut snap.node);
    h.apply(snap).expect("client snapshot");
    let cli = Side { h, log };

    let mut c = H1Client::connect(cli.outbound()).await;
    for _ in 0..3 {
        let r = within(c.send("GET", URL, &[])).await;
        assert_eq!(
            (r.status, r.upstream().as_str()),
            (200, "app"),
            "{}",
            r.body
        );
        for name in PEER_HEADERS {
            assert!(r.seen_header(name).is_empty(), "the app saw {name}");
            assert!(!r.headers.contains_key(name), "the client got {name}");
        }
    }
    let stats = srv.admin("/stats/prometheus").await.body;
    let dst = series(
        &stats,
        &["reporter=\"destination\"", "response_code=\"200\""],
    )
    .unwrap_or_else(|| panic!("no destination series in:\n{stats}"));
    for label in [
        "source_workload=\"web\"",
        &format!("source_workload_namespace=\"{NS}\""),
        "source_app=\"web\"",
        "source_version=\"v1\"",
        "source_canonical_service=\"web\"",
        "source_canonical_revision=\"v1\"",
        "source_cluster=\"Kubernetes\"",
        &format!("source_principal=\"{}\"", spiffe(NS, "web")),
        "destination_workload=\"was\"",
        "destination_app=\"was\"",
        "destination_version=\"v2\"",
        "destination_canonical_revision=\"v2\"",
        "destination_cluster=\"Kubernetes\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(dst.contains(label), "{label} missing in {dst}");
    }
    assert!(dst.ends_with(" 3"), "{dst}");
    let stats = cli.admin("/stats/prometheus").await.body;
    let src = series(&stats, &["reporter=\"source\"", "response_code=\"200\""])
        .unwrap_or_else(|| panic!("no source series in:\n{stats}"));
    for label in [
        "source_workload=\"web\"",
        "source_app=\"web\"",
        "source_cluster=\"Kubernetes\"",
        "destination_workload=\"was\"",
        &format!("destination_workload_namespace=\"{NS}\""),
        "destination_app=\"was\"",
        "destination_version=\"v2\"",
        "destination_canonical_service=\"was\"",
        "destination_canonical_revision=\"v2\"",
        "destination_cluster=\"Kubernetes\"",
        "connection_security_policy=\"unknown\"",
        &format!("source_principal=\"{}\"", spiffe(NS, "web")),
        &format!("destination_principal=\"{}\"", spiffe(NS, "was")),
        &format!("destination_service_namespace=\"{NS}\""),
    ] {
        assert!(src.contains(label), "{label} missing in {src}");
    }
    assert!(src.ends_with(" 3"), "{src}");
    // The destination reporter names its own principal.
    assert!(
        dst.contains(&format!("destination_principal=\"{}\"", spiffe(NS, "was"))),
        "{dst}"
    );
}

#[tokio::test(start_paused = true)]
async fn peer_metadata_is_not_sent_to_plaintext_or_passthrough_destinations() {
    let plain = Upstream::start("plain").await;
    let outside = Upstream::start("outside").await;
    let log = temp_path("client");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()));
    let h = within(skein_proxy::start(cfg)).await.expect("client start");
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&plain.addr.to_string()])
        .build();
    labelled("web", "v1")(&mut snap.node);
    h.apply(snap).expect("client snapshot");
    let r = within(get(outbound(&h), URL, &[])).await;
    assert_eq!(
        (r.status, r.upstream().as_str()),
        (200, "plain"),
        "{}",
        r.body
    );
    let url = format!("http://{}/x", outside.addr);
    let p = within(get(outbound(&h), &url, &[])).await;
    assert_eq!(
        (p.status, p.upstream().as_str()),
        (200, "outside"),
        "{}",
        p.body
    );
    for name in PEER_HEADERS {
        assert!(
            r.seen_header(name).is_empty(),
            "a plaintext upstream got {name}"
        );
        assert!(
            p.seen_header(name).is_empty(),
            "PassthroughCluster got {name}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn hostile_peer_metadata_is_ignored_and_stripped() {
    let app = Upstream::start("app").await;
    let srv = server_with(
        app.addr,
        None,
        mode(MtlsMode::Permissive),
        labelled("was", "v2"),
    )
    .await;
    // Struct{"k": struct_value{"k": ...}} nested 100 deep, then base64.
    let mut deep: Vec<u8> = Vec::new();
    for _ in 0..100 {
        let mut value = vec![0x2A];
        push_len(&mut value, &deep);
        let mut entry = vec![0x0A, 0x01, b'k', 0x12];
        push_len(&mut entry, &value);
        deep = vec![0x0A];
        push_len(&mut deep, &entry);
    }
    let deep = base64_encode(&deep);
    let huge = "QUFB".repeat(2500);
    let cases = ["%%%garbage%%%", huge.as_str(), deep.as_str(), "CgA="];
    let mut c = H1Client::connect(srv.inbound()).await;
    for bad in cases {
        let headers = [
            ("x-envoy-peer-metadata", bad),
            (
                "x-envoy-peer-metadata-id",
                "sidecar~1.2.3.4~evil.ns~ns.svc.cluster.local",
            ),
        ];
        let r = within(c.send("GET", URL, &headers)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        for name in PEER_HEADERS {
            assert!(r.seen_header(name).is_empty(), "the app saw {name}");
        }
        // The caller sent the pair, so the server answers with its own.
        let id = r
            .headers
            .get("x-envoy-peer-metadata-id")
            .expect("id echoed");
        assert!(
            id.to_str()
                .expect("ascii")
                .starts_with("sidecar~127.0.0.1~was-0.")
        );
        assert!(r.headers.contains_key("x-envoy-peer-metadata"));
    }
    // Without the pair, no answer pair.
    let r = within(c.send("GET", URL, &[])).await;
    assert!(!r.headers.contains_key("x-envoy-peer-metadata-id"));
    let stats = srv.admin("/stats/prometheus").await.body;
    // Every request counted, none under a workload the caller made up.
    let mut total = 0;
    for l in stats
        .lines()
        .filter(|l| l.starts_with("istio_requests_total{reporter=\"destination\""))
    {
        assert!(l.contains("source_workload=\"unknown\""), "{l}");
        assert!(l.contains("connection_security_policy=\"none\""), "{l}");
        total += l
            .rsplit(' ')
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
    }
    assert_eq!(total, 5, "{stats}");
}

fn push_len(out: &mut Vec<u8>, bytes: &[u8]) {
    let mut n = bytes.len();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out.extend_from_slice(bytes);
}

fn base64_encode(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn the_tcp_exchange_labels_both_sides_of_an_opaque_mtls_stream() {
    let ca = Ca::new("mesh-root");
    let echo = echo_app().await;
    let srv = server_with(
        echo,
        Some(ca.identity(&spiffe(NS, "db"))),
        mode(MtlsMode::Strict),
        labelled("mysql", "v8"),
    )
    .await;
    let log = temp_path("tcp-client");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()))
        .with_identity(ca.identity(&spiffe(NS, "web")));
    let h = within(skein_proxy::start(cfg)).await.expect("start");
    let mut c = cluster(
        &fqdn("mysql", NS),
        3306,
        None,
        &[&srv.inbound().to_string()],
    );
    c.protocol = Protocol::Tcp;
    c.tls = UpstreamTls::IstioMutual;
    c.identities = vec![spiffe(NS, "db")];
    let name = c.name.clone();
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .cluster(c)
        .tcp_listener(&name, "127.0.0.1:0".parse().expect("addr"), &name)
        .build();
    labelled("web", "v1")(&mut snap.node);
    h.apply(snap).expect("snapshot");
    let listener = h.listener_addr(&name).expect("tcp listener");
    let cli = Side { h, log };

    // The app's bytes are intact: the frames never reach it or the client.
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo_roundtrip(listener, &payload).await, payload);

    let opened = |page: &str, reporter: &str| -> String {
        page.lines()
            .find(|l| {
                l.starts_with("istio_tcp_connections_opened_total{")
                    && l.contains(&format!("reporter=\"{reporter}\""))
            })
            .unwrap_or_else(|| panic!("no {reporter} TCP series in:\n{page}"))
            .to_string()
    };
    let dst = opened(&srv.admin("/stats/prometheus").await.body, "destination");
    for label in [
        "source_workload=\"web\"",
        "source_app=\"web\"",
        "source_canonical_revision=\"v1\"",
        "source_cluster=\"Kubernetes\"",
        &format!("source_principal=\"{}\"", spiffe(NS, "web")),
        "destination_app=\"mysql\"",
        "connection_security_policy=\"mutual_tls\"",
    ] {
        assert!(dst.contains(label), "{label} missing in {dst}");
    }
    let src = opened(&cli.admin("/stats/prometheus").await.body, "source");
    for label in [
        "source_workload=\"web\"",
        "destination_workload=\"was\"",
        "destination_app=\"mysql\"",
        "destination_version=\"v8\"",
        "destination_canonical_service=\"mysql\"",
        "destination_cluster=\"Kubernetes\"",
        &format!("source_principal=\"{}\"", spiffe(NS, "web")),
        &format!("destination_principal=\"{}\"", spiffe(NS, "db")),
        "request_protocol=\"tcp\"",
        "response_flags=\"-\"",
    ] {
        assert!(src.contains(label), "{label} missing in {src}");
    }
}
