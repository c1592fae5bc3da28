//! Golden outputs of `stat`, `edges` and `top` from Prometheus answers recorded on
//! `skein up examples/blog-system --database mysql` (testdata/traffic/answers.json, written
//! by the ignored `record` test below). `SKEIN_UPDATE_GOLDEN=1` rewrites the golden files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::format::{self, Format};
use super::promql::Expr;
use super::source::{Backend, Prometheus, Sample};
use super::*;
use skein_runtime::prom::parse_vector;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/traffic")
}

const WINDOW: Duration = Duration::from_secs(60);

fn ns(n: &str) -> Namespaces {
    Namespaces::One(n.into())
}

/// The specs whose queries are recorded and rendered.
fn stat_specs() -> Vec<(&'static str, StatSpec)> {
    let spec =
        |r: &str, from: Option<&str>, to: Option<&str>, n: Namespaces, wide: bool| StatSpec {
            resource: Resource::parse(r).unwrap(),
            namespaces: n,
            from: from.map(|f| Resource::parse(f).unwrap()),
            to: to.map(|t| Resource::parse(t).unwrap()),
            window: WINDOW,
            wide,
        };
    vec![
        (
            "stat-deploy",
            spec("deploy", None, None, ns("blog-system"), false),
        ),
        (
            "stat-deploy-wide",
            spec("deploy", None, None, ns("blog-system"), true),
        ),
        ("stat-po", spec("po", None, None, ns("blog-system"), false)),
        (
            "stat-svc",
            spec("svc", None, None, ns("blog-system"), false),
        ),
        ("stat-ns", spec("ns", None, None, Namespaces::All, false)),
        (
            "stat-deploy-from-web",
            spec(
                "deploy",
                Some("deploy/web-stable"),
                None,
                ns("blog-system"),
                false,
            ),
        ),
        (
            "stat-deploy-to-was",
            spec("deploy", None, Some("deploy/was"), ns("blog-system"), false),
        ),
    ]
}

fn edges_spec() -> EdgesSpec {
    EdgesSpec {
        resource: Resource::parse("deploy").unwrap(),
        namespaces: Namespaces::All,
    }
}

fn top_spec() -> TopSpec {
    TopSpec {
        resource: None,
        namespaces: Namespaces::All,
        window: WINDOW,
    }
}

fn all_exprs() -> Vec<Expr> {
    let mut v: Vec<Expr> = stat_specs()
        .iter()
        .flat_map(|(_, s)| stat_exprs(s).unwrap())
        .collect();
    v.extend(edges_exprs(&edges_spec()).unwrap());
    v.extend(top_exprs(&top_spec()).unwrap());
    v
}

/// Answers by PromQL text, as recorded.
struct Recorded {
    answers: BTreeMap<String, serde_json::Value>,
}

impl Backend for Recorded {
    fn eval(&mut self, expr: &Expr, window: Duration) -> Result<Vec<Sample>, TrafficError> {
        let q = expr.promql(window);
        let data = self
            .answers
            .get(&q)
            .unwrap_or_else(|| panic!("not recorded (run the record test): {q}"));
        Ok(parse_vector(data).unwrap())
    }
}

fn recorded() -> (Recorded, f64) {
    let text = std::fs::read_to_string(testdata().join("answers.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let answers = v["answers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    (Recorded { answers }, v["time"].as_f64().unwrap())
}

/// Records every query's answer from a running Prometheus:
/// `SKEIN_RECORD_PROMETHEUS=http://IP:PORT cargo test -p skein record -- --ignored`.
#[test]
#[ignore = "needs a running skein with Prometheus"]
fn record() {
    let url = std::env::var("SKEIN_RECORD_PROMETHEUS").expect("SKEIN_RECORD_PROMETHEUS");
    let p = Prometheus::new(&url, None).unwrap();
    let mut answers = serde_json::Map::new();
    for e in all_exprs() {
        for window in [WINDOW, Duration::ZERO] {
            let q = e.promql(window);
            if matches!(e, Expr::Total { .. }) != (window == Duration::ZERO) {
                continue;
            }
            let samples = p.query(&q).unwrap();
            let result: Vec<serde_json::Value> = samples
                .iter()
                .map(|s| serde_json::json!({"metric": s.labels, "value": [p.time, s.value.to_string()]}))
                .collect();
            answers.insert(
                q,
                serde_json::json!({"resultType": "vector", "result": result}),
            );
        }
    }
    let out = serde_json::json!({"time": p.time, "answers": answers});
    std::fs::create_dir_all(testdata()).unwrap();
    std::fs::write(
        testdata().join("answers.json"),
        serde_json::to_string_pretty(&out).unwrap() + "\n",
    )
    .unwrap();
}

/// The blog's pods as `skein status` knew them at the recording.
fn inventory(kind: Kind) -> Inventory {
    let pods: &[(&str, &str, &str, bool)] = &[
        ("blog-system", "mysql", "mysql-vs9d254qf-8bdt2", false),
        ("blog-system", "was", "was-49nzf52cf-7v69x", true),
        ("blog-system", "was", "was-49nzf52cf-hc965", true),
        (
            "blog-system",
            "web-stable",
            "web-stable-k7wwzkg5m-4p7jw",
            true,
        ),
        (
            "blog-system",
            "web-stable",
            "web-stable-k7wwzkg5m-d69f4",
            true,
        ),
        (
            "blog-system",
            "web-canary",
            "web-canary-6pcvfvw5r-vb92r",
            true,
        ),
        ("istio-system", "istiod", "istiod-rvp4trvt8-vs62d", false),
        (
            "istio-system",
            "istio-ingressgateway",
            "istio-ingressgateway-zz8zz8n8t-c2gkg",
            true,
        ),
        (
            "istio-system",
            "prometheus",
            "prometheus-gh2wxdr5q-jg46r",
            false,
        ),
    ];
    let mut inv = Inventory::new();
    let mut add = |ns: &str, name: &str, meshed: bool| {
        let m = inv.entry((ns.to_string(), name.to_string())).or_default();
        m.total += 1;
        m.meshed += usize::from(meshed);
    };
    match kind {
        Kind::Svc => {
            add("blog-system", "mysql", false);
            add("blog-system", "was-service", true);
            add("blog-system", "was-service", true);
            for _ in 0..3 {
                add("blog-system", "web-service", true);
            }
        }
        _ => {
            for (ns, wl, pod, meshed) in pods {
                match kind {
                    Kind::Pod => add(ns, pod, *meshed),
                    Kind::Ns => add(ns, ns, *meshed),
                    _ => add(ns, wl, *meshed),
                }
            }
        }
    }
    inv
}

fn golden(name: &str, got: &str) {
    let path = testdata().join(format!("{name}.golden"));
    if std::env::var_os("SKEIN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (SKEIN_UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(got, want, "{name} differs from {}", path.display());
}

fn origin(time: f64) -> Origin {
    Origin {
        source: "prometheus",
        time: Some(time),
        window_seconds: 60.0,
        note: None,
    }
}

#[test]
fn stat_outputs_match_their_goldens() {
    let (mut rec, time) = recorded();
    for (name, spec) in stat_specs() {
        let rows = stat(&spec, &mut rec, &inventory(spec.resource.kind), true).unwrap();
        let ns_col = spec.resource.kind != Kind::Ns;
        let fmt = if spec.wide {
            Format::Wide
        } else {
            Format::Table
        };
        golden(name, &format::stat(&rows, &origin(time), fmt, ns_col));
        if name == "stat-deploy" {
            golden(
                "stat-deploy-json",
                &format::stat(&rows, &origin(time), Format::Json, ns_col),
            );
        }
    }
}

#[test]
fn edges_and_top_outputs_match_their_goldens() {
    let (mut rec, time) = recorded();
    let rows = edges(&edges_spec(), &mut rec).unwrap();
    for (name, f) in [
        ("edges", Format::Table),
        ("edges-wide", Format::Wide),
        ("edges-json", Format::Json),
    ] {
        golden(name, &format::edges(&rows, &origin(time), f));
    }
    let rows = top(&top_spec(), &mut rec, 60.0).unwrap();
    for (name, f) in [
        ("top", Format::Table),
        ("top-wide", Format::Wide),
        ("top-json", Format::Json),
    ] {
        golden(name, &format::top(&rows, &origin(time), f));
    }
}

#[test]
fn the_recording_has_the_blogs_edges() {
    // The goldens are only as good as the recording: it must show the hops.
    let (mut rec, _) = recorded();
    let rows = edges(&edges_spec(), &mut rec).unwrap();
    let has = |s: &str, d: &str| rows.iter().any(|r| r.src == s && r.dst == d);
    assert!(has("istio-ingressgateway", "web-stable"), "{rows:?}");
    assert!(has("web-stable", "was"), "{rows:?}");
    assert!(has("was", "mysql"), "{rows:?}");
    let top_rows = top(&top_spec(), &mut rec, 60.0).unwrap();
    assert!(
        top_rows
            .iter()
            .any(|r| r.src == "web-stable" && r.dst == "was" && r.rps.unwrap_or(0.0) > 0.0),
        "{top_rows:?}"
    );
}

#[test]
fn plans_pick_the_reporter_and_reject_what_metrics_cannot_say() {
    let spec = |r: &str, from: Option<&str>, to: Option<&str>| StatSpec {
        resource: Resource::parse(r).unwrap(),
        namespaces: ns("blog-system"),
        from: from.map(|f| Resource::parse(f).unwrap()),
        to: to.map(|t| Resource::parse(t).unwrap()),
        window: WINDOW,
        wide: false,
    };
    let q = stat_exprs(&spec("deploy/was", None, None)).unwrap()[0].promql(WINDOW);
    assert_eq!(
        q,
        r#"sum by (destination_workload_namespace, destination_workload) (rate(istio_requests_total{reporter="destination", destination_workload="was", destination_workload_namespace="blog-system"}[60s]))"#
    );
    let q = stat_exprs(&spec("po", None, Some("svc/was-service"))).unwrap()[0].promql(WINDOW);
    assert!(
        q.contains(r#"reporter="source""#) && q.contains("by (namespace, pod)"),
        "{q}"
    );
    assert!(
        q.contains(r#"destination_service_name="was-service""#),
        "{q}"
    );
    assert!(stat_exprs(&spec("po", Some("deploy/web"), None)).is_err());
    assert!(stat_exprs(&spec("deploy", Some("svc/x"), None)).is_err());
    assert!(stat_exprs(&spec("deploy", Some("deploy/a"), Some("deploy/b"))).is_err());
    assert!(Resource::parse("pipelines").is_err());
    assert_eq!(parse_window("1m30s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_window("15").unwrap(), Duration::from_secs(15));
    assert!(parse_window("10x").is_err());
}

#[test]
fn numbers_are_formatted_as_linkerd_does() {
    assert_eq!(format::success(Some(1.0)), "100.00%");
    assert_eq!(format::success(Some(0.98765)), "98.77%");
    assert_eq!(format::rps(Some(2.04)), "2.0rps");
    assert_eq!(format::ms(Some(123.4)), "123ms");
    assert_eq!(format::ms(Some(2.25)), "2.2ms");
    assert_eq!(format::ms(Some(9.96)), "10ms");
    assert_eq!(format::ms(None), "-");
    assert_eq!(format::bytes_per_sec(Some(2048.0)), "2.0KiB/s");
}
