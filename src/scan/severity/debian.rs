//! The Debian security tracker's JSON export.

use std::collections::HashMap;

use serde::Deserialize;

use crate::scan::plan::Severity;

#[derive(Deserialize)]
struct Cve {
    #[serde(default)]
    releases: HashMap<String, Release>,
}

#[derive(Deserialize)]
struct Release {
    #[serde(default)]
    urgency: String,
}

type Packages = HashMap<String, HashMap<String, HashMap<String, Option<Severity>>>>;

pub(super) fn read(bytes: &[u8], into: &mut Packages) -> Result<(), String> {
    let packages: HashMap<String, HashMap<String, Cve>> =
        serde_json::from_slice(bytes).map_err(|e| format!("not the tracker's JSON: {e}"))?;
    for (package, cves) in packages {
        let entry = into.entry(package).or_default();
        for (id, cve) in cves {
            // The export also lists TEMP-... ids; they have no CVE to match.
            if !id.starts_with("CVE-") {
                continue;
            }
            let releases = entry.entry(id).or_default();
            for (codename, release) in cve.releases {
                releases.insert(codename, super::debian_urgency(&release.urgency));
            }
        }
    }
    Ok(())
}
