//! The running proxy: start (bind everything, then spawn), the handle, applying snapshots,
//! and running until a signal.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use skein_snapshot::Snapshot;
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::ProxyError;
use crate::config::{Mode, ProxyConfig, SourceConfig};
use crate::http::{HttpCtx, Role};
use crate::identity::{IdentityStatus, IdentityStore, StaticIdentity};
use crate::listen::bind::bind;
use crate::listen::drain::{ConnToken, Drain, DrainSignal};
use crate::listen::limit::ConnLimiter;
use crate::listen::snapshot::SnapshotListeners;
use crate::shared::Shared;
use crate::snapshot::Compiled;
use crate::snapshot::control::{ControlSource, ControlStatus};
use crate::snapshot::source::{
    ApplyError, ConfigSource, ControlState, FileSource, SnapshotSink, read_snapshot,
};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;

/// Proxy internals shared by the handle and config sources.
#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    listeners: SnapshotListeners,
    drain: DrainSignal,
    token: Mutex<Option<ConnToken>>,
    apply_lock: Mutex<()>,
    reload: Notify,
}

impl Inner {
    fn token(&self) -> Option<ConnToken> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn apply(&self, snap: Snapshot) -> Result<(), ApplyError> {
        let _serial = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let prev = self.shared.current.load_full();
        for d in snap.dangling_references() {
            tracing::warn!(version = %snap.version, "{d}; such requests get 503 NC");
        }
        let shared = &self.shared;
        let compiled =
            Compiled::compile(snap, Some(&prev), &shared.config, Some(&shared.identity))?;
        if !compiled.policy_errors.is_empty() {
            shared
                .metrics
                .config_policy_errors
                .inc_by(compiled.policy_errors.len() as u64);
        }
        for c in compiled.clusters.values().chain(compiled.inbound.iter()) {
            if let Some(d) = &c.outlier {
                d.attach_counter(|| shared.metrics.outlier_ejections(&c.name));
            }
        }
        let compiled = Arc::new(compiled);
        let serve = self.token().map(|t| (self.drain.clone(), t));
        let commit = || {
            shared.current.store(Arc::clone(&compiled));
            shared.loaded.store(true, Ordering::Release);
        };
        let wanted = &compiled.snapshot.listeners;
        self.listeners.reconcile(wanted, shared, commit, serve)?;
        Ok(())
    }
}

impl SnapshotSink for Inner {
    fn apply(&self, snap: Snapshot) -> Result<(), ApplyError> {
        Inner::apply(self, snap)
    }

    fn version(&self) -> String {
        self.shared.current.load().snapshot.version.clone()
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.shared.current.load().snapshot)
    }

    fn reload(&self) -> &Notify {
        &self.reload
    }

    fn control(&self) -> &ControlState {
        &self.shared.control
    }

    fn identity(&self) -> Option<Arc<IdentityStore>> {
        let given = self.shared.config.identity.is_some();
        (!given).then(|| Arc::clone(&self.shared.identity))
    }
}

/// Returns idle pooled connections past their idle timeout, until the drain starts.
async fn sweep_idle(shared: Arc<Shared>, mut drain: DrainSignal) {
    let mut tick = tokio::time::interval(shared.config.idle_sweep_interval);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = drain.signaled() => return,
        }
        let snap = shared.current.load_full();
        for c in snap.clusters.values() {
            c.sweep();
        }
        for c in &snap.inbound {
            c.sweep();
        }
    }
}

/// Addresses the proxy actually bound (ports resolved when 0 was asked).
#[derive(Debug, Clone, Default)]
pub struct BoundAddrs {
    /// Sidecar outbound HTTP.
    pub outbound_http: Option<SocketAddr>,
    /// The first sidecar inbound listener (same as `inbounds.first()`).
    pub inbound: Option<SocketAddr>,
    /// Every sidecar inbound listener, index-aligned with `ProxyConfig::inbound`.
    pub inbounds: Vec<SocketAddr>,
    /// Gateway HTTP.
    pub gateway_http: Option<SocketAddr>,
    /// Gateway HTTPS.
    pub gateway_https: Option<SocketAddr>,
    /// Admin.
    pub admin: Option<SocketAddr>,
    /// The merged metrics endpoint.
    pub metrics: Option<SocketAddr>,
}

/// A running proxy.
#[derive(Debug)]
pub struct ProxyHandle {
    inner: Arc<Inner>,
    drain: Drain,
    admin_task: Option<tokio::task::JoinHandle<()>>,
    /// Bound addresses.
    pub addrs: BoundAddrs,
}

impl ProxyHandle {
    /// Applies a snapshot (same as a config source would).
    pub fn apply(&self, snap: Snapshot) -> Result<(), ProxyError> {
        Ok(self.inner.apply(snap)?)
    }

    /// A sink for config sources.
    pub fn sink(&self) -> Arc<dyn SnapshotSink> {
        Arc::clone(&self.inner) as Arc<dyn SnapshotSink>
    }

    /// The bound address of a snapshot listener.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.inner.listeners.addr(name)
    }

    /// Version of the config in force.
    pub fn version(&self) -> String {
        self.inner.shared.current.load().snapshot.version.clone()
    }

    /// Asks a file source to re-read (what SIGHUP does).
    pub fn reload(&self) {
        self.inner.reload.notify_one();
    }

    /// Resolves when `POST /quitquitquit` was called.
    pub async fn quit_requested(&self) {
        self.inner.shared.quit.notified().await
    }

    /// State of the control-plane stream and the workload certificate (what `/control`
    /// serves).
    pub fn control_status(&self) -> ControlStatus {
        self.inner.shared.control_status()
    }

    /// The workload certificate in use.
    pub fn identity_status(&self) -> IdentityStatus {
        self.inner.shared.identity.status()
    }

    /// Installs a workload identity now (tests, embedding). New mTLS connections use it;
    /// pooled upstream mTLS connections made with the previous one are not reused. With a
    /// control-plane source, a renewal already scheduled still replaces it when due.
    pub fn install_identity(
        &self,
        identity: &StaticIdentity,
    ) -> Result<IdentityStatus, ProxyError> {
        self.inner.shared.identity.install_static(identity)?;
        Ok(self.identity_status())
    }

    /// Envoy-style cluster listing (what `/clusters` serves).
    pub fn clusters_text(&self) -> String {
        crate::admin::clusters_text(&self.inner.shared)
    }

    /// Graceful drain: stops accepting, lets in-flight requests finish for at most the drain
    /// timeout. Returns true when everything finished in time.
    pub async fn shutdown(self) -> bool {
        let timeout = self.inner.shared.config.drain_timeout;
        self.inner.shared.draining.store(true, Ordering::Release);
        self.inner
            .token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.inner.listeners.clear();
        let done = self.drain.drain(timeout).await;
        if let Some(t) = self.admin_task {
            t.abort();
        }
        // The access log writer batches lines; what the drained requests logged goes out now.
        self.inner
            .shared
            .access_log
            .flush(std::time::Duration::from_secs(1))
            .await;
        done
    }
}

/// Starts a proxy with the source from its config.
pub async fn start(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    let (initial, source): (Option<Snapshot>, Option<Box<dyn ConfigSource>>) = match &config.source
    {
        SourceConfig::File {
            path,
            poll_interval,
        } => (
            Some(read_snapshot(path)?),
            Some(Box::new(FileSource {
                path: path.clone(),
                poll_interval: *poll_interval,
            })),
        ),
        SourceConfig::Static(s) => (Some((**s).clone()), None),
        SourceConfig::Control {
            addr,
            node,
            namespace,
        } => (
            None,
            Some(Box::new(ControlSource {
                addr: *addr,
                node: node.clone(),
                namespace: namespace.clone(),
                tls: config.control_tls.clone(),
            })),
        ),
        SourceConfig::Pushed => (None, None),
    };
    let handle = start_inner(config).await?;
    if let Some(snap) = initial {
        handle.apply(snap)?;
    }
    if let Some(src) = source {
        spawn_source(&handle, src);
    }
    Ok(handle)
}

/// Starts a proxy fed by a custom config source (e.g. the control plane stream).
pub async fn start_with_source(
    config: ProxyConfig,
    source: Box<dyn ConfigSource>,
) -> Result<ProxyHandle, ProxyError> {
    let handle = start_inner(config).await?;
    spawn_source(&handle, source);
    Ok(handle)
}

fn spawn_source(handle: &ProxyHandle, source: Box<dyn ConfigSource>) {
    let sink = handle.sink();
    let mut drain = handle.drain.signal();
    tokio::spawn(async move {
        tokio::select! {
            r = source.run(sink) => if let Err(e) = r {
                tracing::error!(error = %e, "config source stopped");
            },
            _ = drain.signaled() => {}
        }
    });
}

/// The listeners of the proxy's own config, bound.
struct StaticListeners {
    outbound: Option<TcpListener>,
    inbound: Vec<TcpListener>,
    gateway_http: Option<TcpListener>,
    gateway_https: Option<(TcpListener, tokio_rustls::TlsAcceptor)>,
    admin: Option<TcpListener>,
    metrics: Option<TcpListener>,
}

/// Binds every listener of `config` (before anything is spawned, so a failure leaves
/// nothing running).
fn bind_static(config: &ProxyConfig) -> Result<StaticListeners, ProxyError> {
    let sidecar = config.mode == Mode::Sidecar;
    let gateway = config.mode == Mode::Gateway;
    let outbound = match config.outbound_http {
        Some(a) if sidecar => Some(bind("outbound HTTP", a)?),
        _ => None,
    };
    let mut inbound = Vec::new();
    if sidecar {
        let mut names = HashSet::new();
        for ib in &config.inbound {
            let name = ib.cluster_name();
            if !names.insert(name.clone()) {
                return Err(ProxyError::DuplicateInbound { name });
            }
            inbound.push(bind(&format!("inbound {name}"), ib.listen)?);
        }
    }
    let gateway_http = match config.gateway_http {
        Some(a) if gateway => Some(bind("gateway HTTP", a)?),
        _ => None,
    };
    let gateway_https = match &config.gateway_https {
        Some(t) if gateway => Some((
            bind("gateway HTTPS", t.listen)?,
            crate::listen::gateway::acceptor(&t.cert_path, &t.key_path)?,
        )),
        _ => None,
    };
    let admin = match config.admin {
        Some(a) => Some(bind("admin", a)?),
        None => None,
    };
    let metrics = match config.metrics {
        Some(a) => Some(bind("metrics", a)?),
        None => None,
    };
    Ok(StaticListeners {
        outbound,
        inbound,
        gateway_http,
        gateway_https,
        admin,
        metrics,
    })
}

/// Spawns the accept loops of the bound static listeners; returns their addresses and the
/// admin task.
fn serve_static(
    l: StaticListeners,
    shared: &Arc<Shared>,
    limiter: &Arc<ConnLimiter>,
    drain: &Drain,
    token: &ConnToken,
) -> (BoundAddrs, Option<tokio::task::JoinHandle<()>>) {
    use crate::listen::{gateway::serve_https, serve_http, serve_inbound};
    let config = &shared.config;
    let limit = || limiter.listener(config.limits.max_connections_per_listener);
    let ctx = |role: Role, route: &str, inbound: Option<usize>| {
        Arc::new(HttpCtx {
            shared: Arc::clone(shared),
            role,
            route_config: route.to_string(),
            inbound,
        })
    };
    let mut addrs = BoundAddrs::default();
    if let Some(l) = l.outbound {
        addrs.outbound_http = l.local_addr().ok();
        let c = ctx(Role::Outbound, &config.outbound_route, None);
        tokio::spawn(serve_http(
            l,
            "outbound HTTP",
            limit(),
            c,
            drain.signal(),
            token.clone(),
        ));
    }
    for (i, (l, ib)) in l.inbound.into_iter().zip(&config.inbound).enumerate() {
        addrs.inbounds.push(l.local_addr().unwrap_or(ib.listen));
        let c = ctx(Role::Inbound, "", Some(i));
        tokio::spawn(serve_inbound(
            l,
            "inbound",
            limit(),
            c,
            drain.signal(),
            token.clone(),
        ));
    }
    addrs.inbound = addrs.inbounds.first().copied();
    let _ = shared.inbound_addrs.set(addrs.inbounds.clone());
    if let Some(l) = l.gateway_http {
        addrs.gateway_http = l.local_addr().ok();
        let c = ctx(Role::Gateway, &config.gateway_route, None);
        tokio::spawn(serve_http(
            l,
            "gateway HTTP",
            limit(),
            c,
            drain.signal(),
            token.clone(),
        ));
    }
    if let Some((l, acceptor)) = l.gateway_https {
        addrs.gateway_https = l.local_addr().ok();
        let c = ctx(Role::Gateway, &config.gateway_route, None);
        let drain = drain.signal();
        tokio::spawn(serve_https(l, limit(), acceptor, c, drain, token.clone()));
    }
    addrs.admin = l.admin.as_ref().and_then(|l| l.local_addr().ok());
    addrs.metrics = l.metrics.as_ref().and_then(|l| l.local_addr().ok());
    // One task for both: the admin endpoint and the merged metrics stop together.
    let admin_task = (l.admin.is_some() || l.metrics.is_some()).then(|| {
        let (admin, metrics, shared) = (l.admin, l.metrics, Arc::clone(shared));
        tokio::spawn(async move {
            let admin = async {
                if let Some(l) = admin {
                    crate::admin::serve(l, Arc::clone(&shared)).await
                }
            };
            let metrics = async {
                if let Some(l) = metrics {
                    crate::admin::serve_metrics(l, Arc::clone(&shared)).await
                }
            };
            tokio::join!(admin, metrics);
        })
    });
    (addrs, admin_task)
}

async fn start_inner(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    let identity = Arc::new(IdentityStore::default());
    if let Some(s) = &config.identity {
        identity.install_static(s)?;
    }
    let access_log = AccessLog::start(config.access_log.as_ref()).await?;
    let listeners = bind_static(&config)?;
    // The outbound listener as bound (a configured port 0 is now a real one): the proxy's
    // own requests (a RequestAuthentication's jwksUri) go through it.
    let mut config = config;
    if let Some(a) = listeners
        .outbound
        .as_ref()
        .and_then(|l| l.local_addr().ok())
    {
        config.outbound_http = Some(a);
    }
    let empty = Compiled::empty(&config);
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(empty),
        access_log,
        metrics: Metrics::new(),
        config,
        loaded: Default::default(),
        bound: Default::default(),
        draining: Default::default(),
        quit: Notify::new(),
        inbound_addrs: Default::default(),
        control: Default::default(),
        identity,
        traces: crate::telemetry::trace::export::Exporter::start(),
    });
    let limiter = ConnLimiter::new(shared.config.limits.max_connections);
    let drain = Drain::new();
    let Some(token) = drain.token() else {
        unreachable!("a new drain has a token")
    };
    let inner = Arc::new(Inner {
        shared: Arc::clone(&shared),
        listeners: SnapshotListeners::new(Arc::clone(&limiter)),
        drain: drain.signal(),
        token: Mutex::new(Some(token.clone())),
        apply_lock: Mutex::new(()),
        reload: Notify::new(),
    });
    let (addrs, admin_task) = serve_static(listeners, &shared, &limiter, &drain, &token);
    tokio::spawn(sweep_idle(Arc::clone(&shared), drain.signal()));
    shared.bound.store(true, Ordering::Release);
    drop(token);
    Ok(ProxyHandle {
        inner,
        drain,
        admin_task,
        addrs,
    })
}

/// Runs a proxy until SIGTERM, SIGINT or `POST /quitquitquit`, then drains (bounded by
/// `drain_timeout`) and returns. SIGHUP re-reads a file source.
pub async fn run(config: ProxyConfig) -> Result<(), ProxyError> {
    use tokio::signal::unix::{SignalKind, signal};
    let handle = start(config).await?;
    let mut term = signal(SignalKind::terminate()).map_err(ProxyError::Runtime)?;
    let mut int = signal(SignalKind::interrupt()).map_err(ProxyError::Runtime)?;
    let mut hup = signal(SignalKind::hangup()).map_err(ProxyError::Runtime)?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = handle.quit_requested() => break,
            _ = hup.recv() => handle.reload(),
        }
    }
    tracing::info!("draining");
    if !handle.shutdown().await {
        tracing::warn!("drain timeout reached with requests still in flight");
    }
    Ok(())
}

/// Builds a tokio runtime for `config.workers` workers and runs [`run`] on it.
///
/// One worker (a sidecar's default) gets the current-thread scheduler: every task, the I/O
/// driver and the timers on the calling thread, with no work-stealing queues, no cross-thread
/// wake-ups and no second thread. More workers get the multi-thread scheduler.
pub fn run_blocking(config: ProxyConfig) -> Result<(), ProxyError> {
    let mut builder = if config.workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.workers);
        b
    };
    let rt = builder
        .thread_name("skein-proxy")
        .enable_all()
        .build()
        .map_err(ProxyError::Runtime)?;
    rt.block_on(run(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    #[tokio::test]
    async fn two_inbound_listeners_cannot_share_a_cluster() {
        let app = SocketAddr::from(([127, 0, 0, 1], 9080));
        let config = ProxyConfig::sidecar(loopback())
            .with_inbound(loopback(), app)
            .with_inbound(loopback(), app);
        match bind_static(&config) {
            Err(ProxyError::DuplicateInbound { name }) => assert_eq!(name, "inbound|9080||"),
            other => panic!("expected DuplicateInbound, got {:?}", other.map(|_| ())),
        }
    }

    #[tokio::test]
    async fn a_taken_port_names_the_listener() {
        let taken = std::net::TcpListener::bind(loopback()).unwrap();
        let config = ProxyConfig::sidecar(taken.local_addr().unwrap());
        let err = bind_static(&config).map(|_| ()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with("cannot bind outbound HTTP listener on 127.0.0.1:"),
            "{text}"
        );
        assert!(
            text.ends_with("(is another process using the port?)"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_gateway_binds_only_gateway_listeners() {
        let config = ProxyConfig::gateway(loopback()).with_inbound(loopback(), loopback());
        let l = bind_static(&config).unwrap();
        assert!(l.outbound.is_none() && l.inbound.is_empty() && l.gateway_https.is_none());
        assert!(l.gateway_http.is_some() && l.admin.is_some());
    }
}
