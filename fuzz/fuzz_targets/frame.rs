//! The control stream's frame reader: a byte stream of length-prefixed frames, read from
//! memory (no sockets) in chunks of a size the input picks, with `Pending` in between.
//!
//! Input: 2 bytes pick the reader's limit (0xffff: `MAX_FRAME`, 0xfffe: `MAX_PROXY_FRAME`,
//! anything else: that many bytes), 1 byte the chunk size (0: all at once), the rest is the
//! stream.
//!
//! Invariants: nothing panics; every frame read is what a plain model of the format says
//! (the announced length, refused when over the limit, `Closed` when the stream ends early);
//! the reader never allocates more than its limit, nor more than 1 MiB or twice what the
//! stream actually holds, whatever the length announces;
//! the parsed readers agree with parsing the frame's bytes.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use skein_snapshot::stream::{
    ControlMessage, MAX_FRAME, MAX_PROXY_FRAME, Oversize, ProxyMessage, StreamError,
    read_frame_bytes_limited, read_frame_limited,
};
use tokio::io::{AsyncRead, ReadBuf};

/// Records the largest single allocation made while `TRACKING` is set.
struct Tracking;

static TRACKING: AtomicBool = AtomicBool::new(false);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn note(size: usize) {
    if TRACKING.load(Ordering::Relaxed) {
        PEAK.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

/// A reader over a slice that hands out at most `chunk` bytes per read (0: no cap), and
/// answers `Pending` before every other read when `chunk` is odd.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
    pend: bool,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.chunk % 2 == 1 {
            self.pend = !self.pend;
            if self.pend {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
        let mut n = buf.remaining().min(self.data.len());
        if self.chunk > 0 {
            n = n.min(self.chunk);
        }
        let (head, rest) = self.data.split_at(n);
        buf.put_slice(head);
        self.data = rest;
        Poll::Ready(Ok(()))
    }
}

/// Runs a future that only ever waits on `Chunked` to completion.
fn run<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000_000 {
        if let Poll::Ready(out) = f.as_mut().poll(&mut cx) {
            return out;
        }
    }
    panic!("the frame reader did not finish on an in-memory stream");
}

/// What one read must give on `rest`, by the format alone.
enum Expect {
    Frame(usize),
    TooLarge(usize),
    Closed,
}

fn expect(rest: &[u8], limit: usize) -> Expect {
    let Some((len, body)) = rest.split_first_chunk::<4>() else {
        return Expect::Closed;
    };
    let len = u32::from_be_bytes(*len) as usize;
    if len > limit {
        Expect::TooLarge(len)
    } else if body.len() < len {
        Expect::Closed
    } else {
        Expect::Frame(len)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(([l0, l1, chunk], stream)) = data.split_first_chunk::<3>() else {
        return;
    };
    let limit = match u16::from_be_bytes([*l0, *l1]) {
        0xffff => MAX_FRAME,
        0xfffe => MAX_PROXY_FRAME,
        n => usize::from(n),
    };
    let chunk = usize::from(*chunk);
    // The limit bounds the buffer outright; below it, 1 MiB before the body arrives, then
    // twice what has arrived. Allocations of up to 64 bytes are bookkeeping (the boxed
    // `UnexpectedEof` of a short length, say), not the buffer.
    let bound = limit.min((1 << 20usize).max(2 * stream.len())).max(64);

    let mut reader = Chunked {
        data: stream,
        chunk,
        pend: false,
    };
    let mut offset = 0;
    loop {
        let want = expect(&stream[offset..], limit);
        PEAK.store(0, Ordering::Relaxed);
        TRACKING.store(true, Ordering::Relaxed);
        let got = run(read_frame_bytes_limited(&mut reader, limit));
        TRACKING.store(false, Ordering::Relaxed);
        let peak = PEAK.load(Ordering::Relaxed);
        assert!(
            peak <= bound,
            "reading a frame allocated {peak} bytes at once (limit {limit}, stream {} bytes)",
            stream.len()
        );
        match (want, got) {
            (Expect::Frame(len), Ok(body)) => {
                assert!(body.len() <= limit);
                assert_eq!(body.as_slice(), &stream[offset + 4..offset + 4 + len]);
                // The parsed messages are those of the frame's bytes.
                let proxy: Result<ProxyMessage, _> = serde_json::from_slice(&body);
                let control: Result<ControlMessage, _> = serde_json::from_slice(&body);
                let mut one = Chunked {
                    data: &stream[offset..],
                    chunk,
                    pend: false,
                };
                let p = run(read_frame_limited::<_, ProxyMessage>(&mut one, limit));
                assert_eq!(p.ok(), proxy.ok());
                let mut one = Chunked {
                    data: &stream[offset..],
                    chunk,
                    pend: false,
                };
                let c = run(read_frame_limited::<_, ControlMessage>(&mut one, limit));
                assert_eq!(c.ok(), control.ok());
                offset += 4 + len;
            }
            (Expect::TooLarge(len), Err(StreamError::TooLarge(o))) => {
                assert_eq!(o, Oversize { len, limit });
                // Nothing of the body was read: the stream is left just past the length.
                assert_eq!(reader.data.len(), stream.len() - offset - 4);
                return;
            }
            (Expect::Closed, Err(StreamError::Closed)) => return,
            (_, got) => panic!("frame at {offset}: unexpected result {got:?}"),
        }
    }
});
