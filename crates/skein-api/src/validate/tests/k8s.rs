use super::{SERVICES, diags};

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
fn service_port_names_are_dns_labels_of_up_to_63_characters() {
    // Istio's samples name Service ports like `http-envoy-prom` and longer: Kubernetes
    // checks a Service port name as a DNS-1123 label, not as a 15-character IANA name.
    let text = "\
apiVersion: v1
kind: Service
metadata: {name: s, namespace: ns}
spec:
  ports:
  - {name: tcp-istiod-webhook-and-xds, port: 15012}
  - {name: Http, port: 80}
  - {name: a234567890123456789012345678901234567890123456789012345678901234, port: 81}
";
    let d = diags(text);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(
        d[0].starts_with("v.yaml:7: error: Service ns/s: spec.ports[1].name: Invalid value: \"Http\": a lowercase RFC 1123 label must consist of"),
        "{}",
        d[0]
    );
    assert_eq!(
        d[1],
        "v.yaml:8: error: Service ns/s: spec.ports[2].name: must be no more than 63 characters"
    );
}

#[test]
fn rbac_names_are_path_segments_as_kubernetes_checks_them() {
    let text = "\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: \"system:controller:istio-reader\"}
rules: []
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: a/b, namespace: ns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: r}
";
    assert_eq!(
        diags(text),
        vec![
            "v.yaml:8: error: RoleBinding ns/a/b: metadata.name: Invalid value: \"a/b\": may not contain '/'"
        ]
    );
}
