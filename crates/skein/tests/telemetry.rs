//! End to end: Istio's mesh config and Telemetry API on `skein up examples/blog-system`. A
//! mesh config with `accessLogEncoding: JSON` turns every proxy's access log into Envoy's
//! JSON lines with Istio's keys; a Telemetry selecting `was` logs only its 4xx/5xx requests
//! (`filter.expression: response.code >= 400`) and adds a `request_host` label to its
//! `istio_requests_total` (`tagOverrides` UPSERT), seen on a scrape of its proxy; a bad
//! filter is refused by `skein apply` with its file:line.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::time::Duration;

use support::*;

const EXAMPLE: &str = "examples/blog-system";

const MESH_JSON: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: /dev/stdout
    accessLogEncoding: JSON
    enableTracing: true
    defaultConfig:
      tracing:
        zipkin:
          address: jaeger-collector.istio-system.svc:9411
";

const TELEMETRY: &str = "\
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata:
  name: was-errors
  namespace: blog-system
spec:
  selector:
    matchLabels: {app: was}
  accessLogging:
  - providers: [{name: envoy}]
    filter:
      expression: response.code >= 400
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        request_host:
          value: request.host
";

/// The JSON access-log lines of some pods' proxies.
fn json_lines(skein: &Skein, pods: &[String]) -> Vec<serde_json::Value> {
    pods.iter()
        .flat_map(|p| {
            skein
                .proxy_log(p)
                .lines()
                .filter(|l| l.starts_with('{'))
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn names(skein: &Skein, workload: &str) -> Vec<String> {
    skein
        .pods(workload)
        .iter()
        .map(|p| p["name"].as_str().expect("pod name").to_string())
        .collect()
}

#[test]
fn telemetry_filters_the_access_log_writes_json_and_overrides_a_metric_tag() {
    let skein = Skein::new();
    skein.up(EXAMPLE, &[]);
    let base = skein.http_base();
    let was = names(&skein, "was");
    let web = names(&skein, "web");
    assert_eq!(get(&format!("{base}/api/posts")).status, 200);

    // The example's mesh config: Istio's TEXT lines on the proxies' output.
    eventually(
        Duration::from_secs(10),
        "a TEXT access-log line on web",
        || {
            web.iter()
                .any(|p| {
                    skein.proxy_log(p).lines().any(|l| {
                        l.starts_with('[') && l.contains("\"GET /api/posts HTTP/1.1\" 200")
                    })
                })
                .then_some(())
        },
    );

    // A filter outside the CEL subset is refused with its file:line; nothing changes.
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        TELEMETRY.replace("response.code >= 400", "size(request.path) > 3"),
    )
    .expect("write");
    let out = skein.run(&["apply", "-f", bad.to_str().expect("utf-8")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad filter was accepted");
    assert!(err.contains("bad.yaml:12"), "{err}");
    assert!(err.contains("function `size` is not supported"), "{err}");

    skein.apply_yaml("mesh.yaml", MESH_JSON);
    skein.apply_yaml("telemetry.yaml", TELEMETRY);

    // Once was's proxies have the Telemetry, its 404s are logged as JSON.
    let missing = format!("{base}/api/posts/987654321");
    eventually(Duration::from_secs(20), "a JSON 404 line on was", || {
        assert_eq!(get(&missing).status, 404);
        std::thread::sleep(Duration::from_millis(200));
        json_lines(&skein, &was)
            .iter()
            .any(|l| l["response_code"] == 404)
            .then_some(())
    });
    let before = json_lines(&skein, &was).len();
    for _ in 0..10 {
        assert_eq!(get(&format!("{base}/api/posts")).status, 200);
    }
    for _ in 0..3 {
        assert_eq!(get(&missing).status, 404);
    }
    eventually(Duration::from_secs(5), "three more lines on was", || {
        (json_lines(&skein, &was).len() >= before + 3).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    let lines = json_lines(&skein, &was);
    // Each request reaches was from web twice: once as itself and once as the copy web-vsvc
    // mirrors (100 %) to the canary subset, web's stable pods while no update runs: 3 to 6 lines for the three 404s, none for the ten 200s (10 to 20).
    let new = lines.len() - before;
    assert!(
        (3..=6).contains(&new),
        "only the 404s: {new} new lines: {lines:#?}"
    );
    for l in &lines {
        assert!(l["response_code"].as_u64() >= Some(400), "{l}");
        assert_eq!(l["method"], "GET", "{l}");
        assert!(
            l["path"]
                .as_str()
                .is_some_and(|p| p.starts_with("/api/posts/")),
            "{l}"
        );
        assert!(l["start_time"].is_string() && l["duration"].is_u64(), "{l}");
    }

    // web has no Telemetry: the mesh config alone, every request, as JSON.
    eventually(Duration::from_secs(5), "a JSON 200 line on web", || {
        json_lines(&skein, &web)
            .iter()
            .any(|l| l["response_code"] == 200 && l["upstream_cluster"].is_string())
            .then_some(())
    });

    // The UPSERT shows on was's scraped istio_requests_total (reported by the destination).
    let scraped: String = skein
        .pods("was")
        .iter()
        .map(|p| {
            let admin = p["proxy"]["admin"].as_str().expect("admin URL");
            get(&format!("{admin}/stats/prometheus")).body
        })
        .collect();
    let line = scraped
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("request_host=\"")
        })
        .unwrap_or_else(|| panic!("no request_host label in:\n{scraped}"));
    assert!(line.contains("request_host=\"was-service"), "{line}");
}
