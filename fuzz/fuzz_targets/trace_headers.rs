//! The trace header parsers (B3 single and multi, W3C `traceparent`, the `x-request-id`
//! status): values a client controls on every request.
//!
//! Input: lines; the first is a `b3` value, the second a `traceparent` value, the rest
//! `name: value` headers of a request (any of `b3`, `x-b3-*`, `traceparent`,
//! `x-request-id`).
//!
//! Invariants: nothing panics; a context parsed from either format has a non-zero trace id
//! and span id; what the proxy writes for a context reads back as the same context and
//! decision (a 64-bit B3 id stays 64-bit); marking a request id changes only its 15th
//! character and keeps it a valid header value of the same length.
#![no_main]

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use skein_proxy::fuzzing::{request_id_marked, trace_parse, trace_reinject};

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let b3 = lines.next().unwrap_or_default();
    let traceparent = lines.next().unwrap_or_default();
    let mut h = HeaderMap::new();
    for line in lines {
        let Some(i) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(line[..i].trim_ascii()),
            HeaderValue::from_bytes(line[i + 1..].trim_ascii()),
        ) else {
            continue;
        };
        h.append(n, v);
    }
    for got in trace_parse(b3, traceparent, &h).into_iter().flatten() {
        let Some((high, low, span, debug)) = got.context else {
            continue;
        };
        assert!(high != 0 || low != 0, "an all-zero trace id was accepted");
        assert!(span != 0, "a zero span id was accepted");
        let sampled = got.sampled.unwrap_or(false) || debug;
        let back = trace_reinject((high, low, span), sampled);
        assert_eq!(back.context, Some((high, low, span, false)));
        assert_eq!(back.sampled, Some(sampled));
    }
    if let Some(id) = h.get("x-request-id")
        && let Some(marked) = request_id_marked(id)
    {
        let (a, b) = (id.as_bytes(), marked.as_bytes());
        assert_eq!(a.len(), 36);
        assert_eq!(b.len(), 36);
        assert_eq!(b[14], b'9');
        assert!(a.iter().zip(b).enumerate().all(|(i, (x, y))| i == 14 || x == y));
    }
});
