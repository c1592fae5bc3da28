//! `skein rollout restart` on the running blog-system: the REST API's two replicas are
//! replaced one at a time while requests flow through the ingress, and none fails; the pods
//! get new processes; `skein rollout status` prints kubectl's messages and exits 0.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

/// One GET through the ingress: the status code, or why there was none.
fn get_status(authority: &str, path: &str) -> Result<u16, String> {
    let mut s = TcpStream::connect(authority).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
    let head = String::from_utf8_lossy(&raw[..raw.len().min(64)]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {head:?}"))
}

fn pids(sk: &Skein, workload: &str) -> Vec<(String, u64)> {
    sk.pods(workload)
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["pid"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn restart_replaces_pods_one_at_a_time_without_failed_requests() {
    let sk = Skein::new();
    sk.up("examples/blog-system", &[]);
    let base = sk.http_base();
    let authority = base.strip_prefix("http://").unwrap().to_string();
    let before = pids(&sk, "was");
    assert_eq!(
        before.len(),
        2,
        "the REST API runs two replicas: {before:?}"
    );

    // Light load: one request at a time, about 20 a second.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let load = {
        let (stop, ok, failures, authority) = (
            stop.clone(),
            ok.clone(),
            failures.clone(),
            authority.clone(),
        );
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(240);
            while !stop.load(Ordering::Acquire) && Instant::now() < deadline {
                match get_status(&authority, "/api/posts") {
                    Ok(200) => {
                        ok.fetch_add(1, Ordering::AcqRel);
                    }
                    other => failures.lock().unwrap().push(format!("{other:?}")),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    eventually(Duration::from_secs(30), "requests to flow", || {
        (ok.load(Ordering::Acquire) >= 10).then_some(())
    });

    let out = sk.run(&["rollout", "restart", "deployment/was", "-n", "blog-system"]);
    assert!(
        out.status.success(),
        "restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "deployment.apps/was restarted\n"
    );
    let out = sk.run(&[
        "rollout",
        "status",
        "deployment/was",
        "-n",
        "blog-system",
        "--timeout",
        "180s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.ends_with("deployment \"was\" successfully rolled out\n"),
        "{text}"
    );
    assert!(
        text.contains("Waiting for deployment \"was\" rollout to finish: "),
        "status waited for the pods: {text}"
    );
    // A few more requests after the rollout, then stop the load.
    let served = ok.load(Ordering::Acquire);
    eventually(
        Duration::from_secs(30),
        "requests after the restart",
        || (ok.load(Ordering::Acquire) >= served + 10).then_some(()),
    );
    stop.store(true, Ordering::Release);
    load.join().unwrap();

    let failures = failures.lock().unwrap().clone();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the restart: {failures:?}",
        failures.len(),
        failures.len() + ok.load(Ordering::Acquire)
    );
    let after = pids(&sk, "was");
    assert_eq!(after.len(), 2);
    for ((name, old), (_, new)) in before.iter().zip(&after) {
        assert_ne!(old, new, "pod {name} has a new process");
        assert!(!pid_alive(*old), "the old process {old} of {name} is gone");
    }
    // The restart is recorded, pod by pod, with kubectl's restartedAt time.
    let status = sk.status();
    let restart = status["restarts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "was")
        .cloned()
        .unwrap();
    assert_eq!(restart["state"], "Complete", "{restart}");
    assert_eq!(restart["events"].as_array().unwrap().len(), 2, "{restart}");
    assert!(restart["restarted_at"].as_str().unwrap().ends_with('Z'));
    for p in sk.pods("was") {
        assert_eq!(p["generation"], 1, "{p}");
        assert_eq!(p["restarts"], 0, "{p}");
    }
    eprintln!(
        "{} requests, none failed, pids {before:?} -> {after:?}",
        ok.load(Ordering::Acquire)
    );

    // Unknown workloads get kubectl's NotFound.
    let out = sk.run(&["rollout", "restart", "deployment/nope", "-n", "blog-system"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: Error from server (NotFound): deployments.apps \"nope\" not found\n"
    );
    // `skein rollouts restart` (Argo's) makes the same request, for a Rollout.
    let out = sk.run(&["rollouts", "restart", "nope", "-n", "blog-system"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: Error from server (NotFound): rollouts.argoproj.io \"nope\" not found\n"
    );
    sk.down();
}
