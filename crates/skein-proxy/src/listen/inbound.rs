//! One inbound connection: detect the protocol, apply PeerAuthentication (terminate mesh
//! mTLS, refuse plaintext under STRICT, pass the app's own TLS through), then serve HTTP or
//! forward TCP through AuthorizationPolicy.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use super::detect::{self, Detected, Hello};
use super::drain::{ConnToken, DrainSignal};
use super::limit::ConnSlot;
use crate::conn::ConnInfo;
use crate::http::HttpCtx;
use crate::identity::PeerIdentity;
use crate::policy::peer_authn;
use crate::shared::Shared;
use crate::snapshot::Compiled;
use crate::telemetry::exchange::{EXCHANGE_ALPN, exchange_frame, exchange_or_rest};
use crate::telemetry::peer::PeerMetadata;

/// Bound on the inbound mTLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Logs a connection the inbound listener refused before reading it.
fn refuse(shared: &Shared, local: SocketAddr, remote: SocketAddr, why: &'static str) {
    tracing::debug!(%remote, %local, why, "inbound connection refused");
    shared.log_access(peer_authn::refusal(local, remote));
}

/// What one inbound connection needs beyond its stream.
struct Inbound {
    ctx: Arc<HttpCtx>,
    snap: Arc<Compiled>,
    workload_port: u16,
    drain: DrainSignal,
    token: ConnToken,
    slot: ConnSlot,
}

impl Inbound {
    async fn http<I>(self, io: I, info: Arc<ConnInfo>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        crate::http::serve_connection(io, self.ctx, info, self.drain, self.token, self.slot).await;
    }

    async fn tcp<I>(self, io: I, info: &ConnInfo)
    where
        I: crate::tcp::Downstream + Send + 'static,
    {
        if self.slot.state().is_shed() {
            return;
        }
        self.slot.state().pin_busy();
        let shared = Arc::clone(&self.ctx.shared);
        let ib = self.ctx.inbound;
        crate::tcp::forward_inbound(shared, &self.snap, io, info, ib, self.workload_port).await;
        drop((self.drain, self.token, self.slot));
    }
}

/// One inbound connection (see the module docs).
pub(crate) async fn inbound_conn(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    ctx: Arc<HttpCtx>,
    drain: DrainSignal,
    token: ConnToken,
    slot: ConnSlot,
) {
    let shared = Arc::clone(&ctx.shared);
    let workload_port = ctx
        .inbound
        .and_then(|i| shared.config.inbound.get(i))
        .map_or(0, |ib| ib.app.port());
    let detected = detect::detect(&stream, shared.config.detect_timeout).await;
    let snap = shared.current.load_full();
    let mode = snap.snapshot.inbound.mtls_for(workload_port);
    let conn = Inbound {
        ctx,
        snap,
        workload_port,
        drain,
        token,
        slot,
    };
    let plain = || ConnInfo::plain(local, remote);
    match detected {
        Detected::Http1 | Detected::Http2 | Detected::Opaque => {
            let http = detected != Detected::Opaque;
            if let Err(why) = peer_authn::plaintext(mode, http) {
                return refuse(&shared, local, remote, why);
            }
            if http {
                conn.http(stream, Arc::new(plain())).await;
            } else {
                conn.tcp(stream, &plain()).await;
            }
        }
        Detected::Tls => {
            let hello = if peer_authn::peek_hello(mode) {
                let timeout = shared.config.limits.client_hello_timeout;
                let state = Arc::clone(conn.slot.state());
                let peeked = tokio::select! {
                    h = detect::peek_client_hello(&stream, timeout) => h,
                    _ = state.shed() => return,
                };
                match peeked {
                    Hello::Parsed(h) => Some(h),
                    Hello::Invalid => None,
                    Hello::TimedOut => {
                        // Envoy's listener_filters_timeout without
                        // continue_on_listener_filters_timeout: the connection is closed.
                        tracing::debug!(%remote, %local, ?timeout, "no complete TLS ClientHello in time; connection closed");
                        return;
                    }
                }
            } else {
                None
            };
            let mesh = hello.as_ref().is_some_and(detect::ClientHelloInfo::is_mesh);
            if !peer_authn::terminates(mode, mesh) {
                let info = ConnInfo {
                    sni: hello.and_then(|h| h.sni).map(Arc::from),
                    ..plain()
                };
                return conn.tcp(stream, &info).await;
            }
            mesh_mtls(conn, &shared, stream, local, remote).await;
        }
    }
}

/// Terminates mesh mTLS, then serves HTTP (by ALPN, or sniffed) or forwards TCP.
async fn mesh_mtls(
    conn: Inbound,
    shared: &Shared,
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
) {
    let Some(id) = shared.identity.current() else {
        let why = "mTLS but no workload certificate loaded yet";
        return refuse(shared, local, remote, why);
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(id.server_config());
    let mut tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            tracing::debug!(%remote, %local, error = %e, "inbound mTLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, %local, "inbound mTLS handshake timed out");
            return;
        }
    };
    let mut info = peer_info(&tls, &id.spiffe_id, local, remote);
    // Bytes the peer sent in place of an exchange frame.
    let mut read = Vec::new();
    // The client speaks Istio's TCP exchange: frames both ways before anything else.
    if tls.get_ref().1.alpn_protocol() == Some(EXCHANGE_ALPN) {
        let snap = shared.current.load_full();
        let unnamed;
        let frame = match &snap.own_peer {
            Some(own) => own.frame.as_slice(),
            None => {
                unnamed = exchange_frame(&PeerMetadata::default(), "");
                unnamed.as_slice()
            }
        };
        match exchange_or_rest(&mut tls, frame).await {
            (Ok((peer, _)), _) => info.exchanged = Some(peer),
            // As Envoy: the connection goes on, the peer unknown, with what it sent first.
            (Err(e), rest) => {
                tracing::debug!(%remote, %local, error = %e, "inbound peer metadata exchange failed; the peer stays unknown");
                read = rest;
            }
        }
    }
    let info = Arc::new(info);
    // The client said which HTTP it speaks; otherwise sniff the decrypted bytes.
    if read.is_empty() && matches!(tls.get_ref().1.alpn_protocol(), Some(b"h2" | b"http/1.1")) {
        return conn.http(tls, info).await;
    }
    let (d, prefix) = detect::detect_read_from(&mut tls, read, shared.config.detect_timeout).await;
    if !matches!(d, Detected::Http1 | Detected::Http2) {
        tls.get_mut()
            .1
            .set_buffer_limit(Some(crate::tcp::TLS_WRITE_LIMIT));
    }
    let io = detect::Rewind::new(prefix, tls);
    match d {
        Detected::Http1 | Detected::Http2 => conn.http(io, info).await,
        _ => conn.tcp(io, &info).await,
    }
}

/// The facts of an mTLS connection: SNI, the peer's SPIFFE identity and its XFCC element.
fn peer_info(
    tls: &TlsStream<TcpStream>,
    own_id: &str,
    local: SocketAddr,
    remote: SocketAddr,
) -> ConnInfo {
    let (_, conn) = tls.get_ref();
    let peer = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .and_then(|c| PeerIdentity::from_cert(c))
        .map(Arc::new);
    let xfcc = peer
        .as_ref()
        .and_then(|p| ::http::HeaderValue::from_str(&p.xfcc(own_id)).ok());
    ConnInfo {
        sni: conn.server_name().map(Arc::from),
        peer,
        xfcc,
        local_principal: Some(Arc::from(own_id)),
        ..ConnInfo::plain(local, remote)
    }
}
