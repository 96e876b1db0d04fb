//! What this host allows the sandbox, found out once at start so that it is said once: in
//! one log line, in the `patchpull_sandbox_available` and `patchpull_overlay_available`
//! gauges, in `/readyz?verbose` and in the admin API. A pull never finds out by failing.

use std::path::Path;

use serde::Serialize;

use super::{effective_uid, ROOT_ID_BASE};

/// Whether one facility works here, and why not when it does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Probe {
    pub available: bool,
    /// Why not (the kernel's or the tool's own words), or `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl Probe {
    fn of(result: Result<(), String>) -> Probe {
        match result {
            Ok(()) => Probe {
                available: true,
                reason: None,
            },
            Err(reason) => Probe {
                available: false,
                reason: Some(reason),
            },
        }
    }

    fn not_used(why: &str) -> Probe {
        Probe {
            available: false,
            reason: Some(why.to_owned()),
        }
    }
}

/// The sandbox (user, mount and pid namespaces with `/proc` and tmpfs mounts, for the
/// maintainer scripts) and the overlay (a cached image root shared by the scripts' runs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostReport {
    pub sandbox: Probe,
    pub overlay: Probe,
}

impl HostReport {
    /// The report with `path` written as `name` in the reasons.
    pub fn redacted(mut self, path: &str, name: &str) -> HostReport {
        for probe in [&mut self.sandbox, &mut self.overlay] {
            if let Some(reason) = probe.reason.as_mut() {
                *reason = reason.replace(path, name);
            }
        }
        self
    }

    /// One line for the start-up log.
    pub fn summary(&self) -> String {
        let part = |name: &str, probe: &Probe| match &probe.reason {
            None => format!("{name} available"),
            Some(why) => format!("{name} unavailable ({why})"),
        };
        format!(
            "{}; {}",
            part("sandbox", &self.sandbox),
            part("overlay", &self.overlay)
        )
    }
}

/// Probes the sandbox and, when `unpack_cache` is set, the overlay in the directories the
/// patches use (`scratch`, the jobs' scratch parent, and `unpack_cache`'s roots).
///
/// # Errors
/// A store the sandbox can never reach: for a root caller (the sandbox then runs as host
/// uid [`ROOT_ID_BASE`], never as root), a directory above `scratch` that this user cannot
/// search (`/root`, a `mktemp -d`). The message names the directory and the fix.
pub fn probe(scratch: &Path, unpack_cache: Option<&Path>) -> Result<HostReport, String> {
    let sandbox = super::available();
    if sandbox.is_ok() && effective_uid().map_err(|e| e.to_string())? == 0 {
        if let Err(why) = super::run::searchable(scratch, ROOT_ID_BASE, ROOT_ID_BASE) {
            return Err(format!(
                "storage.path cannot hold the sandbox's trees: {why}; patchpull runs as root \
                 and its sandbox never does (it runs as uid {ROOT_ID_BASE}), so every \
                 directory above storage.path must be searchable by others: give them mode \
                 0711 (chmod o+x), or move storage.path (for example to /var/lib/patchpull)"
            ));
        }
    }
    let overlay = match (&sandbox, unpack_cache) {
        (Err(_), _) => Probe::not_used("needs the sandbox"),
        (Ok(()), None) => Probe::not_used("patch.unpack_cache_size is 0"),
        (Ok(()), Some(roots)) => {
            Probe::of(super::overlay_available(roots).and_then(|()| {
                // The upper directories live in the scratch space, maybe another file system.
                super::overlay_available(scratch)
            }))
        }
    };
    Ok(HostReport {
        sandbox: Probe::of(sandbox),
        overlay,
    })
}
