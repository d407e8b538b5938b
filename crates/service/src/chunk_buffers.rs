//! Buffers for transfer chunks, page-aligned and used again.
//!
//! A transfer moves its payload in chunks of up to [`MAX_CHUNK_BYTES`]. Each chunk the sender reads from the
//! store, and each one the receiver reads off the wire, lands in one of these buffers. They are used again rather
//! than allocated for each chunk, because a fresh allocation of that size is mapped anew and every page of it
//! faulted in and zeroed on first touch: measured on the transfer benchmark, that cost as much CPU as hashing a
//! chunk. They are aligned to [`ALIGN`], so that the receiver can write a chunk to its staging file with `O_DIRECT`
//! ([`write_at`]): straight from the buffer to the disk, without copying it into the page cache first (the other
//! large CPU cost of receiving).

use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::Path;
use std::sync::{Arc, Mutex};

use aligned_vec::{AVec, ConstAlign};
use bytes::Bytes;
use custodia_partners::transfer::MAX_CHUNK_BYTES;

/// The alignment of a buffer, and of what is written from one with `O_DIRECT`: a page, which is at least the
/// logical block size of every disk Linux writes to directly.
pub const ALIGN: usize = 4096;

/// How many free buffers are kept for use again, at most: what a sender and a receiver have in flight for one
/// transfer at a time. Beyond that, buffers are freed when let go.
const KEPT: usize = 4;

type Aligned = AVec<u8, ConstAlign<ALIGN>>;

/// The free buffers of this process.
#[derive(Debug, Default)]
pub struct ChunkBuffers {
    free: Mutex<Vec<Aligned>>,
}

impl ChunkBuffers {
    /// An empty buffer of room for `capacity` bytes; one kept for use again if it has the room.
    pub fn take(self: &Arc<Self>, capacity: usize) -> ChunkBuffer {
        let kept = match capacity <= MAX_CHUNK_BYTES as usize {
            true => self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop(),
            false => None,
        };
        let bytes = kept.unwrap_or_else(|| Aligned::with_capacity(ALIGN, capacity.max(MAX_CHUNK_BYTES as usize)));
        ChunkBuffer { bytes, filled: 0, free: Arc::clone(self) }
    }

    /// How many free buffers are kept now.
    pub fn kept(&self) -> usize {
        self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

/// A buffer being filled, or filled and shared as [`Bytes`] ([`Self::into_bytes`]); given back to its
/// [`ChunkBuffers`] when the last of its holders lets it go.
#[derive(Debug)]
pub struct ChunkBuffer {
    /// Bytes written before, kept so that a buffer used again is not zeroed again: only the first `filled` are
    /// this buffer's.
    bytes: Aligned,
    filled: usize,
    free: Arc<ChunkBuffers>,
}

impl ChunkBuffer {
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.filled + bytes.len();
        if end > self.bytes.len() {
            self.bytes.truncate(self.filled);
            self.bytes.extend_from_slice(bytes);
        } else {
            self.bytes[self.filled..end].copy_from_slice(bytes);
        }
        self.filled = end;
    }

    /// Reads `length` bytes of the file at `path` from `offset` into the buffer, in place of what it held.
    pub fn read_at(&mut self, path: &Path, offset: u64, length: usize) -> io::Result<()> {
        if self.bytes.len() < length {
            self.bytes.resize(length, 0);
        }
        self.filled = 0;
        std::fs::File::open(path)?.read_exact_at(&mut self.bytes[..length], offset)?;
        self.filled = length;
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.filled
    }

    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// The buffer as shared bytes: clones share it, and the last one dropped gives it back.
    pub fn into_bytes(self) -> Bytes {
        Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for ChunkBuffer {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.filled]
    }
}

impl Drop for ChunkBuffer {
    fn drop(&mut self) {
        // Only a buffer of the usual room is kept (one grown past it is freed).
        if self.bytes.capacity() != MAX_CHUNK_BYTES as usize {
            return;
        }
        let mut free = self.free.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if free.len() < KEPT {
            free.push(std::mem::replace(&mut self.bytes, Aligned::new(ALIGN)));
        }
    }
}

/// Writes `bytes` into the existing file at `path` from `offset`. Where both are aligned to [`ALIGN`], the aligned
/// part is written with `O_DIRECT` (not copied into the page cache, so it costs the CPU next to nothing); the rest,
/// and everything where the file system refuses direct writes (tmpfs), goes through the page cache. Either way the
/// bytes are durable only once the file is synced: a direct write may leave the file's size unsynced.
pub fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
    let direct_len = bytes.len() / ALIGN * ALIGN;
    let aligned = bytes.as_ptr().addr().is_multiple_of(ALIGN) && offset.is_multiple_of(ALIGN as u64) && direct_len > 0;
    let written = match aligned {
        true => match std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(rustix::fs::OFlags::DIRECT.bits() as i32)
            .open(path)
        {
            Ok(file) => match file.write_all_at(&bytes[..direct_len], offset) {
                Ok(()) => direct_len,
                Err(err) if err.kind() == io::ErrorKind::InvalidInput => 0,
                Err(err) => return Err(err),
            },
            Err(err) if err.kind() == io::ErrorKind::InvalidInput => 0,
            Err(err) => return Err(err),
        },
        false => 0,
    };
    if written == bytes.len() {
        return Ok(());
    }
    std::fs::OpenOptions::new().write(true).open(path)?.write_all_at(&bytes[written..], offset + written as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_is_aligned_kept_for_use_again_once_every_holder_let_go_and_no_more_than_kept() {
        let buffers = Arc::new(ChunkBuffers::default());
        let mut first = buffers.take(1000);
        assert!(first.as_ref().as_ptr().addr().is_multiple_of(ALIGN));
        first.extend_from_slice(b"chunk");
        let shared = first.into_bytes();
        let clone = shared.clone();
        drop(shared);
        assert_eq!(buffers.kept(), 0, "a holder still has it");
        assert_eq!(&clone[..], b"chunk");
        drop(clone);
        assert_eq!(buffers.kept(), 1);
        let mut again = buffers.take(10);
        assert!(again.is_empty(), "a buffer used again starts empty");
        again.extend_from_slice(b"ab");
        assert_eq!(again.as_ref(), b"ab");
        assert_eq!(buffers.kept(), 0);
        let many: Vec<ChunkBuffer> = (0..KEPT + 2).map(|_| buffers.take(10)).collect();
        drop(many);
        drop(again);
        assert_eq!(buffers.kept(), KEPT);
        // One larger than a chunk is its own, and freed.
        let large = buffers.take(MAX_CHUNK_BYTES as usize + 1);
        assert_eq!(buffers.kept(), KEPT);
        drop(large);
        assert_eq!(buffers.kept(), KEPT);
    }

    #[test]
    fn what_is_written_directly_or_not_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("staging");
        std::fs::File::create(&path).unwrap();
        let buffers = Arc::new(ChunkBuffers::default());
        let pattern = |n: usize, seed: u8| (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let first: Vec<u8> = pattern(3 * ALIGN, 1);
        let mut aligned = buffers.take(first.len());
        aligned.extend_from_slice(&first);
        write_at(&path, 0, aligned.as_ref()).unwrap();
        // A tail not a whole block, and a slice not aligned in memory.
        let second: Vec<u8> = pattern(ALIGN + 100, 2);
        let mut tail = buffers.take(second.len());
        tail.extend_from_slice(&second);
        write_at(&path, first.len() as u64, tail.as_ref()).unwrap();
        let third: Vec<u8> = pattern(2 * ALIGN, 3);
        let mut unaligned = buffers.take(third.len() + 1);
        unaligned.extend_from_slice(&[0]);
        unaligned.extend_from_slice(&third);
        let at = (first.len() + second.len()) as u64;
        write_at(&path, at, &unaligned.as_ref()[1..]).unwrap();
        let read = std::fs::read(&path).unwrap();
        assert_eq!(read, [first, second, third].concat());
        // Read back into buffers used again (holding older bytes beyond what they are given now).
        drop((aligned, tail, unaligned));
        let mut reread = buffers.take(10);
        reread.read_at(&path, ALIGN as u64, 5).unwrap();
        assert_eq!(reread.as_ref(), &read[ALIGN..ALIGN + 5]);
        let past_end = reread.read_at(&path, read.len() as u64 - 2, 5).unwrap_err();
        assert_eq!(past_end.kind(), io::ErrorKind::UnexpectedEof);
    }
}
