//! End to end: an Argo Rollout run by skein's controller under continuous load through the
//! ingress. A template edit starts a new revision at weight 0 with the VirtualService's
//! mirror on a canary pod, then 10 % -> 50 % -> 100 % (analysis passing, indefinite pauses
//! promoted with `skein rollouts promote`), without one failed request and with the canary's
//! share near its weight at each step. Then a bad version is aborted (`abort`: Degraded,
//! traffic back on stable, canary scaled down) and `retry` starts it again. And a canary
//! that fails half its requests is aborted by its background analysis (the canary's success
//! rate from the mesh's Prometheus) within two intervals.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::argo::{self, canary_pods};
use support::load::{BETWEEN, Load, Sample, share};
use support::*;

const FIXTURE: &str = "crates/skein/tests/fixtures/rollout-echo";
const ANALYSIS_FIXTURE: &str = "crates/skein/tests/fixtures/rollout-echo-analysis";

/// The tests run one at a time: two clusters under load on a 2-core machine would measure
/// the machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn rollout(skein: &Skein) -> serde_json::Value {
    argo::rollout(skein, "echo", "echo")
}

fn wait_step(skein: &Skein, step: u64, phase: &str) -> serde_json::Value {
    argo::wait_step(skein, "echo", "echo", step, phase)
}

/// The version echo answered with (its JSON body's `version`).
fn version(r: &Reply) -> String {
    serde_json::from_str::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|j| j["version"].as_str().map(str::to_string))
        .unwrap_or_default()
}

fn edit(dir: &std::path::Path, from: &str, to: &str) {
    let file = dir.join("echo.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(from), "the fixture has {from}");
    std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
}

#[test]
fn a_canary_goes_through_the_seeds_steps_without_a_failed_request_and_an_abort_takes_it_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let manifests = manifests_copy(FIXTURE);
    let dir = manifests.path().to_str().unwrap().to_string();
    let skein = Skein::new();
    skein.up(&dir, &["--scrape-interval", "1"]);
    argo::wait_healthy(
        &skein,
        "echo",
        "echo",
        "60s",
        "the first revision becomes Healthy",
    );
    let r = rollout(&skein);
    assert_eq!(r["revisions"][0]["pods"].as_array().unwrap().len(), 2);
    let stable_hash = r["stableRS"].as_str().unwrap().to_string();
    for p in skein.pods("echo") {
        assert_eq!(
            p["labels"]["rollouts-pod-template-hash"],
            stable_hash.as_str()
        );
        assert!(
            p["name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("echo-{stable_hash}-")),
            "{p}"
        );
    }
    // The subsets the Rollout manages select its pods by their hash; the user's file is
    // left as it was.
    let managed =
        std::fs::read_to_string(skein.state.path().join("managed/rollout.echo.echo.yaml"))
            .expect("the managed overlay");
    assert!(managed.contains(&stable_hash), "{managed}");
    assert_eq!(
        std::fs::read_to_string(manifests.path().join("echo.yaml")).unwrap(),
        std::fs::read_to_string(repo_root().join(FIXTURE).join("echo.yaml")).unwrap(),
        "the user's file is never written"
    );

    let url = format!("{}/rollout", skein.http_base());
    let load = Load::start(url, 3, Duration::from_millis(15), version);
    load.measure(BETWEEN + 1, 50);

    // A new version: the VERSION env var changes the template.
    edit(manifests.path(), "value: v1", "value: v2");
    let r = wait_step(&skein, 1, "Paused");
    assert_eq!(r["setWeight"], 0);
    let canary = canary_pods(&r);
    assert_eq!(
        canary.len(),
        1,
        "setCanaryScale replicas 1 at weight 0: {r}"
    );
    assert!(canary[0].starts_with(&format!("echo-{}-", r["currentPodHash"].as_str().unwrap())));
    std::thread::sleep(Duration::from_millis(500));
    load.measure(0, 60);
    // Every request is copied to the canary: its sidecar logs the mirrored ones.
    let mirrored = eventually(
        Duration::from_secs(10),
        "mirrored requests on the canary",
        || {
            let log = skein.proxy_log(&canary[0]);
            let n = log.lines().filter(|l| l.contains("/rollout")).count();
            (n > 0).then_some(n)
        },
    );
    assert!(mirrored > 0);

    // 10 %: analysis passes, then the indefinite pause waits for promote.
    let r = wait_step(&skein, 5, "Paused");
    assert_eq!(
        (r["setWeight"].as_i64(), r["actualWeight"].as_i64()),
        (Some(10), Some(10))
    );
    let runs = r["analysisRuns"].as_array().unwrap();
    assert!(
        runs.iter().any(|a| a["phase"] == "Successful"),
        "the analysis step passed: {r}"
    );
    assert_eq!(canary_pods(&r).len(), 1, "ceil(2 * 10%) = 1 pod");
    std::thread::sleep(Duration::from_millis(1500));
    load.measure(10, 400);
    let out = skein.run(&["rollouts", "promote", "echo", "-n", "echo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let r = wait_step(&skein, 7, "Paused");
    assert_eq!(r["actualWeight"], 50);
    assert_eq!(canary_pods(&r).len(), 1, "ceil(2 * 50%) = 1 pod");
    std::thread::sleep(Duration::from_millis(1500));
    load.measure(50, 300);
    let tree = String::from_utf8_lossy(
        &skein
            .run(&["rollouts", "get", "rollout", "echo", "-n", "echo"])
            .stdout,
    )
    .into_owned();
    for want in [
        "Status:          ॥ Paused",
        "Step:          7/10",
        "ActualWeight:  50",
        "skein-echo:0.1.0 (canary, stable)",
        "# revision:2",
        "ReplicaSet",
        "AnalysisRun",
    ] {
        assert!(tree.contains(want), "{want} in\n{tree}");
    }
    // kubectl's columns for the Argo CRD: 2 desired, 3 pods, 1 of the new template.
    let table = String::from_utf8_lossy(&skein.run(&["get", "ro", "echo", "-n", "echo"]).stdout)
        .into_owned();
    let cells: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(
        cells.get(..5),
        Some(&["echo", "2", "3", "1", "3"][..]),
        "{table}"
    );
    let out = skein.run(&["rollouts", "promote", "echo", "-n", "echo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    argo::wait_healthy(&skein, "echo", "echo", "90s", "fully promoted");
    let r = rollout(&skein);
    let new_hash = r["currentPodHash"].as_str().unwrap().to_string();
    assert_eq!(r["stableRS"], new_hash.as_str());
    assert_ne!(new_hash, stable_hash);
    std::thread::sleep(Duration::from_millis(1500));
    load.measure(100, 150);
    // The old revision goes after its scale-down delay, under load.
    eventually(Duration::from_secs(30), "the old pods gone", || {
        let pods = skein.pods("echo");
        (pods.len() == 2
            && pods
                .iter()
                .all(|p| p["labels"]["rollouts-pod-template-hash"] == new_hash.as_str()))
        .then_some(())
    });
    load.measure(BETWEEN + 2, 100);
    let samples = load.finish();

    let failed: Vec<&Sample> = samples.iter().filter(|s| s.1 != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        samples.len(),
        &failed[..failed.len().min(10)]
    );
    let mut shares = BTreeMap::new();
    for (w, tolerance) in [(0u32, 0.0), (10, 5.0), (50, 8.0), (100, 0.0)] {
        let (s, n) = share(&samples, w, "v2");
        shares.insert(w, (s, n));
        assert!(
            (s - f64::from(w)).abs() <= tolerance,
            "at weight {w} the canary answered {s:.1} % of {n} requests: {shares:?}"
        );
    }
    eprintln!(
        "shares (weight -> canary %, requests): {shares:?}; {} requests, none failed",
        samples.len()
    );

    // A bad version (every request 500): aborted, it gets no traffic and goes away.
    edit(
        manifests.path(),
        "value: v2",
        "value: v3\n        - name: FAIL_STATUS\n          value: \"500\"",
    );
    let r = wait_step(&skein, 1, "Paused");
    assert_eq!(canary_pods(&r).len(), 1);
    let out = skein.run(&["rollouts", "abort", "echo", "-n", "echo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = eventually(Duration::from_secs(10), "Degraded", || {
        let r = rollout(&skein);
        (r["phase"] == "Degraded").then_some(r)
    });
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .starts_with("RolloutAborted: Rollout aborted update to revision 3"),
        "{r}"
    );
    assert_eq!(r["actualWeight"], 0);
    let out = skein.run(&[
        "rollouts",
        "status",
        "echo",
        "-n",
        "echo",
        "--timeout",
        "5s",
    ]);
    assert_eq!(out.status.code(), Some(1), "status exits 1 on Degraded");
    eventually(
        Duration::from_secs(20),
        "the aborted canary scaled down",
        || canary_pods(&rollout(&skein)).is_empty().then_some(()),
    );
    for _ in 0..20 {
        let r = get(&format!("{}/rollout", skein.http_base()));
        assert_eq!(r.status, 200, "stable serves after the abort");
        assert!(r.body.contains("\"v2\""), "{}", r.body);
    }
    let out = skein.run(&["rollouts", "promote", "echo", "-n", "echo"]);
    assert!(!out.status.success(), "an aborted rollout is not promoted");
    let out = skein.run(&["rollouts", "retry", "rollout", "echo", "-n", "echo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = wait_step(&skein, 1, "Paused");
    assert_eq!(canary_pods(&r).len(), 1, "retry starts the steps again");

    // undo: back to the previous revision's template, handed over as `skein apply` does;
    // the stable template again, so the canary goes without steps.
    let out = skein.run(&["rollouts", "undo", "echo", "-n", "echo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    argo::wait_healthy(&skein, "echo", "echo", "30s", "rollout echo/echo Healthy");
    eventually(
        Duration::from_secs(20),
        "the undone canary's pods gone",
        || {
            let r = rollout(&skein);
            (canary_pods(&r).is_empty() && r["currentPodHash"] == new_hash.as_str()).then_some(())
        },
    );
    // set image: a new revision; pause holds it, promote --full finishes it.
    let out = skein.run(&[
        "rollouts",
        "set",
        "image",
        "echo",
        "echo=skein-echo:0.2.0",
        "-n",
        "echo",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = wait_step(&skein, 1, "Paused");
    assert_eq!(r["revisions"][0]["revision"], 4);
    assert_eq!(r["revisions"][0]["images"][0], "skein-echo:0.2.0");
    let out = skein.run(&["rollouts", "pause", "echo", "-n", "echo"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(Duration::from_secs(10), "manually paused", || {
        (rollout(&skein)["message"] == "manually paused").then_some(())
    });
    let out = skein.run(&["rollouts", "promote", "echo", "-n", "echo", "--full"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    argo::wait_healthy(&skein, "echo", "echo", "60s", "rollout echo/echo Healthy");
    let r = rollout(&skein);
    assert_eq!(r["revisions"][0]["revision"], 4);
    assert_eq!(r["revisions"][0]["role"], "stable");
    let summary = String::from_utf8_lossy(&skein.run(&["status"]).stdout).into_owned();
    assert!(
        summary.contains("rollout echo/echo: ✔ Healthy"),
        "{summary}"
    );
}

#[test]
fn a_canary_that_fails_is_aborted_by_its_analysis_and_retry_starts_it_again() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let manifests = manifests_copy(ANALYSIS_FIXTURE);
    let dir = manifests.path().to_str().unwrap().to_string();
    let skein = Skein::new();
    skein.up(&dir, &["--scrape-interval", "1"]);
    argo::wait_healthy(&skein, "echo", "echo", "60s", "rollout echo/echo Healthy");
    let url = format!("{}/rollout", skein.http_base());
    let load = Load::start(url, 3, Duration::from_millis(15), version);
    load.measure(BETWEEN + 1, 50);

    // Revision 2 answers 500 to half its requests.
    edit(
        manifests.path(),
        "value: v1",
        "value: v2\n        - name: FAIL_STATUS\n          value: \"500\"\n        - name: FAIL_PCT\n          value: \"50\"",
    );
    let r = wait_step(&skein, 1, "Paused");
    assert_eq!(r["actualWeight"], 20);
    let at_weight = Instant::now();
    // What clients see while the canary has its 20 %: until the abort.
    load.tag(20);
    let r = eventually(
        Duration::from_secs(40),
        "the analysis aborting the update",
        || {
            let r = rollout(&skein);
            (r["phase"] == "Degraded").then_some(r)
        },
    );
    load.tag(BETWEEN);
    let took = at_weight.elapsed();
    // initialDelay 3 s, then a measurement every 2 s: failureLimit 1 fails at the second.
    assert!(
        took <= Duration::from_secs(3 + 2 * 2 + 4),
        "aborted {took:?} after the canary got its weight"
    );
    let message = r["message"].as_str().unwrap();
    assert!(
        message.starts_with("RolloutAborted: Rollout aborted update to revision 2: ")
            && message.contains("success-rate")
            && message.contains("0."),
        "the metric and its value in the message: {message}"
    );
    assert_eq!(r["actualWeight"], 0);
    let run = &r["analysisRuns"][0];
    assert_eq!(run["phase"], "Failed", "{r}");
    let tree = String::from_utf8_lossy(
        &skein
            .run(&["rollouts", "get", "rollout", "echo", "-n", "echo"])
            .stdout,
    )
    .into_owned();
    assert!(
        tree.contains("✖ Degraded") && tree.contains("✖ Failed"),
        "{tree}"
    );

    std::thread::sleep(Duration::from_millis(1500));
    load.measure(0, 200);
    let samples = load.finish();
    let window: Vec<&Sample> = samples.iter().filter(|s| s.0 == 20).collect();
    let failed = window.iter().filter(|s| s.1 != 200).count();
    let share = 100.0 * failed as f64 / window.len().max(1) as f64;
    eprintln!(
        "while the canary had 20 %: {failed} of {} requests failed ({share:.1} %), aborted after {took:?}",
        window.len()
    );
    // 20 % of the requests to a version failing half of them: about 10 %.
    assert!(failed > 0, "the bad canary got its share");
    assert!(
        share <= 20.0,
        "failures only in proportion to the weight: {share:.1} %"
    );
    let after: Vec<&Sample> = samples.iter().filter(|s| s.0 == 0).collect();
    assert!(
        after.iter().all(|s| s.1 == 200 && s.2 == "v1"),
        "after the abort stable serves everything: {:?}",
        after
            .iter()
            .filter(|s| s.1 != 200)
            .take(5)
            .collect::<Vec<_>>()
    );

    let r = argo::retry(&skein, "echo", "echo");
    assert_eq!(r["actualWeight"], 20);

    // Deleting the Rollout from the manifests takes its pods and managed objects away.
    let file = manifests.path().join("echo.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let kept: Vec<&str> = text
        .split("\n---\n")
        .filter(|d| !d.contains("kind: Rollout\n"))
        .collect();
    std::fs::write(&file, kept.join("\n---\n")).unwrap();
    eventually(Duration::from_secs(30), "the Rollout's pods gone", || {
        skein.pods("echo").is_empty().then_some(())
    });
    assert!(
        !skein
            .state
            .path()
            .join("managed/rollout.echo.echo.yaml")
            .exists()
    );
    let out = skein.run(&["rollouts", "get", "rollout", "echo", "-n", "echo"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rollouts.argoproj.io \"echo\" not found"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
