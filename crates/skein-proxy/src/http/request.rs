//! Phase 1: prepare the request (authority, the client's hop-by-hop headers, the
//! proxy-owned headers an outsider may not send, `x-request-id`, the gateway's XFF and
//! XFCC, the log record) and admit it (CONNECT, the path's form, path normalisation).
//!
//! Path normalisation is Istio's default `meshConfig.pathNormalization: BASE`, i.e. Envoy's
//! `normalize_path: true` with `merge_slashes: false` and `path_with_escaped_slashes_action:
//! KEEP_UNCHANGED`, on every listener (as Istio's HTTP connection managers): see
//! [`normalize_path`]. Routing, AuthorizationPolicy and the app all see the normalised path.

use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Uri, Version};
use hyper::body::Incoming;

use super::headers::{
    X_FORWARDED_FOR, X_REQUEST_ID, append_forwarded_for, authority, ensure_request_id,
    protocol_str, sanitize_external, set_xfcc, strip_hop_by_hop,
};
use super::inflight::InFlight;
use super::reply::LocalReply;
use super::{HttpCtx, Role};
use crate::conn::ConnInfo;
use crate::telemetry::access_log::LogRecord;
use crate::upstream::body::ReqCounts;

/// A request ready for routing.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub(crate) req: Request<Incoming>,
    /// The request's authority (URI or Host).
    pub(crate) authority: Option<HeaderValue>,
    /// The version of the response: HTTP/2 for HTTP/2, else HTTP/1.1.
    pub(crate) version: Version,
    /// The request's size and gRPC messages (the body's filled in as it streams).
    pub(crate) received: Arc<ReqCounts>,
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
    head: &RequestHead,
) -> (Prepared, InFlight) {
    let down_version = req.version();
    let authority = authority(&req);
    // The head as it arrived, before the proxy changes a header.
    let received = Arc::new(ReqCounts {
        head_bytes: head.wire,
        grpc: head.grpc,
        ..ReqCounts::default()
    });
    let h = req.headers_mut();
    // What the client sent loses its hop-by-hop headers before the proxy adds any of its
    // own, so a name listed in `Connection` cannot remove one of the proxy's.
    strip_hop_by_hop(h);
    // Proxy-owned headers are believed only from a mesh peer over mTLS.
    if ctx.role == Role::Gateway || (ctx.role == Role::Inbound && conn.peer.is_none()) {
        sanitize_external(h);
    }
    ensure_request_id(h);
    if ctx.role == Role::Gateway {
        append_forwarded_for(h, conn.remote.ip());
        // SANITIZE_SET: the downstream's own client certificate, if it presented one.
        set_xfcc(h, conn);
    }
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
    rec.client = ctx.role != Role::Inbound;
    // The access-log policy in force now: its direction's gate, and the headers its format
    // and filter read (none for Istio's default format).
    let current = ctx.shared.current.load();
    let policy = &current.access_log;
    if policy.logs(rec.client) {
        policy.capture_request(req.headers(), &mut rec);
        rec.policy = Some(Arc::clone(policy));
    }
    // Telemetry metric overrides, with the headers their values read.
    if let Some(ov) = &current.metric_overrides {
        for n in &ov.request_headers {
            if let Some(v) = req.headers().get(n) {
                rec.request_headers.push((n.clone(), v.clone()));
            }
        }
        rec.overrides = Some(Arc::clone(ov));
    }
    drop(current);
    let inflight = InFlight::new(Arc::clone(&ctx.shared), rec, started, Arc::clone(&received));
    let prepared = Prepared {
        req,
        authority,
        version: response_version(down_version),
        received,
    };
    (prepared, inflight)
}

/// What the proxy learns from a request head in one pass over its headers: the size Envoy
/// checks against `max_request_headers_kb`, the wire size, and whether it is gRPC.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead {
    /// Request target and header names and values.
    pub(crate) limit_size: usize,
    /// The head in HTTP/1.1 form: request line, `name: value` CRLF per field, the blank
    /// line (what Envoy's downstream bytes meter counts for HTTP/1; an HTTP/2 head is counted
    /// the same way, uncompressed).
    pub(crate) wire: u64,
    /// `content-type: application/grpc*`.
    pub(crate) grpc: bool,
}

impl RequestHead {
    /// One pass over the headers, no allocation.
    pub(crate) fn of<B>(req: &Request<B>) -> Self {
        let uri = req.uri();
        let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
        let (mut fields, mut count, mut grpc) = (0, 0, false);
        for (k, v) in req.headers() {
            fields += k.as_str().len() + v.len();
            count += 1;
            if k == header::CONTENT_TYPE {
                grpc = v.as_bytes().starts_with(b"application/grpc");
            }
        }
        let mut target = path.max(1);
        if let (Some(s), Some(a)) = (uri.scheme_str(), uri.authority()) {
            target += s.len() + 3 + a.as_str().len();
        }
        // `METHOD SP target SP HTTP/1.1 CRLF`, fields, CRLF.
        let line = req.method().as_str().len() + 1 + target + 1 + 8 + 2;
        RequestHead {
            limit_size: path + fields,
            wire: (line + fields + 4 * count + 2) as u64,
            grpc,
        }
    }
}

/// Requests the proxy does not handle at all (CONNECT, a path that is not origin-form, a
/// path that cannot be normalised); otherwise the path is normalised in place (the log
/// record shows the normalised path, as Envoy's `%REQ(:PATH)%`).
pub(crate) fn admit(p: &mut Prepared, inflight: &mut InFlight) -> Result<(), LocalReply> {
    if p.req.method() == Method::CONNECT {
        return Err(LocalReply::ConnectNotSupported);
    }
    let Some(pq) = p.req.uri().path_and_query() else {
        return Ok(());
    };
    let normal = match normalize_path(pq.path()) {
        Ok(None) => return Ok(()),
        Ok(Some(n)) => n,
        Err(e) => {
            tracing::debug!(path = pq.path(), "request path rejected: {e:?}");
            return Err(match e {
                PathError::NotOriginForm => LocalReply::AbsolutePath,
                PathError::Nul => LocalReply::PathNormalizationFailed,
            });
        }
    };
    let full = match pq.query() {
        Some(q) => format!("{normal}?{q}"),
        None => normal,
    };
    let Ok(new_pq) = PathAndQuery::try_from(full) else {
        return Err(LocalReply::PathNormalizationFailed);
    };
    let mut parts = p.req.uri().clone().into_parts();
    parts.path_and_query = Some(new_pq.clone());
    let Ok(uri) = Uri::from_parts(parts) else {
        return Err(LocalReply::PathNormalizationFailed);
    };
    *p.req.uri_mut() = uri;
    inflight.fin().rec.path = Some(new_pq);
    Ok(())
}

/// Why a path is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PathError {
    /// Not origin-form: `*` (`OPTIONS *`). Envoy answers 404 `absolute_path_rejected`.
    /// (An absolute-form request line reaches here as its path, as in Envoy's codec.)
    NotOriginForm,
    /// `%00` in the path: Envoy's `normalize_path` fails, 400 `path_normalization_failed`.
    Nul,
}

/// Envoy's `normalize_path` (Chromium's path canonicalisation, RFC 3986 section 6.2.2) on a
/// path without its query; `None` when it is already normal (the usual case: one scan, no
/// allocation). What it does:
/// - percent-encoded unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, so `%2e` is
///   a dot and `%2e%2e` a `..` segment; other escapes stay as sent, their case kept: `%2F`
///   and `%5C` are not decoded (`path_with_escaped_slashes_action: KEEP_UNCHANGED`);
/// - a backslash is a separator (`/a/..\c` is `/c`);
/// - `.` and `..` segments are removed (RFC 3986 5.2.4); `..` above the root stays at the
///   root (`/../a` is `/a`);
/// - repeated slashes are kept (`//api/posts` stays: BASE does not merge slashes, so it does
///   not match `/api/*`, as in Istio);
/// - `%00` is refused ([`PathError::Nul`]), as is a path that does not start with `/`.
///
/// Not done (Chromium also escapes characters like `"` or `{`; the http parser passes few).
pub(crate) fn normalize_path(path: &str) -> Result<Option<String>, PathError> {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return Err(PathError::NotOriginForm);
    }
    if !needs_normalizing(b) {
        return Ok(None);
    }
    // Decode what must be decoded, backslashes as slashes.
    let mut decoded = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => decoded.push('/'),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(0), Some(0)) => return Err(PathError::Nul),
                (Some(h), Some(l)) if is_unreserved((h << 4) | l) => {
                    decoded.push(char::from((h << 4) | l));
                    i += 3;
                    continue;
                }
                _ => decoded.push('%'),
            },
            _ => {
                let ch_len = utf8_len(b[i]);
                decoded.push_str(&path[i..(i + ch_len).min(b.len())]);
                i += ch_len;
                continue;
            }
        }
        i += 1;
    }
    // Remove dot segments; the path starts with '/'.
    let mut out: Vec<&str> = Vec::new();
    let mut segs = decoded[1..].split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        // A trailing `.` or `..` leaves a directory: "/a/b/.." is "/a/".
        if last {
            out.push("");
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if normal.is_empty() {
        normal.push('/');
    }
    Ok((normal != path).then_some(normal))
}

/// A percent sign, a backslash, or a `.`/`..` segment: something to normalise.
fn needs_normalizing(b: &[u8]) -> bool {
    let mut seg_start = 0;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' | b'\\' => return true,
            b'/' => {
                if is_dot_segment(&b[seg_start..i]) {
                    return true;
                }
                seg_start = i + 1;
            }
            _ => {}
        }
    }
    is_dot_segment(&b[seg_start..])
}

fn is_dot_segment(s: &[u8]) -> bool {
    s == b"." || s == b".."
}

fn hex(c: u8) -> Option<u8> {
    char::from(c).to_digit(16).map(|d| d as u8)
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// The length of the UTF-8 character that starts with `first` (1 for a continuation byte,
/// which a `&str` never starts a character with).
fn utf8_len(first: u8) -> usize {
    match first {
        0xF0..=0xFF => 4,
        0xE0..=0xEF => 3,
        0xC0..=0xDF => 2,
        _ => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::headers::response_head_len;

    #[test]
    fn a_head_is_sized_as_its_http1_wire_form_and_grpc_is_told_by_content_type() {
        let req = Request::post("http://was:8080/api?x=1")
            .header("host", "was:8080")
            .header("content-length", "5")
            .body(())
            .unwrap();
        let h = RequestHead::of(&req);
        let wire =
            "POST http://was:8080/api?x=1 HTTP/1.1\r\nhost: was:8080\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(h.wire, wire.len() as u64);
        assert_eq!(h.limit_size, "/api?x=1hostwas:8080content-length5".len());
        assert!(!h.grpc);
        let req = Request::post("/pkg.Svc/M")
            .header("content-type", "application/grpc+proto")
            .body(())
            .unwrap();
        let h = RequestHead::of(&req);
        assert!(h.grpc);
        assert_eq!(
            h.wire,
            "POST /pkg.Svc/M HTTP/1.1\r\ncontent-type: application/grpc+proto\r\n\r\n".len() as u64
        );
        let mut resp = http::HeaderMap::new();
        resp.insert("content-length", HeaderValue::from_static("2"));
        let sent = "HTTP/1.1 404 Not Found\r\ncontent-length: 2\r\n\r\n";
        // The codec adds `date` when the response has none.
        assert_eq!(
            response_head_len(http::StatusCode::NOT_FOUND, &resp),
            (sent.len() + 37) as u64
        );
        resp.insert(
            "date",
            HeaderValue::from_static("Tue, 01 Dec 2026 14:00:00 GMT"),
        );
        assert_eq!(
            response_head_len(http::StatusCode::NOT_FOUND, &resp),
            (sent.len() + 37) as u64
        );
    }

    #[test]
    fn paths_are_normalised_as_envoys_normalize_path() {
        let n = |p: &str| normalize_path(p).map(|o| o.unwrap_or_else(|| p.to_string()));
        for (from, to) in [
            ("/", "/"),
            ("/api/posts", "/api/posts"),
            ("/api/x/../admin", "/api/admin"),
            ("/api/./posts", "/api/posts"),
            ("/a/b/../c", "/a/c"),
            ("/a/b/./c", "/a/b/c"),
            ("/a/b/../../../../c", "/c"),
            ("/../a/b", "/a/b"),
            ("/./a/b", "/a/b"),
            ("/..", "/"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a/..\\c", "/c"),
            ("/a/b/%2E%2E/c", "/a/c"),
            ("/a/b/%2e%2e/c", "/a/c"),
            ("/a/b/%2E./c", "/a/c"),
            ("/a/b/%2E/c", "/a/b/c"),
            ("/api/%2e%2e/admin", "/admin"),
            ("/%61dmin", "/admin"),
            ("/%c0%af", "/%c0%af"),
            ("/%5c%25", "/%5c%25"),
            ("/a/%2F%2f/c", "/a/%2F%2f/c"),
            ("/A/B/C", "/A/B/C"),
            ("//api/posts", "//api/posts"),
            ("/a//../b", "/a/b"),
            ("/a%", "/a%"),
            ("/a%2", "/a%2"),
            ("/a%zz", "/a%zz"),
            ("/caf\u{e9}/..", "/"),
            ("/...", "/..."),
            ("/.a/b.", "/.a/b."),
        ] {
            assert_eq!(n(from).unwrap(), to, "{from}");
        }
        assert_eq!(normalize_path("/api/posts"), Ok(None));
        assert_eq!(normalize_path("*"), Err(PathError::NotOriginForm));
        assert_eq!(normalize_path("/xyz/.%00../abc"), Err(PathError::Nul));
        assert_eq!(normalize_path("/xyz/AAAAA%%0000/abc"), Err(PathError::Nul));
    }

    #[test]
    fn responses_are_http2_or_http11() {
        assert_eq!(response_version(Version::HTTP_2), Version::HTTP_2);
        assert_eq!(response_version(Version::HTTP_10), Version::HTTP_11);
        assert_eq!(response_version(Version::HTTP_11), Version::HTTP_11);
    }
}
