//! xz decoding speed: Debian bookworm's `main/binary-amd64/Packages.xz` (about 8.8 MB,
//! 50 MB decoded), the biggest xz file the scanner reads, decoded through the crate's
//! decompressor into a sink, against `xz -dc` (when installed) as the baseline.
//!
//! `cargo bench --bench xz` (downloads the file once from deb.debian.org into the temp
//! directory; `BENCH_PACKAGES_XZ=/path/to/Packages.xz` uses that file instead).

use std::time::{Duration, Instant};

use patchpull::pkgs::dpkg::debfile::Compression;

const URL: &str = "https://deb.debian.org/debian/dists/bookworm/main/binary-amd64/Packages.xz";
const RUNS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = match std::env::var_os("BENCH_PACKAGES_XZ") {
        Some(path) => std::path::PathBuf::from(path),
        None => {
            let path = std::env::temp_dir().join("patchpull-bench-bookworm-Packages.xz");
            if !path.exists() {
                let runtime = tokio::runtime::Runtime::new()?;
                let bytes = runtime.block_on(async {
                    let response = reqwest::get(URL).await?.error_for_status()?;
                    response.bytes().await
                })?;
                patchpull::durable::write_atomically(&path, &bytes)?;
            }
            path
        }
    };
    let compressed = std::fs::read(&path)?;
    let mut times: Vec<Duration> = Vec::new();
    let mut decoded = 0;
    for _ in 0..RUNS {
        let mut sink = Counter(0);
        let started = Instant::now();
        Compression::Xz.decompress(compressed.as_slice(), &mut sink)?;
        times.push(started.elapsed());
        decoded = sink.0;
    }
    times.sort();
    let median = times[RUNS / 2];
    println!(
        "patchpull xz: {} -> {} bytes, median {:.0} ms ({:.0} MB/s decoded), best {:.0} ms, over {RUNS} runs",
        compressed.len(),
        decoded,
        median.as_secs_f64() * 1e3,
        decoded as f64 / median.as_secs_f64() / 1e6,
        times[0].as_secs_f64() * 1e3,
    );
    let started = Instant::now();
    match std::process::Command::new("xz")
        .arg("-dc")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .status()
    {
        Ok(status) if status.success() => println!(
            "xz -dc (baseline): {:.0} ms",
            started.elapsed().as_secs_f64() * 1e3
        ),
        _ => println!("xz -dc (baseline): not run (xz is not installed)"),
    }
    Ok(())
}

/// Counts the decoded bytes and drops them.
struct Counter(u64);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
