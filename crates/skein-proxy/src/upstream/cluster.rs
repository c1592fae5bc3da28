//! Per-cluster and per-endpoint state: circuit breaker counters, connection pools.
//!
//! All hot-path counters are atomics. The only locks are per endpoint (the idle HTTP/1 stack
//! and the HTTP/2 connection slot), held for a push or a pop, never across an await.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::ServerName;
use skein_snapshot::{Cluster, Endpoint, Protocol, UpstreamTls};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::identity::{IdentityStore, TlsAlpn};
use crate::telemetry::exchange::OwnPeer;
use crate::telemetry::metrics::RequestMetrics;
pub(crate) use crate::upstream::endpoint::{
    ActiveGuard, Conn, EndpointState, H1Conn, UpstreamProto,
};
use crate::upstream::endpoint::{ConnSlot, H2Slot, IdleH1};
use crate::upstream::lb::{Balancer, PickCtx};
use crate::upstream::outlier::{Detector, EndpointStatus};
use crate::upstream::tls::Origination;

use skein_snapshot::names::Direction;
pub use skein_snapshot::names::TLS_MODE_LABEL;

/// Errors getting an upstream connection.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// A circuit breaker limit was hit (flag UO).
    #[error("circuit breaker overflow: connection pool limits of the cluster are reached")]
    Overflow,
    /// The TCP connect failed (flag UF).
    #[error("connect to {addr} failed: {error}")]
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    /// The TCP connect did not finish within the cluster's connect timeout (flag UF).
    #[error("connect to {addr} timed out after {timeout:?} (DestinationRule connectTimeout)")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    /// The HTTP handshake failed (flag UF).
    #[error("HTTP handshake with {addr} failed: {error}")]
    Handshake {
        addr: SocketAddr,
        error: hyper::Error,
    },
    /// The TLS handshake failed, no workload certificate is loaded yet, the upstream's
    /// identity is not one the service may have, or the DestinationRule's TLS cannot be set
    /// up (flag UF; `reason` is the access log's UPSTREAM_TRANSPORT_FAILURE_REASON).
    #[error("TLS to {addr} failed: {reason}")]
    Tls { addr: SocketAddr, reason: String },
}

/// An upstream byte stream: plaintext, or mTLS with the workload certificate.
#[derive(Debug)]
pub enum UpstreamStream {
    /// Plaintext TCP.
    Plain(TcpStream),
    /// mTLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl UpstreamStream {
    /// Local address of the TCP connection.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            UpstreamStream::Plain(s) => s.local_addr(),
            UpstreamStream::Tls(t) => t.get_ref().0.local_addr(),
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            UpstreamStream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            UpstreamStream::Plain(s) => s.is_write_vectored(),
            UpstreamStream::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Whether connections to `e` use Istio mTLS: DestinationRule `ISTIO_MUTUAL`, or auto mTLS
/// and the endpoint has a sidecar.
pub fn wants_mtls(c: &Cluster, e: &Endpoint) -> bool {
    match c.tls {
        UpstreamTls::IstioMutual => true,
        UpstreamTls::Disable => {
            c.auto_mtls && e.labels.get(TLS_MODE_LABEL).is_some_and(|v| v == "istio")
        }
        // SIMPLE / MUTUAL originate TLS with the app's own certificates (`ClusterState::origin`).
        UpstreamTls::Simple { .. } | UpstreamTls::Mutual { .. } => false,
    }
}

/// Istio's SNI for a cluster: `outbound_.PORT_.SUBSET_.FQDN` (empty subset: `_`).
pub fn istio_sni(c: &Cluster) -> Option<ServerName<'static>> {
    if c.service.is_empty() {
        return None;
    }
    let s = format!(
        "outbound_.{}_.{}_.{}",
        c.port,
        c.subset.as_deref().unwrap_or(""),
        c.service
    );
    ServerName::try_from(s).ok()
}

/// A cluster at run time. Reused across snapshots while its definition is unchanged, so
/// pools and counters survive config pushes.
#[derive(Debug)]
pub struct ClusterState {
    /// The definition.
    pub config: Cluster,
    /// Name (shared with log records).
    pub name: Arc<str>,
    /// Inbound (to the workload behind this sidecar) or outbound, from the name.
    pub direction: Direction,
    /// Endpoints.
    pub endpoints: Vec<Arc<EndpointState>>,
    /// Load balancer.
    pub balancer: Balancer,
    /// Metrics (reporter=source, or destination for inbound clusters).
    pub metrics: Arc<RequestMetrics>,
    active: AtomicU32,
    pending: AtomicU32,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle timeout of pooled connections.
    pub idle_timeout: Duration,
    /// Local address upstream connections are made from: the pod IP, so that peers see
    /// which pod is calling (source.ip in policies and access logs).
    pub source_ip: Option<std::net::IpAddr>,
    /// The workload identity used for mTLS endpoints (None: mTLS endpoints fail with UF).
    pub identity: Option<Arc<IdentityStore>>,
    /// SNI sent to mTLS endpoints.
    pub sni: Option<ServerName<'static>>,
    /// Retry budget and mirror admission (see `retry.rs`).
    pub resilience: Arc<crate::upstream::budget::ClusterResilience>,
    /// DestinationRule outlierDetection (None: off).
    pub outlier: Option<Detector>,
    /// DestinationRule SIMPLE / MUTUAL: the TLS every connection originates, or why it cannot
    /// be set up (every connection then fails with UF; never plaintext). None: other modes.
    pub origin: Option<Result<Arc<Origination>, Arc<str>>>,
    /// The proxy's own peer-metadata headers, sent to this cluster's mTLS endpoints (set on
    /// outbound clusters only; never on PassthroughCluster or plaintext endpoints).
    pub exchange: Option<Arc<OwnPeer>>,
}

impl Drop for ClusterState {
    fn drop(&mut self) {
        for ep in &self.endpoints {
            ep.close_all();
        }
    }
}

/// Ends a cluster-level active request on drop.
#[derive(Debug)]
pub struct ClusterRequest {
    cluster: Arc<ClusterState>,
}

impl ClusterRequest {}

impl Drop for ClusterRequest {
    fn drop(&mut self) {
        self.cluster.active.fetch_sub(1, Ordering::AcqRel);
    }
}

struct PendingGuard<'a>(&'a AtomicU32);
impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn connect_tcp(
    addr: SocketAddr,
    source: Option<std::net::IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, PoolError> {
    // A loopback source only reaches loopback destinations; otherwise the kernel chooses.
    let source = source
        .filter(|s| s.is_ipv4() == addr.is_ipv4() && s.is_loopback() == addr.ip().is_loopback());
    let connect = async {
        match source {
            Some(ip) => {
                let sock = if addr.is_ipv4() {
                    tokio::net::TcpSocket::new_v4()?
                } else {
                    tokio::net::TcpSocket::new_v6()?
                };
                sock.bind(SocketAddr::new(ip, 0))?;
                sock.connect(addr).await
            }
            None => TcpStream::connect(addr).await,
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Err(_) => Err(PoolError::ConnectTimeout { addr, timeout }),
        Ok(Err(error)) => Err(PoolError::Connect { addr, error }),
        Ok(Ok(s)) => {
            let _ = s.set_nodelay(true);
            Ok(s)
        }
    }
}

impl ClusterState {
    /// Builds the run-time state of a cluster definition.
    pub fn new(config: Cluster, metrics: RequestMetrics) -> Self {
        let endpoints: Vec<Arc<EndpointState>> = config
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| {
                Arc::new(
                    EndpointState::new(e.address, e.weight)
                        .with_mtls(wants_mtls(&config, e))
                        .with_workload(e.workload.as_ref())
                        .with_index(i),
                )
            })
            .collect();
        let outlier = config
            .outlier_detection
            .as_ref()
            .map(|o| Detector::new(o, endpoints.len()));
        let sni = istio_sni(&config);
        let origin = crate::upstream::tls::origination(&config).map(|r| {
            r.map_err(|e| {
                tracing::warn!(cluster = %config.name, error = %e, "DestinationRule TLS cannot be set up; requests to this cluster get 503 UF (never plaintext)");
                Arc::from(e.to_string())
            })
        });
        let balancer = Balancer::new(&config.lb_policy, &endpoints);
        let connect_timeout =
            Duration::from_millis(config.connection_pool.connect_timeout_ms.max(1));
        let idle_timeout = Duration::from_millis(config.connection_pool.idle_timeout_ms.max(1));
        ClusterState {
            name: Arc::from(config.name.as_str()),
            direction: Direction::of_cluster(&config.name),
            config,
            endpoints,
            balancer,
            metrics: Arc::new(metrics),
            active: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            connect_timeout,
            idle_timeout,
            source_ip: None,
            identity: None,
            sni,
            resilience: Arc::default(),
            outlier,
            origin,
            exchange: None,
        }
    }

    /// Sends `own` (the proxy's peer metadata) to the cluster's mTLS endpoints; outbound
    /// clusters only.
    pub fn with_exchange(mut self, own: Option<&Arc<OwnPeer>>) -> Self {
        if self.direction == Direction::Outbound {
            self.exchange = own.cloned();
        }
        self
    }

    /// Keeps the outlier state (counters, ejections, multipliers) of endpoints that stay, by
    /// address, from the cluster's previous definition.
    pub fn with_outlier_state_from(mut self, prev: &ClusterState) -> Self {
        if let (Some(d), Some(old)) = (self.outlier.take(), prev.outlier.as_ref()) {
            self.outlier = Some(d.carried_from(&self.endpoints, old, &prev.endpoints));
        }
        self
    }

    /// Picks an endpoint index with the load balancer, skipping ejected endpoints (unless the
    /// cluster is in panic). None: no endpoint, or all ejected (503 UH).
    pub fn pick(&self, ctx: &PickCtx<'_>) -> Option<usize> {
        let skipping = match &self.outlier {
            Some(d) => {
                d.refresh(&self.endpoints);
                d.skipping()
            }
            None => false,
        };
        self.balancer.pick_with(&self.endpoints, ctx, skipping)
    }

    /// Outlier detection: `ep` answered with `status`.
    pub fn record_response(&self, ep: &EndpointState, status: u16) {
        if let Some(d) = &self.outlier {
            d.record(&self.endpoints, ep, status);
        }
    }

    /// Outlier detection: the upstream connection to `ep` was reset before a response (counts
    /// as a 503, as Envoy maps local-origin failures).
    pub fn record_reset(&self, ep: &EndpointState) {
        self.record_response(ep, 503);
    }

    fn record_connect(&self, ep: &EndpointState, r: Result<(), &PoolError>) {
        let code = match r {
            Ok(()) => 200,
            Err(PoolError::Overflow) => return,
            Err(PoolError::ConnectTimeout { .. }) => 504,
            Err(_) => 503,
        };
        self.record_response(ep, code);
    }

    /// Per-endpoint outlier status (for /config_dump and /clusters).
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        match &self.outlier {
            Some(d) => d.status(&self.endpoints),
            None => crate::upstream::outlier::healthy_status(&self.endpoints),
        }
    }

    /// Uses `identity` for connections to mTLS endpoints.
    pub fn with_identity(mut self, identity: Arc<IdentityStore>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The identity generation a connection to `ep` must have to be reused.
    fn generation_for(&self, ep: &EndpointState) -> u64 {
        match (&self.identity, ep.mtls) {
            (Some(id), true) => id.generation(),
            _ => 0,
        }
    }

    /// Connects to `ep`: TCP, then the mTLS handshake when the endpoint wants it. Returns the
    /// stream and the identity generation it was made with (0 for plaintext).
    async fn connect_upstream(
        &self,
        ep: &EndpointState,
        alpn: TlsAlpn,
    ) -> Result<(UpstreamStream, u64), PoolError> {
        let addr = ep.addr;
        if let Some(origin) = &self.origin {
            return self.connect_origin(addr, origin, alpn).await;
        }
        if !ep.mtls {
            let s = connect_tcp(addr, self.source_ip, self.connect_timeout).await?;
            return Ok((UpstreamStream::Plain(s), 0));
        }
        // Checked before connecting, so a proxy without a certificate fails fast.
        let Some(id) = self.identity.as_ref().and_then(|s| s.current()) else {
            return Err(PoolError::Tls {
                addr,
                reason: "TLS_error: no workload certificate loaded yet".to_string(),
            });
        };
        let tcp = connect_tcp(addr, self.source_ip, self.connect_timeout).await?;
        let name = self
            .sni
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let connector = tokio_rustls::TlsConnector::from(id.client_config(alpn));
        let tls =
            match tokio::time::timeout(self.connect_timeout, connector.connect(name, tcp)).await {
                Ok(Ok(t)) => t,
                Ok(Err(e)) => {
                    return Err(PoolError::Tls {
                        addr,
                        reason: format!("TLS_error: {e}"),
                    });
                }
                Err(_) => {
                    return Err(PoolError::Tls {
                        addr,
                        reason: format!(
                            "TLS_error: handshake timed out after {:?}",
                            self.connect_timeout
                        ),
                    });
                }
            };
        let allowed = &self.config.identities;
        let peer = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .and_then(|c| crate::identity::spiffe_uri(c));
        if !allowed.is_empty() && !peer.as_ref().is_some_and(|p| allowed.contains(p)) {
            return Err(PoolError::Tls {
                addr,
                reason: format!(
                    "TLS_error: peer identity {} is not one of the service's identities [{}]",
                    peer.as_deref().unwrap_or("<none>"),
                    allowed.join(", ")
                ),
            });
        }
        // Once per connection: what the source side reports as `destination_principal`.
        if let Some(p) = &peer
            && ep.peer_principal.load().as_deref() != Some(p)
        {
            ep.peer_principal.store(Some(Arc::new(p.clone())));
        }
        Ok((UpstreamStream::Tls(Box::new(tls)), id.generation))
    }

    /// Connects to `addr` with the DestinationRule's SIMPLE / MUTUAL TLS; fails (UF) when the
    /// cluster's TLS could not be set up or the handshake fails, never in plaintext.
    async fn connect_origin(
        &self,
        addr: SocketAddr,
        origin: &Result<Arc<Origination>, Arc<str>>,
        alpn: TlsAlpn,
    ) -> Result<(UpstreamStream, u64), PoolError> {
        let o = match origin {
            Ok(o) => o,
            Err(reason) => {
                return Err(PoolError::Tls {
                    addr,
                    reason: format!("TLS_error: DestinationRule TLS cannot be set up: {reason}"),
                });
            }
        };
        let tcp = connect_tcp(addr, self.source_ip, self.connect_timeout).await?;
        let connector = tokio_rustls::TlsConnector::from(o.client_config(alpn));
        match tokio::time::timeout(self.connect_timeout, connector.connect(o.sni.clone(), tcp))
            .await
        {
            Ok(Ok(t)) => Ok((UpstreamStream::Tls(Box::new(t)), 0)),
            Ok(Err(e)) => Err(PoolError::Tls {
                addr,
                reason: format!("TLS_error: {e}"),
            }),
            Err(_) => Err(PoolError::Tls {
                addr,
                reason: format!(
                    "TLS_error: handshake timed out after {:?}",
                    self.connect_timeout
                ),
            }),
        }
    }

    /// Connects from `ip` (the pod's address) where the destination can be reached from it.
    pub fn with_source_ip(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.source_ip = ip;
        self
    }

    /// Active requests on the cluster.
    pub fn active(&self) -> u32 {
        self.active.load(Ordering::Relaxed)
    }

    /// Requests waiting for a connection.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Starts a request if below `http2MaxRequests`; None means overflow (UO).
    pub fn try_start_request(self: &Arc<Self>) -> Option<ClusterRequest> {
        let max = self.config.connection_pool.http2_max_requests;
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ClusterRequest {
                cluster: Arc::clone(self),
            })
    }

    /// Which HTTP version to use upstream for a request that came in as `downstream`.
    pub fn upstream_proto(&self, downstream_h2: bool) -> UpstreamProto {
        match self.config.protocol {
            Protocol::Http2 => UpstreamProto::H2,
            Protocol::Http1 | Protocol::Tcp => UpstreamProto::H1,
            Protocol::Auto if downstream_h2 => UpstreamProto::H2,
            Protocol::Auto => UpstreamProto::H1,
        }
    }

    /// Gets a connection to `ep`: an idle one, a new one, or (when the per-host connection
    /// limit is reached) waits as a pending request if the pending limit allows.
    pub async fn checkout(
        &self,
        ep: &Arc<EndpointState>,
        proto: UpstreamProto,
    ) -> Result<Conn, PoolError> {
        let r = match proto {
            UpstreamProto::H1 => self.checkout_h1(ep).await.map(Conn::H1),
            UpstreamProto::H2 => self.checkout_h2(ep).await,
        };
        // Connect failures count for outlier detection; a connect success does not reset the
        // counters for HTTP (the response does).
        if let Err(e) = &r {
            self.record_connect(ep, Err(e));
        }
        r
    }

    async fn checkout_h1(&self, ep: &Arc<EndpointState>) -> Result<H1Conn, PoolError> {
        let pool = &self.config.connection_pool;
        let mut pending: Option<PendingGuard<'_>> = None;
        let deadline = Instant::now() + self.connect_timeout;
        let generation = self.generation_for(ep);
        loop {
            let notified = ep.released.notified();
            while let Some(mut c) = ep.pop_idle(self.idle_timeout, generation) {
                if c.tx.ready().await.is_ok() {
                    return Ok(c);
                }
            }
            if let Some(slot) = ep.try_reserve_connection(pool.max_connections) {
                drop(pending);
                // Boxed: the connect (TCP, TLS handshake, HTTP/1 handshake) is a large future
                // that only a new connection needs; inline it would grow every request's state.
                return Box::pin(self.connect_h1(ep, slot)).await;
            }
            if pending.is_none() {
                let max = pool.http1_max_pending_requests;
                if self
                    .pending
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n < max).then_some(n + 1)
                    })
                    .is_err()
                {
                    return Err(PoolError::Overflow);
                }
                pending = Some(PendingGuard(&self.pending));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return Err(PoolError::Overflow);
            }
        }
    }

    async fn connect_h1(
        &self,
        ep: &Arc<EndpointState>,
        slot: ConnSlot,
    ) -> Result<H1Conn, PoolError> {
        let addr = ep.addr;
        let (stream, generation) = self.connect_upstream(ep, TlsAlpn::Http1).await?;
        let local = stream.local_addr().ok();
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| PoolError::Handshake { addr, error })?;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/1 connection ended");
            }
        });
        Ok(H1Conn {
            tx,
            local,
            uses: 0,
            generation,
        })
    }

    /// Returns an HTTP/1 connection after its response completed. It is closed instead when
    /// it reached `maxRequestsPerConnection` or is no longer usable.
    pub fn checkin(&self, ep: &EndpointState, mut conn: H1Conn) {
        conn.uses += 1;
        let max = self.config.connection_pool.max_requests_per_connection;
        if (max > 0 && conn.uses >= max)
            || conn.tx.is_closed()
            || conn.generation != self.generation_for(ep)
        {
            return;
        }
        ep.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(IdleH1 {
                conn,
                since: Instant::now(),
            });
        ep.released.notify_one();
    }

    fn h2_from_slot(&self, ep: &EndpointState) -> Option<Conn> {
        let max = self.config.connection_pool.max_requests_per_connection;
        let generation = self.generation_for(ep);
        let mut slot = ep.h2.lock().unwrap_or_else(|p| p.into_inner());
        let s = slot.as_mut()?;
        // Retired on rotation too: in-flight streams finish, new ones go to a new connection.
        if s.tx.is_closed()
            || s.last_used.elapsed() >= self.idle_timeout
            || s.generation != generation
        {
            *slot = None;
            return None;
        }
        s.uses += 1;
        s.last_used = Instant::now();
        let conn = Conn::H2(s.tx.clone(), s.local);
        if max > 0 && s.uses >= max {
            // Retire: in-flight streams keep the connection until they finish.
            *slot = None;
        }
        Some(conn)
    }

    async fn checkout_h2(&self, ep: &Arc<EndpointState>) -> Result<Conn, PoolError> {
        if let Some(c) = self.h2_from_slot(ep) {
            return Ok(c);
        }
        let _connecting = ep.h2_connect.lock().await;
        if let Some(c) = self.h2_from_slot(ep) {
            return Ok(c);
        }
        let slot = ep
            .try_reserve_connection(self.config.connection_pool.max_connections)
            .ok_or(PoolError::Overflow)?;
        // Boxed for the same reason as the HTTP/1 connect.
        Box::pin(self.connect_h2(ep, slot)).await
    }

    async fn connect_h2(&self, ep: &Arc<EndpointState>, slot: ConnSlot) -> Result<Conn, PoolError> {
        let addr = ep.addr;
        let (stream, generation) = self.connect_upstream(ep, TlsAlpn::Http2).await?;
        let local = stream.local_addr().ok();
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| PoolError::Handshake { addr, error })?;
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(%addr, error = %e, "upstream HTTP/2 connection ended");
            }
        });
        *ep.h2.lock().unwrap_or_else(|p| p.into_inner()) = Some(H2Slot {
            tx: tx.clone(),
            local,
            generation,
            uses: 0,
            last_used: Instant::now(),
        });
        Ok(self.h2_from_slot(ep).unwrap_or(Conn::H2(tx, local)))
    }

    /// Opens a connection for opaque forwarding (mTLS without ALPN when the endpoint wants
    /// it), honoring maxConnections (per host).
    pub async fn connect_tcp(
        &self,
        ep: &Arc<EndpointState>,
    ) -> Result<(UpstreamStream, ConnSlot), PoolError> {
        let slot = ep
            .try_reserve_connection(self.config.connection_pool.max_connections)
            .ok_or(PoolError::Overflow)?;
        // For opaque TCP the connect is the only outcome outlier detection sees.
        match self.connect_upstream(ep, TlsAlpn::None).await {
            Ok((s, _)) => {
                self.record_connect(ep, Ok(()));
                Ok((s, slot))
            }
            Err(e) => {
                self.record_connect(ep, Err(&e));
                Err(e)
            }
        }
    }

    /// Closes idle connections past the idle timeout.
    pub fn sweep(&self) {
        for ep in &self.endpoints {
            ep.sweep(self.idle_timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{Reporter, ServiceLabel, base_labels};
    use crate::telemetry::peer::PeerMetadata;

    fn state(name: &str, protocol: Protocol, max_requests: u32) -> Arc<ClusterState> {
        let mut c = Cluster {
            name: name.into(),
            protocol,
            ..Default::default()
        };
        c.connection_pool.http2_max_requests = max_requests;
        let labels = base_labels(
            Reporter::Source,
            &PeerMetadata::default(),
            ServiceLabel::Host(name),
            "http",
        );
        Arc::new(ClusterState::new(c, RequestMetrics::new(labels)))
    }

    #[test]
    fn direction_comes_from_the_name_once() {
        let inbound = state("inbound|8080||", Protocol::Http1, 10);
        assert_eq!(inbound.direction, Direction::Inbound);
        let outbound = state("outbound|80||a.b.svc.cluster.local", Protocol::Http1, 10);
        assert_eq!(outbound.direction, Direction::Outbound);
    }

    #[test]
    fn the_circuit_breaker_counts_active_requests() {
        let c = state("outbound|80||a", Protocol::Http1, 2);
        let a = c.try_start_request();
        let b = c.try_start_request();
        assert!(a.is_some() && b.is_some());
        assert!(c.try_start_request().is_none(), "http2MaxRequests reached");
        assert_eq!(c.active(), 2);
        drop(a);
        assert!(c.try_start_request().is_some());
    }

    #[test]
    fn upstream_protocol_follows_the_cluster_then_the_client() {
        let up = |p, h2| state("c", p, 1).upstream_proto(h2);
        assert_eq!(up(Protocol::Http2, false), UpstreamProto::H2);
        assert_eq!(up(Protocol::Http1, true), UpstreamProto::H1);
        assert_eq!(up(Protocol::Tcp, true), UpstreamProto::H1);
        assert_eq!(up(Protocol::Auto, true), UpstreamProto::H2);
        assert_eq!(up(Protocol::Auto, false), UpstreamProto::H1);
    }

    #[test]
    fn auto_mtls_needs_the_istio_label() {
        let c = Cluster {
            auto_mtls: true,
            ..Default::default()
        };
        let mut e = Endpoint {
            address: "10.0.0.1:80".parse().unwrap(),
            labels: Default::default(),
            weight: 1,
            workload: None,
        };
        assert!(!wants_mtls(&c, &e));
        e.labels.insert(TLS_MODE_LABEL.into(), "istio".into());
        assert!(wants_mtls(&c, &e));
    }
}
