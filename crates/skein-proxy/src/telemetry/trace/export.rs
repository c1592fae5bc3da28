//! Span export that never slows a request: the request's end hands its spans to a bounded
//! channel with `try_send` (a full queue drops them and counts the drop); one task batches
//! them as Envoy's Zipkin reporter does (a flush at 5 spans or every 5 s) and POSTs each
//! batch, bounded by a 5 s timeout. A reply other than 202 (Zipkin) or 2xx (OTLP), or no
//! reply, drops the batch and counts it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;

use super::span::{Destination, Format, Span};

/// Envoy's `min_flush_spans`.
pub(crate) const FLUSH_SPANS: usize = 5;
/// Envoy's `flush_interval_ms`.
pub(crate) const FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// Envoy's reporter timeout.
pub(crate) const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spans waiting for the exporter at most; more are dropped.
pub(crate) const QUEUE: usize = 4096;

/// One span and where it goes.
#[derive(Debug)]
struct Queued {
    dest: Arc<Destination>,
    span: Span,
}

/// Counters of `/stats/prometheus`.
#[derive(Debug, Default)]
pub(crate) struct ExportCounts {
    /// Spans the backend accepted.
    pub(crate) sent: AtomicU64,
    /// Spans dropped because the queue was full.
    pub(crate) dropped_queue: AtomicU64,
    /// Spans dropped because their export failed.
    pub(crate) dropped_failed: AtomicU64,
}

/// The request side of the exporter.
#[derive(Debug)]
pub(crate) struct Exporter {
    tx: mpsc::Sender<Queued>,
    pub(crate) counts: Arc<ExportCounts>,
}

impl Exporter {
    /// Starts the exporter task on the current runtime.
    pub(crate) fn start() -> Exporter {
        Self::with_capacity(QUEUE)
    }

    pub(crate) fn with_capacity(cap: usize) -> Exporter {
        let (tx, rx) = mpsc::channel(cap);
        let counts = Arc::new(ExportCounts::default());
        tokio::spawn(run(rx, Arc::clone(&counts)));
        Exporter { tx, counts }
    }

    /// Queues `spans` for `dest`; never waits.
    pub(crate) fn send(&self, dest: &Arc<Destination>, spans: Vec<Span>) {
        for span in spans {
            let q = Queued {
                dest: Arc::clone(dest),
                span,
            };
            if self.tx.try_send(q).is_err() {
                self.counts.dropped_queue.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The exporter's counters in Prometheus text.
    pub(crate) fn encode(&self) -> String {
        let c = &self.counts;
        format!(
            "# HELP skein_tracing_spans_sent Spans accepted by the tracing backend.\n\
             # TYPE skein_tracing_spans_sent counter\n\
             skein_tracing_spans_sent_total {}\n\
             # HELP skein_tracing_spans_dropped Spans not delivered: the export queue was full, or the backend did not accept them.\n\
             # TYPE skein_tracing_spans_dropped counter\n\
             skein_tracing_spans_dropped_total{{reason=\"queue_full\"}} {}\n\
             skein_tracing_spans_dropped_total{{reason=\"export_failed\"}} {}\n",
            c.sent.load(Ordering::Relaxed),
            c.dropped_queue.load(Ordering::Relaxed),
            c.dropped_failed.load(Ordering::Relaxed),
        )
    }
}

/// Adds the exporter's counters to an exposition from the metrics registry (before its
/// `# EOF`, when it has one).
pub(crate) fn append_to(mut exposition: String, exporter: &Exporter) -> String {
    let extra = exporter.encode();
    match exposition.rfind("# EOF") {
        Some(i) => exposition.insert_str(i, &extra),
        None => exposition.push_str(&extra),
    }
    exposition
}

/// The exporter task: batches per destination, flushes at [`FLUSH_SPANS`] or every
/// [`FLUSH_INTERVAL`]; ends when every sender is gone (after a last flush).
async fn run(mut rx: mpsc::Receiver<Queued>, counts: Arc<ExportCounts>) {
    let mut batch: Vec<Span> = Vec::with_capacity(FLUSH_SPANS);
    let mut dest: Option<Arc<Destination>> = None;
    let mut client = Client::default();
    let mut tick = tokio::time::interval(FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            q = rx.recv() => {
                let Some(q) = q else { break };
                if dest.as_ref().is_some_and(|d| !Arc::ptr_eq(d, &q.dest) && **d != *q.dest)
                    && !batch.is_empty()
                {
                    flush(&mut client, dest.as_deref(), &mut batch, &counts).await;
                }
                dest = Some(q.dest);
                batch.push(q.span);
                if batch.len() >= FLUSH_SPANS {
                    flush(&mut client, dest.as_deref(), &mut batch, &counts).await;
                }
            }
            _ = tick.tick() => {
                if !batch.is_empty() {
                    flush(&mut client, dest.as_deref(), &mut batch, &counts).await;
                }
            }
        }
    }
    if !batch.is_empty() {
        flush(&mut client, dest.as_deref(), &mut batch, &counts).await;
    }
}

async fn flush(
    client: &mut Client,
    dest: Option<&Destination>,
    batch: &mut Vec<Span>,
    counts: &ExportCounts,
) {
    let n = batch.len() as u64;
    let Some(dest) = dest else {
        batch.clear();
        return;
    };
    let (body, ctype) = match dest.format {
        Format::Zipkin => (super::zipkin::encode(batch), "application/json"),
        Format::Otlp => (super::otlp::encode(batch), "application/x-protobuf"),
    };
    batch.clear();
    let ok = tokio::time::timeout(EXPORT_TIMEOUT, client.post(dest, body, ctype))
        .await
        .unwrap_or(Err(ExportError::Timeout));
    match ok {
        Ok(()) => {
            counts.sent.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            tracing::debug!(error = %e, spans = n, host = %dest.host, "span export failed");
            counts.dropped_failed.fetch_add(n, Ordering::Relaxed);
            client.conn = None;
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("no tracing backend endpoint")]
    NoEndpoint,
    #[error("cannot connect to the tracing backend: {0}")]
    Connect(std::io::Error),
    #[error("HTTP error talking to the tracing backend: {0}")]
    Http(#[from] hyper::Error),
    #[error("the tracing backend answered {0}")]
    Status(StatusCode),
    #[error("the tracing backend did not answer within {EXPORT_TIMEOUT:?}")]
    Timeout,
}

/// One kept HTTP/1.1 connection to the backend, and which endpoint is next.
#[derive(Default)]
struct Client {
    conn: Option<(
        std::net::SocketAddr,
        hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    )>,
    next: usize,
}

impl Client {
    async fn post(
        &mut self,
        dest: &Destination,
        body: Vec<u8>,
        ctype: &'static str,
    ) -> Result<(), ExportError> {
        let reuse = self
            .conn
            .as_mut()
            .filter(|(a, tx)| dest.addrs.contains(a) && !tx.is_closed());
        let tx = match reuse {
            Some((_, tx)) => tx,
            None => {
                if dest.addrs.is_empty() {
                    return Err(ExportError::NoEndpoint);
                }
                let addr = dest.addrs[self.next % dest.addrs.len()];
                self.next = self.next.wrapping_add(1);
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .map_err(ExportError::Connect)?;
                let _ = stream.set_nodelay(true);
                let (tx, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                &mut self.conn.insert((addr, tx)).1
            }
        };
        tx.ready().await?;
        let mut req = Request::post(dest.path.as_str())
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| ExportError::Status(StatusCode::BAD_REQUEST))?;
        let h = req.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&dest.host) {
            h.insert(header::HOST, v);
        }
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
        for (k, v) in &dest.headers {
            h.insert(k.clone(), v.clone());
        }
        let resp = tx.send_request(req).await?;
        let status = resp.status();
        // Read the reply to its end so the connection can carry the next batch.
        let _ = resp.into_body().collect().await;
        let accepted = match dest.format {
            Format::Zipkin => status == StatusCode::ACCEPTED,
            Format::Otlp => status.is_success(),
        };
        if accepted {
            Ok(())
        } else {
            Err(ExportError::Status(status))
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("conn", &self.conn.as_ref().map(|c| c.0))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::trace::zipkin::tests::example;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A backend on 127.0.0.1 that answers `status` and keeps each request body.
    async fn backend(status: u16) -> (std::net::SocketAddr, Arc<Mutex<Vec<Vec<u8>>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::clone(&bodies);
        tokio::spawn(async move {
            loop {
                let (s, _) = l.accept().await.unwrap();
                let b = Arc::clone(&b);
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let b = Arc::clone(&b);
                            async move {
                                let body = req.into_body().collect().await.unwrap().to_bytes();
                                b.lock().unwrap().push(body.to_vec());
                                let mut r = http::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                                Ok::<_, std::convert::Infallible>(r)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, bodies)
    }

    fn dest(addr: std::net::SocketAddr) -> Arc<Destination> {
        Arc::new(Destination {
            format: Format::Zipkin,
            addrs: vec![addr],
            host: "zipkin.istio-system.svc:9411".into(),
            path: "/api/v2/spans".into(),
            headers: Vec::new(),
        })
    }

    async fn settle(c: &ExportCounts, want: u64) {
        for _ in 0..200 {
            if c.sent.load(Ordering::Relaxed) + c.dropped_failed.load(Ordering::Relaxed) >= want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn five_spans_flush_at_once() {
        let (addr, bodies) = backend(202).await;
        let e = Exporter::start();
        e.send(&dest(addr), (0..5).map(|_| example()).collect());
        settle(&e.counts, 5).await;
        assert_eq!(e.counts.sent.load(Ordering::Relaxed), 5);
        let got = bodies.lock().unwrap().clone();
        assert_eq!(got.len(), 1, "one batch");
        let v: serde_json::Value = serde_json::from_slice(&got[0]).unwrap();
        assert_eq!(v.as_array().unwrap().len(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn fewer_spans_wait_for_the_interval() {
        let (addr, bodies) = backend(202).await;
        let e = Exporter::start();
        e.send(&dest(addr), vec![example(), example()]);
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(bodies.lock().unwrap().is_empty(), "not before 5 s");
        tokio::time::sleep(Duration::from_secs(2)).await;
        // The POST runs on real sockets: let it finish.
        for _ in 0..100 {
            if e.counts.sent.load(Ordering::Relaxed) == 2 {
                break;
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(e.counts.sent.load(Ordering::Relaxed), 2);
        assert_eq!(bodies.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_refused_batch_is_counted_as_dropped() {
        let (addr, _) = backend(500).await;
        let e = Exporter::start();
        e.send(&dest(addr), (0..5).map(|_| example()).collect());
        settle(&e.counts, 5).await;
        assert_eq!(e.counts.dropped_failed.load(Ordering::Relaxed), 5);
        assert_eq!(e.counts.sent.load(Ordering::Relaxed), 0);
        // Nobody listening at all: also dropped, never a wait on the sender's side.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = l.local_addr().unwrap();
        drop(l);
        e.send(&dest(gone), (0..5).map(|_| example()).collect());
        settle(&e.counts, 10).await;
        assert_eq!(e.counts.dropped_failed.load(Ordering::Relaxed), 10);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_queue_drops_without_waiting() {
        // A backend that accepts and never answers keeps the exporter busy.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = [0u8; 1024];
            while s.read(&mut buf).await.unwrap_or(0) > 0 {}
            let _ = s.shutdown().await;
        });
        let e = Exporter::with_capacity(8);
        // The task has not run yet (current thread): 8 fit, 4 are dropped.
        e.send(&dest(addr), (0..12).map(|_| example()).collect());
        assert_eq!(e.counts.dropped_queue.load(Ordering::Relaxed), 4);
        let text = append_to("a 1\n# EOF\n".into(), &e);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("skein_tracing_spans_dropped_total{reason=\"queue_full\"} 4"),
            "{text}"
        );
    }
}
