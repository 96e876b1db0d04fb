//! What a failed maintainer script or `dpkg --configure` said, short enough for an error
//! message and still naming the cause: dpkg reports the cause first (`dependency problems
//! prevent configuration of X: X depends on Y; however: Package Y is not installed`) and
//! the consequences after, so a plain tail loses it.

/// At most this many lines of dpkg's own diagnostics are kept, first ones first.
const DPKG_LINES: usize = 40;
/// Without diagnostics from dpkg, the last this many lines.
const TAIL_LINES: usize = 10;

/// dpkg's diagnostics in `output` (each `dpkg:` or `dpkg-...:` line with its indented
/// continuation lines, and the closing `Errors were encountered while processing:` list),
/// the first [`DPKG_LINES`]; when there are none, the last [`TAIL_LINES`] non-empty lines.
/// Lines starting with `skip` (the driver's own marks) are left out either way.
pub(super) fn summary(output: &str, skip: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .filter(|l| !l.starts_with(skip) && !l.trim().is_empty())
        .collect();
    let mut kept: Vec<&str> = Vec::new();
    let mut in_block = false;
    for line in &lines {
        let continues = line.starts_with(' ') || line.starts_with('\t');
        if is_dpkg_diagnostic(line) {
            in_block = true;
        } else if !(in_block && continues) {
            in_block = false;
        }
        if in_block {
            kept.push(line);
        }
    }
    if kept.is_empty() {
        return lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
    }
    if kept.len() > DPKG_LINES {
        let left_out = kept.len() - DPKG_LINES;
        kept.truncate(DPKG_LINES);
        return format!("{}\n({left_out} more line(s) left out)", kept.join("\n"));
    }
    kept.join("\n")
}

fn is_dpkg_diagnostic(line: &str) -> bool {
    let program = line.split_once(": ").map_or("", |(p, _)| p);
    program == "dpkg"
        || (program.starts_with("dpkg-") && !program.contains(' '))
        || line.starts_with("Errors were encountered while processing:")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// noble-minbase's configure with libpam-modules 1.5.3-5ubuntu5.7 and no libdb5.3t64:
    /// the cause comes first, among dpkg's progress lines.
    const NOBLE: &str = "\
Setting up libpam0g:amd64 (1.5.3-5ubuntu5.7) ...
dpkg: dependency problems prevent configuration of libpam-modules-bin:
 libpam-modules-bin depends on libdb5.3t64; however:
  Package libdb5.3t64 is not installed.

dpkg: error processing package libpam-modules-bin (--configure):
 dependency problems - leaving unconfigured
Setting up libudev1:amd64 (255.4-1ubuntu8.6) ...
Setting up libsystemd0:amd64 (255.4-1ubuntu8.6) ...
dpkg: dependency problems prevent configuration of libpam-modules:amd64:
 libpam-modules:amd64 depends on libpam-modules-bin (= 1.5.3-5ubuntu5.7); however:
  Package libpam-modules-bin is not configured yet.

dpkg: error processing package libpam-modules:amd64 (--configure):
 dependency problems - leaving unconfigured
Processing triggers for libc-bin (2.39-0ubuntu8.4) ...
dpkg: dependency problems prevent configuration of libpam-runtime:
 libpam-runtime depends on libpam-modules (>= 1.0.1-6); however:
  Package libpam-modules:amd64 is not configured yet.
dpkg: error processing package libpam-runtime (--configure):
 dependency problems - leaving unconfigured
Errors were encountered while processing:
 libpam-modules-bin
 libpam-modules:amd64
 libpam-runtime
";

    #[test]
    fn dpkgs_diagnostics_are_kept_from_the_first_the_progress_lines_left_out() {
        let summary = summary(NOBLE, "patchpull-step-failed ");
        assert!(
            summary.starts_with(
                "dpkg: dependency problems prevent configuration of libpam-modules-bin:\n \
                 libpam-modules-bin depends on libdb5.3t64; however:\n  Package libdb5.3t64 is \
                 not installed.\n"
            ),
            "{summary}"
        );
        assert!(summary.ends_with(" libpam-runtime"), "{summary}");
        assert!(!summary.contains("Setting up"), "{summary}");
        assert!(!summary.contains("Processing triggers"), "{summary}");
    }

    #[test]
    fn other_output_keeps_its_last_lines_and_long_diagnostics_are_cut() {
        let script: String = (1..=15).map(|n| format!("line {n}\n")).collect();
        let summary = summary(
            &format!("{script}patchpull-step-failed 3 1\n"),
            "patchpull-step-failed ",
        );
        assert_eq!(summary.lines().next(), Some("line 6"));
        assert_eq!(summary.lines().last(), Some("line 15"));
        let many: String = (1..=50).map(|n| format!("dpkg: warning {n}\n")).collect();
        let summary = super::summary(&many, "x");
        assert!(
            summary.ends_with("dpkg: warning 40\n(10 more line(s) left out)"),
            "{summary}"
        );
    }
}
