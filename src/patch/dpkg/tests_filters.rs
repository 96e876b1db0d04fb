//! `path-exclude` as dpkg applies it: no excluded file is written, no excluded directory
//! is created unless an include pattern may reach into it, and an excluded directory is
//! not part of the new version (so the old one goes when nothing else is in it).

use super::tests::{dpkg_deb_available, layer, make_deb, DebTree};
use super::{build, NewPackage};
use crate::image::{LayerDescriptor, MEDIA_TYPE_OCI_LAYER_GZIP};
use crate::patch::layer::EntryKind;
use crate::patch::native::LayerImage;
use crate::pkgs::dpkg::debfile::{DebLimits, DebPackage};

/// bookworm-slim's apt upgrade: `usr/share/man/de/man7` (apt's alone, emptied by the
/// image's builder) is excluded, so dpkg removes it; `de/man8` has another owner.
#[test]
fn excluded_directories_are_not_created_and_emptied_ones_go() {
    if !dpkg_deb_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = "Package: apt\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.6.1\nDescription: d\n";
    let blobs = vec![layer(&[
        ("etc", None),
        ("etc/dpkg", None),
        ("etc/dpkg/dpkg.cfg.d", None),
        (
            "etc/dpkg/dpkg.cfg.d/docker",
            Some("path-exclude=/usr/share/doc/*\npath-include=/usr/share/doc/*/copyright\npath-exclude=/usr/share/man/*\n"),
        ),
        ("usr", None),
        ("usr/share", None),
        ("usr/share/man", None),
        ("usr/share/man/de", None),
        ("usr/share/man/de/man7", None),
        // Unpacked before the image's builder set the filters.
        ("usr/share/man/de/man7/apt-patterns.7.gz", Some("old apt-patterns(7)\n")),
        ("usr/share/man/de/man8", None),
        ("usr/share/man/fr", None),
        ("var", None),
        ("var/lib", None),
        ("var/lib/dpkg", None),
        ("var/lib/dpkg/status", Some(status)),
        ("var/lib/dpkg/info", None),
        (
            "var/lib/dpkg/info/apt.list",
            Some("/.\n/usr\n/usr/share\n/usr/share/man\n/usr/share/man/de\n/usr/share/man/de/man7\n/usr/share/man/de/man7/apt-patterns.7.gz\n/usr/share/man/de/man8\n/usr/share/man/de/man8/apt.8.gz\n"),
        ),
        ("var/lib/dpkg/info/man-db.list", Some("/.\n/usr\n/usr/share\n/usr/share/man\n/usr/share/man/de\n/usr/share/man/de/man8\n")),
    ])];
    let layers = [LayerDescriptor::new(
        format!("sha256:{:064x}", 0),
        MEDIA_TYPE_OCI_LAYER_GZIP,
    )];
    let image = LayerImage::open(&blobs, &layers).unwrap();
    let deb_path = make_deb(
        dir.path(),
        "apt",
        "2.6.2",
        &DebTree {
            files: vec![
                ("usr/share/man/de/man8/apt.8.gz", "apt(8)\n".into()),
                (
                    "usr/share/man/de/man7/apt-patterns.7.gz",
                    "apt-patterns(7)\n".into(),
                ),
                ("usr/share/doc/apt/copyright", "c\n".into()),
                ("usr/share/doc/apt/NEWS.gz", "n\n".into()),
                ("usr/bin/apt", "apt\n".into()),
            ],
            dirs: vec![],
            symlinks: vec![],
            conffiles: vec![],
            scripts: vec![],
            extra_control: "",
        },
    );
    let deb = DebPackage::open(&deb_path, dir.path(), &DebLimits::default()).unwrap();
    let changes = build(
        &image,
        &[NewPackage {
            name: "apt",
            installed_version: "2.6.1",
            architecture: "amd64",
            deb: &deb,
        }],
    )
    .unwrap();
    let usr: Vec<(&str, bool)> = changes
        .layer
        .iter()
        .filter(|e| e.path.starts_with("usr/"))
        .map(|e| (e.path.as_str(), matches!(e.kind, EntryKind::Whiteout)))
        .collect();
    // The include reaches into usr/share/doc (dpkg keeps every directory whose path starts
    // with an include pattern's literal part), not into usr/share/man: fr/man7 is not
    // created, de/man7 is removed.
    assert_eq!(
        usr,
        [
            ("usr/bin", false),
            ("usr/bin/apt", false),
            ("usr/share/doc", false),
            ("usr/share/doc/apt", false),
            ("usr/share/doc/apt/copyright", false),
            ("usr/share/man/de/man7", true),
        ]
    );
}
