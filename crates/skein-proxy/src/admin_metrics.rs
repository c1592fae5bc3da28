//! The merged metrics endpoint, as Istio's agent serves it on `:15020/stats/prometheus`: the
//! proxy's own metrics, two counters of the merging itself, then the app's own metrics,
//! scraped from the app when Prometheus scrapes the proxy.
//!
//! The app's scrape is bounded: it gets the time Prometheus allows (its
//! `X-Prometheus-Scrape-Timeout-Seconds`, less a margin; 5 s without it, 10 s at most) and
//! at most [`APP_METRICS_MAX_BYTES`]. An app that fails, is slow, answers non-200 or too
//! much is left out of that scrape (and counted in
//! `istio_agent_scrape_failures_total{type="application"}`); the proxy's metrics are served
//! either way.
//!
//! Format: the app's metrics go last, as in Istio, since an OpenMetrics exposition ends with
//! `# EOF`. When the app answers OpenMetrics the whole reply is OpenMetrics; when it answers
//! Prometheus text (0.0.4), the whole reply is text, which the proxy's own metrics also
//! parse as (the text parser takes the OpenMetrics type and unit lines as metadata or
//! comments).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::AppMetrics;
use crate::shared::Shared;

/// The app's scrape without a timeout from Prometheus.
pub(crate) const APP_SCRAPE_DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the app's scrape may take, whatever Prometheus allows.
pub(crate) const APP_SCRAPE_MAX_TIMEOUT: Duration = Duration::from_secs(10);
/// The most the app's metrics may weigh (Prometheus's own default has no limit; a sidecar
/// holds this much only while it relays one scrape).
pub(crate) const APP_METRICS_MAX_BYTES: usize = 8 << 20;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
const EOF: &str = "# EOF\n";

/// Counts of the merged endpoint's scrapes (Istio's `istio_agent_scrapes_total` and
/// `istio_agent_scrape_failures_total{type="application"}`).
#[derive(Debug, Default)]
pub(crate) struct ScrapeCounts {
    scrapes: AtomicU64,
    app_failures: AtomicU64,
}

/// Why the app's metrics were left out of a scrape.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppScrapeError {
    #[error("cannot connect to the app's metrics at {addr}: {error}")]
    Connect {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    #[error("the app's metrics at {addr}{path}: {error}")]
    Http {
        addr: std::net::SocketAddr,
        path: String,
        error: String,
    },
    #[error("the app's metrics at {addr}{path} answered {status}, not 200")]
    Status {
        addr: std::net::SocketAddr,
        path: String,
        status: u16,
    },
    #[error("the app's metrics at {addr}{path} are larger than {max} bytes; they are left out")]
    TooLarge {
        addr: std::net::SocketAddr,
        path: String,
        max: usize,
    },
    #[error("the app's metrics at {addr}{path} took longer than {timeout:?}")]
    Timeout {
        addr: std::net::SocketAddr,
        path: String,
        timeout: Duration,
    },
}

/// The app's reply: whether it is OpenMetrics, and the exposition.
#[derive(Debug)]
pub(crate) struct AppReply {
    openmetrics: bool,
    body: Bytes,
}

/// What the merged endpoint answers to one scrape.
pub(crate) async fn merged(
    shared: &Shared,
    counts: &ScrapeCounts,
    headers: &HeaderMap,
) -> Response<Full<Bytes>> {
    counts.scrapes.fetch_add(1, Ordering::Relaxed);
    let app = match &shared.config.app_metrics {
        None => None,
        Some(app) => {
            let timeout = scrape_timeout(headers);
            match scrape(app, headers, timeout, APP_METRICS_MAX_BYTES).await {
                Ok(reply) => Some(reply),
                Err(e) => {
                    counts.app_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "failed scraping application metrics");
                    None
                }
            }
        }
    };
    let (ctype, body) = merge(
        &crate::telemetry::trace::export::append_to(shared.metrics.encode(), &shared.traces),
        counts,
        app.as_ref(),
    );
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

/// How long the app's scrape may take: 90 % of what Prometheus allows the whole scrape,
/// else the default; never more than the maximum.
pub(crate) fn scrape_timeout(headers: &HeaderMap) -> Duration {
    headers
        .get("x-prometheus-scrape-timeout-seconds")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(APP_SCRAPE_DEFAULT_TIMEOUT, |s| {
            Duration::from_secs_f64((s * 0.9).min(APP_SCRAPE_MAX_TIMEOUT.as_secs_f64()))
        })
}

/// One GET of the app's metrics over a new HTTP/1.1 connection, bounded in time and size.
pub(crate) async fn scrape(
    app: &AppMetrics,
    headers: &HeaderMap,
    timeout: Duration,
    max: usize,
) -> Result<AppReply, AppScrapeError> {
    let (addr, path) = (app.addr, app.path.clone());
    match tokio::time::timeout(timeout, scrape_unbounded(app, headers, max)).await {
        Ok(r) => r,
        Err(_) => Err(AppScrapeError::Timeout {
            addr,
            path,
            timeout,
        }),
    }
}

async fn scrape_unbounded(
    app: &AppMetrics,
    headers: &HeaderMap,
    max: usize,
) -> Result<AppReply, AppScrapeError> {
    let (addr, path) = (app.addr, app.path.as_str());
    let http = |error: String| AppScrapeError::Http {
        addr,
        path: path.to_string(),
        error,
    };
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| AppScrapeError::Connect { addr, error })?;
    let _ = stream.set_nodelay(true);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| http(e.to_string()))?;
    let conn = tokio::spawn(conn);
    let mut req = Request::get(path)
        .header(header::HOST, addr.to_string())
        .header(header::USER_AGENT, "skein-proxy metrics merge");
    // The app chooses its format by what Prometheus accepts, as if it were scraped itself.
    if let Some(accept) = headers.get(header::ACCEPT) {
        req = req.header(header::ACCEPT, accept);
    }
    let req = req
        .body(Empty::<Bytes>::new())
        .map_err(|e| http(e.to_string()))?;
    let result = async {
        let resp = tx
            .send_request(req)
            .await
            .map_err(|e| http(e.to_string()))?;
        if resp.status() != StatusCode::OK {
            return Err(AppScrapeError::Status {
                addr,
                path: path.to_string(),
                status: resp.status().as_u16(),
            });
        }
        let openmetrics = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/openmetrics-text")
            });
        let body = Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    AppScrapeError::TooLarge {
                        addr,
                        path: path.to_string(),
                        max,
                    }
                } else {
                    http(e.to_string())
                }
            })?
            .to_bytes();
        Ok(AppReply { openmetrics, body })
    }
    .await;
    conn.abort();
    result
}

/// The merged exposition and its content type.
pub(crate) fn merge(
    own: &str,
    counts: &ScrapeCounts,
    app: Option<&AppReply>,
) -> (&'static str, String) {
    let own = own.strip_suffix(EOF).unwrap_or(own);
    let openmetrics = app.is_none_or(|a| a.openmetrics);
    let app_text = app.map(|a| String::from_utf8_lossy(&a.body));
    let mut out =
        String::with_capacity(own.len() + 512 + app_text.as_ref().map_or(0, |t| t.len() + 1));
    out.push_str(own);
    let (scrapes, failures) = (
        counts.scrapes.load(Ordering::Relaxed),
        counts.app_failures.load(Ordering::Relaxed),
    );
    // OpenMetrics names a counter's family without `_total`; the text format names the sample.
    let family = |name: &str| {
        if openmetrics {
            name.to_string()
        } else {
            format!("{name}_total")
        }
    };
    out.push_str(&format!(
        "# HELP {f} The number of scrapes of the merged metrics endpoint.\n# TYPE {f} counter\nistio_agent_scrapes_total {scrapes}\n",
        f = family("istio_agent_scrapes")
    ));
    out.push_str(&format!(
        "# HELP {f} The number of scrapes whose application metrics were left out.\n# TYPE {f} counter\nistio_agent_scrape_failures_total{{type=\"application\"}} {failures}\n",
        f = family("istio_agent_scrape_failures")
    ));
    match app_text {
        Some(t) => {
            out.push_str(&t);
            if !t.is_empty() && !t.ends_with('\n') {
                out.push('\n');
            }
            if openmetrics && !t.trim_end().ends_with("# EOF") {
                out.push_str(EOF);
            }
        }
        None => out.push_str(EOF),
    }
    (if openmetrics { OPENMETRICS } else { TEXT }, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const OWN: &str = "# HELP istio_requests Requests.\n# TYPE istio_requests counter\nistio_requests_total{reporter=\"destination\"} 3\n# EOF\n";

    /// An app that answers every connection with `reply` (raw HTTP/1.1), or never answers.
    async fn app(reply: Option<Vec<u8>>) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    match reply {
                        Some(r) => {
                            let _ = s.write_all(&r).await;
                        }
                        None => std::future::pending::<()>().await,
                    }
                });
            }
        });
        addr
    }

    fn http_reply(ctype: &str, body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn target(addr: SocketAddr) -> AppMetrics {
        AppMetrics {
            addr,
            path: "/metrics".into(),
        }
    }

    #[tokio::test]
    async fn text_app_metrics_follow_the_proxys_as_text() {
        let body = "# TYPE blog_posts_total counter\nblog_posts_total 7\n";
        let addr = app(Some(http_reply(TEXT, body))).await;
        let reply = scrape(
            &target(addr),
            &HeaderMap::new(),
            Duration::from_secs(5),
            1 << 20,
        )
        .await
        .expect("scraped");
        assert!(!reply.openmetrics);
        let counts = ScrapeCounts::default();
        counts.scrapes.fetch_add(1, Ordering::Relaxed);
        let (ctype, out) = merge(OWN, &counts, Some(&reply));
        assert_eq!(ctype, TEXT);
        assert!(!out.contains("# EOF"), "text has no EOF marker:\n{out}");
        let proxy = out.find("istio_requests_total").expect("proxy metrics");
        let agent = out
            .find("istio_agent_scrapes_total 1")
            .expect("scrape count");
        let app = out.find("blog_posts_total 7").expect("app metrics");
        assert!(proxy < agent && agent < app, "{out}");
        assert!(out.contains("# TYPE istio_agent_scrapes_total counter"));
    }

    #[tokio::test]
    async fn openmetrics_app_metrics_end_the_exposition_once() {
        let body = "# TYPE blog_posts counter\nblog_posts_total 7\n# EOF\n";
        let addr = app(Some(http_reply(OPENMETRICS, body))).await;
        let reply = scrape(
            &target(addr),
            &HeaderMap::new(),
            Duration::from_secs(5),
            1 << 20,
        )
        .await
        .expect("scraped");
        assert!(reply.openmetrics);
        let (ctype, out) = merge(OWN, &ScrapeCounts::default(), Some(&reply));
        assert_eq!(ctype, OPENMETRICS);
        assert_eq!(out.matches("# EOF").count(), 1, "{out}");
        assert!(out.ends_with("blog_posts_total 7\n# EOF\n"), "{out}");
        assert!(out.contains("# TYPE istio_agent_scrapes counter"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_app_that_never_answers_times_out() {
        let addr = app(None).await;
        let start = tokio::time::Instant::now();
        let err = scrape(
            &target(addr),
            &HeaderMap::new(),
            Duration::from_secs(3),
            1 << 20,
        )
        .await
        .expect_err("no answer");
        assert!(matches!(err, AppScrapeError::Timeout { .. }), "{err}");
        assert!(start.elapsed() >= Duration::from_secs(3));
        // Without the app the proxy's own metrics are still a whole exposition.
        let (ctype, out) = merge(OWN, &ScrapeCounts::default(), None);
        assert_eq!(ctype, OPENMETRICS);
        assert!(out.starts_with("# HELP istio_requests"));
        assert!(out.ends_with("# EOF\n") && out.matches("# EOF").count() == 1);
    }

    #[tokio::test]
    async fn too_much_or_a_failure_is_left_out() {
        let big = "x 1\n".repeat(1000);
        let addr = app(Some(http_reply(TEXT, &big))).await;
        let err = scrape(
            &target(addr),
            &HeaderMap::new(),
            Duration::from_secs(5),
            1000,
        )
        .await
        .expect_err("too large");
        assert!(
            matches!(err, AppScrapeError::TooLarge { max: 1000, .. }),
            "{err}"
        );
        let addr = app(Some(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n".to_vec(),
        ))
        .await;
        let err = scrape(
            &target(addr),
            &HeaderMap::new(),
            Duration::from_secs(5),
            1000,
        )
        .await
        .expect_err("500");
        assert!(
            matches!(err, AppScrapeError::Status { status: 500, .. }),
            "{err}"
        );
        // Nothing listens on a port just released.
        let closed = {
            let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            l.local_addr().expect("addr")
        };
        let err = scrape(
            &target(closed),
            &HeaderMap::new(),
            Duration::from_secs(5),
            1000,
        )
        .await
        .expect_err("refused");
        assert!(matches!(err, AppScrapeError::Connect { .. }), "{err}");
    }

    #[test]
    fn the_app_gets_most_of_prometheuss_timeout() {
        let mut h = HeaderMap::new();
        assert_eq!(scrape_timeout(&h), APP_SCRAPE_DEFAULT_TIMEOUT);
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            http::HeaderValue::from_static("2"),
        );
        assert_eq!(scrape_timeout(&h), Duration::from_millis(1800));
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            http::HeaderValue::from_static("60"),
        );
        assert_eq!(scrape_timeout(&h), APP_SCRAPE_MAX_TIMEOUT);
        h.insert(
            "x-prometheus-scrape-timeout-seconds",
            http::HeaderValue::from_static("soon"),
        );
        assert_eq!(scrape_timeout(&h), APP_SCRAPE_DEFAULT_TIMEOUT);
    }
}
