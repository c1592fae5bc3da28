use super::diags;

#[test]
fn http_route_rules_the_crds_reject_are_refused_at_their_line() {
    let text = "\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r, namespace: ns}
spec:
  parentRefs: [{name: gw}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: api}
    filters:
    - type: RequestRedirect
      requestRedirect: {statusCode: 305}
    - type: URLRewrite
      urlRewrite: {hostname: x}
  - backendRefs:
    - name: a
      port: 80
      weight: 1000001
    - {name: b}
";
    assert_eq!(
        diags(text),
        [
            "v.yaml:8: error: HTTPRoute ns/r: spec.rules[0].matches[0].path.value: value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']",
            "v.yaml:9: error: HTTPRoute ns/r: spec.rules[0].filters: May specify either httpRouteFilterRequestRedirect or httpRouteFilterRequestRewrite, but not both",
            "v.yaml:11: error: HTTPRoute ns/r: spec.rules[0].filters[0].requestRedirect.statusCode: Unsupported value: 305: supported values: \"301\", \"302\", \"303\", \"307\", \"308\"",
            "v.yaml:17: error: HTTPRoute ns/r: spec.rules[1].backendRefs[0].weight: Invalid value: 1000001: must be between 0 and 1000000, inclusive",
            "v.yaml:18: error: HTTPRoute ns/r: spec.rules[1].backendRefs[1]: Must have port for Service reference",
        ]
    );
}

#[test]
fn gateways_listeners_and_grants_are_checked() {
    let text = "\
apiVersion: gateway.networking.k8s.io/v1beta1
kind: Gateway
metadata: {name: g, namespace: ns}
spec:
  gatewayClassName: istio
  listeners:
  - {name: a, port: 80, protocol: HTTP}
  - {name: a, port: 0, protocol: TCP, hostname: x.example.com}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: istio}
spec: {controllerName: istio.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: rg, namespace: ns}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: ''}]
  to: [{group: '', kind: Service}]
";
    assert_eq!(
        diags(text),
        [
            "v.yaml:8: error: Gateway ns/g: spec.listeners[1].name: Listener name must be unique within the Gateway",
            "v.yaml:8: error: Gateway ns/g: spec.listeners[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
            "v.yaml:8: error: Gateway ns/g: spec.listeners[1].hostname: hostname must not be specified for protocols ['TCP', 'UDP']",
            "v.yaml:19: error: ReferenceGrant ns/rg: spec.from[0].namespace: Required value",
        ]
    );
}

#[test]
fn an_istio_gateway_and_a_gateway_api_gateway_of_one_name_are_two_objects() {
    let text = "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: g, namespace: ns}
spec:
  selector: {istio: ingressgateway}
  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: g, namespace: ns}
spec:
  gatewayClassName: istio
  listeners: [{name: http, port: 80, protocol: HTTP}]
";
    assert_eq!(diags(text), Vec::<String>::new());
    let m = crate::load_str("v.yaml", text).unwrap();
    assert_eq!(m.gateways().count(), 1);
    assert_eq!(m.kube_gateways().count(), 1);
    let err = crate::load_str(
        "v.yaml",
        "apiVersion: gateway.networking.k8s.io/v9\nkind: Gateway\nmetadata: {name: g}\nspec: {}\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("use networking.istio.io/v1 or networking.istio.io/v1beta1 or networking.istio.io/v1alpha3 or gateway.networking.k8s.io/v1 or gateway.networking.k8s.io/v1beta1"),
        "{err}"
    );
}

#[test]
fn the_crds_item_limits_bound_what_one_route_compiles_to() {
    let hosts: Vec<String> = (0..17).map(|i| format!("h{i}.example.com")).collect();
    let text = format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: r, namespace: ns}}\nspec:\n  hostnames: [{}]\n",
        hosts.join(", ")
    );
    assert_eq!(
        diags(&text),
        [
            "v.yaml:5: error: HTTPRoute ns/r: spec.hostnames: Too many: 17: must have at most 16 items"
        ]
    );
}
