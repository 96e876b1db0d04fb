//! One layer at a time: compression, path rules, limits and broken input.

use super::*;

const FIXTURE_ZSTD: &[u8] = include_bytes!("../testdata/layer.tar.zst");
const FIXTURE_ZSTD_FRAMES: &[u8] = include_bytes!("../testdata/multiframe.tar.zst");

fn layer_ref() -> LayerRef {
    LayerRef {
        index: 3,
        digest: "sha256:abc".to_string(),
    }
}

/// Every entry with its kind, link target and (for files) contents.
fn walk(
    blob: &[u8],
    media_type: &str,
    limits: &Limits,
) -> Result<Vec<(String, EntryKind, String)>, ImageError> {
    let mut seen = Vec::new();
    let mut usage = Usage::default();
    read_layer(
        blob,
        &layer_ref(),
        media_type,
        limits,
        &mut usage,
        |entry| {
            let detail = match entry.kind() {
                EntryKind::File => String::from_utf8_lossy(&entry.read_contents()?).into_owned(),
                _ => String::from_utf8_lossy(entry.link_target().unwrap_or_default()).into_owned(),
            };
            seen.push((
                String::from_utf8_lossy(entry.path()).into_owned(),
                entry.kind(),
                detail,
            ));
            Ok(())
        },
    )?;
    Ok(seen)
}

fn sample() -> Layer {
    Layer::new()
        .dir("./")
        .dir("./etc/")
        .file("./etc/hostname", b"box\n")
        .symlink("etc/os-release", "../usr/lib/os-release")
        .hardlink("/etc/hostname.bak", "./etc/hostname")
}

fn sample_entries() -> Vec<(String, EntryKind, String)> {
    vec![
        ("etc".into(), EntryKind::Dir, String::new()),
        ("etc/hostname".into(), EntryKind::File, "box\n".into()),
        (
            "etc/os-release".into(),
            EntryKind::Symlink,
            "../usr/lib/os-release".into(),
        ),
        (
            "etc/hostname.bak".into(),
            EntryKind::Hardlink,
            "etc/hostname".into(),
        ),
    ]
}

#[test]
fn plain_and_gzip_layers_give_normalised_entries() {
    let limits = Limits::default();
    assert_eq!(
        walk(&sample().tar(), MEDIA_TYPE_OCI_LAYER, &limits).unwrap(),
        sample_entries()
    );
    assert_eq!(
        walk(&sample().gzip(), MEDIA_TYPE_DOCKER_LAYER, &limits).unwrap(),
        sample_entries()
    );
}

#[test]
fn magic_bytes_decide_over_the_media_type() {
    let limits = Limits::default();
    assert_eq!(
        walk(&sample().gzip(), MEDIA_TYPE_OCI_LAYER, &limits).unwrap(),
        sample_entries()
    );
    assert_eq!(
        walk(&sample().tar(), MEDIA_TYPE_OCI_LAYER_GZIP, &limits).unwrap(),
        sample_entries()
    );
    assert_eq!(
        walk(&sample().tar(), "", &limits).unwrap(),
        sample_entries()
    );
    assert_eq!(Compression::sniff(FIXTURE_ZSTD), Compression::Zstd);
    assert_eq!(Compression::sniff(&sample().gzip()), Compression::Gzip);
    assert_eq!(Compression::sniff(b"et"), Compression::None);
}

#[test]
fn concatenated_gzip_members_are_one_stream() {
    let tar = sample().tar();
    let (head, tail) = tar.split_at(700);
    let blob = [gzip(head), gzip(tail)].concat();
    assert_eq!(
        walk(&blob, MEDIA_TYPE_OCI_LAYER_GZIP, &Limits::default()).unwrap(),
        sample_entries()
    );
}

fn fixture_big_file() -> String {
    (0..12000)
        .map(|i| format!("status line {} of the fixture\n", i % 97))
        .collect()
}

fn check_zstd_fixture(blob: &[u8]) {
    let entries = walk(blob, MEDIA_TYPE_OCI_LAYER_ZSTD, &Limits::default()).unwrap();
    let names: Vec<&str> = entries.iter().map(|(p, _, _)| p.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc",
            "etc/os-release",
            "usr",
            "usr/lib",
            "usr/lib/os-release",
            "var/lib/big"
        ]
    );
    assert_eq!(entries[4].2, "ID=zstd-fixture\n");
    assert!(
        entries[5].2 == fixture_big_file(),
        "multi-block file decodes intact"
    );
}

#[test]
fn zstd_layer_with_checksum() {
    check_zstd_fixture(FIXTURE_ZSTD);
}

#[test]
fn zstd_layer_of_several_frames_and_a_skippable_frame() {
    check_zstd_fixture(FIXTURE_ZSTD_FRAMES);
}

#[test]
fn zstd_layer_made_by_the_zstd_tool_at_test_time() {
    let Ok(mut child) = std::process::Command::new("zstd")
        .args(["-q", "-c", "-3"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
    else {
        eprintln!("zstd not installed; skipped");
        return;
    };
    let tar = sample().tar();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&tar));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success());
    let entries = walk(
        &output.stdout,
        MEDIA_TYPE_OCI_LAYER_ZSTD,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(entries, sample_entries());
}

#[test]
fn corrupt_zstd_is_an_error() {
    // Flip one byte inside the compressed data: a decoding error or a checksum mismatch.
    let mut blob = FIXTURE_ZSTD.to_vec();
    let middle = blob.len() / 2;
    blob[middle] ^= 0x55;
    let err = walk(&blob, MEDIA_TYPE_OCI_LAYER_ZSTD, &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");

    let truncated = &FIXTURE_ZSTD[..FIXTURE_ZSTD.len() - 10];
    let err = walk(truncated, MEDIA_TYPE_OCI_LAYER_ZSTD, &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
}

#[test]
fn encrypted_layers_are_refused() {
    let media_type = "application/vnd.oci.image.layer.v1.tar+gzip+encrypted";
    let err = walk(&sample().gzip(), media_type, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ImageError::UnsupportedMediaType { .. }),
        "{err}"
    );
    assert!(!is_readable_media_type("application/vnd.in-toto+json"));
    assert!(is_readable_media_type(MEDIA_TYPE_DOCKER_LAYER));
}

#[test]
fn names_climbing_out_of_the_root_are_rejected() {
    for name in [&b"../etc/passwd"[..], b"./a/../../etc/passwd", b"/../x"] {
        let blob = Layer::new().file("ok", b"").raw_file(name, b"x").tar();
        let err = walk(&blob, MEDIA_TYPE_OCI_LAYER, &Limits::default()).unwrap_err();
        assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
        assert!(err.to_string().contains("layer 3 (sha256:abc)"), "{err}");
    }
    let blob = Layer::new().hardlink("evil", "../../etc/shadow").tar();
    let err = walk(&blob, MEDIA_TYPE_OCI_LAYER, &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::UnsafePath { .. }), "{err}");
    // Inside the root, `..` is fine.
    let blob = Layer::new().file("a/../b", b"x").tar();
    let entries = walk(&blob, MEDIA_TYPE_OCI_LAYER, &Limits::default()).unwrap();
    assert_eq!(entries[0].0, "b");
}

#[test]
fn non_utf8_names_are_kept_as_bytes() {
    let blob = Layer::new().raw_file(b"opt/caf\xe9", b"latin-1").tar();
    let mut paths = Vec::new();
    read_layer(
        &blob[..],
        &layer_ref(),
        "",
        &Limits::default(),
        &mut Usage::default(),
        |e| {
            paths.push(e.path().to_vec());
            Ok(())
        },
    )
    .unwrap();
    assert_eq!(paths, [b"opt/caf\xe9".to_vec()]);
}

fn limit_of(err: &ImageError) -> Option<Limit> {
    match err {
        ImageError::LimitExceeded { limit, .. } => Some(*limit),
        _ => None,
    }
}

#[test]
fn entry_limit() {
    let limits = Limits {
        max_entries: 3,
        ..Limits::default()
    };
    let err = walk(&sample().gzip(), MEDIA_TYPE_OCI_LAYER_GZIP, &limits).unwrap_err();
    assert_eq!(limit_of(&err), Some(Limit::MaxEntries), "{err}");
    assert!(err.to_string().contains("max_entries (3)"), "{err}");
}

#[test]
fn decompressed_size_limit_stops_a_bomb() {
    // 8 MiB of zeros is a few dozen KiB of gzip.
    let blob = Layer::new().file("zeros", &vec![0u8; 8 << 20]).gzip();
    assert!(blob.len() < 100 << 10, "{}", blob.len());
    let limits = Limits {
        max_decompressed_bytes: 1 << 20,
        ..Limits::default()
    };
    // Skipped, not read: the limit still counts what decompression produced.
    let mut usage = Usage::default();
    let err = read_layer(&blob[..], &layer_ref(), "", &limits, &mut usage, |_| Ok(())).unwrap_err();
    assert_eq!(limit_of(&err), Some(Limit::MaxDecompressedBytes), "{err}");
    // Read into memory: the same limit, not a corruption report.
    let err = walk(&blob, "", &limits).unwrap_err();
    assert_eq!(limit_of(&err), Some(Limit::MaxDecompressedBytes), "{err}");
}

#[test]
fn decompressed_size_counts_across_layers_of_one_operation() {
    let blob = Layer::new().file("f", &[7u8; 4096]).tar();
    let limits = Limits {
        max_decompressed_bytes: 3 * blob.len() as u64 - 1,
        ..Limits::default()
    };
    let mut usage = Usage::default();
    for _ in 0..2 {
        read_layer(&blob[..], &layer_ref(), "", &limits, &mut usage, |_| Ok(())).unwrap();
    }
    assert_eq!(usage.decompressed_bytes, 2 * blob.len() as u64);
    assert_eq!(usage.entries, 2);
    let err = read_layer(&blob[..], &layer_ref(), "", &limits, &mut usage, |_| Ok(())).unwrap_err();
    assert_eq!(limit_of(&err), Some(Limit::MaxDecompressedBytes), "{err}");
}

#[test]
fn file_size_limit_applies_to_contents_read() {
    let blob = Layer::new()
        .file("small", b"12345")
        .file("large", &[1u8; 100])
        .tar();
    let limits = Limits {
        max_file_bytes: 64,
        ..Limits::default()
    };
    let err = walk(&blob, "", &limits).unwrap_err();
    assert_eq!(limit_of(&err), Some(Limit::MaxFileBytes), "{err}");
    assert!(err.to_string().contains("/large"), "{err}");
    // Not read, not a problem.
    read_layer(
        &blob[..],
        &layer_ref(),
        "",
        &limits,
        &mut Usage::default(),
        |_| Ok(()),
    )
    .unwrap();
}

#[test]
fn truncated_streams_are_corrupt() {
    let tar = Layer::new()
        .file("a", &[b'a'; 3000])
        .file("b", b"bbb")
        .tar();
    let gz = gzip(&tar);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("tar cut inside file data", tar[..1200].to_vec()),
        ("tar cut inside a header", tar[..512 + 3072 + 100].to_vec()),
        ("gzip cut in the middle", gz[..gz.len() / 2].to_vec()),
        ("gzip without its trailer", gz[..gz.len() - 4].to_vec()),
    ];
    for (what, blob) in cases {
        let err = walk(&blob, "", &Limits::default()).expect_err(what);
        assert!(matches!(err, ImageError::Corrupt { .. }), "{what}: {err}");
    }
}

#[test]
fn gzip_checksum_mismatch_is_corrupt() {
    let mut gz = Layer::new().file("a", b"hello").gzip();
    let crc_at = gz.len() - 8;
    gz[crc_at] ^= 0xff;
    let err = walk(&gz, "", &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
}

#[test]
fn bad_headers_are_corrupt_not_panics() {
    let mut tar = Layer::new().file("a", b"hello").tar();
    tar[0] ^= 0x01; // the name changes, the checksum no longer matches
    let err = walk(&tar, "", &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");

    let mut garbage = vec![0x5au8; 4096];
    garbage[0] = b'x';
    let err = walk(&garbage, "", &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");

    let err = walk(&[0x1f, 0x8b, 0x08], "", &Limits::default()).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
}

#[test]
fn huge_announced_sizes_do_not_allocate() {
    let mut header = tar::Header::new_gnu();
    header.set_path("huge").unwrap();
    header.set_size(1 << 40);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut blob = header.as_bytes().to_vec();
    blob.extend_from_slice(&[0u8; 1024]);
    let limits = Limits {
        max_file_bytes: u64::MAX,
        ..Limits::default()
    };
    let err = walk(&blob, "", &limits).unwrap_err();
    assert!(matches!(err, ImageError::Corrupt { .. }), "{err}");
    let err = walk(&blob, "", &Limits::default()).unwrap_err();
    assert_eq!(limit_of(&err), Some(Limit::MaxFileBytes), "{err}");
    let skipped = read_layer(
        &blob[..],
        &layer_ref(),
        "",
        &limits,
        &mut Usage::default(),
        |_| Ok(()),
    );
    assert!(
        matches!(skipped, Err(ImageError::Corrupt { .. })),
        "{skipped:?}"
    );
}

#[test]
fn empty_blob_is_an_empty_layer() {
    assert_eq!(walk(b"", "", &Limits::default()).unwrap(), vec![]);
    assert_eq!(walk(&gzip(b""), "", &Limits::default()).unwrap(), vec![]);
}
