//! VirtualService mirroring: a fire-and-forget copy of a request to another cluster.
//!
//! The copy never delays or fails the primary: it is sent from its own task once the primary's
//! body has been copied, its response is read and dropped frame by frame as it streams (never
//! held whole), and at most
//! [`MAX_IN_FLIGHT`] copies per mirror cluster are in flight (more are dropped and counted).
//! Copies keep the Host/authority (Istio 1.28+ no longer appends `-shadow`) and carry
//! `x-skein-mirror: 1` so that receivers can tell them apart, and the sender's peer metadata
//! (`x-envoy-peer-metadata`) like the primary, so that the receiver's metrics name it.

use std::sync::Arc;
use std::time::Duration;

use http::Request;
use http::header::{HeaderName, HeaderValue};
use http_body_util::BodyExt;

use super::headers::prepare_upstream;
use crate::route::Mirror;
use crate::telemetry::peer::take_headers;
use crate::telemetry::trace::Active;
use crate::upstream::body::{BodyCopy, ReqBody};
use crate::upstream::cluster::Conn;
use crate::upstream::lb::PickCtx;

/// At most this many mirrored requests in flight per mirror cluster.
pub(crate) const MAX_IN_FLIGHT: u32 = 64;
/// A mirrored request (body wait, connect, response) is abandoned after this long.
pub(crate) const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);
/// Marks a mirrored copy.
pub(crate) static MIRROR_HEADER: HeaderName = HeaderName::from_static("x-skein-mirror");

/// Sends a copy of a request whose head is `head` (as received, after route header
/// operations) and whose body is being copied into `body`.
pub(crate) fn spawn(
    mirror: &Mirror,
    head: &Request<ReqBody>,
    authority: Option<HeaderValue>,
    body: BodyCopy,
    h2: bool,
    trace: Option<&mut Active>,
) {
    let cluster = Arc::clone(&mirror.cluster);
    let Some(slot) = cluster.resilience.try_mirror(MAX_IN_FLIGHT) else {
        tracing::debug!(cluster = %cluster.name, "too many mirrored requests in flight; copy dropped");
        return;
    };
    let mut copy = Request::new(());
    *copy.method_mut() = head.method().clone();
    *copy.uri_mut() = head.uri().clone();
    *copy.version_mut() = head.version();
    *copy.headers_mut() = head.headers().clone();
    copy.headers_mut()
        .insert(MIRROR_HEADER.clone(), HeaderValue::from_static("1"));
    let span = trace.map(|t| t.mirror(&cluster.name, copy.headers_mut()));
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        // The response status, once the copy is answered (for its span).
        let mut code = 0u16;
        let send = async {
            let body = body.wait_replay().await?;
            let proto = cluster.upstream_proto(h2);
            let ctx = PickCtx {
                headers: Some(copy.headers()),
                query: copy.uri().query(),
                source_ip: std::net::IpAddr::from([0, 0, 0, 0]),
            };
            let idx = cluster.pick(&ctx)?;
            let ep = Arc::clone(cluster.endpoints.get(idx)?);
            let conn = cluster.checkout(&ep, proto).await.ok()?;
            let (parts, ()) = copy.into_parts();
            let mut req = Request::from_parts(parts, body);
            prepare_upstream(&mut req, authority, proto);
            // As on the primary: the copy says who sends it to a mesh endpoint (or the
            // receiver counts it from `unknown`), and says nothing to a plaintext one.
            if let Some(own) = &cluster.exchange {
                if ep.mtls {
                    own.insert(req.headers_mut());
                } else {
                    take_headers(req.headers_mut());
                }
            }
            let _active = ep.start_request();
            match conn {
                Conn::H1(mut c) => {
                    let resp = c.tx.send_request(req).await.ok()?;
                    code = resp.status().as_u16();
                    if drain(resp.into_body()).await {
                        cluster.checkin(&ep, c);
                    }
                }
                Conn::H2(mut tx, _) => {
                    let resp = tx.send_request(req).await.ok()?;
                    code = resp.status().as_u16();
                    drain(resp.into_body()).await;
                }
            }
            Some(())
        };
        if tokio::time::timeout(MIRROR_TIMEOUT, send).await.is_err() {
            tracing::debug!(cluster = %cluster.name, "mirrored request timed out");
        }
        if let Some(span) = span {
            span.end(started.elapsed(), code);
        }
        drop(slot);
    });
}

/// Reads a mirrored response body to its end, dropping each frame as it arrives; true when it
/// ended cleanly (the connection can be reused).
async fn drain<B>(mut body: B) -> bool
where
    B: http_body::Body + Unpin,
{
    loop {
        match body.frame().await {
            None => return true,
            Some(Ok(_)) => {}
            Some(Err(_)) => return false,
        }
    }
}
