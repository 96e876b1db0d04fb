//! Every fuzz target's entry point over its committed seed corpus (fuzz/corpus/<target>),
//! in the normal test suite: the seeds still parse without a panic, and the entry points
//! the fuzz crate calls still compile on stable.

use std::path::Path;

use patchpull::fuzzing;

fn each_seed(target: &str, mut run: impl FnMut(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).expect("a readable seed");
        run(&data);
        seeds += 1;
    }
    assert!(seeds > 0, "no seeds in {}", dir.display());
}

#[test]
fn seeds_of_every_fuzz_target_run_clean() {
    each_seed("distribution", fuzzing::distribution);
    each_seed("range", fuzzing::range);
    each_seed("manifest", fuzzing::manifest);
    each_seed("scan_report", fuzzing::scan_report);
    each_seed("admission_review", fuzzing::admission_review);
    each_seed("deb822", fuzzing::deb822);
    each_seed("apk_text", fuzzing::apk_text);
    each_seed("rpm", fuzzing::rpm);
    // The archive seeds are well formed, so the fuzzer starts from inputs that reach past
    // the framing into the entries.
    each_seed("deb", |data| assert!(fuzzing::deb(data)));
    each_seed("apk_package", |data| assert!(fuzzing::apk_package(data)));
    each_seed("layer", |data| assert!(fuzzing::layer(data)));
    each_seed("decompress", fuzzing::decompress);
    each_seed("config", fuzzing::config);
    let key =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/keys/fuzz.asc")).unwrap();
    let keyring = fuzzing::keyring(&key).expect("fuzz/keys/fuzz.asc is a keyring");
    let mut verified = 0;
    each_seed("inrelease", |data| {
        verified += usize::from(fuzzing::inrelease(data, &keyring))
    });
    assert_eq!(
        verified, 1,
        "the signed seed verifies, the unsigned one does not"
    );
}
