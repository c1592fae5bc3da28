//! Opaque TCP forwarding: outbound per-upstream listeners and inbound non-HTTP traffic.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;

use crate::access_log::{LogRecord, ResponseFlags};
use crate::cluster::{ClusterState, PoolError};
use crate::lb::PickCtx;
use crate::state::Shared;

/// Forwards one downstream connection to a cluster, byte for byte.
///
/// Overflow of `maxConnections` closes the downstream at once (flag UO); a failed or timed out
/// connect closes it too (flag UF). A drain does not cut established TCP streams; the drain
/// timeout bounds how long the process waits for them.
pub async fn forward(
    shared: Arc<Shared>,
    mut down: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    cluster: Option<Arc<ClusterState>>,
    cluster_name: &str,
) {
    let started = Instant::now();
    let mut rec = Box::new(LogRecord::new(local, remote));
    rec.upstream_cluster = Some(Arc::from(cluster_name));
    let finish = |mut rec: Box<LogRecord>, shared: &Shared| {
        rec.duration_ms = started.elapsed().as_millis() as u64;
        if shared.access_log.enabled() {
            shared.access_log.log(rec);
        }
    };
    let Some(cluster) = cluster else {
        rec.flags = ResponseFlags::NC;
        rec.details = "cluster_not_found";
        finish(rec, &shared);
        return;
    };
    let _ = down.set_nodelay(true);
    let ctx = PickCtx {
        headers: None,
        query: None,
        source_ip: remote.ip(),
    };
    let Some(idx) = cluster.balancer.pick(&cluster.endpoints, &ctx) else {
        rec.flags = ResponseFlags::UH;
        rec.details = "no_healthy_upstream";
        finish(rec, &shared);
        return;
    };
    let ep = Arc::clone(&cluster.endpoints[idx]);
    rec.upstream_host = Some(ep.addr);
    let base = cluster.metrics.base().clone();
    shared.metrics.tcp_open(&base);
    let (mut up, slot) = match cluster.connect_tcp(&ep).await {
        Ok(x) => x,
        Err(e) => {
            rec.flags = match e {
                PoolError::Overflow => ResponseFlags::UO,
                _ => ResponseFlags::UF,
            };
            if !matches!(e, PoolError::Overflow) {
                rec.transport_failure = Some("connection_failure");
            }
            tracing::debug!(cluster = %cluster.name, error = %e, "TCP upstream unavailable");
            shared.metrics.tcp_close(&base, 0, 0);
            finish(rec, &shared);
            return;
        }
    };
    let _active = ep.start_request();
    rec.upstream_local = up.local_addr().ok();
    let (received, sent) = match tokio::io::copy_bidirectional(&mut down, &mut up).await {
        Ok((from_down, from_up)) => (from_down, from_up),
        Err(e) => {
            tracing::debug!(cluster = %cluster.name, error = %e, "TCP stream ended with an error");
            rec.flags |= ResponseFlags::UC;
            (0, 0)
        }
    };
    drop(slot);
    rec.bytes_received = received;
    rec.bytes_sent = sent;
    shared.metrics.tcp_close(&base, sent, received);
    finish(rec, &shared);
}
