//! Istio's TCP metadata exchange frame: what each side of a mesh mTLS connection that
//! negotiated ALPN `istio-peer-exchange` writes first. Magic `0x3D230467` and the body length
//! (4 bytes each, big-endian), then a `google.protobuf.Any` holding a `Struct` with the node
//! metadata under `x-envoy-peer-metadata` and the node id under `x-envoy-peer-metadata-id`.
//!
//! Only the codec so far: mesh TCP connections do not run the exchange yet.
#![cfg_attr(
    not(feature = "fuzzing"),
    allow(dead_code, reason = "mesh TCP connections do not run the exchange yet")
)]

use super::peer::{
    DecodeError, PEER_METADATA, PEER_METADATA_ID, PeerMetadata, Reader, Struct, Value,
    decode_struct, encode_struct, put_bytes, utf8,
};

/// The first 4 bytes of Istio's TCP metadata exchange frame (big-endian).
pub const EXCHANGE_MAGIC: u32 = 0x3D23_0467;
/// The longest exchange frame body accepted.
pub const MAX_FRAME_BYTES: usize = 16 * 1024;
/// The `google.protobuf.Any` type of the frame body.
const STRUCT_TYPE_URL: &str = "type.googleapis.com/google.protobuf.Struct";

/// Why a TCP exchange frame was not read (the peer's labels then stay `unknown`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first 4 bytes are not [`EXCHANGE_MAGIC`].
    #[error("not a peer metadata exchange frame: magic {0:#010x}, want 0x3d230467")]
    Magic(u32),
    /// The announced body is over [`MAX_FRAME_BYTES`].
    #[error("peer metadata exchange frame of {0} bytes, more than the {MAX_FRAME_BYTES} accepted")]
    TooLarge(usize),
    /// The body is an `Any` of another type.
    #[error("peer metadata exchange frame holds {0:?}, not a google.protobuf.Struct")]
    Type(String),
    /// The body does not decode.
    #[error("peer metadata exchange frame: {0}")]
    Decode(#[from] DecodeError),
}

/// The frame a side writes after the mTLS handshake: magic, body length (both 4 bytes,
/// big-endian), then a `google.protobuf.Any` holding a Struct with the node metadata under
/// `x-envoy-peer-metadata` and the node id under `x-envoy-peer-metadata-id`.
pub fn exchange_frame(me: &PeerMetadata, id: &str) -> Vec<u8> {
    let mut outer = Struct::new();
    outer.insert(
        PEER_METADATA.as_str().to_string(),
        Value::Struct(me.to_struct()),
    );
    outer.insert(
        PEER_METADATA_ID.as_str().to_string(),
        Value::String(id.to_string()),
    );
    let mut any = Vec::new();
    put_bytes(&mut any, 0x0A, STRUCT_TYPE_URL.as_bytes());
    put_bytes(&mut any, 0x12, &encode_struct(&outer));
    let mut frame = Vec::with_capacity(8 + any.len());
    frame.extend_from_slice(&EXCHANGE_MAGIC.to_be_bytes());
    frame.extend_from_slice(&(any.len() as u32).to_be_bytes());
    frame.extend_from_slice(&any);
    frame
}

/// The body length a frame's 8-byte head announces.
pub fn frame_len(head: [u8; 8]) -> Result<usize, FrameError> {
    let magic = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    if magic != EXCHANGE_MAGIC {
        return Err(FrameError::Magic(magic));
    }
    let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
    if len > MAX_FRAME_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    Ok(len)
}

/// The peer's metadata and node id from a frame body (the `Any`).
pub fn parse_frame_body(body: &[u8]) -> Result<(PeerMetadata, String), FrameError> {
    let mut r = Reader { buf: body };
    let (mut type_url, mut value): (String, &[u8]) = (String::new(), &[]);
    while !r.done() {
        match r.key()? {
            (1, 2) => type_url = utf8(r.len_delimited()?)?,
            (2, 2) => value = r.len_delimited()?,
            (_, wt) => r.skip(wt)?,
        }
    }
    if type_url != STRUCT_TYPE_URL {
        return Err(FrameError::Type(type_url));
    }
    let outer = decode_struct(value)?;
    let meta = match outer.get(PEER_METADATA.as_str()) {
        Some(Value::Struct(s)) => PeerMetadata::from_struct(s),
        _ => PeerMetadata::default(),
    };
    let id = match outer.get(PEER_METADATA_ID.as_str()) {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    Ok((meta, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn the_tcp_exchange_frame_is_byte_exact_and_reads_back() {
        let me = PeerMetadata {
            name: "a".into(),
            ..PeerMetadata::default()
        };
        let frame = exchange_frame(&me, "x");
        let mut want = hex("3d230467 00000079");
        want.extend_from_slice(b"\x0a\x2a");
        want.extend_from_slice(b"type.googleapis.com/google.protobuf.Struct");
        // Any.value: the outer Struct, keys sorted ("...-metadata" before "...-metadata-id").
        want.extend_from_slice(b"\x12\x4b\x0a\x28\x0a\x15");
        want.extend_from_slice(b"x-envoy-peer-metadata");
        want.extend_from_slice(b"\x12\x0f\x2a\x0d");
        want.extend_from_slice(&hex("0a0b 0a04 4e414d45 1203 1a01 61"));
        want.extend_from_slice(b"\x0a\x1f\x0a\x18");
        want.extend_from_slice(b"x-envoy-peer-metadata-id");
        want.extend_from_slice(b"\x12\x03\x1a\x01x");
        assert_eq!(frame, want);

        let head: [u8; 8] = frame[..8].try_into().unwrap();
        assert_eq!(frame_len(head), Ok(frame.len() - 8));
        assert_eq!(parse_frame_body(&frame[8..]), Ok((me, "x".to_string())));
    }

    #[test]
    fn a_bad_frame_is_refused() {
        assert_eq!(frame_len(*b"GET / HT"), Err(FrameError::Magic(0x4745_5420)));
        let mut head = [0u8; 8];
        head[..4].copy_from_slice(&EXCHANGE_MAGIC.to_be_bytes());
        head[4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(
            frame_len(head),
            Err(FrameError::TooLarge(u32::MAX as usize))
        );
        let mut other = Vec::new();
        put_bytes(
            &mut other,
            0x0A,
            b"type.googleapis.com/google.protobuf.Empty",
        );
        assert!(matches!(parse_frame_body(&other), Err(FrameError::Type(_))));
        assert!(matches!(
            parse_frame_body(&hex("0a05 74")),
            Err(FrameError::Decode(DecodeError::Truncated))
        ));
    }
}
