//! A signed Alpine repository for tests: `APKINDEX.tar.gz` built and signed as
//! `abuild-sign` does (tar, gzip, `openssl dgst -sign`, the signature tar cut before its
//! end-of-archive blocks), with the secdb beside it, ready to be served on loopback.

use std::path::Path;
use std::process::Command;

/// The name of the signing key, as `APKINDEX.tar.gz`'s signature member names it.
pub const KEY_NAME: &str = "e2e@example.invalid-00c0ffee.rsa.pub";
pub const OS_RELEASE: &[u8] =
    b"NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.20.3\nPRETTY_NAME=\"Alpine Linux v3.20\"\n";

pub fn run(dir: &Path, program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `<root>/alpine/v3.20/{main,community}/x86_64/APKINDEX.tar.gz` signed by a new key,
/// which goes into `keys`; `<root>/secdb/v3.20/main.json` = `secdb_main` beside it.
pub fn publish_index(root: &Path, keys: &Path, main_index: &str, secdb_main: &str) {
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    run(w, "openssl", &["genrsa", "-out", "builder.key", "2048"]);
    let public = keys.join(KEY_NAME);
    run(
        w,
        "openssl",
        &[
            "rsa",
            "-in",
            "builder.key",
            "-pubout",
            "-out",
            public.to_str().unwrap(),
        ],
    );
    for (repo, index) in [("main", main_index), ("community", "")] {
        for f in ["index.tar.gz", "sig.tar.gz"] {
            let _ = std::fs::remove_file(w.join(f));
        }
        std::fs::write(w.join("DESCRIPTION"), "v3.20.3-1-g0123456789ab\n").unwrap();
        std::fs::write(w.join("APKINDEX"), index).unwrap();
        run(
            w,
            "tar",
            &["-c", "-f", "index.tar", "DESCRIPTION", "APKINDEX"],
        );
        run(w, "gzip", &["-n", "-9", "index.tar"]);
        let signature = format!(".SIGN.RSA.{KEY_NAME}");
        run(
            w,
            "openssl",
            &[
                "dgst",
                "-sha1",
                "-sign",
                "builder.key",
                "-out",
                &signature,
                "index.tar.gz",
            ],
        );
        run(
            w,
            "tar",
            &["-c", "-f", "sig.tar", "--format=ustar", &signature],
        );
        let size = std::fs::metadata(w.join(&signature)).unwrap().len();
        let sig = std::fs::OpenOptions::new()
            .write(true)
            .open(w.join("sig.tar"))
            .unwrap();
        sig.set_len(512 + size.div_ceil(512) * 512).unwrap();
        drop(sig);
        run(w, "gzip", &["-n", "-9", "sig.tar"]);
        let bytes = [
            std::fs::read(w.join("sig.tar.gz")).unwrap(),
            std::fs::read(w.join("index.tar.gz")).unwrap(),
        ]
        .concat();
        let dir = root.join(format!("alpine/v3.20/{repo}/x86_64"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("APKINDEX.tar.gz"), bytes).unwrap();
    }
    let secdb = root.join("secdb/v3.20");
    std::fs::create_dir_all(&secdb).unwrap();
    std::fs::write(secdb.join("main.json"), secdb_main).unwrap();
    std::fs::write(secdb.join("community.json"), r#"{"packages":[]}"#).unwrap();
}
