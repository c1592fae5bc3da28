//! The analysis engine against a real Prometheus: Prometheus scrapes a small endpoint this
//! test serves, whose request counters the test controls; an AnalysisTemplate with Argo's
//! success-rate query shape (`sum(irate(...[1m])) / sum(irate(...[1m]))`), its address a
//! cluster Service name resolved by the caller's resolver, passes while every request
//! succeeds and fails, with the measured value in its message, once 40 % of them fail.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skein_runtime::analysis::{self, AnalysisPhase, AnalysisRequest, Resolve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Requests added to the served counters at each scrape: (successful, 5xx).
struct Traffic {
    per_scrape: Mutex<(u64, u64)>,
    ok: AtomicU64,
    failed: AtomicU64,
}

async fn serve_metrics(listener: tokio::net::TcpListener, traffic: Arc<Traffic>) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let traffic = traffic.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let (ok, failed) = *traffic.per_scrape.lock().unwrap();
            let ok = traffic.ok.fetch_add(ok, Ordering::SeqCst) + ok;
            let failed = traffic.failed.fetch_add(failed, Ordering::SeqCst) + failed;
            let body = format!(
                "# TYPE blog_requests_total counter\n\
                 blog_requests_total{{service=\"web\",code=\"200\"}} {ok}\n\
                 blog_requests_total{{service=\"web\",code=\"503\"}} {failed}\n"
            );
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn.write_all(head.as_bytes()).await;
            let _ = conn.write_all(body.as_bytes()).await;
        });
    }
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_prometheus(target: SocketAddr) -> Prometheus {
    // Not skipped when missing: scripts/test installs it (scripts/deps.sh).
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("prometheus").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "no `prometheus` on PATH: install it (`sudo apt-get install prometheus`; scripts/test does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n\
             - job_name: blog\n  static_configs: [{{targets: ['{target}']}}]\n"
        ),
    )
    .unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={addr}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("prometheus starts");
    let p = Prometheus {
        child,
        addr,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok((status, _)) =
            skein_runtime::http_get(addr, "/-/ready", Duration::from_secs(1)).await
            && status == 200
        {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus at {addr} not ready within 30 s; see its log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cluster's name of this Prometheus, as a template would write it.
struct Cluster(SocketAddr);

impl Resolve for Cluster {
    fn resolve(&self, host: &str, port: u16) -> Option<SocketAddr> {
        (host == "prometheus.monitoring.svc.cluster.local" && port == 9090).then_some(self.0)
    }
}

const TEMPLATE: &str = "apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: success-rate, namespace: blog-system}
spec:
  args:
  - name: service-name
  metrics:
  - name: success-rate
    initialDelay: 2s
    interval: 1s
    count: 3
    successCondition: result[0] >= 0.95
    failureLimit: 0
    provider:
      prometheus:
        address: http://prometheus.monitoring.svc.cluster.local:9090
        timeout: 5
        query: |
          sum(irate(blog_requests_total{service=\"{{args.service-name}}\",code!~\"5.*\"}[1m])) /
          sum(irate(blog_requests_total{service=\"{{args.service-name}}\"}[1m]))
";

async fn wait_for_rate(prom: SocketAddr, want: impl Fn(f64) -> bool) {
    let client =
        skein_runtime::prom::PromClient::new(&format!("http://{prom}"), Duration::from_secs(2))
            .unwrap();
    let q =
        "sum(irate(blog_requests_total{code!~\"5.*\"}[1m])) / sum(irate(blog_requests_total[1m]))";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        if let Ok(rows) = client.query(q, now).await
            && rows.first().is_some_and(|r| want(r.value))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never showed the expected rate"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_success_rate_analysis_passes_then_fails_on_real_prometheus_data() {
    let started = Instant::now();
    let traffic = Arc::new(Traffic {
        per_scrape: Mutex::new((100, 0)),
        ok: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = listener.local_addr().unwrap();
    tokio::spawn(serve_metrics(listener, traffic.clone()));
    let prom = start_prometheus(target).await;

    let manifests = skein_api::load_str("template.yaml", TEMPLATE).unwrap();
    assert!(
        skein_api::validate(&manifests)
            .iter()
            .all(|d| !d.is_error()),
        "{:?}",
        skein_api::validate(&manifests)
    );
    let templates = [("success-rate".to_string(), false)];
    let args = [("service-name".to_string(), "web".to_string())];
    let request = |run_name: &str| AnalysisRequest {
        manifests: &manifests,
        namespace: "blog-system",
        templates: &templates,
        args: &args,
        run_name: run_name.to_string(),
    };
    let resolver: Arc<dyn Resolve> = Arc::new(Cluster(prom.addr));

    // Every request succeeds: three measurements of 1, Successful.
    wait_for_rate(prom.addr, |v| v == 1.0).await;
    let run = analysis::start(
        analysis::prepare(request("web-1")).unwrap(),
        resolver.clone(),
    );
    let phase = tokio::time::timeout(Duration::from_secs(20), run.finished())
        .await
        .expect("the run ends");
    let status = run.status();
    assert_eq!(phase, AnalysisPhase::Successful, "{status:#}");
    let result = &status["metricResults"][0];
    assert_eq!(result["count"], 3, "{status:#}");
    assert_eq!(result["successful"], 3, "{status:#}");
    assert_eq!(result["measurements"][0]["value"], "[1]", "{status:#}");

    // 40 % of requests fail: the next run fails on its first measurement of about 0.6.
    *traffic.per_scrape.lock().unwrap() = (60, 40);
    wait_for_rate(prom.addr, |v| (v - 0.6).abs() < 0.01).await;
    let run = analysis::start(analysis::prepare(request("web-2")).unwrap(), resolver);
    let phase = tokio::time::timeout(Duration::from_secs(20), run.finished())
        .await
        .expect("the run ends");
    let status = run.status();
    assert_eq!(phase, AnalysisPhase::Failed, "{status:#}");
    let measured = status["metricResults"][0]["measurements"][0]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let value: f64 = measured
        .trim_matches(|c| c == '[' || c == ']')
        .parse()
        .unwrap();
    assert!((value - 0.6).abs() < 0.01, "{measured}");
    assert_eq!(
        run.message(),
        format!(
            "Metric \"success-rate\" assessed Failed due to failed (1) > failureLimit (0); last measured value {measured}"
        )
    );
    assert_eq!(status["message"], run.message());
    assert_eq!(status["phase"], "Failed");
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}
