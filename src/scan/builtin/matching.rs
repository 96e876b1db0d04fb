//! Installed packages against the suites' indexes, and the resulting plan. Pure: the
//! indexes are already loaded and the changelogs already read.

use std::cmp::Ordering;

use crate::pkgs::{try_compare, Ecosystem, InstalledPackage, Inventory};
use crate::scan::plan::{
    NotPlanned, Plan, PlanOptions, PlanSource, Platform, PlatformPlanBuilder, Severity, SkipReason,
    VulnerabilityRef,
};

use super::index::IndexEntry;
use super::repo::LoadedSuite;
use super::Update;

/// An installed package with a newer version in one of the suites.
#[derive(Debug, Clone)]
pub struct Found {
    pub installed: InstalledPackage,
    pub architecture: String,
    pub entry: IndexEntry,
    /// Index into the suites the scan loaded.
    pub suite: usize,
}

impl Found {
    /// The installed source version, which changelog entries are compared with.
    pub fn installed_source_version(&self) -> &str {
        self.installed
            .source_version
            .as_deref()
            .unwrap_or(&self.installed.version)
    }
}

/// Every installed package with a newer version in `suites`, in inventory order, and the
/// packages whose installed version cannot be compared.
///
/// A package's candidates are the entries of the same name whose architecture is its own
/// or `all` (packages move between the two); packages of a foreign architecture (multiarch
/// `i386` on `amd64`) are not in the loaded indexes and are not scanned. On equal versions
/// the earlier suite wins, which is the security suite.
pub fn find_updates(
    inventory: &Inventory,
    native_architecture: &str,
    suites: &[LoadedSuite],
) -> (Vec<Found>, Vec<NotPlanned>) {
    let mut found = Vec::new();
    let mut invalid = Vec::new();
    for installed in &inventory.packages {
        let architecture = installed
            .architecture
            .clone()
            .unwrap_or_else(|| native_architecture.to_owned());
        if architecture != native_architecture && architecture != "all" {
            continue;
        }
        if let Err(e) = try_compare(Ecosystem::Dpkg, &installed.version, &installed.version) {
            invalid.push(NotPlanned {
                name: installed.name.clone(),
                installed_version: installed.version.clone(),
                vulnerability_id: String::new(),
                severity: None,
                fixed_versions: Vec::new(),
                reason: SkipReason::InvalidVersion {
                    detail: e.to_string(),
                },
            });
            continue;
        }
        let mut best: Option<(usize, &IndexEntry)> = None;
        for (position, loaded) in suites.iter().enumerate() {
            let entries = loaded
                .indexes
                .iter()
                .flat_map(|i| i.lookup(&installed.name));
            for entry in entries {
                if *entry.architecture != *architecture && &*entry.architecture != "all" {
                    continue;
                }
                let better = match best {
                    None => try_compare(Ecosystem::Dpkg, &entry.version, &entry.version).is_ok(),
                    Some((_, current)) => {
                        try_compare(Ecosystem::Dpkg, &entry.version, &current.version)
                            == Ok(Ordering::Greater)
                    }
                };
                if better {
                    best = Some((position, entry));
                }
            }
        }
        let Some((suite, entry)) = best else {
            continue;
        };
        if try_compare(Ecosystem::Dpkg, &entry.version, &installed.version) == Ok(Ordering::Greater)
        {
            found.push(Found {
                installed: installed.clone(),
                architecture,
                entry: entry.clone(),
                suite,
            });
        }
    }
    (found, invalid)
}

/// The severity of a CVE an update fixes, when a severity source states one.
pub type SeverityOf<'a> = &'a dyn Fn(&Update, &str) -> Option<Severity>;

/// The plan for one platform: every update, with its CVE ids when the changelog named
/// some, filtered by `options`. An update's severity is the highest of its CVEs' (from
/// `severity_of`); an update with none known is decided by `options.unknown_severity`.
pub fn build_plan(
    platform: &Platform,
    inventory: &Inventory,
    updates: &[Update],
    invalid: Vec<NotPlanned>,
    options: &PlanOptions,
    index_version: String,
    severity_of: SeverityOf<'_>,
) -> Plan {
    let mut builder =
        PlatformPlanBuilder::new(platform.clone(), inventory.os.clone(), Ecosystem::Dpkg);
    for skip in invalid {
        builder.skip(skip);
    }
    for update in updates {
        let severities: Vec<Option<Severity>> = update
            .fixes
            .iter()
            .map(|fix| severity_of(update, &fix.id))
            .collect();
        let skip =
            |vulnerability_id: &str, severity: Option<Severity>, reason: SkipReason| NotPlanned {
                name: update.name.clone(),
                installed_version: update.installed_version.clone(),
                vulnerability_id: vulnerability_id.to_owned(),
                severity,
                fixed_versions: vec![update.fixed_version.clone()],
                reason,
            };
        let highest = severities.iter().flatten().max().copied();
        let filtered = options
            .name_filter(&update.name)
            .or_else(|| builder.severity_filter(options, &update.name, highest));
        if let Some(reason) = filtered {
            if update.fixes.is_empty() {
                builder.skip(skip("", None, reason.clone()));
            }
            for (fix, severity) in update.fixes.iter().zip(&severities) {
                builder.skip(skip(&fix.id, *severity, reason.clone()));
            }
            continue;
        }
        builder.add_fix(
            &update.name,
            &update.installed_version,
            &update.fixed_version,
            None,
        );
        // Changelog versions are source versions; they are binary versions too unless
        // the binary is versioned apart from its source (binNMUs, some library packages).
        let same_numbering = update.source_version == update.fixed_version;
        for (fix, severity) in update.fixes.iter().zip(&severities) {
            let fixed_in = if same_numbering {
                &fix.fixed_version
            } else {
                &update.fixed_version
            };
            builder.add_fix(
                &update.name,
                &update.installed_version,
                fixed_in,
                Some(VulnerabilityRef {
                    id: fix.id.clone(),
                    severity: *severity,
                }),
            );
        }
    }
    Plan::new(
        PlanSource::BuiltinScanner { index_version },
        vec![builder.finish()],
    )
}
