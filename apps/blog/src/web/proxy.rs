//! The `/api` reverse proxy: a pooled keep-alive hyper client that connects to the was
//! directly (its host resolved through `SKEIN_HOSTS`, then DNS) or through `HTTP_PROXY`
//! in absolute form.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::hosts::{ResolveError, Resolver};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The header a skein proxy puts on mirrored (shadow) copies of requests.
pub const MIRROR_HEADER: &str = "x-skein-mirror";

/// Why the proxy could not get an answer from the was.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the API server is unreachable")]
    Unreachable(#[source] hyper_util::client::legacy::Error),
    #[error("the API server did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot build the upstream request: {0}")]
    BadRequest(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::Unreachable(_) => StatusCode::BAD_GATEWAY,
            ProxyError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::Unreachable(_) => "bad_gateway",
            ProxyError::Timeout(_) => "gateway_timeout",
            ProxyError::BadRequest(_) => "bad_request",
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let message = match &self {
            ProxyError::BadRequest(_) => "the request cannot be forwarded".to_owned(),
            other => other.to_string(),
        };
        let body = serde_json::json!({ "error": self.code(), "message": message });
        (self.status(), axum::Json(body)).into_response()
    }
}

/// Resolves upstream names through the hosts file, then DNS.
#[derive(Debug, Clone)]
pub(crate) struct HostsResolver(pub(crate) Resolver);

impl tower_service::Service<Name> for HostsResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let resolver = self.0.clone();
        Box::pin(async move {
            // HttpConnector fills in the port afterwards.
            let addrs = resolver.resolve(name.as_str(), 0).await?;
            Ok(addrs.into_iter())
        })
    }
}

/// Connects to the destination, or to the forward proxy when one is configured (and then
/// tells hyper so, which makes it send absolute-form request targets).
#[derive(Debug, Clone)]
pub(crate) struct UpstreamConnector {
    http: HttpConnector<HostsResolver>,
    proxy: Option<Uri>,
}

impl UpstreamConnector {
    pub(crate) fn new(resolver: Resolver, proxy: Option<Uri>) -> Self {
        let mut http = HttpConnector::new_with_resolver(HostsResolver(resolver));
        http.set_nodelay(true);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_keepalive(Some(Duration::from_secs(60)));
        Self { http, proxy }
    }
}

/// A TCP connection that may lead to a forward proxy.
#[derive(Debug)]
pub(crate) struct UpstreamConn {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for UpstreamConn {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl hyper::rt::Read for UpstreamConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for UpstreamConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }
}

impl tower_service::Service<Uri> for UpstreamConnector {
    type Response = UpstreamConn;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<UpstreamConn, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.http, cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let proxied = self.proxy.is_some();
        let target = self.proxy.clone().unwrap_or(dst);
        let connecting = self.http.call(target);
        Box::pin(async move {
            let io = connecting.await?;
            Ok(UpstreamConn { io, proxied })
        })
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The forwarding half of blog-web.
#[derive(Debug)]
pub struct Proxy {
    client: Client<UpstreamConnector, Body>,
    /// `scheme://authority` of the was.
    base: Uri,
    /// Path prefix of `WAS_URL` without the trailing slash ("" for none).
    base_path: String,
    host: HeaderValue,
    timeout: Duration,
}

impl Proxy {
    pub(crate) fn new(
        resolver: Resolver,
        base: Uri,
        host: HeaderValue,
        proxy: Option<Uri>,
        timeout: Duration,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build(UpstreamConnector::new(resolver, proxy));
        let base_path = base.path().trim_end_matches('/').to_owned();
        Self {
            client,
            base,
            base_path,
            host,
            timeout,
        }
    }

    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, ProxyError> {
        let pq = uri.path_and_query().map(|pq| pq.as_str()).unwrap_or("/");
        let mut parts = self.base.clone().into_parts();
        parts.path_and_query = Some(
            format!("{}{}", self.base_path, pq)
                .parse()
                .map_err(|e| ProxyError::BadRequest(format!("{e}")))?,
        );
        Uri::from_parts(parts).map_err(|e| ProxyError::BadRequest(format!("{e}")))
    }

    /// Forwards `req` to the was and returns its answer (or a 502/504 JSON error).
    pub async fn forward(self: Arc<Self>, req: Request) -> Response {
        // Shadow traffic (a mesh mirror's copy, marked `x-skein-mirror`) must not write: the
        // canary shares the was and its database with stable, so a mirrored POST or DELETE
        // would run twice. Reads go through; writes are acknowledged and dropped here. The
        // marker is the mesh's: a skein gateway and a plaintext inbound remove a client's
        // `x-skein-*` headers, so a forged one never gets here through the mesh.
        let mirrored = req.headers().contains_key(MIRROR_HEADER);
        if mirrored && !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
            tracing::info!(method = %req.method(), uri = %req.uri(), "mirrored write not forwarded");
            let body = serde_json::json!({
                "mirrored": true,
                "message": "a mirrored copy of a write is acknowledged, not performed",
            });
            return (StatusCode::ACCEPTED, axum::Json(body)).into_response();
        }
        match self.try_forward(req).await {
            Ok(res) => res,
            Err(err) => {
                match &err {
                    ProxyError::Unreachable(e) => {
                        tracing::warn!(error = %error_chain(e), upstream = %self.base, "upstream request failed")
                    }
                    other => {
                        tracing::warn!(error = %other, upstream = %self.base, "upstream request failed")
                    }
                }
                err.into_response()
            }
        }
    }

    async fn try_forward(&self, req: Request) -> Result<Response, ProxyError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip());
        let (mut parts, body) = req.into_parts();
        let uri = self.upstream_uri(&parts.uri)?;
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });

        // Istio's trace headers go on whatever the request's `Connection` header says; with
        // spans exported, the web's own span becomes the parent the was's sidecar sees.
        let trace = crate::trace::TraceHeaders::from_headers(&parts.headers);
        let headers = &mut parts.headers;
        strip_hop_by_hop(headers);
        trace.apply(headers);
        crate::trace::inject_current(headers);
        headers.insert(header::HOST, self.host.clone());
        if let Some(ip) = peer {
            let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
                Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
                _ => ip.to_string(),
            };
            if let Ok(v) = HeaderValue::from_str(&xff) {
                headers.insert("x-forwarded-for", v);
            }
        }
        if !headers.contains_key("x-forwarded-proto") {
            headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
        }
        if let Some(host) = original_host
            && !headers.contains_key("x-forwarded-host")
        {
            headers.insert("x-forwarded-host", host);
        }

        // Like nginx's `proxy_next_upstream error`: a bodiless GET/HEAD whose connection fails
        // before any response (a pooled connection to a pod that just died) is sent once more.
        let replay = (parts.method == Method::GET || parts.method == Method::HEAD)
            && !parts.headers.contains_key(header::TRANSFER_ENCODING)
            && parts
                .headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|v| v.as_bytes() == b"0");
        let again = replay.then(|| (parts.clone(), uri.clone()));
        let mut upstream = http::Request::from_parts(parts, body);
        *upstream.uri_mut() = uri;
        *upstream.version_mut() = Version::HTTP_11;

        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut result = tokio::time::timeout_at(deadline, self.client.request(upstream)).await;
        if let (Ok(Err(e)), Some((parts, uri))) = (&result, again) {
            tracing::debug!(error = %error_chain(e), "upstream connection failed; retrying once");
            let mut upstream = http::Request::from_parts(parts, Body::empty());
            *upstream.uri_mut() = uri;
            *upstream.version_mut() = Version::HTTP_11;
            result = tokio::time::timeout_at(deadline, self.client.request(upstream)).await;
        }
        let res = match result {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => return Err(ProxyError::Unreachable(e)),
            Err(_) => return Err(ProxyError::Timeout(self.timeout)),
        };
        let (mut parts, body) = res.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, Body::new(body)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// `NO_PROXY`: comma-separated hosts; `*` matches all, `.example.com` or `example.com`
/// matches the domain and its subdomains, an IP matches itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy(Vec<String>);

impl NoProxy {
    pub fn parse(s: &str) -> Self {
        Self(
            s.split(',')
                .map(|p| p.trim().trim_start_matches('.').to_ascii_lowercase())
                .map(|p| match p.rsplit_once(':') {
                    // Drop a port, but not from a bare IPv6 address.
                    Some((h, port))
                        if port.chars().all(|c| c.is_ascii_digit()) && !h.contains(':') =>
                    {
                        h.to_owned()
                    }
                    _ => p,
                })
                .filter(|p| !p.is_empty())
                .collect(),
        )
    }

    pub fn matches(&self, host: &str) -> bool {
        let host = host
            .trim_matches(['[', ']'])
            .trim_end_matches('.')
            .to_ascii_lowercase();
        self.0.iter().any(|p| {
            p == "*"
                || host == *p
                || (host.len() > p.len()
                    && host.ends_with(p.as_str())
                    && host.as_bytes()[host.len() - p.len() - 1] == b'.')
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_proxy_matching() {
        let np = NoProxy::parse("localhost, .cluster.local,10.0.0.1,example.com:8080,");
        assert!(np.matches("localhost"));
        assert!(np.matches("was-service.blog-system.svc.cluster.local"));
        assert!(np.matches("cluster.local"));
        assert!(!np.matches("notcluster.local"));
        assert!(np.matches("10.0.0.1"));
        assert!(np.matches("api.example.com"));
        assert!(!np.matches("was-service"));
        assert!(NoProxy::parse("*").matches("anything"));
        assert!(!NoProxy::parse("").matches("anything"));
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        h.insert("x-request-id", HeaderValue::from_static("r1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert!(h.contains_key("traceparent"));
        assert!(h.contains_key("x-request-id"));
    }
}
