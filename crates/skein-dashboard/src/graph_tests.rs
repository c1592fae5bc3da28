//! The graph built from Prometheus answers recorded from a real Prometheus while
//! `skein up examples/blog-system --scrape-interval 1` served traffic through the ingress
//! (testdata/graph-answers.json, written by the ignored `record` test below:
//! `SKEIN_RECORD_PROMETHEUS=http://IP:PORT cargo test -p skein-dashboard record -- --ignored`,
//! with the Prometheus URL from `skein status -o json`).

use std::path::PathBuf;

use super::*;
use crate::state::Snapshot;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// The options whose queries are recorded (the graph types share the traffic queries; the
/// response time modes differ).
fn options(gt: GraphType, rt: ResponseTime, inject: bool, time: f64) -> Options {
    Options {
        namespaces: vec!["blog-system".into()],
        graph_type: gt,
        duration: 60,
        inject_service_nodes: inject,
        response_time: rt,
        idle_edges: false,
        time,
    }
}

#[test]
#[ignore = "needs a running skein with Prometheus and traffic"]
fn record() {
    let url = std::env::var("SKEIN_RECORD_PROMETHEUS").expect("SKEIN_RECORD_PROMETHEUS");
    let client =
        skein_runtime::prom::PromClient::new(&url, std::time::Duration::from_secs(10)).unwrap();
    let time = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64)
        / 1000.0;
    let mut queries = plan(&options(
        GraphType::VersionedApp,
        ResponseTime::Quantile(0.95),
        false,
        time,
    ));
    queries.extend(plan(&options(
        GraphType::VersionedApp,
        ResponseTime::Avg,
        false,
        time,
    )));
    queries.sort();
    queries.dedup();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut answers = serde_json::Map::new();
    for q in queries {
        let rows = rt.block_on(client.query(&q, time)).unwrap();
        let result: Vec<Json> = rows
            .iter()
            .map(|s| json!({"metric": s.labels, "value": [time, s.value.to_string()]}))
            .collect();
        answers.insert(q, json!({"resultType": "vector", "result": result}));
    }
    let out = json!({
        "how": "recorded by `cargo test -p skein-dashboard record -- --ignored` from the Prometheus of `skein up examples/blog-system --scrape-interval 1` with requests to / and /api/posts through the ingress",
        "time": time,
        "answers": answers,
    });
    std::fs::write(
        testdata().join("graph-answers.json"),
        serde_json::to_string_pretty(&out).unwrap() + "\n",
    )
    .unwrap();
}

fn recorded() -> (Answers, f64) {
    let text = std::fs::read_to_string(testdata().join("graph-answers.json")).unwrap();
    let v: Json = serde_json::from_str(&text).unwrap();
    let answers = v["answers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), skein_runtime::prom::parse_vector(v).unwrap()))
        .collect();
    (answers, v["time"].as_f64().unwrap())
}

/// The blog's config (flags), with mysql out of the mesh as it runs.
fn blog_context() -> Context {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/blog-system");
    let manifests = skein_api::load_path(&dir).unwrap();
    let snap = Snapshot {
        diagnostics: skein_api::validate(&manifests),
        manifests,
        ..Snapshot::default()
    };
    let mut cx = context(&snap);
    cx.out_of_mesh.insert("blog-system/mysql".into());
    cx.out_of_mesh_apps.insert("blog-system/mysql".into());
    cx
}

fn nodes(g: &Json) -> Vec<&Json> {
    g["elements"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["data"])
        .collect()
}

fn edges(g: &Json) -> Vec<&Json> {
    g["elements"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["data"])
        .collect()
}

fn find(g: &Json, f: impl Fn(&Json) -> bool) -> &Json {
    nodes(g)
        .into_iter()
        .find(|d| f(d))
        .unwrap_or_else(|| panic!("no such node in {:#}", g["elements"]["nodes"]))
}

fn edge<'a>(g: &'a Json, from: &Json, to: &Json) -> &'a Json {
    edges(g)
        .into_iter()
        .find(|e| e["source"] == from["id"] && e["target"] == to["id"])
        .unwrap_or_else(|| panic!("no edge {} -> {} in {:#}", from, to, g["elements"]["edges"]))
}

fn num(v: &Json) -> f64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn the_versioned_app_graph_of_the_blog() {
    let (answers, time) = recorded();
    let o = options(
        GraphType::VersionedApp,
        ResponseTime::Quantile(0.95),
        false,
        time,
    );
    let g = build(&o, &answers, &blog_context());
    assert_eq!(g["graphType"], "versionedApp");
    assert_eq!(g["duration"], 60);
    let gw = find(&g, |d| d["workload"] == "istio-ingressgateway");
    assert_eq!(gw["namespace"], "istio-system");
    assert_eq!(gw["isOutside"], true);
    assert_eq!(gw["isRoot"], true);
    assert!(
        gw["isGateway"]["ingressInfo"]["hostnames"].is_array(),
        "{gw}"
    );
    let stable = find(&g, |d| d["app"] == "web" && d["version"] == "stable");
    let canary = find(&g, |d| d["app"] == "web" && d["version"] == "canary");
    let web_box = find(&g, |d| d["isBox"] == "app" && d["app"] == "web");
    assert_eq!(web_box["nodeType"], "box");
    assert_eq!(stable["parent"], web_box["id"]);
    assert_eq!(canary["parent"], web_box["id"]);
    assert_eq!(stable["nodeType"], "app");
    assert_eq!(stable["id"], hash("vapp_Kubernetes_blog-system_web_stable"));
    assert_eq!(stable["hasVS"]["hostnames"], json!(["web-service"]));
    assert_eq!(stable["hasMirroring"], true);
    assert_eq!(stable["hasRequestRouting"], true);
    assert_eq!(stable["hasTrafficShifting"], true);
    assert_eq!(stable["hasRequestTimeout"], true);
    assert_eq!(
        stable["hasCB"], true,
        "web-dest-rule has an outlier detection"
    );
    assert_eq!(stable["destServices"][0]["name"], "web-service");
    let was = find(&g, |d| d["app"] == "was" && d["nodeType"] == "app");
    assert!(was.get("isOutside").is_none());
    let mysql = find(&g, |d| d["app"] == "mysql" && d["nodeType"] == "app");
    assert_eq!(mysql["isOutOfMesh"], true, "{mysql}");
    assert_eq!(mysql["hasCB"], true, "mysql-circuit-breaker");

    // ingress -> web: HTTP, rates as Kiali prints them.
    let gw_web = edge(&g, gw, stable);
    assert_eq!(gw_web["traffic"]["protocol"], "http");
    let rate = num(&gw_web["traffic"]["rates"]["http"]);
    assert!(rate > 0.5, "{gw_web}");
    let r = gw_web["traffic"]["rates"]["http"].as_str().unwrap();
    assert_eq!(
        r.split('.').nth(1).map(str::len),
        Some(2),
        "two decimals: {r}"
    );
    assert_eq!(gw_web["traffic"]["responses"]["200"]["flags"]["-"], "100.0");
    assert_eq!(
        gw_web["traffic"]["responses"]["200"]["hosts"]["web-service.blog-system.svc.cluster.local"],
        "100.0"
    );
    assert_eq!(gw_web["isMTLS"], "100");

    // web -> was: mTLS with both principals, a response time and a throughput.
    let web_was = edge(&g, stable, was);
    assert_eq!(web_was["isMTLS"], "100");
    assert_eq!(
        web_was["sourcePrincipal"],
        "spiffe://cluster.local/ns/blog-system/sa/default"
    );
    assert_eq!(
        web_was["destPrincipal"],
        "spiffe://cluster.local/ns/blog-system/sa/was"
    );
    assert!(num(&web_was["traffic"]["rates"]["http"]) > 0.0);
    let rt = num(&web_was["responseTime"]);
    assert!(rt > 0.0 && rt < 1000.0, "{web_was}");
    assert!(num(&web_was["throughput"]) > 0.0, "{web_was}");
    // Node rates: web's out equals the sum of its edges' rates.
    let web_out: f64 = edges(&g)
        .iter()
        .filter(|e| e["source"] == stable["id"])
        .map(|e| num(&e["traffic"]["rates"]["http"]).max(0.0))
        .sum();
    let traffic = stable["traffic"].as_array().unwrap();
    let http = traffic.iter().find(|t| t["protocol"] == "http").unwrap();
    assert!(
        (num(&http["rates"]["httpOut"]) - web_out).abs() < 0.02,
        "{http} vs {web_out}"
    );
    assert!(num(&http["rates"]["httpIn"]) > 0.0);

    // was -> mysql: TCP, bytes per second, no mTLS (mysql has no sidecar).
    let was_mysql = edge(&g, was, mysql);
    assert_eq!(was_mysql["traffic"]["protocol"], "tcp");
    assert!(
        num(&was_mysql["traffic"]["rates"]["tcp"]) > 0.0,
        "{was_mysql}"
    );
    assert!(was_mysql.get("isMTLS").is_none());
    assert!(was_mysql["traffic"]["responses"]["-"]["flags"]["-"].is_string());
}

#[test]
fn graph_types_and_service_nodes() {
    let (answers, time) = recorded();
    let cx = blog_context();
    // app graph: one web node for both versions.
    let g = build(
        &options(GraphType::App, ResponseTime::Quantile(0.95), false, time),
        &answers,
        &cx,
    );
    let webs: Vec<&Json> = nodes(&g)
        .into_iter()
        .filter(|d| d["app"] == "web")
        .collect();
    assert_eq!(webs.len(), 1, "{webs:?}");
    assert_eq!(webs[0]["id"], hash("app_Kubernetes_blog-system_web"));
    assert!(webs[0].get("version").is_none());
    // workload graph: web-stable and web-canary.
    let g = build(
        &options(
            GraphType::Workload,
            ResponseTime::Quantile(0.95),
            false,
            time,
        ),
        &answers,
        &cx,
    );
    let stable = find(&g, |d| d["workload"] == "web-stable");
    assert_eq!(stable["nodeType"], "workload");
    assert_eq!(stable["id"], hash("wl_Kubernetes_blog-system_web-stable"));
    find(&g, |d| d["workload"] == "web-canary");
    // Injected service nodes split the edge; the response time is on service -> workload.
    let g = build(
        &options(
            GraphType::Workload,
            ResponseTime::Quantile(0.95),
            true,
            time,
        ),
        &answers,
        &cx,
    );
    let stable = find(&g, |d| d["workload"] == "web-stable");
    let svc = find(&g, |d| {
        d["nodeType"] == "service" && d["service"] == "was-service"
    });
    assert_eq!(svc["id"], hash("svc_Kubernetes_blog-system_was-service"));
    assert!(svc["hasVS"].is_object(), "{svc}");
    let was = find(&g, |d| d["workload"] == "was");
    let to_svc = edge(&g, stable, svc);
    let to_was = edge(&g, svc, was);
    assert!(to_svc.get("responseTime").is_none());
    assert!(to_was["responseTime"].is_string());
    assert_eq!(to_svc["isMTLS"], "100");
    assert!(
        (num(&to_svc["traffic"]["rates"]["http"]) - num(&to_was["traffic"]["rates"]["http"])).abs()
            < 0.02
            || num(&to_was["traffic"]["rates"]["http"]) > num(&to_svc["traffic"]["rates"]["http"])
    );
    // Service graph: services only (and the gateway that calls one).
    let g = build(
        &options(
            GraphType::Service,
            ResponseTime::Quantile(0.95),
            false,
            time,
        ),
        &answers,
        &cx,
    );
    let web_svc = find(&g, |d| d["service"] == "web-service");
    let was_svc = find(&g, |d| d["service"] == "was-service");
    let e = edge(&g, web_svc, was_svc);
    assert!(num(&e["traffic"]["rates"]["http"]) > 0.0);
    assert!(
        nodes(&g)
            .iter()
            .all(|d| d["nodeType"] == "service" || d["workload"] == "istio-ingressgateway"),
        "{:#}",
        g["elements"]["nodes"]
    );
    // Average response time.
    let g = build(
        &options(GraphType::VersionedApp, ResponseTime::Avg, false, time),
        &answers,
        &cx,
    );
    let stable = find(&g, |d| d["app"] == "web" && d["version"] == "stable");
    let was = find(&g, |d| d["app"] == "was" && d["nodeType"] == "app");
    assert!(num(&edge(&g, stable, was)["responseTime"]) > 0.0);
}

#[test]
fn every_query_escapes_and_is_kialis() {
    let o = options(
        GraphType::VersionedApp,
        ResponseTime::Quantile(0.95),
        false,
        0.0,
    );
    let q = plan(&o);
    assert!(q.contains(&format!("sum(rate(istio_requests_total{{reporter=\"destination\",destination_workload_namespace=\"blog-system\"}}[60s])) by ({HTTP_GROUP}) > 0")));
    assert!(q.iter().any(|q| q.starts_with("sum(rate(istio_tcp_received_bytes_total{reporter=\"source\",source_workload_namespace=\"blog-system\"}")));
    assert!(
        q.iter()
            .any(|q| q.contains(r#"destination_service=~"^.+\\.blog-system\\..+$""#)),
        "{q:#?}"
    );
    assert!(q.iter().any(|q| q.starts_with("histogram_quantile(0.95, ")));
    // A value that would end the literal stays inside it.
    let mut bad = o.clone();
    bad.namespaces = vec!["x\"}) or vector(1) #".into()];
    for q in plan(&bad) {
        assert!(!q.contains("x\"})"), "{q}");
    }
    // No answers, no graph, no panic.
    let g = build(&o, &Answers::new(), &Context::default());
    assert_eq!(g["elements"]["nodes"], json!([]));
}

#[test]
fn hostile_samples_do_not_break_the_graph() {
    let mut s = Sample {
        labels: Default::default(),
        value: f64::NAN,
    };
    s.labels.insert("source_workload".into(), "a".into());
    let o = options(
        GraphType::Workload,
        ResponseTime::Quantile(0.95),
        false,
        0.0,
    );
    let mut answers = Answers::new();
    for q in plan(&o) {
        answers.insert(
            q,
            vec![
                s.clone(),
                Sample {
                    value: f64::INFINITY,
                    ..s.clone()
                },
                Sample {
                    value: -1.0,
                    ..s.clone()
                },
            ],
        );
    }
    let g = build(&o, &answers, &Context::default());
    assert!(
        g["elements"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["data"]["traffic"]["rates"].is_object())
    );
}
