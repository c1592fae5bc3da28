//! blog-was and blog-web export their spans over OTLP/HTTP protobuf to an in-test receiver that
//! decodes what arrives with prost: the handler span's parent is the caller's span, the SQL
//! spans are the handler's children, and blog-web's span is the parent the was sees.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test that cannot go on fails here

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use blog::server::ServerHandle;
use blog::trace::TraceConfig;
use blog::was::{self, Config};
use common::Http;
use http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use tokio::net::TcpListener;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// One span as received, with its service's name.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<Value> {
        self.span
            .attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    }

    fn str_attr(&self, key: &str) -> Option<String> {
        match self.attr(key) {
            Some(Value::StringValue(s)) => Some(s),
            _ => None,
        }
    }

    fn int_attr(&self, key: &str) -> Option<i64> {
        match self.attr(key) {
            Some(Value::IntValue(i)) => Some(i),
            _ => None,
        }
    }

    fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    fn parent(&self) -> String {
        hex(&self.span.parent_span_id)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Got>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
}

impl Receiver {
    /// An OTLP/HTTP receiver on an ephemeral port.
    async fn start() -> Result<(Self, ServerHandle)> {
        let r = Receiver::default();
        let state = r.clone();
        let app = Router::new().route(
            "/v1/traces",
            post(move |headers: HeaderMap, body: Bytes| {
                let state = state.clone();
                async move {
                    let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                        return (http::StatusCode::BAD_REQUEST, Vec::new());
                    };
                    let mut got = Vec::new();
                    for rs in req.resource_spans {
                        let service = rs
                            .resource
                            .iter()
                            .flat_map(|r| r.attributes.iter())
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| kv.value.clone())
                            .and_then(|v| match v.value {
                                Some(Value::StringValue(s)) => Some(s),
                                _ => None,
                            })
                            .unwrap_or_default();
                        for ss in rs.scope_spans {
                            for span in ss.spans {
                                got.push(Got {
                                    service: service.clone(),
                                    span,
                                });
                            }
                        }
                    }
                    state.spans.lock().unwrap().extend(got);
                    state.headers.lock().unwrap().push(headers);
                    let ok = ExportTraceServiceResponse::default().encode_to_vec();
                    (http::StatusCode::OK, ok)
                }
            }),
        );
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let handle = ServerHandle::spawn(listener, app)?;
        Ok((r, handle))
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the spans received (10 s at most).
    async fn wait_for(&self, what: &str, pred: impl Fn(&[Got]) -> bool) -> Result<Vec<Got>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let spans = self.spans();
            if pred(&spans) {
                return Ok(spans);
            }
            ensure!(
                Instant::now() < deadline,
                "{what}: not received; got {:#?}",
                spans
                    .iter()
                    .map(|g| (&g.service, &g.span.name, g.trace_id(), g.parent()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn trace_config(receiver: SocketAddr, service: &str) -> TraceConfig {
    let mut c = TraceConfig::new(
        format!("http://{receiver}/v1/traces").parse().unwrap(),
        service,
    );
    c.schedule_delay = Duration::from_millis(100);
    c.export_timeout = Duration::from_secs(2);
    c
}

fn was_config(dir: &tempfile::TempDir, tracing: Option<TraceConfig>) -> Config {
    Config {
        listen_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        db_connect_timeout: Duration::from_secs(5),
        tracing,
        ..Config::new(format!("sqlite://{}", dir.path().join("blog.db").display()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn was_spans_join_the_callers_trace() -> Result<()> {
    let (receiver, rx_handle) = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let server = was::start(was_config(
        &dir,
        Some(trace_config(rx_handle.local_addr(), "was.blog-system")),
    ))
    .await?;
    let c = Http::new(format!("http://{}", server.local_addr()));

    let tp = format!("00-{TRACE}-{CALLER}-01");
    let r = c
        .send(
            Method::GET,
            "/api/posts?page=0&size=5",
            &[("traceparent", &tp)],
            None,
        )
        .await?;
    ensure!(r.status == 200, "list: {}", r.status);
    // B3 multi from a Zipkin-configured sidecar.
    let r = c
        .send(
            Method::GET,
            "/api/posts/1",
            &[
                ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
                ("x-b3-spanid", "e457b5a2e4d86bd1"),
                ("x-b3-sampled", "1"),
            ],
            None,
        )
        .await?;
    ensure!(r.status == 200, "get: {}", r.status);
    // The sidecar decided not to sample: the app follows.
    let unsampled = "11111111111111111111111111111111";
    c.send(
        Method::GET,
        "/api/posts",
        &[("traceparent", &format!("00-{unsampled}-{CALLER}-00"))],
        None,
    )
    .await?;
    // A probe with no trace context gets no span.
    c.send(Method::GET, "/actuator/health", &[], None).await?;
    server.flush_spans().await;

    let spans = receiver
        .wait_for("the list's spans", |s| {
            s.iter().filter(|g| g.trace_id() == TRACE).count() >= 3
                && s.iter()
                    .any(|g| g.trace_id() == "80f198ee56343ba864fe8b2a57d3eff7")
        })
        .await?;
    let ours: Vec<&Got> = spans.iter().filter(|g| g.trace_id() == TRACE).collect();
    let handler = ours
        .iter()
        .find(|g| g.span.kind == SpanKind::Server as i32)
        .expect("a server span");
    assert_eq!(handler.span.name, "GET /api/posts");
    assert_eq!(handler.service, "was.blog-system");
    assert_eq!(handler.parent(), CALLER, "the caller's span is the parent");
    assert_eq!(
        handler.str_attr("http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        handler.str_attr("http.route").as_deref(),
        Some("/api/posts")
    );
    assert_eq!(handler.int_attr("http.response.status_code"), Some(200));

    let sql: Vec<&&Got> = ours
        .iter()
        .filter(|g| g.span.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(sql.len(), 2, "the page and the count: {sql:#?}");
    for s in &sql {
        assert_eq!(s.parent(), handler.span_id(), "{}", s.span.name);
        assert_eq!(s.str_attr("db.system").as_deref(), Some("sqlite"));
        assert_eq!(s.str_attr("db.operation").as_deref(), Some("SELECT"));
        assert!(s.span.start_time_unix_nano >= handler.span.start_time_unix_nano);
        assert!(s.span.end_time_unix_nano <= handler.span.end_time_unix_nano);
    }
    let page = sql
        .iter()
        .find(|s| {
            s.str_attr("db.statement")
                .is_some_and(|q| q.contains("LIMIT ? OFFSET ?"))
        })
        .expect("the page query");
    assert_eq!(page.span.name, "SELECT posts");
    assert_eq!(page.int_attr("db.response.returned_rows"), Some(1));
    let count = sql
        .iter()
        .find(|s| s.str_attr("db.statement").as_deref() == Some("SELECT COUNT(*) FROM posts"))
        .expect("the count query");
    assert_eq!(count.int_attr("db.response.returned_rows"), Some(1));

    let b3 = spans
        .iter()
        .find(|g| {
            g.trace_id() == "80f198ee56343ba864fe8b2a57d3eff7"
                && g.span.kind == SpanKind::Server as i32
        })
        .expect("the B3 request's span");
    assert_eq!(b3.span.name, "GET /api/posts/{id}");
    assert_eq!(b3.parent(), "e457b5a2e4d86bd1");

    assert!(
        !spans.iter().any(|g| g.trace_id() == unsampled),
        "an unsampled caller's request is not exported"
    );
    assert!(
        !spans
            .iter()
            .any(|g| g.str_attr("url.path").as_deref() == Some("/actuator/health")),
        "probes without a trace context are not traced"
    );
    // The exports say "do not sample" to the sidecar they go through.
    let headers = receiver.headers.lock().unwrap().clone();
    assert!(!headers.is_empty());
    for h in &headers {
        assert_eq!(h.get("x-b3-sampled").unwrap(), "0");
        assert!(h.get("traceparent").unwrap().to_str()?.ends_with("-00"));
        assert_eq!(h.get("content-type").unwrap(), "application/x-protobuf");
    }
    server.shutdown().await?;
    rx_handle.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_span_is_the_parent_the_was_sees() -> Result<()> {
    let (receiver, rx_handle) = Receiver::start().await?;
    let dir = tempfile::tempdir()?;
    let was_server = was::start(was_config(
        &dir,
        Some(trace_config(rx_handle.local_addr(), "was.blog-system")),
    ))
    .await?;
    let mut wc = blog::web::Config::new(&format!("http://{}", was_server.local_addr()))?;
    wc.listen_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    wc.tracing = Some(trace_config(rx_handle.local_addr(), "web.blog-system"));
    let web = blog::web::start(wc).await?;
    let c = Http::new(format!("http://{}", web.local_addr()));
    let tp = format!("00-{TRACE}-{CALLER}-01");
    let r = c
        .send(
            Method::GET,
            "/api/posts",
            &[("traceparent", &tp), ("x-request-id", "req-1")],
            None,
        )
        .await?;
    ensure!(r.status == 200, "via web: {}", r.status);
    web.flush_spans().await;
    was_server.flush_spans().await;
    let spans = receiver
        .wait_for("web, was and SQL spans", |s| {
            s.iter().filter(|g| g.trace_id() == TRACE).count() >= 4
        })
        .await?;
    let find = |service: &str, kind: SpanKind| {
        spans
            .iter()
            .find(|g| g.trace_id() == TRACE && g.service == service && g.span.kind == kind as i32)
            .cloned()
            .expect("span")
    };
    let web_span = find("web.blog-system", SpanKind::Server);
    assert_eq!(web_span.span.name, "GET /api/{*rest}");
    assert_eq!(web_span.parent(), CALLER);
    let was_span = find("was.blog-system", SpanKind::Server);
    assert_eq!(
        was_span.parent(),
        web_span.span_id(),
        "blog-web names its own span as the parent"
    );
    let sql = find("was.blog-system", SpanKind::Client);
    assert_eq!(sql.parent(), was_span.span_id());
    web.shutdown().await?;
    was_server.shutdown().await?;
    rx_handle.shutdown().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_collector_neither_fails_nor_slows_requests() -> Result<()> {
    let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
    let dir = tempfile::tempdir()?;
    let mut tc = trace_config(closed, "was.blog-system");
    tc.schedule_delay = Duration::from_millis(10);
    let server = was::start(was_config(&dir, Some(tc))).await?;
    let c = Http::new(format!("http://{}", server.local_addr()));
    let started = Instant::now();
    for i in 0..50 {
        let tp = format!("00-{TRACE}-{:016x}-01", i + 1);
        let r = c
            .send(Method::GET, "/api/posts", &[("traceparent", &tp)], None)
            .await?;
        ensure!(r.status == 200, "request {i}: {}", r.status);
    }
    let took = started.elapsed();
    ensure!(took < Duration::from_secs(10), "50 requests took {took:?}");
    let started = Instant::now();
    server.shutdown().await?;
    ensure!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown with a dead collector took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// What exporting costs a request: GET /api/posts (two SQL statements) against was with
/// export off and on, interleaved in rounds. Run by hand:
/// `cargo test --release -p blog --test tracing -- --ignored --nocapture export_cost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, not a check"]
async fn export_cost() -> Result<()> {
    let (_receiver, rx_handle) = Receiver::start().await?;
    let dir_off = tempfile::tempdir()?;
    let dir_on = tempfile::tempdir()?;
    let off = was::start(was_config(&dir_off, None)).await?;
    let on = was::start(was_config(
        &dir_on,
        Some(trace_config(rx_handle.local_addr(), "was.blog-system")),
    ))
    .await?;
    let c_off = Http::new(format!("http://{}", off.local_addr()));
    let c_on = Http::new(format!("http://{}", on.local_addr()));
    const N: usize = 1000;
    let run = |c: Http| async move {
        let started = Instant::now();
        for i in 0..N {
            let tp = format!("00-{TRACE}-{:016x}-01", i + 1);
            c.send(Method::GET, "/api/posts", &[("traceparent", &tp)], None)
                .await
                .unwrap();
        }
        started.elapsed().as_secs_f64() * 1e6 / N as f64
    };
    run(c_off.clone()).await;
    run(c_on.clone()).await;
    let (mut offs, mut ons) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        offs.push(run(c_off.clone()).await);
        ons.push(run(c_on.clone()).await);
    }
    let ratios: Vec<f64> = ons.iter().zip(&offs).map(|(a, b)| a / b).collect();
    eprintln!("us/request off: {offs:.0?}");
    eprintln!("us/request on:  {ons:.0?}");
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    eprintln!("on/off per round: {ratios:.3?}; median {:.3}", sorted[2]);
    off.shutdown().await?;
    on.shutdown().await?;
    Ok(())
}
