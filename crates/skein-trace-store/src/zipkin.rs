//! Zipkin v2's JSON span list (`POST /api/v2/spans`, `openzipkin/zipkin-api:zipkin2-api.yaml`),
//! decoded into the store's spans as Jaeger maps them: the local endpoint is the process, the
//! kind becomes the `span.kind` tag, the remote endpoint `peer.*` tags, annotations logs.

use serde::Deserialize;

use crate::budget::{self, Bounded, BoundedMap};
use crate::model::{self, Log, Span, SpanKind, Tag, TraceId, Value};

/// Why a Zipkin request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    #[error("{EXHAUSTED_PREFIX}: {0}")]
    TooMany(String),
    #[error("not a Zipkin v2 JSON span list: {0}")]
    Json(serde_json::Error),
    #[error("span {index}: {reason}")]
    Span { index: usize, reason: String },
}

const EXHAUSTED_PREFIX: &str = "request too large";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ZSpan {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    debug: Option<bool>,
    local_endpoint: Option<Endpoint>,
    remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    annotations: Bounded<Annotation>,
    #[serde(default)]
    tags: BoundedMap<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Endpoint {
    service_name: Option<String>,
    ipv4: Option<String>,
    ipv6: Option<String>,
    port: Option<u16>,
}

#[derive(Deserialize)]
struct Annotation {
    timestamp: Option<u64>,
    value: Option<String>,
}

/// Decodes a span list, spending at most `max_items` on spans, tags and annotations.
/// `now_us` stands in for a missing timestamp.
pub fn decode(body: &[u8], max_items: usize, now_us: u64) -> Result<Vec<Span>, ZipkinError> {
    let spans: Bounded<ZSpan> = budget::with_budget(max_items, || serde_json::from_slice(body))
        .map_err(|e| {
            if e.to_string().contains(budget::EXHAUSTED) {
                ZipkinError::TooMany(budget::EXHAUSTED.into())
            } else {
                ZipkinError::Json(e)
            }
        })?;
    spans
        .0
        .into_iter()
        .enumerate()
        .map(|(index, s)| convert(s, now_us).map_err(|reason| ZipkinError::Span { index, reason }))
        .collect()
}

impl ZipkinError {
    /// Whether the request was refused for its size (413) rather than its content (400).
    pub fn is_too_large(&self) -> bool {
        matches!(self, ZipkinError::TooMany(_))
    }
}

fn convert(s: ZSpan, now_us: u64) -> Result<Span, String> {
    let trace_id = TraceId::parse_hex(s.trace_id.as_deref().ok_or("traceId is missing")?)
        .map_err(|e| e.to_string())?;
    let span_id =
        model::parse_span_id(s.id.as_deref().ok_or("id is missing")?).map_err(|e| e.to_string())?;
    let parent_id = match s.parent_id.as_deref() {
        None | Some("") => None,
        Some(p) => Some(model::parse_span_id(p).map_err(|e| format!("parentId: {e}"))?),
    };
    let kind = match s.kind.as_deref() {
        None => SpanKind::Unspecified,
        Some(k) => SpanKind::parse(&k.to_ascii_lowercase())
            .filter(|k| *k != SpanKind::Internal)
            .ok_or_else(|| format!("kind {k:?} is not CLIENT, SERVER, PRODUCER or CONSUMER"))?,
    };
    let mut tags = Vec::with_capacity(s.tags.0.len() + 4);
    if kind != SpanKind::Unspecified {
        tags.push(Tag::str("span.kind", kind.as_str()));
    }
    for (k, v) in s.tags.0 {
        if k == "error" {
            // Zipkin's convention: the tag's value is the error's message.
            tags.push(Tag {
                key: k,
                value: Value::Bool(!v.eq_ignore_ascii_case("false")),
            });
            if !v.is_empty() && !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false")
            {
                tags.push(Tag::str("error.message", v));
            }
        } else {
            tags.push(Tag {
                key: k,
                value: Value::Str(v),
            });
        }
    }
    if let Some(r) = s.remote_endpoint {
        if let Some(n) = r.service_name.filter(|n| !n.is_empty()) {
            tags.push(Tag::str("peer.service", n));
        }
        if let Some(ip) = r.ipv4 {
            tags.push(Tag::str("peer.ipv4", ip));
        }
        if let Some(ip) = r.ipv6 {
            tags.push(Tag::str("peer.ipv6", ip));
        }
        if let Some(p) = r.port {
            tags.push(Tag {
                key: "peer.port".into(),
                value: Value::Int(p.into()),
            });
        }
    }
    let (service, process_tags) = match s.local_endpoint {
        Some(l) => {
            let mut pt = Vec::new();
            if let Some(ip) = l.ipv4.or(l.ipv6) {
                pt.push(Tag::str("ip", ip));
            }
            (l.service_name.unwrap_or_default(), pt)
        }
        None => (String::new(), Vec::new()),
    };
    let logs = s
        .annotations
        .0
        .into_iter()
        .map(|a| Log {
            timestamp_us: a.timestamp.unwrap_or(0),
            fields: vec![Tag::str("event", a.value.unwrap_or_default())],
        })
        .collect();
    Ok(Span {
        trace_id,
        span_id,
        parent_id: parent_id.filter(|p| *p != span_id),
        name: s.name.unwrap_or_default(),
        kind,
        start_us: s.timestamp.filter(|t| *t > 0).unwrap_or(now_us),
        duration_us: s.duration.unwrap_or(0),
        service: if service.is_empty() {
            model::UNKNOWN_SERVICE.into()
        } else {
            service
        },
        process_tags,
        tags,
        logs,
        links: Vec::new(),
        flags: if s.debug == Some(true) { 3 } else { 1 },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example span of Zipkin's API definition (`zipkin2-api.yaml`, and the quick start's
    /// `curl` sample), as a list.
    pub(crate) const ZIPKIN_SAMPLE: &str = r#"[{
      "id": "352bff9a74ca9ad2",
      "traceId": "5af7183fb1d4cf5f",
      "parentId": "6b221d5bc9e6496c",
      "name": "get /api",
      "timestamp": 1556604172355737,
      "duration": 1431,
      "kind": "SERVER",
      "localEndpoint": {"serviceName": "backend", "ipv4": "192.168.99.1", "port": 3306},
      "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
      "tags": {"http.method": "GET", "http.path": "/api"}
    }]"#;

    #[test]
    fn zipkins_sample_span_decodes_as_jaeger_maps_it() {
        let spans = decode(ZIPKIN_SAMPLE.as_bytes(), 1000, 7).unwrap();
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(s.trace_id.to_string(), "5af7183fb1d4cf5f");
        assert_eq!(s.span_id, 0x352bff9a74ca9ad2);
        assert_eq!(s.parent_id, Some(0x6b221d5bc9e6496c));
        assert_eq!(s.name, "get /api");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!((s.start_us, s.duration_us), (1556604172355737, 1431));
        assert_eq!(s.service, "backend");
        assert_eq!(s.process_tags, vec![Tag::str("ip", "192.168.99.1")]);
        assert_eq!(
            s.tags,
            vec![
                Tag::str("span.kind", "server"),
                Tag::str("http.method", "GET"),
                Tag::str("http.path", "/api"),
                Tag::str("peer.ipv4", "172.19.0.2"),
                Tag {
                    key: "peer.port".into(),
                    value: Value::Int(58648)
                },
            ]
        );
        assert!(!s.is_error());
    }

    #[test]
    fn errors_annotations_and_defaults() {
        let body = r#"[{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","id":"00f067aa0ba902b7",
            "tags":{"error":"connection refused"},
            "annotations":[{"timestamp":5,"value":"ws"}]}]"#;
        let s = &decode(body.as_bytes(), 1000, 42).unwrap()[0];
        assert!(s.is_error());
        assert_eq!(s.tags[1], Tag::str("error.message", "connection refused"));
        assert_eq!(s.logs[0].fields, vec![Tag::str("event", "ws")]);
        assert_eq!(s.service, model::UNKNOWN_SERVICE);
        assert_eq!(s.start_us, 42, "a missing timestamp is the time received");
        assert_eq!(s.parent_id, None);
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        let err = |b: &str| decode(b.as_bytes(), 1000, 0).unwrap_err().to_string();
        assert!(err("{}").contains("not a Zipkin v2 JSON span list"));
        assert!(err("[{\"id\":\"01\"}]").contains("span 0: traceId is missing"));
        assert!(err(r#"[{"traceId":"zz","id":"01"}]"#).contains("trace id \"zz\""));
        assert!(err(r#"[{"traceId":"01","id":"0"}]"#).contains("all zeros"));
        assert!(err(r#"[{"traceId":"01","id":"01","kind":"SIDEWAYS"}]"#).contains("SIDEWAYS"));
        // Deep nesting: serde's recursion limit, an error rather than a stack overflow.
        let deep = format!("[{}{}]", "[".repeat(100_000), "]".repeat(100_000));
        assert!(err(&deep).contains("not a Zipkin"));
        // Many tiny spans: the budget, and a 413.
        let many = format!("[{}]", vec!["{}"; 10_000].join(","));
        let e = decode(many.as_bytes(), 1000, 0).unwrap_err();
        assert!(e.is_too_large(), "{e}");
        assert_eq!(decode(b"[]", 10, 0).unwrap(), vec![]);
    }
}
