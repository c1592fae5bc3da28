//! Per-connection facts, shared by the HTTP and TCP paths: addresses, SNI, the mTLS peer.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use http::HeaderValue;
use skein_snapshot::names::Direction;

use crate::identity::PeerIdentity;
use crate::telemetry::metrics::{PeerMetricsCache, RequestMetrics, with_peer, with_source_peer};
use crate::telemetry::peer::PeerMetadata;
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
    /// The proxy's own SPIFFE id on this connection's certificate (inbound mTLS only).
    pub(crate) local_principal: Option<Arc<str>>,
    /// This connection's `x-forwarded-client-cert` element (inbound mTLS only), built once.
    pub(crate) xfcc: Option<HeaderValue>,
    /// Inbound metrics labelled with this connection's peer, made on its first request.
    pub(crate) inbound_metrics: OnceLock<Arc<RequestMetrics>>,
    /// Inbound metrics labelled with the calling workload's peer metadata as well.
    pub(crate) peer_metrics: PeerMetricsCache,
    /// The caller's metadata from the TCP exchange (inbound mTLS with ALPN
    /// `istio-peer-exchange` only).
    pub(crate) exchanged: Option<PeerMetadata>,
}

impl ConnInfo {
    /// A plaintext connection.
    pub(crate) fn plain(local: SocketAddr, remote: SocketAddr) -> Self {
        ConnInfo {
            local,
            remote,
            sni: None,
            peer: None,
            local_principal: None,
            xfcc: None,
            inbound_metrics: OnceLock::new(),
            peer_metrics: PeerMetricsCache::default(),
            exchanged: None,
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
                self.local_principal.as_deref(),
            )))
        }))
    }

    /// The inbound metrics of a request to `cluster` whose caller sent `metadata`
    /// (`x-envoy-peer-metadata`): the connection's, with the caller's workload labels.
    pub(crate) fn metrics_with_peer(
        &self,
        cluster: &ClusterState,
        metadata: &HeaderValue,
    ) -> Arc<RequestMetrics> {
        self.peer_metrics
            .get(metadata, |peer: Option<&PeerMetadata>| {
                let base = self.metrics_for(cluster);
                match peer {
                    Some(p) => Arc::new(RequestMetrics::new(with_source_peer(base.base(), p))),
                    None => base,
                }
            })
    }
}
