//! `/var/lib/dpkg/statoverride`: the owners and modes an administrator (or a maintainer
//! script, through `dpkg-statoverride --add`) set on packaged paths. dpkg gives every
//! path it extracts the override's owner and mode instead of the archive's
//! (`tarobject`: files and directories get both, symbolic links the owner only, hard
//! links share their target's inode), so an upgrade keeps `dbus-daemon-launch-helper`
//! at `root:messagebus 4754`: the scripts only add an override that is missing.

use std::collections::HashMap;

/// One override: each id `None` when its user or group is unknown to the image (dpkg
/// then leaves that owner as extracted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Override {
    uid: Option<(u64, String)>,
    gid: Option<(u64, String)>,
    mode: u32,
}

/// The overrides by path, without the leading `/`.
#[derive(Debug, Default)]
pub(super) struct StatOverrides {
    by_path: HashMap<String, Override>,
    /// The image's users and groups by name: dpkg gives an extracted entry the ids its
    /// archive's owner names have in the image (`tar_entry_update_from_system`).
    users: HashMap<String, u64>,
    groups: HashMap<String, u64>,
}

/// What an override changes of one extracted entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Applied {
    pub(super) uid: Option<(u64, String)>,
    pub(super) gid: Option<(u64, String)>,
    pub(super) mode: u32,
}

impl StatOverrides {
    /// Parses the statoverride file (`user group mode path` lines; `#1234` for a numeric
    /// id) with names resolved through the image's `passwd` and `group`. A malformed line
    /// is skipped, as dpkg's lax parse during unpack does not stop on it either.
    pub(super) fn parse(file: &[u8], passwd: Option<&[u8]>, group: Option<&[u8]>) -> Self {
        let users = ids(passwd);
        let groups = ids(group);
        let resolve = |name: &str, table: &HashMap<String, u64>| -> Option<(u64, String)> {
            match name.strip_prefix('#') {
                Some(number) => number.parse().ok().map(|id| (id, String::new())),
                None => table.get(name).map(|id| (*id, name.to_owned())),
            }
        };
        let by_path: HashMap<String, Override> = String::from_utf8_lossy(file)
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let (user, group, mode) = (words.next()?, words.next()?, words.next()?);
                let path = words.next()?.strip_prefix('/')?;
                let mode = u32::from_str_radix(mode, 8).ok()? & 0o7777;
                let entry = Override {
                    uid: resolve(user, &users),
                    gid: resolve(group, &groups),
                    mode,
                };
                Some((path.trim_end_matches('/').to_owned(), entry))
            })
            .collect();
        StatOverrides {
            by_path,
            users,
            groups,
        }
    }

    /// The image's users and groups alone, for an image without overrides.
    pub(super) fn names_only(passwd: Option<&[u8]>, group: Option<&[u8]>) -> Self {
        StatOverrides {
            by_path: HashMap::new(),
            users: ids(passwd),
            groups: ids(group),
        }
    }

    /// The image's id for the archive's user name, if the image has that user.
    pub(super) fn user(&self, name: &str) -> Option<u64> {
        self.users.get(name).copied()
    }

    /// The image's id for the archive's group name, if the image has that group.
    pub(super) fn group(&self, name: &str) -> Option<u64> {
        self.groups.get(name).copied()
    }

    /// The override for the archive's `path`, if any.
    pub(super) fn get(&self, path: &str) -> Option<Applied> {
        self.by_path.get(path).map(|o| Applied {
            uid: o.uid.clone(),
            gid: o.gid.clone(),
            mode: o.mode,
        })
    }
}

/// `name -> id` from a `passwd` or `group` file (the name and the third field).
fn ids(file: Option<&[u8]>) -> HashMap<String, u64> {
    let Some(file) = file else {
        return HashMap::new();
    };
    String::from_utf8_lossy(file)
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            Some((name.to_owned(), id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_through_the_images_files_and_bad_lines_are_skipped() {
        let overrides = StatOverrides::parse(
            b"root messagebus 4754 /usr/lib/dbus-1.0/dbus-daemon-launch-helper\n\
              #0 #42 2755 /usr/bin/crontab\n\
              nobody-here root 0700 /var/spool/x/\n\
              root root 9999 /bad/mode\n\
              short line\n",
            Some(b"root:x:0:0:root:/root:/bin/bash\n"),
            Some(b"root:x:0:\nmessagebus:x:101:\n"),
        );
        let helper = overrides
            .get("usr/lib/dbus-1.0/dbus-daemon-launch-helper")
            .unwrap();
        assert_eq!(helper.uid, Some((0, "root".into())));
        assert_eq!(helper.gid, Some((101, "messagebus".into())));
        assert_eq!(helper.mode, 0o4754);
        let crontab = overrides.get("usr/bin/crontab").unwrap();
        assert_eq!(
            (crontab.uid, crontab.gid),
            (Some((0, String::new())), Some((42, String::new())))
        );
        // An unknown user leaves that owner as extracted; the rest still applies.
        let spool = overrides.get("var/spool/x").unwrap();
        assert_eq!((spool.uid, spool.mode), (None, 0o700));
        assert!(overrides.get("bad/mode").is_none());
        assert!(overrides.get("usr/bin/other").is_none());
    }
}
