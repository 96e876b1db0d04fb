//! The sqlite rpmdb (`rpmdb.sqlite`, rpm 4.16+: Fedora 33+, RHEL 9, Azure Linux,
//! CBL-Mariner 2.0, openSUSE Tumbleweed): the `Packages` table holds one rpm header blob
//! per installed package (`hnum INTEGER PRIMARY KEY, blob BLOB`); the other tables are
//! indexes rpm rebuilds from those blobs, so only `Packages` is read.
//!
//! The file comes from an image, in memory. It is copied into an in-memory, read-only
//! sqlite database (never a file on the host), and opened defensively: no trusted schema,
//! queries only, and `Packages` must be a plain table without computed columns, so that a
//! crafted schema cannot make reading it run code of its choosing.
//!
//! rpm keeps the database in WAL mode. An in-memory database cannot use a WAL, so the copy
//! is marked as a rollback-journal database (header bytes 18 and 19), which reads the same
//! pages. Anything only in a `rpmdb.sqlite-wal` beside it is not seen: rpm checkpoints when
//! it closes the database, so image builds leave that file empty.

use rusqlite::types::ValueRef;
use rusqlite::{Connection, MAIN_DB};

use super::db::source_rpm;
use super::header::{tag, Header, HeaderError};
use crate::pkgs::{InstalledPackage, InventoryError};

/// Where sqlite rpmdbs live: the classic path, and `/usr/lib/sysimage/rpm` used by
/// Fedora 36+, openSUSE and SLE 15 SP5+ (`/var/lib/rpm` is then a symlink to it).
/// Tried in this order.
pub const SQLITE_PATHS: &[&str] = &[SQLITE_PATH, SYSIMAGE_SQLITE_PATH];
/// The classic sqlite rpmdb path.
pub const SQLITE_PATH: &str = "/var/lib/rpm/rpmdb.sqlite";
/// The sqlite rpmdb under `/usr/lib/sysimage/rpm`.
pub const SYSIMAGE_SQLITE_PATH: &str = "/usr/lib/sysimage/rpm/rpmdb.sqlite";

/// Largest database read: sqlite copies it into one allocation sized by a C `int`, and the
/// rpmdb of a full distribution install is well under 256 MiB.
pub const MAX_DATABASE_BYTES: usize = 1 << 30;

/// Most package records read, far above any real image (a full Fedora workstation has a
/// few thousand).
pub const MAX_PACKAGES: usize = 200_000;

const SQLITE_MAGIC: &[u8] = b"SQLite format 3\0";
/// The sqlite file header's length; the journal-mode bytes are at 18 and 19.
const SQLITE_HEADER_LEN: usize = 100;

/// Why an `rpmdb.sqlite` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SqliteRpmdbError {
    #[error("not an SQLite 3 database (no \"SQLite format 3\" file header)")]
    NotSqlite,
    #[error("the database is {len} bytes, more than the {MAX_DATABASE_BYTES} read")]
    TooBig { len: usize },
    #[error("sqlite cannot read it: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("not an rpm database: it has no Packages table")]
    NoPackagesTable,
    #[error("not an rpm database: Packages is a {kind}, not a plain table")]
    PackagesNotATable { kind: String },
    #[error("not an rpm database: Packages has computed or hidden columns")]
    ComputedColumns,
    #[error("more than {MAX_PACKAGES} package records")]
    TooManyPackages,
    #[error("package record {hnum}: {source}")]
    Header {
        hnum: i64,
        #[source]
        source: HeaderError,
    },
    #[error("package record {hnum}: {reason}")]
    Record { hnum: i64, reason: String },
}

impl SqliteRpmdbError {
    /// As an [`InventoryError`] for the file at `path`: a bad package record is
    /// [`InventoryError::Malformed`] with `line` the record's `hnum`; a file that is not a
    /// readable rpm sqlite database at all is [`InventoryError::Unsupported`].
    pub fn in_file(self, path: &str) -> InventoryError {
        match self {
            SqliteRpmdbError::Header { hnum, .. } | SqliteRpmdbError::Record { hnum, .. } => {
                InventoryError::Malformed {
                    path: path.to_owned(),
                    line: usize::try_from(hnum).unwrap_or(0),
                    reason: self.to_string(),
                }
            }
            other => InventoryError::Unsupported {
                path: path.to_owned(),
                reason: other.to_string(),
            },
        }
    }
}

/// Reads the installed packages from the bytes of an `rpmdb.sqlite`, in record (install)
/// order, as `rpm -qa` lists them. `path` only names the file in errors. `gpg-pubkey`
/// records (imported signing keys) are left out. Versions are `E:V-R` when the epoch is
/// above 0 and `V-R` otherwise, as for `container-manifest-2`.
///
/// Errors (see [`SqliteRpmdbError::in_file`]) when the bytes are not an SQLite database with
/// a `Packages` table, when sqlite finds it corrupt, or when a record's header blob is
/// malformed or lacks NAME, VERSION or RELEASE.
pub fn parse_sqlite_rpmdb(
    path: &str,
    data: &[u8],
) -> Result<Vec<InstalledPackage>, InventoryError> {
    read_packages(data).map_err(|e| e.in_file(path))
}

/// [`parse_sqlite_rpmdb`] with the error before it is tied to a path.
pub fn read_packages(data: &[u8]) -> Result<Vec<InstalledPackage>, SqliteRpmdbError> {
    let conn = open(data)?;
    check_schema(&conn)?;
    let mut statement = conn.prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")?;
    let mut rows = statement.query([])?;
    let mut packages = Vec::new();
    let mut records = 0usize;
    while let Some(row) = rows.next()? {
        records += 1;
        if records > MAX_PACKAGES {
            return Err(SqliteRpmdbError::TooManyPackages);
        }
        let hnum: i64 = row.get(0)?;
        let blob = match row.get_ref(1)? {
            ValueRef::Blob(blob) => blob,
            other => {
                return Err(SqliteRpmdbError::Record {
                    hnum,
                    reason: format!(
                        "the blob column holds {}, not a blob",
                        other.data_type().to_string().to_lowercase()
                    ),
                })
            }
        };
        let header =
            Header::parse(blob).map_err(|source| SqliteRpmdbError::Header { hnum, source })?;
        if let Some(package) = package(&header, hnum)? {
            packages.push(package);
        }
    }
    Ok(packages)
}

/// A read-only in-memory copy of `data`, marked as a rollback-journal database.
fn open(data: &[u8]) -> Result<Connection, SqliteRpmdbError> {
    if data.len() < SQLITE_HEADER_LEN || !data.starts_with(SQLITE_MAGIC) {
        return Err(SqliteRpmdbError::NotSqlite);
    }
    if data.len() > MAX_DATABASE_BYTES {
        return Err(SqliteRpmdbError::TooBig { len: data.len() });
    }
    let mut conn = Connection::open_in_memory()?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA,
        false,
    )?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    // Bytes 18 and 19 (write and read format version) are 2 for WAL, 1 for legacy.
    let journal = [1u8, 1u8];
    let copy = std::io::Read::chain(std::io::Read::chain(&data[..18], &journal[..]), &data[20..]);
    conn.deserialize_read_exact(MAIN_DB, copy, data.len(), true)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// `Packages` must be a plain table whose columns are all stored, so that selecting from
/// it only reads pages: a view or computed column could run any expression.
fn check_schema(conn: &Connection) -> Result<(), SqliteRpmdbError> {
    let kind: Option<String> = conn
        .query_row(
            "SELECT type FROM pragma_table_list WHERE schema = 'main' AND name = 'Packages' COLLATE NOCASE",
            [],
            |row| row.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })?;
    match kind.as_deref() {
        None => return Err(SqliteRpmdbError::NoPackagesTable),
        Some("table") => {}
        Some(other) => {
            return Err(SqliteRpmdbError::PackagesNotATable {
                kind: other.to_owned(),
            })
        }
    }
    let hidden: i64 = conn.query_row(
        "SELECT count(*) FROM pragma_table_xinfo('Packages') WHERE hidden != 0",
        [],
        |row| row.get(0),
    )?;
    if hidden != 0 {
        return Err(SqliteRpmdbError::ComputedColumns);
    }
    Ok(())
}

/// The package a header describes; `None` for a `gpg-pubkey` record.
fn package(header: &Header<'_>, hnum: i64) -> Result<Option<InstalledPackage>, SqliteRpmdbError> {
    let header_error = |source| SqliteRpmdbError::Header { hnum, source };
    let record = |reason: String| SqliteRpmdbError::Record { hnum, reason };
    let name = header.required_string(tag::NAME).map_err(header_error)?;
    if name.is_empty() {
        return Err(record("NAME is empty".to_owned()));
    }
    if name == "gpg-pubkey" {
        return Ok(None);
    }
    let version = header.required_string(tag::VERSION).map_err(header_error)?;
    let release = header.required_string(tag::RELEASE).map_err(header_error)?;
    for (what, value) in [("VERSION", version), ("RELEASE", release)] {
        if value.is_empty() || value.contains('-') {
            return Err(record(format!("{what} {value:?} is empty or contains '-'")));
        }
    }
    let epoch = header.int32(tag::EPOCH).map_err(header_error)?.unwrap_or(0);
    let architecture = header.string(tag::ARCH).map_err(header_error)?;
    let source = header.string(tag::SOURCERPM).map_err(header_error)?;
    let version_release = format!("{version}-{release}");
    let (source_name, source_version) = match source.and_then(source_rpm) {
        Some((source, source_vr)) => (
            Some(source.to_owned()),
            (source_vr != version_release).then(|| source_vr.to_owned()),
        ),
        None => (None, None),
    };
    Ok(Some(InstalledPackage {
        name: name.to_owned(),
        version: match epoch {
            0 => version_release,
            e => format!("{e}:{version_release}"),
        },
        architecture: architecture.filter(|a| !a.is_empty()).map(str::to_owned),
        source_name,
        source_version,
    }))
}

#[cfg(test)]
mod tests;
