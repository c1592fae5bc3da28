//! End to end: `skein up examples/blog-system` runs the dashboard as istio-system's `kiali`
//! pod; with traffic through the ingress its API draws Kiali's graph of the blog (the
//! gateway, web's stable and canary versions, was, the web -> was edge with mTLS), shows was's
//! pods with their proxies and policies, every object with its file:line, a refused
//! `skein apply` with its error, a proxy's parsed access log, and the tracing store's
//! services through its Jaeger pass-through.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

const NS: &str = "blog-system";

/// Stops the traffic when the test ends, also when it fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn load(base: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _ = get(&format!("{base}/api/posts"));
            let _ = get(&format!("{base}/"));
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn node(
    g: &serde_json::Value,
    f: impl Fn(&serde_json::Value) -> bool,
) -> Option<&serde_json::Value> {
    g["elements"]["nodes"]
        .as_array()?
        .iter()
        .map(|n| &n["data"])
        .find(|d| f(d))
}

#[test]
fn the_dashboard_api_on_the_blog() {
    let skein = Skein::new();
    let out = skein.run(&["dashboard", "--no-browser"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skein is not running"), "{err}");
    skein.up("examples/blog-system", &["--scrape-interval", "1"]);
    let status = skein.status();
    let base = status["dashboard"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no dashboard in skein status: {status}"))
        .trim_end_matches('/')
        .to_string();
    assert!(
        status["prometheus"]["url"].is_string(),
        "needs Prometheus: {}",
        status["prometheus"]
    );
    let kiali = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["workload"] == "kiali")
        .expect("a kiali pod");
    assert_eq!(kiali["namespace"], "istio-system");
    assert!(kiali["proxy"].is_null(), "no sidecar: {kiali}");
    let table = String::from_utf8_lossy(&skein.run(&["status"]).stdout).into_owned();
    assert!(table.contains(&format!("dashboard: {base}/")), "{table}");
    let out = skein.run(&["dashboard", "--no-browser"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{base}/")
    );

    assert_eq!(get(&format!("{base}/healthz")).body, "ok");
    let ns = get(&format!("{base}/api/namespaces")).json();
    let names: Vec<&str> = ns
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert!(
        names.contains(&NS) && names.contains(&"istio-system"),
        "{names:?}"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = load(skein.http_base(), Arc::clone(&stop));
    let _stop = StopOnDrop(Arc::clone(&stop));

    // Kiali's graph once Prometheus has two scrapes of the traffic.
    let graph_url =
        format!("{base}/api/namespaces/graph?namespaces={NS}&graphType=versionedApp&duration=60s");
    let graph = eventually(
        Duration::from_secs(45),
        "the gateway, web, and the web -> was edge in the graph",
        || {
            let g = get(&graph_url);
            if g.status != 200 {
                return None;
            }
            let g = g.json();
            // Each hop shows once Prometheus has two scrapes of its counters, not all at once.
            let gw = node(&g, |d| d["workload"] == "istio-ingressgateway")?["id"].clone();
            // web's Rollout pods carry no `version` label: Istio's canonical revision is
            // `latest`, and with no update running there is one revision.
            let web = node(&g, |d| d["app"] == "web" && d["version"] == "latest")?["id"].clone();
            let was = node(&g, |d| d["app"] == "was" && d["nodeType"] == "app")?["id"].clone();
            let edges = g["elements"]["edges"].as_array()?;
            let has = |from: &serde_json::Value, to: &serde_json::Value| {
                edges.iter().any(|e| {
                    e["data"]["source"] == *from
                        && e["data"]["target"] == *to
                        && e["data"]["isMTLS"] == "100"
                })
            };
            (has(&gw, &web) && has(&web, &was)).then_some(g.clone())
        },
    );
    assert_eq!(graph["graphType"], "versionedApp");
    let gw = node(&graph, |d| d["workload"] == "istio-ingressgateway")
        .expect("the ingress gateway node");
    assert!(gw["isGateway"].is_object(), "{gw}");
    assert_eq!(gw["isOutside"], true, "{gw}");
    assert_eq!(gw["isRoot"], true, "{gw}");
    let web_versions: Vec<&serde_json::Value> = graph["elements"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| &n["data"])
        .filter(|d| d["app"] == "web" && d["nodeType"] == "app" && d["version"].is_string())
        .collect();
    assert_eq!(
        web_versions.len(),
        1,
        "one revision of web: {web_versions:?}"
    );
    // Kiali boxes an app only when it has more than one node: one revision, no box.
    assert!(
        node(&graph, |d| d["isBox"] == "app" && d["app"] == "web").is_none(),
        "{graph}"
    );
    let stable = node(&graph, |d| d["app"] == "web" && d["version"] == "latest").unwrap();
    assert!(stable["parent"].is_null(), "{stable}");
    assert!(
        stable["hasVS"]["hostnames"]
            .as_array()
            .is_some_and(|h| !h.is_empty()),
        "{stable}"
    );
    assert_eq!(stable["hasMirroring"], true, "{stable}");
    let web_was = graph["elements"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["data"])
        .find(|e| e["source"] == stable["id"] && e["isMTLS"] == "100")
        .unwrap();
    assert_eq!(
        web_was["sourcePrincipal"],
        "spiffe://cluster.local/ns/blog-system/sa/default"
    );
    assert!(
        web_was["traffic"]["rates"]["http"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );
    assert!(web_was["responseTime"].is_string(), "{web_was}");

    // Health, the overview and metrics from the same Prometheus.
    let health = get(&format!(
        "{base}/api/namespaces/{NS}/health?type=app&rateInterval=60s"
    ))
    .json();
    assert_eq!(
        health["was"]["status"]["status"], "Healthy",
        "{}",
        health["was"]
    );
    assert!(
        health["was"]["requests"]["inbound"]["http"]["200"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    assert_eq!(health["was"]["workloadStatuses"][0]["availableReplicas"], 2);
    let overview = get(&format!("{base}/api/overview?duration=60s")).json();
    let blog = overview["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == NS)
        .unwrap();
    assert!(blog["requestRate"].as_f64().unwrap() > 0.0, "{blog}");
    assert_eq!(blog["mtls"], "100", "{blog}");
    let metrics = get(&format!(
        "{base}/api/namespaces/{NS}/workloads/was/metrics?direction=inbound&duration=120s&step=15s"
    ))
    .json();
    let counts = metrics["request_count"].as_array().unwrap();
    assert!(
        counts
            .iter()
            .any(|s| !s["datapoints"].as_array().unwrap().is_empty()),
        "{metrics}"
    );

    // was: two pods, proxies synced, the identity, was-authz.
    let was = get(&format!("{base}/api/namespaces/{NS}/workloads/was")).json();
    let pods = was["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 2, "{was}");
    for p in pods {
        assert_eq!(p["proxy"]["synced"], true, "{p}");
        assert_eq!(
            p["proxy"]["identity"], "spiffe://cluster.local/ns/blog-system/sa/was",
            "{p}"
        );
    }
    let config: Vec<&str> = was["istioConfig"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(config.contains(&"was-authz"), "{config:?}");

    // Every object with its file:line (was-vsvc: web-vsvc is shown as web's Rollout manages
    // it, from the controller's managed copy).
    let cfg = get(&format!("{base}/api/istio/config")).json();
    assert_eq!(cfg["control"]["valid"], true, "{}", cfg["control"]);
    let vs = cfg["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["kind"] == "VirtualService" && o["name"] == "was-vsvc")
        .expect("was-vsvc");
    assert_eq!(vs["source"]["file"], "50-istio-traffic.yaml");
    assert!(vs["source"]["line"].as_u64().unwrap() > 1);
    assert!(vs["yaml"].as_str().unwrap().contains("name: was-vsvc"));

    // A broken AuthorizationPolicy is refused and shows with its error.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken-authz.yaml");
    std::fs::write(
        &bad,
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: broken-authz\n  namespace: blog-system\nspec:\n  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [\"GET\"]\n        ports: [\"99999\"]\n",
    )
    .unwrap();
    let out = skein.run(&["apply", "-f", bad.to_str().unwrap()]);
    assert!(!out.status.success(), "the broken policy was accepted");
    let cfg = get(&format!("{base}/api/istio/config")).json();
    assert_eq!(cfg["control"]["valid"], false, "{}", cfg["control"]);
    let broken = cfg["objects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "broken-authz")
        .unwrap_or_else(|| panic!("the refused policy: {cfg}"));
    assert_eq!(broken["valid"], false);
    let check = &broken["checks"][0];
    assert_eq!(check["severity"], "error");
    assert!(
        check["source"]
            .as_str()
            .unwrap()
            .contains("broken-authz.yaml:"),
        "{check}"
    );

    // The access log of a web pod's sidecar.
    let web_pod = skein.pods("web")[0]["name"].as_str().unwrap().to_string();
    let logs = get(&format!(
        "{base}/api/namespaces/{NS}/pods/{web_pod}/logs?container=istio-proxy&tailLines=50"
    ))
    .json();
    let entries = logs["entries"].as_array().unwrap();
    let access = entries
        .iter()
        .find(|e| e["accessLog"].is_object())
        .unwrap_or_else(|| panic!("no access log entry: {logs}"));
    assert!(
        access["accessLog"]["response_code"].as_str().unwrap().len() == 3,
        "{access}"
    );
    let only_5xx = get(&format!(
        "{base}/api/namespaces/{NS}/pods/{web_pod}/logs?container=istio-proxy&code=5xx"
    ))
    .json();
    assert!(only_5xx["entries"].as_array().unwrap().iter().all(|e| {
        e["accessLog"]["response_code"]
            .as_str()
            .unwrap()
            .starts_with('5')
    }));

    // The tracing store through the pass-through.
    eventually(
        Duration::from_secs(20),
        "web.blog-system in the tracing store",
        || {
            let s = get(&format!("{base}/jaeger/api/services")).json();
            s["data"]
                .as_array()?
                .iter()
                .any(|v| v == "web.blog-system")
                .then_some(())
        },
    );

    // web's Rollout with its controller's status: Healthy, its 8 steps all done, and the
    // same object in the namespace's Rollout list.
    let web = eventually(Duration::from_secs(20), "web's Rollout status", || {
        let w = get(&format!("{base}/api/namespaces/{NS}/workloads/web")).json();
        (w["rollout"]["phase"] == "Healthy").then_some(w)
    });
    assert_eq!(web["kind"], "Rollout");
    let r = &web["rollout"];
    assert_eq!(r["icon"], "✔", "{r}");
    assert_eq!(r["steps"].as_array().map(Vec::len), Some(8), "{r}");
    assert!(
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "done"),
        "{r}"
    );
    assert_eq!(r["stableWeight"], 100, "{r}");
    let list = get(&format!("{base}/api/namespaces/{NS}/rollouts")).json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "web");
    let wl = get(&format!("{base}/api/namespaces/{NS}/workloads")).json();
    let row = wl
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "web")
        .unwrap();
    assert_eq!(row["rollout"]["phase"], "Healthy", "{row}");
    let was = wl
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "was")
        .unwrap();
    assert!(was["rollout"].is_null(), "was is a Deployment: {was}");

    // Hostile input: a 400 with a message, nothing else runs.
    let r = get(&format!(
        "{base}/api/namespaces/graph?namespaces=blog-system%22%7D&graphType=app"
    ));
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].as_str().unwrap().contains("namespace"));
    assert_eq!(
        get(&format!("{base}/api/namespaces/nope/workloads")).status,
        404
    );
    assert_eq!(
        send_json("POST", &format!("{base}/api/istio/config"), "{}").status,
        405
    );

    stop.store(true, Ordering::Relaxed);
    traffic.join().unwrap();
}

/// GitOps on the Istio config page's data: `skein up` on a git working tree (the gitops
/// fixture) is Synced and Healthy with nothing drifted; a `skein apply` that differs from git
/// makes the Application OutOfSync with that VirtualService listed as drifted.
#[test]
fn the_dashboard_shows_the_application_sync_state_and_its_drift() {
    let repo = tempfile::tempdir().unwrap();
    let fixture = repo_root().join("crates/skein/tests/fixtures/gitops");
    for f in ["echo.yaml", "vs.yaml"] {
        std::fs::copy(fixture.join(f), repo.path().join(f)).unwrap();
    }
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-qm", "echo: all to v1"]);
    let skein = Skein::new();
    skein.up(repo.path().to_str().unwrap(), &[]);
    let status = skein.status();
    let base = status["dashboard"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no dashboard in skein status: {status}"))
        .trim_end_matches('/')
        .to_string();
    // Progressing until its pods are ready, as Argo CD's health.
    let app = eventually(
        Duration::from_secs(30),
        "the Application Synced and Healthy",
        || {
            let c = get(&format!("{base}/api/istio/config")).json();
            let a = &c["application"];
            (a["sync"] == "Synced" && a["health"] == "Healthy").then(|| a.clone())
        },
    );
    assert_eq!(app["outOfSync"], 0, "{app}");
    assert_eq!(app["drifted"], serde_json::json!([]), "{app}");
    assert!(app["revision"]["subject"] == "echo: all to v1", "{app}");

    let vs = std::fs::read_to_string(fixture.join("vs.yaml"))
        .unwrap()
        .replace("weight: 100", "weight: X")
        .replace("weight: 0", "weight: 100")
        .replace("weight: X", "weight: 0");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("vs-manual.yaml");
    std::fs::write(&file, vs).unwrap();
    let out = skein.run(&["apply", "-f", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "skein apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = eventually(Duration::from_secs(10), "the Application OutOfSync", || {
        let c = get(&format!("{base}/api/istio/config")).json();
        (c["application"]["sync"] == "OutOfSync").then(|| c["application"].clone())
    });
    assert_eq!(app["outOfSync"], 1, "{app}");
    let d = &app["drifted"][0];
    assert_eq!(
        (&d["kind"], &d["namespace"], &d["name"]),
        (&"VirtualService".into(), &"echo".into(), &"echo".into()),
        "{app}"
    );
    assert!(
        d["git"].as_str().is_some_and(|g| g.starts_with("vs.yaml:")),
        "the drifted object names git's file: {app}"
    );
}
