//! Istio networking: VirtualService, DestinationRule, Gateway and ServiceEntry, with the names
//! and messages of istiod's validators (`pkg/config/validation`).

use std::collections::HashSet;

use super::{Cx, World, cross, duration, istio_port, percent_0_100, percentage, selector_labels};
use crate::networking::{
    ClientTlsMode, ClientTlsSettings, ConnectionPoolSettings, Destination, DestinationRule,
    FaultAbort, FaultDelay, Gateway, H2UpgradePolicy, HttpDirectResponse, HttpFaultInjection,
    HttpMirrorPolicy, HttpRedirect, HttpRetry, HttpRewrite, HttpRoute, HttpRouteDestination,
    HttpSettings, LoadBalancerSettings, OutlierDetection, PortTrafficPolicy, Resolution,
    RouteDestination, Server, ServiceEntry, StringMatch, Subset, TcpSettings, TrafficPolicy,
    TunnelSettings, VirtualService, VirtualServiceSpec,
};

// --- Shared by the networking kinds ---

/// istiod's `validateStringMatchRegexp` and the CRD's empty-prefix rule.
fn validate_string_match(
    cx: &mut Cx<'_>,
    path: &str,
    m: &StringMatch,
    where_: &str,
    allow_empty_prefix: bool,
) {
    if m.set_count() > 1 {
        cx.error(path, "only one of exact, prefix or regex may be set");
    }
    if !allow_empty_prefix && m.prefix.as_deref() == Some("") {
        cx.error(
            path,
            format!("\"{where_}\": prefix string match should not be empty"),
        );
    }
    if m.regex.as_deref() == Some("") {
        cx.error(
            path,
            format!("\"{where_}\": regex string match should not be empty"),
        );
    } else if let Some(re) = &m.regex
        && let Some(msg) = regex_problem(re, where_)
    {
        cx.error(&format!("{path}.regex"), msg);
    }
}

/// istiod's `validateStringRegexp`, compiled by the `regex` crate (RE2 syntax), as the proxy
/// compiles it: alone and anchored for a full match.
fn regex_problem(re: &str, where_: &str) -> Option<String> {
    if re.len() > 1024 {
        return Some(format!(
            "\"{where_}\": regex is too large, max length allowed is 1024"
        ));
    }
    let err = regex::Regex::new(re)
        .and_then(|_| regex::Regex::new(&format!("^(?:{re})$")))
        .err()?;
    // The crate's message draws a caret under the pattern; its last line says what is wrong.
    let err = err.to_string();
    let what = err
        .lines()
        .last()
        .map(|l| l.trim().trim_start_matches("error: "))
        .unwrap_or("invalid");
    Some(format!(
        "\"{where_}\": error parsing regexp: {what}: `{re}`; Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"
    ))
}

/// istiod's `validateDestination`.
fn validate_destination(cx: &mut Cx<'_>, path: &str, d: &Destination) {
    if d.host.is_empty() {
        cx.error(&format!("{path}.host"), "Required value");
    } else if d.host == "*" {
        cx.error(&format!("{path}.host"), "invalid destination host *");
    }
    if let Some(subset) = &d.subset {
        if subset.is_empty() {
            cx.error(&format!("{path}.subset"), "subset name cannot be empty");
        } else if !is_dns1123_label(subset) {
            cx.error(
                &format!("{path}.subset"),
                format!("subset name is invalid: {subset}"),
            );
        }
    }
    if let Some(n) = d.port.as_ref().and_then(|p| p.number) {
        istio_port(cx, &format!("{path}.port.number"), n);
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// istiod's `validateWeights`.
fn validate_weights(cx: &mut Cx<'_>, path: &str, ws: &[(Option<i32>, String)]) {
    let mut total: i64 = 0;
    for (w, wpath) in ws {
        if let Some(w) = w {
            if *w < 0 {
                cx.error(wpath, format!("weight {w} < 0"));
            }
            total += i64::from(*w);
        }
    }
    if ws.len() > 1 && total == 0 {
        cx.error(path, "total destination weight = 0");
    }
}

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

// --- VirtualService ---

/// istiod's `ValidateVirtualService`.
pub(super) fn validate_virtual_service(cx: &mut Cx<'_>, vs: &VirtualService, world: &World<'_>) {
    let spec = &vs.spec;
    let delegate = spec.hosts.is_empty();
    if delegate {
        validate_delegate(cx, spec);
    }
    validate_virtual_service_hosts(cx, spec);
    if spec.http.is_empty() && spec.tcp.is_empty() && spec.tls.is_empty() {
        cx.error(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    for (i, r) in spec.http.iter().enumerate() {
        validate_http_route(cx, &format!("spec.http[{i}]"), r, delegate, world);
    }
    validate_tcp_and_tls_routes(cx, spec, world);
}

/// A delegate VirtualService (one without hosts) carries only HTTP routes.
fn validate_delegate(cx: &mut Cx<'_>, spec: &VirtualServiceSpec) {
    if !spec.gateways.is_empty() {
        cx.error(
            "spec.gateways",
            "delegate virtual service must have no gateways specified",
        );
    }
    if !spec.tls.is_empty() {
        cx.error(
            "spec.tls",
            "delegate virtual service must have no tls route specified",
        );
    }
    if !spec.tcp.is_empty() {
        cx.error(
            "spec.tcp",
            "delegate virtual service must have no tcp route specified",
        );
    }
}

fn validate_virtual_service_hosts(cx: &mut Cx<'_>, spec: &VirtualServiceSpec) {
    let applies_to_mesh = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    let mut seen_hosts = HashSet::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        let path = format!("spec.hosts[{i}]");
        if h.is_empty() {
            cx.error(&path, "empty domain name not allowed");
        } else if h == "*" && applies_to_mesh {
            cx.error(
                &path,
                "wildcard host * is not allowed for virtual services bound to the mesh gateway",
            );
        }
        if !seen_hosts.insert(h.as_str()) {
            cx.error(
                &path,
                format!("duplicate hosts in virtual service: {h} & {h}"),
            );
        }
    }
}

/// istiod's `validateTCPRoute` and `validateTLSRoute`, with their matches.
fn validate_tcp_and_tls_routes(cx: &mut Cx<'_>, spec: &VirtualServiceSpec, world: &World<'_>) {
    for (kind, routes) in [
        ("tcp", spec.tcp.iter().map(|r| &r.route).collect::<Vec<_>>()),
        ("tls", spec.tls.iter().map(|r| &r.route).collect()),
    ] {
        for (i, route) in routes.iter().enumerate() {
            validate_route_destinations(cx, &format!("spec.{kind}[{i}].route"), route, world);
        }
    }
    for (i, m) in spec.tcp.iter().enumerate() {
        for (j, m) in m.match_.iter().enumerate() {
            if let Some(p) = m.port {
                istio_port(cx, &format!("spec.tcp[{i}].match[{j}].port"), p);
            }
        }
    }
    for (i, t) in spec.tls.iter().enumerate() {
        if t.match_.is_empty() {
            cx.error(
                &format!("spec.tls[{i}].match"),
                "TLS route must have at least one match condition",
            );
        }
        for (j, m) in t.match_.iter().enumerate() {
            if m.sni_hosts.is_empty() {
                cx.error(
                    &format!("spec.tls[{i}].match[{j}].sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
        }
    }
}

/// istiod's `validateRouteDestinations` (TCP and TLS routes).
fn validate_route_destinations(
    cx: &mut Cx<'_>,
    path: &str,
    route: &[RouteDestination],
    world: &World<'_>,
) {
    let ws: Vec<_> = route
        .iter()
        .enumerate()
        .map(|(j, d)| (d.weight, format!("{path}[{j}].weight")))
        .collect();
    validate_weights(cx, path, &ws);
    for (j, d) in route.iter().enumerate() {
        let dp = format!("{path}[{j}].destination");
        validate_destination(cx, &dp, &d.destination);
        cross::destination_exists(cx, &dp, &d.destination, world, false);
    }
}

// --- HTTP routes ---

/// istiod's `validateHTTPRoute`.
fn validate_http_route(
    cx: &mut Cx<'_>,
    path: &str,
    r: &HttpRoute,
    delegate: bool,
    world: &World<'_>,
) {
    let p = |f: &str| format!("{path}.{f}");
    validate_http_route_conflict(cx, path, r, delegate);
    if r.mirror.is_some() && !r.mirrors.is_empty() {
        cx.error(
            &p("mirrors"),
            "HTTP route cannot contain both mirror and mirrors",
        );
    }
    validate_http_route_match_request(cx, path, r);
    validate_http_route_destinations(cx, path, &r.route, world);
    if let Some(rt) = &r.retries {
        validate_http_retry(cx, &p("retries"), rt);
    }
    duration(cx, &p("timeout"), &r.timeout);
    if let Some(rw) = &r.rewrite {
        validate_http_rewrite(cx, path, rw);
    }
    if let Some(rd) = &r.redirect {
        validate_http_redirect(cx, &p("redirect"), rd);
    }
    if let Some(dr) = &r.direct_response {
        validate_http_direct_response(cx, path, dr);
    }
    if let Some(f) = &r.fault {
        validate_http_fault_injection(cx, &p("fault"), f);
    }
    validate_mirror_percentage(cx, path, r);
    if let Some(m) = &r.mirror {
        validate_destination(cx, &p("mirror"), m);
        cross::destination_exists(cx, &p("mirror"), m, world, true);
    }
    validate_http_mirrors(cx, path, &r.mirrors, world);
}

/// istiod's `validateHTTPRouteConflict`: what a root, delegate or ordinary route may combine.
fn validate_http_route_conflict(cx: &mut Cx<'_>, path: &str, r: &HttpRoute, delegate: bool) {
    let p = |f: &str| format!("{path}.{f}");
    if r.delegate.is_some() && !delegate {
        if r.redirect.is_some() {
            let name = r.name.as_deref().unwrap_or("");
            cx.error(
                &p("redirect"),
                format!("root HTTP route {name} must not specify redirect"),
            );
        }
        if !r.route.is_empty() {
            let name = r.name.as_deref().unwrap_or("");
            cx.error(
                &p("route"),
                format!("root HTTP route {name} must not specify route"),
            );
        }
        return;
    }
    if delegate && r.delegate.is_some() {
        cx.error(
            &p("delegate"),
            "delegate HTTP route cannot contain delegate",
        );
    }
    if r.redirect.is_some() {
        validate_redirect_conflict(cx, path, r);
    }
    if r.direct_response.is_some() {
        validate_direct_response_conflict(cx, path, r);
    }
    if r.redirect.is_none() && r.direct_response.is_none() && r.route.is_empty() {
        cx.error(path, "HTTP route, redirect or direct_response is required");
    }
}

fn validate_redirect_conflict(cx: &mut Cx<'_>, path: &str, r: &HttpRoute) {
    let p = |f: &str| format!("{path}.{f}");
    if !r.route.is_empty() {
        cx.error(
            &p("redirect"),
            "HTTP route cannot contain both route and redirect",
        );
    }
    if r.fault.is_some() {
        cx.error(
            &p("redirect"),
            "HTTP route cannot contain both fault and redirect",
        );
    }
    if r.rewrite.is_some() {
        cx.error(
            &p("rewrite"),
            "HTTP route rule cannot contain both rewrite and redirect",
        );
    }
    if r.direct_response.is_some() {
        cx.error(
            &p("directResponse"),
            "HTTP route rule cannot contain both direct_response and redirect",
        );
    }
}

fn validate_direct_response_conflict(cx: &mut Cx<'_>, path: &str, r: &HttpRoute) {
    let p = |f: &str| format!("{path}.{f}");
    if !r.route.is_empty() {
        cx.error(
            &p("directResponse"),
            "HTTP route cannot contain both route and direct_response",
        );
    }
    if r.fault.is_some() {
        cx.error(
            &p("directResponse"),
            "HTTP route cannot contain both fault and direct_response",
        );
    }
    if r.rewrite.is_some() {
        cx.error(
            &p("rewrite"),
            "HTTP route rule cannot contain both rewrite and direct_response",
        );
    }
}

/// istiod's `validateHTTPRouteMatchRequest`.
fn validate_http_route_match_request(cx: &mut Cx<'_>, path: &str, r: &HttpRoute) {
    for (j, m) in r.match_.iter().enumerate() {
        let mp = format!("{path}.match[{j}]");
        for (name, field, allow_empty_prefix) in [
            ("uri", &m.uri, true),
            ("scheme", &m.scheme, false),
            ("method", &m.method, false),
            ("authority", &m.authority, false),
        ] {
            if let Some(sm) = field {
                validate_string_match(cx, &format!("{mp}.{name}"), sm, name, allow_empty_prefix);
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (k, sm) in map {
                validate_string_match(cx, &format!("{mp}.{field}.{k}"), sm, field, false);
            }
        }
        if let Some(port) = m.port {
            istio_port(cx, &format!("{mp}.port"), port);
        }
        if let Some(ns) = &m.source_namespace
            && !is_dns1123_label(ns)
        {
            cx.error(
                &format!("{mp}.sourceNamespace"),
                format!("sourceNamespace match {ns} is invalid"),
            );
        }
    }
}

/// istiod's `validateHTTPRouteDestinations`: each destination, and the weights together.
fn validate_http_route_destinations(
    cx: &mut Cx<'_>,
    path: &str,
    route: &[HttpRouteDestination],
    world: &World<'_>,
) {
    let ws: Vec<_> = route
        .iter()
        .enumerate()
        .map(|(j, d)| (d.weight, format!("{path}.route[{j}].weight")))
        .collect();
    validate_weights(cx, &format!("{path}.route"), &ws);
    for (j, d) in route.iter().enumerate() {
        let dp = format!("{path}.route[{j}].destination");
        validate_destination(cx, &dp, &d.destination);
        cross::destination_exists(cx, &dp, &d.destination, world, false);
    }
}

/// istiod's `validateHTTPRetry`.
fn validate_http_retry(cx: &mut Cx<'_>, rp: &str, rt: &HttpRetry) {
    let attempts = rt.attempts.unwrap_or(0);
    if attempts < 0 {
        cx.error(&format!("{rp}.attempts"), "attempts cannot be negative");
    }
    if attempts == 0
        && (rt.per_try_timeout.is_some()
            || rt.retry_on.is_some()
            || rt.retry_remote_localities.is_some())
    {
        cx.error(
            rp,
            "http retry policy configured when attempts are set to 0 (disabled)",
        );
    }
    duration(cx, &format!("{rp}.perTryTimeout"), &rt.per_try_timeout);
    duration(cx, &format!("{rp}.backoff"), &rt.backoff);
    if let Some(on) = rt.retry_on.as_deref().filter(|s| !s.is_empty()) {
        for policy in on.split(',') {
            let status_code = policy
                .parse::<u16>()
                .is_ok_and(|n| (100..=599).contains(&n));
            if !status_code && !RETRY_ON.contains(&policy) {
                cx.error(
                    &format!("{rp}.retryOn"),
                    format!("\"{policy}\" is not a valid retryOn policy"),
                );
            }
        }
    }
}

/// istiod's `validateHTTPRewrite`.
fn validate_http_rewrite(cx: &mut Cx<'_>, path: &str, rw: &HttpRewrite) {
    let p = |f: &str| format!("{path}.{f}");
    if rw.uri.is_some() && rw.uri_regex_rewrite.is_some() {
        cx.error(
            &p("rewrite"),
            "rewrite may only contain one of URI or UriRegexRewrite",
        );
    }
    if rw.uri.is_none() && rw.uri_regex_rewrite.is_none() && rw.authority.is_none() {
        cx.error(
            &p("rewrite"),
            "rewrite must specify at least one of URI, UriRegexRewrite, or authority. Only one of URI or UriRegexRewrite may be specified",
        );
    }
    if let Some(re) = &rw.uri_regex_rewrite
        && (re.match_.is_empty() || re.rewrite.is_empty())
    {
        cx.error(
            &p("rewrite.uriRegexRewrite"),
            "UriRegexRewrite requires both Rewrite and Match fields to be specified",
        );
    } else if let Some(re) = &rw.uri_regex_rewrite
        && let Some(msg) = regex_problem(&re.match_, "uriRegexRewrite")
    {
        cx.error(&p("rewrite.uriRegexRewrite.match"), msg);
    }
}

/// istiod's `validateHTTPRedirect`.
fn validate_http_redirect(cx: &mut Cx<'_>, rdp: &str, rd: &HttpRedirect) {
    if rd.uri.is_some() && rd.prefix_rewrite.is_some() {
        cx.error(
            rdp,
            "redirect may only specify one of uri or prefix_rewrite",
        );
    }
    if rd.uri.is_none()
        && rd.prefix_rewrite.is_none()
        && rd.authority.is_none()
        && rd.port.is_none()
        && rd.derive_port.is_none()
        && rd.scheme.is_none()
    {
        cx.error(rdp, "redirect must specify URI, authority, scheme, or port");
    }
    if let Some(code) = rd.redirect_code
        && code != 0
        && !(300..=399).contains(&code)
    {
        cx.error(
            &format!("{rdp}.redirectCode"),
            format!("{code} is not a valid redirect code, must be 3xx"),
        );
    }
    if let Some(s) = &rd.scheme
        && s != "http"
        && s != "https"
    {
        cx.error(
            &format!("{rdp}.scheme"),
            "invalid redirect scheme, must be \"http\" or \"https\"",
        );
    }
    if let Some(port) = rd.port.filter(|p| *p > 0) {
        istio_port(cx, &format!("{rdp}.port"), port);
    }
}

/// istiod's `validateHTTPDirectResponse`.
fn validate_http_direct_response(cx: &mut Cx<'_>, path: &str, dr: &HttpDirectResponse) {
    if !(200..=599).contains(&dr.status) {
        cx.error(
            &format!("{path}.directResponse.status"),
            format!("HTTP status {} is not in range 200-599", dr.status),
        );
    }
}

/// istiod's `validateHTTPFaultInjection`.
fn validate_http_fault_injection(cx: &mut Cx<'_>, fp: &str, f: &HttpFaultInjection) {
    if f.abort.is_none() && f.delay.is_none() {
        cx.error(fp, "HTTP fault injection must have an abort and/or a delay");
    }
    if let Some(a) = &f.abort {
        validate_http_fault_injection_abort(cx, &format!("{fp}.abort"), a);
    }
    if let Some(d) = &f.delay {
        validate_http_fault_injection_delay(cx, &format!("{fp}.delay"), d);
    }
}

/// istiod's `validateHTTPFaultInjectionAbort`.
fn validate_http_fault_injection_abort(cx: &mut Cx<'_>, ap: &str, a: &FaultAbort) {
    percentage(cx, &format!("{ap}.percentage.value"), &a.percentage);
    if let Some(status) = a.http_status {
        if !(200..=600).contains(&status) {
            cx.error(
                &format!("{ap}.httpStatus"),
                format!("HTTP status {status} is not in range 200-599"),
            );
        }
    } else if a.http2_error.is_some() {
        cx.error(
            &format!("{ap}.http2Error"),
            "HTTP/2 abort fault injection not supported yet",
        );
    } else if a.grpc_status.is_none() {
        cx.warn(ap, "abort configured, but error type not set");
    }
    if a.percentage.is_none() {
        cx.warn(
            ap,
            "abort has no percentage, so it applies to no requests; set percentage.value",
        );
    }
}

/// istiod's `validateHTTPFaultInjectionDelay`.
fn validate_http_fault_injection_delay(cx: &mut Cx<'_>, dp: &str, d: &FaultDelay) {
    percentage(cx, &format!("{dp}.percentage.value"), &d.percentage);
    duration(cx, &format!("{dp}.fixedDelay"), &d.fixed_delay);
    if d.exponential_delay.is_some() {
        cx.error(
            &format!("{dp}.exponentialDelay"),
            "exponentialDelay not supported yet",
        );
    }
    if d.percentage.is_none() && d.percent.is_none() {
        cx.warn(
            dp,
            "delay has no percentage, so it applies to no requests; set percentage.value",
        );
    }
}

/// `mirrorPercent` and `mirrorPercentage`, as istiod's `validateHTTPRoute` checks them.
fn validate_mirror_percentage(cx: &mut Cx<'_>, path: &str, r: &HttpRoute) {
    let p = |f: &str| format!("{path}.{f}");
    if let Some(v) = r.deprecated_mirror_percent() {
        if v > 100 {
            cx.error(
                &p("mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {v})"),
            );
        }
        cx.warn(
            &p("mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(mp) = &r.mirror_percentage {
        if mp.value > 100.0 {
            cx.error(
                &p("mirrorPercentage.value"),
                format!(
                    "mirror_percentage must have a max value of 100 (it has {:.6})",
                    mp.value
                ),
            );
        }
        if mp.value < 0.0 {
            cx.error(
                &p("mirrorPercentage.value"),
                format!(
                    "mirror_percentage must have a min value of 0 (it has {:.6})",
                    mp.value
                ),
            );
        }
    }
}

/// istiod's `validateHTTPMirrors`.
fn validate_http_mirrors(
    cx: &mut Cx<'_>,
    path: &str,
    mirrors: &[HttpMirrorPolicy],
    world: &World<'_>,
) {
    for (j, m) in mirrors.iter().enumerate() {
        let mp = format!("{path}.mirrors[{j}]");
        validate_destination(cx, &format!("{mp}.destination"), &m.destination);
        cross::destination_exists(
            cx,
            &format!("{mp}.destination"),
            &m.destination,
            world,
            true,
        );
        if let Some(pct) = &m.percentage {
            if pct.value > 100.0 {
                cx.error(
                    &format!("{mp}.percentage.value"),
                    format!(
                        "mirror percentage must have a max value of 100 (it has {:.6})",
                        pct.value
                    ),
                );
            }
            if pct.value < 0.0 {
                cx.error(
                    &format!("{mp}.percentage.value"),
                    format!(
                        "mirror percentage must have a min value of 0 (it has {:.6})",
                        pct.value
                    ),
                );
            }
        }
    }
}

// --- DestinationRule ---

/// istiod's `ValidateDestinationRule`.
pub(super) fn validate_destination_rule(cx: &mut Cx<'_>, dr: &DestinationRule, world: &World<'_>) {
    let spec = &dr.spec;
    if spec.host.is_empty() {
        cx.error("spec.host", "Required value");
    }
    if let Some(tp) = &spec.traffic_policy {
        validate_traffic_policy(cx, "spec.trafficPolicy", tp);
    }
    let mut names = HashSet::new();
    let host = world.resolve(&spec.host, cx.namespace());
    let service = world.services.get(&host).copied();
    for (i, s) in spec.subsets.iter().enumerate() {
        validate_subset(cx, &format!("spec.subsets[{i}]"), s, &mut names);
        cross::subset_selects_pods(cx, &format!("spec.subsets[{i}]"), s, service, world);
    }
    if let Some(ws) = &spec.workload_selector {
        selector_labels(cx, "spec.workloadSelector", &Some(ws.clone()));
    }
}

/// istiod's `validateSubset`, and the names unique within the rule.
fn validate_subset<'s>(cx: &mut Cx<'_>, sp: &str, s: &'s Subset, names: &mut HashSet<&'s str>) {
    if s.name.is_empty() {
        cx.error(&format!("{sp}.name"), "subset name cannot be empty");
    } else if !is_dns1123_label(&s.name) {
        cx.error(
            &format!("{sp}.name"),
            format!("subset name is invalid: {}", s.name),
        );
    }
    if !names.insert(s.name.as_str()) {
        cx.error(
            &format!("{sp}.name"),
            format!("duplicate subset names: {}", s.name),
        );
    }
    if let Some(tp) = &s.traffic_policy {
        validate_traffic_policy(cx, &format!("{sp}.trafficPolicy"), tp);
    }
}

/// istiod's `validateTrafficPolicy`.
fn validate_traffic_policy(cx: &mut Cx<'_>, path: &str, tp: &TrafficPolicy) {
    if tp.outlier_detection.is_none()
        && tp.connection_pool.is_none()
        && tp.load_balancer.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
        && tp.retry_budget.is_none()
    {
        cx.error(path, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        cx.error(path, "tunnel and proxyProtocol must not be set together");
    }
    validate_policy_settings(
        cx,
        path,
        &tp.outlier_detection,
        &tp.connection_pool,
        &tp.load_balancer,
        &tp.tls,
    );
    if let Some(t) = &tp.tunnel {
        validate_tunnel_settings(cx, &format!("{path}.tunnel"), t);
    }
    if let Some(p) = tp.retry_budget.as_ref().and_then(|b| b.percent)
        && !(0.0..=100.0).contains(&p)
    {
        // The CRD's own bounds (minimum 0, maximum 100).
        cx.error(
            &format!("{path}.retryBudget.percent"),
            format!("retry budget percent must be between 0 and 100, not {p}"),
        );
    }
    validate_port_traffic_policies(cx, path, &tp.port_level_settings);
}

/// The tunnel settings of a traffic policy.
fn validate_tunnel_settings(cx: &mut Cx<'_>, tp_: &str, t: &TunnelSettings) {
    if let Some(proto) = &t.protocol
        && proto != "CONNECT"
        && proto != "POST"
    {
        cx.error(
            &format!("{tp_}.protocol"),
            "tunnel protocol must be \"CONNECT\" or \"POST\"",
        );
    }
    if !(1..=65535).contains(&t.target_port) {
        cx.error(
            &format!("{tp_}.targetPort"),
            format!(
                "tunnel target port is invalid: port number {} must be in the range 1..65535",
                t.target_port
            ),
        );
    }
}

/// istiod's `validatePortTrafficPolicies`.
fn validate_port_traffic_policies(cx: &mut Cx<'_>, path: &str, settings: &[PortTrafficPolicy]) {
    for (i, pl) in settings.iter().enumerate() {
        let pp = format!("{path}.portLevelSettings[{i}]");
        match pl.port.as_ref().and_then(|p| p.number) {
            None => cx.error(&pp, "portTrafficPolicy must have valid port"),
            Some(n) => istio_port(cx, &format!("{pp}.port.number"), n),
        }
        if pl.outlier_detection.is_none()
            && pl.connection_pool.is_none()
            && pl.load_balancer.is_none()
            && pl.tls.is_none()
        {
            cx.error(&pp, "port traffic policy must have at least one field");
        } else {
            validate_policy_settings(
                cx,
                &pp,
                &pl.outlier_detection,
                &pl.connection_pool,
                &pl.load_balancer,
                &pl.tls,
            );
        }
    }
}

/// The four settings a traffic policy and a port traffic policy share.
fn validate_policy_settings(
    cx: &mut Cx<'_>,
    path: &str,
    outlier: &Option<OutlierDetection>,
    pool: &Option<ConnectionPoolSettings>,
    lb: &Option<LoadBalancerSettings>,
    tls: &Option<ClientTlsSettings>,
) {
    if let Some(o) = outlier {
        validate_outlier_detection(cx, &format!("{path}.outlierDetection"), o);
    }
    if let Some(pool) = pool {
        validate_connection_pool(cx, &format!("{path}.connectionPool"), pool);
    }
    if let Some(lb) = lb {
        validate_load_balancer(cx, path, lb);
    }
    if let Some(tls) = tls {
        validate_tls(cx, &format!("{path}.tls"), tls);
    }
}

/// istiod's `validateOutlierDetection`.
fn validate_outlier_detection(cx: &mut Cx<'_>, op: &str, o: &OutlierDetection) {
    duration(cx, &format!("{op}.baseEjectionTime"), &o.base_ejection_time);
    duration(cx, &format!("{op}.interval"), &o.interval);
    if o.consecutive_errors.is_some_and(|n| n != 0) {
        cx.warn(
            &format!("{op}.consecutiveErrors"),
            "outlier detection consecutive errors is deprecated, use consecutiveGatewayErrors or consecutive5xxErrors instead",
        );
    }
    if !o.split_external_local_origin_errors.unwrap_or(false)
        && o.consecutive_local_origin_failures.unwrap_or(0) > 0
    {
        cx.error(
            &format!("{op}.consecutiveLocalOriginFailures"),
            "outlier detection consecutive local origin failures is specified, but split external local origin errors is set to false",
        );
    }
    percent_0_100(
        cx,
        &format!("{op}.maxEjectionPercent"),
        o.max_ejection_percent,
    );
    percent_0_100(cx, &format!("{op}.minHealthPercent"), o.min_health_percent);
}

/// istiod's `validateConnectionPool`.
fn validate_connection_pool(cx: &mut Cx<'_>, pp: &str, pool: &ConnectionPoolSettings) {
    if pool.http.is_none() && pool.tcp.is_none() {
        cx.error(pp, "connection pool must have at least one field");
    }
    if let Some(h) = &pool.http {
        validate_http_settings(cx, &format!("{pp}.http"), h);
    }
    if let Some(t) = &pool.tcp {
        validate_tcp_settings(cx, &format!("{pp}.tcp"), t);
    }
}

/// The HTTP half of istiod's `validateConnectionPool`.
fn validate_http_settings(cx: &mut Cx<'_>, hp: &str, h: &HttpSettings) {
    for (field, v, msg) in [
        (
            "http1MaxPendingRequests",
            h.http1_max_pending_requests,
            "http1 max pending requests must be non-negative",
        ),
        (
            "http2MaxRequests",
            h.http2_max_requests,
            "http2 max requests must be non-negative",
        ),
        (
            "maxRequestsPerConnection",
            h.max_requests_per_connection,
            "max requests per connection must be non-negative",
        ),
        (
            "maxRetries",
            h.max_retries,
            "max retries must be non-negative",
        ),
        (
            "maxConcurrentStreams",
            h.max_concurrent_streams,
            "max concurrent streams must be non-negative",
        ),
    ] {
        if v.is_some_and(|v| v < 0) {
            cx.error(&format!("{hp}.{field}"), msg);
        }
    }
    duration(cx, &format!("{hp}.idleTimeout"), &h.idle_timeout);
    if h.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade) && h.use_client_protocol == Some(true)
    {
        cx.error(
            &format!("{hp}.useClientProtocol"),
            "use client protocol must not be true when H2UpgradePolicy is UPGRADE",
        );
    }
}

/// The TCP half of istiod's `validateConnectionPool`.
fn validate_tcp_settings(cx: &mut Cx<'_>, tp: &str, t: &TcpSettings) {
    if t.max_connections.is_some_and(|v| v < 0) {
        cx.error(
            &format!("{tp}.maxConnections"),
            "max connections must be non-negative",
        );
    }
    duration(cx, &format!("{tp}.connectTimeout"), &t.connect_timeout);
    duration(
        cx,
        &format!("{tp}.maxConnectionDuration"),
        &t.max_connection_duration,
    );
    if t.idle_timeout
        .as_ref()
        .is_some_and(|d| d.get().as_millis() != 0)
    {
        duration(cx, &format!("{tp}.idleTimeout"), &t.idle_timeout);
    }
}

/// istiod's `validateLoadBalancer`.
fn validate_load_balancer(cx: &mut Cx<'_>, path: &str, lb: &LoadBalancerSettings) {
    let Some(ch) = &lb.consistent_hash else {
        return;
    };
    let cp = format!("{path}.loadBalancer.consistentHash");
    if ch.http_cookie.as_ref().is_some_and(|c| c.name.is_empty()) {
        cx.error(&format!("{cp}.httpCookie"), "name required for HttpCookie");
    }
    if ch.minimum_ring_size.is_some_and(|n| n != 0) {
        cx.warn(
            &format!("{cp}.minimumRingSize"),
            "consistent hash MinimumRingSize is deprecated, use ConsistentHashLB's RingHash configuration instead",
        );
        if ch.ring_hash.is_some() || ch.maglev.is_some() {
            cx.error(
                &cp,
                "only one of MinimumRingSize or Maglev/Ringhash can be specified",
            );
        }
    }
}

/// istiod's `validateTLS` (a DestinationRule's client TLS settings).
fn validate_tls(cx: &mut Cx<'_>, tp: &str, tls: &ClientTlsSettings) {
    match tls.mode {
        Some(ClientTlsMode::IstioMutual) => {
            for (field, v) in [
                ("clientCertificate", &tls.client_certificate),
                ("privateKey", &tls.private_key),
                ("caCertificates", &tls.ca_certificates),
                ("credentialName", &tls.credential_name),
                ("caCrl", &tls.ca_crl),
            ] {
                if v.as_deref().is_some_and(|s| !s.is_empty()) {
                    cx.warn(
                        &format!("{tp}.{field}"),
                        format!("{field} should be empty if mode is ISTIO_MUTUAL (Istio uses its own certificates; this value is ignored)"),
                    );
                }
            }
        }
        Some(ClientTlsMode::Mutual) if tls.credential_name.is_none() => {
            if tls.client_certificate.as_deref().is_none_or(str::is_empty) {
                cx.error(tp, "client certificate required for mutual tls");
            }
            if tls.private_key.as_deref().is_none_or(str::is_empty) {
                cx.error(tp, "private key required for mutual tls");
            }
        }
        Some(ClientTlsMode::Simple | ClientTlsMode::Mutual)
            if tls.credential_name.is_some()
                && (tls.client_certificate.is_some()
                    || tls.ca_certificates.is_some()
                    || tls.private_key.is_some()
                    || tls.ca_crl.is_some()) =>
        {
            cx.error(tp, "cannot specify client certificates or CA certificate or CA CRL If credentialName is set");
        }
        _ => {}
    }
}

// --- Gateway and ServiceEntry ---

/// istiod's `ValidateGateway`.
pub(super) fn validate_gateway(cx: &mut Cx<'_>, g: &Gateway) {
    if g.spec.servers.is_empty() {
        cx.error("spec.servers", "gateway must have at least one server");
    }
    let mut names = HashSet::new();
    for (i, s) in g.spec.servers.iter().enumerate() {
        validate_server(cx, &format!("spec.servers[{i}]"), s, &mut names);
    }
}

/// istiod's `validateServer`, and the port names unique within the Gateway.
fn validate_server<'s>(cx: &mut Cx<'_>, sp: &str, s: &'s Server, names: &mut HashSet<&'s str>) {
    if s.hosts.is_empty() {
        cx.error(
            &format!("{sp}.hosts"),
            "server config must contain at least one host",
        );
    }
    if s.port.name.is_empty() {
        cx.error(
            &format!("{sp}.port.name"),
            format!(
                "port name must be set: number:{} protocol:\"{}\"",
                s.port.number, s.port.protocol
            ),
        );
    } else if !names.insert(s.port.name.as_str()) {
        cx.error(
            &format!("{sp}.port.name"),
            format!(
                "port names in servers must be unique: duplicate name {}",
                s.port.name
            ),
        );
    }
    if s.bind.as_deref().is_none_or(|b| !b.starts_with("unix://")) {
        istio_port(cx, &format!("{sp}.port.number"), s.port.number);
    }
    let proto = s.port.protocol.to_ascii_uppercase();
    if ![
        "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "REDIS", "MYSQL", "TCP", "TLS",
        "UDP",
    ]
    .contains(&proto.as_str())
    {
        cx.error(
            &format!("{sp}.port.protocol"),
            format!("invalid protocol \"{}\", supported protocols are HTTP, HTTP2, GRPC, GRPC-WEB, MONGO, REDIS, MYSQL, TCP", s.port.protocol),
        );
    }
    let is_tls = proto == "HTTPS" || proto == "TLS";
    let redirect_only = s
        .tls
        .as_ref()
        .is_some_and(|t| t.https_redirect == Some(true));
    if is_tls && s.tls.is_none() {
        cx.error(
            &format!("{sp}.tls"),
            "server must have TLS settings for HTTPS/TLS protocols",
        );
    } else if !is_tls && s.tls.is_some() && !redirect_only {
        cx.error(
            &format!("{sp}.tls"),
            "server cannot have TLS settings for non HTTPS/TLS ports",
        );
    }
    if redirect_only && proto != "HTTP" {
        cx.warn(
            &format!("{sp}.tls.httpsRedirect"),
            "tls.httpsRedirect should only be used with http servers",
        );
    }
}

/// istiod's `ValidateServiceEntry`.
pub(super) fn validate_service_entry(cx: &mut Cx<'_>, se: &ServiceEntry) {
    let spec = &se.spec;
    if spec.hosts.is_empty() {
        cx.error("spec.hosts", "service entry must have at least one host");
    }
    if spec.workload_selector.is_some() && !spec.endpoints.is_empty() {
        cx.error(
            "spec.workloadSelector",
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
    }
    let mut names = HashSet::new();
    let mut numbers = HashSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let pp = format!("spec.ports[{i}]");
        istio_port(cx, &format!("{pp}.number"), p.number);
        if !names.insert(p.name.as_str()) {
            cx.error(
                &format!("{pp}.name"),
                format!("service entry port name \"{}\" already defined", p.name),
            );
        }
        if !numbers.insert(p.number) {
            cx.error(
                &format!("{pp}.number"),
                format!("service entry port {} already defined", p.number),
            );
        }
    }
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    if resolution == Resolution::None && !spec.endpoints.is_empty() {
        cx.error(
            "spec.endpoints",
            "no endpoints should be provided for resolution type none",
        );
    }
    if !matches!(resolution, Resolution::None | Resolution::Static)
        && spec.addresses.iter().any(|a| a.contains('/'))
    {
        cx.error(
            "spec.addresses",
            "CIDR addresses are allowed only for NONE/STATIC resolution types",
        );
    }
}
