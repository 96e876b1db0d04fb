//! A reader's own upstream stream, for a blob the store cannot take (full disk). The
//! reader has already sent the client `pos` bytes of the blob; it hashes what the failed
//! fill left on disk, asks upstream for the rest with Range, hashes everything up to the
//! end, and holds its last chunk back until the digest verified: the client gets the whole
//! blob, verified, or a cut body, never a complete wrong one. Nothing is stored.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;

use super::Origin;
use crate::distribution::reference::Hasher;
use crate::distribution::ErrorCode;

pub(super) struct PassThrough {
    origin: Arc<Origin>,
    response: reqwest::Response,
    hasher: Option<Hasher>,
    /// Offset in the blob of the next byte upstream sends.
    at: u64,
    /// The client's position and end.
    pos: u64,
    end: Option<u64>,
    held: Option<Bytes>,
}

const HASH_READ: usize = 1024 * 1024;

impl PassThrough {
    /// Starts from `written` bytes on disk in `file` (if any) and the client at `pos`.
    pub(super) async fn start(
        origin: Arc<Origin>,
        file: Option<Arc<File>>,
        written: u64,
        pos: u64,
        end: Option<u64>,
    ) -> std::io::Result<PassThrough> {
        let mut hasher = Hasher::new(origin.digest.algorithm());
        let prefix = match &file {
            Some(_) => written.min(pos),
            None => 0,
        };
        if let (Some(file), true) = (file, prefix > 0) {
            hasher = tokio::task::spawn_blocking(move || -> std::io::Result<Hasher> {
                let mut buf = vec![0u8; HASH_READ];
                let mut at = 0u64;
                while at < prefix {
                    let want = (prefix - at).min(HASH_READ as u64) as usize;
                    file.read_exact_at(&mut buf[..want], at)?;
                    hasher.update(&buf[..want]);
                    at += want as u64;
                }
                Ok(hasher)
            })
            .await
            .map_err(std::io::Error::other)??;
        }
        let route = &origin.route;
        let (response, _) = route
            .upstream
            .get_blob(&route.repository, &origin.digest, prefix)
            .await
            .map_err(|e| std::io::Error::other(e.into_api(ErrorCode::BlobUnknown).message))?;
        origin.metrics.blobs_uncached.inc();
        Ok(PassThrough {
            origin,
            response,
            hasher: Some(hasher),
            at: prefix,
            pos,
            end,
            held: None,
        })
    }

    pub(super) async fn next_chunk(&mut self) -> Option<std::io::Result<Bytes>> {
        loop {
            let chunk = match self.response.chunk().await {
                Ok(c) => c,
                Err(e) => {
                    return Some(Err(std::io::Error::other(format!(
                        "upstream stream of {} broke off: {}",
                        self.origin.digest,
                        crate::upstream::describe_reqwest(&e)
                    ))))
                }
            };
            let Some(chunk) = chunk else {
                // The end: only a verified blob gets its last bytes.
                let hasher = self.hasher.take()?;
                if hasher.finish() != self.origin.digest {
                    return Some(Err(std::io::Error::other(format!(
                        "upstream {} sent content for {} that does not verify",
                        self.origin.route.upstream.name(),
                        self.origin.digest
                    ))));
                }
                return self.held.take().map(Ok);
            };
            if let Some(h) = self.hasher.as_mut() {
                h.update(&chunk);
            }
            let (from, to) = (self.at, self.at + chunk.len() as u64);
            self.at = to;
            let stop = self.end.unwrap_or(u64::MAX).min(to);
            if stop <= self.pos {
                continue;
            }
            let useful = chunk.slice((self.pos - from) as usize..(stop - from) as usize);
            self.pos = stop;
            if let Some(previous) = self.held.replace(useful) {
                return Some(Ok(previous));
            }
        }
    }
}
