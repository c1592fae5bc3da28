//! The HTTP servers: the Zipkin receiver, the OTLP/HTTP receiver and the query API (with
//! `/metrics`), each on its own listener.
//!
//! A receiver reads a body only while it holds one of a few ingest permits, up to the body
//! limit (413 past it, gzip counted after decompression), and decodes it on a blocking
//! thread with an item budget; the store's lock is held only to insert or to copy results.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::BodyExt as _;
use prost::Message as _;
use serde_json::{Value as Json, json};

use crate::jaeger::{self, Params, Search};
use crate::model::{Span, TraceId};
use crate::{Shared, now_us};

/// Counters exported on `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub stored: AtomicU64,
    /// Spans refused: invalid, or larger than the store.
    pub dropped_invalid: AtomicU64,
    pub dropped_oversized: AtomicU64,
    pub evicted: AtomicU64,
    /// Requests refused: too large (413) or malformed (400).
    pub requests_too_large: AtomicU64,
    pub requests_malformed: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("cannot read the request body: {0}")]
    Read(String),
    #[error("the gzip body does not decompress: {0}")]
    Gzip(std::io::Error),
    #[error("unsupported Content-Encoding {0:?} (gzip and identity are)")]
    Encoding(String),
}

async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    let raw = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some()
            {
                BodyError::TooLarge(limit)
            } else {
                BodyError::Read(e.to_string())
            }
        })?
        .to_bytes();
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" => Ok(raw),
        "gzip" | "x-gzip" => tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&raw[..])
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(BodyError::Gzip)?;
            if out.len() > limit {
                return Err(BodyError::TooLarge(limit));
            }
            Ok(bytes::Bytes::from(out))
        })
        .await
        .map_err(|e| BodyError::Read(e.to_string()))?,
        other => Err(BodyError::Encoding(other.to_string())),
    }
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    let mut msg = msg.into();
    msg.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg,
    )
        .into_response()
}

/// Hands decoded spans to the store (and the forwarder).
fn accept(shared: &Shared, spans: Vec<Span>) {
    let c = &shared.counters;
    add(&c.received, spans.len() as u64);
    if let Some(f) = &shared.forward {
        f.offer(&spans);
    }
    let r = match shared.store.lock() {
        Ok(mut st) => st.insert(spans),
        Err(poisoned) => poisoned.into_inner().insert(spans),
    };
    add(&c.stored, r.stored);
    add(&c.dropped_oversized, r.dropped);
    add(&c.evicted, r.evicted);
}

async fn zipkin(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let Ok(_permit) = shared.ingest.acquire().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let c = &shared.counters;
    let body = match read_body(&headers, body, shared.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge(_)) => {
            add(&c.requests_too_large, 1);
            return text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string());
        }
        Err(e) => {
            add(&c.requests_malformed, 1);
            return text(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    let items = shared.config.max_items;
    let decoded =
        tokio::task::spawn_blocking(move || crate::zipkin::decode(&body, items, now_us())).await;
    match decoded {
        Ok(Ok(spans)) => {
            accept(&shared, spans);
            StatusCode::ACCEPTED.into_response()
        }
        Ok(Err(e)) if e.is_too_large() => {
            add(&c.requests_too_large, 1);
            text(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        Ok(Err(e)) => {
            add(&c.requests_malformed, 1);
            text(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

/// An OTLP error in the request's format: a `google.rpc.Status` (code 3, the message).
fn otlp_error(format: Format, status: StatusCode, msg: &str) -> Response {
    match format {
        Format::Json => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"code": 3, "message": msg}).to_string(),
        )
            .into_response(),
        Format::Protobuf => {
            // google.rpc.Status { int32 code = 1; string message = 2; }
            let mut buf = vec![0x08, 0x03];
            prost::encoding::string::encode(2, &msg.to_string(), &mut buf);
            (
                status,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                buf,
            )
                .into_response()
        }
    }
}

async fn otlp(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match ct.as_str() {
        "application/x-protobuf" | "application/protobuf" => Format::Protobuf,
        "application/json" => Format::Json,
        other => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "unsupported Content-Type {other:?}: OTLP/HTTP is application/x-protobuf or application/json"
                ),
            );
        }
    };
    let Ok(_permit) = shared.ingest.acquire().await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    };
    let c = &shared.counters;
    let body = match read_body(&headers, body, shared.config.max_body_bytes).await {
        Ok(b) => b,
        Err(e @ BodyError::TooLarge(_)) => {
            add(&c.requests_too_large, 1);
            return otlp_error(format, StatusCode::PAYLOAD_TOO_LARGE, &e.to_string());
        }
        Err(e) => {
            add(&c.requests_malformed, 1);
            return otlp_error(format, StatusCode::BAD_REQUEST, &e.to_string());
        }
    };
    let items = shared.config.max_items;
    let decoded = tokio::task::spawn_blocking(move || match format {
        Format::Protobuf => crate::otlp::decode_protobuf(&body, items),
        Format::Json => crate::otlp::decode_json(&body, items),
    })
    .await;
    let d = match decoded {
        Ok(Ok(d)) => d,
        Ok(Err(e)) => {
            let status = if e.is_too_large() {
                add(&c.requests_too_large, 1);
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                add(&c.requests_malformed, 1);
                StatusCode::BAD_REQUEST
            };
            return otlp_error(format, status, &e.to_string());
        }
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    add(&c.dropped_invalid, d.rejected as u64);
    let reply = crate::otlp::response(d.rejected, d.first_error.as_deref());
    accept(&shared, d.spans);
    match format {
        Format::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            reply.encode_to_vec(),
        )
            .into_response(),
        Format::Json => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            crate::otlp::response_json(&reply).to_string(),
        )
            .into_response(),
    }
}

fn reply(status: StatusCode, body: &Json) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn bad(msg: &str) -> Response {
    reply(StatusCode::BAD_REQUEST, &jaeger::error(400, msg))
}

/// Runs `f` on the store (a poisoned lock still holds consistent data: inserts never panic
/// halfway through a span).
fn with_store<R>(shared: &Shared, f: impl FnOnce(&crate::store::Store) -> R) -> R {
    match shared.store.lock() {
        Ok(st) => f(&st),
        Err(p) => f(&p.into_inner()),
    }
}

async fn services(State(shared): State<Arc<Shared>>) -> Response {
    let s = with_store(&shared, |st| st.services());
    let n = s.len();
    reply(StatusCode::OK, &jaeger::envelope(json!(s), n))
}

async fn operations_legacy(
    State(shared): State<Arc<Shared>>,
    Path(service): Path<String>,
) -> Response {
    let mut names: Vec<String> = with_store(&shared, |st| st.operations(&service, None))
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.dedup();
    let n = names.len();
    reply(StatusCode::OK, &jaeger::envelope(json!(names), n))
}

async fn operations(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let service = p.get("service");
    if service.is_empty() {
        return bad("parameter 'service' is required");
    }
    let kind = match jaeger::parse_span_kind(p.get("spanKind")) {
        Ok(k) => k,
        Err(e) => return bad(&e),
    };
    let ops = with_store(&shared, |st| st.operations(service, kind));
    let data: Vec<Json> = ops
        .iter()
        .map(|(name, kind)| json!({"name": name, "spanKind": kind.as_str()}))
        .collect();
    let n = data.len();
    reply(StatusCode::OK, &jaeger::envelope(json!(data), n))
}

async fn search(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let search = match jaeger::parse_search(&p, now_us()) {
        Ok(s) => s,
        Err(e) => return bad(&e),
    };
    let (traces, errors) = match search {
        Search::Query(q) => (with_store(&shared, |st| st.find(&q)), Vec::new()),
        Search::Ids(ids) => {
            let mut found = Vec::new();
            let mut errors = Vec::new();
            with_store(&shared, |st| {
                for id in ids {
                    match st.trace(id) {
                        Some(t) => found.push(t),
                        None => errors
                            .push(json!({"msg": "trace not found", "traceID": id.to_string()})),
                    }
                }
            });
            (found, errors)
        }
    };
    // Rendering happens outside the store's lock.
    let data: Vec<Json> = traces.iter().map(|t| jaeger::trace_json(t)).collect();
    let mut body = jaeger::envelope(json!(data), 0);
    if !errors.is_empty() {
        body["errors"] = json!(errors);
    }
    reply(StatusCode::OK, &body)
}

async fn trace(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Response {
    let id = match TraceId::parse_hex(&id) {
        Ok(id) => id,
        Err(e) => return bad(&e.to_string()),
    };
    match with_store(&shared, |st| st.trace(id)) {
        Some(t) => reply(
            StatusCode::OK,
            &jaeger::envelope(json!([jaeger::trace_json(&t)]), 0),
        ),
        None => reply(
            StatusCode::NOT_FOUND,
            &jaeger::error(404, "trace not found"),
        ),
    }
}

async fn dependencies(State(shared): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let p = Params::parse(q.as_deref());
    let (end, lookback) = match jaeger::parse_dependencies(&p, now_us()) {
        Ok(v) => v,
        Err(e) => return bad(&e),
    };
    let service = p.get("service");
    let deps: Vec<Json> = with_store(&shared, |st| st.dependencies(end, lookback))
        .into_iter()
        .filter(|(parent, child, _)| service.is_empty() || parent == service || child == service)
        .map(|(parent, child, n)| json!({"parent": parent, "child": child, "callCount": n}))
        .collect();
    reply(StatusCode::OK, &jaeger::envelope(json!(deps), 0))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let c = &shared.counters;
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let (spans, traces, bytes) = with_store(&shared, |st| {
        (st.span_count(), st.trace_count(), st.bytes())
    });
    let mut out = String::new();
    let mut metric = |name: &str, ty: &str, help: &str, rows: &[(&str, u64)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {ty}\n"));
        for (labels, v) in rows {
            out.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    metric(
        "skein_trace_store_spans_received_total",
        "counter",
        "Spans decoded from Zipkin and OTLP requests.",
        &[("", g(&c.received))],
    );
    metric(
        "skein_trace_store_spans_dropped_total",
        "counter",
        "Spans not stored: invalid (bad ids), or larger than the whole store.",
        &[
            ("{reason=\"invalid\"}", g(&c.dropped_invalid)),
            ("{reason=\"oversized\"}", g(&c.dropped_oversized)),
        ],
    );
    metric(
        "skein_trace_store_spans_evicted_total",
        "counter",
        "Spans of the oldest traces removed to make room.",
        &[("", g(&c.evicted))],
    );
    metric(
        "skein_trace_store_requests_refused_total",
        "counter",
        "Export requests refused whole.",
        &[
            ("{reason=\"too_large\"}", g(&c.requests_too_large)),
            ("{reason=\"malformed\"}", g(&c.requests_malformed)),
        ],
    );
    metric(
        "skein_trace_store_spans",
        "gauge",
        "Spans held.",
        &[("", spans as u64)],
    );
    metric(
        "skein_trace_store_traces",
        "gauge",
        "Traces held.",
        &[("", traces as u64)],
    );
    metric(
        "skein_trace_store_bytes",
        "gauge",
        "Estimated bytes held by the stored spans.",
        &[("", bytes as u64)],
    );
    if let Some(f) = &shared.forward {
        let (sent, dropped, failed) = f.counts();
        metric(
            "skein_trace_store_forward_spans_total",
            "counter",
            "Spans forwarded to the OTLP collector, by outcome.",
            &[
                ("{outcome=\"sent\"}", sent),
                ("{outcome=\"queue_full\"}", dropped),
                ("{outcome=\"failed\"}", failed),
            ],
        );
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

pub fn zipkin_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v2/spans", post(zipkin))
        .with_state(shared)
}

pub fn otlp_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/traces", post(otlp))
        .with_state(shared)
}

/// The query API, at `/api` and under Istio's addon's base path `/jaeger`.
pub fn query_router(shared: Arc<Shared>) -> Router {
    let api = Router::new()
        .route("/services", get(services))
        .route("/services/{service}/operations", get(operations_legacy))
        .route("/operations", get(operations))
        .route("/traces", get(search))
        .route("/traces/{id}", get(trace))
        .route("/dependencies", get(dependencies));
    Router::new()
        .nest("/api", api.clone())
        .nest("/jaeger/api", api)
        .route("/metrics", get(metrics))
        .route("/status", get(|| async { "ok\n" }))
        .with_state(shared)
}
