//! A test mesh CA: SPIFFE leaf certificates and CSR signing with rcgen.

use std::sync::Arc;

use crate::StaticIdentity;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use time::{Duration, OffsetDateTime};

/// The namespace of the test identities.
pub const NS: &str = "blog";

/// `spiffe://cluster.local/ns/NS/sa/SA`.
pub fn spiffe(ns: &str, sa: &str) -> String {
    format!("spiffe://cluster.local/ns/{ns}/sa/{sa}")
}

/// A root CA that issues SPIFFE certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The root certificate (the trust bundle).
    pub pem: String,
}

fn leaf_params(
    spiffe: &str,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::URI(
        Ia5String::try_from(spiffe).expect("spiffe URI is IA5"),
    )];
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = not_before;
    p.not_after = not_after;
    p.use_authority_key_identifier_extension = true;
    p
}

impl Ca {
    /// A new root CA with common name `name`, valid from a day ago for 30 days.
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        p.not_before = now - Duration::days(1);
        p.not_after = now + Duration::days(30);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("ca key");
        let cert = p.self_signed(&key).expect("self-signed ca");
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A leaf valid from an hour ago for a day.
    pub fn identity(&self, spiffe: &str) -> StaticIdentity {
        let now = OffsetDateTime::now_utc();
        self.identity_valid(spiffe, now - Duration::hours(1), now + Duration::days(1))
    }

    /// A leaf valid between `from` and `until` (an expired one when `until` is past).
    pub fn identity_valid(
        &self,
        spiffe: &str,
        from: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StaticIdentity {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let cert = leaf_params(spiffe, from, until)
            .signed_by(&key, &self.issuer)
            .expect("sign leaf");
        StaticIdentity {
            cert_chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            root_pem: self.pem.clone(),
        }
    }

    /// Signs a proxy's CSR as `spiffe` for `lifetime`; returns the chain and `notAfter`.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        spiffe: &str,
        lifetime: std::time::Duration,
    ) -> (String, i64) {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem).expect("valid CSR");
        let now = OffsetDateTime::now_utc();
        let until = now + lifetime;
        // The identity comes from the CA's knowledge of the workload, never from the CSR.
        csr.params = leaf_params(spiffe, now - Duration::minutes(1), until);
        let cert = csr.signed_by(&self.issuer).expect("sign CSR");
        (cert.pem(), until.unix_timestamp())
    }
}

/// Accepts any server certificate (a test client that only wants to reach the handshake's
/// other side).
#[derive(Debug)]
pub struct AnyServer;

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A raw TLS 1.3 client config, optionally with a client certificate.
pub fn raw_client(id: Option<&StaticIdentity>, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("tls13")
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(AnyServer));
    let mut c = match id {
        Some(id) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(id.cert_chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("chain");
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).expect("key");
            b.with_client_auth_cert(chain, key).expect("client cert")
        }
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(c)
}
