//! Header work on the request path: the names the proxy reads and writes, hop-by-hop
//! removal, `x-request-id`, `x-forwarded-for`, `x-forwarded-client-cert`, and the request
//! head as it goes upstream.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};

use crate::conn::ConnInfo;
use crate::upstream::body::ReqBody;
use crate::upstream::cluster::UpstreamProto;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");
pub(crate) static X_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub(crate) static X_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) static X_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The request's authority: absolute-form (HTTP proxy requests) and HTTP/2 requests carry
/// it in the URI, which wins (the Host header's bytes are reused when they say the same, to
/// avoid a copy); otherwise the Host header.
pub(crate) fn authority<B>(req: &Request<B>) -> Option<HeaderValue> {
    let host = req.headers().get(header::HOST);
    match req.uri().authority() {
        Some(a) => match host {
            Some(h) if h.as_bytes() == a.as_str().as_bytes() => Some(h.clone()),
            _ => HeaderValue::from_str(a.as_str()).ok(),
        },
        None => host.cloned(),
    }
}

/// Gives the request an `x-request-id` when it has none.
pub(crate) fn ensure_request_id(h: &mut HeaderMap) {
    if !h.contains_key(&X_REQUEST_ID) {
        h.insert(X_REQUEST_ID.clone(), request_id());
    }
}

/// A random UUID v4 for `x-request-id`.
fn request_id() -> HeaderValue {
    let r = fastrand::u128(..);
    let b = r.to_be_bytes();
    let mut s = [0u8; 36];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut j = 0;
    for (i, byte) in b.iter().enumerate() {
        let byte = match i {
            6 => (byte & 0x0f) | 0x40,
            8 => (byte & 0x3f) | 0x80,
            _ => *byte,
        };
        if matches!(i, 4 | 6 | 8 | 10) {
            s[j] = b'-';
            j += 1;
        }
        s[j] = HEX[(byte >> 4) as usize];
        s[j + 1] = HEX[(byte & 0xf) as usize];
        j += 2;
    }
    HeaderValue::from_bytes(&s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

/// A gateway appends the client's address to `x-forwarded-for`.
pub(crate) fn append_forwarded_for(h: &mut HeaderMap, client: std::net::IpAddr) {
    let Ok(ip) = HeaderValue::from_str(&client.to_string()) else {
        return;
    };
    match h.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {client}")) {
                h.insert(X_FORWARDED_FOR.clone(), v);
            }
        }
        None => {
            h.insert(X_FORWARDED_FOR.clone(), ip);
        }
    }
}

/// `x-forwarded-client-cert` on inbound requests: the mTLS peer's element is appended to what
/// a previous hop sent (Istio's APPEND_FORWARD); on plaintext connections the header is removed,
/// since anyone could have written it.
pub(crate) fn set_xfcc(h: &mut HeaderMap, conn: &ConnInfo) {
    match &conn.xfcc {
        None => {
            h.remove(&X_FORWARDED_CLIENT_CERT);
        }
        Some(mine) => {
            let joined = h
                .get(&X_FORWARDED_CLIENT_CERT)
                .and_then(|prev| {
                    let mut v = prev.as_bytes().to_vec();
                    v.push(b',');
                    v.extend_from_slice(mine.as_bytes());
                    HeaderValue::from_bytes(&v).ok()
                })
                .unwrap_or_else(|| mine.clone());
            h.insert(X_FORWARDED_CLIENT_CERT.clone(), joined);
        }
    }
}

/// Removes the hop-by-hop headers (those `Connection` names too; `TE: trailers` stays).
pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    if let Some(conn) = h.remove(header::CONNECTION)
        && let Ok(list) = conn.to_str()
    {
        for name in list.split(',') {
            let name = name.trim();
            if !name.is_empty() && !name.eq_ignore_ascii_case("close") {
                h.remove(name);
            }
        }
    }
    h.remove(&PROXY_CONNECTION);
    h.remove(&KEEP_ALIVE);
    h.remove(header::TRANSFER_ENCODING);
    h.remove(header::UPGRADE);
    h.remove(header::PROXY_AUTHORIZATION);
    if let Some(te) = h.get(header::TE)
        && te.as_bytes() != b"trailers"
    {
        h.remove(header::TE);
    }
}

/// The access log's protocol field.
pub(crate) fn protocol_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_10 => "HTTP/1.0",
        _ => "HTTP/1.1",
    }
}

/// Prepares headers, URI and version of a request going upstream.
pub(crate) fn prepare_upstream(
    req: &mut Request<ReqBody>,
    authority: Option<HeaderValue>,
    proto: UpstreamProto,
) {
    strip_hop_by_hop(req.headers_mut());
    let pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    match proto {
        UpstreamProto::H1 => {
            parts.path_and_query = Some(pq);
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
            if let Some(v) = authority {
                req.headers_mut().insert(header::HOST, v);
            }
            *req.version_mut() = Version::HTTP_11;
        }
        UpstreamProto::H2 => {
            parts.scheme = Some(Scheme::HTTP);
            parts.authority = authority.and_then(|a| Authority::try_from(a.as_bytes()).ok());
            parts.path_and_query = Some(pq);
            if parts.authority.is_none() {
                parts.scheme = None;
            }
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
            req.headers_mut().remove(header::HOST);
            *req.version_mut() = Version::HTTP_2;
        }
    }
}

/// A request head kept for replays.
pub(crate) fn clone_head(req: &Request<ReqBody>) -> Request<()> {
    let mut p = Request::new(());
    *p.method_mut() = req.method().clone();
    *p.uri_mut() = req.uri().clone();
    *p.version_mut() = req.version();
    *p.headers_mut() = req.headers().clone();
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> ConnInfo {
        let a = "127.0.0.1:1".parse().unwrap();
        ConnInfo::plain(a, a)
    }

    #[test]
    fn the_uri_authority_wins_over_host() {
        let req = Request::get("http://a.b:80/x")
            .header(header::HOST, "c.d")
            .body(())
            .unwrap();
        assert_eq!(authority(&req).unwrap(), "a.b:80");
        let req = Request::get("/x")
            .header(header::HOST, "c.d")
            .body(())
            .unwrap();
        assert_eq!(authority(&req).unwrap(), "c.d");
        assert!(authority(&Request::get("/x").body(()).unwrap()).is_none());
    }

    #[test]
    fn request_ids_are_uuid_v4_and_kept() {
        let mut h = HeaderMap::new();
        ensure_request_id(&mut h);
        let id = h.get(&X_REQUEST_ID).unwrap().to_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_eq!(id.matches('-').count(), 4);
        ensure_request_id(&mut h);
        assert_eq!(h.get(&X_REQUEST_ID).unwrap(), id.as_str());
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, [10, 0, 0, 1].into());
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.1");
        append_forwarded_for(&mut h, [10, 0, 0, 2].into());
        assert_eq!(h.get(&X_FORWARDED_FOR).unwrap(), "10.0.0.1, 10.0.0.2");
    }

    #[test]
    fn xfcc_is_appended_on_mtls_and_removed_on_plaintext() {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_CLIENT_CERT.clone(),
            HeaderValue::from_static("By=a"),
        );
        set_xfcc(&mut h, &conn());
        assert!(h.get(&X_FORWARDED_CLIENT_CERT).is_none());
        let mine = ConnInfo {
            xfcc: Some(HeaderValue::from_static("By=me")),
            ..conn()
        };
        set_xfcc(&mut h, &mine);
        assert_eq!(h.get(&X_FORWARDED_CLIENT_CERT).unwrap(), "By=me");
        set_xfcc(&mut h, &mine);
        assert_eq!(h.get(&X_FORWARDED_CLIENT_CERT).unwrap(), "By=me,By=me");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        for (n, v) in [
            ("connection", "close, x-private"),
            ("x-private", "1"),
            ("keep-alive", "5"),
            ("proxy-connection", "keep-alive"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "basic x"),
            ("te", "gzip"),
            ("x-kept", "1"),
        ] {
            h.insert(HeaderName::from_static(n), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
    }

    fn upstream(uri: &str, proto: UpstreamProto) -> Request<ReqBody> {
        let mut req = Request::get(uri)
            .header(header::HOST, "orig")
            .header(header::CONNECTION, "keep-alive")
            .body(ReqBody::empty())
            .unwrap();
        prepare_upstream(&mut req, Some(HeaderValue::from_static("svc:8080")), proto);
        req
    }

    #[test]
    fn upstream_heads_are_origin_form_for_h1_and_absolute_for_h2() {
        let h1 = upstream("http://a/p?q=1", UpstreamProto::H1);
        assert_eq!(h1.uri(), "/p?q=1");
        assert_eq!(h1.version(), Version::HTTP_11);
        assert_eq!(h1.headers().get(header::HOST).unwrap(), "svc:8080");
        assert!(h1.headers().get(header::CONNECTION).is_none());
        let h2 = upstream("/p", UpstreamProto::H2);
        assert_eq!(h2.uri(), "http://svc:8080/p");
        assert_eq!(h2.version(), Version::HTTP_2);
        assert!(h2.headers().get(header::HOST).is_none());
        assert_eq!(clone_head(&h2).uri(), h2.uri());
        assert_eq!(protocol_str(Version::HTTP_10), "HTTP/1.0");
    }
}
