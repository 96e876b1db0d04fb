//! Reusable read buffers for serving blobs. A fresh 512 KiB allocation per chunk costs page
//! faults and kernel page zeroing on every read; buffers handed to hyper come back here when
//! the last `Bytes` referring to them is dropped.

use std::sync::{Arc, Mutex};

use bytes::Bytes;

pub struct BufferPool {
    free: Mutex<Vec<Vec<u8>>>,
    buffer_size: usize,
    max_pooled: usize,
}

impl BufferPool {
    pub fn new(buffer_size: usize, max_pooled: usize) -> Arc<BufferPool> {
        Arc::new(BufferPool {
            free: Mutex::new(Vec::new()),
            buffer_size,
            max_pooled,
        })
    }

    pub fn buffer_size(&self) -> usize {
        self.buffer_size
    }

    /// An empty buffer with `buffer_size` capacity.
    pub fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().ok().and_then(|mut f| f.pop());
        match reused {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(self.buffer_size),
        }
    }

    /// Wraps a filled buffer; it returns to the pool when the last clone is dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: self.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_bytes_is_dropped() {
        let pool = BufferPool::new(16, 2);
        let mut b = pool.take();
        b.extend_from_slice(b"hello");
        let ptr = b.as_ptr();
        let bytes = pool.freeze(b);
        let clone = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&clone[..], b"el");
        assert!(pool.free.lock().unwrap().is_empty());
        drop(clone);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr);
        assert!(again.is_empty());
    }
}
