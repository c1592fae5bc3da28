//! Per-connection facts, shared by the HTTP and TCP paths: addresses, SNI, the mTLS peer.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use skein_snapshot::names::Direction;

use crate::identity::PeerIdentity;
use crate::telemetry::metrics::{RequestMetrics, with_peer};
use crate::upstream::cluster::ClusterState;

/// Per-connection facts.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// Local address.
    pub(crate) local: SocketAddr,
    /// Peer address.
    pub(crate) remote: SocketAddr,
    /// TLS SNI, if any.
    pub(crate) sni: Option<Arc<str>>,
    /// The mTLS peer's SPIFFE identity (inbound mTLS connections only).
    pub(crate) peer: Option<Arc<PeerIdentity>>,
    /// This connection's `x-forwarded-client-cert` element (inbound mTLS only), built once.
    pub(crate) xfcc: Option<HeaderValue>,
    /// Inbound metrics labelled with this connection's peer, made on its first request.
    pub(crate) inbound_metrics: OnceLock<Arc<RequestMetrics>>,
}

impl ConnInfo {
    /// A plaintext connection.
    pub(crate) fn plain(local: SocketAddr, remote: SocketAddr) -> Self {
        ConnInfo {
            local,
            remote,
            sni: None,
            peer: None,
            xfcc: None,
            inbound_metrics: OnceLock::new(),
        }
    }

    /// The metrics a request on this connection to `cluster` counts in: inbound ones carry
    /// the peer.
    pub(crate) fn metrics_for(&self, cluster: &ClusterState) -> Arc<RequestMetrics> {
        if cluster.direction == Direction::Outbound {
            return Arc::clone(&cluster.metrics);
        }
        Arc::clone(self.inbound_metrics.get_or_init(|| {
            Arc::new(RequestMetrics::new(with_peer(
                cluster.metrics.base(),
                self.peer.as_deref(),
            )))
        }))
    }
}
