//! The compiled form of a snapshot.
//!
//! A [`Compiled`] is immutable; the proxy holds the current one in an `ArcSwap`. Each request
//! and connection loads the `Arc` once and keeps it, so in-flight work finishes on the config
//! it started with. Clusters whose definition did not change are carried over by `Arc`, so
//! their pools and counters survive a push.

use std::collections::HashMap;
use std::sync::Arc;

pub(crate) mod control;
pub(crate) mod source;

use skein_snapshot::names::Direction;
use skein_snapshot::{
    AuthzAction, AuthzPolicy, AuthzRule, BLACKHOLE_CLUSTER, Cluster, Endpoint,
    INBOUND_PASSTHROUGH_CLUSTER, ListenerKind, OutboundTrafficPolicy, PASSTHROUGH_CLUSTER,
    Protocol, Snapshot, SnapshotError,
};

use crate::config::{InboundConfig, Mode, ProxyConfig};
use crate::identity::IdentityStore;
use crate::policy::authz::{AuthzError, Engine};
use crate::policy::jwt::Authn;
use crate::route::{CompiledRouteConfig, RouteError};
use crate::telemetry::exchange::OwnPeer;
use crate::telemetry::metrics::{Reporter, RequestMetrics, ServiceLabel, base_labels};
use crate::telemetry::peer::PeerMetadata;
use crate::upstream::cluster::ClusterState;

/// Errors turning a snapshot into run-time config. The previous config stays in force.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The snapshot is inconsistent.
    #[error("snapshot {version:?} rejected: {error}")]
    Snapshot {
        version: String,
        error: SnapshotError,
    },
    /// A route does not compile.
    #[error("snapshot {version:?} rejected: {error}")]
    Route { version: String, error: RouteError },
    /// The AuthorizationPolicies cannot be enforced even with DENY-all stand-ins for the
    /// ones that do not compile (not expected: stand-ins always compile).
    #[error("snapshot {version:?} rejected: {error}")]
    Authz { version: String, error: AuthzError },
    /// The metric overrides do not compile.
    #[error("snapshot {version:?} rejected: {error}")]
    Metrics {
        version: String,
        error: crate::telemetry::metrics::overrides::OverrideError,
    },
    /// The access-log settings (format, filter) do not compile.
    #[error("snapshot {version:?} rejected: {error}")]
    AccessLog {
        version: String,
        error: crate::telemetry::access_log::policy::LogPolicyError,
    },
}

/// A snapshot compiled for the data path.
#[derive(Debug)]
pub struct Compiled {
    /// The snapshot as received (for /config_dump).
    pub snapshot: Arc<Snapshot>,
    /// Route configs by name.
    pub route_configs: HashMap<String, CompiledRouteConfig>,
    /// Clusters by name.
    pub clusters: HashMap<String, Arc<ClusterState>>,
    /// Snapshot listeners by name.
    pub listeners: HashMap<String, ListenerKind>,
    /// REGISTRY_ONLY.
    pub registry_only: bool,
    /// The sidecar's inbound clusters (`inbound|PORT||`), index-aligned with
    /// `ProxyConfig::inbound` (empty for a gateway).
    pub inbound: Vec<Arc<ClusterState>>,
    /// Metrics for PassthroughCluster.
    pub passthrough_metrics: Arc<RequestMetrics>,
    /// Metrics for BlackHoleCluster.
    pub blackhole_metrics: Arc<RequestMetrics>,
    /// Metrics for requests without a route.
    pub no_route_metrics: Arc<RequestMetrics>,
    /// The proxy's own peer-metadata headers (None before a snapshot names the workload):
    /// answered to a caller that sent its own.
    pub own_peer: Option<Arc<OwnPeer>>,
    /// The inbound AuthorizationPolicies, compiled.
    pub authz: Engine,
    /// The RequestAuthentication rules, compiled (None: no rule applies).
    pub jwt: Option<Arc<Authn>>,
    /// AuthorizationPolicies that did not compile, each replaced by a DENY-all stand-in of
    /// the same name (for /config_dump and `skein_config_policy_errors_total`).
    pub policy_errors: Vec<String>,
    /// `telemetry.tracing`, compiled.
    pub(crate) tracing: Arc<crate::telemetry::trace::Config>,
    /// The access-log settings (telemetry.access_log), compiled.
    pub access_log: Arc<crate::telemetry::access_log::policy::LogPolicy>,
    /// Telemetry metric overrides (None: none apply).
    pub metric_overrides: Option<Arc<crate::telemetry::metrics::overrides::MetricOverrides>>,
}

/// The workload's AuthorizationPolicies, compiled one by one: a policy that does not compile
/// (e.g. a bad CIDR that slipped past validation) becomes a DENY policy of the same name with
/// one rule that matches everything, so the traffic it selects is denied (fail closed, and the
/// access log's matched policy names it) while the rest of the snapshot still applies. An
/// AUDIT policy that does not compile is left out (it never allowed or denied anything).
fn compile_authz(policies: &[AuthzPolicy]) -> (Result<Engine, AuthzError>, Vec<String>) {
    let mut errors = Vec::new();
    let mut effective: Vec<AuthzPolicy> = Vec::with_capacity(policies.len());
    for p in policies {
        let Err(e) = Engine::compile(std::slice::from_ref(p)) else {
            effective.push(p.clone());
            continue;
        };
        let error = format!("{e}; the workload's traffic for this policy is denied");
        tracing::warn!(policy = %format!("{}/{}", p.namespace, p.name), error = %e, "AuthorizationPolicy cannot be compiled; a DENY-all stand-in of the same name denies the workload's traffic for it");
        errors.push(error);
        if p.action == AuthzAction::Audit {
            continue;
        }
        effective.push(AuthzPolicy {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            action: AuthzAction::Deny,
            rules: vec![AuthzRule::default()],
        });
    }
    (Engine::compile(&effective), errors)
}

fn peer(snap: &Snapshot) -> PeerMetadata {
    PeerMetadata::from_node(&snap.node)
}

fn cluster_metrics(c: &Cluster, local: &PeerMetadata) -> RequestMetrics {
    let reporter = match Direction::of_cluster(&c.name) {
        Direction::Inbound => Reporter::Destination,
        Direction::Outbound => Reporter::Source,
    };
    let proto = if c.protocol == Protocol::Tcp {
        "tcp"
    } else {
        "http"
    };
    let service = match c.name.as_str() {
        BLACKHOLE_CLUSTER | PASSTHROUGH_CLUSTER | INBOUND_PASSTHROUGH_CLUSTER => {
            ServiceLabel::Special(c.name.as_str())
        }
        // An inbound port the snapshot defines no cluster for: Istio sends it through
        // InboundPassthroughCluster, and labels it so.
        _ if reporter == Reporter::Destination && c.service.is_empty() => {
            ServiceLabel::Special(INBOUND_PASSTHROUGH_CLUSTER)
        }
        // A cluster that names no service: its name is all there is.
        _ if c.service.is_empty() => ServiceLabel::Host(c.name.as_str()),
        _ => ServiceLabel::Host(c.service.as_str()),
    };
    RequestMetrics::new(base_labels(reporter, local, service, proto))
}

/// The cluster behind one inbound listener: the snapshot's `inbound|PORT||` policy (pool
/// limits, timeouts) if it has one, with the app's address as the only endpoint.
fn inbound_cluster(snap: &Snapshot, ib: &InboundConfig) -> Cluster {
    let port = ib.cluster_port();
    let name = ib.cluster_name();
    let mut def = snap.cluster(&name).cloned().unwrap_or_else(|| Cluster {
        name: name.clone(),
        port,
        ..Default::default()
    });
    // The hop to the app is plaintext on the pod's own network; mTLS ends at this proxy.
    def.tls = skein_snapshot::UpstreamTls::Disable;
    def.auto_mtls = false;
    def.endpoints = vec![Endpoint {
        address: ib.app,
        labels: Default::default(),
        weight: 1,
        workload: None,
    }];
    def
}

impl Compiled {
    /// The config before any snapshot arrived: no routes, no clusters, passthrough allowed.
    pub fn empty(proxy: &ProxyConfig) -> Self {
        // Compiling an empty snapshot cannot fail.
        match Self::compile(Snapshot::default(), None, proxy, None) {
            Ok(c) => c,
            Err(e) => unreachable!("empty snapshot failed to compile: {e}"),
        }
    }

    /// Compiles `snap`, reusing unchanged clusters from `prev`. Clusters get `identity` for
    /// their mTLS endpoints.
    pub fn compile(
        snap: Snapshot,
        prev: Option<&Compiled>,
        proxy: &ProxyConfig,
        identity: Option<&Arc<IdentityStore>>,
    ) -> Result<Compiled, CompileError> {
        let version = snap.version.clone();
        snap.validate().map_err(|source| CompileError::Snapshot {
            version: version.clone(),
            error: source,
        })?;
        let (authz, mut policy_errors) = compile_authz(&snap.inbound.authz);
        let fetcher = crate::policy::jwt::remote::Fetcher {
            via: proxy.outbound_http,
        };
        let (jwt, jwt_errors) = Authn::compile(&snap.inbound.jwt, &fetcher);
        for e in jwt_errors {
            tracing::warn!(error = %e, "RequestAuthentication rule cannot be enforced; the tokens it checks fail");
            policy_errors.push(format!("{e}; the tokens of this issuer fail verification"));
        }
        let jwt = jwt.map(Arc::new);
        let authz = authz.map_err(|source| CompileError::Authz {
            version: version.clone(),
            error: source,
        })?;
        let access_log = crate::telemetry::access_log::policy::LogPolicy::compile(
            &snap.telemetry.access_log,
            proxy,
        )
        .map_err(|error| CompileError::AccessLog {
            version: version.clone(),
            error,
        })?;
        let metric_overrides =
            crate::telemetry::metrics::overrides::MetricOverrides::compile(&snap.telemetry.metrics)
                .map_err(|error| CompileError::Metrics {
                    version: version.clone(),
                    error,
                })?
                .map(Arc::new);
        let local = peer(&snap);
        let same_node = prev.is_some_and(|p| p.snapshot.node == snap.node);
        let own_peer = match prev {
            Some(p) if same_node => p.own_peer.clone(),
            _ => OwnPeer::new(&snap.node, proxy.mode == Mode::Gateway).map(Arc::new),
        };
        let clusters =
            compile_clusters(&snap, prev, same_node, &local, identity, own_peer.as_ref());
        let mut route_configs = HashMap::with_capacity(snap.route_configs.len());
        for rc in &snap.route_configs {
            let lookup = |name: &str| clusters.get(name).cloned();
            let compiled = CompiledRouteConfig::compile(rc, &lookup).map_err(|source| {
                CompileError::Route {
                    version: version.clone(),
                    error: source,
                }
            })?;
            route_configs.insert(rc.name.clone(), compiled);
        }
        let inbound = compile_inbound(&snap, prev, same_node, &local, proxy);
        let listeners = snap
            .listeners
            .iter()
            .map(|l| (l.name.clone(), l.kind.clone()))
            .collect();
        let special = |service: ServiceLabel<'_>| {
            Arc::new(RequestMetrics::new(base_labels(
                Reporter::Source,
                &local,
                service,
                "http",
            )))
        };
        let tracing = Arc::new(crate::telemetry::trace::Config::compile(
            &snap,
            proxy.mode == Mode::Gateway,
        ));
        Ok(Compiled {
            tracing,
            registry_only: snap.outbound_traffic_policy == OutboundTrafficPolicy::RegistryOnly,
            passthrough_metrics: special(ServiceLabel::Special(PASSTHROUGH_CLUSTER)),
            blackhole_metrics: special(ServiceLabel::Special(BLACKHOLE_CLUSTER)),
            no_route_metrics: special(ServiceLabel::Host("")),
            snapshot: Arc::new(snap),
            route_configs,
            clusters,
            listeners,
            inbound,
            own_peer,
            authz,
            jwt,
            policy_errors,
            access_log: Arc::new(access_log),
            metric_overrides,
        })
    }
}

/// The snapshot's clusters: unchanged ones reused from `prev` (same node, same definition),
/// new ones with the outlier state of endpoints that stay.
fn compile_clusters(
    snap: &Snapshot,
    prev: Option<&Compiled>,
    same_node: bool,
    local: &PeerMetadata,
    identity: Option<&Arc<IdentityStore>>,
    own_peer: Option<&Arc<OwnPeer>>,
) -> HashMap<String, Arc<ClusterState>> {
    let reuse = |c: &Cluster| -> Option<Arc<ClusterState>> {
        let p = prev?.clusters.get(&c.name)?;
        (same_node && p.config == *c).then(|| Arc::clone(p))
    };
    let mut clusters = HashMap::with_capacity(snap.clusters.len());
    for c in &snap.clusters {
        let state = reuse(c).unwrap_or_else(|| {
            let mut st = ClusterState::new(c.clone(), cluster_metrics(c, local))
                .with_source_ip(snap.node.ip)
                .with_exchange(own_peer);
            // Endpoints that stay keep their outlier state (ejections survive a push
            // that changes the endpoint set).
            if let Some(p) = prev.and_then(|p| p.clusters.get(&c.name)) {
                st = st.with_outlier_state_from(p);
            }
            if let Some(id) = identity {
                st = st.with_identity(Arc::clone(id));
            }
            Arc::new(st)
        });
        clusters.insert(c.name.clone(), state);
    }
    clusters
}

/// The sidecar's inbound clusters, index-aligned with the proxy config (which does not
/// change at run time); none for a gateway.
fn compile_inbound(
    snap: &Snapshot,
    prev: Option<&Compiled>,
    same_node: bool,
    local: &PeerMetadata,
    proxy: &ProxyConfig,
) -> Vec<Arc<ClusterState>> {
    if proxy.mode == Mode::Gateway {
        return Vec::new();
    }
    let one = |(i, ib): (usize, &InboundConfig)| {
        let def = inbound_cluster(snap, ib);
        match prev.and_then(|p| p.inbound.get(i)) {
            Some(p) if same_node && p.config == def => Arc::clone(p),
            Some(p) => {
                let m = cluster_metrics(&def, local);
                Arc::new(ClusterState::new(def, m).with_outlier_state_from(p))
            }
            None => {
                let m = cluster_metrics(&def, local);
                Arc::new(ClusterState::new(def, m))
            }
        }
    };
    proxy.inbound.iter().enumerate().map(one).collect()
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Each error says its cause once: in its message, not again as `source()`, so a cause
    /// chain printed by the CLI does not repeat it.
    #[test]
    fn errors_say_their_cause_once() {
        let snap = SnapshotError::from(
            serde_json::from_str::<serde_json::Value>("{").expect_err("bad JSON"),
        );
        let e = CompileError::Snapshot {
            version: "v1".into(),
            error: snap,
        };
        assert!(e.to_string().contains("EOF"), "{e}");
        assert!(e.source().is_none());
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let s = skein_snapshot::stream::StreamError::from(io);
        assert!(s.to_string().contains("reset"), "{s}");
        assert!(s.source().is_none());
    }
}
