use std::sync::Arc;

use super::*;
use crate::config::Config;
use crate::metrics::Metrics;

fn upstream(url: &str, password: Option<&str>) -> Upstream {
    let mut toml = format!("[[upstream]]\nname = \"reg\"\nurl = {url:?}\n");
    if let Some(p) = password {
        toml.push_str(&format!("username = \"pusher\"\npassword = {p:?}\n"));
    }
    let config = Config::from_toml_str(&toml).unwrap();
    Upstream::new(config.upstream[0].clone(), Arc::new(Metrics::new())).unwrap()
}

#[test]
fn pull_scopes_are_unchanged() {
    let pull = Access::Pull("a/b");
    assert_eq!(pull.cache_key(), "repository:a/b:pull");
    assert_eq!(pull.token_scopes(None), vec!["repository:a/b:pull"]);
    assert_eq!(
        pull.token_scopes(Some("repository:a/b:pull repository:c:pull".into())),
        vec!["repository:a/b:pull repository:c:pull"]
    );
    assert!(!pull.pushes());
}

#[test]
fn push_and_mount_scopes() {
    let push = Access::Push("a/b");
    assert_eq!(push.cache_key(), "repository:a/b:pull,push");
    // A HEAD is challenged for pull only; the token must still allow the push that follows.
    assert_eq!(
        push.token_scopes(Some("repository:a/b:pull".into())),
        vec!["repository:a/b:pull,push", "repository:a/b:pull"]
    );
    let mount = Access::Mount {
        to: "a/b",
        from: "c",
    };
    assert_eq!(mount.repository(), "a/b");
    assert_eq!(
        mount.cache_key(),
        "repository:a/b:pull,push repository:c:pull"
    );
    assert_eq!(
        mount.token_scopes(Some("repository:a/b:pull,push repository:c:pull".into())),
        vec!["repository:a/b:pull,push", "repository:c:pull"]
    );
}

#[test]
fn upload_locations_stay_on_the_registry() {
    let u = upstream("http://127.0.0.1:5000", None);
    assert_eq!(
        u.upload_url("/v2/r/blobs/uploads/abc?_state=x")
            .unwrap()
            .as_str(),
        "http://127.0.0.1:5000/v2/r/blobs/uploads/abc?_state=x"
    );
    assert_eq!(
        u.upload_url("http://127.0.0.1:5000/v2/r/blobs/uploads/abc")
            .unwrap()
            .as_str(),
        "http://127.0.0.1:5000/v2/r/blobs/uploads/abc"
    );
    for elsewhere in [
        "http://127.0.0.2:5000/v2/r/blobs/uploads/abc",
        "https://127.0.0.1:5000/v2/r/blobs/uploads/abc",
        "//evil.example/v2/r/blobs/uploads/abc",
    ] {
        let err = u.upload_url(elsewhere).unwrap_err().to_string();
        assert!(err.contains("points away"), "{elsewhere}: {err}");
    }
}

#[test]
fn error_bodies_become_messages() {
    let body = br#"{"errors":[{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:abc"}]}"#;
    assert_eq!(
        format_error_body(body).unwrap(),
        "MANIFEST_BLOB_UNKNOWN: blob unknown to registry (sha256:abc)"
    );
    let two = br#"{"errors":[{"code":"DENIED","message":"no","detail":{"x":1}},{"code":"UNAUTHORIZED"}]}"#;
    assert_eq!(format_error_body(two).unwrap(), "DENIED: no; UNAUTHORIZED");
    assert_eq!(format_error_body(b"oops\n").unwrap(), "oops");
    assert_eq!(format_error_body(b""), None);
    assert_eq!(format_error_body(br#"{"errors":[]}"#), None);
}

#[test]
fn secrets_are_scrubbed_from_registry_messages() {
    let u = upstream("http://127.0.0.1:5000", Some("hunter2-Secret"));
    let header = u.credentials.as_ref().unwrap().basic_header();
    let echoed = format!("bad password hunter2-Secret in {header}");
    let clean = u.scrub(echoed, Access::Push("r"));
    assert!(!clean.contains("hunter2-Secret"), "{clean}");
    assert!(
        !clean.contains(header.trim_start_matches("Basic ")),
        "{clean}"
    );
    assert!(clean.contains("[REDACTED]"));
}

#[tokio::test]
async fn sources_must_have_the_announced_size() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, b"0123456789").unwrap();
    let file = BlobSource::File(path.clone());
    assert!(file.check(10).await.is_ok());
    assert!(file.check(11).await.unwrap_err().contains("is 10 bytes"));
    assert!(BlobSource::Bytes(Bytes::from_static(b"abc"))
        .check(2)
        .await
        .is_err());
    let missing = BlobSource::File(dir.path().join("nope"));
    assert!(missing.check(1).await.unwrap_err().contains("nope"));
}
