//! The dashboard in a real browser: `skein up examples/blog-system` with traffic through the
//! ingress, then `ui/tests/browser.mjs` drives Debian's headless Chromium with playwright-core
//! over the page `skein status` points at. It picks blog-system, finds the gateway, web's one
//! revision (a Rollout with no update running) and was in the graph, the web -> was edge with
//! a padlock and a rate that grows after more traffic, was's pods and was-authz, a trace's
//! waterfall with every hop, and
//! a policy `skein apply` refused on the Istio config page, then web's Rollout panel through
//! an update (`skein rollouts set image`, `promote`): Healthy with 8 steps, Paused at step 1
//! at weight 0, Paused at step 4 at weight 10 with the analysis run's metrics. Every check is on the DOM; any
//! console error fails it. Screenshots go to target/dashboard-screenshots/.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A light, steady load through the ingress until dropped (the graph's "traffic running").
struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Load {
    fn start(url: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ok = 0;
            while !flag.load(Ordering::Relaxed) {
                if get(&url).status == 200 {
                    ok += 1;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            ok
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What the browser test needs, or a message saying which command installs it.
fn prerequisites(root: &Path) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: install Debian's Chromium with `apt-get install chromium` (./scripts/test does)"
    );
    assert!(
        root.join("ui/node_modules/playwright-core/package.json")
            .exists(),
        "playwright-core is missing from ui/node_modules: run ./scripts/build-ui (npm ci from ui/package-lock.json)"
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: install it with `apt-get install nodejs npm` (./scripts/test does)"
    );
}

/// The dashboard's URL from `skein status -o json`.
fn dashboard_url(skein: &Skein) -> String {
    let status = skein.status();
    status["dashboard"]["url"]
        .as_str()
        .unwrap_or_else(|| panic!("no dashboard.url in `skein status -o json`: {status}"))
        .trim_end_matches('/')
        .to_string()
}

#[test]
fn the_dashboard_shows_the_blog_in_a_browser() {
    let started = Instant::now();
    let root = repo_root();
    prerequisites(&root);

    let skein = Skein::new();
    skein.up("examples/blog-system", &["--scrape-interval", "2"]);
    let url = dashboard_url(&skein);
    eventually(Duration::from_secs(30), "the dashboard's /healthz", || {
        (get(&format!("{url}/healthz")).status == 200).then_some(())
    });
    let page = get(&format!("{url}/"));
    assert_eq!(page.status, 200, "the page: {page:?}");
    assert!(
        page.body.contains("<script type=\"module\"") && page.body.contains("/assets/"),
        "the dashboard serves a placeholder, not the page: build it with ./scripts/build-ui, then build skein again (the server embeds ui/dist): {}",
        page.body
    );

    let ingress = skein.http_base();
    for _ in 0..40 {
        let r = get(&format!("{ingress}/api/posts"));
        assert_eq!(r.status, 200, "the blog answers through the ingress: {r:?}");
    }
    let _load = Load::start(format!("{ingress}/api/posts"));

    let shots = root.join("target/dashboard-screenshots");
    // Screenshots of an earlier run must not pass for this one's.
    let _ = std::fs::remove_dir_all(&shots);
    let mut child = Command::new("node")
        .arg(root.join("ui/tests/browser.mjs"))
        .args(["--url", &url, "--ingress", &ingress])
        .arg("--skein")
        .arg(skein_bin())
        .arg("--state-dir")
        .arg(skein.state.path())
        .arg("--out")
        .arg(&shots)
        .current_dir(&root)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node ui/tests/browser.mjs");
    let deadline = Instant::now() + Duration::from_secs(300);
    while child.try_wait().expect("wait for node").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = child.wait_with_output().expect("node's output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}\nsupervisor log:\n{}",
        out.status,
        std::fs::read_to_string(skein.state.path().join("skein.log"))
            .unwrap_or_default()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
    for name in [
        "overview",
        "graph-versioned-app",
        "graph-app-edge-panel",
        "workload-was",
        "traces",
        "trace-waterfall",
        "logs-was",
        "istio-config",
        "rollout-healthy",
        "rollout-paused-step1",
        "rollout-step4-analysis",
    ] {
        let f = shots.join(format!("{name}.png"));
        assert!(
            std::fs::metadata(&f).is_ok_and(|m| m.len() > 1000),
            "screenshot {} was saved",
            f.display()
        );
    }
    println!("the dashboard's browser test took {:?}", started.elapsed());
}
