//! Bidirectional byte copying for opaque TCP with buffers that grow as a connection proves
//! busy, and shrink back when it goes quiet.
//!
//! Each direction starts with a small buffer ([`SIZES`]`[0]`), so many idle connections cost
//! little memory. A fill that leaves the buffer completely full (the source had at least that
//! much ready) moves the direction to the next size once the buffer is drained: a bulk
//! transfer reaches the largest size after two full fills, and then moves up to 256 KiB per
//! read and per write (fewer syscalls, fewer wakeups of the peer, full 16 KiB TLS records).
//! [`Bidi::release_idle`] drops grown buffers back to the smallest size; the caller invokes it
//! when no byte moved for a while.
//!
//! A fill reads as long as the source has bytes ready and the buffer has room, so the small
//! reads a TLS stream yields (one record at a time) are gathered into one large write. A read
//! that finds nothing stops the fill and what was gathered is written at once: interactive
//! traffic is not held back.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The buffer sizes a direction steps through.
pub(crate) const SIZES: [usize; 3] = [4 * 1024, 32 * 1024, 256 * 1024];

/// One direction: read from a source into `buf`, write it all to a sink, repeat; on EOF,
/// flush and shut the sink's write side down.
#[derive(Debug)]
struct Direction {
    buf: Box<[u8]>,
    /// Index of `buf`'s size in [`SIZES`].
    level: usize,
    /// `buf[pos..cap]` is still to be written.
    pos: usize,
    cap: usize,
    /// The last fill filled the whole buffer: grow once it is drained.
    full: bool,
    read_done: bool,
    need_flush: bool,
    /// Bytes written to the sink.
    amt: u64,
    /// The sink is flushed and shut down.
    done: bool,
}

impl Direction {
    fn new() -> Self {
        Direction {
            buf: vec![0; SIZES[0]].into_boxed_slice(),
            level: 0,
            pos: 0,
            cap: 0,
            full: false,
            read_done: false,
            need_flush: false,
            amt: 0,
            done: false,
        }
    }

    fn resize(&mut self, level: usize) {
        if let Some(&size) = SIZES.get(level) {
            self.buf = vec![0; size].into_boxed_slice();
            self.level = level;
        }
    }

    /// Drops a grown buffer back to the smallest size when nothing is waiting in it.
    fn release(&mut self) {
        if self.level > 0 && self.pos == self.cap {
            self.pos = 0;
            self.cap = 0;
            self.full = false;
            self.resize(0);
        }
    }

    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut reader: Pin<&mut R>,
        mut writer: Pin<&mut W>,
    ) -> Poll<io::Result<u64>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        if self.done {
            return Poll::Ready(Ok(self.amt));
        }
        loop {
            if self.pos == self.cap && !self.read_done {
                if self.full {
                    self.full = false;
                    self.resize(self.level + 1);
                }
                self.pos = 0;
                self.cap = 0;
                let mut pending = false;
                while self.cap < self.buf.len() {
                    let mut rb = ReadBuf::new(&mut self.buf[self.cap..]);
                    match reader.as_mut().poll_read(cx, &mut rb) {
                        Poll::Ready(Ok(())) => {
                            let n = rb.filled().len();
                            if n == 0 {
                                self.read_done = true;
                                break;
                            }
                            self.cap += n;
                        }
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            pending = true;
                            break;
                        }
                    }
                }
                self.full = self.cap == self.buf.len();
                if pending && self.cap == 0 {
                    // Nothing new: push out what earlier writes left buffered, then wait.
                    if self.need_flush {
                        ready!(writer.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
            }
            while self.pos < self.cap {
                let n = ready!(
                    writer
                        .as_mut()
                        .poll_write(cx, &self.buf[self.pos..self.cap])
                )?;
                if n == 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the receiving side accepted no bytes",
                    )));
                }
                self.pos += n;
                self.amt += n as u64;
                self.need_flush = true;
            }
            if self.read_done {
                if self.need_flush {
                    ready!(writer.as_mut().poll_flush(cx))?;
                    self.need_flush = false;
                }
                ready!(writer.as_mut().poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(self.amt));
            }
        }
    }
}

/// Copies `a` to `b` and `b` to `a` until both have reached EOF (each EOF shuts the other
/// side's write half down) or one fails. Resolves to the bytes written each way,
/// `(a to b, b to a)`. Like `tokio::io::copy_bidirectional`, with adaptive buffers.
pub(crate) struct Bidi<'a, A: ?Sized, B: ?Sized> {
    a: &'a mut A,
    b: &'a mut B,
    a_to_b: Direction,
    b_to_a: Direction,
}

impl<'a, A: ?Sized, B: ?Sized> Bidi<'a, A, B> {
    pub(crate) fn new(a: &'a mut A, b: &'a mut B) -> Self {
        Bidi {
            a,
            b,
            a_to_b: Direction::new(),
            b_to_a: Direction::new(),
        }
    }

    /// Whether either direction holds more than the smallest buffer.
    pub(crate) fn grown(&self) -> bool {
        self.a_to_b.level > 0 || self.b_to_a.level > 0
    }

    /// Drops grown buffers that hold no unwritten bytes back to the smallest size.
    pub(crate) fn release_idle(&mut self) {
        self.a_to_b.release();
        self.b_to_a.release();
    }

    /// The buffer sizes now in use, `(a to b, b to a)`.
    #[cfg(test)]
    fn sizes(&self) -> (usize, usize) {
        (self.a_to_b.buf.len(), self.b_to_a.buf.len())
    }
}

impl<A, B> Future for Bidi<'_, A, B>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    type Output = io::Result<(u64, u64)>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let ab = this
            .a_to_b
            .poll_copy(cx, Pin::new(&mut *this.a), Pin::new(&mut *this.b))?;
        let ba = this
            .b_to_a
            .poll_copy(cx, Pin::new(&mut *this.b), Pin::new(&mut *this.a))?;
        match (ab, ba) {
            (Poll::Ready(ab), Poll::Ready(ba)) => Poll::Ready(Ok((ab, ba))),
            _ => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    /// Large transfers in both directions at once arrive intact, the counts are exact, and
    /// each EOF reaches the other side (half-close).
    #[tokio::test]
    async fn both_directions_intact_with_half_close() {
        let (client, mut a) = duplex(64 * 1024);
        let (mut b, mut server) = duplex(64 * 1024);
        let up = pattern(3 * 1024 * 1024 + 17, 1);
        let down = pattern(2 * 1024 * 1024 + 5, 2);
        let proxy = tokio::spawn(async move { Bidi::new(&mut a, &mut b).await });
        let (up2, down2) = (up.clone(), down.clone());
        let client_task = tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(client);
            let writer = async {
                w.write_all(&up2).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let reader = async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got
            };
            let ((), got) = tokio::join!(writer, reader);
            assert_eq!(got, down2);
        });
        let (mut r, mut w) = tokio::io::split(&mut server);
        let mut got = Vec::new();
        let writer = async {
            w.write_all(&down).await.unwrap();
            w.shutdown().await.unwrap();
        };
        let ((), read) = tokio::join!(writer, r.read_to_end(&mut got));
        read.unwrap();
        assert_eq!(got, up);
        client_task.await.unwrap();
        let (ab, ba) = proxy.await.unwrap().unwrap();
        assert_eq!(ab, up.len() as u64);
        assert_eq!(ba, down.len() as u64);
    }

    /// After one side's EOF the other direction keeps flowing (a request, then a long reply).
    #[tokio::test]
    async fn half_close_keeps_the_other_direction_open() {
        let (mut client, mut a) = duplex(16 * 1024);
        let (mut b, mut server) = duplex(16 * 1024);
        let proxy = tokio::spawn(async move { Bidi::new(&mut a, &mut b).await });
        client.write_all(b"request").await.unwrap();
        client.shutdown().await.unwrap();
        let mut req = Vec::new();
        server.read_to_end(&mut req).await.unwrap();
        assert_eq!(req, b"request");
        let reply = pattern(1024 * 1024, 7);
        let mut got = Vec::new();
        let send = async {
            server.write_all(&reply).await.unwrap();
            server.shutdown().await.unwrap();
        };
        let ((), read) = tokio::join!(send, client.read_to_end(&mut got));
        read.unwrap();
        assert_eq!(got, reply);
        assert_eq!(
            proxy.await.unwrap().unwrap(),
            (7, reply.len() as u64),
            "bytes each way"
        );
    }

    /// A busy direction grows to the largest buffer; a quiet one stays small; release
    /// shrinks the grown buffer back, and the stream still works afterwards.
    #[tokio::test]
    async fn buffers_grow_when_busy_and_release_when_idle() {
        let (mut client, mut a) = duplex(1024 * 1024);
        let (mut b, mut server) = duplex(1024 * 1024);
        let mut bidi = Bidi::new(&mut a, &mut b);
        assert_eq!(bidi.sizes(), (SIZES[0], SIZES[0]));
        let blob = pattern(1024 * 1024, 3);
        client.write_all(&blob).await.unwrap();
        let mut got = vec![0; blob.len()];
        {
            let read = server.read_exact(&mut got);
            tokio::select! {
                r = read => { r.unwrap(); }
                r = &mut bidi => panic!("copy ended early: {r:?}"),
            }
        }
        assert_eq!(got, blob);
        // Let the copy observe the drained buffer (and grow into the next size).
        tokio::select! {
            biased;
            r = &mut bidi => panic!("copy ended early: {r:?}"),
            () = tokio::task::yield_now() => {}
        }
        assert_eq!(
            bidi.sizes().0,
            SIZES[2],
            "a bulk direction grows to the largest size"
        );
        assert_eq!(
            bidi.sizes().1,
            SIZES[0],
            "a quiet direction keeps the smallest"
        );
        assert!(bidi.grown());
        bidi.release_idle();
        assert_eq!(bidi.sizes(), (SIZES[0], SIZES[0]));
        assert!(!bidi.grown());
        client.write_all(b"after").await.unwrap();
        let mut small = [0u8; 5];
        tokio::select! {
            r = server.read_exact(&mut small) => { r.unwrap(); }
            r = &mut bidi => panic!("copy ended early: {r:?}"),
        }
        assert_eq!(&small, b"after");
    }

    /// A small message is forwarded at once, without waiting for the buffer to fill.
    #[tokio::test]
    async fn small_writes_are_not_held_back() {
        let (mut client, mut a) = duplex(1024 * 1024);
        let (mut b, mut server) = duplex(1024 * 1024);
        let proxy = tokio::spawn(async move { Bidi::new(&mut a, &mut b).await });
        for i in 0..50u8 {
            client.write_all(&[i; 3]).await.unwrap();
            let mut got = [0u8; 3];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, [i; 3]);
            server.write_all(&[i]).await.unwrap();
            let mut back = [0u8; 1];
            client.read_exact(&mut back).await.unwrap();
            assert_eq!(back, [i]);
        }
        drop(client);
        drop(server);
        assert_eq!(proxy.await.unwrap().unwrap(), (150, 50));
    }
}
