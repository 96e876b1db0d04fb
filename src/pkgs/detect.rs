//! Finding an image's package database and OS identity, through a [`FileSource`] the
//! image reader implements. What is read is exactly: the contents of [`PATHS`], the
//! contents of every file in [`DIRS`], and whether [`PROBED_PATHS`] exist. A reader can
//! also fetch those up front and hand them over as [`MemoryFiles`].

use std::collections::{BTreeMap, HashMap};

use crate::pkgs::{apk, dpkg, os_release, rpm};
use crate::pkgs::{Ecosystem, InstalledPackage, Inventory, InventoryError, SourceError};

/// Every file whose contents [`detect`] may read, in the order it tries them.
pub const PATHS: &[&str] = &[
    "/etc/os-release",
    "/usr/lib/os-release",
    dpkg::db::STATUS_PATH,
    apk::db::INSTALLED_PATH,
    rpm::sqlite::SQLITE_PATH,
    rpm::sqlite::SYSIMAGE_SQLITE_PATH,
    rpm::db::MANIFEST_PATH,
];

/// Every directory [`detect`] may list and read the files of.
pub const DIRS: &[&str] = &[dpkg::db::STATUS_DIR];

/// Files [`detect`] only asks the existence of ([`FileSource::exists`]), never the
/// contents: BerkeleyDB and NDB rpm databases, which are not read yet.
pub const PROBED_PATHS: &[&str] = rpm::db::UNSUPPORTED_RPMDB_PATHS;

/// Read access to an image's merged filesystem. Paths are absolute and `/`-separated.
pub trait FileSource {
    /// The contents of the regular file at `path`, following symlinks; `Ok(None)` when
    /// there is none. Errors only when the image itself cannot be read.
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, SourceError>;

    /// The names (not paths) of the regular files directly in the directory `path`;
    /// empty when there is no such directory.
    fn list_dir(&self, path: &str) -> Result<Vec<String>, SourceError>;

    /// Whether a regular file exists at `path`. The default reads it; readers that can
    /// answer without reading should, since an rpm database can be hundreds of MiB.
    fn exists(&self, path: &str) -> Result<bool, SourceError> {
        Ok(self.read(path)?.is_some())
    }
}

/// Files held in memory, keyed by absolute path (a directory's files as `dir/name`): a
/// [`FileSource`] for callers that fetched [`PATHS`] and [`DIRS`] already, and for tests.
/// For [`PROBED_PATHS`] only the key matters; the contents may be left empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryFiles(pub BTreeMap<String, Vec<u8>>);

impl MemoryFiles {
    pub fn new() -> Self {
        MemoryFiles::default()
    }

    /// Adds (or replaces) the file at `path`.
    pub fn insert(&mut self, path: impl Into<String>, data: impl Into<Vec<u8>>) -> &mut Self {
        self.0.insert(path.into(), data.into());
        self
    }
}

impl From<HashMap<String, Vec<u8>>> for MemoryFiles {
    fn from(files: HashMap<String, Vec<u8>>) -> Self {
        MemoryFiles(files.into_iter().collect())
    }
}

impl FromIterator<(String, Vec<u8>)> for MemoryFiles {
    fn from_iter<I: IntoIterator<Item = (String, Vec<u8>)>>(files: I) -> Self {
        MemoryFiles(files.into_iter().collect())
    }
}

impl FileSource for MemoryFiles {
    fn read(&self, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
        Ok(self.0.get(path).cloned())
    }

    fn list_dir(&self, path: &str) -> Result<Vec<String>, SourceError> {
        let prefix = format!("{}/", path.trim_end_matches('/'));
        Ok(self
            .0
            .keys()
            .filter_map(|p| p.strip_prefix(&prefix))
            .filter(|name| !name.is_empty() && !name.contains('/'))
            .map(str::to_owned)
            .collect())
    }

    fn exists(&self, path: &str) -> Result<bool, SourceError> {
        Ok(self.0.contains_key(path))
    }
}

/// Finds the image's package database and reads it with the OS identity.
///
/// Tries, in order: dpkg's `status` file, distroless dpkg `status.d`, apk's `installed`,
/// rpm's sqlite rpmdb (`/var/lib/rpm`, then `/usr/lib/sysimage/rpm`), rpm's distroless
/// `container-manifest-2`; the first that lists at least one package wins (an empty dpkg
/// `status` beside a filled `status.d` happens in images built on distroless). The OS
/// comes from `/etc/os-release`, else `/usr/lib/os-release`; with neither, a dpkg
/// database's release is inferred from its package versions ([`dpkg::release::infer`]),
/// and for other databases `os` is [`OsRelease::default`](crate::pkgs::OsRelease)
/// (empty `id`), the scanner deciding what that means.
///
/// Returns `Ok(None)` for an image with no package database at all (scratch, static
/// binaries). Errors with [`InventoryError::Unsupported`] when the only database is a
/// BerkeleyDB or NDB rpmdb, or an `rpmdb.sqlite` that is not an rpm sqlite database; with
/// [`InventoryError::Malformed`] when a file it picked does not parse; with
/// [`InventoryError::NoRelease`] for a dpkg database without os-release whose versions
/// do not say one release; and with [`InventoryError::Read`] when the source fails.
pub fn detect(files: &(impl FileSource + ?Sized)) -> Result<Option<Inventory>, InventoryError> {
    let Some((ecosystem, packages)) = find_packages(files)? else {
        return Ok(None);
    };
    let mut os = None;
    for path in os_release::PATHS {
        if let Some(data) = read(files, path)? {
            os = Some(os_release::parse(path, &data)?);
            break;
        }
    }
    let os = match os {
        Some(os) => os,
        None if ecosystem == Ecosystem::Dpkg && !packages.is_empty() => {
            dpkg::release::infer(&packages).map_err(InventoryError::NoRelease)?
        }
        None => Default::default(),
    };
    Ok(Some(Inventory {
        os,
        ecosystem,
        packages,
    }))
}

fn find_packages(
    files: &(impl FileSource + ?Sized),
) -> Result<Option<(Ecosystem, Vec<InstalledPackage>)>, InventoryError> {
    let mut found_empty = None;
    let mut keep = |ecosystem, packages: Vec<InstalledPackage>| {
        if packages.is_empty() {
            found_empty.get_or_insert(ecosystem);
            None
        } else {
            Some((ecosystem, packages))
        }
    };

    if let Some(data) = read(files, dpkg::db::STATUS_PATH)? {
        let packages = dpkg::db::parse_status(dpkg::db::STATUS_PATH, &data)?;
        if let Some(found) = keep(Ecosystem::Dpkg, packages) {
            return Ok(Some(found));
        }
    }
    let status_d = read_dir(files, dpkg::db::STATUS_DIR, dpkg::db::is_control_file)?;
    if !status_d.is_empty() {
        let packages = dpkg::db::parse_status_dir(
            status_d
                .iter()
                .map(|(path, data)| (path.as_str(), data.as_slice())),
        )?;
        if let Some(found) = keep(Ecosystem::Dpkg, packages) {
            return Ok(Some(found));
        }
    }
    if let Some(data) = read(files, apk::db::INSTALLED_PATH)? {
        let packages = apk::db::parse_installed(apk::db::INSTALLED_PATH, &data)?;
        if let Some(found) = keep(Ecosystem::Apk, packages) {
            return Ok(Some(found));
        }
    }
    for path in rpm::sqlite::SQLITE_PATHS {
        if let Some(data) = read(files, path)? {
            let packages = rpm::sqlite::parse_sqlite_rpmdb(path, &data)?;
            if let Some(found) = keep(Ecosystem::Rpm, packages) {
                return Ok(Some(found));
            }
            break;
        }
    }
    if let Some(data) = read(files, rpm::db::MANIFEST_PATH)? {
        let packages = rpm::db::parse_container_manifest(rpm::db::MANIFEST_PATH, &data)?;
        if let Some(found) = keep(Ecosystem::Rpm, packages) {
            return Ok(Some(found));
        }
    }
    for path in PROBED_PATHS {
        let exists = files.exists(path).map_err(|source| InventoryError::Read {
            path: (*path).to_owned(),
            source,
        })?;
        if exists {
            return Err(rpm::db::unsupported_rpmdb(path));
        }
    }
    // A database that exists but lists nothing still says which ecosystem this is.
    Ok(found_empty.map(|ecosystem| (ecosystem, Vec::new())))
}

fn read(files: &(impl FileSource + ?Sized), path: &str) -> Result<Option<Vec<u8>>, InventoryError> {
    files.read(path).map_err(|source| InventoryError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The files in `dir` whose names pass `wanted`, as `(path, contents)`.
fn read_dir(
    files: &(impl FileSource + ?Sized),
    dir: &str,
    wanted: fn(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, InventoryError> {
    let names = files.list_dir(dir).map_err(|source| InventoryError::Read {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Vec::with_capacity(names.len());
    for name in names.into_iter().filter(|n| wanted(n)) {
        let path = format!("{dir}/{name}");
        if let Some(data) = read(files, &path)? {
            out.push((path, data));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
