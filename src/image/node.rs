//! What the index records for one path: the entry's type, size and link, never its contents.

/// The type of a tar entry, reduced to what reading an image needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A regular file (also GNU sparse and contiguous files).
    File,
    Dir,
    /// A symbolic link; its target may be relative or absolute (from the image root).
    Symlink,
    /// A hard link to an earlier entry of the same layer.
    Hardlink,
    /// Character and block devices, FIFOs and unknown types: no contents to read.
    Other,
}

/// One path of an image (or of one layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: EntryKind,
    /// Bytes of contents. For a hard link, the size of its target when the layer holds it.
    pub size: u64,
    /// The index (0 = bottom) of the layer this entry comes from.
    pub layer: usize,
    /// Permission and type bits from the tar header (`0o755`, ...).
    pub mode: u32,
    /// The symbolic link's target exactly as stored, or the hard link's target as a
    /// normalised image path (no leading `/`).
    pub link_target: Option<Vec<u8>>,
    /// True for a directory that no entry names but that an entry below it implies, as an
    /// extractor creates it.
    pub implicit: bool,
}

impl Node {
    pub(crate) fn implicit_dir(layer: usize) -> Node {
        Node {
            kind: EntryKind::Dir,
            size: 0,
            layer,
            mode: 0o755,
            link_target: None,
            implicit: true,
        }
    }

    /// True for a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == EntryKind::Dir
    }
}

/// What an entry's name means under the OCI layer rules.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    /// An ordinary entry.
    Plain,
    /// `.wh.<name>`: `<name>` (this path) is deleted from lower layers.
    Whiteout(Vec<u8>),
    /// `.wh..wh..opq`: this directory hides everything lower layers put in it.
    Opaque(Vec<u8>),
    /// Other `.wh..wh.` names (aufs metadata such as `.wh..wh.plnk`): ignored, as containerd does.
    Ignored,
    /// `.wh.` with no name, `.wh..` or `.wh...`: would delete the directory itself or its parent.
    Invalid,
}

const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_NAME: &[u8] = b".wh..wh..opq";
const META_PREFIX: &[u8] = b".wh..wh.";

/// Classifies a normalised entry path by its last component.
pub(crate) fn classify(path: &[u8]) -> Marker {
    use crate::image::path::{file_name, join, parent};
    let name = file_name(path);
    if !name.starts_with(WHITEOUT_PREFIX) {
        return Marker::Plain;
    }
    if name == OPAQUE_NAME {
        return Marker::Opaque(parent(path).to_vec());
    }
    if name.starts_with(META_PREFIX) {
        return Marker::Ignored;
    }
    match &name[WHITEOUT_PREFIX.len()..] {
        b"" | b"." | b".." => Marker::Invalid,
        hidden => Marker::Whiteout(join(parent(path), hidden)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names() {
        assert_eq!(classify(b"etc/passwd"), Marker::Plain);
        assert_eq!(
            classify(b"etc/.wh.passwd"),
            Marker::Whiteout(b"etc/passwd".to_vec())
        );
        assert_eq!(classify(b".wh.opt"), Marker::Whiteout(b"opt".to_vec()));
        assert_eq!(
            classify(b"var/cache/.wh..wh..opq"),
            Marker::Opaque(b"var/cache".to_vec())
        );
        assert_eq!(classify(b".wh..wh..opq"), Marker::Opaque(Vec::new()));
        assert_eq!(classify(b"x/.wh..wh.plnk"), Marker::Ignored);
        assert_eq!(classify(b"x/.wh."), Marker::Invalid);
        assert_eq!(classify(b"x/.wh.."), Marker::Invalid);
        assert_eq!(classify(b"x/.wh..."), Marker::Invalid);
        assert_eq!(classify(b"x/a.wh.b"), Marker::Plain);
    }
}
