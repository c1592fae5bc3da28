//! The tracing store's Zipkin v2 JSON decoder: request bodies a peer controls.
//!
//! Input: the body of `POST /api/v2/spans`.
//!
//! Invariants: nothing panics; with a budget of N items no more than N spans come out; a
//! body refused for its size under a small budget is refused (or decodes) under a larger one,
//! never the other way round; every span has non-zero ids, no parent equal to itself, and a
//! service name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_trace_store::zipkin;

fuzz_target!(|data: &[u8]| {
    let small = zipkin::decode(data, 64, 1);
    let large = zipkin::decode(data, 1 << 16, 1);
    if let Ok(spans) = &small {
        assert!(spans.len() <= 64);
        assert_eq!(large.as_ref().map(Vec::len).ok(), Some(spans.len()));
    }
    if let Ok(spans) = &large {
        for s in spans {
            assert_ne!(s.trace_id.0, 0);
            assert_ne!(s.span_id, 0);
            assert_ne!(s.parent_id, Some(s.span_id));
            assert!(!s.service.is_empty());
        }
    }
});
