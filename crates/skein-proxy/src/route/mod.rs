//! Compiled HTTP routing: virtual host lookup by authority, route matching, header ops.

mod action;
pub(crate) mod fault;
mod matcher;
pub(crate) mod retry;

pub(crate) use action::{Action, Dest, Mirror, Ops, RegexRewrite};
#[cfg(test)]
use matcher::Matcher;
pub(crate) use matcher::{CompiledMatch, RequestView};

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use regex::Regex;
use skein_snapshot::{RouteAction, RouteConfig};

use crate::authority::strip_port;
use crate::route::fault::Fault;
use crate::route::retry::RetryPolicy;
use crate::upstream::cluster::ClusterState;

/// Errors compiling routes.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// A regex does not compile.
    #[error("route {route:?}: invalid regex {pattern:?}: {error}")]
    Regex {
        route: String,
        pattern: String,
        error: regex::Error,
    },
    /// A retry policy does not compile.
    #[error("route {route:?}: {error}")]
    Retry {
        route: String,
        error: crate::route::retry::RetryError,
    },
    /// A header name or value is not valid HTTP.
    #[error("route {route:?}: invalid header {name:?}: {detail}")]
    Header {
        route: String,
        name: String,
        detail: String,
    },
}

fn header_name(n: &str, route: &str) -> Result<HeaderName, RouteError> {
    HeaderName::from_bytes(n.to_ascii_lowercase().as_bytes()).map_err(|e| RouteError::Header {
        route: route.to_string(),
        name: n.to_string(),
        detail: e.to_string(),
    })
}

/// A compiled route.
#[derive(Debug)]
pub struct CompiledRoute {
    /// Route name for the access log.
    pub name: Arc<str>,
    /// The VirtualService's name (empty: none), for the span name of a split route.
    pub virtual_service: Arc<str>,
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
            error: source,
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
        virtual_service: Arc::from(r.virtual_service.as_str()),
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
                        error: source,
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
