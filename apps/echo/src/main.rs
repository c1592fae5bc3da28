//! `echo`: the mesh's own test workload, like Istio's echo/httpbin.
//!
//! Answers every request with JSON saying which pod served it (`POD_NAME`, `VERSION`) and what
//! it received (method, path, host, headers, body length). On request it misbehaves, so the
//! mesh's resilience can be tested through real processes. Each control is a query parameter
//! or an `x-echo-*` header:
//!
//! | control | effect |
//! |---|---|
//! | `status=N` | answer with status N |
//! | `delay_ms=N` | wait N ms before answering |
//! | `reset=1` | close the connection without answering |
//! | `fail_pct=P` (+ `fail_status=N`, default 503) | fail P% of calls |
//! | `fail_every=K` (+ `fail_status=N`) | fail every K-th call this process sees |
//!
//! `FAIL_STATUS` / `FAIL_PCT` in the environment make every request fail that way (a broken
//! pod). Listens on `LISTEN_ADDR` (default `0.0.0.0:8080`); `GET /healthz` is always 200.
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};

struct State {
    pod: String,
    version: String,
    calls: AtomicU64,
    env_fail_status: Option<u16>,
    env_fail_pct: f64,
}

/// A control from the query string or an `x-echo-NAME` header.
fn control(req: &Request<Incoming>, name: &str) -> Option<String> {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| v.to_string())
        })
    });
    from_query.or_else(|| {
        req.headers()
            .get(format!("x-echo-{}", name.replace('_', "-")))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

enum Outcome {
    Answer(Response<Full<Bytes>>),
    Reset,
}

async fn answer(state: Arc<State>, req: Request<Incoming>) -> Outcome {
    let n = state.calls.fetch_add(1, Ordering::Relaxed) + 1;
    let num = |name: &str| control(&req, name).and_then(|v| v.parse::<u64>().ok());
    if req.uri().path() == "/healthz" {
        return Outcome::Answer(Response::new(Full::new(Bytes::from_static(b"ok"))));
    }
    if let Some(ms) = num("delay_ms") {
        tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
    }
    if control(&req, "reset").is_some_and(|v| v == "1" || v == "true") {
        return Outcome::Reset;
    }
    let fail_status = num("fail_status")
        .and_then(|s| u16::try_from(s).ok())
        .or(state.env_fail_status)
        .unwrap_or(503);
    let pct = control(&req, "fail_pct")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(state.env_fail_pct);
    let every = num("fail_every").filter(|k| *k > 0);
    let mut status = num("status")
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(200);
    if every.is_some_and(|k| n.is_multiple_of(k)) || (pct > 0.0 && fastrand::f64() * 100.0 < pct) {
        status = fail_status;
    }
    if state.env_fail_status.is_some() && state.env_fail_pct <= 0.0 {
        status = fail_status;
    }
    let headers: serde_json::Map<String, serde_json::Value> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
            )
        })
        .collect();
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let json = serde_json::json!({
        "pod": state.pod,
        "version": state.version,
        "method": method,
        "path": path,
        "host": host,
        "headers": headers,
        "body_len": body.len(),
        "call": n,
    });
    let mut resp = Response::new(Full::new(Bytes::from(json.to_string())));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&state.pod) {
        h.insert("x-echo-pod", v);
    }
    if let Ok(v) = http::HeaderValue::from_str(&state.version) {
        h.insert("x-echo-version", v);
    }
    Outcome::Answer(resp)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let addr: SocketAddr = match std::env::var("LISTEN_ADDR")
        .unwrap_or_else(|_| "0.0.0.0:8080".into())
        .parse()
    {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: LISTEN_ADDR is not ip:port: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let state = Arc::new(State {
        pod: std::env::var("POD_NAME").unwrap_or_else(|_| "echo".into()),
        version: std::env::var("VERSION").unwrap_or_default(),
        calls: AtomicU64::new(0),
        env_fail_status: std::env::var("FAIL_STATUS")
            .ok()
            .and_then(|v| v.parse().ok()),
        env_fail_pct: std::env::var("FAIL_PCT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    });
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    eprintln!("echo {} listening on {addr}", state.pod);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let (close_tx, mut close_rx) = tokio::sync::mpsc::channel::<()>(1);
            let svc = hyper::service::service_fn(move |req| {
                let (state, close_tx) = (Arc::clone(&state), close_tx.clone());
                async move {
                    match answer(state, req).await {
                        Outcome::Answer(r) => Ok::<_, Infallible>(r),
                        Outcome::Reset => {
                            let _ = close_tx.try_send(());
                            // Never answered: the connection is dropped below.
                            std::future::pending().await
                        }
                    }
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = close_rx.recv() => {}
            }
        });
    }
}
