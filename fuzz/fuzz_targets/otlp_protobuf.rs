//! The tracing store's OTLP/HTTP protobuf decoder (`ExportTraceServiceRequest`): request
//! bodies a peer controls.
//!
//! Input: the body of `POST /v1/traces` with `Content-Type: application/x-protobuf`.
//!
//! Invariants: nothing panics; the wire pre-count refuses what holds more messages than the
//! budget before prost allocates them (a body that decodes under a small budget decodes to the
//! same spans under a large one); every span taken has non-zero ids; the spans re-encoded by
//! the forwarder decode to spans with the same ids and times.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use skein_trace_store::{forward, otlp};

fuzz_target!(|data: &[u8]| {
    let small = otlp::decode_protobuf(data, 256);
    let large = otlp::decode_protobuf(data, 1 << 16);
    if let (Ok(a), Ok(b)) = (&small, &large) {
        // Compared as printed: a float tag may be NaN, which is not equal to itself.
        assert_eq!(format!("{:?}", a.spans), format!("{:?}", b.spans));
        assert_eq!(a.rejected, b.rejected);
    }
    if small.is_ok() {
        assert!(large.is_ok());
    }
    if let Ok(d) = large {
        for s in &d.spans {
            assert_ne!(s.trace_id.0, 0);
            assert_ne!(s.span_id, 0);
        }
        let body = forward::encode(&d.spans).encode_to_vec();
        let back = otlp::decode_protobuf(&body, usize::MAX).expect("re-encoded spans decode");
        assert_eq!(back.spans.len(), d.spans.len());
        // The forwarder groups spans by service, so the order may change: compared sorted.
        let key = |s: &skein_trace_store::model::Span| (s.trace_id.0, s.span_id, s.parent_id, s.start_us);
        let mut a: Vec<_> = d.spans.iter().map(key).collect();
        let mut b: Vec<_> = back.spans.iter().map(key).collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b);
    }
});
