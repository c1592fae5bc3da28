use super::diags;
use crate::validate::validate;

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
    let d: Vec<String> = validate(&all)
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
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

#[test]
fn service_entry_hosts_compare_as_resolved_hosts() {
    // Destination hosts are lowercased and lose a trailing dot when resolved; ServiceEntry
    // hosts written the same way still declare them.
    let text = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: ext, namespace: blog-system}
spec:
  hosts: [API.example.com, db.example.com.]
  ports: [{number: 443, name: https, protocol: TLS}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ext, namespace: blog-system}
spec:
  hosts: [API.example.com]
  tcp:
  - route:
    - destination: {host: API.example.com}
      weight: 50
    - destination: {host: db.example.com.}
      weight: 50
";
    assert_eq!(diags(text), Vec::<String>::new());
}

/// Analyzer errors (istioctl's and skein's) are reported, but Istio takes such a config, so
/// skein does too: only validation errors and broken references refuse it.
#[test]
fn analyzer_errors_do_not_refuse_the_config() {
    let text = include_str!("../../../../skein/tests/fixtures/analyze/skn0002.yaml");
    let m = crate::load_str("skn0002.yaml", text).unwrap();
    let d = validate(&m);
    assert!(
        d.iter()
            .any(|d| d.code == crate::Code::Skn0002 && d.is_error()),
        "{d:?}"
    );
    assert!(d.iter().all(|d| !d.refuses()), "{d:?}");
    let text = include_str!("../../../../skein/tests/fixtures/analyze/ist0106.yaml");
    let m = crate::load_str("ist0106.yaml", text).unwrap();
    assert!(validate(&m).iter().any(|d| d.refuses()));
}
