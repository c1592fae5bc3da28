//! Phase 2, inbound listeners: the listener's cluster, XFCC, and AuthorizationPolicy.

use std::sync::Arc;

use super::HttpCtx;
use super::headers::set_xfcc;
use super::inflight::InFlight;
use super::reply::LocalReply;
use super::request::Prepared;
use crate::conn::ConnInfo;
use crate::policy::authz::{Attrs, Decision, HttpAttrs};
use crate::snapshot::Compiled;
use crate::upstream::cluster::ClusterState;

/// The cluster of the app behind this inbound listener, once the request is authorized.
pub(crate) fn authorize(
    ctx: &HttpCtx,
    snap: &Compiled,
    conn: &ConnInfo,
    p: &mut Prepared,
    inflight: &mut InFlight,
) -> Result<Arc<ClusterState>, LocalReply> {
    let cluster = ctx.inbound.and_then(|i| snap.inbound.get(i)).cloned();
    let Some(cluster) = cluster else {
        return Err(LocalReply::ClusterNotFound);
    };
    set_xfcc(p.req.headers_mut(), conn);
    if snap.authz.is_empty() {
        return Ok(cluster);
    }
    let workload_port = ctx
        .inbound
        .and_then(|i| ctx.shared.config.inbound.get(i))
        .map_or(0, |ib| ib.app.port());
    let decision = snap.authz.evaluate(&Attrs {
        source: conn.remote.ip(),
        destination: conn.local,
        workload_port,
        peer: conn.peer.as_deref(),
        sni: conn.sni.as_deref(),
        http: Some(HttpAttrs {
            host: p.authority_str(),
            method: p.req.method().as_str(),
            path: p.req.uri().path(),
            headers: p.req.headers(),
        }),
    });
    if let Decision::Deny { details, audit } = decision {
        tracing::debug!(%details, audit, remote = %conn.remote, "request denied by AuthorizationPolicy");
        let f = inflight.fin();
        f.rec.upstream_cluster = Some(Arc::clone(&cluster.name));
        f.metrics = Some(conn.metrics_for(&cluster));
        return Err(LocalReply::Denied { details });
    }
    Ok(cluster)
}
