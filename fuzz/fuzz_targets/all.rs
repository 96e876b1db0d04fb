#![no_main]
//! Every target in one binary, chosen by `PATCHPULL_FUZZ_TARGET` (a target's name): the CI
//! smoke run (scripts/fuzz-smoke.sh) builds and links this one binary instead of fourteen.
//! Long runs use the per-target binaries, whose coverage maps hold only their own target.

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use patchpull::fuzzing;
use patchpull::scan::builtin::keyring::Keyring;

static KEY: &[u8] = include_bytes!("../keys/fuzz.asc");

fn keyring() -> Option<&'static Keyring> {
    static KEYRING: OnceLock<Option<Keyring>> = OnceLock::new();
    KEYRING.get_or_init(|| fuzzing::keyring(KEY)).as_ref()
}

type Entry = fn(&[u8]);

fn chosen() -> Entry {
    static CHOSEN: OnceLock<Entry> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let name = std::env::var("PATCHPULL_FUZZ_TARGET").unwrap_or_default();
        let entry: Entry = match name.as_str() {
            "distribution" => fuzzing::distribution,
            "range" => fuzzing::range,
            "manifest" => fuzzing::manifest,
            "scan_report" => fuzzing::scan_report,
            "admission_review" => fuzzing::admission_review,
            "deb822" => fuzzing::deb822,
            "inrelease" => |data| {
                if let Some(keyring) = keyring() {
                    fuzzing::inrelease(data, keyring);
                }
            },
            "apk_text" => fuzzing::apk_text,
            "rpm" => fuzzing::rpm,
            "deb" => |data| {
                fuzzing::deb(data);
            },
            "apk_package" => |data| {
                fuzzing::apk_package(data);
            },
            "layer" => |data| {
                fuzzing::layer(data);
            },
            "decompress" => fuzzing::decompress,
            "config" => fuzzing::config,
            other => {
                eprintln!("PATCHPULL_FUZZ_TARGET={other:?}: not a target (see fuzz/README.md)");
                std::process::exit(2)
            }
        };
        entry
    })
}

fuzz_target!(|data: &[u8]| chosen()(data));
