use super::*;

fn diags(text: &str) -> Vec<String> {
    let m = crate::load_str("v.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    validate(&m).iter().map(ToString::to_string).collect()
}

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

const SERVICES: &str = "\
apiVersion: v1
kind: Service
metadata: {name: web-service, namespace: blog-system}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: blog-system}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: stable}}
    spec:
      containers: [{name: web, image: web, ports: [{name: http, containerPort: 80}]}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web, namespace: blog-system}
spec:
  host: web-service
  subsets:
  - {name: stable, labels: {version: stable}}
";

#[test]
fn virtual_service_weights_retries_and_conflicts() {
    let text = format!(
        "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web-vsvc, namespace: blog-system}}
spec:
  hosts: [web-service]
  http:
  - name: zero
    route:
    - destination: {{host: web-service, subset: stable}}
      weight: 0
    - destination: {{host: web-service}}
      weight: 0
  - name: negative
    route:
    - destination: {{host: web-service}}
      weight: -5
    - destination:
        subset: stable
      weight: 105
    retries:
      attempts: -1
      retryOn: 5xx,sometimes
  - name: both
    redirect: {{uri: /new}}
    rewrite: {{uri: /old}}
"
    );
    assert_eq!(
        diags(&text),
        vec![
            "v.yaml:33: error: VirtualService blog-system/web-vsvc: spec.http[0].route: total destination weight = 0",
            "v.yaml:41: error: VirtualService blog-system/web-vsvc: spec.http[1].route[0].weight: weight -5 < 0",
            "v.yaml:42: error: VirtualService blog-system/web-vsvc: spec.http[1].route[1].destination.host: Required value",
            "v.yaml:46: error: VirtualService blog-system/web-vsvc: spec.http[1].retries.attempts: attempts cannot be negative",
            "v.yaml:47: error: VirtualService blog-system/web-vsvc: spec.http[1].retries.retryOn: \"sometimes\" is not a valid retryOn policy",
            "v.yaml:50: error: VirtualService blog-system/web-vsvc: spec.http[2].rewrite: HTTP route rule cannot contain both rewrite and redirect",
        ]
    );
}

#[test]
fn virtual_service_references_and_fault_percentage() {
    let text = format!(
        "{SERVICES}---
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {{name: v, namespace: blog-system}}
spec:
  hosts: [web-service]
  http:
  - route:
    - destination: {{host: web-service, subset: canary}}
    - destination: {{host: wes-service}}
    - destination: {{host: api.example.com}}
    fault:
      delay: {{fixedDelay: 2s}}
    mirror: {{host: web-service, subset: stable}}
    mirrorPercentage: {{value: 150}}
"
    );
    assert_eq!(
        diags(&text),
        vec![
            "v.yaml:32: error: VirtualService blog-system/v: spec.http[0].route: total destination weight = 0",
            "v.yaml:33: error: VirtualService blog-system/v: spec.http[0].route[0].destination.subset: Referenced host+subset in destinationrule not found: \"web-service+canary\"",
            "v.yaml:34: error: VirtualService blog-system/v: spec.http[0].route[1].destination.host: Referenced host not found: \"wes-service\"",
            "v.yaml:35: warning: VirtualService blog-system/v: spec.http[0].route[2].destination.host: Referenced host not found: \"api.example.com\"",
            "v.yaml:37: warning: VirtualService blog-system/v: spec.http[0].fault.delay: delay has no percentage, so it applies to no requests; set percentage.value",
            "v.yaml:39: error: VirtualService blog-system/v: spec.http[0].mirrorPercentage.value: mirror_percentage must have a max value of 100 (it has 150.000000)",
        ]
    );
}

#[test]
fn destination_rule_subsets_tls_and_outlier_detection() {
    let text = format!(
        "{SERVICES}---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {{name: d, namespace: blog-system}}
spec:
  host: web-service
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
      clientCertificate: /etc/certs/cert.pem
    outlierDetection:
      maxEjectionPercent: 150
      interval: 0s
  subsets:
  - name: stable
    labels: {{version: stable}}
  - name: stable
    labels: {{version: canary}}
"
    );
    assert_eq!(
        diags(&text),
        vec![
            "v.yaml:34: warning: DestinationRule blog-system/d: spec.trafficPolicy.tls.clientCertificate: clientCertificate should be empty if mode is ISTIO_MUTUAL (Istio uses its own certificates; this value is ignored)",
            "v.yaml:36: error: DestinationRule blog-system/d: spec.trafficPolicy.outlierDetection.maxEjectionPercent: percentage 150 is not in range 0..100",
            "v.yaml:37: error: DestinationRule blog-system/d: spec.trafficPolicy.outlierDetection.interval: duration must be greater than 1ms",
            "v.yaml:41: error: DestinationRule blog-system/d: spec.subsets[1].name: duplicate subset names: stable",
            "v.yaml:41: error: DestinationRule blog-system/d: spec.subsets[1]: The Subset stable defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
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
fn deployment_selector_must_match_template_labels() {
    let text = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: ns}
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: webb}
    spec:
      containers:
      - name: web
        image: web
        ports: [{name: http, containerPort: 70000}]
        env:
        - name: X
          valueFrom: {fieldRef: {fieldPath: status.phase}}
---
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: r, namespace: ns}
spec:
  template:
    metadata: {labels: {app: r}}
    spec:
      containers: [{name: r, image: r}]
";
    assert_eq!(
        diags(text),
        vec![
            "v.yaml:9: error: Deployment ns/web: spec.template.metadata.labels: `selector` does not match template `labels`",
            "v.yaml:14: error: Deployment ns/web: spec.template.spec.containers[0].ports[0].containerPort: must be between 1 and 65535, inclusive",
            "v.yaml:17: error: Deployment ns/web: spec.template.spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: Unsupported value: \"status.phase\": supported values: \"metadata.name\", \"metadata.namespace\", \"metadata.uid\", \"spec.nodeName\", \"spec.serviceAccountName\", \"status.hostIP\", \"status.hostIPs\", \"status.podIP\", \"status.podIPs\", \"metadata.labels['<KEY>']\", \"metadata.annotations['<KEY>']\"",
            "v.yaml:22: error: Rollout ns/r: spec.selector: Required value",
        ]
    );
}

#[test]
fn service_ports_and_selector_sanity() {
    let text = format!(
        "{SERVICES}---
apiVersion: v1
kind: Service
metadata: {{name: s, namespace: blog-system}}
spec:
  selector: {{app: web}}
  ports:
  - {{port: 80, targetPort: grpc}}
  - {{name: http, port: 0, targetPort: 70000}}
---
apiVersion: v1
kind: Service
metadata: {{name: lonely, namespace: blog-system}}
spec:
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
"
    );
    assert_eq!(
        diags(&text),
        vec![
            "v.yaml:32: error: Service blog-system/s: spec.ports[0].name: Required value",
            "v.yaml:32: warning: Service blog-system/s: spec.ports[0].targetPort: targetPort \"grpc\" is not the name of a containerPort of the selected pods (Deployment web)",
            "v.yaml:33: error: Service blog-system/s: spec.ports[1].port: must be between 1 and 65535, inclusive",
            "v.yaml:33: error: Service blog-system/s: spec.ports[1].targetPort: must be between 1 and 65535, inclusive",
            "v.yaml:39: warning: Service blog-system/lonely: spec.selector: selector app=nobody matches no pods of any Deployment or Rollout in namespace blog-system",
        ]
    );
}

#[test]
fn duplicate_objects_across_files_name_the_first() {
    let a = crate::load_str(
        "a.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: blog-system\n",
    )
    .unwrap();
    let mut m = crate::load_str(
        "b.yaml",
        "# again\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: blog-system}\n",
    )
    .unwrap();
    let mut all = a;
    all.extend(std::mem::take(&mut m));
    let d: Vec<String> = validate(&all).iter().map(ToString::to_string).collect();
    assert_eq!(
        d,
        vec![
            "b.yaml:5: error: Namespace blog-system: duplicate Namespace blog-system: first defined at a.yaml:4"
        ]
    );
    // Same name, different kind or namespace: no duplicate.
    let ok = "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: a}\nspec: {ports: [{port: 1}]}\n---\napiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: b}\nspec: {ports: [{port: 1}]}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}\n";
    assert_eq!(diags(ok), Vec::<String>::new());
}

#[test]
fn objects_need_a_name() {
    assert_eq!(
        diags("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: a\n"),
        [
            "v.yaml:3: error: ConfigMap a/<no name>: metadata.name: Required value: name or generateName is required"
        ]
    );
}

#[test]
fn destination_hosts_resolve_as_the_control_plane_routes_them() {
    // The blog-system example's shape: was-vsvc routes to was-service, here written as
    // `name.ns` and `name.ns.svc`, which cluster DNS and the compiler complete to the FQDN.
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: was-service, namespace: blog-system}
spec:
  selector: {app: was}
  ports: [{name: http, port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: was, namespace: blog-system}
spec:
  selector: {matchLabels: {app: was}}
  template:
    metadata: {labels: {app: was}}
    spec:
      containers: [{name: was, image: was, ports: [{name: http, containerPort: 8080}]}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: was-vsvc, namespace: blog-system}
spec:
  hosts: [was-service]
  http:
  - name: was-default
    route:
    - destination:
        host: was-service.blog-system
        port: {number: 8080}
      weight: 50
    - destination:
        host: was-service.blog-system.svc
        port: {number: 8080}
      weight: 50
  - name: unknown
    route:
    - destination:
        host: nope.blog-system
";
    assert_eq!(
        diags(text),
        vec![
            "v.yaml:37: warning: VirtualService blog-system/was-vsvc: spec.http[1].route[0].destination.host: Referenced host not found: \"nope.blog-system\""
        ]
    );
}
