//! The image's dpkg database as the build reads it: status (or `status.d`), `info/`,
//! diversions, file owners, trigger interests and path filters, in one pass.

use super::statoverride::StatOverrides;
use super::*;

/// The image's dpkg database, read once.
pub(super) struct Database {
    /// The status file, or `None` on distroless images.
    pub(super) status: Option<StatusFile>,
    /// `status.d` file name -> contents (distroless).
    pub(super) status_d: BTreeMap<String, Vec<u8>>,
    pub(super) info: InfoFiles,
    pub(super) diversions: Diversions,
    pub(super) owners: Owners,
    pub(super) triggers: TriggerInterests,
    pub(super) filters: PathFilters,
    pub(super) statoverrides: StatOverrides,
}

impl Database {
    pub(super) fn read(image: &dyn ImageFiles) -> Result<Database, DpkgError> {
        let status_key = format!("/{STATUS}");
        let dirs = [STATUS_DIR, INFO_DIR, TRIGGERS_DIR, DPKG_CFG_DIR].map(|d| format!("/{d}/"));
        let diversions_key = format!("/{DIVERSIONS}");
        let cfg_key = format!("/{DPKG_CFG}");
        let overrides_key = format!("/{STATOVERRIDE}");
        let mut wanted: Vec<&str> = vec![
            &status_key,
            &diversions_key,
            &cfg_key,
            &overrides_key,
            "/etc/passwd",
            "/etc/group",
        ];
        wanted.extend(dirs.iter().map(String::as_str));
        let mut files = image.read(&wanted)?;
        let in_dir =
            |files: &mut HashMap<String, Vec<u8>>, dir: &str| -> BTreeMap<String, Vec<u8>> {
                let keys: Vec<String> = files
                    .keys()
                    .filter(|k| k.starts_with(dir))
                    .cloned()
                    .collect();
                keys.into_iter()
                    .filter_map(|k| files.remove(&k).map(|v| (k[dir.len()..].to_owned(), v)))
                    .collect()
            };
        let status_d = in_dir(&mut files, &dirs[0]);
        let info_files = in_dir(&mut files, &dirs[1]);
        let trigger_files = in_dir(&mut files, &dirs[2]);
        let cfg_fragments = in_dir(&mut files, &dirs[3]);
        let filters = PathFilters::parse(&cfg_fragments, files.get(&cfg_key).map(Vec::as_slice));
        let status = match files.remove(&status_key) {
            Some(bytes) => Some(StatusFile::parse(&String::from_utf8(bytes).map_err(
                |_| DpkgError::Database {
                    path: STATUS.to_owned(),
                    reason: "not UTF-8".to_owned(),
                },
            )?)),
            None if !status_d.is_empty() => None,
            None => {
                return Err(DpkgError::Database {
                    path: STATUS.to_owned(),
                    reason: "the image has neither a status file nor status.d".to_owned(),
                })
            }
        };
        let mut info: InfoFiles = BTreeMap::new();
        for (file, data) in info_files {
            if let Some((base, member)) = file.rsplit_once('.') {
                info.entry(base.to_owned())
                    .or_default()
                    .insert(member.to_owned(), data);
            }
        }
        let owners = if status.is_some() {
            Owners::from_lists(info.iter().filter_map(|(base, members)| {
                members.get("list").map(|l| (base.as_str(), l.as_slice()))
            }))
        } else {
            Owners::from_md5sums(status_d.iter().filter_map(|(name, data)| {
                name.strip_suffix(".md5sums")
                    .map(|base| (base, data.as_slice()))
            }))
        };
        let diversions = match files.remove(&diversions_key) {
            Some(bytes) => Diversions::parse(&bytes)?,
            None => Diversions::default(),
        };
        let statoverrides = match files.get(&overrides_key) {
            Some(bytes) => StatOverrides::parse(
                bytes,
                files.get("/etc/passwd").map(Vec::as_slice),
                files.get("/etc/group").map(Vec::as_slice),
            ),
            None => StatOverrides::names_only(
                files.get("/etc/passwd").map(Vec::as_slice),
                files.get("/etc/group").map(Vec::as_slice),
            ),
        };
        Ok(Database {
            status,
            status_d,
            info,
            diversions,
            owners,
            triggers: TriggerInterests::parse(&trigger_files),
            filters,
            statoverrides,
        })
    }
}
