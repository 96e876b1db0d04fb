//! Cross-checks and mangled input: the top-down reader agrees with the bottom-up index, and
//! no mutation of a layer makes either panic.

use super::*;

/// An image exercising every rule at once.
fn layered_image() -> Blobs {
    Blobs::new(vec![
        Layer::new()
            .file("etc/os-release", b"ID=base\n")
            .file("etc/apt/sources.list", b"deb base")
            .file("etc/apt/trusted.gpg", b"key")
            .symlink("lib", "usr/lib")
            .file("usr/lib/libc.so", b"libc")
            .hardlink("usr/lib/libc.so.6", "usr/lib/libc.so")
            .file("var/lib/dpkg/status.d/a", b"A1")
            .file("var/lib/dpkg/status.d/b", b"B1")
            .file("var/cache/x", b"cache")
            .gzip(),
        Layer::new()
            .whiteout("etc/os-release")
            .opaque("etc/apt")
            .file("etc/apt/sources.list", b"deb mirror")
            .file("var/lib/dpkg/status.d/b", b"B2")
            .whiteout("var/cache")
            .tar(),
        Layer::new()
            .file("etc/os-release", b"ID=top\n")
            .whiteout("var/lib/dpkg/status.d/a")
            .file("var/lib/dpkg/status.d/c", b"C3")
            .symlink("var/lib/dpkg/status.d/d", "/usr/lib/libc.so")
            .gzip(),
    ])
}

#[test]
fn top_down_reads_agree_with_the_bottom_up_index() {
    let blobs = layered_image();
    let fs = blobs.filesystem().unwrap();
    let every_path = [
        "/etc/os-release",
        "/etc/apt/sources.list",
        "/etc/apt/trusted.gpg",
        "/lib/libc.so",
        "/lib/libc.so.6",
        "/usr/lib/libc.so.6",
        "/var/lib/dpkg/status.d/a",
        "/var/lib/dpkg/status.d/b",
        "/var/lib/dpkg/status.d/c",
        "/var/lib/dpkg/status.d/d",
        "/var/cache/x",
    ];
    for path in every_path {
        let one = Blobs::new(layered_image_blobs()).read(&[path]).unwrap();
        let indexed = fs.resolve(path, 40).unwrap();
        let is_file = indexed
            .is_some_and(|(_, node)| matches!(node.kind, EntryKind::File | EntryKind::Hardlink));
        assert_eq!(one.contains_key(path), is_file, "{path}");
    }
    let files = blobs.read(&every_path).unwrap();
    let listing = blobs.read(&["/var/lib/dpkg/status.d/"]).unwrap();
    assert_eq!(
        sorted(&files),
        [
            ("/etc/apt/sources.list".into(), "deb mirror".into()),
            ("/etc/os-release".into(), "ID=top\n".into()),
            ("/lib/libc.so".into(), "libc".into()),
            ("/lib/libc.so.6".into(), "libc".into()),
            ("/usr/lib/libc.so.6".into(), "libc".into()),
            ("/var/lib/dpkg/status.d/b".into(), "B2".into()),
            ("/var/lib/dpkg/status.d/c".into(), "C3".into()),
            ("/var/lib/dpkg/status.d/d".into(), "libc".into()),
        ]
    );
    assert_eq!(
        sorted(&listing),
        [
            ("/var/lib/dpkg/status.d/b".into(), "B2".into()),
            ("/var/lib/dpkg/status.d/c".into(), "C3".into()),
            ("/var/lib/dpkg/status.d/d".into(), "libc".into()),
        ]
    );
}

fn layered_image_blobs() -> Vec<Vec<u8>> {
    let blobs = layered_image();
    (0..3)
        .map(|i| {
            let mut blob = Vec::new();
            blobs
                .open_layer(i, &blobs.descriptors()[i])
                .unwrap()
                .read_to_end(&mut blob)
                .unwrap();
            blob
        })
        .collect()
}

/// xorshift64: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mangled_layers_give_errors_not_panics() {
    let originals = layered_image_blobs();
    let zstd = include_bytes!("../testdata/multiframe.tar.zst").to_vec();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let limits = Limits {
        max_decompressed_bytes: 4 << 20,
        max_file_bytes: 1 << 20,
        ..Limits::default()
    };
    for round in 0..600 {
        let mut blobs = originals.clone();
        if round % 4 == 3 {
            blobs[0] = zstd.clone();
        }
        let victim = rng.below(blobs.len());
        let blob = &mut blobs[victim];
        match rng.below(3) {
            0 => {
                let at = rng.below(blob.len());
                blob[at] ^= 1 << rng.below(8);
            }
            1 => {
                let at = rng.below(blob.len());
                blob[at] = rng.next() as u8;
                let at = rng.below(blob.len());
                blob[at] = 0xff;
            }
            _ => {
                let keep = rng.below(blob.len());
                blob.truncate(keep);
            }
        }
        let blobs = Blobs::new(blobs);
        let wanted = [
            "/etc/os-release",
            "/lib/libc.so.6",
            "/var/lib/dpkg/status.d/",
        ];
        // Any outcome but a panic is fine: a flipped bit in file data is not detectable
        // in a plain tar.
        let _ = blobs.read_with(&wanted, &limits);
        let _ = Filesystem::from_layers(&blobs, &blobs.descriptors(), &limits);
    }
}
