//! The request's single end: [`Finish`] runs the bookkeeping once (pool return, counters,
//! metrics, access log) when the response body ends, however it ends ([`End`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::shared::Shared;
use crate::telemetry::access_log::{LogRecord, ResponseFlags};
use crate::telemetry::exchange::OwnPeer;
use crate::telemetry::grpc;
use crate::telemetry::metrics::{Finished, GrpcFinished, RequestMetrics};
use crate::telemetry::trace::Active;
use crate::upstream::body::ReqCounts;
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
    pub(super) received: Arc<ReqCounts>,
    /// The response head's wire size (set when the response is made).
    pub(super) response_head: u64,
    /// The response's `grpc-status` (headers of a trailers-only response, or trailers).
    pub(super) grpc_status: Option<u32>,
    /// gRPC messages sent downstream.
    pub(super) response_messages: u64,
    /// Inbound: the proxy's own exchange headers, answered on every response (local replies
    /// too) because the caller sent its own.
    pub(crate) echo: Option<Arc<OwnPeer>>,
    pub(crate) metrics: Option<Arc<RequestMetrics>>,
    pub(super) pool: Option<(Arc<ClusterState>, Arc<EndpointState>, H1Conn)>,
    pub(super) cluster_req: Option<ClusterRequest>,
    pub(super) active: Option<ActiveGuard>,
    /// The request's span, when it is sampled and reported.
    pub(crate) trace: Option<Box<Active>>,
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
        rec.bytes_received = self.received.body_bytes.load(Ordering::Relaxed);
        rec.bytes_sent = sent;
        if let Some(m) = &self.metrics {
            // Istio infers a gRPC status from the HTTP status when the response had none.
            let grpc = self.received.grpc.then(|| GrpcFinished {
                status: self
                    .grpc_status
                    .or_else(|| (rec.code != 0).then(|| grpc::from_http(rec.code))),
                request_messages: self.received.messages.load(Ordering::Relaxed),
                response_messages: self.response_messages,
            });
            let sent_head = if rec.code == 0 { 0 } else { self.response_head };
            let f = Finished {
                code: rec.code,
                flags: rec.flags,
                duration: elapsed,
                request_bytes: self.received.head_bytes + rec.bytes_received,
                response_bytes: sent_head + sent,
                grpc,
            };
            match rec.overrides.as_deref() {
                None => m.record(&self.shared.metrics, &f),
                Some(ov) => {
                    let applied = crate::telemetry::metrics::overrides::Applied {
                        overrides: ov,
                        client: rec.client,
                        attrs: &*rec,
                    };
                    m.record_with(&self.shared.metrics, &f, &applied);
                }
            }
        }
        if let Some(t) = self.trace.take()
            && let Some(dest) = t.cfg.dest.clone()
        {
            self.shared.traces.send(&dest, t.finish(&rec, elapsed));
        }
        if rec.policy.is_some() {
            self.shared.log_access(rec);
        }
    }
}
