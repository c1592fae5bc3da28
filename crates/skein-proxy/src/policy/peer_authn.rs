//! PeerAuthentication on an inbound port: which connections the sidecar accepts in
//! plaintext, whose TLS it terminates, and the record of a refused connection (pure, no I/O).

use std::net::SocketAddr;

use skein_snapshot::MtlsMode;

use crate::telemetry::access_log::{LogRecord, ResponseFlags};

/// Whether a plaintext connection (HTTP or opaque TCP) is accepted; `Err` says why not.
pub(crate) fn plaintext(mode: MtlsMode, http: bool) -> Result<(), &'static str> {
    match (mode, http) {
        (MtlsMode::Strict, true) => Err("plaintext HTTP under STRICT mTLS"),
        (MtlsMode::Strict, false) => Err("plaintext TCP under STRICT mTLS"),
        _ => Ok(()),
    }
}

/// Whether a TLS connection's ClientHello is worth reading: under DISABLE all TLS is the
/// app's.
pub(crate) fn peek_hello(mode: MtlsMode) -> bool {
    mode != MtlsMode::Disable
}

/// Whether the sidecar terminates a TLS connection (mesh mTLS) or passes it to the app:
/// DISABLE, never; PERMISSIVE, only a mesh peer's; STRICT, always.
pub(crate) fn terminates(mode: MtlsMode, mesh: bool) -> bool {
    match mode {
        MtlsMode::Disable => false,
        MtlsMode::Permissive => mesh,
        MtlsMode::Strict => true,
    }
}

/// The access-log record of a connection refused before it was read (no filter chain for
/// it, in Envoy's words: flag NR, details `filter_chain_not_found`).
pub(crate) fn refusal(local: SocketAddr, remote: SocketAddr) -> Box<LogRecord> {
    let mut rec = Box::new(LogRecord::new(local, remote));
    rec.flags = ResponseFlags::NR;
    rec.details = "filter_chain_not_found".into();
    rec
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_refuses_plaintext_only() {
        assert_eq!(
            plaintext(MtlsMode::Strict, true),
            Err("plaintext HTTP under STRICT mTLS")
        );
        assert_eq!(
            plaintext(MtlsMode::Strict, false),
            Err("plaintext TCP under STRICT mTLS")
        );
        for mode in [MtlsMode::Permissive, MtlsMode::Disable] {
            assert_eq!(plaintext(mode, true), Ok(()));
            assert_eq!(plaintext(mode, false), Ok(()));
        }
    }

    #[test]
    fn who_terminates_tls() {
        assert!(!peek_hello(MtlsMode::Disable));
        assert!(peek_hello(MtlsMode::Permissive) && peek_hello(MtlsMode::Strict));
        assert!(!terminates(MtlsMode::Disable, true));
        assert!(!terminates(MtlsMode::Permissive, false));
        assert!(terminates(MtlsMode::Permissive, true));
        assert!(terminates(MtlsMode::Strict, false));
    }

    #[test]
    fn refusal_is_nr_filter_chain_not_found() {
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let r = refusal(a, a);
        assert_eq!(r.flags, ResponseFlags::NR);
        assert_eq!(r.details, "filter_chain_not_found");
    }
}
