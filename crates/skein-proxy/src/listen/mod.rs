//! Where connections come in: binding, the one accept loop, and what each kind of listener
//! does with a connection (sidecar outbound HTTP, sidecar inbound, gateway HTTP and HTTPS,
//! listeners named by the snapshot).

pub(crate) mod bind;
pub(crate) mod detect;
pub(crate) mod drain;
pub(crate) mod gateway;
pub(crate) mod inbound;
pub(crate) mod limit;
pub(crate) mod snapshot;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::conn::ConnInfo;
use crate::http::HttpCtx;
use drain::{ConnToken, DrainSignal};
use limit::{ConnSlot, ListenerLimit};

/// Resolves when `stop` fires (or its sender is dropped); never without one.
async fn stopped(stop: &mut Option<oneshot::Receiver<()>>) {
    match stop {
        Some(rx) => {
            let _ = rx.await;
        }
        None => std::future::pending().await,
    }
}

/// The one accept loop: accepts until the drain starts (or `stop` fires); each connection
/// (TCP_NODELAY set) that `limit` admits goes to `on_conn` with its local and remote
/// addresses and its slot; one over the caps is closed at once. A failed accept (e.g. out of
/// file descriptors) waits a moment instead of spinning.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    name: &str,
    limit: ListenerLimit,
    mut drain: DrainSignal,
    mut stop: Option<oneshot::Receiver<()>>,
    mut on_conn: impl FnMut(TcpStream, SocketAddr, SocketAddr, ConnSlot),
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stopped(&mut stop) => break,
            _ = drain.signaled() => break,
        };
        let (stream, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(slot) = limit.admit() else {
            tracing::debug!(listener = %name, %remote, "connection limit reached and no idle connection to shed; connection refused");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().unwrap_or(remote);
        on_conn(stream, local, remote, slot);
    }
}

/// A plaintext HTTP listener (sidecar outbound, gateway HTTP).
pub(crate) async fn serve_http(
    listener: TcpListener,
    name: &str,
    limit: ListenerLimit,
    ctx: Arc<HttpCtx>,
    drain: DrainSignal,
    token: ConnToken,
) {
    let signal = drain.clone();
    accept_loop(
        listener,
        name,
        limit,
        drain,
        None,
        |stream, local, remote, slot| {
            let info = Arc::new(ConnInfo::plain(local, remote));
            tokio::spawn(crate::http::serve_connection(
                stream,
                Arc::clone(&ctx),
                info,
                signal.clone(),
                token.clone(),
                slot,
            ));
        },
    )
    .await
}

/// A sidecar inbound listener.
pub(crate) async fn serve_inbound(
    listener: TcpListener,
    name: &str,
    limit: ListenerLimit,
    ctx: Arc<HttpCtx>,
    drain: DrainSignal,
    token: ConnToken,
) {
    let signal = drain.clone();
    accept_loop(
        listener,
        name,
        limit,
        drain,
        None,
        |stream, local, remote, slot| {
            tokio::spawn(inbound::inbound_conn(
                stream,
                local,
                remote,
                Arc::clone(&ctx),
                signal.clone(),
                token.clone(),
                slot,
            ));
        },
    )
    .await
}
