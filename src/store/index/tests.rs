//! The index contract, run against the local implementation (the registry backend runs the
//! same checks against a real registry in `tests/scaleout.rs`).

use super::local::LocalIndex;
use super::{IndexEntry, IndexKey, PatchedIndex};
use crate::distribution::Digest;

fn entry(patched: &Digest) -> IndexEntry {
    IndexEntry {
        patched: patched.clone(),
        media_type: "application/vnd.oci.image.index.v1+json".into(),
        platforms: r#"{"partial":false,"platforms":[]}"#.into(),
        repository: "library/debian".into(),
        content: Vec::new(),
        referrers: Vec::new(),
    }
}

#[tokio::test]
async fn put_get_list_forget() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = LocalIndex::open(dir.path().join("patched")).expect("open");
    let original = Digest::sha256_of(b"original");
    let patched = Digest::sha256_of(b"patched");
    let key = IndexKey {
        upstream: "docker.io".into(),
        original: original.clone(),
    };
    assert_eq!(index.get(&key).await.expect("get"), None);
    index.put(&key, &entry(&patched)).await.expect("put");
    assert_eq!(index.get(&key).await.expect("get"), Some(entry(&patched)));
    assert_eq!(
        index.list("docker.io").await.expect("list"),
        vec![original.clone()]
    );
    assert!(index.list("quay.io").await.expect("list").is_empty());

    // A re-opened index (a restart) reads what was put.
    let reopened = LocalIndex::open(dir.path().join("patched")).expect("open");
    assert_eq!(
        reopened.get(&key).await.expect("get"),
        Some(entry(&patched))
    );

    index.forget(&key);
    assert_eq!(index.get(&key).await.expect("get"), None);
    index.put(&key, &entry(&patched)).await.expect("put");
    assert!(index.forget_everywhere(&original).await);
    assert!(!index.forget_everywhere(&original).await);
}

#[tokio::test]
async fn referrers_keep_every_document_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let index = LocalIndex::open(dir.path().join("patched")).expect("open");
    let subject = Digest::sha256_of(b"subject");
    assert!(index.referrers(&subject).await.is_empty());
    let (first, second) = (Digest::sha256_of(b"vex 1"), Digest::sha256_of(b"vex 2"));
    index.add_referrer(&subject, &first).await.expect("add");
    index.add_referrer(&subject, &second).await.expect("add");
    index
        .add_referrer(&subject, &first)
        .await
        .expect("add again");
    assert_eq!(index.referrers(&subject).await, vec![first, second]);
    // The referrers directory is not an upstream.
    assert!(index.list("referrers").await.expect("list").is_empty());
}

#[tokio::test]
async fn a_record_of_an_older_release_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("patched");
    let original = Digest::sha256_of(b"original");
    let patched = Digest::sha256_of(b"patched");
    std::fs::create_dir_all(root.join("docker.io")).expect("mkdir");
    std::fs::write(
        root.join("docker.io").join(original.hex()),
        format!("{patched}\napplication/vnd.oci.image.manifest.v1+json\n"),
    )
    .expect("write");
    let index = LocalIndex::open(root).expect("open");
    let key = IndexKey {
        upstream: "docker.io".into(),
        original,
    };
    let found = index.get(&key).await.expect("get").expect("an entry");
    assert_eq!(found.patched, patched);
    assert_eq!(found.platforms, "");
    assert_eq!(found.repository, "");
}
