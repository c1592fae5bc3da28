//! Entry points for the fuzz targets (feature `fuzzing`, never in a normal build): a
//! snapshot's compile, then one request's routing (phase 3) and authorization (phase 2)
//! without sockets, through the functions the request phases call. What the phases do with
//! a connection or the access log is left out; what they decide is not.

use std::net::{IpAddr, SocketAddr};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri};
use skein_snapshot::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER, Snapshot};

pub use crate::identity::PeerIdentity;
pub use crate::policy::authz::{Attrs, AuthzError, DENIED_NO_MATCH, Decision, Engine, HttpAttrs};
pub use crate::policy::jwt::JwtError;
pub use crate::policy::jwt::keys::KeySet;
pub use crate::policy::jwt::token::{MAX_TOKEN_BYTES, Token, parse as parse_jwt};
pub use crate::snapshot::{CompileError, Compiled};
pub use crate::telemetry::exchange::{
    EXCHANGE_MAGIC, FrameError, MAX_FRAME_BYTES, exchange_frame, frame_len, parse_frame_body,
};
pub use crate::telemetry::peer::{
    DecodeError, MAX_DEPTH, MAX_HEADER_BYTES, PeerMetadata, Struct, Value, decode_struct,
    encode_struct,
};

use super::headers::{
    X_FORWARDED_FOR, X_ORIGINAL_PATH, authority, trusted_client_ip, xff_from_right,
};
use super::outbound::rewrite_path;
use super::request::normalize_path;
use crate::authority::{lowercase, strip_port};
use crate::config::{InboundConfig, ProxyConfig};
use crate::route::Action;

/// The sidecar's inbound listener in [`compile`]'s config: the app on 127.0.0.1:8080.
pub const WORKLOAD_PORT: u16 = 8080;

/// Compiles a snapshot as a sidecar (one inbound listener for [`WORKLOAD_PORT`]) or a
/// gateway proxy does when it receives one.
pub fn compile(snap: Snapshot, gateway: bool) -> Result<Compiled, CompileError> {
    let mut proxy = if gateway {
        ProxyConfig::gateway(SocketAddr::from(([127, 0, 0, 1], 0)))
    } else {
        ProxyConfig::sidecar(SocketAddr::from(([127, 0, 0, 1], 0)))
    };
    if !gateway {
        proxy.inbound.push(InboundConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 15006)),
            app: SocketAddr::from(([127, 0, 0, 1], WORKLOAD_PORT)),
            port: 0,
        });
    }
    Compiled::compile(snap, None, &proxy, None)
}

/// The request hyper would hand the proxy for this method, request target and header
/// lines, once admitted (phase 1, `request::admit`: its path normalised); None where hyper
/// answers 400 itself (an invalid method, target or header) or the proxy refuses it
/// (CONNECT, a path that is not origin-form or cannot be normalised).
pub fn request(method: &[u8], target: &[u8], headers: &[(&[u8], &[u8])]) -> Option<Request<()>> {
    let mut req = Request::new(());
    *req.method_mut() = Method::from_bytes(method).ok()?;
    *req.uri_mut() = Uri::try_from(target).ok()?;
    for (name, value) in headers {
        let name = HeaderName::from_bytes(name).ok()?;
        let value = HeaderValue::from_bytes(value).ok()?;
        req.headers_mut().append(name, value);
    }
    if req.method() == Method::CONNECT {
        return None;
    }
    let Some(pq) = req.uri().path_and_query() else {
        return Some(req);
    };
    let Some(normal) = normalize_path(pq.path()).ok()? else {
        return Some(req);
    };
    let full = match pq.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(full).ok()?);
    *req.uri_mut() = Uri::from_parts(parts).ok()?;
    Some(req)
}

/// What routing decided for a request on an outbound (sidecar) or gateway listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Routed {
    /// To the (lowercased) authority the client asked for: no virtual host, or
    /// PassthroughCluster.
    Passthrough(String),
    /// BlackHoleCluster: REGISTRY_ONLY without a virtual host, or a route's destination.
    Blackhole,
    /// 404 NR: no virtual host (gateway), or no route matched.
    RouteNotFound,
    /// 503 NC: the destination names a cluster the snapshot lacks.
    ClusterNotFound,
    /// A direct response.
    Direct { route: String, status: u16 },
    /// A redirect.
    Redirect {
        route: String,
        status: u16,
        location: Option<HeaderValue>,
    },
    /// Forwarded to a cluster, with the request as it goes there.
    Forward {
        route: String,
        cluster: String,
        uri: Uri,
        authority: Option<HeaderValue>,
        headers: Box<HeaderMap>,
    },
}

/// Phase 3 (`outbound::route`, then `outbound::act`): the virtual host of
/// `route_config` by authority, the first matching route, then its action.
pub fn route(compiled: &Compiled, route_config: &str, gateway: bool, req: Request<()>) -> Routed {
    let mut req = req;
    let auth_value = authority(&req);
    let auth = auth_value
        .as_ref()
        .and_then(|a| a.to_str().ok())
        .unwrap_or("");
    let lower = lowercase(auth);
    let vhost = compiled
        .route_configs
        .get(route_config)
        .and_then(|rc| rc.find(&lower));
    let Some(vhost) = vhost else {
        return if gateway {
            Routed::RouteNotFound
        } else if compiled.registry_only {
            Routed::Blackhole
        } else {
            Routed::Passthrough(lower.into_owned())
        };
    };
    let pq = req.uri().path_and_query().cloned();
    let path = pq.as_ref().map_or("/", |pq| pq.path());
    let query = pq.as_ref().and_then(|pq| pq.query());
    let view = crate::route::RequestView {
        path,
        query,
        method: req.method().as_str(),
        authority: auth,
        headers: req.headers(),
    };
    let found = vhost
        .routes
        .iter()
        .find_map(|r| r.matching_block(&view).map(|b| (r, b)));
    let Some((route, block)) = found else {
        return Routed::RouteNotFound;
    };
    let name = route.name.to_string();
    match &route.action {
        Action::Direct { status, .. } => Routed::Direct {
            route: name,
            status: *status,
        },
        Action::Redirect(rd) => {
            let scheme = rd.scheme.as_deref().unwrap_or("http");
            let host_full = rd.authority.as_deref().unwrap_or(auth);
            let host = match rd.port {
                Some(port) => format!("{}:{port}", strip_port(host_full)),
                None => host_full.to_string(),
            };
            let uri = rd.uri.as_deref().unwrap_or(path);
            Routed::Redirect {
                route: name,
                status: rd.code.unwrap_or(301),
                location: HeaderValue::from_str(&format!("{scheme}://{host}{uri}")).ok(),
            }
        }
        Action::Route { .. } => {
            let Some(dest) = route.action.pick() else {
                return Routed::Blackhole;
            };
            let Some(cluster) = &dest.cluster else {
                return if &*dest.name == PASSTHROUGH_CLUSTER {
                    Routed::Passthrough(lower.into_owned())
                } else if &*dest.name == BLACKHOLE_CLUSTER {
                    Routed::Blackhole
                } else {
                    Routed::ClusterNotFound
                };
            };
            if let Some(new) = rewrite_path(route, block, path, query) {
                if let Some(orig) = &pq
                    && let Ok(v) = HeaderValue::from_str(orig.as_str())
                {
                    req.headers_mut().insert(X_ORIGINAL_PATH.clone(), v);
                }
                let mut parts = req.uri().clone().into_parts();
                parts.path_and_query = Some(new);
                if let Ok(u) = Uri::from_parts(parts) {
                    *req.uri_mut() = u;
                }
            }
            route.ops.request.apply(req.headers_mut());
            dest.ops.request.apply(req.headers_mut());
            let authority = route.rewrite_authority.clone().or(auth_value);
            let (parts, ()) = req.into_parts();
            Routed::Forward {
                route: name,
                cluster: cluster.name.to_string(),
                uri: parts.uri,
                authority,
                headers: Box::new(parts.headers),
            }
        }
    }
}

/// The connection a request arrived on, as authorization sees it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client's address.
    pub source: IpAddr,
    /// The address the connection was accepted on.
    pub destination: SocketAddr,
    /// The mTLS peer.
    pub peer: Option<PeerIdentity>,
    /// TLS SNI.
    pub sni: Option<String>,
}

/// Phase 2 (`inbound::authorize`, or `inbound::authorize_gateway` at a gateway): the
/// compiled AuthorizationPolicies on a request to [`WORKLOAD_PORT`] (a gateway: to the
/// listener's port), with Istio's default `numTrustedProxies` of 0; `req` None evaluates an
/// opaque TCP connection instead.
pub fn authorize(
    engine: &Engine,
    conn: &Connection,
    gateway: bool,
    req: Option<&Request<()>>,
) -> Decision {
    let host = req.and_then(authority);
    let from_right = xff_from_right(gateway, 0);
    let http = req.map(|req| HttpAttrs {
        host: host.as_ref().and_then(|a| a.to_str().ok()).unwrap_or(""),
        method: req.method().as_str(),
        path: req.uri().path(),
        headers: req.headers(),
        remote: trusted_client_ip(req.headers().get(&X_FORWARDED_FOR), conn.source, from_right),
        auth: None,
    });
    engine.evaluate(&Attrs {
        source: conn.source,
        destination: conn.destination,
        workload_port: if gateway {
            conn.destination.port()
        } else {
            WORKLOAD_PORT
        },
        peer: conn.peer.as_ref(),
        sni: conn.sni.as_deref(),
        http,
    })
}

/// A trace context as the fuzz target sees it: (trace id high, low, parent span id, debug)
/// and the sampling decision the headers carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceHeaders {
    pub context: Option<(u64, u64, u64, bool)>,
    pub sampled: Option<bool>,
}

fn trace_view(e: crate::telemetry::trace::context::Extracted) -> TraceHeaders {
    TraceHeaders {
        context: e
            .ctx
            .map(|c| (c.trace_id.high, c.trace_id.low, c.span_id, c.debug)),
        sampled: e.sampled,
    }
}

/// The trace header parsers on raw values: `b3` alone, `traceparent` alone, and the whole
/// extraction from `headers` (as the request path reads them).
pub fn trace_parse(
    b3: &[u8],
    traceparent: &[u8],
    headers: &HeaderMap,
) -> [Option<TraceHeaders>; 3] {
    use crate::telemetry::trace::context;
    [
        context::parse_b3_single(b3).map(trace_view),
        context::parse_traceparent(traceparent).map(trace_view),
        Some(trace_view(context::extract(headers))),
    ]
}

/// The headers the proxy writes for a context (B3 multi and `traceparent`), read back.
pub fn trace_reinject(t: (u64, u64, u64), sampled: bool) -> TraceHeaders {
    use crate::telemetry::trace::context::{Inject, TraceId, extract};
    let mut h = HeaderMap::new();
    Inject {
        trace_id: TraceId {
            high: t.0,
            low: t.1,
        },
        span_id: t.2,
        parent: None,
        sampled,
        b3: true,
        w3c: true,
    }
    .apply(&mut h);
    trace_view(extract(&h))
}

/// The request id's trace status after the proxy marks it sampled (None: not a UUID).
pub fn request_id_marked(id: &HeaderValue) -> Option<HeaderValue> {
    use crate::telemetry::trace::context::{RidStatus, with_rid_status};
    with_rid_status(id, RidStatus::Sampled)
}
