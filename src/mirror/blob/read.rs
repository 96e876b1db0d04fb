//! Reading a blob: a committed one by a read-ahead task with pooled buffers; one still
//! downloading by following its fill, from the in-memory tail when the client keeps up,
//! else from the temp file, never past the last byte before the digest verified. Every
//! chunk is charged to the shared buffer budget before it is read.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use super::passthrough::PassThrough;
use super::{BlobHandle, FillState, Origin, READ_AHEAD, RECENT_WINDOW};
use crate::error::ApiError;
use crate::mirror::buffers::{charged, BufferPool, Charge};

/// The newest received part of a download, kept as the chunks that arrived.
#[derive(Default)]
pub(super) struct Recent {
    chunks: std::collections::VecDeque<(u64, Bytes)>,
    bytes: u64,
}

impl Recent {
    pub(super) fn push(&mut self, offset: u64, chunk: Bytes) {
        self.bytes += chunk.len() as u64;
        self.chunks.push_back((offset, chunk));
        while self.bytes > RECENT_WINDOW {
            match self.chunks.pop_front() {
                Some((_, old)) => self.bytes -= old.len() as u64,
                None => break,
            }
        }
    }

    /// Bytes from `pos` up to `limit` (at most `max`) if they are still in memory. Network
    /// chunks are small, so consecutive ones are gathered into one buffer: one response
    /// frame per chunk would cost a socket write each.
    fn slice(&self, pos: u64, limit: u64, max: usize) -> Option<Bytes> {
        let first = self
            .chunks
            .iter()
            .position(|(offset, chunk)| *offset <= pos && pos < offset + chunk.len() as u64)?;
        let want = (limit.saturating_sub(pos) as usize).min(max);
        if want == 0 {
            return None;
        }
        let mut out = BytesMut::with_capacity(want);
        let mut at = pos;
        for (offset, chunk) in self.chunks.iter().skip(first) {
            if out.len() >= want || *offset > at {
                break;
            }
            let start = (at - offset) as usize;
            let take = (chunk.len() - start).min(want - out.len());
            out.extend_from_slice(&chunk[start..start + take]);
            at += take as u64;
        }
        Some(out.freeze())
    }
}

impl BlobHandle {
    /// Waits until the whole blob is downloaded and verified, then returns its file.
    pub async fn complete_file(self) -> Result<Arc<File>, ApiError> {
        let Some(mut rx) = self.fill else {
            return self
                .file
                .ok_or_else(|| ApiError::internal("blob handle without a file"));
        };
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                FillState::Done { file, .. } => return Ok(file),
                FillState::Failed(e) => return Err(e),
                FillState::Uncached { .. } => {
                    return Err(ApiError::internal(
                        "the store is full: the blob cannot be kept for reading",
                    )
                    .with_status(http::StatusCode::SERVICE_UNAVAILABLE))
                }
                FillState::Starting | FillState::Streaming { .. } => {}
            }
            if rx.changed().await.is_err() {
                return Err(ApiError::internal("blob download ended without a result"));
            }
        }
    }

    /// Reads `[start, end)` (end `None`: to the end of the blob) as a stream of chunks.
    pub fn into_stream(
        self,
        start: u64,
        end: Option<u64>,
    ) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
        let end = end.or(self.size);
        let source = match (self.fill, end, self.file) {
            (None, Some(end), Some(file)) => {
                Source::ReadAhead(read_ahead(file, start, end, self.pool))
            }
            (fill, end, file) => Source::Follow(Box::new(Reader {
                file,
                pos: start,
                end,
                fill,
                buffers: self.pool,
                origin: self.origin,
                passthrough: None,
            })),
        };
        futures_util::stream::unfold(source, |mut source| async move {
            let item = match &mut source {
                Source::ReadAhead(rx) => rx.recv().await,
                Source::Follow(r) => r.next_chunk().await,
            };
            item.map(|i| (i, source))
        })
    }
}

enum Source {
    /// A committed blob: a task reads ahead sequentially.
    ReadAhead(mpsc::Receiver<Result<Bytes, std::io::Error>>),
    /// A blob being downloaded: reads follow the fill's progress (boxed: it can carry an
    /// upstream response of its own).
    Follow(Box<Reader>),
}

/// Reads `[start, end)` of a file a few chunks ahead of the socket, so disk reads and
/// socket writes overlap. Each chunk is charged to the shared budget before it is read and
/// read on a blocking thread; no thread is held while waiting for budget or the socket.
/// The task stops when the receiver goes away.
fn read_ahead(
    file: Arc<File>,
    start: u64,
    end: u64,
    buffers: Arc<BufferPool>,
) -> mpsc::Receiver<Result<Bytes, std::io::Error>> {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        let mut pos = start;
        while pos < end {
            let charge = tokio::select! {
                c = buffers.charge(end - pos) => c,
                _ = tx.closed() => return,
            };
            let len = charge.len();
            let mut buf = buffers.take(len);
            let file = file.clone();
            let read = tokio::task::spawn_blocking(move || {
                buf.resize(len, 0);
                let mut filled = 0;
                while filled < len {
                    match file.read_at(&mut buf[filled..], pos + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(filled);
                Ok(buf)
            })
            .await;
            let item = match read {
                Ok(Ok(buf)) if buf.is_empty() => Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob file is shorter than its size",
                )),
                Ok(Ok(buf)) => {
                    pos += buf.len() as u64;
                    Ok(buffers.freeze(buf, charge))
                }
                Ok(Err(e)) => Err(e),
                Err(e) => Err(std::io::Error::other(e)),
            };
            let failed = item.is_err();
            if tx.send(item).await.is_err() || failed {
                return;
            }
        }
    });
    rx
}

struct Readable {
    file_limit: u64,
    memory_limit: u64,
    complete: bool,
    recent: Option<Arc<Mutex<Recent>>>,
    /// The fill cannot store the blob; this many bytes of it are in the file.
    uncached: Option<u64>,
}

struct Reader {
    file: Option<Arc<File>>,
    pos: u64,
    end: Option<u64>,
    fill: Option<watch::Receiver<FillState>>,
    buffers: Arc<BufferPool>,
    origin: Option<Arc<Origin>>,
    passthrough: Option<PassThrough>,
}

impl Reader {
    /// What may be read now: up to where from the file, up to where from memory (the
    /// in-memory tail of a download in progress), and whether the blob is complete.
    fn readable(&mut self) -> Result<Readable, ApiError> {
        let Some(rx) = &mut self.fill else {
            let end = self.end.unwrap_or(0);
            return Ok(Readable {
                file_limit: end,
                memory_limit: end,
                complete: true,
                recent: None,
                uncached: None,
            });
        };
        let state = rx.borrow_and_update();
        match &*state {
            FillState::Done { size, .. } => Ok(Readable {
                file_limit: *size,
                memory_limit: *size,
                complete: true,
                recent: None,
                uncached: None,
            }),
            // Hold back the last byte until the digest verified.
            FillState::Streaming {
                written,
                received,
                recent,
                ..
            } => Ok(Readable {
                file_limit: (*written).min(received.saturating_sub(1)),
                memory_limit: received.saturating_sub(1),
                complete: false,
                recent: Some(recent.clone()),
                uncached: None,
            }),
            FillState::Starting => Ok(Readable {
                file_limit: 0,
                memory_limit: 0,
                complete: false,
                recent: None,
                uncached: None,
            }),
            FillState::Uncached { written, .. } => Ok(Readable {
                file_limit: 0,
                memory_limit: 0,
                complete: false,
                recent: None,
                uncached: Some(*written),
            }),
            FillState::Failed(e) => Err(e.clone()),
        }
    }

    async fn next_chunk(&mut self) -> Option<Result<Bytes, std::io::Error>> {
        loop {
            if let Some(p) = &mut self.passthrough {
                return p.next_chunk().await;
            }
            let readable = match self.readable() {
                Ok(r) => r,
                Err(e) => return Some(Err(std::io::Error::other(e.message))),
            };
            if let Some(written) = readable.uncached {
                let Some(origin) = self.origin.clone() else {
                    return Some(Err(std::io::Error::other("the store cannot take the blob")));
                };
                let file = self.file.clone();
                match PassThrough::start(origin, file, written, self.pos, self.end).await {
                    Ok(p) => self.passthrough = Some(p),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            }
            let end = self.end.unwrap_or(u64::MAX);
            let limit = readable.file_limit.min(end);
            if self.pos >= end || (readable.complete && self.pos >= limit) {
                return None;
            }
            let memory_limit = readable.memory_limit.min(end);
            if self.pos >= limit.max(memory_limit) {
                // Nothing new to read: wait for the fill below, holding no budget.
            } else {
                let charge = self
                    .buffers
                    .charge(limit.max(memory_limit) - self.pos)
                    .await;
                let in_memory = readable
                    .recent
                    .and_then(|r| r.lock().ok()?.slice(self.pos, memory_limit, charge.len()));
                if let Some(bytes) = in_memory {
                    self.pos += bytes.len() as u64;
                    return Some(Ok(charged(bytes, charge)));
                }
                if let Some(read) = self.read_file(limit, charge).await {
                    return Some(read);
                }
            }
            // Wait for the fill to write more.
            let rx = self.fill.as_mut()?;
            if rx.changed().await.is_err() {
                return Some(Err(std::io::Error::other("blob download ended")));
            }
        }
    }

    /// Reads from the file at the current position, up to `limit` and the charge's size.
    async fn read_file(
        &mut self,
        limit: u64,
        charge: Charge,
    ) -> Option<Result<Bytes, std::io::Error>> {
        if self.pos < limit {
            let len = (limit - self.pos).min(charge.len() as u64) as usize;
            let file = self.file.clone()?;
            let pos = self.pos;
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = BytesMut::zeroed(len);
                let mut filled = 0;
                while filled < len {
                    match file.read_at(&mut buf[filled..], pos + filled as u64) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e),
                    }
                }
                buf.truncate(filled);
                Ok(buf.freeze())
            })
            .await;
            return match read {
                Ok(Ok(bytes)) if bytes.is_empty() => Some(Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "blob file is shorter than its size",
                ))),
                Ok(Ok(bytes)) => {
                    self.pos += bytes.len() as u64;
                    Some(Ok(charged(bytes, charge)))
                }
                Ok(Err(e)) => Some(Err(e)),
                Err(e) => Some(Err(std::io::Error::other(e))),
            };
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn recent_window_serves_only_what_it_holds_and_forgets_the_oldest() {
        let mut r = Recent::default();
        let chunks = RECENT_WINDOW / MIB;
        for i in 0..chunks {
            r.push(i * MIB, Bytes::from(vec![i as u8 + 7; MIB as usize]));
        }
        assert_eq!(r.slice(10, 20, 64).unwrap(), Bytes::from(vec![7u8; 10]));
        // Bounded by the limit (the publish point) and by `max`, gathered across chunks.
        let across = r.slice(MIB - 4, 3 * MIB, 8).unwrap();
        assert_eq!(&across[..], &[7, 7, 7, 7, 8, 8, 8, 8]);
        assert_eq!(r.slice(0, 100, usize::MAX).unwrap().len(), 100);
        assert!(r.slice(5, 5, 64).is_none());
        r.push(chunks * MIB, Bytes::from(vec![9u8; 16]));
        assert!(
            r.slice(10, 20, 64).is_none(),
            "the oldest chunk should have been dropped"
        );
        assert_eq!(r.slice(chunks * MIB + 1, u64::MAX, 64).unwrap().len(), 15);
        assert!(r.slice(chunks * MIB + 16, u64::MAX, 64).is_none());
    }
}
