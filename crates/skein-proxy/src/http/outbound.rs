//! Phase 3, outbound and gateway listeners: virtual host by authority, the first matching
//! route, then its action (direct response, redirect, or a cluster after rewrites, header
//! operations and fault injection).

use std::sync::Arc;

use http::Uri;
use http::header::HeaderValue;
use http::uri::PathAndQuery;
use skein_snapshot::{BLACKHOLE_CLUSTER, PASSTHROUGH_CLUSTER};

use super::forward::Target;
use super::headers::X_ORIGINAL_PATH;
use super::inflight::InFlight;
use super::reply::LocalReply;
use super::request::Prepared;
use super::{HttpCtx, Role};
use crate::authority::{lowercase, strip_port};
use crate::conn::ConnInfo;
use crate::route::fault::Fault;
use crate::route::{Action, CompiledRoute, Dest, RequestView};
use crate::snapshot::Compiled;
use crate::telemetry::access_log::ResponseFlags;

/// Where routing sent the request.
#[derive(Debug)]
pub(crate) enum Routed<'s> {
    /// A route matched (with the index of its matching block).
    Route(&'s CompiledRoute, usize),
    /// No virtual host: forward to the (lowercased) authority the client asked for.
    Passthrough(String),
}

/// What a route's action leaves to do when it does not answer locally.
#[derive(Debug)]
pub(crate) enum Act<'s> {
    /// Forward to a cluster.
    Forward(Target<'s>),
    /// Forward to the authority the client asked for (PassthroughCluster).
    Passthrough(String),
}

/// The path and query of a request ("/" when it has none).
fn path_and_query(pq: Option<&PathAndQuery>) -> (&str, Option<&str>) {
    (
        pq.map(PathAndQuery::path).unwrap_or("/"),
        pq.and_then(PathAndQuery::query),
    )
}

/// The virtual host, then the first route that matches.
pub(crate) fn route<'s>(
    ctx: &HttpCtx,
    snap: &'s Compiled,
    p: &Prepared,
    inflight: &mut InFlight,
) -> Result<Routed<'s>, LocalReply> {
    let auth = p.authority_str();
    let lower = lowercase(auth);
    let vhost = snap
        .route_configs
        .get(&ctx.route_config)
        .and_then(|rc| rc.find(&lower));
    let Some(vhost) = vhost else {
        if ctx.role == Role::Gateway {
            inflight.fin().metrics = Some(Arc::clone(&snap.no_route_metrics));
            return Err(LocalReply::RouteNotFound);
        }
        if snap.registry_only {
            return Err(blackhole(inflight, snap));
        }
        return Ok(Routed::Passthrough(lower.into_owned()));
    };
    let (path, query) = path_and_query(p.req.uri().path_and_query());
    let view = RequestView {
        path,
        query,
        method: p.req.method().as_str(),
        authority: auth,
        headers: p.req.headers(),
    };
    let found = vhost
        .routes
        .iter()
        .find_map(|r| r.matching_block(&view).map(|b| (r, b)));
    let Some((route, block)) = found else {
        inflight.fin().metrics = Some(Arc::clone(&snap.no_route_metrics));
        return Err(LocalReply::RouteNotFound);
    };
    inflight.fin().rec.route_name = Some(Arc::clone(&route.name));
    Ok(Routed::Route(route, block))
}

/// The route's action: a local answer, or where to forward.
pub(crate) fn act<'s>(
    snap: &'s Compiled,
    route: &'s CompiledRoute,
    block: usize,
    p: &mut Prepared,
    inflight: &mut InFlight,
) -> Result<Act<'s>, LocalReply> {
    match &route.action {
        Action::Direct { status, body } => {
            inflight.fin().metrics = Some(Arc::clone(&snap.no_route_metrics));
            Err(LocalReply::Direct {
                status: *status,
                body: body.clone(),
            })
        }
        Action::Redirect(rd) => {
            let auth = p.authority_str();
            let scheme = rd.scheme.as_deref().unwrap_or("http");
            let host_full = rd.authority.as_deref().unwrap_or(auth);
            let host = match rd.port {
                Some(port) => format!("{}:{port}", strip_port(host_full)),
                None if rd.scheme_port => strip_port(host_full).to_string(),
                None => host_full.to_string(),
            };
            let (path, query) = path_and_query(p.req.uri().path_and_query());
            let replaced;
            let uri = match (&rd.uri, &rd.prefix_rewrite) {
                (Some(uri), _) => uri.as_str(),
                (None, Some(prefix)) => {
                    let n = route
                        .matches
                        .get(block)
                        .and_then(|m| m.matched_prefix_len());
                    let rest = match n {
                        Some(n) if path.len() >= n && path.is_char_boundary(n) => &path[n..],
                        _ => "",
                    };
                    // The query is kept, as Envoy keeps it with a prefix rewrite.
                    replaced = match query {
                        Some(q) => format!("{prefix}{rest}?{q}"),
                        None => format!("{prefix}{rest}"),
                    };
                    replaced.as_str()
                }
                (None, None) => path,
            };
            let location = HeaderValue::from_str(&format!("{scheme}://{host}{uri}")).ok();
            Err(LocalReply::Redirect {
                status: rd.code.unwrap_or(301),
                location,
            })
        }
        Action::Route { .. } => {
            let Some(dest) = route.action.pick() else {
                return Err(blackhole(inflight, snap));
            };
            if dest.cluster.is_none() {
                return special_cluster(snap, dest, p, inflight);
            }
            to_cluster(route, block, dest, p)
        }
    }
}

/// A destination without a cluster of its own: PassthroughCluster, BlackHoleCluster, or a
/// cluster the snapshot lacks (503 NC).
fn special_cluster<'s>(
    snap: &Compiled,
    dest: &Dest,
    p: &Prepared,
    inflight: &mut InFlight,
) -> Result<Act<'s>, LocalReply> {
    if &*dest.name == PASSTHROUGH_CLUSTER {
        return Ok(Act::Passthrough(lowercase(p.authority_str()).into_owned()));
    }
    if &*dest.name == BLACKHOLE_CLUSTER {
        return Err(blackhole(inflight, snap));
    }
    inflight.fin().rec.upstream_cluster = Some(Arc::clone(&dest.name));
    Err(LocalReply::ClusterNotFound)
}

/// Rewrites and header operations, then the cluster to forward to.
fn to_cluster<'s>(
    route: &'s CompiledRoute,
    block: usize,
    dest: &'s Dest,
    p: &mut Prepared,
) -> Result<Act<'s>, LocalReply> {
    let Some(cluster) = dest.cluster.clone() else {
        return Err(LocalReply::ClusterNotFound);
    };
    let req = &mut p.req;
    let (path, query) = path_and_query(req.uri().path_and_query());
    let rewritten = rewrite_path(route, block, path, query);
    if let Some(pq) = rewritten {
        if let Some(orig) = req.uri().path_and_query()
            && let Ok(v) = HeaderValue::from_str(orig.as_str())
        {
            req.headers_mut().insert(X_ORIGINAL_PATH.clone(), v);
        }
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(pq);
        if let Ok(u) = Uri::from_parts(parts) {
            *req.uri_mut() = u;
        }
    }
    route.ops.request.apply(req.headers_mut());
    dest.ops.request.apply(req.headers_mut());
    let authority = route
        .rewrite_authority
        .clone()
        .or_else(|| p.authority.clone());
    Ok(Act::Forward(Target {
        cluster,
        route: Some(route),
        dest: Some(dest),
        block,
        authority,
        peer: None,
        echo: None,
    }))
}

/// The route's fault injection, before forwarding to `target`: a delay (flag DI), then
/// perhaps an abort.
pub(crate) async fn inject_fault(
    fault: &Fault,
    target: &Target<'_>,
    conn: &ConnInfo,
    inflight: &mut InFlight,
) -> Result<(), LocalReply> {
    let d = fault.decide();
    if let Some(delay) = d.delay {
        tokio::time::sleep(delay).await;
        inflight.fin().rec.flags |= ResponseFlags::DI;
    }
    if let Some(status) = d.abort {
        let f = inflight.fin();
        f.rec.upstream_cluster = Some(Arc::clone(&target.cluster.name));
        f.metrics = Some(conn.metrics_for(&target.cluster));
        return Err(LocalReply::FaultAbort { status });
    }
    Ok(())
}

/// BlackHoleCluster: recorded as its own cluster and route, answered 502.
fn blackhole(inflight: &mut InFlight, snap: &Compiled) -> LocalReply {
    let f = inflight.fin();
    f.rec.upstream_cluster = Some(Arc::from(BLACKHOLE_CLUSTER));
    f.rec.route_name = Some(Arc::from("block_all"));
    f.metrics = Some(Arc::clone(&snap.blackhole_metrics));
    LocalReply::Blackhole
}

/// The path after the route's `rewrite.uri` (the matched prefix replaced) or
/// `rewrite.uriRegexRewrite`, with the query kept; None without a rewrite.
pub(crate) fn rewrite_path(
    route: &CompiledRoute,
    block: usize,
    path: &str,
    query: Option<&str>,
) -> Option<PathAndQuery> {
    let new_path: String = if let Some(prefix) = &route.rewrite_uri {
        let matched = route
            .matches
            .get(block)
            .and_then(|m| m.matched_prefix_len());
        match matched {
            Some(n) if path.len() >= n && path.is_char_boundary(n) => {
                format!("{prefix}{}", &path[n..])
            }
            _ => prefix.clone(),
        }
    } else if let Some(rr) = &route.rewrite_regex {
        rr.re.replace_all(path, rr.with.as_str()).into_owned()
    } else {
        return None;
    };
    let full = match query {
        Some(q) => format!("{new_path}?{q}"),
        None => new_path,
    };
    PathAndQuery::try_from(full).ok()
}
