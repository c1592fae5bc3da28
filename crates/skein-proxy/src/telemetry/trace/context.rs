//! Trace context on the wire: parse and format of B3 (single `b3` and the `x-b3-*` headers),
//! W3C `traceparent`, and the tracing nibble of Envoy's `x-request-id`.
//!
//! Anything malformed (a wrong length, a non-hex digit, an all-zero id, an unknown W3C
//! version's bad shape) is ignored: the request starts a fresh trace, as Envoy does. Parsers
//! read bytes only and never allocate.

use http::header::{HeaderMap, HeaderName, HeaderValue};

pub(crate) static B3: HeaderName = HeaderName::from_static("b3");
pub(crate) static X_B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
pub(crate) static X_B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
pub(crate) static X_B3_PARENT_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-parentspanid");
pub(crate) static X_B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
pub(crate) static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// A trace id: 128 bits, or 64 (a 16-digit B3 id, kept at its length when re-sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TraceId {
    pub(crate) high: u64,
    pub(crate) low: u64,
}

impl TraceId {
    /// Hex of the id: 32 digits, or 16 for a 64-bit id.
    pub(crate) fn write_hex(self, out: &mut Vec<u8>) {
        if self.high != 0 {
            push_hex64(out, self.high);
        }
        push_hex64(out, self.low);
    }

    /// Always 32 digits (W3C, OTLP).
    pub(crate) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.high.to_be_bytes());
        b[8..].copy_from_slice(&self.low.to_be_bytes());
        b
    }
}

/// The context a request arrived with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpanContext {
    pub(crate) trace_id: TraceId,
    /// The caller's span: the parent of this proxy's span.
    pub(crate) span_id: u64,
    /// B3 debug (`x-b3-flags: 1`, `b3: ...-d`).
    pub(crate) debug: bool,
}

/// What the headers say: a context (or none), and a sampling decision (or none: the proxy
/// decides). `b3: 0` alone is a decision without a context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Extracted {
    pub(crate) ctx: Option<SpanContext>,
    pub(crate) sampled: Option<bool>,
}

/// The request headers tracing reads, found in one pass over the map (a look-up per name
/// would hash each of a dozen names on every request). The first value of a name counts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Seen<'a> {
    pub(crate) b3: Option<&'a HeaderValue>,
    pub(crate) b3_trace_id: Option<&'a HeaderValue>,
    pub(crate) b3_span_id: Option<&'a HeaderValue>,
    pub(crate) b3_parent: Option<&'a HeaderValue>,
    pub(crate) b3_sampled: Option<&'a HeaderValue>,
    pub(crate) b3_flags: Option<&'a HeaderValue>,
    pub(crate) traceparent: Option<&'a HeaderValue>,
    pub(crate) request_id: Option<&'a HeaderValue>,
    pub(crate) user_agent: Option<&'a HeaderValue>,
    pub(crate) force_trace: bool,
    pub(crate) client_trace_id: bool,
}

impl<'a> Seen<'a> {
    pub(crate) fn scan(h: &'a HeaderMap) -> Self {
        let mut s = Seen::default();
        for (name, value) in h {
            if name == http::header::USER_AGENT {
                s.user_agent.get_or_insert(value);
                continue;
            }
            let b = name.as_str().as_bytes();
            // Every name tracing reads starts with `x-` but `b3` and `traceparent`.
            let slot = match b {
                [b'x', b'-', rest @ ..] => match rest {
                    b"request-id" => &mut s.request_id,
                    b"b3-traceid" => &mut s.b3_trace_id,
                    b"b3-spanid" => &mut s.b3_span_id,
                    b"b3-parentspanid" => &mut s.b3_parent,
                    b"b3-sampled" => &mut s.b3_sampled,
                    b"b3-flags" => &mut s.b3_flags,
                    b"envoy-force-trace" => {
                        s.force_trace = true;
                        continue;
                    }
                    b"client-trace-id" => {
                        s.client_trace_id = true;
                        continue;
                    }
                    _ => continue,
                },
                b"b3" => &mut s.b3,
                b"traceparent" => &mut s.traceparent,
                _ => continue,
            };
            slot.get_or_insert(value);
        }
        s
    }

    /// B3 (single, then multi) and, without B3, W3C `traceparent`.
    pub(crate) fn extract(&self) -> Extracted {
        if let Some(v) = self.b3 {
            return parse_b3_single(v.as_bytes()).unwrap_or_default();
        }
        if let Some(e) = self.b3_multi() {
            return e;
        }
        match self.traceparent {
            Some(v) => parse_traceparent(v.as_bytes()).unwrap_or_default(),
            None => Extracted::default(),
        }
    }

    /// `x-b3-*`; None when no B3 header is there at all.
    fn b3_multi(&self) -> Option<Extracted> {
        let (trace, sampled, flags) = (self.b3_trace_id, self.b3_sampled, self.b3_flags);
        if trace.is_none() && sampled.is_none() && flags.is_none() {
            return None;
        }
        let debug = flags.is_some_and(|f| f.as_bytes() == b"1");
        let mut sampled = sampled.and_then(|s| parse_sampled(s.as_bytes()));
        if debug {
            sampled = Some(true);
        }
        let ctx = trace.and_then(|t| {
            let trace_id = parse_trace_id(t.as_bytes())?;
            let span_id = parse_span_id(self.b3_span_id?.as_bytes())?;
            if let Some(p) = self.b3_parent {
                parse_span_id(p.as_bytes())?;
            }
            Some(SpanContext {
                trace_id,
                span_id,
                debug,
            })
        });
        Some(Extracted { ctx, sampled })
    }
}

/// Reads B3 (single, then multi) and, without B3, W3C `traceparent`.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn extract(h: &HeaderMap) -> Extracted {
    Seen::scan(h).extract()
}

/// `x-b3-sampled`: `1`/`0`, legacy `true`/`false`.
fn parse_sampled(b: &[u8]) -> Option<bool> {
    match b {
        b"1" | b"true" => Some(true),
        b"0" | b"false" => Some(false),
        _ => None,
    }
}

/// `b3: {traceid}-{spanid}[-{sampled}[-{parentid}]]`, or just the sampling state. Valid
/// lengths: 1, 33/49 (64/128-bit trace id, no sampling state), 35/51 (with it) and 52/68
/// (with a parent), as Envoy's extractor.
pub(crate) fn parse_b3_single(b: &[u8]) -> Option<Extracted> {
    if b.len() == 1 {
        return Some(Extracted {
            ctx: None,
            sampled: Some(parse_b3_state(b[0])?.0),
        });
    }
    let tl = match b.iter().position(|&c| c == b'-')? {
        16 => 16,
        32 => 32,
        _ => return None,
    };
    let trace_id = parse_trace_id(&b[..tl])?;
    let rest = &b[tl + 1..];
    let span_id = parse_span_id(rest.get(..16)?)?;
    let rest = &rest[16..];
    let (sampled, debug) = match rest.len() {
        0 => (None, false),
        2 | 19 if rest[0] == b'-' => {
            let (s, d) = parse_b3_state(rest[1])?;
            if rest.len() == 19 {
                if rest[2] != b'-' {
                    return None;
                }
                parse_span_id(&rest[3..])?;
            }
            (Some(s), d)
        }
        _ => return None,
    };
    Some(Extracted {
        ctx: Some(SpanContext {
            trace_id,
            span_id,
            debug,
        }),
        sampled,
    })
}

/// A B3 sampling state: (sampled, debug).
fn parse_b3_state(c: u8) -> Option<(bool, bool)> {
    match c {
        b'1' => Some((true, false)),
        b'0' => Some((false, false)),
        b'd' => Some((true, true)),
        _ => None,
    }
}

/// `traceparent: {version}-{trace-id}-{parent-id}-{flags}`. Version `ff` is invalid; version
/// 00 is exactly 55 bytes; a later version may append `-...` after the flags.
pub(crate) fn parse_traceparent(b: &[u8]) -> Option<Extracted> {
    if b.len() < 55 {
        return None;
    }
    let version = hex_byte(b[0], b[1])?;
    if version == 0xff || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    if version == 0 && b.len() != 55 {
        return None;
    }
    if b.len() > 55 && b[55] != b'-' {
        return None;
    }
    // W3C ids are lower-case hex.
    let lower = |s: &[u8]| !s.iter().any(u8::is_ascii_uppercase);
    if !lower(&b[3..52]) {
        return None;
    }
    let high = parse_hex64(&b[3..19])?;
    let low = parse_hex64(&b[19..35])?;
    if high == 0 && low == 0 {
        return None;
    }
    let span_id = parse_span_id(&b[36..52])?;
    let flags = hex_byte(b[53], b[54])?;
    Some(Extracted {
        ctx: Some(SpanContext {
            trace_id: TraceId { high, low },
            span_id,
            debug: false,
        }),
        sampled: Some(flags & 1 == 1),
    })
}

/// A 16- or 32-digit trace id, not all zeros.
fn parse_trace_id(b: &[u8]) -> Option<TraceId> {
    let (high, low) = match b.len() {
        16 => (0, parse_hex64(b)?),
        32 => (parse_hex64(&b[..16])?, parse_hex64(&b[16..])?),
        _ => return None,
    };
    (high != 0 || low != 0).then_some(TraceId { high, low })
}

/// A 16-digit span id, not zero.
fn parse_span_id(b: &[u8]) -> Option<u64> {
    if b.len() != 16 {
        return None;
    }
    parse_hex64(b).filter(|&id| id != 0)
}

fn parse_hex64(b: &[u8]) -> Option<u64> {
    b.iter()
        .try_fold(0u64, |acc, &c| Some((acc << 4) | u64::from(hex_digit(c)?)))
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex_byte(h: u8, l: u8) -> Option<u8> {
    Some((hex_digit(h)? << 4) | hex_digit(l)?)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn push_hex64(out: &mut Vec<u8>, v: u64) {
    for i in (0..16).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

/// 16 lower-hex digits.
pub(crate) fn hex64(v: u64) -> [u8; 16] {
    let mut s = [0u8; 16];
    for (i, c) in s.iter_mut().enumerate() {
        *c = HEX[((v >> ((15 - i) * 4)) & 0xf) as usize];
    }
    s
}

/// What the next hop gets for `span_id` (this proxy's span, child of `parent`) under
/// `trace_id`: B3 multi (`b3`, which Envoy re-sends as multi, goes) and/or W3C
/// `traceparent`; `tracestate` passes through as sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Inject {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: u64,
    pub(crate) parent: Option<u64>,
    pub(crate) sampled: bool,
    pub(crate) b3: bool,
    pub(crate) w3c: bool,
}

impl Inject {
    pub(crate) fn apply(&self, h: &mut HeaderMap) {
        let mut buf = Vec::with_capacity(55);
        if self.b3 {
            self.trace_id.write_hex(&mut buf);
            if let Ok(v) = HeaderValue::from_bytes(&buf) {
                h.insert(X_B3_TRACE_ID.clone(), v);
            }
            if let Ok(v) = HeaderValue::from_bytes(&hex64(self.span_id)) {
                h.insert(X_B3_SPAN_ID.clone(), v);
            }
            match self
                .parent
                .and_then(|p| HeaderValue::from_bytes(&hex64(p)).ok())
            {
                Some(v) => {
                    h.insert(X_B3_PARENT_SPAN_ID.clone(), v);
                }
                None => {
                    h.remove(&X_B3_PARENT_SPAN_ID);
                }
            }
            let s = if self.sampled { "1" } else { "0" };
            h.insert(X_B3_SAMPLED.clone(), HeaderValue::from_static(s));
            h.remove(&B3);
        }
        if self.w3c {
            buf.clear();
            buf.extend_from_slice(b"00-");
            push_hex64(&mut buf, self.trace_id.high);
            push_hex64(&mut buf, self.trace_id.low);
            buf.push(b'-');
            buf.extend_from_slice(&hex64(self.span_id));
            buf.extend_from_slice(if self.sampled { b"-01" } else { b"-00" });
            if let Ok(v) = HeaderValue::from_bytes(&buf) {
                h.insert(TRACEPARENT.clone(), v);
            }
        }
    }
}

/// B3 and W3C for `span_id` (tests and callers that want both).
#[cfg(test)]
pub(crate) fn inject(
    h: &mut HeaderMap,
    trace_id: TraceId,
    span_id: u64,
    parent: Option<u64>,
    sampled: bool,
) {
    Inject {
        trace_id,
        span_id,
        parent,
        sampled,
        b3: true,
        w3c: true,
    }
    .apply(h);
}

// === x-request-id ===

/// Envoy's trace status in a UUID `x-request-id` (the character at index 14).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RidStatus {
    /// `4`: a fresh UUID v4, not traced.
    NoTrace,
    /// `9`: sampled by the random percentage.
    Sampled,
    /// `a`: `x-envoy-force-trace`.
    Forced,
    /// `b`: `x-client-trace-id`.
    Client,
}

impl RidStatus {
    fn nibble(self) -> u8 {
        match self {
            RidStatus::NoTrace => b'4',
            RidStatus::Sampled => b'9',
            RidStatus::Forced => b'a',
            RidStatus::Client => b'b',
        }
    }

    /// Whether the status asks for a trace.
    pub(crate) fn traced(self) -> bool {
        self != RidStatus::NoTrace
    }
}

/// The status a request id carries; None when it is not a 36-character UUID (Envoy then
/// treats it as untraced and does not rewrite it).
pub(crate) fn rid_status(id: &[u8]) -> Option<RidStatus> {
    if id.len() != 36 {
        return None;
    }
    match id[14] {
        b'9' => Some(RidStatus::Sampled),
        b'a' => Some(RidStatus::Forced),
        b'b' => Some(RidStatus::Client),
        _ => Some(RidStatus::NoTrace),
    }
}

/// The request id with `status` at index 14 (None when it is not a UUID).
pub(crate) fn with_rid_status(id: &HeaderValue, status: RidStatus) -> Option<HeaderValue> {
    let b = id.as_bytes();
    if b.len() != 36 || b[14] == status.nibble() {
        return None;
    }
    let mut s = [0u8; 36];
    s.copy_from_slice(b);
    s[14] = status.nibble();
    HeaderValue::from_bytes(&s).ok()
}

/// The number Envoy's random sampling compares: the first 8 hex digits of the UUID (its
/// first 32 bits), mod 10000 against the percentage in hundredths. Not a UUID: None.
pub(crate) fn rid_sample_value(id: &[u8]) -> Option<u64> {
    if id.len() != 36 {
        return None;
    }
    parse_hex64(&id[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    const T128: &str = "80f198ee56343ba864fe8b2a57d3eff7";
    const T64: &str = "64fe8b2a57d3eff7";
    const S: &str = "e457b5a2e4d86bd1";
    const P: &str = "05e3ac9a4f6e3b90";

    #[test]
    fn b3_single_of_each_valid_length() {
        for (v, trace_high, sampled, debug) in [
            (format!("{T64}-{S}"), 0, None, false),
            (format!("{T128}-{S}"), 0x80f198ee56343ba8, None, false),
            (format!("{T64}-{S}-1"), 0, Some(true), false),
            (
                format!("{T128}-{S}-0"),
                0x80f198ee56343ba8,
                Some(false),
                false,
            ),
            (
                format!("{T128}-{S}-d"),
                0x80f198ee56343ba8,
                Some(true),
                true,
            ),
            (format!("{T64}-{S}-1-{P}"), 0, Some(true), false),
            (
                format!("{T128}-{S}-1-{P}"),
                0x80f198ee56343ba8,
                Some(true),
                false,
            ),
        ] {
            assert!(matches!(v.len(), 33 | 49 | 35 | 51 | 52 | 68), "{v}");
            let e = parse_b3_single(v.as_bytes()).unwrap_or_else(|| panic!("{v}"));
            let ctx = e.ctx.unwrap();
            assert_eq!(ctx.trace_id.high, trace_high, "{v}");
            assert_eq!(ctx.trace_id.low, 0x64fe8b2a57d3eff7, "{v}");
            assert_eq!(ctx.span_id, 0xe457b5a2e4d86bd1, "{v}");
            assert_eq!(e.sampled, sampled, "{v}");
            assert_eq!(ctx.debug, debug, "{v}");
        }
        for (v, s) in [("1", true), ("0", false), ("d", true)] {
            let e = parse_b3_single(v.as_bytes()).unwrap();
            assert_eq!((e.ctx, e.sampled), (None, Some(s)), "{v}");
        }
    }

    #[test]
    fn b3_single_invalid_is_ignored() {
        for v in [
            String::new(),
            "2".into(),
            "x".into(),
            T64.to_string(),
            format!("{T64}-"),
            format!("{T64}-{S}-"),
            format!("{T64}-{S}-2"),
            format!("{T64}-{S}-1-"),
            format!("{T64}-{S}-1-{P}0"),
            format!("{T64}-{S}-1x{P}"),
            format!("{T64}-{S}x"),
            format!("{}-{S}", &T128[..20]),
            format!("0000000000000000-{S}"),
            format!("{T64}-0000000000000000"),
            format!("{T64}-{S}-1-0000000000000000"),
            format!("{}g-{S}", &T64[..15]),
            format!("{T64}-{}", &S[..15]),
            format!("{T64}-{}é", &S[..14]),
        ] {
            assert_eq!(parse_b3_single(v.as_bytes()), None, "{v:?}");
        }
        // Through `extract`: a bad `b3` is a fresh trace, even with valid x-b3-* beside it.
        let h = headers(&[
            ("b3", "garbage"),
            ("x-b3-traceid", T128),
            ("x-b3-spanid", S),
        ]);
        assert_eq!(extract(&h), Extracted::default());
    }

    #[test]
    fn b3_multi_headers() {
        let h = headers(&[
            ("x-b3-traceid", T128),
            ("x-b3-spanid", S),
            ("x-b3-parentspanid", P),
            ("x-b3-sampled", "1"),
        ]);
        let e = extract(&h);
        assert_eq!(e.sampled, Some(true));
        assert_eq!(e.ctx.unwrap().span_id, 0xe457b5a2e4d86bd1);
        let h = headers(&[
            ("x-b3-traceid", T64),
            ("x-b3-spanid", S),
            ("x-b3-sampled", "true"),
        ]);
        let e = extract(&h);
        assert_eq!((e.ctx.unwrap().trace_id.high, e.sampled), (0, Some(true)));
        // Debug forces sampling.
        let h = headers(&[
            ("x-b3-traceid", T64),
            ("x-b3-spanid", S),
            ("x-b3-flags", "1"),
        ]);
        let e = extract(&h);
        assert!(e.ctx.unwrap().debug);
        assert_eq!(e.sampled, Some(true));
        // Only a decision.
        let e = extract(&headers(&[("x-b3-sampled", "0")]));
        assert_eq!((e.ctx, e.sampled), (None, Some(false)));
        // Bad ids: no context, but a decision still counts.
        for (t, s) in [
            (T128, "zz57b5a2e4d86bd1"),
            (&T128[..31], S),
            ("00000000000000000000000000000000", S),
            (T128, "0000000000000000"),
        ] {
            let h = headers(&[
                ("x-b3-traceid", t),
                ("x-b3-spanid", s),
                ("x-b3-sampled", "0"),
            ]);
            let e = extract(&h);
            assert_eq!((e.ctx, e.sampled), (None, Some(false)), "{t} {s}");
        }
        let h = headers(&[("x-b3-traceid", T128)]);
        assert_eq!(extract(&h).ctx, None, "a trace id without a span id");
        let h = headers(&[
            ("x-b3-traceid", T128),
            ("x-b3-spanid", S),
            ("x-b3-parentspanid", "x"),
        ]);
        assert_eq!(extract(&h).ctx, None, "a bad parent");
    }

    #[test]
    fn traceparent_versions_and_flags() {
        let spec = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let e = parse_traceparent(spec.as_bytes()).unwrap();
        let ctx = e.ctx.unwrap();
        assert_eq!(ctx.trace_id.high, 0x4bf92f3577b34da6);
        assert_eq!(ctx.trace_id.low, 0xa3ce929d0e0e4736);
        assert_eq!(ctx.span_id, 0x00f067aa0ba902b7);
        assert_eq!(e.sampled, Some(true));
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(
            parse_traceparent(unsampled.as_bytes()).unwrap().sampled,
            Some(false)
        );
        // Other flag bits are ignored; bit 0 is sampled.
        let other = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03";
        assert_eq!(
            parse_traceparent(other.as_bytes()).unwrap().sampled,
            Some(true)
        );
        // A later version may carry more after the flags.
        let future =
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-will-be";
        assert!(parse_traceparent(future.as_bytes()).is_some());
        for bad in [
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
            "",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
        // B3 wins over traceparent.
        let h = headers(&[("traceparent", spec), ("x-b3-sampled", "0")]);
        assert_eq!(extract(&h).ctx, None);
        assert_eq!(extract(&headers(&[("traceparent", spec)])).ctx, Some(ctx));
    }

    #[test]
    fn injected_headers_parse_back() {
        let id = TraceId {
            high: 0x4bf92f3577b34da6,
            low: 0xa3ce929d0e0e4736,
        };
        let mut h = headers(&[("b3", "1")]);
        inject(&mut h, id, 0x00f067aa0ba902b7, Some(7), true);
        assert!(h.get(&B3).is_none(), "single b3 becomes multi");
        assert_eq!(h[&X_B3_TRACE_ID], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h[&X_B3_SPAN_ID], "00f067aa0ba902b7");
        assert_eq!(h[&X_B3_PARENT_SPAN_ID], "0000000000000007");
        assert_eq!(h[&X_B3_SAMPLED], "1");
        assert_eq!(
            h[&TRACEPARENT],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        let e = extract(&h);
        assert_eq!(e.ctx.unwrap().trace_id, id);
        assert_eq!(e.sampled, Some(true));
        let short = TraceId { high: 0, low: 5 };
        inject(&mut h, short, 9, None, false);
        assert_eq!(h[&X_B3_TRACE_ID], "0000000000000005");
        assert!(h.get(&X_B3_PARENT_SPAN_ID).is_none());
        assert_eq!(
            h[&TRACEPARENT],
            "00-00000000000000000000000000000005-0000000000000009-00"
        );
        assert_eq!(extract(&h).sampled, Some(false));
    }

    #[test]
    fn request_id_nibble() {
        let fresh = HeaderValue::from_static("1b4e28ba-2fa1-41d2-883f-0016d3cca427");
        assert_eq!(rid_status(fresh.as_bytes()), Some(RidStatus::NoTrace));
        for (st, c) in [
            (RidStatus::Sampled, '9'),
            (RidStatus::Forced, 'a'),
            (RidStatus::Client, 'b'),
        ] {
            let v = with_rid_status(&fresh, st).unwrap();
            assert_eq!(v.to_str().unwrap().chars().nth(14), Some(c));
            assert_eq!(rid_status(v.as_bytes()), Some(st));
            assert!(st.traced());
            // Nothing else changed.
            assert_eq!(&v.as_bytes()[..14], &fresh.as_bytes()[..14]);
            assert_eq!(&v.as_bytes()[15..], &fresh.as_bytes()[15..]);
        }
        assert_eq!(
            with_rid_status(&fresh, RidStatus::NoTrace),
            None,
            "already so"
        );
        assert_eq!(rid_status(b"not-a-uuid"), None);
        assert_eq!(
            with_rid_status(&HeaderValue::from_static("abc"), RidStatus::Sampled),
            None
        );
        assert_eq!(rid_sample_value(fresh.as_bytes()), Some(0x1b4e28ba));
        assert_eq!(
            rid_sample_value(b"zzzzzzzz-2fa1-41d2-883f-0016d3cca427"),
            None
        );
    }
}
