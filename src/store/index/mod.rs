//! The original -> patched index: which patched image a job made from an original image
//! of an upstream, and the referrers (VEX documents) of patched manifests. One interface,
//! [`PatchedIndex`], with two implementations: [`local::LocalIndex`] (files under
//! `<storage.path>/patched/`, one process) and `store::registry::RegistryIndex` (an
//! existing OCI registry that replicas share, with the local files as its cache).
//!
//! The index never holds content itself: blobs and manifests are in the [`Store`]
//! (locally) and, for the registry backend, pushed to the backing registry by
//! [`PatchedIndex::put`] before the entry that names them, so an entry that can be read
//! always has its content behind it.
//!
//! [`Store`]: super::Store

pub mod local;

use futures_util::future::BoxFuture;

use crate::distribution::Digest;

/// An index entry's key: the original image's top digest behind one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IndexKey {
    /// The configured upstream's name.
    pub upstream: String,
    pub original: Digest,
}

/// One piece of content a patched image added (a patch layer, a config, a manifest, a VEX
/// document), as the registry backend pushes and reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentDescriptor {
    pub digest: Digest,
    pub size: u64,
    /// The media type of a manifest (stored with [`super::Store::put_manifest`]); `None`
    /// for a blob.
    pub manifest_type: Option<String>,
}

/// What the index says of an original image: its patched image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    /// The patched top manifest (or index).
    pub patched: Digest,
    pub media_type: String,
    /// What became of each platform, as JSON (the pipeline's `PlatformsView`); empty when
    /// an old record has none.
    pub platforms: String,
    /// The repository (of the upstream) the original was pulled through; empty in records
    /// written before the registry backend existed.
    pub repository: String,
    /// Everything the patched image added, for a replica that has none of it yet. The
    /// local index leaves it empty: its content is the local store's.
    pub content: Vec<ContentDescriptor>,
    /// `(subject, referrer manifest)` pairs: the VEX documents, cosign signatures and
    /// attestations of patched manifests.
    pub referrers: Vec<(Digest, Digest)>,
}

/// Why the index could not answer or take an entry. Reads that fail are treated as a miss
/// by the pipeline (the original is served, fail-open), never as a patched answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IndexError {
    /// The backing registry is unreachable or refused the request.
    #[error("backing registry: {0}")]
    Backing(String),
    /// What came back does not verify (digest, size, format).
    #[error("backing registry returned invalid content: {0}")]
    Invalid(String),
    /// A local file could not be read or written.
    #[error("index record: {0}")]
    Local(String),
}

/// The original -> patched index, shared by every pull of a process (and, for the registry
/// backend, every replica).
pub trait PatchedIndex: Send + Sync {
    /// The entry for `key`, if one was put (by this process, an earlier run or, for the
    /// registry backend, any replica).
    ///
    /// # Errors
    /// The backing store cannot say ([`IndexError::Backing`]); callers treat it as a miss.
    fn get<'a>(
        &'a self,
        key: &'a IndexKey,
    ) -> BoxFuture<'a, Result<Option<IndexEntry>, IndexError>>;

    /// Makes the content of `entry` readable from the local store (verified against its
    /// digests) and the entry a local one, for an entry another replica put. Nothing to do
    /// for the local index.
    ///
    /// # Errors
    /// Some content cannot be fetched or does not verify; nothing of the entry is recorded.
    fn materialize<'a>(
        &'a self,
        key: &'a IndexKey,
        entry: &'a IndexEntry,
    ) -> BoxFuture<'a, Result<(), IndexError>>;

    /// Records `entry` for `key`: its content (already in the local store) first, then the
    /// entry naming it, so a reader never sees an entry without its content.
    ///
    /// # Errors
    /// The entry (or its content) cannot be written; nothing readable names it then.
    fn put<'a>(
        &'a self,
        key: &'a IndexKey,
        entry: &'a IndexEntry,
    ) -> BoxFuture<'a, Result<(), IndexError>>;

    /// The originals with an entry behind `upstream`.
    ///
    /// # Errors
    /// The backing store cannot list them.
    fn list<'a>(&'a self, upstream: &'a str) -> BoxFuture<'a, Result<Vec<Digest>, IndexError>>;

    /// Drops this process's entry for `key` (its content was evicted); a shared entry
    /// stays, so the next pull reads it back instead of patching again.
    fn forget(&self, key: &IndexKey);

    /// Drops every entry of `original` (under any upstream), shared ones included, so the
    /// next pull patches again; true when there was one.
    fn forget_everywhere<'a>(&'a self, original: &'a Digest) -> BoxFuture<'a, bool>;

    /// Records `referrer` (a manifest in the store) as a referrer of `subject`.
    ///
    /// # Errors
    /// The record cannot be written.
    fn add_referrer<'a>(
        &'a self,
        subject: &'a Digest,
        referrer: &'a Digest,
    ) -> BoxFuture<'a, Result<(), IndexError>>;

    /// The referrers recorded for `subject`.
    fn referrers<'a>(&'a self, subject: &'a Digest) -> BoxFuture<'a, Vec<Digest>>;

    /// The key of the shared entry behind `upstream` that `subject` belongs to: its
    /// patched manifest, a manifest or blob it made, or the subject of one of its
    /// referrers. A replica asked for a blob, a manifest by digest, the referrers or the
    /// `.sig` tag of a patched image it has not pulled yet (the client resolved the tag
    /// through another replica) finds the entry this way, then adopts it as a whole.
    /// `None` for the local index: what it knows is local already.
    ///
    /// # Errors
    /// The backing store cannot say, or its answer does not verify; callers treat it as
    /// a miss.
    fn find_by_digest<'a>(
        &'a self,
        upstream: &'a str,
        subject: &'a Digest,
    ) -> BoxFuture<'a, Result<Option<IndexKey>, IndexError>> {
        let _ = (upstream, subject);
        Box::pin(async { Ok(None) })
    }
}

#[cfg(test)]
mod tests;
