#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use patchpull::scan::builtin::keyring::Keyring;

/// A throwaway public key (fuzz/keys/fuzz.asc): no input carries its signature, so what
/// runs is the cleartext framing and the signature parsing before verification.
static KEY: &[u8] = include_bytes!("../keys/fuzz.asc");

fuzz_target!(|data: &[u8]| {
    static KEYRING: OnceLock<Option<Keyring>> = OnceLock::new();
    if let Some(keyring) = KEYRING.get_or_init(|| patchpull::fuzzing::keyring(KEY)) {
        patchpull::fuzzing::inrelease(data, keyring);
    }
});
