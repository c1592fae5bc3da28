//! Phase 2: RequestAuthentication, then AuthorizationPolicy. On an inbound listener: the
//! listener's cluster, XFCC, then the policies; on a gateway: the policies that select the
//! gateway, before the virtual host is looked up.

use std::sync::Arc;

use http::HeaderValue;

use super::HttpCtx;
use super::headers::{X_FORWARDED_FOR, set_xfcc, trusted_client_ip, xff_from_right};
use super::inflight::InFlight;
use super::reply::LocalReply;
use super::request::Prepared;
use crate::conn::ConnInfo;
use crate::policy::authz::{Attrs, Decision, HttpAttrs};
use crate::policy::jwt::{Authn, Outcome, Principal};
use crate::snapshot::Compiled;
use crate::telemetry::peer::take_headers;
use crate::upstream::cluster::ClusterState;

/// Istio's `numTrustedProxies` (`gatewayTopology`, from mesh config or a gateway's
/// `proxy.istio.io/config` annotation). The snapshot does not carry it yet, so it is Istio's
/// default, 0: at a gateway the client is the downstream peer, at a sidecar the rightmost
/// X-Forwarded-For address (what the gateway in front appended).
const NUM_TRUSTED_PROXIES: u32 = 0;

/// The request's JWT, checked against the workload's RequestAuthentication rules (only
/// called when some apply): its principal when it has a good one, none without a token, a
/// 401 for a bad one.
pub(crate) async fn authenticate(
    authn: &Authn,
    p: &mut Prepared,
    inflight: &mut InFlight,
    snap_metrics: Option<&Arc<crate::telemetry::metrics::RequestMetrics>>,
) -> Result<Option<Box<Principal>>, LocalReply> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let query = p.req.uri().query().map(str::to_owned);
    match authn
        .authenticate(p.req.headers_mut(), query.as_deref(), now)
        .await
    {
        Outcome::NoToken => Ok(None),
        Outcome::Verified(principal) => Ok(Some(principal)),
        Outcome::Denied(error) => {
            tracing::debug!(%error, "request refused by RequestAuthentication");
            if let Some(m) = &snap_metrics {
                inflight.fin().metrics = Some(Arc::clone(m));
            }
            Err(LocalReply::JwtDenied {
                error,
                www_authenticate: www_authenticate(p),
            })
        }
    }
}

/// Envoy's challenge: `Bearer realm="SCHEME://HOST/PATH", error="invalid_token"` (the path
/// without its query).
fn www_authenticate(p: &Prepared) -> HeaderValue {
    let scheme = p
        .req
        .headers()
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .filter(|s| *s == "https")
        .unwrap_or("http");
    let realm = format!(
        "Bearer realm=\"{scheme}://{}{}\", error=\"invalid_token\"",
        p.authority_str(),
        p.req.uri().path()
    );
    HeaderValue::from_str(&realm)
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
}

/// The cluster of the app behind this inbound listener, once the request is authorized, and
/// the caller's peer metadata (`x-envoy-peer-metadata`, taken off the request: the app never
/// sees the exchange headers).
pub(crate) fn authorize(
    ctx: &HttpCtx,
    snap: &Compiled,
    conn: &ConnInfo,
    p: &mut Prepared,
    auth: Result<Option<Box<Principal>>, LocalReply>,
    inflight: &mut InFlight,
) -> Result<(Arc<ClusterState>, Option<HeaderValue>), LocalReply> {
    let cluster = ctx.inbound.and_then(|i| snap.inbound.get(i)).cloned();
    let Some(cluster) = cluster else {
        return Err(LocalReply::ClusterNotFound);
    };
    let peer = take_headers(p.req.headers_mut());
    // A caller that sent its exchange headers gets the proxy's on every answer, local
    // replies (a denial, a 503) included.
    if peer.is_some() {
        inflight.fin().echo = snap.own_peer.clone();
    }
    set_xfcc(p.req.headers_mut(), conn);
    let auth = match auth {
        Ok(a) => a,
        Err(reply) => {
            deny_record(inflight, conn, &cluster, &peer);
            return Err(reply);
        }
    };
    if snap.authz.is_empty() {
        return Ok((cluster, peer));
    }
    let workload_port = ctx
        .inbound
        .and_then(|i| ctx.shared.config.inbound.get(i))
        .map_or(0, |ib| ib.app.port());
    // Sidecars: Envoy's `use_remote_address: false`.
    let from_right = xff_from_right(false, NUM_TRUSTED_PROXIES);
    if let Decision::Deny { details, audit } =
        evaluate(snap, conn, p, auth.as_deref(), workload_port, from_right)
    {
        tracing::debug!(%details, audit, remote = %conn.remote, "request denied by AuthorizationPolicy");
        deny_record(inflight, conn, &cluster, &peer);
        return Err(LocalReply::Denied { details });
    }
    Ok((cluster, peer))
}

/// A refused inbound request is logged and counted against the app's cluster.
fn deny_record(
    inflight: &mut InFlight,
    conn: &ConnInfo,
    cluster: &Arc<ClusterState>,
    peer: &Option<HeaderValue>,
) {
    let f = inflight.fin();
    f.rec.upstream_cluster = Some(Arc::clone(&cluster.name));
    f.metrics = Some(match peer {
        Some(v) => conn.metrics_with_peer(cluster, v),
        None => conn.metrics_for(cluster),
    });
}

/// A gateway's AuthorizationPolicies (those selecting the gateway workload), evaluated after
/// X-Forwarded-For is appended and before the virtual host; the port is the listener's.
pub(crate) fn authorize_gateway(
    snap: &Compiled,
    conn: &ConnInfo,
    p: &Prepared,
    auth: Option<&Principal>,
    inflight: &mut InFlight,
) -> Result<(), LocalReply> {
    if snap.authz.is_empty() {
        return Ok(());
    }
    // Gateways: Envoy's `use_remote_address: true`.
    let from_right = xff_from_right(true, NUM_TRUSTED_PROXIES);
    if let Decision::Deny { details, audit } =
        evaluate(snap, conn, p, auth, conn.local.port(), from_right)
    {
        tracing::debug!(%details, audit, remote = %conn.remote, "request denied by AuthorizationPolicy at the gateway");
        inflight.fin().metrics = Some(Arc::clone(&snap.no_route_metrics));
        return Err(LocalReply::Denied { details });
    }
    Ok(())
}

fn evaluate(
    snap: &Compiled,
    conn: &ConnInfo,
    p: &Prepared,
    auth: Option<&Principal>,
    workload_port: u16,
    xff_from_right: u32,
) -> Decision {
    let headers = p.req.headers();
    let remote = trusted_client_ip(
        headers.get(&X_FORWARDED_FOR),
        conn.remote.ip(),
        xff_from_right,
    );
    snap.authz.evaluate(&Attrs {
        source: conn.remote.ip(),
        destination: conn.local,
        workload_port,
        peer: conn.peer.as_deref(),
        sni: conn.sni.as_deref(),
        http: Some(HttpAttrs {
            host: p.authority_str(),
            method: p.req.method().as_str(),
            path: p.req.uri().path(),
            headers,
            remote,
            auth,
        }),
    })
}
