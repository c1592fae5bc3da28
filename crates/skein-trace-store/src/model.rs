//! The store's own span: what the Zipkin and OTLP decoders produce and what the Jaeger query
//! API renders. Times are microseconds since the epoch, as in Zipkin and Jaeger.

use std::fmt;

/// A trace id: 64-bit ids (Zipkin's 16-hex form) have a zero high half.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct TraceId(pub u128);

impl fmt::Display for TraceId {
    /// Jaeger's form: 16 hex digits when the high half is zero, else 32.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >> 64 == 0 {
            write!(f, "{:016x}", self.0 as u64)
        } else {
            write!(f, "{:032x}", self.0)
        }
    }
}

/// Why an id is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("{what} {value:?} is not 1 to {max} hex digits")]
    Malformed {
        what: &'static str,
        value: String,
        max: usize,
    },
    #[error("{what} is all zeros, which is not a valid id")]
    Zero { what: &'static str },
}

fn short(s: &str) -> String {
    s.chars().take(40).collect()
}

impl TraceId {
    /// Parses 1 to 32 hex digits (Jaeger accepts short ids; Zipkin sends 16 or 32).
    pub fn parse_hex(s: &str) -> Result<TraceId, IdError> {
        let bad = || IdError::Malformed {
            what: "trace id",
            value: short(s),
            max: 32,
        };
        if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let v = u128::from_str_radix(s, 16).map_err(|_| bad())?;
        if v == 0 {
            return Err(IdError::Zero { what: "trace id" });
        }
        Ok(TraceId(v))
    }

    /// From OTLP's 16 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<TraceId, IdError> {
        let arr: [u8; 16] = b.try_into().map_err(|_| IdError::Malformed {
            what: "trace id",
            value: format!("{} bytes", b.len()),
            max: 32,
        })?;
        let v = u128::from_be_bytes(arr);
        if v == 0 {
            return Err(IdError::Zero { what: "trace id" });
        }
        Ok(TraceId(v))
    }
}

/// Parses a span id of 1 to 16 hex digits.
pub fn parse_span_id(s: &str) -> Result<u64, IdError> {
    let bad = || IdError::Malformed {
        what: "span id",
        value: short(s),
        max: 16,
    };
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let v = u64::from_str_radix(s, 16).map_err(|_| bad())?;
    if v == 0 {
        return Err(IdError::Zero { what: "span id" });
    }
    Ok(v)
}

/// A span id from OTLP's 8 bytes.
pub fn span_id_from_bytes(b: &[u8]) -> Result<u64, IdError> {
    let arr: [u8; 8] = b.try_into().map_err(|_| IdError::Malformed {
        what: "span id",
        value: format!("{} bytes", b.len()),
        max: 16,
    })?;
    let v = u64::from_be_bytes(arr);
    if v == 0 {
        return Err(IdError::Zero { what: "span id" });
    }
    Ok(v)
}

/// A span's kind, as Jaeger's `spanKind` filter and the `span.kind` tag name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum SpanKind {
    #[default]
    Unspecified,
    Internal,
    Server,
    Client,
    Producer,
    Consumer,
}

impl SpanKind {
    /// The `span.kind` tag value (empty for unspecified).
    pub fn as_str(self) -> &'static str {
        match self {
            SpanKind::Unspecified => "",
            SpanKind::Internal => "internal",
            SpanKind::Server => "server",
            SpanKind::Client => "client",
            SpanKind::Producer => "producer",
            SpanKind::Consumer => "consumer",
        }
    }

    pub fn parse(s: &str) -> Option<SpanKind> {
        Some(match s {
            "" | "unspecified" => SpanKind::Unspecified,
            "internal" => SpanKind::Internal,
            "server" => SpanKind::Server,
            "client" => SpanKind::Client,
            "producer" => SpanKind::Producer,
            "consumer" => SpanKind::Consumer,
            _ => return None,
        })
    }
}

/// A typed tag value (Jaeger's types: string, bool, int64, float64, binary).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Bool(bool),
    Int(i64),
    Float(f64),
    Binary(Vec<u8>),
}

impl Value {
    /// The value as Jaeger's tag search compares it (its string form).
    pub fn as_text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Binary(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
        }
    }

    fn bytes(&self) -> usize {
        match self {
            Value::Str(s) => s.len(),
            Value::Binary(b) => b.len(),
            _ => 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tag {
    pub key: String,
    pub value: Value,
}

impl Tag {
    pub fn str(key: impl Into<String>, v: impl Into<String>) -> Tag {
        Tag {
            key: key.into(),
            value: Value::Str(v.into()),
        }
    }
}

/// A timestamped event (Zipkin annotation, OTLP event).
#[derive(Debug, Clone, PartialEq)]
pub struct Log {
    pub timestamp_us: u64,
    pub fields: Vec<Tag>,
}

/// A reference to another span: OTLP links become FOLLOWS_FROM, as Jaeger maps them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub trace_id: TraceId,
    pub span_id: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: u64,
    pub parent_id: Option<u64>,
    pub name: String,
    pub kind: SpanKind,
    pub start_us: u64,
    pub duration_us: u64,
    /// The process: its service name and its tags (Zipkin's local endpoint, OTLP's resource).
    pub service: String,
    pub process_tags: Vec<Tag>,
    pub tags: Vec<Tag>,
    pub logs: Vec<Log>,
    pub links: Vec<Link>,
    /// Jaeger's `flags` (1 = sampled, 2 = debug).
    pub flags: u32,
}

/// What a span without a service name is filed under (the OpenTelemetry SDKs' own default).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

impl Span {
    /// Whether the span failed: a tag `error` that is true, or (Zipkin's convention) a
    /// string other than "false", which is the error's message.
    pub fn is_error(&self) -> bool {
        self.tags.iter().any(|t| {
            t.key == "error"
                && match &t.value {
                    Value::Bool(b) => *b,
                    Value::Str(s) => !s.is_empty() && !s.eq_ignore_ascii_case("false"),
                    _ => false,
                }
        })
    }

    /// An estimate of the memory the span holds, for the store's byte limit.
    pub fn approx_bytes(&self) -> usize {
        // Calibrated on the process's resident memory: 100,000 Zipkin spans of 5 tags each
        // took 127 MiB, 1,270 bytes a span, with the allocator's overhead per string.
        const SPAN: usize = 480;
        const TAG: usize = 120;
        let tags =
            |t: &[Tag]| -> usize { t.iter().map(|t| TAG + t.key.len() + t.value.bytes()).sum() };
        SPAN + self.name.len()
            + self.service.len()
            + tags(&self.process_tags)
            + tags(&self.tags)
            + self
                .logs
                .iter()
                .map(|l| 64 + tags(&l.fields))
                .sum::<usize>()
            + self.links.len() * 48
    }

    pub fn end_us(&self) -> u64 {
        self.start_us.saturating_add(self.duration_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print_as_jaeger_does() {
        let t = TraceId::parse_hex("5af7183fb1d4cf5f").unwrap();
        assert_eq!(t.to_string(), "5af7183fb1d4cf5f");
        let t = TraceId::parse_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        // A 128-bit id with a zero high half prints in 16 digits, as Jaeger's TraceID does.
        let t = TraceId::parse_hex("00000000000000006b221d5bc9e6496c").unwrap();
        assert_eq!(t.to_string(), "6b221d5bc9e6496c");
        assert!(TraceId::parse_hex("").is_err());
        assert!(TraceId::parse_hex("xyz").is_err());
        assert!(TraceId::parse_hex(&"a".repeat(33)).is_err());
        assert_eq!(
            TraceId::parse_hex("0000").unwrap_err(),
            IdError::Zero { what: "trace id" }
        );
        assert_eq!(
            parse_span_id("352bff9a74ca9ad2").unwrap(),
            0x352bff9a74ca9ad2
        );
        assert!(parse_span_id("352bff9a74ca9ad2a").is_err());
        assert!(span_id_from_bytes(&[0; 8]).is_err());
        assert!(TraceId::from_bytes(&[1; 15]).is_err());
    }
}
