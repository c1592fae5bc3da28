//! DestinationRule `SIMPLE` and `MUTUAL`: TLS the proxy originates to an upstream with the
//! app's own certificates (not the mesh identity).
//!
//! Built once per cluster definition, when a snapshot is compiled: the CA (a file, a Secret's
//! PEM, or the system bundle), the client certificate for `MUTUAL`, the SNI (`tls.sni`, else
//! the destination host) and the checks on the upstream's certificate (signed by the CA; valid
//! for the SNI, or carrying one of `subjectAltNames`; neither with `insecureSkipVerify`).
//! A cluster whose settings cannot be built keeps the reason and answers 503 `UF`: it never
//! falls back to plaintext.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use skein_snapshot::{Cluster, OriginTls, UpstreamTls};

use crate::identity::TlsAlpn;

/// System CA bundles, as Istio falls back to the OS roots when no CA is given.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// Why a cluster's TLS origination cannot be set up (the cluster answers 503 UF).
#[derive(Debug, thiserror::Error)]
pub enum OriginError {
    /// The control plane could not resolve the settings (e.g. the Secret is missing).
    #[error("{0}")]
    Control(String),
    /// A file named by the DestinationRule could not be read.
    #[error("cannot read {field} file {path}: {source}")]
    Read {
        field: &'static str,
        path: String,
        source: std::io::Error,
    },
    /// A PEM value holds no usable certificate or key.
    #[error("{field}: {reason}")]
    Pem { field: &'static str, reason: String },
    /// No CA to verify the upstream with.
    #[error(
        "no CA certificates to verify the upstream: set tls.caCertificates, a credentialName Secret with ca.crt, or tls.insecureSkipVerify"
    )]
    NoCa,
    /// MUTUAL without a client certificate and key.
    #[error(
        "MUTUAL needs a client certificate and key: set tls.clientCertificate and tls.privateKey, or a credentialName Secret with tls.crt and tls.key"
    )]
    NoClientCert,
    /// The SNI is not a DNS name or IP address.
    #[error("SNI {0:?} is not a valid DNS name or IP address")]
    Sni(String),
    /// rustls refused the configuration (e.g. the key does not match the certificate).
    #[error("TLS client setup failed: {0}")]
    Rustls(rustls::Error),
}

/// A cluster's ready-made TLS origination: client configs per ALPN and the SNI.
#[derive(Debug)]
pub struct Origination {
    /// The server name sent as SNI (and checked when no SANs are given).
    pub sni: ServerName<'static>,
    h1: Arc<ClientConfig>,
    h2: Arc<ClientConfig>,
    tcp: Arc<ClientConfig>,
}

impl Origination {
    /// The client config offering `alpn`.
    pub fn client_config(&self, alpn: TlsAlpn) -> Arc<ClientConfig> {
        Arc::clone(match alpn {
            TlsAlpn::Http1 => &self.h1,
            TlsAlpn::Http2 => &self.h2,
            TlsAlpn::None => &self.tcp,
        })
    }
}

/// The origination a cluster needs: None for DISABLE / ISTIO_MUTUAL, else the configs or why
/// they cannot be built.
pub fn origination(c: &Cluster) -> Option<Result<Arc<Origination>, OriginError>> {
    let (sni, origin) = c.tls.origin()?;
    let mutual = matches!(c.tls, UpstreamTls::Mutual { .. });
    Some(build(c, sni, origin, mutual).map(Arc::new))
}

fn read(field: &'static str, path: &str) -> Result<String, OriginError> {
    std::fs::read_to_string(path).map_err(|source| OriginError::Read {
        field,
        path: path.to_string(),
        source,
    })
}

/// The value from the Secret's PEM, else the file the DestinationRule names.
fn pem_or_file(
    pem: Option<&String>,
    path: Option<&String>,
    field: &'static str,
) -> Result<Option<String>, OriginError> {
    match (pem, path) {
        (Some(p), _) => Ok(Some(p.clone())),
        (None, Some(path)) => read(field, path).map(Some),
        (None, None) => Ok(None),
    }
}

fn certs(pem: &str, field: &'static str) -> Result<Vec<CertificateDer<'static>>, OriginError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| OriginError::Pem {
            field,
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(OriginError::Pem {
            field,
            reason: "no certificate found".into(),
        });
    }
    Ok(certs)
}

fn roots(pem: &str, field: &'static str) -> Result<RootCertStore, OriginError> {
    let mut roots = RootCertStore::empty();
    for c in certs(pem, field)? {
        roots.add(c).map_err(|e| OriginError::Pem {
            field,
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Option<RootCertStore> {
    SYSTEM_BUNDLES.iter().find_map(|p| {
        let pem = std::fs::read_to_string(p).ok()?;
        let mut roots = RootCertStore::empty();
        let (ok, _) = roots
            .add_parsable_certificates(CertificateDer::pem_slice_iter(pem.as_bytes()).flatten());
        (ok > 0).then_some(roots)
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn build(
    c: &Cluster,
    sni: Option<&str>,
    o: &OriginTls,
    mutual: bool,
) -> Result<Origination, OriginError> {
    if let Some(e) = &o.error {
        return Err(OriginError::Control(e.clone()));
    }
    let host = sni.filter(|s| !s.is_empty()).unwrap_or(&c.service);
    let sni = ServerName::try_from(host.to_string()).map_err(|_| OriginError::Sni(host.into()))?;
    let roots = if o.insecure_skip_verify {
        None
    } else {
        let ca = pem_or_file(
            o.ca_pem.as_ref(),
            o.ca_certificates.as_ref(),
            "caCertificates",
        )?;
        Some(Arc::new(match ca {
            Some(pem) => roots(&pem, "caCertificates")?,
            None => system_roots().ok_or(OriginError::NoCa)?,
        }))
    };
    let client = if mutual {
        let chain = pem_or_file(
            o.cert_chain_pem.as_ref(),
            o.client_certificate.as_ref(),
            "clientCertificate",
        )?;
        let key = pem_or_file(o.key_pem.as_ref(), o.private_key.as_ref(), "privateKey")?;
        let (Some(chain), Some(key)) = (chain, key) else {
            return Err(OriginError::NoClientCert);
        };
        let chain = certs(&chain, "clientCertificate")?;
        // The key's own parse error could quote key bytes; say only that it is unusable.
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| OriginError::Pem {
            field: "privateKey",
            reason: "no PEM private key (PKCS#8, PKCS#1 or SEC1) found".into(),
        })?;
        Some((chain, key))
    } else {
        None
    };
    let provider = provider();
    let verifier = Arc::new(OriginVerifier {
        roots,
        sans: o.subject_alt_names.clone(),
        algs: provider.signature_verification_algorithms,
    });
    let config = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, OriginError> {
        let b = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(OriginError::Rustls)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone());
        let mut cfg = match &client {
            Some((chain, key)) => b
                .with_client_auth_cert(chain.clone(), key.clone_key())
                .map_err(OriginError::Rustls)?,
            None => b.with_no_client_auth(),
        };
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(cfg))
    };
    Ok(Origination {
        h1: config(&[b"http/1.1"])?,
        h2: config(&[b"h2"])?,
        tcp: config(&[])?,
        sni,
    })
}

/// Checks an upstream's certificate as Envoy's `CertificateValidationContext` does for a
/// DestinationRule: the chain ends at a configured CA; the leaf is valid for the SNI, or for
/// one of `subjectAltNames` when given. `roots: None` is `insecureSkipVerify` (the handshake
/// signature is still checked).
#[derive(Debug)]
struct OriginVerifier {
    roots: Option<Arc<RootCertStore>>,
    sans: Vec<String>,
    algs: WebPkiSupportedAlgorithms,
}

/// True when the certificate carries `san`: a DNS name or IP address (wildcards as webpki
/// matches them), or a URI SAN equal to it.
fn has_san(der: &CertificateDer<'_>, cert: &ParsedCertificate<'_>, san: &str) -> bool {
    if san.contains("://") {
        let Ok((_, x)) = x509_parser::parse_x509_certificate(der) else {
            return false;
        };
        let Ok(Some(ext)) = x.subject_alternative_name() else {
            return false;
        };
        return ext
            .value
            .general_names
            .iter()
            .any(|n| matches!(n, x509_parser::extensions::GeneralName::URI(u) if *u == san));
    }
    ServerName::try_from(san)
        .is_ok_and(|name| rustls::client::verify_server_name(cert, &name).is_ok())
}

impl ServerCertVerifier for OriginVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(roots) = &self.roots else {
            return Ok(ServerCertVerified::assertion());
        };
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            roots,
            intermediates,
            now,
            self.algs.all,
        )?;
        if self.sans.is_empty() {
            rustls::client::verify_server_name(&cert, server_name)?;
        } else if !self.sans.iter().any(|s| has_san(end_entity, &cert, s)) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(origin: OriginTls) -> Cluster {
        Cluster {
            name: "outbound|443||api.example.com".into(),
            service: "api.example.com".into(),
            tls: UpstreamTls::Simple { sni: None, origin },
            ..Default::default()
        }
    }

    fn err(c: &Cluster) -> String {
        match origination(c) {
            Some(Err(e)) => e.to_string(),
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn only_simple_and_mutual_originate() {
        assert!(origination(&Cluster::default()).is_none());
        let c = Cluster {
            tls: UpstreamTls::IstioMutual,
            ..Default::default()
        };
        assert!(origination(&c).is_none());
    }

    #[test]
    fn unusable_settings_are_errors_not_plaintext() {
        let c = simple(OriginTls {
            ca_certificates: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        assert!(err(&c).contains("cannot read caCertificates file /nonexistent/ca.pem"));
        let c = simple(OriginTls {
            ca_pem: Some("not a pem".into()),
            ..Default::default()
        });
        assert!(err(&c).contains("caCertificates: no certificate found"));
        let c = simple(OriginTls {
            error: Some("Secret blog/missing not found".into()),
            ..Default::default()
        });
        assert_eq!(err(&c), "Secret blog/missing not found");
        let c = Cluster {
            service: "api.example.com".into(),
            tls: UpstreamTls::Mutual {
                sni: None,
                credential_name: None,
                origin: OriginTls {
                    insecure_skip_verify: true,
                    ..Default::default()
                },
            },
            ..Default::default()
        };
        assert!(err(&c).contains("MUTUAL needs a client certificate"));
    }

    #[test]
    fn the_sni_defaults_to_the_destination_host() {
        let c = simple(OriginTls {
            insecure_skip_verify: true,
            ..Default::default()
        });
        let o = origination(&c).expect("origin").expect("built");
        assert_eq!(
            o.sni,
            ServerName::try_from("api.example.com").expect("name")
        );
        let mut c = c;
        if let UpstreamTls::Simple { sni, .. } = &mut c.tls {
            *sni = Some("other.example.com".into());
        }
        let o = origination(&c).expect("origin").expect("built");
        assert_eq!(
            o.sni,
            ServerName::try_from("other.example.com").expect("name")
        );
    }
}
