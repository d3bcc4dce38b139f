//! Sending segment bytes to a socket (SPEC P2).
//!
//! Plaintext fetches move segment bytes file -> pipe -> socket with `splice(2)`, so they
//! never enter user space: inline on the shard thread when neither side can block
//! (cached pages, a non-blocking socket), through io_uring otherwise. Pipes come from a
//! per-shard pool: a send holds one pipe for its whole range (two sends sharing a pipe
//! would interleave their bytes) and returns it when the pipe is empty again; a pipe left
//! holding bytes by a failed send is closed instead. Bytes sent this way are counted in `fetch_zero_copy_bytes`; any
//! fallback that reads into a buffer is counted in `fetch_copied_bytes`, so a test can
//! prove which path served a fetch.

use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;

use compio::BufResult;
use compio::driver::op::{Interest, PollOnce, Splice, SpliceFlags};
use compio::io::AsyncWriteExt;
use compio::net::TcpStream;
use ringmq_engine::{FileRange, UnifiedLog};

use crate::metrics::Metrics;
use crate::runtime::shard::ShardCtx;

/// Pipe capacity asked for (F_SETPIPE_SZ); bytes move through it in chunks of this size.
pub const PIPE_BYTES: usize = 1 << 20;

/// Idle pipes kept per shard.
pub const PIPES_IDLE_MAX: usize = 64;

type Pipe = (Rc<OwnedFd>, Rc<OwnedFd>);

thread_local! {
    static PIPES: RefCell<Vec<Pipe>> = const { RefCell::new(Vec::new()) };
}

fn take_pipe() -> std::io::Result<Pipe> {
    if let Some(p) = PIPES.with(|p| p.borrow_mut().pop()) {
        return Ok(p);
    }
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid 2-element array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by us alone.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; failure only leaves the default pipe size.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_BYTES as libc::c_int) };
    Ok((Rc::new(r), Rc::new(w)))
}

fn return_pipe(pipe: Pipe) {
    PIPES.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < PIPES_IDLE_MAX {
            p.push(pipe);
        }
    });
}

/// Sends `range` to `socket` without copying it through user space.
pub async fn send_file_range(
    ctx: &ShardCtx,
    socket: &mut TcpStream,
    range: &FileRange,
) -> std::io::Result<()> {
    let read_ahead = ctx.broker.config.read_ahead_bytes;
    if read_ahead > 0 {
        // Advice only: a failure changes nothing about what is sent.
        let _ = rustix::fs::fadvise(
            &*range.file,
            u64::from(range.position.0) + u64::from(range.length),
            std::num::NonZeroU64::new(read_ahead),
            rustix::fs::Advice::WillNeed,
        );
    }
    match splice_range(socket, range).await {
        Ok(()) => {
            Metrics::add(
                &ctx.broker.metrics.fetch_zero_copy_bytes,
                u64::from(range.length),
            );
            Ok(())
        }
        Err(SpliceError::NothingSent(e)) => {
            tracing::debug!(error = %e, "splice unavailable; copying");
            let bytes = UnifiedLog::read_range_bytes(range).map_err(std::io::Error::other)?;
            Metrics::add(&ctx.broker.metrics.fetch_copied_bytes, bytes.len() as u64);
            let BufResult(res, _) = socket.write_all(bytes).await;
            res
        }
        Err(SpliceError::Partial(e)) => Err(e),
    }
}

enum SpliceError {
    NothingSent(std::io::Error),
    Partial(std::io::Error),
}

/// Whether the first and last bytes of `file[offset..offset + len]` are in the page cache
/// (a one-byte `preadv2(RWF_NOWAIT)` each: it fails with EAGAIN instead of reading).
fn cached(file: &std::fs::File, offset: u64, len: usize) -> bool {
    let mut byte = [0u8; 1];
    [offset, offset + len.saturating_sub(1) as u64]
        .iter()
        .all(|at| {
            matches!(
                rustix::io::preadv2(
                    file,
                    &mut [std::io::IoSliceMut::new(&mut byte)],
                    *at,
                    rustix::io::ReadWriteFlags::NOWAIT,
                ),
                Ok(1)
            )
        })
}

/// Moves `range` file -> pipe -> socket. Both legs run as plain `splice(2)` calls on the
/// shard thread when they cannot block: file pages already in the page cache (the tail
/// reads consumers do), and a non-blocking socket, waited on with an io_uring poll when
/// its send buffer is full. io_uring's own splice op always runs on an io-wq worker
/// thread (measured: ~9 % of all CPU samples at 280k msgs/s mixed), so it is used only
/// to read pages that are not cached, which can block.
async fn splice_range(socket: &TcpStream, range: &FileRange) -> Result<(), SpliceError> {
    use rustix::pipe::{SpliceFlags as Flags, splice};
    let pipe = take_pipe().map_err(SpliceError::NothingSent)?;
    let mut offset = range.position.as_u64();
    let mut left = range.length as usize;
    let mut sent_any = false;
    while left > 0 {
        let chunk = left.min(PIPE_BYTES);
        let res = if cached(&range.file, offset, chunk) {
            let mut at = offset;
            splice(
                &*range.file,
                Some(&mut at),
                &*pipe.1,
                None,
                chunk,
                Flags::NONBLOCK,
            )
            .map_err(std::io::Error::from)
        } else {
            let op = Splice::new(
                Arc::clone(&range.file),
                offset as i64,
                Rc::clone(&pipe.1),
                -1,
                chunk,
                SpliceFlags::empty(),
            );
            compio::runtime::submit(op).await.0
        };
        let mut in_pipe = match res {
            Ok(0) => {
                let e = std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "segment shorter than range",
                );
                return Err(if sent_any {
                    SpliceError::Partial(e)
                } else {
                    SpliceError::NothingSent(e)
                });
            }
            Ok(n) => n,
            Err(e) if !sent_any => return Err(SpliceError::NothingSent(e)),
            Err(e) => return Err(SpliceError::Partial(e)),
        };
        offset += in_pipe as u64;
        left -= in_pipe;
        // From here on bytes are in the pipe: any failure leaves the stream unusable.
        sent_any = true;
        while in_pipe > 0 {
            match splice(&*pipe.0, None, socket, None, in_pipe, Flags::NONBLOCK) {
                Ok(0) => {
                    return Err(SpliceError::Partial(std::io::Error::new(
                        std::io::ErrorKind::WriteZero,
                        "socket closed",
                    )));
                }
                Ok(n) => in_pipe -= n,
                Err(rustix::io::Errno::AGAIN) => {
                    let fd = socket
                        .as_fd()
                        .try_clone_to_owned()
                        .map_err(SpliceError::Partial)?;
                    let op = PollOnce::new(fd, Interest::Writable);
                    compio::runtime::submit(op)
                        .await
                        .0
                        .map_err(SpliceError::Partial)?;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(SpliceError::Partial(e.into())),
            }
        }
    }
    // Only an emptied pipe goes back to the pool (errors above drop it, closing it).
    return_pipe(pipe);
    Ok(())
}
