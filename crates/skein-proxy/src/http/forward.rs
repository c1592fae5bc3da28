//! Phase 4: forward to a cluster. The circuit breaker and the load balancer pick a host;
//! then tries, each bounded by the per-try and the route timeout, until one answers or the
//! route's retry policy (and the cluster's retry budget) says stop.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use http::header::{HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use skein_snapshot::names::Direction;
use tokio::time::Instant as Deadline;

use super::body::ProxyBody;
use super::headers::{GRPC_STATUS, X_ATTEMPT_COUNT, clone_head, prepare_upstream};
use super::inflight::{Held, InFlight};
use super::reply::{LocalReply, NOT_DELIVERED};
use super::request::Prepared;
use crate::conn::ConnInfo;
use crate::route::retry::{Failure, REPLAY_LIMIT, RetryPolicy, backoff};
use crate::route::{Action, CompiledRoute, Dest};
use crate::telemetry::access_log::ResponseFlags;
use crate::telemetry::exchange::OwnPeer;
use crate::telemetry::metrics::{RequestMetrics, with_destination_peer, with_upstream_principals};
use crate::telemetry::peer::take_headers;
use crate::telemetry::trace::Active;
use crate::upstream::body::{BodyCopy, ReqBody};
use crate::upstream::budget::RetryGuard;
use crate::upstream::cluster::{
    ActiveGuard, ClusterState, Conn, EndpointState, H1Conn, PoolError, UpstreamProto,
};
use crate::upstream::lb::PickCtx;

/// The route's retry policy when it has none to apply (inbound, faults).
static NO_RETRY: RetryPolicy = RetryPolicy::none();

/// Where a request goes: the cluster, and the route and destination that chose it (none
/// on an inbound listener).
#[derive(Debug)]
pub(crate) struct Target<'s> {
    pub(crate) cluster: Arc<ClusterState>,
    pub(crate) route: Option<&'s CompiledRoute>,
    pub(crate) dest: Option<&'s Dest>,
    /// The route's match block that matched (for the span's name).
    pub(crate) block: usize,
    pub(crate) authority: Option<HeaderValue>,
    /// Inbound: the caller's `x-envoy-peer-metadata` (already taken off the request).
    pub(crate) peer: Option<HeaderValue>,
    /// Inbound: the proxy's own pair, answered because the caller sent its own.
    pub(crate) echo: Option<Arc<OwnPeer>>,
}

impl Target<'_> {
    /// The app behind an inbound listener, for a caller that sent `peer` metadata or none.
    pub(crate) fn inbound(
        cluster: Arc<ClusterState>,
        authority: Option<HeaderValue>,
        peer: Option<HeaderValue>,
        own: Option<&Arc<OwnPeer>>,
    ) -> Self {
        let echo = peer.as_ref().and(own).cloned();
        Target {
            cluster,
            route: None,
            dest: None,
            block: 0,
            authority,
            peer,
            echo,
        }
    }
}

/// Response headers from the upstream.
struct Answered {
    resp: Response<Incoming>,
    h1: Option<H1Conn>,
    sent_at: Instant,
    active: ActiveGuard,
}

/// How one try went.
enum TryOutcome {
    /// Response headers arrived.
    Response(Answered),
    /// No connection: the request was not sent and comes back.
    ConnectFailed(PoolError, Request<ReqBody>),
    /// The connection failed before response headers; `back` is the request when hyper
    /// handed it back unsent (nothing was processed).
    Reset {
        error: String,
        back: Option<Request<ReqBody>>,
    },
}

/// Forwards the request to `target`'s cluster and streams the answer back.
pub(crate) async fn forward(
    inflight: &mut InFlight,
    conn: &ConnInfo,
    p: Prepared,
    target: Target<'_>,
) -> Result<Response<ProxyBody>, LocalReply> {
    let Target {
        cluster,
        route,
        dest,
        block,
        authority,
        peer,
        echo,
    } = target;
    let f = inflight.fin();
    f.rec.upstream_cluster = Some(Arc::clone(&cluster.name));
    if f.echo.is_none() {
        f.echo.clone_from(&echo);
    }
    if let (Some(t), Some(r)) = (f.trace.as_deref_mut(), route) {
        t.name = route_operation(r, block, &cluster.name, authority.as_ref());
    }
    f.metrics = Some(match &peer {
        Some(v) => conn.metrics_with_peer(&cluster, v),
        None => conn.metrics_for(&cluster),
    });
    let Some(cluster_req) = cluster.try_start_request() else {
        return Err(LocalReply::Overflow);
    };
    let pick_ctx = PickCtx {
        headers: Some(p.req.headers()),
        query: p.req.uri().query(),
        source_ip: conn.remote.ip(),
    };
    let Some(idx) = cluster.pick(&pick_ctx) else {
        return Err(LocalReply::NoHealthyUpstream);
    };
    let mut ep = Arc::clone(&cluster.endpoints[idx]);
    let trace = inflight.fin().trace.as_deref_mut();
    let (mut tries, mut up_req) =
        Tries::new(&cluster, route, p, authority, conn.remote.ip(), trace);
    // The tries, awaited here rather than in helpers: each nested future would be one more
    // copy of the request in the handler's state, which hyper moves on every request.
    let (mut answer, ep) = loop {
        let deadline = tries.start_try(inflight, &ep, &mut up_req);
        // The try's future is built inside each arm: bound to a local first, it would be
        // stored twice in this future's state (the local and the `Timeout` holding it).
        let mut outcome = match deadline {
            Some(d) => tokio::time::timeout_at(
                d,
                try_once(&cluster, &ep, tries.proto, up_req, &tries.local),
            )
            .await
            .ok(),
            None => Some(try_once(&cluster, &ep, tries.proto, up_req, &tries.local).await),
        };
        tries.end_try(inflight, &ep, &outcome)?;
        let failure = tries.failure(&outcome, ep.mtls);
        let Some(req) = tries.retry(inflight, failure, &mut outcome) else {
            break tries.last(outcome, ep)?;
        };
        tracing::debug!(cluster = %cluster.name, host = %ep.addr, ?failure, attempt = tries.attempt, "retrying");
        drop(outcome);
        tries.pause().await?;
        ep = tries.next_endpoint(ep);
        up_req = req;
    };
    // A mesh peer's answer says who it is: its labels go into this request's metrics, its
    // headers no further.
    if cluster.exchange.is_some()
        && ep.mtls
        && let Some(v) = take_headers(answer.resp.headers_mut())
    {
        let m = ep.peer_metrics.get(&v, |peer| match peer {
            Some(p) => {
                let local = cluster.identity.as_ref().and_then(|s| s.current());
                let labels = with_upstream_principals(
                    &with_destination_peer(cluster.metrics.base(), p),
                    local.as_ref().map(|id| id.spiffe_id.as_str()),
                    ep.peer_principal.load().as_deref().map(String::as_str),
                );
                Arc::new(RequestMetrics::new(labels))
            }
            None => Arc::clone(
                ep.workload_metrics(&cluster.metrics)
                    .unwrap_or(&cluster.metrics),
            ),
        });
        inflight.fin().metrics = Some(m);
    } else if cluster.direction == Direction::Outbound
        && let Some(m) = ep.workload_metrics(&cluster.metrics)
    {
        // No peer answered (no sidecar there, or it said nothing): Istio labels the
        // destination from the endpoint's metadata.
        inflight.fin().metrics = Some(Arc::clone(m));
    }
    let held = Held {
        cluster_req,
        active: answer.active,
        h1: answer.h1,
        cluster: &cluster,
        ep: &ep,
        route,
        dest,
    };
    if cluster.direction == Direction::Inbound {
        // Only this proxy speaks for the workload: the app's own exchange headers go.
        take_headers(answer.resp.headers_mut());
        if let Some(own) = &echo {
            own.insert(answer.resp.headers_mut());
        }
    }
    Ok(inflight.upstream(answer.resp, answer.sent_at, Some(held), tries.version))
}

/// The tries of one request.
struct Tries<'a> {
    cluster: &'a ClusterState,
    policy: &'a RetryPolicy,
    /// `x-envoy-attempt-count` is set (routed requests).
    count_attempts: bool,
    /// The route timeout.
    deadline: Option<Deadline>,
    /// A peer's not-delivered 503 counts as a connect failure (see [`failure_of`]).
    bodiless: bool,
    safe: bool,
    proto: UpstreamProto,
    version: Version,
    /// For replays: the request head, and the body as copied so far.
    head: Option<Request<()>>,
    copy: Option<BodyCopy>,
    tried: Vec<SocketAddr>,
    attempt: u32,
    retry_slot: Option<RetryGuard>,
    source_ip: IpAddr,
    /// The local address of the last try's connection (for the log).
    local: Mutex<Option<SocketAddr>>,
}

impl<'a> Tries<'a> {
    /// The tries' state and the first try's request (body teed when a retry or a mirror may
    /// need it again; the mirror copy is sent from here).
    fn new(
        cluster: &'a ClusterState,
        route: Option<&'a CompiledRoute>,
        p: Prepared,
        authority: Option<HeaderValue>,
        source_ip: IpAddr,
        trace: Option<&mut Active>,
    ) -> (Self, Request<ReqBody>) {
        let Prepared {
            req,
            version,
            received,
            ..
        } = p;
        let proto = cluster.upstream_proto(req.version() == Version::HTTP_2);
        let policy = route.map_or(&NO_RETRY, |r| &r.retry);
        let deadline = route.and_then(|r| r.timeout).map(|t| Deadline::now() + t);
        let bodiless = http_body::Body::is_end_stream(req.body());
        let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        let mirror = route.and_then(|r| r.mirror.as_ref()).filter(|m| m.sample());
        let (parts, body) = req.into_parts();
        let (body, copy) = if policy.attempts > 0 || mirror.is_some() {
            let (b, c) = ReqBody::teed(body, received, REPLAY_LIMIT);
            (b, Some(c))
        } else {
            (ReqBody::new(body, received), None)
        };
        let mut up_req = Request::from_parts(parts, body);
        if let (Some(m), Some(c)) = (mirror, &copy) {
            let h2 = version == Version::HTTP_2;
            super::mirror::spawn(m, &up_req, authority.clone(), c.clone(), h2, trace);
        }
        prepare_upstream(&mut up_req, authority, proto);
        let head = (policy.attempts > 0).then(|| clone_head(&up_req));
        let tries = Tries {
            cluster,
            policy,
            count_attempts: route.is_some(),
            deadline,
            bodiless,
            safe,
            proto,
            version,
            head,
            copy,
            tried: Vec::new(),
            attempt: 0,
            retry_slot: None,
            source_ip,
            local: Mutex::new(None),
        };
        (tries, up_req)
    }

    /// Before a try on `ep`: the attempt count, the log's host, and the try's deadline (the
    /// per-try timeout or the route's, whichever is first).
    fn start_try(
        &mut self,
        inflight: &mut InFlight,
        ep: &EndpointState,
        up_req: &mut Request<ReqBody>,
    ) -> Option<Deadline> {
        self.attempt += 1;
        if self.count_attempts {
            up_req
                .headers_mut()
                .insert(X_ATTEMPT_COUNT.clone(), HeaderValue::from(self.attempt));
        }
        let f = inflight.fin();
        f.rec.upstream_host = Some(ep.addr);
        if let Some(t) = f.trace.as_deref_mut() {
            t.start_try(self.attempt, up_req.headers_mut());
        }
        // Peer metadata goes to mesh endpoints only (mTLS), never to plaintext ones.
        if let Some(own) = &self.cluster.exchange {
            if ep.mtls {
                own.insert(up_req.headers_mut());
            } else {
                take_headers(up_req.headers_mut());
            }
        }
        let per_try = self.policy.per_try_timeout.map(|d| Deadline::now() + d);
        earliest(per_try, self.deadline)
    }

    /// After a try (None: it timed out): the log's local address, the answers that end the
    /// request at once (the route timeout, a per-host overflow), and outlier detection.
    fn end_try(
        &self,
        inflight: &mut InFlight,
        ep: &EndpointState,
        outcome: &Option<TryOutcome>,
    ) -> Result<(), LocalReply> {
        let f = inflight.fin();
        f.rec.upstream_local = self.local.lock().ok().and_then(|l| *l);
        if let Some(t) = f.trace.as_deref_mut() {
            let code = match outcome {
                Some(TryOutcome::Response(a)) => a.resp.status().as_u16(),
                _ => 0,
            };
            t.end_try(ep.addr, code);
        }
        if outcome.is_none() && self.deadline.is_some_and(|d| Deadline::now() >= d) {
            return Err(LocalReply::Timeout);
        }
        if let Some(TryOutcome::ConnectFailed(PoolError::Overflow, _)) = outcome {
            // Per-host maxConnections overflow: answered at once, as Envoy does.
            return Err(LocalReply::Overflow);
        }
        self.record_outlier(ep, outcome);
        Ok(())
    }

    /// Waits the backoff before the next try; Err when the route timeout passes first.
    async fn pause(&self) -> Result<(), LocalReply> {
        let pause = backoff(self.attempt);
        match self.deadline {
            Some(d) if Deadline::now() + pause >= d => {
                tokio::time::sleep_until(d).await;
                Err(LocalReply::Timeout)
            }
            _ => {
                tokio::time::sleep(pause).await;
                Ok(())
            }
        }
    }

    /// Outlier detection counts each try (connect failures are counted in `checkout`).
    fn record_outlier(&self, ep: &EndpointState, outcome: &Option<TryOutcome>) {
        match outcome {
            None => self.cluster.record_response(ep, 504),
            Some(TryOutcome::Reset { back: None, .. }) => self.cluster.record_reset(ep),
            Some(TryOutcome::Response(a)) => {
                self.cluster.record_response(ep, a.resp.status().as_u16())
            }
            _ => {}
        }
    }

    /// What went wrong with a try, in the retry policy's terms (`mesh`: the try's host was
    /// reached over mTLS, so it is a mesh peer).
    fn failure(&self, outcome: &Option<TryOutcome>, mesh: bool) -> Failure {
        match outcome {
            None => Failure::PerTryTimeout,
            Some(TryOutcome::ConnectFailed(..)) => Failure::ConnectFailure,
            Some(TryOutcome::Reset { back: Some(_), .. }) => Failure::RefusedStream,
            Some(TryOutcome::Reset { .. }) => Failure::Reset,
            Some(TryOutcome::Response(a)) => failure_of(
                a.resp.status(),
                a.resp.headers(),
                self.bodiless,
                self.safe,
                self.policy,
                mesh,
            ),
        }
    }

    /// The request for the next try, when the policy, the replayable body and the retry
    /// budget all allow one.
    fn retry(
        &mut self,
        inflight: &mut InFlight,
        failure: Failure,
        outcome: &mut Option<TryOutcome>,
    ) -> Option<Request<ReqBody>> {
        let retriable = self.policy.retriable(failure);
        let retries_used = self.attempt - 1;
        if retriable && retries_used >= self.policy.attempts && self.policy.attempts > 0 {
            // Attempts ran out on a retriable failure: the last try's result goes back.
            inflight.fin().rec.flags |= ResponseFlags::URX;
        }
        if !retriable || retries_used >= self.policy.attempts {
            return None;
        }
        let next = self.next_request(outcome)?;
        match self
            .cluster
            .resilience
            .try_retry(self.cluster.active(), &self.cluster.config.connection_pool)
        {
            Some(slot) => self.retry_slot = Some(slot),
            None => {
                // Envoy: a retry refused by the budget / retry circuit breaker is UO.
                tracing::debug!(cluster = %self.cluster.name, "retry budget exhausted");
                inflight.fin().rec.flags |= ResponseFlags::UO;
                return None;
            }
        }
        Some(next)
    }

    /// The unsent request back, or the copied body replayed under the kept head.
    fn next_request(&self, outcome: &mut Option<TryOutcome>) -> Option<Request<ReqBody>> {
        let unsent =
            |r: &mut Request<ReqBody>| std::mem::replace(r, Request::new(ReqBody::empty()));
        match outcome {
            Some(TryOutcome::ConnectFailed(_, r)) => Some(unsent(r)),
            Some(TryOutcome::Reset { back: Some(r), .. }) => Some(unsent(r)),
            _ => match (&self.head, self.copy.as_ref().and_then(BodyCopy::replay)) {
                (Some(h), Some(body)) => {
                    let (parts, ()) = h.clone().into_parts();
                    Some(Request::from_parts(parts, body))
                }
                _ => None,
            },
        }
    }

    /// retryIgnorePreviousHosts: up to 5 picks to find a host not tried yet.
    fn next_endpoint(&mut self, ep: Arc<EndpointState>) -> Arc<EndpointState> {
        self.tried.push(ep.addr);
        let cluster = self.cluster;
        let mut next = None;
        for _ in 0..5 {
            next = cluster.pick(&PickCtx {
                headers: None,
                query: None,
                source_ip: self.source_ip,
            });
            if next.is_some_and(|i| !self.tried.contains(&cluster.endpoints[i].addr)) {
                break;
            }
        }
        match next {
            Some(i) => Arc::clone(&cluster.endpoints[i]),
            None => ep,
        }
    }

    /// No retry: this try's result is the answer.
    fn last(
        &self,
        outcome: Option<TryOutcome>,
        ep: Arc<EndpointState>,
    ) -> Result<(Answered, Arc<EndpointState>), LocalReply> {
        match outcome {
            None => Err(LocalReply::PerTryTimeout),
            Some(TryOutcome::ConnectFailed(e, _)) => Err(e.into()),
            Some(TryOutcome::Reset { error, .. }) => {
                tracing::debug!(%error, cluster = %self.cluster.name, "upstream request failed");
                // The local app went away before answering (its process died): a client
                // sidecar may send a safe request to another pod.
                let to_app = self.cluster.direction == Direction::Inbound;
                Err(LocalReply::Reset { to_app })
            }
            Some(TryOutcome::Response(a)) => Ok((a, ep)),
        }
    }
}

/// Istio's route decorator for a request forwarded to `cluster` by `route` (see
/// [`crate::telemetry::trace::span::route_operation`]): a route split across clusters is
/// named by its VirtualService (the request's host when it has none).
fn route_operation(
    route: &CompiledRoute,
    block: usize,
    cluster: &str,
    authority: Option<&HeaderValue>,
) -> String {
    // As Istio translates a route, zero-weight destinations are dropped: one left is a route
    // to a single cluster.
    let single = match &route.action {
        Action::Route { dests, .. } => {
            let mut prev = 0;
            let weighted = dests.iter().filter(|d| {
                let w = d.upto > prev;
                prev = d.upto;
                w
            });
            weighted.count() <= 1
        }
        _ => false,
    };
    let path = route.matches.get(block).and_then(|m| m.trace_path());
    if !single && !route.virtual_service.is_empty() {
        return crate::telemetry::trace::span::route_operation(
            cluster,
            false,
            path,
            &route.virtual_service,
        );
    }
    let host = authority.and_then(|a| a.to_str().ok()).unwrap_or("");
    let host = crate::authority::lowercase(crate::authority::strip_port(host));
    crate::telemetry::trace::span::route_operation(cluster, single, path, &host)
}

/// The earlier of two optional deadlines.
fn earliest(a: Option<Deadline>, b: Option<Deadline>) -> Option<Deadline> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What a response means to the retry policy. A peer sidecar that could not reach its app
/// marks its 503 (`x-skein-not-delivered`): that counts as a connect failure for a bodiless
/// request (a `reset` one only for a safe method: the app may have acted on it). Only a mesh
/// peer reached over mTLS (`mesh`) can say so: an app or a plaintext upstream cannot make
/// the client retry.
fn failure_of(
    status: StatusCode,
    headers: &HeaderMap,
    bodiless: bool,
    safe: bool,
    policy: &RetryPolicy,
    mesh: bool,
) -> Failure {
    let grpc = headers
        .get(&GRPC_STATUS)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u32>().ok());
    let undelivered = mesh
        && status == StatusCode::SERVICE_UNAVAILABLE
        && bodiless
        && match headers.get(&NOT_DELIVERED).map(HeaderValue::as_bytes) {
            Some(b"connect-failure") => true,
            Some(b"reset") => safe,
            _ => false,
        };
    if undelivered && policy.retriable(Failure::ConnectFailure) {
        Failure::ConnectFailure
    } else {
        Failure::Status(status.as_u16(), grpc)
    }
}

/// One try on `ep`: checkout, send, response headers. A pooled connection can turn out closed
/// just as it is used; when hyper hands the request back unsent, it is sent again on another
/// connection to the same host (at most 3 times).
async fn try_once(
    cluster: &ClusterState,
    ep: &Arc<EndpointState>,
    proto: UpstreamProto,
    mut up_req: Request<ReqBody>,
    local: &Mutex<Option<SocketAddr>>,
) -> TryOutcome {
    let mut upstream = match cluster.checkout(ep, proto).await {
        Ok(c) => c,
        Err(e) => return TryOutcome::ConnectFailed(e, up_req),
    };
    let active = ep.start_request();
    let mut unsent_retries = 0;
    loop {
        if let Ok(mut l) = local.lock() {
            *l = upstream.local();
        }
        let sent_at = Instant::now();
        let (result, h1) = match upstream {
            Conn::H1(mut c) => (c.tx.try_send_request(up_req).await, Some(c)),
            Conn::H2(mut tx, _) => (tx.try_send_request(up_req).await, None),
        };
        let mut e = match result {
            Ok(resp) => {
                let a = Answered {
                    resp,
                    h1,
                    sent_at,
                    active,
                };
                return TryOutcome::Response(a);
            }
            Err(e) => e,
        };
        let error = e.error().to_string();
        match e.take_message() {
            Some(back) if unsent_retries < 3 => {
                unsent_retries += 1;
                up_req = back;
                upstream = match cluster.checkout(ep, proto).await {
                    Ok(c) => c,
                    Err(e) => return TryOutcome::ConnectFailed(e, up_req),
                };
            }
            back => return TryOutcome::Reset { error, back },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::retry::parse_retry_on;

    fn policy(on: &[&str]) -> RetryPolicy {
        let list: Vec<String> = on.iter().map(|s| s.to_string()).collect();
        let (on, codes) = parse_retry_on(&list).unwrap();
        RetryPolicy {
            attempts: 2,
            per_try_timeout: None,
            on,
            codes,
        }
    }

    fn marked(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(NOT_DELIVERED.clone(), HeaderValue::from_static(v));
        h
    }

    #[test]
    fn a_peers_undelivered_503_is_a_connect_failure() {
        let p = policy(&["connect-failure"]);
        let s503 = StatusCode::SERVICE_UNAVAILABLE;
        let f = |h: &HeaderMap, bodiless, safe| failure_of(s503, h, bodiless, safe, &p, true);
        assert_eq!(
            f(&marked("connect-failure"), true, false),
            Failure::ConnectFailure
        );
        assert_eq!(f(&marked("reset"), true, true), Failure::ConnectFailure);
        // The app may have acted on an unsafe request; a body may be gone.
        assert_eq!(f(&marked("reset"), true, false), Failure::Status(503, None));
        assert_eq!(
            f(&marked("connect-failure"), false, true),
            Failure::Status(503, None)
        );
        assert_eq!(f(&HeaderMap::new(), true, true), Failure::Status(503, None));
        // Only under a policy that retries connect failures.
        let none = RetryPolicy::none();
        let h = marked("connect-failure");
        assert_eq!(
            failure_of(s503, &h, true, true, &none, true),
            Failure::Status(503, None)
        );
    }

    #[test]
    fn only_a_mesh_peer_can_mark_a_503_not_delivered() {
        let p = policy(&["connect-failure"]);
        let s503 = StatusCode::SERVICE_UNAVAILABLE;
        // The same marked 503 from an app or a plaintext upstream is just a 503.
        for v in ["connect-failure", "reset"] {
            assert_eq!(
                failure_of(s503, &marked(v), true, true, &p, false),
                Failure::Status(503, None),
                "{v}"
            );
        }
    }

    #[test]
    fn grpc_status_is_read() {
        let mut h = HeaderMap::new();
        h.insert(GRPC_STATUS.clone(), HeaderValue::from_static("14"));
        let f = failure_of(
            StatusCode::OK,
            &h,
            true,
            true,
            &policy(&["unavailable"]),
            true,
        );
        assert_eq!(f, Failure::Status(200, Some(14)));
    }

    #[test]
    fn the_earlier_deadline_bounds_a_try() {
        let now = Deadline::now();
        let later = now + std::time::Duration::from_secs(1);
        assert_eq!(earliest(Some(later), Some(now)), Some(now));
        assert_eq!(earliest(None, Some(later)), Some(later));
        assert_eq!(earliest(Some(now), None), Some(now));
        assert_eq!(earliest(None, None), None);
    }
}
