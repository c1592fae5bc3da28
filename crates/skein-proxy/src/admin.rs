//! Admin endpoint (loopback): /ready, /config_dump, /control, /stats/prometheus, /clusters,
//! /quitquitquit.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use skein_snapshot::dump::{ConfigDump, InboundListener};

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

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
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
            shared.metrics.encode(),
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

/// Serves the admin endpoint. It keeps serving while the proxy drains (then `/ready` says
/// 503); the owner aborts the task when the drain is over.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| handle(Arc::clone(&shared), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
