//! What a sidecar lets in: PeerAuthentication (mTLS mode) and AuthorizationPolicy.

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
        }
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

    /// The AuthorizationPolicies that apply to pod `p`: the root namespace's selector-less
    /// ones and its namespace's selector-less or selecting ones (CUSTOM skipped).
    fn authorization_policies(&self, p: &Pod) -> Vec<skein_snapshot::AuthzPolicy> {
        self.manifests
            .authorization_policies()
            .filter(|ap| {
                let ns = ap.metadata.namespace_or_default();
                let applies = (ns == ROOT_NAMESPACE && ap.spec.selector.is_none())
                    || (ns == p.namespace
                        && (ap.spec.selector.is_none() || selects(&ap.spec.selector, p)));
                applies && ap.spec.target_ref.is_none() && ap.spec.target_refs.is_empty()
            })
            .filter_map(|ap| {
                use skein_api::security::Action as A;
                let action = match ap.spec.action() {
                    A::Allow => skein_snapshot::AuthzAction::Allow,
                    A::Deny => skein_snapshot::AuthzAction::Deny,
                    A::Audit => skein_snapshot::AuthzAction::Audit,
                    // Reported once per accepted config (see `unsupported`).
                    A::Custom => return None,
                };
                Some(skein_snapshot::AuthzPolicy {
                    name: ap.metadata.name.clone(),
                    namespace: ap.metadata.namespace_or_default().to_string(),
                    action,
                    rules: ap.spec.rules().iter().map(authz_rule).collect(),
                })
            })
            .collect()
    }
}

/// Whether a policy's `selector` picks pod `p` (an empty selector picks nothing here).
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
                "AuthorizationPolicy {}/{}: action CUSTOM (an external authorizer) is not supported; the policy is ignored",
                ap.metadata.namespace_or_default(),
                ap.metadata.name
            )
        })
        .collect()
}

fn authz_rule(r: &skein_api::security::Rule) -> skein_snapshot::AuthzRule {
    let list = |v: &Option<Vec<String>>| v.clone().unwrap_or_default();
    // `serviceAccounts: [ns/sa]` is the principal `cluster.local/ns/NS/sa/SA`.
    let sa = |v: &Option<Vec<String>>| -> Vec<String> {
        v.iter()
            .flatten()
            .filter_map(|s| s.split_once('/'))
            .map(|(ns, sa)| format!("{}/ns/{ns}/sa/{sa}", crate::ca::TRUST_DOMAIN))
            .collect()
    };
    skein_snapshot::AuthzRule {
        from: r
            .from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .map(|s| {
                let mut principals = list(&s.principals);
                principals.extend(sa(&s.service_accounts));
                if principals.is_empty() {
                    principals.extend(s.trust_domains.iter().flatten().map(|td| format!("{td}/*")));
                }
                let mut not_principals = list(&s.not_principals);
                not_principals.extend(sa(&s.not_service_accounts));
                not_principals.extend(
                    s.not_trust_domains
                        .iter()
                        .flatten()
                        .map(|td| format!("{td}/*")),
                );
                skein_snapshot::AuthzSource {
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
                }
            })
            .collect(),
        to: r
            .to
            .iter()
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
            .collect(),
        when: r
            .when
            .iter()
            .map(|c| skein_snapshot::AuthzCondition {
                key: c.key.clone(),
                values: c.values.clone(),
                not_values: c.not_values.clone(),
            })
            .collect(),
    }
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
        let web = compiler.snapshot("web-stable-1", "1").unwrap().inbound;
        assert_eq!(web.authz[0].name, "web-authz");
        // web's pods have sidecars: endpoints carry Istio's tlsMode label; identities are known.
        let snap = compiler.snapshot("web-stable-1", "1").unwrap();
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
            ["deny-all"],
            "CUSTOM is skipped; the root namespace's applies"
        );
        assert_eq!(
            was.authz[0].rules[0].from[0].principals,
            ["cluster.local/ns/other/sa/bot"]
        );
        assert_eq!(
            was.authz[0].rules[0].from[0].not_namespaces,
            ["blog-system"]
        );
        let web = compiler.snapshot("web-stable-1", "1").unwrap().inbound;
        assert_eq!(web.mtls, skein_snapshot::MtlsMode::Strict);
        assert!(web.port_mtls.is_empty());
    }
}
