//! The control plane process: watches the store and the registry, compiles snapshots, pushes
//! them to connected proxies over the stream of `skein_snapshot::stream`, and records what each
//! proxy acknowledged in a status file that `skein status` reads.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use skein_api::Manifests;
use skein_snapshot::Snapshot;
use skein_snapshot::stream::{
    ControlMessage, MAX_PROXY_FRAME, ProxyMessage, StreamError, read_frame_limited, write_frame,
    write_frame_bytes,
};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use crate::compile::{Compiler, Index};
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
    /// The GitOps controller's directory (`STATE/gitops`) and the `git` program, when the
    /// manifests are an Application's commit.
    pub gitops: Option<(PathBuf, PathBuf)>,
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
    /// The control stream's TLS config could not be built from the CA's material.
    #[error("cannot set up TLS for the control stream: {0}")]
    Tls(String),
}

/// The DNS names of the control plane's serving certificate; proxies check the first.
pub const SERVER_NAMES: [&str; 3] = [
    "istiod.istio-system.svc",
    "istiod.istio-system.svc.cluster.local",
    "istiod",
];

/// Lifetime of the control plane's serving certificate (a new one is made at each start;
/// never past the signing CA).
pub const SERVING_CERT_TTL: Duration = Duration::from_secs(365 * 86_400);

/// The control stream's TLS: the serving certificate signed by the mesh CA, and a client
/// certificate that is optional (a first connection has none yet) but, when given, must chain
/// to the mesh root; whose identity it names is checked at hello.
fn tls_acceptor(ca: &crate::ca::Ca) -> Result<TlsAcceptor, ControlError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |e: &dyn std::fmt::Display| ControlError::Tls(e.to_string());
    let identity = crate::ca::spiffe_id("istio-system", "istiod-service-account");
    let (chain_pem, key_pem) = ca.serving_cert(&SERVER_NAMES, &identity, SERVING_CERT_TTL)?;
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls(&e))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| tls(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.root_pem.as_bytes()) {
        roots.add(c.map_err(|e| tls(&e))?).map_err(|e| tls(&e))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| tls(&e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(clients)
        .with_single_cert(chain, key)
        .map_err(|e| tls(&e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The SPIFFE identity of the client certificate a TLS peer presented (verified against the
/// mesh root by the handshake), if any.
fn peer_identity<S>(tls: &tokio_rustls::server::TlsStream<S>) -> Option<String> {
    let leaf = tls.get_ref().1.peer_certificates()?.first()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
            Some(u.to_string())
        }
        _ => None,
    })
}

/// What the status file says of one proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyStatus {
    /// Connected now (always, since a proxy's entry is removed when it disconnects; kept for
    /// readers of the file).
    pub connected: bool,
    /// Version of the last snapshot sent.
    pub sent: Option<String>,
    /// Version of the last snapshot the proxy applied.
    pub acked: Option<String>,
    /// The last snapshot the proxy refused, and why.
    pub nack: Option<Nack>,
    /// How many times this proxy's own snapshot was compiled on this stream (the first one,
    /// then once per generation that could change it).
    #[serde(default)]
    pub compiles: u64,
    /// How many cluster updates (pods changed, the rest of its snapshot did not) it was sent
    /// instead of a compile of its snapshot.
    #[serde(default)]
    pub cluster_updates: u64,
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
    /// Outbound cluster sets compiled (one per Service and client namespace) since start:
    /// shared by the sidecars of a namespace, and after a change of pods only those of the
    /// Services whose pods changed.
    #[serde(default)]
    pub service_cluster_compiles: u64,
    /// Per connected proxy (pod name); an entry goes when the proxy's last stream ends.
    pub proxies: BTreeMap<String, ProxyStatus>,
}

/// The config in force: resources and pods, with a version, and what the compiles of its
/// proxies share.
#[derive(Debug)]
struct Generation {
    version: u64,
    manifests: Arc<Manifests>,
    registry: Arc<Registry>,
    index: Index,
    /// The generation this one follows (0: none).
    prev_version: u64,
    /// The Services (in `index` order) whose clusters changed since `prev_version`, when only
    /// pods changed; None when the resources changed (anything may have).
    changed: Option<Vec<usize>>,
    /// Per client namespace, the outbound clusters of every Service, compiled and serialised
    /// once for all the sidecars of that namespace.
    outbound: Mutex<HashMap<String, Arc<OnceLock<Arc<Outbound>>>>>,
    /// Per client namespace, the sidecars' outbound routes compiled and serialised once
    /// (when they depend on the namespace alone: [`Index::routes_by_namespace`]).
    routes: Mutex<HashMap<String, Arc<OnceLock<Arc<SharedRoutes>>>>>,
    /// Service cluster sets compiled, over all generations.
    compiled: Arc<AtomicU64>,
}

/// The outbound clusters of one Service for the sidecars of one namespace.
#[derive(Debug, PartialEq)]
struct ServiceClusters {
    clusters: Vec<skein_snapshot::Cluster>,
    /// `clusters` serialised, comma-separated, without brackets.
    json: Vec<u8>,
}

/// The outbound route config of the sidecars of one namespace.
#[derive(Debug)]
struct SharedRoutes {
    /// `[config]` serialised: the snapshot's `route_configs`.
    json: Vec<u8>,
}

/// Every Service's outbound clusters for the sidecars of one namespace, in index order.
#[derive(Debug)]
struct Outbound {
    services: Vec<Arc<ServiceClusters>>,
}

impl Generation {
    /// The generation of `manifests` and `registry` after `prev` (none at start). When only
    /// the pods changed, the namespaces' outbound clusters are carried over and only those of
    /// the Services whose pods changed are compiled again.
    fn new(
        version: u64,
        manifests: Arc<Manifests>,
        registry: Arc<Registry>,
        prev: Option<&Generation>,
    ) -> Generation {
        let index = Index::new(&manifests, &registry);
        let compiled = prev.map_or_else(Arc::default, |p| Arc::clone(&p.compiled));
        let changed = prev
            .filter(|p| Arc::ptr_eq(&p.manifests, &manifests))
            .and_then(|p| index.changed_services(&registry, &p.index, &p.registry));
        let mut generation = Generation {
            version,
            manifests,
            registry,
            index,
            prev_version: prev.map_or(0, |p| p.version),
            changed,
            outbound: Mutex::default(),
            routes: Mutex::default(),
            compiled,
        };
        // Routes depend on the resources only: the same ones keep them.
        if let Some(prev) = prev.filter(|p| Arc::ptr_eq(&p.manifests, &generation.manifests)) {
            generation.routes = Mutex::new(lock(&prev.routes).clone());
        }
        if let (Some(prev), Some(changed)) = (prev, generation.changed.as_ref()) {
            let compiler = Compiler::with_index(
                &generation.manifests,
                &generation.registry,
                &generation.index,
            );
            let mut carried = HashMap::new();
            for (ns, cell) in lock(&prev.outbound).iter() {
                let Some(before) = cell.get() else { continue };
                let mut services = before.services.clone();
                for &i in changed {
                    if let Some(slot) = services.get_mut(i) {
                        *slot = Arc::new(service_clusters(&compiler, i, ns));
                        generation.compiled.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let cell = OnceLock::new();
                let _ = cell.set(Arc::new(Outbound { services }));
                carried.insert(ns.clone(), Arc::new(cell));
            }
            generation.outbound = Mutex::new(carried);
        }
        generation
    }

    /// The outbound clusters for the sidecars of namespace `ns`, compiled on first use.
    fn outbound(&self, ns: &str) -> Arc<Outbound> {
        let cell = Arc::clone(lock(&self.outbound).entry(ns.to_string()).or_default());
        let out = cell.get_or_init(|| {
            let compiler = Compiler::with_index(&self.manifests, &self.registry, &self.index);
            let n = self.index.service_count();
            self.compiled.fetch_add(n as u64, Ordering::Relaxed);
            Arc::new(Outbound {
                services: (0..n)
                    .map(|i| Arc::new(service_clusters(&compiler, i, ns)))
                    .collect(),
            })
        });
        Arc::clone(out)
    }

    /// The outbound routes of the sidecars of namespace `ns` with the scope `key` (which
    /// sees `visible`), compiled on first use; None when they depend on more than that.
    fn routes(&self, key: &str, ns: &str, visible: Option<&[bool]>) -> Option<Arc<SharedRoutes>> {
        if !self.index.routes_by_namespace() {
            return None;
        }
        let cell = Arc::clone(lock(&self.routes).entry(key.to_string()).or_default());
        let routes = cell.get_or_init(|| {
            let config = self.compiler().namespace_routes(ns, visible);
            // Plain data: serialising it to memory does not fail.
            let json = serde_json::to_vec(&[config]).unwrap_or_default();
            Arc::new(SharedRoutes { json })
        });
        Some(Arc::clone(routes))
    }

    /// The pod called `name`.
    fn pod(&self, name: &str) -> Option<&crate::registry::Pod> {
        self.index.pod(&self.registry, name)
    }

    fn compiler(&self) -> Compiler<'_> {
        Compiler::with_index(&self.manifests, &self.registry, &self.index)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn service_clusters(compiler: &Compiler<'_>, service: usize, ns: &str) -> ServiceClusters {
    let clusters = compiler.service_clusters_at(service, ns);
    let mut json = Vec::new();
    for (i, c) in clusters.iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        // A Cluster is plain data: serialising it to memory does not fail.
        let _ = serde_json::to_writer(&mut json, c);
    }
    ServiceClusters { clusters, json }
}

/// The frame of a sidecar's snapshot from its own parts and its namespace's outbound
/// clusters: byte for byte what serialising `ControlMessage::Snapshot` of the whole snapshot
/// gives (the field order of [`Snapshot`]; outbound clusters first, then the inbound ones).
fn sidecar_frame(
    own: &Snapshot,
    routes: Option<&SharedRoutes>,
    outbound: &Outbound,
    visible: Option<&[bool]>,
) -> Result<Vec<u8>, serde_json::Error> {
    let size: usize = outbound.services.iter().map(|s| s.json.len() + 1).sum();
    let mut b = Vec::with_capacity(size + 64 * 1024);
    b.extend_from_slice(br#"{"type":"snapshot","snapshot":{"version":"#);
    serde_json::to_writer(&mut b, &own.version)?;
    b.extend_from_slice(br#","node":"#);
    serde_json::to_writer(&mut b, &own.node)?;
    b.extend_from_slice(br#","outbound_traffic_policy":"#);
    serde_json::to_writer(&mut b, &own.outbound_traffic_policy)?;
    b.extend_from_slice(br#","listeners":"#);
    serde_json::to_writer(&mut b, &own.listeners)?;
    b.extend_from_slice(br#","route_configs":"#);
    match routes {
        Some(r) => b.extend_from_slice(&r.json),
        None => serde_json::to_writer(&mut b, &own.route_configs)?,
    }
    b.extend_from_slice(br#","clusters":["#);
    let mut first = true;
    let seen = |i: usize| visible.is_none_or(|v| v.get(i).copied().unwrap_or(false));
    for (_, s) in outbound
        .services
        .iter()
        .enumerate()
        .filter(|(i, s)| seen(*i) && !s.json.is_empty())
    {
        if !first {
            b.push(b',');
        }
        first = false;
        b.extend_from_slice(&s.json);
    }
    for c in &own.clusters {
        if !first {
            b.push(b',');
        }
        first = false;
        serde_json::to_writer(&mut b, c)?;
    }
    b.extend_from_slice(br#"],"inbound":"#);
    serde_json::to_writer(&mut b, &own.inbound)?;
    b.extend_from_slice(br#","telemetry":"#);
    serde_json::to_writer(&mut b, &own.telemetry)?;
    b.extend_from_slice(b"}}");
    Ok(b)
}

struct Shared {
    current: watch::Sender<Arc<Generation>>,
    ca: crate::ca::Ca,
    tls: TlsAcceptor,
    cert_ttl: Duration,
    limits: Limits,
    status: Mutex<ControlStatus>,
    /// Open streams per proxy, changed under the `status` lock: a proxy's status entry lives
    /// while it has one.
    streams: Mutex<BTreeMap<String, usize>>,
    /// Per pod with signings to pay back, when its budget is full again (a rate limit by the
    /// generic cell rate algorithm). Keyed by pods in the registry only, and pruned as they
    /// refill.
    csr_budget: Mutex<BTreeMap<String, tokio::time::Instant>>,
    status_changed: Notify,
    /// The history `skein describe` shows.
    events: Arc<crate::events::EventLog>,
}

impl Shared {
    /// Records one event of the control plane's history.
    fn event(
        &self,
        warning: bool,
        reason: &str,
        version: Option<&str>,
        objects: Vec<String>,
        message: String,
    ) {
        self.events.append(&crate::events::Event {
            at: now_rfc3339(),
            kind: if warning { "Warning" } else { "Normal" }.into(),
            reason: reason.into(),
            version: version.map(str::to_string),
            objects,
            message,
        });
    }

    fn update(&self, f: impl FnOnce(&mut ControlStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        self.status_changed.notify_one();
    }

    /// Changes a connected proxy's entry (none once it has disconnected).
    fn proxy(&self, node: &str, f: impl FnOnce(&mut ProxyStatus)) {
        self.update(|s| {
            if let Some(p) = s.proxies.get_mut(node) {
                f(p)
            }
        });
    }

    /// Takes one of `pod`'s certificate signings, or says how long until one is free.
    fn take_signing(&self, pod: &str) -> Result<(), Duration> {
        let now = tokio::time::Instant::now();
        let every = self.limits.csr_interval;
        let burst = every.saturating_mul(self.limits.csr_burst.saturating_sub(1));
        let mut budget = self.csr_budget.lock().unwrap_or_else(|p| p.into_inner());
        budget.retain(|_, full_at| *full_at > now);
        let full_at = budget.get(pod).copied().unwrap_or(now).max(now);
        let owed = full_at - now;
        if owed > burst {
            return Err(owed - burst);
        }
        budget.insert(pod.to_string(), full_at + every);
        Ok(())
    }

    /// A stream of `node` starts: its entry exists while any stream does.
    fn connected(&self, node: &str) {
        self.update(|s| {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            *streams.entry(node.to_string()).or_default() += 1;
            s.proxies.entry(node.to_string()).or_default().connected = true;
        });
    }

    /// A stream of `node` ended: its entry goes with its last stream.
    fn disconnected(&self, node: &str) {
        self.update(|s| {
            let mut streams = self.streams.lock().unwrap_or_else(|p| p.into_inner());
            match streams.get_mut(node) {
                Some(n) if *n > 1 => *n -= 1,
                _ => {
                    streams.remove(node);
                    s.proxies.remove(node);
                }
            }
        });
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

/// Limits on what peers can make the control plane hold (the values are in the crate docs).
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// How long a new connection may take to send its hello.
    hello_timeout: Duration,
    /// The largest frame a proxy may send.
    max_frame: usize,
    /// Control connections served at once.
    max_connections: usize,
    /// Signings a pod may have at once, then one per `csr_interval`.
    csr_burst: u32,
    csr_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            hello_timeout: HELLO_TIMEOUT,
            max_frame: MAX_PROXY_FRAME,
            max_connections: MAX_CONNECTIONS,
            csr_burst: CSR_BURST,
            csr_interval: CSR_INTERVAL,
        }
    }
}

/// A connection that sends no complete hello within this is closed.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Control connections served at once; beyond this, new connections are closed at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// Certificate signings a pod may have at once, before [`CSR_INTERVAL`] applies.
pub const CSR_BURST: u32 = 5;

/// After the burst, a pod gets one signing per this interval.
pub const CSR_INTERVAL: Duration = Duration::from_secs(3);

/// Runs the control plane until the process is stopped.
pub async fn run(opts: ControlOptions) -> Result<(), ControlError> {
    Server::bind(opts, Limits::default()).await?.serve().await;
    Ok(())
}

/// A bound control plane, not yet serving.
struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    opts: ControlOptions,
}

impl Server {
    /// Loads the CA and the config, and binds the listener.
    async fn bind(opts: ControlOptions, limits: Limits) -> Result<Server, ControlError> {
        let ca = crate::ca::Ca::load(&opts.ca_dir, opts.plugin_ca.as_deref())?;
        ca.check_ttl(opts.cert_ttl)?;
        tracing::info!(source = %ca.source, "certificate authority ready");
        let tls = tls_acceptor(&ca)?;
        let listener =
            TcpListener::bind(opts.listen)
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
        let (tx, _) = watch::channel(Arc::new(Generation::new(
            1,
            Arc::new(manifests),
            Arc::new(registry),
            None,
        )));
        let shared = Arc::new(Shared {
            current: tx,
            ca,
            tls,
            cert_ttl: opts.cert_ttl,
            limits,
            status: Mutex::new(status),
            streams: Mutex::default(),
            csr_budget: Mutex::default(),
            status_changed: Notify::new(),
            events: Arc::new(crate::events::EventLog::new(crate::events::path_beside(
                &opts.status_file,
            ))),
        });
        {
            let status = shared
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            match &status.last_rejection {
                Some(r) if !status.valid => shared.event(
                    true,
                    "Refused",
                    None,
                    Vec::new(),
                    format!("config refused at start: {}", r.errors.join("; ")),
                ),
                _ => {
                    let current = shared.current.borrow().clone();
                    let [created, ..] =
                        crate::events::changes(&Manifests::default(), &current.manifests);
                    shared.event(
                        false,
                        "Applied",
                        Some("1"),
                        created,
                        "loaded at start in config version 1".into(),
                    );
                }
            }
        }
        tracing::info!(%addr, "control plane listening");
        Ok(Server {
            listener,
            shared,
            opts,
        })
    }

    /// Serves proxies until the process is stopped.
    async fn serve(self) {
        let Server {
            listener,
            shared,
            opts,
        } = self;
        tokio::spawn(write_status(Arc::clone(&shared), opts.status_file.clone()));
        if let Some((dir, git)) = &opts.gitops {
            // Runs as long as the process; the thread ends with it.
            drop(crate::gitops::controller::spawn(
                crate::gitops::controller::Controller {
                    layout: crate::gitops::Layout::new(dir.clone()),
                    git: git.clone(),
                    applied: opts.store.applied.clone().unwrap_or_default(),
                    registry: opts.registry.clone(),
                    events: Arc::clone(&shared.events),
                },
            ));
        }
        tokio::spawn(watch_sources(Arc::clone(&shared), opts));
        shared.status_changed.notify_one();

        let slots = Arc::new(Semaphore::new(shared.limits.max_connections));
        let mut warned: Option<tokio::time::Instant> = None;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                // Closed at once; said at most once a minute, so a flood does not flood the log.
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(
                        %peer,
                        limit = shared.limits.max_connections,
                        "too many control connections; closing new ones"
                    );
                    warned = Some(tokio::time::Instant::now());
                }
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                // One deadline for the TLS handshake and the hello together.
                let deadline = tokio::time::Instant::now() + shared.limits.hello_timeout;
                let accept = shared.tls.accept(stream);
                match tokio::time::timeout_at(deadline, accept).await {
                    Ok(Ok(tls)) => {
                        let identity = peer_identity(&tls);
                        if let Err(e) = serve_proxy(tls, identity, deadline, shared).await {
                            tracing::debug!(%peer, error = %e, "proxy stream ended");
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "no TLS handshake in time; closing"),
                }
                drop(slot);
            });
        }
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
                    shared.event(
                        true,
                        "Refused",
                        None,
                        Vec::new(),
                        format!(
                            "change refused, the last good config stays: {}",
                            r.errors.join("; ")
                        ),
                    );
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
        let changed = manifests
            .as_ref()
            .map(|m| crate::events::changes(&prev.manifests, m));
        let next = Generation::new(
            prev.version + 1,
            manifests.unwrap_or_else(|| Arc::clone(&prev.manifests)),
            registry.unwrap_or_else(|| Arc::clone(&prev.registry)),
            Some(&prev),
        );
        drop(prev);
        let version = next.version.to_string();
        let (pods, ready) = counts(&next.registry);
        shared.current.send_replace(Arc::new(next));
        if let Some([created, configured, deleted]) = changed {
            for (what, objects) in [
                ("created", created),
                ("configured", configured),
                ("deleted", deleted),
            ] {
                if !objects.is_empty() {
                    shared.event(
                        false,
                        "Applied",
                        Some(&version),
                        objects,
                        format!("{what} in config version {version}"),
                    );
                }
            }
            let proxies = shared
                .status
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .proxies
                .len();
            shared.event(
                false,
                "Pushed",
                Some(&version),
                Vec::new(),
                format!("config version {version} pushed to {proxies} proxies"),
            );
        }
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
        let compiles = shared.current.borrow().compiled.load(Ordering::Relaxed);
        let mut s = shared
            .status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s.service_cluster_compiles = compiles;
        let tmp = path.with_extension("json.tmp");
        let Ok(text) = serde_json::to_vec_pretty(&s) else {
            continue;
        };
        if let Err(e) = std::fs::write(&tmp, text).and_then(|_| std::fs::rename(&tmp, &path)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the status file");
        }
    }
}

/// Serves one proxy over its TLS stream: Hello (authenticated by the pod's bootstrap token or
/// by a client certificate for the pod's identity), then a snapshot whenever its config
/// changes, its acks, and its certificate requests.
async fn serve_proxy<S>(
    stream: S,
    peer_identity: Option<String>,
    deadline: tokio::time::Instant,
    shared: Arc<Shared>,
) -> Result<(), StreamError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(stream);
    let max_frame = shared.limits.max_frame;
    let hello: ProxyMessage = match tokio::time::timeout_at(
        deadline,
        read_frame_limited(&mut rd, max_frame),
    )
    .await
    {
        Ok(r) => r?,
        Err(_) => {
            tracing::debug!(timeout = ?shared.limits.hello_timeout, "no hello in time; closing");
            return Ok(());
        }
    };
    let ProxyMessage::Hello {
        node,
        namespace,
        current_version,
        bootstrap_token,
    } = hello
    else {
        let msg = ControlMessage::Error {
            message: "the first message must be hello".into(),
        };
        return write_frame(&mut wr, &msg).await;
    };
    if let Err(reason) =
        dns1123_subdomain("node", &node).and_then(|()| dns1123_subdomain("namespace", &namespace))
    {
        tracing::warn!("refusing a proxy: {reason}");
        let msg = ControlMessage::Error { message: reason };
        return write_frame(&mut wr, &msg).await;
    }
    let how = match authenticate(
        &shared,
        &node,
        &namespace,
        bootstrap_token.as_deref(),
        peer_identity.as_deref(),
        deadline,
    )
    .await
    {
        Ok(how) => how,
        Err(reason) => {
            tracing::warn!(%node, %namespace, "refusing a proxy: {reason}");
            let msg = ControlMessage::Error { message: reason };
            return write_frame(&mut wr, &msg).await;
        }
    };
    tracing::info!(%node, ?current_version, authenticated_by = how, "proxy connected");
    shared.connected(&node);

    // Acks are read on their own task, so that a push never waits for the proxy's answer.
    // Certificate requests go to the writer, which answers them between pushes.
    let (csr_tx, mut csr_rx) = tokio::sync::mpsc::channel::<String>(4);
    let (nack_tx, mut nack_rx) = tokio::sync::mpsc::channel::<String>(4);
    let mut reader = {
        let (node, shared) = (node.clone(), Arc::clone(&shared));
        tokio::spawn(async move {
            loop {
                match read_frame_limited::<_, ProxyMessage>(&mut rd, max_frame).await {
                    Ok(ProxyMessage::Ack { version }) => {
                        tracing::debug!(%node, %version, "ack");
                        let mut first = false;
                        shared.proxy(&node, |p| {
                            first = p.acked.as_ref() != Some(&version);
                            p.acked = Some(version.clone());
                        });
                        if first {
                            shared.event(
                                false,
                                "Acked",
                                Some(&version),
                                Vec::new(),
                                format!("config version {version} acked by pod {node}"),
                            );
                        }
                    }
                    Ok(ProxyMessage::Nack { version, error }) => {
                        tracing::warn!(%node, %version, %error, "proxy refused its snapshot");
                        shared.event(
                            true,
                            "Rejected",
                            Some(&version),
                            Vec::new(),
                            format!("config version {version} refused by pod {node}: {error}"),
                        );
                        // Full: the push loop is sending, and a full snapshot follows anyway.
                        let _ = nack_tx.try_send(version.clone());
                        shared.proxy(&node, |p| p.nack = Some(Nack { version, error }));
                    }
                    Ok(ProxyMessage::CertificateRequest { csr_pem }) => {
                        if csr_tx.send(csr_pem).await.is_err() {
                            return;
                        }
                    }
                    Ok(ProxyMessage::Hello { .. }) => {}
                    Err(e @ StreamError::TooLarge(_)) => {
                        tracing::warn!(%node, error = %e, "closing the proxy's stream");
                        return;
                    }
                    Err(e) => {
                        tracing::debug!(%node, error = %e, "proxy stream read ended");
                        return;
                    }
                }
            }
        })
    };
    let result = push_loop(
        &node,
        &mut wr,
        &shared,
        &mut reader,
        &mut csr_rx,
        &mut nack_rx,
    )
    .await;
    reader.abort();
    shared.disconnected(&node);
    tracing::info!(%node, "proxy disconnected");
    result
}

/// Whether a hello for pod `node` in `namespace` comes from that pod's proxy: it carries the
/// pod's bootstrap token, or the stream's client certificate (verified against the mesh root
/// by the handshake) names the pod's identity. Says how, or why not (a message for the peer
/// and the log, which never echoes the token). A pod the registry does not list yet is waited
/// for until `deadline` (the runtime lists pods as it starts them).
async fn authenticate(
    shared: &Shared,
    node: &str,
    namespace: &str,
    token: Option<&str>,
    peer_identity: Option<&str>,
    deadline: tokio::time::Instant,
) -> Result<&'static str, String> {
    let mut rx = shared.current.subscribe();
    let pod = loop {
        let generation = rx.borrow_and_update().clone();
        if let Some(pod) = generation.registry.pod(node) {
            break pod.clone();
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            _ => {
                return Err(format!(
                    "no pod called {node:?} is known; cannot tell its identity"
                ));
            }
        }
    };
    if pod.namespace != namespace {
        return Err(format!(
            "pod {node} is in namespace {:?}, not {namespace:?}",
            pod.namespace
        ));
    }
    let identity = pod_identity(&pod);
    if peer_identity == Some(identity.as_str()) {
        return Ok("certificate");
    }
    if token.is_some_and(|t| pod.token_matches(t)) {
        return Ok("bootstrap token");
    }
    Err(match (peer_identity, token) {
        (Some(other), _) => format!(
            "the client certificate is for {other}, not for pod {node} ({identity}); and no \
             valid bootstrap token for the pod was given"
        ),
        (None, Some(_)) => format!("the bootstrap token is not pod {node}'s"),
        (None, None) => format!(
            "pod {node} must authenticate: give its bootstrap token (--bootstrap-token) or \
             present its current certificate"
        ),
    })
}

/// `spiffe://cluster.local/ns/NS/sa/SA` of a pod's ServiceAccount.
fn pod_identity(pod: &crate::registry::Pod) -> String {
    let sa = if pod.service_account.is_empty() {
        "default"
    } else {
        &pod.service_account
    };
    crate::ca::spiffe_id(&pod.namespace, sa)
}

/// The longest node or namespace name a hello may carry (a DNS-1123 subdomain's limit).
pub const MAX_NAME: usize = 253;

/// Checks that `name` is a DNS-1123 subdomain, as Kubernetes names are: at most [`MAX_NAME`]
/// bytes of dot-separated labels, each of lowercase letters, digits and `-`, starting and
/// ending with a letter or digit. The error is a message for the peer and the log.
fn dns1123_subdomain(what: &str, name: &str) -> Result<(), String> {
    let shown = || {
        let mut s: String = name.chars().take(64).collect();
        if s.len() < name.len() {
            s.push_str("...");
        }
        s
    };
    if name.len() > MAX_NAME {
        return Err(format!(
            "the hello's {what} {:?} is {} bytes; a DNS-1123 name has at most {MAX_NAME}",
            shown(),
            name.len()
        ));
    }
    let label_ok = |l: &str| {
        let b = l.as_bytes();
        let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum)
            && b.iter().all(|c| alnum(c) || *c == b'-')
    };
    if name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "the hello's {what} {:?} is not a DNS-1123 name (lowercase letters, digits, '-' \
             and '.', starting and ending with a letter or digit)",
            shown()
        ))
    }
}

/// What a proxy was last sent, and from which generation.
struct Sent {
    /// The generation whose config the proxy was last brought to.
    generation: Arc<Generation>,
    /// The version it was sent (it runs it once it acks).
    version: String,
    kind: SentKind,
}

enum SentKind {
    /// A sidecar: its own parts, and its namespace's outbound clusters.
    Sidecar {
        own: Snapshot,
        routes: Option<Arc<SharedRoutes>>,
        outbound: Arc<Outbound>,
        /// The Services its Sidecar resource lets it see (None: all).
        visible: Option<Arc<[bool]>>,
    },
    /// A gateway's whole snapshot.
    Whole(Snapshot),
}

/// The clusters of `changed` Services seen by `visible` that differ between `before` and
/// `after`.
fn changed_clusters(
    changed: &[usize],
    before: &Outbound,
    after: &Outbound,
    visible: Option<&[bool]>,
) -> Vec<skein_snapshot::Cluster> {
    changed
        .iter()
        .filter(|&&i| visible.is_none_or(|v| v.get(i).copied().unwrap_or(false)))
        .filter_map(|&i| {
            let (a, b) = (after.services.get(i)?, before.services.get(i)?);
            (!Arc::ptr_eq(a, b) && a.json != b.json).then(|| a.clusters.clone())
        })
        .flatten()
        .collect()
}

fn same_routes(a: Option<&Arc<SharedRoutes>>, b: Option<&Arc<SharedRoutes>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a.json == b.json,
        (None, None) => true,
        _ => false,
    }
}

/// Whether `a` and `b` hold the same clusters for a sidecar that sees `visible`.
fn same_outbound(a: &Outbound, b: &Outbound, visible: Option<&[bool]>) -> bool {
    a.services.len() == b.services.len()
        && a.services
            .iter()
            .zip(&b.services)
            .enumerate()
            .filter(|(i, _)| visible.is_none_or(|v| v.get(*i).copied().unwrap_or(false)))
            .all(|(_, (x, y))| Arc::ptr_eq(x, y) || x.json == y.json)
}

/// Sends the proxy its snapshot now and after every change that alters it. A change of pods
/// only (the resources are the same) that leaves the proxy's own pod as it was is sent as the
/// clusters it changed ([`ControlMessage::Clusters`]), or not at all when it changed none of
/// the proxy's; anything else compiles the proxy's snapshot, which is sent when it differs from
/// the last one. A refused cluster update is followed by the full snapshot.
async fn push_loop<W: AsyncWrite + Unpin>(
    node: &str,
    wr: &mut W,
    shared: &Shared,
    reader: &mut tokio::task::JoinHandle<()>,
    csrs: &mut tokio::sync::mpsc::Receiver<String>,
    nacks: &mut tokio::sync::mpsc::Receiver<String>,
) -> Result<(), StreamError> {
    let mut rx = shared.current.subscribe();
    let mut sent: Option<Sent> = None;
    // The versions last sent as cluster updates: a NACK of one of them asks for a full push.
    let mut updates: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    loop {
        let generation = rx.borrow_and_update().clone();
        let version = generation.version.to_string();
        let delta = match (sent.take(), generation.changed.as_deref()) {
            (Some(s), Some(changed))
                if s.generation.version == generation.prev_version
                    && s.generation.pod(node) == generation.pod(node) =>
            {
                match s.kind {
                    SentKind::Sidecar {
                        own,
                        routes,
                        outbound,
                        visible,
                    } => {
                        let after = generation.outbound(&own.node.namespace);
                        let clusters =
                            changed_clusters(changed, &outbound, &after, visible.as_deref());
                        let mut version_now = s.version;
                        if !clusters.is_empty() {
                            let msg = ControlMessage::Clusters {
                                version: version.clone(),
                                base_version: version_now,
                                clusters,
                            };
                            write_frame(wr, &msg).await?;
                            shared.proxy(node, |p| {
                                p.sent = Some(version.clone());
                                p.cluster_updates += 1;
                            });
                            updates.push_back(version.clone());
                            if updates.len() > 8 {
                                updates.pop_front();
                            }
                            version_now = version.clone();
                        }
                        sent = Some(Sent {
                            generation: Arc::clone(&generation),
                            version: version_now,
                            kind: SentKind::Sidecar {
                                own,
                                routes,
                                outbound: after,
                                visible,
                            },
                        });
                        true
                    }
                    kind => {
                        sent = Some(Sent { kind, ..s });
                        false
                    }
                }
            }
            (s, _) => {
                sent = s;
                false
            }
        };
        if !delta {
            shared.proxy(node, |p| p.compiles += 1);
            let compiler = generation.compiler();
            let gateway = compiler.is_gateway(node);
            let compiled = if gateway {
                compiler.snapshot(node, &version).map(SentKind::Whole)
            } else {
                let (key, visible) = generation
                    .pod(node)
                    .map(|p| compiler.sidecar_scope(p))
                    .unwrap_or_default();
                let visible: Option<Arc<[bool]>> = visible.map(Arc::from);
                let routes = generation
                    .pod(node)
                    .and_then(|p| generation.routes(&key, &p.namespace, visible.as_deref()));
                compiler
                    .sidecar_own(node, &version, routes.is_none(), visible.as_deref())
                    .map(|own| {
                        let outbound = generation.outbound(&own.node.namespace);
                        SentKind::Sidecar {
                            own,
                            routes,
                            outbound,
                            visible,
                        }
                    })
            };
            match compiled {
                Ok(kind) => {
                    let unchanged = match (sent.as_ref().map(|s| &s.kind), &kind) {
                        (Some(SentKind::Whole(a)), SentKind::Whole(b)) => same_but_version(a, b),
                        (
                            Some(SentKind::Sidecar {
                                own: a,
                                routes: r,
                                outbound: x,
                                visible: v,
                            }),
                            SentKind::Sidecar {
                                own: b,
                                routes: s,
                                outbound: y,
                                visible: w,
                            },
                        ) => {
                            v == w
                                && same_but_version(a, b)
                                && same_routes(r.as_ref(), s.as_ref())
                                && same_outbound(x, y, w.as_deref())
                        }
                        _ => false,
                    };
                    let version_now = match sent.take() {
                        Some(s) if unchanged => s.version,
                        _ => {
                            match &kind {
                                SentKind::Whole(snap) => {
                                    let msg = ControlMessage::Snapshot {
                                        snapshot: Box::new(snap.clone()),
                                    };
                                    write_frame(wr, &msg).await?;
                                }
                                SentKind::Sidecar {
                                    own,
                                    routes,
                                    outbound,
                                    visible,
                                } => {
                                    let body = sidecar_frame(
                                        own,
                                        routes.as_deref(),
                                        outbound,
                                        visible.as_deref(),
                                    )?;
                                    write_frame_bytes(wr, &body).await?;
                                }
                            }
                            shared.proxy(node, |p| p.sent = Some(version.clone()));
                            version.clone()
                        }
                    };
                    sent = Some(Sent {
                        generation: Arc::clone(&generation),
                        version: version_now,
                        kind,
                    });
                }
                // Not known yet (the runtime lists pods as they start): wait for the registry.
                Err(e) => tracing::debug!(%node, error = %e, "no snapshot yet"),
            }
        }
        drop(generation);
        // Wait for a change, answering certificate requests meanwhile.
        loop {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok(()) } else { break },
                _ = &mut *reader => return Ok(()),
                Some(csr) = csrs.recv() => {
                    let msg = sign_for(shared, node, &csr);
                    write_frame(wr, &msg).await?;
                }
                Some(v) = nacks.recv() => {
                    if updates.contains(&v) {
                        tracing::info!(%node, version = %v, "cluster update refused; sending the full snapshot");
                        updates.clear();
                        sent = None;
                        rx.mark_changed();
                        break;
                    }
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
    if let Err(wait) = shared.take_signing(node) {
        let l = &shared.limits;
        let message = format!(
            "too many certificate requests for pod {node}: at most {} at once, then one every \
             {} s; retry in {:.1} s",
            l.csr_burst,
            l.csr_interval.as_secs_f64(),
            wait.as_secs_f64()
        );
        // Debug: a peer that floods requests must not flood the log (the proxy logs it too).
        tracing::debug!(%node, "certificate request refused: {message}");
        return ControlMessage::CertificateError { message };
    }
    let identity = pod_identity(pod);
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

    mod generations {
        //! What the proxies of a generation share, and what a change of pods compiles again.

        use std::sync::Arc;
        use std::sync::atomic::Ordering;

        use skein_snapshot::stream::ControlMessage;

        use super::super::{Generation, sidecar_frame};
        use crate::compile::Compiler;
        use crate::compile::fixtures::{example, registry};

        #[test]
        fn a_spliced_frame_is_byte_identical_to_the_whole_snapshot_serialised() {
            // The example's three Services.
            assert_eq!(spliced_frames_are_whole_frames(example(), true), 3);

            // A route on sourceLabels: each sidecar's routes are its own, the frame the same.
            let mut m = example();
            m.extend(
                skein_api::load_str(
                    "by-labels.yaml",
                    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: by-labels, namespace: blog-system}\nspec:\n  hosts: [mysql]\n  http:\n  - match: [{sourceLabels: {app: web}}]\n    route: [{destination: {host: was-service}}]\n",
                )
                .unwrap(),
            );
            spliced_frames_are_whole_frames(m, false);

            // A Sidecar resource that scopes the web pods to was-service.
            let mut m = example();
            m.extend(
                skein_api::load_str(
                    "scope.yaml",
                    "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: web, namespace: blog-system}\nspec:\n  workloadSelector: {labels: {app: web}}\n  egress: [{hosts: [./was-service.blog-system.svc.cluster.local]}]\n",
                )
                .unwrap(),
            );
            spliced_frames_are_whole_frames(m, true);
        }

        /// Checks every sidecar's spliced frame against the whole snapshot's; the number of
        /// Services of the example.
        fn spliced_frames_are_whole_frames(m: skein_api::Manifests, by_namespace: bool) -> u64 {
            let (m, r) = (Arc::new(m), Arc::new(registry()));
            let generation = Generation::new(7, Arc::clone(&m), Arc::clone(&r), None);
            let mut sidecars = 0;
            for p in r.pods.iter().filter(|p| p.proxy.is_some()) {
                if generation.compiler().is_gateway(&p.name) {
                    continue;
                }
                sidecars += 1;
                let (key, visible) = generation.compiler().sidecar_scope(p);
                let visible = visible.as_deref();
                let routes = generation.routes(&key, &p.namespace, visible);
                assert_eq!(routes.is_some(), by_namespace);
                let own = generation
                    .compiler()
                    .sidecar_own(&p.name, "7", routes.is_none(), visible)
                    .unwrap();
                let outbound = generation.outbound(&p.namespace);
                let frame = sidecar_frame(&own, routes.as_deref(), &outbound, visible).unwrap();
                // The same with the pod's own routes.
                let own = generation
                    .compiler()
                    .sidecar_own(&p.name, "7", true, visible)
                    .unwrap();
                let own_routes = sidecar_frame(&own, None, &outbound, visible).unwrap();
                assert!(frame == own_routes, "{}", p.name);
                let whole = Compiler::new(&m, &r).snapshot(&p.name, "7").unwrap();
                let expected = serde_json::to_vec(&ControlMessage::Snapshot {
                    snapshot: Box::new(whole),
                })
                .unwrap();
                assert_eq!(
                    String::from_utf8(frame).unwrap(),
                    String::from_utf8(expected).unwrap(),
                    "{}",
                    p.name
                );
            }
            assert_eq!(sidecars, 4);
            // The outbound clusters were compiled once for the namespace's four sidecars.
            let services = generation.index.service_count() as u64;
            assert_eq!(generation.compiled.load(Ordering::Relaxed), services);
            services
        }

        /// The frames of the blog-system example as the control plane sent them before the
        /// frames were spliced from shared parts (serialised whole, one compile per proxy).
        const BEFORE: &str = include_str!("testdata/blog-system-frames.json");

        #[test]
        fn the_blog_system_frames_are_byte_identical_to_before() {
            let before: std::collections::BTreeMap<String, String> =
                serde_json::from_str(BEFORE).unwrap();
            let (m, r) = (Arc::new(example()), Arc::new(registry()));
            let generation = Generation::new(7, Arc::clone(&m), Arc::clone(&r), None);
            let mut proxies: Vec<&str> = r
                .pods
                .iter()
                .filter(|p| p.proxy.is_some())
                .map(|p| p.name.as_str())
                .collect();
            proxies.sort_unstable();
            assert_eq!(
                proxies,
                before.keys().map(String::as_str).collect::<Vec<_>>()
            );
            let mut blessed = std::collections::BTreeMap::new();
            for p in r.pods.iter().filter(|p| p.proxy.is_some()) {
                let compiler = generation.compiler();
                let frame = if compiler.is_gateway(&p.name) {
                    let snapshot = Box::new(compiler.snapshot(&p.name, "7").unwrap());
                    serde_json::to_vec(&ControlMessage::Snapshot { snapshot }).unwrap()
                } else {
                    let routes = generation.routes(&p.namespace, &p.namespace, None);
                    let own = compiler
                        .sidecar_own(&p.name, "7", routes.is_none(), None)
                        .unwrap();
                    let outbound = generation.outbound(&p.namespace);
                    sidecar_frame(&own, routes.as_deref(), &outbound, None).unwrap()
                };
                let frame = String::from_utf8(frame).unwrap();
                if std::env::var_os("SKEIN_BLESS").is_some() {
                    blessed.insert(p.name.clone(), frame);
                    continue;
                }
                assert!(
                    frame == before[&p.name],
                    "{}: not the frame sent before",
                    p.name
                );
            }
            if std::env::var_os("SKEIN_BLESS").is_some() {
                // SKEIN_BLESS=1 rewrites the golden frames after an intended change.
                let path = concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/src/testdata/blog-system-frames.json"
                );
                let text = serde_json::to_string_pretty(&blessed).unwrap();
                std::fs::write(path, text + "\n").unwrap();
            }
        }

        #[test]
        fn a_pod_change_compiles_only_the_services_that_select_it() {
            let (m, r) = (Arc::new(example()), Arc::new(registry()));
            let first = Generation::new(1, Arc::clone(&m), Arc::clone(&r), None);
            let before = first.outbound("blog-system");
            let compiled = first.compiled.load(Ordering::Relaxed);

            // was-2 turns unready: only was-service's clusters change.
            let mut r2 = registry();
            r2.pods[3].ready = false;
            let second = Generation::new(2, Arc::clone(&m), Arc::new(r2), Some(&first));
            let was = second
                .index
                .position("was-service.blog-system.svc.cluster.local")
                .unwrap();
            assert_eq!(second.changed.as_deref(), Some(&[was][..]));
            assert_eq!(second.prev_version, 1);
            assert_eq!(second.compiled.load(Ordering::Relaxed), compiled + 1);
            let after = second.outbound("blog-system");
            for (i, (a, b)) in after.services.iter().zip(&before.services).enumerate() {
                assert_eq!(Arc::ptr_eq(a, b), i != was, "service {i}");
            }
            let eps = |o: &super::super::Outbound| o.services[was].clusters[0].endpoints.len();
            assert_eq!((eps(&before), eps(&after)), (2, 1));
            // No namespace compiled again: the carried one is used.
            assert_eq!(second.compiled.load(Ordering::Relaxed), compiled + 1);

            // A pod no Service selects changes nothing anyone compiles.
            let mut r3 = (*second.registry).clone();
            r3.pods.push(crate::compile::fixtures::pod(
                "lonely-1",
                &[("app", "lonely")],
                "127.9.1.9",
                ("http", 80),
                "",
            ));
            let third = Generation::new(3, Arc::clone(&m), Arc::new(r3), Some(&second));
            assert_eq!(third.changed.as_deref(), Some(&[][..]));
            assert_eq!(third.compiled.load(Ordering::Relaxed), compiled + 1);

            // A change of resources: anything may have changed.
            let fourth = Generation::new(4, Arc::new(example()), Arc::clone(&r), Some(&third));
            assert_eq!(fourth.changed, None);
        }
    }

    mod peers {
        //! A real server on loopback, and raw clients that speak the frame format.

        use std::net::SocketAddr;
        use std::path::PathBuf;
        use std::sync::Arc;
        use std::time::Duration;

        use skein_snapshot::stream::{
            ControlMessage, ProxyMessage, StreamError, read_frame, write_frame,
        };
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpStream;
        use tokio_rustls::client::TlsStream;

        use super::super::{ControlOptions, ControlStatus, Limits, Server, Shared};
        use crate::store::Store;

        /// Longer than any answer takes; shorter than any timeout under test.
        pub const STEP: Duration = Duration::from_millis(500);

        pub struct Mesh {
            _dir: tempfile::TempDir,
            pub addr: SocketAddr,
            pub status_file: PathBuf,
            shared: Arc<Shared>,
        }

        impl Mesh {
            /// A control plane whose registry holds `pods` (name, namespace), each with a
            /// sidecar.
            pub async fn start(limits: Limits, pods: &[(&str, &str)]) -> Mesh {
                Self::start_with_ca(limits, pods, |_| {}).await
            }

            /// The same, with the CA directory prepared by `ca` first.
            pub async fn start_with_ca(
                limits: Limits,
                pods: &[(&str, &str)],
                ca: impl FnOnce(&std::path::Path),
            ) -> Mesh {
                Self::start_full(limits, pods, "", ca).await
            }

            /// A control plane with `manifests` (YAML) and `pods`, each labelled `app` with
            /// its name up to the last `-`.
            pub async fn start_with_manifests(pods: &[(&str, &str)], manifests: &str) -> Mesh {
                Self::start_full(Limits::default(), pods, manifests, |_| {}).await
            }

            async fn start_full(
                limits: Limits,
                pods: &[(&str, &str)],
                manifests_yaml: &str,
                ca: impl FnOnce(&std::path::Path),
            ) -> Mesh {
                let dir = tempfile::tempdir().unwrap();
                ca(&dir.path().join("ca"));
                let manifests = dir.path().join("manifests");
                std::fs::create_dir(&manifests).unwrap();
                if !manifests_yaml.is_empty() {
                    std::fs::write(manifests.join("m.yaml"), manifests_yaml).unwrap();
                }
                let registry = dir.path().join("registry.json");
                let pods: Vec<_> = pods
                    .iter()
                    .enumerate()
                    .map(|(i, (name, ns))| {
                        let app = name.rsplit_once('-').map_or(*name, |x| x.0);
                        serde_json::json!({
                            "name": name, "namespace": ns, "workload": name,
                            "labels": {"app": app},
                            "service_account": "web", "ip": format!("10.0.0.{}", i + 1),
                            "ready": true, "proxy": {"mode": "sidecar"},
                            "bootstrap_token_sha256": crate::registry::token_sha256(&token(name)),
                        })
                    })
                    .collect();
                std::fs::write(&registry, serde_json::json!({ "pods": pods }).to_string()).unwrap();
                let status_file = dir.path().join("control.json");
                let opts = ControlOptions {
                    store: Store {
                        managed: None,
                        addons: None,
                        dir: manifests,
                        applied: None,
                    },
                    registry,
                    listen: "127.0.0.1:0".parse().unwrap(),
                    status_file: status_file.clone(),
                    poll: Duration::from_millis(100),
                    gitops: None,
                    ca_dir: dir.path().join("ca"),
                    plugin_ca: None,
                    cert_ttl: Duration::from_secs(3600),
                };
                let server = Server::bind(opts, limits).await.unwrap();
                let addr = server.listener.local_addr().unwrap();
                let shared = Arc::clone(&server.shared);
                tokio::spawn(server.serve());
                Mesh {
                    _dir: dir,
                    addr,
                    status_file,
                    shared,
                }
            }

            /// Sets pod `name`'s readiness in the registry file.
            pub fn set_ready(&self, name: &str, ready: bool) {
                let path = self._dir.path().join("registry.json");
                let mut reg: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                for p in reg["pods"].as_array_mut().unwrap() {
                    if p["name"] == name {
                        p["ready"] = serde_json::Value::Bool(ready);
                    }
                }
                std::fs::write(&path, reg.to_string()).unwrap();
            }

            /// The status as held in memory.
            pub fn status(&self) -> ControlStatus {
                self.shared
                    .status
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            }

            /// The status file, once the writer has caught up.
            pub async fn status_file(&self) -> ControlStatus {
                tokio::time::sleep(STEP).await;
                serde_json::from_slice(&std::fs::read(&self.status_file).unwrap()).unwrap()
            }

            /// The mesh's root certificate (what the runtime gives each proxy).
            pub fn root_pem(&self) -> String {
                self.shared.ca.root_pem.clone()
            }

            /// Signs a workload certificate for `identity` as the mesh CA does; returns the
            /// chain and key (PEM).
            pub fn issue(&self, identity: &str) -> (String, String) {
                let key = rcgen::KeyPair::generate().unwrap();
                let csr = rcgen::CertificateParams::default()
                    .serialize_request(&key)
                    .unwrap()
                    .pem()
                    .unwrap();
                let issued = self
                    .shared
                    .ca
                    .sign(&csr, identity, Duration::from_secs(3600))
                    .unwrap();
                (issued.chain_pem, key.serialize_pem())
            }

            /// A TLS connection that verifies the control plane against the mesh root, with
            /// no client certificate.
            pub async fn connect(&self) -> Peer {
                self.connect_as(None).await
            }

            /// A TLS connection presenting `client` (chain, key) if given.
            pub async fn connect_as(&self, client: Option<(String, String)>) -> Peer {
                // A connection closed before its handshake ends (over the cap) is a peer that
                // is closed already.
                Peer {
                    conn: tls_connect(self.addr, &self.root_pem(), client).await.ok(),
                }
            }

            /// A peer that said hello as `node` in `namespace`, with the pod's token.
            pub async fn hello(&self, node: &str, namespace: &str) -> Peer {
                self.hello_with(node, namespace, Some(&token(node)), None)
                    .await
            }

            /// A peer that said hello with `token` and `client` certificate as given.
            pub async fn hello_with(
                &self,
                node: &str,
                namespace: &str,
                token: Option<&str>,
                client: Option<(String, String)>,
            ) -> Peer {
                let mut p = self.connect_as(client).await;
                p.send(&ProxyMessage::Hello {
                    node: node.into(),
                    namespace: namespace.into(),
                    current_version: None,
                    bootstrap_token: token.map(str::to_string),
                })
                .await;
                p
            }
        }

        /// The bootstrap token of test pod `name`.
        pub fn token(name: &str) -> String {
            format!("token-of-{name}")
        }

        /// A TLS client to the control plane: its certificate must chain to `root_pem` and
        /// name istiod's DNS name; `client` (chain, key) is presented if given.
        pub async fn tls_connect(
            addr: SocketAddr,
            root_pem: &str,
            client: Option<(String, String)>,
        ) -> std::io::Result<TlsStream<TcpStream>> {
            use rustls::pki_types::pem::PemObject;
            use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(root_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots);
            let config = match client {
                Some((chain, key)) => builder
                    .with_client_auth_cert(
                        CertificateDer::pem_slice_iter(chain.as_bytes())
                            .collect::<Result<Vec<_>, _>>()
                            .unwrap(),
                        PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                    )
                    .unwrap(),
                None => builder.with_no_client_auth(),
            };
            let conn = TcpStream::connect(addr).await?;
            conn.set_nodelay(true)?;
            let name = ServerName::try_from(super::super::SERVER_NAMES[0]).unwrap();
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, conn)
                .await
        }

        pub struct Peer {
            pub conn: Option<TlsStream<TcpStream>>,
        }

        impl Peer {
            pub async fn send(&mut self, msg: &ProxyMessage) {
                write_frame(self.conn.as_mut().expect("connected"), msg)
                    .await
                    .unwrap();
            }

            /// Writes raw bytes; false if the server has closed the connection.
            pub async fn send_raw(&mut self, bytes: &[u8]) -> bool {
                let Some(conn) = self.conn.as_mut() else {
                    return false;
                };
                conn.write_all(bytes).await.is_ok() && conn.flush().await.is_ok()
            }

            /// The next message, skipping snapshots; None if the stream ends or nothing
            /// comes within a step.
            pub async fn recv(&mut self) -> Option<ControlMessage> {
                let conn = self.conn.as_mut()?;
                loop {
                    match tokio::time::timeout(STEP, read_frame(&mut *conn)).await {
                        Ok(Ok(ControlMessage::Snapshot { .. })) => continue,
                        Ok(Ok(m)) => return Some(m),
                        Ok(Err(StreamError::Closed)) | Ok(Err(_)) | Err(_) => return None,
                    }
                }
            }

            /// The next message of any kind; None if the stream ends or nothing comes
            /// within a step.
            pub async fn recv_any(&mut self) -> Option<ControlMessage> {
                let conn = self.conn.as_mut()?;
                match tokio::time::timeout(STEP, read_frame(&mut *conn)).await {
                    Ok(Ok(m)) => Some(m),
                    _ => None,
                }
            }

            /// Whether the server closes the connection within `within` (whatever it sends
            /// first is skipped).
            pub async fn closed_within(&mut self, within: Duration) -> bool {
                let mut buf = [0u8; 4096];
                let Some(conn) = self.conn.as_mut() else {
                    return true;
                };
                let read = async {
                    loop {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                    }
                };
                tokio::time::timeout(within, read).await.is_ok()
            }
        }
    }

    mod pushes {
        //! What a change reaches: a change of pods as cluster updates to the proxies whose
        //! clusters it changes, without compiling their snapshots again.

        use skein_snapshot::stream::{ControlMessage, ProxyMessage};

        use super::peers::{Mesh, Peer, STEP};

        const SERVICES: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: blog}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: was, namespace: blog}\nspec:\n  selector: {app: was}\n  ports: [{name: http, port: 8080}]\n";

        /// The first snapshot's version, acked.
        async fn first(p: &mut Peer) -> String {
            match p.recv_any().await {
                Some(ControlMessage::Snapshot { snapshot }) => {
                    let version = snapshot.version.clone();
                    p.send(&ProxyMessage::Ack {
                        version: version.clone(),
                    })
                    .await;
                    version
                }
                other => panic!("expected a snapshot, got {other:?}"),
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_pod_change_reaches_its_services_users_as_cluster_updates() {
            let pods = [
                ("web-0", "blog"),
                ("web-1", "blog"),
                ("was-0", "blog"),
                ("lonely-0", "blog"),
            ];
            let mesh = Mesh::start_with_manifests(&pods, SERVICES).await;
            let mut web = mesh.hello("web-0", "blog").await;
            let mut was = mesh.hello("was-0", "blog").await;
            let v1 = first(&mut web).await;
            assert_eq!(first(&mut was).await, v1);
            tokio::time::sleep(STEP).await;
            let compiles = |m: &Mesh, n: &str| m.status().proxies[n].compiles;
            assert_eq!((compiles(&mesh, "web-0"), compiles(&mesh, "was-0")), (1, 1));
            let sets = mesh.status_file().await.service_cluster_compiles;
            assert_eq!(sets, 2, "one cluster set per Service for the namespace");

            // A pod no Service selects: nothing to send, nothing compiled.
            mesh.set_ready("lonely-0", false);
            assert!(web.recv_any().await.is_none());
            assert!(was.recv_any().await.is_none());
            assert_eq!((compiles(&mesh, "web-0"), compiles(&mesh, "was-0")), (1, 1));
            assert_eq!(mesh.status_file().await.service_cluster_compiles, sets);

            // web-1 turns unready: both proxies use web, and get its cluster alone.
            mesh.set_ready("web-1", false);
            let mut versions = Vec::new();
            for p in [&mut web, &mut was] {
                match p.recv_any().await {
                    Some(ControlMessage::Clusters {
                        version,
                        base_version,
                        clusters,
                    }) => {
                        assert_eq!(base_version, v1);
                        let names: Vec<&str> = clusters.iter().map(|c| c.name.as_str()).collect();
                        assert_eq!(names, ["outbound|80||web.blog.svc.cluster.local"]);
                        assert_eq!(clusters[0].endpoints.len(), 1);
                        assert_eq!(clusters[0].endpoints[0].address.to_string(), "10.0.0.1:80");
                        p.send(&ProxyMessage::Ack {
                            version: version.clone(),
                        })
                        .await;
                        versions.push(version);
                    }
                    other => panic!("expected a cluster update, got {other:?}"),
                }
            }
            tokio::time::sleep(STEP).await;
            let status = mesh.status_file().await;
            for n in ["web-0", "was-0"] {
                let p = &status.proxies[n];
                assert_eq!((p.compiles, p.cluster_updates), (1, 1), "{n}");
                assert_eq!(p.acked, p.sent, "{n}");
                assert_eq!(p.sent.as_deref(), Some(versions[0].as_str()));
            }
            assert_eq!(status.service_cluster_compiles, sets + 1);

            // A refused update is followed by the full snapshot.
            mesh.set_ready("web-1", true);
            let Some(ControlMessage::Clusters { version, .. }) = was.recv_any().await else {
                panic!("expected a cluster update");
            };
            was.send(&ProxyMessage::Nack {
                version: version.clone(),
                error: "not for me".into(),
            })
            .await;
            match was.recv_any().await {
                Some(ControlMessage::Snapshot { snapshot }) => {
                    assert_eq!(snapshot.version, version);
                    let web = snapshot
                        .cluster("outbound|80||web.blog.svc.cluster.local")
                        .unwrap();
                    assert_eq!(web.endpoints.len(), 2);
                }
                other => panic!("expected the full snapshot, got {other:?}"),
            }
            assert!(matches!(
                web.recv_any().await,
                Some(ControlMessage::Clusters { .. })
            ));

            // A proxy's own pod changes: its snapshot is compiled again; the other one gets
            // the cluster it changed.
            mesh.set_ready("web-0", false);
            assert!(matches!(
                web.recv_any().await,
                Some(ControlMessage::Snapshot { .. })
            ));
            assert!(matches!(
                was.recv_any().await,
                Some(ControlMessage::Clusters { .. })
            ));
            tokio::time::sleep(STEP).await;
            assert_eq!(compiles(&mesh, "web-0"), 2);
            assert_eq!(compiles(&mesh, "was-0"), 2, "one full push after the NACK");
        }
    }

    mod scoped_pushes {
        //! With Sidecar resources' egress hosts, a change of pods reaches only the proxies
        //! that see the Service.

        use skein_snapshot::stream::{ControlMessage, ProxyMessage};

        use super::peers::{Mesh, Peer, STEP};

        const MESH: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: blog}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: was, namespace: blog}\nspec:\n  selector: {app: was}\n  ports: [{name: http, port: 8080}]\n---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {name: was-only, namespace: blog}\nspec:\n  workloadSelector: {labels: {app: db}}\n  egress: [{hosts: [./was.blog.svc.cluster.local]}]\n";

        async fn first(p: &mut Peer) -> skein_snapshot::Snapshot {
            match p.recv_any().await {
                Some(ControlMessage::Snapshot { snapshot }) => {
                    p.send(&ProxyMessage::Ack {
                        version: snapshot.version.clone(),
                    })
                    .await;
                    *snapshot
                }
                other => panic!("expected a snapshot, got {other:?}"),
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_pod_change_reaches_only_the_proxies_that_see_its_service() {
            let pods = [
                ("web-0", "blog"),
                ("web-1", "blog"),
                ("was-0", "blog"),
                ("db-0", "blog"),
            ];
            let mesh = Mesh::start_with_manifests(&pods, MESH).await;
            let mut was = mesh.hello("was-0", "blog").await;
            let mut db = mesh.hello("db-0", "blog").await;
            let all = first(&mut was).await;
            let scoped = first(&mut db).await;
            let web = "outbound|80||web.blog.svc.cluster.local";
            assert!(all.cluster(web).is_some());
            assert!(scoped.cluster(web).is_none(), "db-0 does not see web");
            assert!(
                scoped
                    .cluster("outbound|8080||was.blog.svc.cluster.local")
                    .is_some()
            );
            tokio::time::sleep(STEP).await;

            // web-1 turns unready: was-0 (sees web) gets the cluster; db-0 nothing at all,
            // and its snapshot is not compiled again.
            mesh.set_ready("web-1", false);
            match was.recv_any().await {
                Some(ControlMessage::Clusters { clusters, .. }) => {
                    assert_eq!(clusters.len(), 1);
                    assert_eq!(clusters[0].name, web);
                    // The delta's endpoints name their workload as the full push does.
                    let ns: Vec<_> = clusters[0]
                        .endpoints
                        .iter()
                        .map(|e| e.workload.as_ref().map(|w| w.namespace.as_str()))
                        .collect();
                    assert_eq!(ns, [Some("blog")]);
                }
                other => panic!("expected a cluster update, got {other:?}"),
            }
            assert!(db.recv_any().await.is_none(), "db-0 does not use web");
            let status = mesh.status_file().await;
            assert_eq!(
                (
                    status.proxies["db-0"].compiles,
                    status.proxies["db-0"].cluster_updates
                ),
                (1, 0)
            );
            assert_eq!(
                (
                    status.proxies["was-0"].compiles,
                    status.proxies["was-0"].cluster_updates
                ),
                (1, 1)
            );
        }
    }

    mod hostile_peers {
        use std::time::Duration;

        use skein_snapshot::stream::{ControlMessage, MAX_PROXY_FRAME, ProxyMessage};

        use super::super::{CSR_BURST, CSR_INTERVAL, HELLO_TIMEOUT, Limits};
        use super::peers::{Mesh, STEP};

        #[tokio::test(start_paused = true)]
        async fn a_connection_that_never_says_hello_is_closed_after_the_timeout() {
            let mesh = Mesh::start(Limits::default(), &[]).await;
            let mut idle = mesh.connect().await;
            assert!(
                !idle
                    .closed_within(HELLO_TIMEOUT - Duration::from_secs(1))
                    .await
            );
            assert!(idle.closed_within(Duration::from_secs(2)).await);

            // Half a frame, then nothing: the same.
            let mut slow = mesh.connect().await;
            assert!(slow.send_raw(&100u32.to_be_bytes()).await);
            assert!(slow.send_raw(b"{").await);
            assert!(
                slow.closed_within(HELLO_TIMEOUT + Duration::from_secs(1))
                    .await
            );
        }

        fn csr() -> String {
            let key = rcgen::KeyPair::generate().unwrap();
            rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap()
        }

        fn ask(csr_pem: String) -> ProxyMessage {
            ProxyMessage::CertificateRequest { csr_pem }
        }

        #[tokio::test(start_paused = true)]
        async fn a_frame_over_the_proxy_limit_closes_the_connection_before_its_body() {
            let mesh = Mesh::start(Limits::default(), &[("web-0", "blog")]).await;
            let mut p = mesh.hello("web-0", "blog").await;
            // Announce 1 MiB and send none of it: refused on the length alone.
            assert!(p.send_raw(&(1u32 << 20).to_be_bytes()).await);
            assert!(p.closed_within(STEP).await, "still open");

            // A hello over the limit never gets as far as its name.
            let mut p = mesh.connect().await;
            p.send(&ProxyMessage::Hello {
                node: "a".repeat(MAX_PROXY_FRAME),
                namespace: "blog".into(),
                current_version: None,
                bootstrap_token: None,
            })
            .await;
            assert!(p.closed_within(STEP).await, "still open");
            let status = mesh.status_file().await;
            assert!(!status.proxies.keys().any(|k| k.len() > 253));
        }

        #[tokio::test(start_paused = true)]
        async fn hello_names_must_be_dns_1123_and_short() {
            let longest = format!("{}.{}", "a".repeat(126), "b".repeat(126));
            let pods = [
                ("web-0", "blog"),
                (longest.as_str(), "blog"),
                ("web-0.v1", "blog-system"),
            ];
            let mesh = Mesh::start(Limits::default(), &pods).await;
            let long = format!("{}.b", "a".repeat(252));
            let bad = [
                ("", "blog"),
                ("web-0", ""),
                ("Web-0", "blog"),
                ("web_0", "blog"),
                ("-web", "blog"),
                ("web-", "blog"),
                ("web..0", "blog"),
                ("../../etc/passwd", "blog"),
                ("web-0", "blog\n"),
                ("wéb", "blog"),
                (long.as_str(), "blog"),
                ("web-0", long.as_str()),
            ];
            for (node, ns) in bad {
                let mut p = mesh.hello(node, ns).await;
                match p.recv().await {
                    Some(ControlMessage::Error { message }) => {
                        assert!(message.contains("DNS-1123"), "{node:?}/{ns:?}: {message}")
                    }
                    other => panic!("{node:?}/{ns:?}: {other:?}"),
                }
                assert!(p.closed_within(STEP).await, "{node:?}/{ns:?} still open");
            }
            assert!(mesh.status().proxies.is_empty(), "{:?}", mesh.status());

            // The longest names allowed, and dotted ones, are fine.
            assert_eq!(longest.len(), 253);
            for (node, ns) in [(longest.as_str(), "blog"), ("web-0.v1", "blog-system")] {
                let mut p = mesh.hello(node, ns).await;
                assert!(!p.closed_within(STEP).await, "{node:?} closed");
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_disconnected_proxy_leaves_the_status() {
            let mesh = Mesh::start(Limits::default(), &[("web-0", "blog")]).await;
            let first = mesh.hello("web-0", "blog").await;
            let mut second = mesh.hello("web-0", "blog").await;
            second
                .send(&ProxyMessage::Ack {
                    version: "1".into(),
                })
                .await;
            tokio::time::sleep(STEP).await;
            let p = &mesh.status_file().await.proxies["web-0"];
            assert!(p.connected);
            assert_eq!(p.acked.as_deref(), Some("1"));

            // One of two streams of the same proxy ends: it is still connected.
            drop(first);
            tokio::time::sleep(STEP).await;
            assert!(mesh.status().proxies["web-0"].connected);
            drop(second);
            tokio::time::sleep(STEP).await;
            assert!(mesh.status().proxies.is_empty(), "{:?}", mesh.status());
            assert!(mesh.status_file().await.proxies.is_empty());

            // Many made-up proxies that come and go leave nothing behind.
            for i in 0..200 {
                let mut p = mesh.hello(&format!("ghost-{i}"), "blog").await;
                p.send(&ProxyMessage::Nack {
                    version: "1".into(),
                    error: "x".repeat(1000),
                })
                .await;
            }
            tokio::time::sleep(STEP).await;
            assert!(mesh.status().proxies.is_empty(), "{:?}", mesh.status());
            assert!(mesh.status_file().await.proxies.is_empty());
        }

        #[tokio::test(start_paused = true)]
        async fn connections_beyond_the_cap_are_closed_at_once() {
            let limits = Limits {
                max_connections: 4,
                ..Limits::default()
            };
            let mesh = Mesh::start(limits, &[("web-0", "blog")]).await;
            let mut held = Vec::new();
            for _ in 0..4 {
                held.push(mesh.connect().await);
            }
            for p in &mut held {
                assert!(!p.closed_within(STEP).await);
            }
            let mut over = mesh.connect().await;
            assert!(over.closed_within(STEP).await, "over the cap, still open");

            // A slot freed is a slot for the next proxy.
            drop(held.pop());
            tokio::time::sleep(STEP).await;
            let mut p = mesh.hello("web-0", "blog").await;
            assert!(!p.closed_within(STEP).await);
            assert_eq!(super::super::MAX_CONNECTIONS, 1024);
        }

        #[tokio::test(start_paused = true)]
        async fn certificate_requests_are_rate_limited_per_pod() {
            let mesh =
                Mesh::start(Limits::default(), &[("web-0", "blog"), ("web-1", "blog")]).await;
            let mut p = mesh.hello("web-0", "blog").await;
            for i in 0..CSR_BURST {
                p.send(&ask(csr())).await;
                assert!(
                    matches!(p.recv().await, Some(ControlMessage::Certificate { .. })),
                    "request {i} of the burst"
                );
            }
            p.send(&ask(csr())).await;
            match p.recv().await {
                Some(ControlMessage::CertificateError { message }) => {
                    assert!(message.contains("too many"), "{message}")
                }
                other => panic!("{other:?}"),
            }
            // A new connection does not start over; another pod has its own budget.
            let mut again = mesh.hello("web-0", "blog").await;
            again.send(&ask(csr())).await;
            assert!(matches!(
                again.recv().await,
                Some(ControlMessage::CertificateError { .. })
            ));
            let mut other = mesh.hello("web-1", "blog").await;
            other.send(&ask(csr())).await;
            assert!(matches!(
                other.recv().await,
                Some(ControlMessage::Certificate { .. })
            ));

            // The refused stream is still usable, and the budget refills with time.
            tokio::time::sleep(CSR_INTERVAL).await;
            p.send(&ask(csr())).await;
            assert!(matches!(
                p.recv().await,
                Some(ControlMessage::Certificate { .. })
            ));
            p.send(&ask(csr())).await;
            assert!(matches!(
                p.recv().await,
                Some(ControlMessage::CertificateError { .. })
            ));
        }
    }

    mod identity {
        //! Who gets a certificate: only the proxy of the pod the hello names, by the pod's
        //! bootstrap token or by its current certificate.

        use skein_snapshot::stream::{ControlMessage, ProxyMessage};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        use super::super::Limits;
        use super::peers::{Mesh, Peer, STEP, tls_connect, token};
        use crate::ca::spiffe_id;

        fn csr() -> ProxyMessage {
            let key = rcgen::KeyPair::generate().unwrap();
            let csr_pem = rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap();
            ProxyMessage::CertificateRequest { csr_pem }
        }

        async fn pods() -> Mesh {
            Mesh::start(Limits::default(), &[("web-0", "blog"), ("was-0", "blog")]).await
        }

        /// Refused with a message naming `expect`, then closed; a CSR sent anyway is never
        /// answered with a certificate.
        async fn refused(mut p: Peer, expect: &str) {
            match p.recv().await {
                Some(ControlMessage::Error { message }) => {
                    assert!(message.contains(expect), "{message}")
                }
                other => panic!("expected a refusal naming {expect:?}, got {other:?}"),
            }
            if let Some(c) = p.conn.as_mut() {
                let _ = skein_snapshot::stream::write_frame(c, &csr()).await;
            }
            assert!(p.recv().await.is_none(), "nothing after the refusal");
            assert!(p.closed_within(STEP).await, "still open");
        }

        async fn certified(p: &mut Peer) -> String {
            p.send(&csr()).await;
            match p.recv().await {
                Some(ControlMessage::Certificate { identity, .. }) => identity,
                other => panic!("expected a certificate, got {other:?}"),
            }
        }

        #[tokio::test(start_paused = true)]
        async fn a_hello_for_another_pod_without_its_token_is_refused() {
            let mesh = pods().await;
            // Another pod's token, a made-up one, none at all.
            let theirs = token("was-0");
            for t in [Some(theirs.as_str()), Some("guess"), Some(""), None] {
                let p = mesh.hello_with("web-0", "blog", t, None).await;
                let expect = if t.is_some() {
                    "not pod web-0's"
                } else {
                    "must authenticate"
                };
                refused(p, expect).await;
            }
            // The right token in the wrong namespace.
            let p = mesh
                .hello_with("web-0", "other", Some(&token("web-0")), None)
                .await;
            refused(p, "namespace").await;
            assert!(mesh.status().proxies.is_empty(), "{:?}", mesh.status());

            // The pod's own token: its certificate, for its ServiceAccount.
            let mut p = mesh.hello("web-0", "blog").await;
            assert_eq!(certified(&mut p).await, spiffe_id("blog", "web"));
            assert!(mesh.status().proxies.contains_key("web-0"));
        }

        #[tokio::test(start_paused = true)]
        async fn a_renewal_needs_a_current_certificate_for_the_pod() {
            let mesh = pods().await;
            let web = spiffe_id("blog", "web");

            // The current certificate alone authenticates the pod's proxy (no token).
            let current = mesh.issue(&web);
            let mut genuine = mesh.hello_with("web-0", "blog", None, Some(current)).await;
            assert_eq!(certified(&mut genuine).await, web);

            // A certificate of the mesh for another identity does not.
            let other = mesh.issue(&spiffe_id("other", "web"));
            let p = mesh.hello_with("web-0", "blog", None, Some(other)).await;
            refused(
                p,
                "client certificate is for spiffe://cluster.local/ns/other/sa/web",
            )
            .await;

            // One from another CA does not even finish the handshake.
            let foreign_dir = tempfile::tempdir().unwrap();
            let foreign = crate::ca::Ca::load_or_create(foreign_dir.path()).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let csr = rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap();
            let forged = foreign
                .sign(&csr, &web, std::time::Duration::from_secs(3600))
                .unwrap();
            let mut p = mesh
                .hello_with(
                    "web-0",
                    "blog",
                    None,
                    Some((forged.chain_pem, key.serialize_pem())),
                )
                .await;
            assert!(p.recv().await.is_none());
            assert!(p.closed_within(STEP).await);
            assert_eq!(
                mesh.status().proxies.keys().collect::<Vec<_>>(),
                ["web-0"],
                "only the genuine proxy is listed"
            );
            drop(genuine);
        }

        #[tokio::test(start_paused = true)]
        async fn every_root_of_the_bundle_is_pushed_and_authenticates_renewals() {
            // The generated root, with a new one beside it in extra-roots.pem.
            let new_dir = tempfile::tempdir().unwrap();
            let new = crate::ca::Ca::load_or_create(new_dir.path()).unwrap();
            let extra = new.root_pem.clone();
            let mesh = Mesh::start_with_ca(Limits::default(), &[("web-0", "blog")], |ca| {
                crate::ca::Ca::load_or_create(ca).unwrap();
                std::fs::write(ca.join("extra-roots.pem"), &extra).unwrap();
            })
            .await;
            let bundle = mesh.root_pem();
            assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
            assert!(bundle.ends_with(&new.root_pem), "{bundle}");

            // A proxy whose certificate is from the new root renews, and gets both roots.
            let web = spiffe_id("blog", "web");
            let key = rcgen::KeyPair::generate().unwrap();
            let csr_pem = rcgen::CertificateParams::default()
                .serialize_request(&key)
                .unwrap()
                .pem()
                .unwrap();
            let current = new
                .sign(&csr_pem, &web, std::time::Duration::from_secs(3600))
                .unwrap();
            let mut p = mesh
                .hello_with(
                    "web-0",
                    "blog",
                    None,
                    Some((current.chain_pem, key.serialize_pem())),
                )
                .await;
            p.send(&csr()).await;
            match p.recv().await {
                Some(ControlMessage::Certificate {
                    identity,
                    root_cert_pem,
                    cert_chain_pem,
                    ..
                }) => {
                    assert_eq!(identity, web);
                    assert_eq!(root_cert_pem, bundle, "every root is pushed");
                    assert_eq!(cert_chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
                }
                other => panic!("expected a certificate, got {other:?}"),
            }
        }

        #[tokio::test(start_paused = true)]
        async fn the_stream_is_tls_with_the_mesh_root() {
            let mesh = pods().await;
            // A plaintext hello gets no frame back, only the end of the connection.
            let mut raw = tokio::net::TcpStream::connect(mesh.addr).await.unwrap();
            raw.set_nodelay(true).unwrap();
            let body = serde_json::to_vec(&ProxyMessage::Hello {
                node: "web-0".into(),
                namespace: "blog".into(),
                current_version: None,
                bootstrap_token: Some(token("web-0")),
            })
            .unwrap();
            let _ = raw.write_all(&(body.len() as u32).to_be_bytes()).await;
            let _ = raw.write_all(&body).await;
            let mut got = Vec::new();
            let _ = tokio::time::timeout(STEP, raw.read_to_end(&mut got)).await;
            assert!(
                skein_snapshot::stream::read_frame::<_, ControlMessage>(&mut got.as_slice())
                    .await
                    .is_err(),
                "a plaintext peer got a frame"
            );

            // A client pinned to another root refuses this control plane.
            let other_dir = tempfile::tempdir().unwrap();
            let other = crate::ca::Ca::load_or_create(other_dir.path()).unwrap();
            let e = tls_connect(mesh.addr, &other.root_pem, None)
                .await
                .unwrap_err();
            assert!(e.to_string().contains("certificate"), "{e}");
        }
    }
}
