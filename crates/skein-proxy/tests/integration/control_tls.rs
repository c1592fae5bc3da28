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
