//! The control stream over TLS with the mesh root pinned: a control plane whose certificate
//! does not chain to that root is refused (it never sees a hello, let alone the bootstrap
//! token), and the genuine one gets the token and serves snapshots.

use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use skein_proxy::test_util::*;
use skein_proxy::{ControlTls, ProxyConfig, ProxyHandle, SourceConfig};
use skein_snapshot::build::SnapshotBuilder;
use skein_snapshot::stream::{ControlMessage, ProxyMessage, read_frame, write_frame};
use tokio::net::TcpListener;
use tokio::time::Instant;

const NS: &str = "blog-system";
const NODE: &str = "web-0";
const TOKEN: &str = "0123456789abcdef-bootstrap-token-of-web-0";
const STEP: Duration = Duration::from_secs(5);

/// A fresh directory for the root and token files.
fn scratch_dir() -> std::path::PathBuf {
    let dir = temp_path("control-tls");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A CA: its root PEM and its issuer.
fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let root = p.self_signed(&key).unwrap().pem();
    (root, Issuer::new(p, key))
}

/// A TLS acceptor serving `istiod.istio-system.svc` with a certificate from `issuer`.
fn acceptor(issuer: &Issuer<'static, KeyPair>) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::DnsName(
        ControlTls::SERVER_NAME.try_into().unwrap(),
    )];
    let cert = p.signed_by(&key, issuer).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from_pem_slice(cert.pem().as_bytes()).unwrap()],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A proxy whose control stream pins `root_pem` and carries the bootstrap token file.
async fn start_proxy(
    dir: &std::path::Path,
    root_pem: &str,
    cp: std::net::SocketAddr,
) -> ProxyHandle {
    let (roots, token) = (dir.join("root-cert.pem"), dir.join("token"));
    std::fs::write(&roots, root_pem).unwrap();
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let mut cfg =
        ProxyConfig::sidecar("127.0.0.1:0".parse().unwrap()).with_source(SourceConfig::Control {
            addr: cp,
            node: NODE.into(),
            namespace: NS.into(),
        });
    cfg.control_tls = Some(ControlTls {
        roots,
        server_name: ControlTls::SERVER_NAME.into(),
        bootstrap_token: Some(token),
    });
    tokio::time::timeout(STEP, skein_proxy::start(cfg))
        .await
        .unwrap()
        .unwrap()
}

async fn control_status(h: &ProxyHandle) -> serde_json::Value {
    let admin = h.addrs.admin.unwrap();
    let r = tokio::time::timeout(STEP, get(admin, &format!("http://{admin}/control"), &[]))
        .await
        .unwrap();
    serde_json::from_str(&r.body).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_control_plane_not_signed_by_the_pinned_root_is_refused() {
    let dir = scratch_dir();
    let (mesh_root, _) = ca("mesh root");
    let (_, impostor) = ca("impostor");
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = start_proxy(&dir, &mesh_root, fake.local_addr().unwrap()).await;

    // Every attempt fails verification: the impostor never reads a hello (nor the token).
    let accept = acceptor(&impostor);
    for _ in 0..3 {
        let (tcp, _) = tokio::time::timeout(STEP, fake.accept())
            .await
            .unwrap()
            .unwrap();
        tcp.set_nodelay(true).unwrap();
        assert!(
            tokio::time::timeout(STEP, accept.accept(tcp))
                .await
                .unwrap()
                .is_err(),
            "the proxy finished a handshake with an unpinned certificate"
        );
    }
    let st = control_status(&h).await;
    assert_eq!(st["connected"], false, "{st}");
    let err = st["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("failed TLS verification"), "{st}");
    assert!(h.version().is_empty(), "no config from the impostor");
}

#[tokio::test(start_paused = true)]
async fn the_genuine_control_plane_gets_the_token_and_serves_snapshots() {
    let dir = scratch_dir();
    let (mesh_root, issuer) = ca("mesh root");
    let cp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = start_proxy(&dir, &mesh_root, cp.local_addr().unwrap()).await;
    let (tcp, _) = tokio::time::timeout(STEP, cp.accept())
        .await
        .unwrap()
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    let mut s = tokio::time::timeout(STEP, acceptor(&issuer).accept(tcp))
        .await
        .unwrap()
        .unwrap();
    let hello: ProxyMessage = read_frame(&mut s).await.unwrap();
    match hello {
        ProxyMessage::Hello {
            node,
            bootstrap_token,
            ..
        } => {
            assert_eq!(node, NODE);
            assert_eq!(
                bootstrap_token.as_deref(),
                Some(TOKEN),
                "trimmed, as written"
            );
        }
        other => panic!("{other:?}"),
    }
    let snap = SnapshotBuilder::new("v1", NS, "web").build();
    write_frame(
        &mut s,
        &ControlMessage::Snapshot {
            snapshot: Box::new(snap),
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + STEP;
    loop {
        match tokio::time::timeout(STEP, read_frame::<_, ProxyMessage>(&mut s)).await {
            Ok(Ok(ProxyMessage::Ack { version })) => {
                assert_eq!(version, "v1");
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline);
    }
    assert_eq!(h.version(), "v1");
}

/// Accepts one connection on `cp` with a certificate from `issuer`: the TLS stream, or the
/// handshake's error when the proxy refuses it.
async fn accept_one(
    cp: &TcpListener,
    issuer: &Issuer<'static, KeyPair>,
) -> std::io::Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>> {
    let (tcp, _) = tokio::time::timeout(STEP, cp.accept())
        .await
        .unwrap()
        .unwrap();
    tcp.set_nodelay(true).unwrap();
    tokio::time::timeout(STEP, acceptor(issuer).accept(tcp))
        .await
        .unwrap()
}

/// Reads frames until the proxy's certificate request; returns its CSR.
async fn next_csr(s: &mut tokio_rustls::server::TlsStream<tokio::net::TcpStream>) -> String {
    loop {
        match tokio::time::timeout(STEP, read_frame::<_, ProxyMessage>(s))
            .await
            .unwrap()
            .unwrap()
        {
            ProxyMessage::CertificateRequest { csr_pem } => return csr_pem,
            _ => continue,
        }
    }
}

/// Signs `csr_pem` for `spiffe` with `issuer`, valid for an hour.
fn sign(csr_pem: &str, spiffe: &str, issuer: &Issuer<'static, KeyPair>) -> (String, i64) {
    let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).unwrap();
    let now = time::OffsetDateTime::now_utc();
    csr.params = CertificateParams::new(Vec::<String>::new()).unwrap();
    csr.params.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap())];
    csr.params.not_before = now - time::Duration::minutes(1);
    csr.params.not_after = now + time::Duration::hours(1);
    let not_after = csr.params.not_after.unix_timestamp();
    (csr.signed_by(issuer).unwrap().pem(), not_after)
}

#[tokio::test(start_paused = true)]
async fn roots_pushed_over_the_verified_stream_are_pinned_for_the_next_control_plane() {
    let dir = scratch_dir();
    let (root_a, issuer_a) = ca("root A");
    let (root_b, issuer_b) = ca("root B");
    let (root_c, issuer_c) = ca("root C");
    let id = format!("spiffe://cluster.local/ns/{NS}/sa/web");
    let cp = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let h = start_proxy(&dir, &root_a, cp.local_addr().unwrap()).await;

    // Before any bundle, a control plane from B is refused.
    assert!(
        accept_one(&cp, &issuer_b).await.is_err(),
        "B is not pinned yet"
    );

    // The genuine control plane (root A) first sends a certificate the proxy cannot use
    // (another identity than announced) with C in its bundle: not installed, C not pinned.
    let mut s = accept_one(&cp, &issuer_a).await.unwrap();
    let csr = next_csr(&mut s).await;
    let (chain, not_after) = sign(&csr, &id, &issuer_c);
    write_frame(
        &mut s,
        &ControlMessage::Certificate {
            cert_chain_pem: chain,
            root_cert_pem: format!("{root_a}{root_c}"),
            identity: format!("spiffe://cluster.local/ns/{NS}/sa/other"),
            not_after,
        },
    )
    .await
    .unwrap();
    // The retry (after the backoff) is answered with the bundle {A, B}.
    let csr = next_csr(&mut s).await;
    let (chain, not_after) = sign(&csr, &id, &issuer_a);
    write_frame(
        &mut s,
        &ControlMessage::Certificate {
            cert_chain_pem: chain,
            root_cert_pem: format!("{root_a}{root_b}"),
            identity: id.clone(),
            not_after,
        },
    )
    .await
    .unwrap();
    let deadline = Instant::now() + STEP;
    while h.identity_status().installs == 0 {
        assert!(
            Instant::now() < deadline,
            "the certificate was not installed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // istiod restarts serving a certificate from B: the proxy reconnects to it.
    drop(s);
    let mut s = accept_one(&cp, &issuer_b)
        .await
        .expect("a control plane from a pushed root is trusted");
    let hello: ProxyMessage = tokio::time::timeout(STEP, read_frame(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(hello, ProxyMessage::Hello { .. }), "{hello:?}");

    // One from C (only in the refused certificate's bundle) is still refused, as is the
    // pinned file left as it was.
    drop(s);
    assert!(
        accept_one(&cp, &issuer_c).await.is_err(),
        "C came with a certificate that was not installed"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("root-cert.pem")).unwrap(),
        root_a
    );
}
