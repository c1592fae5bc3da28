//! One upstream host: its counters, its connection pool (the HTTP/1 idle stack and the
//! HTTP/2 slot) and its outlier-detection flags.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::time::Instant;

use hyper::client::conn::{http1, http2};
use tokio::sync::Notify;

use crate::telemetry::metrics::{PeerMetricsCache, RequestMetrics, with_destination_peer};
use crate::telemetry::peer::PeerMetadata;
use crate::upstream::body::ReqBody;

/// Which HTTP version to speak upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamProto {
    /// HTTP/1.1.
    H1,
    /// HTTP/2 (prior knowledge).
    H2,
}

/// One upstream host.
#[derive(Debug)]
pub struct EndpointState {
    /// Address.
    pub addr: SocketAddr,
    /// Load balancing weight.
    pub weight: u32,
    /// Connections to this endpoint use Istio mTLS.
    pub mtls: bool,
    /// Outlier detection counters and ejection flags.
    pub outlier: HostOutlier,
    pub(super) active: AtomicU64,
    pub(super) total: AtomicU64,
    pub(super) connections: AtomicU32,
    pub(super) idle: Mutex<Vec<IdleH1>>,
    pub(super) h2: Mutex<Option<H2Slot>>,
    pub(super) h2_connect: tokio::sync::Mutex<()>,
    pub(super) released: Notify,
    /// The metrics of responses whose peer metadata this endpoint sent (mesh endpoints).
    pub peer_metrics: PeerMetricsCache,
    /// The URI SAN of the certificate this endpoint presented on its last mTLS connection
    /// (`destination_principal` on the source side).
    pub peer_principal: arc_swap::ArcSwapOption<String>,
    /// The workload the control plane says is behind this endpoint (outbound clusters).
    workload: Option<PeerMetadata>,
    /// The source-side metrics labelled with `workload`, made on first use.
    workload_metrics: OnceLock<Arc<RequestMetrics>>,
}

#[derive(Debug)]
pub(super) struct IdleH1 {
    pub(super) conn: H1Conn,
    pub(super) since: Instant,
}

#[derive(Debug)]
pub(super) struct H2Slot {
    pub(super) tx: http2::SendRequest<ReqBody>,
    pub(super) local: Option<SocketAddr>,
    pub(super) generation: u64,
    pub(super) uses: u32,
    pub(super) last_used: Instant,
}

/// A pooled HTTP/1.1 connection.
#[derive(Debug)]
pub struct H1Conn {
    /// Request sender.
    pub tx: http1::SendRequest<ReqBody>,
    /// Local address of the upstream connection.
    pub local: Option<SocketAddr>,
    pub(super) uses: u32,
    /// Identity generation the connection was made with (0: plaintext).
    pub(super) generation: u64,
}

/// A checked-out upstream connection.
#[derive(Debug)]
pub enum Conn {
    /// HTTP/1.1, exclusively ours until checked in.
    H1(H1Conn),
    /// HTTP/2, shared.
    H2(http2::SendRequest<ReqBody>, Option<SocketAddr>),
}

impl Conn {
    /// Local address of the upstream connection.
    pub fn local(&self) -> Option<SocketAddr> {
        match self {
            Conn::H1(c) => c.local,
            Conn::H2(_, l) => *l,
        }
    }
}

/// Holds one unit of an endpoint's connection count; released on drop.
#[derive(Debug)]
pub struct ConnSlot {
    pub(super) ep: Weak<EndpointState>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let Some(ep) = self.ep.upgrade() {
            ep.connections.fetch_sub(1, Ordering::AcqRel);
            ep.released.notify_one();
        }
    }
}

impl EndpointState {
    /// A fresh endpoint.
    pub fn new(addr: SocketAddr, weight: u32) -> Self {
        EndpointState {
            addr,
            weight,
            mtls: false,
            outlier: HostOutlier::new(0),
            active: AtomicU64::new(0),
            total: AtomicU64::new(0),
            connections: AtomicU32::new(0),
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connect: tokio::sync::Mutex::new(()),
            released: Notify::new(),
            peer_metrics: PeerMetricsCache::default(),
            peer_principal: arc_swap::ArcSwapOption::empty(),
            workload: None,
            workload_metrics: OnceLock::new(),
        }
    }

    /// Active requests (and TCP connections) on this endpoint.
    pub fn active(&self) -> u64 {
        self.active.load(Ordering::Relaxed)
    }

    /// Requests (and TCP connections) ever sent to this endpoint.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Open upstream connections.
    pub fn connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Marks a request as started; the guard ends it.
    pub fn start_request(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            ep: Arc::clone(self),
        }
    }

    /// Takes one unit of the connection limit, if below `max`.
    pub fn try_reserve_connection(self: &Arc<Self>, max: u32) -> Option<ConnSlot> {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| ConnSlot {
                ep: Arc::downgrade(self),
            })
    }

    /// Sets the endpoint's index in its cluster (outlier detection bookkeeping).
    pub fn with_index(mut self, index: usize) -> Self {
        self.outlier = HostOutlier::new(index);
        self
    }

    /// The workload behind this endpoint (the snapshot's endpoint metadata): the source
    /// reporter's destination labels when the peer does not say who it is.
    pub fn with_workload(mut self, w: Option<&skein_snapshot::EndpointWorkload>) -> Self {
        self.workload = w.map(PeerMetadata::from_endpoint);
        self
    }

    /// The source-side metrics of requests the peer did not label, as Istio falls back to the
    /// endpoint's metadata: `cluster`'s labels with this endpoint's workload as the
    /// destination. Made once per endpoint, then a pointer copy per request. None: the
    /// endpoint names no workload (the cluster's labels apply).
    pub fn workload_metrics(&self, cluster: &RequestMetrics) -> Option<&Arc<RequestMetrics>> {
        let w = self.workload.as_ref()?;
        Some(self.workload_metrics.get_or_init(|| {
            Arc::new(RequestMetrics::new(with_destination_peer(
                cluster.base(),
                w,
            )))
        }))
    }

    /// Marks connections to this endpoint as mTLS.
    pub fn with_mtls(mut self, mtls: bool) -> Self {
        self.mtls = mtls;
        self
    }

    pub(super) fn pop_idle(&self, idle_timeout: Duration, generation: u64) -> Option<H1Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(c) = idle.pop() {
            // A connection made with a rotated-out certificate is closed, not reused.
            if c.conn.tx.is_closed()
                || c.since.elapsed() >= idle_timeout
                || c.conn.generation != generation
            {
                continue;
            }
            return Some(c.conn);
        }
        None
    }

    /// Closes idle connections older than `idle_timeout`.
    pub fn sweep(&self, idle_timeout: Duration) {
        {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|c| !c.conn.tx.is_closed() && c.since.elapsed() < idle_timeout);
        }
        let mut h2 = self.h2.lock().unwrap_or_else(|p| p.into_inner());
        if h2
            .as_ref()
            .is_some_and(|s| s.tx.is_closed() || s.last_used.elapsed() >= idle_timeout)
        {
            *h2 = None;
        }
    }

    /// Drops every pooled connection (cluster removed).
    pub fn close_all(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
        *self.h2.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Ends an active request on drop.
#[derive(Debug)]
pub struct ActiveGuard {
    pub(super) ep: Arc<EndpointState>,
}

impl ActiveGuard {}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.ep.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The per-endpoint part kept in [`EndpointState`]: counters and flags read on the request
/// path.
#[derive(Debug, Default)]
pub struct HostOutlier {
    pub(super) index: usize,
    pub(super) consecutive_5xx: AtomicU32,
    pub(super) consecutive_gateway: AtomicU32,
    pub(super) ejected: AtomicBool,
    pub(super) skipped: AtomicBool,
}

impl HostOutlier {
    /// State for the endpoint at `index` in its cluster.
    pub fn new(index: usize) -> HostOutlier {
        HostOutlier {
            index,
            ..Default::default()
        }
    }

    #[cfg(test)]
    /// The endpoint is ejected (Envoy's `/failed_outlier_check`), panic or not.
    pub fn ejected(&self) -> bool {
        self.ejected.load(Ordering::Relaxed)
    }

    /// The load balancer skips the endpoint: ejected and the cluster is not in panic.
    pub fn skipped(&self) -> bool {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Consecutive 5xx (and connect failures) so far.
    pub fn consecutive_5xx(&self) -> u32 {
        self.consecutive_5xx.load(Ordering::Relaxed)
    }

    /// Consecutive gateway errors so far.
    pub fn consecutive_gateway(&self) -> u32 {
        self.consecutive_gateway.load(Ordering::Relaxed)
    }

    pub(super) fn reset(&self) {
        // Read first: a healthy endpoint's counters are 0 and stay unwritten (no cache-line
        // traffic between workers).
        if self.consecutive_5xx.load(Ordering::Relaxed) != 0 {
            self.consecutive_5xx.store(0, Ordering::Relaxed);
        }
        if self.consecutive_gateway.load(Ordering::Relaxed) != 0 {
            self.consecutive_gateway.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{Reporter, ServiceLabel, base_labels};
    use skein_snapshot::EndpointWorkload;

    fn get<'a>(m: &'a RequestMetrics, key: &str) -> &'a str {
        m.base()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {key}"))
    }

    fn cluster() -> RequestMetrics {
        let local = PeerMetadata {
            workload: "web".into(),
            namespace: "blog".into(),
            ..Default::default()
        };
        RequestMetrics::new(base_labels(
            Reporter::Source,
            &local,
            ServiceLabel::Host("mysql.db.svc.cluster.local"),
            "tcp",
        ))
    }

    #[test]
    fn an_endpoint_without_a_workload_keeps_the_clusters_labels() {
        let ep = EndpointState::new("10.0.0.1:3306".parse().unwrap(), 1).with_workload(None);
        assert!(ep.workload_metrics(&cluster()).is_none());
    }

    #[test]
    fn an_endpoints_workload_names_the_destination_once() {
        let w = EndpointWorkload {
            name: "mysql".into(),
            namespace: "db".into(),
            canonical_service: "mysql".into(),
            canonical_revision: "latest".into(),
            cluster: "Kubernetes".into(),
        };
        let ep = EndpointState::new("10.0.0.1:3306".parse().unwrap(), 1).with_workload(Some(&w));
        let c = cluster();
        let m = ep.workload_metrics(&c).unwrap();
        for (k, v) in [
            ("destination_workload", "mysql"),
            ("destination_workload_namespace", "db"),
            ("destination_canonical_service", "mysql"),
            ("destination_canonical_revision", "latest"),
            ("destination_cluster", "Kubernetes"),
            ("destination_service_namespace", "db"),
            // What the endpoint metadata does not carry stays unknown.
            ("destination_app", "unknown"),
            ("destination_version", "unknown"),
            ("destination_principal", "unknown"),
            // The local side and the service are the cluster's.
            ("source_workload", "web"),
            ("destination_service", "mysql.db.svc.cluster.local"),
        ] {
            assert_eq!(get(m, k), v, "{k}");
        }
        // Resolved once: later requests share the same series handles.
        assert!(Arc::ptr_eq(m, ep.workload_metrics(&c).unwrap()));
    }
}
