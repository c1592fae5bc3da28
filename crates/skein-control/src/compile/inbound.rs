//! What a sidecar lets in: PeerAuthentication (mTLS mode), RequestAuthentication (JWT) and
//! AuthorizationPolicy.

use std::collections::BTreeMap;

use skein_api::Manifests;
use skein_api::security::{MtlsMode as M, PeerAuthentication};
use skein_snapshot::MtlsMode;

use super::{Compiler, ROOT_NAMESPACE};
use crate::registry::Pod;

impl Compiler<'_> {
    /// PeerAuthentication and AuthorizationPolicy as they apply to pod `p`.
    pub(super) fn inbound_policy(&self, p: &Pod) -> skein_snapshot::InboundPolicy {
        let (mtls, port_mtls) = self.peer_authentication(p);
        skein_snapshot::InboundPolicy {
            mtls,
            port_mtls,
            authz: self.authorization_policies(p),
            jwt: self.request_authentications(p),
        }
    }

    /// The `jwtRules` of the RequestAuthentications that apply to pod `p` (a sidecar's or a
    /// gateway's), picked as AuthorizationPolicies are: the root namespace's and the pod's
    /// namespace's whose selector picks the pod. Those with a `targetRef` are for Kubernetes
    /// Gateways and waypoints, which skein does not run.
    pub(super) fn request_authentications(&self, p: &Pod) -> Vec<skein_snapshot::JwtRule> {
        self.manifests
            .request_authentications()
            .filter(|ra| {
                let ns = ra.metadata.namespace_or_default();
                (ns == ROOT_NAMESPACE || ns == p.namespace)
                    && ap_selects(&ra.spec.selector, p)
                    && ra.spec.target_ref.is_none()
                    && ra.spec.target_refs.is_empty()
            })
            .flat_map(|ra| {
                let policy = format!(
                    "{}/{}",
                    ra.metadata.namespace_or_default(),
                    ra.metadata.name
                );
                ra.spec
                    .jwt_rules
                    .iter()
                    .map(move |r| skein_snapshot::JwtRule {
                        policy: policy.clone(),
                        issuer: r.issuer.clone(),
                        audiences: r.audiences.clone(),
                        jwks: r.jwks.clone(),
                        jwks_uri: r.jwks_uri().map(str::to_string),
                        jwks_timeout_ms: r.timeout.as_ref().map_or(0, |t| {
                            u64::try_from(t.get().as_millis()).unwrap_or(u64::MAX)
                        }),
                        from_headers: r
                            .from_headers
                            .iter()
                            .map(|h| skein_snapshot::JwtHeader {
                                name: h.name.clone(),
                                prefix: h.prefix.clone(),
                            })
                            .collect(),
                        from_params: r.from_params.clone(),
                        from_cookies: r.from_cookies.clone(),
                        output_payload_to_header: r
                            .output_payload_to_header
                            .clone()
                            .filter(|h| !h.is_empty()),
                        forward_original_token: r.forward_original_token,
                        output_claim_to_headers: r
                            .output_claim_to_headers
                            .iter()
                            .map(|c| (c.header.clone(), c.claim.clone()))
                            .collect(),
                        space_delimited_claims: r.space_delimited_claims.clone(),
                        presence_required: r.presence
                            == Some(skein_api::security::JwtPresence::Required),
                    })
            })
            .collect()
    }

    /// The mTLS mode of pod `p` and its per-port exceptions: the workload's
    /// PeerAuthentication, else its namespace's, else the mesh's (the root namespace's);
    /// UNSET inherits from the level above; nothing at all is PERMISSIVE.
    fn peer_authentication(&self, p: &Pod) -> (MtlsMode, BTreeMap<u16, MtlsMode>) {
        let pas: Vec<&PeerAuthentication> = self.manifests.peer_authentications().collect();
        let first = |f: &dyn Fn(&&PeerAuthentication) -> bool| pas.iter().copied().find(|pa| f(pa));
        let mesh = first(&|pa| {
            pa.metadata.namespace_or_default() == ROOT_NAMESPACE && !pa.spec.has_selector()
        });
        let namespace = first(&|pa| {
            pa.metadata.namespace_or_default() == p.namespace && !pa.spec.has_selector()
        });
        let workload = (p.namespace != ROOT_NAMESPACE)
            .then(|| {
                first(&|pa| {
                    pa.metadata.namespace_or_default() == p.namespace
                        && selects(&pa.spec.selector, p)
                })
            })
            .flatten();
        let mode_of = |pa: Option<&PeerAuthentication>| {
            pa.and_then(|pa| pa.spec.mtls.as_ref())
                .and_then(|m| m.mode)
                .filter(|m| *m != M::Unset)
        };
        let mtls = mode_of(workload)
            .or_else(|| mode_of(namespace))
            .or_else(|| mode_of(mesh))
            .map_or(MtlsMode::Permissive, mtls_mode);
        let port_mtls = workload
            .map(|pa| {
                pa.spec
                    .port_level()
                    .map(|(port, m)| {
                        let mode = m.mode.filter(|m| *m != M::Unset).map_or(mtls, mtls_mode);
                        (port, mode)
                    })
                    .collect()
            })
            .unwrap_or_default();
        (mtls, port_mtls)
    }

    /// The AuthorizationPolicies that apply to pod `p` (a sidecar's or a gateway's), as
    /// istiod's `ListAuthorizationPolicies` picks them: those of the root namespace and of the
    /// pod's namespace whose selector picks the pod (see [`ap_selects`]); a root-namespace
    /// policy with a selector applies to matching pods of every namespace. Policies with a
    /// `targetRef` are for Kubernetes Gateways and waypoints, which skein does not run.
    ///
    /// CUSTOM: skein has no `meshConfig.extensionProviders`, so every provider is undefined,
    /// and Istio then denies what the policy's rules match (`getBadCustomDenyRules`): the
    /// policy becomes a DENY under its own name.
    pub(super) fn authorization_policies(&self, p: &Pod) -> Vec<skein_snapshot::AuthzPolicy> {
        self.manifests
            .authorization_policies()
            .filter(|ap| {
                let ns = ap.metadata.namespace_or_default();
                (ns == ROOT_NAMESPACE || ns == p.namespace)
                    && ap_selects(&ap.spec.selector, p)
                    && ap.spec.target_ref.is_none()
                    && ap.spec.target_refs.is_empty()
            })
            .map(|ap| {
                use skein_api::security::Action as A;
                let action = match ap.spec.action() {
                    A::Allow => skein_snapshot::AuthzAction::Allow,
                    A::Deny | A::Custom => skein_snapshot::AuthzAction::Deny,
                    A::Audit => skein_snapshot::AuthzAction::Audit,
                };
                let namespace = ap.metadata.namespace_or_default();
                skein_snapshot::AuthzPolicy {
                    name: ap.metadata.name.clone(),
                    namespace: namespace.to_string(),
                    action,
                    rules: ap
                        .spec
                        .rules()
                        .iter()
                        .flat_map(|r| authz_rules(r, namespace))
                        .collect(),
                }
            })
            .collect()
    }
}

/// Whether an AuthorizationPolicy's `selector` picks pod `p`, as Istio's
/// `WorkloadPolicyMatcher.isSelected`: no selector picks every pod of the namespace, and so
/// does `selector: {}` or `matchLabels: {}` (Istio's `labels.Instance.SubsetOf` is true for
/// an empty set); otherwise every label must be on the pod.
fn ap_selects(sel: &Option<skein_api::WorkloadSelector>, p: &Pod) -> bool {
    sel.as_ref().is_none_or(|s| p.has_labels(&s.match_labels))
}

/// Whether a PeerAuthentication's `selector` picks pod `p` (an empty selector picks nothing
/// here: such a policy is namespace-wide, see `has_selector`).
fn selects(sel: &Option<skein_api::WorkloadSelector>, p: &Pod) -> bool {
    sel.as_ref()
        .is_some_and(|s| !s.match_labels.is_empty() && p.has_labels(&s.match_labels))
}

fn mtls_mode(m: M) -> MtlsMode {
    match m {
        M::Strict => MtlsMode::Strict,
        M::Disable => MtlsMode::Disable,
        M::Permissive | M::Unset => MtlsMode::Permissive,
    }
}

/// What the manifests ask for that skein accepts but does not do, one line each.
pub fn unsupported(m: &Manifests) -> Vec<String> {
    m.authorization_policies()
        .filter(|ap| ap.spec.action() == skein_api::security::Action::Custom)
        .map(|ap| {
            format!(
                "AuthorizationPolicy {}/{}: action CUSTOM: extension provider {:?} is not defined (skein has no external authorizers); the requests the policy's rules match are denied",
                ap.metadata.namespace_or_default(),
                ap.metadata.name,
                ap.spec.provider.as_ref().map_or("", |p| p.name.as_str()),
            )
        })
        .collect()
}

/// A principal no peer has (SPIFFE IDs cannot contain `<`): what a source whose fields
/// intersect to nothing compiles to, so that it never reads as "no constraint".
const NO_PRINCIPAL: &str = "<no principal>";

/// `serviceAccounts` value -> principal: `ns/sa`, or `sa` in the policy's namespace (Istio's
/// `serviceAccountRegex`).
fn service_account_principal(v: &str, policy_ns: &str) -> String {
    let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
    format!("{}/ns/{ns}/sa/{sa}", crate::ca::TRUST_DOMAIN)
}

/// `trustDomains` value -> principal pattern: `*` any principal, `td` the principals under
/// `td/`, `td*` those whose trust domain starts with `td` (a trust domain has no `/`, so
/// that is the principal's prefix). `*suffix` cannot be written as a principal pattern;
/// validation refuses it, and here it matches no principal.
fn trust_domain_pattern(td: &str) -> String {
    if td == "*" || (td.ends_with('*') && !td.starts_with('*')) {
        td.to_string()
    } else if td.contains('*') {
        NO_PRINCIPAL.to_string()
    } else {
        format!("{td}/*")
    }
}

/// Istio's string pattern, for intersecting two.
#[derive(Debug, Clone, PartialEq)]
enum Pat<'a> {
    Any,
    Exact(&'a str),
    Prefix(&'a str),
    Suffix(&'a str),
}

impl<'a> Pat<'a> {
    fn new(s: &'a str) -> Pat<'a> {
        if s == "*" {
            Pat::Any
        } else if let Some(r) = s.strip_prefix('*') {
            Pat::Suffix(r)
        } else if let Some(r) = s.strip_suffix('*') {
            Pat::Prefix(r)
        } else {
            Pat::Exact(s)
        }
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Pat::Any => !v.is_empty(),
            Pat::Exact(e) => v == *e,
            Pat::Prefix(p) => v.starts_with(p),
            Pat::Suffix(s) => v.ends_with(s),
        }
    }
}

/// The principals matching both `a` and `b`, as one pattern: `Some(None)` when none do,
/// `None` when the intersection is not a single pattern (a suffix and a prefix).
fn intersect(a: &str, b: &str) -> Option<Option<String>> {
    let (pa, pb) = (Pat::new(a), Pat::new(b));
    Some(match (&pa, &pb) {
        (Pat::Any, _) => Some(b.to_string()),
        (_, Pat::Any) => Some(a.to_string()),
        (Pat::Exact(e), p) | (p, Pat::Exact(e)) => p.matches(e).then(|| e.to_string()),
        (Pat::Prefix(x), Pat::Prefix(y)) if x.starts_with(y) => Some(a.to_string()),
        (Pat::Prefix(x), Pat::Prefix(y)) if y.starts_with(x) => Some(b.to_string()),
        (Pat::Prefix(_), Pat::Prefix(_)) => None,
        (Pat::Suffix(x), Pat::Suffix(y)) if x.ends_with(y) => Some(a.to_string()),
        (Pat::Suffix(x), Pat::Suffix(y)) if y.ends_with(x) => Some(b.to_string()),
        (Pat::Suffix(_), Pat::Suffix(_)) => None,
        _ => return None,
    })
}

/// One `from.source`, compiled; and, when its principals and trust domains cannot be
/// intersected into one list, the trust-domain patterns the principal must also match.
fn authz_source(
    s: &skein_api::security::RuleSource,
    policy_ns: &str,
) -> (skein_snapshot::AuthzSource, Option<Vec<String>>) {
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    let sa = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|v| service_account_principal(v, policy_ns))
            .collect()
    };
    let tds = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .map(|td| trust_domain_pattern(td))
            .collect()
    };
    // Fields inside one source are ANDed: `principals` (or `serviceAccounts`) and
    // `trustDomains` both constrain the peer's principal.
    let mut principals = list(&s.principals);
    principals.extend(sa(&s.service_accounts));
    let trust = tds(&s.trust_domains);
    let mut extra = None;
    if principals.is_empty() {
        principals = trust;
    } else if !trust.is_empty() {
        let both: Option<Vec<Option<String>>> = principals
            .iter()
            .flat_map(|p| trust.iter().map(move |t| intersect(p, t)))
            .collect();
        match both {
            Some(both) => {
                let mut out: Vec<String> = Vec::new();
                for p in both.into_iter().flatten() {
                    if !out.contains(&p) {
                        out.push(p);
                    }
                }
                if out.is_empty() {
                    out.push(NO_PRINCIPAL.to_string());
                }
                principals = out;
            }
            None => extra = Some(trust),
        }
    }
    let mut not_principals = list(&s.not_principals);
    not_principals.extend(sa(&s.not_service_accounts));
    not_principals.extend(tds(&s.not_trust_domains));
    let src = skein_snapshot::AuthzSource {
        principals,
        not_principals,
        request_principals: list(&s.request_principals),
        not_request_principals: list(&s.not_request_principals),
        namespaces: list(&s.namespaces),
        not_namespaces: list(&s.not_namespaces),
        ip_blocks: list(&s.ip_blocks),
        not_ip_blocks: list(&s.not_ip_blocks),
        remote_ip_blocks: list(&s.remote_ip_blocks),
        not_remote_ip_blocks: list(&s.not_remote_ip_blocks),
    };
    (src, extra)
}

/// A `when` condition. `source.serviceAccount` and `source.trustDomain` are written as
/// conditions on `source.principal`, the form the proxy evaluates.
fn authz_condition(
    c: &skein_api::security::Condition,
    policy_ns: &str,
) -> skein_snapshot::AuthzCondition {
    let map = |f: &dyn Fn(&str) -> String| skein_snapshot::AuthzCondition {
        key: "source.principal".to_string(),
        values: c.values.iter().map(|v| f(v)).collect(),
        not_values: c.not_values.iter().map(|v| f(v)).collect(),
    };
    match c.key.as_str() {
        "source.serviceAccount" => map(&|v| service_account_principal(v, policy_ns)),
        "source.trustDomain" => map(&trust_domain_pattern),
        _ => skein_snapshot::AuthzCondition {
            key: c.key.clone(),
            values: c.values.clone(),
            not_values: c.not_values.clone(),
        },
    }
}

/// One rule, compiled. Usually one snapshot rule; when a source's principals and trust
/// domains cannot be intersected (a `*suffix` principal), its trust domains become a
/// `source.principal` condition, and as a condition is on the whole rule, that source gets a
/// rule of its own (the `from` list is ORed, so the split matches what the rule matched).
fn authz_rules(r: &skein_api::security::Rule, policy_ns: &str) -> Vec<skein_snapshot::AuthzRule> {
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    let to: Vec<skein_snapshot::AuthzOperation> =
        r.to.iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .map(|o| skein_snapshot::AuthzOperation {
                hosts: list(&o.hosts),
                not_hosts: list(&o.not_hosts),
                ports: list(&o.ports),
                not_ports: list(&o.not_ports),
                methods: list(&o.methods),
                not_methods: list(&o.not_methods),
                paths: list(&o.paths),
                not_paths: list(&o.not_paths),
            })
            .collect();
    let when: Vec<skein_snapshot::AuthzCondition> = r
        .when
        .iter()
        .map(|c| authz_condition(c, policy_ns))
        .collect();
    let sources: Vec<_> = r
        .from
        .iter()
        .flatten()
        .filter_map(|f| f.source.as_ref())
        .map(|s| authz_source(s, policy_ns))
        .collect();
    let rule = |from: Vec<skein_snapshot::AuthzSource>, extra: Option<Vec<String>>| {
        let mut when = when.clone();
        if let Some(values) = extra {
            when.push(skein_snapshot::AuthzCondition {
                key: "source.principal".to_string(),
                values,
                not_values: Vec::new(),
            });
        }
        skein_snapshot::AuthzRule {
            from,
            to: to.clone(),
            when,
        }
    };
    if sources.iter().all(|(_, extra)| extra.is_none()) {
        return vec![rule(sources.into_iter().map(|(s, _)| s).collect(), None)];
    }
    let (plain, split): (Vec<_>, Vec<_>) = sources.into_iter().partition(|(_, e)| e.is_none());
    let mut rules = Vec::new();
    if !plain.is_empty() {
        rules.push(rule(plain.into_iter().map(|(s, _)| s).collect(), None));
    }
    rules.extend(split.into_iter().map(|(s, extra)| rule(vec![s], extra)));
    rules
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::fixtures::*;
    use skein_snapshot::names::TLS_MODE_LABEL;

    #[test]
    fn peer_authentication_precedence_and_authorization_policies_per_workload() {
        let (m, r) = (example(), registry());
        let compiler = Compiler::new(&m, &r);
        let was = compiler.snapshot("was-1", "1").unwrap().inbound;
        assert_eq!(was.mtls, skein_snapshot::MtlsMode::Permissive);
        assert_eq!(was.authz.len(), 1);
        let p = &was.authz[0];
        assert_eq!(
            (p.name.as_str(), p.action),
            ("was-authz", skein_snapshot::AuthzAction::Allow)
        );
        assert_eq!(
            p.rules[0].from[0].principals,
            ["cluster.local/ns/blog-system/sa/default"]
        );
        assert_eq!(p.rules[0].from[0].namespaces, ["blog-system"]);
        assert_eq!(p.rules[0].to[0].paths, ["/api/*", "/actuator/*"]);
        let web = compiler.snapshot("web-1", "1").unwrap().inbound;
        assert_eq!(web.authz[0].name, "web-authz");
        // web's pods have sidecars: endpoints carry Istio's tlsMode label; identities are known.
        let snap = compiler.snapshot("web-1", "1").unwrap();
        let inbound = snap.cluster("inbound|80||").expect("web's inbound cluster");
        assert_eq!(inbound.service, "web-service.blog-system.svc.cluster.local");
        let was_c = snap
            .cluster("outbound|8080||was-service.blog-system.svc.cluster.local")
            .unwrap();
        assert_eq!(
            was_c.endpoints[0]
                .labels
                .get(TLS_MODE_LABEL)
                .map(String::as_str),
            Some("istio")
        );
        assert_eq!(
            was_c.identities,
            ["spiffe://cluster.local/ns/blog-system/sa/default"]
        );
        assert!(!was_c.auto_mtls, "was-dest-rule sets ISTIO_MUTUAL");
        let mysql = snap
            .cluster("outbound|3306||mysql.blog-system.svc.cluster.local")
            .unwrap();
        assert!(
            !mysql.endpoints[0].labels.contains_key(TLS_MODE_LABEL),
            "mysql has no sidecar"
        );

        let yaml = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: istio-system}
spec: {mtls: {mode: STRICT}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: ns, namespace: blog-system}
spec: {mtls: {mode: UNSET}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: was, namespace: blog-system}
spec:
  selector: {matchLabels: {app: was}}
  portLevelMtls:
    "8080": {mode: PERMISSIVE}
    "9090": {mode: UNSET}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: blog-system}
spec:
  action: CUSTOM
  provider: {name: opa}
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: istio-system}
spec:
  action: DENY
  rules:
  - from: [{source: {serviceAccounts: [other/bot], notNamespaces: [blog-system]}}]
"#;
        let extra = skein_api::load_str("pa.yaml", yaml).unwrap();
        let mut m = Manifests::default();
        m.extend(extra);
        let compiler = Compiler::new(&m, &r);
        let was = compiler.snapshot("was-1", "1").unwrap().inbound;
        assert_eq!(
            was.mtls,
            skein_snapshot::MtlsMode::Strict,
            "UNSET inherits the mesh's STRICT"
        );
        assert_eq!(was.mtls_for(8080), skein_snapshot::MtlsMode::Permissive);
        assert_eq!(was.mtls_for(9090), skein_snapshot::MtlsMode::Strict);
        let names: Vec<&str> = was.authz.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["ext", "deny-all"],
            "CUSTOM with an undefined provider denies; the root namespace's applies"
        );
        assert_eq!(was.authz[0].action, skein_snapshot::AuthzAction::Deny);
        assert_eq!(
            was.authz[1].rules[0].from[0].principals,
            ["cluster.local/ns/other/sa/bot"]
        );
        assert_eq!(
            was.authz[1].rules[0].from[0].not_namespaces,
            ["blog-system"]
        );
        let web = compiler.snapshot("web-1", "1").unwrap().inbound;
        assert_eq!(web.mtls, skein_snapshot::MtlsMode::Strict);
        assert!(web.port_mtls.is_empty());
    }

    fn with(yaml: &str) -> Manifests {
        let mut m = example();
        m.extend(skein_api::load_str("ap.yaml", yaml).unwrap());
        m
    }

    fn names(p: &[skein_snapshot::AuthzPolicy]) -> Vec<&str> {
        p.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn policies_reach_the_gateway_the_root_namespace_and_empty_selectors() {
        let m = with(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw-deny-admin, namespace: istio-system}
spec:
  selector: {matchLabels: {istio: ingressgateway}}
  action: DENY
  rules: [{to: [{operation: {paths: [/admin*]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: root-was, namespace: istio-system}
spec:
  selector: {matchLabels: {app: was}}
  action: DENY
  rules: [{from: [{source: {namespaces: [other]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: all-empty, namespace: blog-system}
spec:
  selector: {}
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: all-empty-labels, namespace: blog-system}
spec:
  selector: {matchLabels: {}}
  action: AUDIT
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: blog-system}
spec:
  selector: {matchLabels: {app: web}}
  action: CUSTOM
  provider: {name: opa}
  rules: [{to: [{operation: {paths: [/private]}}]}]
"#,
        );
        let r = registry();
        let c = Compiler::new(&m, &r);
        let gw = c.snapshot("istio-ingressgateway-1", "1").unwrap().inbound;
        assert_eq!(names(&gw.authz), ["gw-deny-admin"]);
        assert_eq!(gw.authz[0].action, skein_snapshot::AuthzAction::Deny);
        assert_eq!(gw.authz[0].rules[0].to[0].paths, ["/admin*"]);
        let mut was = names(&c.snapshot("was-1", "1").unwrap().inbound.authz)
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        was.sort();
        assert_eq!(
            was,
            ["all-empty", "all-empty-labels", "root-was", "was-authz"],
            "a root-namespace selector reaches blog-system; `selector: {{}}` selects all"
        );
        let web = c.snapshot("web-1", "1").unwrap().inbound;
        let ext = web.authz.iter().find(|p| p.name == "ext").expect("CUSTOM");
        assert_eq!(ext.action, skein_snapshot::AuthzAction::Deny);
        assert_eq!(ext.rules[0].to[0].paths, ["/private"]);
        assert!(!web.authz.iter().any(|p| p.name == "root-was"));
        assert!(
            unsupported(&m)[0].contains("provider \"opa\" is not defined"),
            "{:?}",
            unsupported(&m)
        );
    }

    #[test]
    fn source_fields_are_anded_and_never_dropped() {
        let m = with(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: td, namespace: blog-system}
spec:
  selector: {matchLabels: {app: was}}
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/a/sa/b, other/ns/a/sa/b]
        trustDomains: [cluster.local]
    - source:
        principals: [other/ns/a/sa/b]
        trustDomains: [cluster.local]
    - source:
        principals: ["*/sa/x"]
        trustDomains: [cluster.local]
    - source: {trustDomains: ["*"], notTrustDomains: [evil]}
    to: [{operation: {methods: [GET]}}]
  - from:
    - source: {serviceAccounts: [web, other/bot]}
    when:
    - {key: source.serviceAccount, values: [web]}
    - {key: source.trustDomain, notValues: [evil]}
"#,
        );
        let r = registry();
        let c = Compiler::new(&m, &r);
        let was = c.snapshot("was-1", "1").unwrap().inbound;
        let p = was.authz.iter().find(|p| p.name == "td").unwrap();
        assert_eq!(p.rules.len(), 3, "{:#?}", p.rules);
        let r0 = &p.rules[0];
        assert_eq!(r0.from.len(), 3);
        assert_eq!(r0.from[0].principals, ["cluster.local/ns/a/sa/b"]);
        assert_eq!(r0.from[1].principals, [NO_PRINCIPAL], "nothing is in both");
        assert_eq!(r0.from[2].principals, ["*"]);
        assert_eq!(r0.from[2].not_principals, ["evil/*"]);
        assert!(r0.when.is_empty());
        // `*/sa/x` and `cluster.local/*` are not one pattern: a rule of its own, with the
        // trust domain as a condition on the principal.
        let r1 = &p.rules[1];
        assert_eq!(r1.from.len(), 1);
        assert_eq!(r1.from[0].principals, ["*/sa/x"]);
        assert_eq!(r1.to[0].methods, ["GET"]);
        assert_eq!(r1.when.len(), 1);
        assert_eq!(
            (r1.when[0].key.as_str(), r1.when[0].values.as_slice()),
            (
                "source.principal",
                ["cluster.local/*".to_string()].as_slice()
            )
        );
        let r2 = &p.rules[2];
        assert_eq!(
            r2.from[0].principals,
            [
                "cluster.local/ns/blog-system/sa/web",
                "cluster.local/ns/other/sa/bot"
            ],
            "a bare service account is in the policy's namespace"
        );
        assert_eq!(r2.when[0].key, "source.principal");
        assert_eq!(r2.when[0].values, ["cluster.local/ns/blog-system/sa/web"]);
        assert_eq!(r2.when[1].key, "source.principal");
        assert_eq!(r2.when[1].not_values, ["evil/*"]);
    }
}

#[cfg(test)]
mod request_authentication_tests {
    use super::*;
    use crate::compile::fixtures::*;

    const RAS: &str = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: mesh, namespace: istio-system}
spec:
  jwtRules:
  - issuer: https://mesh.example
    jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: was-jwt, namespace: blog-system}
spec:
  selector: {matchLabels: {app: was}}
  jwtRules:
  - issuer: https://was.example
    audiences: [was]
    jwksUri: http://keys.blog-system.svc.cluster.local/jwks.json
    timeout: 2s
    fromHeaders: [{name: x-jwt, prefix: "Token "}]
    fromParams: [jwt]
    outputPayloadToHeader: x-jwt-payload
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
    forwardOriginalToken: true
    presence: REQUIRED
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: waypoint, namespace: blog-system}
spec:
  targetRef: {kind: Service, name: was-service}
  jwtRules:
  - issuer: https://waypoint.example
    jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: elsewhere, namespace: other}
spec:
  jwtRules:
  - issuer: https://other.example
    jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
"#;

    #[test]
    fn rules_are_picked_as_authorization_policies_are() {
        let m = skein_api::load_str("ra.yaml", RAS).unwrap();
        let r = registry();
        let c = Compiler::new(&m, &r);
        let issuers = |pod: &str| -> Vec<String> {
            c.snapshot(pod, "1")
                .unwrap()
                .inbound
                .jwt
                .iter()
                .map(|j| j.issuer.clone())
                .collect()
        };
        assert_eq!(issuers("web-1"), ["https://mesh.example"]);
        assert_eq!(
            issuers("was-1"),
            ["https://mesh.example", "https://was.example"]
        );
        let was = c.snapshot("was-1", "1").unwrap().inbound.jwt;
        let j = &was[1];
        assert_eq!(j.policy, "blog-system/was-jwt");
        assert_eq!(j.audiences, ["was"]);
        assert_eq!(
            j.jwks_uri.as_deref(),
            Some("http://keys.blog-system.svc.cluster.local/jwks.json")
        );
        assert_eq!(j.jwks_timeout_ms, 2000);
        assert_eq!(
            j.from_headers,
            [skein_snapshot::JwtHeader {
                name: "x-jwt".into(),
                prefix: "Token ".into()
            }]
        );
        assert_eq!(j.from_params, ["jwt"]);
        assert_eq!(j.output_payload_to_header.as_deref(), Some("x-jwt-payload"));
        assert_eq!(j.output_claim_to_headers, [("x-sub".into(), "sub".into())]);
        assert!(j.forward_original_token && j.presence_required);
    }
}
