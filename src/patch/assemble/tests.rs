use serde_json::{json, Value};

use super::*;

fn d(c: char) -> Digest {
    format!("sha256:{}", c.to_string().repeat(64))
        .parse()
        .unwrap()
}

/// A Debian-like config: two layers, one empty history entry, fields patchpull does not
/// know about.
fn config_json() -> String {
    format!(
        r##"{{"architecture":"amd64","config":{{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Cmd":["bash"],"WorkingDir":"/","Labels":null}},"created":"2024-07-23T00:00:00Z","history":[{{"created":"2024-07-23T00:00:00Z","created_by":"# debian.sh --arch 'amd64' out/ 'bookworm' '@1721692800'","comment":"debuerreotype 0.15"}},{{"created":"2024-07-23T00:00:01Z","created_by":"ENV X=1","empty_layer":true}},{{"created":"2024-07-23T00:00:02Z","created_by":"RUN apt-get update","comment":"buildkit.dockerfile.v0"}}],"os":"linux","rootfs":{{"type":"layers","diff_ids":["{}","{}"]}},"x-vendor":{{"nested":[1,2.5,"three"]}}}}"##,
        d('a'),
        d('b')
    )
}

fn oci_manifest(config: &str) -> String {
    format!(
        r#"{{
  "schemaVersion": 2,
  "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "{}", "size": {}}},
  "layers": [
    {{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": "{}", "size": 29126484}},
    {{"mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": "{}", "size": 1234,
      "annotations": {{"io.example.layer": "kept"}}, "urls": ["https://example.com/l"]}}
  ],
  "annotations": {{"org.opencontainers.image.base.name": "docker.io/library/debian:bookworm-slim", "com.example.other": "x"}}
}}"#,
        Digest::sha256_of(config.as_bytes()),
        config.len(),
        d('c'),
        d('e'),
    )
}

fn docker_manifest(config: &str) -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":100,"digest":"{}"}},{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":200,"digest":"{}"}}]}}"#,
        config.len(),
        Digest::sha256_of(config.as_bytes()),
        d('c'),
        d('e'),
    )
}

struct Owned {
    manifest: String,
    media_type: &'static str,
    digest: Digest,
    config: String,
}

impl Owned {
    fn new(manifest: String, media_type: &'static str, config: String) -> Owned {
        Owned {
            digest: Digest::sha256_of(manifest.as_bytes()),
            manifest,
            media_type,
            config,
        }
    }

    fn from_assembled(a: &AssembledImage) -> Owned {
        Owned {
            manifest: String::from_utf8(a.manifest.clone()).unwrap(),
            media_type: if a.manifest_media_type == OCI_MANIFEST {
                OCI_MANIFEST
            } else {
                DOCKER_MANIFEST
            },
            digest: a.manifest_digest.clone(),
            config: String::from_utf8(a.config.clone()).unwrap(),
        }
    }

    fn assemble(
        &self,
        layer: &Digest,
        diff_id: &Digest,
        created: Option<&str>,
    ) -> Result<AssembledImage, AssembleError> {
        assemble(&ImageInput {
            manifest: self.manifest.as_bytes(),
            manifest_media_type: self.media_type,
            manifest_digest: &self.digest,
            config: self.config.as_bytes(),
            layer: PatchLayer {
                digest: layer,
                diff_id,
                size: 4242,
            },
            base_name: "docker.io/library/debian:bookworm",
            created_by: "patchpull patch: apt 2.6.1 -> 2.6.1+deb12u1",
            created,
        })
    }
}

fn parse(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// Keys of every object are sorted and the text has no insignificant whitespace.
fn assert_canonical(bytes: &[u8]) {
    fn sorted(v: &Value) -> bool {
        match v {
            Value::Object(m) => {
                let keys: Vec<&String> = m.keys().collect();
                keys.windows(2).all(|w| w[0] < w[1]) && m.values().all(sorted)
            }
            Value::Array(a) => a.iter().all(sorted),
            _ => true,
        }
    }
    let v = parse(bytes);
    assert!(sorted(&v));
    assert_eq!(serde_json::to_vec(&v).unwrap().len(), bytes.len());
}

#[test]
fn oci_image_gets_one_gzip_layer_and_keeps_everything_else() {
    let config = config_json();
    let original = Owned::new(oci_manifest(&config), OCI_MANIFEST, config.clone());
    let out = original.assemble(&d('1'), &d('2'), None).unwrap();
    assert_canonical(&out.manifest);
    assert_canonical(&out.config);
    assert_eq!(out.manifest_media_type, OCI_MANIFEST);
    assert_eq!(out.layer_media_type, OCI_LAYER_GZIP);
    assert_eq!(out.manifest_digest, Digest::sha256_of(&out.manifest));
    assert_eq!(out.config_digest, Digest::sha256_of(&out.config));

    let before = parse(original.manifest.as_bytes());
    let after = parse(&out.manifest);
    let layers = after["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 3);
    assert_eq!(
        &layers[..2],
        before["layers"].as_array().unwrap().as_slice()
    );
    assert_eq!(
        layers[2],
        json!({"mediaType": OCI_LAYER_GZIP, "digest": d('1').to_string(), "size": 4242})
    );
    assert_eq!(
        after["config"],
        json!({"mediaType": OCI_CONFIG, "digest": out.config_digest.to_string(), "size": out.config.len()})
    );
    assert_eq!(after["schemaVersion"], 2);
    assert_eq!(after["mediaType"], OCI_MANIFEST);
    assert_eq!(
        after["annotations"],
        json!({
            "com.example.other": "x",
            ANNOTATION_BASE_NAME: "docker.io/library/debian:bookworm",
            ANNOTATION_BASE_DIGEST: original.digest.to_string(),
        })
    );

    let mut expected_config = parse(config.as_bytes());
    expected_config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(json!(d('2').to_string()));
    expected_config["history"]
        .as_array_mut()
        .unwrap()
        .push(json!({
            "created_by": "patchpull patch: apt 2.6.1 -> 2.6.1+deb12u1",
            "comment": "patchpull",
        }));
    assert_eq!(parse(&out.config), expected_config);
}

#[test]
fn docker_image_keeps_the_docker_family() {
    let config = config_json();
    let original = Owned::new(docker_manifest(&config), DOCKER_MANIFEST, config);
    let out = original
        .assemble(&d('1'), &d('2'), Some("2024-08-01T12:00:00Z"))
        .unwrap();
    assert_eq!(out.layer_media_type, DOCKER_LAYER_GZIP);
    assert_eq!(out.manifest_media_type, DOCKER_MANIFEST);
    let after = parse(&out.manifest);
    assert_eq!(after["layers"][2]["mediaType"], DOCKER_LAYER_GZIP);
    assert_eq!(after["config"]["mediaType"], DOCKER_CONFIG);
    assert_eq!(after["mediaType"], DOCKER_MANIFEST);
    let history = parse(&out.config)["history"].clone();
    assert_eq!(
        history[3],
        json!({"created": "2024-08-01T12:00:00Z", "created_by": "patchpull patch: apt 2.6.1 -> 2.6.1+deb12u1", "comment": "patchpull"})
    );
}

#[test]
fn repatching_replaces_the_patch_layer_and_keeps_the_first_base() {
    let config = config_json();
    let original = Owned::new(oci_manifest(&config), OCI_MANIFEST, config.clone());
    assert_eq!(
        existing_patch(original.manifest.as_bytes(), config.as_bytes()).unwrap(),
        None
    );
    let first = original.assemble(&d('1'), &d('2'), None).unwrap();
    let found = existing_patch(&first.manifest, &first.config)
        .unwrap()
        .unwrap();
    assert_eq!(
        found,
        ExistingPatch {
            layer_index: 2,
            base_name: Some("docker.io/library/debian:bookworm".into()),
            base_digest: Some(original.digest.clone()),
        }
    );
    let second = Owned::from_assembled(&first)
        .assemble(&d('3'), &d('4'), None)
        .unwrap();
    let after = parse(&second.manifest);
    assert_eq!(after["layers"].as_array().unwrap().len(), 3);
    assert_eq!(after["layers"][2]["digest"], d('3').to_string());
    assert_eq!(
        after["annotations"][ANNOTATION_BASE_DIGEST],
        original.digest.to_string()
    );
    let config_after = parse(&second.config);
    assert_eq!(
        config_after["rootfs"]["diff_ids"].as_array().unwrap().len(),
        3
    );
    assert_eq!(config_after["rootfs"]["diff_ids"][2], d('4').to_string());
    assert_eq!(config_after["history"].as_array().unwrap().len(), 4);

    // Patching the original directly with the second layer gives the very same image.
    let direct = original.assemble(&d('3'), &d('4'), None).unwrap();
    assert_eq!(direct, second);
    // The same for the Docker family.
    let docker = Owned::new(docker_manifest(&config), DOCKER_MANIFEST, config);
    let once = docker.assemble(&d('1'), &d('2'), None).unwrap();
    let twice = Owned::from_assembled(&once)
        .assemble(&d('3'), &d('4'), None)
        .unwrap();
    assert_eq!(twice, docker.assemble(&d('3'), &d('4'), None).unwrap());
}

#[test]
fn output_is_deterministic_and_independent_of_input_formatting() {
    let config = config_json();
    let original = Owned::new(oci_manifest(&config), OCI_MANIFEST, config.clone());
    let a = original.assemble(&d('1'), &d('2'), None).unwrap();
    let b = original.assemble(&d('1'), &d('2'), None).unwrap();
    assert_eq!(a, b);
    // The same config, pretty-printed: the patched config is byte-identical.
    let pretty = serde_json::to_string_pretty(&parse(config.as_bytes())).unwrap();
    let reformatted = Owned::new(oci_manifest(&pretty), OCI_MANIFEST, pretty);
    let c = reformatted.assemble(&d('1'), &d('2'), None).unwrap();
    assert_eq!(a.config, c.config);
    assert_eq!(a.config_digest, c.config_digest);
}

#[test]
fn an_image_without_history_gets_one_aligned() {
    let mut config = parse(config_json().as_bytes());
    config.as_object_mut().unwrap().remove("history");
    let config = serde_json::to_string(&config).unwrap();
    let original = Owned::new(oci_manifest(&config), OCI_MANIFEST, config);
    let out = original.assemble(&d('1'), &d('2'), None).unwrap();
    let history = parse(&out.config)["history"].clone();
    assert_eq!(history.as_array().unwrap().len(), 3);
    assert_eq!(history[0], json!({}));
    assert_eq!(history[2]["comment"], "patchpull");
    assert!(existing_patch(&out.manifest, &out.config)
        .unwrap()
        .is_some());
}

fn refused(manifest: &str, media_type: &'static str, config: &str) -> AssembleError {
    Owned::new(manifest.to_owned(), media_type, config.to_owned())
        .assemble(&d('1'), &d('2'), None)
        .unwrap_err()
}

#[test]
fn artifacts_schema1_indexes_and_inconsistent_images_are_refused() {
    let config = config_json();
    let good = parse(oci_manifest(&config).as_bytes());
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut m = good.clone();
        f(&mut m);
        serde_json::to_string(&m).unwrap()
    };

    let with_subject = edit(&|m| {
        m["subject"] = json!({"mediaType": OCI_MANIFEST, "digest": d('f').to_string(), "size": 1})
    });
    assert!(matches!(
        refused(&with_subject, OCI_MANIFEST, &config),
        AssembleError::HasSubject
    ));
    let no_config = edit(&|m| {
        m.as_object_mut().unwrap().remove("config");
    });
    assert!(matches!(
        refused(&no_config, OCI_MANIFEST, &config),
        AssembleError::MissingConfig
    ));
    let helm =
        edit(&|m| m["config"]["mediaType"] = json!("application/vnd.cncf.helm.config.v1+json"));
    assert!(matches!(
        refused(&helm, OCI_MANIFEST, &config),
        AssembleError::NotAnImage(_)
    ));
    let extra_layer = edit(&|m| {
        m["layers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"mediaType": OCI_LAYER_GZIP, "digest": d('9').to_string(), "size": 1}))
    });
    assert!(matches!(
        refused(&extra_layer, OCI_MANIFEST, &config),
        AssembleError::LayerCount {
            diff_ids: 2,
            layers: 3,
            ..
        }
    ));
    let schema1 = r#"{"schemaVersion":1,"name":"library/debian","tag":"old","fsLayers":[]}"#;
    assert!(matches!(
        refused(schema1, DOCKER_SCHEMA1_SIGNED, &config),
        AssembleError::Schema1
    ));
    assert!(matches!(
        refused(schema1, OCI_MANIFEST, &config),
        AssembleError::Schema1
    ));
    let index = format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[]}}"#);
    assert!(matches!(
        refused(&index, OCI_INDEX, &config),
        AssembleError::IsIndex
    ));
    assert!(matches!(
        refused(&index, OCI_MANIFEST, &config),
        AssembleError::Invalid { .. }
    ));
    let wrong_type = oci_manifest(&config);
    assert!(matches!(
        refused(&wrong_type, DOCKER_MANIFEST, &config),
        AssembleError::Invalid { .. }
    ));

    // A config whose history disagrees with its layers.
    let mut bad_history = parse(config.as_bytes());
    bad_history["history"][1]["empty_layer"] = json!(false);
    let bad_history = serde_json::to_string(&bad_history).unwrap();
    let err = refused(&oci_manifest(&bad_history), OCI_MANIFEST, &bad_history);
    assert!(
        matches!(
            err,
            AssembleError::LayerCount {
                diff_ids: 2,
                layers: 3,
                ..
            }
        ),
        "{err}"
    );

    // Bytes that do not match the digests they came with.
    let original = Owned::new(oci_manifest(&config), OCI_MANIFEST, config.clone());
    let mut tampered = Owned::new(
        original.manifest.clone(),
        OCI_MANIFEST,
        format!("{config} "),
    );
    assert!(matches!(
        tampered.assemble(&d('1'), &d('2'), None).unwrap_err(),
        AssembleError::DigestMismatch {
            what: "the config",
            ..
        }
    ));
    tampered.config = config;
    tampered.digest = d('0');
    assert!(matches!(
        tampered.assemble(&d('1'), &d('2'), None).unwrap_err(),
        AssembleError::DigestMismatch {
            what: "the manifest",
            ..
        }
    ));
}

/// A buildx-style multi-platform index with an attestation manifest.
fn oci_index() -> String {
    format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1000,"platform":{{"architecture":"amd64","os":"linux"}}}},
{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1001,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}},"annotations":{{"com.example":"y"}}}},
{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":1002,"platform":{{"architecture":"s390x","os":"linux"}}}},
{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":840,"annotations":{{"vnd.docker.reference.digest":"{}","vnd.docker.reference.type":"attestation-manifest"}},"platform":{{"architecture":"unknown","os":"unknown"}}}}
]}}"#,
        d('a'),
        d('b'),
        d('c'),
        d('e'),
        d('a'),
    )
}

fn replacement(original: char, patched: char, size: u64) -> PlatformEntry {
    PlatformEntry {
        original: d(original),
        outcome: EntryOutcome::Patched {
            digest: d(patched),
            size,
            media_type: OCI_MANIFEST.to_owned(),
        },
    }
}

fn kept(original: char, reason: &str) -> PlatformEntry {
    PlatformEntry {
        original: d(original),
        outcome: EntryOutcome::Kept {
            reason: reason.to_owned(),
        },
    }
}

#[test]
fn index_points_patched_platforms_at_their_new_manifests() {
    let index = oci_index();
    let index_digest = Digest::sha256_of(index.as_bytes());
    let replacements = [replacement('a', '1', 1500), replacement('b', '2', 1501)];
    let (bytes, digest) = assemble_index(
        index.as_bytes(),
        OCI_INDEX,
        &index_digest,
        "docker.io/library/debian:bookworm",
        &replacements,
    )
    .unwrap();
    assert_canonical(&bytes);
    assert_eq!(digest, Digest::sha256_of(&bytes));
    let before = parse(index.as_bytes());
    let after = parse(&bytes);
    let entries = after["manifests"].as_array().unwrap();
    assert_eq!(
        entries[0],
        json!({"mediaType": OCI_MANIFEST, "digest": d('1').to_string(), "size": 1500,
               "platform": {"architecture": "amd64", "os": "linux"},
               "annotations": {ANNOTATION_PATCHED: "true"}})
    );
    assert_eq!(entries[1]["digest"], d('2').to_string());
    assert_eq!(entries[1]["platform"], before["manifests"][1]["platform"]);
    assert_eq!(
        entries[1]["annotations"],
        json!({"com.example": "y", ANNOTATION_PATCHED: "true"}),
        "the entry's own annotations are kept"
    );
    assert_eq!(entries[2], before["manifests"][2]);
    assert_eq!(entries[3], before["manifests"][3]);
    assert_eq!(
        after["annotations"],
        json!({ANNOTATION_BASE_NAME: "docker.io/library/debian:bookworm", ANNOTATION_BASE_DIGEST: index_digest.to_string()})
    );
    let again = assemble_index(
        index.as_bytes(),
        OCI_INDEX,
        &index_digest,
        "docker.io/library/debian:bookworm",
        &replacements,
    )
    .unwrap();
    assert_eq!(again, (bytes, digest));
}

#[test]
fn a_partial_index_keeps_the_original_descriptors_and_says_why() {
    let index = oci_index();
    let index_digest = Digest::sha256_of(index.as_bytes());
    let platforms = [
        replacement('a', '1', 1500),
        kept('b', "patch failed: no release"),
        kept('c', "nothing to fix"),
    ];
    let (bytes, digest) =
        assemble_index(index.as_bytes(), OCI_INDEX, &index_digest, "x", &platforms).unwrap();
    assert_canonical(&bytes);
    let before = parse(index.as_bytes());
    let after = parse(&bytes);
    let entries = after["manifests"].as_array().unwrap();
    assert_eq!(entries[0]["digest"], d('1').to_string());
    for (i, reason) in [(1, "patch failed: no release"), (2, "nothing to fix")] {
        for field in ["digest", "size", "mediaType", "platform"] {
            assert_eq!(entries[i][field], before["manifests"][i][field], "{field}");
        }
        assert_eq!(entries[i]["annotations"][ANNOTATION_PATCHED], "false");
        assert_eq!(entries[i]["annotations"][ANNOTATION_REASON], reason);
    }
    assert_eq!(entries[1]["annotations"]["com.example"], "y");
    assert_eq!(
        entries[3], before["manifests"][3],
        "not a platform: untouched"
    );
    // The same outcome gives the same bytes.
    let again =
        assemble_index(index.as_bytes(), OCI_INDEX, &index_digest, "x", &platforms).unwrap();
    assert_eq!(again, (bytes.clone(), digest));

    // Patched again later, a kept platform's reason goes.
    let (bytes, _) = assemble_index(
        &bytes,
        OCI_INDEX,
        &index_digest,
        "x",
        &[replacement('b', '2', 1501)],
    )
    .unwrap();
    let annotations = &parse(&bytes)["manifests"][1]["annotations"];
    assert_eq!(annotations[ANNOTATION_PATCHED], "true");
    assert!(
        annotations.get(ANNOTATION_REASON).is_none(),
        "{annotations}"
    );
}

#[test]
fn docker_manifest_lists_get_no_annotations_and_bad_input_is_refused() {
    let list = oci_index()
        .replace(OCI_INDEX, DOCKER_MANIFEST_LIST)
        .replace(OCI_MANIFEST, DOCKER_MANIFEST);
    let digest = Digest::sha256_of(list.as_bytes());
    let r = PlatformEntry {
        original: d('a'),
        outcome: EntryOutcome::Patched {
            digest: d('1'),
            size: 1500,
            media_type: DOCKER_MANIFEST.to_owned(),
        },
    };
    let (bytes, _) = assemble_index(
        list.as_bytes(),
        DOCKER_MANIFEST_LIST,
        &digest,
        "x",
        &[r, kept('c', "patch failed")],
    )
    .unwrap();
    let after = parse(&bytes);
    assert!(after.get("annotations").is_none());
    assert!(after["manifests"][0].get("annotations").is_none());
    assert!(after["manifests"][2].get("annotations").is_none());
    assert_eq!(after["manifests"][0]["mediaType"], DOCKER_MANIFEST);
    assert_eq!(after["manifests"][0]["digest"], d('1').to_string());

    let err = assemble_index(
        list.as_bytes(),
        DOCKER_MANIFEST_LIST,
        &digest,
        "x",
        &[replacement('9', '1', 1)],
    );
    assert!(matches!(err, Err(AssembleError::UnknownReplacement(_))));
    let err = assemble_index(list.as_bytes(), OCI_MANIFEST, &digest, "x", &[]);
    assert!(matches!(err, Err(AssembleError::NotIndex)));
    let err = assemble_index(list.as_bytes(), OCI_INDEX, &digest, "x", &[]);
    assert!(matches!(err, Err(AssembleError::Invalid { .. })));
}

#[test]
fn base_annotations_are_read_back() {
    let config = config_json();
    let original = Owned::new(oci_manifest(&config), OCI_MANIFEST, config);
    assert_eq!(
        base_annotations(original.manifest.as_bytes()).unwrap(),
        (
            Some("docker.io/library/debian:bookworm-slim".to_owned()),
            None
        )
    );
    let out = original.assemble(&d('1'), &d('2'), None).unwrap();
    assert_eq!(
        base_annotations(&out.manifest).unwrap(),
        (
            Some("docker.io/library/debian:bookworm".to_owned()),
            Some(original.digest)
        )
    );
}
