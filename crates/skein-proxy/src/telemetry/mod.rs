//! What the proxy reports: Istio's standard metrics, the Envoy-format access log and
//! distributed tracing.

pub(crate) mod access_log;
pub(crate) mod exchange;
pub(crate) mod grpc;
pub(crate) mod metrics;
pub(crate) mod peer;
pub(crate) mod trace;
