//! Blobs: served from the store when present; otherwise one fill task per digest downloads
//! from upstream into a temp file while every client that asked (or asks later) reads that
//! file as it grows. The fill owns the upstream stream, survives client hang-ups, resumes a
//! broken stream with Range, and verifies the digest before commit. Readers never receive
//! the last byte of a blob before it verified, so a client is never handed a complete body
//! that turned out to be wrong.

use std::collections::HashMap;
use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

mod passthrough;
mod read;

use read::Recent;

use super::buffers::BufferPool;
use super::scope::{Kind, ScopeKey, Scopes};
use crate::distribution::{Digest, ErrorCode};
use crate::error::ApiError;
use crate::metrics::{CacheKind, CacheResult, Metrics};
use crate::store::{Store, StoreError};
use crate::upstream::{retry::backoff, Route, UpstreamError};

/// Bytes per read from disk and per response frame.
const READ_CHUNK: usize = 512 * 1024;
/// Full-size read buffers kept for reuse (at `READ_CHUNK` each).
const POOLED_BUFFERS: usize = 32;
/// Chunks a committed blob's reader may read ahead of the socket.
const READ_AHEAD: usize = 2;
/// Network chunks (often 16 KiB) are handed to the disk writer in batches of this many
/// bytes, or after [`PUBLISH_PAUSE`] in a slow stream; progress is published per batch.
/// Per-chunk hand-offs cost a thread wake-up each and made cold pulls 3x slower.
const PUBLISH_EVERY: u64 = 1024 * 1024;
const PUBLISH_PAUSE: Duration = Duration::from_millis(20);
/// Batches queued between the network task and the disk writer (backpressure).
const WRITE_QUEUE: usize = 2;
/// The most recently received bytes of a download stay in memory this long (in bytes), so
/// clients that keep up are served straight from the network, not after the disk write
/// and not by reading the file back. It must exceed the write queue's backlog.
const RECENT_WINDOW: u64 = 4 * 1024 * 1024;
/// Readers are woken after this many newly received bytes (or at each batch hand-off).
const RECEIVE_PUBLISH: u64 = 256 * 1024;

#[derive(Clone)]
enum FillState {
    Starting,
    Streaming {
        size: Option<u64>,
        /// Bytes on disk (readable from `file`).
        written: u64,
        /// Bytes received from upstream (the newest of them in `recent`).
        received: u64,
        file: Arc<File>,
        recent: Arc<Mutex<Recent>>,
    },
    Done {
        size: u64,
        file: Arc<File>,
    },
    /// The store cannot take the blob (full disk): readers fetch it from upstream each,
    /// verifying it themselves; the first `written` bytes can still be read from `file`.
    Uncached {
        size: Option<u64>,
        written: u64,
        file: Option<Arc<File>>,
    },
    Failed(ApiError),
}

struct Fill {
    state: watch::Sender<FillState>,
    /// The upstream and repository it downloads from: others join it only once their own
    /// upstream confirmed the digest.
    owner: ScopeKey,
}

type InFlight = Arc<Mutex<HashMap<Digest, Arc<Fill>>>>;

fn lock(map: &InFlight) -> std::sync::MutexGuard<'_, HashMap<Digest, Arc<Fill>>> {
    // A poisoned lock only means a panic elsewhere mid-operation; the map stays valid.
    map.lock().unwrap_or_else(|p| p.into_inner())
}

/// The single-flight table of blob downloads in progress.
pub struct BlobFills {
    store: Arc<Store>,
    scopes: Arc<Scopes>,
    buffers: Arc<BufferPool>,
    in_flight: InFlight,
    tasks: TaskTracker,
    cancel: CancellationToken,
    fill_timeout: Duration,
    metrics: Arc<Metrics>,
}

/// An open blob: its size (if known) and where its bytes come from.
pub struct BlobHandle {
    pub size: Option<u64>,
    /// `None` only for a blob the store could not take before anything was written.
    file: Option<Arc<File>>,
    pool: Arc<BufferPool>,
    fill: Option<watch::Receiver<FillState>>,
    /// Where to fetch the blob from when its fill cannot store it.
    origin: Option<Arc<Origin>>,
}

/// What a reader needs to stream a blob from upstream itself.
pub(super) struct Origin {
    route: Route,
    digest: Digest,
    metrics: Arc<Metrics>,
}

impl BlobFills {
    pub(super) fn new(
        store: Arc<Store>,
        scopes: Arc<Scopes>,
        fill_timeout: Duration,
        buffer_memory: u64,
        metrics: Arc<Metrics>,
    ) -> BlobFills {
        BlobFills {
            store,
            scopes,
            buffers: BufferPool::new(READ_CHUNK, POOLED_BUFFERS, buffer_memory),
            in_flight: InFlight::default(),
            tasks: TaskTracker::new(),
            cancel: CancellationToken::new(),
            fill_timeout,
            metrics,
        }
    }

    /// At shutdown, after the drain: downloads get up to `grace` to finish (a client may
    /// already have all the bytes of one that is being made durable), then the rest are
    /// cancelled and their temp files removed.
    pub async fn shutdown(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("cancelling blob downloads still running at shutdown");
            self.cancel.cancel();
            self.tasks.wait().await;
        }
    }

    /// The size of a blob without downloading it: store, fill in flight, or upstream HEAD;
    /// the first two only when `route` may read the blob.
    pub async fn size(&self, route: &Route, digest: &Digest) -> Result<u64, ApiError> {
        if let Some(size) = self.store.blob_size(digest) {
            self.scopes.ensure(route, digest, Kind::Blob).await?;
            self.metrics.cache(CacheKind::Blob, CacheResult::Hit);
            return Ok(size);
        }
        let fill = lock(&self.in_flight).get(digest).cloned();
        if let Some(fill) = fill {
            if fill.owner != ScopeKey::new(route, digest) {
                self.scopes.ensure(route, digest, Kind::Blob).await?;
            }
            if let Ok(BlobHandle {
                size: Some(size), ..
            }) = wait_for_start(fill.state.subscribe(), &self.buffers).await
            {
                return Ok(size);
            }
        }
        route
            .upstream
            .head_blob(&route.repository, digest)
            .await
            .map_err(|e| e.into_api(ErrorCode::BlobUnknown))
    }

    /// Opens a blob for reading, starting or joining its download when it is not stored.
    /// A stored blob, or a download through another upstream or repository, is only read
    /// once `route` may read it (see [`super::scope`]).
    pub async fn open(&self, route: &Route, digest: &Digest) -> Result<BlobHandle, ApiError> {
        let owner = ScopeKey::new(route, digest);
        if let Some((file, size)) = self.store.open_blob(digest) {
            self.scopes.ensure(route, digest, Kind::Blob).await?;
            self.metrics.cache(CacheKind::Blob, CacheResult::Hit);
            return Ok(BlobHandle {
                size: Some(size),
                file: Some(Arc::new(file)),
                pool: self.buffers.clone(),
                fill: None,
                origin: None,
            });
        }
        let (fill, joined) = {
            let mut in_flight = lock(&self.in_flight);
            match in_flight.get(digest) {
                Some(fill) => (fill.clone(), true),
                None => {
                    let fill = Arc::new(Fill {
                        state: watch::Sender::new(FillState::Starting),
                        owner,
                    });
                    in_flight.insert(digest.clone(), fill.clone());
                    self.spawn_fill(route.clone(), digest.clone(), fill.clone());
                    (fill, false)
                }
            }
        };
        if joined && fill.owner != owner {
            self.scopes.ensure(route, digest, Kind::Blob).await?;
        }
        let result = if joined {
            CacheResult::Joined
        } else {
            CacheResult::Miss
        };
        self.metrics.cache(CacheKind::Blob, result);
        let mut handle = wait_for_start(fill.state.subscribe(), &self.buffers).await?;
        handle.origin = Some(Arc::new(Origin {
            route: route.clone(),
            digest: digest.clone(),
            metrics: self.metrics.clone(),
        }));
        Ok(handle)
    }

    fn spawn_fill(&self, route: Route, digest: Digest, fill: Arc<Fill>) {
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let timeout = self.fill_timeout;
        let cancel = self.cancel.clone();
        let in_flight = self.in_flight.clone();
        let scopes = self.scopes.clone();
        self.tasks.spawn(async move {
            let outcome = tokio::select! {
                r = tokio::time::timeout(timeout, run_fill(&store, &scopes, &route, &digest, &fill)) => match r {
                    Ok(r) => r,
                    Err(_) => Err(ApiError::upstream(
                        ErrorCode::Unknown,
                        http::StatusCode::GATEWAY_TIMEOUT,
                        format!(
                            "download of {digest} from upstream {} did not finish within {}s",
                            route.upstream.name(),
                            timeout.as_secs()
                        ),
                    )),
                },
                _ = cancel.cancelled() => Err(ApiError::internal("the server is shutting down")),
            };
            if let Err(e) = outcome {
                metrics.blob_fill_failures.inc();
                tracing::warn!(%digest, upstream = route.upstream.name(), error = %e.message, "blob download failed");
                fill.state.send_replace(FillState::Failed(e));
            }
            lock(&in_flight).remove(&digest);
        });
    }
}

/// Waits until a fill knows its size (or failed), then hands out a reader.
async fn wait_for_start(
    mut rx: watch::Receiver<FillState>,
    pool: &Arc<BufferPool>,
) -> Result<BlobHandle, ApiError> {
    loop {
        let state = rx.borrow_and_update().clone();
        match state {
            FillState::Starting => {}
            FillState::Streaming { size, file, .. } => {
                return Ok(BlobHandle {
                    size,
                    file: Some(file),
                    pool: pool.clone(),
                    fill: Some(rx),
                    origin: None,
                })
            }
            FillState::Done { size, file } => {
                return Ok(BlobHandle {
                    size: Some(size),
                    file: Some(file),
                    pool: pool.clone(),
                    fill: Some(rx),
                    origin: None,
                })
            }
            FillState::Uncached { size, file, .. } => {
                return Ok(BlobHandle {
                    size,
                    file,
                    pool: pool.clone(),
                    fill: Some(rx),
                    origin: None,
                })
            }
            FillState::Failed(e) => return Err(e),
        }
        if rx.changed().await.is_err() {
            return Err(ApiError::internal("blob download ended without a result"));
        }
    }
}

fn mismatch_error(route: &Route, digest: &Digest, e: StoreError) -> ApiError {
    match e {
        StoreError::DigestMismatch { .. } | StoreError::SizeMismatch { .. } => ApiError::upstream(
            ErrorCode::Unknown,
            http::StatusCode::BAD_GATEWAY,
            format!(
                "upstream {} sent content for {digest} that does not verify: {e}",
                route.upstream.name()
            ),
        ),
        other => other.into(),
    }
}

/// Downloads one blob into the store, publishing progress to readers.
async fn run_fill(
    store: &Arc<Store>,
    scopes: &Scopes,
    route: &Route,
    digest: &Digest,
    fill: &Arc<Fill>,
) -> Result<(), ApiError> {
    let upstream = &route.upstream;
    let (mut response, total) = upstream
        .get_blob(&route.repository, digest, 0)
        .await
        .map_err(|e| e.into_api(ErrorCode::BlobUnknown))?;
    // Room first: a blob that cannot fit is streamed to its clients, not stored.
    let reservation = match total {
        Some(size) => {
            let (store, d) = (store.clone(), digest.clone());
            match tokio::task::spawn_blocking(move || store.reserve(&d, size)).await {
                Ok(Ok(r)) => Some(r),
                Ok(Err(full)) => {
                    tracing::warn!(%digest, error = %full, "blob served without caching");
                    fill.state.send_replace(FillState::Uncached {
                        size: total,
                        written: 0,
                        file: None,
                    });
                    return Ok(());
                }
                Err(e) => return Err(ApiError::internal(e.to_string())),
            }
        }
        None => None,
    };
    let store_for_writer = store.clone();
    let d = digest.clone();
    let mut writer = tokio::task::spawn_blocking(move || store_for_writer.blob_writer(&d))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    let file = Arc::new(writer.open_reader()?);
    let recent = Arc::new(Mutex::new(Recent::default()));
    fill.state.send_replace(FillState::Streaming {
        size: total,
        written: 0,
        received: 0,
        file: file.clone(),
        recent: recent.clone(),
    });

    // The disk side: hash and write on a blocking thread, publish progress per flush.
    // Hashing and writing run on two threads over the same batches, so a cold pull costs
    // max(hash, write) rather than their sum.
    let (tx, mut rx) = mpsc::channel::<Arc<Vec<Bytes>>>(WRITE_QUEUE);
    let (hash_tx, mut hash_rx) = mpsc::channel::<Arc<Vec<Bytes>>>(WRITE_QUEUE);
    let algorithm = digest.algorithm();
    let hashing = tokio::task::spawn_blocking(move || {
        let mut hasher = crate::distribution::reference::Hasher::new(algorithm);
        while let Some(batch) = hash_rx.blocking_recv() {
            for chunk in batch.iter() {
                hasher.update(chunk);
            }
        }
        hasher.finish()
    });
    let state = fill.clone();
    let disk_store = store.clone();
    let disk =
        tokio::task::spawn_blocking(move || -> Result<crate::store::BlobWriter, StoreError> {
            // On ENOSPC: evict the oldest blobs to make room for the rest, retry once.
            let retry = |writer: &mut crate::store::BlobWriter, e: StoreError| {
                if !e.is_no_space() {
                    return Err(e);
                }
                let rest = total.map_or(PUBLISH_EVERY, |t| t.saturating_sub(writer.written()));
                disk_store.make_room(rest + PUBLISH_EVERY);
                writer.flush().map(|_| ())
            };
            while let Some(batch) = rx.blocking_recv() {
                for chunk in batch.iter() {
                    if let Err(e) = writer.write_unhashed(chunk) {
                        retry(&mut writer, e)?;
                    }
                }
                let published = match writer.flush() {
                    Ok(n) => n,
                    Err(e) => {
                        retry(&mut writer, e)?;
                        writer.flush()?
                    }
                };
                state.state.send_modify(|s| {
                    if let FillState::Streaming { written, .. } = s {
                        *written = published;
                    }
                });
            }
            Ok(writer)
        });
    let mut batch: Vec<Bytes> = Vec::new();
    let mut batch_len = 0u64;
    let mut last_handoff = std::time::Instant::now();
    let mut announced = 0u64;
    let announce = |received: u64| {
        fill.state.send_modify(|s| {
            if let FillState::Streaming { received: r, .. } = s {
                *r = received;
            }
        });
    };

    // The network side: stream, resume with Range after a break, bound the length.
    let mut received = 0u64;
    let mut resumes = 0u32;
    let network: Result<(), ApiError> = loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                received += chunk.len() as u64;
                if total.is_some_and(|t| received > t) {
                    break Err(ApiError::upstream(
                        ErrorCode::Unknown,
                        http::StatusCode::BAD_GATEWAY,
                        format!(
                            "upstream {} sent more bytes for {digest} than announced",
                            upstream.name()
                        ),
                    ));
                }
                if let Ok(mut recent) = recent.lock() {
                    recent.push(received - chunk.len() as u64, chunk.clone());
                }
                if received - announced >= RECEIVE_PUBLISH {
                    announced = received;
                    announce(received);
                }
                batch_len += chunk.len() as u64;
                batch.push(chunk);
                if batch_len >= PUBLISH_EVERY || last_handoff.elapsed() >= PUBLISH_PAUSE {
                    if announced < received {
                        announced = received;
                        announce(received);
                    }
                    batch_len = 0;
                    last_handoff = std::time::Instant::now();
                    let shared = Arc::new(std::mem::take(&mut batch));
                    if hash_tx.send(shared.clone()).await.is_err() || tx.send(shared).await.is_err()
                    {
                        break Ok(()); // the disk side failed; its error is reported below
                    }
                }
            }
            Ok(None) => {
                announce(received);
                if !batch.is_empty() {
                    let shared = Arc::new(std::mem::take(&mut batch));
                    let _ = hash_tx.send(shared.clone()).await;
                    let _ = tx.send(shared).await;
                }
                break Ok(());
            }
            Err(e) => {
                let reason = crate::upstream::describe_reqwest(&e);
                if resumes >= upstream.config().retries || total.is_none() {
                    break Err(UpstreamError::Unavailable {
                        upstream: upstream.name().to_string(),
                        reason: format!("blob {digest} broke off after {received} bytes: {reason}"),
                    }
                    .into_api(ErrorCode::BlobUnknown));
                }
                tokio::time::sleep(backoff(resumes)).await;
                resumes += 1;
                tracing::debug!(%digest, received, resumes, "resuming blob download with Range");
                match upstream.get_blob(&route.repository, digest, received).await {
                    Ok((r, _)) => response = r,
                    Err(e) => break Err(e.into_api(ErrorCode::BlobUnknown)),
                }
            }
        }
    };
    drop(tx);
    drop(hash_tx);
    let writer = disk.await.map_err(|e| ApiError::internal(e.to_string()))?;
    let actual = hashing
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    network?;
    let writer = match writer {
        Ok(w) => w,
        Err(e) if e.is_no_space() => {
            // The readers carry on from upstream; what is on disk stays readable to them.
            store.set_full(Some("no space left on the disk".into()));
            tracing::warn!(%digest, error = %e, "disk full during a download; clients are served without caching");
            let written = match &*fill.state.borrow() {
                FillState::Streaming { written, .. } => *written,
                _ => 0,
            };
            fill.state.send_replace(FillState::Uncached {
                size: total,
                written,
                file: Some(file),
            });
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let verified = writer
        .verify(actual, total)
        .map_err(|e| mismatch_error(route, digest, e))?;
    // Verified: readers may have the last byte now; durability (fsync) comes after. This
    // upstream and repository served it, so they may read it from the store from now on.
    scopes.grant(route, digest).await;
    let size = verified.size();
    fill.state.send_replace(FillState::Done { size, file });
    match tokio::task::spawn_blocking(move || verified.persist()).await {
        Ok(Ok(size)) => store.committed(digest, size),
        Ok(Err(e)) if e.is_no_space() => {
            store.set_full(Some("no space left on the disk".into()));
            tracing::warn!(%digest, error = %e, "verified blob could not be stored: disk full");
        }
        Ok(Err(e)) => tracing::error!(%digest, error = %e, "verified blob could not be stored"),
        Err(e) => tracing::error!(%digest, error = %e, "storing a verified blob panicked"),
    }
    drop(reservation);
    Ok(())
}
