//! Gateway API objects: what the CRDs' schemas and CEL rules reject (as IST0106, so that the
//! config is refused as the API server would refuse it), and references that do not resolve
//! (SKN0030, a warning carrying the route status reason the Gateway API defines:
//! `BackendNotFound`, `RefNotPermitted`, `InvalidKind`, `NoMatchingParent`,
//! `NotAllowedByListeners`; the object is taken, as the API server takes it).

use std::collections::HashSet;

use skein_snapshot::names;

use super::{Cx, Diagnostic, World};
use crate::codes::{Code, Severity};
use crate::gateway_api::{
    self as gw, BackendRef, HttpRouteFilter, HttpRouteMatch, ParentReference, ReferenceGrant,
};
use crate::{Document, Manifests, Resource};

const MAX_WEIGHT: i64 = 1_000_000;

/// The CRDs' `maxItems`: besides the API server's refusal, they bound what one route can
/// make the control plane compile (hosts x rules x matches).
fn max_items(cx: &mut Cx<'_>, path: &str, len: usize, max: usize) {
    if len > max {
        cx.error(
            path,
            format!("Too many: {len}: must have at most {max} items"),
        );
    }
}

pub(super) fn validate_gateway_class(cx: &mut Cx<'_>, c: &gw::GatewayClass) {
    if c.spec.controller_name.is_empty() {
        cx.error("spec.controllerName", "Required value");
    }
}

pub(super) fn validate_gateway(cx: &mut Cx<'_>, g: &gw::Gateway) {
    if g.spec.gateway_class_name.is_empty() {
        cx.error("spec.gatewayClassName", "Required value");
    }
    max_items(cx, "spec.listeners", g.spec.listeners.len(), 64);
    max_items(cx, "spec.addresses", g.spec.addresses.len(), 16);
    if g.spec.listeners.is_empty() {
        cx.error(
            "spec.listeners",
            "Required value: a Gateway needs at least one listener",
        );
    }
    let mut names = HashSet::new();
    for (i, l) in g.spec.listeners.iter().enumerate() {
        let at = format!("spec.listeners[{i}]");
        if l.name.is_empty() {
            cx.error(&format!("{at}.name"), "Required value");
        } else if !names.insert(l.name.as_str()) {
            cx.error(
                &format!("{at}.name"),
                "Listener name must be unique within the Gateway",
            );
        }
        if !(1..=65535).contains(&l.port) {
            cx.error(
                &format!("{at}.port"),
                format!(
                    "Invalid value: {}: must be between 1 and 65535, inclusive",
                    l.port
                ),
            );
        }
        match l.protocol.as_str() {
            "HTTP" | "HTTPS" | "TLS" | "TCP" | "UDP" => {}
            "" => cx.error(&format!("{at}.protocol"), "Required value"),
            p if p.contains('/') => {}
            p => cx.error(
                &format!("{at}.protocol"),
                format!(
                    "Unsupported value: {p:?}: supported values: \"HTTP\", \"HTTPS\", \"TLS\", \"TCP\", \"UDP\" or a domain-prefixed name"
                ),
            ),
        }
        if matches!(l.protocol.as_str(), "TCP" | "UDP") && l.hostname.is_some() {
            cx.error(
                &format!("{at}.hostname"),
                "hostname must not be specified for protocols ['TCP', 'UDP']",
            );
        }
        if l.protocol == "HTTPS" && l.tls.is_none() {
            cx.error(
                &format!("{at}.tls"),
                "tls must be specified for protocols ['HTTPS', 'TLS']",
            );
        }
        if let Some(h) = &l.hostname {
            hostname(cx, &format!("{at}.hostname"), h);
        }
        if let Some(from) = l
            .allowed_routes
            .as_ref()
            .and_then(|a| a.namespaces.as_ref())
            .and_then(|n| n.from.as_deref())
            && !matches!(from, "All" | "Same" | "Selector")
        {
            cx.error(
                &format!("{at}.allowedRoutes.namespaces.from"),
                format!(
                    "Unsupported value: {from:?}: supported values: \"All\", \"Same\", \"Selector\""
                ),
            );
        }
    }
}

pub(super) fn validate_http_route(cx: &mut Cx<'_>, r: &gw::HttpRoute) {
    parent_refs(cx, &r.spec.parent_refs);
    max_items(cx, "spec.hostnames", r.spec.hostnames.len(), 16);
    max_items(cx, "spec.rules", r.spec.rules.len(), 16);
    for (i, h) in r.spec.hostnames.iter().enumerate() {
        hostname(cx, &format!("spec.hostnames[{i}]"), h);
    }
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        max_items(cx, &format!("{at}.matches"), rule.matches.len(), 64);
        for (j, m) in rule.matches.iter().enumerate() {
            http_match(cx, &format!("{at}.matches[{j}]"), m);
        }
        filters(cx, &format!("{at}.filters"), &rule.filters);
        let redirect = rule.filters.iter().any(|f| f.type_ == "RequestRedirect");
        if redirect && !rule.backend_refs.is_empty() {
            cx.error(
                &at,
                "RequestRedirect filter must not be used together with backendRefs",
            );
        }
        let prefix_rewrite = rule.filters.iter().any(|f| {
            f.url_rewrite
                .as_ref()
                .and_then(|u| u.path.as_ref())
                .or(f.request_redirect.as_ref().and_then(|u| u.path.as_ref()))
                .is_some_and(|p| p.type_ == "ReplacePrefixMatch")
        });
        if prefix_rewrite {
            let prefix_matches = rule
                .matches
                .iter()
                .filter(|m| m.path.as_ref().is_none_or(|p| p.kind() == "PathPrefix"))
                .count();
            if rule.matches.len() > 1 || (!rule.matches.is_empty() && prefix_matches != 1) {
                cx.error(
                    &format!("{at}.filters"),
                    "When using URLRewrite or RequestRedirect filter with path.replacePrefixMatch, exactly one PathPrefix match must be specified",
                );
            }
        }
        backend_refs(cx, &format!("{at}.backendRefs"), &rule.backend_refs);
        if let Some(t) = &rule.timeouts
            && let (Some(req), Some(back)) = (&t.request, &t.backend_request)
            && !req.get().is_zero()
            && back.get() > req.get()
        {
            cx.error(
                &format!("{at}.timeouts"),
                "backendRequest timeout cannot be longer than request timeout",
            );
        }
    }
}

pub(super) fn validate_grpc_route(cx: &mut Cx<'_>, r: &gw::GrpcRoute) {
    parent_refs(cx, &r.spec.parent_refs);
    max_items(cx, "spec.hostnames", r.spec.hostnames.len(), 16);
    max_items(cx, "spec.rules", r.spec.rules.len(), 16);
    for (i, h) in r.spec.hostnames.iter().enumerate() {
        hostname(cx, &format!("spec.hostnames[{i}]"), h);
    }
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        max_items(cx, &format!("{at}.matches"), rule.matches.len(), 64);
        for (j, m) in rule.matches.iter().enumerate() {
            let mat = format!("{at}.matches[{j}]");
            if let Some(method) = &m.method {
                let t = method.type_.as_deref().unwrap_or("Exact");
                if !matches!(t, "Exact" | "RegularExpression") {
                    cx.error(
                        &format!("{mat}.method.type"),
                        format!("Unsupported value: {t:?}: supported values: \"Exact\", \"RegularExpression\""),
                    );
                }
                if method.service.is_none() && method.method.is_none() {
                    cx.error(
                        &format!("{mat}.method"),
                        "One or both of 'service' or 'method' must be specified",
                    );
                }
                if t == "Exact" {
                    for (field, v) in [("service", &method.service), ("method", &method.method)] {
                        if let Some(v) = v
                            && v.contains('/')
                        {
                            cx.error(
                                &format!("{mat}.method.{field}"),
                                format!("Invalid value: {v:?}: must not contain '/'"),
                            );
                        }
                    }
                }
            }
            value_matches(cx, &format!("{mat}.headers"), &m.headers);
        }
        for (j, f) in rule.filters.iter().enumerate() {
            if matches!(f.type_.as_str(), "RequestRedirect" | "URLRewrite") {
                cx.error(
                    &format!("{at}.filters[{j}].type"),
                    format!(
                        "Unsupported value: {:?}: supported values: \"ResponseHeaderModifier\", \"RequestHeaderModifier\", \"RequestMirror\", \"ExtensionRef\"",
                        f.type_
                    ),
                );
            }
        }
        filters(cx, &format!("{at}.filters"), &rule.filters);
        backend_refs(cx, &format!("{at}.backendRefs"), &rule.backend_refs);
    }
}

pub(super) fn validate_tcp_route(cx: &mut Cx<'_>, r: &gw::TcpRoute) {
    parent_refs(cx, &r.spec.parent_refs);
    if r.spec.rules.is_empty() {
        cx.error("spec.rules", "Required value: a TCPRoute needs one rule");
    }
    max_items(cx, "spec.rules", r.spec.rules.len(), 16);
    for (i, rule) in r.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}].backendRefs");
        if rule.backend_refs.is_empty() {
            cx.error(&at, "Required value: a TCPRoute rule needs a backendRef");
        }
        backend_refs(cx, &at, &rule.backend_refs);
    }
}

pub(super) fn validate_reference_grant(cx: &mut Cx<'_>, g: &ReferenceGrant) {
    max_items(cx, "spec.from", g.spec.from.len(), 16);
    max_items(cx, "spec.to", g.spec.to.len(), 16);
    if g.spec.from.is_empty() {
        cx.error("spec.from", "Required value");
    }
    if g.spec.to.is_empty() {
        cx.error("spec.to", "Required value");
    }
    for (i, f) in g.spec.from.iter().enumerate() {
        if f.kind.is_empty() {
            cx.error(&format!("spec.from[{i}].kind"), "Required value");
        }
        if f.namespace.is_empty() {
            cx.error(&format!("spec.from[{i}].namespace"), "Required value");
        }
    }
    for (i, t) in g.spec.to.iter().enumerate() {
        if t.kind.is_empty() {
            cx.error(&format!("spec.to[{i}].kind"), "Required value");
        }
    }
}

fn parent_refs(cx: &mut Cx<'_>, refs: &[ParentReference]) {
    max_items(cx, "spec.parentRefs", refs.len(), 32);
    for (i, p) in refs.iter().enumerate() {
        if p.name.is_empty() {
            cx.error(&format!("spec.parentRefs[{i}].name"), "Required value");
        }
        if let Some(port) = p.port
            && !(1..=65535).contains(&port)
        {
            cx.error(
                &format!("spec.parentRefs[{i}].port"),
                format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
            );
        }
    }
}

/// A Gateway API hostname: a DNS name, optionally with a leading `*.`; no IPs, no ports.
fn hostname(cx: &mut Cx<'_>, path: &str, h: &str) {
    let bare = h.strip_prefix("*.").unwrap_or(h);
    let ok = !bare.is_empty()
        && bare.len() <= 253
        && bare.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
        && bare.parse::<std::net::IpAddr>().is_err();
    if !ok {
        cx.error(
            path,
            format!(
                "Invalid value: {h:?}: must be a lowercase DNS name, optionally with a leading \"*.\" wildcard label (no IP address, no port)"
            ),
        );
    }
}

fn http_match(cx: &mut Cx<'_>, at: &str, m: &HttpRouteMatch) {
    if let Some(p) = &m.path {
        let kind = p.kind();
        let value = p.value();
        match kind {
            "Exact" | "PathPrefix" => {
                if !value.starts_with('/') {
                    cx.error(
                        &format!("{at}.path.value"),
                        "value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
                    );
                } else if value.contains("//") {
                    cx.error(
                        &format!("{at}.path.value"),
                        "must not contain '//' when type one of ['Exact', 'PathPrefix']",
                    );
                } else if value.contains("/./")
                    || value.contains("/../")
                    || value.ends_with("/.")
                    || value.ends_with("/..")
                {
                    cx.error(
                        &format!("{at}.path.value"),
                        "must not contain '/./' or '/../' or end with '/.' or '/..' when type one of ['Exact', 'PathPrefix']",
                    );
                }
            }
            "RegularExpression" => regex(cx, &format!("{at}.path.value"), value),
            other => cx.error(
                &format!("{at}.path.type"),
                format!("Unsupported value: {other:?}: supported values: \"Exact\", \"PathPrefix\", \"RegularExpression\""),
            ),
        }
    }
    value_matches(cx, &format!("{at}.headers"), &m.headers);
    value_matches(cx, &format!("{at}.queryParams"), &m.query_params);
    if let Some(method) = &m.method
        && !matches!(
            method.as_str(),
            "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH"
        )
    {
        cx.error(
            &format!("{at}.method"),
            format!(
                "Unsupported value: {method:?}: supported values: \"GET\", \"HEAD\", \"POST\", \"PUT\", \"DELETE\", \"CONNECT\", \"OPTIONS\", \"TRACE\", \"PATCH\""
            ),
        );
    }
}

fn value_matches(cx: &mut Cx<'_>, at: &str, ms: &[gw::ValueMatch]) {
    max_items(cx, at, ms.len(), 16);
    let mut seen = HashSet::new();
    for (i, m) in ms.iter().enumerate() {
        let t = m.type_.as_deref().unwrap_or("Exact");
        if !matches!(t, "Exact" | "RegularExpression") {
            cx.error(
                &format!("{at}[{i}].type"),
                format!(
                    "Unsupported value: {t:?}: supported values: \"Exact\", \"RegularExpression\""
                ),
            );
        }
        if m.name.is_empty() {
            cx.error(&format!("{at}[{i}].name"), "Required value");
        } else if !seen.insert(m.name.to_ascii_lowercase()) {
            cx.error(
                &format!("{at}[{i}].name"),
                format!("Duplicate value: {:?}: names must be unique", m.name),
            );
        }
        if m.is_regex() {
            regex(cx, &format!("{at}[{i}].value"), &m.value);
        }
    }
}

/// A regular expression the proxy must be able to compile (RE2 syntax, as Envoy's).
fn regex(cx: &mut Cx<'_>, at: &str, re: &str) {
    if let Err(e) = regex::Regex::new(re) {
        let first = e.to_string();
        let first = first.lines().last().unwrap_or("").trim().to_string();
        cx.error(
            at,
            format!("Invalid value: {re:?}: not a valid regular expression: {first}"),
        );
    }
}

fn filters(cx: &mut Cx<'_>, at: &str, fs: &[HttpRouteFilter]) {
    max_items(cx, at, fs.len(), 16);
    let count = |t: &str| fs.iter().filter(|f| f.type_ == t).count();
    if count("RequestRedirect") > 0 && count("URLRewrite") > 0 {
        cx.error(
            at,
            "May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both",
        );
    }
    for t in [
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestRedirect",
        "URLRewrite",
    ] {
        if count(t) > 1 {
            cx.error(at, format!("{t} filter cannot be repeated"));
        }
    }
    for (i, f) in fs.iter().enumerate() {
        let here = format!("{at}[{i}]");
        let (field, present) = match f.type_.as_str() {
            "RequestHeaderModifier" => {
                ("requestHeaderModifier", f.request_header_modifier.is_some())
            }
            "ResponseHeaderModifier" => (
                "responseHeaderModifier",
                f.response_header_modifier.is_some(),
            ),
            "RequestRedirect" => ("requestRedirect", f.request_redirect.is_some()),
            "URLRewrite" => ("urlRewrite", f.url_rewrite.is_some()),
            "RequestMirror" => ("requestMirror", f.request_mirror.is_some()),
            "CORS" => ("cors", f.cors.is_some()),
            "ExtensionRef" => ("extensionRef", f.extension_ref.is_some()),
            other => {
                cx.error(
                    &format!("{here}.type"),
                    format!("Unsupported value: {other:?}: supported values: \"RequestHeaderModifier\", \"ResponseHeaderModifier\", \"RequestMirror\", \"RequestRedirect\", \"URLRewrite\", \"CORS\", \"ExtensionRef\""),
                );
                continue;
            }
        };
        if !present {
            cx.error(
                &here,
                format!(
                    "filter.{field} must be specified for {} filter.type",
                    f.type_
                ),
            );
        }
        if let Some(rd) = &f.request_redirect {
            if let Some(code) = rd.status_code
                && !matches!(code, 301 | 302 | 303 | 307 | 308)
            {
                cx.error(
                    &format!("{here}.requestRedirect.statusCode"),
                    format!("Unsupported value: {code}: supported values: \"301\", \"302\", \"303\", \"307\", \"308\""),
                );
            }
            if let Some(s) = &rd.scheme
                && !matches!(s.as_str(), "http" | "https")
            {
                cx.error(
                    &format!("{here}.requestRedirect.scheme"),
                    format!("Unsupported value: {s:?}: supported values: \"http\", \"https\""),
                );
            }
            if let Some(p) = &rd.path {
                path_modifier(cx, &format!("{here}.requestRedirect.path"), p);
            }
        }
        if let Some(rw) = &f.url_rewrite
            && let Some(p) = &rw.path
        {
            path_modifier(cx, &format!("{here}.urlRewrite.path"), p);
        }
        if let Some(m) = &f.request_mirror {
            if m.percent.is_some() && m.fraction.is_some() {
                cx.error(
                    &format!("{here}.requestMirror"),
                    "Only one of percent or fraction may be specified in HTTPRequestMirrorFilter",
                );
            }
            if let Some(p) = m.percent
                && !(0..=100).contains(&p)
            {
                cx.error(
                    &format!("{here}.requestMirror.percent"),
                    format!("Invalid value: {p}: must be between 0 and 100, inclusive"),
                );
            }
            if let Some(fr) = &m.fraction
                && (fr.numerator < 0
                    || fr.denominator.unwrap_or(100) < 1
                    || fr.numerator > fr.denominator.unwrap_or(100))
            {
                cx.error(
                    &format!("{here}.requestMirror.fraction"),
                    "numerator must be less than or equal to denominator, and denominator at least 1",
                );
            }
        }
    }
}

fn path_modifier(cx: &mut Cx<'_>, at: &str, p: &gw::PathModifier) {
    match p.type_.as_str() {
        "ReplaceFullPath" => {
            if p.replace_full_path.is_none() {
                cx.error(at, "replaceFullPath must be specified when type is set to 'ReplaceFullPath'");
            }
            if p.replace_prefix_match.is_some() {
                cx.error(at, "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set");
            }
        }
        "ReplacePrefixMatch" => {
            if p.replace_prefix_match.is_none() {
                cx.error(at, "replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'");
            }
            if p.replace_full_path.is_some() {
                cx.error(at, "type must be 'ReplaceFullPath' when replaceFullPath is set");
            }
        }
        other => cx.error(
            &format!("{at}.type"),
            format!("Unsupported value: {other:?}: supported values: \"ReplaceFullPath\", \"ReplacePrefixMatch\""),
        ),
    }
    for v in [&p.replace_full_path, &p.replace_prefix_match]
        .into_iter()
        .flatten()
    {
        if !v.starts_with('/') {
            cx.error(
                at,
                format!("Invalid value: {v:?}: must be an absolute path starting with '/'"),
            );
        }
    }
}

fn backend_refs(cx: &mut Cx<'_>, at: &str, refs: &[BackendRef]) {
    max_items(cx, at, refs.len(), 16);
    for (i, b) in refs.iter().enumerate() {
        if b.name.is_empty() {
            cx.error(&format!("{at}[{i}].name"), "Required value");
        }
        if let Some(w) = b.weight
            && !(0..=MAX_WEIGHT).contains(&w)
        {
            cx.error(
                &format!("{at}[{i}].weight"),
                format!("Invalid value: {w}: must be between 0 and {MAX_WEIGHT}, inclusive"),
            );
        }
        if b.is_service() && b.port.is_none() {
            cx.error(
                &format!("{at}[{i}]"),
                "Must have port for Service reference",
            );
        }
        if let Some(port) = b.port
            && !(1..=65535).contains(&port)
        {
            cx.error(
                &format!("{at}[{i}].port"),
                format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
            );
        }
    }
}

// === References between objects (SKN0030) ===

fn finding(doc: &Document, path: &str, reason: &str, message: String, out: &mut Vec<Diagnostic>) {
    out.push(Diagnostic {
        code: Code::Skn0030,
        severity: Severity::Warning,
        source: doc.source_of(path),
        object: doc.resource.display_name(),
        path: path.to_string(),
        message: format!("{reason}: {message}"),
    });
}

/// A route's parents and backends that do not resolve, with the Gateway API's reasons.
pub(super) fn references(m: &Manifests, world: &World<'_>, out: &mut Vec<Diagnostic>) {
    let grants: Vec<&ReferenceGrant> = m.reference_grants().collect();
    for doc in m {
        let ns = doc.resource.namespace();
        let (kind, parents, rules): (&str, &[ParentReference], Vec<Vec<&BackendRef>>) =
            match &doc.resource {
                Resource::HttpRoute(r) => (
                    "HTTPRoute",
                    &r.spec.parent_refs,
                    r.spec
                        .rules
                        .iter()
                        .map(|rule| {
                            rule.backend_refs
                                .iter()
                                .chain(rule.filters.iter().filter_map(|f| {
                                    f.request_mirror.as_ref().map(|m| &m.backend_ref)
                                }))
                                .collect()
                        })
                        .collect(),
                ),
                Resource::GrpcRoute(r) => (
                    "GRPCRoute",
                    &r.spec.parent_refs,
                    r.spec
                        .rules
                        .iter()
                        .map(|rule| rule.backend_refs.iter().collect())
                        .collect(),
                ),
                Resource::TcpRoute(r) => (
                    "TCPRoute",
                    &r.spec.parent_refs,
                    r.spec
                        .rules
                        .iter()
                        .map(|rule| rule.backend_refs.iter().collect())
                        .collect(),
                ),
                _ => continue,
            };
        for (i, p) in parents.iter().enumerate() {
            let path = format!("spec.parentRefs[{i}]");
            let pns = p.namespace.as_deref().unwrap_or(ns);
            if p.is_service() {
                if !world.services.contains_key(&names::fqdn(&p.name, pns)) {
                    finding(
                        doc,
                        &path,
                        "NoMatchingParent",
                        format!("the parent Service {pns}/{} does not exist", p.name),
                        out,
                    );
                }
                continue;
            }
            if !p.is_gateway() {
                finding(
                    doc,
                    &path,
                    "NoMatchingParent",
                    format!(
                        "parentRefs of kind {} are not served; use a Gateway or a Service",
                        p.kind.as_deref().unwrap_or("")
                    ),
                    out,
                );
                continue;
            }
            let Some(g) = m.get::<gw::Gateway>(pns, &p.name) else {
                finding(
                    doc,
                    &path,
                    "NoMatchingParent",
                    format!("the Gateway {pns}/{} does not exist", p.name),
                    out,
                );
                continue;
            };
            if g.spec.gateway_class_name != gw::ISTIO_CLASS {
                finding(
                    doc,
                    &path,
                    "NoMatchingParent",
                    format!(
                        "the Gateway {pns}/{} has gatewayClassName {:?}, which skein does not serve (only \"istio\")",
                        p.name, g.spec.gateway_class_name
                    ),
                    out,
                );
                continue;
            }
            let route_labels = m
                .get::<crate::k8s::Namespace>("", ns)
                .map(|n| n.metadata.labels.clone())
                .unwrap_or_default();
            let accepted = g.spec.listeners.iter().any(|l| {
                gw::listener_accepts(l, pns, kind, ns, &route_labels)
                    && p.section_name.as_deref().is_none_or(|s| s == l.name)
                    && p.port.is_none_or(|port| port == l.port)
            });
            if !accepted {
                finding(
                    doc,
                    &path,
                    "NotAllowedByListeners",
                    format!(
                        "no listener of the Gateway {pns}/{} accepts a {kind} from namespace {ns}",
                        p.name
                    ),
                    out,
                );
            }
        }
        for (i, refs) in rules.iter().enumerate() {
            for (j, b) in refs.iter().enumerate() {
                let path = format!("spec.rules[{i}].backendRefs[{j}]");
                if !b.is_service() {
                    finding(
                        doc,
                        &path,
                        "InvalidKind",
                        format!(
                            "backendRefs of kind {} are not served; use a Service",
                            b.kind.as_deref().unwrap_or("")
                        ),
                        out,
                    );
                    continue;
                }
                let bns = b.namespace.as_deref().unwrap_or(ns);
                let Some(svc) = world.services.get(&names::fqdn(&b.name, bns)) else {
                    finding(
                        doc,
                        &path,
                        "BackendNotFound",
                        format!("the Service {bns}/{} does not exist", b.name),
                        out,
                    );
                    continue;
                };
                if !gw::reference_permitted(grants.iter().copied(), kind, ns, bns, &b.name) {
                    finding(
                        doc,
                        &path,
                        "RefNotPermitted",
                        format!(
                            "no ReferenceGrant in namespace {bns} lets a {kind} of namespace {ns} refer to the Service {}",
                            b.name
                        ),
                        out,
                    );
                    continue;
                }
                if let Some(port) = b.port
                    && !svc.spec.ports.iter().any(|p| p.port == port as i32)
                {
                    finding(
                        doc,
                        &path,
                        "BackendNotFound",
                        format!("the Service {bns}/{} has no port {port}", b.name),
                        out,
                    );
                }
            }
        }
    }
}
