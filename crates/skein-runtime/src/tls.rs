//! The ingress's self-signed certificate, generated once into the state directory.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};

use crate::RuntimeError;

pub fn ingress_server_config(dir: &Path) -> Result<Arc<rustls::ServerConfig>, RuntimeError> {
    let cert_path = dir.join("ingress.crt");
    let key_path = dir.join("ingress.key");
    if !cert_path.exists() || !key_path.exists() {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let cert = rcgen::generate_simple_self_signed(names).map_err(|e| {
            RuntimeError::Tls(format!("cannot generate the ingress certificate: {e}"))
        })?;
        std::fs::write(&cert_path, cert.cert.pem()).map_err(|e| RuntimeError::io(&cert_path, e))?;
        crate::fs::write_private(&key_path, cert.signing_key.serialize_pem().as_bytes())
            .map_err(|e| RuntimeError::io(&key_path, e))?;
    }
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| RuntimeError::Tls(format!("{}: {e}", cert_path.display())))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| RuntimeError::Tls(format!("{}: {e}", key_path.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| RuntimeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| RuntimeError::Tls(format!("{}: {e}", cert_path.display())))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
