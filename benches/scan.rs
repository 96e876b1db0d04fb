//! Built-in scanner speed: 100 installed packages (the first 100 of this Debian host's own
//! dpkg database) scanned against Debian's real bookworm suites, first cold (downloads and
//! verifies the indexes and changelogs), then warm. The target: a warm scan of 100
//! packages under 100 ms.
//!
//! `cargo bench --bench scan` (needs deb.debian.org and the debian-archive-keyring package).

use std::time::{Duration, Instant};

use patchpull::pkgs::{self, Ecosystem, Inventory};
use patchpull::scan::builtin::{BuiltinConfig, BuiltinScanner};
use patchpull::scan::plan::{PlanOptions, Platform};

const PACKAGES: usize = 100;
const WARM_RUNS: usize = 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let status = std::fs::read("/var/lib/dpkg/status")?;
    let mut packages = pkgs::dpkg::db::parse_status("/var/lib/dpkg/status", &status)?;
    packages.truncate(PACKAGES);
    let os = pkgs::os_release::parse("/etc/os-release", &std::fs::read("/etc/os-release")?)?;
    let inventory = Inventory {
        os,
        ecosystem: Ecosystem::Dpkg,
        packages,
    };
    let cache = std::env::temp_dir().join("patchpull-bench-scan-cache");
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let scanner = BuiltinScanner::new(BuiltinConfig::new(&cache))?;
        let platform = Platform::linux("amd64");
        let options = PlanOptions::default();
        let started = Instant::now();
        let first = scanner.scan(&inventory, &platform, &options).await?;
        let first_time = started.elapsed();
        let mut times: Vec<Duration> = Vec::new();
        for _ in 0..WARM_RUNS {
            let started = Instant::now();
            let scan = scanner.scan(&inventory, &platform, &options).await?;
            times.push(started.elapsed());
            assert_eq!(scan.plan.platforms, first.plan.platforms);
        }
        times.sort();
        let updates = first.plan.platforms.first().map(|p| p.updates.len()).unwrap_or(0);
        println!(
            "scan of {} packages ({} with updates): first {:.0} ms (cold or disk-warm cache), warm median {:.1} ms, max {:.1} ms over {WARM_RUNS} runs",
            inventory.packages.len(),
            updates,
            first_time.as_secs_f64() * 1e3,
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
