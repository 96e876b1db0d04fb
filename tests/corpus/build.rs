//! The corpus' roots, each built once per run and shared by the images that need it:
//!
//! - a suite's minbase, by debootstrap from the real archive (Ubuntu's with its keyring
//!   from `ubuntu/archive.rs`), with the release suite's lists fetched once;
//! - a variant: a copy of it with packages installed by `apt-get install` in a chroot from
//!   the release suite (the point release), then cleaned as image builds clean and given the
//!   official sources (release, updates, security);
//! - a variant's reference: a copy of it upgraded by real `apt-get upgrade -y` from the
//!   security suite alone, what patchpull must equal;
//! - a distroless layout of a root (`status.d`, no shell, no dpkg, no apt), for an image and
//!   for its reference alike.
//!
//! apt's downloaded packages go to one pool per suite, hard-linked into each root before
//! apt runs and back after, so that no package is downloaded twice in a run and no two apt
//! runs share (and lock) one archive directory.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::archive::{ubuntu_keyring, Keyrings};
use crate::matrix::{ImageSpec, Setup, Suite, Variant, ALL};
use crate::rootfs::{fresh_work_dir, in_root_within};
use crate::run::{bounded, stdout_of};
use crate::tree::listed_paths;

/// The packages a distroless image lacks: the shells, dpkg and apt.
pub const NOT_IN_DISTROLESS: &[&str] = &["apt", "bash", "dash", "dpkg"];

/// What dpkg, apt and debconf keep about the system, which distroless images do not have:
/// below these only `var/lib/dpkg/status.d` is made.
const DISTROLESS_DROPS: &[&str] = &[
    "var/lib/dpkg",
    "var/lib/apt",
    "var/cache/apt",
    "var/cache/debconf",
    "var/cache/ldconfig",
    "var/log/apt",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "etc/apt",
];

/// apt and dpkg runs: a download of a few hundred packages at most, and their scripts.
const APT_SECONDS: u32 = 900;

/// `<CARGO_TARGET_TMPDIR>/corpus`, emptied once per run.
pub fn corpus_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| fresh_work_dir("corpus"))
}

/// `<CARGO_TARGET_TMPDIR>/corpus-results`: one `<image>.json` row and `<image>.txt` report
/// per image checked, kept across runs (`scripts/corpus.sh` prints the matrix from them).
pub fn results_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("corpus-results");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

type Cell = OnceLock<Result<(PathBuf, Duration), String>>;

/// The directory `key` names, built by the first caller of `build` (the others wait for
/// it), with the time the build took. A failed build fails every caller with its message.
pub fn shared(key: &str, build: impl FnOnce() -> PathBuf) -> (PathBuf, Duration) {
    static CELLS: Mutex<BTreeMap<String, &'static Cell>> = Mutex::new(BTreeMap::new());
    let cell: &'static Cell = {
        let mut cells = CELLS.lock().unwrap_or_else(|e| e.into_inner());
        cells
            .entry(key.to_string())
            .or_insert_with(|| Box::leak(Box::new(OnceLock::new())))
    };
    let built = cell.get_or_init(|| {
        let started = Instant::now();
        let result = std::panic::catch_unwind(AssertUnwindSafe(build)).map_err(panic_message);
        eprintln!("corpus: {key} built in {:.1?}", started.elapsed());
        result.map(|dir| (dir, started.elapsed()))
    });
    match built {
        Ok(built) => built.clone(),
        Err(message) => panic!("corpus: building {key} failed: {message}"),
    }
}

/// Ubuntu's archive keyring, fetched and checked once.
pub fn keyrings() -> &'static Keyrings {
    static KEYRINGS: OnceLock<Result<Keyrings, String>> = OnceLock::new();
    let built = KEYRINGS.get_or_init(|| {
        std::panic::catch_unwind(AssertUnwindSafe(|| {
            ubuntu_keyring(&corpus_dir().join("ubuntu-keyring"))
        }))
        .map_err(panic_message)
    });
    match built {
        Ok(keyrings) => keyrings,
        Err(message) => panic!("corpus: Ubuntu's keyring: {message}"),
    }
}

/// Runs `command` in `root` within [`APT_SECONDS`], asserting success; returns its output.
pub fn in_root_ok(root: &Path, command: &[&str]) -> String {
    let out = in_root_within(APT_SECONDS, root, command);
    stdout_of(&out, &format!("{command:?} in {}", root.display()))
}

fn copy_root(from: &Path, to: &Path) {
    if to.exists() {
        std::fs::remove_dir_all(to).unwrap();
    }
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let out = bounded(
        600,
        "cp",
        &[
            "-a",
            "--reflink=auto",
            from.to_str().unwrap(),
            to.to_str().unwrap(),
        ],
    );
    stdout_of(&out, &format!("cp -a {} {}", from.display(), to.display()));
}

/// The suite's package pool.
fn pool(suite: Suite) -> PathBuf {
    let dir = corpus_dir().join("pool").join(suite.codename());
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn debs_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs `command` (an apt run) in `root` with the pool's packages in its archive directory
/// (apt checks each against the index and downloads only what is missing), then adds what
/// it downloaded to the pool and empties the root's archive directory again.
fn apt_with_pool(suite: Suite, root: &Path, command: &[&str]) -> Output {
    let archives = root.join("var/cache/apt/archives");
    std::fs::create_dir_all(archives.join("partial")).unwrap();
    let pool = pool(suite);
    for deb in debs_in(&pool) {
        let _ = std::fs::hard_link(&deb, archives.join(deb.file_name().unwrap()));
    }
    let out = in_root_within(APT_SECONDS, root, command);
    for deb in debs_in(&archives) {
        // Another run may have added the same file meanwhile: either copy will do.
        let _ = std::fs::hard_link(&deb, pool.join(deb.file_name().unwrap()));
        std::fs::remove_file(&deb).unwrap();
    }
    out
}

/// Removes what an image build leaves behind: apt's lists, caches and downloads. The
/// directories stay: trixie's apt package owns `var/lib/apt/lists/partial`.
fn clean_apt_state(root: &Path) {
    fn files_below(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => files_below(&path),
                Ok(_) => std::fs::remove_file(&path).unwrap(),
                Err(_) => {}
            }
        }
    }
    files_below(&root.join("var/lib/apt/lists"));
    files_below(&root.join("var/cache/apt"));
}

/// The suite's minbase root, with the release suite's lists.
pub fn base_root(suite: Suite) -> (PathBuf, Duration) {
    shared(&format!("base {}", suite.codename()), || {
        let dir = corpus_dir().join("bases").join(suite.codename());
        let mut args: Vec<String> = vec!["--variant=minbase".into()];
        if suite.is_ubuntu() {
            args.push(format!("--keyring={}", keyrings().shipped.display()));
        }
        args.extend([
            suite.codename().to_string(),
            dir.display().to_string(),
            suite.archive().to_string(),
        ]);
        // This debootstrap has no script for noble; Ubuntu's own debootstrap links every
        // release since gutsy to that one.
        if suite == Suite::Noble {
            args.push("/usr/share/debootstrap/scripts/gutsy".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = bounded(900, "debootstrap", &args);
        stdout_of(&out, &format!("debootstrap {args:?}"));
        in_root_ok(&dir, &["apt-get", "update"]);
        dir
    })
}

const DOCS_LESS_EXCLUDES: &str =
    "# Slim images: no documentation but the copyrights, no manual or info pages.\n\
     path-exclude=/usr/share/doc/*\n\
     path-include=/usr/share/doc/*/copyright\n\
     path-exclude=/usr/share/man/*\n\
     path-exclude=/usr/share/info/*\n";

/// The sources an official image of `suite` lists: release, updates and security.
fn official_sources(root: &Path, suite: Suite) {
    let codename = suite.codename();
    let apt = root.join("etc/apt");
    let _ = std::fs::remove_file(apt.join("sources.list"));
    std::fs::create_dir_all(apt.join("sources.list.d")).unwrap();
    match suite {
        Suite::Bookworm | Suite::Trixie => std::fs::write(
            apt.join("sources.list.d/debian.sources"),
            format!(
                "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: {codename} {codename}-updates\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                 Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: {codename}-security\n\
                 Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
            ),
        ),
        Suite::Jammy => std::fs::write(
            apt.join("sources.list"),
            format!(
                "deb http://archive.ubuntu.com/ubuntu/ {codename} main restricted universe multiverse\n\
                 deb http://archive.ubuntu.com/ubuntu/ {codename}-updates main restricted universe multiverse\n\
                 deb http://archive.ubuntu.com/ubuntu/ {codename}-backports main restricted universe multiverse\n\
                 deb http://security.ubuntu.com/ubuntu/ {codename}-security main restricted universe multiverse\n"
            ),
        ),
        Suite::Noble => std::fs::write(
            apt.join("sources.list.d/ubuntu.sources"),
            format!(
                "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\n\
                 Suites: {codename} {codename}-updates {codename}-backports\n\
                 Components: main universe restricted multiverse\n\
                 Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n\n\
                 Types: deb\nURIs: http://security.ubuntu.com/ubuntu/\nSuites: {codename}-security\n\
                 Components: main universe restricted multiverse\n\
                 Signed-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n"
            ),
        ),
    }
    .unwrap();
}

/// The variant's root, as its image holds it.
pub fn variant_root(variant: &'static Variant) -> (PathBuf, Duration) {
    shared(&format!("variant {}", variant.name), || {
        let (base, _) = base_root(variant.suite);
        let dir = corpus_dir().join("variants").join(variant.name);
        copy_root(&base, &dir);
        if variant.setup == Setup::DocsLess {
            let cfg = dir.join("etc/dpkg/dpkg.cfg.d");
            std::fs::create_dir_all(&cfg).unwrap();
            std::fs::write(cfg.join("excludes"), DOCS_LESS_EXCLUDES).unwrap();
        }
        if !variant.packages.is_empty() {
            let mut command = vec!["apt-get", "install", "-y", "--no-install-recommends"];
            command.extend(variant.packages);
            let out = apt_with_pool(variant.suite, &dir, &command);
            stdout_of(&out, &format!("{command:?} for {}", variant.name));
        }
        if let Setup::TimeZone(zone) = variant.setup {
            in_root_ok(
                &dir,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "ln -snf /usr/share/zoneinfo/{zone} /etc/localtime && \
                         echo {zone} > /etc/timezone && dpkg-reconfigure -f noninteractive tzdata"
                    ),
                ],
            );
        }
        clean_apt_state(&dir);
        official_sources(&dir, variant.suite);
        dir
    })
}

/// A copy of the variant's root upgraded by `apt-get upgrade -y` from the security suite
/// alone (`--force-confold`: a conffile the image changed is kept, as patchpull keeps it).
pub fn reference_root(variant: &'static Variant) -> (PathBuf, Duration) {
    shared(&format!("reference {}", variant.name), || {
        let (root, _) = variant_root(variant);
        let dir = corpus_dir().join("references").join(variant.name);
        copy_root(&root, &dir);
        std::fs::write(
            dir.join("tmp/corpus-security.list"),
            variant.suite.security_source(),
        )
        .unwrap();
        std::fs::create_dir_all(dir.join("tmp/corpus-no-parts")).unwrap();
        let sources = [
            "-o",
            "Dir::Etc::SourceList=/tmp/corpus-security.list",
            "-o",
            "Dir::Etc::SourceParts=/tmp/corpus-no-parts",
        ];
        let update: Vec<&str> = ["apt-get"]
            .into_iter()
            .chain(sources)
            .chain(["update"])
            .collect();
        in_root_ok(&dir, &update);
        let upgrade: Vec<&str> = ["apt-get"]
            .into_iter()
            .chain(sources)
            .chain(["-o", "Dpkg::Options::=--force-confold", "upgrade", "-y"])
            .collect();
        let out = apt_with_pool(variant.suite, &dir, &upgrade);
        let log = stdout_of(&out, &format!("apt-get upgrade for {}", variant.name));
        let log_path = corpus_dir()
            .join("references")
            .join(format!("{}.log", variant.name));
        std::fs::write(log_path, log).unwrap();
        std::fs::remove_file(dir.join("tmp/corpus-security.list")).unwrap();
        std::fs::remove_dir(dir.join("tmp/corpus-no-parts")).unwrap();
        clean_apt_state(&dir);
        dir
    })
}

/// The image's root: the variant's, or its distroless layout.
pub fn image_root(spec: &'static ImageSpec) -> (PathBuf, Duration) {
    if !spec.distroless {
        return variant_root(spec.variant);
    }
    shared(&format!("distroless {}", spec.variant.name), || {
        let (root, _) = variant_root(spec.variant);
        let dir = corpus_dir().join("distroless").join(spec.variant.name);
        distroless(&root, &dir);
        dir
    })
}

/// What patchpull's tree must equal: the reference, or its distroless layout.
pub fn expected_root(spec: &'static ImageSpec) -> (PathBuf, Duration) {
    if !spec.distroless {
        return reference_root(spec.variant);
    }
    shared(
        &format!("distroless reference {}", spec.variant.name),
        || {
            let (root, _) = reference_root(spec.variant);
            let dir = corpus_dir()
                .join("distroless-references")
                .join(spec.variant.name);
            distroless(&root, &dir);
            dir
        },
    )
}

/// Every stanza of a dpkg status file, as written, by package name.
pub fn stanzas(status: &str) -> BTreeMap<String, String> {
    status
        .split("\n\n")
        .filter_map(|stanza| {
            let stanza = stanza.trim_matches('\n');
            let name = stanza
                .lines()
                .find_map(|l| l.strip_prefix("Package: "))?
                .trim()
                .to_string();
            Some((name, format!("{stanza}\n")))
        })
        .collect()
}

/// Lays `root` out in `dir` as Google's distroless images are: the files of every installed
/// package but [`NOT_IN_DISTROLESS`], `var/lib/dpkg/status.d/<pkg>` (the package's stanza
/// of `var/lib/dpkg/status`, as written) and `status.d/<pkg>.md5sums` (its `info` md5sums),
/// and none of [`DISTROLESS_DROPS`]. Files no package owns (`/etc/passwd`, the CA bundle,
/// `/etc/ld.so.cache`) are kept.
pub fn distroless(root: &Path, dir: &Path) {
    copy_root(root, dir);
    let status = std::fs::read_to_string(dir.join("var/lib/dpkg/status")).unwrap();
    let stanzas = stanzas(&status);
    let removed: Vec<&str> = NOT_IN_DISTROLESS
        .iter()
        .copied()
        .filter(|p| stanzas.contains_key(*p))
        .collect();
    let mut kept_paths = std::collections::BTreeSet::new();
    for name in stanzas.keys() {
        if !removed.contains(&name.as_str()) {
            kept_paths.extend(listed_paths(dir, name));
        }
    }
    for name in &removed {
        for path in listed_paths(dir, name) {
            let full = dir.join(&path);
            let is_dir = std::fs::symlink_metadata(&full).is_ok_and(|m| m.is_dir());
            if !is_dir && !kept_paths.contains(&path) {
                let _ = std::fs::remove_file(&full);
            }
        }
    }
    let info = dir.join("var/lib/dpkg/info");
    let status_d = dir.join("var/lib/status.d.new");
    std::fs::create_dir_all(&status_d).unwrap();
    for (name, stanza) in &stanzas {
        if removed.contains(&name.as_str()) || !stanza.contains("\nStatus: install ok installed") {
            continue;
        }
        std::fs::write(status_d.join(name), stanza).unwrap();
        let arch = stanza
            .lines()
            .find_map(|l| l.strip_prefix("Architecture: "))
            .unwrap_or_default();
        for file in [format!("{name}.md5sums"), format!("{name}:{arch}.md5sums")] {
            if info.join(&file).exists() {
                std::fs::copy(info.join(&file), status_d.join(format!("{name}.md5sums"))).unwrap();
            }
        }
    }
    for drop in DISTROLESS_DROPS {
        let path = dir.join(drop);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path).unwrap(),
            Ok(_) => std::fs::remove_file(&path).unwrap(),
            Err(_) => {}
        }
    }
    std::fs::create_dir_all(dir.join("var/lib/dpkg")).unwrap();
    std::fs::rename(&status_d, dir.join("var/lib/dpkg/status.d")).unwrap();
}

/// The images of this run that use `variant`, for [`release`].
fn users(variant: &Variant, selected: impl Fn(&ImageSpec) -> bool) -> usize {
    ALL.iter()
        .filter(|s| std::ptr::eq(s.variant, variant) && selected(s))
        .count()
}

/// Called when an image is done: once every selected image of its variant is, the
/// variant's roots are removed (they are a few hundred MB each).
pub fn release(spec: &'static ImageSpec, selected: impl Fn(&ImageSpec) -> bool) {
    static DONE: Mutex<BTreeMap<&'static str, usize>> = Mutex::new(BTreeMap::new());
    let mut done = DONE.lock().unwrap_or_else(|e| e.into_inner());
    let count = done.entry(spec.variant.name).or_insert(0);
    *count += 1;
    if *count < users(spec.variant, selected) || std::env::var_os("CORPUS_KEEP").is_some() {
        return;
    }
    for dir in [
        "variants",
        "references",
        "distroless",
        "distroless-references",
    ] {
        let path = corpus_dir().join(dir).join(spec.variant.name);
        if path.exists() {
            let _ = std::fs::remove_dir_all(path);
        }
    }
}
