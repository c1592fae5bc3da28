//! Validation tests, one file per module of `validate`; the shared helpers are here.

use super::validate;

mod cross;
mod gateway_api;
mod k8s;
mod networking;
mod security;
mod telemetry;

/// The validation findings (schema and references) of `text`; the analyzers of `istio` and
/// `pitfalls` are tested with one fixture per code in `crates/skein/tests/analyze.rs`.
fn diags(text: &str) -> Vec<String> {
    use crate::Code;
    let m = crate::load_str("v.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    validate(&m)
        .iter()
        .filter(|d| {
            matches!(
                d.code,
                Code::Ist0101
                    | Code::Ist0106
                    | Code::Ist0127
                    | Code::Ist0133
                    | Code::Ist0173
                    | Code::Skn0001
            )
        })
        .map(ToString::to_string)
        .collect()
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
fn objects_need_a_name() {
    assert_eq!(
        diags("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  namespace: a\n"),
        [
            "v.yaml:3: error: ConfigMap a/<no name>: metadata.name: Required value: name or generateName is required"
        ]
    );
}

#[test]
fn names_are_dns_names() {
    let cm = |name: &str, ns: &str| {
        diags(&format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
        ))
    };
    assert!(cm("web.config-1", "a").is_empty());
    assert_eq!(
        cm("../../x", "a"),
        [
            "v.yaml:4: error: ConfigMap a/../../x: metadata.name: Invalid value: \"../../x\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ]
    );
    assert_eq!(cm("Web", "a").len(), 1);
    let ns = cm("x", "a.b");
    assert_eq!(ns.len(), 1);
    assert!(
        ns[0].contains("metadata.namespace: Invalid value: \"a.b\": a lowercase RFC 1123 label"),
        "{}",
        ns[0]
    );
    // A Service name is a DNS-1035 label (no dots, starts with a letter).
    let svc = diags(
        "apiVersion: v1\nkind: Service\nmetadata: {name: 1web, namespace: a}\nspec:\n  ports: [{port: 80}]\n",
    );
    assert!(
        svc.iter()
            .any(|d| d.contains("metadata.name: Invalid value: \"1web\": a DNS-1035 label")),
        "{svc:?}"
    );
}
