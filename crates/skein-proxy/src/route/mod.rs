//! Compiled HTTP routing: virtual host lookup by authority, route matching, header ops.

pub(crate) mod fault;
pub(crate) mod retry;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use regex::Regex;
use skein_snapshot::{
    HeaderMatch, HeaderMutation, HeaderOps, QueryParamMatch, Redirect, RouteAction, RouteConfig,
    RouteMatch, StringMatch,
};

use crate::authority::strip_port;
use crate::route::fault::Fault;
use crate::route::retry::RetryPolicy;
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

/// Errors compiling routes.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A regex does not compile.
    #[error("route {route:?}: invalid regex {pattern:?}: {source}")]
    Regex {
        route: String,
        pattern: String,
        source: regex::Error,
    },
    /// A retry policy does not compile.
    #[error("route {route:?}: {source}")]
    Retry {
        route: String,
        source: crate::route::retry::RetryError,
    },
    /// A header name or value is not valid HTTP.
    #[error("route {route:?}: invalid header {name:?}: {detail}")]
    Header {
        route: String,
        name: String,
        detail: String,
    },
}

/// A compiled `StringMatch`.
#[derive(Debug)]
pub enum Matcher {
    /// Exact.
    Exact(String),
    /// Prefix.
    Prefix(String),
    /// Full-match regex.
    Regex(Regex),
}

impl Matcher {
    fn compile(m: &StringMatch, ignore_case: bool, route: &str) -> Result<Matcher, RouteError> {
        Ok(match m {
            StringMatch::Exact(s) if ignore_case => Matcher::Exact(s.to_ascii_lowercase()),
            StringMatch::Exact(s) => Matcher::Exact(s.clone()),
            StringMatch::Prefix(s) if ignore_case => Matcher::Prefix(s.to_ascii_lowercase()),
            StringMatch::Prefix(s) => Matcher::Prefix(s.clone()),
            StringMatch::Regex(p) => {
                let full = if ignore_case {
                    format!("(?i)^(?:{p})$")
                } else {
                    format!("^(?:{p})$")
                };
                Matcher::Regex(Regex::new(&full).map_err(|source| RouteError::Regex {
                    route: route.to_string(),
                    pattern: p.clone(),
                    source,
                })?)
            }
        })
    }

    /// Tests a value.
    pub fn matches(&self, v: &str, ignore_case: bool) -> bool {
        match self {
            Matcher::Exact(s) if ignore_case => v.eq_ignore_ascii_case(s),
            Matcher::Exact(s) => v == s,
            Matcher::Prefix(p) if ignore_case => {
                v.len() >= p.len()
                    && v.is_char_boundary(p.len())
                    && v[..p.len()].eq_ignore_ascii_case(p)
            }
            Matcher::Prefix(p) => v.starts_with(p.as_str()),
            Matcher::Regex(r) => r.is_match(v),
        }
    }
}

#[derive(Debug)]
struct CompiledHeaderMatch {
    name: HeaderName,
    value: Option<Matcher>,
}

impl CompiledHeaderMatch {
    fn compile(h: &HeaderMatch, route: &str) -> Result<Self, RouteError> {
        Ok(CompiledHeaderMatch {
            name: header_name(&h.name, route)?,
            value: h
                .value
                .as_ref()
                .map(|m| Matcher::compile(m, false, route))
                .transpose()?,
        })
    }

    fn matches(&self, headers: &HeaderMap) -> bool {
        match (&self.value, headers.get(&self.name)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(m), Some(v)) => v.to_str().is_ok_and(|s| m.matches(s, false)),
        }
    }
}

#[derive(Debug)]
struct CompiledQueryMatch {
    name: String,
    value: Option<Matcher>,
}

impl CompiledQueryMatch {
    fn compile(q: &QueryParamMatch, route: &str) -> Result<Self, RouteError> {
        Ok(CompiledQueryMatch {
            name: q.name.clone(),
            value: q
                .value
                .as_ref()
                .map(|m| Matcher::compile(m, false, route))
                .transpose()?,
        })
    }

    fn matches(&self, query: Option<&str>) -> bool {
        let Some(q) = query else { return false };
        q.split('&').any(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            k == self.name && self.value.as_ref().is_none_or(|m| m.matches(v, false))
        })
    }
}

/// The request attributes routes look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Path without query.
    pub path: &'a str,
    /// Query string.
    pub query: Option<&'a str>,
    /// Method.
    pub method: &'a str,
    /// Authority as received.
    pub authority: &'a str,
    /// Headers.
    pub headers: &'a HeaderMap,
}

/// A compiled match block.
#[derive(Debug)]
pub struct CompiledMatch {
    path: Option<Matcher>,
    path_is_prefix_or_exact: Option<usize>,
    headers: Vec<CompiledHeaderMatch>,
    query: Vec<CompiledQueryMatch>,
    method: Option<Matcher>,
    authority: Option<Matcher>,
    without: Vec<CompiledHeaderMatch>,
    ignore_uri_case: bool,
}

impl CompiledMatch {
    fn compile(m: &RouteMatch, route: &str) -> Result<Self, RouteError> {
        let path_is_prefix_or_exact = match &m.path {
            Some(StringMatch::Prefix(p)) | Some(StringMatch::Exact(p)) => Some(p.len()),
            _ => None,
        };
        Ok(CompiledMatch {
            path: m
                .path
                .as_ref()
                .map(|p| Matcher::compile(p, m.ignore_uri_case, route))
                .transpose()?,
            path_is_prefix_or_exact,
            headers: m
                .headers
                .iter()
                .map(|h| CompiledHeaderMatch::compile(h, route))
                .collect::<Result<_, _>>()?,
            query: m
                .query_params
                .iter()
                .map(|q| CompiledQueryMatch::compile(q, route))
                .collect::<Result<_, _>>()?,
            method: m
                .method
                .as_ref()
                .map(|x| Matcher::compile(x, false, route))
                .transpose()?,
            authority: m
                .authority
                .as_ref()
                .map(|x| Matcher::compile(x, true, route))
                .transpose()?,
            without: m
                .without_headers
                .iter()
                .map(|h| CompiledHeaderMatch::compile(h, route))
                .collect::<Result<_, _>>()?,
            ignore_uri_case: m.ignore_uri_case,
        })
    }

    /// Tests a request (all conditions ANDed).
    pub fn matches(&self, r: &RequestView<'_>) -> bool {
        self.path
            .as_ref()
            .is_none_or(|m| m.matches(r.path, self.ignore_uri_case))
            && self
                .method
                .as_ref()
                .is_none_or(|m| m.matches(r.method, false))
            && self
                .authority
                .as_ref()
                .is_none_or(|m| m.matches(r.authority, true))
            && self.headers.iter().all(|h| h.matches(r.headers))
            && self.query.iter().all(|q| q.matches(r.query))
            && !self.without.iter().any(|h| h.matches(r.headers))
    }

    /// Length of the matched path prefix, for `rewrite.uri` (exact and prefix matches only).
    pub fn matched_prefix_len(&self) -> Option<usize> {
        self.path_is_prefix_or_exact
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
    fn compile(o: &HeaderOps, route: &str) -> Result<Self, RouteError> {
        Ok(Ops {
            request: Mutation::compile(&o.request, route)?,
            response: Mutation::compile(&o.response, route)?,
        })
    }
}

fn header_name(n: &str, route: &str) -> Result<HeaderName, RouteError> {
    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).map_err(|e| RouteError::Header {
        route: route.to_string(),
        name: n.to_string(),
        detail: e.to_string(),
    })
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

/// A compiled route.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Route name for the access log.
    pub name: Arc<str>,
    /// Match blocks (ORed; empty matches all).
    pub matches: Vec<CompiledMatch>,
    /// Action.
    pub action: Action,
    /// `rewrite.uri`.
    pub rewrite_uri: Option<String>,
    /// `rewrite.authority`.
    pub rewrite_authority: Option<HeaderValue>,
    /// `rewrite.uriRegexRewrite`.
    pub rewrite_regex: Option<RegexRewrite>,
    /// Route-level header ops.
    pub ops: Ops,
    /// Retry policy (Istio's default when the route has none; no retries with a fault).
    pub retry: RetryPolicy,
    /// Route `timeout` (None with a fault, as Istio).
    pub timeout: Option<std::time::Duration>,
    /// Fault injection.
    pub fault: Option<Fault>,
    /// Mirroring.
    pub mirror: Option<Mirror>,
}

impl CompiledRoute {
    /// Index of the first matching block, or `usize::MAX` for a route without blocks.
    pub fn matching_block(&self, r: &RequestView<'_>) -> Option<usize> {
        if self.matches.is_empty() {
            return Some(usize::MAX);
        }
        self.matches.iter().position(|m| m.matches(r))
    }
}

/// A compiled virtual host.
#[derive(Debug)]
pub struct CompiledVhost {
    /// Routes, first match wins.
    pub routes: Vec<CompiledRoute>,
}

/// A compiled route config with its authority index.
#[derive(Debug, Default)]
pub struct CompiledRouteConfig {
    exact: HashMap<String, usize>,
    suffixes: Vec<(String, usize)>,
    star: Option<usize>,
    /// Virtual hosts.
    pub vhosts: Vec<CompiledVhost>,
}

/// Converts RE2 `\1` capture references to the regex crate's `${1}`.
fn convert_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                out.push_str("${");
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    out.push(d);
                    chars.next();
                }
                out.push('}');
            }
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

impl CompiledRouteConfig {
    /// Compiles a route config; `cluster` resolves destination names.
    pub fn compile(
        rc: &RouteConfig,
        cluster: &dyn Fn(&str) -> Option<Arc<ClusterState>>,
    ) -> Result<Self, RouteError> {
        let mut out = CompiledRouteConfig::default();
        for (i, vh) in rc.virtual_hosts.iter().enumerate() {
            for d in &vh.domains {
                let d = d.to_ascii_lowercase();
                if d == "*" {
                    out.star.get_or_insert(i);
                } else if let Some(suffix) = d.strip_prefix('*') {
                    out.suffixes.push((suffix.to_string(), i));
                } else {
                    // First virtual host listing a domain wins (Envoy rejects duplicates).
                    out.exact.entry(d).or_insert(i);
                }
            }
            let mut routes = Vec::with_capacity(vh.routes.len());
            for r in &vh.routes {
                routes.push(compile_route(r, cluster)?);
            }
            out.vhosts.push(CompiledVhost { routes });
        }
        // Longest suffix first.
        out.suffixes.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
        Ok(out)
    }

    /// Finds the virtual host for a lowercase authority: exact, then without the port, then
    /// the longest `*.suffix`, then `*`.
    pub fn find(&self, authority: &str) -> Option<&CompiledVhost> {
        let idx = self.exact.get(authority).copied().or_else(|| {
            let host = strip_port(authority);
            (host.len() != authority.len())
                .then(|| self.exact.get(host).copied())
                .flatten()
                .or_else(|| {
                    self.suffixes
                        .iter()
                        .find(|(s, _)| host.ends_with(s.as_str()))
                        .map(|(_, i)| *i)
                })
                .or(self.star)
        })?;
        self.vhosts.get(idx)
    }
}

fn compile_route(
    r: &skein_snapshot::Route,
    cluster: &dyn Fn(&str) -> Option<Arc<ClusterState>>,
) -> Result<CompiledRoute, RouteError> {
    let name = r.name.as_str();
    let action = match &r.action {
        RouteAction::Route(dests) => {
            let mut total = 0u32;
            let mut out = Vec::with_capacity(dests.len());
            for d in dests {
                total = total.saturating_add(d.weight);
                out.push(Dest {
                    name: Arc::from(d.cluster.as_str()),
                    cluster: cluster(&d.cluster),
                    upto: total,
                    ops: Ops::compile(&d.headers, name)?,
                });
            }
            Action::Route { dests: out, total }
        }
        RouteAction::DirectResponse { status, body } => Action::Direct {
            status: *status,
            body: Bytes::from(body.clone().unwrap_or_default()),
        },
        RouteAction::Redirect(rd) => Action::Redirect(rd.clone()),
    };
    let rewrite = r.rewrite.as_ref();
    // As Istio: timeouts and retries are not applied when a fault is configured.
    let fault = r.fault.as_ref().map(Fault::compile);
    let retry = match fault {
        Some(_) => RetryPolicy::none(),
        None => RetryPolicy::compile(r.retries.as_ref()).map_err(|source| RouteError::Retry {
            route: name.to_string(),
            source,
        })?,
    };
    Ok(CompiledRoute {
        retry,
        timeout: r
            .timeout_ms
            .filter(|ms| *ms > 0 && fault.is_none())
            .map(std::time::Duration::from_millis),
        fault,
        mirror: r.mirror.as_ref().and_then(|m| Mirror::compile(m, cluster)),
        name: Arc::from(name),
        matches: r
            .matches
            .iter()
            .map(|m| CompiledMatch::compile(m, name))
            .collect::<Result<_, _>>()?,
        action,
        rewrite_uri: rewrite.and_then(|w| w.uri.clone()),
        rewrite_authority: rewrite
            .and_then(|w| w.authority.as_deref())
            .map(|a| {
                HeaderValue::from_str(a).map_err(|e| RouteError::Header {
                    route: name.to_string(),
                    name: "rewrite.authority".to_string(),
                    detail: e.to_string(),
                })
            })
            .transpose()?,
        rewrite_regex: rewrite
            .and_then(|w| w.uri_regex.as_ref())
            .map(|rr| {
                Ok::<_, RouteError>(RegexRewrite {
                    re: Regex::new(&rr.pattern).map_err(|source| RouteError::Regex {
                        route: name.to_string(),
                        pattern: rr.pattern.clone(),
                        source,
                    })?,
                    with: convert_substitution(&rr.substitution),
                })
            })
            .transpose()?,
        ops: Ops::compile(&r.headers, name)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_converts_backrefs() {
        assert_eq!(convert_substitution(r"/v2/\1/x"), "/v2/${1}/x");
        assert_eq!(convert_substitution("$a"), "$$a");
    }

    #[test]
    fn prefix_ignore_case() {
        let m = Matcher::Prefix("/api".into());
        assert!(m.matches("/API/x", true));
        assert!(!m.matches("/API/x", false));
    }
}
