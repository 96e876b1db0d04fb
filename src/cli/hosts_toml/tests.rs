// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use super::*;

fn mirror(server: &str, headers: &[&str]) -> Mirror {
    let headers: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    Mirror::new(server, &headers, None, false).unwrap()
}

fn upstreams(toml: &str) -> Vec<UpstreamConfig> {
    Config::from_toml_str(toml).unwrap().upstream
}

const HUB: &str = "[[upstream]]\nname = \"docker.io\"\nurl = \"https://registry-1.docker.io\"\n";

#[test]
fn fail_open_keeps_the_upstream_as_server_and_adds_patchpull_as_a_host() {
    let files = render_all(
        &upstreams(HUB),
        &mirror("https://patchpull.example:5000", &[]),
        Mode::FailOpen,
    )
    .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].host, "docker.io");
    assert_eq!(
        files[0].text,
        "# containerd's settings for docker.io images, written by `patchpull hosts-toml`.\n\
         # Install as /etc/containerd/certs.d/docker.io/hosts.toml, with\n\
         # config_path = \"/etc/containerd/certs.d\" in containerd's CRI registry config.\n\
         # Edits apply without a restart.\n\
         #\n\
         # Fail-open: containerd resolves tags and pulls through patchpull first, and goes to\n\
         # the upstream (server) itself when patchpull cannot be reached or answers a status\n\
         # above 399. Pulls keep working while patchpull is down, with unpatched images.\n\
         \n\
         server = \"https://registry-1.docker.io\"\n\
         \n\
         [host.\"https://patchpull.example:5000\"]\n\
         capabilities = [\"pull\", \"resolve\"]\n"
    );
}

#[test]
fn fail_closed_makes_patchpull_the_server_with_an_empty_host_table() {
    let files = render_all(
        &upstreams(HUB),
        &mirror("https://patchpull.example:5000", &[]),
        Mode::FailClosed,
    )
    .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].host, "docker.io");
    assert_eq!(
        files[0].text,
        "# containerd's settings for docker.io images, written by `patchpull hosts-toml`.\n\
         # Install as /etc/containerd/certs.d/docker.io/hosts.toml, with\n\
         # config_path = \"/etc/containerd/certs.d\" in containerd's CRI registry config.\n\
         # Edits apply without a restart.\n\
         #\n\
         # Fail-closed: patchpull (server) is the only registry containerd uses for these\n\
         # images; while it is down or refuses an image, the pull fails. patchpull itself\n\
         # fetches them from https://registry-1.docker.io.\n\
         # The empty [host] table is for containerd 1.6 and early 1.7, which reject a file\n\
         # without one.\n\
         \n\
         server = \"https://patchpull.example:5000\"\n\
         capabilities = [\"pull\", \"resolve\"]\n\
         \n\
         [host]\n"
    );
}

/// The TOML part of a rendered file (after the comment block).
fn body(text: &str) -> &str {
    let start = text.find("\nserver = ").unwrap();
    &text[start + 1..]
}

#[test]
fn headers_are_escaped_and_repeated_names_become_arrays() {
    let m = mirror(
        "http://127.0.0.1:5000",
        &[
            "Authorization=Bearer a\"b\\c'd",
            "X-Tenant = one",
            "X-Tenant=two=2",
        ],
    );
    let text = render("ghcr.io", "https://ghcr.io", &m, Mode::FailOpen).unwrap();
    assert_eq!(
        body(&text),
        "server = \"https://ghcr.io\"\n\
         \n\
         [host.\"http://127.0.0.1:5000\"]\n\
         capabilities = [\"pull\", \"resolve\"]\n\
         \n\
         [host.\"http://127.0.0.1:5000\".header]\n\
         Authorization = '''Bearer a\"b\\c'd'''\n\
         X-Tenant = [\"one\", \"two=2\"]\n"
    );
    // Read back as containerd would: the exact header values survive the quoting.
    let parsed: toml::Value = toml::from_str(&text).unwrap();
    let header = &parsed["host"]["http://127.0.0.1:5000"]["header"];
    assert_eq!(header["Authorization"].as_str(), Some("Bearer a\"b\\c'd"));
    assert_eq!(header["X-Tenant"][1].as_str(), Some("two=2"));

    let closed = render("ghcr.io", "https://ghcr.io", &m, Mode::FailClosed).unwrap();
    let parsed: toml::Value = toml::from_str(&closed).unwrap();
    assert_eq!(
        parsed["header"]["Authorization"].as_str(),
        Some("Bearer a\"b\\c'd")
    );
    assert_eq!(parsed["server"].as_str(), Some("http://127.0.0.1:5000"));
    assert!(parsed["host"].as_table().unwrap().is_empty());
}

#[test]
fn ca_and_skip_verify_go_where_containerd_reads_them_for_patchpull() {
    let m = Mirror::new(
        "https://patchpull.example",
        &[],
        Some("patchpull-ca.crt".into()),
        true,
    )
    .unwrap();
    let open: toml::Value =
        toml::from_str(&render("quay.io", "https://quay.io", &m, Mode::FailOpen).unwrap()).unwrap();
    let host = &open["host"]["https://patchpull.example"];
    assert_eq!(host["ca"].as_str(), Some("patchpull-ca.crt"));
    assert_eq!(host["skip_verify"].as_bool(), Some(true));
    assert!(open.get("ca").is_none(), "the upstream keeps its own trust");
    let closed: toml::Value =
        toml::from_str(&render("quay.io", "https://quay.io", &m, Mode::FailClosed).unwrap())
            .unwrap();
    assert_eq!(closed["ca"].as_str(), Some("patchpull-ca.crt"));
    assert_eq!(closed["skip_verify"].as_bool(), Some(true));
}

#[test]
fn bad_headers_are_refused_with_the_flag_named() {
    for bad in [
        "Authorization",
        "=x",
        "Bad Name=x",
        "X-A=line\nbreak",
        "X-A=a\u{1}b",
    ] {
        let err = Mirror::new("https://p.example", &[bad.to_string()], None, false).unwrap_err();
        assert!(
            matches!(err, HostsTomlError::Header { .. }),
            "{bad:?}: {err}"
        );
        assert!(err.to_string().starts_with("--header "), "{err}");
    }
}

#[test]
fn server_url_is_reduced_to_scheme_host_and_port() {
    assert_eq!(
        mirror("https://patchpull.example:5000/", &[]).url,
        "https://patchpull.example:5000"
    );
    // The default port is implied, as containerd implies it.
    assert_eq!(
        mirror("https://patchpull.example:443", &[]).url,
        "https://patchpull.example"
    );
    assert_eq!(mirror("http://[::1]:5000", &[]).url, "http://[::1]:5000");
    for bad in [
        "patchpull.example:5000",
        "ftp://patchpull.example",
        "https://patchpull.example/v2",
        "https://user:pw@patchpull.example",
        "https://patchpull.example/?ns=docker.io",
        "not a url",
    ] {
        let err = Mirror::new(bad, &[], None, false).unwrap_err();
        assert!(
            matches!(err, HostsTomlError::ServerUrl { .. }),
            "{bad:?}: {err}"
        );
    }
}

#[test]
fn each_upstream_gets_the_directory_containerd_looks_up() {
    let config = format!(
        "{HUB}aliases = [\"hub\"]\n\n\
         [[upstream]]\nname = \"ghcr.io\"\nurl = \"https://ghcr.io/\"\n\n\
         [[upstream]]\nname = \"internal\"\nurl = \"http://registry.corp.example:8443\"\n"
    );
    let files = render_all(
        &upstreams(&config),
        &mirror("https://p.example", &[]),
        Mode::FailOpen,
    )
    .unwrap();
    let hosts: Vec<&str> = files.iter().map(|f| f.host.as_str()).collect();
    assert_eq!(
        hosts,
        ["docker.io", "ghcr.io", "registry.corp.example:8443"]
    );
    // No trailing slash: containerd would ask for //v2/.
    assert!(files[1].text.contains("server = \"https://ghcr.io\"\n"));
    assert!(files[2]
        .text
        .contains("server = \"http://registry.corp.example:8443\"\n"));
}

#[test]
fn an_upstream_that_ns_would_not_reach_is_refused() {
    // Docker Hub under another name: containerd sends ns=docker.io, which matches nothing.
    let hub = "[[upstream]]\nname = \"hub\"\nurl = \"https://registry-1.docker.io\"\n";
    let err = render_all(
        &upstreams(hub),
        &mirror("https://p.example", &[]),
        Mode::FailOpen,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("add aliases = [\"docker.io\"]"),
        "{err}"
    );
    let with_alias = format!("{hub}aliases = [\"docker.io\"]\n");
    let files = render_all(
        &upstreams(&with_alias),
        &mirror("https://p.example", &[]),
        Mode::FailOpen,
    )
    .unwrap();
    assert_eq!(files[0].host, "docker.io");

    // Two upstreams at one registry host: the second could never be reached.
    let twice = "[[upstream]]\nname = \"a\"\nurl = \"https://r.example\"\n\n\
                 [[upstream]]\nname = \"b\"\nurl = \"https://r.example\"\n";
    let err = render_all(
        &upstreams(twice),
        &mirror("https://p.example", &[]),
        Mode::FailClosed,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("routes to upstream \"a\""),
        "{err}"
    );
}

#[test]
fn files_are_replaced_whole_and_private_when_they_carry_a_header() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = HostsFile {
        host: "docker.io".into(),
        text: "server = \"x\"\n".into(),
    };
    let path = write_file(dir.path(), &file, false).unwrap();
    assert_eq!(path, dir.path().join("docker.io/hosts.toml"));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), file.text);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    let secret = HostsFile {
        host: "docker.io".into(),
        text: "server = \"y\"\n".into(),
    };
    write_file(dir.path(), &secret, true).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), secret.text);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let names: Vec<_> = std::fs::read_dir(dir.path().join("docker.io"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["hosts.toml"], "no temp file left behind");
}
