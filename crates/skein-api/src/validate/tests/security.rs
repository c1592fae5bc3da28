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
            "v.yaml:9: error: PeerAuthentication blog-system/default: spec.portLevelMtls: portLevelMtls requires selector (a namespace-wide policy cannot set per-port modes: add spec.selector.matchLabels for the workload, or set spec.mtls.mode for the whole namespace)"
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

#[test]
fn authorization_policy_values_the_proxy_would_refuse() {
    let text = format!(
        "{SERVICES}---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: a, namespace: blog-system}}
spec:
  rules:
  - from:
    - source:
        serviceAccounts: [web, \"*/web\", a/b/c, /web]
    - source:
        ipBlocks: [10.0.0.0/33]
        notIpBlocks: [10.0.0.1]
        remoteIpBlocks: [not-an-ip]
        trustDomains: [\"*.local\", td/x]
    when:
    - key: source.ip
      values: [10.0.0.0/8, 300.0.0.1]
    - key: destination.ip
      notValues: [\"::1/129\"]
    - key: remote.ip
      values: [1.2.3.4]
    - key: request.headers
      values: [x]
    - key: source.labels[app]
      values: [web]
    - key: destination.port
      values: [\"80\", \"http\"]
    - key: source.serviceAccount
      values: [blog-system/web]
"
    );
    assert_eq!(
        diags(&text),
        vec![
            "v.yaml:33: error: AuthorizationPolicy blog-system/a: spec.rules[0].from[0].source.serviceAccounts: wildcard not allowed, found in ServiceAccounts",
            "v.yaml:35: error: AuthorizationPolicy blog-system/a: spec.rules[0].from[1].source.ipBlocks: bad CIDR range (10.0.0.0/33): bad bits after slash: \"33\"",
            "v.yaml:37: error: AuthorizationPolicy blog-system/a: spec.rules[0].from[1].source.remoteIpBlocks: bad IP address (not-an-ip)",
            "v.yaml:38: error: AuthorizationPolicy blog-system/a: spec.rules[0].from[1].source.trustDomains: skein does not support suffix trust domain patterns, found in TrustDomains: \"*.local\"",
            "v.yaml:41: error: AuthorizationPolicy blog-system/a: spec.rules[0].when[0].values: invalid `value` for `key` source.ip: bad IP address (300.0.0.1)",
            "v.yaml:43: error: AuthorizationPolicy blog-system/a: spec.rules[0].when[1].notValues: invalid `notValue` for `key` destination.ip: bad CIDR range (::1/129): bad bits after slash: \"129\"",
            "v.yaml:47: error: AuthorizationPolicy blog-system/a: spec.rules[0].when[3].values: invalid `value` for `key` request.headers: bad key (request.headers): should have format a[b]",
            "v.yaml:49: error: AuthorizationPolicy blog-system/a: spec.rules[0].when[4].values: invalid `value` for `key` source.labels[app]: unknown attribute: source.labels[app]",
            "v.yaml:51: error: AuthorizationPolicy blog-system/a: spec.rules[0].when[5].values: invalid `value` for `key` destination.port: bad port (http)",
        ]
    );
}

#[test]
fn service_accounts_take_istios_two_forms() {
    let ap = |sa: &str| {
        format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: a, namespace: ns}}
spec:
  rules:
  - from:
    - source:
        serviceAccounts: [{sa}]
"
        )
    };
    // `web` is the service account web of the policy's namespace (Istio's CheckServiceAccount).
    assert!(diags(&ap("web")).is_empty());
    assert!(diags(&ap("other/web")).is_empty());
    let msg = |m: &str| {
        vec![format!(
            "v.yaml:8: error: AuthorizationPolicy ns/a: spec.rules[0].from[0].source.serviceAccounts: {m}"
        )]
    };
    assert_eq!(
        diags(&ap("a/b/c")),
        msg(
            "expected format 'serviceAccount' or 'namespace/serviceAccount', found \"a/b/c\" in ServiceAccounts"
        )
    );
    assert_eq!(
        diags(&ap("/web")),
        msg(
            "expected format 'serviceAccount' or 'namespace/serviceAccount', found empty namespace \"/web\" in ServiceAccounts"
        )
    );
    assert_eq!(
        diags(&ap("web*")),
        msg("wildcard not allowed, found in ServiceAccounts")
    );
}

#[test]
fn custom_policies_name_their_undefined_provider() {
    let text = "\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext, namespace: ns}
spec:
  action: CUSTOM
  provider:
    name: opa
  rules: [{}]
";
    assert_eq!(
        diags(text),
        vec![
            "v.yaml:7: warning: AuthorizationPolicy ns/ext: spec.provider.name: extension provider \"opa\" is not defined in meshConfig.extensionProviders (skein has no external authorizers): the requests this CUSTOM policy matches are denied"
        ]
    );
}

#[test]
fn envoy_metadata_conditions_cannot_deny_silently() {
    let ap = |action: &str| {
        format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: a, namespace: ns}}
spec:
  action: {action}
  rules:
  - when:
    - key: experimental.envoy.filters.http.jwt[iss]
      values: [x]
"
        )
    };
    let msg = "spec.rules[0].when[0].key: skein cannot evaluate key experimental.envoy.filters.http.jwt[iss]: a condition on it never matches";
    assert_eq!(
        diags(&ap("DENY")),
        [format!("v.yaml:8: error: AuthorizationPolicy ns/a: {msg}")]
    );
    assert_eq!(
        diags(&ap("ALLOW")),
        [format!(
            "v.yaml:8: warning: AuthorizationPolicy ns/a: {msg}"
        )]
    );
}

#[test]
fn request_authentication_rules_are_checked_with_their_lines() {
    let text = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: ns}
spec:
  jwtRules:
  - issuer: ""
    jwks: '{"keys": [{"kty": "RSA", "n": "abc"}]}'
  - issuer: https://issuer.example
    jwksUri: ftp://keys.example/jwks.json
    audiences: [""]
    fromHeaders: [{name: ""}]
    fromParams: [""]
  - issuer: https://other.example
    jwks: 'not json'
    outputClaimToHeaders: [{header: "x y", claim: sub}]
  - issuer: https://both.example
    jwks: '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'
    jwksUri: http://keys.example/jwks.json
  - issuer: https://none.example
"#;
    let d = diags(text);
    let want = [
        "v.yaml:6: error: RequestAuthentication ns/jwt: spec.jwtRules[0].issuer: issuer must be set",
        "v.yaml:7: error: RequestAuthentication ns/jwt: spec.jwtRules[0].jwks: jwks is not a JSON Web Key Set the proxy can use: keys[0] (RSA) has no \"e\"",
        "v.yaml:9: error: RequestAuthentication ns/jwt: spec.jwtRules[1].jwksUri: url must have scheme http:// or https://",
        "v.yaml:10: error: RequestAuthentication ns/jwt: spec.jwtRules[1].audiences: audience must be non-empty string",
        "v.yaml:11: error: RequestAuthentication ns/jwt: spec.jwtRules[1].fromHeaders[0].name: location header name must be non-empty string",
        "v.yaml:12: error: RequestAuthentication ns/jwt: spec.jwtRules[1].fromParams[0]: location query must be non-empty string",
        "v.yaml:15: error: RequestAuthentication ns/jwt: spec.jwtRules[2].outputClaimToHeaders[0].header: header \"x y\" must match ^[-_A-Za-z0-9]+$",
        "v.yaml:16: error: RequestAuthentication ns/jwt: spec.jwtRules[3]: only one of jwks or jwksUri can be set",
        "v.yaml:19: error: RequestAuthentication ns/jwt: spec.jwtRules[4]: set jwks (the keys inline) or jwksUri: skein does not look keys up by the issuer's OpenID discovery document",
    ];
    for w in want {
        assert!(d.iter().any(|x| x == w), "missing {w}\nin {d:#?}");
    }
    assert!(
        d.iter().any(|x| x.starts_with("v.yaml:14: error: RequestAuthentication ns/jwt: spec.jwtRules[2].jwks: jwks is not a JSON Web Key Set the proxy can use: not JSON")),
        "{d:#?}"
    );
    assert_eq!(d.len(), want.len() + 1, "{d:#?}");
}

#[test]
fn a_good_request_authentication_has_no_findings() {
    let text = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: ns}
spec:
  jwtRules:
  - issuer: https://issuer.example
    audiences: [blog]
    jwks: '{"keys": [{"kty": "EC", "crv": "P-256", "x": "eA", "y": "eQ", "kid": "k1"}]}'
    fromHeaders: [{name: x-jwt, prefix: "Token "}]
    fromParams: [token]
    outputPayloadToHeader: x-jwt-payload
    forwardOriginalToken: true
    outputClaimToHeaders: [{header: x-sub, claim: sub}]
"#;
    assert_eq!(diags(text), Vec::<String>::new());
}

#[test]
fn an_https_jwks_uri_is_a_warning_skein_cannot_fetch_it() {
    let text = r#"apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: jwt, namespace: ns}
spec:
  jwtRules:
  - issuer: https://issuer.example
    jwksUri: https://keys.example/jwks.json
"#;
    let d = diags(text);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].starts_with("v.yaml:7: warning: RequestAuthentication ns/jwt: spec.jwtRules[0].jwksUri: skein's proxies fetch jwksUri over plain http only"),
        "{}",
        d[0]
    );
}
