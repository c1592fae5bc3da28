//! End to end: an AnalysisRun in the manifests runs when `skein up` starts, its status kept in
//! the state directory and shown by `skein get analysisrun` (Argo's STATUS column, `-o yaml`
//! with `status.metricResults`); one added by `skein apply` starts, `terminate: true` ends it
//! and a delete removes it; a template whose condition does not parse stops `skein up` with
//! its `file:line`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::time::Duration;

use support::*;

const RUN: &str = "apiVersion: v1
kind: Namespace
metadata: {name: demo}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo, namespace: demo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: skein-echo:0.1.0
        command: [echo]
        env:
        - name: POD_IP
          valueFrom: {fieldRef: {fieldPath: status.podIP}}
        - {name: LISTEN_ADDR, value: $(POD_IP):8080}
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: http}}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {name: smoke, namespace: demo}
spec:
  args: [{name: svc, value: web}]
  metrics:
  - name: success-rate
    consecutiveErrorLimit: 0
    successCondition: result[0] >= 0.95
    provider:
      prometheus:
        address: http://prometheus.istio-system.svc:9090
        query: sum(rate(requests_total{service=\"{{args.svc}}\"}[1m]))
";

#[test]
fn a_written_analysis_run_runs_and_get_shows_its_status() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("run.yaml"), RUN).unwrap();
    let skein = Skein::new();
    skein.up(dir.path().to_str().unwrap(), &["--no-mesh"]);
    // Without the mesh there is no Prometheus Service: one Error measurement, past the limit of 0.
    let table = eventually(Duration::from_secs(30), "the run ends", || {
        let out = skein.run(&["get", "ar", "-n", "demo"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("Error").then_some(text)
    });
    let header = table.lines().next().unwrap();
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "STATUS", "AGE"]
    );
    assert!(
        table.lines().nth(1).unwrap().starts_with("smoke"),
        "{table}"
    );

    let out = skein.run(&["get", "analysisrun", "smoke", "-n", "demo", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let status = &v["status"];
    assert_eq!(status["phase"], "Error", "{v:#}");
    assert_eq!(
        status["message"],
        r#"Metric "success-rate" assessed Error due to consecutiveErrors (1) > consecutiveErrorLimit (0): "Error Message: prometheus address "http://prometheus.istio-system.svc:9090": no Service prometheus.istio-system.svc:9090 in this runtime""#,
        "{v:#}"
    );
    let result = &status["metricResults"][0];
    assert_eq!(result["name"], "success-rate");
    assert_eq!(result["error"], 1);
    assert_eq!(result["measurements"][0]["phase"], "Error");

    let out = skein.run(&["get", "ar", "smoke", "-n", "demo", "-o", "yaml"]);
    let yaml = String::from_utf8_lossy(&out.stdout);
    assert!(yaml.contains("phase: Error"), "{yaml}");
    skein.down();
}

#[test]
fn a_condition_that_does_not_parse_stops_up_at_its_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("at.yaml"),
        "apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate, namespace: default}
spec:
  metrics:
  - name: success-rate
    successCondition: result[0] >= 0.95 &&
    provider: {prometheus: {query: up}}
",
    )
    .unwrap();
    let skein = Skein::new();
    let out = skein.run(&[
        "up",
        dir.path().to_str().unwrap(),
        "--detach",
        "--no-mesh",
        "--http-port",
        "0",
        "--https-port",
        "0",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("at.yaml:7: error: AnalysisTemplate default/success-rate: spec.metrics[0].successCondition: successCondition \"result[0] >= 0.95 &&\": unexpected end of expression (1:21)"),
        "{stderr}"
    );
}

const MESH_RUN: &str = "apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {name: scraped, namespace: blog-system}
spec:
  metrics:
  # Istio's addon address, as a cluster's template writes it.
  - name: targets-up
    interval: 2s
    count: 2
    consecutiveErrorLimit: 60
    # Before the first scrape the vector is empty: result[0] is an Error, tolerated here.
    successCondition: result[0] >= 1
    provider:
      prometheus:
        address: http://prometheus.istio-system.svc.cluster.local:9090
        query: count(up == 1)
  # No address: the mesh's Prometheus.
  - name: nothing-failing
    interval: 2s
    count: 2
    consecutiveErrorLimit: 60
    successCondition: len(result) == 0
    provider: {prometheus: {query: 'up{job=\"no-such-job\"} == 0'}}
";

#[test]
fn an_analysis_run_queries_the_meshs_prometheus_by_its_addon_name() {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("prometheus").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "no `prometheus` on PATH: install it (`sudo apt-get install prometheus`; scripts/test does)"
    );
    let dir = manifests_copy("examples/blog-system");
    std::fs::write(dir.path().join("90-analysis.yaml"), MESH_RUN).unwrap();
    let skein = Skein::new();
    skein.up(dir.path().to_str().unwrap(), &["--scrape-interval", "1"]);
    let status = eventually(Duration::from_secs(120), "the run ends", || {
        let out = skein.run(&["get", "ar", "scraped", "-n", "blog-system", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let phase = v["status"]["phase"].as_str()?;
        (phase != "Running" && phase != "Pending").then(|| v["status"].clone())
    });
    assert_eq!(status["phase"], "Successful", "{status:#}");
    for r in status["metricResults"].as_array().unwrap() {
        assert_eq!(r["phase"], "Successful", "{status:#}");
        assert_eq!(r["successful"], 2, "{status:#}");
    }
    // Errors before the first scrape are measurements too; the last one is the second success.
    let measurements = status["metricResults"][0]["measurements"]
        .as_array()
        .unwrap();
    let last = measurements.last().unwrap();
    assert_eq!(last["phase"], "Successful", "{status:#}");
    let up = &last["value"];
    let n: f64 = up
        .as_str()
        .unwrap()
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .unwrap();
    assert!(n >= 1.0, "targets up: {up}");

    // A run added with `skein apply` starts; `terminate: true` ends it Successful with what
    // it measured; deleted, it and its status go.
    let applied = |terminate: bool| {
        format!(
            "apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {{name: applied, namespace: blog-system}}
spec:
  terminate: {terminate}
  metrics:
  - name: targets-up
    interval: 1s
    consecutiveErrorLimit: 60
    successCondition: result[0] >= 1
    provider: {{prometheus: {{query: count(up == 1)}}}}
"
        )
    };
    skein.apply_yaml("applied-run.yaml", &applied(false));
    let get_applied = || {
        let out = skein.run(&["get", "ar", "applied", "-n", "blog-system", "-o", "json"]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout).ok()
    };
    eventually(Duration::from_secs(20), "the applied run measuring", || {
        let v = get_applied()?;
        (v["status"]["phase"] == "Running"
            && v["status"]["metricResults"][0]["successful"].as_u64() >= Some(2))
        .then_some(())
    });
    skein.apply_yaml("applied-run.yaml", &applied(true));
    let status = eventually(
        Duration::from_secs(20),
        "the applied run terminated",
        || {
            let v = get_applied()?;
            (v["status"]["phase"] != "Running").then(|| v["status"].clone())
        },
    );
    assert_eq!(status["phase"], "Successful", "{status:#}");
    let out = skein.run(&["delete", "analysisrun", "applied", "-n", "blog-system"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(20), "the deleted run gone", || {
        let out = skein.run(&["get", "ar", "applied", "-n", "blog-system"]);
        (!out.status.success()).then_some(())
    });
    skein.down();
}
