//! Binding a listening socket.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {what} listener on {addr}: {error} (is another process using the port?)")]
pub struct BindError {
    what: String,
    addr: SocketAddr,
    error: std::io::Error,
}

/// Binds `addr` (SO_REUSEADDR, TCP_NODELAY, backlog 1024); `what` names the listener in the
/// error.
pub(crate) fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let err = |error| BindError {
        what: what.to_string(),
        addr,
        error,
    };
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    sock.set_reuseaddr(true).map_err(err)?;
    sock.set_nodelay(true).map_err(err)?;
    sock.bind(addr).map_err(err)?;
    sock.listen(1024).map_err(err)
}
