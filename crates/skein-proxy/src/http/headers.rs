//! Header work on the request path: the names the proxy reads and writes, hop-by-hop
//! removal, the proxy-owned headers a client may not send, `x-request-id`,
//! `x-forwarded-for` (and the trusted client address it gives), `x-forwarded-client-cert`,
//! and the request head as it goes upstream.
//!
//! Order on a request (see `request::prepare`): hop-by-hop headers go first (including the
//! names a client lists in `Connection`), so that nothing the client nominates can remove a
//! header the proxy adds afterwards (`x-skein-mirror`, `x-forwarded-for`, XFCC, ...).
//! [`strip_hop_by_hop`] and [`append_forwarded_for`] are public (`skein_proxy::headers`) so
//! that the local runtime's ingress applies the same hygiene.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Uri, Version};
use std::net::IpAddr;

use crate::conn::ConnInfo;
use crate::upstream::body::ReqBody;
use crate::upstream::cluster::UpstreamProto;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_CLIENT_CERT: HeaderName =
    HeaderName::from_static("x-forwarded-client-cert");
pub(crate) static X_ORIGINAL_PATH: HeaderName = HeaderName::from_static("x-envoy-original-path");
pub(crate) static X_ATTEMPT_COUNT: HeaderName = HeaderName::from_static("x-envoy-attempt-count");
pub(crate) static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub(crate) static X_SERVICE_TIME: HeaderName =
    HeaderName::from_static("x-envoy-upstream-service-time");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");

/// The prefix of the headers only a skein proxy writes (`x-skein-mirror`,
/// `x-skein-not-delivered`).
const SKEIN_PREFIX: &[u8] = b"x-skein-";
/// Envoy's internal request headers, removed from external requests (Envoy's "HTTP header
/// sanitizing" list; XFCC, XFF and `x-request-id` are handled on their own).
const ENVOY_INTERNAL: &[&str] = &[
    "x-envoy-decorator-operation",
    "x-envoy-downstream-service-cluster",
    "x-envoy-downstream-service-node",
    "x-envoy-expected-rq-timeout-ms",
    "x-envoy-external-address",
    "x-envoy-force-trace",
    "x-envoy-internal",
    "x-envoy-ip-tags",
    "x-envoy-max-retries",
    "x-envoy-retry-grpc-on",
    "x-envoy-retry-on",
    "x-envoy-upstream-alt-stat-name",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-upstream-rq-timeout-alt-response",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-stream-duration-ms",
];

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

/// A gateway (or an ingress) appends the client's address to `x-forwarded-for`.
pub fn append_forwarded_for(h: &mut HeaderMap, client: std::net::IpAddr) {
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

/// Removes the hop-by-hop headers of a message as it was received: those every `Connection`
/// header lists, `Connection` itself, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`,
/// `Upgrade`, `Trailer`, `Proxy-Authorization`, `Proxy-Authenticate`, and `TE` unless it is
/// `trailers`. Call it before adding any header of one's own: a nominated name is removed
/// whatever it is.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // Most messages carry none of these: one pass over the names (standard names compare as
    // enums) instead of a hashed `remove` per name.
    if !h.keys().any(|n| {
        is_connection_specific(n) || n == header::TRAILER || n == header::PROXY_AUTHENTICATE
    }) {
        return;
    }
    let mut values = h.get_all(header::CONNECTION).iter();
    match (values.next(), values.next()) {
        (None, _) => {}
        (Some(_), None) => {
            if let Some(v) = h.remove(header::CONNECTION) {
                remove_nominated(h, &v);
            }
        }
        // Several `Connection` headers (rare): each one's names go.
        (Some(_), Some(_)) => {
            let all: Vec<HeaderValue> = h.get_all(header::CONNECTION).iter().cloned().collect();
            h.remove(header::CONNECTION);
            for v in &all {
                remove_nominated(h, v);
            }
        }
    }
    remove_connection_headers(h);
    h.remove(header::TRAILER);
    h.remove(header::PROXY_AUTHENTICATE);
}

/// The names a `Connection` value lists (except `close`, which names no header).
fn remove_nominated(h: &mut HeaderMap, conn: &HeaderValue) {
    let Ok(list) = conn.to_str() else {
        return;
    };
    for name in list.split(',') {
        let name = name.trim();
        if !name.is_empty() && !name.eq_ignore_ascii_case("close") {
            h.remove(name);
        }
    }
}

/// A connection-specific header by its fixed name; `TE` counts (it stays only as
/// `trailers`, which [`remove_connection_headers`] checks).
fn is_connection_specific(n: &HeaderName) -> bool {
    n == header::CONNECTION
        || n == header::TRANSFER_ENCODING
        || n == header::UPGRADE
        || n == header::PROXY_AUTHORIZATION
        || n == header::TE
        || n == PROXY_CONNECTION
        || n == KEEP_ALIVE
}

/// The connection-specific headers by their fixed names (what an upstream request must not
/// carry, e.g. after header operations); the names `Connection` lists are not read here.
fn strip_connection_headers(h: &mut HeaderMap) {
    if h.keys().any(is_connection_specific) {
        remove_connection_headers(h);
    }
}

fn remove_connection_headers(h: &mut HeaderMap) {
    h.remove(header::CONNECTION);
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

/// Removes what only the mesh may say from a request that does not come from a mesh peer
/// (every gateway request; a plaintext inbound one): `x-skein-*`, Envoy's internal
/// `x-envoy-*` headers and `x-forwarded-client-cert` (Istio's gateway default
/// `SANITIZE_SET`; the element of an mTLS peer, if any, is set afterwards by [`set_xfcc`]).
/// One pass over the names; nothing allocated unless something is removed.
pub(crate) fn sanitize_external(h: &mut HeaderMap) {
    let internal = |n: &HeaderName| {
        let b = n.as_str().as_bytes();
        b.starts_with(SKEIN_PREFIX)
            || *n == X_FORWARDED_CLIENT_CERT
            || (b.starts_with(b"x-envoy-") && ENVOY_INTERNAL.contains(&n.as_str()))
    };
    if !h.keys().any(internal) {
        return;
    }
    let names: Vec<HeaderName> = h.keys().filter(|n| internal(n)).cloned().collect();
    for n in names {
        h.remove(n);
    }
}

/// The trusted client address (Envoy's; what `remote.ip` and `remoteIpBlocks` use): the
/// `from_right`-th address from the right of `x-forwarded-for` as it goes upstream, or the
/// downstream peer when `from_right` is 0, the header has fewer addresses, or that one does
/// not parse. Never the leftmost entry, which the client chose. See [`xff_from_right`].
pub(crate) fn trusted_client_ip(
    xff: Option<&HeaderValue>,
    peer: IpAddr,
    from_right: u32,
) -> IpAddr {
    if from_right == 0 {
        return peer;
    }
    xff.and_then(|v| v.to_str().ok())
        .and_then(|list| list.rsplit(',').nth(from_right as usize - 1))
        .and_then(|a| a.trim().parse::<IpAddr>().ok())
        .unwrap_or(peer)
}

/// Which XFF entry is the client for Envoy with `xff_num_trusted_hops` = `num_trusted`.
/// `use_remote_address` (Istio's gateways) and the peer appended by this proxy: 0 trusted
/// hops is the peer itself, N the N-th address from the right of what the client sent, i.e.
/// the (N+1)-th after the append. Otherwise (sidecars, nothing appended): the (N+1)-th from
/// the right.
pub(crate) fn xff_from_right(use_remote_address: bool, num_trusted: u32) -> u32 {
    match (use_remote_address, num_trusted) {
        (true, 0) => 0,
        (_, n) => n.saturating_add(1),
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
    // The client's hop-by-hop headers went when the request came in; this only keeps
    // connection-specific headers that header operations may have added off the upstream.
    strip_connection_headers(req.headers_mut());
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

/// The wire size of a response head in HTTP/1.1 form: status line, `name: value` CRLF per
/// field, the blank line, and the `date` header the codec adds when the response has none.
/// One pass over the headers.
pub(crate) fn response_head_len(status: http::StatusCode, h: &http::HeaderMap) -> u64 {
    let (mut fields, mut date) = (0, 37);
    for (k, v) in h {
        fields += k.as_str().len() + v.len() + 4;
        if k == header::DATE {
            // `date: Tue, 01 Dec 2026 14:00:00 GMT` CRLF, already counted.
            date = 0;
        }
    }
    // `HTTP/1.1 SP 200 SP reason CRLF`
    let reason = status.canonical_reason().map_or(0, str::len);
    (8 + 1 + 3 + 1 + reason + 2 + fields + 2 + date) as u64
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

    #[test]
    fn each_hop_by_hop_header_goes_on_its_own() {
        // The fast path skips the removals when no such name is present; every name alone
        // must still take the slow path.
        for n in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
            "te",
            "trailer",
            "proxy-authenticate",
        ] {
            let mut h = HeaderMap::new();
            h.insert(HeaderName::from_static(n), HeaderValue::from_static("x"));
            h.insert(
                HeaderName::from_static("x-kept"),
                HeaderValue::from_static("1"),
            );
            strip_hop_by_hop(&mut h);
            let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(left, ["x-kept"], "{n}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
        strip_connection_headers(&mut h);
        assert!(h.is_empty());
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
