//! A pass over the tar headers alone, before the `tar` crate reads the archive: the crate
//! reads GNU long-name and pax headers whole into memory, so one of several gigabytes
//! (a few kilobytes compressed) would exhaust memory. Headers are read at their offsets
//! and file data is never touched, so this costs one read per entry.

use super::data::Blocks;
use super::DebError;

/// No path, link or pax record set needs more; dpkg's own limit on names is far smaller.
const MAX_META: u64 = 1 << 20;

pub(super) fn check_metadata_sizes<B: Blocks + ?Sized>(
    blocks: &B,
    member: &str,
) -> Result<(), DebError> {
    let mut pos = 0u64;
    // The size a pax header gives the next ordinary entry, as the crate applies it.
    let mut pax_size = None;
    loop {
        let Ok(Some(block)) = blocks.block(pos) else {
            // End of data: the crate's own walk reports truncation.
            return Ok(());
        };
        if block.iter().all(|b| *b == 0) {
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&block);
        let Ok(mut size) = header.entry_size() else {
            return Ok(());
        };
        let data = pos + 512;
        match header.entry_type().as_byte() {
            b'L' | b'K' | b'x' | b'g' if size > MAX_META => {
                return Err(DebError::Unsupported {
                    member: member.to_owned(),
                    what: format!("a tar metadata header of {size} bytes (at offset {pos})"),
                });
            }
            b'x' => pax_size = pax_record_size(blocks, data, size),
            b'L' | b'K' | b'g' => {}
            _ => size = pax_size.take().unwrap_or(size),
        }
        let Some(next) = size
            .checked_next_multiple_of(512)
            .and_then(|s| data.checked_add(s))
        else {
            return Ok(());
        };
        pos = next;
    }
}

/// The `size` record of the pax header at `data` (at most [`MAX_META`] bytes).
fn pax_record_size<B: Blocks + ?Sized>(blocks: &B, data: u64, size: u64) -> Option<u64> {
    let mut bytes = Vec::new();
    let mut at = data;
    while (bytes.len() as u64) < size {
        bytes.extend_from_slice(&blocks.block(at).ok()??);
        at += 512;
    }
    bytes.truncate(size as usize);
    for record in tar::PaxExtensions::new(&bytes) {
        let record = record.ok()?;
        if record.key_bytes() == b"size" {
            return record.value().ok()?.parse().ok();
        }
    }
    None
}
