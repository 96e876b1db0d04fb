//! rpm's installed-package records. Two sources:
//!
//! - CBL-Mariner / Azure Linux distroless images have no rpm database, only
//!   `/var/lib/rpmmanifest/container-manifest-2`, one line per package written by
//!   `rpm -qa --qf '%{NAME}\t%{VERSION}-%{RELEASE}\t%{INSTALLTIME}\t%{BUILDTIME}\t
//!   %{VENDOR}\t%{EPOCH}\t%{SIZE}\t%{ARCH}\t%{EPOCHNUM}\t%{SOURCERPM}\n'` (ten tab-separated
//!   fields; `%{EPOCH}` prints `(none)` when unset, and so do `%{ARCH}` and `%{SOURCERPM}`
//!   for `gpg-pubkey`). This is what Trivy's `rpmqa` analyzer reads, and what copa
//!   rewrites after patching.
//! - The rpm database proper. sqlite (`rpmdb.sqlite`) is read by
//!   [`sqlite`](super::sqlite); BerkeleyDB (`Packages`) and NDB (`Packages.db`) are not read
//!   yet, and [`unsupported_rpmdb`] says so, naming the format.
//!
//! `version` is `E:V-R` when the epoch is above 0 and `V-R` otherwise, the way Trivy
//! prints installed versions, so reports and images compare as equal strings.

use crate::pkgs::error::LineError;
use crate::pkgs::{InstalledPackage, InventoryError};

/// The distroless package manifest.
pub const MANIFEST_PATH: &str = "/var/lib/rpmmanifest/container-manifest-2";

/// Where BerkeleyDB (`Packages`, RHEL 8 and older, CBL-Mariner 1.0) and NDB (`Packages.db`,
/// SUSE) rpmdbs live: the classic path, and `/usr/lib/sysimage/rpm` used by Fedora 36+,
/// openSUSE and SLE 15 SP5+ (`/var/lib/rpm` is then a symlink to it). The sqlite paths are
/// [`SQLITE_PATHS`](super::sqlite::SQLITE_PATHS).
pub const UNSUPPORTED_RPMDB_PATHS: &[&str] = &[
    "/var/lib/rpm/Packages",
    "/var/lib/rpm/Packages.db",
    "/usr/lib/sysimage/rpm/Packages",
    "/usr/lib/sysimage/rpm/Packages.db",
];

/// Fields in a `container-manifest-2` line (see the module doc).
const MANIFEST_FIELDS: usize = 10;

/// The error for an image whose packages are only in a BerkeleyDB or NDB rpmdb (one of
/// [`UNSUPPORTED_RPMDB_PATHS`]), naming the format by the file name.
pub fn unsupported_rpmdb(path: &str) -> InventoryError {
    let format = if path.ends_with(".db") {
        "NDB"
    } else {
        "BerkeleyDB"
    };
    InventoryError::Unsupported {
        path: path.to_owned(),
        reason: format!("rpm databases in {format} format are not supported yet"),
    }
}

/// Reads a `container-manifest-2`. `path` only names the file in errors. Blank lines are
/// skipped; `gpg-pubkey` entries (imported signing keys, not packages) are left out.
///
/// Errors with [`InventoryError::Malformed`] (path and line) on a line with fewer than
/// ten tab-separated fields, an empty name, a version that is not `V-R`, an epoch that is
/// not a number, or bytes that are not UTF-8.
pub fn parse_container_manifest(
    path: &str,
    data: &[u8],
) -> Result<Vec<InstalledPackage>, InventoryError> {
    let text = std::str::from_utf8(data).map_err(|e| {
        let line = data[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        InventoryError::Malformed {
            path: path.to_owned(),
            line,
            reason: "not valid UTF-8".to_owned(),
        }
    })?;
    let mut packages = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(package) =
            manifest_line(line).map_err(|reason| LineError::new(index + 1, reason).in_file(path))?
        {
            packages.push(package);
        }
    }
    Ok(packages)
}

fn manifest_line(line: &str) -> Result<Option<InstalledPackage>, String> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() < MANIFEST_FIELDS {
        return Err(format!(
            "expected {MANIFEST_FIELDS} tab-separated fields, found {}",
            fields.len()
        ));
    }
    let name = fields[0].trim();
    if name.is_empty() {
        return Err("package name is empty".to_owned());
    }
    if name == "gpg-pubkey" {
        return Ok(None);
    }
    let version_release = fields[1].trim();
    match version_release.split_once('-') {
        Some((v, r)) if !v.is_empty() && !r.is_empty() && !r.contains('-') => {}
        _ => {
            return Err(format!(
                "version {version_release:?} is not `version-release`"
            ))
        }
    }
    let epoch = epoch(fields[8].trim(), fields[5].trim())?;
    let version = match epoch {
        0 => version_release.to_owned(),
        e => format!("{e}:{version_release}"),
    };
    let (source_name, source_version) = match source_rpm(fields[9].trim()) {
        Some((source, source_vr)) => (
            Some(source.to_owned()),
            (source_vr != version_release).then(|| source_vr.to_owned()),
        ),
        None => (None, None),
    };
    Ok(Some(InstalledPackage {
        name: name.to_owned(),
        version,
        architecture: none_if_unset(fields[7].trim()).map(str::to_owned),
        source_name,
        source_version,
    }))
}

/// `%{EPOCHNUM}` (field 9) is always a number; `%{EPOCH}` (field 6) is a number or
/// `(none)`. Older manifests may leave either empty, so take whichever says something.
fn epoch(epochnum: &str, epoch: &str) -> Result<u32, String> {
    let parse = |s: &str| {
        s.parse::<u32>()
            .map_err(|_| format!("epoch {s:?} is not a number"))
    };
    match (none_if_unset(epochnum), none_if_unset(epoch)) {
        (Some(n), _) => parse(n),
        (None, Some(e)) => parse(e),
        (None, None) => Ok(0),
    }
}

fn none_if_unset(field: &str) -> Option<&str> {
    Some(field).filter(|f| !f.is_empty() && *f != "(none)")
}

/// `glibc-2.35-2.cm2.src.rpm` -> `("glibc", "2.35-2.cm2")`; `None` for `(none)` or a
/// name without `-version-release`.
pub(super) fn source_rpm(file: &str) -> Option<(&str, &str)> {
    let nvr = file
        .strip_suffix(".src.rpm")
        .or_else(|| file.strip_suffix(".nosrc.rpm"))?;
    let (name_version, _release) = nvr.rsplit_once('-')?;
    let (name, _version) = name_version.rsplit_once('-')?;
    if name.is_empty() {
        return None;
    }
    Some((name, &nvr[name.len() + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &[u8] = include_bytes!("../testdata/rpm/container-manifest-2");

    /// name, version, architecture, source name, source version.
    type Row<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );

    #[test]
    fn azure_linux_distroless_manifest() {
        let packages = parse_container_manifest(MANIFEST_PATH, MANIFEST).unwrap();
        let rows: Vec<Row<'_>> = packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.architecture.as_deref(),
                    p.source_name.as_deref(),
                    p.source_version.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    "azurelinux-release",
                    "3.0-16.azl3",
                    Some("noarch"),
                    Some("azurelinux-release"),
                    None
                ),
                (
                    "filesystem",
                    "1.1-20.azl3",
                    Some("x86_64"),
                    Some("filesystem"),
                    None
                ),
                ("glibc", "2.38-8.azl3", Some("x86_64"), Some("glibc"), None),
                (
                    "openssl-libs",
                    "3.3.2-1.azl3",
                    Some("x86_64"),
                    Some("openssl"),
                    None
                ),
                ("zlib", "1.3.1-1.azl3", Some("x86_64"), Some("zlib"), None),
                (
                    "tzdata",
                    "2024b-1.azl3",
                    Some("noarch"),
                    Some("tzdata"),
                    None
                ),
                ("libgcc", "13.2.0-7.azl3", Some("x86_64"), Some("gcc"), None),
                (
                    "shadow-utils",
                    "2:4.14.3-2.azl3",
                    Some("x86_64"),
                    Some("shadow-utils"),
                    None
                ),
                (
                    "prebuilt-ca-certificates",
                    "3.0.0-8.azl3",
                    Some("noarch"),
                    Some("ca-certificates"),
                    Some("3.0.0-7.azl3")
                ),
            ]
        );
    }

    #[test]
    fn every_version_in_the_fixture_is_valid() {
        for p in parse_container_manifest(MANIFEST_PATH, MANIFEST).unwrap() {
            crate::pkgs::rpm::version::validate(&p.version).unwrap();
        }
    }

    #[test]
    fn mariner_2_line_and_blank_lines() {
        let data = b"\nmariner-release\t2.0-12.cm2\t1653816591\t1653753130\tMicrosoft Corporation\t(none)\t580\tnoarch\t0\tmariner-release-2.0-12.cm2.src.rpm\r\n\n";
        let packages = parse_container_manifest("m", data).unwrap();
        assert_eq!(packages.len(), 1);
        assert_eq!(packages[0].version, "2.0-12.cm2");
    }

    #[test]
    fn source_rpm_names() {
        assert_eq!(
            source_rpm("glibc-2.35-2.cm2.src.rpm"),
            Some(("glibc", "2.35-2.cm2"))
        );
        assert_eq!(
            source_rpm("python3-pip-23.0-1.nosrc.rpm"),
            Some(("python3-pip", "23.0-1"))
        );
        assert_eq!(source_rpm("(none)"), None);
        assert_eq!(source_rpm("glibc.src.rpm"), None);
        assert_eq!(source_rpm("-1-2.src.rpm"), None);
    }

    #[test]
    fn malformed_manifests_name_the_line() {
        let ok = "a\t1-1\t0\t0\tv\t(none)\t1\tx86_64\t0\ta-1-1.src.rpm";
        let cases = [
            (
                format!("{ok}\nb\t1-1\n"),
                2,
                "expected 10 tab-separated fields, found 2",
            ),
            (
                format!("\t1-1\t0\t0\tv\t(none)\t1\tx86_64\t0\t(none)\n{ok}"),
                1,
                "package name is empty",
            ),
            (
                format!("{ok}\n\nb\t1\t0\t0\tv\t(none)\t1\tx86_64\t0\t(none)"),
                3,
                "version \"1\" is not `version-release`",
            ),
            (
                "b\t1-1-1\t0\t0\tv\t(none)\t1\tx86_64\t0\t(none)".to_string(),
                1,
                "version \"1-1-1\" is not `version-release`",
            ),
            (
                "b\t1-1\t0\t0\tv\t(none)\t1\tx86_64\tx\t(none)".to_string(),
                1,
                "epoch \"x\" is not a number",
            ),
        ];
        for (data, line, reason) in cases {
            match parse_container_manifest("/m", data.as_bytes()).unwrap_err() {
                InventoryError::Malformed {
                    path,
                    line: l,
                    reason: r,
                } => {
                    assert_eq!(path, "/m");
                    assert_eq!((l, r.as_str()), (line, reason), "{data:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        let err = parse_container_manifest("/m", b"a\tb\n\xff").unwrap_err();
        assert_eq!(err.to_string(), "/m:2: not valid UTF-8");
    }

    #[test]
    fn bdb_and_ndb_rpmdbs_are_unsupported() {
        let err = unsupported_rpmdb("/var/lib/rpm/Packages");
        assert_eq!(
            err.to_string(),
            "/var/lib/rpm/Packages: rpm databases in BerkeleyDB format are not supported yet"
        );
        let err = unsupported_rpmdb("/usr/lib/sysimage/rpm/Packages.db");
        assert_eq!(
            err.to_string(),
            "/usr/lib/sysimage/rpm/Packages.db: rpm databases in NDB format are not supported yet"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut data = MANIFEST.to_vec();
        for cut in (0..data.len()).step_by(29) {
            let _ = parse_container_manifest("m", &data[..cut]);
        }
        for i in (0..data.len()).step_by(43) {
            data[i] = b'\t';
            let _ = parse_container_manifest("m", &data);
        }
    }
}
