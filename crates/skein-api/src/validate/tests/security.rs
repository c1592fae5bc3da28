use super::{SERVICES, diags};

#[test]
fn port_level_mtls_requires_selector_as_in_the_seed() {
    // The seed's failed attempt (troubleshooting 6).
    let text = "\
apiVersion: security.istio.io/v1beta1
kind: PeerAuthentication
metadata:
  name: default
  namespace: blog-system
spec:
  mtls:
    mode: STRICT
  portLevelMtls:
    80:
      mode: PERMISSIVE
";
    assert_eq!(
        diags(text),
        vec![
            "v.yaml:9: error: PeerAuthentication blog-system/default: spec.portLevelMtls: portLevelMtls requires selector"
        ]
    );
}

#[test]
fn port_level_mtls_port_range_and_empty_map() {
    let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ns}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web}]
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web, namespace: ns}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls:
    \"0\": {mode: DISABLE}
    70000: {mode: DISABLE}
    8080: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: empty, namespace: ns}
spec:
  selector: {matchLabels: {app: web}}
  portLevelMtls: {}
";
    assert_eq!(
        diags(text),
        vec![
            "v.yaml:17: error: PeerAuthentication ns/web: spec.portLevelMtls.0: port must be between 1-65535",
            "v.yaml:18: error: PeerAuthentication ns/web: spec.portLevelMtls.70000: port must be between 1-65535",
            "v.yaml:26: error: PeerAuthentication ns/empty: spec.portLevelMtls: port level mTLS, if defined, must have at least one element",
        ]
    );
}

#[test]
fn authorization_policy_rules() {
    let text = format!(
        "{SERVICES}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: a, namespace: blog-system}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  rules:
  - from:
    - source:
        serviceAccounts: [blog-system/web]
        principals: [cluster.local/ns/blog-system/sa/web]
    when:
    - key: request.headers[x-user]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: custom, namespace: blog-system}}
spec:
  action: CUSTOM
  rules: [{{}}]
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: deny, namespace: blog-system}}
spec:
  action: DENY
---
apiVersion: security.istio.io/v1beta1
kind: AuthorizationPolicy
metadata: {{name: audit, namespace: blog-system}}
spec:
  action: AUDIT
  selector: {{matchLabels: {{app: nothing}}}}
"
    );
    assert_eq!(
        diags(&text),
        vec![
            "v.yaml:33: error: AuthorizationPolicy blog-system/a: spec.rules[0].from[0].source: Cannot set serviceAccounts with namespaces or principals",
            "v.yaml:37: error: AuthorizationPolicy blog-system/a: spec.rules[0].when[0]: at least one of `values` or `notValues` must be set for key request.headers[x-user]",
            "v.yaml:42: error: AuthorizationPolicy blog-system/custom: spec.provider: `provider.name` must not be empty",
            "v.yaml:49: error: AuthorizationPolicy blog-system/deny: spec: DENY action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
            "v.yaml:55: warning: AuthorizationPolicy blog-system/audit: spec: AUDIT action without `rules` is meaningless as it will never be triggered, add an empty rule `{}` if you want it be triggered for every request",
            "v.yaml:57: warning: AuthorizationPolicy blog-system/audit: spec.selector: No matching workloads for this resource with the following labels: app=nothing",
        ]
    );
}
