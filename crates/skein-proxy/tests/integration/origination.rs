//! DestinationRule `SIMPLE` and `MUTUAL`: the sidecar originates TLS to an upstream that
//! serves the app's own certificate (not the mesh identity), and never falls back to
//! plaintext when the TLS cannot be set up or verified.
//!
//! Topology: app --HTTP_PROXY--> sidecar --TLS--> a TLS upstream on 127.0.0.1 that reports
//! whether the proxy presented a client certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use skein_proxy::test_util::pki::NS;
use skein_proxy::test_util::*;
use skein_proxy::{AccessLogSink, ProxyConfig, ProxyHandle};
use skein_snapshot::build::{SnapshotBuilder, fqdn};
use skein_snapshot::*;
use tokio::net::TcpListener;

const STEP: Duration = Duration::from_secs(5);
const URL: &str = "http://payments:443/charge";

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .expect("finished within the step timeout")
}

/// A CA that issues DNS-name certificates.
struct Pki {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        Pki {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// (chain PEM, key PEM) for `names`.
    fn leaf(&self, names: &[&str]) -> (String, String) {
        let p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// A TLS upstream: counts handshakes and requests; answers `client-cert: present|none`.
struct TlsUpstream {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

async fn tls_upstream(server: &Pki, names: &[&str], client_ca: Option<&Pki>) -> TlsUpstream {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (chain, key) = server.leaf(names);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let b = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                Arc::clone(&provider),
            )
            .build()
            .unwrap();
            b.with_client_cert_verifier(v)
        }
        None => b.with_no_client_auth(),
    };
    let cfg = Arc::new(b.with_single_cert(chain, key).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = TlsUpstream {
        addr: listener.local_addr().unwrap(),
        handshakes: Arc::default(),
        requests: Arc::default(),
    };
    let (handshakes, requests) = (Arc::clone(&up.handshakes), Arc::clone(&up.requests));
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let _ = tcp.set_nodelay(true);
            let (acceptor, handshakes, requests) = (
                acceptor.clone(),
                Arc::clone(&handshakes),
                Arc::clone(&requests),
            );
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                handshakes.fetch_add(1, Ordering::SeqCst);
                let client_cert = if tls.get_ref().1.peer_certificates().is_some() {
                    "present"
                } else {
                    "none"
                };
                let svc = hyper::service::service_fn(move |_req| {
                    requests.fetch_add(1, Ordering::SeqCst);
                    let mut r = http::Response::new(Full::new(Bytes::from("secure")));
                    r.headers_mut()
                        .insert("client-cert", http::HeaderValue::from_static(client_cert));
                    async move { Ok::<_, std::convert::Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    up
}

fn payments_fqdn() -> String {
    fqdn("payments", NS)
}

/// A sidecar whose `payments:443` goes to `addr` with `tls`.
async fn sidecar_to(addr: SocketAddr, tls: UpstreamTls) -> (ProxyHandle, PathBuf) {
    let log = temp_path("origination");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().unwrap())
        .with_access_log(AccessLogSink::File(log.clone()));
    let h = within(skein_proxy::start(cfg)).await.unwrap();
    let snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("payments", 443, &[&addr.to_string()])
        .with_last_cluster(|c| c.tls = tls)
        .build();
    h.apply(snap).unwrap();
    (h, log)
}

fn simple(origin: OriginTls) -> UpstreamTls {
    UpstreamTls::Simple { sni: None, origin }
}

fn ca_file(pki: &Pki) -> String {
    let p = temp_path("ca");
    std::fs::write(&p, &pki.pem).unwrap();
    p.display().to_string()
}

/// 503 with UF in the access log, and the reason.
async fn assert_uf(h: &ProxyHandle, log: &PathBuf, reason: &str) {
    let r = within(get(outbound(h), URL, &[])).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let line = &log_lines(log, 1).await[0];
    assert!(line.contains(" 503 UF"), "{line}");
    assert!(line.contains(reason), "{reason:?} not in {line}");
}

#[tokio::test(start_paused = true)]
async fn simple_with_the_ca_file_verifies_the_upstream_for_the_destination_host() {
    let ca = Pki::new("payments-ca");
    let up = tls_upstream(&ca, &[&payments_fqdn()], None).await;
    let (h, _) = sidecar_to(
        up.addr,
        simple(OriginTls {
            ca_certificates: Some(ca_file(&ca)),
            ..Default::default()
        }),
    )
    .await;
    let r = within(get(outbound(&h), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "secure");
    assert_eq!(header(&r.headers, "client-cert").as_deref(), Some("none"));
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn simple_with_the_wrong_ca_is_503_uf_and_never_cleartext() {
    let ca = Pki::new("payments-ca");
    let other = Pki::new("someone-else");
    let up = tls_upstream(&ca, &[&payments_fqdn()], None).await;
    let (h, log) = sidecar_to(
        up.addr,
        simple(OriginTls {
            ca_pem: Some(other.pem.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_uf(&h, &log, "TLS_error: invalid peer certificate").await;
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
    assert_eq!(up.handshakes.load(Ordering::SeqCst), 0);

    // A plaintext server behind a SIMPLE rule never gets the request in cleartext.
    let plain = Upstream::start("plain").await;
    let (h, log) = sidecar_to(
        plain.addr,
        simple(OriginTls {
            ca_pem: Some(ca.pem.clone()),
            ..Default::default()
        }),
    )
    .await;
    assert_uf(&h, &log, "TLS_error").await;
    assert_eq!(plain.requests.load(Ordering::SeqCst), 0);

    // Settings that cannot be set up (a missing file, the control plane's error) are UF too.
    let (h, log) = sidecar_to(
        up.addr,
        simple(OriginTls {
            ca_certificates: Some("/nonexistent/skein-ca.pem".into()),
            ..Default::default()
        }),
    )
    .await;
    assert_uf(
        &h,
        &log,
        "cannot read caCertificates file /nonexistent/skein-ca.pem",
    )
    .await;
    let (h, log) = sidecar_to(
        up.addr,
        simple(OriginTls {
            error: Some("Secret blog/x not found".into()),
            ..Default::default()
        }),
    )
    .await;
    assert_uf(&h, &log, "Secret blog/x not found").await;
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn mutual_presents_the_client_certificate_from_pem() {
    let server_ca = Pki::new("payments-ca");
    let client_ca = Pki::new("client-ca");
    let up = tls_upstream(&server_ca, &["pay.example.com"], Some(&client_ca)).await;
    let (chain, key) = client_ca.leaf(&["web.example.com"]);
    let mutual = |cert: Option<String>, key: Option<String>| UpstreamTls::Mutual {
        sni: Some("pay.example.com".into()),
        credential_name: Some("payments-client".into()),
        origin: OriginTls {
            ca_pem: Some(server_ca.pem.clone()),
            cert_chain_pem: cert,
            key_pem: key,
            ..Default::default()
        },
    };
    let (h, _) = sidecar_to(up.addr, mutual(Some(chain.clone()), Some(key.clone()))).await;
    let r = within(get(outbound(&h), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        header(&r.headers, "client-cert").as_deref(),
        Some("present")
    );

    // The key never shows in /config_dump.
    let a = h.addrs.admin.unwrap();
    let dump = within(get(a, &format!("http://{a}/config_dump"), &[])).await;
    assert!(dump.body.contains("[redacted]"), "{}", dump.body);
    assert!(!dump.body.contains("PRIVATE KEY"), "{}", dump.body);

    // Without the client certificate, MUTUAL is not set up: UF, not a connection without it.
    let (h, log) = sidecar_to(up.addr, mutual(None, None)).await;
    assert_uf(&h, &log, "MUTUAL needs a client certificate").await;
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn insecure_skip_verify_accepts_any_certificate() {
    let ca = Pki::new("payments-ca");
    let up = tls_upstream(&ca, &["elsewhere.example.com"], None).await;
    let (h, _) = sidecar_to(
        up.addr,
        simple(OriginTls {
            insecure_skip_verify: true,
            ..Default::default()
        }),
    )
    .await;
    let r = within(get(outbound(&h), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(up.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn subject_alt_names_are_verified_when_given() {
    let ca = Pki::new("payments-ca");
    let up = tls_upstream(&ca, &["pay.example.com"], None).await;
    let with_sans = |sans: &[&str]| {
        simple(OriginTls {
            ca_pem: Some(ca.pem.clone()),
            subject_alt_names: sans.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })
    };
    // The certificate is not valid for the destination host: refused without SANs...
    let (h, log) = sidecar_to(up.addr, with_sans(&[])).await;
    assert_uf(&h, &log, "TLS_error: invalid peer certificate").await;
    // ... and with SANs it does not carry ...
    let (h, log) = sidecar_to(up.addr, with_sans(&["other.example.com"])).await;
    assert_uf(&h, &log, "TLS_error: invalid peer certificate").await;
    assert_eq!(up.requests.load(Ordering::SeqCst), 0);
    // ... accepted when one of the SANs matches.
    let (h, _) = sidecar_to(
        up.addr,
        with_sans(&["other.example.com", "pay.example.com"]),
    )
    .await;
    let r = within(get(outbound(&h), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
}
