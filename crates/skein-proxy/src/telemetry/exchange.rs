//! Istio's TCP metadata exchange frame: what each side of a mesh mTLS connection that
//! negotiated ALPN `istio-peer-exchange` writes first. Magic `0x3D230467` and the body length
//! (4 bytes each, big-endian), then a `google.protobuf.Any` holding a `Struct` with the node
//! metadata under `x-envoy-peer-metadata` and the node id under `x-envoy-peer-metadata-id`.
//! A client offers ALPN `istio-peer-exchange` (then `istio`) on mesh TCP connections; when
//! the server picks it, each side writes its frame right after the handshake and reads the
//! other's. The proxy's own header pair and frame ([`OwnPeer`]) are made once per snapshot.

use std::time::Duration;

use skein_snapshot::Node;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::peer::{
    DecodeError, PEER_METADATA, PEER_METADATA_ID, PeerMetadata, Reader, Struct, Value,
    decode_struct, encode_struct, node_id, put_bytes, utf8,
};

/// The ALPN a client offers (before `istio`) to say it speaks the TCP exchange.
pub const EXCHANGE_ALPN: &[u8] = b"istio-peer-exchange";
/// How long a side waits for the other's frame.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);

/// The proxy's own pair of exchange headers, made once per snapshot (its node).
#[derive(Debug)]
pub struct OwnPeer {
    /// `x-envoy-peer-metadata`.
    pub metadata: http::HeaderValue,
    /// `x-envoy-peer-metadata-id`.
    pub id: http::HeaderValue,
    /// The TCP exchange frame.
    pub frame: Vec<u8>,
}

impl OwnPeer {
    /// The headers for `node`; None when the node says nothing about its workload (no
    /// snapshot yet) or its names cannot be a header value.
    pub fn new(node: &Node, gateway: bool) -> Option<Self> {
        if node.pod.is_empty() && node.workload.is_empty() {
            return None;
        }
        let me = PeerMetadata::from_node(node);
        let id = node_id(node, gateway);
        Some(OwnPeer {
            metadata: http::HeaderValue::try_from(me.header_value()).ok()?,
            frame: exchange_frame(&me, &id),
            id: http::HeaderValue::try_from(id).ok()?,
        })
    }

    /// Sets both headers (replacing any the app sent).
    pub fn insert(&self, headers: &mut http::HeaderMap) {
        headers.insert(PEER_METADATA.clone(), self.metadata.clone());
        headers.insert(PEER_METADATA_ID.clone(), self.id.clone());
    }
}

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
    /// The connection failed or ended before the frame was read.
    #[error("peer metadata exchange: {0}")]
    Io(String),
    /// The frame did not arrive within [`EXCHANGE_TIMEOUT`].
    #[error("peer metadata exchange: no frame from the peer within {EXCHANGE_TIMEOUT:?}")]
    Timeout,
}

/// Writes `own` (a frame) and reads the peer's, within [`EXCHANGE_TIMEOUT`]: the peer's
/// metadata and node id.
#[cfg(test)]
pub async fn exchange<S>(io: &mut S, own: &[u8]) -> Result<(PeerMetadata, String), FrameError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    exchange_or_rest(io, own).await.0
}

/// [`exchange`], and when no valid frame came, the bytes read from the peer meanwhile: as
/// Envoy's filter does, a connection whose peer does not speak the exchange is not closed;
/// it goes on with those bytes first and the peer `unknown`.
pub async fn exchange_or_rest<S>(
    io: &mut S,
    own: &[u8],
) -> (Result<(PeerMetadata, String), FrameError>, Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut got = Vec::with_capacity(8);
    let deadline = tokio::time::Instant::now() + EXCHANGE_TIMEOUT;
    let r = tokio::time::timeout_at(deadline, read_exchange(io, own, &mut got))
        .await
        .unwrap_or(Err(FrameError::Timeout));
    match r {
        Ok(peer) => (Ok(peer), Vec::new()),
        Err(e) => (Err(e), got),
    }
}

/// Writes `own`, then reads the peer's frame into `got` (cancel-safe: `read` loses no
/// bytes, what was read stays in `got`).
async fn read_exchange<S>(
    io: &mut S,
    own: &[u8],
    got: &mut Vec<u8>,
) -> Result<(PeerMetadata, String), FrameError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let io_err = |e: std::io::Error| FrameError::Io(e.to_string());
    io.write_all(own).await.map_err(io_err)?;
    io.flush().await.map_err(io_err)?;
    let mut want = 8;
    let mut len = None;
    let mut chunk = [0u8; 1024];
    loop {
        // Never past the frame: the app's bytes after it stay in the stream.
        while got.len() < want {
            let room = (want - got.len()).min(chunk.len());
            let n = io.read(&mut chunk[..room]).await.map_err(io_err)?;
            if n == 0 {
                return Err(FrameError::Io("connection closed".into()));
            }
            got.extend_from_slice(&chunk[..n]);
        }
        match len {
            None => {
                let mut head = [0u8; 8];
                head.copy_from_slice(&got[..8]);
                let n = frame_len(head)?;
                len = Some(n);
                want = 8 + n;
                got.reserve(n);
            }
            Some(_) => return parse_frame_body(&got[8..want]),
        }
    }
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

    #[tokio::test(start_paused = true)]
    async fn both_sides_exchange_frames_and_a_silent_or_foreign_peer_fails() {
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        let web = PeerMetadata {
            workload: "web".into(),
            ..PeerMetadata::default()
        };
        let db = PeerMetadata {
            workload: "db".into(),
            ..PeerMetadata::default()
        };
        let (fa, fb) = (exchange_frame(&web, "id-web"), exchange_frame(&db, "id-db"));
        let (ra, rb) = tokio::join!(exchange(&mut a, &fa), exchange(&mut b, &fb));
        assert_eq!(ra, Ok((db, "id-db".to_string())));
        assert_eq!(rb, Ok((web, "id-web".to_string())));

        // A peer that says nothing: the wait is bounded.
        let (mut a, _b) = tokio::io::duplex(64 * 1024);
        assert_eq!(exchange(&mut a, &fa).await, Err(FrameError::Timeout));
        // A peer that speaks something else.
        let (mut a, mut b) = tokio::io::duplex(64 * 1024);
        b.write_all(b"\x00\x00\x00\x0aJ5.7.0-log").await.unwrap();
        assert_eq!(
            exchange(&mut a, &fa).await,
            Err(FrameError::Magic(0x0000_000a))
        );
    }
}
