use prost::Message;

use super::*;
use crate::buildkit::proto::ops::{op, MountType, Op};

fn debian() -> OsRelease {
    OsRelease {
        id: "debian".into(),
        id_like: Vec::new(),
        version_id: Some("12".into()),
        version_codename: Some("bookworm".into()),
        pretty_name: None,
    }
}

fn input<'a>(os: &'a OsRelease, diff_merge: bool) -> GraphInput<'a> {
    GraphInput {
        source: "127.0.0.1:5000/docker.io/library/debian@sha256:0123",
        tooling: "127.0.0.1:5000/docker.io/library/debian:bookworm-slim",
        platform: llb::platform("linux", "amd64", None),
        os,
        debian_archive_url: "http://deb.debian.org/debian",
        debian_security_url: "http://deb.debian.org/debian-security",
        diff_merge,
        plan: "libssl3=3.0.15-1~deb12u1".into(),
        no_cache: None,
    }
}

fn ops(definition: &Definition) -> Vec<Op> {
    definition
        .def
        .iter()
        .map(|bytes| Op::decode(bytes.as_slice()).unwrap())
        .collect()
}

#[test]
fn names_with_shell_metacharacters_are_refused() {
    for name in [
        "openssl; rm -rf /",
        "$(reboot)",
        "`id`",
        "libc6 libssl3",
        "-o",
        "libssl3\n",
        "LibSSL",
        "a",
        "",
        "pkg|sh",
        "x'y",
    ] {
        let error = validate_names(Ecosystem::Dpkg, [name]).unwrap_err();
        assert!(
            error.to_string().contains("refused before anything runs"),
            "{name:?}: {error}"
        );
    }
    assert!(validate_names(Ecosystem::Apk, ["busybox&"]).is_err());
    assert!(validate_names(Ecosystem::Rpm, ["openssl>1"]).is_err());
}

#[test]
fn real_package_names_pass() {
    let names = ["libssl3", "g++-12", "libstdc++6", "python3.11", "perl-base"];
    assert_eq!(validate_names(Ecosystem::Dpkg, names).unwrap(), names);
    assert!(validate_names(Ecosystem::Apk, ["py3-pip", "libcrypto3", "busybox_extras"]).is_ok());
    assert!(validate_names(Ecosystem::Rpm, ["openssl-libs", "SDL2", "glibc"]).is_ok());
}

/// `--no-cache` makes the exec new with a value in its environment, not with BuildKit's
/// ignore-cache flag, which would delete apt's cache mounts.
#[test]
fn no_cache_runs_the_exec_again_and_keeps_its_cache_mounts() {
    let os = debian();
    let mut with_run = input(&os, false);
    with_run.no_cache = Some("0123abcd".to_owned());
    let definition = graph(Adapter::Apt, &["libssl3"], &with_run);
    let plain = graph(Adapter::Apt, &["libssl3"], &input(&os, false));
    assert_ne!(definition.def, plain.def, "a new exec definition");
    assert!(definition.metadata.values().all(|m| !m.ignore_cache));
    let ops = ops(&definition);
    let Some(op::Kind::Exec(exec)) = &ops[1].kind else {
        panic!("not an exec: {:?}", ops[1])
    };
    let env = &exec.meta.as_ref().unwrap().env;
    assert!(
        env.contains(&"PATCHPULL_RUN=0123abcd".to_string()),
        "{env:?}"
    );
    let caches = exec
        .mounts
        .iter()
        .filter(|m| m.mount_type == MountType::Cache as i32)
        .count();
    assert_eq!(caches, 2);
}

#[test]
fn apt_upgrades_only_the_planned_packages_with_lists_and_archives_on_cache_mounts() {
    let os = debian();
    let definition = graph(Adapter::Apt, &["libssl3", "tzdata"], &input(&os, false));
    let ops = ops(&definition);
    assert_eq!(ops.len(), 3, "source, exec, terminal");
    let Some(op::Kind::Exec(exec)) = &ops[1].kind else {
        panic!("not an exec: {:?}", ops[1])
    };
    let args = &exec.meta.as_ref().unwrap().args;
    assert_eq!(args[..2], ["/bin/sh", "-c"]);
    assert!(args[2].contains("apt-get update"));
    assert!(args[2].contains("--only-upgrade"));
    assert!(args[2].ends_with("libssl3 tzdata\n"), "{}", args[2]);
    assert_eq!(exec.network, NetMode::Host as i32);
    // The plan's versions are part of the exec, so a cached result is for the same versions.
    let env = &exec.meta.as_ref().unwrap().env;
    assert!(
        env.contains(&"PATCHPULL_PLAN=libssl3=3.0.15-1~deb12u1".to_string()),
        "{env:?}"
    );
    let caches: Vec<&str> = exec
        .mounts
        .iter()
        .filter(|m| m.mount_type == MountType::Cache as i32)
        .map(|m| m.dest.as_str())
        .collect();
    assert_eq!(caches, ["/var/lib/apt/lists", "/var/cache/apt"]);
    assert_eq!(
        exec.mounts[1].cache_opt.as_ref().unwrap().id,
        "patchpull-apt-lists-debian-12-amd64"
    );
    // The terminal op names the exec's root.
    assert_eq!(ops[2].inputs[0].digest, llb::op_digest(&definition.def[1]));
    assert_eq!(ops[2].inputs[0].index, 0);
}

#[test]
fn with_diff_and_merge_the_result_is_the_original_plus_the_exec_changes() {
    let os = debian();
    let definition = graph(Adapter::Apt, &["libssl3"], &input(&os, true));
    let ops = ops(&definition);
    assert_eq!(ops.len(), 5, "source, exec, diff, merge, terminal");
    assert!(matches!(ops[2].kind, Some(op::Kind::Diff(_))));
    let source = llb::op_digest(&definition.def[0]);
    assert_eq!(ops[2].inputs[0].digest, source, "diff lower: the original");
    assert_eq!(ops[3].inputs[0].digest, source, "merge: the original first");
    assert_eq!(ops[3].inputs[1].digest, llb::op_digest(&definition.def[2]));
}

#[test]
fn distroless_images_are_patched_from_a_tooling_image_with_the_target_mounted() {
    let os = debian();
    let definition = graph(Adapter::DistrolessDpkg, &["libssl3"], &input(&os, false));
    let ops = ops(&definition);
    let Some(op::Kind::Source(tooling)) = &ops[1].kind else {
        panic!("the tooling image is the second source")
    };
    assert!(tooling.identifier.ends_with("debian:bookworm-slim"));
    let Some(op::Kind::Exec(exec)) = &ops[2].kind else {
        panic!("not an exec")
    };
    let target = exec.mounts.iter().find(|m| m.dest == "/target").unwrap();
    assert_eq!(target.output, 1);
    let script = &exec.meta.as_ref().unwrap().args[2];
    assert!(script.contains("bookworm-security main"));
    assert!(script.contains("apt-get download libssl3"));
    assert!(script.contains("dpkg-deb -x"));
    // The result is the target mount, not the tooling root.
    let terminal = ops.last().unwrap();
    assert_eq!(terminal.inputs[0].index, 1);
}

#[test]
fn each_rpm_tool_gets_its_own_upgrade_and_cleans_its_cache() {
    let os = debian();
    for (tool, expected) in [
        (RpmTool::Tdnf, "tdnf update -y --refresh openssl-libs"),
        (RpmTool::Dnf, "dnf upgrade -y --refresh"),
        (RpmTool::Microdnf, "microdnf update -y openssl-libs"),
        (RpmTool::Yum, "yum update -y openssl-libs"),
    ] {
        let text = script(Adapter::Rpm(tool), &["openssl-libs"], &input(&os, false));
        assert!(text.contains(expected), "{text}");
        assert!(text.contains(&format!("{} clean all", tool.program())));
    }
    let apk = script(Adapter::Apk, &["libcrypto3"], &input(&os, false));
    assert!(apk.contains("apk add --no-cache --upgrade libcrypto3"));
}
