//! Phase 1: prepare the request (authority, `x-request-id`, the gateway's XFF, the log
//! record) and admit it.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Version};
use hyper::body::Incoming;

use super::headers::{
    X_FORWARDED_FOR, X_REQUEST_ID, append_forwarded_for, authority, ensure_request_id, protocol_str,
};
use super::inflight::InFlight;
use super::reply::LocalReply;
use super::{HttpCtx, Role};
use crate::conn::ConnInfo;
use crate::telemetry::access_log::LogRecord;

/// A request ready for routing.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) req: Request<Incoming>,
    /// The request's authority (URI or Host).
    pub(crate) authority: Option<HeaderValue>,
    /// The version of the response: HTTP/2 for HTTP/2, else HTTP/1.1.
    pub(crate) version: Version,
    /// Request body bytes received (filled in as the body streams).
    pub(crate) received: Arc<AtomicU64>,
}

impl Prepared {
    /// The authority as text ("" when missing or not UTF-8).
    pub(crate) fn authority_str(&self) -> &str {
        self.authority
            .as_ref()
            .and_then(|a| a.to_str().ok())
            .unwrap_or("")
    }
}

/// The response version for a request of version `v`.
pub(crate) fn response_version(v: Version) -> Version {
    if v == Version::HTTP_2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    }
}

/// Prepares the request's headers and starts its log record.
pub(crate) fn prepare(
    ctx: &HttpCtx,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    started: Instant,
) -> (Prepared, InFlight) {
    let down_version = req.version();
    let authority = authority(&req);
    ensure_request_id(req.headers_mut());
    if ctx.role == Role::Gateway {
        append_forwarded_for(req.headers_mut(), conn.remote.ip());
    }
    let received = Arc::new(AtomicU64::new(0));
    let mut rec = Box::new(LogRecord::new(conn.local, conn.remote));
    rec.method = Some(req.method().clone());
    rec.path = req.uri().path_and_query().cloned();
    rec.protocol = Some(protocol_str(down_version));
    rec.xff = req.headers().get(&X_FORWARDED_FOR).cloned();
    rec.user_agent = req.headers().get(header::USER_AGENT).cloned();
    rec.request_id = req.headers().get(&X_REQUEST_ID).cloned();
    rec.authority = authority.clone();
    rec.sni = conn.sni.clone();
    rec.peer = conn.peer.clone();
    let inflight = InFlight::new(Arc::clone(&ctx.shared), rec, started, Arc::clone(&received));
    let prepared = Prepared {
        req,
        authority,
        version: response_version(down_version),
        received,
    };
    (prepared, inflight)
}

/// Requests the proxy does not handle at all.
pub(crate) fn admit(p: &Prepared) -> Result<(), LocalReply> {
    if p.req.method() == Method::CONNECT {
        return Err(LocalReply::ConnectNotSupported);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_http2_or_http11() {
        assert_eq!(response_version(Version::HTTP_2), Version::HTTP_2);
        assert_eq!(response_version(Version::HTTP_10), Version::HTTP_11);
        assert_eq!(response_version(Version::HTTP_11), Version::HTTP_11);
    }
}
