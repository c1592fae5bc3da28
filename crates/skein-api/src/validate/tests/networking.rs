use super::{SERVICES, diags};

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
fn regexes_are_checked_as_the_proxy_compiles_them() {
    let text = format!(
        "{SERVICES}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: blog-system}}
spec:
  hosts: [web-service]
  http:
  - match:
    - uri: {{regex: \"/api/(v1\"}}
      headers:
        x-id: {{regex: \"[0-9]+\"}}
        x-bad: {{regex: \"a{{2,1}}\"}}
      queryParams:
        q: {{regex: \"(?P<n>x\"}}
    rewrite:
      uriRegexRewrite: {{match: \"^/(\", rewrite: /}}
    route:
    - destination: {{host: web-service}}
"
    );
    let d = diags(&text);
    let lines: Vec<&str> = d
        .iter()
        .map(|l| l.split(": error: ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        lines,
        ["v.yaml:33", "v.yaml:36", "v.yaml:38", "v.yaml:40"],
        "{d:#?}"
    );
    assert!(
        d[0].contains("spec.http[0].match[0].uri.regex: \"uri\": error parsing regexp: unclosed group: `/api/(v1`;")
            && d[0].ends_with("Istio uses RE2 style regex-based match (https://github.com/google/re2/wiki/Syntax)"),
        "{}",
        d[0]
    );
    assert!(d[3].contains("rewrite.uriRegexRewrite.match"), "{}", d[3]);
}
