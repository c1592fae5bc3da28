//! Gateway HTTPS: TLS termination (rustls with the ring provider), then HTTP.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::accept_loop;
use super::drain::{ConnToken, DrainSignal};
use super::limit::ListenerLimit;
use crate::conn::ConnInfo;
use crate::http::HttpCtx;

/// Bound on the TLS handshake of a gateway HTTPS connection.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Errors loading a certificate and key.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file could not be read or parsed.
    #[error(
        "cannot read certificate chain from {path}: {detail} (expected PEM `CERTIFICATE` blocks)"
    )]
    Cert { path: String, detail: String },
    /// The key file could not be read or parsed.
    #[error(
        "cannot read private key from {path}: {detail} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)"
    )]
    Key { path: String, detail: String },
    /// rustls rejected the pair.
    #[error("certificate and key do not form a usable server config: {0}")]
    Config(rustls::Error),
}

// By hand rather than `#[from]`: the message already says the cause, so it is not also
// returned as `source()`.
impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> Self {
        TlsError::Config(e)
    }
}

/// Builds an acceptor offering h2 and http/1.1 via ALPN.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            detail: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Cert {
            path: cert.display().to_string(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Cert {
            path: cert.display().to_string(),
            detail: "no certificate found".to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.display().to_string(),
        detail: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// A gateway HTTPS listener: TLS handshake (bounded), then HTTP with the SNI recorded.
pub(crate) async fn serve_https(
    listener: TcpListener,
    limit: ListenerLimit,
    acceptor: TlsAcceptor,
    ctx: Arc<HttpCtx>,
    drain: DrainSignal,
    token: ConnToken,
) {
    let signal = drain.clone();
    accept_loop(
        listener,
        "gateway HTTPS",
        limit,
        drain,
        None,
        |stream, local, remote, slot| {
            let acceptor = acceptor.clone();
            let ctx = Arc::clone(&ctx);
            let drain = signal.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                let tls = tokio::select! {
                    r = handshake => match r {
                        Ok(Ok(t)) => t,
                        Ok(Err(e)) => {
                            tracing::debug!(%remote, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    },
                    // Shed to make room while still in the handshake.
                    _ = slot.state().shed() => return,
                };
                let sni = tls.get_ref().1.server_name().map(Arc::from);
                let info = Arc::new(ConnInfo {
                    sni,
                    ..ConnInfo::plain(local, remote)
                });
                crate::http::serve_connection(tls, ctx, info, drain, token, slot).await;
            });
        },
    )
    .await
}
