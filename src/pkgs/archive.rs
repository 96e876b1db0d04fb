//! What the `.deb` and `.apk` readers share about tar members: path normalisation and the
//! checks that keep a hostile package inside the root, and names for messages.

use tar::EntryType;

/// `./usr//bin/./x` -> `usr/bin/x`; refuses `..`. The caller refuses absolute paths and
/// characters its package manager cannot record.
pub(crate) fn normal_components(path: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(path.len());
    for component in path.split('/') {
        match component {
            "" | "." => {}
            ".." => return Err("\"..\" in the path"),
            name => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(name);
            }
        }
    }
    Ok(out)
}

/// Whether a relative symlink target, resolved lexically from the link's directory,
/// leaves the root. Absolute targets resolve inside the image root and are fine.
pub(crate) fn climbs_above_root(link_path: &str, target: &str) -> bool {
    if target.starts_with('/') {
        return false;
    }
    let mut depth = link_path.matches('/').count();
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => match depth.checked_sub(1) {
                Some(d) => depth = d,
                None => return true,
            },
            _ => depth += 1,
        }
    }
    false
}

/// Raw path bytes for messages: UTF-8 shown as is, other bytes escaped.
pub(crate) fn shown(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.to_owned(),
        Err(_) => bytes.escape_ascii().to_string(),
    }
}

/// A pax `mtime` (seconds, possibly fractional); times before 1970 become 0.
pub(crate) fn pax_time(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value).ok()?;
    let seconds = text.split('.').next()?;
    if let Some(negative) = seconds.strip_prefix('-') {
        return negative.parse::<u64>().ok().map(|_| 0);
    }
    seconds.parse().ok()
}

/// A tar entry type no package may carry, named for messages.
pub(crate) fn tar_type_name(entry_type: EntryType) -> String {
    match entry_type {
        EntryType::Char => "character device".to_owned(),
        EntryType::Block => "block device".to_owned(),
        EntryType::Fifo => "FIFO".to_owned(),
        EntryType::GNUSparse => "GNU sparse file".to_owned(),
        other => format!("tar type {:?}", char::from(other.as_byte())),
    }
}
