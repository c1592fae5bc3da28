//! The engine's task on a paused clock: each test loads real templates, prepares them as the
//! Rollout controller would, and runs them against a scripted provider whose answers go
//! through the real conditions, counters and assessment.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::*;

/// Answers each metric's measurements from a script (the last answer repeats), and records
/// when each was taken.
struct Script {
    start: Instant,
    answers: Mutex<Vec<(String, VecDeque<Outcome>)>>,
    taken: Mutex<Vec<(String, Duration)>>,
}

impl Script {
    fn new(answers: &[(&str, Vec<Outcome>)]) -> Arc<Script> {
        Arc::new(Script {
            start: Instant::now(),
            answers: Mutex::new(
                answers
                    .iter()
                    .map(|(n, a)| (n.to_string(), a.iter().cloned().collect()))
                    .collect(),
            ),
            taken: Mutex::new(Vec::new()),
        })
    }

    fn times(&self, metric: &str) -> Vec<u64> {
        self.taken
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == metric)
            .map(|(_, t)| t.as_secs())
            .collect()
    }
}

impl Measure for Script {
    fn measure<'a>(
        &'a self,
        metric: &'a ResolvedMetric,
    ) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(async move {
            self.taken
                .lock()
                .unwrap()
                .push((metric.name.clone(), self.start.elapsed()));
            let mut answers = self.answers.lock().unwrap();
            let (_, queue) = answers
                .iter_mut()
                .find(|(n, _)| *n == metric.name)
                .expect("a scripted metric");
            if queue.len() > 1 {
                queue.pop_front().unwrap()
            } else {
                queue.front().cloned().unwrap()
            }
        })
    }
}

const TEMPLATE: &str = "apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate, namespace: blog-system}
spec:
  args:
  - name: service-name
  - name: threshold
    value: '0.95'
  metrics:
  - name: success-rate
    METRIC
    provider:
      prometheus:
        address: http://prometheus.istio-system.svc:9090
        query: |
          sum(irate(istio_requests_total{destination_service=~\"{{args.service-name}}\",response_code!~\"5.*\"}[1m])) /
          sum(irate(istio_requests_total{destination_service=~\"{{args.service-name}}\"}[1m]))
";

fn prepared(metric: &str) -> PreparedAnalysis {
    let text = TEMPLATE.replace("METRIC", &metric.replace('\n', "\n    "));
    let m = skein_api::load_str("t.yaml", &text).unwrap();
    let problems: Vec<_> = skein_api::validate(&m)
        .into_iter()
        .filter(|d| d.is_error())
        .collect();
    assert!(problems.is_empty(), "{problems:?}");
    prepare(AnalysisRequest {
        manifests: &m,
        namespace: "blog-system",
        templates: &[("success-rate".to_string(), false)],
        args: &[(
            "service-name".to_string(),
            "web.blog-system.svc.cluster.local".to_string(),
        )],
        run_name: "web-6d4f9c-2-1".into(),
    })
    .unwrap()
}

fn run(metric: &str, answers: Vec<Outcome>) -> (AnalysisHandle, Arc<Script>) {
    let script = Script::new(&[("success-rate", answers)]);
    let handle = start_with(prepared(metric), script.clone(), None);
    (handle, script)
}

fn v(x: &[f64]) -> Outcome {
    Outcome::Values(x.to_vec())
}

#[tokio::test(start_paused = true)]
async fn a_healthy_canary_succeeds_after_count_measurements() {
    let started = Instant::now();
    let (h, script) = run(
        "interval: 1m\ncount: 3\nsuccessCondition: result[0] >= {{args.threshold}}",
        vec![v(&[0.99])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
    assert_eq!(script.times("success-rate"), [0, 60, 120]);
    assert_eq!(started.elapsed().as_secs(), 120);
    assert_eq!(h.message(), "");
    let s = h.status();
    assert_eq!(s["phase"], "Successful");
    let r = &s["metricResults"][0];
    assert_eq!(r["name"], "success-rate");
    assert_eq!(r["phase"], "Successful");
    assert_eq!(
        (r["count"].as_i64(), r["successful"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(r["measurements"].as_array().unwrap().len(), 3);
    assert_eq!(r["measurements"][0]["value"], "[0.99]");
    assert_eq!(r["measurements"][0]["phase"], "Successful");
    assert!(
        r["measurements"][0]["startedAt"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert_eq!(s["runSummary"]["successful"], 1);
    assert!(s["completedAt"].is_string());
}

#[tokio::test(start_paused = true)]
async fn failures_past_the_failure_limit_fail_the_run_with_the_value() {
    let (h, script) = run(
        "interval: 30s\ncount: 10\nfailureLimit: 1\nsuccessCondition: result[0] >= 0.95",
        vec![v(&[0.99]), v(&[0.61]), v(&[0.99]), v(&[0.5])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Failed);
    assert_eq!(script.times("success-rate"), [0, 30, 60, 90]);
    assert_eq!(
        h.message(),
        "Metric \"success-rate\" assessed Failed due to failed (2) > failureLimit (1); last measured value [0.5]"
    );
    let r = &h.status()["metricResults"][0];
    assert_eq!(
        (r["failed"].as_i64(), r["successful"].as_i64()),
        (Some(2), Some(2))
    );
    assert_eq!(h.status()["runSummary"]["failed"], 1);
}

#[tokio::test(start_paused = true)]
async fn the_default_failure_limit_is_zero() {
    let (h, _) = run("successCondition: result[0] >= 0.95", vec![v(&[0.61])]);
    assert_eq!(h.finished().await, AnalysisPhase::Failed);
    assert_eq!(
        h.message(),
        "Metric \"success-rate\" assessed Failed due to failed (1) > failureLimit (0); last measured value [0.61]"
    );
}

#[tokio::test(start_paused = true)]
async fn neither_condition_true_is_inconclusive() {
    let (h, _) = run(
        "successCondition: result[0] >= 0.95\nfailureCondition: result[0] < 0.5",
        vec![v(&[0.7])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Inconclusive);
    assert_eq!(
        h.message(),
        "Metric \"success-rate\" assessed Inconclusive due to inconclusive (1) > inconclusiveLimit (0); last measured value [0.7]"
    );
    // Both true: the failure wins, as in Argo.
    let (h, _) = run(
        "successCondition: result[0] >= 0.5\nfailureCondition: result[0] < 0.9",
        vec![v(&[0.7])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Failed);
    // Only a failure condition: anything it does not catch succeeds.
    let (h, _) = run("failureCondition: result[0] < 0.5", vec![v(&[0.7])]);
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
    // No condition at all: success unless the query fails.
    let (h, _) = run("count: 1", vec![v(&[0.0])]);
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
}

#[tokio::test(start_paused = true)]
async fn consecutive_errors_past_the_limit_end_in_error() {
    let started = Instant::now();
    let (h, script) = run(
        "successCondition: result[0] >= 0.95",
        vec![Outcome::Error(
            "prometheus at http://x: up: cannot connect".into(),
        )],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Error);
    // No interval: an error is retried every 10 s; the fifth in a row is past the limit of 4.
    assert_eq!(script.times("success-rate"), [0, 10, 20, 30, 40]);
    assert_eq!(started.elapsed().as_secs(), 40);
    assert_eq!(
        h.message(),
        "Metric \"success-rate\" assessed Error due to consecutiveErrors (5) > consecutiveErrorLimit (4): \"Error Message: prometheus at http://x: up: cannot connect\""
    );
    let r = &h.status()["metricResults"][0];
    assert_eq!(
        (r["error"].as_i64(), r["consecutiveError"].as_i64()),
        (Some(5), Some(5))
    );
    assert_eq!(r["count"], 0);
}

#[tokio::test(start_paused = true)]
async fn an_error_between_successes_resets_the_streak() {
    let err = Outcome::Error("timeout".into());
    let (h, _) = run(
        "interval: 10s\ncount: 3\nconsecutiveErrorLimit: 1\nsuccessCondition: result[0] >= 0.95",
        vec![err.clone(), v(&[1.0]), err.clone(), v(&[1.0]), v(&[1.0])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
    let r = &h.status()["metricResults"][0];
    assert_eq!(
        (r["error"].as_i64(), r["count"].as_i64()),
        (Some(2), Some(3))
    );
}

#[tokio::test(start_paused = true)]
async fn the_initial_delay_comes_before_the_first_measurement() {
    let (h, script) = run(
        "initialDelay: 30s\ninterval: 10s\ncount: 2\nsuccessCondition: result[0] >= 0.95",
        vec![v(&[1.0])],
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.phase(), AnalysisPhase::Running);
    assert!(h.status()["metricResults"].as_array().unwrap().is_empty());
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
    assert_eq!(script.times("success-rate"), [30, 40]);
}

#[tokio::test(start_paused = true)]
async fn an_empty_vector_is_an_error_or_a_success_by_the_condition() {
    let (h, _) = run(
        "consecutiveErrorLimit: 0\nsuccessCondition: result[0] >= 0.95",
        vec![v(&[])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Error);
    let m = &h.status()["metricResults"][0]["measurements"][0];
    assert_eq!(m["phase"], "Error");
    assert_eq!(m["value"], "[]");
    assert_eq!(
        m["message"],
        "could not evaluate successCondition \"result[0] >= 0.95\": metric result is nil or empty: no data returned from the metric provider"
    );
    let (h, _) = run(
        "successCondition: len(result) == 0 || result[0] >= 0.95",
        vec![v(&[])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
}

#[tokio::test(start_paused = true)]
async fn nan_fails_a_comparison_and_is_caught_by_isnan() {
    let (h, _) = run("successCondition: result[0] >= 0.95", vec![v(&[f64::NAN])]);
    assert_eq!(h.finished().await, AnalysisPhase::Failed);
    assert!(
        h.message().ends_with("last measured value [NaN]"),
        "{}",
        h.message()
    );
    let (h, _) = run(
        "successCondition: isNaN(result[0]) || result[0] >= 0.95",
        vec![v(&[f64::NAN])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
    let (h, _) = run("successCondition: result < 1", vec![Outcome::Scalar(0.5)]);
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
}

#[tokio::test(start_paused = true)]
async fn an_endless_metric_runs_until_terminated() {
    let (h, script) = run(
        "interval: 10s\nsuccessCondition: result[0] >= 0.95",
        vec![v(&[1.0])],
    );
    tokio::time::sleep(Duration::from_secs(125)).await;
    assert_eq!(h.phase(), AnalysisPhase::Running);
    assert_eq!(script.times("success-rate").len(), 13);
    // Argo keeps the last 10 measurements.
    let r = &h.status()["metricResults"][0];
    assert_eq!(r["measurements"].as_array().unwrap().len(), 10);
    assert_eq!(r["count"], 13);
    h.terminate();
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
    assert_eq!(h.message(), "Run Terminated");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(script.times("success-rate").len(), 13);
}

#[tokio::test(start_paused = true)]
async fn terminating_keeps_a_failure() {
    let (h, _) = run(
        "interval: 10s\nfailureLimit: 2\nsuccessCondition: result[0] >= 0.95",
        vec![v(&[0.5]), v(&[0.5]), v(&[0.5])],
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.phase(), AnalysisPhase::Failed);
    h.terminate();
    assert_eq!(h.finished().await, AnalysisPhase::Failed);
}

const TWO: &str = "apiVersion: argoproj.io/v1alpha1
kind: ClusterAnalysisTemplate
metadata: {name: latency}
spec:
  metrics:
  - name: p95
    interval: 10s
    successCondition: result[0] < 500
    provider: {prometheus: {query: 'histogram_quantile(0.95, x)'}}
---
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: errors, namespace: blog-system}
spec:
  dryRun: [{metricName: noisy}]
  measurementRetention: [{metricName: p95, limit: 2}]
  metrics:
  - name: noisy
    successCondition: result[0] >= 0.95
    provider: {prometheus: {address: 'http://127.0.0.1:9', query: up}}
";

#[tokio::test(start_paused = true)]
async fn a_failing_metric_ends_the_others_and_dry_runs_do_not_count() {
    let m = skein_api::load_str("t.yaml", TWO).unwrap();
    let p = prepare(AnalysisRequest {
        manifests: &m,
        namespace: "blog-system",
        templates: &[("latency".into(), true), ("errors".into(), false)],
        args: &[],
        run_name: "r".into(),
    })
    .unwrap();
    assert_eq!(p.metric_names(), ["p95", "noisy"]);
    // The dry-run metric fails; the endless p95 keeps the run going until terminated.
    let script = Script::new(&[("p95", vec![v(&[120.0])]), ("noisy", vec![v(&[0.1])])]);
    let h = start_with(p.clone(), script.clone(), None);
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(h.phase(), AnalysisPhase::Running);
    let s = h.status();
    let noisy = &s["metricResults"][1];
    assert_eq!(noisy["phase"], "Failed");
    assert_eq!(noisy["dryRun"], true);
    assert_eq!(
        noisy["message"],
        "Metric assessed Failed due to failed (1) > failureLimit (0)"
    );
    assert_eq!(
        s["metricResults"][0]["measurements"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    h.terminate();
    assert_eq!(h.finished().await, AnalysisPhase::Successful);

    // Now p95 fails on its second measurement: the run fails at once.
    let script = Script::new(&[
        ("p95", vec![v(&[120.0]), v(&[900.0])]),
        ("noisy", vec![v(&[1.0])]),
    ]);
    let h = start_with(p, script.clone(), None);
    assert_eq!(h.finished().await, AnalysisPhase::Failed);
    assert_eq!(script.times("p95"), [0, 10]);
    assert!(
        h.message().starts_with("Metric \"p95\" assessed Failed"),
        "{}",
        h.message()
    );
}

#[test]
fn preparing_names_what_is_missing() {
    let m = skein_api::load_str("t.yaml", TWO).unwrap();
    let req = |templates: &'static [(String, bool)]| AnalysisRequest {
        manifests: &m,
        namespace: "blog-system",
        templates,
        args: &[],
        run_name: "r".into(),
    };
    let missing: &'static [(String, bool)] = Box::leak(Box::new([("nope".to_string(), false)]));
    assert_eq!(
        prepare(req(missing)).unwrap_err().to_string(),
        "AnalysisTemplate \"nope\" not found in namespace \"blog-system\""
    );
    let cluster: &'static [(String, bool)] = Box::leak(Box::new([("errors".to_string(), true)]));
    assert_eq!(
        prepare(req(cluster)).unwrap_err().to_string(),
        "ClusterAnalysisTemplate \"errors\" not found"
    );
    let m2 = skein_api::load_str("t.yaml", &TEMPLATE.replace("METRIC", "count: 1")).unwrap();
    let e = prepare(AnalysisRequest {
        manifests: &m2,
        namespace: "blog-system",
        templates: &[("success-rate".into(), false)],
        args: &[],
        run_name: "r".into(),
    })
    .unwrap_err();
    assert_eq!(e.to_string(), "args.service-name was not resolved");
}

#[tokio::test]
async fn a_written_analysis_run_reports_an_unreachable_prometheus_in_its_status_file() {
    let m = skein_api::load_str(
        "r.yaml",
        "apiVersion: argoproj.io/v1alpha1
kind: AnalysisRun
metadata: {name: check, namespace: blog-system}
spec:
  metrics:
  - name: up
    consecutiveErrorLimit: 0
    successCondition: result[0] == 1
    provider: {prometheus: {address: 'http://prometheus.nowhere.svc:9090', query: up}}
",
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let stale = status_file(dir.path(), "blog-system", "from-before");
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, "{}").unwrap();
    let runs = start_manifest_runs(&m, dir.path(), Arc::new(NoNames));
    assert!(!stale.exists());
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].finished().await, AnalysisPhase::Error);
    let file = status_file(dir.path(), "blog-system", "check");
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(status["phase"], "Error");
    assert_eq!(
        status["metricResults"][0]["measurements"][0]["message"],
        "prometheus address \"http://prometheus.nowhere.svc:9090\": no Service prometheus.nowhere.svc:9090 in this runtime"
    );
}

#[tokio::test(start_paused = true)]
async fn a_zero_interval_is_floored_at_a_second() {
    let (h, script) = run(
        "interval: 0s\ncount: 3\nsuccessCondition: result[0] >= 0.95",
        vec![v(&[1.0])],
    );
    assert_eq!(h.finished().await, AnalysisPhase::Successful);
    assert_eq!(script.times("success-rate"), [0, 1, 2]);
}

#[test]
fn service_names_and_functions_resolve() {
    let names = ServiceNames::new(vec![(
        vec![
            "prometheus".into(),
            "prometheus.istio-system".into(),
            "prometheus.istio-system.svc".into(),
        ],
        vec![(9090, SocketAddr::from(([127, 0, 10, 3], 9090)))],
    )]);
    assert_eq!(
        names.resolve("Prometheus.istio-system.svc.", 9090),
        Some(SocketAddr::from(([127, 0, 10, 3], 9090)))
    );
    assert_eq!(names.resolve("prometheus.istio-system", 80), None);
    let f = |h: &str, p: u16| (h == "x").then(|| SocketAddr::from(([127, 0, 0, 1], p)));
    let r: Arc<dyn Resolve> = Arc::new(f);
    assert_eq!(
        r.resolve("x", 1),
        Some(SocketAddr::from(([127, 0, 0, 1], 1)))
    );
}

#[tokio::test]
async fn a_template_run_started_in_a_state_directory_keeps_its_status_there() {
    let dir = tempfile::tempdir().unwrap();
    let p = prepared("consecutiveErrorLimit: 0\nsuccessCondition: result[0] >= 0.95");
    let h = start_in(p, Arc::new(NoNames), dir.path()).unwrap();
    assert_eq!(h.finished().await, AnalysisPhase::Error);
    let file = status_file(dir.path(), "blog-system", "web-6d4f9c-2-1");
    let status: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(status, h.status());
    let mut bad = prepared("count: 1");
    bad.name = "../x".into();
    assert!(start_in(bad, Arc::new(NoNames), dir.path()).is_err());
}
