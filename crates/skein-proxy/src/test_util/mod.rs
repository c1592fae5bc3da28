//! Test helpers (feature `test-util`): in-process upstreams that report who answered and echo
//! the request, a tiny HTTP client, proxy starters, and a mesh CA ([`pki`]).
//!
//! Everything here serves loopback sockets on the caller's runtime, so the tests can run on
//! paused time (`#[tokio::test(start_paused = true)]`): nothing waits on another thread except
//! the access log's file writes, which tokio counts as work in progress. Sockets set
//! `TCP_NODELAY`: a small write that Nagle holds back for a delayed ACK is a real-time wait the
//! runtime cannot see, and paused time would jump to the next timer meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test support: a failed step fails the test here

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::{AccessLogSink, ProxyConfig, ProxyHandle};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use skein_snapshot::Snapshot;
use tokio::net::{TcpListener, TcpStream};

pub mod pki;

/// The result of a test that uses `?`.
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// An upstream HTTP server (HTTP/1.1 and h2c) that answers with JSON describing the request.
/// Request headers it obeys: `x-delay-ms` (sleep before answering), `x-status`,
/// `x-expect-pattern: LEN` (400 unless the body is `pattern(LEN)`), `x-fail-grpc-status: N`
/// (failing calls answer 200 with `grpc-status: N` instead of 503). Per-upstream modes: `fail_every`
/// (503 on every Nth call, 0: off), `delay_ms` (sleep before every answer).
#[derive(Clone)]
pub struct Upstream {
    /// The name it answers with (`x-upstream` and the JSON's `upstream`).
    pub name: String,
    /// Where it listens (loopback).
    pub addr: SocketAddr,
    /// Connections accepted.
    pub accepts: Arc<AtomicUsize>,
    /// Requests answered (or being answered).
    pub requests: Arc<AtomicUsize>,
    /// 503 on every Nth call (0: never).
    pub fail_every: Arc<AtomicUsize>,
    /// Delay before every answer, in ms.
    pub delay_ms: Arc<AtomicUsize>,
    /// Requests marked `x-skein-mirror`.
    pub mirrored: Arc<AtomicUsize>,
    /// Requests with `x-envoy-attempt-count` > 1 in flight now, and the most seen at once.
    pub retries_in_flight: Arc<AtomicUsize>,
    /// The most retries seen in flight at once.
    pub max_retries_in_flight: Arc<AtomicUsize>,
}

impl Upstream {
    /// Starts an upstream named `name` on a loopback port, served by the current runtime.
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let up = Upstream {
            name: name.to_string(),
            addr,
            accepts: Arc::new(AtomicUsize::new(0)),
            requests: Arc::new(AtomicUsize::new(0)),
            fail_every: Arc::new(AtomicUsize::new(0)),
            delay_ms: Arc::new(AtomicUsize::new(0)),
            mirrored: Arc::new(AtomicUsize::new(0)),
            retries_in_flight: Arc::new(AtomicUsize::new(0)),
            max_retries_in_flight: Arc::new(AtomicUsize::new(0)),
        };
        let u = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                u.accepts.fetch_add(1, Ordering::SeqCst);
                // No Nagle: on paused time a write held back for a delayed ACK is a real-time
                // wait the runtime does not see, and it would move the clock meanwhile.
                let _ = stream.set_nodelay(true);
                let u = u.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let u = u.clone();
                        async move { Ok::<_, Infallible>(u.answer(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        up
    }

    /// The address as `ip:port`.
    pub fn addr_str(&self) -> String {
        self.addr.to_string()
    }

    /// Connections accepted so far.
    pub fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let call = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let delay = header(req.headers(), "x-delay-ms")
            .and_then(|v| v.parse::<u64>().ok())
            .or_else(|| match self.delay_ms.load(Ordering::SeqCst) {
                0 => None,
                ms => Some(ms as u64),
            });
        let every = self.fail_every.load(Ordering::SeqCst);
        let mut status = header(req.headers(), "x-status").and_then(|v| v.parse::<u16>().ok());
        let fail_grpc = header(req.headers(), "x-fail-grpc-status");
        let mut grpc_status = None;
        if every > 0 && call.is_multiple_of(every) {
            match fail_grpc {
                // A trailers-only gRPC failure: 200 with grpc-status in the headers.
                Some(g) => grpc_status = Some(g),
                None => status = Some(503),
            }
        }
        if req.headers().contains_key("x-skein-mirror") {
            self.mirrored.fetch_add(1, Ordering::SeqCst);
        }
        let retry = header(req.headers(), "x-envoy-attempt-count")
            .and_then(|v| v.parse::<u32>().ok())
            .is_some_and(|n| n > 1);
        let _retry = retry.then(|| {
            let now = self.retries_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_retries_in_flight.fetch_max(now, Ordering::SeqCst);
            Decrement(Arc::clone(&self.retries_in_flight))
        });
        if let Some(ms) = delay {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let expect_pattern =
            header(req.headers(), "x-expect-pattern").and_then(|v| v.parse::<usize>().ok());
        let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in req.headers() {
            headers
                .entry(k.as_str().to_string())
                .or_default()
                .push(v.to_str().unwrap_or("").to_string());
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.to_string())
            .or_else(|| header(req.headers(), "host"));
        let version = format!("{:?}", req.version());
        let method = req.method().to_string();
        let path = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        if let Some(len) = expect_pattern
            && body.as_ref() != pattern(len).as_bytes()
        {
            status = Some(400);
        }
        let json = serde_json::json!({
            "upstream": self.name,
            "method": method,
            "path": path,
            "host": host,
            "version": version,
            "headers": headers,
            "body_len": body.len(),
        });
        let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
        *resp.status_mut() = StatusCode::from_u16(status.unwrap_or(200)).unwrap_or(StatusCode::OK);
        resp.headers_mut()
            .insert("x-upstream", self.name.parse().expect("header value"));
        resp.headers_mut()
            .insert("content-type", "application/json".parse().expect("ct"));
        if let Some(g) = grpc_status.and_then(|g| g.parse().ok()) {
            resp.headers_mut().insert("grpc-status", g);
        }
        resp
    }
}

/// A test body: `LEN` bytes of `abc...zabc...`.
pub fn pattern(len: usize) -> String {
    (0..len).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

struct Decrement(Arc<AtomicUsize>);

impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A header's value as a string, if present and visible ASCII.
pub fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A response as the tests see it.
#[derive(Debug)]
pub struct Resp {
    /// The status code.
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The body, decoded lossily as UTF-8.
    pub body: String,
}

impl Resp {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    /// Which [`Upstream`] answered (from its JSON echo).
    pub fn upstream(&self) -> String {
        self.json()["upstream"].as_str().unwrap_or("").to_string()
    }
    /// The values of request header `name` as the upstream saw it.
    pub fn seen_header(&self, name: &str) -> Vec<String> {
        self.json()["headers"][name]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A keep-alive HTTP/1.1 client connection (to a proxy, as an app with HTTP_PROXY would).
pub struct H1Client {
    tx: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
}

impl H1Client {
    /// Connects and completes the HTTP/1.1 handshake.
    pub async fn connect(addr: SocketAddr) -> H1Client {
        let stream = TcpStream::connect(addr).await.expect("connect to proxy");
        let _ = stream.set_nodelay(true);
        let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        H1Client { tx }
    }

    /// Sends `method url` where url is absolute (`http://host:port/path`, proxy form) with
    /// extra headers; Host is set from the url.
    pub async fn send(&mut self, method: &str, url: &str, headers: &[(&str, &str)]) -> Resp {
        self.try_send(method, url, headers)
            .await
            .expect("request failed")
    }

    /// [`H1Client::send`] that returns the connection's error instead of panicking.
    pub async fn try_send(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Resp, hyper::Error> {
        self.send_body(method, url, headers, "").await
    }

    /// Sends `method url` with `headers` and `body`.
    pub async fn send_body(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Result<Resp, hyper::Error> {
        let uri: http::Uri = url.parse().expect("url");
        let mut b = Request::builder().method(method).uri(uri.clone());
        if let Some(a) = uri.authority() {
            b = b.header("host", a.as_str());
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("request");
        self.tx.ready().await?;
        let resp = self.tx.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).to_string(),
        })
    }

    /// `GET url`.
    pub async fn get(&mut self, url: &str) -> Resp {
        self.send("GET", url, &[]).await
    }
}

/// One request on a fresh connection.
pub async fn get(proxy: SocketAddr, url: &str, headers: &[(&str, &str)]) -> Resp {
    H1Client::connect(proxy)
        .await
        .send("GET", url, headers)
        .await
}

/// A fresh temp file path for an access log.
pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("skein-proxy-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let p = dir.join(format!("{name}-{}.log", fastrand::u64(..)));
    let _ = std::fs::remove_file(&p);
    p
}

/// Starts a sidecar with `snap` and an access log file.
pub async fn sidecar(snap: Snapshot) -> (ProxyHandle, PathBuf) {
    let log = temp_path("access");
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().expect("addr"))
        .with_access_log(AccessLogSink::File(log.clone()));
    let h = crate::start(cfg).await.expect("proxy start");
    h.apply(snap).expect("apply snapshot");
    (h, log)
}

/// The sidecar's outbound HTTP listener.
pub fn outbound(h: &ProxyHandle) -> SocketAddr {
    h.addrs.outbound_http.expect("outbound listener")
}

/// Waits until the access log has at least `n` lines and returns them.
pub async fn log_lines(path: &PathBuf, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("access log {path:?} did not reach {n} lines");
}

/// Counts picks by upstream name.
pub fn tally(names: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n).or_insert(0) += 1;
    }
    m
}
