//! The request's single end: [`Finish`] runs the bookkeeping once (pool return, counters,
//! metrics, access log) when the response body ends, however it ends ([`End`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::shared::Shared;
use crate::telemetry::access_log::{LogRecord, ResponseFlags};
use crate::telemetry::metrics::RequestMetrics;
use crate::upstream::cluster::{ActiveGuard, ClusterRequest, ClusterState, EndpointState, H1Conn};

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Fully sent.
    Complete,
    /// The upstream body failed.
    UpstreamError,
    /// The downstream went away first.
    DownstreamGone,
}

/// Bookkeeping run once when a request ends: pool return, counters, metrics, access log.
#[derive(Debug)]
pub(crate) struct Finish {
    pub(super) shared: Arc<Shared>,
    pub(crate) rec: Box<LogRecord>,
    pub(super) started: Instant,
    pub(super) received: Arc<AtomicU64>,
    pub(crate) metrics: Option<Arc<RequestMetrics>>,
    pub(super) pool: Option<(Arc<ClusterState>, Arc<EndpointState>, H1Conn)>,
    pub(super) cluster_req: Option<ClusterRequest>,
    pub(super) active: Option<ActiveGuard>,
}

impl Finish {
    /// Records the end of the request.
    pub(crate) fn done(mut self, end: End, sent: u64) {
        match end {
            End::Complete => {
                if let Some((cluster, ep, conn)) = self.pool.take() {
                    cluster.checkin(&ep, conn);
                }
            }
            End::UpstreamError => self.rec.flags |= ResponseFlags::UC,
            End::DownstreamGone => self.rec.flags |= ResponseFlags::DC,
        }
        self.pool = None;
        self.cluster_req = None;
        self.active = None;
        let elapsed = self.started.elapsed();
        let mut rec = self.rec;
        rec.duration_ms = elapsed.as_millis() as u64;
        rec.bytes_received = self.received.load(Ordering::Relaxed);
        rec.bytes_sent = sent;
        if let Some(m) = &self.metrics {
            match rec.overrides.as_deref() {
                None => m.record(&self.shared.metrics, rec.code, rec.flags, elapsed),
                Some(ov) => {
                    let applied = crate::telemetry::overrides::Applied {
                        overrides: ov,
                        client: rec.client,
                        attrs: &*rec,
                    };
                    m.record_with(&self.shared.metrics, rec.code, rec.flags, elapsed, &applied);
                }
            }
        }
        if rec.policy.is_some() {
            self.shared.log_access(rec);
        }
    }
}
