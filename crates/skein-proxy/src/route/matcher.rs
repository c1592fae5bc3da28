//! Route matches: URI, header, query parameter and method, compiled.

use http::header::{HeaderMap, HeaderName};
use regex::Regex;
use skein_snapshot::{HeaderMatch, QueryParamMatch, RouteMatch, StringMatch};

use super::{RouteError, header_name};

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
                    error: source,
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
    pub(super) fn compile(m: &RouteMatch, route: &str) -> Result<Self, RouteError> {
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

    /// The path part of Istio's route decorator for this match: `P*` for prefix `P`, `P`
    /// for exact `P`, the regex for a regex; None without a path match (`/*`).
    pub(crate) fn trace_path(&self) -> Option<String> {
        Some(match self.path.as_ref()? {
            Matcher::Exact(p) => p.clone(),
            Matcher::Prefix(p) => format!("{p}*"),
            Matcher::Regex(r) => {
                let s = r.as_str().trim_start_matches("(?i)");
                s.strip_prefix("^(?:")
                    .and_then(|s| s.strip_suffix(")$"))
                    .unwrap_or(s)
                    .to_string()
            }
        })
    }
}
