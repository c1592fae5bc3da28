//! The mesh's certificate authority: signs each proxy's CSR with the SPIFFE identity of its
//! pod's ServiceAccount (`spiffe://cluster.local/ns/NS/sa/SA`).
//!
//! The CA is either generated on first start (a root kept in the state directory, its key
//! readable by its owner only), or a user's own, in Istio's plug-in CA layout: a directory with
//! `ca-cert.pem` and `ca-key.pem` (the signing CA), `root-cert.pem` (the trust bundle) and
//! optionally `cert-chain.pem` (the signing CA's chain up to the root).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

/// The trust domain of every identity skein issues.
pub const TRUST_DOMAIN: &str = "cluster.local";

/// Errors of the CA. A variant with an I/O cause prints it and does not return it from
/// `source()`, so a log line or the CLI says it once.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A CA file could not be read or written.
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// A CA file is not what it should be.
    #[error("{}: {reason}", path.display())]
    BadFile { path: PathBuf, reason: String },
    /// A CSR could not be parsed or its signature is wrong.
    #[error("the certificate signing request is invalid: {0}")]
    BadCsr(String),
    /// Signing failed.
    #[error("cannot sign the certificate: {0}")]
    Sign(String),
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Leaf, then the signing CA's chain (PEM).
    pub chain_pem: String,
    /// The SPIFFE identity.
    pub identity: String,
    /// Expiry, Unix seconds.
    pub not_after: i64,
}

/// A loaded CA.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the signing CA and its chain, appended to every leaf.
    chain_pem: String,
    /// The trust bundle.
    pub root_pem: String,
    /// Where it came from (for logs).
    pub source: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("source", &self.source).finish()
    }
}

/// `spiffe://cluster.local/ns/NS/sa/SA`.
pub fn spiffe_id(namespace: &str, service_account: &str) -> String {
    format!("spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service_account}")
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|error| CaError::Io {
        path: path.to_path_buf(),
        error,
    })
}

fn write_private(path: &Path, text: &str) -> Result<(), CaError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |error| CaError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

fn bad(path: &Path, reason: impl std::fmt::Display) -> CaError {
    CaError::BadFile {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

impl Ca {
    /// The plug-in CA in `plugin` if given, else the root in `dir` (created on first use).
    pub fn load(dir: &Path, plugin: Option<&Path>) -> Result<Ca, CaError> {
        match plugin {
            Some(p) => Self::load_plugin(p),
            None => Self::load_or_create(dir),
        }
    }

    /// Istio's plug-in CA layout.
    pub fn load_plugin(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join("ca-cert.pem");
        let key_path = dir.join("ca-key.pem");
        let root_path = dir.join("root-cert.pem");
        let cert = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| bad(&key_path, e))?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(|e| bad(&cert_path, e))?;
        let root_pem = read(&root_path)?;
        let chain_path = dir.join("cert-chain.pem");
        let chain_pem = if chain_path.exists() {
            read(&chain_path)?
        } else {
            cert
        };
        Ok(Ca {
            issuer,
            chain_pem,
            root_pem,
            source: format!("plug-in CA in {}", dir.display()),
        })
    }

    /// A self-signed root kept in `dir` (`root-cert.pem`, `root-key.pem` mode 0600).
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join("root-cert.pem");
        let key_path = dir.join("root-key.pem");
        if !cert_path.exists() || !key_path.exists() {
            std::fs::create_dir_all(dir).map_err(|error| CaError::Io {
                path: dir.to_path_buf(),
                error,
            })?;
            let key = KeyPair::generate().map_err(|e| CaError::Sign(e.to_string()))?;
            let mut params = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, TRUST_DOMAIN);
            dn.push(DnType::CommonName, "skein root CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(3650);
            let cert = params
                .self_signed(&key)
                .map_err(|e| CaError::Sign(e.to_string()))?;
            write_private(&key_path, &key.serialize_pem())?;
            std::fs::write(&cert_path, cert.pem()).map_err(|error| CaError::Io {
                path: cert_path.clone(),
                error,
            })?;
        }
        let cert = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| bad(&key_path, e))?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(|e| bad(&cert_path, e))?;
        Ok(Ca {
            issuer,
            chain_pem: cert.clone(),
            root_pem: cert,
            source: format!("root in {}", dir.display()),
        })
    }

    /// Signs `csr_pem` for `identity`, valid for `ttl`. Whatever the CSR asks for, the
    /// certificate carries exactly this identity as its only SAN.
    pub fn sign(&self, csr_pem: &str, identity: &str, ttl: Duration) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(
            identity
                .try_into()
                .map_err(|e: rcgen::Error| CaError::Sign(e.to_string()))?,
        )];
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = time::OffsetDateTime::now_utc();
        // A little slack for clocks that disagree by a few seconds.
        params.not_before = now - time::Duration::seconds(60);
        let ttl = time::Duration::try_from(ttl).unwrap_or(time::Duration::days(1));
        let not_after = now + ttl;
        params.not_after = not_after;
        let leaf = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(|e| CaError::Sign(e.to_string()))?;
        let mut chain_pem = leaf.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&self.chain_pem);
        Ok(Issued {
            chain_pem,
            identity: identity.to_string(),
            not_after: not_after.unix_timestamp(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr(sans: Vec<String>) -> String {
        let key = KeyPair::generate().unwrap();
        let params = CertificateParams::new(sans).unwrap();
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    #[test]
    fn a_root_is_created_once_with_a_private_key_and_signs_spiffe_leaves() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join("root-key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the root key is its owner's only");
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(
            ca.root_pem, again.root_pem,
            "the same root on the next start"
        );

        // The CSR asks for something else; the certificate carries the pod's identity only.
        let id = spiffe_id("blog-system", "default");
        assert_eq!(id, "spiffe://cluster.local/ns/blog-system/sa/default");
        let issued = ca
            .sign(
                &csr(vec!["evil.example.com".into()]),
                &id,
                Duration::from_secs(90),
            )
            .unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        assert!((now + 85..=now + 95).contains(&issued.not_after));
        let leaf_der = rustls_pemfile_first(&issued.chain_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();
        let sans: Vec<String> = cert
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(sans, [format!("URI({id})")]);
        assert_eq!(issued.chain_pem.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(ca.sign("not a csr", &id, Duration::from_secs(1)).is_err());
    }

    #[test]
    fn a_plugin_ca_is_used_as_given() {
        let root = Ca::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // An intermediate signed by the root, in Istio's cacerts layout.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params
            .distinguished_name
            .push(DnType::CommonName, "intermediate");
        let inter = params.signed_by(&key, &root.issuer).unwrap();
        std::fs::write(dir.path().join("ca-cert.pem"), inter.pem()).unwrap();
        std::fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("root-cert.pem"), &root.root_pem).unwrap();
        std::fs::write(
            dir.path().join("cert-chain.pem"),
            format!("{}{}", inter.pem(), root.root_pem),
        )
        .unwrap();
        let ca = Ca::load_plugin(dir.path()).unwrap();
        assert_eq!(ca.root_pem, root.root_pem);
        let issued = ca
            .sign(&csr(vec![]), &spiffe_id("a", "b"), Duration::from_secs(60))
            .unwrap();
        assert_eq!(issued.chain_pem.matches("BEGIN CERTIFICATE").count(), 3);
        let missing = Ca::load_plugin(tempfile::tempdir().unwrap().path()).unwrap_err();
        assert!(missing.to_string().contains("ca-cert.pem"), "{missing}");
    }

    fn rustls_pemfile_first(pem: &str) -> Vec<u8> {
        pem::parse_many(pem).unwrap()[0].contents().to_vec()
    }
}
