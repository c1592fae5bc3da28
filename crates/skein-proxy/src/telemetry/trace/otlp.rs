//! OTLP/HTTP protobuf (`POST /v1/traces`, `application/x-protobuf`): the few messages of
//! `opentelemetry/proto/collector/trace/v1` and `trace/v1` a proxy span needs, with their
//! field numbers from opentelemetry-proto. One `ResourceSpans` per service name
//! (`service.name`), one scope (`skein-proxy`).

use prost::Message;

use super::span::{Kind, Span};

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub(crate) resource_spans: Vec<ResourceSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub(crate) resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) scope_spans: Vec<ScopeSpans>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub(crate) attributes: Vec<KeyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub(crate) scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub(crate) spans: Vec<OtlpSpan>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub(crate) name: String,
    #[prost(string, tag = "2")]
    pub(crate) version: String,
}

/// `opentelemetry.proto.trace.v1.Span` (the fields used).
#[derive(Clone, PartialEq, Message)]
pub(crate) struct OtlpSpan {
    #[prost(bytes = "vec", tag = "1")]
    pub(crate) trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub(crate) span_id: Vec<u8>,
    #[prost(string, tag = "3")]
    pub(crate) trace_state: String,
    #[prost(bytes = "vec", tag = "4")]
    pub(crate) parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub(crate) name: String,
    /// SpanKind: SERVER = 2, CLIENT = 3.
    #[prost(int32, tag = "6")]
    pub(crate) kind: i32,
    #[prost(fixed64, tag = "7")]
    pub(crate) start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub(crate) end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub(crate) attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub(crate) status: Option<Status>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct Status {
    #[prost(string, tag = "2")]
    pub(crate) message: String,
    /// STATUS_CODE_UNSET = 0, OK = 1, ERROR = 2.
    #[prost(int32, tag = "3")]
    pub(crate) code: i32,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct KeyValue {
    #[prost(string, tag = "1")]
    pub(crate) key: String,
    #[prost(message, optional, tag = "2")]
    pub(crate) value: Option<AnyValue>,
}

#[derive(Clone, PartialEq, Message)]
pub(crate) struct AnyValue {
    #[prost(oneof = "any_value::Value", tags = "1, 2, 3")]
    pub(crate) value: Option<any_value::Value>,
}

pub(crate) mod any_value {
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub(crate) enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::String(value.to_string())),
        }),
    }
}

fn otlp_span(s: &Span) -> OtlpSpan {
    let start = s.start_us.saturating_mul(1000);
    let error = s.tags.iter().any(|(k, v)| k == "error" && v == "true");
    OtlpSpan {
        trace_id: s.trace_id.to_bytes().to_vec(),
        span_id: s.id.to_be_bytes().to_vec(),
        trace_state: String::new(),
        parent_span_id: s
            .parent
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: s.name.clone(),
        kind: match s.kind {
            Kind::Server => 2,
            Kind::Client => 3,
        },
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(s.duration_us.max(1).saturating_mul(1000)),
        attributes: s.tags.iter().map(|(k, v)| string_kv(k, v)).collect(),
        status: error.then(|| Status {
            message: String::new(),
            code: 2,
        }),
    }
}

/// The request body for `spans`.
pub(crate) fn encode(spans: &[Span]) -> Vec<u8> {
    let mut resource_spans: Vec<ResourceSpans> = Vec::new();
    let mut services: Vec<&str> = Vec::new();
    for s in spans {
        let i = match services.iter().position(|n| *n == &*s.service) {
            Some(i) => i,
            None => {
                services.push(&s.service);
                resource_spans.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![string_kv("service.name", &s.service)],
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "skein-proxy".into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                        }),
                        spans: Vec::new(),
                    }],
                });
                resource_spans.len() - 1
            }
        };
        resource_spans[i].scope_spans[0].spans.push(otlp_span(s));
    }
    ExportTraceServiceRequest { resource_spans }.encode_to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::zipkin::tests::example;

    #[test]
    fn spans_decode_as_export_trace_service_requests() {
        let mut err = example();
        err.kind = Kind::Client;
        err.parent = None;
        err.tags.push(("error".into(), "true".into()));
        let mut other = example();
        other.service = "frontend".into();
        let body = encode(&[example(), err, other]);
        let req = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(req.resource_spans.len(), 2, "one per service");
        let rs = &req.resource_spans[0];
        assert_eq!(
            rs.resource.as_ref().unwrap().attributes[0],
            string_kv("service.name", "backend")
        );
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(spans.len(), 2);
        let s = &spans[0];
        assert_eq!(
            s.trace_id,
            [
                0x59, 0x82, 0xfe, 0x77, 0x00, 0x83, 0x10, 0xcc, 0x80, 0xf1, 0xda, 0x5e, 0x10, 0x14,
                0x75, 0x17
            ]
        );
        assert_eq!(s.span_id, 0x90394f6bcffb5d13u64.to_be_bytes());
        assert_eq!(s.parent_span_id, 0x5982fe77008310ccu64.to_be_bytes());
        assert_eq!(s.kind, 2);
        assert_eq!(s.start_time_unix_nano, 1_502_787_600_000_000_000);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 150_000_000);
        assert_eq!(s.attributes, vec![string_kv("http.status_code", "200")]);
        assert_eq!(s.status, None);
        assert_eq!(spans[1].kind, 3);
        assert!(spans[1].parent_span_id.is_empty(), "a root has no parent");
        assert_eq!(spans[1].status.as_ref().unwrap().code, 2);
        // The wire bytes of the first field are what the proto says: field 1, length-
        // delimited (0x0a).
        assert_eq!(body[0], 0x0a);
    }
}
