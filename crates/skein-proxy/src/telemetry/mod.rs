//! What the proxy reports: Istio's standard metrics and the Envoy-format access log.

pub(crate) mod access_log;
pub(crate) mod exchange;
pub(crate) mod log_policy;
pub(crate) mod metrics;
pub(crate) mod overrides;
pub(crate) mod peer;
