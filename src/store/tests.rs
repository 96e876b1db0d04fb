use super::*;
use crate::config::Config;

fn open(dir: &Path, max_size: &str) -> Store {
    let mut cfg = Config::from_toml_str("").unwrap().storage;
    cfg.path = dir.to_path_buf();
    cfg.max_size = max_size.parse::<bytesize::ByteSize>().unwrap().as_u64();
    Store::open(&cfg, Arc::new(Metrics::new())).unwrap()
}

fn put_blob(store: &Store, content: &[u8]) -> Digest {
    let digest = Digest::sha256_of(content);
    let mut w = store.blob_writer(&digest).unwrap();
    w.write(content).unwrap();
    let size = w.commit(Some(content.len() as u64)).unwrap();
    store.committed(&digest, size);
    digest
}

#[test]
fn committed_blobs_are_readable_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = {
        let store = open(dir.path(), "1GiB");
        put_blob(&store, b"hello")
    };
    let store = open(dir.path(), "1GiB");
    let (file, size) = store.open_blob(&d).unwrap();
    assert_eq!(size, 5);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut &file, &mut s).unwrap();
    assert_eq!(s, "hello");
}

#[test]
fn content_that_does_not_verify_is_never_kept() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "1GiB");
    let claimed = Digest::sha256_of(b"good");
    let mut w = store.blob_writer(&claimed).unwrap();
    w.write(b"evil").unwrap();
    assert!(matches!(
        w.commit(None),
        Err(StoreError::DigestMismatch { .. })
    ));
    assert!(store.open_blob(&claimed).is_none());
    assert!(!layout::blob_path(dir.path(), &claimed).exists());
    assert_eq!(
        std::fs::read_dir(layout::tmp_dir(dir.path()))
            .unwrap()
            .count(),
        0
    );

    let mut w = store.blob_writer(&claimed).unwrap();
    w.write(b"good").unwrap();
    assert!(matches!(
        w.commit(Some(5)),
        Err(StoreError::SizeMismatch { .. })
    ));
    assert!(!layout::blob_path(dir.path(), &claimed).exists());
}

#[test]
fn abandoned_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "1GiB");
    let d = Digest::sha256_of(b"x");
    let mut w = store.blob_writer(&d).unwrap();
    w.write(b"partial").unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_dir(layout::tmp_dir(dir.path()))
            .unwrap()
            .count(),
        0
    );
    // A temp file left by a crash is removed at the next start.
    std::fs::write(layout::tmp_dir(dir.path()).join("crash.part"), b"junk").unwrap();
    let _store = open(dir.path(), "1GiB");
    assert_eq!(
        std::fs::read_dir(layout::tmp_dir(dir.path()))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn least_recently_used_content_is_evicted_above_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "64KiB");
    let a = put_blob(&store, &[1u8; 30 * 1024]);
    let b = put_blob(&store, &[2u8; 30 * 1024]);
    store.sync();
    assert!(store.open_blob(&a).is_some()); // a is now more recent than b
    let c = put_blob(&store, &[3u8; 30 * 1024]);
    store.sync();
    assert!(store.open_blob(&a).is_some(), "recently used a was evicted");
    assert!(store.open_blob(&c).is_some());
    assert!(store.open_blob(&b).is_none(), "b should have been evicted");
    assert!(!layout::blob_path(dir.path(), &b).exists());
}

#[tokio::test]
async fn manifests_keep_their_media_type_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = Bytes::from_static(br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#);
    let digest = Digest::sha256_of(&bytes);
    {
        let store = open(dir.path(), "1GiB");
        store
            .put_manifest(StoredManifest {
                digest: digest.clone(),
                media_type: "application/vnd.oci.image.index.v1+json".into(),
                bytes: bytes.clone(),
            })
            .await
            .unwrap();
    }
    let store = open(dir.path(), "1GiB");
    let m = store.manifest(&digest).await.unwrap().unwrap();
    assert_eq!(m.bytes, bytes);
    assert_eq!(m.media_type, "application/vnd.oci.image.index.v1+json");
    // Corrupted on disk: dropped rather than served.
    std::fs::write(layout::blob_path(dir.path(), &digest), b"rotten").unwrap();
    let store = open(dir.path(), "1GiB");
    assert!(store.manifest(&digest).await.unwrap().is_none());
}
