//! The control plane process: watches the store and the registry, compiles snapshots, pushes
//! them to connected proxies over the stream of `skein_snapshot::stream`, and records what each
//! proxy acknowledged in a status file that `skein status` reads.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skein_api::Manifests;
use skein_snapshot::Snapshot;
use skein_snapshot::stream::{ControlMessage, ProxyMessage, StreamError, read_frame, write_frame};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::compile::Compiler;
use crate::registry::Registry;
use crate::store::Store;

/// How the control plane is started.
#[derive(Debug, Clone)]
pub struct ControlOptions {
    /// The config store.
    pub store: Store,
    /// The registry (the runtime's status file).
    pub registry: PathBuf,
    /// Where proxies connect (loopback).
    pub listen: SocketAddr,
    /// Where the control plane writes its own status.
    pub status_file: PathBuf,
    /// How often files are checked for changes.
    pub poll: Duration,
    /// Where the generated root CA is kept.
    pub ca_dir: PathBuf,
    /// A user's own CA in Istio's plug-in layout (`ca-cert.pem`, `ca-key.pem`,
    /// `root-cert.pem`, `cert-chain.pem`), instead of the generated root.
    pub plugin_ca: Option<PathBuf>,
    /// Lifetime of workload certificates (Istio's default: 24 h).
    pub cert_ttl: Duration,
}

/// Errors that stop the control plane. `Bind` prints its I/O cause; `Ca` returns the CA's
/// error from `source()` instead of printing it (the CLI prints the chain), so each cause is
/// said once.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {error} (is another control plane running?)")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The certificate authority could not be loaded or created.
    #[error("certificate authority")]
    Ca(#[from] crate::ca::CaError),
}

/// What the status file says of one proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// Connected now.
    pub connected: bool,
    /// Version of the last snapshot sent.
    pub sent: Option<String>,
    /// Version of the last snapshot the proxy applied.
    pub acked: Option<String>,
    /// The last snapshot the proxy refused, and why.
    pub nack: Option<Nack>,
}

/// A refused snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nack {
    /// Snapshot version.
    pub version: String,
    /// The proxy's reason.
    pub error: String,
}

/// A refused config change.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RejectionStatus {
    /// When it was refused (RFC 3339).
    pub at: String,
    /// Every error, each starting with `file:line`.
    pub errors: Vec<String>,
}

/// The control plane's status file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ControlStatus {
    /// Process id.
    pub pid: u32,
    /// Where proxies connect.
    pub address: String,
    /// Version of the config in force.
    pub version: String,
    /// False while the newest change on disk is refused (the last good config is in force).
    pub valid: bool,
    /// The last refused change.
    pub last_rejection: Option<RejectionStatus>,
    /// Pods in the registry, and how many of them are ready (endpoints).
    #[serde(default)]
    pub pods: usize,
    #[serde(default)]
    pub pods_ready: usize,
    /// Per proxy (pod name).
    pub proxies: BTreeMap<String, ProxyStatus>,
}

/// The config in force: resources and pods, with a version.
#[derive(Debug)]
struct Generation {
    version: u64,
    manifests: Arc<Manifests>,
    registry: Arc<Registry>,
}

struct Shared {
    current: watch::Sender<Arc<Generation>>,
    ca: crate::ca::Ca,
    cert_ttl: Duration,
    status: Mutex<ControlStatus>,
    status_changed: Notify,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut ControlStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        self.status_changed.notify_one();
    }

    fn proxy(&self, node: &str, f: impl FnOnce(&mut ProxyStatus)) {
        self.update(|s| f(s.proxies.entry(node.to_string()).or_default()));
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn counts(r: &Registry) -> (usize, usize) {
    (r.pods.len(), r.pods.iter().filter(|p| p.ready).count())
}

/// Runs the control plane until the process is stopped.
pub async fn run(opts: ControlOptions) -> Result<(), ControlError> {
    let ca = crate::ca::Ca::load(&opts.ca_dir, opts.plugin_ca.as_deref())?;
    tracing::info!(source = %ca.source, "certificate authority ready");
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|error| ControlError::Bind {
            addr: opts.listen,
            error,
        })?;
    let addr = listener.local_addr().unwrap_or(opts.listen);

    let mut status = ControlStatus {
        pid: std::process::id(),
        address: addr.to_string(),
        valid: true,
        ..Default::default()
    };
    let manifests = match opts.store.load() {
        Ok(m) => {
            for u in crate::compile::unsupported(&m) {
                tracing::warn!("{u}");
            }
            m
        }
        Err(r) => {
            tracing::error!("config refused, starting with no config:\n{r}");
            status.valid = false;
            status.last_rejection = Some(RejectionStatus {
                at: now_rfc3339(),
                errors: r.errors,
            });
            Manifests::default()
        }
    };
    let registry = Registry::read(&opts.registry).unwrap_or_else(|e| {
        tracing::warn!("{e}; starting with no pods");
        Registry::default()
    });
    status.version = "1".to_string();
    (status.pods, status.pods_ready) = counts(&registry);
    let (tx, _) = watch::channel(Arc::new(Generation {
        version: 1,
        manifests: Arc::new(manifests),
        registry: Arc::new(registry),
    }));
    let shared = Arc::new(Shared {
        current: tx,
        ca,
        cert_ttl: opts.cert_ttl,
        status: Mutex::new(status),
        status_changed: Notify::new(),
    });
    tracing::info!(%addr, "control plane listening");

    tokio::spawn(write_status(Arc::clone(&shared), opts.status_file.clone()));
    tokio::spawn(watch_sources(Arc::clone(&shared), opts.clone()));
    shared.status_changed.notify_one();

    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            if let Err(e) = serve_proxy(stream, shared).await {
                tracing::debug!(%peer, error = %e, "proxy stream ended");
            }
        });
    }
}

/// Polls the store and the registry; a change makes a new generation.
async fn watch_sources(shared: Arc<Shared>, opts: ControlOptions) {
    let mut files = opts.store.fingerprint();
    let mut reg_stamp = Registry::stamp(&opts.registry);
    let mut tick = tokio::time::interval(opts.poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let mut manifests = None;
        let mut registry = None;
        let now = opts.store.fingerprint();
        if now != files {
            files = now;
            match opts.store.load() {
                Ok(m) => {
                    tracing::info!("config change accepted");
                    for u in crate::compile::unsupported(&m) {
                        tracing::warn!("{u}");
                    }
                    shared.update(|s| s.valid = true);
                    manifests = Some(Arc::new(m));
                }
                Err(r) => {
                    tracing::error!("config change refused; the last good config stays:\n{r}");
                    shared.update(|s| {
                        s.valid = false;
                        s.last_rejection = Some(RejectionStatus {
                            at: now_rfc3339(),
                            errors: r.errors,
                        });
                    });
                }
            }
        }
        let stamp = Registry::stamp(&opts.registry);
        if stamp != reg_stamp {
            reg_stamp = stamp;
            match Registry::read(&opts.registry) {
                Ok(r) if *shared.current.borrow().registry != r => registry = Some(Arc::new(r)),
                Ok(_) => {}
                // The runtime replaces the file atomically; a failure here is transient.
                Err(e) => tracing::debug!("{e}"),
            }
        }
        if manifests.is_none() && registry.is_none() {
            continue;
        }
        let prev = shared.current.borrow().clone();
        let next = Generation {
            version: prev.version + 1,
            manifests: manifests.unwrap_or_else(|| Arc::clone(&prev.manifests)),
            registry: registry.unwrap_or_else(|| Arc::clone(&prev.registry)),
        };
        let version = next.version.to_string();
        let (pods, ready) = counts(&next.registry);
        shared.current.send_replace(Arc::new(next));
        shared.update(|s| {
            s.version = version;
            s.pods = pods;
            s.pods_ready = ready;
        });
    }
}

/// Writes the status file whenever something changed (at most every 100 ms).
async fn write_status(shared: Arc<Shared>, path: PathBuf) {
    loop {
        shared.status_changed.notified().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let tmp = path.with_extension("json.tmp");
        let Ok(text) = serde_json::to_vec_pretty(&s) else {
            continue;
        };
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
        }
    }
}

/// Serves one proxy: Hello, then a snapshot whenever its config changes, and its acks.
async fn serve_proxy(stream: TcpStream, shared: Arc<Shared>) -> Result<(), StreamError> {
    let (mut rd, mut wr) = stream.into_split();
    let hello: ProxyMessage =
        match tokio::time::timeout(Duration::from_secs(10), read_frame(&mut rd)).await {
            Ok(r) => r?,
            Err(_) => return Ok(()),
        };
    let ProxyMessage::Hello {
        node,
        current_version,
        ..
    } = hello
    else {
        let msg = ControlMessage::Error {
            message: "the first message must be hello".into(),
        };
        return write_frame(&mut wr, &msg).await;
    };
    tracing::info!(%node, ?current_version, "proxy connected");
    shared.proxy(&node, |p| p.connected = true);

    // Acks are read on their own task, so that a push never waits for the proxy's answer.
    // Certificate requests go to the writer, which answers them between pushes.
    let (csr_tx, mut csr_rx) = tokio::sync::mpsc::channel::<String>(4);
    let mut reader = {
        let (node, shared) = (node.clone(), Arc::clone(&shared));
        tokio::spawn(async move {
            loop {
                match read_frame::<_, ProxyMessage>(&mut rd).await {
                    Ok(ProxyMessage::Ack { version }) => {
                        tracing::debug!(%node, %version, "ack");
                        shared.proxy(&node, |p| p.acked = Some(version));
                    }
                    Ok(ProxyMessage::Nack { version, error }) => {
                        tracing::warn!(%node, %version, %error, "proxy refused its snapshot");
                        shared.proxy(&node, |p| p.nack = Some(Nack { version, error }));
                    }
                    Ok(ProxyMessage::CertificateRequest { csr_pem }) => {
                        if csr_tx.send(csr_pem).await.is_err() {
                            return;
                        }
                    }
                    Ok(ProxyMessage::Hello { .. }) => {}
                    Err(e) => {
                        tracing::debug!(%node, error = %e, "proxy stream read ended");
                        return;
                    }
                }
            }
        })
    };
    let result = push_loop(&node, &mut wr, &shared, &mut reader, &mut csr_rx).await;
    reader.abort();
    shared.proxy(&node, |p| p.connected = false);
    tracing::info!(%node, "proxy disconnected");
    result
}

/// Sends the proxy its snapshot now and after every change that alters it.
async fn push_loop(
    node: &str,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    shared: &Shared,
    reader: &mut tokio::task::JoinHandle<()>,
    csrs: &mut tokio::sync::mpsc::Receiver<String>,
) -> Result<(), StreamError> {
    let mut rx = shared.current.subscribe();
    let mut last_sent: Option<Snapshot> = None;
    loop {
        let generation = rx.borrow_and_update().clone();
        let version = generation.version.to_string();
        let compiler = Compiler::new(&generation.manifests, &generation.registry);
        match compiler.snapshot(node, &version) {
            Ok(snap) => {
                let unchanged = last_sent
                    .as_ref()
                    .is_some_and(|prev| same_but_version(prev, &snap));
                if !unchanged {
                    let msg = ControlMessage::Snapshot {
                        snapshot: Box::new(snap.clone()),
                    };
                    write_frame(wr, &msg).await?;
                    shared.proxy(node, |p| p.sent = Some(version.clone()));
                    last_sent = Some(snap);
                }
            }
            // Not known yet (the runtime lists pods as they start): wait for the registry.
            Err(e) => tracing::debug!(%node, error = %e, "no snapshot yet"),
        }
        // Wait for a change, answering certificate requests meanwhile.
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok(()) } else { break },
                _ = &mut *reader => return Ok(()),
                Some(csr) = csrs.recv() => {
                    let msg = sign_for(shared, node, &csr);
                    write_frame(wr, &msg).await?;
                }
            }
        }
    }
}

/// Signs a proxy's CSR with the identity of its pod's ServiceAccount.
fn sign_for(shared: &Shared, node: &str, csr: &str) -> ControlMessage {
    let generation = shared.current.borrow().clone();
    let Some(pod) = generation.registry.pod(node) else {
        return ControlMessage::CertificateError {
            message: format!("no pod called {node:?} is known; cannot tell its identity"),
        };
    };
    let sa = if pod.service_account.is_empty() {
        "default"
    } else {
        &pod.service_account
    };
    let identity = crate::ca::spiffe_id(&pod.namespace, sa);
    match shared.ca.sign(csr, &identity, shared.cert_ttl) {
        Ok(issued) => {
            tracing::info!(%node, %identity, not_after = issued.not_after, "certificate issued");
            ControlMessage::Certificate {
                cert_chain_pem: issued.chain_pem,
                root_cert_pem: shared.ca.root_pem.clone(),
                identity: issued.identity,
                not_after: issued.not_after,
            }
        }
        Err(e) => {
            tracing::warn!(%node, error = %e, "certificate request refused");
            ControlMessage::CertificateError {
                message: e.to_string(),
            }
        }
    }
}

fn same_but_version(a: &Snapshot, b: &Snapshot) -> bool {
    let mut a = a.clone();
    a.version.clone_from(&b.version);
    a == *b
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::ControlError;
    use crate::ca::CaError;
    use crate::registry::RegistryError;

    /// Each error in the chain says something its cause does not already say in it.
    fn says_each_cause_once(e: &dyn Error) {
        let mut e = e;
        while let Some(cause) = e.source() {
            assert!(
                !e.to_string().contains(&cause.to_string()),
                "{e} prints its source {cause} and returns it too"
            );
            e = cause;
        }
    }

    #[test]
    fn errors_say_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::AddrInUse, "address in use");
        says_each_cause_once(&ControlError::Bind {
            addr: "127.0.0.1:1".parse().unwrap(),
            error: io(),
        });
        let ca = ControlError::Ca(CaError::Io {
            path: "ca/root-cert.pem".into(),
            error: io(),
        });
        says_each_cause_once(&ca);
        assert!(
            ca.source()
                .is_some_and(|s| s.to_string().contains("root-cert.pem"))
        );
        says_each_cause_once(&RegistryError::Read {
            path: "registry.json".into(),
            error: io(),
        });
    }
}
