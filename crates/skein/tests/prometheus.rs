//! End to end: the mesh's Prometheus on `skein up examples/blog-system` scrapes the sidecars'
//! and the gateway's merged metrics endpoints, so that Istio's standard metrics from traffic
//! through the ingress are queryable from its HTTP API, as Kiali, Argo Rollouts and Flagger
//! query them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::time::Duration;

use support::*;

const EXAMPLE: &str = "examples/blog-system";

/// Percent-encodes a query parameter.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The result vector of an instant query, or a failure with Prometheus's answer.
fn query(prometheus: &str, q: &str) -> Vec<serde_json::Value> {
    let r = get(&format!("{prometheus}/api/v1/query?query={}", encode(q)));
    assert_eq!(r.status, 200, "{q}: {r:?}");
    let v = r.json();
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn value(sample: &serde_json::Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn prometheus_scrapes_the_meshs_metrics_after_traffic_through_the_ingress() {
    // Not skipped when missing: the README's commands and scripts/test install it.
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("prometheus").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "no `prometheus` on PATH: install it (`sudo apt-get install prometheus`; scripts/test does)"
    );
    let skein = Skein::new();
    let out = skein.up(EXAMPLE, &["--scrape-interval", "1"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("prometheus: http://"), "{stdout}");

    let status = skein.status();
    let url = status["prometheus"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no prometheus URL in the status: {}", status["prometheus"]))
        .to_string();
    assert_eq!(status["prometheus"]["scrape_interval"], "1s");
    let data = status["prometheus"]["data"].as_str().expect("data dir");
    assert!(
        data.starts_with(skein.state.path().to_str().expect("utf-8")),
        "{data}"
    );
    let table = String::from_utf8_lossy(&skein.run(&["status"]).stdout).into_owned();
    assert!(table.contains(&format!("prometheus: {url}")), "{table}");
    let prom_pod = skein.pods("prometheus");
    assert_eq!(prom_pod.len(), 1, "{prom_pod:?}");
    assert_eq!(prom_pod[0]["namespace"], "istio-system");

    // Every injected pod and the gateway is a healthy target at its :15020/stats/prometheus.
    let scraped: Vec<String> = status["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .filter(|p| p["proxy"].is_object())
        .map(|p| p["name"].as_str().expect("name").to_string())
        .collect();
    assert!(scraped.len() >= 4, "{scraped:?}");
    eventually(Duration::from_secs(60), "every proxy scraped", || {
        let up = query(&url, r#"up{job="kubernetes-pods"} == 1"#);
        let pods: Vec<&str> = up
            .iter()
            .filter_map(|s| s["metric"]["pod"].as_str())
            .collect();
        scraped
            .iter()
            .all(|p| pods.contains(&p.as_str()))
            .then_some(())
    });
    let targets = get(&format!("{url}/api/v1/targets")).json();
    for t in targets["data"]["activeTargets"]
        .as_array()
        .expect("targets")
    {
        if t["labels"]["job"] == "kubernetes-pods" {
            let scrape = t["scrapeUrl"].as_str().expect("scrapeUrl");
            // The proxies' merged metrics; the tracing store (no sidecar) serves its own.
            let store = t["labels"]["app"] == "jaeger" && scrape.ends_with(":16686/metrics");
            assert!(scrape.ends_with(":15020/stats/prometheus") || store, "{t}");
            assert!(
                t["labels"]["namespace"].is_string() && t["labels"]["app"].is_string(),
                "{t}"
            );
        }
    }

    let base = skein.http_base();
    for _ in 0..20 {
        assert_eq!(get(&format!("{base}/api/posts")).status, 200);
        assert_eq!(get(&format!("{base}/")).status, 200);
    }

    // Flagger's and Kiali's incoming series: destination-reported, per workload.
    let q = r#"sum by (destination_workload) (istio_requests_total{reporter="destination", destination_workload_namespace="blog-system", response_code="200"})"#;
    let by_workload = eventually(
        Duration::from_secs(60),
        "istio_requests_total in Prometheus",
        || {
            let r = query(&url, q);
            let got = |w: &dyn Fn(&str) -> bool| {
                r.iter()
                    .filter(|s| s["metric"]["destination_workload"].as_str().is_some_and(w))
                    .map(value)
                    .sum::<f64>()
            };
            let (was, web) = (got(&|w| w == "was"), got(&|w| w.starts_with("web")));
            (was >= 20.0 && web >= 40.0).then_some((was, web))
        },
    );
    assert!(
        by_workload.0 >= 20.0 && by_workload.1 >= 40.0,
        "{by_workload:?}"
    );

    // The gateway's source-reported series are scraped too (Kiali's outgoing query).
    let q =
        r#"sum(istio_requests_total{reporter="source", source_workload="istio-ingressgateway"})"#;
    eventually(
        Duration::from_secs(30),
        "the gateway's requests in Prometheus",
        || {
            let gw = query(&url, q);
            (gw.first().map(value).unwrap_or(0.0) >= 40.0).then_some(())
        },
    );
    // The was's own metrics, annotated on its pods, arrive merged through its sidecars:
    // the pool for each pod, and the requests the gateway's traffic made.
    eventually(Duration::from_secs(30), "the was's own metrics", || {
        let pools = query(
            &url,
            r#"hikaricp_connections_max{namespace="blog-system", app="was"}"#,
        );
        let pods: Vec<&str> = pools
            .iter()
            .filter_map(|s| s["metric"]["pod"].as_str())
            .collect();
        let requests = query(
            &url,
            r#"sum(http_server_requests_seconds_count{app="was", uri="/api/posts", status="200"})"#,
        );
        (pods.len() == 2 && requests.first().map(value).unwrap_or(0.0) >= 20.0).then_some(())
    });
    // And the web's, from its own metrics port, merged the same way (web's two pods
    // between them served the 20 index pages, and their mirrored copies).
    eventually(Duration::from_secs(30), "the web's own metrics", || {
        let r = query(
            &url,
            r#"sum(http_server_requests_seconds_count{app="web", uri="/", status="200"})"#,
        );
        (r.first().map(value).unwrap_or(0.0) >= 20.0).then_some(())
    });
    // The merged endpoint's own counters arrive with the proxy's metrics.
    let scrapes = query(&url, "sum(istio_agent_scrapes_total)");
    assert!(
        scrapes.first().map(value).unwrap_or(0.0) > 0.0,
        "{scrapes:?}"
    );

    // `skein down` stops Prometheus with everything else; its data stays.
    let pid = prom_pod[0]["pid"].as_u64().expect("pid");
    assert!(pid_alive(pid));
    skein.down();
    assert!(
        !pid_alive(pid),
        "prometheus (pid {pid}) still runs after skein down"
    );
    assert!(std::path::Path::new(data).join("wal").exists(), "{data}");
}

#[test]
fn without_the_prometheus_binary_one_line_says_how_to_get_it_and_the_rest_runs() {
    let skein = Skein::new();
    // Only the programs beside skein (the blog's, and skein itself) are found.
    let out = skein
        .cmd()
        .env("PATH", "/nonexistent")
        .args([
            "up",
            EXAMPLE,
            "--detach",
            "--http-port",
            "0",
            "--https-port",
            "0",
            "--timeout",
            "180",
        ])
        .output()
        .expect("run skein");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("prometheus"))
        .collect();
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0].contains("apt-get install prometheus"), "{stdout}");
    let status = skein.status();
    assert!(
        status["prometheus"]["url"].is_null(),
        "{}",
        status["prometheus"]
    );
    assert!(skein.pods("prometheus").is_empty());
    assert_eq!(get(&format!("{}/api/posts", skein.http_base())).status, 200);
}
