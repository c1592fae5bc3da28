//! The tracing store with real clients: the OpenTelemetry Python SDK's OTLP/HTTP exporter and
//! its Zipkin v2 JSON exporter send spans to a `skein trace-store` process, and its Jaeger
//! query API (and `skein traces` / `skein trace` on it) gives them back with their parents and
//! typed tags. Then hostile requests, each answered with a clear 4xx.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::*;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `skein trace-store` process, killed (by its pid) on drop.
struct Store {
    child: Child,
    zipkin: String,
    otlp: String,
    query: String,
}

impl Drop for Store {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_store(extra: &[&str]) -> Store {
    let (z, o, q) = (free_port(), free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_skein"))
        .args(["trace-store", "--zipkin", &format!("127.0.0.1:{z}")])
        .args(["--otlp", &format!("127.0.0.1:{o}")])
        .args(["--query", &format!("127.0.0.1:{q}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start skein trace-store");
    let store = Store {
        child,
        zipkin: format!("http://127.0.0.1:{z}"),
        otlp: format!("http://127.0.0.1:{o}"),
        query: format!("http://127.0.0.1:{q}"),
    };
    eventually(Duration::from_secs(20), "the store's /status", || {
        TcpStream::connect(store.query.trim_start_matches("http://"))
            .ok()
            .map(|_| ())
    });
    store
}

/// A POST that keeps going when the server answers before reading the whole body (a 413).
fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (authority, path) = rest.split_at(rest.find('/').unwrap());
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let mut s = TcpStream::connect(authority).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let _ = s.write_all(req.as_bytes()).and_then(|_| s.write_all(body));
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

fn python() -> std::path::PathBuf {
    let py = repo_root().join("target/otel-python/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.http, opentelemetry.exporter.zipkin.json"])
            .status()
            .is_ok_and(|s| s.success());
    assert!(
        ok,
        "the OpenTelemetry Python SDK is missing from {}: install it with \
         `bash -c '. scripts/deps.sh && install_otel_python'` (./scripts/test does)",
        py.display()
    );
    py
}

fn tag<'a>(span: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    span["tags"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("no tag {key} in {span}"))
}

#[test]
fn spans_from_real_otlp_and_zipkin_clients_come_back_with_parents_and_tags() {
    let py = python();
    let store = start_store(&[]);
    let out = Command::new(py)
        .arg(repo_root().join("crates/skein/tests/fixtures/tracing/send_spans.py"))
        .arg(format!("{}/v1/traces", store.otlp))
        .arg(format!("{}/api/v2/spans", store.zipkin))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    for (via, service) in [("otlp", "py-otlp"), ("zipkin", "py-zipkin")] {
        let ids = &sent[via];
        let trace_id = ids["trace"].as_str().unwrap();
        let r = get(&format!("{}/api/traces/{trace_id}", store.query));
        assert_eq!(r.status, 200, "{via}: {r:?}");
        let v = r.json();
        assert_eq!(v["errors"], serde_json::Value::Null, "{v}");
        let t = &v["data"][0];
        assert_eq!(t["traceID"], trace_id);
        let spans = t["spans"].as_array().unwrap();
        assert_eq!(spans.len(), 3, "{via}: {t}");
        let by_id = |id: &serde_json::Value| spans.iter().find(|s| s["spanID"] == *id).unwrap();
        let (root, child, grandchild) = (
            by_id(&ids["root"]),
            by_id(&ids["child"]),
            by_id(&ids["grandchild"]),
        );
        assert_eq!(root["references"], serde_json::json!([]), "{via}");
        assert_eq!(root["operationName"], "GET /checkout");
        let parent_of = |s: &serde_json::Value| s["references"][0].clone();
        assert_eq!(
            parent_of(child),
            serde_json::json!({"refType": "CHILD_OF", "traceID": trace_id, "spanID": ids["root"]}),
            "{via}"
        );
        assert_eq!(parent_of(grandchild)["spanID"], ids["child"], "{via}");
        let process = &t["processes"][root["processID"].as_str().unwrap()];
        assert_eq!(process["serviceName"], service, "{via}: {t}");
        assert!(
            root["startTime"].as_u64().unwrap() > 1_600_000_000_000_000,
            "µs"
        );
        assert!(child["duration"].as_u64().unwrap() <= root["duration"].as_u64().unwrap());
        assert_eq!(tag(root, "span.kind")["value"], "server");
        assert_eq!(tag(child, "span.kind")["value"], "client");
        assert_eq!(tag(child, "db.system")["value"], "mysql");
        assert_eq!(
            tag(grandchild, "error")["value"],
            true,
            "{via}: {grandchild}"
        );
        if via == "otlp" {
            // OTLP's attributes keep their types; Zipkin's tags are strings.
            assert_eq!(
                *tag(root, "http.status_code"),
                serde_json::json!({"key": "http.status_code", "type": "int64", "value": 200})
            );
            assert_eq!(tag(root, "vip")["type"], "bool");
            assert_eq!(tag(root, "ratio")["value"], 0.5);
            assert_eq!(tag(root, "otel.scope.name")["value"], "skein-test");
            assert_eq!(child["logs"][0]["fields"][0]["value"], "cache miss");
            assert!(
                process["tags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|t| t["key"] == "deployment" && t["value"] == "test"),
                "{process}"
            );
        } else {
            assert_eq!(tag(root, "http.status_code")["value"], "200");
            assert_eq!(child["logs"][0]["fields"][0]["key"], "event");
        }
        // Found by a search with a tag, and listed among the service's operations.
        let r = get(&format!(
            "{}/api/traces?service={service}&tag=db.system:mysql&limit=5",
            store.query
        ));
        assert_eq!(r.json()["data"][0]["traceID"], trace_id, "{via}: {r:?}");
        let ops = get(&format!(
            "{}/api/services/{service}/operations",
            store.query
        ))
        .json();
        assert_eq!(
            ops["data"],
            serde_json::json!(["GET /checkout", "SELECT cart", "decode row"]),
            "{via}"
        );
    }
    let ops = get(&format!(
        "{}/api/operations?service=py-otlp&spanKind=client",
        store.query
    ))
    .json();
    assert_eq!(
        ops["data"],
        serde_json::json!([{"name": "SELECT cart", "spanKind": "client"}])
    );
    let services = get(&format!("{}/api/services", store.query)).json();
    assert_eq!(
        services["data"],
        serde_json::json!(["py-otlp", "py-zipkin"])
    );
    assert_eq!(services["total"], 2);

    // The CLI on the same store.
    let skein = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_skein"))
            .args(args)
            .args(["--url", &store.query])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let list: serde_json::Value = serde_json::from_str(&skein(&["traces", "-o", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|t| t["spans"] == 3 && t["errors"] == 1)
    );
    let table = skein(&["traces", "--service", "py-otlp"]);
    assert!(table.contains("py-otlp: GET /checkout"), "{table}");
    let otlp_trace = sent["otlp"]["trace"].as_str().unwrap();
    let w = skein(&["trace", otlp_trace, "--color", "never"]);
    assert!(w.starts_with(&format!("trace {otlp_trace}")), "{w}");
    assert!(w.contains("\n  py-otlp SELECT cart"), "{w}");
    assert!(w.contains("\n    py-otlp decode row"), "{w}");
    assert!(w.contains("<< slowest"), "{w}");
}

#[test]
fn hostile_requests_get_clear_4xx_answers_and_are_counted() {
    let store = start_store(&["--max-body-bytes", "1000000", "--max-items", "10000"]);
    let zipkin = format!("{}/api/v2/spans", store.zipkin);
    let otlp = format!("{}/v1/traces", store.otlp);
    let json = [("Content-Type", "application/json")];

    let (s, b) = post(&zipkin, &json, b"not json");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("not a Zipkin v2 JSON span list"), "{b}");
    let (s, b) = post(&zipkin, &json, br#"[{"traceId":"zz","id":"01"}]"#);
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("span 0") && b.contains("trace id"), "{b}");
    // Deep nesting is a 400, not a crash.
    let deep = format!("{}{}", "[".repeat(200_000), "]".repeat(200_000));
    assert_eq!(post(&zipkin, &json, deep.as_bytes()).0, 400);
    // A body over the limit, and many tiny spans under it.
    let big = vec![b' '; 1_200_000];
    let (s, b) = post(&zipkin, &json, &big);
    assert_eq!(s, 413, "{b}");
    let many = format!("[{}]", vec!["{}"; 50_000].join(","));
    assert_eq!(post(&zipkin, &json, many.as_bytes()).0, 413);
    // A gzip bomb: a small body that inflates past the limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b'['; 5_000_000]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 100_000);
    let (s, b) = post(
        &zipkin,
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &bomb,
    );
    assert_eq!(s, 413, "{b}");

    let (s, b) = post(&otlp, &[("Content-Type", "text/plain")], b"x");
    assert_eq!(s, 415, "{b}");
    let (s, b) = post(
        &otlp,
        &[("Content-Type", "application/x-protobuf")],
        &[0x0a, 0xff, 0x01],
    );
    assert_eq!(s, 400, "{b}");
    let (s, b) = post(&otlp, &json, b"{\"resourceSpans\": 7}");
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("\"message\""), "OTLP's JSON error status: {b}");
    // A valid empty request: 200 with an empty response, in the request's format.
    let (s, b) = post(&otlp, &json, b"{}");
    assert_eq!((s, b.trim()), (200, "{}"));

    let r = get(&format!("{}/api/traces/not-hex", store.query));
    assert_eq!(r.status, 400, "{r:?}");
    let r = get(&format!("{}/api/traces/0123456789abcdef", store.query));
    assert_eq!(r.status, 404, "{r:?}");
    assert_eq!(r.json()["errors"][0]["msg"], "trace not found");
    let r = get(&format!("{}/api/traces", store.query));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"][0]["msg"],
        "parameter 'service' is required"
    );
    let r = get(&format!("{}/jaeger/api/services", store.query));
    assert_eq!(r.status, 200, "the addon's base path: {r:?}");

    let m = get(&format!("{}/metrics", store.query)).body;
    assert!(
        m.contains("skein_trace_store_requests_refused_total{reason=\"too_large\"} 3"),
        "{m}"
    );
    assert!(
        m.contains("skein_trace_store_requests_refused_total{reason=\"malformed\"} 5"),
        "{m}"
    );
    assert!(
        m.contains("skein_trace_store_spans_received_total 0"),
        "{m}"
    );
}

#[test]
fn skein_up_runs_the_store_behind_the_addons_services() {
    let skein = Skein::new();
    let out = skein.up("examples/blog-system", &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("tracing: http://"), "{stdout}");
    let status = skein.status();
    let url = status["tracing"]["url"]
        .as_str()
        .expect("tracing.url")
        .to_string();
    assert_eq!(
        status["tracing"]["collector"],
        "jaeger-collector.istio-system.svc:9411"
    );
    let table = String::from_utf8_lossy(&skein.run(&["status"]).stdout).into_owned();
    assert!(table.contains(&format!("tracing: {url}")), "{table}");
    let pod = &skein.pods("jaeger")[0];
    assert_eq!(pod["namespace"], "istio-system");
    assert_eq!(pod["ready"], true, "{pod}");
    assert!(pod["proxy"].is_null(), "no sidecar, as the addon: {pod}");

    // The addon's Services are registered: proxies get clusters for them.
    let out = skein.run(&["proxy-config", "web", "clusters"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for svc in [
        "jaeger-collector.istio-system",
        "tracing.istio-system",
        "zipkin.istio-system",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(svc)),
            "no {svc} cluster in:\n{text}"
        );
    }
    let collector = text
        .lines()
        .find(|l| l.starts_with("jaeger-collector.istio-system.svc.cluster.local"))
        .unwrap();
    assert!(collector.contains("9411"), "{collector}");

    // Spans sent to the store come back through `skein traces` and `skein trace`.
    let zipkin = status["tracing"]["zipkin"].as_str().unwrap();
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let span = format!(
        r#"[{{"traceId":"4bf92f3577b34da6a3ce929d0e0e4736","id":"00f067aa0ba902b7",
        "name":"get /api/posts","kind":"SERVER","timestamp":{now_us},"duration":1500,
        "localEndpoint":{{"serviceName":"was.blog-system"}}}}]"#
    );
    let (s, b) = post(
        zipkin,
        &[("Content-Type", "application/json")],
        span.as_bytes(),
    );
    assert_eq!(s, 202, "{b}");
    let out = skein.run(&["traces", "--service", "was.blog-system", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(
        list[0]["traceID"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{list}"
    );
    let out = skein.run(&["trace", "4bf92f3577b34da6a3ce929d0e0e4736"]);
    let w = String::from_utf8_lossy(&out.stdout);
    assert!(w.contains("was.blog-system get /api/posts"), "{w}");
    let services = get(&format!("{url}/jaeger/api/services")).json();
    assert_eq!(services["data"], serde_json::json!(["was.blog-system"]));

    // From inside the mesh, through a sidecar: the name proxies are configured with.
    let body = span
        .replace("00f067aa0ba902b7", "00f067aa0ba902b8")
        .replace("was.blog-system", "in-mesh");
    let out = skein.run(&[
        "exec",
        "-n",
        "blog-system",
        "--",
        "curl",
        "-s",
        "-m",
        "10",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-H",
        "Content-Type: application/json",
        "--data",
        &body,
        "http://jaeger-collector.istio-system.svc:9411/api/v2/spans",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "202",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let services = get(&format!("{url}/api/services")).json();
    assert_eq!(
        services["data"],
        serde_json::json!(["in-mesh", "was.blog-system"])
    );
}

#[test]
fn forwarded_spans_reach_the_next_collector() {
    let next = start_store(&[]);
    let first = start_store(&["--forward", &format!("{}/v1/traces", next.otlp)]);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros();
    let spans = format!(
        r#"[{{"traceId":"0af7651916cd43dd8448eb211c80319c","id":"b7ad6b7169203331","name":"a",
            "timestamp":{now_us},"duration":10,"localEndpoint":{{"serviceName":"front"}}}},
           {{"traceId":"0af7651916cd43dd8448eb211c80319c","id":"b7ad6b7169203332",
            "parentId":"b7ad6b7169203331","name":"b","timestamp":{now_us},"duration":5,
            "localEndpoint":{{"serviceName":"back"}},"tags":{{"k":"v"}}}}]"#
    );
    let (s, b) = post(
        &format!("{}/api/v2/spans", first.zipkin),
        &[("Content-Type", "application/json")],
        spans.as_bytes(),
    );
    assert_eq!(s, 202, "{b}");
    let t = eventually(Duration::from_secs(20), "the forwarded trace", || {
        let r = get(&format!(
            "{}/api/traces/0af7651916cd43dd8448eb211c80319c",
            next.query
        ));
        (r.status == 200).then(|| r.json()["data"][0].clone())
    });
    let spans = t["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 2, "{t}");
    let b = spans.iter().find(|s| s["operationName"] == "b").unwrap();
    assert_eq!(b["references"][0]["spanID"], "b7ad6b7169203331");
    assert_eq!(tag(b, "k")["value"], "v");
    let deps = get(&format!("{}/api/dependencies?lookback=60000", next.query)).json();
    assert_eq!(
        deps["data"],
        serde_json::json!([{"parent": "front", "child": "back", "callCount": 1}])
    );
    // The sender counts a batch once the collector has answered.
    eventually(Duration::from_secs(10), "the forwarder's counter", || {
        let m = get(&format!("{}/metrics", first.query)).body;
        m.contains("skein_trace_store_forward_spans_total{outcome=\"sent\"} 2")
            .then_some(())
    });
}
