//! One HTTP request, in the order it is handled, for outbound, inbound and gateway
//! listeners alike:
//!
//! 1. [`request`]: prepare (authority, hop-by-hop and proxy-owned headers, `x-request-id`,
//!    XFF, the log record) and admit (path form, path normalisation);
//! 2. [`inbound`]: on an inbound listener, XFCC and AuthorizationPolicy; on a gateway,
//!    AuthorizationPolicy;
//! 3. [`outbound`]: otherwise virtual host, route, and the route's action;
//! 4. [`forward`]: tries against the cluster's endpoints (retries, timeouts), or
//!    [`passthrough`] to the address the client asked for.
//!
//! Each phase returns `Result<_, LocalReply>`; [`handle`] turns a [`reply::LocalReply`] into the
//! response, the access-log record and the metrics in one place ([`inflight::InFlight::reply`]).

pub(crate) mod body;
mod finish;
mod forward;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub(crate) mod headers;
mod inbound;
mod inflight;
pub(crate) mod mirror;
mod outbound;
mod passthrough;
pub(crate) mod reply;
mod request;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use crate::config::Limits;
use crate::conn::ConnInfo;
use crate::listen::drain::{ConnToken, DrainSignal};
use crate::listen::limit::{Busy, ConnSlot};
use crate::shared::Shared;
use crate::snapshot::Compiled;
use body::ProxyBody;
use outbound::Routed;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// Sidecar outbound (the app's HTTP proxy).
    Outbound,
    /// Sidecar inbound (in front of the app).
    Inbound,
    /// Gateway.
    Gateway,
}

/// Per-listener context.
#[derive(Debug)]
pub(crate) struct HttpCtx {
    /// Shared proxy state.
    pub(crate) shared: Arc<Shared>,
    /// Role.
    pub(crate) role: Role,
    /// Route config name (outbound and gateway).
    pub(crate) route_config: String,
    /// Which inbound listener this is: the index into `ProxyConfig::inbound` and
    /// `Compiled::inbound` (None for outbound and gateway listeners).
    pub(crate) inbound: Option<usize>,
}

/// Handles one request: the phases, then the one place a local reply becomes the response,
/// the log record and the metrics. The phases are awaited here, not in a helper: every
/// nested future is one more copy of the request in the handler's state, which hyper moves
/// on every request.
/// `busy` counts the request on its connection until its response body has been sent.
async fn handle(
    ctx: Arc<HttpCtx>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    busy: Busy,
) -> Result<Response<ServedBody>, Infallible> {
    let started = Instant::now();
    let max_head = ctx.shared.config.limits.max_request_headers_bytes;
    let head = request::RequestHead::of(&req);
    if req.version() != http::Version::HTTP_2 && head.limit_size > max_head {
        return Ok(headers_too_large().map(|inner| ServedBody { inner, _busy: busy }));
    }
    let snap: Arc<Compiled> = ctx.shared.current.load_full();
    let (mut p, mut inflight) = request::prepare(&ctx, &conn, req, started, &head);
    trace_begin(&ctx, &snap, &mut p, &mut inflight);
    let version = p.version;
    let inflight = &mut inflight;
    let admitted = request::admit(&mut p, inflight);
    // RequestAuthentication (boxed: most workloads have none, and their requests keep a
    // small future and take no allocation).
    let auth = match (&admitted, &snap.jwt) {
        (Ok(()), Some(authn)) if ctx.role != Role::Outbound => {
            // A gateway counts a refused request as one without a route, as a denial.
            let metrics = (ctx.role == Role::Gateway).then_some(&snap.no_route_metrics);
            Box::pin(inbound::authenticate(authn, &mut p, inflight, metrics)).await
        }
        _ => Ok(None),
    };
    let (admitted, auth) = match ctx.role {
        Role::Gateway => {
            let checked = admitted
                .and(auth)
                .and_then(|a| inbound::authorize_gateway(&snap, &conn, &p, a.as_deref(), inflight));
            (checked, Ok(None))
        }
        _ => (admitted, auth),
    };
    let result = match admitted {
        Err(reply) => Err(reply),
        Ok(()) if ctx.role == Role::Inbound => {
            match inbound::authorize(&ctx, &snap, &conn, &mut p, auth, inflight) {
                Ok((cluster, peer)) => {
                    let own = snap.own_peer.as_ref();
                    let target = forward::Target::inbound(cluster, p.authority.clone(), peer, own);
                    forward::forward(inflight, &conn, p, target).await
                }
                Err(reply) => Err(reply),
            }
        }
        // Passthrough and fault injection are boxed: rare paths whose futures would otherwise
        // grow the state of every request (hyper keeps one per connection).
        Ok(()) => match outbound::route(&ctx, &snap, &p, inflight) {
            Ok(Routed::Passthrough(authority)) => {
                Box::pin(passthrough::passthrough(
                    inflight, &snap, &conn, p, &authority,
                ))
                .await
            }
            Ok(Routed::Route(route, block)) => {
                match outbound::act(&snap, route, block, &mut p, inflight) {
                    Ok(outbound::Act::Forward(target)) => {
                        let fault = match &route.fault {
                            Some(f) => {
                                Box::pin(outbound::inject_fault(f, &target, &conn, inflight)).await
                            }
                            None => Ok(()),
                        };
                        match fault {
                            Ok(()) => forward::forward(inflight, &conn, p, target).await,
                            Err(reply) => Err(reply),
                        }
                    }
                    Ok(outbound::Act::Passthrough(authority)) => {
                        Box::pin(passthrough::passthrough(
                            inflight, &snap, &conn, p, &authority,
                        ))
                        .await
                    }
                    Err(reply) => Err(reply),
                }
            }
            Err(reply) => Err(reply),
        },
    };
    let resp = match result {
        Ok(resp) => resp,
        Err(reply) => inflight.reply(reply, version),
    };
    Ok(resp.map(|inner| ServedBody { inner, _busy: busy }))
}

/// Tracing's entry for a request (propagation, sampling, the request's span; see
/// [`crate::telemetry::trace`]). The span ends with the request, in `Finish::done`.
fn trace_begin(
    ctx: &HttpCtx,
    snap: &Compiled,
    p: &mut request::Prepared,
    inflight: &mut inflight::InFlight,
) {
    use crate::telemetry::trace::{self, Kind, span};
    let (kind, gateway) = match ctx.role {
        Role::Inbound => (Kind::Server, false),
        Role::Outbound => (Kind::Client, false),
        Role::Gateway => (Kind::Server, true),
    };
    let authority = p
        .authority
        .as_ref()
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");
    let name = || match ctx.inbound {
        Some(i) => {
            let service = snap
                .inbound
                .get(i)
                .map_or("", |c| c.config.service.as_str());
            let port = ctx
                .shared
                .config
                .inbound
                .get(i)
                .map_or(0, |ib| ib.cluster_port());
            span::inbound_operation(service, port, authority)
        }
        // Replaced by the route's decorator once a route is chosen.
        None => format!("egress {authority}"),
    };
    let headers = p.req.headers_mut();
    if let Some(span) = trace::begin(&snap.tracing, kind, gateway, headers, name) {
        let f = inflight.fin();
        f.rec.request_id = headers.get(&headers::X_REQUEST_ID).cloned();
        f.trace = Some(span);
    }
}

/// A response body that keeps its request counted on the connection until it is sent (a
/// connection still sending a response is not idle, so never shed).
#[derive(Debug)]
struct ServedBody {
    inner: ProxyBody,
    _busy: Busy,
}

impl http_body::Body for ServedBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, hyper::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// `431` for a request head over the limit; the connection closes after it.
fn headers_too_large() -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full("Request Header Fields Too Large"));
    *resp.status_mut() = http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
    resp.headers_mut().insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("close"),
    );
    resp
}

/// The server side of a downstream connection, with the proxy's [`Limits`]: HTTP/1 heads
/// at most `max_request_headers_bytes` and `max_request_headers` (hyper answers `431` and
/// closes); HTTP/2 with its header list size, stream
/// count, windows and keep-alive pings.
fn server_builder(limits: &Limits) -> hyper_util::server::conn::auto::Builder<TokioExecutor> {
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .keep_alive(true)
        // hyper's floor is 8 KiB.
        .max_buf_size(limits.max_request_headers_bytes.max(8192))
        .max_headers(limits.max_request_headers)
        // Timed by `ConnState::head_stalled` instead: hyper's timer also runs while a
        // keep-alive connection waits for its next request, and closing an idle connection
        // races the client reusing it (a request lost, a POST failed).
        .header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_request_headers_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .initial_stream_window_size(limits.h2_stream_window)
        .initial_connection_window_size(limits.h2_connection_window)
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout);
    builder
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on one connection until it closes, the proxy
/// drains, the connection is shed to make room for another, or it has had no request for
/// `idle_timeout` (then it finishes in-flight requests and closes; HTTP/2 sends GOAWAY).
pub(crate) async fn serve_connection<I>(
    io: I,
    ctx: Arc<HttpCtx>,
    info: Arc<ConnInfo>,
    mut drain: DrainSignal,
    token: ConnToken,
    slot: ConnSlot,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &ctx.shared.config.limits;
    let builder = server_builder(limits);
    let idle_timeout = limits.idle_timeout;
    let head_timeout = limits.request_headers_timeout;
    let state = Arc::clone(slot.state());
    let svc = hyper::service::service_fn(move |req| {
        let busy = state.begin();
        handle(Arc::clone(&ctx), Arc::clone(&info), req, busy)
    });
    let io = slot.state().count_reads(io);
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    let state = slot.state();
    let why = tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "downstream connection ended with an error");
            }
            None
        }
        _ = drain.signaled() => Some("drain"),
        _ = state.shed() => Some("shed"),
        _ = state.idle_for(idle_timeout) => Some("idle timeout"),
        _ = state.head_stalled(head_timeout) => Some("request head timeout"),
    };
    match why {
        // Shed with no request in flight: closed at once. hyper's graceful shutdown would
        // wait for a request head still coming in, which is what a slow client never finishes.
        Some("shed") if state.is_idle() => {
            tracing::trace!("downstream connection shed to make room for a new one");
        }
        // A head never finished: nothing to finish gracefully (hyper would wait for it).
        Some("request head timeout") => {
            tracing::debug!("downstream request head not finished in time; connection closed");
        }
        Some(why) => {
            tracing::trace!(why, "closing downstream connection");
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        None => {}
    }
    drop((token, slot));
}
