use super::*;

#[test]
fn embedded_defaults_are_valid_and_mirror_docker_hub() {
    let c = Config::from_toml_str("").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:5000");
    assert_eq!(c.upstream.len(), 1);
    assert_eq!(c.upstream[0].name, "docker.io");
    assert!(c.upstream[0].default);
    assert!(c.upstream[0].library_prefix);
    assert_eq!(c.cache.tag_ttl, defaults::TAG_TTL);
    assert_eq!(c.storage.max_size, defaults::STORAGE_MAX_SIZE);
}

#[test]
fn file_replaces_the_upstream_list_and_parses_units() {
    let c = Config::from_toml_str(
        r#"
        [server]
        listen = "127.0.0.1:0"
        shutdown_grace = "5s"
        [storage]
        max_size = "1GiB"
        memory_cache = "8MiB"
        [[upstream]]
        name = "local"
        url = "http://127.0.0.1:5001"
        tag_ttl = "2m"
        "#,
    )
    .unwrap();
    assert_eq!(c.upstream.len(), 1);
    assert_eq!(c.upstream[0].name, "local");
    assert!(!c.upstream[0].library_prefix);
    assert_eq!(c.upstream[0].tag_ttl, Duration::from_secs(120));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(5));
    assert_eq!(c.storage.max_size, 1 << 30);
    assert_eq!(c.storage.memory_cache, 8 << 20);
}

#[test]
fn unknown_keys_are_errors_that_name_the_key() {
    let e =
        Config::from_toml_str("[server]\nlisten = \"127.0.0.1:1\"\nlisten_port = 5\n").unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("listen_port"), "{msg}");
    let e = Config::from_toml_str("[nope]\n").unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let e = Config::from_toml_str(
        r#"
        [server]
        listen = "nowhere"
        shutdown_grace = "soon"
        [storage]
        max_size = "lots"
        [log]
        format = "xml"
        [[upstream]]
        name = "127.0.0.1:5000"
        url = "ftp://x"
        password = "p"
        [[upstream]]
        name = "a"
        url = "http://a"
        default = true
        [[upstream]]
        name = "a"
        url = "http://b"
        default = true
        "#,
    )
    .unwrap_err()
    .to_string();
    for key in [
        "server.listen",
        "server.shutdown_grace",
        "storage.max_size",
        "log.format",
        "upstream[0].name",
        "upstream[0].url",
        "upstream[0].password",
        "upstream[2].name",
        "upstream.default",
    ] {
        assert!(e.contains(key), "missing {key} in:\n{e}");
    }
}

#[test]
fn wrong_types_name_the_key() {
    let e = Config::from_toml_str("[server]\nlisten = 5\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("listen"), "{e}");
}

#[test]
fn display_masks_secrets() {
    let c = Config::from_toml_str(
        r#"
        [[upstream]]
        name = "docker.io"
        url = "https://registry-1.docker.io"
        username = "bot"
        password = "s3cr3t-value"
        "#,
    )
    .unwrap();
    let shown = c.to_display_toml();
    assert!(!shown.contains("s3cr3t-value"), "{shown}");
    assert!(shown.contains("[REDACTED]"));
    assert!(!format!("{c:?}").contains("s3cr3t-value"));
    // What config check prints is itself a valid configuration.
    let reparsed = Config::from_toml_str(&shown).unwrap();
    assert_eq!(reparsed.upstream[0].username.as_deref(), Some("bot"));
}

#[test]
fn documented_keys_match_the_config() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .expect("docs/configuration.md exists");
    let (_dir, public) = public_key_file();
    let raw = toml::to_string(&raw::RawConfig::from_checked(
        &Config::from_toml_str(&format!(
            r#"
            [server]
            tls_cert = "Cargo.toml"
            tls_key = "Cargo.toml"
            [[upstream]]
            name = "x"
            url = "http://x"
            aliases = ["y"]
            username = "u"
            password = "p"
            ca_file = "Cargo.toml"
            require_signature = {{ key = {public:?} }}
            "#
        ))
        .unwrap(),
    ))
    .unwrap();
    let value: toml::Value = toml::from_str(&raw).unwrap();
    let mut missing = Vec::new();
    for (section, table) in value.as_table().unwrap() {
        let table = match table {
            toml::Value::Array(a) => a[0].as_table().unwrap().clone(),
            t => t.as_table().unwrap().clone(),
        };
        for key in table.keys() {
            let dotted = format!("`{section}.{key}`");
            if !doc.contains(&dotted) {
                missing.push(dotted);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks {missing:?}"
    );
}

#[test]
fn shipped_config_file_equals_the_embedded_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/patchpull.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let from_file = Config::from_toml_str(&text).unwrap();
    let defaults = Config::from_toml_str("").unwrap();
    assert_eq!(from_file.to_display_toml(), defaults.to_display_toml());
}

#[test]
fn errors_never_echo_secrets() {
    for text in [
        "[[upstream]]\nname = \"a\"\nurl = \"http://a\"\npassword = \"Zq9-secret\" oops\n",
        "[[upstream]]\nname = \"a\"\nurl = \"http://bot:Zq9-secret@a\"\n",
        "[[upstream]]\nname = \"a\"\nurl = \"http://a\"\npassword = [\"Zq9-secret\"]\n",
    ] {
        let e = Config::from_toml_str(text).unwrap_err().to_string();
        assert!(!e.contains("Zq9-secret"), "{e}");
        assert!(e.contains("line") || e.contains("upstream"), "{e}");
    }
    let c = Config::from_toml_str("[[upstream]]\nname = \"a\"\nurl = \"http://a\"\nusername = \"u\"\npassword = 80417263955\n").unwrap();
    assert_eq!(
        c.upstream[0].password.as_ref().unwrap().expose(),
        "80417263955"
    );
}

#[test]
fn patch_policies_parse_and_match_in_order() {
    let c = Config::from_toml_str(
        r#"
        [patch]
        mode = "background"
        [[patch.policy]]
        repository = "library/*"
        mode = "fail_closed"
        exclude = ["tzdata"]
        [[patch.policy]]
        upstream = "ghcr.io"
        repository = "*"
        min_severity = "HIGH"
        ignore_errors = true
        "#,
    )
    .unwrap();
    assert_eq!(c.patch.mode, PatchMode::Background);
    let library = c.patch.policy("docker.io", "library/nginx").unwrap();
    assert_eq!(library.mode, Some(PatchMode::FailClosed));
    assert_eq!(library.exclude, vec!["tzdata"]);
    let ghcr = c.patch.policy("ghcr.io", "team/app").unwrap();
    assert!(ghcr.ignore_errors && ghcr.mode.is_none());
    assert!(c.patch.policy("docker.io", "team/app").is_none());
    // `config check` writes policies back in the file's shape.
    let again = Config::from_toml_str(&c.to_display_toml()).unwrap();
    assert_eq!(again.patch.policies, c.patch.policies);
}

#[test]
fn partial_index_defaults_to_patched_where_possible() {
    let c = Config::from_toml_str("").unwrap();
    assert_eq!(c.patch.partial_index, PartialIndex::PatchedWherePossible);
    let c = Config::from_toml_str("[patch]\npartial_index = \"original\"\n").unwrap();
    assert_eq!(c.patch.partial_index, PartialIndex::Original);
    let again = Config::from_toml_str(&c.to_display_toml()).unwrap();
    assert_eq!(again.patch.partial_index, PartialIndex::Original);
}

#[test]
fn bad_patch_settings_name_their_keys() {
    let error = Config::from_toml_str(
        r#"
        [patch]
        mode = "sometimes"
        partial_index = "some"
        workers = 0
        wait_timeout = "soon"
        [[patch.policy]]
        repository = "x"
        mode = "never"
        min_severity = "HUGE"
        "#,
    )
    .err()
    .unwrap()
    .to_string();
    for key in [
        "patch.mode",
        "patch.partial_index",
        "patch.workers",
        "patch.wait_timeout",
        "patch.policy[0].mode",
        "patch.policy[0].min_severity",
    ] {
        assert!(error.contains(key), "{key} missing from: {error}");
    }
}

#[test]
fn a_patch_wait_the_idle_timeout_would_cut_off_is_refused() {
    let error = Config::from_toml_str(
        r#"
        [server]
        idle_timeout = "60s"
        [patch]
        wait_timeout = "90s"
        "#,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(
        error.contains("`patch.wait_timeout` (1m 30s) must be below `server.idle_timeout` (1m)"),
        "{error}"
    );
    let fine = "[server]\nidle_timeout = \"100s\"\n[patch]\nwait_timeout = \"90s\"\n";
    assert!(Config::from_toml_str(fine).is_ok());
    // A plain mirror never waits for a patch...
    let off = "[server]\nidle_timeout = \"1s\"\n[patch]\nmode = \"off\"\n";
    assert!(Config::from_toml_str(off).is_ok());
    // ...unless a policy makes some repositories wait.
    let policy_waits = format!(
        "{off}[[patch.policy]]\nupstream = \"*\"\nrepository = \"team/*\"\nmode = \"wait\"\n"
    );
    let error = Config::from_toml_str(&policy_waits)
        .err()
        .unwrap()
        .to_string();
    assert!(
        error.contains("must be below `server.idle_timeout` (1s)"),
        "{error}"
    );
}

#[test]
fn unpack_cache_size_parses_sizes_and_zero() {
    assert_eq!(
        Config::from_toml_str("").unwrap().patch.unpack_cache_size,
        4 << 30,
        "4 GiB by default"
    );
    let size = |toml: &str| Config::from_toml_str(toml).map(|c| c.patch.unpack_cache_size);
    assert_eq!(
        size("[patch]\nunpack_cache_size = \"2GiB\"\n").unwrap(),
        2 << 30
    );
    assert_eq!(size("[patch]\nunpack_cache_size = \"0\"\n").unwrap(), 0);
    assert_eq!(size("[patch]\nunpack_cache_size = 0\n").unwrap(), 0);
    assert_eq!(
        size("[patch]\nunpack_cache_size = 1048576\n").unwrap(),
        1 << 20
    );

    // The environment provider hands a bare number over as a number, a size as text
    // (`PATCHPULL_PATCH__UNPACK_CACHE_SIZE=0`, `=2GiB`).
    let layered = |value: figment::value::Value| {
        use figment::providers::Serialized;
        figment::Figment::from(Serialized::defaults(raw::RawConfig::default()))
            .merge(Serialized::default("patch.unpack_cache_size", value))
            .extract::<raw::RawConfig>()
            .map_err(|e| e.to_string())
            .and_then(|raw| raw.validate().map_err(|p| p.join("\n")))
            .map(|c| c.patch.unpack_cache_size)
    };
    assert_eq!(layered(0u64.into()).unwrap(), 0);
    assert_eq!(layered("2GiB".into()).unwrap(), 2 << 30);

    // What `config check` prints reads back the same.
    let c = Config::from_toml_str("[patch]\nunpack_cache_size = \"512MiB\"\n").unwrap();
    let again = Config::from_toml_str(&c.to_display_toml()).unwrap();
    assert_eq!(again.patch.unpack_cache_size, 512 << 20);
    let off = Config::from_toml_str("[patch]\nunpack_cache_size = 0\n").unwrap();
    let again = Config::from_toml_str(&off.to_display_toml()).unwrap();
    assert_eq!(again.patch.unpack_cache_size, 0);

    let error = size("[patch]\nunpack_cache_size = \"lots\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains("patch.unpack_cache_size"), "{error}");
    assert!(error.contains("lots"), "{error}");
}

#[test]
fn a_relative_storage_path_is_made_absolute_against_the_working_directory() {
    // The default "./data": the sandbox runs its mounts from `/`, where it names nothing.
    let config = Config::from_toml_str("[storage]\npath = \"./data\"\n").unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert!(
        config.storage.path.is_absolute(),
        "{}",
        config.storage.path.display()
    );
    assert_eq!(config.storage.path, cwd.join("data"));
    let absolute = Config::from_toml_str("[storage]\npath = \"/srv/patchpull\"\n").unwrap();
    assert_eq!(
        absolute.storage.path,
        std::path::PathBuf::from("/srv/patchpull")
    );
}

/// A PEM public key in a temp dir (kept while the dir lives).
fn public_key_file() -> (tempfile::TempDir, String) {
    use p256::pkcs8::EncodePrivateKey as _;
    let dir = tempfile::tempdir().unwrap();
    let secret = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();
    let der = secret.to_pkcs8_der().unwrap();
    let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.as_bytes().to_vec()));
    let key = crate::sign::SigningKey::from_pem(&pem, None).unwrap();
    let path = dir.path().join("publisher.pub");
    std::fs::write(&path, key.public().to_pem()).unwrap();
    let path = path.display().to_string();
    (dir, path)
}

#[test]
fn require_signature_checks_its_key_and_answer_at_start() {
    let (_dir, public) = public_key_file();
    let config = Config::from_toml_str(&format!(
        "[[upstream]]\nname = \"a\"\nurl = \"http://a\"\nrequire_signature = {{ key = {public:?} }}\n\
         [[patch.policy]]\nrepository = \"team/*\"\n\
         require_signature = {{ key = {public:?}, unverified = \"deny\" }}\n"
    ))
    .unwrap();
    let upstream = config.upstream[0].require_signature.as_ref().unwrap();
    assert_eq!(upstream.unverified, super::UnverifiedAnswer::Original);
    let policy = config.patch.policies[0].require_signature.as_ref().unwrap();
    assert_eq!(policy.unverified, super::UnverifiedAnswer::Deny);
    // `config check` shows it back, and the shown file loads again.
    let shown = config.to_display_toml();
    assert!(shown.contains("require_signature"), "{shown}");
    let error = Config::from_toml_str(&format!(
        "[[upstream]]\nname = \"a\"\nurl = \"http://a\"\n\
         require_signature = {{ key = \"/nonexistent/publisher.pub\" }}\n\
         [[patch.policy]]\nrepository = \"*\"\n\
         require_signature = {{ key = {public:?}, unverified = \"maybe\" }}\n"
    ))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("`upstream[0].require_signature.key`"),
        "{error}"
    );
    assert!(
        error.contains("`patch.policy[0].require_signature.unverified`"),
        "{error}"
    );
    let error = Config::from_toml_str(
        "[[upstream]]\nname = \"a\"\nurl = \"http://a\"\n\
         require_signature = { key = \"Cargo.toml\" }\n",
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("not a PEM EC P-256 public key"), "{error}");
}
