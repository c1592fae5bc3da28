use super::diags;

#[test]
fn a_filter_outside_the_cel_subset_is_refused_at_its_line() {
    let text = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: errors-only, namespace: blog-system}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter:
      expression: size(request.path) > 3
  metrics:
  - overrides:
    - tagOverrides:
        request_host: {value: request.host}
        user: {operation: UPSERT, value: \"request.headers['x-user']\"}
        bad: {value: request.hots}
        gone: {operation: REMOVE}
";
    assert_eq!(
        diags(text),
        vec![
            "v.yaml:8: error: Telemetry blog-system/errors-only: spec.accessLogging[0].filter.expression: CEL expression \"size(request.path) > 3\": function `size` is not supported (at column 1)",
            "v.yaml:14: error: Telemetry blog-system/errors-only: spec.metrics[0].overrides[0].tagOverrides.bad.value: CEL expression \"request.hots\": attribute `request.hots` is not supported (at column 1)",
        ]
    );
    let good = text
        .replace("size(request.path) > 3", "response.code >= 400")
        .replace("request.hots", "\"'literal'\"");
    assert_eq!(diags(&good), Vec::<String>::new());
}
