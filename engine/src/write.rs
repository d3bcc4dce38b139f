//! The three append methods (`ringmq.append.method`): how a prepared append's bytes reach
//! the segment file. The log prepares an append (validated, stamped, position reserved),
//! one of these writes it, and the log completes it; no log borrow is held while a write
//! is in flight.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use compio::BufResult;
use compio::driver::op::WriteAt;

use crate::config::AppendMethod;
use crate::segment::DIRECT_BLOCK;

/// The bytes of one prepared append and where they go.
#[derive(Debug)]
pub struct WritePlan {
    pub(crate) method: AppendMethod,
    pub(crate) file: Arc<File>,
    pub(crate) position: u64,
    /// The stamped batches, back to back: per batch its stamped header and its untouched
    /// records (two iovecs), or the whole batch for replication.
    pub(crate) payload: Vec<Bytes>,
    /// For [`AppendMethod::Direct`]: the 4 KiB-aligned buffer (old partial block + payload
    /// + zero padding) written at the block-aligned position.
    pub(crate) direct: Option<(u64, Bytes)>,
}

impl WritePlan {
    pub fn method(&self) -> AppendMethod {
        self.method
    }

    pub fn len(&self) -> usize {
        self.payload.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes on the calling thread: `pwritev` into the page cache (or a synchronous
    /// `O_DIRECT` write). Used by the default method and by blocking callers.
    pub fn write_blocking(&self) -> io::Result<()> {
        if let Some((position, buf)) = &self.direct {
            return self.file.write_all_at(buf, *position);
        }
        pwritev_all(&self.file, &self.payload, self.position)
    }

    /// Writes by the configured method; only io_uring methods actually suspend.
    pub async fn write(&self) -> io::Result<()> {
        match self.method {
            AppendMethod::Pwritev => self.write_blocking(),
            AppendMethod::IoUring => {
                // One op per append: gather the pieces (this method is not the default).
                let buf = match self.payload.as_slice() {
                    [one] => one.clone(),
                    pieces => Bytes::from(pieces.concat()),
                };
                uring_write_all(&self.file, buf, self.position).await
            }
            AppendMethod::Direct => match &self.direct {
                Some((position, buf)) => uring_write_all(&self.file, buf.clone(), *position).await,
                None => Err(io::Error::other(
                    "O_DIRECT append without an aligned buffer",
                )),
            },
        }
    }
}

/// Builds the aligned buffer for an `O_DIRECT` append: `tail` (the partial last block
/// already in the file) followed by `payload`, zero-padded to whole blocks. Returns the
/// buffer (its start is 4 KiB-aligned in memory) and the new partial tail.
pub(crate) fn direct_buffer(tail: &[u8], payload: &[Bytes]) -> (Bytes, Vec<u8>) {
    let len: usize = tail.len() + payload.iter().map(Bytes::len).sum::<usize>();
    let padded = len.div_ceil(DIRECT_BLOCK) * DIRECT_BLOCK;
    // Over-allocate and start at the first aligned address: safe code, aligned I/O.
    let mut v = vec![0u8; padded + DIRECT_BLOCK];
    let skew = v.as_ptr().align_offset(DIRECT_BLOCK);
    let mut at = skew;
    for piece in std::iter::once(tail).chain(payload.iter().map(|b| b.as_ref())) {
        v[at..at + piece.len()].copy_from_slice(piece);
        at += piece.len();
    }
    let new_tail_start = skew + len / DIRECT_BLOCK * DIRECT_BLOCK;
    let new_tail = v[new_tail_start..skew + len].to_vec();
    let buf = Bytes::slice(&Bytes::from(v), skew..skew + padded);
    debug_assert_eq!(buf.as_ptr().align_offset(DIRECT_BLOCK), 0);
    (buf, new_tail)
}

async fn uring_write_all(file: &Arc<File>, mut buf: Bytes, mut position: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let op = WriteAt::new(Arc::clone(file), position, buf.clone());
        let BufResult(res, _) = compio::runtime::submit(op).await;
        let n = res?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "io_uring write returned 0",
            ));
        }
        position += n as u64;
        buf = Bytes::slice(&buf, n..);
    }
    Ok(())
}

/// `pwritev(2)` of all buffers at `position`, resuming after short writes.
fn pwritev_all(file: &File, bufs: &[Bytes], mut position: u64) -> io::Result<()> {
    if let [one] = bufs {
        return file.write_all_at(one, position);
    }
    let mut skip = 0usize; // bytes of `bufs` already written
    let total: usize = bufs.iter().map(Bytes::len).sum();
    while skip < total {
        let mut iov = Vec::with_capacity(bufs.len());
        let mut seen = 0usize;
        for b in bufs {
            let end = seen + b.len();
            if end > skip {
                let from = skip.saturating_sub(seen);
                iov.push(libc::iovec {
                    iov_base: b[from..].as_ptr() as *mut libc::c_void,
                    iov_len: b.len() - from,
                });
            }
            seen = end;
        }
        let iov_count = iov.len().min(libc::UIO_MAXIOV as usize) as libc::c_int;
        // SAFETY: every iovec points into a live `Bytes` borrowed for this call, with its
        // exact remaining length; pwritev only reads them; the fd is open for writing.
        let n = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov.as_ptr(),
                iov_count,
                position as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev returned 0",
            ));
        }
        skip += n as usize;
        position += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_buffer_is_aligned_padded_and_keeps_tail() {
        let tail = vec![7u8; 100];
        let payload = vec![Bytes::from(vec![1u8; 5000]), Bytes::from(vec![2u8; 10])];
        let (buf, new_tail) = direct_buffer(&tail, &payload);
        assert_eq!(buf.as_ptr().align_offset(DIRECT_BLOCK), 0);
        assert_eq!(buf.len(), 8192);
        assert_eq!(&buf[..100], &tail[..]);
        assert_eq!(buf[100], 1);
        assert_eq!(buf[5100], 2);
        assert_eq!(buf[5110], 0);
        assert_eq!(new_tail.len(), 5110 - 4096);
        assert_eq!(new_tail[..], buf[4096..5110]);
    }

    #[test]
    fn pwritev_writes_all_pieces_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let bufs = vec![
            Bytes::from_static(b"abc"),
            Bytes::from_static(b""),
            Bytes::from_static(b"defg"),
        ];
        pwritev_all(&f, &bufs, 3).unwrap();
        let mut out = vec![0u8; 10];
        let n = f.read_at(&mut out, 0).unwrap();
        assert_eq!(&out[..n], b"\0\0\0abcdefg");
    }
}
