//! skein-proxy: the skein data plane, one per workload (sidecar) plus gateways.
//!
//! - [`run`] / [`run_blocking`]: the entry points the `skein` binary calls.
//! - [`start`] / [`start_with_source`]: start in-process and get a [`ProxyHandle`]
//!   (tests, embedding).
//!
//! # Layout, in the order a request meets it
//!
//! - `listen/`: where connections come in: binding, the one accept loop, protocol
//!   detection and PeerAuthentication on inbound, gateway TLS, snapshot listeners, drain.
//! - `conn.rs`, `authority.rs`: per-connection facts; the request authority.
//! - `http/`: one HTTP request, phase by phase: `request` (prepare), `inbound` (XFCC,
//!   authorization), `outbound` (virtual host, route, action), `forward` (tries) or
//!   `passthrough`; `reply` is the table of every answer the proxy makes itself, `finish`
//!   the request's single end (log, metrics, pool return).
//! - `tcp.rs`: opaque TCP, outbound and inbound.
//! - `route/`: what a VirtualService compiles to (matches, actions, retries, faults; pure).
//! - `policy/`: is this allowed? AuthorizationPolicy and PeerAuthentication (pure).
//! - `upstream/`: where a request leaves: clusters, endpoints, pools, load balancing,
//!   outlier detection, the retry budget, the request body.
//! - `identity/`: the workload certificate: made, checked, rotated.
//! - `snapshot/`: config in: the compiled form, its sources (file, control plane).
//! - `telemetry/`: metrics, the access log and distributed tracing (`telemetry/trace/`).
//! - `proxy.rs`, `shared.rs`, `config.rs`, `admin.rs`: start-up and the handle, the state
//!   every connection shares, the proxy's own config, the admin endpoint.
//! - `admin_metrics.rs`: the merged metrics endpoint (Istio's `:15020/stats/prometheus`):
//!   the proxy's metrics and the app's own, scraped with a timeout and a size cap.
//!
//! The config is a [`skein_snapshot::Snapshot`] compiled and held in an `ArcSwap`; requests
//! and connections keep the `Arc` they started with.
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]

mod admin;
mod admin_metrics;
mod authority;
mod backoff;
mod config;
mod conn;
mod http;
mod identity;
mod listen;
mod policy;
mod proxy;
mod route;
mod shared;
mod snapshot;
mod tcp;
mod telemetry;
#[cfg(any(test, feature = "test-util"))]
pub mod test_util;
mod upstream;

/// Header hygiene shared with other HTTP intermediaries (the local runtime's ingress):
/// hop-by-hop removal and `x-forwarded-for`.
pub mod headers {
    pub use crate::http::headers::{append_forwarded_for, strip_hop_by_hop};
}

pub use config::{
    AccessLogSink, AppMetrics, ControlTls, InboundConfig, Limits, Mode, ProxyConfig, SourceConfig,
    TlsListenerConfig,
};
#[cfg(feature = "fuzzing")]
pub use http::fuzzing;
pub use identity::{IdentityError, IdentitySource, IdentityStatus, PeerIdentity, StaticIdentity};
pub use listen::bind::BindError;
pub use proxy::{BoundAddrs, ProxyHandle, run, run_blocking, start, start_with_source};
pub use snapshot::CompileError;
pub use snapshot::control::{ControlNack, ControlSource, ControlStatus};
pub use snapshot::source::{
    ApplyError, ConfigSource, ControlState, FileSource, SnapshotSink, SourceError, SourceFuture,
};

/// Errors starting or running the proxy.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A listener could not be bound.
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] telemetry::access_log::AccessLogError),
    /// The gateway certificate could not be loaded.
    #[error(transparent)]
    Tls(#[from] listen::gateway::TlsError),
    /// The workload identity could not be installed.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// A snapshot was not applied.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The initial snapshot could not be read.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Two inbound listeners would share one cluster name.
    #[error("two inbound listeners use cluster {name:?}; each inbound listener needs its own port")]
    DuplicateInbound { name: String },
    /// The tokio runtime could not be built or signals could not be installed.
    #[error("runtime setup failed: {0}")]
    Runtime(std::io::Error),
}
