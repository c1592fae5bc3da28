//! Rotation of a control-plane identity: when to ask for a certificate (none loaded, renewal
//! due at 80% of its life, an unanswered request, a refused one after backoff), the key of
//! the outstanding request, and installing the answer. The control-plane stream carries the
//! messages (`snapshot::control`).

use std::sync::Arc;
use std::time::Duration;

use skein_snapshot::stream::ProxyMessage;
use tokio::time::Instant;

use super::{IdentityStore, PendingKey, renewal_delay, unix_now_f64};
use crate::backoff::Backoff;

/// First retry delay after a refused or unusable certificate.
const CERT_BACKOFF_START: Duration = Duration::from_millis(500);
/// Longest retry delay for certificates.
const CERT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// How long a certificate request may stay unanswered before it is sent again.
pub(crate) const CERT_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// The certificate side of the stream; lives across sessions.
#[derive(Debug)]
pub(crate) struct CertState {
    store: Arc<IdentityStore>,
    node: String,
    /// The key of the outstanding request.
    pending: Option<PendingKey>,
    /// When to send the next request (renewal, retry or answer timeout); None: only when
    /// no certificate is loaded.
    next_at: Option<Instant>,
    backoff: Backoff,
}

impl CertState {
    pub(crate) fn new(store: Arc<IdentityStore>, node: String) -> Self {
        CertState {
            store,
            node,
            pending: None,
            next_at: None,
            backoff: Backoff::between(CERT_BACKOFF_START, CERT_BACKOFF_CAP),
        }
    }

    /// When the next request is due (None: only once no certificate is loaded).
    pub(crate) fn next_at(&self) -> Option<Instant> {
        self.next_at
    }

    /// Whether a certificate that is still valid is loaded (presented on the control stream
    /// instead of the bootstrap token).
    pub(crate) fn has_valid_certificate(&self) -> bool {
        self.store.current().is_some_and(|id| !id.expired())
    }

    /// The store, for the control stream's client certificate.
    pub(crate) fn store(&self) -> &Arc<IdentityStore> {
        &self.store
    }

    /// Whether a new session should ask at once.
    pub(crate) fn wanted_on_connect(&self) -> bool {
        self.store.current().is_none()
            || self.pending.is_some()
            || self.next_at.is_some_and(|t| t <= Instant::now())
    }

    /// A fresh key and its request. The previous pending key, if any, is dropped: an answer
    /// to an older request no longer matches.
    pub(crate) fn request(&mut self) -> Option<ProxyMessage> {
        match PendingKey::generate(&self.node) {
            Ok((key, csr_pem)) => {
                self.pending = Some(key);
                self.next_at = Some(Instant::now() + CERT_ANSWER_TIMEOUT);
                self.store.note_request();
                tracing::debug!(node = %self.node, "requesting a workload certificate");
                Some(ProxyMessage::CertificateRequest { csr_pem })
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot create a certificate request; retrying");
                self.fail(&e.to_string());
                None
            }
        }
    }

    fn fail(&mut self, why: &str) {
        self.store.note_error(why);
        self.next_at = Some(Instant::now() + self.backoff.next_delay());
    }

    /// Installs a certificate answering our request and schedules its renewal.
    pub(crate) fn on_certificate(
        &mut self,
        chain: &str,
        roots: &str,
        identity: &str,
        not_after: i64,
    ) {
        let Some(key) = self.pending.take() else {
            tracing::warn!(%identity, "ignoring a certificate that answers no pending request");
            return;
        };
        let received = unix_now_f64();
        match self.store.install_signed(&key, chain, roots, identity) {
            Ok(id) => {
                // The earlier of what the control plane said and what the certificate says.
                let delay = renewal_delay(received, not_after.min(id.not_after));
                self.next_at = Some(Instant::now() + delay);
                self.store
                    .note_next_renewal(Some((received + delay.as_secs_f64()) as i64));
                self.backoff.reset();
            }
            Err(e) => {
                tracing::warn!(error = %e, "control plane sent an unusable certificate; keeping the current one and retrying");
                self.fail(&e.to_string());
            }
        }
    }

    pub(crate) fn on_error(&mut self, message: &str) {
        tracing::warn!(error = %message, "control plane refused the certificate request; keeping the current certificate and retrying");
        self.pending = None;
        self.fail(&format!("certificate request refused: {message}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signs `csr_pem` as `spiffe` for `secs` with a throwaway CA; returns (chain, root).
    fn sign(csr_pem: &str, spiffe: &str, secs: i64) -> (String, String, i64) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().expect("ca key");
        let root = ca.self_signed(&ca_key).expect("ca").pem();
        let issuer = Issuer::new(ca, ca_key);
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem).expect("csr");
        let now = time::OffsetDateTime::now_utc();
        csr.params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        csr.params.subject_alt_names = vec![SanType::URI(spiffe.try_into().expect("ia5"))];
        csr.params.not_before = now - time::Duration::minutes(1);
        csr.params.not_after = now + time::Duration::seconds(secs);
        let chain = csr.signed_by(&issuer).expect("sign").pem();
        (chain, root, csr.params.not_after.unix_timestamp())
    }

    #[tokio::test(start_paused = true)]
    async fn certificate_requests_follow_the_renewal_schedule_and_backoff() {
        let store = Arc::new(IdentityStore::default());
        let mut c = CertState::new(Arc::clone(&store), "web-0".into());
        assert!(c.wanted_on_connect(), "no certificate yet");
        let Some(ProxyMessage::CertificateRequest { .. }) = c.request() else {
            panic!("a certificate request");
        };
        assert_eq!(c.next_at, Some(Instant::now() + CERT_ANSWER_TIMEOUT));

        // Refused: retried after the backoff (500 ms ±20%, then doubling).
        c.on_error("CA busy");
        let first = c.next_at.expect("retry scheduled") - Instant::now();
        assert!(
            first >= Duration::from_millis(400) && first <= Duration::from_millis(600),
            "{first:?}"
        );
        assert!(store.status().last_error.is_some());
        c.request();
        c.on_error("CA busy");
        let second = c.next_at.expect("retry scheduled") - Instant::now();
        assert!(
            second >= Duration::from_millis(800) && second <= Duration::from_millis(1200),
            "{second:?}"
        );

        // Answered with a certificate valid for 100 s: renewal after ~80 s.
        let id = "spiffe://cluster.local/ns/blog/sa/web";
        let Some(ProxyMessage::CertificateRequest { csr_pem }) = c.request() else {
            panic!("a certificate request");
        };
        let (chain, root, not_after) = sign(&csr_pem, id, 100);
        c.on_certificate(&chain, &root, id, not_after);
        let st = store.status();
        assert!(st.loaded && st.last_error.is_none(), "{st:?}");
        assert_eq!(st.identity.as_deref(), Some(id));
        let renew = c.next_at.expect("renewal scheduled") - Instant::now();
        assert!(
            renew >= Duration::from_secs(78) && renew <= Duration::from_secs(81),
            "{renew:?}"
        );
        assert!(
            !c.wanted_on_connect(),
            "a fresh certificate is not renewed on reconnect"
        );
        tokio::time::advance(renew - Duration::from_secs(1)).await;
        assert!(!c.wanted_on_connect());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(c.wanted_on_connect(), "renewal is due");
        // The backoff started over after the success.
        assert_eq!(c.backoff.next, CERT_BACKOFF_START);

        // A certificate nobody asked for is ignored.
        let generation = store.generation();
        c.on_certificate(&chain, &root, id, not_after);
        assert_eq!(store.generation(), generation);
    }
}
