//! What a matched route does: its action (weighted destinations, redirect, direct response),
//! header operations, and the compiled mirror policy.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;
use skein_snapshot::{HeaderMutation, HeaderOps, Redirect};

use super::{RouteError, header_name};
use crate::upstream::cluster::ClusterState;

/// A compiled `mirror` + `mirrorPercentage`.
#[derive(Debug, Clone)]
pub struct Mirror {
    /// The mirror cluster.
    pub cluster: Arc<ClusterState>,
    /// Percentage of requests mirrored (0..=100).
    pub percentage: f64,
}

impl Mirror {
    /// Compiles a route's mirror; None when its cluster is unknown.
    pub fn compile(
        m: &skein_snapshot::Mirror,
        cluster: &dyn Fn(&str) -> Option<Arc<ClusterState>>,
    ) -> Option<Mirror> {
        let Some(c) = cluster(&m.cluster) else {
            tracing::warn!(cluster = %m.cluster, "mirror cluster not found; not mirroring");
            return None;
        };
        let percentage = match m.percentage {
            None => 100.0,
            Some(p) if p.is_finite() => p.clamp(0.0, 100.0),
            Some(_) => 0.0,
        };
        Some(Mirror {
            cluster: c,
            percentage,
        })
    }

    /// Draws whether this request is mirrored.
    pub fn sample(&self) -> bool {
        self.percentage >= 100.0
            || (self.percentage > 0.0 && fastrand::f64() * 100.0 < self.percentage)
    }
}

/// Compiled header mutations.
#[derive(Debug, Default)]
pub struct Mutation {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Mutation {
    fn compile(m: &HeaderMutation, route: &str) -> Result<Self, RouteError> {
        let pair = |(k, v): (&String, &String)| -> Result<(HeaderName, HeaderValue), RouteError> {
            Ok((
                header_name(k, route)?,
                HeaderValue::from_str(v).map_err(|e| RouteError::Header {
                    route: route.to_string(),
                    name: k.clone(),
                    detail: e.to_string(),
                })?,
            ))
        };
        Ok(Mutation {
            set: m.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: m.add.iter().map(pair).collect::<Result<_, _>>()?,
            remove: m
                .remove
                .iter()
                .map(|n| header_name(n, route))
                .collect::<Result<_, _>>()?,
        })
    }

    /// Applies remove, then set, then add.
    pub fn apply(&self, h: &mut HeaderMap) {
        for n in &self.remove {
            h.remove(n);
        }
        for (n, v) in &self.set {
            h.insert(n.clone(), v.clone());
        }
        for (n, v) in &self.add {
            h.append(n.clone(), v.clone());
        }
    }
}

/// Compiled request + response header operations.
#[derive(Debug, Default)]
pub struct Ops {
    /// On the request.
    pub request: Mutation,
    /// On the response.
    pub response: Mutation,
}

impl Ops {
    pub(super) fn compile(o: &HeaderOps, route: &str) -> Result<Self, RouteError> {
        Ok(Ops {
            request: Mutation::compile(&o.request, route)?,
            response: Mutation::compile(&o.response, route)?,
        })
    }
}

/// One weighted destination.
#[derive(Debug)]
pub struct Dest {
    /// Cluster name.
    pub name: Arc<str>,
    /// The cluster; None for BlackHoleCluster / PassthroughCluster destinations.
    pub cluster: Option<Arc<ClusterState>>,
    /// Cumulative weight bound (exclusive).
    pub upto: u32,
    /// Per-destination header ops.
    pub ops: Ops,
}

/// A compiled action.
#[derive(Debug)]
pub enum Action {
    /// Weighted clusters.
    Route {
        /// Destinations with cumulative weights.
        dests: Vec<Dest>,
        /// Sum of weights.
        total: u32,
    },
    /// Direct response.
    Direct {
        /// Status.
        status: u16,
        /// Body.
        body: Bytes,
    },
    /// Redirect.
    Redirect(Redirect),
}

impl Action {
    /// Picks a destination by weight.
    pub fn pick(&self) -> Option<&Dest> {
        let Action::Route { dests, total } = self else {
            return None;
        };
        if *total == 0 {
            return None;
        }
        let r = if dests.len() == 1 {
            0
        } else {
            fastrand::u32(..*total)
        };
        dests.iter().find(|d| r < d.upto)
    }
}

/// A compiled uri regex rewrite.
#[derive(Debug)]
pub struct RegexRewrite {
    /// Pattern.
    pub re: Regex,
    /// Replacement in `regex` syntax (`${1}`).
    pub with: String,
}
