//! Memory for blob chunks on their way to clients, bounded for the whole process.
//!
//! Every chunk a response reads (from disk, from a download's file or its in-memory tail)
//! is charged against one budget (`server.buffer_memory`) before it is read, and the charge
//! is returned when the last `Bytes` referring to the chunk is dropped, that is when hyper
//! has written it to the socket. Concurrency therefore costs waiting, not memory: 1,000
//! responses share the budget instead of holding a few full-size chunks each. When the
//! budget runs low, chunks shrink to [`SMALL_CHUNK`] so that more responses make progress.
//!
//! Full-size buffers are also reused: a fresh 512 KiB allocation per chunk costs page
//! faults and kernel page zeroing on every read.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The chunk size once less than a quarter of the budget is free.
pub const SMALL_CHUNK: usize = 64 * 1024;

pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    buffer_size: usize,
    max_pooled: usize,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

/// Budget held for one chunk; returned on drop.
pub struct Charge {
    /// `None` only if the budget were closed, which nothing does.
    _permit: Option<OwnedSemaphorePermit>,
    len: usize,
}

impl Charge {
    /// The chunk's size this charge pays for.
    pub fn len(&self) -> usize {
        self.len
    }
}

impl BufferPool {
    /// `budget_bytes` is clamped to at least two full-size buffers.
    pub fn new(buffer_size: usize, max_pooled: usize, budget_bytes: u64) -> Arc<BufferPool> {
        let budget_bytes = usize::try_from(budget_bytes)
            .unwrap_or(usize::MAX)
            .clamp(2 * buffer_size, Semaphore::MAX_PERMITS);
        Arc::new(BufferPool {
            free: Mutex::new(Vec::new()),
            buffer_size,
            max_pooled,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        })
    }

    /// Budget not charged to any chunk right now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.budget.available_permits()
    }

    /// Waits until a chunk of up to `want` bytes (at most the buffer size, smaller when the
    /// budget is short) may be read, and charges it. Waiters are served in order.
    pub async fn charge(&self, want: u64) -> Charge {
        let mut size = want.min(self.buffer_size as u64).max(1) as usize;
        if self.budget.available_permits() < self.budget_bytes / 4 {
            size = size.min(SMALL_CHUNK);
        }
        // `size` <= buffer_size, far below u32::MAX; the semaphore is never closed.
        let n = u32::try_from(size).unwrap_or(u32::MAX);
        let permit = self.budget.clone().acquire_many_owned(n).await.ok();
        Charge {
            _permit: permit,
            len: size,
        }
    }

    /// An empty buffer for a chunk of `len` bytes: a pooled full-size one, or an exact one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        if len < self.buffer_size {
            return Vec::with_capacity(len);
        }
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        match reused {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(self.buffer_size),
        }
    }

    /// Wraps a filled buffer; the buffer returns to the pool and the charge to the budget
    /// when the last clone is dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>, charge: Charge) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
            _charge: charge,
        })
    }

    fn give_back(&self, buf: Vec<u8>) {
        if buf.capacity() != self.buffer_size {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.max_pooled {
                free.push(buf);
            }
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufferPool>,
    _charge: Charge,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.buf));
    }
}

/// Bytes that hold a charge until dropped (chunks copied from a download's memory).
pub fn charged(bytes: Bytes, charge: Charge) -> Bytes {
    struct Held(Bytes, #[allow(dead_code)] Charge);
    impl AsRef<[u8]> for Held {
        fn as_ref(&self) -> &[u8] {
            &self.0
        }
    }
    Bytes::from_owner(Held(bytes, charge))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn buffers_and_budget_come_back_when_the_last_bytes_is_dropped() {
        let pool = BufferPool::new(16, 2, 64);
        let charge = pool.charge(100).await;
        assert_eq!(charge.len(), 16);
        assert_eq!(pool.available(), 48);
        let mut b = pool.take(charge.len());
        b.extend_from_slice(b"hello");
        let ptr = b.as_ptr();
        let bytes = pool.freeze(b, charge);
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&clone[..], b"el");
        assert!(pool.free.lock().unwrap().is_empty());
        assert_eq!(pool.available(), 48);
        drop(clone);
        assert_eq!(pool.available(), 64);
        let again = pool.take(16);
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
    }

    #[tokio::test]
    async fn a_spent_budget_makes_readers_wait_until_chunks_are_written() {
        use futures_util::FutureExt;
        let pool = BufferPool::new(16, 2, 32);
        let first = pool.charge(16).await;
        let _second = pool.charge(16).await;
        assert_eq!(pool.available(), 0);
        let mut waiting = Box::pin(pool.charge(16));
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "a charge beyond the budget must wait"
        );
        let chunk = charged(Bytes::from_static(b"x"), first);
        drop(chunk);
        let third = waiting.now_or_never().expect("budget came back");
        assert_eq!(third.len(), 16);
    }
}
