//! The one small HTTP client of the runtime and the CLI: a GET on a fresh HTTP/1.1
//! connection to a loopback address (readiness probes, proxies' admin endpoints), with one
//! deadline for the whole exchange.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The largest body [`http_get`] reads (a proxy's `/config_dump` is far smaller).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why a GET failed. Each message says what happened, including the underlying error.
#[derive(Debug, thiserror::Error)]
pub enum HttpGetError {
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("GET {path}: not a valid request path")]
    Path { path: String },
    #[error("GET http://{addr}{path}: {error}")]
    Http {
        addr: SocketAddr,
        path: String,
        error: String,
    },
    #[error("GET http://{addr}{path}: no answer within {timeout:?}")]
    Timeout {
        addr: SocketAddr,
        path: String,
        timeout: Duration,
    },
}

/// GETs `path` from `addr` and reads the whole body (up to 64 MiB), all within `timeout`.
pub async fn http_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), HttpGetError> {
    get(addr, path, timeout, "skein", Some(MAX_BODY)).await
}

/// Like [`http_get`], with the body bounded by `max_body` bytes (an error past it), and the
/// response's `Content-Type`.
pub async fn http_get_bounded(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    max_body: usize,
) -> Result<(StatusCode, Option<String>, Bytes), HttpGetError> {
    let exchange = exchange(addr, path, "skein", Some(max_body));
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpGetError::Timeout {
            addr,
            path: path.to_string(),
            timeout,
        }),
    }
}

/// A readiness probe's GET, as the kubelet sends it (`User-Agent: kube-probe/...`): only the
/// status counts, so the body is not read.
pub(crate) async fn probe_get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<StatusCode, HttpGetError> {
    let (status, _) = get(addr, path, timeout, "kube-probe/skein", None).await?;
    Ok(status)
}

async fn get(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
    user_agent: &str,
    read_body: Option<usize>,
) -> Result<(StatusCode, Bytes), HttpGetError> {
    let exchange = exchange(addr, path, user_agent, read_body);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result.map(|(s, _, b)| (s, b)),
        Err(_) => Err(HttpGetError::Timeout {
            addr,
            path: path.to_string(),
            timeout,
        }),
    }
}

async fn exchange(
    addr: SocketAddr,
    path: &str,
    user_agent: &str,
    read_body: Option<usize>,
) -> Result<(StatusCode, Option<String>, Bytes), HttpGetError> {
    let http = |e: &dyn std::fmt::Display| HttpGetError::Http {
        addr,
        path: path.to_string(),
        error: e.to_string(),
    };
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, user_agent)
        .header(header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|_| HttpGetError::Path {
            path: path.to_string(),
        })?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| HttpGetError::Connect { addr, error })?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(&e))?;
    let response = async {
        let response = sender.send_request(request).await.map_err(|e| http(&e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(max) = read_body else {
            return Ok((status, content_type, Bytes::new()));
        };
        let body = Limited::new(response.into_body(), max)
            .collect()
            .await
            .map_err(|e| http(&*e))?;
        Ok((status, content_type, body.to_bytes()))
    };
    // The connection is driven here, next to the exchange, and closed when this returns.
    tokio::pin!(response, conn);
    tokio::select! {
        r = &mut response => r,
        c = &mut conn => match c {
            Ok(()) => response.await,
            Err(e) => Err(http(&e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn serve_once(reply: &'static str) -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let _ = s.write_all(reply.as_bytes()).await;
        });
        addr
    }

    #[tokio::test]
    async fn reads_status_and_body() {
        let addr = serve_once("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello").await;
        let (status, body) = http_get(addr, "/ready", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(&body[..], b"hello");

        let addr = serve_once("HTTP/1.0 503 Service Unavailable\r\n\r\nnot yet").await;
        let (status, body) = http_get(addr, "/ready", Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(&body[..], b"not yet");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let err = http_get(addr, "/", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpGetError::Timeout { .. }), "{err}");
        drop(l);
    }
}
