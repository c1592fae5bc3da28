//! Reading the parent span from a request (W3C trace context, then B3 single and multi) and
//! writing the current span into the request the app makes next.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::Context;
use std::str::FromStr as _;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::TraceContextPropagator;

const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");

/// A context whose parent is the span named by `headers`: W3C `traceparent`/`tracestate` if
/// valid, else B3 single `b3`, else B3 multi `x-b3-*`; an empty context if none is valid.
pub fn extract(headers: &HeaderMap) -> Context {
    match extract_w3c(headers).or_else(|| extract_b3(headers)) {
        Some(sc) => Context::new().with_remote_span_context(sc),
        None => Context::new(),
    }
}

/// Writes the span of `cx` as the parent of the request being made: `traceparent` and
/// `tracestate` and B3 multi (the formats a sidecar reads); the B3 single header and a
/// `x-b3-parentspanid` copied from the request served would name the old parent, so they go.
/// Does nothing when `cx` has no valid span.
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    let span = cx.span();
    let sc = span.span_context();
    if !sc.is_valid() {
        return;
    }
    headers.remove("tracestate");
    TraceContextPropagator::new().inject_context(cx, &mut HeaderInjector(headers));
    headers.remove(B3);
    headers.remove(B3_PARENT);
    let sampled = if sc.is_sampled() { "1" } else { "0" };
    for (name, value) in [
        (B3_TRACE_ID, sc.trace_id().to_string()),
        (B3_SPAN_ID, sc.span_id().to_string()),
        (B3_SAMPLED, sampled.to_owned()),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

/// `traceparent` as the W3C spec reads it: `VV-<32 hex>-<16 hex>-FF`, lower-case hex, version
/// `ff` invalid, version `00` exactly four fields (later versions may add fields), ids not all
/// zero. Only the sampled bit of the flags is kept. Every `tracestate` value, joined.
fn extract_w3c(headers: &HeaderMap) -> Option<SpanContext> {
    let tp = header(headers, &HeaderName::from_static("traceparent"))?;
    let parts: Vec<&str> = tp.split('-').collect();
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
    };
    if parts.len() < 4
        || !lower_hex(parts[0], 2)
        || parts[0] == "ff"
        || (parts[0] == "00" && parts.len() != 4)
        || !lower_hex(parts[1], 32)
        || !lower_hex(parts[2], 16)
        || !lower_hex(parts[3], 2)
    {
        return None;
    }
    let trace = trace_id(parts[1])?;
    let span = span_id(parts[2])?;
    let flags = u8::from_str_radix(parts[3], 16).ok()?;
    let state: Vec<&str> = headers
        .get_all("tracestate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let state = TraceState::from_str(&state.join(",")).unwrap_or_default();
    Some(SpanContext::new(
        trace,
        span,
        TraceFlags::new(flags) & TraceFlags::SAMPLED,
        true,
        state,
    ))
}

fn header<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A trace id of 16 or 32 hex digits (a 64-bit one is padded on the left), never all zero.
fn trace_id(s: &str) -> Option<TraceId> {
    if !(s.len() == 16 || s.len() == 32) || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    TraceId::from_hex(s)
        .ok()
        .filter(|id| *id != TraceId::INVALID)
}

fn span_id(s: &str) -> Option<SpanId> {
    if s.len() != 16 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    SpanId::from_hex(s).ok().filter(|id| *id != SpanId::INVALID)
}

/// `1`, `true` or debug (`d`, `x-b3-flags: 1`) sample; `0` or no decision do not.
fn b3_flags(sampled: Option<&str>, debug: bool) -> TraceFlags {
    if debug || matches!(sampled, Some("1" | "d" | "true")) {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    }
}

fn extract_b3(headers: &HeaderMap) -> Option<SpanContext> {
    if let Some(single) = header(headers, &B3) {
        // {traceid}-{spanid}[-{sampled}[-{parentspanid}]]; a bare `0`/`1`/`d` has no ids.
        let mut parts = single.split('-');
        let (Some(t), Some(s)) = (parts.next(), parts.next()) else {
            return None;
        };
        let flags = b3_flags(parts.next(), false);
        return Some(SpanContext::new(
            trace_id(t)?,
            span_id(s)?,
            flags,
            true,
            TraceState::default(),
        ));
    }
    let t = trace_id(header(headers, &B3_TRACE_ID)?)?;
    let s = span_id(header(headers, &B3_SPAN_ID)?)?;
    let debug = header(headers, &B3_FLAGS) == Some("1");
    let flags = b3_flags(header(headers, &B3_SAMPLED), debug);
    Some(SpanContext::new(t, s, flags, true, TraceState::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn ids(cx: &Context) -> (String, String, bool) {
        let span = cx.span();
        let sc = span.span_context();
        (
            sc.trace_id().to_string(),
            sc.span_id().to_string(),
            sc.is_sampled(),
        )
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn w3c_wins_then_b3_single_then_multi() {
        let cx = extract(&map(&[
            ("traceparent", TP),
            ("tracestate", "k=v"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0"),
        ]));
        assert_eq!(
            ids(&cx),
            (
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into(),
                true
            )
        );
        assert_eq!(cx.span().span_context().trace_state().get("k"), Some("v"));

        let cx = extract(&map(&[
            (
                "traceparent",
                "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-future",
            ),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ]));
        let span = cx.span();
        let sc = span.span_context();
        assert!(
            sc.is_valid() && sc.is_sampled(),
            "a later version's extra field is allowed"
        );
        assert_eq!(sc.trace_state().header(), "a=1,b=2");

        let cx = extract(&map(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            (
                "b3",
                "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
            ),
            ("x-b3-traceid", "1111111111111111"),
            ("x-b3-spanid", "2222222222222222"),
        ]));
        assert_eq!(
            ids(&cx),
            (
                "80f198ee56343ba864fe8b2a57d3eff7".into(),
                "e457b5a2e4d86bd1".into(),
                true
            )
        );

        let cx = extract(&map(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "0"),
        ]));
        assert_eq!(
            ids(&cx),
            (
                "0000000000000000463ac35c9f6413ad".into(),
                "a2fb4a1d1a96d312".into(),
                false
            )
        );
        let cx = extract(&map(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-flags", "1"),
        ]));
        assert!(ids(&cx).2, "debug samples");
    }

    #[test]
    fn nothing_valid_gives_no_parent() {
        for bad in [
            vec![],
            vec![("b3", "0")],
            vec![("b3", "zz-e457b5a2e4d86bd1-1")],
            vec![("x-b3-traceid", "463ac35c9f6413ad")],
            vec![
                ("x-b3-traceid", "0000000000000000"),
                ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ],
            vec![("traceparent", "00-abc-def-01")],
            vec![(
                "traceparent",
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            )],
            vec![(
                "traceparent",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )],
            vec![(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            )],
            vec![(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            )],
        ] {
            let cx = extract(&map(&bad));
            assert!(!cx.span().span_context().is_valid(), "{bad:?}");
        }
    }

    #[test]
    fn inject_names_the_current_span_in_both_formats() {
        let sc = SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap(),
            SpanId::from_hex("1111111111111111").unwrap(),
            TraceFlags::SAMPLED,
            false,
            TraceState::from_key_value([("k", "v")]).unwrap(),
        );
        let cx = Context::new().with_remote_span_context(sc);
        let mut h = map(&[
            ("traceparent", TP),
            ("tracestate", "old=1"),
            ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1"),
            ("x-b3-parentspanid", "05e3ac9a4f6e3b90"),
            ("x-request-id", "r1"),
        ]);
        inject(&cx, &mut h);
        assert_eq!(
            h.get("traceparent").unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
        );
        assert_eq!(h.get_all("tracestate").iter().count(), 1);
        assert_eq!(h.get("tracestate").unwrap(), "k=v");
        assert_eq!(
            h.get("x-b3-traceid").unwrap(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(h.get("x-b3-spanid").unwrap(), "1111111111111111");
        assert_eq!(h.get("x-b3-sampled").unwrap(), "1");
        assert!(!h.contains_key("b3"));
        assert!(!h.contains_key("x-b3-parentspanid"));
        assert_eq!(h.get("x-request-id").unwrap(), "r1");

        let mut untouched = map(&[("traceparent", TP)]);
        inject(&Context::new(), &mut untouched);
        assert_eq!(untouched.get("traceparent").unwrap(), TP);
    }
}
