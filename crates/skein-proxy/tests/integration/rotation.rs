//! Workload certificates from an in-test control plane: CSR over the stream, short-lived
//! certificates renewed while traffic flows, refusals retried with backoff.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use skein_proxy::test_util::pki::{Ca, NS, spiffe};
use skein_proxy::test_util::*;
use skein_proxy::{AccessLogSink, ProxyConfig, ProxyHandle, SourceConfig};
use skein_snapshot::build::SnapshotBuilder;
use skein_snapshot::stream::{ControlMessage, ProxyMessage, read_frame, write_frame};
use skein_snapshot::*;
use tokio::net::{TcpListener, TcpStream};

const STEP: Duration = Duration::from_secs(5);
const URL: &str = "http://was-service:8080/api/posts";

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .expect("finished within the step timeout")
}

/// What the fake control plane does with certificate requests.
#[derive(Clone)]
struct Signer {
    ca: Arc<Ca>,
    identity: String,
    lifetime: Duration,
    /// Requests answered with CertificateError first (counted down).
    refuse_first: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    issued: Arc<AtomicUsize>,
}

impl Signer {
    fn new(ca: Arc<Ca>, lifetime: Duration, refuse_first: usize) -> Signer {
        Signer {
            ca,
            identity: spiffe(NS, "web"),
            lifetime,
            refuse_first: Arc::new(AtomicUsize::new(refuse_first)),
            requests: Arc::new(AtomicUsize::new(0)),
            issued: Arc::new(AtomicUsize::new(0)),
        }
    }

    fn answer(&self, csr_pem: &str) -> ControlMessage {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let refuse = self
            .refuse_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            return ControlMessage::CertificateError {
                message: "CA is warming up".into(),
            };
        }
        let (cert_chain_pem, not_after) = self.ca.sign_csr(csr_pem, &self.identity, self.lifetime);
        self.issued.fetch_add(1, Ordering::SeqCst);
        ControlMessage::Certificate {
            cert_chain_pem,
            root_cert_pem: self.ca.pem.clone(),
            identity: self.identity.clone(),
            not_after,
        }
    }
}

/// A control plane that serves `snap` and signs certificate requests, one proxy at a time.
async fn control_plane(snap: Snapshot, signer: Signer) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind cp");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((conn, _)) = l.accept().await {
            let snap = snap.clone();
            let signer = signer.clone();
            tokio::spawn(async move {
                let _ = serve(conn, snap, signer).await;
            });
        }
    });
    addr
}

async fn serve(
    conn: TcpStream,
    snap: Snapshot,
    signer: Signer,
) -> Result<(), skein_snapshot::stream::StreamError> {
    let (mut rd, mut wr) = conn.into_split();
    let hello: ProxyMessage = read_frame(&mut rd).await?;
    assert!(matches!(hello, ProxyMessage::Hello { .. }), "{hello:?}");
    write_frame(
        &mut wr,
        &ControlMessage::Snapshot {
            snapshot: Box::new(snap),
        },
    )
    .await?;
    loop {
        match read_frame::<_, ProxyMessage>(&mut rd).await? {
            ProxyMessage::CertificateRequest { csr_pem } => {
                write_frame(&mut wr, &signer.answer(&csr_pem)).await?;
            }
            ProxyMessage::Ack { .. } | ProxyMessage::Nack { .. } | ProxyMessage::Hello { .. } => {}
        }
    }
}

/// The server side: a sidecar with a long-lived certificate, STRICT, in front of `app`.
async fn server(ca: &Ca, app: SocketAddr) -> ProxyHandle {
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_inbound("127.0.0.1:0".parse().expect("addr"), app)
        .with_identity(ca.identity(&spiffe(NS, "was")));
    let h = within(skein_proxy::start(cfg)).await.expect("server");
    let mut snap = SnapshotBuilder::new("v1", NS, "was").build();
    snap.inbound.mtls = MtlsMode::Strict;
    h.apply(snap).expect("server snapshot");
    h
}

/// The client side: a sidecar whose config and certificate come from the control plane.
async fn client(cp: SocketAddr) -> ProxyHandle {
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::Off)
        .with_source(SourceConfig::Control {
            addr: cp,
            node: "web-0".into(),
            namespace: NS.into(),
        });
    within(skein_proxy::start(cfg)).await.expect("client")
}

fn client_snapshot(server_inbound: SocketAddr) -> Snapshot {
    SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&server_inbound.to_string()])
        .with_last_cluster(|c| {
            c.tls = UpstreamTls::IstioMutual;
            c.identities = vec![spiffe(NS, "was")];
        })
        .build()
}

/// Waits (bounded) until `ok` holds.
async fn wait_for(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + STEP;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn hash_of(r: &Resp) -> String {
    let x = r.seen_header("x-forwarded-client-cert").join(",");
    x.split(';')
        .find_map(|kv| kv.strip_prefix("Hash="))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_load_without_failed_requests() {
    let ca = Arc::new(Ca::new("mesh-root"));
    let app = Upstream::start("app").await;
    let srv = server(&ca, app.addr).await;
    let srv_inbound = srv.addrs.inbound.expect("inbound");
    let signer = Signer::new(Arc::clone(&ca), Duration::from_secs(3), 0);
    let cp = control_plane(client_snapshot(srv_inbound), signer.clone()).await;
    let cli = client(cp).await;
    wait_for("a snapshot and a certificate", || {
        cli.version() == "v1" && cli.identity_status().loaded
    })
    .await;
    let first = cli.identity_status();
    assert_eq!(first.identity.as_deref(), Some(spiffe(NS, "web").as_str()));
    assert!(first.next_renewal.is_some(), "{first:?}");

    let out = outbound(&cli);
    let hashes = Arc::new(Mutex::new(BTreeSet::new()));
    let failures = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let end = Instant::now() + Duration::from_secs(8);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (hashes, failures, total) = (hashes.clone(), failures.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = H1Client::connect(out).await;
            while Instant::now() < end {
                total.fetch_add(1, Ordering::SeqCst);
                match tokio::time::timeout(STEP, c.try_send("GET", URL, &[])).await {
                    Ok(Ok(r)) if r.status == 200 => {
                        hashes
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(hash_of(&r));
                    }
                    other => {
                        failures.fetch_add(1, Ordering::SeqCst);
                        eprintln!("failed request: {other:?}");
                        c = H1Client::connect(out).await;
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for t in tasks {
        let left = end.saturating_duration_since(Instant::now()) + STEP;
        tokio::time::timeout(left, t)
            .await
            .expect("client task ends after the run")
            .expect("client task");
    }
    let seen = hashes.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let status = cli.identity_status();
    println!(
        "{} requests, {} failed, {} certificates issued, {} seen by the server",
        total.load(Ordering::SeqCst),
        failures.load(Ordering::SeqCst),
        signer.issued.load(Ordering::SeqCst),
        seen.len()
    );
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    assert!(total.load(Ordering::SeqCst) > 100);
    assert!(
        !seen.contains(""),
        "every request carried a client certificate"
    );
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(signer.issued.load(Ordering::SeqCst) >= 3);
    assert!(!status.expired, "{status:?}");
    assert!(status.installs >= 3, "{status:?}");
    assert_eq!(status.last_error, None);
}

#[tokio::test(start_paused = true)]
async fn a_refused_request_is_retried_with_backoff_and_the_old_certificate_stays() {
    let ca = Arc::new(Ca::new("mesh-root"));
    let app = Upstream::start("app").await;
    let srv = server(&ca, app.addr).await;
    let srv_inbound = srv.addrs.inbound.expect("inbound");
    let signer = Signer::new(Arc::clone(&ca), Duration::from_secs(3), 1);
    let cp = control_plane(client_snapshot(srv_inbound), signer.clone()).await;
    let cli = client(cp).await;

    // The first answer is a refusal: no certificate yet, the error shows.
    wait_for("the refusal", || {
        cli.identity_status()
            .last_error
            .is_some_and(|e| e.contains("CA is warming up"))
    })
    .await;
    assert!(!cli.identity_status().loaded);
    let t0 = Instant::now();
    wait_for("a retry that succeeds", || cli.identity_status().loaded).await;
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(signer.requests.load(Ordering::SeqCst), 2);
    let status = cli.control_status();
    assert_eq!(status.identity.requests, 2, "{status:?}");
    assert_eq!(status.identity.last_error, None, "{status:?}");
    wait_for("the snapshot", || cli.version() == "v1").await;
    let r = within(get(outbound(&cli), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let installed = cli.identity_status().cert_sha256;
    assert_eq!(Some(hash_of(&r)), installed);

    // The renewal (due after ~2 s) is refused: the installed certificate stays.
    signer.refuse_first.store(1_000, Ordering::SeqCst);
    wait_for("a refused renewal", || {
        signer.requests.load(Ordering::SeqCst) >= 3
    })
    .await;
    wait_for("the refusal to show", || {
        cli.identity_status().last_error.is_some()
    })
    .await;
    assert_eq!(cli.identity_status().cert_sha256, installed);
    // The CA recovers: the next retry renews.
    signer.refuse_first.store(0, Ordering::SeqCst);
    wait_for("a renewed certificate", || {
        cli.identity_status().cert_sha256 != installed
    })
    .await;
    let status = cli.identity_status();
    assert_eq!(status.last_error, None, "{status:?}");
    assert!(status.requests >= 4, "{status:?}");

    // A static identity installed through the handle replaces it at once.
    let manual = cli
        .install_identity(&ca.identity(&spiffe(NS, "web")))
        .expect("static install");
    assert_eq!(manual.source, Some(skein_proxy::IdentitySource::Static));
    let r = within(get(outbound(&cli), URL, &[])).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(Some(hash_of(&r)), manual.cert_sha256);
}

#[tokio::test(start_paused = true)]
async fn a_certificate_for_another_key_or_identity_is_not_installed() {
    let ca = Arc::new(Ca::new("mesh-root"));
    // A control plane that answers with a certificate for a key of its own.
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cp = l.local_addr().expect("addr");
    let stolen = ca.identity(&spiffe(NS, "web"));
    let other_ca = Ca::new("other");
    let ca2 = Arc::clone(&ca);
    tokio::spawn(async move {
        let Ok((conn, _)) = l.accept().await else {
            return;
        };
        let (mut rd, mut wr) = conn.into_split();
        let _hello: Result<ProxyMessage, _> = read_frame(&mut rd).await;
        let mut n = 0;
        while let Ok(m) = read_frame::<_, ProxyMessage>(&mut rd).await {
            let ProxyMessage::CertificateRequest { csr_pem } = m else {
                continue;
            };
            n += 1;
            let msg = match n {
                // Not our key.
                1 => ControlMessage::Certificate {
                    cert_chain_pem: stolen.cert_chain_pem.clone(),
                    root_cert_pem: ca2.pem.clone(),
                    identity: spiffe(NS, "web"),
                    not_after: i64::MAX,
                },
                // Our key, but another CA than the bundle it comes with.
                2 => ControlMessage::Certificate {
                    cert_chain_pem: other_ca
                        .sign_csr(&csr_pem, &spiffe(NS, "web"), Duration::from_secs(60))
                        .0,
                    root_cert_pem: ca2.pem.clone(),
                    identity: spiffe(NS, "web"),
                    not_after: i64::MAX,
                },
                // Announced identity differs from the certificate's.
                3 => {
                    let (c, na) =
                        ca2.sign_csr(&csr_pem, &spiffe(NS, "web"), Duration::from_secs(60));
                    ControlMessage::Certificate {
                        cert_chain_pem: c,
                        root_cert_pem: ca2.pem.clone(),
                        identity: spiffe(NS, "admin"),
                        not_after: na,
                    }
                }
                _ => {
                    let (c, na) =
                        ca2.sign_csr(&csr_pem, &spiffe(NS, "web"), Duration::from_secs(60));
                    ControlMessage::Certificate {
                        cert_chain_pem: c,
                        root_cert_pem: ca2.pem.clone(),
                        identity: spiffe(NS, "web"),
                        not_after: na,
                    }
                }
            };
            if write_frame(&mut wr, &msg).await.is_err() {
                return;
            }
        }
    });
    let cli = client(cp).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut errors = BTreeSet::new();
    while !cli.identity_status().loaded {
        if let Some(e) = cli.identity_status().last_error {
            errors.insert(e);
        }
        assert!(
            Instant::now() < deadline,
            "no certificate installed; errors: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let status = cli.identity_status();
    assert_eq!(status.requests, 4, "{status:?}");
    let all = errors.into_iter().collect::<Vec<_>>().join(" | ");
    assert!(all.contains("does not match the private key"), "{all}");
    assert!(all.contains("does not chain to the trust bundle"), "{all}");
    assert!(all.contains("control plane announced"), "{all}");
}
