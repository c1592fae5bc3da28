//! End to end through the mesh: `skein up` on a copy of the example, then what an Istio user
//! does with it: an update of web's Rollout under load (header-based canary routing, the
//! steps' weights), an invalid edit, a dead control plane, `proxy-config`, the access log,
//! and MySQL behind a sidecar.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::argo;
use support::*;

const EXAMPLE: &str = "examples/blog-system";

/// Continuous GETs through the ingress on two client threads, counting answers.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    canary: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    /// `stable`: the stable revision's `x-web-version`; any other answer counts as canary.
    fn start(url: String, stable: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let canary = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(std::sync::Mutex::new(Vec::new()));
        let threads = (0..2)
            .map(|_| {
                let (stop, ok, canary, failed, url, stable) = (
                    stop.clone(),
                    ok.clone(),
                    canary.clone(),
                    failed.clone(),
                    url.clone(),
                    stable.clone(),
                );
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let r = get(&url);
                        if r.status == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                            if r.header("x-web-version") != Some(stable.as_str()) {
                                canary.fetch_add(1, Ordering::Relaxed);
                            }
                        } else {
                            failed
                                .lock()
                                .expect("lock")
                                .push(format!("{} {}", r.status, r.body));
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            canary,
            failed,
            threads,
        }
    }

    fn counts(&self) -> (u64, u64) {
        (
            self.ok.load(Ordering::Relaxed),
            self.canary.load(Ordering::Relaxed),
        )
    }

    fn assert_no_failures(&self, during: &str) {
        let failed = self.failed.lock().expect("lock");
        assert!(
            failed.is_empty(),
            "{} failed requests {during}: {:?}",
            failed.len(),
            &failed[..failed.len().min(5)]
        );
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        self.ok.load(Ordering::Relaxed)
    }
}

fn web_version(base: &str, canary_header: bool) -> String {
    let headers: &[(&str, &str)] = if canary_header {
        &[("x-canary-test", "true")]
    } else {
        &[]
    };
    let r = request("GET", &format!("{base}/api/posts"), headers, b"", None);
    assert_eq!(r.status, 200, "{r:?}");
    r.header("x-web-version").unwrap_or("").to_string()
}

fn rollout(skein: &Skein) -> serde_json::Value {
    argo::rollout(skein, "blog-system", "web")
}

fn wait_step(skein: &Skein, step: u64, phase: &str) -> serde_json::Value {
    argo::wait_step(skein, "blog-system", "web", step, phase)
}

fn rollouts(skein: &Skein, args: &[&str]) {
    argo::rollouts(skein, "blog-system", "web", args)
}

/// The share of canary answers of the load over `secs` seconds.
fn canary_share(load: &Load, secs: u64) -> (f64, u64) {
    let (ok0, c0) = load.counts();
    std::thread::sleep(Duration::from_secs(secs));
    let (ok1, c1) = load.counts();
    ((c1 - c0) as f64 / (ok1 - ok0).max(1) as f64, ok1 - ok0)
}

#[test]
fn the_mesh_routes_by_header_and_weight_and_survives_bad_edits_and_a_dead_control_plane() {
    let skein = Skein::new();
    let dir = manifests_copy(EXAMPLE);
    let dir_s = dir.path().to_str().expect("utf-8 path");
    skein.up(dir_s, &[]);
    let base = skein.http_base();
    let status = skein.status();
    let control = &status["control_plane"];
    assert!(control["pid"].as_u64() > Some(0), "{status}");
    assert_eq!(control["valid"], true);
    for p in status["pods"].as_array().expect("pods") {
        if p["namespace"] == "blog-system" && p["workload"] != "mysql" {
            let proxy = &p["proxy"];
            assert_eq!(proxy["mode"], "sidecar", "{p}");
            assert!(proxy["pid"].as_u64() > Some(0), "{p}");
            assert!(
                proxy["admin"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("http://127."))
            );
            assert!(proxy["config_version"].is_string(), "{p}");
        }
    }

    // web is a Rollout with no update running: both subsets are its stable revision, so
    // the seed's header rule and everyone else reach the same pods (x-web-version is the
    // revision's template hash).
    let stable = rollout(&skein)["stableRS"]
        .as_str()
        .expect("stableRS")
        .to_string();
    assert!(!stable.is_empty());
    for _ in 0..10 {
        assert_eq!(web_version(&base, true), stable);
        assert_eq!(web_version(&base, false), stable);
    }

    // proxy-config on a web pod shows the was cluster with was-dest-rule's values.
    let out = skein.run(&["proxy-config", "web", "clusters"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let was_line = text
        .lines()
        .find(|l| l.starts_with("was-service.blog-system.svc.cluster.local"))
        .unwrap_or_else(|| panic!("no was cluster in:\n{text}"));
    for want in ["8080", "ROUND_ROBIN", "ISTIO_MUTUAL", "-/100/100/10"] {
        assert!(was_line.contains(want), "{want} missing in {was_line}");
    }
    let out = skein.run(&["proxy-config", "web", "routes", "-o", "json"]);
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("routes JSON");
    assert!(routes.to_string().contains("canary-testing"));

    // The web sidecar's access log names the was cluster as Istio does (lines are written
    // in batches, within 100 ms).
    eventually(
        Duration::from_secs(5),
        "the was cluster in web's proxy log",
        || {
            let out = skein.run(&["logs", "web", "-c", "proxy"]);
            String::from_utf8_lossy(&out.stdout)
                .contains(" outbound|8080||was-service.blog-system.svc.cluster.local ")
                .then_some(())
        },
    );

    // An update of web under load: a template edit in the directory starts a canary
    // revision, at weight 0 with one pod (the seed's first step), paused.
    let load = Load::start(format!("{base}/api/posts"), stable.clone());
    let web_file = dir.path().join("30-web.yaml");
    let text = std::fs::read_to_string(&web_file).expect("read web");
    let at = "        - name: LISTEN_ADDR\n";
    assert!(text.contains(at));
    std::fs::write(
        &web_file,
        text.replacen(
            at,
            &format!("        - name: RELEASE\n          value: \"2\"\n{at}"),
            1,
        ),
    )
    .expect("write web");
    let r = wait_step(&skein, 1, "Paused");
    let canary = r["currentPodHash"]
        .as_str()
        .expect("currentPodHash")
        .to_string();
    assert_ne!(canary, stable, "{r}");
    // The step is reached once the canary pod is ready; its subset label reaches the
    // gateway with the next push, so wait for the first tester request to land there.
    eventually(
        Duration::from_secs(5),
        "the canary subset at the gateway",
        || {
            let headers = [("x-canary-test", "true")];
            let r = request("GET", &format!("{base}/api/posts"), &headers, b"", None);
            (r.status == 200 && r.header("x-web-version") == Some(canary.as_str())).then_some(())
        },
    );
    // The seed's header rule: testers reach the canary every time, everyone else stable.
    for _ in 0..10 {
        assert_eq!(web_version(&base, true), canary);
        assert_eq!(web_version(&base, false), stable);
    }
    let (share, n) = canary_share(&load, 1);
    assert_eq!(
        share, 0.0,
        "weight 0 sends nothing to the canary ({n} requests)"
    );

    // Promoted: 10 %, then 50 %; traffic shifts within a second and a half of the step,
    // with no failed request.
    rollouts(&skein, &["promote"]);
    wait_step(&skein, 4, "Paused");
    std::thread::sleep(Duration::from_millis(500));
    let (share, n) = canary_share(&load, 3);
    assert!(
        (0.02..=0.25).contains(&share),
        "10 %: canary share {share} over {n} requests"
    );
    rollouts(&skein, &["promote"]);
    let promoted = Instant::now();
    wait_step(&skein, 6, "Paused");
    let shifted = eventually(Duration::from_secs(5), "canary traffic after 50/50", || {
        (0..4)
            .any(|_| web_version(&base, false) == canary)
            .then(Instant::now)
    });
    eprintln!(
        "50 % took effect after {:?}",
        shifted.duration_since(promoted)
    );
    std::thread::sleep(Duration::from_millis(500));
    let (share, n) = canary_share(&load, 2);
    assert!(
        (0.3..=0.7).contains(&share),
        "canary share {share} over {n} requests"
    );
    load.assert_no_failures("while the weights changed");

    // An invalid edit is refused with file:line; the 50/50 behaviour stays.
    std::fs::write(
        dir.path().join("99-bad.yaml"),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: bad\n  namespace: blog-system\nspec:\n  hosts: [web-service]\n  http:\n  - route:\n    - destination:\n        host: web-service\n      wieght: 10\n",
    )
    .expect("write bad");
    let rejection = eventually(Duration::from_secs(5), "the rejection in status", || {
        let s = skein.status();
        (s["control_plane"]["valid"] == false).then(|| s["control_plane"]["last_rejection"].clone())
    });
    let errors = rejection["errors"].to_string();
    assert!(errors.contains("99-bad.yaml:12"), "{errors}");
    assert!(errors.contains("wieght"), "{errors}");
    let out = skein.run(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("99-bad.yaml:12"),
        "the table shows the rejection"
    );
    let (share, _) = canary_share(&load, 1);
    assert!((0.2..=0.8).contains(&share), "still split: {share}");
    std::fs::remove_file(dir.path().join("99-bad.yaml")).expect("remove bad");
    eventually(Duration::from_secs(5), "the config valid again", || {
        (skein.status()["control_plane"]["valid"] == true).then_some(())
    });

    // The control plane dies: proxies keep serving; the runtime restarts it and they reconnect.
    let istiod = skein.pods("istiod")[0].clone();
    let pid = istiod["pid"].as_u64().expect("istiod pid");
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .expect("kill")
            .success()
    );
    let (ok0, _) = load.counts();
    std::thread::sleep(Duration::from_millis(1500));
    let (ok1, _) = load.counts();
    assert!(ok1 > ok0 + 10, "requests kept flowing: {ok0} -> {ok1}");
    eventually(
        Duration::from_secs(30),
        "istiod restarted and every proxy reconnected",
        || {
            let s = skein.status();
            let pods = s["pods"].as_array()?.clone();
            let restarted = pods.iter().any(|p| {
                p["workload"] == "istiod" && p["restarts"].as_u64() >= Some(1) && p["ready"] == true
            });
            let connected = pods
                .iter()
                .filter(|p| p["proxy"].is_object())
                .all(|p| p["proxy"]["connected"] == true);
            (restarted && connected).then_some(())
        },
    );
    load.assert_no_failures("across the bad edit and the control plane's death");

    // `skein apply -f`: an applied VirtualService replaces the directory's web-vsvc (the
    // Rollout still manages its `primary` route): testers now reach stable.
    let files = tempfile::tempdir().expect("tempdir");
    let vs = files.path().join("web-vsvc.yaml");
    std::fs::write(
        &vs,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web-vsvc\n  namespace: blog-system\nspec:\n  hosts: [web-service]\n  http:\n  - name: canary-testing\n    match:\n    - headers:\n        x-canary-test: {exact: \"true\"}\n    route:\n    - destination: {host: web-service, subset: stable}\n  - name: primary\n    route:\n    - destination: {host: web-service, subset: stable}\n      weight: 100\n    - destination: {host: web-service, subset: canary}\n      weight: 0\n",
    )
    .expect("write vs");
    let out = skein.run(&["apply", "-f", vs.to_str().expect("path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("virtualservice/web-vsvc configured"));
    eventually(
        Duration::from_secs(5),
        "testers at stable after apply",
        || {
            (0..10)
                .all(|_| web_version(&base, true) == stable)
                .then_some(())
        },
    );
    let (share, _) = canary_share(&load, 1);
    assert!(
        (0.2..=0.8).contains(&share),
        "the Rollout's 50 % stays: {share}"
    );
    // An invalid file is refused with file:line, and nothing changes.
    let bad = files.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web-vsvc\n  namespace: blog-system\nspec:\n  hosts: [web-service]\n  http:\n  - route:\n    - destination:\n        host: web-service\n      wieght: 10\n",
    )
    .expect("write bad");
    let out = skein.run(&["apply", "-f", bad.to_str().expect("path")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("bad.yaml:12") && err.contains("wieght"),
        "{err}"
    );
    assert_eq!(web_version(&base, true), stable);

    // An abort takes the canary's weight back to 0: stable only.
    rollouts(&skein, &["abort"]);
    eventually(Duration::from_secs(10), "back to stable only", || {
        (0..10)
            .all(|_| web_version(&base, false) == stable)
            .then_some(())
    });
    load.assert_no_failures("across the apply and the abort");
    let total = load.stop();
    eprintln!("{total} requests, none failed");
    assert!(total > 200, "the load ran: {total}");
}

#[test]
fn was_reaches_mariadb_through_its_sidecar() {
    let skein = Skein::new();
    skein.up(EXAMPLE, &["--database", "mysql"]);
    let base = skein.http_base();
    let r = get(&format!("{base}/api/posts"));
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.contains("First Post"), "{r:?}");
    let created = send_json(
        "POST",
        &format!("{base}/api/posts"),
        r#"{"title":"Via the sidecar","content":"x","author":"e2e"}"#,
    );
    assert_eq!(created.status, 201, "{created:?}");

    // Each was pod's sidecar carried its MySQL connections (opaque TCP, tls DISABLE).
    for was in skein.pods("was") {
        let admin = was["proxy"]["admin"].as_str().expect("admin").to_string();
        let addr = admin.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(addr).expect("admin");
        use std::io::{Read, Write};
        write!(s, "GET /stats/prometheus HTTP/1.0\r\n\r\n").expect("write");
        let mut text = String::new();
        s.read_to_string(&mut text).expect("read");
        let opened: u64 = text
            .lines()
            .filter(|l| {
                l.starts_with("istio_tcp_connections_opened_total")
                    && l.contains("mysql.blog-system.svc.cluster.local")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!(
            opened >= 1,
            "no MySQL connection through {}:\n{text}",
            was["name"]
        );
    }
    let mysql = skein.pods("mysql");
    assert_eq!(mysql.len(), 1);
    assert!(mysql[0]["proxy"].is_null(), "mysql stays outside the mesh");
}
