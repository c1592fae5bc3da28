//! A request in flight: [`InFlight`] owns its [`Finish`] until a response exists, and makes
//! that response one of two ways: a local reply ([`InFlight::reply`], everything from the
//! [`LocalReply`] table) or an upstream's ([`InFlight::upstream`]). Dropped without a
//! response (the downstream closed first), it logs the request with flag DC.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Response, Version};
use hyper::body::Incoming;

use super::body::{ProxyBody, UpstreamBody};
use super::finish::{End, Finish};
use super::headers::response_head_len;
use super::headers::{X_SERVICE_TIME, strip_hop_by_hop};
use super::reply::{LocalReply, NOT_DELIVERED};
use crate::route::{CompiledRoute, Dest};
use crate::shared::Shared;
use crate::telemetry::access_log::LogRecord;
use crate::telemetry::grpc;
use crate::upstream::body::ReqCounts;
use crate::upstream::cluster::{ActiveGuard, ClusterRequest, ClusterState, EndpointState, H1Conn};

/// What an upstream response from a mesh cluster holds until its body ends.
#[derive(Debug)]
pub(crate) struct Held<'a> {
    pub(crate) cluster_req: ClusterRequest,
    pub(crate) active: ActiveGuard,
    /// The HTTP/1 connection, returned to the pool of `cluster`/`ep` when the body completes.
    pub(crate) h1: Option<H1Conn>,
    pub(crate) cluster: &'a Arc<ClusterState>,
    pub(crate) ep: &'a Arc<EndpointState>,
    pub(crate) route: Option<&'a CompiledRoute>,
    pub(crate) dest: Option<&'a Dest>,
}

/// Owns the [`Finish`] while the response is not yet produced; dropping it (the downstream
/// closed before a response) logs the request with flag DC.
#[derive(Debug)]
pub(crate) struct InFlight {
    fin: Option<Box<Finish>>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(mut f) = self.fin.take() {
            f.rec.code = 0;
            f.done(End::DownstreamGone, 0);
        }
    }
}

impl InFlight {
    /// A request that started at `started` and whose body bytes are counted in `received`.
    pub(crate) fn new(
        shared: Arc<Shared>,
        rec: Box<LogRecord>,
        started: Instant,
        received: Arc<ReqCounts>,
    ) -> Self {
        InFlight {
            fin: Some(Box::new(Finish {
                shared,
                rec,
                started,
                received,
                response_head: 0,
                grpc_status: None,
                response_messages: 0,
                echo: None,
                metrics: None,
                pool: None,
                cluster_req: None,
                active: None,
                trace: None,
            })),
        }
    }

    pub(crate) fn fin(&mut self) -> &mut Finish {
        match self.fin.as_mut() {
            Some(f) => f,
            None => unreachable!("InFlight used after completion"),
        }
    }

    fn take(&mut self) -> Box<Finish> {
        match self.fin.take() {
            Some(f) => f,
            None => unreachable!("finish taken twice"),
        }
    }

    /// Sends a locally generated response and logs it: status, flag, details, body and
    /// header all come from `reply`.
    pub(crate) fn reply(&mut self, reply: LocalReply, version: Version) -> Response<ProxyBody> {
        let transport_failure = reply.transport_failure();
        let p = reply.parts();
        let len = p.body.len() as u64;
        let has_body = !p.body.is_empty();
        let mut resp = Response::new(ProxyBody::full(p.body));
        *resp.status_mut() = LocalReply::status_code(p.status);
        *resp.version_mut() = version;
        if has_body {
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        }
        if let Some((name, value)) = p.header {
            resp.headers_mut().insert(name.clone(), value);
        }
        let mut f = self.take();
        if let Some(own) = &f.echo {
            own.insert(resp.headers_mut());
        }
        // hyper adds `content-length` to a local reply.
        let content_length = 16 + len.checked_ilog10().map_or(1, |d| d as u64 + 1) + 2;
        f.response_head = response_head_len(resp.status(), resp.headers()) + content_length;
        if transport_failure.is_some() {
            f.rec.transport_failure = transport_failure;
        }
        f.rec.code = p.status;
        f.rec.flags |= p.flags;
        f.rec.details = p.details;
        f.done(End::Complete, len);
        resp
    }

    /// Streams an upstream response downstream: hop-by-hop headers go; a mesh cluster's
    /// response (`held`) also loses the not-delivered marker (only a skein proxy's own 503
    /// may carry it, and only to the next proxy), gets the route's header operations and
    /// `x-envoy-upstream-service-time`, and keeps its connection and counters until its body
    /// ends.
    pub(crate) fn upstream(
        &mut self,
        resp: Response<Incoming>,
        sent_at: Instant,
        held: Option<Held<'_>>,
        version: Version,
    ) -> Response<ProxyBody> {
        let service_ms = sent_at.elapsed().as_millis() as u64;
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        let mut fin = self.take();
        if let Some(h) = held {
            parts.headers.remove(&NOT_DELIVERED);
            if let Some(r) = h.route {
                r.ops.response.apply(&mut parts.headers);
            }
            if let Some(d) = h.dest {
                d.ops.response.apply(&mut parts.headers);
            }
            parts
                .headers
                .insert(X_SERVICE_TIME.clone(), HeaderValue::from(service_ms));
            fin.cluster_req = Some(h.cluster_req);
            fin.pool = h.h1.map(|c| (Arc::clone(h.cluster), Arc::clone(h.ep), c));
            fin.active = Some(h.active);
        }
        parts.version = version;
        if fin.received.grpc {
            fin.grpc_status = grpc::status(&parts.headers);
        }
        fin.response_head = response_head_len(parts.status, &parts.headers);
        fin.rec.code = parts.status.as_u16();
        if let Some(p) = fin
            .rec
            .policy
            .as_ref()
            .filter(|p| !p.response_headers.is_empty())
            .cloned()
        {
            p.capture_response(&parts.headers, &mut fin.rec);
        }
        fin.rec.upstream_service_time = Some(service_ms);
        fin.rec.details = std::borrow::Cow::Borrowed("via_upstream");
        Response::from_parts(parts, ProxyBody::Upstream(UpstreamBody::new(body, fin)))
    }
}
