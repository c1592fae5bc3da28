//! State shared by every listener and connection: the current config, the access log, the
//! metrics, the workload identity and the proxy's flags.

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use arc_swap::ArcSwap;

use crate::config::ProxyConfig;
use crate::identity::IdentityStore;
use crate::snapshot::Compiled;
use crate::snapshot::control::ControlStatus;
use crate::snapshot::source::ControlState;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;

/// State shared by every listener and connection.
#[derive(Debug)]
pub struct Shared {
    /// The current config.
    pub current: ArcSwap<Compiled>,
    /// Access log.
    pub access_log: AccessLog,
    /// Metrics.
    pub metrics: Metrics,
    /// The proxy's own config.
    pub config: ProxyConfig,
    /// True once a snapshot was applied.
    pub loaded: AtomicBool,
    /// True once the static listeners are bound.
    pub bound: AtomicBool,
    /// True once draining started (`/ready` then answers 503).
    pub draining: AtomicBool,
    /// Asked to quit (admin /quitquitquit).
    pub quit: tokio::sync::Notify,
    /// Bound inbound listener addresses, index-aligned with `config.inbound` (set once the
    /// listeners are bound; for /config_dump).
    pub inbound_addrs: OnceLock<Vec<SocketAddr>>,
    /// State of the control-plane stream (/control, /config_dump).
    pub control: ControlState,
    /// The workload identity (mTLS certificate, key, trust bundle).
    pub identity: Arc<IdentityStore>,
    /// Span export (one task; requests only queue).
    pub(crate) traces: crate::telemetry::trace::export::Exporter,
}

impl Shared {
    /// Hands a finished record to the access log under the policy it started with (HTTP),
    /// else the current one.
    pub fn log_access(&self, mut rec: Box<crate::telemetry::access_log::LogRecord>) {
        let policy = match rec.policy.take() {
            Some(p) => p,
            None => Arc::clone(&self.current.load().access_log),
        };
        self.access_log.log(rec, policy);
    }

    /// The control-plane stream's status with the identity's (what /control serves).
    pub fn control_status(&self) -> ControlStatus {
        let mut s = self.control.get();
        s.identity = self.identity.status();
        s
    }
}
