//! The mesh's certificate authority: signs each proxy's CSR with the SPIFFE identity of its
//! pod's ServiceAccount (`spiffe://cluster.local/ns/NS/sa/SA`).
//!
//! The CA is either generated on first start (a root kept in the state directory, its key
//! readable by its owner only), or a user's own, in Istio's plug-in CA layout: a directory with
//! `ca-cert.pem` and `ca-key.pem` (the signing CA), `root-cert.pem` (the trust bundle) and
//! optionally `cert-chain.pem` (the signing CA's chain up to the root).
//!
//! A root is generated only when neither `root-cert.pem` nor `root-key.pem` exists: one
//! without the other, or a key that is not the certificate's, stops start-up instead, since a
//! new root would split the mesh's trust (proxies holding the old root refuse the new one's
//! certificates until they renew). Leaves never outlive the signing CA.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType,
};
use time::OffsetDateTime;

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
    /// One of the root's two files is missing; generating a new root would fork the trust.
    #[error(
        "{} exists but {} does not: the root CA is incomplete. Restore {} from a backup; or, \
         to start over with a new root on purpose, remove {} (every proxy then needs a new \
         certificate)",
        present.display(),
        missing.display(),
        missing.display(),
        present.display()
    )]
    IncompleteRoot { present: PathBuf, missing: PathBuf },
    /// The key is not the certificate's.
    #[error(
        "{} is not the private key of {}: restore the matching pair; or, to start over with \
         a new root on purpose, remove both (every proxy then needs a new certificate)",
        key.display(),
        cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    /// The requested certificate lifetime is zero.
    #[error("the workload certificate lifetime is zero; give at least one second (--cert-ttl)")]
    ZeroTtl,
    /// The signing CA has expired: nothing it signs would be valid.
    #[error("the signing CA ({ca}) expired at {not_after}; renew or replace it")]
    Expired {
        not_after: OffsetDateTime,
        ca: String,
    },
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
    /// The signing CA's `notAfter`: no leaf outlives it.
    not_after: OffsetDateTime,
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

fn exists(path: &Path) -> Result<bool, CaError> {
    // An error (e.g. no permission to look) is not "absent": absent means a new root.
    path.try_exists().map_err(|error| CaError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// Writes `text` to `path` by way of a temporary file, so `path` is whole or absent.
fn write_replacing(path: &Path, text: &str, private: bool) -> Result<(), CaError> {
    let tmp = path.with_extension("pem.tmp");
    if private {
        write_private(&tmp, text)?;
    } else {
        std::fs::write(&tmp, text).map_err(|error| CaError::Io {
            path: tmp.clone(),
            error,
        })?;
    }
    std::fs::rename(&tmp, path).map_err(|error| CaError::Io {
        path: path.to_path_buf(),
        error,
    })
}

/// The certificate in `pem` (the first of them): its public key and `notAfter`.
fn cert_info(path: &Path, pem: &str) -> Result<(Vec<u8>, OffsetDateTime), CaError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(path, e))?;
    let cert = pem.parse_x509().map_err(|e| bad(path, e))?;
    Ok((
        cert.public_key().subject_public_key.data.to_vec(),
        cert.validity().not_after.to_datetime(),
    ))
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
        let (_, not_after) = cert_info(&cert_path, &cert)?;
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
            not_after,
            chain_pem,
            root_pem,
            source: format!("plug-in CA in {}", dir.display()),
        })
    }

    /// A self-signed root kept in `dir` (`root-cert.pem`, `root-key.pem` mode 0600), generated
    /// when neither file exists. One without the other, or a key that is not the
    /// certificate's, is an error: a new root would split the mesh's trust.
    pub fn load_or_create(dir: &Path) -> Result<Ca, CaError> {
        let cert_path = dir.join("root-cert.pem");
        let key_path = dir.join("root-key.pem");
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => {}
            (true, false) => {
                return Err(CaError::IncompleteRoot {
                    present: cert_path,
                    missing: key_path,
                });
            }
            (false, true) => {
                return Err(CaError::IncompleteRoot {
                    present: key_path,
                    missing: cert_path,
                });
            }
            (false, false) => Self::generate(&cert_path, &key_path)?,
        }
        let cert = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|e| bad(&key_path, e))?;
        let (public_key, not_after) = cert_info(&cert_path, &cert)?;
        if public_key != key.der_bytes() {
            return Err(CaError::KeyMismatch {
                cert: cert_path,
                key: key_path,
            });
        }
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(|e| bad(&cert_path, e))?;
        Ok(Ca {
            issuer,
            not_after,
            chain_pem: cert.clone(),
            root_pem: cert,
            source: format!("root in {}", dir.display()),
        })
    }

    /// Generates a root into `cert_path` and `key_path` (neither exists). The key is written
    /// first, each file whole: an interrupted start leaves a key alone, which the next start
    /// refuses rather than replaces.
    fn generate(cert_path: &Path, key_path: &Path) -> Result<(), CaError> {
        if let Some(dir) = cert_path.parent() {
            std::fs::create_dir_all(dir).map_err(|error| CaError::Io {
                path: dir.to_path_buf(),
                error,
            })?;
        }
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
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params
            .self_signed(&key)
            .map_err(|e| CaError::Sign(e.to_string()))?;
        write_replacing(key_path, &key.serialize_pem(), true)?;
        write_replacing(cert_path, &cert.pem(), false)
    }

    /// Checks a workload certificate lifetime before anything is signed with it: zero is
    /// refused; a lifetime beyond the signing CA's is clamped to it when signing.
    pub fn check_ttl(&self, ttl: Duration) -> Result<(), CaError> {
        if ttl.is_zero() {
            return Err(CaError::ZeroTtl);
        }
        let left = self.not_after - OffsetDateTime::now_utc();
        if time::Duration::try_from(ttl).is_ok_and(|t| t <= left) {
            return Ok(());
        }
        tracing::warn!(
            ?ttl,
            ca_not_after = %self.not_after,
            "the certificate lifetime outlives the signing CA; certificates expire with it"
        );
        Ok(())
    }

    /// The control plane's own serving certificate, for a key made here that never leaves
    /// the process: the DNS names proxies check (`istiod.istio-system.svc`, ...) and
    /// istiod's SPIFFE identity, valid for `ttl` (never past the signing CA). Returns the
    /// chain (leaf first, then the signing CA's chain) and the key, PEM.
    pub fn serving_cert(
        &self,
        dns_names: &[&str],
        identity: &str,
        ttl: Duration,
    ) -> Result<(String, String), CaError> {
        let sign_err = |e: rcgen::Error| CaError::Sign(e.to_string());
        let key = KeyPair::generate().map_err(sign_err)?;
        let mut params = CertificateParams::default();
        let mut sans = Vec::new();
        for name in dns_names {
            sans.push(SanType::DnsName((*name).try_into().map_err(sign_err)?));
        }
        sans.push(SanType::URI(identity.try_into().map_err(sign_err)?));
        params.subject_alt_names = sans;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CommonName,
            dns_names.first().copied().unwrap_or("istiod"),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        if self.not_after <= now {
            return Err(CaError::Expired {
                not_after: self.not_after,
                ca: self.source.clone(),
            });
        }
        params.not_before = now - time::Duration::seconds(60);
        params.not_after = time::Duration::try_from(ttl)
            .ok()
            .and_then(|ttl| now.checked_add(ttl))
            .map_or(self.not_after, |t| t.min(self.not_after));
        let cert = params.signed_by(&key, &self.issuer).map_err(sign_err)?;
        let mut chain_pem = cert.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&self.chain_pem);
        Ok((chain_pem, key.serialize_pem()))
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
        let now = OffsetDateTime::now_utc();
        if ttl.is_zero() {
            return Err(CaError::ZeroTtl);
        }
        if self.not_after <= now {
            return Err(CaError::Expired {
                not_after: self.not_after,
                ca: self.source.clone(),
            });
        }
        // A little slack for clocks that disagree by a few seconds.
        params.not_before = now - time::Duration::seconds(60);
        // Never past the signing CA's own expiry; a lifetime too long to add is that too.
        let not_after = time::Duration::try_from(ttl)
            .ok()
            .and_then(|ttl| now.checked_add(ttl))
            .map_or(self.not_after, |t| t.min(self.not_after));
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

    #[test]
    fn a_lost_root_file_stops_start_up_instead_of_forking_the_trust() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (
            dir.path().join("root-cert.pem"),
            dir.path().join("root-key.pem"),
        );
        let first = Ca::load_or_create(dir.path()).unwrap();
        let (cert_pem, key_pem) = (read(&cert).unwrap(), read(&key).unwrap());

        for (lost, kept) in [(&cert, &key), (&key, &cert)] {
            std::fs::remove_file(lost).unwrap();
            let e = Ca::load_or_create(dir.path()).unwrap_err();
            assert!(matches!(e, CaError::IncompleteRoot { .. }), "{e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&lost.display().to_string())
                    && msg.contains(&kept.display().to_string())
                    && msg.contains("Restore"),
                "{msg}"
            );
            assert!(!lost.exists(), "nothing was generated in its place");
            std::fs::write(&cert, &cert_pem).unwrap();
            std::fs::write(&key, &key_pem).unwrap();
            assert_eq!(
                Ca::load_or_create(dir.path()).unwrap().root_pem,
                first.root_pem
            );
        }

        // Only with both gone is there a new root.
        std::fs::remove_file(&cert).unwrap();
        std::fs::remove_file(&key).unwrap();
        let second = Ca::load_or_create(dir.path()).unwrap();
        assert_ne!(second.root_pem, first.root_pem);
        assert!(!dir.path().join("root-key.pem.tmp").exists());
    }

    #[test]
    fn a_root_key_that_is_not_the_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        Ca::load_or_create(dir.path()).unwrap();
        Ca::load_or_create(other.path()).unwrap();
        let key = dir.path().join("root-key.pem");
        std::fs::copy(other.path().join("root-key.pem"), &key).unwrap();
        let e = Ca::load_or_create(dir.path()).unwrap_err();
        assert!(matches!(e, CaError::KeyMismatch { .. }), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&key.display().to_string()) && msg.contains("root-cert.pem"),
            "{msg}"
        );
    }

    /// A plug-in CA whose intermediate, signed by a fresh root, expires at `not_after`.
    fn plugin_expiring(not_after: OffsetDateTime) -> (tempfile::TempDir, Ca) {
        let root = Ca::load_or_create(tempfile::tempdir().unwrap().path()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        params.not_before = OffsetDateTime::now_utc() - time::Duration::days(2);
        params.not_after = not_after;
        let inter = params.signed_by(&key, &root.issuer).unwrap();
        std::fs::write(dir.path().join("ca-cert.pem"), inter.pem()).unwrap();
        std::fs::write(dir.path().join("ca-key.pem"), key.serialize_pem()).unwrap();
        std::fs::write(dir.path().join("root-cert.pem"), &root.root_pem).unwrap();
        let ca = Ca::load_plugin(dir.path()).unwrap();
        (dir, ca)
    }

    #[test]
    fn leaf_lifetimes_are_checked_and_never_outlive_the_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let id = spiffe_id("a", "b");
        let root_not_after = ca.not_after.unix_timestamp();

        // Absurd lifetimes end with the root, without a panic or a wrapped date.
        for ttl in [
            Duration::MAX,
            Duration::from_secs(u64::MAX),
            Duration::from_secs(i64::MAX as u64),
            Duration::from_secs(100 * 365 * 86_400),
        ] {
            let issued = ca.sign(&csr(vec![]), &id, ttl).unwrap();
            assert_eq!(issued.not_after, root_not_after, "{ttl:?}");
            ca.check_ttl(ttl).unwrap();
        }

        // Zero is refused, at start-up and when signing.
        assert!(matches!(
            ca.check_ttl(Duration::ZERO),
            Err(CaError::ZeroTtl)
        ));
        assert!(matches!(
            ca.sign(&csr(vec![]), &id, Duration::ZERO),
            Err(CaError::ZeroTtl)
        ));

        // A plug-in intermediate's notAfter bounds its leaves.
        let soon = OffsetDateTime::now_utc() + time::Duration::hours(1);
        let (_dir, plugin) = plugin_expiring(soon);
        let issued = plugin
            .sign(&csr(vec![]), &id, Duration::from_secs(86_400))
            .unwrap();
        assert_eq!(issued.not_after, soon.unix_timestamp());
        let der = rustls_pemfile_first(&issued.chain_pem);
        let (_, leaf) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(leaf.validity().not_after.timestamp(), soon.unix_timestamp());

        // An expired one signs nothing.
        let (_dir, expired) = plugin_expiring(OffsetDateTime::now_utc() - time::Duration::hours(1));
        let e = expired
            .sign(&csr(vec![]), &id, Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(e, CaError::Expired { .. }), "{e}");
    }

    fn rustls_pemfile_first(pem: &str) -> Vec<u8> {
        pem::parse_many(pem).unwrap()[0].contents().to_vec()
    }
}
