//! Istio security: AuthorizationPolicy, PeerAuthentication and RequestAuthentication, with
//! istiod's messages.

use super::{Cx, World, cross, selector_labels};
use crate::security::{
    Action, AuthorizationPolicy, JwtRule, PeerAuthentication, RequestAuthentication, Rule,
};

/// istiod's `ValidateAuthorizationPolicy`.
pub(super) fn validate_authorization_policy(
    cx: &mut Cx<'_>,
    ap: &AuthorizationPolicy,
    world: &World<'_>,
) {
    let spec = &ap.spec;
    let action = spec.action();
    if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
        cx.error("spec", "only one of targetRefs or selector can be set");
    }
    selector_labels(cx, "spec.selector", &spec.selector);
    cross::selector_matches_workloads(cx, "spec.selector", &spec.selector, world);
    let meaningless = |a: &str| {
        format!(
            "{a} action without `rules` is meaningless as it will never be triggered, add an empty rule `{{}}` if you want it be triggered for every request"
        )
    };
    match action {
        Action::Custom if spec.rules.is_none() => cx.error("spec", meaningless("CUSTOM")),
        Action::Custom if spec.provider.as_ref().is_none_or(|p| p.name.is_empty()) => {
            cx.error("spec.provider", "`provider.name` must not be empty")
        }
        Action::Deny if spec.rules.is_none() => cx.error("spec", meaningless("DENY")),
        // istiod accepts it, but it logs nothing.
        Action::Audit if spec.rules.is_none() => cx.warn("spec", meaningless("AUDIT")),
        _ => {}
    }
    if action == Action::Custom
        && let Some(name) = spec.provider.as_ref().map(|p| p.name.as_str())
        && !name.is_empty()
        && spec.rules.is_some()
    {
        // skein has no meshConfig.extensionProviders: every provider is undefined, and Istio
        // then installs a deny for the policy's rules (`-deny-due-to-bad-CUSTOM-action`).
        cx.warn(
            "spec.provider.name",
            format!(
                "extension provider {name:?} is not defined in meshConfig.extensionProviders (skein has no external authorizers): the requests this CUSTOM policy matches are denied"
            ),
        );
    }
    if spec.provider.is_some() && action != Action::Custom {
        let name = format!("{action:?}").to_ascii_uppercase();
        cx.error(
            "spec.provider",
            format!("`provider` must not be with non CUSTOM action, found {name}"),
        );
    }
    for (i, rule) in spec.rules().iter().enumerate() {
        let rp = format!("spec.rules[{i}]");
        validate_rule_from(cx, &rp, i, rule, action);
        validate_rule_to(cx, &rp, i, rule);
        validate_conditions(cx, &rp, rule, action);
    }
}

/// A rule's `from`: each source non-empty, consistent, and what CUSTOM allows.
fn validate_rule_from(cx: &mut Cx<'_>, rp: &str, i: usize, rule: &Rule, action: Action) {
    if rule.from.as_ref().is_some_and(Vec::is_empty) {
        cx.error(
            &format!("{rp}.from"),
            format!("`from` must not be empty, found at rule {i}"),
        );
    }
    for (j, from) in rule.from.iter().flatten().enumerate() {
        let fp = format!("{rp}.from[{j}]");
        let Some(src) = &from.source else {
            cx.error(
                &fp,
                format!("`from.source` must not be nil, found at rule {i}"),
            );
            continue;
        };
        let sp = format!("{fp}.source");
        let lists = [
            ("principals", &src.principals),
            ("notPrincipals", &src.not_principals),
            ("requestPrincipals", &src.request_principals),
            ("notRequestPrincipals", &src.not_request_principals),
            ("namespaces", &src.namespaces),
            ("notNamespaces", &src.not_namespaces),
            ("serviceAccounts", &src.service_accounts),
            ("notServiceAccounts", &src.not_service_accounts),
            ("ipBlocks", &src.ip_blocks),
            ("notIpBlocks", &src.not_ip_blocks),
            ("remoteIpBlocks", &src.remote_ip_blocks),
            ("notRemoteIpBlocks", &src.not_remote_ip_blocks),
            ("trustDomains", &src.trust_domains),
            ("notTrustDomains", &src.not_trust_domains),
        ];
        if lists
            .iter()
            .all(|(_, l)| l.as_ref().is_none_or(Vec::is_empty))
        {
            cx.error(
                &sp,
                format!("`from.source` must not be empty, found at rule {i}"),
            );
        }
        let sa = src.service_accounts.is_some() || src.not_service_accounts.is_some();
        let pn = src.principals.is_some()
            || src.not_principals.is_some()
            || src.namespaces.is_some()
            || src.not_namespaces.is_some();
        if sa && pn {
            cx.error(
                &sp,
                "Cannot set serviceAccounts with namespaces or principals",
            );
        }
        for (name, list) in lists {
            let key = upper_first(name);
            let fp = format!("{sp}.{name}");
            if list.iter().flatten().any(String::is_empty) {
                cx.error(&fp, format!("empty value not allowed, found in {key}"));
                continue;
            }
            let Some(values) = list else { continue };
            let problem = match name {
                "serviceAccounts" | "notServiceAccounts" => service_account_problem(&key, values),
                "trustDomains" | "notTrustDomains" => trust_domain_problem(&key, values),
                "ipBlocks" | "notIpBlocks" | "remoteIpBlocks" | "notRemoteIpBlocks" => {
                    ip_problem(values)
                }
                _ => None,
            };
            if let Some(msg) = problem {
                cx.error(&fp, msg);
            }
        }
        if action == Action::Custom {
            for (name, list) in &lists[..8] {
                if list.as_ref().is_some_and(|l| !l.is_empty()) {
                    cx.error(
                        &format!("{sp}.{name}"),
                        format!(
                            "From.{} is currently not supported with CUSTOM action",
                            upper_first(name)
                        ),
                    );
                }
            }
        }
    }
}

/// A rule's `to`: each operation non-empty, and ports that are ports.
fn validate_rule_to(cx: &mut Cx<'_>, rp: &str, i: usize, rule: &Rule) {
    if rule.to.as_ref().is_some_and(Vec::is_empty) {
        cx.error(
            &format!("{rp}.to"),
            format!("`to` must not be empty, found at rule {i}"),
        );
    }
    for (j, to) in rule.to.iter().flatten().enumerate() {
        let tp = format!("{rp}.to[{j}]");
        let Some(op) = &to.operation else {
            cx.error(
                &tp,
                format!("`to.operation` must not be nil, found at rule {i}"),
            );
            continue;
        };
        let op_path = format!("{tp}.operation");
        let lists = [
            ("hosts", &op.hosts),
            ("notHosts", &op.not_hosts),
            ("ports", &op.ports),
            ("notPorts", &op.not_ports),
            ("methods", &op.methods),
            ("notMethods", &op.not_methods),
            ("paths", &op.paths),
            ("notPaths", &op.not_paths),
        ];
        if lists
            .iter()
            .all(|(_, l)| l.as_ref().is_none_or(Vec::is_empty))
        {
            cx.error(
                &op_path,
                format!("`to.operation` must not be empty, found at rule {i}"),
            );
        }
        for (name, list) in lists {
            for (k, v) in list.iter().flatten().enumerate() {
                if v.is_empty() {
                    cx.error(
                        &format!("{op_path}.{name}"),
                        format!("empty value not allowed, found in {}", upper_first(name)),
                    );
                } else if (name == "ports" || name == "notPorts")
                    && v.parse::<u32>().map_or(true, |p| p > 65535)
                {
                    cx.error(&format!("{op_path}.{name}[{k}]"), format!("bad port ({v})"));
                }
            }
        }
    }
}

/// A rule's `when` conditions.
fn validate_conditions(cx: &mut Cx<'_>, rp: &str, rule: &Rule, action: Action) {
    for (j, w) in rule.when.iter().enumerate() {
        let wp = format!("{rp}.when[{j}]");
        if w.key.starts_with("experimental.envoy.filters.") {
            // Envoy dynamic metadata: the proxy has none, and its condition never matches.
            // In an ALLOW rule that is a smaller allow; in a DENY (or CUSTOM, compiled to a
            // DENY) rule it would silently deny nothing, so it is refused.
            let msg = format!(
                "skein cannot evaluate key {}: a condition on it never matches",
                w.key
            );
            if matches!(action, Action::Deny | Action::Custom) {
                cx.error(&format!("{wp}.key"), msg);
            } else {
                cx.warn(&format!("{wp}.key"), msg);
            }
        }
        if w.key.is_empty() {
            cx.error(&format!("{wp}.key"), "`key` must not be empty");
        } else if w.values.is_empty() && w.not_values.is_empty() {
            cx.error(
                &wp,
                format!(
                    "at least one of `values` or `notValues` must be set for key {}",
                    w.key
                ),
            );
        } else {
            for (field, which, values) in [
                ("values", "value", &w.values),
                ("notValues", "notValue", &w.not_values),
            ] {
                if values.is_empty() {
                    continue;
                }
                if let Some(err) = attribute_problem(&w.key, values) {
                    cx.error(
                        &format!("{wp}.{field}"),
                        format!("invalid `{which}` for `key` {}: {err}", w.key),
                    );
                }
            }
        }
    }
}

/// istio's `security.ValidateAttribute`: the `when` keys Istio knows (`pilot/pkg/security/
/// authz/model/model.go`) and what their values must look like.
fn attribute_problem(key: &str, values: &[String]) -> Option<String> {
    if values.iter().any(String::is_empty) {
        return Some(format!("empty value not allowed, found in {key}"));
    }
    let map_key = |prefix: &str| {
        let ok = key
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.len() > 2 && rest.starts_with('[') && rest.ends_with(']'));
        (!ok).then(|| format!("bad key ({key}): should have format a[b]"))
    };
    match key {
        k if k.starts_with("request.headers") => map_key("request.headers"),
        "source.ip" | "remote.ip" | "destination.ip" => ip_problem(values),
        "source.namespace" | "source.principal" | "connection.sni" => None,
        "request.auth.principal" | "request.auth.audiences" | "request.auth.presenter" => None,
        "source.serviceAccount" => service_account_problem(key, values),
        "source.trustDomain" => trust_domain_problem(key, values),
        k if k.starts_with("request.auth.claims") => map_key("request.auth.claims"),
        "destination.port" => values
            .iter()
            .find(|p| p.parse::<u16>().is_err())
            .map(|p| format!("bad port ({p})")),
        k if k.starts_with("experimental.envoy.filters.") => {
            // `experimental.envoy.filters.` + `a[b]`.
            let rest = &k["experimental.envoy.filters.".len()..];
            let open = rest.find('[');
            let ok = rest.ends_with(']') && open.is_some_and(|o| o > 0 && o < rest.len() - 2);
            (!ok).then(|| format!("bad key ({key}): should have format a[b]"))
        }
        "destination.namespace" => Some(format!(
            "attribute {key} is replaced by the metadata.namespace"
        )),
        k if k.starts_with("destination.labels") => Some(format!(
            "attribute {key} is replaced by the workload selector"
        )),
        "destination.name" | "destination.user" => Some(format!(
            "deprecated attribute {key}: only supported in v1alpha1"
        )),
        _ => Some(format!("unknown attribute: {key}")),
    }
}

/// istio's `security.ValidateIPs` (the proxy reads the same forms: an address, or an address
/// and a prefix length no longer than the address).
fn ip_problem(values: &[String]) -> Option<String> {
    let bad = |v: &String| -> Option<String> {
        match v.split_once('/') {
            Some((ip, bits)) => {
                let reason = match ip.parse::<std::net::IpAddr>() {
                    Err(e) => format!("{e}"),
                    Ok(ip) => {
                        let max = if ip.is_ipv4() { 32 } else { 128 };
                        match bits.parse::<u8>() {
                            Ok(b) if b <= max && !bits.starts_with('+') => return None,
                            _ => format!("bad bits after slash: {bits:?}"),
                        }
                    }
                };
                Some(format!("bad CIDR range ({v}): {reason}"))
            }
            None => v
                .parse::<std::net::IpAddr>()
                .is_err()
                .then(|| format!("bad IP address ({v})")),
        }
    };
    values.iter().find_map(bad)
}

/// istio's `security.CheckServiceAccount`: `name` (in the policy's namespace) or
/// `namespace/name`, no wildcards, at most 16 values of at most 320 characters.
fn service_account_problem(key: &str, values: &[String]) -> Option<String> {
    if values.len() > 16 {
        return Some("may not have more than 16 values".to_string());
    }
    values.iter().find_map(|v| {
        let expected = "expected format 'serviceAccount' or 'namespace/serviceAccount', found";
        if v.is_empty() {
            Some(format!("empty value not allowed, found in {key}"))
        } else if v.contains('*') {
            Some(format!("wildcard not allowed, found in {key}"))
        } else if v.matches('/').count() > 1 {
            Some(format!("{expected} {v:?} in {key}"))
        } else if v.len() > 320 {
            Some(format!(
                "value cannot exceed 320 characters, found {v:?} in {key}"
            ))
        } else {
            match v.split_once('/') {
                Some(("", _)) => Some(format!("{expected} empty namespace {v:?} in {key}")),
                Some((_, "")) => Some(format!("{expected} empty serviceAccount {v:?} in {key}")),
                _ => None,
            }
        }
    })
}

/// istio's `security.CheckTrustDomainValues`; and a suffix pattern (`*.example.com`), which
/// the proxy's principal patterns (exact, prefix, suffix of the whole principal) cannot
/// express for the trust-domain part alone.
fn trust_domain_problem(key: &str, values: &[String]) -> Option<String> {
    values.iter().find_map(|v| {
        let stars = v.matches('*').count();
        if v.is_empty() {
            Some(format!("empty value not allowed, found in {key}"))
        } else if stars > 1 {
            Some(format!(
                "at most one wildcard is allowed, found in {key}: {v:?}"
            ))
        } else if stars == 1 && v != "*" && !v.starts_with('*') && !v.ends_with('*') {
            Some(format!(
                "wildcard is only allowed at the start or end, found in {key}: {v:?}"
            ))
        } else if v.contains('/') {
            Some(format!(
                "trust domain must not contain '/', found in {key}: {v:?}"
            ))
        } else if v != "*" && v.starts_with('*') {
            Some(format!(
                "skein does not support suffix trust domain patterns, found in {key}: {v:?}"
            ))
        } else {
            None
        }
    })
}

fn upper_first(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

/// istiod's `ValidatePeerAuthentication`, and the CRD's rule for port-level mTLS.
pub(super) fn validate_peer_authentication(
    cx: &mut Cx<'_>,
    pa: &PeerAuthentication,
    world: &World<'_>,
) {
    let spec = &pa.spec;
    selector_labels(cx, "spec.selector", &spec.selector);
    cross::selector_matches_workloads(cx, "spec.selector", &spec.selector, world);
    let Some(ports) = &spec.port_level_mtls else {
        return;
    };
    if !spec.has_selector() {
        // The CRD's CEL rule, which `kubectl apply` reports (istiod's webhook says "mesh/namespace
        // peer authentication cannot have port level mTLS").
        cx.report(
            crate::Code::Skn0001,
            crate::Severity::Error,
            "spec.portLevelMtls",
            "portLevelMtls requires selector (a namespace-wide policy cannot set per-port modes: add spec.selector.matchLabels for the workload, or set spec.mtls.mode for the whole namespace)",
        );
    }
    if ports.is_empty() {
        cx.error(
            "spec.portLevelMtls",
            "port level mTLS, if defined, must have at least one element",
        );
    }
    for key in ports.keys() {
        if !key
            .trim()
            .parse::<u32>()
            .is_ok_and(|p| (1..=65535).contains(&p))
        {
            cx.error(
                &format!("spec.portLevelMtls.{key}"),
                "port must be between 1-65535",
            );
        }
    }
}

/// istiod's `ValidateRequestAuthentication` and the CRD's rules, plus what the proxy needs
/// to enforce the policy (an inline `jwks` it can read).
pub(super) fn validate_request_authentication(
    cx: &mut Cx<'_>,
    ra: &RequestAuthentication,
    world: &World<'_>,
) {
    let spec = &ra.spec;
    if spec.selector.is_some() && (spec.target_ref.is_some() || !spec.target_refs.is_empty()) {
        cx.error("spec", "only one of targetRefs or selector can be set");
    }
    selector_labels(cx, "spec.selector", &spec.selector);
    cross::selector_matches_workloads(cx, "spec.selector", &spec.selector, world);
    for (i, rule) in spec.jwt_rules.iter().enumerate() {
        validate_jwt_rule(cx, &format!("spec.jwtRules[{i}]"), rule);
    }
}

fn validate_jwt_rule(cx: &mut Cx<'_>, path: &str, rule: &JwtRule) {
    if rule.issuer.is_empty() {
        cx.error(&format!("{path}.issuer"), "issuer must be set");
    }
    if rule.audiences.iter().any(String::is_empty) {
        cx.error(
            &format!("{path}.audiences"),
            "audience must be non-empty string",
        );
    }
    let sources = usize::from(rule.jwks_uri.is_some())
        + usize::from(rule.jwks_uri_snake.is_some())
        + usize::from(rule.jwks.is_some());
    if sources > 1 {
        cx.error(path, "only one of jwks or jwksUri can be set");
    }
    if let Some(uri) = rule.jwks_uri() {
        let field = if rule.jwks_uri.is_some() {
            "jwksUri"
        } else {
            "jwks_uri"
        };
        if let Some(problem) = jwks_uri_problem(uri) {
            cx.error(&format!("{path}.{field}"), problem);
        } else if uri
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
        {
            cx.warn(
                &format!("{path}.{field}"),
                "skein's proxies fetch jwksUri over plain http only: this rule's tokens fail with \"Jwks remote fetch is failed\"; serve the keys from a Service in the mesh over http (the sidecar's mTLS protects the hop) or put them inline in jwks",
            );
        }
    }
    if let Some(jwks) = &rule.jwks
        && let Err(problem) = jwks_problem(jwks)
    {
        cx.error(
            &format!("{path}.jwks"),
            format!("jwks is not a JSON Web Key Set the proxy can use: {problem}"),
        );
    }
    if rule.jwks.is_none() && rule.jwks_uri().is_none() {
        // istiod resolves the issuer's OpenID discovery document; skein fetches nothing
        // from outside the mesh's config.
        cx.error(
            path,
            "set jwks (the keys inline) or jwksUri: skein does not look keys up by the issuer's OpenID discovery document",
        );
    }
    for (j, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            cx.error(
                &format!("{path}.fromHeaders[{j}].name"),
                "location header name must be non-empty string",
            );
        } else if http_name_problem(&h.name) {
            cx.error(
                &format!("{path}.fromHeaders[{j}].name"),
                format!("{:?} is not a valid HTTP header name", h.name),
            );
        }
    }
    for (j, q) in rule.from_params.iter().enumerate() {
        if q.is_empty() {
            cx.error(
                &format!("{path}.fromParams[{j}]"),
                "location query must be non-empty string",
            );
        }
    }
    for (j, c) in rule.from_cookies.iter().enumerate() {
        if c.is_empty() {
            cx.error(
                &format!("{path}.fromCookies[{j}]"),
                "cookie name must be non-empty string",
            );
        }
    }
    if let Some(h) = &rule.output_payload_to_header
        && !h.is_empty()
        && http_name_problem(h)
    {
        cx.error(
            &format!("{path}.outputPayloadToHeader"),
            format!("{h:?} is not a valid HTTP header name"),
        );
    }
    for (j, c) in rule.output_claim_to_headers.iter().enumerate() {
        let at = format!("{path}.outputClaimToHeaders[{j}]");
        if c.header.is_empty() || c.claim.is_empty() {
            cx.error(
                &at,
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
        } else if !c
            .header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            cx.error(
                &format!("{at}.header"),
                format!("header {:?} must match ^[-_A-Za-z0-9]+$", c.header),
            );
        }
    }
    if rule.space_delimited_claims.len() > 64 {
        cx.error(
            &format!("{path}.spaceDelimitedClaims"),
            "at most 64 space-delimited claims",
        );
    }
}

/// Not a token of RFC 9110 (what a header name may be).
fn http_name_problem(name: &str) -> bool {
    !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The CRD's rule on `jwksUri`: an http or https URL with a host.
fn jwks_uri_problem(uri: &str) -> Option<String> {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Some("url must have scheme http:// or https://".to_string());
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Some("url must have scheme http:// or https://".to_string());
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Some(format!("invalid jwksUri {uri:?}: no host"));
    }
    None
}

/// Whether an inline JWKS has the shape the proxy reads: a JSON object with a `keys` list
/// of JWKs, each with a `kty` the proxy knows and that kind's public fields.
fn jwks_problem(jwks: &str) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_str(jwks).map_err(|e| format!("not JSON ({e})"))?;
    let keys = v
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or("no \"keys\" list")?;
    if keys.is_empty() {
        return Err("\"keys\" is empty".to_string());
    }
    for (i, k) in keys.iter().enumerate() {
        let kty = k.get("kty").and_then(|t| t.as_str()).unwrap_or("");
        let need: &[&str] = match kty {
            "RSA" => &["n", "e"],
            "EC" => &["crv", "x", "y"],
            "oct" => &["k"],
            "OKP" => &["crv", "x"],
            "" => return Err(format!("keys[{i}] has no \"kty\"")),
            other => {
                return Err(format!(
                    "keys[{i}]: key type {other:?} is not supported (RSA, EC, oct, OKP)"
                ));
            }
        };
        if let Some(f) = need
            .iter()
            .find(|f| k.get(**f).and_then(|x| x.as_str()).is_none())
        {
            return Err(format!("keys[{i}] ({kty}) has no {f:?}"));
        }
    }
    Ok(())
}
