//! The push stream between the control plane and a proxy.
//!
//! One TLS connection per proxy, on loopback (the control plane's serving certificate is
//! verified against the mesh root the proxy was given at start). Each message is a frame: a 4-byte big-endian
//! length, then that many bytes of JSON. The proxy speaks first with [`ProxyMessage::Hello`];
//! the control plane answers with a [`ControlMessage::Snapshot`] whenever that proxy's config
//! changes, and the proxy answers every snapshot with an `Ack` (applied) or a `Nack` (refused,
//! the previous config stays in force). When only endpoints changed, the control plane may send
//! [`ControlMessage::Clusters`] instead: the changed clusters, applied on top of the version they
//! name and answered the same way. Either side closing the connection ends the stream; the
//! proxy reconnects with backoff and keeps serving its last config meanwhile.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Snapshot;

/// Frames larger than this are refused (a snapshot of a large mesh is a few MiB). The limit of
/// control-to-proxy frames, and the default of [`read_frame`] and [`read_frame_bytes`].
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The limit of proxy-to-control frames (hello, ACK/NACK, CSR: each well under a few KiB), so
/// that a peer cannot make the control plane buffer [`MAX_FRAME`] per connection.
pub const MAX_PROXY_FRAME: usize = 64 * 1024;

/// A frame's announced length, and the limit it exceeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Oversize {
    /// The frame's length.
    pub len: usize,
    /// The reader's or writer's limit.
    pub limit: usize,
}

/// What a proxy sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProxyMessage {
    /// First message: who this proxy is.
    Hello {
        /// Proxy id: the pod name for a sidecar, the gateway's name for a gateway.
        node: String,
        /// The pod's namespace.
        namespace: String,
        /// Version of the config the proxy is running (after a reconnect), if any.
        #[serde(default)]
        current_version: Option<String>,
        /// The pod's bootstrap credential (the contents of the token file the runtime wrote
        /// for it), sent only over a TLS stream whose server certificate chained to the pinned
        /// mesh root, and only while the proxy has no valid certificate to present instead.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bootstrap_token: Option<String>,
    },
    /// A certificate signing request for the proxy's workload identity (PEM, PKCS#10). The
    /// key stays in the proxy; the control plane decides the identity from the pod's
    /// ServiceAccount, whatever the CSR asks for.
    CertificateRequest {
        /// The CSR.
        csr_pem: String,
    },
    /// The snapshot of this version is in force.
    Ack {
        /// Snapshot version.
        version: String,
    },
    /// The snapshot of this version was refused; the previous one stays in force.
    Nack {
        /// Snapshot version.
        version: String,
        /// Why, as the proxy reported it.
        error: String,
    },
}

/// What the control plane sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    /// The proxy's complete new config.
    Snapshot {
        /// The snapshot.
        snapshot: Box<Snapshot>,
    },
    /// Clusters that replace the ones of the same names in the snapshot of `base_version`,
    /// making the snapshot of `version`: the rest of it is unchanged (an endpoint change, like
    /// Envoy's EDS next to a full push). The proxy applies it only on top of `base_version`,
    /// as a whole (else it refuses it and keeps its config), and answers with an `Ack` or a
    /// `Nack` of `version`; a control plane that gets the `Nack` sends the full snapshot.
    Clusters {
        /// The version this makes.
        version: String,
        /// The version it applies to.
        base_version: String,
        /// The new clusters, each replacing the one of its name.
        clusters: Vec<crate::Cluster>,
    },
    /// A signed workload certificate, answering a `CertificateRequest`.
    Certificate {
        /// Leaf first, then intermediates (PEM).
        cert_chain_pem: String,
        /// The mesh's trust bundle: root certificates (PEM).
        root_cert_pem: String,
        /// The SPIFFE identity in the certificate.
        identity: String,
        /// When it expires (Unix seconds); the proxy renews at about 80% of its life.
        not_after: i64,
    },
    /// The certificate request was refused.
    CertificateError {
        /// Why.
        message: String,
    },
    /// The control plane cannot serve this proxy (e.g. an unknown node); it closes after this.
    Error {
        /// A message for the proxy's log.
        message: String,
    },
}

/// Errors reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The connection failed.
    #[error("config stream I/O: {0}")]
    Io(std::io::Error),
    /// The peer closed the connection.
    #[error("config stream closed by the peer")]
    Closed,
    /// A frame was larger than the limit ([`MAX_FRAME`] unless the reader was given another).
    #[error(
        "config stream frame of {} bytes exceeds the {}-byte limit",
        .0.len,
        .0.limit
    )]
    TooLarge(Oversize),
    /// A frame was not valid JSON for the expected message.
    #[error("config stream frame is not a valid message: {0}")]
    Json(serde_json::Error),
}

// By hand rather than `#[from]`: the messages already say the cause, so it is not also
// returned as `source()` (an error chain would print it twice).
impl From<std::io::Error> for StreamError {
    fn from(e: std::io::Error) -> Self {
        StreamError::Io(e)
    }
}

impl From<serde_json::Error> for StreamError {
    fn from(e: serde_json::Error) -> Self {
        StreamError::Json(e)
    }
}

/// Writes one message as a frame.
pub async fn write_frame<W, T>(w: &mut W, msg: &T) -> Result<(), StreamError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let body = serde_json::to_vec(msg)?;
    let too_large = || {
        StreamError::TooLarge(Oversize {
            len: body.len(),
            limit: MAX_FRAME,
        })
    };
    if body.len() > MAX_FRAME {
        return Err(too_large());
    }
    let len = u32::try_from(body.len()).map_err(|_| too_large())?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&body);
    w.write_all(&buf).await?;
    w.flush().await?;
    Ok(())
}

/// Writes one frame of a message serialised already (`body`: its JSON).
pub async fn write_frame_bytes<W>(w: &mut W, body: &[u8]) -> Result<(), StreamError>
where
    W: AsyncWrite + Unpin,
{
    let too_large = || {
        StreamError::TooLarge(Oversize {
            len: body.len(),
            limit: MAX_FRAME,
        })
    };
    if body.len() > MAX_FRAME {
        return Err(too_large());
    }
    let len = u32::try_from(body.len()).map_err(|_| too_large())?;
    w.write_all(&len.to_be_bytes()).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

/// Reads one frame's bytes, of at most [`MAX_FRAME`].
pub async fn read_frame_bytes<R>(r: &mut R) -> Result<Vec<u8>, StreamError>
where
    R: AsyncRead + Unpin,
{
    read_frame_bytes_limited(r, MAX_FRAME).await
}

/// Reads one frame's bytes, of at most `limit`: a larger announced length is refused before
/// anything of the body is read or allocated. The buffer grows with the data rather than
/// trusting the announced length up front, so a peer cannot make the reader allocate `limit`
/// with four bytes; and it never grows past the announced length, so the reader never
/// allocates more than `limit` however the body arrives.
pub async fn read_frame_bytes_limited<R>(r: &mut R, limit: usize) -> Result<Vec<u8>, StreamError>
where
    R: AsyncRead + Unpin,
{
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(StreamError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > limit {
        return Err(StreamError::TooLarge(Oversize { len, limit }));
    }
    // At most 1 MiB before any of the body has arrived, then doubling with what has arrived,
    // capped at `len` (`reserve_exact`: `read_to_end`'s own growth overshoots `len`).
    let mut body = vec![0u8; len.min(1 << 20)];
    let mut filled = 0;
    while filled < len {
        if filled == body.len() {
            let grow = (len - filled).min(filled);
            body.reserve_exact(grow);
            body.resize(filled + grow, 0);
        }
        let n = r.read(&mut body[filled..]).await?;
        if n == 0 {
            return Err(StreamError::Closed);
        }
        filled += n;
    }
    Ok(body)
}

/// Reads one frame of at most [`MAX_FRAME`] and parses it.
pub async fn read_frame<R, T>(r: &mut R) -> Result<T, StreamError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    read_frame_limited(r, MAX_FRAME).await
}

/// Reads one frame of at most `limit` bytes (see [`read_frame_bytes_limited`]) and parses it.
pub async fn read_frame_limited<R, T>(r: &mut R, limit: usize) -> Result<T, StreamError>
where
    R: AsyncRead + Unpin,
    T: for<'de> Deserialize<'de>,
{
    let body = read_frame_bytes_limited(r, limit).await?;
    Ok(serde_json::from_slice(&body)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_frames_are_errors() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let hello = ProxyMessage::Hello {
            node: "web-1".into(),
            namespace: "blog-system".into(),
            current_version: None,
            bootstrap_token: None,
        };
        write_frame(&mut a, &hello).await.unwrap();
        let got: ProxyMessage = read_frame(&mut b).await.unwrap();
        assert_eq!(got, hello);

        let snap = ControlMessage::Snapshot {
            snapshot: Box::new(Snapshot {
                version: "7".into(),
                ..Default::default()
            }),
        };
        write_frame(&mut b, &snap).await.unwrap();
        let got: ControlMessage = read_frame(&mut a).await.unwrap();
        assert_eq!(got, snap);

        // An oversized length is refused before anything is allocated.
        a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        assert!(matches!(
            read_frame::<_, ProxyMessage>(&mut b).await,
            Err(StreamError::TooLarge(_))
        ));

        // Garbage is a JSON error, and a closed peer is `Closed`.
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&3u32.to_be_bytes()).await.unwrap();
        a.write_all(b"{x}").await.unwrap();
        assert!(matches!(
            read_frame::<_, ProxyMessage>(&mut b).await,
            Err(StreamError::Json(_))
        ));
        drop(a);
        assert!(matches!(
            read_frame::<_, ProxyMessage>(&mut b).await,
            Err(StreamError::Closed)
        ));
    }

    #[tokio::test]
    async fn a_body_that_arrives_in_small_pieces_grows_the_buffer_no_further_than_its_length() {
        // Found by fuzzing: a 28-byte frame read through 3-byte reads left a 112-byte buffer.
        let (mut a, mut b) = tokio::io::duplex(3);
        let body = br#"{"type":"ack","version":"7"}"#;
        let writer = async {
            a.write_all(&u32::try_from(body.len()).unwrap().to_be_bytes())
                .await
                .unwrap();
            a.write_all(body).await.unwrap();
        };
        let (got, ()) = tokio::join!(read_frame_bytes_limited(&mut b, body.len()), writer);
        let got = got.unwrap();
        assert_eq!(got, body);
        assert!(got.capacity() <= body.len(), "{}", got.capacity());
    }

    #[tokio::test]
    async fn a_reader_refuses_a_frame_over_its_limit_before_reading_the_body() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        // Exactly the limit is accepted.
        let body = vec![b' '; MAX_PROXY_FRAME];
        a.write_all(&u32::try_from(body.len()).unwrap().to_be_bytes())
            .await
            .unwrap();
        a.write_all(&body).await.unwrap();
        let got = read_frame_bytes_limited(&mut b, MAX_PROXY_FRAME)
            .await
            .unwrap();
        assert_eq!(got.len(), MAX_PROXY_FRAME);

        // One byte more is refused on the length alone: no body is ever sent here, so a reader
        // that waited for it would hang.
        let len = MAX_PROXY_FRAME + 1;
        a.write_all(&u32::try_from(len).unwrap().to_be_bytes())
            .await
            .unwrap();
        let e = read_frame_limited::<_, ProxyMessage>(&mut b, MAX_PROXY_FRAME)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                StreamError::TooLarge(Oversize {
                    len: l,
                    limit: MAX_PROXY_FRAME
                }) if l == len
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "config stream frame of 65537 bytes exceeds the 65536-byte limit"
        );

        // The default reader keeps the larger limit of snapshots.
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let body = format!("\"{}\"", "x".repeat(MAX_PROXY_FRAME));
        a.write_all(&u32::try_from(body.len()).unwrap().to_be_bytes())
            .await
            .unwrap();
        a.write_all(body.as_bytes()).await.unwrap();
        let got: String = read_frame(&mut b).await.unwrap();
        assert_eq!(got.len(), MAX_PROXY_FRAME);
    }
}
