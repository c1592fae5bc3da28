//! Inbound protocol detection: peek at the first bytes of a connection, look into a TLS
//! ClientHello without consuming it, and sniff a decrypted mTLS stream.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// A TLS ClientHello: mTLS from a mesh peer, or the app's own TLS.
    Tls,
    /// The HTTP/2 connection preface (h2c prior knowledge).
    Http2,
    /// An HTTP/1 request line.
    Http1,
    /// Anything else, or nothing within the detection timeout (server-first protocols).
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"TRACE ",
    b"CONNECT ",
];

/// Classifies a prefix; None when more bytes are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf[0] == 0x16 {
        return Some(Detected::Tls);
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return if n == H2_PREFACE.len() {
            Some(Detected::Http2)
        } else {
            None
        };
    }
    let mut maybe = false;
    for m in METHODS {
        let k = buf.len().min(m.len());
        if buf[..k] == m[..k] {
            if k == m.len() {
                return Some(Detected::Http1);
            }
            maybe = true;
        }
    }
    if maybe { None } else { Some(Detected::Opaque) }
}

/// Peeks until the protocol is known or `timeout` passes (then: opaque).
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Detected {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = [0u8; 24];
    let mut peeker = None;
    let mut have = 0;
    loop {
        let peeked =
            tokio::time::timeout_at(deadline, peek_more(stream, &mut peeker, &mut buf, have));
        match peeked.await {
            Err(_) | Ok(Err(_)) | Ok(Ok(0)) => return Detected::Opaque,
            Ok(Ok(n)) => {
                if let Some(d) = classify(&buf[..n]) {
                    return d;
                }
                if n == buf.len() {
                    return Detected::Opaque;
                }
                // A partial prefix: wait for the rest.
                have = n;
            }
        }
    }
}

/// Peeks at `stream` into `buf` once more than `have` bytes are there (or `buf` is full, or
/// the peer closed: 0). Waits on the socket's readiness, without consuming anything and
/// without polling: after a peek that brought nothing new, readiness is cleared and the next
/// segment wakes the task. The first call peeks through `stream` itself; later ones through
/// `peeker`, a duplicate of its descriptor made once (std's peek is synchronous, which is what
/// lets the check run inside tokio's readiness guard).
async fn peek_more(
    stream: &TcpStream,
    peeker: &mut Option<std::net::TcpStream>,
    buf: &mut [u8],
    have: usize,
) -> std::io::Result<usize> {
    if have == 0 {
        return stream.peek(buf).await;
    }
    let dup = match peeker {
        Some(d) => d,
        None => {
            use std::os::fd::AsFd;
            let fd = stream.as_fd().try_clone_to_owned()?;
            peeker.insert(std::net::TcpStream::from(fd))
        }
    };
    loop {
        stream.readable().await?;
        let peeked = stream.try_io(tokio::io::Interest::READABLE, || {
            let n = dup.peek(buf)?;
            if n > have || n == buf.len() || n == 0 {
                Ok(n)
            } else {
                Err(std::io::ErrorKind::WouldBlock.into())
            }
        });
        match peeked {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a ClientHello asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// SNI.
    pub sni: Option<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<Vec<u8>>,
}

impl ClientHelloInfo {
    /// A mesh peer's mTLS: Istio's SNI (`outbound_.PORT_.SUBSET_.HOST`) or an `istio*` ALPN.
    /// Anything else is the app's own TLS, which PERMISSIVE passes through untouched.
    pub fn is_mesh(&self) -> bool {
        self.sni
            .as_deref()
            .is_some_and(|s| s.starts_with("outbound_"))
            || self.alpn.iter().any(|p| p.starts_with(b"istio"))
    }
}

/// Largest ClientHello looked at (a hello with post-quantum key shares is a few KiB).
const MAX_HELLO: usize = 16 * 1024 + 5;

/// What [`peek_client_hello`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A complete, valid ClientHello.
    Parsed(ClientHelloInfo),
    /// Not a valid ClientHello (or larger than the proxy looks at), or the peer closed.
    Invalid,
    /// The hello was still incomplete when the timeout passed.
    TimedOut,
}

/// Parses the ClientHello at the start of `stream` without consuming it (the real handshake
/// or the passthrough then sees every byte), waiting for the rest of it on the socket's
/// readiness (no polling) at most `timeout`.
pub async fn peek_client_hello(stream: &TcpStream, timeout: Duration) -> Hello {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_HELLO];
    let mut peeker = None;
    let mut have = 0;
    loop {
        let peeked =
            tokio::time::timeout_at(deadline, peek_more(stream, &mut peeker, &mut buf, have));
        let n = match peeked.await {
            Err(_) => return Hello::TimedOut,
            Ok(Err(_)) | Ok(Ok(0)) => return Hello::Invalid,
            Ok(Ok(n)) => n,
        };
        have = n;
        let mut acceptor = rustls::server::Acceptor::default();
        let mut rd = &buf[..n];
        while !rd.is_empty() {
            match acceptor.read_tls(&mut rd) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Hello::Invalid,
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                return Hello::Parsed(ClientHelloInfo {
                    sni: hello.server_name().map(str::to_string),
                    alpn: hello
                        .alpn()
                        .map(|it| it.map(<[u8]>::to_vec).collect())
                        .unwrap_or_default(),
                });
            }
            // The rest of the hello is on its way.
            Ok(None) if n < buf.len() => {}
            Ok(None) | Err(_) => return Hello::Invalid,
        }
    }
}

/// Reads until the protocol of a decrypted stream is known or `timeout` passes (then:
/// opaque). Returns the bytes read, to be replayed with [`Rewind`].
#[cfg(test)]
pub async fn detect_read<S: AsyncRead + Unpin>(
    io: &mut S,
    timeout: Duration,
) -> (Detected, Vec<u8>) {
    detect_read_from(io, Vec::with_capacity(H2_PREFACE.len()), timeout).await
}

/// Sniffs the protocol like `detect_read`, with `buf` already read from `io`.
pub async fn detect_read_from<S: AsyncRead + Unpin>(
    io: &mut S,
    mut buf: Vec<u8>,
    timeout: Duration,
) -> (Detected, Vec<u8>) {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut chunk = [0u8; H2_PREFACE.len()];
    loop {
        match classify(&buf) {
            // TLS inside mTLS is the app's business: opaque.
            Some(Detected::Tls) => return (Detected::Opaque, buf),
            Some(d) => return (d, buf),
            None if buf.len() >= H2_PREFACE.len() => return (Detected::Opaque, buf),
            None => {}
        }
        let want = H2_PREFACE.len() - buf.len();
        // `read` is cancel-safe: a timeout loses no bytes.
        match tokio::time::timeout_at(deadline, io.read(&mut chunk[..want])).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return (Detected::Opaque, buf),
        }
    }
}

/// A stream that first yields bytes already read from it.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    /// `prefix` is served before `inner`'s own bytes.
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Rewind {
            prefix,
            pos: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn decrypted_streams_are_sniffed_and_replayed() {
        use tokio::io::AsyncWriteExt;
        let (mut a, mut b) = tokio::io::duplex(1024);
        a.write_all(b"GET / HTTP/1.1\r\n\r\n").await.expect("write");
        let (d, prefix) = detect_read(&mut b, Duration::from_millis(200)).await;
        assert_eq!(d, Detected::Http1);
        let mut r = Rewind::new(prefix, b);
        let mut got = vec![0u8; 18];
        r.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"GET / HTTP/1.1\r\n\r\n");
        // A server-first protocol says nothing: opaque after the timeout, nothing consumed.
        let (_a2, mut b2) = tokio::io::duplex(64);
        let (d, prefix) = detect_read(&mut b2, Duration::from_millis(20)).await;
        assert_eq!((d, prefix.len()), (Detected::Opaque, 0));
    }

    #[tokio::test]
    async fn a_client_hello_in_pieces_is_awaited_on_readiness() {
        use std::sync::Arc;
        use tokio::io::AsyncWriteExt;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("example.com").expect("name");
        let mut tls = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
        let mut hello = Vec::new();
        tls.write_tls(&mut hello).expect("hello");
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let mut c = TcpStream::connect(l.local_addr().expect("addr"))
            .await
            .expect("connect");
        c.set_nodelay(true).expect("nodelay");
        let (s, _) = l.accept().await.expect("accept");
        let (first, rest) = hello.split_at(hello.len() / 2);
        c.write_all(first).await.expect("write");
        let rest = rest.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.write_all(&rest).await.expect("write");
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        let got = peek_client_hello(&s, Duration::from_secs(5)).await;
        let Hello::Parsed(info) = got else {
            panic!("{got:?}")
        };
        assert_eq!(info.sni.as_deref(), Some("example.com"));
        // Nothing was consumed.
        let mut b = [0u8; 1];
        assert_eq!(s.peek(&mut b).await.expect("peek"), 1);
    }

    #[test]
    fn mesh_hellos_are_recognised() {
        let mesh = ClientHelloInfo {
            sni: Some("outbound_.8080_._.was.blog.svc.cluster.local".into()),
            alpn: vec![b"h2".to_vec()],
        };
        assert!(mesh.is_mesh());
        let istio_alpn = ClientHelloInfo {
            sni: None,
            alpn: vec![b"istio-peer-exchange".to_vec()],
        };
        assert!(istio_alpn.is_mesh());
        let app = ClientHelloInfo {
            sni: Some("example.com".into()),
            alpn: vec![b"h2".to_vec()],
        };
        assert!(!app.is_mesh());
    }

    #[test]
    fn classifies_prefixes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Detected::Http2)
        );
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(&[0x16, 0x03, 0x01]), Some(Detected::Tls));
        assert_eq!(classify(b"\x00\x01hello"), Some(Detected::Opaque));
        assert_eq!(classify(b"GEX"), Some(Detected::Opaque));
    }
}
