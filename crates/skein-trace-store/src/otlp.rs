//! OTLP/HTTP trace export requests (`POST /v1/traces`), binary protobuf or JSON
//! (`open-telemetry/opentelemetry-proto:docs/specification.md`), decoded into the store's
//! spans as Jaeger's OTLP translator maps them: `service.name` names the process and the
//! other resource attributes are its tags; the kind is the `span.kind` tag; an error status
//! is `error=true` plus `otel.status_code`/`otel.status_description`; the scope is
//! `otel.scope.name`/`otel.scope.version`; events are logs (field `event` = the name);
//! links are FOLLOWS_FROM references.
//!
//! JSON follows OTLP's mapping: ids in hex (not base64), enums as integers (names are
//! accepted too), 64-bit integers as numbers or strings, lowerCamelCase keys (the proto's
//! snake_case names too), unknown fields ignored.

use base64::Engine as _;
use prost::Message as _;
use serde::Deserialize;

use crate::budget::{self, Bounded};
use crate::model::{self, Link, Log, Span, SpanKind, Tag, TraceId, Value};
use crate::otlp_proto as pb;

/// Why an export request was refused.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("request too large: {0}")]
    TooMany(String),
    #[error("not an OTLP ExportTraceServiceRequest in protobuf: {0}")]
    Protobuf(String),
    #[error("not an OTLP ExportTraceServiceRequest in JSON: {0}")]
    Json(String),
}

impl OtlpError {
    /// Whether the request was refused for its size (413) rather than its content (400).
    pub fn is_too_large(&self) -> bool {
        matches!(self, OtlpError::TooMany(_))
    }
}

/// A decoded request: the spans taken, and those refused with the first reason.
#[derive(Debug, Default)]
pub struct Decoded {
    pub spans: Vec<Span>,
    pub rejected: usize,
    pub first_error: Option<String>,
}

/// prost's own nesting limit, the same for the pre-count.
const MAX_DEPTH: u32 = 100;

/// Decodes a protobuf request holding at most `max_items` messages (spans, attributes,
/// values, events, links): counted on the wire before anything is allocated.
pub fn decode_protobuf(body: &[u8], max_items: usize) -> Result<Decoded, OtlpError> {
    let n = count::messages(body, count::Kind::Request, 0, max_items).map_err(|e| match e {
        count::Error::TooMany => OtlpError::TooMany(budget::EXHAUSTED.into()),
        count::Error::Malformed(m) => OtlpError::Protobuf(m.into()),
    })?;
    tracing::trace!(messages = n, "otlp protobuf request");
    let req = pb::ExportTraceServiceRequest::decode(body)
        .map_err(|e| OtlpError::Protobuf(e.to_string()))?;
    Ok(convert(req))
}

/// Decodes a JSON request, spending at most `max_items` on its arrays' elements.
pub fn decode_json(body: &[u8], max_items: usize) -> Result<Decoded, OtlpError> {
    let req: json::Request = budget::with_budget(max_items, || serde_json::from_slice(body))
        .map_err(|e| {
            if e.to_string().contains(budget::EXHAUSTED) {
                OtlpError::TooMany(budget::EXHAUSTED.into())
            } else {
                OtlpError::Json(e.to_string())
            }
        })?;
    let mut rejected = 0;
    let mut first_error = None;
    let req = req.into_proto(&mut |e: String| {
        rejected += 1;
        first_error.get_or_insert(e);
    });
    let mut out = convert(req);
    out.rejected += rejected;
    if out.first_error.is_none() {
        out.first_error = first_error;
    }
    Ok(out)
}

/// The success reply: empty, or a partial success naming what was refused.
pub fn response(rejected: usize, error: Option<&str>) -> pb::ExportTraceServiceResponse {
    pb::ExportTraceServiceResponse {
        partial_success: (rejected > 0).then(|| pb::ExportTracePartialSuccess {
            rejected_spans: rejected as i64,
            error_message: error.unwrap_or_default().to_string(),
        }),
    }
}

/// The reply in JSON (OTLP's mapping: `rejectedSpans` as a string is allowed, a number too).
pub fn response_json(r: &pb::ExportTraceServiceResponse) -> serde_json::Value {
    match &r.partial_success {
        None => serde_json::json!({}),
        Some(p) => serde_json::json!({
            "partialSuccess": {"rejectedSpans": p.rejected_spans, "errorMessage": p.error_message}
        }),
    }
}

fn convert(req: pb::ExportTraceServiceRequest) -> Decoded {
    let mut out = Decoded::default();
    for rs in req.resource_spans {
        let mut service = String::new();
        let mut process_tags = Vec::new();
        for kv in rs.resource.map(|r| r.attributes).unwrap_or_default() {
            let tag = tag(kv);
            match (&tag.key[..], &tag.value) {
                ("service.name", Value::Str(s)) => service = s.clone(),
                _ => process_tags.push(tag),
            }
        }
        if service.is_empty() {
            service = model::UNKNOWN_SERVICE.into();
        }
        for ss in rs.scope_spans {
            let scope = ss.scope.unwrap_or_default();
            for s in ss.spans {
                match span(s, &scope, &service, &process_tags) {
                    Ok(s) => out.spans.push(s),
                    Err(e) => {
                        out.rejected += 1;
                        out.first_error.get_or_insert(e);
                    }
                }
            }
        }
    }
    out
}

fn span(
    s: pb::Span,
    scope: &pb::InstrumentationScope,
    service: &str,
    process_tags: &[Tag],
) -> Result<Span, String> {
    let trace_id =
        TraceId::from_bytes(&s.trace_id).map_err(|e| format!("span {:?}: {e}", s.name))?;
    let span_id =
        model::span_id_from_bytes(&s.span_id).map_err(|e| format!("span {:?}: {e}", s.name))?;
    let parent_id = if s.parent_span_id.is_empty() {
        None
    } else {
        Some(
            model::span_id_from_bytes(&s.parent_span_id)
                .map_err(|e| format!("span {:?}: parent {e}", s.name))?,
        )
    };
    let kind = match s.kind {
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    };
    let mut tags: Vec<Tag> = Vec::with_capacity(s.attributes.len() + 6);
    tags.extend(s.attributes.into_iter().map(tag));
    if !scope.name.is_empty() {
        tags.push(Tag::str("otel.scope.name", scope.name.clone()));
    }
    if !scope.version.is_empty() {
        tags.push(Tag::str("otel.scope.version", scope.version.clone()));
    }
    if kind != SpanKind::Unspecified {
        tags.push(Tag::str("span.kind", kind.as_str()));
    }
    if let Some(st) = s.status {
        match st.code {
            1 => tags.push(Tag::str("otel.status_code", "OK")),
            2 => {
                tags.push(Tag::str("otel.status_code", "ERROR"));
                if !tags.iter().any(|t| t.key == "error") {
                    tags.push(Tag {
                        key: "error".into(),
                        value: Value::Bool(true),
                    });
                }
            }
            _ => {}
        }
        if !st.message.is_empty() {
            tags.push(Tag::str("otel.status_description", st.message));
        }
    }
    if !s.trace_state.is_empty() {
        tags.push(Tag::str("w3c.tracestate", s.trace_state));
    }
    let logs = s
        .events
        .into_iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            if !e.name.is_empty() {
                fields.push(Tag::str("event", e.name));
            }
            fields.extend(e.attributes.into_iter().map(tag));
            Log {
                timestamp_us: e.time_unix_nano / 1000,
                fields,
            }
        })
        .collect();
    let links = s
        .links
        .iter()
        .filter_map(|l| {
            Some(Link {
                trace_id: TraceId::from_bytes(&l.trace_id).ok()?,
                span_id: model::span_id_from_bytes(&l.span_id).ok()?,
            })
        })
        .collect();
    let start_us = s.start_time_unix_nano / 1000;
    Ok(Span {
        trace_id,
        span_id,
        parent_id: parent_id.filter(|p| *p != span_id),
        name: s.name,
        kind,
        start_us,
        duration_us: (s.end_time_unix_nano / 1000).saturating_sub(start_us),
        service: service.to_string(),
        process_tags: process_tags.to_vec(),
        tags,
        logs,
        links,
        flags: 1,
    })
}

fn tag(kv: pb::KeyValue) -> Tag {
    Tag {
        key: kv.key,
        value: value(kv.value),
    }
}

fn value(v: Option<pb::AnyValue>) -> Value {
    use pb::any_value::Value as V;
    match v.and_then(|v| v.value) {
        None => Value::Str(String::new()),
        Some(V::StringValue(s)) => Value::Str(s),
        Some(V::BoolValue(b)) => Value::Bool(b),
        Some(V::IntValue(i)) => Value::Int(i),
        Some(V::DoubleValue(f)) => Value::Float(f),
        Some(V::BytesValue(b)) => Value::Binary(b),
        // Jaeger's translator: arrays and maps become their JSON text.
        Some(other) => Value::Str(any_json(&pb::AnyValue { value: Some(other) }).to_string()),
    }
}

fn any_json(v: &pb::AnyValue) -> serde_json::Value {
    use pb::any_value::Value as V;
    match &v.value {
        None => serde_json::Value::Null,
        Some(V::StringValue(s)) => s.clone().into(),
        Some(V::BoolValue(b)) => (*b).into(),
        Some(V::IntValue(i)) => (*i).into(),
        Some(V::DoubleValue(f)) => (*f).into(),
        Some(V::BytesValue(b)) => base64::engine::general_purpose::STANDARD.encode(b).into(),
        Some(V::ArrayValue(a)) => a.values.iter().map(any_json).collect(),
        Some(V::KvlistValue(l)) => l
            .values
            .iter()
            .map(|kv| {
                (
                    kv.key.clone(),
                    kv.value.as_ref().map_or(serde_json::Value::Null, any_json),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into(),
    }
}

/// Counting the messages of a request on the wire, without decoding it.
mod count {
    use super::MAX_DEPTH;

    #[derive(Debug, Clone, Copy)]
    pub enum Kind {
        Request,
        ResourceSpans,
        Resource,
        ScopeSpans,
        Scope,
        Span,
        Event,
        Link,
        KeyValue,
        AnyValue,
        ArrayValue,
        KeyValueList,
        Leaf,
    }

    #[derive(Debug)]
    pub enum Error {
        TooMany,
        Malformed(&'static str),
    }

    /// Which fields of a message are messages themselves.
    fn child(kind: Kind, field: u64) -> Kind {
        use Kind::*;
        match (kind, field) {
            (Request, 1) => ResourceSpans,
            (ResourceSpans, 1) => Resource,
            (ResourceSpans, 2) => ScopeSpans,
            (Resource, 1) | (Scope, 3) | (Span, 9) | (Event, 3) | (Link, 4) => KeyValue,
            (KeyValueList, 1) => KeyValue,
            (ScopeSpans, 1) => Scope,
            (ScopeSpans, 2) => Span,
            (Span, 11) => Event,
            (Span, 13) => Link,
            (KeyValue, 2) | (ArrayValue, 1) => AnyValue,
            (AnyValue, 5) => ArrayValue,
            (AnyValue, 6) => KeyValueList,
            _ => Leaf,
        }
    }

    fn varint(buf: &mut &[u8]) -> Result<u64, Error> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = buf
                .split_first()
                .ok_or(Error::Malformed("truncated varint"))?;
            *buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Malformed("varint longer than 10 bytes"))
    }

    fn skip(buf: &mut &[u8], n: usize) -> Result<(), Error> {
        if buf.len() < n {
            return Err(Error::Malformed("field runs past the end"));
        }
        *buf = &buf[n..];
        Ok(())
    }

    /// The number of messages nested in `buf` (a message of `kind`), failing past `max`.
    pub fn messages(mut buf: &[u8], kind: Kind, depth: u32, max: usize) -> Result<usize, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::Malformed("messages nested too deeply"));
        }
        let mut n = 0usize;
        while !buf.is_empty() {
            let key = varint(&mut buf)?;
            let (field, wire) = (key >> 3, key & 7);
            match wire {
                0 => {
                    varint(&mut buf)?;
                }
                1 => skip(&mut buf, 8)?,
                5 => skip(&mut buf, 4)?,
                2 => {
                    let len = usize::try_from(varint(&mut buf)?)
                        .map_err(|_| Error::Malformed("length out of range"))?;
                    if buf.len() < len {
                        return Err(Error::Malformed("field runs past the end"));
                    }
                    let (inner, rest) = buf.split_at(len);
                    buf = rest;
                    let k = child(kind, field);
                    if !matches!(k, Kind::Leaf) {
                        n += 1 + messages(inner, k, depth + 1, max.saturating_sub(n))?;
                        if n > max {
                            return Err(Error::TooMany);
                        }
                    }
                }
                _ => return Err(Error::Malformed("unknown wire type")),
            }
        }
        Ok(n)
    }
}

/// OTLP's JSON, mapped onto the protobuf types.
mod json {
    use super::*;

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Request {
        #[serde(default, alias = "resource_spans")]
        resource_spans: Bounded<ResourceSpans>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ResourceSpans {
        resource: Option<Resource>,
        #[serde(default, alias = "scope_spans")]
        scope_spans: Bounded<ScopeSpans>,
    }

    #[derive(Deserialize)]
    struct Resource {
        #[serde(default)]
        attributes: Bounded<KeyValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct ScopeSpans {
        scope: Option<Scope>,
        #[serde(default)]
        spans: Bounded<JSpan>,
    }

    #[derive(Deserialize)]
    struct Scope {
        #[serde(default)]
        name: String,
        #[serde(default)]
        version: String,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct JSpan {
        #[serde(default, alias = "trace_id")]
        trace_id: String,
        #[serde(default, alias = "span_id")]
        span_id: String,
        #[serde(default, alias = "trace_state")]
        trace_state: String,
        #[serde(default, alias = "parent_span_id")]
        parent_span_id: String,
        #[serde(default)]
        flags: Option<u32>,
        #[serde(default)]
        name: String,
        #[serde(default)]
        kind: Option<Enum>,
        #[serde(default, alias = "start_time_unix_nano")]
        start_time_unix_nano: Option<Int>,
        #[serde(default, alias = "end_time_unix_nano")]
        end_time_unix_nano: Option<Int>,
        #[serde(default)]
        attributes: Bounded<KeyValue>,
        #[serde(default)]
        events: Bounded<Event>,
        #[serde(default)]
        links: Bounded<JLink>,
        status: Option<Status>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Event {
        #[serde(default, alias = "time_unix_nano")]
        time_unix_nano: Option<Int>,
        #[serde(default)]
        name: String,
        #[serde(default)]
        attributes: Bounded<KeyValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct JLink {
        #[serde(default, alias = "trace_id")]
        trace_id: String,
        #[serde(default, alias = "span_id")]
        span_id: String,
    }

    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        message: String,
        code: Option<Enum>,
    }

    #[derive(Deserialize)]
    struct KeyValue {
        #[serde(default)]
        key: String,
        value: Option<AnyValue>,
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct AnyValue {
        #[serde(alias = "string_value")]
        string_value: Option<String>,
        #[serde(alias = "bool_value")]
        bool_value: Option<bool>,
        #[serde(alias = "int_value")]
        int_value: Option<Int>,
        #[serde(alias = "double_value")]
        double_value: Option<f64>,
        #[serde(alias = "array_value")]
        array_value: Option<Values>,
        #[serde(alias = "kvlist_value")]
        kvlist_value: Option<KvList>,
        #[serde(alias = "bytes_value")]
        bytes_value: Option<String>,
    }

    #[derive(Deserialize)]
    struct Values {
        #[serde(default)]
        values: Bounded<AnyValue>,
    }

    #[derive(Deserialize)]
    struct KvList {
        #[serde(default)]
        values: Bounded<KeyValue>,
    }

    /// A 64-bit integer: a number or a decimal string.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Int {
        U(u64),
        I(i64),
        Text(String),
    }

    impl Int {
        fn u64(&self) -> u64 {
            match self {
                Int::U(n) => *n,
                Int::I(n) => u64::try_from(*n).unwrap_or(0),
                Int::Text(s) => s.trim().parse().unwrap_or(0),
            }
        }
        fn i64(&self) -> i64 {
            match self {
                Int::U(n) => i64::try_from(*n).unwrap_or(i64::MAX),
                Int::I(n) => *n,
                Int::Text(s) => s.trim().parse().unwrap_or(0),
            }
        }
    }

    /// An enum: its number, or its name.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Enum {
        Num(i32),
        Name(String),
    }

    impl Enum {
        fn value(&self, names: &[&str]) -> i32 {
            match self {
                Enum::Num(n) => *n,
                Enum::Name(s) => names.iter().position(|n| n == s).map_or(0, |i| i as i32),
            }
        }
    }

    const KINDS: &[&str] = &[
        "SPAN_KIND_UNSPECIFIED",
        "SPAN_KIND_INTERNAL",
        "SPAN_KIND_SERVER",
        "SPAN_KIND_CLIENT",
        "SPAN_KIND_PRODUCER",
        "SPAN_KIND_CONSUMER",
    ];
    const CODES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

    fn hex(s: &str, what: &str) -> Result<Vec<u8>, String> {
        if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "{what} {:?} is not hex (OTLP's JSON writes ids in hex)",
                s.chars().take(40).collect::<String>()
            ));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
            .collect()
    }

    fn kvs(v: Bounded<KeyValue>) -> Vec<pb::KeyValue> {
        v.0.into_iter().map(KeyValue::into_proto).collect()
    }

    impl KeyValue {
        fn into_proto(self) -> pb::KeyValue {
            pb::KeyValue {
                key: self.key,
                value: self.value.map(AnyValue::into_proto),
            }
        }
    }

    impl AnyValue {
        fn into_proto(self) -> pb::AnyValue {
            use pb::any_value::Value as V;
            let value = if let Some(s) = self.string_value {
                Some(V::StringValue(s))
            } else if let Some(b) = self.bool_value {
                Some(V::BoolValue(b))
            } else if let Some(i) = self.int_value {
                Some(V::IntValue(i.i64()))
            } else if let Some(f) = self.double_value {
                Some(V::DoubleValue(f))
            } else if let Some(a) = self.array_value {
                Some(V::ArrayValue(pb::ArrayValue {
                    values: a.values.0.into_iter().map(AnyValue::into_proto).collect(),
                }))
            } else if let Some(l) = self.kvlist_value {
                Some(V::KvlistValue(pb::KeyValueList {
                    values: kvs(l.values),
                }))
            } else {
                self.bytes_value.map(|b| {
                    // Protobuf's JSON mapping writes bytes in base64.
                    V::BytesValue(
                        base64::engine::general_purpose::STANDARD
                            .decode(b.as_bytes())
                            .unwrap_or_else(|_| b.into_bytes()),
                    )
                })
            };
            pb::AnyValue { value }
        }
    }

    impl Request {
        /// The protobuf request; a span whose ids are not hex is left out and reported.
        pub fn into_proto(self, reject: &mut dyn FnMut(String)) -> pb::ExportTraceServiceRequest {
            let resource_spans = self
                .resource_spans
                .0
                .into_iter()
                .map(|rs| pb::ResourceSpans {
                    resource: rs.resource.map(|r| pb::Resource {
                        attributes: kvs(r.attributes),
                        dropped_attributes_count: 0,
                    }),
                    scope_spans: rs
                        .scope_spans
                        .0
                        .into_iter()
                        .map(|ss| pb::ScopeSpans {
                            scope: ss.scope.map(|s| pb::InstrumentationScope {
                                name: s.name,
                                version: s.version,
                                ..Default::default()
                            }),
                            spans: ss
                                .spans
                                .0
                                .into_iter()
                                .filter_map(|s| match s.into_proto() {
                                    Ok(s) => Some(s),
                                    Err(e) => {
                                        reject(e);
                                        None
                                    }
                                })
                                .collect(),
                            schema_url: String::new(),
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect();
            pb::ExportTraceServiceRequest { resource_spans }
        }
    }

    impl JSpan {
        fn into_proto(self) -> Result<pb::Span, String> {
            let name = self.name;
            let at = |e: String| format!("span {name:?}: {e}");
            Ok(pb::Span {
                trace_id: hex(&self.trace_id, "traceId").map_err(at)?,
                span_id: hex(&self.span_id, "spanId").map_err(at)?,
                parent_span_id: hex(&self.parent_span_id, "parentSpanId").map_err(at)?,
                trace_state: self.trace_state,
                flags: self.flags.unwrap_or(0),
                kind: self.kind.map_or(0, |k| k.value(KINDS)),
                start_time_unix_nano: self.start_time_unix_nano.map_or(0, |t| t.u64()),
                end_time_unix_nano: self.end_time_unix_nano.map_or(0, |t| t.u64()),
                attributes: kvs(self.attributes),
                events: self
                    .events
                    .0
                    .into_iter()
                    .map(|e| pb::Event {
                        time_unix_nano: e.time_unix_nano.map_or(0, |t| t.u64()),
                        name: e.name,
                        attributes: kvs(e.attributes),
                        dropped_attributes_count: 0,
                    })
                    .collect(),
                links: self
                    .links
                    .0
                    .into_iter()
                    .filter_map(|l| {
                        Some(pb::Link {
                            trace_id: hex(&l.trace_id, "traceId").ok()?,
                            span_id: hex(&l.span_id, "spanId").ok()?,
                            ..Default::default()
                        })
                    })
                    .collect(),
                status: self.status.map(|s| pb::Status {
                    message: s.message,
                    code: s.code.map_or(0, |c| c.value(CODES)),
                }),
                name,
                ..Default::default()
            })
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// opentelemetry-proto's `examples/trace.json`.
    pub(crate) const OTLP_EXAMPLE: &str = r#"{
      "resourceSpans": [
        {
          "resource": {
            "attributes": [
              {"key": "service.name", "value": {"stringValue": "my.service"}}
            ]
          },
          "scopeSpans": [
            {
              "scope": {
                "name": "my.library",
                "version": "1.0.0",
                "attributes": [
                  {"key": "my.scope.attribute", "value": {"stringValue": "some scope attribute"}}
                ]
              },
              "spans": [
                {
                  "traceId": "5B8EFFF798038103D269B633813FC60C",
                  "spanId": "EEE19B7EC3C1B174",
                  "parentSpanId": "EEE19B7EC3C1B173",
                  "name": "I'm a server span",
                  "startTimeUnixNano": "1544712660000000000",
                  "endTimeUnixNano": "1544712661000000000",
                  "kind": 2,
                  "attributes": [
                    {"key": "my.span.attr", "value": {"stringValue": "some value"}}
                  ]
                }
              ]
            }
          ]
        }
      ]
    }"#;

    #[test]
    fn the_otlp_json_example_decodes() {
        let d = decode_json(OTLP_EXAMPLE.as_bytes(), 1000).unwrap();
        assert_eq!((d.spans.len(), d.rejected), (1, 0));
        let s = &d.spans[0];
        assert_eq!(s.trace_id.to_string(), "5b8efff798038103d269b633813fc60c");
        assert_eq!(s.span_id, 0xeee19b7ec3c1b174);
        assert_eq!(s.parent_id, Some(0xeee19b7ec3c1b173));
        assert_eq!(s.name, "I'm a server span");
        assert_eq!(s.kind, SpanKind::Server);
        assert_eq!(s.start_us, 1544712660000000);
        assert_eq!(s.duration_us, 1_000_000);
        assert_eq!(s.service, "my.service");
        assert!(s.process_tags.is_empty());
        assert_eq!(
            s.tags,
            vec![
                Tag::str("my.span.attr", "some value"),
                Tag::str("otel.scope.name", "my.library"),
                Tag::str("otel.scope.version", "1.0.0"),
                Tag::str("span.kind", "server"),
            ]
        );
    }

    fn proto_request() -> pb::ExportTraceServiceRequest {
        use pb::any_value::Value as V;
        let kv = |k: &str, v: V| pb::KeyValue {
            key: k.into(),
            value: Some(pb::AnyValue { value: Some(v) }),
        };
        pb::ExportTraceServiceRequest {
            resource_spans: vec![pb::ResourceSpans {
                resource: Some(pb::Resource {
                    attributes: vec![
                        kv("service.name", V::StringValue("was".into())),
                        kv("host.name", V::StringValue("h1".into())),
                    ],
                    dropped_attributes_count: 0,
                }),
                scope_spans: vec![pb::ScopeSpans {
                    scope: None,
                    spans: vec![
                        pb::Span {
                            trace_id: vec![7; 16],
                            span_id: vec![1; 8],
                            name: "SELECT posts".into(),
                            kind: 3,
                            start_time_unix_nano: 2_000_000_000,
                            end_time_unix_nano: 2_004_700_000,
                            attributes: vec![
                                kv("db.rows", V::IntValue(3)),
                                kv("cached", V::BoolValue(false)),
                                kv("ratio", V::DoubleValue(0.5)),
                                kv(
                                    "list",
                                    V::ArrayValue(pb::ArrayValue {
                                        values: vec![pb::AnyValue {
                                            value: Some(V::IntValue(1)),
                                        }],
                                    }),
                                ),
                            ],
                            events: vec![pb::Event {
                                time_unix_nano: 2_001_000_000,
                                name: "exception".into(),
                                attributes: vec![kv("exception.type", V::StringValue("E".into()))],
                                dropped_attributes_count: 0,
                            }],
                            status: Some(pb::Status {
                                message: "boom".into(),
                                code: 2,
                            }),
                            ..Default::default()
                        },
                        // A span with a short id: refused, the others kept.
                        pb::Span {
                            trace_id: vec![7; 16],
                            span_id: vec![1; 4],
                            ..Default::default()
                        },
                    ],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    #[test]
    fn protobuf_decodes_with_typed_tags_status_and_events() {
        let body = proto_request().encode_to_vec();
        let d = decode_protobuf(&body, 1000).unwrap();
        assert_eq!(d.rejected, 1);
        assert!(d.first_error.unwrap().contains("span id"));
        let s = &d.spans[0];
        assert_eq!(s.service, "was");
        assert_eq!(s.process_tags, vec![Tag::str("host.name", "h1")]);
        assert_eq!((s.start_us, s.duration_us), (2_000_000, 4_700));
        assert_eq!(s.tags[0].value, Value::Int(3));
        assert_eq!(s.tags[1].value, Value::Bool(false));
        assert_eq!(s.tags[2].value, Value::Float(0.5));
        assert_eq!(s.tags[3].value, Value::Str("[1]".into()));
        assert!(s.is_error());
        assert!(
            s.tags
                .contains(&Tag::str("otel.status_description", "boom"))
        );
        assert_eq!(s.logs[0].timestamp_us, 2_001_000);
        assert_eq!(s.logs[0].fields[0], Tag::str("event", "exception"));
        assert_eq!(s.parent_id, None);
    }

    #[test]
    fn hostile_protobuf_is_refused_before_it_is_decoded() {
        // Millions of empty spans: counted on the wire, refused as too large.
        let mut ss = Vec::new();
        for _ in 0..100_000 {
            ss.extend_from_slice(&[0x12, 0x00]); // ScopeSpans.spans, empty
        }
        let mut rs = vec![0x12];
        prost::encoding::encode_varint(ss.len() as u64, &mut rs);
        rs.extend_from_slice(&ss);
        let mut req = vec![0x0a];
        prost::encoding::encode_varint(rs.len() as u64, &mut req);
        req.extend_from_slice(&rs);
        let e = decode_protobuf(&req, 10_000).unwrap_err();
        assert!(e.is_too_large(), "{e}");
        // The same under the limit: every span refused for its missing ids, none kept.
        let d = decode_protobuf(&req, 1_000_000).unwrap();
        assert_eq!((d.spans.len(), d.rejected), (0, 100_000));
        // Garbage and truncation are 400s.
        assert!(
            !decode_protobuf(&[0x0a, 0xff], 10)
                .unwrap_err()
                .is_too_large()
        );
        assert!(decode_protobuf(&[0xff; 11], 10).is_err());
        // Values nested past the limit.
        let mut v: Vec<u8> = Vec::new();
        for _ in 0..200 {
            let mut outer = vec![0x2a]; // AnyValue.array_value
            let mut arr = vec![0x0a]; // ArrayValue.values
            prost::encoding::encode_varint(v.len() as u64, &mut arr);
            arr.extend_from_slice(&v);
            prost::encoding::encode_varint(arr.len() as u64, &mut outer);
            outer.extend_from_slice(&arr);
            v = outer;
        }
        assert!(count::messages(&v, count::Kind::AnyValue, 0, usize::MAX).is_err());
    }

    #[test]
    fn json_quirks_and_bad_ids() {
        let body = r#"{"resource_spans":[{"scope_spans":[{"spans":[
            {"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"0102030405060708",
             "kind":"SPAN_KIND_CLIENT","start_time_unix_nano":1000,"endTimeUnixNano":"5000",
             "status":{"code":"STATUS_CODE_ERROR"},
             "attributes":[{"key":"n","value":{"intValue":"42"}},
                           {"key":"b","value":{"bytesValue":"AQI="}}],
             "unknownField":{"x":1}},
            {"traceId":"AQIDBAUGBwgJCgsMDQ4PEA==","spanId":"0102030405060708"}
        ]}]}]}"#;
        let d = decode_json(body.as_bytes(), 1000).unwrap();
        assert_eq!(d.spans.len(), 1);
        assert_eq!(
            d.rejected, 1,
            "a base64 id is refused: OTLP's JSON ids are hex"
        );
        assert!(d.first_error.unwrap().contains("not hex"));
        let s = &d.spans[0];
        assert_eq!(s.kind, SpanKind::Client);
        assert_eq!((s.start_us, s.duration_us), (1, 4));
        assert_eq!(s.tags[0].value, Value::Int(42));
        assert_eq!(s.tags[1].value, Value::Binary(vec![1, 2]));
        assert!(s.is_error());
        assert_eq!(s.service, model::UNKNOWN_SERVICE);
        let many = format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}"#,
            vec!["{}"; 5000].join(",")
        );
        assert!(
            decode_json(many.as_bytes(), 1000)
                .unwrap_err()
                .is_too_large()
        );
        assert!(decode_json(b"[1,2]", 1000).is_err());
        let deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000));
        assert!(
            !decode_json(deep.as_bytes(), 1000)
                .unwrap_err()
                .is_too_large()
        );
    }
}
