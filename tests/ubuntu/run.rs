//! External commands with a bounded run time: each one runs under coreutils' `timeout`,
//! which sends TERM when the time is up and KILL ten seconds later, so a hung download or
//! patch fails its test instead of hanging the suite. (Commands in the chroot go through
//! debootstrap's `in_root`, which has no bound.)

use std::path::Path;
use std::process::{Command, Output};

/// `program args` under `timeout`, with `seconds` allowed.
pub fn bounded(seconds: u32, program: &str, args: &[&str]) -> Output {
    Command::new("timeout")
        .args(["-k", "10", &seconds.to_string(), program])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// `bash -c script` under `timeout`, a pipeline failing when any of its commands fails.
pub fn sh(seconds: u32, script: &str) -> Output {
    bounded(seconds, "bash", &["-o", "pipefail", "-c", script])
}

/// stdout of a run that must have succeeded (status 124 or 137 is `timeout` giving up).
pub fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} ({}): {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `program args` within `seconds`, asserting success; returns stdout.
pub fn tool(seconds: u32, program: &str, args: &[&str]) -> String {
    stdout_of(
        &bounded(seconds, program, args),
        &format!("{program} {args:?}"),
    )
}

/// `patchpull --config CONFIG args` within `seconds`, asserting success; returns stdout and
/// stderr (the `==>` progress lines and warnings).
pub fn patchpull(seconds: u32, config: &Path, args: &[&str]) -> (String, String) {
    let mut argv = vec!["--config", config.to_str().unwrap()];
    argv.extend_from_slice(args);
    let out = bounded(seconds, env!("CARGO_BIN_EXE_patchpull"), &argv);
    let stdout = stdout_of(&out, &format!("patchpull {args:?}"));
    (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `dpkg --compare-versions a gt b` on the host.
pub fn dpkg_gt(a: &str, b: &str) -> bool {
    bounded(30, "dpkg", &["--compare-versions", a, "gt", b])
        .status
        .success()
}
