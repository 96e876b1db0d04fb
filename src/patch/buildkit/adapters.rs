//! The package-manager commands BuildKit runs, one adapter per kind of image, and the LLB
//! graph around them. Package names come from reports, so every name must match a strict
//! pattern before any command is written; nothing else from a report reaches the shell.

use crate::buildkit::llb::{self, Exec, ExecMount, Graph, Output};
use crate::buildkit::proto::ops::{Definition, NetMode};
use crate::image::Filesystem;
use crate::pkgs::{Ecosystem, OsRelease};

/// How an image's packages are upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// Debian, Ubuntu: `apt-get install --only-upgrade`.
    Apt,
    /// Alpine, Wolfi: `apk add --upgrade`.
    Apk,
    /// Azure Linux, Mariner, RHEL and relatives: whichever tool the image has.
    Rpm(RpmTool),
    /// Distroless dpkg images (`status.d`, no apt, no shell): a tooling image downloads the
    /// packages and unpacks them into the image mounted at `/target`.
    DistrolessDpkg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpmTool {
    Tdnf,
    Dnf,
    Microdnf,
    Yum,
}

impl RpmTool {
    fn program(self) -> &'static str {
        match self {
            RpmTool::Tdnf => "tdnf",
            RpmTool::Dnf => "dnf",
            RpmTool::Microdnf => "microdnf",
            RpmTool::Yum => "yum",
        }
    }
}

impl Adapter {
    pub fn name(self) -> &'static str {
        match self {
            Adapter::Apt => "apt",
            Adapter::Apk => "apk",
            Adapter::Rpm(tool) => tool.program(),
            Adapter::DistrolessDpkg => "distroless dpkg (tooling image)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    #[error("package name {name:?} is not a valid {ecosystem} package name; refused before anything runs")]
    UnsafeName {
        name: String,
        ecosystem: &'static str,
    },
    #[error("the image has {what}: BuildKit cannot patch it")]
    Unsupported { what: String },
}

/// The adapter for an image with `ecosystem` whose merged tree is `tree`.
///
/// # Errors
/// [`AdapterError::Unsupported`] when the image has no tool the adapter needs.
pub fn choose(ecosystem: Ecosystem, tree: &Filesystem) -> Result<Adapter, AdapterError> {
    let has = |path: &str| matches!(tree.resolve(path, 40), Ok(Some((_, node))) if !node.is_dir());
    match ecosystem {
        Ecosystem::Dpkg if has("usr/bin/apt-get") && has("bin/sh") => Ok(Adapter::Apt),
        Ecosystem::Dpkg if !has("var/lib/dpkg/status") => Ok(Adapter::DistrolessDpkg),
        Ecosystem::Dpkg => Err(AdapterError::Unsupported {
            what: "a dpkg database but no apt-get or no /bin/sh".to_owned(),
        }),
        Ecosystem::Apk if has("sbin/apk") || has("usr/bin/apk") => Ok(Adapter::Apk),
        Ecosystem::Apk => Err(AdapterError::Unsupported {
            what: "an apk database but no apk".to_owned(),
        }),
        Ecosystem::Rpm => [
            ("usr/bin/tdnf", RpmTool::Tdnf),
            ("usr/bin/dnf", RpmTool::Dnf),
            ("usr/bin/microdnf", RpmTool::Microdnf),
            ("usr/bin/yum", RpmTool::Yum),
        ]
        .into_iter()
        .find(|(path, _)| has(path))
        .map(|(_, tool)| Adapter::Rpm(tool))
        .ok_or_else(|| AdapterError::Unsupported {
            what: "an rpm database but none of tdnf, dnf, microdnf or yum".to_owned(),
        }),
    }
}

/// Checks every name against its ecosystem's pattern.
///
/// # Errors
/// [`AdapterError::UnsafeName`] for the first name that does not match.
pub fn validate_names<'a>(
    ecosystem: Ecosystem,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<&'a str>, AdapterError> {
    names
        .into_iter()
        .map(|name| {
            if crate::pkgs::valid_package_name(ecosystem, name) {
                Ok(name)
            } else {
                Err(AdapterError::UnsafeName {
                    name: name.to_owned(),
                    ecosystem: ecosystem.as_str(),
                })
            }
        })
        .collect()
}

/// What the graph is built from.
#[derive(Debug, Clone)]
pub struct GraphInput<'a> {
    /// The original image as BuildKit pulls it, with its digest.
    pub source: &'a str,
    /// The tooling image, for [`Adapter::DistrolessDpkg`].
    pub tooling: &'a str,
    pub platform: llb::Platform,
    pub os: &'a OsRelease,
    /// Debian's archive and security archive, for the tooling image's apt sources.
    pub debian_archive_url: &'a str,
    pub debian_security_url: &'a str,
    /// Use Diff and Merge (BuildKit 0.10 and later): the result is the original's layers
    /// plus exactly the exec's changes.
    pub diff_merge: bool,
    /// `name=version ...` of the plan, in the exec's environment: BuildKit caches an exec
    /// by its definition, so a cached result is reused only for the same target versions.
    pub plan: String,
    /// Run the exec even when BuildKit has it cached: a value unique to this patch, put in
    /// the exec's environment so that its definition is new. BuildKit's own ignore-cache
    /// flag would also delete the exec's cache mounts (apt's lists and archives), making
    /// every such patch download everything again.
    pub no_cache: Option<String>,
}

/// The command for `packages` (already validated) under `adapter`.
pub fn script(adapter: Adapter, packages: &[&str], input: &GraphInput<'_>) -> String {
    let list = packages.join(" ");
    match adapter {
        Adapter::Apt => format!(
            "set -eu\n\
             export DEBIAN_FRONTEND=noninteractive\n\
             apt-get update -o Acquire::Retries=3\n\
             apt-get install -y --no-install-recommends --only-upgrade \
             -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold {list}\n"
        ),
        Adapter::Apk => format!("set -eu\napk add --no-cache --upgrade {list}\n"),
        Adapter::Rpm(tool) => {
            let program = tool.program();
            let upgrade = match tool {
                RpmTool::Tdnf => format!("tdnf update -y --refresh {list}"),
                RpmTool::Dnf => {
                    format!("dnf upgrade -y --refresh --setopt=install_weak_deps=False {list}")
                }
                RpmTool::Microdnf => format!("microdnf update -y {list}"),
                RpmTool::Yum => format!("yum update -y {list}"),
            };
            format!(
                "set -eu\n{upgrade}\n{program} clean all\n\
                 rm -rf /var/cache/{program} /var/cache/dnf /var/cache/yum\n"
            )
        }
        Adapter::DistrolessDpkg => distroless_script(&list, input),
    }
}

/// apt in the tooling image, pointed at the target's release, downloads the packages;
/// `dpkg-deb` unpacks each into `/target` and its control file replaces the package's
/// `status.d` entry (and `.md5sums` where the image keeps them), as distroless builders
/// write them.
fn distroless_script(list: &str, input: &GraphInput<'_>) -> String {
    let codename = input
        .os
        .version_codename
        .as_deref()
        .filter(|c| c.bytes().all(|b| b.is_ascii_lowercase()))
        .unwrap_or("stable");
    let archive = shell_word(input.debian_archive_url);
    let security = shell_word(input.debian_security_url);
    format!(
        "set -eu\n\
         export DEBIAN_FRONTEND=noninteractive\n\
         rm -f /etc/apt/sources.list /etc/apt/sources.list.d/*\n\
         printf 'deb %s {codename} main\\ndeb %s {codename}-updates main\\ndeb %s {codename}-security main\\n' \
         {archive} {archive} {security} > /etc/apt/sources.list\n\
         apt-get update -o Acquire::Retries=3\n\
         mkdir -p /tmp/patchpull-debs && cd /tmp/patchpull-debs\n\
         apt-get download {list}\n\
         status=/target/var/lib/dpkg/status.d\n\
         for deb in /tmp/patchpull-debs/*.deb; do\n\
         \x20 package=$(dpkg-deb -f \"$deb\" Package)\n\
         \x20 dpkg-deb -x \"$deb\" /target\n\
         \x20 entry=\"$status/$package\"\n\
         \x20 for f in \"$status\"/*; do\n\
         \x20   case \"$f\" in *.md5sums) continue ;; esac\n\
         \x20   if grep -qx \"Package: $package\" \"$f\"; then entry=\"$f\"; fi\n\
         \x20 done\n\
         \x20 dpkg-deb -f \"$deb\" > \"$entry\"\n\
         \x20 if [ -e \"$entry.md5sums\" ]; then dpkg-deb --ctrl-tarfile \"$deb\" | tar -xOf - ./md5sums > \"$entry.md5sums\"; fi\n\
         done\n"
    )
}

/// `text` single-quoted for sh.
fn shell_word(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The graph: the original image, the adapter's exec over it (apt's lists and archives on
/// cache mounts, so they never land in the layer), and, where BuildKit has them, Diff and
/// Merge so the result is the original's layers plus one.
pub fn graph(adapter: Adapter, packages: &[&str], input: &GraphInput<'_>) -> Definition {
    let mut graph = Graph::new(Some(input.platform.clone()));
    let source = graph.image(input.source);
    let cache_scope = format!(
        "{}-{}-{}",
        input.os.id,
        input.os.version_id.as_deref().unwrap_or("unknown"),
        input.platform.architecture
    );
    let apt_caches = || {
        vec![
            ExecMount::Cache {
                dest: "/var/lib/apt/lists".to_owned(),
                id: format!("patchpull-apt-lists-{cache_scope}"),
            },
            ExecMount::Cache {
                dest: "/var/cache/apt".to_owned(),
                id: format!("patchpull-apt-archives-{cache_scope}"),
            },
        ]
    };
    let command = script(adapter, packages, input);
    let name = format!(
        "patchpull: {} upgrade {}",
        adapter.name(),
        packages.join(" ")
    );
    let exec = |root: Output, mounts: Vec<ExecMount>| Exec {
        root,
        args: vec!["/bin/sh".to_owned(), "-c".to_owned(), command.clone()],
        env: std::iter::once(format!("PATCHPULL_PLAN={}", input.plan))
            .chain(
                input
                    .no_cache
                    .iter()
                    .map(|run| format!("PATCHPULL_RUN={run}")),
            )
            .collect(),
        cwd: "/".to_owned(),
        user: String::new(),
        network: NetMode::Host,
        mounts,
        name: Some(name.clone()),
        ignore_cache: false,
    };
    let upper = match adapter {
        Adapter::Apt => graph.exec(exec(source.clone(), apt_caches()))[0].clone(),
        Adapter::Apk | Adapter::Rpm(_) => graph.exec(exec(source.clone(), Vec::new()))[0].clone(),
        Adapter::DistrolessDpkg => {
            let tooling = graph.image(input.tooling);
            let mut mounts = vec![ExecMount::Bind {
                dest: "/target".to_owned(),
                source: source.clone(),
                writable: true,
            }];
            mounts.extend(apt_caches());
            let outputs = graph.exec(exec(tooling, mounts));
            outputs[outputs.len() - 1].clone()
        }
    };
    let result = if input.diff_merge {
        let diff = graph.diff(&source, &upper);
        graph.merge(&[source, diff])
    } else {
        upper
    };
    graph.definition(&result)
}

#[cfg(test)]
mod tests;
