//! Validation tests, one file per module of `validate`; the shared helpers are here.

use super::validate;

mod cross;
mod k8s;
mod networking;
mod security;

fn diags(text: &str) -> Vec<String> {
    let m = crate::load_str("v.yaml", text).unwrap_or_else(|e| panic!("{e}"));
    validate(&m).iter().map(ToString::to_string).collect()
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
