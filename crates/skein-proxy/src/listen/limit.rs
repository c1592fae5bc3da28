//! Downstream connection caps, per listener and per proxy (Envoy's overload manager
//! `downstream_connections`): a connection holds a [`ConnSlot`] for its whole life. At a cap
//! a new connection sheds an idle one (no request in flight): the one that has sent the most
//! bytes since its last request began, the oldest of those that sent as much. A client
//! trickling a huge request head goes before one whose small head is still being read; when
//! none is idle the new connection is refused.
//!
//! The registry is locked when a connection opens and closes, never per request: a request
//! only counts itself in and out of its connection's [`ConnState`] (one atomic add each).

use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::sync::Notify;

/// One request in flight: the low 32 bits of [`ConnState::requests`].
const ONE_ACTIVE: u64 = 1;
/// One request started or ended: the high 32 bits.
const ONE_EVENT: u64 = 1 << 32;

/// What the caps know about one live connection.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Requests in flight (low 32 bits) and requests started or ended (high 32 bits,
    /// wrapping).
    requests: AtomicU64,
    /// Bytes read from the client since its last request began (an incomplete head's so far).
    pending: AtomicU64,
    /// Set once the connection was chosen to make room; it then closes gracefully.
    shed: AtomicBool,
    /// Wakes the connection when it is shed.
    wake: Notify,
}

impl ConnState {
    /// Counts a request in until the guard drops.
    pub(crate) fn begin(self: &Arc<Self>) -> Busy {
        self.requests
            .fetch_add(ONE_EVENT + ONE_ACTIVE, Ordering::Relaxed);
        self.pending.store(0, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// `io` with every byte read from it counted for the shedding order.
    pub(crate) fn count_reads<I>(self: &Arc<Self>, io: I) -> CountedIo<I> {
        CountedIo {
            io,
            state: Arc::clone(self),
        }
    }

    /// Marks the connection busy for good (opaque TCP is never idle in this sense).
    pub(crate) fn pin_busy(&self) {
        self.requests.fetch_add(ONE_ACTIVE, Ordering::Relaxed);
    }

    /// No request in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.requests.load(Ordering::Relaxed) as u32 == 0
    }

    fn events(&self) -> u32 {
        (self.requests.load(Ordering::Relaxed) >> 32) as u32
    }

    /// Whether the connection was shed.
    pub(crate) fn is_shed(&self) -> bool {
        self.shed.load(Ordering::Acquire)
    }

    /// Resolves once the connection is shed (at once if it already was).
    pub(crate) async fn shed(&self) {
        loop {
            let notified = self.wake.notified();
            if self.is_shed() {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once no request has been in flight, started or ended for `timeout`
    /// (checked every quarter of it: between 1 and 1.25 times `timeout` after the last
    /// request ended).
    pub(crate) async fn idle_for(&self, timeout: Duration) {
        let tick = timeout / 4;
        let mut last = self.events();
        let mut quiet = 0;
        loop {
            tokio::time::sleep(tick).await;
            let events = self.events();
            if self.is_idle() && events == last {
                quiet += 1;
                if quiet >= 4 {
                    return;
                }
            } else {
                quiet = 0;
                last = events;
            }
        }
    }
}

/// A connection's stream, counting what it reads into [`ConnState::pending`] (one atomic add
/// per read, not per byte).
#[derive(Debug)]
pub(crate) struct CountedIo<I> {
    io: I,
    state: Arc<ConnState>,
}

impl<I: AsyncRead + Unpin> AsyncRead for CountedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        let n = buf.filled().len().saturating_sub(before) as u64;
        if n > 0 {
            self.state.pending.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for CountedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// A request in flight on its connection.
#[derive(Debug)]
pub(crate) struct Busy(Arc<ConnState>);

impl Drop for Busy {
    fn drop(&mut self) {
        // One event more, one request fewer in flight (never below zero: this one counted).
        self.0
            .requests
            .fetch_add(ONE_EVENT - ONE_ACTIVE, Ordering::Relaxed);
    }
}

#[derive(Debug)]
struct Entry {
    listener: u64,
    state: Arc<ConnState>,
}

#[derive(Debug, Default)]
struct Registry {
    next_conn: u64,
    next_listener: u64,
    /// Live connections that are not shed, oldest first.
    conns: BTreeMap<u64, Entry>,
    /// Connections counted against each listener's cap (shed ones are not).
    per_listener: HashMap<u64, usize>,
}

impl Registry {
    /// Sheds an idle connection (of `listener`, or of any listener): the one that has sent
    /// the most since its last request began, the oldest of equals; false when every
    /// candidate is busy.
    fn shed_one(&mut self, listener: Option<u64>) -> bool {
        let mut victim: Option<(u64, u64)> = None;
        for (id, e) in &self.conns {
            if listener.is_some_and(|l| e.listener != l) || !e.state.is_idle() {
                continue;
            }
            let sent = e.state.pending.load(Ordering::Relaxed);
            // Oldest first: a later connection wins only by having sent more.
            if victim.is_none_or(|(_, most)| sent > most) {
                victim = Some((*id, sent));
            }
        }
        let victim = victim.map(|(id, _)| id);
        let Some(entry) = victim.and_then(|id| self.conns.remove(&id)) else {
            return false;
        };
        if let Some(n) = self.per_listener.get_mut(&entry.listener) {
            *n = n.saturating_sub(1);
        }
        entry.state.shed.store(true, Ordering::Release);
        entry.state.wake.notify_one();
        true
    }
}

/// The proxy-wide cap and the registry of live downstream connections.
#[derive(Debug)]
pub(crate) struct ConnLimiter {
    max: usize,
    registry: Mutex<Registry>,
}

impl ConnLimiter {
    /// A limiter for at most `max` connections in the whole proxy.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(ConnLimiter {
            max: max.max(1),
            registry: Mutex::default(),
        })
    }

    /// A listener's share: at most `max` of its connections at once.
    pub(crate) fn listener(self: &Arc<Self>, max: usize) -> ListenerLimit {
        let mut reg = self.lock();
        let id = reg.next_listener;
        reg.next_listener += 1;
        ListenerLimit {
            id,
            max: max.max(1),
            limiter: Arc::clone(self),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Connections counted against the caps now (for tests).
    #[cfg(test)]
    fn live(&self) -> usize {
        self.lock().conns.len()
    }
}

/// One listener's cap.
#[derive(Debug)]
pub(crate) struct ListenerLimit {
    id: u64,
    max: usize,
    limiter: Arc<ConnLimiter>,
}

impl ListenerLimit {
    /// A slot for a new connection, shedding an idle one when a cap is reached; None when
    /// the connection must be refused.
    pub(crate) fn admit(&self) -> Option<ConnSlot> {
        let limiter = &self.limiter;
        let mut reg = limiter.lock();
        let mine = reg.per_listener.get(&self.id).copied().unwrap_or(0);
        if mine >= self.max && !reg.shed_one(Some(self.id)) {
            return None;
        }
        if reg.conns.len() >= limiter.max && !reg.shed_one(None) {
            return None;
        }
        let id = reg.next_conn;
        reg.next_conn += 1;
        let state = Arc::new(ConnState::default());
        reg.conns.insert(
            id,
            Entry {
                listener: self.id,
                state: Arc::clone(&state),
            },
        );
        *reg.per_listener.entry(self.id).or_insert(0) += 1;
        Some(ConnSlot {
            id,
            listener: self.id,
            state,
            limiter: Arc::clone(limiter),
        })
    }
}

impl Drop for ListenerLimit {
    fn drop(&mut self) {
        let mut reg = self.limiter.lock();
        if reg.per_listener.get(&self.id) == Some(&0) {
            reg.per_listener.remove(&self.id);
        }
    }
}

/// A live connection's place under the caps; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ConnSlot {
    id: u64,
    listener: u64,
    state: Arc<ConnState>,
    limiter: Arc<ConnLimiter>,
}

impl ConnSlot {
    /// The connection's request counts and shed signal.
    pub(crate) fn state(&self) -> &Arc<ConnState> {
        &self.state
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut reg = self.limiter.lock();
        if reg.conns.remove(&self.id).is_some()
            && let Some(n) = reg.per_listener.get_mut(&self.listener)
        {
            *n = n.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_at_its_cap_sheds_its_oldest_idle_connection() {
        let limiter = ConnLimiter::new(10);
        let l = limiter.listener(2);
        let a = l.admit().expect("first");
        let b = l.admit().expect("second");
        let _busy = a.state().begin();
        let c = l.admit().expect("third sheds the idle one");
        assert!(!a.state().is_shed(), "a busy connection is kept");
        assert!(b.state().is_shed(), "the idle one is shed");
        assert_eq!(limiter.live(), 2);
        // Every connection busy: the next one is refused.
        let _busy_c = c.state().begin();
        assert!(l.admit().is_none());
        drop(b);
        assert!(l.admit().is_none(), "a shed connection no longer counts");
        drop(c);
        assert!(l.admit().is_some());
    }

    #[tokio::test]
    async fn the_idle_connection_that_sent_the_most_goes_first() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let limiter = ConnLimiter::new(10);
        let l = limiter.listener(3);
        let (old, fresh, heavy) = (l.admit().unwrap(), l.admit().unwrap(), l.admit().unwrap());
        // A small head read on the oldest, a big one still arriving on the newest.
        for (slot, n) in [(&old, 100), (&heavy, 64 * 1024)] {
            let (mut client, server) = tokio::io::duplex(128 * 1024);
            let mut io = slot.state().count_reads(server);
            client.write_all(&vec![b'x'; n]).await.unwrap();
            drop(client);
            let mut got = Vec::new();
            io.read_to_end(&mut got).await.unwrap();
            assert_eq!(got.len(), n);
        }
        let _d = l.admit().expect("a fourth sheds one");
        assert!(heavy.state().is_shed(), "the one that sent the most");
        assert!(!old.state().is_shed() && !fresh.state().is_shed());
        // A request that began clears the count: then age decides among equals.
        let _ = old.state().begin();
        let _e = l.admit().expect("a fifth sheds one");
        assert!(
            old.state().is_shed(),
            "the oldest of those that sent nothing"
        );
        assert!(!fresh.state().is_shed());
    }

    #[test]
    fn the_proxy_cap_spans_listeners() {
        let limiter = ConnLimiter::new(2);
        let l1 = limiter.listener(5);
        let l2 = limiter.listener(5);
        let a = l1.admit().expect("a");
        let _b = l2.admit().expect("b");
        a.state().pin_busy();
        let _c = l2.admit().expect("c sheds b, the idle one");
        assert!(!a.state().is_shed());
        assert_eq!(limiter.live(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_for_waits_for_a_quiet_timeout() {
        let state = Arc::new(ConnState::default());
        let t = Duration::from_secs(100);
        let started = tokio::time::Instant::now();
        let busy = state.begin();
        let s2 = Arc::clone(&state);
        let h = tokio::spawn(async move { s2.idle_for(t).await });
        tokio::time::sleep(Duration::from_secs(300)).await;
        assert!(!h.is_finished(), "a request in flight is not idle");
        drop(busy);
        h.await.expect("idle");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(400) && waited <= Duration::from_secs(425),
            "{waited:?}"
        );
    }
}
