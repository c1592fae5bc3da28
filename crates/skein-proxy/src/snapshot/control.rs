//! The control-plane config source: the proxy's end of `skein_snapshot::stream`.
//!
//! Connect, say [`ProxyMessage::Hello`], then apply every [`ControlMessage::Snapshot`] and
//! answer it with an `Ack` or a `Nack`. A [`ControlMessage::Clusters`] (an endpoint change) is
//! applied the same way to a copy of the snapshot in force with its clusters replaced, only if
//! that snapshot is the version it names, and whole or not at all. When the stream breaks (or never comes up) the proxy
//! keeps serving the config it has and reconnects with jittered exponential backoff; the
//! reconnect Hello carries the version in force so the control plane knows what we run.
//! Nothing the peer sends can panic the proxy: bad frames end the stream or are NACKed.
//!
//! The same stream carries the workload certificate (unless the proxy was given a static
//! identity): right after Hello, when no certificate is loaded or a renewal is due, the proxy
//! sends a [`ProxyMessage::CertificateRequest`] with a CSR for a key it just generated, and
//! installs the [`ControlMessage::Certificate`] that answers it. Renewal is due at 80% of the
//! life the certificate had when it arrived; a [`ControlMessage::CertificateError`] (or an
//! unusable certificate) keeps the old certificate and retries with backoff.
//!
//! With [`ControlTls`] (what the `skein` CLI always gives) the stream is TLS: the control
//! plane's certificate must chain to the mesh root read from a file at start and kept (pinned)
//! and name `istiod.istio-system.svc`, so a process that binds the control port cannot feed
//! the proxy roots or snapshots; a control plane that fails verification is treated as a dead
//! one (the last config stays, reconnects back off). The proxy proves which pod it is with its
//! current certificate as the TLS client certificate, or, while it has no valid one, with the
//! pod's bootstrap token in the hello (sent only over the verified stream).
//!
//! The pin follows the mesh's trust bundle: the roots of each certificate installed from the
//! verified stream are added to it (never replacing it, and never from anything unverified),
//! and the next connection trusts them too. So during a root change, when istiod restarts
//! with a serving certificate from the new root, proxies that received the bundle with both
//! roots reconnect to it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
pub use skein_snapshot::dump::{ControlNack, ControlStatus};
use skein_snapshot::stream::{self, ControlMessage, ProxyMessage, StreamError};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::config::ControlTls;
use crate::identity::rotate::CertState;
use crate::snapshot::source::{ConfigSource, ControlState, SnapshotSink, SourceFuture};

/// First reconnect delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Bound on connecting and on each write, so a wedged peer cannot stall the source forever.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest NACK error text sent (and kept in the status): well under the control plane's
/// 64 KiB cap on proxy frames, so a long error cannot close the stream in a reconnect loop.
const NACK_TEXT_MAX: usize = 4096;

/// `error` cut to at most [`NACK_TEXT_MAX`] bytes on a character boundary, marked when cut.
fn truncate_nack(mut error: String) -> String {
    const MARK: &str = " ... (truncated)";
    if error.len() <= NACK_TEXT_MAX {
        return error;
    }
    let mut end = NACK_TEXT_MAX - MARK.len();
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    error.truncate(end);
    error.push_str(MARK);
    error
}

/// Why a control-plane session ended.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The TCP connection could not be made.
    #[error("cannot connect to the control plane at {addr}: {error}")]
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// Connecting or writing took longer than the I/O timeout (10 s).
    #[error("control plane at {addr}: {what} timed out after {timeout:?}")]
    Timeout {
        addr: SocketAddr,
        what: &'static str,
        timeout: Duration,
    },
    /// Reading or writing a frame failed, or the peer closed the stream.
    #[error("control plane at {addr}: {error}")]
    Stream {
        addr: SocketAddr,
        error: StreamError,
    },
    /// The control plane sent [`ControlMessage::Error`] (it closes the stream after it).
    #[error("control plane at {addr} refused this proxy: {message}")]
    Refused { addr: SocketAddr, message: String },
    /// The pinned mesh root could not be read (the control plane may not have written it yet).
    #[error("cannot load the mesh root {} to verify the control plane: {reason}", path.display())]
    Roots {
        path: std::path::PathBuf,
        reason: String,
    },
    /// The bootstrap token file could not be read.
    #[error("cannot read the bootstrap token {}: {error}", path.display())]
    Token {
        path: std::path::PathBuf,
        error: std::io::Error,
    },
    /// The TLS handshake failed: above all, a control plane whose certificate does not chain to
    /// the pinned root or does not name the expected server.
    #[error(
        "control plane at {addr} failed TLS verification (expected a certificate for \
         {server_name} from the mesh root): {error}"
    )]
    Tls {
        addr: SocketAddr,
        server_name: String,
        error: std::io::Error,
    },
}

/// A control stream: plain TCP, or TLS over it.
trait Conn: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Conn for T {}
type ConnRead = ReadHalf<Box<dyn Conn>>;
type ConnWrite = WriteHalf<Box<dyn Conn>>;

/// Marks the stream down however the session ends, including when the proxy shuts down and
/// drops the source's future mid-read.
struct ConnectedGuard<'a>(&'a ControlState);

impl Drop for ConnectedGuard<'_> {
    fn drop(&mut self) {
        self.0.update(|s| s.connected = false);
    }
}

/// Sleeps until `t`, or forever when there is nothing scheduled.
async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Aborts the frame reader when a session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What was last logged, so an outage gives one warn line rather than one per attempt.
#[derive(Debug, PartialEq, Eq)]
enum Logged {
    Nothing,
    Up,
    Down,
}

/// The version of a snapshot frame that did not parse as a [`ControlMessage`].
fn unparsable_snapshot_version(frame: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(rename = "type")]
        kind: String,
        snapshot: PeekSnapshot,
    }
    #[derive(Deserialize)]
    struct PeekSnapshot {
        #[serde(default)]
        version: String,
    }
    let p: Peek = serde_json::from_slice(frame).ok()?;
    (p.kind == "snapshot").then_some(p.snapshot.version)
}

/// The snapshot `current` with `clusters` in place of the ones of the same names, as version
/// `version`: a cluster update ([`ControlMessage::Clusters`]) applies only on top of the
/// version it was made for, and only whole (a cluster it names that the snapshot does not
/// have refuses all of it).
fn with_clusters(
    current: &skein_snapshot::Snapshot,
    version: &str,
    base_version: &str,
    clusters: Vec<skein_snapshot::Cluster>,
) -> Result<skein_snapshot::Snapshot, String> {
    if current.version != base_version {
        return Err(format!(
            "cluster update {version} is for snapshot {base_version:?}, but {:?} is in force",
            current.version
        ));
    }
    let mut next = current.clone();
    next.version = version.to_string();
    let at: std::collections::HashMap<&str, usize> = current
        .clusters
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    for c in clusters {
        let Some(&i) = at.get(c.name.as_str()) else {
            return Err(format!(
                "cluster update {version} replaces cluster {:?}, which snapshot {base_version:?} does not have",
                c.name
            ));
        };
        next.clusters[i] = c;
    }
    Ok(next)
}

/// Streams snapshots from the skein control plane (see the module docs).
#[derive(Debug, Clone)]
pub struct ControlSource {
    /// The control plane's stream address.
    pub addr: SocketAddr,
    /// Proxy id sent in Hello: the pod name for a sidecar, the gateway's name for a gateway.
    pub node: String,
    /// The pod's namespace, sent in Hello.
    pub namespace: String,
    /// TLS and authentication of the stream; None: plaintext (tests, embedding).
    pub tls: Option<ControlTls>,
}

/// Per-source bookkeeping across sessions.
struct Session<'a> {
    src: &'a ControlSource,
    sink: &'a dyn SnapshotSink,
    status: &'a ControlState,
    backoff: Backoff,
    logged: Logged,
    last_refusal: Option<String>,
    ever_connected: bool,
    cert: Option<CertState>,
    /// The pinned roots: the `--control-root` file (read on first use), then every root
    /// pushed over the verified stream. Only ever grows.
    pinned: Vec<rustls::pki_types::CertificateDer<'static>>,
    /// The TLS client config for [`Self::pinned`], built on first use and after it grows.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Session<'_> {
    fn timeout(&self, what: &'static str) -> ControlError {
        ControlError::Timeout {
            addr: self.src.addr,
            what,
            timeout: IO_TIMEOUT,
        }
    }

    fn stream_err(&self, source: StreamError) -> ControlError {
        ControlError::Stream {
            addr: self.src.addr,
            error: source,
        }
    }

    async fn send<W: AsyncWrite + Unpin>(
        &self,
        conn: &mut W,
        msg: &ProxyMessage,
    ) -> Result<(), ControlError> {
        match tokio::time::timeout(IO_TIMEOUT, stream::write_frame(conn, msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.stream_err(e)),
            Err(_) => Err(self.timeout("write")),
        }
    }

    /// One connection: returns why it ended (it only ends on an error).
    async fn run_once(&mut self) -> ControlError {
        let (rd, mut conn) = match self.hello().await {
            Ok(halves) => halves,
            Err(e) => return e,
        };
        let _guard = ConnectedGuard(self.status);
        if let Some(msg) = self
            .cert
            .as_mut()
            .filter(|c| c.wanted_on_connect())
            .and_then(CertState::request)
            && let Err(e) = self.send(&mut conn, &msg).await
        {
            return e;
        }
        // Frames are read by their own task: a read cut short by the renewal timer would lose
        // its bytes, a channel receive loses nothing.
        let (tx, mut frames) = mpsc::channel(4);
        let _reader = AbortOnDrop(tokio::spawn(async move {
            let mut rd = rd;
            loop {
                let r = stream::read_frame_bytes(&mut rd).await;
                let end = r.is_err();
                if tx.send(r).await.is_err() || end {
                    return;
                }
            }
        }));
        let mut answered = false;
        loop {
            let wake = self.cert.as_ref().and_then(CertState::next_at);
            let frame = tokio::select! {
                f = frames.recv() => match f {
                    Some(Ok(f)) => f,
                    Some(Err(e)) => return self.stream_err(e),
                    None => return self.stream_err(StreamError::Closed),
                },
                _ = sleep_until_opt(wake) => {
                    let msg = self.cert.as_mut().and_then(CertState::request);
                    if let Some(msg) = msg
                        && let Err(e) = self.send(&mut conn, &msg).await
                    {
                        return e;
                    }
                    continue;
                }
            };
            let reply = match self.on_frame(&frame) {
                Ok(Some(reply)) => reply,
                Ok(None) => continue,
                Err(e) => return e,
            };
            if let Err(e) = self.send(&mut conn, &reply).await {
                return e;
            }
            if !answered {
                answered = true;
                self.on_first_answer();
            }
        }
    }

    /// The TLS client config: the pinned roots (the file read on first use, then kept, plus
    /// the roots pushed since) and the current certificate as the client certificate.
    fn tls_config(&mut self, tls: &ControlTls) -> Result<Arc<rustls::ClientConfig>, ControlError> {
        if let Some(c) = &self.tls {
            return Ok(Arc::clone(c));
        }
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let bad = |reason: String| ControlError::Roots {
            path: tls.roots.clone(),
            reason,
        };
        if self.pinned.is_empty() {
            let pem = std::fs::read(&tls.roots).map_err(|e| bad(e.to_string()))?;
            let pinned: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            self.pinned = pinned;
        }
        let mut roots = rustls::RootCertStore::empty();
        for c in &self.pinned {
            roots.add(c.clone()).map_err(|e| bad(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in it".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| bad(e.to_string()))?
            .with_root_certificates(roots);
        let config = match &self.cert {
            Some(c) => builder.with_client_cert_resolver(Arc::new(
                crate::identity::CurrentClientCert(Arc::clone(c.store())),
            )),
            None => builder.with_no_client_auth(),
        };
        let config = Arc::new(config);
        self.tls = Some(Arc::clone(&config));
        Ok(config)
    }

    /// Adds the roots of a certificate installed from this (verified) stream to the pin; the
    /// next connection trusts them. Only on a TLS stream whose pin is loaded: a plaintext
    /// stream has no pin to add to, and nothing it sends may become one.
    fn pin_pushed_roots(&mut self, root_cert_pem: &str) {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        if self.src.tls.is_none() || self.pinned.is_empty() {
            return;
        }
        let mut added = 0;
        for c in CertificateDer::pem_slice_iter(root_cert_pem.as_bytes()) {
            // The bundle parsed when the certificate was installed; skip what does not.
            let Ok(c) = c else { continue };
            if !self.pinned.contains(&c) {
                self.pinned.push(c);
                added += 1;
            }
        }
        if added > 0 {
            tracing::info!(
                added,
                pinned = self.pinned.len(),
                "control plane roots: trusting the mesh roots pushed over the verified stream"
            );
            self.tls = None;
        }
    }

    /// Connects (TLS when configured) and says Hello (with the version in force, and the
    /// bootstrap token while no valid certificate authenticates us); the stream is up.
    async fn hello(&mut self) -> Result<(ConnRead, ConnWrite), ControlError> {
        let addr = self.src.addr;
        let tls = match &self.src.tls {
            Some(t) => Some((t.clone(), self.tls_config(t)?)),
            None => None,
        };
        let tcp = match tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(c)) => c,
            Ok(Err(error)) => return Err(ControlError::Connect { addr, error }),
            Err(_) => return Err(self.timeout("connect")),
        };
        let _ = tcp.set_nodelay(true);
        let mut token = None;
        let conn: Box<dyn Conn> = match tls {
            None => Box::new(tcp),
            Some((t, config)) => {
                let name = rustls::pki_types::ServerName::try_from(t.server_name.clone()).map_err(
                    |e| ControlError::Tls {
                        addr,
                        server_name: t.server_name.clone(),
                        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                    },
                )?;
                let connect = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
                let conn = match tokio::time::timeout(IO_TIMEOUT, connect).await {
                    Ok(Ok(c)) => c,
                    Ok(Err(source)) => {
                        return Err(ControlError::Tls {
                            addr,
                            server_name: t.server_name,
                            error: source,
                        });
                    }
                    Err(_) => return Err(self.timeout("TLS handshake")),
                };
                let certified = self
                    .cert
                    .as_ref()
                    .is_some_and(CertState::has_valid_certificate);
                if let (Some(path), false) = (&t.bootstrap_token, certified) {
                    let text =
                        std::fs::read_to_string(path).map_err(|source| ControlError::Token {
                            path: path.clone(),
                            error: source,
                        })?;
                    token = Some(text.trim().to_string());
                }
                Box::new(conn)
            }
        };
        let (rd, mut conn) = tokio::io::split(conn);
        let current = self.sink.version();
        let hello = ProxyMessage::Hello {
            node: self.src.node.clone(),
            namespace: self.src.namespace.clone(),
            current_version: (!current.is_empty()).then_some(current),
            bootstrap_token: token,
        };
        self.send(&mut conn, &hello).await?;
        let reconnect = self.ever_connected;
        self.ever_connected = true;
        self.status.update(|s| {
            s.connected = true;
            if reconnect {
                s.reconnects += 1;
            }
        });
        Ok((rd, conn))
    }

    /// One frame from the control plane: the answer to send (an ACK or a NACK for a
    /// snapshot), nothing (certificates, unknown messages), or the end of the session.
    fn on_frame(&mut self, frame: &[u8]) -> Result<Option<ProxyMessage>, ControlError> {
        let addr = self.src.addr;
        let (version, result) = match serde_json::from_slice::<ControlMessage>(frame) {
            Ok(ControlMessage::Snapshot { snapshot }) => {
                let version = snapshot.version.clone();
                (
                    version,
                    self.sink.apply(*snapshot).map_err(|e| e.to_string()),
                )
            }
            Ok(ControlMessage::Clusters {
                version,
                base_version,
                clusters,
            }) => {
                let result =
                    with_clusters(&self.sink.snapshot(), &version, &base_version, clusters)
                        .and_then(|snap| self.sink.apply(snap).map_err(|e| e.to_string()));
                (version, result)
            }
            Ok(ControlMessage::Error { message }) => {
                return Err(ControlError::Refused { addr, message });
            }
            Ok(ControlMessage::Certificate {
                cert_chain_pem,
                root_cert_pem,
                identity,
                not_after,
            }) => {
                let installed = match self.cert.as_mut() {
                    Some(c) => {
                        c.on_certificate(&cert_chain_pem, &root_cert_pem, &identity, not_after)
                    }
                    None => {
                        tracing::debug!("ignoring a certificate: this proxy has a static identity");
                        false
                    }
                };
                if installed {
                    self.pin_pushed_roots(&root_cert_pem);
                }
                return Ok(None);
            }
            Ok(ControlMessage::CertificateError { message }) => {
                if let Some(c) = self.cert.as_mut() {
                    c.on_error(&message);
                }
                return Ok(None);
            }
            Err(e) => match unparsable_snapshot_version(frame) {
                // A snapshot we cannot read (e.g. a newer schema): refuse it by version so
                // the control plane sees why.
                Some(version) => (version, Err(format!("snapshot is not valid JSON: {e}"))),
                // Some other message we do not know: ignore it, the stream stays usable.
                None => {
                    tracing::debug!(%addr, error = %e, "ignoring an unknown control message");
                    return Ok(None);
                }
            },
        };
        Ok(Some(self.verdict(version, result)))
    }

    /// The ACK or NACK of a snapshot, recorded in the status.
    fn verdict(&self, version: String, result: Result<(), String>) -> ProxyMessage {
        match result {
            Ok(()) => {
                tracing::info!(%version, "control plane snapshot applied");
                self.status
                    .update(|s| s.last_ack_version = Some(version.clone()));
                ProxyMessage::Ack { version }
            }
            Err(error) => {
                tracing::warn!(%version, %error, "control plane snapshot rejected; keeping the previous config");
                let error = truncate_nack(error);
                self.status.update(|s| {
                    s.last_nack = Some(ControlNack {
                        version: version.clone(),
                        error: error.clone(),
                    })
                });
                ProxyMessage::Nack { version, error }
            }
        }
    }

    /// The Hello exchange worked: the next outage starts over at the short delay.
    fn on_first_answer(&mut self) {
        self.backoff.reset();
        self.last_refusal = None;
        if self.logged != Logged::Up {
            let addr = self.src.addr;
            tracing::info!(%addr, node = %self.src.node, "connected to the control plane");
            self.logged = Logged::Up;
        }
        self.status.update(|s| s.last_error = None);
    }

    fn log_down(&mut self, err: &ControlError) {
        let version = self.sink.version();
        let refusal = match err {
            ControlError::Refused { message, .. } => Some(message.clone()),
            _ => None,
        };
        // A refusal is worth a line each time its text changes; other failures only on the
        // way down.
        let new_refusal = refusal.is_some() && refusal != self.last_refusal;
        if self.logged != Logged::Down || new_refusal {
            tracing::warn!(error = %err, config_version = %version, "control plane stream down; keeping the last config and reconnecting");
        } else {
            tracing::debug!(error = %err, "control plane still unreachable");
        }
        self.logged = Logged::Down;
        if refusal.is_some() {
            self.last_refusal = refusal;
        }
    }

    async fn run(mut self) {
        self.status.update(|s| {
            s.address = Some(self.src.addr);
            s.node = self.src.node.clone();
            s.namespace = self.src.namespace.clone();
        });
        loop {
            let err = self.run_once().await;
            self.status.update(|s| {
                s.connected = false;
                s.last_error = Some(err.to_string());
            });
            self.log_down(&err);
            tokio::time::sleep(self.backoff.next_delay()).await;
        }
    }
}

impl ConfigSource for ControlSource {
    fn run(self: Box<Self>, sink: Arc<dyn SnapshotSink>) -> SourceFuture {
        Box::pin(async move {
            let status = sink.control();
            // A static identity is not replaced by the control plane's.
            let cert = sink
                .identity()
                .map(|store| CertState::new(store, self.node.clone()));
            let session = Session {
                src: &self,
                sink: &*sink,
                status,
                backoff: Backoff::between(BACKOFF_START, BACKOFF_CAP),
                logged: Logged::Nothing,
                last_refusal: None,
                ever_connected: false,
                cert,
                pinned: Vec::new(),
                tls: None,
            };
            session.run().await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn raw_frames_refuse_oversize_and_truncation() {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        stream::write_frame(
            &mut a,
            &ControlMessage::Error {
                message: "x".into(),
            },
        )
        .await
        .expect("write");
        let f = stream::read_frame_bytes(&mut b).await.expect("frame");
        assert!(matches!(
            serde_json::from_slice(&f),
            Ok(ControlMessage::Error { .. })
        ));
        a.write_all(&u32::MAX.to_be_bytes()).await.expect("write");
        assert!(matches!(
            stream::read_frame_bytes(&mut b).await,
            Err(StreamError::TooLarge(_))
        ));
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&10u32.to_be_bytes()).await.expect("write");
        a.write_all(b"{}").await.expect("write");
        drop(a);
        assert!(matches!(
            stream::read_frame_bytes(&mut b).await,
            Err(StreamError::Closed)
        ));
    }

    #[test]
    fn nack_text_is_cut_well_under_the_frame_cap() {
        assert_eq!(truncate_nack("short".into()), "short");
        let long = "é".repeat(40_000);
        let cut = truncate_nack(long);
        assert!(cut.len() <= NACK_TEXT_MAX, "{}", cut.len());
        assert!(cut.ends_with("(truncated)"));
        let frame = serde_json::to_vec(&ProxyMessage::Nack {
            version: "v".repeat(253),
            error: cut,
        })
        .expect("json");
        assert!(frame.len() < 8 * 1024, "{}", frame.len());
    }

    #[test]
    fn unparsable_snapshots_are_found_by_version() {
        let bad = br#"{"type":"snapshot","snapshot":{"version":"v9","clusters":[{"name":1}]}}"#;
        assert!(serde_json::from_slice::<ControlMessage>(bad).is_err());
        assert_eq!(unparsable_snapshot_version(bad).as_deref(), Some("v9"));
        assert_eq!(unparsable_snapshot_version(br#"{"type":"ping"}"#), None);
        assert_eq!(unparsable_snapshot_version(b"\xff"), None);
    }
}
