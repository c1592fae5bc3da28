//! skein-proxy: the skein data plane, one per workload (sidecar) plus gateways.
//!
//! - [`run`] / [`run_blocking`]: the entry points the `skein` binary calls.
//! - [`start`] / [`start_with_source`]: start in-process and get a [`ProxyHandle`]
//!   (tests, embedding).
//!
//! Listeners: sidecar outbound HTTP (the app's `HTTP_PROXY`, routed by authority), sidecar
//! inbound, one per container port (protocol detection: TLS / HTTP/2 / HTTP/1 / opaque TCP;
//! mesh mTLS is terminated per PeerAuthentication and every request or connection passes
//! AuthorizationPolicy), per-upstream TCP listeners from the snapshot, gateway HTTP and HTTPS,
//! and the admin endpoint.
//!
//! Workload identity ([`identity`]): a SPIFFE certificate signed by the control plane from the
//! proxy's own CSR (or given as [`StaticIdentity`]); upstream clusters use it for Istio mTLS.
//!
//! Snapshots come from a file, a fixed value, [`ProxyHandle::apply`], or the control plane's
//! push stream ([`ControlSource`]).
//!
//! The config is a [`skein_snapshot::Snapshot`] held in an `ArcSwap`; requests and connections keep
//! the `Arc` they started with.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod authz;
pub mod body;
pub mod cluster;
pub mod config;
pub mod control;
pub mod drain;
pub mod fault;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod lb;
pub mod metrics;
pub mod mirror;
pub mod outlier;
pub mod retry;
pub mod route;
pub mod source;
pub mod state;
pub mod tcp;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use skein_snapshot::{ListenerKind, MtlsMode, Snapshot};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Notify, oneshot};

pub use config::{
    AccessLogSink, InboundConfig, Mode, ProxyConfig, SourceConfig, TlsListenerConfig,
};
pub use control::{ControlNack, ControlSource, ControlState, ControlStatus};
pub use identity::{IdentityError, IdentitySource, IdentityStatus, PeerIdentity, StaticIdentity};
pub use source::{ConfigSource, FileSource, SnapshotSink, SourceError};
pub use state::CompileError;

use crate::access_log::AccessLog;
use crate::drain::{ConnToken, Drain, DrainSignal};
use crate::http::{ConnInfo, HttpCtx, Role};
use crate::identity::IdentityStore;
use crate::metrics::Metrics;
use crate::state::{Compiled, Shared};

/// Errors starting or running the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not be bound.
    #[error("cannot bind {what} listener on {addr}: {source} (is another process using the port?)")]
    Bind {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] access_log::AccessLogError),
    /// The gateway certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The workload identity could not be installed.
    #[error(transparent)]
    Identity(#[from] identity::IdentityError),
    /// A snapshot was rejected.
    #[error(transparent)]
    Compile(#[from] CompileError),
    /// The initial snapshot could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Two inbound listeners would share one cluster name.
    #[error("two inbound listeners use cluster {name:?}; each inbound listener needs its own port")]
    DuplicateInbound { name: String },
    /// The tokio runtime could not be built or signals could not be installed.
    #[error("runtime setup failed: {0}")]
    Runtime(std::io::Error),
}

/// A snapshot listener that is bound.
#[derive(Debug)]
struct DynListener {
    configured: SocketAddr,
    bound: SocketAddr,
    _stop: oneshot::Sender<()>,
}

/// Proxy internals shared by the handle and config sources.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    dyn_listeners: Mutex<HashMap<String, DynListener>>,
    drain: DrainSignal,
    token: Mutex<Option<ConnToken>>,
    apply_lock: Mutex<()>,
    pub(crate) reload: Notify,
}

fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, ProxyError> {
    let err = |source| ProxyError::Bind {
        what: what.to_string(),
        addr,
        source,
    };
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    sock.set_nodelay(true).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    sock.listen(1024).map_err(err)
}

impl Inner {
    fn token(&self) -> Option<ConnToken> {
        self.token.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn apply(&self, snap: Snapshot) -> Result<(), ProxyError> {
        let _serial = self.apply_lock.lock().unwrap_or_else(|p| p.into_inner());
        let prev = self.shared.current.load_full();
        for d in snap.dangling_references() {
            tracing::warn!(version = %snap.version, "{d}; such requests get 503 NC");
        }
        for c in &snap.clusters {
            if matches!(
                c.tls,
                skein_snapshot::UpstreamTls::Simple { .. }
                    | skein_snapshot::UpstreamTls::Mutual { .. }
            ) {
                tracing::warn!(cluster = %c.name, "DestinationRule TLS modes SIMPLE and MUTUAL are not implemented; connecting in plaintext (ISTIO_MUTUAL works)");
            }
        }
        let compiled = Compiled::compile(
            snap,
            Some(&prev),
            &self.shared.config,
            Some(&self.shared.identity),
        )?;
        for c in compiled.clusters.values().chain(compiled.inbound.iter()) {
            if let Some(d) = &c.outlier {
                d.attach_counter(|| self.shared.metrics.outlier_ejections(&c.name));
            }
        }
        let mut dyns = self.dyn_listeners.lock().unwrap_or_else(|p| p.into_inner());
        // Bind new listeners first, so a bind failure leaves everything as it was.
        let mut new = Vec::new();
        for l in &compiled.snapshot.listeners {
            let keep = dyns.get(&l.name).is_some_and(|d| d.configured == l.address);
            if !keep {
                let what = format!("snapshot {:?}", l.name);
                // An address change on the same port needs the old socket closed first.
                if let Some(old) = dyns.get(&l.name)
                    && old.bound == l.address
                {
                    dyns.remove(&l.name);
                }
                new.push((l.name.clone(), l.address, bind(&what, l.address)?));
            }
        }
        let wanted: std::collections::HashSet<&str> = compiled
            .snapshot
            .listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect();
        dyns.retain(|name, _| wanted.contains(name.as_str()));
        self.shared.current.store(Arc::new(compiled));
        self.shared.loaded.store(true, Ordering::Release);
        for (name, configured, listener) in new {
            let bound = listener.local_addr().unwrap_or(configured);
            let (tx, rx) = oneshot::channel();
            if let Some(token) = self.token() {
                tokio::spawn(serve_dyn(
                    listener,
                    name.clone(),
                    Arc::clone(&self.shared),
                    rx,
                    self.drain.clone(),
                    token,
                ));
            }
            dyns.insert(
                name,
                DynListener {
                    configured,
                    bound,
                    _stop: tx,
                },
            );
        }
        Ok(())
    }
}

async fn serve_dyn(
    listener: TcpListener,
    name: String,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    mut drain: DrainSignal,
    token: ConnToken,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = &mut stop => break,
            _ = drain.signaled() => break,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // E.g. out of file descriptors: wait a moment instead of spinning.
                tracing::debug!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(remote);
        let snap = shared.current.load_full();
        let Some(kind) = snap.listeners.get(&name) else {
            continue;
        };
        let token = token.clone();
        let _ = stream.set_nodelay(true);
        match kind {
            ListenerKind::Tcp { cluster } => {
                let state = snap.clusters.get(cluster).cloned();
                let cluster = cluster.clone();
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let info = ConnInfo::plain(local, remote);
                    tcp::forward(shared, stream, &info, state, &cluster).await;
                    drop(token);
                });
            }
            ListenerKind::Http { route_config } => {
                let ctx = Arc::new(HttpCtx {
                    shared: Arc::clone(&shared),
                    role: Role::Outbound,
                    route_config: route_config.clone(),
                    inbound: None,
                });
                let info = Arc::new(ConnInfo::plain(local, remote));
                tokio::spawn(http::serve_connection(
                    stream,
                    ctx,
                    info,
                    drain.clone(),
                    token,
                ));
            }
        }
    }
}

/// Accepts connections until the drain starts; each one (TCP_NODELAY set) goes to `on_conn`
/// with its local and remote addresses. A failed accept (e.g. out of file descriptors) waits a
/// moment instead of spinning.
async fn accept_until_drained(
    listener: TcpListener,
    mut drain: DrainSignal,
    mut on_conn: impl FnMut(tokio::net::TcpStream, SocketAddr, SocketAddr),
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.signaled() => break,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        on_conn(stream, local, remote);
    }
}

async fn serve_http(
    listener: TcpListener,
    ctx: Arc<HttpCtx>,
    drain: DrainSignal,
    token: ConnToken,
) {
    let signal = drain.clone();
    accept_until_drained(listener, drain, |stream, local, remote| {
        let info = Arc::new(ConnInfo::plain(local, remote));
        tokio::spawn(http::serve_connection(
            stream,
            Arc::clone(&ctx),
            info,
            signal.clone(),
            token.clone(),
        ));
    })
    .await
}

async fn serve_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    ctx: Arc<HttpCtx>,
    drain: DrainSignal,
    token: ConnToken,
) {
    let signal = drain.clone();
    accept_until_drained(listener, drain, |stream, local, remote| {
        let acceptor = acceptor.clone();
        let ctx = Arc::clone(&ctx);
        let drain = signal.clone();
        let token = token.clone();
        tokio::spawn(async move {
            let hs =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream))
                    .await;
            let tls = match hs {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let sni = tls.get_ref().1.server_name().map(Arc::from);
            let info = Arc::new(ConnInfo {
                sni,
                ..ConnInfo::plain(local, remote)
            });
            http::serve_connection(tls, ctx, info, drain, token).await;
        });
    })
    .await
}

async fn serve_inbound(
    listener: TcpListener,
    ctx: Arc<HttpCtx>,
    drain: DrainSignal,
    token: ConnToken,
) {
    let signal = drain.clone();
    accept_until_drained(listener, drain, |stream, local, remote| {
        tokio::spawn(inbound_conn(
            stream,
            local,
            remote,
            Arc::clone(&ctx),
            signal.clone(),
            token.clone(),
        ));
    })
    .await
}

/// How long a peer may take to finish its ClientHello once it started one.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Bound on the inbound mTLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Logs a connection the inbound listener refused before reading it (no filter chain for it,
/// in Envoy's words: flag NR, details `filter_chain_not_found`).
fn refuse(shared: &state::Shared, local: SocketAddr, remote: SocketAddr, why: &'static str) {
    tracing::debug!(%remote, %local, why, "inbound connection refused");
    if shared.access_log.enabled() {
        let mut rec = Box::new(access_log::LogRecord::new(local, remote));
        rec.flags = access_log::ResponseFlags::NR;
        rec.details = "filter_chain_not_found".into();
        shared.access_log.log(rec);
    }
}

/// One inbound connection: detect, apply PeerAuthentication (terminate mesh mTLS, refuse
/// plaintext under STRICT, pass the app's own TLS through), then serve HTTP or forward TCP
/// through AuthorizationPolicy.
async fn inbound_conn(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    ctx: Arc<HttpCtx>,
    drain: DrainSignal,
    token: ConnToken,
) {
    let shared = Arc::clone(&ctx.shared);
    let detect_timeout = shared.config.detect_timeout;
    let workload_port = ctx
        .inbound
        .and_then(|i| shared.config.inbound.get(i))
        .map_or(0, |ib| ib.app.port());
    let detected = inbound::detect(&stream, detect_timeout).await;
    let snap = shared.current.load_full();
    let mode = snap.snapshot.inbound.mtls_for(workload_port);
    let plain = || ConnInfo::plain(local, remote);
    match detected {
        inbound::Detected::Http1 | inbound::Detected::Http2 => {
            if mode == MtlsMode::Strict {
                return refuse(&shared, local, remote, "plaintext HTTP under STRICT mTLS");
            }
            http::serve_connection(stream, ctx, Arc::new(plain()), drain, token).await;
        }
        inbound::Detected::Opaque => {
            if mode == MtlsMode::Strict {
                return refuse(&shared, local, remote, "plaintext TCP under STRICT mTLS");
            }
            tcp::forward_inbound(shared, &snap, stream, &plain(), ctx.inbound, workload_port).await;
            drop((drain, token));
        }
        inbound::Detected::Tls => {
            let hello = if mode == MtlsMode::Disable {
                None
            } else {
                inbound::peek_client_hello(&stream, HELLO_TIMEOUT).await
            };
            let mesh = hello
                .as_ref()
                .is_some_and(inbound::ClientHelloInfo::is_mesh);
            // DISABLE: all TLS is the app's; PERMISSIVE: only a mesh peer's is ours.
            if mode == MtlsMode::Disable || (mode == MtlsMode::Permissive && !mesh) {
                let info = ConnInfo {
                    sni: hello.and_then(|h| h.sni).map(Arc::from),
                    ..plain()
                };
                tcp::forward_inbound(shared, &snap, stream, &info, ctx.inbound, workload_port)
                    .await;
                drop((drain, token));
                return;
            }
            let Some(id) = shared.identity.current() else {
                return refuse(
                    &shared,
                    local,
                    remote,
                    "mTLS but no workload certificate loaded yet",
                );
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(id.server_config());
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, %local, error = %e, "inbound mTLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, %local, "inbound mTLS handshake timed out");
                    return;
                }
            };
            let (_, conn) = tls.get_ref();
            let peer = conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|c| PeerIdentity::from_cert(c))
                .map(Arc::new);
            let xfcc = peer
                .as_ref()
                .and_then(|p| ::http::HeaderValue::from_str(&p.xfcc(&id.spiffe_id)).ok());
            let info = Arc::new(ConnInfo {
                sni: conn.server_name().map(Arc::from),
                peer,
                xfcc,
                ..plain()
            });
            // The client said which HTTP it speaks; otherwise sniff the decrypted bytes.
            if matches!(conn.alpn_protocol(), Some(b"h2" | b"http/1.1")) {
                http::serve_connection(tls, ctx, info, drain, token).await;
                return;
            }
            let mut tls = tls;
            let (d, prefix) = inbound::detect_read(&mut tls, detect_timeout).await;
            let io = inbound::Rewind::new(prefix, tls);
            match d {
                inbound::Detected::Http1 | inbound::Detected::Http2 => {
                    http::serve_connection(io, ctx, info, drain, token).await;
                }
                _ => {
                    tcp::forward_inbound(shared, &snap, io, &info, ctx.inbound, workload_port)
                        .await;
                    drop((drain, token));
                }
            }
        }
    }
}

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
        self.inner.apply(snap)
    }

    /// A sink for config sources.
    pub fn sink(&self) -> SnapshotSink {
        SnapshotSink {
            inner: Arc::clone(&self.inner),
        }
    }

    /// The bound address of a snapshot listener.
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.inner
            .dyn_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .map(|d| d.bound)
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
        admin::clusters_text(&self.inner.shared)
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
        self.inner
            .dyn_listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        let done = self.drain.drain(timeout).await;
        if let Some(t) = self.admin_task {
            t.abort();
        }
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
            Some(source::read_snapshot(path)?),
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

async fn start_inner(config: ProxyConfig) -> Result<ProxyHandle, ProxyError> {
    let identity = Arc::new(IdentityStore::default());
    if let Some(s) = &config.identity {
        identity.install_static(s)?;
    }
    let access_log = AccessLog::start(&config.access_log).await?;
    let empty = Compiled::empty(&config);
    let shared = Arc::new(Shared {
        current: ArcSwap::from_pointee(empty),
        access_log,
        metrics: Metrics::new(),
        config: config.clone(),
        loaded: Default::default(),
        bound: Default::default(),
        draining: Default::default(),
        quit: Notify::new(),
        inbound_addrs: Default::default(),
        control: Default::default(),
        identity,
    });
    let drain = Drain::new();
    let Some(token) = drain.token() else {
        unreachable!("a new drain has a token")
    };
    let inner = Arc::new(Inner {
        shared: Arc::clone(&shared),
        dyn_listeners: Mutex::new(HashMap::new()),
        drain: drain.signal(),
        token: Mutex::new(Some(token.clone())),
        apply_lock: Mutex::new(()),
        reload: Notify::new(),
    });
    let mut addrs = BoundAddrs::default();
    let ctx = |role: Role, route: &str, inbound: Option<usize>| {
        Arc::new(HttpCtx {
            shared: Arc::clone(&shared),
            role,
            route_config: route.to_string(),
            inbound,
        })
    };
    // Bind everything before spawning anything, so a failure leaves nothing running.
    let outbound = match (config.mode, config.outbound_http) {
        (Mode::Sidecar, Some(a)) => Some(bind("outbound HTTP", a)?),
        _ => None,
    };
    let mut inbound_l = Vec::new();
    if config.mode == Mode::Sidecar {
        let mut names = std::collections::HashSet::new();
        for ib in &config.inbound {
            let name = ib.cluster_name();
            if !names.insert(name.clone()) {
                return Err(ProxyError::DuplicateInbound { name });
            }
            inbound_l.push(bind(&format!("inbound {name}"), ib.listen)?);
        }
    }
    let gw_http = match (config.mode, config.gateway_http) {
        (Mode::Gateway, Some(a)) => Some(bind("gateway HTTP", a)?),
        _ => None,
    };
    let gw_https = match (config.mode, &config.gateway_https) {
        (Mode::Gateway, Some(t)) => Some((
            bind("gateway HTTPS", t.listen)?,
            tls::acceptor(&t.cert_path, &t.key_path)?,
        )),
        _ => None,
    };
    let admin_l = match config.admin {
        Some(a) => Some(bind("admin", a)?),
        None => None,
    };
    if let Some(l) = outbound {
        addrs.outbound_http = l.local_addr().ok();
        let c = ctx(Role::Outbound, &config.outbound_route, None);
        tokio::spawn(serve_http(l, c, drain.signal(), token.clone()));
    }
    for (i, (l, ib)) in inbound_l.into_iter().zip(&config.inbound).enumerate() {
        addrs.inbounds.push(l.local_addr().unwrap_or(ib.listen));
        let c = ctx(Role::Inbound, "", Some(i));
        tokio::spawn(serve_inbound(l, c, drain.signal(), token.clone()));
    }
    addrs.inbound = addrs.inbounds.first().copied();
    let _ = shared.inbound_addrs.set(addrs.inbounds.clone());
    if let Some(l) = gw_http {
        addrs.gateway_http = l.local_addr().ok();
        let c = ctx(Role::Gateway, &config.gateway_route, None);
        tokio::spawn(serve_http(l, c, drain.signal(), token.clone()));
    }
    if let Some((l, acceptor)) = gw_https {
        addrs.gateway_https = l.local_addr().ok();
        let c = ctx(Role::Gateway, &config.gateway_route, None);
        tokio::spawn(serve_https(l, acceptor, c, drain.signal(), token.clone()));
    }
    let admin_task = admin_l.map(|l| {
        addrs.admin = l.local_addr().ok();
        tokio::spawn(admin::serve(l, Arc::clone(&shared)))
    });
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

/// Builds a multi-thread tokio runtime with `config.workers` workers and runs [`run`] on it.
pub fn run_blocking(config: ProxyConfig) -> Result<(), ProxyError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.workers.max(1))
        .thread_name("skein-proxy")
        .enable_all()
        .build()
        .map_err(ProxyError::Runtime)?;
    rt.block_on(run(config))
}
