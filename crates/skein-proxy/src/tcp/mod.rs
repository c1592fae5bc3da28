//! Opaque TCP forwarding: outbound per-upstream listeners and inbound non-HTTP traffic.
//! Either side may be mTLS: the downstream after inbound termination, the upstream when the
//! cluster's policy says so.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

mod copy;
#[cfg(target_os = "linux")]
mod splice;

/// How much ciphertext rustls may queue on an mTLS connection that forwards opaque TCP
/// (rustls' default is 64 KiB): a full copy buffer ([`copy::SIZES`]) is then encrypted and
/// handed to the socket in one write instead of four. It bounds what is queued, it is not
/// allocated up front.
pub(crate) const TLS_WRITE_LIMIT: usize = 256 * 1024 + 4 * 1024;

use crate::conn::ConnInfo;
use crate::listen::detect::Rewind;
use crate::policy::authz::{Attrs, Decision};
use crate::shared::Shared;
use crate::snapshot::Compiled;
use crate::telemetry::access_log::{LogRecord, ResponseFlags};
use crate::telemetry::exchange::{EXCHANGE_ALPN, exchange_frame, exchange_or_rest};
use crate::telemetry::metrics::{
    Labels, TcpReport, tcp_labels, with_destination_peer, with_peer, with_source_peer,
    with_upstream_principals,
};
use crate::telemetry::peer::PeerMetadata;
use crate::upstream::cluster::{ClusterState, PoolError};
use crate::upstream::endpoint::EndpointState;
use crate::upstream::lb::PickCtx;
use skein_snapshot::names::Direction;

/// A downstream stream [`forward`] can take apart: a plain socket is spliced to a plain
/// upstream (see `splice.rs`); anything else (mTLS, bytes already read) is copied.
pub(crate) trait Downstream: AsyncRead + AsyncWrite + Unpin + Sized {
    /// The plain TCP socket, when that is all this stream is.
    fn into_plain(self) -> Result<TcpStream, Self> {
        Err(self)
    }
}

impl Downstream for TcpStream {
    fn into_plain(self) -> Result<TcpStream, Self> {
        Ok(self)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Downstream for crate::listen::detect::Rewind<S> {}

/// Forwards an inbound connection to the app's cluster after AuthorizationPolicy allowed it.
/// A denied connection is closed without a byte read, and logged with Envoy's RBAC details.
pub async fn forward_inbound<D>(
    shared: Arc<Shared>,
    snap: &Compiled,
    down: D,
    info: &ConnInfo,
    inbound: Option<usize>,
    workload_port: u16,
) where
    D: Downstream,
{
    let cluster = inbound.and_then(|i| snap.inbound.get(i)).cloned();
    let name = cluster
        .as_ref()
        .map(|c| c.name.to_string())
        .unwrap_or_else(|| skein_snapshot::INBOUND_PASSTHROUGH_CLUSTER.to_string());
    if !snap.authz.is_empty() {
        let decision = snap.authz.evaluate(&Attrs {
            source: info.remote.ip(),
            destination: info.local,
            workload_port,
            peer: info.peer.as_deref(),
            sni: info.sni.as_deref(),
            http: None,
        });
        if let Decision::Deny { details, audit } = decision {
            tracing::debug!(%details, audit, remote = %info.remote, "connection denied by AuthorizationPolicy");
            let mut rec = Box::new(LogRecord::new(info.local, info.remote));
            rec.upstream_cluster = Some(Arc::from(name.as_str()));
            rec.details = Cow::Owned(details.to_string());
            rec.sni = info.sni.clone();
            rec.peer = info.peer.clone();
            if let Some(c) = &cluster {
                let labels = tcp_labels(&conn_labels(c, info), rec.flags);
                shared.metrics.tcp_open(&labels).close(0, 0);
            }
            shared.log_access(rec);
            drop(down);
            return;
        }
    }
    forward(shared, down, info, cluster, &name).await;
}

/// Forwards one downstream connection to a cluster, byte for byte.
///
/// Overflow of `maxConnections` closes the downstream at once (flag UO); a failed or timed out
/// connect or mTLS handshake closes it too (flag UF). A drain does not cut established TCP
/// streams; the drain timeout bounds how long the process waits for them. A stream with no
/// bytes either way for `Limits::tcp_idle_timeout` is closed (both sides).
pub async fn forward<D>(
    shared: Arc<Shared>,
    down: D,
    info: &ConnInfo,
    cluster: Option<Arc<ClusterState>>,
    cluster_name: &str,
) where
    D: Downstream,
{
    let started = Instant::now();
    let remote = info.remote;
    let mut rec = Box::new(LogRecord::new(info.local, remote));
    rec.upstream_cluster = Some(Arc::from(cluster_name));
    rec.client = !cluster_name.starts_with("inbound|");
    rec.sni = info.sni.clone();
    rec.peer = info.peer.clone();
    let finish = |mut rec: Box<LogRecord>, shared: &Shared| {
        rec.duration_ms = started.elapsed().as_millis() as u64;
        shared.log_access(rec);
    };
    let Some(cluster) = cluster else {
        rec.flags = ResponseFlags::NC;
        rec.details = "cluster_not_found".into();
        finish(rec, &shared);
        return;
    };
    let ctx = PickCtx {
        headers: None,
        query: None,
        source_ip: remote.ip(),
    };
    let Some(idx) = cluster.pick(&ctx) else {
        rec.flags = ResponseFlags::UH;
        rec.details = "no_healthy_upstream".into();
        finish(rec, &shared);
        return;
    };
    let ep = Arc::clone(&cluster.endpoints[idx]);
    rec.upstream_host = Some(ep.addr);
    let mut base = conn_labels(&cluster, info);
    let mut peer_known = false;
    let (mut up, slot) = match cluster.connect_tcp(&ep).await {
        Ok(x) => x,
        Err(e) => {
            tracing::debug!(cluster = %cluster.name, error = %e, "TCP upstream unavailable");
            rec.flags = match e {
                PoolError::Overflow => ResponseFlags::UO,
                _ => ResponseFlags::UF,
            };
            rec.transport_failure = match e {
                PoolError::Overflow => None,
                PoolError::Tls { reason, .. } => Some(Cow::Owned(reason)),
                _ => Some(Cow::Borrowed("connection_failure")),
            };
            // Never opened: Istio reports the open and the close at once, flagged.
            shared
                .metrics
                .tcp_open(&tcp_labels(&base, rec.flags))
                .close(0, 0);
            finish(rec, &shared);
            return;
        }
    };
    // Bytes the upstream sent in place of an exchange frame (served first).
    let mut up_rest = Vec::new();
    if let crate::upstream::cluster::UpstreamStream::Tls(t) = &mut up {
        t.get_mut().1.set_buffer_limit(Some(TLS_WRITE_LIMIT));
        // The server picked Istio's TCP exchange: frames both ways before the app's bytes.
        if t.get_ref().1.alpn_protocol() == Some(EXCHANGE_ALPN) {
            let unnamed;
            let frame = match &cluster.exchange {
                Some(own) => own.frame.as_slice(),
                None => {
                    unnamed = exchange_frame(&PeerMetadata::default(), "");
                    unnamed.as_slice()
                }
            };
            match exchange_or_rest(t.as_mut(), frame).await {
                (Ok((peer, _)), _) => {
                    base = with_destination_peer(&base, &peer);
                    peer_known = true;
                }
                // As Envoy: the connection goes on, the peer unknown.
                (Err(e), rest) => {
                    tracing::debug!(cluster = %cluster.name, error = %e, "TCP upstream peer metadata exchange failed; the peer stays unknown");
                    up_rest = rest;
                }
            }
        }
        // No frame: Istio labels the destination from the endpoint's metadata.
        if !peer_known {
            endpoint_fallback(&cluster, &ep, &mut base);
            peer_known = true;
        }
        // The certificate's principals and namespace win over what the peer said.
        if cluster.direction == Direction::Outbound {
            let local = cluster.identity.as_ref().and_then(|s| s.current());
            base = with_upstream_principals(
                &base,
                local.as_ref().map(|id| id.spiffe_id.as_str()),
                ep.peer_principal.load().as_deref().map(String::as_str),
            );
        }
    }
    // A plaintext upstream (no sidecar there): labelled from the endpoint's metadata.
    if !peer_known {
        endpoint_fallback(&cluster, &ep, &mut base);
    }
    // Opened once the peer is known, as Istio counts it; the connection's series are
    // resolved once, then reported every interval and at close.
    let mut report = shared.metrics.tcp_open(&tcp_labels(&base, rec.flags));
    let every = Duration::from_millis(
        shared
            .current
            .load()
            .snapshot
            .telemetry
            .metrics
            .reporting_interval_ms,
    );
    let _active = ep.start_request();
    rec.upstream_local = up.local_addr().ok();
    let counts = [AtomicU64::new(0), AtomicU64::new(0)];
    let timeout = shared.config.limits.tcp_idle_timeout;
    let copied = match (down.into_plain(), up) {
        #[cfg(target_os = "linux")]
        (Ok(down), crate::upstream::cluster::UpstreamStream::Plain(up)) => {
            let mut spliced = Box::pin(splice::bidirectional(&down, &up, &counts));
            let mut ticks = Ticks::new(&mut report, every);
            until_idle(&mut spliced, &counts, timeout, &mut ticks).await
        }
        (Ok(mut down), up) => {
            let mut up = Rewind::new(up_rest, up);
            let mut ticks = Ticks::new(&mut report, every);
            copy_counted(&mut down, &mut up, &counts, timeout, &mut ticks).await
        }
        (Err(mut down), up) => {
            let mut up = Rewind::new(up_rest, up);
            let mut ticks = Ticks::new(&mut report, every);
            copy_counted(&mut down, &mut up, &counts, timeout, &mut ticks).await
        }
    };
    let (received, sent) = match copied {
        Some(Ok((from_down, from_up))) => (from_down, from_up),
        Some(Err(e)) => {
            tracing::debug!(cluster = %cluster.name, error = %e, "TCP stream ended with an error");
            rec.flags |= ResponseFlags::UC;
            // What was read before the error (forwarded or not), like Envoy's byte counts.
            (
                counts[0].load(Ordering::Relaxed),
                counts[1].load(Ordering::Relaxed),
            )
        }
        None => {
            tracing::debug!(cluster = %cluster.name, remote = %remote, "TCP stream idle timeout");
            (
                counts[0].load(Ordering::Relaxed),
                counts[1].load(Ordering::Relaxed),
            )
        }
    };
    drop(slot);
    rec.bytes_received = received;
    rec.bytes_sent = sent;
    report.close(received, sent);
    finish(rec, &shared);
}

/// The labels of one TCP connection through `cluster`: inbound ones carry the mTLS peer
/// (principal, `connection_security_policy`) and what it said in the TCP exchange.
/// The source reporter's labels of a connection whose peer did not say who it is: the
/// picked endpoint's workload, as the control plane describes it (Istio's fallback to the
/// endpoint metadata; client side only).
fn endpoint_fallback(cluster: &ClusterState, ep: &EndpointState, base: &mut Labels) {
    if cluster.direction == Direction::Outbound
        && let Some(m) = ep.workload_metrics(&cluster.metrics)
    {
        base.clone_from(m.base());
    }
}

fn conn_labels(cluster: &ClusterState, info: &ConnInfo) -> Labels {
    let base = cluster.metrics.base();
    if cluster.direction != Direction::Inbound {
        return base.clone();
    }
    let labels = with_peer(base, info.peer.as_deref(), info.local_principal.as_deref());
    match &info.exchanged {
        Some(p) => with_source_peer(&labels, p),
        None => labels,
    }
}

/// Copies between `down` and `up` with adaptive buffers, counting what is read from each.
async fn copy_counted<A, B>(
    down: &mut A,
    up: &mut B,
    counts: &[AtomicU64; 2],
    timeout: Duration,
    ticks: &mut Ticks<'_>,
) -> Option<std::io::Result<(u64, u64)>>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut down = Counted::new(down, &counts[0]);
    let mut up = Counted::new(up, &counts[1]);
    let mut bidi = copy::Bidi::new(&mut down, &mut up);
    until_idle(&mut bidi, counts, timeout, ticks).await
}

/// The periodic byte reports of one open connection (Istio's `tcp_reporting_duration`,
/// the snapshot's `telemetry.metrics.reporting_interval_ms`; zero: at close only). They ride
/// on the wake-ups [`until_idle`] already makes, so a connection has one timer, not two.
struct Ticks<'a> {
    report: &'a mut TcpReport,
    every: Duration,
    since: Duration,
}

impl<'a> Ticks<'a> {
    fn new(report: &'a mut TcpReport, every: Duration) -> Self {
        Ticks {
            report,
            every,
            since: Duration::ZERO,
        }
    }

    /// The longest the forwarding may sleep before the next report is due.
    fn bound(&self, period: Duration) -> Duration {
        if self.every.is_zero() {
            period
        } else {
            period.min(self.every - self.since)
        }
    }

    /// `slept` has passed: reports the counts when an interval is complete.
    fn tick(&mut self, slept: Duration, counts: &[AtomicU64; 2]) {
        if self.every.is_zero() {
            return;
        }
        self.since += slept;
        if self.since >= self.every {
            self.since = Duration::ZERO;
            self.report.report(
                counts[0].load(Ordering::Relaxed),
                counts[1].load(Ordering::Relaxed),
            );
        }
    }
}

/// A forwarding future that may hold buffers worth giving back when the stream is quiet.
trait Forwarding: Future<Output = std::io::Result<(u64, u64)>> + Unpin {
    /// Whether it holds more memory than an idle stream needs.
    fn grown(&self) -> bool {
        false
    }
    /// Gives back what an idle stream does not need.
    fn release_idle(&mut self) {}
}

impl<A, B> Forwarding for copy::Bidi<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    fn grown(&self) -> bool {
        copy::Bidi::grown(self)
    }
    fn release_idle(&mut self) {
        copy::Bidi::release_idle(self);
    }
}

/// Splicing holds no user-space buffers.
impl<F: Future<Output = std::io::Result<(u64, u64)>>> Forwarding for Pin<Box<F>> {}

/// How soon a connection that went quiet gives its grown copy buffers back.
const RELEASE_AFTER: Duration = Duration::from_secs(10);

/// Runs `fwd` to its end, or until neither counter has moved for `timeout` (then: None),
/// making `ticks`' periodic reports on the way.
/// The counters are checked every quarter of the timeout (or every reporting interval) (so the stream closes between 1
/// and 1.25 times `timeout` after the last byte), and every [`RELEASE_AFTER`] at most while
/// the copy holds grown buffers, which a quiet check gives back. No timer is touched per
/// read or write.
async fn until_idle<F: Forwarding>(
    fwd: &mut F,
    counts: &[AtomicU64; 2],
    timeout: Duration,
    ticks: &mut Ticks<'_>,
) -> Option<std::io::Result<(u64, u64)>> {
    let total = || counts[0].load(Ordering::Relaxed) + counts[1].load(Ordering::Relaxed);
    let mut last = total();
    let mut quiet = Duration::ZERO;
    loop {
        let mut period = timeout / 4;
        if fwd.grown() {
            period = period.min(RELEASE_AFTER);
        }
        let period = ticks.bound(period);
        tokio::select! {
            r = &mut *fwd => return Some(r),
            () = tokio::time::sleep(period) => {}
        }
        ticks.tick(period, counts);
        let now = total();
        if now == last {
            fwd.release_idle();
            quiet += period;
            if quiet >= timeout {
                return None;
            }
        } else {
            quiet = Duration::ZERO;
            last = now;
        }
    }
}

/// A stream that counts the bytes read from it.
struct Counted<'a, S> {
    inner: &'a mut S,
    read: &'a AtomicU64,
}

impl<'a, S> Counted<'a, S> {
    fn new(inner: &'a mut S, read: &'a AtomicU64) -> Self {
        Counted { inner, read }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<'_, S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut *this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<'_, S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.get_mut().inner).poll_shutdown(cx)
    }
}
