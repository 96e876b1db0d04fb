//! SHA-1, which apk uses for its `Q1` identities and per-file checksums, over the RustCrypto
//! `sha1` crate; a small wrapper so callers get plain arrays.

use sha1::Digest as _;

#[derive(Clone, Default)]
pub struct Sha1(sha1::Sha1);

impl Sha1 {
    pub fn digest(data: &[u8]) -> [u8; 20] {
        sha1::Sha1::digest(data).into()
    }

    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> [u8; 20] {
        self.0.finalize().into()
    }
}

#[cfg(test)]
mod tests {
    use super::Sha1;

    #[test]
    fn known_answers() {
        assert_eq!(
            hex::encode(Sha1::digest(b"abc")),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let mut h = Sha1::default();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), Sha1::digest(b"abc"));
    }
}
