//! PassthroughCluster: forward to the address the client asked for. One connection per
//! request; passthrough is the escape hatch, not the fast path.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use http::{Request, Response};
use hyper_util::rt::TokioIo;
use skein_snapshot::PASSTHROUGH_CLUSTER;

use super::body::ProxyBody;
use super::headers::prepare_upstream;
use super::inflight::InFlight;
use super::reply::{ConnectFailure, LocalReply};
use super::request::Prepared;
use crate::authority::strip_port;
use crate::conn::ConnInfo;
use crate::snapshot::Compiled;
use crate::upstream::body::ReqBody;
use crate::upstream::cluster::UpstreamProto;

/// Bound on the TCP connect to a passthrough address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Forwards to `authority` (lowercased by the caller).
pub(crate) async fn passthrough(
    inflight: &mut InFlight,
    snap: &Compiled,
    conn: &ConnInfo,
    p: Prepared,
    authority: &str,
) -> Result<Response<ProxyBody>, LocalReply> {
    let f = inflight.fin();
    f.rec.upstream_cluster = Some(Arc::from(PASSTHROUGH_CLUSTER));
    f.rec.route_name = Some(Arc::from("allow_any"));
    f.metrics = Some(Arc::clone(&snap.passthrough_metrics));
    let Some(addr) = resolve(authority).await else {
        return Err(LocalReply::ConnectFailure(ConnectFailure::Dns));
    };
    if addr == conn.local {
        // The client asked for the proxy itself: forwarding would loop.
        return Err(LocalReply::RouteNotFound);
    }
    inflight.fin().rec.upstream_host = Some(addr);
    let connect = tokio::net::TcpStream::connect(addr);
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(s)) => s,
        Ok(Err(_)) => return Err(LocalReply::ConnectFailure(ConnectFailure::Refused)),
        Err(_) => return Err(LocalReply::ConnectFailure(ConnectFailure::Timeout)),
    };
    let _ = stream.set_nodelay(true);
    inflight.fin().rec.upstream_local = stream.local_addr().ok();
    let Ok((mut tx, c)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
        return Err(LocalReply::ConnectFailure(ConnectFailure::Handshake));
    };
    tokio::spawn(async move {
        let _ = c.await;
    });
    let (parts, body) = p.req.into_parts();
    let mut up_req = Request::from_parts(parts, ReqBody::new(body, p.received));
    let host = HeaderValue::from_str(authority).ok();
    prepare_upstream(&mut up_req, host, UpstreamProto::H1);
    let sent_at = Instant::now();
    match tx.send_request(up_req).await {
        Ok(resp) => Ok(inflight.upstream(resp, sent_at, None, p.version)),
        Err(_) => Err(LocalReply::Reset { to_app: false }),
    }
}

/// The address of `authority`: an IP literal, the hosts file, or DNS (port 80 by default).
async fn resolve(authority: &str) -> Option<SocketAddr> {
    let host = strip_port(authority);
    let port = if host.len() < authority.len() {
        authority[host.len() + 1..].parse().ok()?
    } else {
        80
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, port));
    }
    if let Some(ip) = hosts_file_lookup(bare) {
        return Some(SocketAddr::new(ip, port));
    }
    tokio::net::lookup_host((bare, port)).await.ok()?.next()
}

/// The local runtime's cluster DNS: a hosts file named by `SKEIN_HOSTS`, read on each
/// passthrough lookup (passthrough is the slow path; the file is small).
fn hosts_file_lookup(name: &str) -> Option<IpAddr> {
    let path = std::env::var_os("SKEIN_HOSTS")?;
    let text = std::fs::read_to_string(path).ok()?;
    hosts_lookup(&text, name)
}

/// `name`'s address in hosts-file `text` (comments and unknown lines skipped).
fn hosts_lookup(text: &str, name: &str) -> Option<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .find_map(|l| {
            let mut words = l.split_whitespace();
            let ip = words.next()?.parse::<IpAddr>().ok()?;
            words.any(|w| w.eq_ignore_ascii_case(name)).then_some(ip)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file_lines() {
        let text = "# comment\n10.0.0.1 a.b  A-Alias # trailing\nbad line\n10.0.0.2 c.d\n";
        let ip = |s: &str| s.parse::<IpAddr>().ok();
        assert_eq!(hosts_lookup(text, "a-alias"), ip("10.0.0.1"));
        assert_eq!(hosts_lookup(text, "c.d"), ip("10.0.0.2"));
        assert_eq!(hosts_lookup(text, "trailing"), None);
        assert_eq!(hosts_lookup(text, "line"), None);
    }

    #[tokio::test]
    async fn literal_addresses_resolve_without_dns() {
        let a = |s: &str| s.parse::<SocketAddr>().ok();
        assert_eq!(resolve("10.0.0.1:8080").await, a("10.0.0.1:8080"));
        assert_eq!(resolve("10.0.0.1").await, a("10.0.0.1:80"));
        assert_eq!(resolve("[::1]:81").await, a("[::1]:81"));
        assert_eq!(resolve("10.0.0.1:x").await, None);
    }
}
