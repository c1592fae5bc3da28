//! `jwksUri`: the key set fetched by the proxy and cached. A sidecar fetches through its own
//! outbound listener (so a key server in the mesh is reached by its Service name, with
//! mTLS and the mesh's routing); a gateway connects to the URI's host itself. Plain `http`
//! only. One fetch task per URI (shared by every snapshot that names it, ending when none
//! does); keys are refreshed every [`REFRESH`] (istiod's default), a failed fetch is retried
//! after [`RETRY`], and the keys of the last good fetch stay in use until a new fetch
//! succeeds. A request waits for the first fetch at most the rule's `timeout` (5 s by
//! default); with no keys after that it fails with "Jwks remote fetch is failed".

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use tokio::sync::watch;

use super::keys::KeySet;

/// How often keys are fetched again.
pub const REFRESH: Duration = Duration::from_secs(20 * 60);
/// How soon a failed fetch is tried again.
pub const RETRY: Duration = Duration::from_secs(30);
/// The largest key set document read.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// How long a request waits for the first fetch when the rule sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a fetch failed (logged; the request only sees "Jwks remote fetch is failed").
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("jwksUri {0:?} is not a plain http:// URL (skein fetches http only)")]
    Uri(String),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP exchange failed: {0}")]
    Http(String),
    #[error("answered {0}")]
    Status(http::StatusCode),
    #[error("body larger than {MAX_JWKS_BYTES} bytes or unreadable")]
    Body,
    #[error("timed out")]
    Timeout,
    #[error("{0}")]
    Keys(#[from] super::keys::KeySetError),
}

#[derive(Debug, Clone)]
enum State {
    Pending,
    Ready(Arc<KeySet>),
    Failed,
}

/// One `jwksUri`'s keys.
#[derive(Debug)]
pub struct RemoteJwks {
    state: watch::Sender<State>,
    timeout: Duration,
}

impl RemoteJwks {
    /// The keys; the first time, after waiting for the first fetch.
    pub async fn keys(&self) -> Option<Arc<KeySet>> {
        let mut rx = self.state.subscribe();
        let ready = |s: &State| match s {
            State::Ready(k) => Some(Some(Arc::clone(k))),
            State::Failed => Some(None),
            State::Pending => None,
        };
        if let Some(k) = ready(&rx.borrow()) {
            return k;
        }
        match tokio::time::timeout(self.timeout, rx.wait_for(|s| !matches!(s, State::Pending)))
            .await
        {
            Ok(Ok(s)) => ready(&s).flatten(),
            _ => None,
        }
    }
}

type CacheKey = (Option<SocketAddr>, String);

static CACHE: LazyLock<Mutex<HashMap<CacheKey, Weak<RemoteJwks>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Hands out the shared fetchers of one proxy.
#[derive(Debug, Clone, Copy)]
pub struct Fetcher {
    /// The sidecar's outbound HTTP listener (None: connect directly).
    pub via: Option<SocketAddr>,
}

impl Fetcher {
    /// The keys of `uri`, fetched by a task started on first use.
    pub fn get(&self, uri: &str, timeout_ms: u64) -> Arc<RemoteJwks> {
        let key = (self.via, uri.to_string());
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|_, w| w.strong_count() > 0);
        if let Some(r) = cache.get(&key).and_then(Weak::upgrade) {
            return r;
        }
        let timeout = if timeout_ms == 0 {
            DEFAULT_TIMEOUT
        } else {
            Duration::from_millis(timeout_ms)
        };
        let (tx, _) = watch::channel(State::Pending);
        let r = Arc::new(RemoteJwks { state: tx, timeout });
        cache.insert(key, Arc::downgrade(&r));
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(refresh(
                Arc::downgrade(&r),
                uri.to_string(),
                self.via,
                timeout,
            ));
        } else {
            r.state.send_replace(State::Failed);
        }
        r
    }
}

async fn refresh(r: Weak<RemoteJwks>, uri: String, via: Option<SocketAddr>, timeout: Duration) {
    loop {
        let result =
            match tokio::time::timeout(timeout.max(DEFAULT_TIMEOUT), fetch(&uri, via)).await {
                Ok(r) => r,
                Err(_) => Err(FetchError::Timeout),
            };
        let Some(me) = r.upgrade() else { return };
        let wait = match result {
            Ok(keys) => {
                tracing::debug!(%uri, "jwksUri fetched");
                me.state.send_replace(State::Ready(Arc::new(keys)));
                REFRESH
            }
            Err(e) => {
                tracing::warn!(%uri, error = %e, "jwksUri fetch failed");
                if !matches!(*me.state.borrow(), State::Ready(_)) {
                    me.state.send_replace(State::Failed);
                }
                RETRY
            }
        };
        drop(me);
        tokio::time::sleep(wait).await;
        if r.strong_count() == 0 {
            return;
        }
    }
}

/// One GET of `uri`, through `via` when set.
pub async fn fetch(uri: &str, via: Option<SocketAddr>) -> Result<KeySet, FetchError> {
    let bad = || FetchError::Uri(uri.to_string());
    let parsed: http::Uri = uri.parse().map_err(|_| bad())?;
    if parsed.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = parsed.authority().ok_or_else(bad)?.clone();
    let path = parsed
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let stream = match via {
        Some(a) => tokio::net::TcpStream::connect(a).await,
        None => {
            let port = authority.port_u16().unwrap_or(80);
            tokio::net::TcpStream::connect((authority.host(), port)).await
        }
    }
    .map_err(|e| {
        FetchError::Connect(
            via.map_or_else(|| authority.to_string(), |a| a.to_string()),
            e,
        )
    })?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut send, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let req = http::Request::get(path)
        .header(http::header::HOST, authority.as_str())
        .header(http::header::ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| FetchError::Http(e.to_string()))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| FetchError::Http(e.to_string()))?;
    if resp.status() != http::StatusCode::OK {
        return Err(FetchError::Status(resp.status()));
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|_| FetchError::Body)?
        .to_bytes();
    let text = std::str::from_utf8(&body).map_err(|_| FetchError::Body)?;
    Ok(KeySet::parse(text)?)
}
