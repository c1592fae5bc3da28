//! The seed's canary procedure on the example itself (`examples/blog-system`), under
//! continuous load through the ingress: a new web version starts at weight 0 with every
//! request mirrored to it, then 10 % -> 50 % -> 100 % with web's AnalysisTemplate (success
//! rate and p99 from the mesh's Prometheus) passing at each step, no request failing and the
//! canary's share near its weight. Then a bad version (it calls was at an address nothing
//! listens on, so its /api answers are 5xx at once) is aborted by the analysis within two intervals,
//! clients seeing failures only in proportion to its weight; `retry` starts it again.
//!
//! The copy's analysis measures every 5 s instead of the example's 30 s, and Prometheus
//! scrapes every second, so that the test takes two minutes rather than ten.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use support::argo::{self, canary_pods};
use support::load::{BETWEEN, Load, Sample, share};
use support::*;

const EXAMPLE: &str = "examples/blog-system";
/// The copy's analysis interval.
const INTERVAL: Duration = Duration::from_secs(5);
/// Load windows: while the bad version has its weight, and after its abort.
const BAD: u32 = 10_000;
const AFTER_ABORT: u32 = 20_000;

const NS: &str = "blog-system";

fn rollout(skein: &Skein) -> serde_json::Value {
    argo::rollout(skein, NS, "web")
}

fn wait_step(skein: &Skein, step: u64, phase: &str) -> serde_json::Value {
    argo::wait_step(skein, NS, "web", step, phase)
}

fn rollouts(skein: &Skein, args: &[&str]) {
    argo::rollouts(skein, NS, "web", args)
}

/// Replaces `from` by `to` once in the copy's `file`.
fn edit(dir: &std::path::Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

/// The background analysis run of the update in progress (the newest).
fn current_run(r: &serde_json::Value) -> serde_json::Value {
    r["analysisRuns"]
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or_default()
}

/// Each metric's measurements as (phase, value) pairs.
fn measurements(run: &serde_json::Value) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for m in run["status"]["metricResults"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let list = m["measurements"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| {
                (
                    x["phase"].as_str().unwrap_or("").to_string(),
                    x["value"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        out.insert(m["name"].as_str().unwrap_or("").to_string(), list);
    }
    out
}

/// A measured value (`[0.99]` or `0.99`) as a number.
fn number(value: &str) -> Option<f64> {
    value
        .trim_matches(|c| c == '[' || c == ']')
        .trim()
        .parse()
        .ok()
}

/// Waits until both of web's metrics have been measured `more` times past `before`, every
/// measurement of the run successful.
fn analysis_passes(skein: &Skein, before: usize, more: usize) -> usize {
    eventually(
        INTERVAL * (more as u32 + 3),
        "the analysis measuring the step",
        || {
            let r = rollout(skein);
            let run = current_run(&r);
            let ms = measurements(&run);
            for (metric, list) in &ms {
                let failed: Vec<_> = list.iter().filter(|(p, _)| p != "Successful").collect();
                assert!(
                    failed.is_empty(),
                    "{metric}: a measurement did not pass: {failed:?}\n{run}"
                );
            }
            assert_ne!(r["phase"], "Degraded", "{r}");
            let n = ms.values().map(Vec::len).min().unwrap_or(0);
            (ms.len() == 2 && n >= before + more).then_some(n)
        },
    )
}

fn version(r: &Reply) -> String {
    r.header("x-web-version").unwrap_or("").to_string()
}

#[test]
fn the_seeds_canary_runs_on_the_example_and_a_bad_version_is_aborted_by_its_analysis() {
    let manifests = manifests_copy(EXAMPLE);
    let dir = manifests.path();
    for _ in 0..2 {
        edit(dir, "35-analysis.yaml", "interval: 30s", "interval: 5s");
    }
    let skein = Skein::new();
    skein.up(dir.to_str().unwrap(), &["--scrape-interval", "1"]);
    argo::wait_healthy(
        &skein,
        "blog-system",
        "web",
        "60s",
        "web's first revision becomes Healthy",
    );
    let stable = rollout(&skein)["stableRS"].as_str().unwrap().to_string();
    let base = skein.http_base();
    let load = Load::start(
        format!("{base}/api/posts"),
        3,
        Duration::from_millis(15),
        version,
    );
    load.measure(BETWEEN + 1, 50);

    // A new version (an env var changes the template): one canary pod at weight 0, every
    // request of web-vsvc's primary route mirrored to it.
    let release = "        - name: LISTEN_ADDR\n";
    edit(
        dir,
        "30-web.yaml",
        release,
        &format!("        - name: RELEASE\n          value: \"2\"\n{release}"),
    );
    let r = wait_step(&skein, 1, "Paused");
    assert_eq!(r["setWeight"], 0);
    let canary = r["currentPodHash"].as_str().unwrap().to_string();
    assert_ne!(canary, stable);
    let pods = canary_pods(&r);
    assert_eq!(pods.len(), 1, "setCanaryScale replicas 1: {r}");
    std::thread::sleep(Duration::from_millis(1000));
    load.measure(0, 150);
    let mirrored = eventually(
        Duration::from_secs(10),
        "mirrored requests on the canary",
        || {
            let log = skein.proxy_log(&pods[0]);
            let n = log.lines().filter(|l| l.contains("/api/posts")).count();
            (n >= 20).then_some(n)
        },
    );
    eprintln!("weight 0: {mirrored} mirrored requests in the canary's access log");
    assert!(
        r["analysisRuns"].as_array().is_none_or(Vec::is_empty),
        "no analysis before its startingStep: {r}"
    );

    // 10 %: the background analysis starts and passes.
    rollouts(&skein, &["promote"]);
    let r = wait_step(&skein, 4, "Paused");
    assert_eq!(
        (r["setWeight"].as_i64(), r["actualWeight"].as_i64()),
        (Some(10), Some(10))
    );
    eventually(
        Duration::from_secs(5),
        "the background analysis running",
        || (current_run(&rollout(&skein))["phase"] == "Running").then_some(()),
    );
    std::thread::sleep(Duration::from_millis(1500));
    load.measure(10, 500);
    let n = analysis_passes(&skein, 0, 2);
    // 50 %.
    rollouts(&skein, &["promote"]);
    let r = wait_step(&skein, 6, "Paused");
    assert_eq!(r["actualWeight"], 50);
    std::thread::sleep(Duration::from_millis(1500));
    load.measure(50, 400);
    let n = analysis_passes(&skein, n, 1);
    // 100 %, then the canary is the new stable and the analysis ends Successful.
    rollouts(&skein, &["promote"]);
    argo::wait_healthy(&skein, "blog-system", "web", "90s", "fully promoted");
    let r = rollout(&skein);
    assert_eq!(r["stableRS"], canary.as_str(), "{r}");
    // The background analysis is terminated with the update: it ends Successful.
    let run = eventually(Duration::from_secs(5), "the analysis run ended", || {
        let run = current_run(&rollout(&skein));
        (run["phase"] != "Running").then_some(run)
    });
    assert_eq!(run["phase"], "Successful", "{run}");
    let ms = measurements(&run);
    let rates: Vec<f64> = ms["success-rate"]
        .iter()
        .filter_map(|(_, v)| number(v))
        .filter(|v| !v.is_nan())
        .collect();
    assert!(
        rates.len() >= n.min(3) && rates.iter().all(|v| *v >= 0.95),
        "the success rate was measured from real traffic: {ms:?}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    load.measure(100, 200);
    let failed = load.failures();
    assert!(
        failed.is_empty(),
        "{} requests failed during the update: {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );

    // A bad version: it calls was at an address nothing listens on, so its /api answers 5xx
    // at once. (A name that does not resolve fails slowly, as DNS gives up: the load's
    // clients would wait on it and leave the analysis windows without samples.)
    edit(dir, "30-web.yaml", "value: \"2\"", "value: \"3\"");
    edit(
        dir,
        "30-web.yaml",
        "value: http://was-service.blog-system.svc.cluster.local:8080",
        "value: http://127.0.0.1:1",
    );
    edit(
        dir,
        "30-web.yaml",
        "value: was-service\n",
        "value: 127.0.0.1:1\n",
    );
    let r = wait_step(&skein, 1, "Paused");
    assert_ne!(r["currentPodHash"], canary.as_str());
    rollouts(&skein, &["promote"]);
    wait_step(&skein, 4, "Paused");
    let at_weight = Instant::now();
    // What clients see while the bad canary has its 10 %: until the abort.
    load.tag(BAD);
    // A window without a sample of web's requests measures NaN, a success by the template's
    // condition (an idle blog does not abort an update): allow a few intervals in all, and
    // at most one interval between the first failed measurement and the abort.
    let deadline = Instant::now() + INTERVAL * 6;
    let mut first_failure: Option<Instant> = None;
    let r = loop {
        let r = rollout(&skein);
        if r["phase"] == "Degraded" {
            break r;
        }
        let failed = measurements(&current_run(&r))
            .get("success-rate")
            .is_some_and(|l| l.iter().any(|(p, _)| p == "Failed"));
        if failed && first_failure.is_none() {
            first_failure = Some(Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "the analysis did not abort the bad version ({} failed requests at 10 %, {} answered by the canary): {}",
            load.failures().len(),
            load.answered_by(BAD, r["currentPodHash"].as_str().unwrap_or("")),
            current_run(&r)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    load.tag(BETWEEN);
    let took = at_weight.elapsed();
    let after_failure = first_failure.map(|t| t.elapsed()).unwrap_or_default();
    // failureLimit 1: the second failed measurement aborts, one interval after the first.
    assert!(
        after_failure <= INTERVAL + Duration::from_secs(3),
        "aborted {after_failure:?} after the first failed measurement ({took:?} after the weight)"
    );
    let message = r["message"].as_str().unwrap();
    assert!(
        message.starts_with("RolloutAborted: Rollout aborted update to revision 3: ")
            && message.contains("success-rate"),
        "the metric in the message: {message}"
    );
    let value = message
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter_map(|s| s.parse::<f64>().ok())
        .find(|v| *v < 0.95);
    assert!(
        value.is_some(),
        "the failing value in the message: {message}"
    );
    assert_eq!(r["actualWeight"], 0);
    assert_eq!(current_run(&r)["phase"], "Failed", "{r}");
    std::thread::sleep(Duration::from_millis(1500));
    load.measure(AFTER_ABORT, 200);
    let samples = load.finish();

    let window: Vec<&Sample> = samples.iter().filter(|s| s.0 == BAD).collect();
    let bad = window.iter().filter(|s| s.1 != 200).count();
    let bad_share = 100.0 * bad as f64 / window.len().max(1) as f64;
    assert!(bad > 0, "the bad canary got its share");
    assert!(
        bad_share <= 20.0,
        "failures only in proportion to the weight: {bad_share:.1} % of {}",
        window.len()
    );
    let after: Vec<&Sample> = samples.iter().filter(|s| s.0 == AFTER_ABORT).collect();
    assert!(
        after.len() >= 200 && after.iter().all(|s| s.1 == 200 && s.2 == canary),
        "after the abort revision 2 serves everything: {:?}",
        after
            .iter()
            .filter(|s| s.1 != 200 || s.2 != canary)
            .take(5)
            .collect::<Vec<_>>()
    );
    let mut shares = BTreeMap::new();
    for (w, version, tolerance) in [
        (0u32, stable.as_str(), 0.0),
        (10, canary.as_str(), 5.0),
        (50, canary.as_str(), 8.0),
        (100, canary.as_str(), 0.0),
    ] {
        let (s, n) = share(&samples, w, version);
        let want = if w == 0 { 100.0 } else { f64::from(w) };
        shares.insert(w, (s, n));
        assert!(
            (s - want).abs() <= tolerance,
            "at weight {w} {version} answered {s:.1} % of {n} requests: {shares:?}"
        );
    }
    eprintln!(
        "shares (weight -> canary %, requests): {shares:?}; bad canary at 10 %: {bad} of {} failed ({bad_share:.1} %), aborted after {took:?} ({after_failure:?} after the first failed measurement)",
        window.len()
    );

    // retry: the bad version's steps start again.
    let r = argo::retry(&skein, "blog-system", "web");
    assert_eq!(r["actualWeight"], 0);
}
