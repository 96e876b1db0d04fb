use std::io::Read;

use super::*;

struct TarBuilder(tar::Builder<Vec<u8>>);

impl TarBuilder {
    fn new() -> TarBuilder {
        TarBuilder(tar::Builder::new(Vec::new()))
    }

    fn entry(mut self, path: &str, kind: tar::EntryType, data: &[u8], link: Option<&str>) -> Self {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        if let Some(link) = link {
            header.set_link_name(link).unwrap();
        }
        header.set_path(path).unwrap();
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path, tar::EntryType::Regular, data, None)
    }

    fn dir(self, path: &str) -> Self {
        self.entry(path, tar::EntryType::Directory, b"", None)
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn sha(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// A `docker save` tar of an image with `layers`, whose config names `diff_ids`.
fn saved(dir: &Path, layers: &[Vec<u8>], diff_ids: &[String]) -> std::path::PathBuf {
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("l{i}/layer.tar"))
        .collect();
    let config = serde_json::json!({"rootfs": {"type": "layers", "diff_ids": diff_ids}});
    let manifest =
        serde_json::json!([{"Config": "cfg.json", "RepoTags": ["x:1"], "Layers": names}]);
    let mut outer = TarBuilder::new()
        .file("manifest.json", manifest.to_string().as_bytes())
        .file("cfg.json", config.to_string().as_bytes());
    for (name, layer) in names.iter().zip(layers) {
        outer = outer.file(name, layer);
    }
    let path = dir.join("saved.tar");
    std::fs::write(&path, outer.bytes()).unwrap();
    path
}

fn listing(layer: &BuiltLayer) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let gz = std::fs::read(&layer.path).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz.as_slice()));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            (path, e.header().entry_type(), data)
        })
        .collect()
}

fn base() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc")
        .file("etc/os-release", b"ID=debian\n")
        .bytes()
}

#[test]
fn the_new_layer_is_verified_and_rewritten_without_logs_and_caches() {
    let dir = tempfile::tempdir().unwrap();
    let base = base();
    let patch = TarBuilder::new()
        .dir("usr/")
        .dir("usr/lib")
        .file("usr/lib/libz.so.1.3", b"new library")
        .entry(
            "usr/lib/libz.so.1",
            tar::EntryType::Symlink,
            b"",
            Some("libz.so.1.3"),
        )
        .entry(
            "usr/lib/libz-copy",
            tar::EntryType::Link,
            b"",
            Some("usr/lib/libz.so.1.3"),
        )
        .file("usr/lib/.wh.libz.so.1.2", b"")
        .dir("etc/old")
        .file("etc/old/.wh..wh..opq", b"")
        .file("var/log/dpkg.log", b"clock stamps")
        .file("var/log/apt/history.log", b"clock stamps")
        .file("var/lib/dpkg/status-old", b"backup")
        .file("var/lib/dpkg/status", b"Package: zlib1g\n")
        .bytes();
    let saved = saved(
        dir.path(),
        &[base.clone(), patch.clone()],
        &[sha(&base), sha(&patch)],
    );
    let layer = patch_layer(&saved, &[sha(&base).parse().unwrap()], dir.path()).unwrap();
    let entries = listing(&layer);
    let names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "etc/old/",
            "etc/old/.wh..wh..opq",
            "usr/",
            "usr/lib/",
            "usr/lib/.wh.libz.so.1.2",
            "usr/lib/libz.so.1",
            "usr/lib/libz.so.1.3",
            // A hard link comes after the file it links to.
            "usr/lib/libz-copy",
            "var/lib/dpkg/status",
        ]
    );
    let library = entries
        .iter()
        .find(|(n, _, _)| n == "usr/lib/libz.so.1.3")
        .unwrap();
    assert_eq!(library.2, b"new library");
    let hardlink = entries
        .iter()
        .find(|(n, _, _)| n == "usr/lib/libz-copy")
        .unwrap();
    assert_eq!(hardlink.1, tar::EntryType::Link);
    // The same saved image gives the same layer.
    let again = patch_layer(&saved, &[sha(&base).parse().unwrap()], dir.path()).unwrap();
    assert_eq!(again.digest, layer.digest);
}

#[test]
fn changed_base_layers_extra_layers_and_corrupt_bytes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = base();
    let patch = TarBuilder::new().file("etc/x", b"x").bytes();
    let base_id: Digest = sha(&base).parse().unwrap();

    let other = TarBuilder::new()
        .file("etc/os-release", b"ID=other\n")
        .bytes();
    let saved1 = saved(
        dir.path(),
        &[other.clone(), patch.clone()],
        &[sha(&other), sha(&patch)],
    );
    let error = patch_layer(&saved1, std::slice::from_ref(&base_id), dir.path()).unwrap_err();
    assert!(matches!(error, ExportError::BaseChanged(_)), "{error}");

    let saved2 = saved(
        dir.path(),
        &[base.clone(), patch.clone(), patch.clone()],
        &[sha(&base), sha(&patch), sha(&patch)],
    );
    let error = patch_layer(&saved2, std::slice::from_ref(&base_id), dir.path()).unwrap_err();
    assert!(error.to_string().contains("2 new layers"), "{error}");

    let saved3 = saved(
        dir.path(),
        &[base.clone(), patch.clone()],
        &[sha(&base), sha(b"other")],
    );
    let error = patch_layer(&saved3, std::slice::from_ref(&base_id), dir.path()).unwrap_err();
    assert!(error.to_string().contains("hash to"), "{error}");
}

#[test]
fn devices_and_paths_out_of_the_root_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = base();
    let base_id: Digest = sha(&base).parse().unwrap();
    for (patch, expected) in [
        (
            TarBuilder::new()
                .entry("dev/sda", tar::EntryType::Block, b"", None)
                .bytes(),
            "Block",
        ),
        (
            {
                // tar::Header::set_path refuses `..`; write the name bytes directly.
                let mut header = tar::Header::new_old();
                header.as_old_mut().name[..9].copy_from_slice(b"../escape");
                header.set_uid(0);
                header.set_gid(0);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_size(1);
                header.set_entry_type(tar::EntryType::Regular);
                header.set_cksum();
                let mut builder = tar::Builder::new(Vec::new());
                builder.append(&header, &b"x"[..]).unwrap();
                builder.into_inner().unwrap()
            },
            "leaves the root",
        ),
    ] {
        let saved = saved(
            dir.path(),
            &[base.clone(), patch.clone()],
            &[sha(&base), sha(&patch)],
        );
        let error = patch_layer(&saved, std::slice::from_ref(&base_id), dir.path()).unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
}
