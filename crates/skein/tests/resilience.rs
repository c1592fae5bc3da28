//! End to end: the resilience the seed's DestinationRules and VirtualService promise, under
//! load, through real processes. A broken pod is ejected and retries hide it; a was pod
//! killed during load costs no request.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::*;

/// The load tests run one at a time: two clusters under 200 rps each on a 2-core machine
/// would measure the machine, not the mesh.
static LOAD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// `rps` GETs per second on 8 threads for `duration`; returns the statuses in order of
/// completion. `during` runs on the calling thread once the load is going.
fn paced_load(url: &str, rps: u32, duration: Duration, during: impl FnOnce()) -> Vec<u16> {
    let threads = 8;
    let per_thread = Duration::from_secs_f64(threads as f64 / f64::from(rps));
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let (url, stop, tx) = (url.to_string(), stop.clone(), tx.clone());
            std::thread::spawn(move || {
                // Stagger the threads so the requests spread evenly.
                let mut next = start + per_thread.mul_f64(i as f64 / threads as f64);
                while !stop.load(Ordering::Relaxed) && start.elapsed() < duration {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next += per_thread;
                    let r = request("GET", &url, &[], b"", None);
                    let _ = tx.send(r.status);
                }
            })
        })
        .collect();
    drop(tx);
    during();
    for h in handles {
        h.join().expect("load thread");
    }
    stop.store(true, Ordering::Relaxed);
    rx.into_iter().collect()
}

/// Access-log lines of non-2xx answers from every proxy, for a failing assertion's message.
fn proxy_failures(skein: &Skein) -> String {
    let mut out = String::new();
    let logs = skein.state.path().join("logs");
    for pod in std::fs::read_dir(&logs).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(pod.path().join("istio-proxy.log")) else {
            continue;
        };
        for l in text.lines().filter(|l| l.starts_with('[')) {
            let code = l
                .split('"')
                .nth(2)
                .and_then(|r| r.split_whitespace().next());
            if code.is_some_and(|c| !c.starts_with('2')) {
                out.push_str(&format!("{}: {l}\n", pod.file_name().to_string_lossy()));
            }
        }
    }
    out
}

fn failures(statuses: &[u16]) -> Vec<u16> {
    statuses.iter().copied().filter(|s| *s != 200).collect()
}

#[test]
fn a_broken_pod_is_ejected_and_retries_hide_it() {
    let _one_at_a_time = LOAD.lock().unwrap_or_else(|p| p.into_inner());
    let skein = Skein::new();
    skein.up("crates/skein/tests/fixtures/echo-mesh", &[]);
    let base = skein.http_base();
    let statuses = paced_load(&format!("{base}/hello"), 200, Duration::from_secs(5), || {});
    assert!(statuses.len() >= 900, "the load ran: {}", statuses.len());
    assert!(
        failures(&statuses).is_empty(),
        "{} of {} failed: {:?}",
        failures(&statuses).len(),
        statuses.len(),
        &failures(&statuses)[..failures(&statuses).len().min(10)]
    );

    // The gateway ejected the broken pod: outlier check FAILED in proxy-config.
    let bad = skein.pods("echo-bad")[0].clone();
    let bad_ip = bad["ip"].as_str().expect("ip").to_string();
    let out = skein.run(&["proxy-config", "istio-ingressgateway", "endpoints"]);
    let table = String::from_utf8_lossy(&out.stdout);
    let line = table
        .lines()
        .find(|l| l.starts_with(&format!("{bad_ip}:8080")) && l.contains("outbound|8080||echo."))
        .unwrap_or_else(|| panic!("no endpoint line for {bad_ip}:\n{table}"));
    assert!(
        line.contains("UNHEALTHY") && line.contains("FAILED"),
        "{line}"
    );

    // Once ejected it saw no more traffic: its sidecar logged only the first few requests.
    let log = String::from_utf8_lossy(
        &skein
            .run(&["logs", bad["name"].as_str().expect("name"), "-c", "proxy"])
            .stdout,
    )
    .to_string();
    let served = log.lines().filter(|l| l.contains("\"GET /hello")).count();
    assert!(
        (5..=20).contains(&served),
        "the broken pod served {served} requests of {}",
        statuses.len()
    );

    // The seed's `timeout: 10s`: an upstream that takes 12 s gets 504 after about 10 s.
    skein.apply_yaml(
        "echo.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: echo\n  namespace: echo\nspec:\n  hosts: [echo]\n  http:\n  - name: default\n    timeout: 10s\n    retries:\n      attempts: 0\n    route:\n    - destination: {host: echo}\n",
    );
    let started = Instant::now();
    let r = get(&format!("{base}/slow?delay_ms=12000"));
    let took = started.elapsed();
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.body, "upstream request timeout");
    assert!(
        (Duration::from_millis(9_800)..Duration::from_millis(11_500)).contains(&took),
        "took {took:?}"
    );
}

#[test]
fn killing_a_was_pod_under_load_fails_no_request() {
    let _one_at_a_time = LOAD.lock().unwrap_or_else(|p| p.into_inner());
    let skein = Skein::new();
    skein.up("examples/blog-system", &[]);
    let base = skein.http_base();
    let victim = skein.pods("was")[0].clone();
    let pid = victim["pid"].as_u64().expect("pid");
    let statuses = paced_load(
        &format!("{base}/api/posts"),
        200,
        Duration::from_secs(30),
        || {
            std::thread::sleep(Duration::from_secs(5));
            assert!(
                std::process::Command::new("kill")
                    .args(["-9", &pid.to_string()])
                    .status()
                    .expect("kill")
                    .success()
            );
        },
    );
    eprintln!("{} requests", statuses.len());
    // 200 rps for 30 s is 6000; a loaded CI machine may fall a little behind the pace.
    assert!(statuses.len() >= 4000, "the load ran: {}", statuses.len());
    let failed = failures(&statuses);
    assert!(
        failed.is_empty(),
        "{} of {} failed: {:?}\nproxy log lines of failures:\n{}",
        failed.len(),
        statuses.len(),
        &failed[..failed.len().min(10)],
        proxy_failures(&skein)
    );
    let restarted = skein
        .pods("was")
        .into_iter()
        .find(|p| p["name"] == victim["name"])
        .expect("the victim pod");
    assert!(restarted["restarts"].as_u64() >= Some(1), "{restarted}");
}

#[test]
fn the_canary_sees_mirrored_traffic_and_a_was_fault_reaches_the_user() {
    let skein = Skein::new();
    skein.up("examples/blog-system", &[]);
    let base = skein.http_base();

    // web-vsvc mirrors 100% of the primary route to the canary subset. With no update of
    // web's Rollout running, the canary subset is the stable revision (as in Argo): the
    // user sees the stable revision, and its pods serve each request twice, the request
    // and its copy.
    let web = skein.pods("web");
    assert_eq!(web.len(), 2, "{web:?}");
    let stable = web[0]["labels"]["rollouts-pod-template-hash"]
        .as_str()
        .expect("the revision's hash")
        .to_string();
    let web_logs = || {
        web.iter()
            .map(|p| {
                String::from_utf8_lossy(
                    &skein
                        .run(&["logs", p["name"].as_str().expect("name"), "-c", "proxy"])
                        .stdout,
                )
                .lines()
                .filter(|l| {
                    l.contains("\"GET /api/posts?mirror-check") && l.contains("inbound|80||")
                })
                .count()
            })
            .sum::<usize>()
    };
    for i in 0..50 {
        let r = get(&format!("{base}/api/posts?mirror-check={i}"));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.header("x-web-version"), Some(stable.as_str()));
    }
    eventually(
        Duration::from_secs(5),
        "50 requests and their 50 mirrored copies at web",
        || (web_logs() >= 100).then_some(()),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(web_logs(), 100, "each request once and its copy once");

    // The seed's pitfall 7: a fault on web's hop was invisible. On was's entry point it reaches
    // the user through web.
    skein.apply_yaml(
        "was-vsvc.yaml",
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: was-vsvc\n  namespace: blog-system\nspec:\n  hosts: [was-service]\n  http:\n  - name: was-default\n    fault:\n      delay:\n        percentage: {value: 100.0}\n        fixedDelay: 700ms\n    route:\n    - destination:\n        host: was-service\n        port: {number: 8080}\n",
    );
    eventually(Duration::from_secs(5), "the delay reaches the user", || {
        let t = Instant::now();
        let r = get(&format!("{base}/api/posts"));
        (r.status == 200 && t.elapsed() >= Duration::from_millis(700)).then_some(())
    });
    let t = Instant::now();
    assert_eq!(get(&format!("{base}/health")).status, 200);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "web's own pages are not delayed"
    );
    // Access-log lines are written in batches (within 100 ms): wait for the line.
    eventually(
        Duration::from_secs(5),
        "web's sidecar logs the injected delay (DI)",
        || {
            let logs: String = web
                .iter()
                .map(|p| {
                    String::from_utf8_lossy(
                        &skein
                            .run(&["logs", p["name"].as_str().expect("name"), "-c", "proxy"])
                            .stdout,
                    )
                    .to_string()
                })
                .collect();
            logs.lines()
                .any(|l| l.contains(" DI ") && l.contains("outbound|8080||was-service"))
                .then_some(())
        },
    );
}
