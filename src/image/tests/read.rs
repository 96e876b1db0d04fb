//! Whole images: whiteouts, opaque directories, links, and how few layers a read opens.

use super::*;

const OS_RELEASE: &str = "/etc/os-release";

fn os_release(id: &str) -> Vec<u8> {
    format!("ID={id}\n").into_bytes()
}

/// Layers with nothing of interest, to stack under or over the interesting ones.
fn filler(n: usize) -> Vec<u8> {
    Layer::new().file(&format!("opt/filler-{n}"), b"x").gzip()
}

#[test]
fn upper_layer_wins() {
    let blobs = Blobs::new(vec![
        Layer::new()
            .file("etc/os-release", &os_release("base"))
            .gzip(),
        filler(1),
        Layer::new()
            .file("etc/os-release", &os_release("upper"))
            .gzip(),
    ]);
    let files = blobs.read(&[OS_RELEASE]).unwrap();
    assert_eq!(sorted(&files), [(OS_RELEASE.into(), "ID=upper\n".into())]);
    let fs = blobs.filesystem().unwrap();
    assert_eq!(fs.get(OS_RELEASE).unwrap().layer, 2);
}

#[test]
fn a_file_in_the_top_layer_opens_only_the_top_layer() {
    let mut layers: Vec<Vec<u8>> = (0..9).map(filler).collect();
    layers.push(
        Layer::new()
            .file("etc/os-release", &os_release("top"))
            .gzip(),
    );
    let blobs = Blobs::new(layers);
    let files = blobs.read(&[OS_RELEASE]).unwrap();
    assert_eq!(files[OS_RELEASE], os_release("top"));
    assert_eq!(blobs.opened(), [9]);
}

#[test]
fn reading_stops_at_the_layer_that_decides() {
    let blobs = Blobs::new(vec![
        // Broken: never opened, so never a problem.
        b"not a layer at all".to_vec(),
        Layer::new()
            .file("etc/os-release", &os_release("one"))
            .gzip(),
        filler(2),
        filler(3),
    ]);
    assert_eq!(
        blobs.read(&[OS_RELEASE]).unwrap()[OS_RELEASE],
        os_release("one")
    );
    assert_eq!(blobs.opened(), [3, 2, 1]);
}

#[test]
fn absent_files_read_every_layer_and_are_left_out() {
    let blobs = Blobs::new(vec![filler(0), filler(1)]);
    assert!(blobs.read(&["/etc/missing"]).unwrap().is_empty());
    assert_eq!(blobs.opened(), [1, 0]);
}

#[test]
fn whiteout_deletes_a_lower_file() {
    let blobs = Blobs::new(vec![
        Layer::new()
            .file("etc/os-release", &os_release("base"))
            .file("etc/keep", b"k")
            .gzip(),
        Layer::new().whiteout("etc/os-release").gzip(),
    ]);
    let files = blobs.read(&[OS_RELEASE, "/etc/keep"]).unwrap();
    assert_eq!(sorted(&files), [("/etc/keep".into(), "k".into())]);
    let fs = blobs.filesystem().unwrap();
    assert!(fs.get(OS_RELEASE).is_none());
    assert!(fs.get("etc/keep").is_some());
    assert!(
        fs.get("etc/.wh.os-release").is_none(),
        "markers are not entries"
    );
}

#[test]
fn whiteout_of_a_directory_hides_everything_below() {
    let blobs = Blobs::new(vec![
        Layer::new()
            .file("usr/share/doc/a", b"a")
            .file("usr/share/doc/sub/b", b"b")
            .gzip(),
        Layer::new().whiteout("usr/share/doc").gzip(),
    ]);
    assert!(blobs.read(&["/usr/share/doc/sub/b"]).unwrap().is_empty());
    // Decided by the whiteout in the top layer: the bottom layer is never read.
    assert_eq!(blobs.opened(), [1]);
    let fs = blobs.filesystem().unwrap();
    let paths: Vec<&[u8]> = fs.iter().map(|(p, _)| p).collect();
    assert_eq!(paths, [&b"usr"[..], b"usr/share"]);
}

#[test]
fn whiteout_and_new_entry_in_the_same_layer_keep_the_new_entry() {
    // The order inside a layer does not matter: the layer's own entries win.
    let blobs = Blobs::new(vec![
        Layer::new()
            .file("etc/os-release", &os_release("old"))
            .gzip(),
        Layer::new()
            .file("etc/os-release", &os_release("new"))
            .whiteout("etc/os-release")
            .gzip(),
    ]);
    assert_eq!(
        blobs.read(&[OS_RELEASE]).unwrap()[OS_RELEASE],
        os_release("new")
    );
    assert_eq!(
        blobs.filesystem().unwrap().get(OS_RELEASE).unwrap().layer,
        1
    );
}

#[test]
fn opaque_directory_hides_lower_contents_but_not_its_own() {
    let blobs = Blobs::new(vec![
        Layer::new()
            .file("etc/apt/a", b"a")
            .file("etc/apt/b", b"b")
            .file("etc/other", b"o")
            .gzip(),
        Layer::new()
            .file("etc/apt/c", b"c")
            .opaque("etc/apt")
            .gzip(),
    ]);
    let files = blobs
        .read(&["/etc/apt/a", "/etc/apt/c", "/etc/other", "/etc/apt/"])
        .unwrap();
    assert_eq!(
        sorted(&files),
        [
            ("/etc/apt/c".into(), "c".into()),
            ("/etc/other".into(), "o".into()),
        ]
    );
    let fs = blobs.filesystem().unwrap();
    let names: Vec<&[u8]> = fs
        .list_dir("/etc/apt")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, [&b"c"[..]]);
    assert!(fs.get("etc/other").is_some());
}

#[test]
fn status_d_listing_across_layers_with_a_whiteout() {
    let blobs = Blobs::new(vec![
        Layer::new()
            .file("var/lib/dpkg/status.d/base-files", b"Package: base-files\n")
            .file(
                "var/lib/dpkg/status.d/libc6",
                b"Package: libc6\nVersion: 1\n",
            )
            .file("var/lib/dpkg/status.d/tzdata", b"Package: tzdata\n")
            .file(
                "var/lib/dpkg/status.d-not/x",
                b"sorts between status.d and status.d/",
            )
            .gzip(),
        filler(1),
        Layer::new()
            .file(
                "var/lib/dpkg/status.d/libc6",
                b"Package: libc6\nVersion: 2\n",
            )
            .file("var/lib/dpkg/status.d/libssl3", b"Package: libssl3\n")
            .whiteout("var/lib/dpkg/status.d/tzdata")
            .dir("var/lib/dpkg/status.d/nested")
            .file("var/lib/dpkg/status.d/nested/deep", b"not a direct child")
            .gzip(),
    ]);
    let dir = "/var/lib/dpkg/status.d/";
    let files = blobs.read(&[dir]).unwrap();
    assert_eq!(
        sorted(&files),
        [
            (format!("{dir}base-files"), "Package: base-files\n".into()),
            (format!("{dir}libc6"), "Package: libc6\nVersion: 2\n".into()),
            (format!("{dir}libssl3"), "Package: libssl3\n".into()),
        ]
    );
    assert_eq!(blobs.opened(), [2, 1, 0]);
    let fs = blobs.filesystem().unwrap();
    let listed: Vec<(&[u8], usize)> = fs
        .list_dir(dir)
        .into_iter()
        .map(|(name, node)| (name, node.layer))
        .collect();
    assert_eq!(
        listed,
        [
            (&b"base-files"[..], 0),
            (b"libc6", 2),
            (b"libssl3", 2),
            (b"nested", 2)
        ]
    );
}

#[test]
fn listing_stops_at_an_opaque_directory() {
    let blobs = Blobs::new(vec![
        Layer::new().file("status.d/old", b"old").gzip(),
        Layer::new()
            .opaque("status.d")
            .file("status.d/new", b"new")
            .gzip(),
    ]);
    let files = blobs.read(&["status.d/"]).unwrap();
    assert_eq!(sorted(&files), [("status.d/new".into(), "new".into())]);
    assert_eq!(blobs.opened(), [1]);
}

#[test]
fn symlinked_os_release_follows_into_any_layer() {
    // Debian's layout: /etc/os-release -> ../usr/lib/os-release, and an upper layer that
    // updates only the target. The target's contents were passed over while the upper layer
    // was read, so that one layer is read again.
    let blobs = Blobs::new(vec![
        Layer::new()
            .symlink("etc/os-release", "../usr/lib/os-release")
            .file("usr/lib/os-release", &os_release("base"))
            .gzip(),
        Layer::new()
            .file("usr/lib/os-release", &os_release("updated"))
            .gzip(),
    ]);
    assert_eq!(
        blobs.read(&[OS_RELEASE]).unwrap()[OS_RELEASE],
        os_release("updated")
    );
    assert_eq!(blobs.opened(), [1, 0, 1]);
    let fs = blobs.filesystem().unwrap();
    let (real, node) = fs.resolve(OS_RELEASE, 40).unwrap().unwrap();
    assert_eq!(
        (real.as_slice(), node.layer),
        (&b"usr/lib/os-release"[..], 1)
    );
}

#[test]
fn symlink_target_later_in_the_same_layer_is_read_in_one_pass() {
    let blobs = Blobs::new(vec![Layer::new()
        .symlink("etc/os-release", "../usr/lib/os-release")
        .file("usr/lib/os-release", &os_release("debian"))
        .gzip()]);
    assert_eq!(
        blobs.read(&[OS_RELEASE]).unwrap()[OS_RELEASE],
        os_release("debian")
    );
    assert_eq!(blobs.opened(), [0]);
}

#[test]
fn symlink_target_earlier_in_the_stream_is_read_again() {
    let blobs = Blobs::new(vec![Layer::new()
        .file("usr/lib/os-release", &os_release("debian"))
        .symlink("etc/os-release", "../usr/lib/os-release")
        .gzip()]);
    assert_eq!(
        blobs.read(&[OS_RELEASE]).unwrap()[OS_RELEASE],
        os_release("debian")
    );
    assert_eq!(blobs.opened(), [0, 0]);
}

#[test]
fn absolute_and_escaping_symlinks_stay_inside_the_image() {
    let blobs = Blobs::new(vec![Layer::new()
        .symlink("etc/os-release", "/usr/lib/os-release")
        .symlink("etc/escape", "../../../../../usr/lib/os-release")
        .symlink("lib", "usr/lib")
        .file("usr/lib/os-release", &os_release("inside"))
        .gzip()]);
    let files = blobs
        .read(&[
            OS_RELEASE,
            "/etc/escape",
            "/lib/os-release",
            "/etc/../lib/./os-release",
        ])
        .unwrap();
    assert_eq!(files.len(), 4);
    assert!(files.values().all(|v| *v == os_release("inside")));
}

#[test]
fn symlink_loops_are_an_error() {
    let blobs = Blobs::new(vec![Layer::new()
        .symlink("a", "b")
        .symlink("b", "/a")
        .gzip()]);
    let err = blobs.read(&["/a"]).unwrap_err();
    assert!(
        matches!(err, ImageError::TooManySymlinks { max: 40, .. }),
        "{err}"
    );
    let err = blobs.filesystem().unwrap().resolve("a", 8).unwrap_err();
    assert!(
        matches!(err, ImageError::TooManySymlinks { max: 8, .. }),
        "{err}"
    );
}

#[test]
fn hardlinks_give_their_targets_contents() {
    let blobs = Blobs::new(vec![
        Layer::new()
            .file("usr/bin/perl", b"#!perl")
            .hardlink("usr/bin/perl5.36", "usr/bin/perl")
            .gzip(),
        // A later layer replaces the name the link was made from; the link keeps its data.
        Layer::new().file("usr/bin/perl", b"#!perl-new").gzip(),
    ]);
    let files = blobs.read(&["/usr/bin/perl5.36", "/usr/bin/perl"]).unwrap();
    assert_eq!(
        sorted(&files),
        [
            ("/usr/bin/perl".into(), "#!perl-new".into()),
            ("/usr/bin/perl5.36".into(), "#!perl".into()),
        ]
    );
    let fs = blobs.filesystem().unwrap();
    let link = fs.get("usr/bin/perl5.36").unwrap();
    assert_eq!(
        (link.kind, link.size, link.layer),
        (EntryKind::Hardlink, 6, 0)
    );
    assert_eq!(link.link_target.as_deref(), Some(&b"usr/bin/perl"[..]));
}

#[test]
fn hardlink_to_a_missing_target_is_an_error() {
    let blobs = Blobs::new(vec![Layer::new().hardlink("a", "nowhere").gzip()]);
    let err = blobs.read(&["/a"]).unwrap_err();
    assert!(
        matches!(err, ImageError::HardlinkTargetMissing { .. }),
        "{err}"
    );
}

#[test]
fn replacing_directories_and_files() {
    let blobs = Blobs::new(vec![
        Layer::new()
            .file("opt/app/bin", b"1")
            .file("srv", b"file")
            .symlink("data", "srv")
            .gzip(),
        // `opt/app` becomes a file (its lower contents go); `srv` becomes a directory; a
        // file below `data` makes `data` a directory, as an extractor would.
        Layer::new()
            .file("opt/app", b"now a file")
            .file("srv/x", b"x")
            .file("data/y", b"y")
            .gzip(),
    ]);
    let fs = blobs.filesystem().unwrap();
    let kinds: Vec<(&[u8], EntryKind)> = fs.iter().map(|(p, n)| (p, n.kind)).collect();
    assert_eq!(
        kinds,
        [
            (&b"data"[..], EntryKind::Dir),
            (b"data/y", EntryKind::File),
            (b"opt", EntryKind::Dir),
            (b"opt/app", EntryKind::File),
            (b"srv", EntryKind::Dir),
            (b"srv/x", EntryKind::File),
        ]
    );
    assert!(fs.get("data").unwrap().implicit);
    let files = blobs
        .read(&["/opt/app/bin", "/opt/app", "/srv/x", "/data/y"])
        .unwrap();
    assert_eq!(files.len(), 3);
    assert!(!files.contains_key("/opt/app/bin"));
}

#[test]
fn directories_are_not_files() {
    let blobs = Blobs::new(vec![Layer::new().dir("etc/os-release").gzip()]);
    assert!(blobs.read(&[OS_RELEASE]).unwrap().is_empty());
}

#[test]
fn non_utf8_names_are_lossless_in_the_index_and_an_error_in_a_listing() {
    let blobs = Blobs::new(vec![Layer::new()
        .raw_file(b"status.d/caf\xe9", b"x")
        .file("status.d/ok", b"ok")
        .gzip()]);
    let fs = blobs.filesystem().unwrap();
    assert!(fs.get(&b"status.d/caf\xe9"[..]).is_some());
    let err = blobs.read(&["/status.d/"]).unwrap_err();
    assert!(matches!(err, ImageError::NonUtf8Path { .. }), "{err}");
    assert_eq!(blobs.read(&["/status.d/ok"]).unwrap().len(), 1);
}

#[test]
fn zstd_and_plain_layers_mix() {
    let zstd = include_bytes!("../testdata/layer.tar.zst").to_vec();
    let blobs = Blobs::new(vec![zstd, Layer::new().file("opt/x", b"x").tar()]);
    assert_eq!(
        blobs.read(&[OS_RELEASE]).unwrap()[OS_RELEASE],
        b"ID=zstd-fixture\n"
    );
}

#[test]
fn limits_count_over_the_whole_read() {
    let blobs = Blobs::new(vec![filler(0), filler(1), filler(2)]);
    let limits = Limits {
        max_entries: 2,
        ..Limits::default()
    };
    let err = blobs.read_with(&["/missing"], &limits).unwrap_err();
    match err {
        ImageError::LimitExceeded { layer, limit, .. } => {
            // One entry per layer, read from the top: the third layer read is the bottom.
            assert_eq!((layer.index, limit), (0, Limit::MaxEntries));
        }
        other => panic!("{other}"),
    }
}

#[test]
fn wanted_file_over_the_size_limit_is_an_error() {
    let blobs = Blobs::new(vec![Layer::new()
        .file("var/lib/rpm/rpmdb.sqlite", &[0u8; 128])
        .gzip()]);
    let limits = Limits {
        max_file_bytes: 100,
        ..Limits::default()
    };
    let err = blobs
        .read_with(&["/var/lib/rpm/rpmdb.sqlite"], &limits)
        .unwrap_err();
    assert!(err.to_string().contains("max_file_bytes"), "{err}");
    assert!(blobs
        .read_with(&["/etc/os-release"], &limits)
        .unwrap()
        .is_empty());
}

#[test]
fn a_layer_that_cannot_be_opened_is_named() {
    let descriptors = vec![LayerDescriptor::new("sha256:gone", MEDIA_TYPE_OCI_LAYER)];
    let blobs: Vec<Vec<u8>> = Vec::new();
    let err = read_files(&blobs, &descriptors, &[OS_RELEASE], &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Open { .. }), "{err}");
    assert!(err.to_string().contains("layer 0 (sha256:gone)"), "{err}");
    assert!(err.is_retryable());
}
