//! Opaque TCP between two plain sockets (no mTLS on either side: PERMISSIVE plaintext, the
//! app's own TLS passed through, a cluster without mTLS) moves through a pipe with
//! `splice(2)`: the bytes never enter user space.
//!
//! Each direction splices what the source has (up to the pipe's size) into its pipe, then
//! from the pipe into the sink until the pipe is empty. The pipe is empty whenever the source
//! is read, and full of unsent bytes whenever the sink is written, so a `EAGAIN` always comes
//! from the socket whose readiness is being waited on. The pipes are made when the first
//! byte is ready, so an idle connection holds none.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::pipe::{PipeFlags, SpliceFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

/// The pipe size asked for (the kernel may grant less; 64 KiB is the default).
const PIPE_SIZE: usize = 256 * 1024;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    size: usize,
}

impl Pipe {
    fn new() -> io::Result<Pipe> {
        let (r, w) = rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let size = match rustix::pipe::fcntl_setpipe_size(&w, PIPE_SIZE) {
            Ok(n) => n,
            Err(_) => rustix::pipe::fcntl_getpipe_size(&w)?,
        };
        Ok(Pipe { r, w, size })
    }
}

const FLAGS: SpliceFlags = SpliceFlags::MOVE.union(SpliceFlags::NONBLOCK);

/// Moves `src`'s bytes to `dst` until `src`'s EOF, then shuts `dst`'s write side down.
/// `read` counts the bytes taken from `src`. Resolves to the bytes written to `dst`.
async fn one_way(src: &TcpStream, dst: &TcpStream, read: &AtomicU64) -> io::Result<u64> {
    let mut pipe: Option<Pipe> = None;
    let mut total = 0u64;
    loop {
        src.readable().await?;
        let p = match &pipe {
            Some(p) => p,
            None => pipe.insert(Pipe::new()?),
        };
        let n = match src.try_io(Interest::READABLE, || {
            Ok(rustix::pipe::splice(src, None, &p.w, None, p.size, FLAGS)?)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        read.fetch_add(n as u64, Ordering::Relaxed);
        let mut left = n;
        while left > 0 {
            dst.writable().await?;
            match dst.try_io(Interest::WRITABLE, || {
                Ok(rustix::pipe::splice(&p.r, None, dst, None, left, FLAGS)?)
            }) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the receiving side accepted no bytes",
                    ));
                }
                Ok(m) => left -= m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
    match rustix::net::shutdown(dst, rustix::net::Shutdown::Write) {
        // The peer is gone altogether: nothing left to tell it.
        Ok(()) | Err(rustix::io::Errno::NOTCONN) => Ok(total),
        Err(e) => Err(e.into()),
    }
}

/// Splices `a` to `b` and `b` to `a` until both have reached EOF (each EOF shuts the other
/// side's write half down) or one fails; `counts[0]` and `counts[1]` count the bytes read
/// from `a` and from `b`. Resolves to the bytes written each way, `(a to b, b to a)`.
pub(crate) async fn bidirectional(
    a: &TcpStream,
    b: &TcpStream,
    counts: &[AtomicU64; 2],
) -> io::Result<(u64, u64)> {
    tokio::try_join!(one_way(a, b, &counts[0]), one_way(b, a, &counts[1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (c, s) = tokio::join!(TcpStream::connect(addr), l.accept());
        (c.unwrap(), s.unwrap().0)
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| ((i % 249) as u8).wrapping_add(seed))
            .collect()
    }

    /// client <-> (a | splice | b) <-> server: several MiB each way at once, intact, counted
    /// exactly, each EOF passed on.
    #[tokio::test]
    async fn both_directions_intact_counted_and_half_closed() {
        let (mut client, a) = pair().await;
        let (b, mut server) = pair().await;
        let counts = [AtomicU64::new(0), AtomicU64::new(0)];
        let up = pattern(5 * 1024 * 1024 + 11, 1);
        let down = pattern(3 * 1024 * 1024 + 3, 2);
        let proxy = bidirectional(&a, &b, &counts);
        let client_side = async {
            let (mut r, mut w) = client.split();
            let send = async {
                w.write_all(&up).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let ((), n) = tokio::join!(send, r.read_to_end(&mut got));
            n.unwrap();
            got
        };
        let server_side = async {
            let (mut r, mut w) = server.split();
            let send = async {
                w.write_all(&down).await.unwrap();
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            let ((), n) = tokio::join!(send, r.read_to_end(&mut got));
            n.unwrap();
            got
        };
        let (moved, at_client, at_server) = tokio::join!(proxy, client_side, server_side);
        assert!(at_server == up, "upload intact");
        assert!(at_client == down, "download intact");
        assert_eq!(moved.unwrap(), (up.len() as u64, down.len() as u64));
        assert_eq!(counts[0].load(Ordering::Relaxed), up.len() as u64);
        assert_eq!(counts[1].load(Ordering::Relaxed), down.len() as u64);
    }

    /// A reset on one side ends the splice with an error, not a hang.
    #[tokio::test]
    async fn a_reset_peer_ends_with_an_error() {
        let (mut client, a) = pair().await;
        let (b, server) = pair().await;
        let counts = [AtomicU64::new(0), AtomicU64::new(0)];
        // The server goes away with unread data: RST.
        rustix::net::sockopt::set_socket_linger(&server, Some(std::time::Duration::ZERO)).unwrap();
        drop(server);
        let feed = async {
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..64 {
                if client.write_all(&chunk).await.is_err() {
                    break;
                }
            }
            std::future::pending::<()>().await;
        };
        let r = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            tokio::select! {
                r = bidirectional(&a, &b, &counts) => r,
                () = feed => unreachable!(),
            }
        })
        .await
        .expect("no hang");
        assert!(r.is_err(), "{r:?}");
    }
}
