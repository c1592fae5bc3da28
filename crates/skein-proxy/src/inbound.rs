//! Inbound protocol detection: peek at the first bytes of a connection.

use std::time::Duration;

use tokio::net::TcpStream;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    /// A TLS ClientHello (reserved for mTLS; forwarded as opaque TCP for now).
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
    loop {
        let peeked = tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await;
        match peeked {
            Err(_) => return Detected::Opaque,
            Ok(Err(_)) | Ok(Ok(0)) => return Detected::Opaque,
            Ok(Ok(n)) => {
                if let Some(d) = classify(&buf[..n]) {
                    return d;
                }
                if n == buf.len() {
                    return Detected::Opaque;
                }
                // Partial prefix: wait a moment for the rest.
                if tokio::time::Instant::now() >= deadline {
                    return Detected::Opaque;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
