//! Workload identity: the proxy's SPIFFE certificate, its key and the mesh's trust bundle.
//!
//! The key is generated here (ECDSA P-256) and never leaves the process: the control plane gets
//! a CSR and answers with a signed chain (see [`crate::ControlSource`]). Static material
//! ([`StaticIdentity`]) can be installed instead, for tests and embedding.
//!
//! The current identity sits in an `ArcSwap`. Installing one builds every rustls config it
//! needs once (inbound mTLS server, outbound clients per ALPN), so a handshake only loads an
//! `Arc`. Each install bumps a generation; pooled upstream mTLS connections made under an older
//! generation are not reused, so a rotated certificate reaches peers as pools turn over.

pub(crate) mod rotate;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{NoServerSessionStorage, ParsedCertificate, WebPkiClientVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
pub use skein_snapshot::dump::{IdentitySource, IdentityStatus};

/// ALPN the inbound mTLS listener accepts; the decrypted stream is sniffed anyway. `istio` is
/// last so an Envoy peer's opaque-TCP hello (`istio-peer-exchange`, `istio`) finds a match
/// without being promised the metadata exchange.
/// The server picks the first of these the client offers: a client offering
/// `istio-peer-exchange` (mesh TCP) gets the TCP metadata exchange.
const SERVER_ALPN: [&[u8]; 4] = [b"h2", b"http/1.1", b"istio-peer-exchange", b"istio"];

/// Errors installing or requesting a workload identity.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The certificate chain did not parse.
    #[error("workload certificate chain: {0} (expected PEM CERTIFICATE blocks, leaf first)")]
    Chain(String),
    /// The private key did not parse.
    #[error("workload private key: {0} (expected a PEM PKCS#8, PKCS#1 or SEC1 key)")]
    Key(String),
    /// The trust bundle did not parse or is empty.
    #[error("trust bundle: {0} (expected PEM CERTIFICATE blocks of the mesh's root CAs)")]
    Roots(String),
    /// The leaf has no `spiffe://` URI SAN.
    #[error(
        "workload certificate has no spiffe:// URI SAN; the CA must issue SPIFFE certificates (spiffe://TRUST_DOMAIN/ns/NS/sa/SA)"
    )]
    NoSpiffeId,
    /// The control plane announced another identity than the certificate carries.
    #[error("workload certificate names {in_cert:?} but the control plane announced {announced:?}")]
    IdentityMismatch { in_cert: String, announced: String },
    /// The leaf does not chain to the trust bundle.
    #[error("workload certificate does not chain to the trust bundle: {0}")]
    Untrusted(String),
    /// The certificate's public key is not the private key's.
    #[error("workload certificate does not match the private key: {0}")]
    KeyMismatch(String),
    /// rustls refused the material.
    #[error("cannot build the mTLS config from the workload certificate: {0}")]
    Tls(rustls::Error),
    /// Key or CSR generation failed.
    #[error("cannot create the workload key or CSR: {0}")]
    Csr(String),
    /// A certificate arrived while no request was outstanding (its key is unknown).
    #[error("certificate received but no certificate request is pending; ignoring it")]
    Unsolicited,
}

// By hand rather than `#[from]`: the message already says the cause, so it is not also
// returned as `source()`.
impl From<rustls::Error> for IdentityError {
    fn from(e: rustls::Error) -> Self {
        IdentityError::Tls(e)
    }
}

/// Identity material given directly (tests, embedding) instead of by the control plane.
#[derive(Clone)]
pub struct StaticIdentity {
    /// Leaf certificate first, then intermediates (PEM).
    pub cert_chain_pem: String,
    /// The leaf's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_pem: String,
    /// The mesh's root certificates (PEM).
    pub root_pem: String,
}

impl fmt::Debug for StaticIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key stays out of logs and config dumps.
        f.debug_struct("StaticIdentity")
            .field(
                "cert_chain_pem",
                &format_args!("{} bytes", self.cert_chain_pem.len()),
            )
            .field("key_pem", &"<redacted>")
            .field("root_pem", &format_args!("{} bytes", self.root_pem.len()))
            .finish()
    }
}

/// A SPIFFE identity as authorization sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// `spiffe://cluster.local/ns/NS/sa/SA`.
    pub spiffe_id: String,
    /// `cluster.local/ns/NS/sa/SA` (AuthorizationPolicy `principals`).
    pub principal: String,
    /// `cluster.local`.
    pub trust_domain: String,
    /// The `ns` segment (empty when the path is not `/ns/NS/sa/SA`).
    pub namespace: String,
    /// The `sa` segment (empty when the path is not `/ns/NS/sa/SA`).
    pub service_account: String,
    /// Lowercase hex SHA-256 of the leaf certificate (DER), as in `x-forwarded-client-cert`.
    pub cert_sha256: String,
    /// The leaf's subject (`CN=..`), often empty for SPIFFE certificates.
    pub subject: String,
}

impl PeerIdentity {
    /// Parses `spiffe://TD/ns/NS/sa/SA`; None when it is not a SPIFFE URI.
    pub fn from_spiffe(uri: &str, cert_sha256: String) -> Option<PeerIdentity> {
        let rest = uri.strip_prefix("spiffe://")?;
        let (td, path) = rest.split_once('/').unwrap_or((rest, ""));
        if td.is_empty() {
            return None;
        }
        let parts: Vec<&str> = path.split('/').collect();
        let (namespace, service_account) = match parts.as_slice() {
            ["ns", ns, "sa", sa] => (ns.to_string(), sa.to_string()),
            _ => (String::new(), String::new()),
        };
        Some(PeerIdentity {
            spiffe_id: uri.to_string(),
            principal: rest.to_string(),
            trust_domain: td.to_string(),
            namespace,
            service_account,
            cert_sha256,
            subject: String::new(),
        })
    }

    /// The identity in a peer's leaf certificate (its first `spiffe://` URI SAN).
    pub fn from_cert(der: &[u8]) -> Option<PeerIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let uri = spiffe_in(&cert)?;
        let mut p = PeerIdentity::from_spiffe(&uri, sha256_hex(der))?;
        p.subject = cert.subject().to_string();
        Some(p)
    }

    /// This peer's element of `x-forwarded-client-cert`, as Envoy writes it for Istio's
    /// inbound listeners (`By` is our own identity).
    pub fn xfcc(&self, by: &str) -> String {
        format!(
            "By={by};Hash={};Subject=\"{}\";URI={}",
            self.cert_sha256,
            self.subject.replace('"', "\\\""),
            self.spiffe_id
        )
    }
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut s = String::with_capacity(64);
    for b in d.as_ref() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The first `spiffe://` URI SAN of a certificate.
pub fn spiffe_uri(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    spiffe_in(&cert)
}

fn spiffe_in(cert: &x509_parser::certificate::X509Certificate<'_>) -> Option<String> {
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|n| match n {
        x509_parser::extensions::GeneralName::URI(u) if u.starts_with("spiffe://") => {
            Some(u.to_string())
        }
        _ => None,
    })
}

/// Which ALPN an outbound mTLS connection offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAlpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    Http2,
    /// None (opaque TCP).
    None,
}

/// An installed workload identity with its ready-made TLS configs.
pub struct Identity {
    /// `spiffe://TD/ns/NS/sa/SA`.
    pub spiffe_id: String,
    /// Leaf `notBefore` (Unix seconds).
    pub not_before: i64,
    /// Leaf `notAfter` (Unix seconds).
    pub not_after: i64,
    /// Lowercase hex SHA-256 of the leaf (DER).
    pub cert_sha256: String,
    /// Where it came from.
    pub source: IdentitySource,
    /// Install counter value of this identity.
    pub generation: u64,
    server: Arc<ServerConfig>,
    /// The chain and key, for the control stream's client certificate.
    certified: Arc<rustls::sign::CertifiedKey>,
    client_h1: Arc<ClientConfig>,
    client_h2: Arc<ClientConfig>,
    client_tcp: Arc<ClientConfig>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("spiffe_id", &self.spiffe_id)
            .field("not_after", &self.not_after)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// The inbound mTLS server config (client certificate required, TLS 1.3 only).
    pub fn server_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.server)
    }

    /// An outbound mTLS client config offering `alpn`.
    pub fn client_config(&self, alpn: TlsAlpn) -> Arc<ClientConfig> {
        Arc::clone(match alpn {
            TlsAlpn::Http1 => &self.client_h1,
            TlsAlpn::Http2 => &self.client_h2,
            TlsAlpn::None => &self.client_tcp,
        })
    }

    /// True once `notAfter` has passed.
    pub fn expired(&self) -> bool {
        unix_now() > self.not_after
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// ring, with TLS 1.3's AES-128-GCM ahead of AES-256-GCM: the order in which BoringSSL
/// (Istio's Envoy sidecars) offers them on CPUs with AES instructions, so a skein pair
/// negotiates what an Envoy pair does (rustls puts AES-256 first; its extra rounds cost
/// about a third more CPU per byte of mTLS). Every suite stays offered.
fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    // A stable sort: only AES-128-GCM (TLS 1.3) moves, to the front.
    p.cipher_suites
        .sort_by_key(|s| s.suite() != rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
    Arc::new(p)
}

/// Verifies an upstream's chain against the trust bundle. The host name is not checked: mesh
/// certificates carry a SPIFFE URI, not DNS names, and the SNI is Istio's cluster key. The
/// URI is checked against `Cluster::identities` once the handshake is done.
#[derive(Debug)]
struct MeshServerVerifier {
    roots: Arc<RootCertStore>,
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for MeshServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algs.all,
        )?;
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

/// Parsed identity material, validated, before it becomes an [`Identity`].
struct Material {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
}

fn parse_chain(pem: &str) -> Result<Vec<CertificateDer<'static>>, IdentityError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| IdentityError::Chain(e.to_string()))?;
    if chain.is_empty() {
        return Err(IdentityError::Chain("no certificate found".into()));
    }
    Ok(chain)
}

fn parse_roots(pem: &str) -> Result<Arc<RootCertStore>, IdentityError> {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let c = c.map_err(|e| IdentityError::Roots(e.to_string()))?;
        roots
            .add(c)
            .map_err(|e| IdentityError::Roots(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(IdentityError::Roots("no root certificate found".into()));
    }
    Ok(Arc::new(roots))
}

/// Builds an [`Identity`] from material, checking what a peer would check.
fn build(
    m: Material,
    source: IdentitySource,
    generation: u64,
    announced: Option<&str>,
) -> Result<Identity, IdentityError> {
    let provider = provider();
    let leaf = m.chain[0].clone();
    let Checked {
        spiffe_id,
        not_before,
        not_after,
        certified,
    } = check(&m, &provider, announced)?;
    let server = server_config(&m, &provider)?;
    let verifier = Arc::new(MeshServerVerifier {
        roots: Arc::clone(&m.roots),
        algs: provider.signature_verification_algorithms,
    });
    let client = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, IdentityError> {
        let mut c = ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_auth_cert(m.chain.clone(), m.key.clone_key())?;
        c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        c.resumption = rustls::client::Resumption::disabled();
        Ok(Arc::new(c))
    };
    Ok(Identity {
        spiffe_id,
        not_before,
        not_after,
        cert_sha256: sha256_hex(leaf.as_ref()),
        source,
        generation,
        server,
        certified,
        client_h1: client(&[b"http/1.1"])?,
        client_h2: client(&[b"h2"])?,
        client_tcp: client(&[b"istio-peer-exchange", b"istio"])?,
    })
}

/// What [`check`] found in a certificate.
struct Checked {
    spiffe_id: String,
    not_before: i64,
    not_after: i64,
    certified: Arc<rustls::sign::CertifiedKey>,
}

/// The leaf's SPIFFE identity (the announced one, if any) and validity; the chain to the
/// bundle; the key against the leaf.
fn check(
    m: &Material,
    provider: &Arc<CryptoProvider>,
    announced: Option<&str>,
) -> Result<Checked, IdentityError> {
    let leaf = m.chain[0].clone();
    let (not_before, not_after) = {
        let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
            .map_err(|e| IdentityError::Chain(format!("leaf does not parse: {e}")))?;
        (
            cert.validity().not_before.timestamp(),
            cert.validity().not_after.timestamp(),
        )
    };
    let spiffe_id = spiffe_uri(leaf.as_ref()).ok_or(IdentityError::NoSpiffeId)?;
    if let Some(a) = announced
        && !a.is_empty()
        && a != spiffe_id
    {
        return Err(IdentityError::IdentityMismatch {
            in_cert: spiffe_id,
            announced: a.to_string(),
        });
    }
    // Chain check at a moment the leaf is valid: an expired certificate is still installed
    // (a peer will refuse it, as with Envoy), but one from another CA is not.
    let at = unix_now().clamp(not_before, not_after.max(not_before));
    let parsed = ParsedCertificate::try_from(&leaf)
        .map_err(|e| IdentityError::Chain(format!("leaf is not a usable certificate: {e}")))?;
    rustls::client::verify_server_cert_signed_by_trust_anchor(
        &parsed,
        &m.roots,
        &m.chain[1..],
        UnixTime::since_unix_epoch(Duration::from_secs(at.max(0) as u64)),
        provider.signature_verification_algorithms.all,
    )
    .map_err(|e| IdentityError::Untrusted(e.to_string()))?;
    let signing = provider
        .key_provider
        .load_private_key(m.key.clone_key())
        .map_err(|e| IdentityError::Key(e.to_string()))?;
    let ck = rustls::sign::CertifiedKey::new(m.chain.clone(), signing);
    match ck.keys_match() {
        // Unknown: the key type cannot tell; the first handshake will.
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => return Err(IdentityError::KeyMismatch(e.to_string())),
    }

    Ok(Checked {
        spiffe_id,
        not_before,
        not_after,
        certified: Arc::new(ck),
    })
}

/// The inbound mTLS server config: TLS 1.3, a client certificate chained to the bundle, no
/// resumption.
fn server_config(
    m: &Material,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<ServerConfig>, IdentityError> {
    let client_verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&m.roots), Arc::clone(provider))
            .build()
            .map_err(|e| IdentityError::Roots(e.to_string()))?;
    let mut server = ServerConfig::builder_with_provider(Arc::clone(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(m.chain.clone(), m.key.clone_key())?;
    server.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    // Every connection gets a full handshake, so the peer's certificate (and its expiry) is
    // checked each time rather than trusted from an earlier session.
    server.session_storage = Arc::new(NoServerSessionStorage {});
    server.send_tls13_tickets = 0;

    Ok(Arc::new(server))
}

#[derive(Debug, Default)]
struct Book {
    installs: u64,
    requests: u64,
    next_renewal: Option<i64>,
    last_error: Option<String>,
}

/// The control stream's client certificate: the store's current identity while it is valid
/// (the control plane renews only for the identity it names), none before the first one or
/// once it has expired (the proxy then authenticates with its bootstrap token).
#[derive(Debug)]
pub(crate) struct CurrentClientCert(pub(crate) Arc<IdentityStore>);

impl rustls::client::ResolvesClientCert for CurrentClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let id = self.0.current()?;
        (!id.expired()).then(|| Arc::clone(&id.certified))
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some_and(|id| !id.expired())
    }
}

/// Holds the current identity; shared by listeners, clusters and the control source.
#[derive(Debug, Default)]
pub struct IdentityStore {
    current: ArcSwapOption<Identity>,
    /// Hands out generation numbers; the current one is the installed identity's.
    counter: AtomicU64,
    /// Serialises installs (the control source and the handle may race).
    install: Mutex<()>,
    book: Mutex<Book>,
}

impl IdentityStore {
    /// The installed identity, if any.
    pub fn current(&self) -> Option<Arc<Identity>> {
        self.current.load_full()
    }

    /// Generation of the installed identity (0: none yet).
    pub fn generation(&self) -> u64 {
        self.current.load().as_ref().map_or(0, |i| i.generation)
    }

    /// Validates and installs static material.
    pub fn install_static(&self, s: &StaticIdentity) -> Result<Arc<Identity>, IdentityError> {
        let key = PrivateKeyDer::from_pem_slice(s.key_pem.as_bytes())
            .map_err(|e| IdentityError::Key(e.to_string()))?;
        let m = Material {
            chain: parse_chain(&s.cert_chain_pem)?,
            key,
            roots: parse_roots(&s.root_pem)?,
        };
        self.install(m, IdentitySource::Static, None)
    }

    /// Installs a chain signed for `key` (the control plane's answer to our CSR).
    pub fn install_signed(
        &self,
        key: &PendingKey,
        cert_chain_pem: &str,
        root_cert_pem: &str,
        announced: &str,
    ) -> Result<Arc<Identity>, IdentityError> {
        let m = Material {
            chain: parse_chain(cert_chain_pem)?,
            key: key.der(),
            roots: parse_roots(root_cert_pem)?,
        };
        self.install(m, IdentitySource::Control, Some(announced))
    }

    fn install(
        &self,
        m: Material,
        source: IdentitySource,
        announced: Option<&str>,
    ) -> Result<Arc<Identity>, IdentityError> {
        let _serial = self.install.lock().unwrap_or_else(|p| p.into_inner());
        // Generations only grow; a failed build burns a number, which is harmless.
        let generation = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        let id = Arc::new(build(m, source, generation, announced)?);
        if id.expired() {
            tracing::warn!(identity = %id.spiffe_id, not_after = id.not_after, "installed workload certificate is already expired; peers will refuse it");
        }
        self.current.store(Some(Arc::clone(&id)));
        self.with_book(|b| {
            b.last_error = None;
            b.installs += 1;
        });
        tracing::info!(identity = %id.spiffe_id, not_after = id.not_after, ?source, "workload certificate installed");
        Ok(id)
    }

    fn with_book<T>(&self, f: impl FnOnce(&mut Book) -> T) -> T {
        f(&mut self.book.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn note_request(&self) {
        self.with_book(|b| b.requests += 1);
    }

    pub(crate) fn note_error(&self, e: &str) {
        self.with_book(|b| b.last_error = Some(e.to_string()));
    }

    pub(crate) fn note_next_renewal(&self, at: Option<i64>) {
        self.with_book(|b| b.next_renewal = at);
    }

    /// The status for admin and the handle.
    pub fn status(&self) -> IdentityStatus {
        let cur = self.current();
        let (installs, requests, next_renewal, last_error) =
            self.with_book(|b| (b.installs, b.requests, b.next_renewal, b.last_error.clone()));
        IdentityStatus {
            loaded: cur.is_some(),
            identity: cur.as_ref().map(|i| i.spiffe_id.clone()),
            not_after: cur.as_ref().map(|i| i.not_after),
            expired: cur.as_ref().is_some_and(|i| i.expired()),
            source: cur.as_ref().map(|i| i.source),
            cert_sha256: cur.as_ref().map(|i| i.cert_sha256.clone()),
            installs,
            requests,
            next_renewal,
            last_error,
        }
    }
}

/// A freshly generated key waiting for its certificate. Dropped (and gone) once answered.
pub struct PendingKey {
    key: rcgen::KeyPair,
}

impl fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PendingKey(<redacted>)")
    }
}

impl PendingKey {
    /// A new ECDSA P-256 key and a PEM CSR for it. The subject is only informative: the
    /// control plane decides the identity from the pod's ServiceAccount.
    pub fn generate(node: &str) -> Result<(PendingKey, String), IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| IdentityError::Csr(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())
            .map_err(|e| IdentityError::Csr(e.to_string()))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if !node.is_empty() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, node);
        }
        let csr = params
            .serialize_request(&key)
            .and_then(|c| c.pem())
            .map_err(|e| IdentityError::Csr(e.to_string()))?;
        Ok((PendingKey { key }, csr))
    }

    fn der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key.serialize_der().into())
    }
}

/// Lower bound between renewals, so a certificate that is (nearly) expired on arrival cannot
/// make the proxy ask in a tight loop.
pub const MIN_RENEWAL_DELAY: Duration = Duration::from_millis(500);

/// Upper bound between renewals, so an absurd `notAfter` cannot overflow a timer.
pub const MAX_RENEWAL_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// When to renew a certificate received at `received_unix` (seconds, fractional) that
/// expires at `not_after`: after 80% of the life left at receipt.
pub fn renewal_delay(received_unix: f64, not_after: i64) -> Duration {
    let left = (not_after as f64 - received_unix).max(0.0);
    Duration::try_from_secs_f64(left * 0.8)
        .unwrap_or(MAX_RENEWAL_DELAY)
        .clamp(MIN_RENEWAL_DELAY, MAX_RENEWAL_DELAY)
}

/// Now as fractional Unix seconds.
pub fn unix_now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mesh_tls_prefers_aes_128_gcm_and_keeps_every_suite() {
        use rustls::CipherSuite as C;
        let ours: Vec<C> = provider().cipher_suites.iter().map(|s| s.suite()).collect();
        let ring: Vec<C> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(|s| s.suite())
            .collect();
        assert_eq!(ours[0], C::TLS13_AES_128_GCM_SHA256);
        assert_eq!(ours[1], C::TLS13_AES_256_GCM_SHA384);
        let mut a = ours.clone();
        let mut b = ring.clone();
        a.sort_by_key(|s| u16::from(*s));
        b.sort_by_key(|s| u16::from(*s));
        assert_eq!(a, b, "the same suites, only reordered");
        // TLS 1.2 suites keep ring's order after the TLS 1.3 ones.
        let tls12 = |v: &[C]| -> Vec<C> {
            v.iter()
                .copied()
                .filter(|s| !format!("{s:?}").starts_with("TLS13"))
                .collect()
        };
        assert_eq!(tls12(&ours), tls12(&ring));
    }

    #[test]
    fn spiffe_ids_parse() {
        let p = PeerIdentity::from_spiffe("spiffe://cluster.local/ns/blog/sa/web", "h".into())
            .expect("parses");
        assert_eq!(p.principal, "cluster.local/ns/blog/sa/web");
        assert_eq!(p.trust_domain, "cluster.local");
        assert_eq!(p.namespace, "blog");
        assert_eq!(p.service_account, "web");
        let odd =
            PeerIdentity::from_spiffe("spiffe://td/other/path", String::new()).expect("parses");
        assert_eq!(odd.namespace, "");
        assert_eq!(odd.principal, "td/other/path");
        assert!(PeerIdentity::from_spiffe("https://x/ns/a/sa/b", String::new()).is_none());
        assert!(PeerIdentity::from_spiffe("spiffe:///ns/a/sa/b", String::new()).is_none());
    }

    #[test]
    fn renewal_is_at_eighty_percent_of_the_life_left() {
        assert_eq!(renewal_delay(1000.0, 1100), Duration::from_secs(80));
        assert_eq!(renewal_delay(1000.0, 1003), Duration::from_secs_f64(2.4));
        // Expired or nearly so: not a tight loop.
        assert_eq!(renewal_delay(1000.0, 900), MIN_RENEWAL_DELAY);
        assert_eq!(renewal_delay(1000.0, i64::MAX), MAX_RENEWAL_DELAY);
        assert_eq!(renewal_delay(f64::NAN, 1), MIN_RENEWAL_DELAY);
    }

    #[test]
    fn csr_is_pem_and_key_is_redacted() {
        let (k, csr) = PendingKey::generate("web-0").expect("csr");
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
        assert_eq!(format!("{k:?}"), "PendingKey(<redacted>)");
        let s = StaticIdentity {
            cert_chain_pem: "c".into(),
            key_pem: "SECRET".into(),
            root_pem: "r".into(),
        };
        assert!(!format!("{s:?}").contains("SECRET"));
    }

    #[test]
    fn bad_material_is_refused_with_a_reason() {
        let store = IdentityStore::default();
        let e = store
            .install_static(&StaticIdentity {
                cert_chain_pem: String::new(),
                key_pem: String::new(),
                root_pem: String::new(),
            })
            .expect_err("empty");
        assert!(e.to_string().contains("private key"), "{e}");
        assert!(store.current().is_none());
        assert_eq!(store.generation(), 0);
    }

    /// A full in-memory handshake; the error of whichever side refused.
    fn handshake(
        client: Arc<ClientConfig>,
        server: Arc<ServerConfig>,
    ) -> Result<(), rustls::Error> {
        let name = ServerName::try_from("web.blog.svc.cluster.local").expect("name");
        let mut c = rustls::ClientConnection::new(client, name)?;
        let mut s = rustls::ServerConnection::new(server)?;
        fn pump(
            from: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
            to: &mut impl std::ops::DerefMut<Target = rustls::ConnectionCommon<impl Sized>>,
        ) -> Result<(), rustls::Error> {
            let mut buf = Vec::new();
            while from.wants_write() {
                from.write_tls(&mut buf).expect("write to a Vec");
            }
            let mut rd = &buf[..];
            while !rd.is_empty() {
                to.read_tls(&mut rd).expect("read from a slice");
                to.process_new_packets()?;
            }
            Ok(())
        }
        for _ in 0..10 {
            pump(&mut c, &mut s)?;
            pump(&mut s, &mut c)?;
            if !c.is_handshaking() && !s.is_handshaking() && !c.wants_write() && !s.wants_write() {
                return Ok(());
            }
        }
        Err(rustls::Error::General(
            "the handshake made no progress".into(),
        ))
    }

    #[test]
    fn every_root_of_the_bundle_is_trusted_for_peers() {
        use crate::test_util::pki::{Ca, spiffe};
        let (a, b, c) = (Ca::new("root A"), Ca::new("root B"), Ca::new("root C"));
        let bundle = format!("{}{}", a.pem, b.pem);
        let ours = IdentityStore::default();
        let mut mine = a.identity(&spiffe("blog", "web"));
        mine.root_pem = bundle.clone();
        let ours = ours.install_static(&mine).expect("installed");

        for (name, ca, trusted) in [("A", &a, true), ("B", &b, true), ("C", &c, false)] {
            // The peer trusts all three, so any refusal is ours.
            let mut peer = ca.identity(&spiffe("blog", "peer"));
            peer.root_pem = format!("{}{}{}", a.pem, b.pem, c.pem);
            let peer = IdentityStore::default()
                .install_static(&peer)
                .expect("peer installed");
            let outbound = handshake(ours.client_config(TlsAlpn::None), peer.server_config());
            let inbound = handshake(peer.client_config(TlsAlpn::None), ours.server_config());
            assert_eq!(
                outbound.is_ok(),
                trusted,
                "upstream from root {name}: {outbound:?}"
            );
            assert_eq!(
                inbound.is_ok(),
                trusted,
                "client from root {name}: {inbound:?}"
            );
        }
    }
}
