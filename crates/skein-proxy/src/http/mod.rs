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

use crate::conn::ConnInfo;
use crate::listen::drain::{ConnToken, DrainSignal};
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
async fn handle(
    ctx: Arc<HttpCtx>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let started = Instant::now();
    let snap: Arc<Compiled> = ctx.shared.current.load_full();
    let (mut p, mut inflight) = request::prepare(&ctx, &conn, req, started);
    let version = p.version;
    let inflight = &mut inflight;
    let admitted = match request::admit(&mut p, inflight) {
        Ok(()) if ctx.role == Role::Gateway => {
            inbound::authorize_gateway(&snap, &conn, &p, inflight)
        }
        other => other,
    };
    let result = match admitted {
        Err(reply) => Err(reply),
        Ok(()) if ctx.role == Role::Inbound => {
            match inbound::authorize(&ctx, &snap, &conn, &mut p, inflight) {
                Ok(cluster) => {
                    let target = forward::Target::inbound(cluster, p.authority.clone());
                    forward::forward(inflight, &conn, p, target).await
                }
                Err(reply) => Err(reply),
            }
        }
        Ok(()) => match outbound::route(&ctx, &snap, &p, inflight) {
            Ok(Routed::Passthrough(authority)) => {
                passthrough::passthrough(inflight, &snap, &conn, p, &authority).await
            }
            Ok(Routed::Route(route, block)) => {
                match outbound::act(&snap, route, block, &mut p, inflight) {
                    Ok(outbound::Act::Forward(target)) => {
                        let fault = match &route.fault {
                            Some(f) => outbound::inject_fault(f, &target, &conn, inflight).await,
                            None => Ok(()),
                        };
                        match fault {
                            Ok(()) => forward::forward(inflight, &conn, p, target).await,
                            Err(reply) => Err(reply),
                        }
                    }
                    Ok(outbound::Act::Passthrough(authority)) => {
                        passthrough::passthrough(inflight, &snap, &conn, p, &authority).await
                    }
                    Err(reply) => Err(reply),
                }
            }
            Err(reply) => Err(reply),
        },
    };
    Ok(match result {
        Ok(resp) => resp,
        Err(reply) => inflight.reply(reply, version),
    })
}

/// Serves HTTP/1.1 and HTTP/2 (prior knowledge) on one connection until it closes or the
/// proxy drains (then it finishes in-flight requests and closes).
pub(crate) async fn serve_connection<I>(
    io: I,
    ctx: Arc<HttpCtx>,
    info: Arc<ConnInfo>,
    mut drain: DrainSignal,
    token: ConnToken,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc =
        hyper::service::service_fn(move |req| handle(Arc::clone(&ctx), Arc::clone(&info), req));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "downstream connection ended with an error");
            }
        }
        _ = drain.signaled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
    drop(token);
}
