//! Distributed tracing through two in-process sidecars: app --> client sidecar --> server
//! sidecar inbound --> app upstream, spans reported to a receiver on 127.0.0.1 that decodes
//! them with the formats' own decoders (serde_json for Zipkin v2, prost with the
//! opentelemetry-proto field numbers for OTLP).
//!
//! Wall clock: the exporter's 5-span flush is what delivers the spans here, over real
//! sockets, and each wait is bounded.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use skein_proxy::test_util::*;
use skein_proxy::{ProxyConfig, ProxyHandle};
use skein_snapshot::build::SnapshotBuilder;
use skein_snapshot::telemetry::{CustomTag, TracingProvider};
use skein_snapshot::*;

const STEP: Duration = Duration::from_secs(10);
const NS: &str = "shop";
const URL: &str = "http://was-service:8080/api/posts";

/// What the receiver got: (path, content-type, body) per POST.
type Posts = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A tracing backend that answers `status` to every POST.
async fn receiver(status: u16) -> (SocketAddr, Posts) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let posts: Posts = Arc::default();
    let p = Arc::clone(&posts);
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            let p = Arc::clone(&p);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let p = Arc::clone(&p);
                        async move {
                            let path = req.uri().path().to_string();
                            let ctype = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            p.lock().unwrap().push((path, ctype, body.to_vec()));
                            let mut r = http::Response::new(Full::new(Bytes::new()));
                            *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(r)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, posts)
}

fn traced(snap: &mut Snapshot, provider: TracingProvider, workload: &str) {
    let t = &mut snap.telemetry.tracing;
    t.provider = Some(provider);
    t.sampling.client = 100.0;
    t.sampling.server = 100.0;
    t.mesh_id = "mesh-test".into();
    snap.node.labels.insert("app".into(), workload.into());
    snap.node.pod = format!("{workload}-0");
}

async fn server(app: SocketAddr, provider: TracingProvider) -> ProxyHandle {
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().unwrap())
        .with_inbound("127.0.0.1:0".parse().unwrap(), app);
    let h = skein_proxy::start(cfg).await.expect("server start");
    // The control plane's `inbound|PORT||` names the service the port belongs to.
    let mut snap = SnapshotBuilder::new("v1", NS, "was")
        .cluster(Cluster {
            name: inbound_cluster_name(app.port()),
            service: skein_snapshot::build::fqdn("was-service", NS),
            port: app.port(),
            ..Default::default()
        })
        .build();
    traced(&mut snap, provider, "was");
    snap.telemetry.tracing.custom_tags.server.insert(
        "tenant".into(),
        CustomTag::Header {
            name: "x-tenant".into(),
            default_value: "none".into(),
        },
    );
    h.apply(snap).expect("server snapshot");
    h
}

async fn client(server_inbound: SocketAddr, provider: TracingProvider) -> ProxyHandle {
    let cfg = ProxyConfig::sidecar("127.0.0.1:0".parse().unwrap());
    let h = skein_proxy::start(cfg).await.expect("client start");
    let mut snap = SnapshotBuilder::new("v1", NS, "web")
        .http_service("was-service", 8080, &[&server_inbound.to_string()])
        .build();
    traced(&mut snap, provider, "web");
    snap.telemetry.tracing.custom_tags.client.insert(
        "team".into(),
        CustomTag::Literal {
            value: "storefront".into(),
        },
    );
    h.apply(snap).expect("client snapshot");
    h
}

/// Waits until the receiver has `n` POSTs.
async fn posts(p: &Posts, n: usize) -> Vec<(String, String, Vec<u8>)> {
    tokio::time::timeout(STEP, async {
        loop {
            if p.lock().unwrap().len() >= n {
                return p.lock().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("spans reported within the step")
}

#[tokio::test]
async fn client_and_server_spans_link_up_in_zipkin() {
    let app = Upstream::start("was").await;
    let (rx, got) = receiver(202).await;
    let zipkin = TracingProvider::Zipkin {
        address: rx.to_string(),
        max_tag_length: 0,
    };
    let srv = server(app.addr, zipkin.clone()).await;
    let cli = client(srv.addrs.inbound.expect("inbound"), zipkin).await;
    // Five requests: each sidecar flushes its batch of five.
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = get(outbound(&cli), URL, &[("x-tenant", "acme")]).await;
        assert_eq!(r.status, 200);
        seen.push(r);
    }
    let bodies = posts(&got, 2).await;
    let mut spans = Vec::new();
    for (path, ctype, body) in &bodies {
        assert_eq!(path, "/api/v2/spans");
        assert_eq!(ctype, "application/json");
        let v: serde_json::Value = serde_json::from_slice(body).expect("Zipkin JSON");
        spans.extend(v.as_array().expect("an array").iter().cloned());
    }
    assert_eq!(spans.len(), 10);
    let of_kind =
        |k: &str| -> Vec<&serde_json::Value> { spans.iter().filter(|s| s["kind"] == k).collect() };
    let (clients, servers) = (of_kind("CLIENT"), of_kind("SERVER"));
    assert_eq!((clients.len(), servers.len()), (5, 5));
    let name = "was-service.shop.svc.cluster.local:8080/*";
    for c in &clients {
        // The server span of the same request: same trace, the client span its parent.
        let s = servers
            .iter()
            .find(|s| s["traceId"] == c["traceId"])
            .expect("a server span in the client's trace");
        assert_eq!(s["parentId"], c["id"], "{s}\n{c}");
        assert!(
            c.get("parentId").is_none(),
            "the client span is the root: {c}"
        );
        assert_eq!(c["traceId"].as_str().unwrap().len(), 32);
        assert_eq!(c["name"], name);
        assert_eq!(c["localEndpoint"]["serviceName"], "web.shop");
        assert_eq!(s["localEndpoint"]["serviceName"], "was.shop");
        let ct = &c["tags"];
        assert_eq!(ct["component"], "proxy");
        assert_eq!(ct["http.method"], "GET");
        assert_eq!(ct["http.status_code"], "200");
        assert_eq!(ct["http.url"], "http://was-service:8080/api/posts");
        assert_eq!(
            ct["upstream_cluster"],
            "outbound|8080||was-service.shop.svc.cluster.local"
        );
        assert_eq!(ct["response_flags"], "-");
        assert_eq!(ct["istio.canonical_service"], "web");
        assert_eq!(ct["istio.namespace"], "shop");
        assert_eq!(ct["istio.mesh_id"], "mesh-test");
        assert_eq!(ct["team"], "storefront", "a literal custom tag");
        assert!(ct["node_id"].as_str().unwrap().starts_with("sidecar~"));
        assert!(ct.get("error").is_none());
        let st = &s["tags"];
        assert_eq!(st["guid:x-request-id"], ct["guid:x-request-id"]);
        assert_eq!(st["istio.canonical_service"], "was");
        let inbound = format!("inbound|{}||", app.addr.port());
        assert_eq!(st["upstream_cluster"], inbound.as_str());
        assert_eq!(st["tenant"], "acme", "a header custom tag");
        assert!(st.get("team").is_none(), "custom tags are per direction");
        let server_name = format!("was-service.shop.svc.cluster.local:{}/*", app.addr.port());
        assert_eq!(
            s["name"],
            server_name.as_str(),
            "the inbound span names the service"
        );
        // The request id carries the sampled status (index 14 = '9').
        let rid = ct["guid:x-request-id"].as_str().unwrap();
        assert_eq!(rid.as_bytes()[14], b'9', "{rid}");
    }
    // The app sees the server span as its parent context.
    let r = &seen[0];
    let span_id = r.seen_header("x-b3-spanid");
    let trace_id = r.seen_header("x-b3-traceid");
    let s = servers
        .iter()
        .find(|s| s["traceId"] == trace_id[0].as_str())
        .expect("the app's trace");
    assert_eq!(s["id"], span_id[0].as_str());
    assert_eq!(r.seen_header("x-b3-sampled"), ["1"]);
}

#[tokio::test]
async fn unsampled_requests_propagate_but_report_nothing() {
    let app = Upstream::start("was").await;
    let (rx, got) = receiver(202).await;
    let zipkin = TracingProvider::Zipkin {
        address: rx.to_string(),
        max_tag_length: 0,
    };
    let srv = server(app.addr, zipkin.clone()).await;
    let cli = client(srv.addrs.inbound.expect("inbound"), zipkin).await;
    for _ in 0..5 {
        let r = get(outbound(&cli), URL, &[("x-b3-sampled", "0")]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.seen_header("x-b3-sampled"), ["0"], "the decision travels");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        got.lock().unwrap().is_empty(),
        "nothing sampled, nothing sent"
    );
    // Metrics: nothing dropped.
    let a = cli.addrs.admin.expect("admin");
    let m = get(a, &format!("http://{a}/stats/prometheus"), &[]).await;
    assert!(
        m.body
            .contains("skein_tracing_spans_dropped_total{reason=\"queue_full\"} 0"),
        "{}",
        m.body
    );
}

// === OTLP: the messages as opentelemetry-proto numbers them, decoded by prost ===

#[derive(Clone, PartialEq, prost::Message)]
struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpans>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpans>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Resource {
    #[prost(message, repeated, tag = "1")]
    attributes: Vec<KeyValue>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct ScopeSpans {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<Span>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct Span {
    #[prost(bytes = "vec", tag = "1")]
    trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    name: String,
    #[prost(int32, tag = "6")]
    kind: i32,
    #[prost(fixed64, tag = "7")]
    start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    attributes: Vec<KeyValue>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct KeyValue {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(message, optional, tag = "2")]
    value: Option<AnyValue>,
}
#[derive(Clone, PartialEq, prost::Message)]
struct AnyValue {
    #[prost(string, tag = "1")]
    string_value: String,
}

#[tokio::test]
async fn otlp_spans_carry_w3c_context() {
    use prost::Message;
    let app = Upstream::start("was").await;
    let (rx, got) = receiver(200).await;
    let otlp = TracingProvider::OpenTelemetry {
        address: rx.to_string(),
        path: "/v1/traces".into(),
        headers: [("x-tenant-key".to_string(), "k".to_string())].into(),
    };
    let srv = server(app.addr, otlp.clone()).await;
    let cli = client(srv.addrs.inbound.expect("inbound"), otlp).await;
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    for _ in 0..5 {
        let r = get(outbound(&cli), URL, &[("traceparent", parent)]).await;
        assert_eq!(r.status, 200);
        let tp = r.seen_header("traceparent");
        assert!(
            tp[0].starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp:?}"
        );
        assert!(tp[0].ends_with("-01"));
        assert!(
            r.seen_header("x-b3-traceid").is_empty(),
            "OTLP propagates W3C"
        );
    }
    let bodies = posts(&got, 2).await;
    let mut spans = Vec::new();
    for (path, ctype, body) in &bodies {
        assert_eq!(path, "/v1/traces");
        assert_eq!(ctype, "application/x-protobuf");
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("protobuf");
        for rs in req.resource_spans {
            let svc = rs.resource.unwrap().attributes[0].clone();
            assert_eq!(svc.key, "service.name");
            for ss in rs.scope_spans {
                for s in ss.spans {
                    spans.push((svc.value.clone().unwrap().string_value, s));
                }
            }
        }
    }
    assert_eq!(spans.len(), 10);
    let trace: Vec<u8> = (0..16)
        .map(|i| {
            u8::from_str_radix(&"4bf92f3577b34da6a3ce929d0e0e4736"[i * 2..i * 2 + 2], 16).unwrap()
        })
        .collect();
    for (svc, s) in &spans {
        assert_eq!(s.trace_id, trace, "the incoming trace goes on");
        assert!(s.end_time_unix_nano > s.start_time_unix_nano);
        match s.kind {
            3 => {
                assert_eq!(svc, "web.shop");
                assert_eq!(s.parent_span_id, 0x00f067aa0ba902b7u64.to_be_bytes());
                let server = spans
                    .iter()
                    .find(|(_, o)| o.kind == 2 && o.parent_span_id == s.span_id);
                assert!(server.is_some(), "a server span under each client span");
            }
            2 => assert_eq!(svc, "was.shop"),
            k => panic!("kind {k}"),
        }
        let status = s.attributes.iter().find(|kv| kv.key == "http.status_code");
        assert_eq!(status.unwrap().value.as_ref().unwrap().string_value, "200");
    }
}

#[tokio::test]
async fn a_gateway_reports_its_server_span_and_a_span_per_try() {
    use skein_snapshot::build::{cluster, fqdn, route_to};
    let web = Upstream::start("web").await;
    web.fail_every.store(1, std::sync::atomic::Ordering::SeqCst);
    let (rx, got) = receiver(202).await;
    let c = cluster(&fqdn("web-service", NS), 80, None, &[&web.addr_str()]);
    let mut route = route_to(&c.name);
    route.matches = vec![RouteMatch {
        path: Some(StringMatch::Prefix("/board".into())),
        ..Default::default()
    }];
    route.retries = Some(RetryPolicy {
        attempts: 1,
        per_try_timeout_ms: None,
        retry_on: vec!["5xx".into()],
        retry_remote_localities: false,
    });
    let mut snap = SnapshotBuilder::new("g1", "istio-system", "ingress")
        .vhost(
            GATEWAY_ROUTE,
            VirtualHost {
                name: "blog".into(),
                domains: vec!["blog.example.com".into()],
                routes: vec![route],
            },
        )
        .cluster(c)
        .build();
    traced(
        &mut snap,
        TracingProvider::Zipkin {
            address: rx.to_string(),
            max_tag_length: 0,
        },
        "istio-ingressgateway",
    );
    let h = skein_proxy::start(ProxyConfig::gateway("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("gateway start");
    h.apply(snap).expect("gateway snapshot");
    let gw = h.addrs.gateway_http.expect("gateway http");
    // Two requests of three spans each: the first batch of five holds all of the first.
    for _ in 0..2 {
        let r = get(gw, "http://blog.example.com/board/1", &[]).await;
        assert_eq!(r.status, 503);
    }
    let bodies = posts(&got, 1).await;
    let spans: Vec<serde_json::Value> = serde_json::from_slice(&bodies[0].2).unwrap();
    let server = spans
        .iter()
        .find(|s| s["kind"] == "SERVER")
        .expect("server span");
    let tries: Vec<_> = spans
        .iter()
        .filter(|s| s["traceId"] == server["traceId"] && s["kind"] == "CLIENT")
        .collect();
    assert_eq!(tries.len(), 2, "a span per try: {spans:#?}");
    let name = "web-service.shop.svc.cluster.local:80/board*";
    assert_eq!(
        server["name"], name,
        "the route's decorator with its prefix"
    );
    assert_eq!(server["tags"]["error"], "true");
    assert_eq!(server["tags"]["http.status_code"], "503");
    assert!(
        server["tags"]["node_id"]
            .as_str()
            .unwrap()
            .starts_with("router~")
    );
    assert_eq!(
        server["localEndpoint"]["serviceName"],
        "istio-ingressgateway.istio-system"
    );
    for t in &tries {
        assert_eq!(t["parentId"], server["id"]);
        assert_eq!(t["name"], name);
        assert_eq!(t["tags"]["http.status_code"], "503");
        assert_eq!(t["tags"]["upstream_address"], web.addr_str().as_str());
    }
    assert_ne!(tries[0]["id"], tries[1]["id"]);
}

/// Istio's decorator for a split route: zero-weight destinations are dropped (one left is a
/// single cluster, named by its host), a real split is named by the VirtualService.
#[tokio::test]
async fn a_split_route_is_named_by_its_virtual_service() {
    use skein_snapshot::build::{cluster, fqdn, weighted_route};
    let web = Upstream::start("web").await;
    let (rx, got) = receiver(202).await;
    let host = fqdn("web-service", NS);
    let stable = cluster(&host, 80, Some("stable"), &[&web.addr_str()]);
    let canary = cluster(&host, 80, Some("canary"), &[&web.addr_str()]);
    let route = |w: u32, prefix: &str| {
        let mut r = weighted_route(&[(&stable.name, 100 - w), (&canary.name, w)]);
        r.virtual_service = "web-vsvc".into();
        r.matches = vec![RouteMatch {
            path: Some(StringMatch::Prefix(prefix.into())),
            ..Default::default()
        }];
        r
    };
    let mut snap = SnapshotBuilder::new("g1", "istio-system", "ingress")
        .vhost(
            GATEWAY_ROUTE,
            VirtualHost {
                name: "blog".into(),
                domains: vec!["blog.example.com".into()],
                routes: vec![route(0, "/api/"), route(50, "/board")],
            },
        )
        .cluster(stable)
        .cluster(canary)
        .build();
    traced(
        &mut snap,
        TracingProvider::Zipkin {
            address: rx.to_string(),
            max_tag_length: 0,
        },
        "istio-ingressgateway",
    );
    let h = skein_proxy::start(ProxyConfig::gateway("127.0.0.1:0".parse().unwrap()))
        .await
        .expect("gateway start");
    h.apply(snap).expect("gateway snapshot");
    let gw = h.addrs.gateway_http.expect("gateway http");
    for path in ["/api/posts", "/board", "/board"] {
        assert_eq!(
            get(gw, &format!("http://blog.example.com{path}"), &[])
                .await
                .status,
            200
        );
    }
    // Six spans (a server and a try per request) fill the first batch of five.
    let bodies = posts(&got, 1).await;
    let spans: Vec<serde_json::Value> = serde_json::from_slice(&bodies[0].2).unwrap();
    let names: std::collections::BTreeSet<_> = spans
        .iter()
        .filter(|s| s["kind"] == "SERVER")
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "web-service.shop.svc.cluster.local:80/api/*".to_string(),
            "web-vsvc:80/board*".to_string()
        ]
        .into(),
        "{spans:#?}"
    );
}
