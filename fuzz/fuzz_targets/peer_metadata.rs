//! The peer metadata decoder: `x-envoy-peer-metadata` values and raw protobuf `Struct`s a
//! peer controls.
//!
//! Input: the first byte picks the form (modulo 3 — 0: the header value as sent, base64;
//! 1: the decoded protobuf bytes; 2: a TCP exchange frame, head and body), the rest is the
//! input.
//!
//! Invariants: nothing panics; a header over `MAX_HEADER_BYTES` is refused before it is
//! decoded; a Struct that decodes re-encodes canonically (encoding what the canonical bytes
//! decode to gives the same bytes) and nests no deeper than `MAX_DEPTH`; a frame head with the
//! wrong magic or a body over `MAX_FRAME_BYTES` is refused, and a body that parses re-encodes
//! to a frame that parses to the same peer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use skein_proxy::fuzzing::{
    DecodeError, EXCHANGE_MAGIC, FrameError, MAX_DEPTH, MAX_FRAME_BYTES, MAX_HEADER_BYTES,
    PeerMetadata, Struct, Value, decode_struct, encode_struct, exchange_frame, frame_len,
    parse_frame_body,
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
    if form % 3 == 2 {
        let Some((head, body)) = input.split_first_chunk::<8>() else {
            return;
        };
        let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        match frame_len(*head) {
            Ok(n) => assert!(magic == EXCHANGE_MAGIC && n == len && n <= MAX_FRAME_BYTES),
            Err(FrameError::Magic(m)) => assert!(m == magic && m != EXCHANGE_MAGIC),
            Err(FrameError::TooLarge(n)) => assert!(n == len && n > MAX_FRAME_BYTES),
            Err(e) => panic!("a frame head cannot fail with {e}"),
        }
        if let Ok((peer, id)) = parse_frame_body(body) {
            let again = exchange_frame(&peer, &id);
            let (p2, id2) = parse_frame_body(&again[8..]).expect("a written frame parses");
            assert_eq!((p2, id2), (peer.clone(), id.clone()));
        }
        return;
    }
    if form % 3 == 0 {
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
