//! Listeners named by the snapshot (per-upstream TCP listeners, extra HTTP listeners):
//! reconciled on every apply, each served by the one accept loop until it is removed.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use skein_snapshot::{Listener, ListenerKind, TcpDestination};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::accept_loop;
use super::bind::{BindError, bind};
use super::drain::{ConnToken, DrainSignal};
use super::limit::{ConnLimiter, ListenerLimit};
use crate::conn::ConnInfo;
use crate::http::{HttpCtx, Role};
use crate::shared::Shared;

/// A snapshot listener that is bound.
#[derive(Debug)]
struct DynListener {
    configured: SocketAddr,
    bound: SocketAddr,
    /// Dropping it stops the accept loop.
    _stop: oneshot::Sender<()>,
}

/// The bound snapshot listeners by name.
#[derive(Debug)]
pub(crate) struct SnapshotListeners {
    map: Mutex<HashMap<String, DynListener>>,
    /// The proxy-wide connection cap each listener's own cap is part of.
    limiter: Arc<ConnLimiter>,
}

impl SnapshotListeners {
    /// No listeners yet; those bound later share `limiter`.
    pub(crate) fn new(limiter: Arc<ConnLimiter>) -> Self {
        SnapshotListeners {
            map: Mutex::default(),
            limiter,
        }
    }

    /// Makes the bound listeners those of `wanted`. New ones are bound first, so a bind
    /// failure leaves everything as it was; then `commit` runs (the config swap), then the
    /// new listeners start serving (when `serve` has the drain signal and a token; a proxy
    /// shutting down starts none).
    pub(crate) fn reconcile(
        &self,
        wanted: &[Listener],
        shared: &Arc<Shared>,
        commit: impl FnOnce(),
        serve: Option<(DrainSignal, ConnToken)>,
    ) -> Result<(), BindError> {
        let mut dyns = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = Vec::new();
        for l in wanted {
            if dyns.get(&l.name).is_some_and(|d| d.configured == l.address) {
                continue;
            }
            let what = format!("snapshot {:?}", l.name);
            // An address change on the same port needs the old socket closed first.
            if dyns.get(&l.name).is_some_and(|old| old.bound == l.address) {
                dyns.remove(&l.name);
            }
            new.push((l.name.clone(), l.address, bind(&what, l.address)?));
        }
        let names: HashSet<&str> = wanted.iter().map(|l| l.name.as_str()).collect();
        dyns.retain(|name, _| names.contains(name.as_str()));
        commit();
        for (name, configured, listener) in new {
            let bound = listener.local_addr().unwrap_or(configured);
            let (tx, rx) = oneshot::channel();
            if let Some((drain, token)) = &serve {
                let shared = Arc::clone(shared);
                let (drain, token) = (drain.clone(), token.clone());
                let limit = self
                    .limiter
                    .listener(shared.config.limits.max_connections_per_listener);
                tokio::spawn(serve_listener(
                    listener,
                    name.clone(),
                    limit,
                    shared,
                    rx,
                    drain,
                    token,
                ));
            }
            let _stop = tx;
            dyns.insert(
                name,
                DynListener {
                    configured,
                    bound,
                    _stop,
                },
            );
        }
        Ok(())
    }

    /// The bound address of the listener `name`.
    pub(crate) fn addr(&self, name: &str) -> Option<SocketAddr> {
        let dyns = self.map.lock().unwrap_or_else(|p| p.into_inner());
        dyns.get(name).map(|d| d.bound)
    }

    /// Stops every snapshot listener.
    pub(crate) fn clear(&self) {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Serves one snapshot listener; each connection is handled as the listener is configured
/// in the snapshot current when it arrives.
async fn serve_listener(
    listener: TcpListener,
    name: String,
    limit: ListenerLimit,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
    drain: DrainSignal,
    token: ConnToken,
) {
    let signal = drain.clone();
    accept_loop(
        listener,
        &name,
        limit,
        drain,
        Some(stop),
        |stream, local, remote, slot| {
            let snap = shared.current.load_full();
            let Some(kind) = snap.listeners.get(&name) else {
                return;
            };
            let token = token.clone();
            match kind {
                ListenerKind::Tcp { cluster } => {
                    let state = snap.clusters.get(cluster).cloned();
                    let cluster = cluster.clone();
                    let shared = Arc::clone(&shared);
                    slot.state().pin_busy();
                    tokio::spawn(async move {
                        let info = ConnInfo::plain(local, remote);
                        crate::tcp::forward(shared, stream, &info, state, &cluster).await;
                        drop((token, slot));
                    });
                }
                ListenerKind::TcpWeighted { clusters } => {
                    let Some(cluster) =
                        TcpDestination::pick(clusters, |total| fastrand::u32(..total))
                    else {
                        return;
                    };
                    let state = snap.clusters.get(cluster).cloned();
                    let cluster = cluster.to_string();
                    let shared = Arc::clone(&shared);
                    slot.state().pin_busy();
                    tokio::spawn(async move {
                        let info = ConnInfo::plain(local, remote);
                        crate::tcp::forward(shared, stream, &info, state, &cluster).await;
                        drop((token, slot));
                    });
                }
                ListenerKind::Http { route_config } => {
                    let ctx = Arc::new(HttpCtx {
                        shared: Arc::clone(&shared),
                        role: Role::Outbound,
                        route_config: route_config.clone(),
                        inbound: None,
                    });
                    let info = Arc::new(ConnInfo::plain(local, remote));
                    let conn = crate::http::serve_connection(
                        stream,
                        ctx,
                        info,
                        signal.clone(),
                        token,
                        slot,
                    );
                    tokio::spawn(conn);
                }
            }
        },
    )
    .await
}
