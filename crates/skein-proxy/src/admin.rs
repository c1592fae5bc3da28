//! Admin endpoint (loopback): /ready, /config_dump, /control, /stats/prometheus, /clusters,
//! /quitquitquit.
//!
//! The one mutating endpoint, `/quitquitquit`, takes only POST and refuses what a browser
//! sends on behalf of another site: a request with an `Origin` that is not the admin's own
//! (`http://ADDR:PORT` or `http://localhost:PORT`), or `Sec-Fetch-Site: cross-site` or
//! `same-site`, gets 403. Read-only endpoints answer GET as before.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use skein_snapshot::dump::{ConfigDump, InboundListener};

use crate::backoff::Backoff;
use crate::shared::Shared;

fn text(status: StatusCode, ctype: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

/// Envoy-style `/clusters` text: `name::host::stat::value`.
pub(crate) fn clusters_text(shared: &Shared) -> String {
    let snap = shared.current.load();
    let mut names: Vec<_> = snap.clusters.keys().collect();
    names.sort();
    let mut out = String::new();
    let mut list: Vec<&Arc<crate::upstream::cluster::ClusterState>> =
        names.iter().filter_map(|n| snap.clusters.get(*n)).collect();
    list.extend(snap.inbound.iter());
    for c in list {
        let _ = writeln!(
            out,
            "{}::default_priority::rq_active::{}",
            c.name,
            c.active()
        );
        let _ = writeln!(
            out,
            "{}::default_priority::rq_pending::{}",
            c.name,
            c.pending()
        );
        let status = c.endpoint_status();
        for (ep, st) in c.endpoints.iter().zip(&status) {
            let _ = writeln!(
                out,
                "{}::{}::cx_active::{}",
                c.name,
                ep.addr,
                ep.connections()
            );
            let _ = writeln!(out, "{}::{}::rq_active::{}", c.name, ep.addr, ep.active());
            let _ = writeln!(out, "{}::{}::rq_total::{}", c.name, ep.addr, ep.total());
            let _ = writeln!(out, "{}::{}::weight::{}", c.name, ep.addr, ep.weight);
            let flags = if st.status == "ejected" {
                "/failed_outlier_check"
            } else {
                "healthy"
            };
            let _ = writeln!(out, "{}::{}::health_flags::{}", c.name, ep.addr, flags);
        }
    }
    out
}

/// What `/config_dump` serves.
fn config_dump(shared: &Shared) -> ConfigDump {
    let snap = shared.current.load();
    let endpoint_status = snap
        .clusters
        .values()
        .chain(snap.inbound.iter())
        .map(|c| (c.name.to_string(), c.endpoint_status()))
        .collect();
    let mut snapshot = (*snap.snapshot).clone();
    // Key material from credentialName Secrets never leaves the proxy.
    for c in &mut snapshot.clusters {
        if let skein_snapshot::UpstreamTls::Simple { origin, .. }
        | skein_snapshot::UpstreamTls::Mutual { origin, .. } = &mut c.tls
        {
            origin.redact();
        }
    }
    ConfigDump {
        version: snap.snapshot.version.clone(),
        loaded: shared.loaded.load(Ordering::Acquire),
        snapshot,
        inbound: inbound_listeners(shared),
        endpoint_status,
        identity: shared.identity.status(),
        control: shared.control_status(),
        config_errors: snap.policy_errors.clone(),
    }
}

/// The sidecar's inbound listeners for /config_dump: bound address, app and cluster.
fn inbound_listeners(shared: &Shared) -> Vec<InboundListener> {
    if shared.config.mode != crate::config::Mode::Sidecar {
        return Vec::new();
    }
    let bound = shared.inbound_addrs.get();
    shared
        .config
        .inbound
        .iter()
        .enumerate()
        .map(|(i, ib)| InboundListener {
            listen: bound.and_then(|b| b.get(i)).copied().unwrap_or(ib.listen),
            app: ib.app,
            cluster: ib.cluster_name(),
        })
        .collect()
}

/// Pretty JSON with every object's keys in sorted order (through `serde_json::Value`), as
/// `/config_dump` has always been written.
fn sorted_json(v: &impl serde::Serialize) -> String {
    serde_json::to_value(v)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_default()
}

/// Why a mutating request is refused as a browser's cross-site request (None: allowed).
fn cross_site(headers: &http::HeaderMap, own: SocketAddr) -> Option<&'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        let site = site.as_bytes();
        if site.eq_ignore_ascii_case(b"cross-site") || site.eq_ignore_ascii_case(b"same-site") {
            return Some("Sec-Fetch-Site says the request comes from another site");
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ours = [
            format!("http://{own}"),
            format!("http://localhost:{}", own.port()),
        ];
        if !ours
            .iter()
            .any(|o| origin.as_bytes().eq_ignore_ascii_case(o.as_bytes()))
        {
            return Some("the Origin is not the admin endpoint's own");
        }
    }
    None
}

async fn handle(
    shared: Arc<Shared>,
    own: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let refused = (req.uri().path() == "/quitquitquit")
        .then(|| cross_site(req.headers(), own))
        .flatten();
    if let Some(why) = refused {
        tracing::warn!(path = %req.uri().path(), why, "admin request refused as cross-site");
        return Ok(text(
            StatusCode::FORBIDDEN,
            PLAIN,
            format!("cross-site admin request refused: {why}\n"),
        ));
    }
    let resp = match (req.method(), req.uri().path()) {
        (_, "/ready") | (_, "/healthz/ready") => {
            // A proxy fed by the control plane is ready once it has its config and its
            // workload certificate (as Istio's agent waits for both).
            let needs_cert = matches!(shared.config.source, crate::config::SourceConfig::Control { .. });
            let configured =
                shared.loaded.load(Ordering::Acquire) && shared.bound.load(Ordering::Acquire);
            let certified = !needs_cert || shared.identity.current().is_some();
            match (configured, certified) {
                (true, true) => text(StatusCode::OK, PLAIN, "LIVE\n".into()),
                (true, false) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    PLAIN,
                    "NOT READY: no workload certificate yet\n".into(),
                ),
                _ => text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, "NOT READY\n".into()),
            }
        }
        (_, "/config_dump") => text(
            StatusCode::OK,
            "application/json",
            sorted_json(&config_dump(&shared)),
        ),
        (_, "/control") => text(
            StatusCode::OK,
            "application/json",
            serde_json::to_string_pretty(&shared.control_status()).unwrap_or_default(),
        ),
        (_, "/stats/prometheus") | (_, "/metrics") => text(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            crate::telemetry::trace::export::append_to(shared.metrics.encode(), &shared.traces),
        ),
        (_, "/clusters") => text(StatusCode::OK, PLAIN, clusters_text(&shared)),
        (&Method::POST, "/quitquitquit") => {
            shared.quit.notify_one();
            text(StatusCode::OK, PLAIN, "OK\n".into())
        }
        (_, "/quitquitquit") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            PLAIN,
            "use POST /quitquitquit\n".into(),
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "admin endpoints: /ready /config_dump /control /stats/prometheus /clusters POST /quitquitquit\n"
                .into(),
        ),
    };
    Ok(resp)
}

/// First wait after a failed accept (e.g. out of file descriptors).
const ACCEPT_BACKOFF_START: Duration = Duration::from_millis(10);
/// Longest wait between failed accepts.
const ACCEPT_BACKOFF_CAP: Duration = Duration::from_secs(1);

/// The next accepted connection; a failed accept waits (doubling up to the cap) instead of
/// spinning, and a success resets the wait.
async fn accept_backing_off<T, F, Fut>(backoff: &mut Backoff, mut accept: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::io::Result<T>>,
{
    loop {
        match accept().await {
            Ok(c) => {
                backoff.reset();
                return c;
            }
            Err(e) => {
                tracing::debug!(error = %e, "admin accept failed");
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// The next connection (accept errors back off) and the local address it came in on.
async fn accept_local(
    listener: &TcpListener,
    backoff: &mut Backoff,
) -> (tokio::net::TcpStream, SocketAddr) {
    let stream = accept_backing_off(backoff, || listener.accept()).await.0;
    let own = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
    (stream, own)
}

/// Serves the admin endpoint. It keeps serving while the proxy drains (then `/ready` says
/// 503); the owner aborts the task when the drain is over.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = Backoff::between(ACCEPT_BACKOFF_START, ACCEPT_BACKOFF_CAP);
    loop {
        let (stream, own) = accept_local(&listener, &mut backoff).await;
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), own, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// Serves the merged metrics endpoint (Istio's `:15020/stats/prometheus`): read-only, GET
/// `/stats/prometheus` (or `/metrics`) and `/healthz/ready`.
pub(crate) async fn serve_metrics(listener: TcpListener, shared: Arc<Shared>) {
    let mut backoff = Backoff::between(ACCEPT_BACKOFF_START, ACCEPT_BACKOFF_CAP);
    let scrapes = Arc::new(crate::admin_metrics::ScrapeCounts::default());
    loop {
        let (stream, own) = accept_local(&listener, &mut backoff).await;
        let (shared, scrapes) = (Arc::clone(&shared), Arc::clone(&scrapes));
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (shared, scrapes) = (Arc::clone(&shared), Arc::clone(&scrapes));
                async move {
                    let resp = match req.uri().path() {
                        "/stats/prometheus" | "/metrics" => {
                            crate::admin_metrics::merged(&shared, &scrapes, req.headers()).await
                        }
                        "/healthz/ready" => return handle(shared, own, req).await,
                        _ => text(
                            StatusCode::NOT_FOUND,
                            "text/plain; charset=utf-8",
                            "metrics endpoints: /stats/prometheus /healthz/ready\n".into(),
                        ),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, http::HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn cross_site_browser_requests_are_refused() {
        let own: SocketAddr = "127.0.0.1:15000".parse().expect("addr");
        assert_eq!(
            cross_site(&headers(&[]), own),
            None,
            "curl sends neither header"
        );
        for ok in [
            &[("origin", "http://127.0.0.1:15000")][..],
            &[("origin", "http://localhost:15000")],
            &[("sec-fetch-site", "same-origin")],
            &[("sec-fetch-site", "none")],
        ] {
            assert_eq!(cross_site(&headers(ok), own), None, "{ok:?}");
        }
        for bad in [
            &[("origin", "http://evil.example")][..],
            &[("origin", "null")],
            &[("origin", "http://127.0.0.1:8080")],
            &[("sec-fetch-site", "cross-site")],
            &[("sec-fetch-site", "same-site")],
        ] {
            assert!(cross_site(&headers(bad), own).is_some(), "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_back_off_instead_of_spinning() {
        let mut backoff = Backoff::between(ACCEPT_BACKOFF_START, ACCEPT_BACKOFF_CAP);
        let start = tokio::time::Instant::now();
        let mut calls = 0u32;
        let got = accept_backing_off(&mut backoff, || {
            calls += 1;
            let n = calls;
            async move {
                if n <= 20 {
                    Err(std::io::Error::other("too many open files"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(got, 21);
        // 20 failures waited at least 10 ms + 20 ms + ... up to 1 s each: many seconds, not a
        // busy loop.
        assert!(
            start.elapsed() >= Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
    }
}
