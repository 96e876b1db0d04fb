//! The `ar` container of a `.deb`: a magic line, then 60-byte headers each followed by the
//! member's bytes, padded to an even offset. Only the layout is read here; the members'
//! bytes are read positionally by the caller.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::DebError;

const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER_LEN: u64 = 60;

/// Where one member's bytes are in the package file.
#[derive(Debug, Clone)]
pub(super) struct Member {
    pub name: String,
    pub offset: u64,
    pub size: u64,
}

/// Walks the members in order.
pub(super) struct Members<'a> {
    file: &'a File,
    path: &'a Path,
    len: u64,
    next: u64,
}

impl<'a> Members<'a> {
    pub fn new(file: &'a File, len: u64, path: &'a Path) -> Result<Members<'a>, DebError> {
        let mut magic = [0u8; 8];
        let read = len >= 8 && file.read_exact_at(&mut magic, 0).is_ok();
        if !read || &magic != MAGIC {
            return Err(DebError::NotDeb {
                reason: "not an ar archive (no !<arch> magic)".to_owned(),
            });
        }
        Ok(Members {
            file,
            path,
            len,
            next: 8,
        })
    }

    /// The next member, or `None` at the end of the archive.
    pub fn next_member(&mut self) -> Result<Option<Member>, DebError> {
        if self.next >= self.len {
            return Ok(None);
        }
        let corrupt = |reason: String| DebError::Corrupt {
            member: "ar archive".to_owned(),
            reason,
        };
        if self.len - self.next < HEADER_LEN {
            return Err(corrupt(format!(
                "truncated member header at offset {}",
                self.next
            )));
        }
        let mut header = [0u8; HEADER_LEN as usize];
        self.file
            .read_exact_at(&mut header, self.next)
            .map_err(|source| DebError::Io {
                path: self.path.to_owned(),
                source,
            })?;
        if &header[58..60] != b"`\n" {
            return Err(corrupt(format!(
                "bad member header at offset {} (no terminator)",
                self.next
            )));
        }
        let name = String::from_utf8_lossy(&header[..16])
            .trim_end_matches(' ')
            .trim_end_matches('/')
            .to_owned();
        let size = std::str::from_utf8(&header[48..58])
            .ok()
            .and_then(|s| s.trim_end_matches(' ').parse::<u64>().ok())
            .ok_or_else(|| DebError::Corrupt {
                member: name.clone(),
                reason: "bad size in ar header".to_owned(),
            })?;
        let offset = self.next + HEADER_LEN;
        if size > self.len - offset {
            return Err(DebError::Corrupt {
                member: name,
                reason: format!(
                    "truncated: {size} bytes declared, {} present",
                    self.len - offset
                ),
            });
        }
        self.next = offset + size + size % 2;
        Ok(Some(Member { name, offset, size }))
    }

    /// The next member that is not an ignorable `_`-prefixed one, which must be
    /// `<base>` or `<base>.<compression>` (dpkg's order is fixed).
    pub fn next_required(&mut self, base: &str) -> Result<Member, DebError> {
        loop {
            let Some(member) = self.next_member()? else {
                return Err(DebError::NotDeb {
                    reason: format!("no {base} member"),
                });
            };
            if member.name.starts_with('_') {
                continue;
            }
            if member.name.starts_with(base) {
                return Ok(member);
            }
            return Err(DebError::NotDeb {
                reason: format!("found member {:?} where {base} was expected", member.name),
            });
        }
    }
}

/// The whole of a member known to be tiny (`debian-binary`).
pub(super) fn read_small(
    file: &File,
    path: &Path,
    member: &Member,
    max: u64,
) -> Result<Vec<u8>, DebError> {
    if member.size > max {
        return Err(DebError::Corrupt {
            member: member.name.clone(),
            reason: format!("{} bytes, more than {max}", member.size),
        });
    }
    let mut bytes = vec![0u8; member.size as usize];
    file.read_exact_at(&mut bytes, member.offset)
        .map_err(|source| DebError::Io {
            path: path.to_owned(),
            source,
        })?;
    Ok(bytes)
}
