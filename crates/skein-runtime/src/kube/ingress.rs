//! The Ingress, served on 127.0.0.1 over HTTP and HTTPS the way ingress-nginx would: longest
//! matching path wins, the client's Host is kept, `X-Forwarded-*` and `X-Request-ID` are set,
//! and a connection refused by one pod is retried on the next.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skein_proxy::headers::{append_forwarded_for, strip_hop_by_hop};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::run::supervisor::Pods;

type Body = BoxBody<Bytes, hyper::Error>;

/// Request bodies are buffered (so a refused connection can be retried on another pod), up to
/// ingress-nginx's default `client_max_body_size`... made a little roomier.
const MAX_REQUEST_BODY: usize = 8 * 1024 * 1024;
/// ingress-nginx's default `proxy-read-timeout`.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Ingress {
    pods: Arc<Pods>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub fn serve(
    pods: Arc<Pods>,
    http: TcpListener,
    https: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector);
    let ingress = Ingress { pods, client };
    vec![
        tokio::spawn(accept_loop(ingress.clone(), http, None, shutdown.clone())),
        tokio::spawn(accept_loop(
            ingress,
            https,
            Some(TlsAcceptor::from(tls)),
            shutdown,
        )),
    ]
}

async fn accept_loop(
    ingress: Ingress,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (stream, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!("ingress accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = crate::run::supervisor::stopped(&mut shutdown) => return,
        };
        let _ = stream.set_nodelay(true);
        let ingress = ingress.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let https = tls.is_some();
            let service = hyper::service::service_fn(move |req| {
                let ingress = ingress.clone();
                async move { Ok::<_, Infallible>(ingress.handle(req, peer, https).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(s) => builder.serve_connection(TokioIo::new(s), service).await,
                    Err(e) => {
                        tracing::debug!(%peer, "TLS handshake failed: {e}");
                        return;
                    }
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, "ingress connection ended: {e}");
            }
        });
    }
}

impl Ingress {
    async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
        https: bool,
    ) -> Response<Body> {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_string)
            .or_else(|| req.uri().authority().map(|a| a.to_string()));
        let path = req.uri().path().to_string();
        let Some(route) = self
            .pods
            .plan
            .ingress
            .iter()
            .find(|r| r.matches(host.as_deref(), &path))
        else {
            return text(StatusCode::NOT_FOUND, "default backend - 404\n");
        };
        let (service, port) = (route.service, route.port);

        let (mut parts, body) = req.into_parts();
        let body = match read_body(body).await {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        // The client's hop-by-hop headers go before any of the ingress's own are added.
        strip_hop_by_hop(&mut parts.headers);
        strip_proxy_owned(&mut parts.headers);
        forwarded_headers(&mut parts.headers, peer, https, host.as_deref());
        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // HTTP/2 clients send no Host header; upstream pods speak HTTP/1.1 and need one.
        if let (None, Some(h)) = (parts.headers.get(header::HOST), host.as_deref())
            && let Ok(v) = HeaderValue::from_str(h)
        {
            parts.headers.insert(header::HOST, v);
        }

        self.forward(service, port, &parts, &path_and_query, body)
            .await
    }

    /// To the first of the Service port's ready endpoints that accepts the connection.
    async fn forward(
        &self,
        service: usize,
        port: u16,
        parts: &http::request::Parts,
        path_and_query: &str,
        body: Bytes,
    ) -> Response<Body> {
        let endpoints = self.pods.endpoints(service, port);
        if endpoints.is_empty() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "503 Service Temporarily Unavailable\n",
            );
        }
        for addr in endpoints {
            let mut upstream = Request::builder()
                .method(parts.method.clone())
                .uri(format!("http://{addr}{path_and_query}"))
                .version(http::Version::HTTP_11);
            if let Some(h) = upstream.headers_mut() {
                *h = parts.headers.clone();
            }
            let Ok(upstream) = upstream.body(Full::new(body.clone())) else {
                return text(StatusCode::BAD_REQUEST, "400 Bad Request\n");
            };
            match tokio::time::timeout(UPSTREAM_TIMEOUT, self.client.request(upstream)).await {
                Err(_) => return text(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Time-out\n"),
                Ok(Ok(resp)) => {
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    return Response::from_parts(rparts, rbody.boxed());
                }
                Ok(Err(e)) if e.is_connect() => {
                    tracing::debug!(%addr, "ingress upstream refused; trying the next pod: {e}");
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::warn!(%addr, "ingress upstream failed: {e}");
                    return text(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n");
                }
            }
        }
        text(StatusCode::BAD_GATEWAY, "502 Bad Gateway\n")
    }
}

/// The whole request body, up to [`MAX_REQUEST_BODY`]; the error reply otherwise.
async fn read_body(body: Incoming) -> Result<Bytes, Response<Body>> {
    match Limited::new(body, MAX_REQUEST_BODY).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                text(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "413 Request Entity Too Large\n",
                )
            } else {
                text(StatusCode::BAD_REQUEST, "400 Bad Request\n")
            },
        ),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|e| match e {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The header prefix only a skein proxy writes (`x-skein-mirror` marks a mirrored copy that
/// apps acknowledge without acting on): a client may not send it.
const SKEIN_PREFIX: &str = "x-skein-";

/// Headers of a request from outside: `x-skein-*` go (see [`SKEIN_PREFIX`]).
fn strip_proxy_owned(h: &mut HeaderMap) {
    let owned: Vec<header::HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with(SKEIN_PREFIX))
        .cloned()
        .collect();
    for k in owned {
        h.remove(k);
    }
}

fn forwarded_headers(h: &mut HeaderMap, peer: SocketAddr, https: bool, host: Option<&str>) {
    let ip = peer.ip().to_string();
    append_forwarded_for(h, peer.ip());
    let set = |h: &mut HeaderMap, k: &'static str, v: &str| {
        if let Ok(v) = HeaderValue::from_str(v) {
            h.insert(k, v);
        }
    };
    set(h, "x-real-ip", &ip);
    set(h, "x-forwarded-proto", if https { "https" } else { "http" });
    if let Some(host) = host {
        set(h, "x-forwarded-host", host);
    }
    if !h.contains_key("x-request-id") {
        set(h, "x-request-id", &request_id());
    }
}

/// 128 random bits in hex, as ingress-nginx's `$req_id`.
fn request_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_headers_are_cleaned_with_the_proxys_hygiene() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "x-private, x-forwarded-proto"),
            ("x-private", "1"),
            ("keep-alive", "5"),
            ("x-skein-mirror", "1"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-kept", "1"),
        ] {
            h.insert(k, HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        strip_proxy_owned(&mut h);
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        forwarded_headers(&mut h, peer, true, Some("blog.local"));
        for gone in ["connection", "x-private", "keep-alive", "x-skein-mirror"] {
            assert!(h.get(gone).is_none(), "{gone}");
        }
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 10.0.0.9");
        // Nominated by the client, then set by the ingress itself.
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-kept"], "1");
    }
}
