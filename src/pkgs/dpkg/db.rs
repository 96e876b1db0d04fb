//! dpkg's database of installed packages: `/var/lib/dpkg/status`, or on Google distroless
//! images the directory `/var/lib/dpkg/status.d/`, which holds one package's control
//! file per file (named after the package, sometimes with a suffix) and, on newer
//! images, a `<name>.md5sums` file beside each.
//!
//! Which packages count as installed: those whose `Status:` current state says their
//! files are on disk (`installed`, `unpacked`, `half-configured`, `triggers-awaited`,
//! `triggers-pending`), whatever the selection (`install`, `hold`, `deinstall`, ...).
//! `not-installed`, `config-files` (removed, configuration kept) and `half-installed` (an
//! interrupted install or removal) are skipped. Trivy instead drops packages selected for
//! `deinstall`/`purge` and keeps every other state; the two agree on every package an
//! ordinary image has. `status.d` control files carry no `Status:` and are all installed.
//!
//! Versions are kept verbatim and not validated here: the database is the truth about what
//! is installed, and a version the grammar rejects fails later, for that package alone.

use crate::pkgs::dpkg::deb822::{self, Paragraph};
use crate::pkgs::error::LineError;
use crate::pkgs::{InstalledPackage, InventoryError};

/// dpkg's status file.
pub const STATUS_PATH: &str = "/var/lib/dpkg/status";

/// Google distroless images' per-package control files.
pub const STATUS_DIR: &str = "/var/lib/dpkg/status.d";

/// Reads a status file. `path` only names the file in errors.
///
/// Errors with [`InventoryError::Malformed`] (path and line) on deb822 syntax errors, on
/// a paragraph without `Package:` or `Status:`, on an installed package without
/// `Version:`, and on an unknown `Status:` word.
pub fn parse_status(path: &str, data: &[u8]) -> Result<Vec<InstalledPackage>, InventoryError> {
    parse_file(path, data, StatusField::Required)
}

/// Reads the files of a `status.d` directory, given as `(path, contents)` in any order;
/// the packages come back ordered by path. Files named `*.md5sums` are skipped (see
/// [`is_control_file`]); every other file must be control-file paragraphs, and errors name
/// the file and line as in [`parse_status`].
pub fn parse_status_dir<'a, I>(files: I) -> Result<Vec<InstalledPackage>, InventoryError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut files: Vec<(&str, &[u8])> = files
        .into_iter()
        .filter(|(path, _)| is_control_file(path))
        .collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    let mut packages = Vec::new();
    for (path, data) in files {
        packages.extend(parse_file(path, data, StatusField::Optional)?);
    }
    Ok(packages)
}

/// Whether a file in `status.d` holds a control file: everything except the `.md5sums`
/// lists that distroless images built with rules_distroless put beside each one.
pub fn is_control_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    !name.is_empty() && !name.ends_with(".md5sums")
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum StatusField {
    Required,
    Optional,
}

fn parse_file(
    path: &str,
    data: &[u8],
    status: StatusField,
) -> Result<Vec<InstalledPackage>, InventoryError> {
    let paragraphs = deb822::parse(data).map_err(|e| e.in_file(path))?;
    let mut packages = Vec::with_capacity(paragraphs.len());
    for paragraph in &paragraphs {
        if let Some(package) = package_from(paragraph, status).map_err(|e| e.in_file(path))? {
            packages.push(package);
        }
    }
    Ok(packages)
}

fn package_from(
    paragraph: &Paragraph<'_>,
    status: StatusField,
) -> Result<Option<InstalledPackage>, LineError> {
    let text = |name: &str| -> Result<Option<&str>, LineError> {
        match paragraph.get(name) {
            Some(field) => {
                let value = field.single_line()?;
                if value.is_empty() {
                    return Err(LineError::new(field.line, format!("field {name} is empty")));
                }
                Ok(Some(value))
            }
            None => Ok(None),
        }
    };

    let name = text("Package")?
        .ok_or_else(|| LineError::new(paragraph.line, "paragraph has no Package field"))?;
    match (paragraph.get("Status"), status) {
        (Some(field), _) => {
            let installed = is_installed(field.single_line()?)
                .map_err(|reason| LineError::new(field.line, reason))?;
            if !installed {
                return Ok(None);
            }
        }
        (None, StatusField::Required) => {
            return Err(LineError::new(
                paragraph.line,
                format!("package {name} has no Status field"),
            ));
        }
        (None, StatusField::Optional) => {}
    }
    let version = text("Version")?.ok_or_else(|| {
        LineError::new(
            paragraph.line,
            format!("installed package {name} has no Version field"),
        )
    })?;
    let (source_name, source_version) = match paragraph.get("Source") {
        Some(field) => {
            let (source, source_version) = parse_source(field.single_line()?)
                .map_err(|reason| LineError::new(field.line, reason))?;
            let differs = source_version.filter(|v| *v != version);
            (source.to_owned(), differs.map(str::to_owned))
        }
        // dpkg's rule (`lib/dpkg/pkg-format.c`): no Source field means the source
        // package has the binary package's name and version.
        None => (name.to_owned(), None),
    };
    Ok(Some(InstalledPackage {
        name: name.to_owned(),
        version: version.to_owned(),
        architecture: text("Architecture")?.map(str::to_owned),
        source_name: Some(source_name),
        source_version,
    }))
}

/// Whether a `Status: want flag state` value means the package's files are on disk (see
/// the module doc). Errors on anything but three known words.
pub fn is_installed(status: &str) -> Result<bool, String> {
    let words: Vec<&str> = status.split_whitespace().collect();
    let [want, flag, state] = words.as_slice() else {
        return Err(format!("Status {status:?} is not `want flag state`"));
    };
    if !matches!(
        *want,
        "unknown" | "install" | "hold" | "deinstall" | "purge"
    ) {
        return Err(format!("unknown selection {want:?} in Status"));
    }
    if !matches!(*flag, "ok" | "reinstreq") {
        return Err(format!("unknown flag {flag:?} in Status"));
    }
    match *state {
        "installed" | "unpacked" | "half-configured" | "triggers-awaited" | "triggers-pending" => {
            Ok(true)
        }
        "not-installed" | "config-files" | "half-installed" => Ok(false),
        other => Err(format!("unknown state {other:?} in Status")),
    }
}

/// `Source: name` or `Source: name (version)`.
fn parse_source(value: &str) -> Result<(&str, Option<&str>), String> {
    let (name, rest) = match value.split_once(char::is_whitespace) {
        Some((name, rest)) => (name, rest.trim()),
        None => (value, ""),
    };
    if rest.is_empty() {
        return Ok((name, None));
    }
    match rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')) {
        Some(version) if !version.trim().is_empty() => Ok((name, Some(version.trim()))),
        _ => Err(format!(
            "Source {value:?} is not `name` or `name (version)`"
        )),
    }
}

#[cfg(test)]
mod tests;
