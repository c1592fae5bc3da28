//! The HTTP client the OTLP exporter sends with: the blog's own hyper client, so an export
//! goes where the app's other calls go (through `HTTP_PROXY`, the sidecar, when one is set;
//! names resolved through `SKEIN_HOSTS`, then DNS).
//!
//! The SDK's batch processor exports from a thread of its own; each send is handed to the
//! app's tokio runtime, bounded by the export timeout, and its answer awaited there. Nothing
//! on a request's path waits for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Uri};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};

use crate::hosts::Resolver;
use crate::web::proxy::UpstreamConnector;

/// Why one export request failed (the spans in it are dropped).
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("the trace collector did not answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the trace collector: {0}")]
    Send(#[source] hyper_util::client::legacy::Error),
    #[error("cannot read the trace collector's answer: {0}")]
    Body(#[source] hyper::Error),
    #[error("the export task stopped: {0}")]
    Task(String),
}

/// [`HttpClient`] over the blog's pooled hyper client.
#[derive(Debug, Clone)]
pub struct ExportClient {
    client: Client<UpstreamConnector, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
    failures: Arc<AtomicU64>,
}

impl ExportClient {
    /// A client that connects directly or, with `proxy`, through that forward proxy. Must be
    /// made inside the tokio runtime the sends are to run on.
    pub fn new(
        resolver: Resolver,
        proxy: Option<Uri>,
        timeout: Duration,
    ) -> Result<Self, tokio::runtime::TryCurrentError> {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(2)
            .build(UpstreamConnector::new(resolver, proxy));
        Ok(Self {
            client,
            runtime: tokio::runtime::Handle::try_current()?,
            timeout,
            failures: Arc::default(),
        })
    }

    async fn send(&self, req: http::Request<Full<Bytes>>) -> Result<Response<Bytes>, ExportError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let exchange = async {
                let res = client.request(req).await.map_err(ExportError::Send)?;
                let (parts, body) = res.into_parts();
                let body = body.collect().await.map_err(ExportError::Body)?.to_bytes();
                Ok(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(res) => res,
                Err(_) => Err(ExportError::Timeout(timeout)),
            }
        });
        match task.await {
            Ok(res) => res,
            Err(e) => Err(ExportError::Task(e.to_string())),
        }
    }

    /// Logs the 1st, 2nd, 4th, 8th... failure: a dead collector is visible without a log line
    /// per batch.
    fn note_failure(&self, what: &dyn std::fmt::Display) {
        let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(failures = n, error = %what, "span export failed; its spans are dropped");
        }
    }
}

/// Marks an export request as one the mesh must not trace: a `traceparent` with the sampled
/// flag off and B3's "do not sample". A sidecar honours an incoming decision, so the app's
/// exports go through it (mTLS, metrics) without making spans about exporting spans.
pub fn mark_unsampled(headers: &mut http::HeaderMap) {
    let ids = RandomIdGenerator::default();
    let traceparent = format!("00-{}-{}-00", ids.new_trace_id(), ids.new_span_id());
    if let Ok(v) = HeaderValue::from_str(&traceparent) {
        headers.insert(HeaderName::from_static("traceparent"), v);
    }
    headers.insert(
        HeaderName::from_static("x-b3-sampled"),
        HeaderValue::from_static("0"),
    );
    headers.insert(HeaderName::from_static("b3"), HeaderValue::from_static("0"));
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut req = request.map(Full::new);
        *req.version_mut() = http::Version::HTTP_11;
        mark_unsampled(req.headers_mut());
        match self.send(req).await {
            Ok(res) => {
                if !res.status().is_success() {
                    self.note_failure(&format_args!("the collector answered {}", res.status()));
                }
                Ok(res)
            }
            Err(e) => {
                self.note_failure(&e);
                Err(Box::new(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_requests_say_do_not_sample() {
        let mut h = http::HeaderMap::new();
        mark_unsampled(&mut h);
        let tp = h.get("traceparent").unwrap().to_str().unwrap();
        let parts: Vec<&str> = tp.split('-').collect();
        assert_eq!(parts.len(), 4, "{tp}");
        assert_eq!((parts[0], parts[3]), ("00", "00"));
        assert_eq!(parts[1].len(), 32);
        assert_ne!(parts[1], "0".repeat(32));
        assert_eq!(h.get("x-b3-sampled").unwrap(), "0");
        assert_eq!(h.get("b3").unwrap(), "0");
    }
}
