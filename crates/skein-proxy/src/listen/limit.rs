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
    /// Bytes read from the client since its last request began or ended (an incomplete
    /// head's so far, when no request is in flight).
    pending: AtomicU64,
    /// Set once the connection was chosen to make room; it then closes gracefully.
    shed: AtomicBool,
    /// Set once the client sent HTTP/2's connection preface: no request heads to time.
    h2: AtomicBool,
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
            sniffed: 0,
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

    /// Resolves once an HTTP/1 request head has been coming in for `timeout` without being
    /// finished: the connection's first one counted from when it opened, a later one from
    /// its first byte (checked every half of it: between 1 and 1.5 times `timeout` after
    /// that byte). A keep-alive connection waiting for its next request is not timed here:
    /// closing it would race the client's reuse of it (`idle_for` closes it). Never
    /// resolves on HTTP/2.
    pub(crate) async fn head_stalled(&self, timeout: Duration) {
        let tick = timeout / 2;
        // The events count of the head coming in, and at how many ticks it was seen.
        let mut coming: Option<(u32, u32)> = None;
        loop {
            tokio::time::sleep(tick).await;
            if self.h2.load(Ordering::Relaxed) {
                return std::future::pending().await;
            }
            let events = self.events();
            let in_head =
                self.is_idle() && (events == 0 || self.pending.load(Ordering::Relaxed) > 0);
            coming = match coming {
                _ if !in_head => None,
                // The same head (no request began since), still not finished.
                Some((e, seen)) if e == events => Some((e, seen + 1)),
                _ => Some((events, 1)),
            };
            // The first head began when the watch did (the connection opened): two ticks
            // are the timeout. A later one began somewhere in the tick before it was first
            // seen: three ticks are 1 to 1.5 times the timeout.
            let needed = if events == 0 { 2 } else { 3 };
            if coming.is_some_and(|(_, seen)| seen >= needed) {
                return;
            }
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
    /// How many of the first bytes read matched HTTP/2's preface; `u8::MAX` once decided.
    sniffed: u8,
}

/// What an HTTP/2 client sends first (RFC 9113 section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<I> CountedIo<I> {
    /// Follows the first bytes until they are, or cannot be, HTTP/2's preface.
    fn sniff(&mut self, read: &[u8]) {
        let at = usize::from(self.sniffed);
        let want = &H2_PREFACE[at..];
        let n = want.len().min(read.len());
        if read[..n] != want[..n] {
            self.sniffed = u8::MAX;
        } else if at + n == H2_PREFACE.len() {
            self.sniffed = u8::MAX;
            self.state.h2.store(true, Ordering::Relaxed);
        } else {
            self.sniffed = (at + n) as u8;
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for CountedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        let read = buf.filled().get(before..).unwrap_or_default();
        if !read.is_empty() {
            if this.sniffed != u8::MAX {
                this.sniff(read);
            }
            this.state
                .pending
                .fetch_add(read.len() as u64, Ordering::Relaxed);
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
        // What the request's body brought is not a next head (the shedding order and the
        // head timeout count those bytes).
        self.0.pending.store(0, Ordering::Relaxed);
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

    #[tokio::test]
    async fn the_h2_preface_is_recognised_across_reads_and_h1_is_not_taken_for_it() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for (chunks, h2) in [
            (vec![&H2_PREFACE[..]], true),
            (
                vec![&H2_PREFACE[..3], &H2_PREFACE[3..10], &H2_PREFACE[10..]],
                true,
            ),
            (vec![&b"PRI * HTTP/1.1\r\n"[..]], false),
            (vec![&b"P"[..], &b"OST / HTTP/1.1\r\n"[..]], false),
        ] {
            let state = Arc::new(ConnState::default());
            let (mut client, server) = tokio::io::duplex(1024);
            let mut io = state.count_reads(server);
            let mut buf = [0u8; 64];
            let mut total = 0;
            for c in &chunks {
                client.write_all(c).await.expect("write");
                total += io.read(&mut buf).await.expect("read");
            }
            assert_eq!(state.h2.load(Ordering::Relaxed), h2, "{chunks:?}");
            assert_eq!(state.pending.load(Ordering::Relaxed), total as u64);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_is_timed_from_its_first_byte_after_an_idle_wait() {
        let state = Arc::new(ConnState::default());
        let t = Duration::from_secs(10);
        // A request, then 60 s of keep-alive: not a head coming in.
        drop(state.begin());
        let s2 = Arc::clone(&state);
        let h = tokio::spawn(async move { s2.head_stalled(t).await });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(!h.is_finished(), "an idle keep-alive connection");
        // The first bytes of a head.
        tokio::time::sleep(Duration::from_millis(1)).await;
        state.pending.store(10, Ordering::Relaxed);
        let started = tokio::time::Instant::now();
        h.await.expect("stalled");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(10) && waited <= Duration::from_secs(15),
            "{waited:?}"
        );
    }
}
