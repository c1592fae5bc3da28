//! Forwarding received spans as OTLP/HTTP (protobuf) to another collector. Receivers only
//! copy spans into a bounded queue (dropping, and counting, what does not fit); one task
//! sends batches, so a slow or dead collector never holds up a receiver.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message as _;
use tokio::sync::{Notify, watch};

use crate::model::{Span, SpanKind, Tag, Value};
use crate::otlp_proto as pb;

/// Spans per export request (the OpenTelemetry SDKs' default batch).
pub const BATCH: usize = 512;
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Forwarder {
    queue: Mutex<VecDeque<Span>>,
    cap: usize,
    notify: Notify,
    sent: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
}

impl Forwarder {
    pub fn new(cap: usize) -> Forwarder {
        Forwarder {
            queue: Mutex::new(VecDeque::new()),
            cap,
            notify: Notify::new(),
            sent: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        }
    }

    /// Queues copies of `spans`, as many as fit.
    pub fn offer(&self, spans: &[Span]) {
        let taken = {
            let mut q = match self.queue.lock() {
                Ok(q) => q,
                Err(p) => p.into_inner(),
            };
            let room = self.cap.saturating_sub(q.len()).min(spans.len());
            q.extend(spans[..room].iter().cloned());
            room
        };
        self.dropped
            .fetch_add((spans.len() - taken) as u64, Ordering::Relaxed);
        if taken > 0 {
            self.notify.notify_one();
        }
    }

    /// (sent, dropped for a full queue, failed to send).
    pub fn counts(&self) -> (u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.dropped.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }

    fn take_batch(&self) -> Vec<Span> {
        let mut q = match self.queue.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        let n = q.len().min(BATCH);
        q.drain(..n).collect()
    }

    /// Sends batches to `url` until `shutdown`.
    pub async fn run(&self, url: http::Uri, mut shutdown: watch::Receiver<bool>) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        loop {
            loop {
                let batch = self.take_batch();
                if batch.is_empty() {
                    break;
                }
                let n = batch.len() as u64;
                let body = encode(&batch).encode_to_vec();
                let req = http::Request::post(url.clone())
                    .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                    .body(Full::new(Bytes::from(body)));
                let ok = match req {
                    Ok(req) => matches!(
                        tokio::time::timeout(TIMEOUT, client.request(req)).await,
                        Ok(Ok(resp)) if resp.status().is_success()
                    ),
                    Err(_) => false,
                };
                let counter = if ok { &self.sent } else { &self.failed };
                counter.fetch_add(n, Ordering::Relaxed);
                if !ok {
                    tracing::warn!(spans = n, %url, "forwarding spans failed");
                }
            }
            tokio::select! {
                _ = self.notify.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}

fn kv(t: &Tag) -> pb::KeyValue {
    use pb::any_value::Value as V;
    let v = match &t.value {
        Value::Str(s) => V::StringValue(s.clone()),
        Value::Bool(b) => V::BoolValue(*b),
        Value::Int(i) => V::IntValue(*i),
        Value::Float(f) => V::DoubleValue(*f),
        Value::Binary(b) => V::BytesValue(b.clone()),
    };
    pb::KeyValue {
        key: t.key.clone(),
        value: Some(pb::AnyValue { value: Some(v) }),
    }
}

/// Spans as an OTLP export request: one resource per process (service and tags).
pub fn encode(spans: &[Span]) -> pb::ExportTraceServiceRequest {
    let mut out: Vec<pb::ResourceSpans> = Vec::new();
    let mut keys: Vec<(&str, &[Tag])> = Vec::new();
    for s in spans {
        let i = match keys
            .iter()
            .position(|(svc, t)| *svc == s.service && *t == &s.process_tags[..])
        {
            Some(i) => i,
            None => {
                keys.push((&s.service, &s.process_tags));
                let mut attributes = vec![kv(&Tag::str("service.name", s.service.clone()))];
                attributes.extend(s.process_tags.iter().map(kv));
                out.push(pb::ResourceSpans {
                    resource: Some(pb::Resource {
                        attributes,
                        dropped_attributes_count: 0,
                    }),
                    scope_spans: vec![pb::ScopeSpans::default()],
                    schema_url: String::new(),
                });
                out.len() - 1
            }
        };
        let error = s.is_error();
        let synthesized = ["span.kind", "otel.status_code", "otel.status_description"];
        out[i].scope_spans[0].spans.push(pb::Span {
            trace_id: s.trace_id.0.to_be_bytes().to_vec(),
            span_id: s.span_id.to_be_bytes().to_vec(),
            parent_span_id: s
                .parent_id
                .map(|p| p.to_be_bytes().to_vec())
                .unwrap_or_default(),
            name: s.name.clone(),
            kind: match s.kind {
                SpanKind::Unspecified => 0,
                SpanKind::Internal => 1,
                SpanKind::Server => 2,
                SpanKind::Client => 3,
                SpanKind::Producer => 4,
                SpanKind::Consumer => 5,
            },
            start_time_unix_nano: s.start_us.saturating_mul(1000),
            end_time_unix_nano: s.end_us().saturating_mul(1000),
            attributes: s
                .tags
                .iter()
                .filter(|t| !synthesized.contains(&t.key.as_str()))
                .map(kv)
                .collect(),
            events: s
                .logs
                .iter()
                .map(|l| pb::Event {
                    time_unix_nano: l.timestamp_us.saturating_mul(1000),
                    name: l
                        .fields
                        .iter()
                        .find(|f| f.key == "event")
                        .map(|f| f.value.as_text())
                        .unwrap_or_default(),
                    attributes: l
                        .fields
                        .iter()
                        .filter(|f| f.key != "event")
                        .map(kv)
                        .collect(),
                    dropped_attributes_count: 0,
                })
                .collect(),
            links: s
                .links
                .iter()
                .map(|l| pb::Link {
                    trace_id: l.trace_id.0.to_be_bytes().to_vec(),
                    span_id: l.span_id.to_be_bytes().to_vec(),
                    ..Default::default()
                })
                .collect(),
            status: error.then(|| pb::Status {
                message: String::new(),
                code: 2,
            }),
            ..Default::default()
        });
    }
    pb::ExportTraceServiceRequest {
        resource_spans: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::span;

    #[test]
    fn encoded_spans_decode_to_the_same_spans() {
        let spans = vec![
            span(1, 1, None, "web", "GET /"),
            span(1, 2, Some(1), "was", "SELECT"),
        ];
        let body = encode(&spans).encode_to_vec();
        let back = crate::otlp::decode_protobuf(&body, 1000).unwrap().spans;
        assert_eq!(back.len(), 2);
        for (a, b) in spans.iter().zip(&back) {
            assert_eq!(
                (a.trace_id, a.span_id, a.parent_id),
                (b.trace_id, b.span_id, b.parent_id)
            );
            assert_eq!((a.start_us, a.duration_us), (b.start_us, b.duration_us));
            assert_eq!(a.service, b.service);
            assert_eq!(a.process_tags, b.process_tags);
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let f = Forwarder::new(3);
        let spans: Vec<Span> = (1..=5).map(|i| span(1, i, None, "a", "x")).collect();
        f.offer(&spans);
        assert_eq!(f.counts(), (0, 2, 0));
        assert_eq!(f.take_batch().len(), 3);
        assert!(f.take_batch().is_empty());
    }
}
