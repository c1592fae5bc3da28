//! One trace across the whole blog under `skein up examples/blog-system`: a request through
//! the ingress gives the gateway's, both sidecars', both apps' and the SQL statement's spans,
//! each the child of the hop before it, in the tracing store. Then a fault delay on was seen
//! in the web sidecar's client span, a hostile trace context replaced by a fresh trace, the
//! waterfall of `skein trace`, and sampling turned off by a Telemetry change while the trace
//! headers still reach was.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::*;

const GATEWAY: &str = "istio-ingressgateway.istio-system";

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

fn tag<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    span["tags"]
        .as_array()?
        .iter()
        .find(|t| t["key"] == key)
        .map(|t| &t["value"])
}

fn kind(span: &Value) -> &str {
    tag(span, "span.kind").and_then(Value::as_str).unwrap_or("")
}

/// A proxy's span (Envoy's `component: proxy`), not an app's.
fn is_proxy(span: &Value) -> bool {
    tag(span, "component").is_some_and(|v| v == "proxy")
}

fn parent(span: &Value) -> Option<&str> {
    span["references"]
        .as_array()?
        .iter()
        .find(|r| r["refType"] == "CHILD_OF")
        .and_then(|r| r["spanID"].as_str())
}

fn end(span: &Value) -> u64 {
    span["startTime"].as_u64().unwrap() + span["duration"].as_u64().unwrap()
}

/// One hop of the request's path: whose span it is and of which kind.
struct Hop {
    name: &'static str,
    service: &'static str,
    kind: &'static str,
    proxy: bool,
}

const HOPS: [Hop; 8] = [
    Hop {
        name: "gateway (server)",
        service: "istio-ingressgateway",
        kind: "server",
        proxy: true,
    },
    Hop {
        name: "gateway (upstream client)",
        service: "istio-ingressgateway",
        kind: "client",
        proxy: true,
    },
    Hop {
        name: "web sidecar (server)",
        service: "web",
        kind: "server",
        proxy: true,
    },
    Hop {
        name: "web app",
        service: "web",
        kind: "server",
        proxy: false,
    },
    Hop {
        name: "web sidecar (client)",
        service: "web",
        kind: "client",
        proxy: true,
    },
    Hop {
        name: "was sidecar (server)",
        service: "was",
        kind: "server",
        proxy: true,
    },
    Hop {
        name: "was app",
        service: "was",
        kind: "server",
        proxy: false,
    },
    Hop {
        name: "SQL statement",
        service: "was",
        kind: "client",
        proxy: false,
    },
];

fn service<'a>(trace: &'a Value, span: &Value) -> &'a str {
    trace["processes"][span["processID"].as_str().unwrap_or("")]["serviceName"]
        .as_str()
        .unwrap_or("")
}

fn is_hop(trace: &Value, span: &Value, hop: &Hop) -> bool {
    let svc = service(trace, span);
    (svc == hop.service || svc.starts_with(&format!("{}.", hop.service)))
        && kind(span) == hop.kind
        && is_proxy(span) == hop.proxy
}

/// The gateway's span of the copy web-vsvc mirrors to the canary subset (web's stable pods
/// while no update of its Rollout runs).
fn is_mirror(span: &Value) -> bool {
    tag(span, "upstream_cluster")
        .and_then(Value::as_str)
        .is_some_and(|c| c.contains("|canary|"))
}

/// The spans of the 8 hops, each the child of the one before (the first a root), following
/// the primary request (a mirrored copy is a second path, tried after it).
fn path(trace: &Value) -> Option<Vec<Value>> {
    fn walk(trace: &Value, spans: &[Value], from: Option<&Value>, i: usize) -> Option<Vec<Value>> {
        let Some(hop) = HOPS.get(i) else {
            return Some(Vec::new());
        };
        let mut candidates: Vec<&Value> = spans
            .iter()
            .filter(|s| is_hop(trace, s, hop))
            .filter(|s| match from {
                None => parent(s).is_none(),
                Some(p) => parent(s) == p["spanID"].as_str(),
            })
            .collect();
        // The primary before a mirrored copy (web-vsvc mirrors to the canary subset).
        candidates.sort_by_key(|s| is_mirror(s));
        candidates.into_iter().find_map(|s| {
            let mut rest = walk(trace, spans, Some(s), i + 1)?;
            rest.insert(0, s.clone());
            Some(rest)
        })
    }
    walk(trace, trace["spans"].as_array()?, None, 0)
}

/// A short listing of a trace's spans, for failure messages.
fn listing(trace: &Value) -> String {
    let mut out = String::new();
    for s in trace["spans"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "{} <- {:?} {} {} {} proxy={} {}µs\n",
            s["spanID"].as_str().unwrap_or(""),
            parent(s),
            service(trace, s),
            kind(s),
            s["operationName"].as_str().unwrap_or(""),
            is_proxy(s),
            s["duration"]
        ));
    }
    out
}

struct Store {
    url: String,
}

impl Store {
    fn trace(&self, id: &str) -> Option<Value> {
        let r = get(&format!("{}/api/traces/{id}", self.url));
        (r.status == 200).then(|| r.json()["data"][0].clone())
    }

    /// Ids of the gateway's traces that started at or after `since` (µs).
    fn gateway_traces(&self, since: u64) -> Vec<String> {
        let r = get(&format!(
            "{}/api/traces?service={GATEWAY}&start={since}&limit=100",
            self.url
        ));
        if r.status != 200 {
            return Vec::new();
        }
        r.json()["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["traceID"].as_str().map(str::to_string))
            .collect()
    }

    /// Every span stored that started at or after `since`, of any service.
    fn spans_since(&self, since: u64) -> Vec<String> {
        let services = get(&format!("{}/api/services", self.url)).json();
        let mut out = Vec::new();
        for svc in services["data"].as_array().into_iter().flatten() {
            let svc = svc.as_str().unwrap();
            let r = get(&format!(
                "{}/api/traces?service={svc}&start={since}&limit=1000",
                self.url
            ));
            for t in r.json()["data"].as_array().into_iter().flatten() {
                for s in t["spans"].as_array().into_iter().flatten() {
                    if s["startTime"].as_u64().unwrap_or(0) >= since {
                        out.push(format!(
                            "{} {} {}",
                            t["traceID"].as_str().unwrap_or(""),
                            svc,
                            s["operationName"].as_str().unwrap_or("")
                        ));
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// The one new trace started by a request sent at `since`, once all its hops are stored.
    fn new_trace(&self, since: u64, seen: &mut HashSet<String>, what: &str) -> (String, Value) {
        let deadline = Instant::now() + Duration::from_secs(25);
        let mut last = String::from("no new trace at the gateway");
        loop {
            let ids: Vec<String> = self
                .gateway_traces(since)
                .into_iter()
                .filter(|id| !seen.contains(id))
                .collect();
            for id in &ids {
                let Some(t) = self.trace(id) else { continue };
                if path(&t).is_some() {
                    seen.insert(id.clone());
                    return (id.clone(), t);
                }
                last = format!("{id}:\n{}", listing(&t));
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; the newest trace:\n{last}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

/// Each proxied pod's acknowledged config version.
fn versions(skein: &Skein) -> Vec<(String, String)> {
    skein.status()["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| !p["proxy"].is_null())
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["proxy"]["config_version"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

/// Waits until the proxies of the pods whose names start with one of `pods` have acknowledged
/// a config newer than in `before`.
fn wait_for_push(skein: &Skein, before: &[(String, String)], pods: &[&str]) {
    eventually(Duration::from_secs(20), "the proxies' new config", || {
        let now = versions(skein);
        now.iter()
            .filter(|(n, _)| pods.iter().any(|p| n.starts_with(p)))
            .all(|(n, v)| before.iter().any(|(bn, bv)| bn == n && bv != v))
            .then_some(())
    });
}

const FAULT: &str = "\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: was-vsvc
  namespace: blog-system
spec:
  hosts:
  - was-service
  http:
  - name: was-default
    fault:
      delay:
        percentage:
          value: 100.0
        fixedDelay: 700ms
    route:
    - destination:
        host: was-service
        port:
          number: 8080
";

const NO_SAMPLING: &str = "\
apiVersion: telemetry.istio.io/v1alpha1
kind: Telemetry
metadata:
  name: tracing-default
  namespace: istio-system
spec:
  tracing:
  - randomSamplingPercentage: 0.0
";

/// The example's mesh config with an access log that shows the trace headers a proxy got.
const MESH_TRACE_LOG: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: istio
  namespace: istio-system
data:
  mesh: |-
    accessLogFile: /dev/stdout
    accessLogFormat: "trace-headers %REQ(:PATH)% b3=%REQ(X-B3-TRACEID)%/%REQ(X-B3-SPANID)%/%REQ(X-B3-SAMPLED)% tp=%REQ(TRACEPARENT)%\n"
    enableTracing: true
    defaultConfig:
      tracing:
        zipkin:
          address: jaeger-collector.istio-system.svc:9411
"#;

fn valid_trace_id(id: &str) -> bool {
    (id.len() == 16 || id.len() == 32)
        && id.bytes().all(|b| b.is_ascii_hexdigit())
        && id.bytes().any(|b| b != b'0')
}

#[test]
fn one_request_is_one_trace_through_every_hop() {
    let started = Instant::now();
    let skein = Skein::new();
    skein.up("examples/blog-system", &[]);
    let store = Store {
        url: skein.status()["tracing"]["url"]
            .as_str()
            .expect("tracing.url")
            .to_string(),
    };
    let base = skein.http_base();
    let posts = format!("{base}/api/posts");
    let mut seen = HashSet::new();

    // 1. One GET, one trace, the 8 spans of its 7 hops, each the child of the one before.
    let t0 = now_us();
    let r = get(&posts);
    assert_eq!(r.status, 200, "{r:?}");
    let (id, trace) = store.new_trace(t0, &mut seen, "the request's trace with every hop");
    assert!(valid_trace_id(&id), "{id}");
    let hops = path(&trace).unwrap();
    for (i, (span, hop)) in hops.iter().zip(&HOPS).enumerate() {
        assert_eq!(span["traceID"], id.as_str(), "{}", hop.name);
        match i {
            0 => assert_eq!(parent(span), None, "the gateway's span is the root"),
            _ => assert_eq!(
                parent(span),
                hops[i - 1]["spanID"].as_str(),
                "{}'s parent is {}:\n{}",
                hop.name,
                HOPS[i - 1].name,
                listing(&trace)
            ),
        }
        // Each hop lies within the one before it (one machine, one clock).
        if i > 0 {
            let p = &hops[i - 1];
            assert!(
                span["startTime"].as_u64() >= p["startTime"].as_u64() && end(span) <= end(p) + 1000,
                "{} inside {}:\n{}",
                hop.name,
                HOPS[i - 1].name,
                listing(&trace)
            );
        }
    }
    assert!(
        tag(&hops[7], "db.system").is_some(),
        "the SQL span names its database: {}",
        hops[7]
    );
    // Istio's route decorator: web-vsvc's primary route sends 100 % to stable (the 0 %
    // canary destination is dropped), so the gateway's spans are named by the one host.
    assert_eq!(
        hops[0]["operationName"],
        "web-service.blog-system.svc.cluster.local:80/api/*",
        "{}",
        listing(&trace)
    );
    // The mirrored copy's span at the gateway starts before, and lasts about as long as,
    // web's span of the copy (a pod of the canary subset).
    // The copy's spans come in that pod's own batches, maybe after the primary's: wait.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (trace, mirror, copy) = loop {
        let t = store.trace(&id).unwrap_or_else(|| trace.clone());
        let spans = t["spans"].as_array().cloned().unwrap_or_default();
        let mirror = spans
            .iter()
            .find(|s| is_mirror(s) && kind(s) == "client")
            .cloned();
        let copy = mirror.as_ref().and_then(|m| {
            spans
                .iter()
                .find(|s| parent(s) == m["spanID"].as_str())
                .cloned()
        });
        match (mirror, copy) {
            (Some(m), Some(c)) => break (t, m, c),
            (m, _) if Instant::now() > deadline => panic!(
                "{}:\n{}",
                if m.is_none() {
                    "no mirror span"
                } else {
                    "no span of the copy"
                },
                listing(&t)
            ),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(
        mirror["startTime"].as_u64() <= copy["startTime"].as_u64()
            && mirror["duration"].as_u64().unwrap() * 2 >= copy["duration"].as_u64().unwrap(),
        "the mirror's span covers its copy:\n{}",
        listing(&trace)
    );

    // Only the one request's trace: nothing else started at the gateway.
    std::thread::sleep(Duration::from_millis(1000));
    let others: Vec<_> = store
        .gateway_traces(t0)
        .into_iter()
        .filter(|t| *t != id)
        .collect();
    assert!(others.is_empty(), "one request, one trace: {others:?}");

    // 4. A hostile trace context on the ingress request: a fresh trace, and a 200.
    let hostile: [(&str, &str); 5] = [
        (
            "traceparent",
            "00-00000000000000000000000000000000-0000000000000000-01",
        ),
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01",
        ),
        (
            "traceparent",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("b3", "00000000000000000000000000000000-0000000000000000-1"),
        ("b3", "4bf92f3577b34da6a3ce929d0e0e473-xyz-1-ffff"),
    ];
    for (name, value) in hostile {
        let t = now_us();
        let r = request("GET", &posts, &[(name, value)], b"", None);
        assert_eq!(r.status, 200, "{name}: {value}: {r:?}");
        let (id, trace) = store.new_trace(t, &mut seen, &format!("the trace of {name}: {value}"));
        assert!(valid_trace_id(&id), "{name}: {value}: {id}");
        assert!(
            !value.contains(&id) && id.bytes().any(|b| b != b'0'),
            "{name}: {value}: {id}"
        );
        let root = &path(&trace).unwrap()[0];
        assert_eq!(parent(root), None, "{name}: {value}: a new root");
    }

    // 2. A 700 ms fault delay on was: the web sidecar's client span to was takes it, inside
    // the web app's span.
    let before = versions(&skein);
    skein.apply_yaml("was-fault.yaml", FAULT);
    wait_for_push(&skein, &before, &["web-"]);
    let (slow_id, hops) = eventually(Duration::from_secs(20), "a delayed request", || {
        let t = now_us();
        let start = Instant::now();
        let r = get(&posts);
        assert_eq!(r.status, 200, "{r:?}");
        if start.elapsed() < Duration::from_millis(650) {
            return None;
        }
        let (id, trace) = store.new_trace(t, &mut seen, "the delayed request's trace");
        Some((id, path(&trace).unwrap()))
    });
    let (web, client, was) = (&hops[3], &hops[4], &hops[5]);
    let d = client["duration"].as_u64().unwrap();
    assert!(d >= 650_000, "the web sidecar's client span: {d}µs");
    assert!(
        client["startTime"].as_u64() >= web["startTime"].as_u64() && end(client) <= end(web),
        "the client span lies inside the web app's: {client}\n{web}"
    );
    assert!(
        tag(client, "upstream_cluster")
            .and_then(Value::as_str)
            .is_some_and(|c| c.contains("was-service")),
        "{client}"
    );
    assert!(
        was["duration"].as_u64().unwrap() < d - 500_000,
        "was itself is not delayed: {was}"
    );

    // 5. `skein trace` marks the span where the time went: the web sidecar's client span.
    let out = skein.run(&["trace", &slow_id, "--color", "never"]);
    let w = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(w.starts_with(&format!("trace {slow_id}")), "{w}");
    let marked: Vec<&str> = w.lines().filter(|l| l.ends_with("<< slowest")).collect();
    assert_eq!(marked.len(), 1, "{w}");
    let client_op = client["operationName"].as_str().unwrap();
    assert!(
        marked[0].trim_start().starts_with("web.blog-system ")
            && marked[0].contains(&client_op[..client_op.len().min(20)]),
        "the slow span marked:\n{w}"
    );

    // 3. Sampling off: no spans from a request, but its trace headers still reach was.
    let before = versions(&skein);
    // One apply, so that one push carries all three.
    let no_fault = FAULT.replace(
        "    fault:\n      delay:\n        percentage:\n          value: 100.0\n        fixedDelay: 700ms\n",
        "",
    );
    assert!(!no_fault.contains("fixedDelay"));
    skein.apply_yaml(
        "unsampled.yaml",
        &format!("{MESH_TRACE_LOG}---\n{NO_SAMPLING}---\n{no_fault}"),
    );
    wait_for_push(&skein, &before, &["web-", "was-", "istio-ingressgateway"]);
    let was_pods: Vec<String> = skein
        .pods("was")
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let t = now_us();
    for i in 0..3 {
        let r = get(&format!("{posts}?unsampled={i}"));
        assert_eq!(r.status, 200, "{r:?}");
    }
    // Each request reaches was (one of its pods) from web, and so does its mirrored copy:
    // every line of them says "not sampled", with a trace id.
    let lines = eventually(Duration::from_secs(10), "was's access log lines", || {
        let lines: Vec<String> = was_pods
            .iter()
            .flat_map(|p| {
                skein
                    .proxy_log(p)
                    .lines()
                    .filter(|l| l.starts_with("trace-headers /api/posts?unsampled="))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        (0..3)
            .all(|i| lines.iter().any(|l| l.contains(&format!("unsampled={i} "))))
            .then_some(lines)
    });
    for line in &lines {
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .unwrap()
        };
        let b3: Vec<&str> = field("b3=").split('/').collect();
        assert!(valid_trace_id(b3[0]), "a trace id reaches was: {line}");
        assert_eq!(b3.get(2), Some(&"0"), "not sampled: {line}");
        let tp = field("tp=");
        assert!(tp == "-" || tp.ends_with("-00"), "not sampled: {line}");
    }
    // The Zipkin reporter flushes every 5 s: after 6 s, any span of those requests is stored.
    std::thread::sleep(Duration::from_millis(6500));
    let spans = store.spans_since(t);
    assert!(spans.is_empty(), "no spans with sampling off: {spans:?}");

    eprintln!("tracing e2e took {:?}", started.elapsed());
}
