//! skein's tracing store, in the place of the Jaeger all-in-one that Istio's addon runs:
//! a Zipkin v2 receiver (`POST /api/v2/spans`, port 9411), an OTLP/HTTP receiver
//! (`POST /v1/traces`, port 4318, protobuf or JSON, gzip), a bounded in-memory store, and
//! Jaeger's query API (port 16686, at `/api` and under the addon's `/jaeger`) with
//! `/metrics`. Optionally it forwards what it receives to another OTLP collector.
//!
//! Hostile input stays bounded: bodies past the limit are refused (413) before or while
//! they are read, decoders spend from an item budget, a few requests decode at once, and
//! the store evicts its oldest traces.

#![forbid(unsafe_code)]

mod budget;
pub mod forward;
pub mod jaeger;
pub mod model;
pub mod otlp;
pub mod otlp_proto;
mod server;
pub mod store;
pub mod zipkin;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

pub use store::Limits;

/// Zipkin's port.
pub const ZIPKIN_PORT: u16 = 9411;
/// OTLP/HTTP's port.
pub const OTLP_HTTP_PORT: u16 = 4318;
/// Jaeger's query (UI and API) port.
pub const QUERY_PORT: u16 = 16686;
/// OTLP's recommended request limit.
pub const DEFAULT_MAX_BODY: usize = 20 << 20;

#[derive(Debug, Clone)]
pub struct Config {
    pub zipkin: Option<SocketAddr>,
    pub otlp: Option<SocketAddr>,
    pub query: Option<SocketAddr>,
    pub limits: Limits,
    /// The largest request body, after decompression (413 past it).
    pub max_body_bytes: usize,
    /// The most spans, tags, events and values one request may carry (413 past it).
    pub max_items: usize,
    /// How many requests are read and decoded at once.
    pub ingest_concurrency: usize,
    /// An OTLP/HTTP traces URL (`http://host:4318/v1/traces`) to forward spans to.
    pub forward: Option<String>,
    /// Spans waiting to be forwarded, at most.
    pub forward_queue: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            zipkin: None,
            otlp: None,
            query: None,
            limits: Limits::default(),
            max_body_bytes: DEFAULT_MAX_BODY,
            // An OpenTelemetry SDK's batch of 512 spans with 20 attributes is ~20,000 items;
            // 100,000 decoded items cost ~30 MiB at most.
            max_items: 100_000,
            ingest_concurrency: 2,
            forward: None,
            forward_queue: 20_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TraceStoreError {
    #[error("cannot listen on {addr} for the {what}: {error}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("--forward {url:?}: not an http:// URL ({reason})")]
    ForwardUrl { url: String, reason: String },
    #[error("nothing to serve: give at least one of the Zipkin, OTLP and query addresses")]
    NothingToServe,
}

/// What every handler shares.
pub(crate) struct Shared {
    pub store: Mutex<store::Store>,
    pub counters: server::Counters,
    pub config: Config,
    pub ingest: Semaphore,
    pub forward: Option<Arc<forward::Forwarder>>,
}

/// Microseconds since the epoch.
pub(crate) fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The store, serving.
pub struct Running {
    pub zipkin: Option<SocketAddr>,
    pub otlp: Option<SocketAddr>,
    pub query: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, TraceStoreError> {
    TcpListener::bind(addr)
        .await
        .map_err(|error| TraceStoreError::Bind { what, addr, error })
}

fn forward_url(url: &str) -> Result<http::Uri, TraceStoreError> {
    let bad = |reason: &str| TraceStoreError::ForwardUrl {
        url: url.into(),
        reason: reason.into(),
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("it does not parse"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(bad("only http://HOST:PORT/PATH is supported"));
    }
    Ok(uri)
}

/// Binds every configured address and serves until [`Running::shutdown`].
pub async fn start(config: Config) -> Result<Running, TraceStoreError> {
    if config.zipkin.is_none() && config.otlp.is_none() && config.query.is_none() {
        return Err(TraceStoreError::NothingToServe);
    }
    let forward_to = config.forward.as_deref().map(forward_url).transpose()?;
    let mut listeners = Vec::new();
    for (what, addr) in [
        ("Zipkin receiver", config.zipkin),
        ("OTLP/HTTP receiver", config.otlp),
        ("query API", config.query),
    ] {
        listeners.push(match addr {
            Some(a) => Some(bind(what, a).await?),
            None => None,
        });
    }
    let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
    let (zipkin, otlp, query) = (
        local(&listeners[0]),
        local(&listeners[1]),
        local(&listeners[2]),
    );
    let (tx, rx) = watch::channel(false);
    let forward = forward_to
        .as_ref()
        .map(|_| Arc::new(forward::Forwarder::new(config.forward_queue)));
    let shared = Arc::new(Shared {
        store: Mutex::new(store::Store::new(config.limits)),
        counters: server::Counters::default(),
        ingest: Semaphore::new(config.ingest_concurrency.max(1)),
        config,
        forward: forward.clone(),
    });
    let mut tasks = Vec::new();
    if let (Some(f), Some(url)) = (forward, forward_to) {
        let rx = rx.clone();
        tasks.push(tokio::spawn(async move { f.run(url, rx).await }));
    }
    let routers = [
        server::zipkin_router(shared.clone()),
        server::otlp_router(shared.clone()),
        server::query_router(shared.clone()),
    ];
    for (l, router) in listeners.into_iter().zip(routers) {
        let Some(l) = l else { continue };
        let mut rx = rx.clone();
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(l, router)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|stop| *stop).await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!("trace store server stopped: {e}");
            }
        }));
    }
    Ok(Running {
        zipkin,
        otlp,
        query,
        shutdown: tx,
        tasks,
    })
}

impl Running {
    /// Stops serving and waits for the servers to finish.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}
