//! The peer metadata decoder: `x-envoy-peer-metadata` values and raw protobuf `Struct`s a
//! peer controls.
//!
//! Input: the first byte picks the form (even: the header value as sent, base64; odd: the
//! decoded protobuf bytes), the rest is the input.
//!
//! Invariants: nothing panics; a header over `MAX_HEADER_BYTES` is refused before it is
//! decoded; a Struct that decodes re-encodes canonically (encoding what the canonical bytes
//! decode to gives the same bytes) and nests no deeper than `MAX_DEPTH`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_proxy::fuzzing::{
    DecodeError, MAX_DEPTH, MAX_HEADER_BYTES, PeerMetadata, Struct, Value, decode_struct,
    encode_struct,
};

fn depth(s: &Struct) -> usize {
    s.values().map(value_depth).max().unwrap_or(0)
}

fn value_depth(v: &Value) -> usize {
    match v {
        Value::Struct(s) => 1 + depth(s),
        Value::List(l) => 1 + l.iter().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((form, input)) = data.split_first() else {
        return;
    };
    if form % 2 == 0 {
        let got = PeerMetadata::from_header(input);
        if input.len() > MAX_HEADER_BYTES {
            assert_eq!(got, Err(DecodeError::TooLarge(input.len())));
        }
        return;
    }
    let Ok(s) = decode_struct(input) else {
        return;
    };
    assert!(depth(&s) <= MAX_DEPTH, "nested {} deep", depth(&s));
    let canonical = encode_struct(&s);
    let again = decode_struct(&canonical).expect("a canonical encoding decodes");
    assert_eq!(encode_struct(&again), canonical);
    let _ = PeerMetadata::from_struct(&s);
});
