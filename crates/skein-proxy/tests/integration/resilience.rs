//! VirtualService resilience in the client-side proxy: retries (conditions, body replay,
//! budget, URX), timeouts (route and per try), fault injection and mirroring.
//!
//! Every test runs on paused time: the runtime moves the clock to the next timer whenever it
//! is idle, so a timeout, a backoff or a fault delay fires at its exact virtual instant and the
//! tests assert which outcome came back (and that it came before a competing timer).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use skein_proxy::test_util::*;
use skein_snapshot::build::{SnapshotBuilder, cluster, fqdn, route_to};
use skein_snapshot::*;

const NS: &str = "blog-system";
const URL: &str = "http://svc:8080/api/posts";

fn svc_cluster() -> String {
    outbound_cluster_name(8080, None, &fqdn("svc", NS))
}

fn mirror_cluster() -> String {
    outbound_cluster_name(8080, None, &fqdn("mirror", NS))
}

/// `svc` on `endpoints` (round robin) with `route`'s policies; `mirror` on `mirror_eps`.
fn snapshot(endpoints: &[&str], mirror_eps: &[&str], route: Route) -> Snapshot {
    let mut b = SnapshotBuilder::new("v1", NS, "web")
        .cluster(cluster(&fqdn("svc", NS), 8080, None, endpoints))
        .with_last_cluster(|c| c.lb_policy = LbPolicy::RoundRobin);
    if !mirror_eps.is_empty() {
        b = b.cluster(cluster(&fqdn("mirror", NS), 8080, None, mirror_eps));
    }
    b.service_routes(
        "svc",
        8080,
        vec![Route {
            ..merge(route_to(&svc_cluster()), route)
        }],
    )
    .build()
}

/// `base`'s action with `extra`'s resilience fields.
fn merge(base: Route, extra: Route) -> Route {
    Route {
        timeout_ms: extra.timeout_ms,
        retries: extra.retries,
        mirror: extra.mirror,
        fault: extra.fault,
        ..base
    }
}

fn retries(attempts: u32, on: &[&str]) -> Option<RetryPolicy> {
    Some(RetryPolicy {
        attempts,
        retry_on: on.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
}

/// Bounds every test: nothing here may hang (on paused time, a hung test reaches the bound as
/// soon as nothing else is pending).
async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("test timed out")
}

async fn dead_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// Accepts connections, reads, and never answers; counts the connections it holds.
async fn hanging_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let a = l.local_addr().expect("addr");
    let accepts = Arc::new(AtomicUsize::new(0));
    let n = Arc::clone(&accepts);
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((s, _)) = l.accept().await else {
                return;
            };
            n.fetch_add(1, Ordering::SeqCst);
            held.push(s);
        }
    });
    (a, accepts)
}

#[tokio::test(start_paused = true)]
async fn every_other_call_failing_is_hidden_by_5xx_retries() {
    bounded(async {
        let up = Upstream::start("flaky").await;
        up.fail_every.store(2, Ordering::SeqCst);
        let route = Route {
            retries: retries(2, &["5xx"]),
            ..Default::default()
        };
        let (h, _) = sidecar(snapshot(&[&up.addr_str()], &[], route)).await;
        let mut c = H1Client::connect(outbound(&h)).await;
        for i in 0..100 {
            let r = c.get(URL).await;
            assert_eq!(r.status, 200, "request {i}: {r:?}");
        }
        // Call 1 succeeds; every later request hits an even call first, then retries.
        assert_eq!(up.requests.load(Ordering::SeqCst), 199, "99 retries");
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn grpc_unavailable_is_retried_by_the_default_policy_but_internal_is_not() {
    bounded(async {
        let up = Upstream::start("grpc").await;
        up.fail_every.store(2, Ordering::SeqCst);
        let (h, _) = sidecar(snapshot(&[&up.addr_str()], &[], Route::default())).await;
        let mut c = H1Client::connect(outbound(&h)).await;
        let _ = c.get(URL).await;
        let r = c.send("GET", URL, &[("x-fail-grpc-status", "14")]).await;
        assert!(r.headers.get("grpc-status").is_none(), "retried: {r:?}");
        assert_eq!(up.requests.load(Ordering::SeqCst), 3);
        let r = c.send("GET", URL, &[("x-fail-grpc-status", "13")]).await;
        assert_eq!(
            r.headers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"13"[..]),
            "INTERNAL is not in Istio's default"
        );
        assert_eq!(up.requests.load(Ordering::SeqCst), 4);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn the_attempt_count_header_counts_tries() {
    bounded(async {
        let up = Upstream::start("flaky").await;
        up.fail_every.store(2, Ordering::SeqCst);
        let route = Route {
            retries: retries(2, &["503"]),
            ..Default::default()
        };
        let (h, _) = sidecar(snapshot(&[&up.addr_str()], &[], route)).await;
        let mut c = H1Client::connect(outbound(&h)).await;
        let first = c.get(URL).await;
        assert_eq!(first.seen_header("x-envoy-attempt-count"), vec!["1"]);
        let second = c.get(URL).await;
        assert_eq!(second.status, 200);
        assert_eq!(second.seen_header("x-envoy-attempt-count"), vec!["2"]);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn exhausted_attempts_return_the_last_503_with_urx() {
    bounded(async {
        let up = Upstream::start("down").await;
        up.fail_every.store(1, Ordering::SeqCst);
        let route = Route {
            retries: retries(3, &["gateway-error"]),
            ..Default::default()
        };
        let (h, log) = sidecar(snapshot(&[&up.addr_str()], &[], route)).await;
        let r = get(outbound(&h), URL, &[]).await;
        assert_eq!(r.status, 503, "{r:?}");
        assert_eq!(r.upstream(), "down", "the upstream's own 503");
        assert_eq!(up.requests.load(Ordering::SeqCst), 4, "1 + 3 attempts");
        let lines = log_lines(&log, 1).await;
        assert!(lines[0].contains(" 503 URX via_upstream "), "{}", lines[0]);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn without_retries_on_the_route_503_is_not_retried() {
    bounded(async {
        let up = Upstream::start("down").await;
        up.fail_every.store(1, Ordering::SeqCst);
        let (h, log) = sidecar(snapshot(&[&up.addr_str()], &[], Route::default())).await;
        let r = get(outbound(&h), URL, &[]).await;
        assert_eq!(r.status, 503);
        assert_eq!(
            up.requests.load(Ordering::SeqCst),
            1,
            "Istio's default skips 503"
        );
        let lines = log_lines(&log, 1).await;
        assert!(lines[0].contains(" 503 - via_upstream "), "{}", lines[0]);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn post_bodies_are_replayed_intact() {
    bounded(async {
        let a = Upstream::start("a").await;
        let b = Upstream::start("b").await;
        a.fail_every.store(1, Ordering::SeqCst);
        let route = Route {
            retries: retries(2, &["5xx"]),
            ..Default::default()
        };
        let (h, _) = sidecar(snapshot(&[&a.addr_str(), &b.addr_str()], &[], route)).await;
        let mut c = H1Client::connect(outbound(&h)).await;
        for len in [0usize, 1, 1000, 40_000, 64 * 1024] {
            let body = pattern(len);
            let n = len.to_string();
            let r = c
                .send_body("POST", URL, &[("x-expect-pattern", &n)], &body)
                .await
                .expect("response");
            assert_eq!(r.status, 200, "len {len}: {}", r.body);
            assert_eq!(r.upstream(), "b");
            assert_eq!(r.json()["body_len"], len, "len {len}");
        }
        assert!(
            a.requests.load(Ordering::SeqCst) >= 2,
            "a was tried and failed"
        );
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_body_over_the_replay_bound_is_not_retried() {
    bounded(async {
        let up = Upstream::start("flaky").await;
        up.fail_every.store(2, Ordering::SeqCst);
        let route = Route {
            retries: retries(2, &["5xx"]),
            ..Default::default()
        };
        let (h, log) = sidecar(snapshot(&[&up.addr_str()], &[], route)).await;
        let mut c = H1Client::connect(outbound(&h)).await;
        let len = 64 * 1024 + 1;
        let n = len.to_string();
        let body = pattern(len);
        let first = c
            .send_body("POST", URL, &[("x-expect-pattern", &n)], &body)
            .await
            .expect("response");
        assert_eq!(first.status, 200, "streamed intact: {}", first.body);
        let second = c
            .send_body("POST", URL, &[("x-expect-pattern", &n)], &body)
            .await
            .expect("response");
        assert_eq!(second.status, 503, "not replayable: the 503 goes back");
        assert_eq!(up.requests.load(Ordering::SeqCst), 2);
        let lines = log_lines(&log, 2).await;
        assert!(lines[1].contains(" 503 - via_upstream "), "{}", lines[1]);
    })
    .await
}

/// 20 concurrent requests to an upstream that fails every one, each allowed 10 retries,
/// through a cluster with `pool`. Returns the most retries in flight at once, the requests
/// the upstream got and the access log.
async fn retry_storm(pool: ConnectionPool) -> (usize, usize, Vec<String>) {
    let up = Upstream::start("down").await;
    up.fail_every.store(1, Ordering::SeqCst);
    up.delay_ms.store(100, Ordering::SeqCst);
    let route = Route {
        retries: retries(10, &["5xx"]),
        ..Default::default()
    };
    let mut snap = snapshot(&[&up.addr_str()], &[], route);
    for c in &mut snap.clusters {
        c.connection_pool = pool.clone();
    }
    let (h, log) = sidecar(snap).await;
    let proxy = outbound(&h);
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(async move { get(proxy, URL, &[]).await.status }))
        .collect();
    for t in tasks {
        assert_eq!(t.await.expect("task"), 503);
    }
    let lines = log_lines(&log, 20).await;
    (
        up.max_retries_in_flight.load(Ordering::SeqCst),
        up.requests.load(Ordering::SeqCst),
        lines,
    )
}

#[tokio::test(start_paused = true)]
async fn a_retry_budget_bounds_retries_in_flight() {
    bounded(async {
        let pool = ConnectionPool {
            retry_budget: Some(RetryBudget {
                percent_milli: 20_000,
                min_concurrency: 3,
            }),
            ..ConnectionPool::default()
        };
        // The budget is max(20% of 20, 3) = 4 retries in flight.
        let (max, total, lines) = retry_storm(pool).await;
        assert!(max >= 1, "some retries ran");
        assert!(max <= 4, "at most 4 retries in flight, saw {max}");
        assert!(
            total < 20 * 11,
            "retries did not multiply the load: {total}"
        );
        assert!(
            lines.iter().any(|l| l.contains(" UO ")),
            "budget refusals are UO"
        );
    })
    .await
}

/// Istio sets no retry budget and `maxRetries` 2^32-1: every retriable failure is retried as
/// often as the route allows (what keeps requests whole while a pod is killed under load);
/// `http.maxRetries` caps the retries in flight.
#[tokio::test(start_paused = true)]
async fn without_a_budget_every_retry_runs_and_max_retries_caps_them() {
    bounded(async {
        let (max, total, lines) = retry_storm(ConnectionPool::default()).await;
        assert_eq!(total, 20 * 11, "every request tried 11 times");
        assert!(
            max > 4,
            "more retries in flight than a budget allows: {max}"
        );
        assert!(lines.iter().all(|l| !l.contains(" UO ")), "{lines:?}");
        assert!(lines.iter().all(|l| l.contains(" URX ")), "{lines:?}");
        let pool = ConnectionPool {
            max_retries: 2,
            ..ConnectionPool::default()
        };
        let (max, _, lines) = retry_storm(pool).await;
        assert!(max <= 2, "maxRetries 2: {max} in flight");
        assert!(lines.iter().any(|l| l.contains(" UO ")), "{lines:?}");
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_route_timeout_answers_504_ut() {
    bounded(async {
        let up = Upstream::start("slow").await;
        up.delay_ms.store(1000, Ordering::SeqCst);
        let route = Route {
            timeout_ms: Some(200),
            retries: retries(2, &["5xx"]),
            ..Default::default()
        };
        let (h, log) = sidecar(snapshot(&[&up.addr_str()], &[], route)).await;
        let t0 = Instant::now();
        let r = get(outbound(&h), URL, &[]).await;
        let took = t0.elapsed();
        assert_eq!(r.status, 504, "{r:?}");
        assert_eq!(r.body, "upstream request timeout");
        // The route's 200 ms, not the upstream's 1000 ms, decided.
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_millis(1000), "{took:?}");
        let lines = log_lines(&log, 1).await;
        assert!(
            lines[0].contains(" 504 UT response_timeout "),
            "{}",
            lines[0]
        );
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_per_try_timeout_moves_on_to_the_next_host() {
    bounded(async {
        let slow = Upstream::start("slow").await;
        slow.delay_ms.store(1000, Ordering::SeqCst);
        let fast = Upstream::start("fast").await;
        let route = Route {
            retries: Some(RetryPolicy {
                attempts: 2,
                per_try_timeout_ms: Some(100),
                retry_on: vec!["5xx".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (h, _) = sidecar(snapshot(&[&slow.addr_str(), &fast.addr_str()], &[], route)).await;
        for i in 0..4 {
            let t0 = Instant::now();
            let r = get(outbound(&h), URL, &[]).await;
            assert_eq!(r.status, 200, "request {i}: {r:?}");
            assert_eq!(r.upstream(), "fast");
            // At most one 100 ms per-try timeout and a backoff, never the slow host's answer.
            let took = t0.elapsed();
            assert!(took < Duration::from_millis(200), "{took:?}");
        }
        assert!(slow.requests.load(Ordering::SeqCst) >= 1);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_exhausted_answer_504_ut_urx() {
    bounded(async {
        let slow = Upstream::start("slow").await;
        slow.delay_ms.store(1000, Ordering::SeqCst);
        let route = Route {
            retries: Some(RetryPolicy {
                attempts: 1,
                per_try_timeout_ms: Some(100),
                retry_on: vec!["gateway-error".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let (h, log) = sidecar(snapshot(&[&slow.addr_str()], &[], route)).await;
        let r = get(outbound(&h), URL, &[]).await;
        assert_eq!(r.status, 504);
        let lines = log_lines(&log, 1).await;
        assert!(
            lines[0].contains(" 504 URX,UT upstream_per_try_timeout "),
            "{}",
            lines[0]
        );
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn connect_failures_are_retried_on_another_host_for_a_post_too() {
    bounded(async {
        let live = Upstream::start("live").await;
        let dead = dead_addr().await.to_string();
        let (h, _) = sidecar(snapshot(&[&dead, &live.addr_str()], &[], Route::default())).await;
        let mut c = H1Client::connect(outbound(&h)).await;
        for i in 0..6 {
            let r = c
                .send_body("POST", URL, &[("x-expect-pattern", "100")], &pattern(100))
                .await
                .expect("response");
            assert_eq!(r.status, 200, "request {i}: {r:?}");
        }
    })
    .await
}

fn fault(delay: Option<(u64, f64)>, abort: Option<(u16, f64)>) -> Route {
    Route {
        fault: Some(Fault {
            delay_ms: delay.map(|d| d.0),
            delay_percentage: delay.map(|d| d.1),
            abort_status: abort.map(|a| a.0),
            abort_percentage: abort.map(|a| a.1),
        }),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_fault_delay_delays_and_logs_di() {
    bounded(async {
        let up = Upstream::start("svc").await;
        let (h, log) = sidecar(snapshot(
            &[&up.addr_str()],
            &[],
            fault(Some((300, 100.0)), None),
        ))
        .await;
        let t0 = Instant::now();
        let r = get(outbound(&h), URL, &[]).await;
        assert_eq!(r.status, 200);
        let took = t0.elapsed();
        assert!(took >= Duration::from_millis(300), "delayed: {took:?}");
        assert!(took < Duration::from_millis(400), "delayed once: {took:?}");
        let lines = log_lines(&log, 1).await;
        assert!(lines[0].contains(" 200 DI via_upstream "), "{}", lines[0]);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_full_fault_abort_answers_locally_with_fi() {
    bounded(async {
        let up = Upstream::start("svc").await;
        let (h, log) = sidecar(snapshot(
            &[&up.addr_str()],
            &[],
            fault(None, Some((418, 100.0))),
        ))
        .await;
        let r = get(outbound(&h), URL, &[]).await;
        assert_eq!(r.status, 418);
        assert_eq!(r.body, "fault filter abort");
        assert_eq!(up.requests.load(Ordering::SeqCst), 0);
        let lines = log_lines(&log, 1).await;
        assert!(
            lines[0].contains(" 418 FI fault_filter_abort "),
            "{}",
            lines[0]
        );
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_fault_without_percentage_never_fires_and_disables_retries() {
    bounded(async {
        let up = Upstream::start("svc").await;
        up.fail_every.store(2, Ordering::SeqCst);
        let mut route = fault(Some((1000, f64::NAN)), None);
        if let Some(f) = route.fault.as_mut() {
            f.delay_percentage = None;
            f.abort_status = Some(500);
        }
        route.retries = retries(3, &["5xx"]);
        let (h, _) = sidecar(snapshot(&[&up.addr_str()], &[], route)).await;
        let mut c = H1Client::connect(outbound(&h)).await;
        let t0 = Instant::now();
        let statuses: Vec<u16> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(c.get(URL).await.status);
            }
            v
        };
        // The 1000 ms delay never fired.
        let took = t0.elapsed();
        assert!(took < Duration::from_millis(1000), "{took:?}");
        assert_eq!(
            statuses,
            vec![200, 503, 200, 503],
            "no retries with a fault"
        );
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn ten_percent_faults_fire_within_binomial_tolerance() {
    bounded(async {
        let up = Upstream::start("svc").await;
        let (h, log) = sidecar(snapshot(
            &[&up.addr_str()],
            &[],
            fault(Some((1, 10.0)), Some((503, 10.0))),
        ))
        .await;
        let proxy = outbound(&h);
        let n = 1000usize;
        let mut tasks = Vec::new();
        for w in 0..8 {
            tasks.push(tokio::spawn(async move {
                let mut c = H1Client::connect(proxy).await;
                let mut aborts = 0usize;
                for _ in (w..n).step_by(8) {
                    let r = c.get(URL).await;
                    if r.status == 503 && r.body == "fault filter abort" {
                        aborts += 1;
                    }
                }
                aborts
            }));
        }
        let mut aborts = 0;
        for t in tasks {
            aborts += t.await.expect("task");
        }
        let lines = log_lines(&log, n).await;
        let delays = lines.iter().filter(|l| l.contains(" DI")).count();
        let fi = lines.iter().filter(|l| l.contains("FI ")).count();
        // 4 sigma of Binomial(1000, 0.1): sqrt(1000 * 0.1 * 0.9) = 9.49.
        let tol = (4.0 * (n as f64 * 0.1 * 0.9).sqrt()).ceil() as usize;
        for (what, k) in [("aborts", aborts), ("delays", delays), ("FI lines", fi)] {
            assert!(k.abs_diff(100) <= tol, "{what}: {k} of {n}");
        }
        assert_eq!(aborts, fi);
    })
    .await
}

fn mirror_route(percentage: Option<f64>) -> Route {
    Route {
        mirror: Some(Mirror {
            cluster: mirror_cluster(),
            percentage,
        }),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_hundred_requests_are_mirrored_as_marked_copies() {
    bounded(async {
        let up = Upstream::start("primary").await;
        let shadow = Upstream::start("shadow").await;
        let (h, _) = sidecar(snapshot(
            &[&up.addr_str()],
            &[&shadow.addr_str()],
            mirror_route(None),
        ))
        .await;
        let mut c = H1Client::connect(outbound(&h)).await;
        for i in 0..100 {
            let r = if i % 2 == 0 {
                c.get(URL).await
            } else {
                c.send_body("POST", URL, &[("x-expect-pattern", "500")], &pattern(500))
                    .await
                    .expect("response")
            };
            assert_eq!(r.status, 200);
            assert_eq!(r.upstream(), "primary");
            assert!(r.seen_header("x-skein-mirror").is_empty());
        }
        for _ in 0..300 {
            if shadow.mirrored.load(Ordering::SeqCst) >= 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(shadow.mirrored.load(Ordering::SeqCst), 100);
        assert_eq!(shadow.requests.load(Ordering::SeqCst), 100);
        assert_eq!(up.mirrored.load(Ordering::SeqCst), 0);
    })
    .await
}

#[tokio::test(start_paused = true)]
async fn a_hanging_or_failing_mirror_changes_nothing_for_the_client() {
    bounded(async {
        let (hang_addr, hang_accepts) = hanging_server().await;
        let hang = hang_addr.to_string();
        let dead = dead_addr().await.to_string();
        let failing = Upstream::start("failing").await;
        failing.fail_every.store(1, Ordering::SeqCst);
        let up = Upstream::start("primary").await;
        for target in [hang, dead, failing.addr_str()] {
            let (h, _) = sidecar(snapshot(&[&up.addr_str()], &[&target], mirror_route(None))).await;
            let mut c = H1Client::connect(outbound(&h)).await;
            let t0 = Instant::now();
            for _ in 0..100 {
                let r = c
                    .send_body("POST", URL, &[("x-expect-pattern", "64")], &pattern(64))
                    .await
                    .expect("response");
                assert_eq!(r.status, 200, "mirror {target}");
                assert_eq!(r.upstream(), "primary");
            }
            let took = t0.elapsed();
            // No request waited for its copy (a copy is abandoned after 10 s).
            assert!(
                took < Duration::from_secs(3),
                "mirror {target}: 100 requests took {took:?}"
            );
            h.shutdown().await;
        }
        assert_eq!(failing.requests.load(Ordering::SeqCst), 100);
        // Copies to the hanging mirror stay in flight: at most 64 of them (the rest are
        // dropped), each on its own HTTP/1.1 connection.
        let held = hang_accepts.load(Ordering::SeqCst);
        assert!((1..=64).contains(&held), "{held} copies held");
    })
    .await
}
