use std::collections::HashMap;

use base64::Engine as _;
use serde_json::{json, Value};

use super::reference::{is_valid_domain, ImageReference, InvalidImage};
use super::*;

fn normalised(text: &str) -> String {
    ImageReference::parse(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .to_string()
}

const D: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#[test]
fn references_normalise_like_docker() {
    for (input, expected) in [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io/library/nginx:1.25"),
        ("library/nginx", "docker.io/library/nginx:latest"),
        ("docker.io/nginx", "docker.io/library/nginx:latest"),
        ("index.docker.io/nginx:1", "docker.io/library/nginx:1"),
        (
            "registry-1.docker.io/bitnami/redis:7",
            "docker.io/bitnami/redis:7",
        ),
        ("bitnami/redis", "docker.io/bitnami/redis:latest"),
        ("a/b/c:d", "docker.io/a/b/c:d"),
        ("registry:5000/x/y:tag", "registry:5000/x/y:tag"),
        ("registry:5000/x", "registry:5000/x:latest"),
        ("localhost/x", "localhost/x:latest"),
        ("localhost:5000/x:1", "localhost:5000/x:1"),
        ("Registry.Example/x", "registry.example/x:latest"),
        ("ghcr.io/org/app", "ghcr.io/org/app:latest"),
        ("[::1]:5000/x:1", "[::1]:5000/x:1"),
        ("192.168.0.1:5000/team/x", "192.168.0.1:5000/team/x:latest"),
        // `localhost:5000` alone is Docker Hub's `localhost` at tag 5000.
        ("localhost:5000", "docker.io/library/localhost:5000"),
    ] {
        assert_eq!(normalised(input), expected, "{input}");
    }
}

#[test]
fn digests_are_kept_and_win_over_tags() {
    let r = ImageReference::parse(&format!("x/y@{D}")).unwrap();
    assert_eq!(r.domain, "docker.io");
    assert_eq!(r.path, "x/y");
    assert_eq!(r.tag, None);
    assert_eq!(r.digest.as_ref().unwrap().to_string(), D);
    assert_eq!(r.to_string(), format!("docker.io/x/y@{D}"));

    let r = ImageReference::parse(&format!("nginx:1.25@{D}")).unwrap();
    assert_eq!(r.tag.as_deref(), Some("1.25"));
    assert_eq!(r.digest.as_ref().unwrap().to_string(), D);
    assert_eq!(r.to_string(), format!("docker.io/library/nginx:1.25@{D}"));

    let r = ImageReference::parse(&format!("registry:5000/x@{D}")).unwrap();
    assert_eq!((r.domain.as_str(), r.path.as_str()), ("registry:5000", "x"));
}

type Check = fn(&InvalidImage) -> bool;

#[test]
fn invalid_references_say_what_is_wrong() {
    let cases: &[(&str, Check)] = &[
        ("", |e| matches!(e, InvalidImage::Empty)),
        ("nginx ", |e| matches!(e, InvalidImage::WhiteSpace)),
        ("Nginx", |e| matches!(e, InvalidImage::Uppercase(_))),
        ("docker.io/Library/nginx", |e| {
            matches!(e, InvalidImage::Uppercase(_))
        }),
        ("nginx@sha256:abc", |e| matches!(e, InvalidImage::Digest(_))),
        ("nginx@md5:0123456789abcdef0123456789abcdef", |e| {
            matches!(e, InvalidImage::Digest(_))
        }),
        ("nginx:-bad", |e| matches!(e, InvalidImage::Tag(_))),
        ("host:port/x", |e| matches!(e, InvalidImage::Domain(_))),
        ("-bad.example/x", |e| matches!(e, InvalidImage::Domain(_))),
        ("a//b", |e| matches!(e, InvalidImage::Name(_))),
        ("ghcr.io/", |e| matches!(e, InvalidImage::Name(_))),
        (
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            |e| matches!(e, InvalidImage::Identifier),
        ),
    ];
    for (input, check) in cases {
        let e = ImageReference::parse(input).unwrap_err();
        assert!(check(&e), "{input:?}: {e:?}");
    }
    let long = format!("ghcr.io/{}", "a".repeat(260));
    assert_eq!(
        ImageReference::parse(&long).unwrap_err(),
        InvalidImage::TooLong
    );
}

#[test]
fn domains_are_host_and_port() {
    for ok in [
        "a",
        "a.b",
        "a-b.c:5000",
        "localhost",
        "[::1]",
        "[fe80::1]:443",
        "1.2.3.4",
    ] {
        assert!(is_valid_domain(ok), "{ok}");
    }
    for bad in [
        "", "a:", "a:b", ":5000", "a..b", "-a", "a-", "[::1", "[zz]", "a_b", "a:123456",
    ] {
        assert!(!is_valid_domain(bad), "{bad}");
    }
}

#[test]
fn pointers_escape_tilde_and_slash() {
    assert_eq!(
        patch::pointer(&["spec", "containers", "0", "image"]),
        "/spec/containers/0/image"
    );
    assert_eq!(patch::pointer(&["a/b", "m~n", "~/"]), "/a~1b/m~0n/~0~1");
    assert_eq!(patch::pointer(&[]), "");
}

/// Patched digests by (upstream, original).
struct Known(HashMap<(String, String), Digest>);

impl PatchedDigests for Known {
    fn patched<'a>(
        &'a self,
        upstream: &'a str,
        digest: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = Option<Digest>> + Send + 'a>> {
        let found = self
            .0
            .get(&(upstream.to_owned(), digest.to_string()))
            .cloned();
        Box::pin(async move { found })
    }

    fn signed<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async { true })
    }
}

/// [`Known`]'s patches, none of them signed.
struct Unsigned(Known);

impl PatchedDigests for Unsigned {
    fn patched<'a>(
        &'a self,
        upstream: &'a str,
        digest: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = Option<Digest>> + Send + 'a>> {
        self.0.patched(upstream, digest)
    }

    fn signed<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(async { false })
    }
}

/// Never answers: the webhook must not wait for it past its budget.
struct Stuck;

impl PatchedDigests for Stuck {
    fn patched<'a>(
        &'a self,
        _: &'a str,
        _: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = Option<Digest>> + Send + 'a>> {
        Box::pin(std::future::pending())
    }

    fn signed<'a>(
        &'a self,
        _: &'a str,
        _: &'a str,
        _: &'a Digest,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(std::future::pending())
    }
}

fn admission(extra: &str) -> Admission {
    let config = Config::from_toml_str(&format!(
        r#"
        [admission]
        registry = "pp.example:5000"
        {extra}
        [[upstream]]
        name = "docker.io"
        url = "https://registry-1.docker.io"
        default = true
        [[upstream]]
        name = "ghcr.io"
        url = "https://ghcr.io"
        [[upstream]]
        name = "corp"
        aliases = ["corp.internal"]
        url = "https://registry.corp.example:8443"
        "#
    ))
    .unwrap();
    Admission::new(&config)
}

fn pod_review(namespace: &str, images: &[&str]) -> Vec<u8> {
    let containers: Vec<Value> = images
        .iter()
        .enumerate()
        .map(|(i, image)| json!({"name": format!("c{i}"), "image": image}))
        .collect();
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace,
            "operation": "CREATE",
            "object": {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": "p", "namespace": namespace},
                       "spec": {"containers": containers}}
        }
    }))
    .unwrap()
}

/// The response and its decoded patch (empty when none).
async fn run(a: &Admission, digests: &dyn PatchedDigests, body: &[u8]) -> (Value, Vec<Value>) {
    let out: Value = serde_json::from_slice(&a.review(digests, body).await).unwrap();
    let patch = match out["response"]["patch"].as_str() {
        Some(b64) => serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap(),
        None => Vec::new(),
    };
    (out, patch)
}

fn values(patch: &[Value]) -> Vec<&str> {
    patch
        .iter()
        .map(|op| op["value"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn tags_are_rewritten_per_upstream_and_others_left_alone() {
    let a = admission("");
    let none = Known(HashMap::new());
    let images = [
        "nginx:1.25",
        "nginx",
        "ghcr.io/org/app:v1",
        "registry.corp.example:8443/team/api:2",
        "corp.internal/team/api:3",
        // Docker reads a first component without '.' or ':' as a Docker Hub user.
        "corp/team/api:4",
        "quay.io/other/thing:1",
        "pp.example:5000/docker.io/library/nginx:1.25",
    ];
    let (out, patch) = run(&a, &none, &pod_review("default", &images)).await;
    assert_eq!(out["response"]["uid"], "u-1");
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(out["response"]["patchType"], "JSONPatch");
    assert_eq!(
        values(&patch),
        [
            "pp.example:5000/docker.io/library/nginx:1.25",
            "pp.example:5000/docker.io/library/nginx",
            "pp.example:5000/ghcr.io/org/app:v1",
            "pp.example:5000/corp/team/api:2",
            "pp.example:5000/corp/team/api:3",
            "pp.example:5000/docker.io/corp/team/api:4",
        ]
    );
    let paths: Vec<&str> = patch
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        (0..6)
            .map(|i| format!("/spec/containers/{i}/image"))
            .collect::<Vec<_>>()
    );
    assert!(patch.iter().all(|op| op["op"] == "replace"));
}

#[tokio::test]
async fn rules_select_upstreams_namespaces_and_repositories() {
    let images = ["nginx:1", "bitnami/redis:7", "ghcr.io/org/app:v1"];
    let none = Known(HashMap::new());

    let (_, patch) = run(&admission(""), &none, &pod_review("kube-system", &images)).await;
    assert!(patch.is_empty(), "kube-system is excluded by default");

    let a = admission(r#"upstreams = ["docker.io"]"#);
    let (_, patch) = run(&a, &none, &pod_review("apps", &images)).await;
    assert_eq!(
        values(&patch),
        [
            "pp.example:5000/docker.io/library/nginx:1",
            "pp.example:5000/docker.io/bitnami/redis:7"
        ]
    );

    let a = admission(r#"repositories_include = ["library/*"]"#);
    let (_, patch) = run(&a, &none, &pod_review("apps", &images)).await;
    assert_eq!(
        values(&patch),
        ["pp.example:5000/docker.io/library/nginx:1"]
    );

    let a = admission(r#"repositories_exclude = ["bitnami/*", "org/*"]"#);
    let (_, patch) = run(&a, &none, &pod_review("apps", &images)).await;
    assert_eq!(
        values(&patch),
        ["pp.example:5000/docker.io/library/nginx:1"]
    );

    let a = admission(
        r#"namespaces_include = ["team-*"]
        namespaces_exclude = ["team-legacy"]"#,
    );
    let (_, patch) = run(&a, &none, &pod_review("apps", &images)).await;
    assert!(patch.is_empty());
    let (_, patch) = run(&a, &none, &pod_review("team-a", &images)).await;
    assert_eq!(patch.len(), 3);
    let (_, patch) = run(&a, &none, &pod_review("team-legacy", &images)).await;
    assert!(patch.is_empty());

    let a = admission("enabled = false");
    let (out, patch) = run(&a, &none, &pod_review("apps", &images)).await;
    assert!(patch.is_empty());
    assert_eq!(
        out,
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "response": {"uid": "u-1", "allowed": true}})
    );
}

#[tokio::test]
async fn digests_follow_known_patches_only() {
    let original: Digest = D.parse().unwrap();
    let patched: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    let other = format!("sha256:{}", "c".repeat(64));
    let known = Known(HashMap::from([(
        ("docker.io".to_owned(), original.to_string()),
        patched.clone(),
    )]));
    let images = [
        format!("nginx@{D}"),
        format!("nginx:1.25@{D}"),
        format!("nginx@{other}"),
        format!("ghcr.io/org/app@{D}"),
    ];
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    let (_, patch) = run(&admission(""), &known, &pod_review("apps", &images)).await;
    assert_eq!(
        values(&patch),
        [
            format!("pp.example:5000/docker.io/library/nginx@{patched}"),
            format!("pp.example:5000/docker.io/library/nginx:1.25@{patched}"),
        ]
    );
    assert_eq!(patch[1]["path"], "/spec/containers/1/image");

    let a = admission("rewrite_digests = false");
    let (_, patch) = run(&a, &known, &pod_review("apps", &images)).await;
    assert!(patch.is_empty());
}

#[tokio::test]
async fn a_slow_lookup_leaves_the_image_and_answers_in_time() {
    let image = format!("nginx@{D}");
    let started = tokio::time::Instant::now();
    let (out, patch) = run(
        &admission(""),
        &Stuck,
        &pod_review("apps", &[&image, "nginx:1"]),
    )
    .await;
    assert!(started.elapsed() < LOOKUP_BUDGET + Duration::from_secs(1));
    assert_eq!(out["response"]["allowed"], true);
    assert_eq!(
        values(&patch),
        ["pp.example:5000/docker.io/library/nginx:1"]
    );
}

#[tokio::test]
async fn without_a_registry_nothing_is_rewritten_and_the_answer_says_why() {
    let config = Config::from_toml_str("").unwrap();
    let a = Admission::new(&config);
    let (out, patch) = run(
        &a,
        &Known(HashMap::new()),
        &pod_review("apps", &["nginx:1"]),
    )
    .await;
    assert!(patch.is_empty());
    assert_eq!(out["response"]["allowed"], true);
    let warning = out["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.contains("admission.registry"), "{warning}");
}

#[tokio::test]
async fn malformed_reviews_are_allowed_unchanged() {
    let a = admission("");
    let none = Known(HashMap::new());
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"not json".to_vec(), ""),
        (b"[]".to_vec(), ""),
        (
            br#"{"apiVersion":"v1","kind":"Pod","request":{"uid":"u-2"}}"#.to_vec(),
            "u-2",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            "",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u-3","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":{"spec":{"containers":"nope"}}}}"#.to_vec(),
            "u-3",
        ),
    ];
    for (body, uid) in cases {
        let (out, patch) = run(&a, &none, &body).await;
        assert!(patch.is_empty());
        assert_eq!(out["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(out["kind"], "AdmissionReview");
        assert_eq!(out["response"]["uid"], uid, "{out}");
        assert_eq!(out["response"]["allowed"], true);
        assert!(out["response"]["patch"].is_null());
        assert!(out["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("patchpull: "));
    }
}

#[tokio::test]
async fn v1beta1_reviews_get_a_v1beta1_answer() {
    let mut review: Value = serde_json::from_slice(&pod_review("apps", &["nginx:1"])).unwrap();
    review["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let body = serde_json::to_vec(&review).unwrap();
    let (out, patch) = run(&admission(""), &Known(HashMap::new()), &body).await;
    assert_eq!(out["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(patch.len(), 1);
}

#[test]
fn config_rejects_registries_runtimes_would_misread() {
    for (registry, ok) in [
        ("patchpull.example.internal:5000", true),
        ("localhost:5000", true),
        ("localhost", true),
        ("10.0.0.1", true),
        ("", true),
        ("patchpull", false),
        ("https://patchpull.example", false),
        ("patchpull.example/v2", false),
        ("bad host.example", false),
    ] {
        let result = Config::from_toml_str(&format!("[admission]\nregistry = {registry:?}\n"));
        match (ok, result) {
            (true, Ok(c)) => assert_eq!(c.admission.registry, registry),
            (false, Err(e)) => assert!(e.to_string().contains("admission.registry"), "{e}"),
            (ok, other) => panic!("{registry:?}: expected ok={ok}, got {other:?}"),
        }
    }
    let e = Config::from_toml_str("[admission]\nupstreams = [\"\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("admission.upstreams[0]"), "{e}");
    let c = Config::from_toml_str("").unwrap();
    assert!(c.admission.enabled && c.admission.rewrite_digests);
    assert_eq!(c.admission.namespaces_exclude, ["kube-system"]);
    assert_eq!(c.admission.upstreams, ["*"]);
}

fn review_of(operation: &str, sub_resource: &str, spec: Value, old_spec: Option<Value>) -> Vec<u8> {
    let mut request = json!({
        "uid": "u-9",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "apps",
        "operation": operation,
        "object": {"metadata": {"name": "p"}, "spec": spec},
    });
    if !sub_resource.is_empty() {
        request["subResource"] = json!(sub_resource);
    }
    if let Some(old) = old_spec {
        request["oldObject"] = json!({"metadata": {"name": "p"}, "spec": old});
    }
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request
    }))
    .unwrap()
}

#[tokio::test]
async fn create_rewrites_all_three_lists_and_update_only_what_it_sets() {
    let a = admission("");
    let none = Known(HashMap::new());
    let spec = json!({
        "containers": [{"name": "a", "image": "nginx:1"}, {"name": "b", "image": "redis:7"}],
        "initContainers": [{"name": "i", "image": "busybox"}],
        "ephemeralContainers": [{"name": "e", "image": "alpine:3"}],
    });
    let (_, patch) = run(&a, &none, &review_of("CREATE", "", spec.clone(), None)).await;
    let paths: Vec<&str> = patch
        .iter()
        .map(|op| op["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/spec/containers/0/image",
            "/spec/containers/1/image",
            "/spec/initContainers/0/image",
            "/spec/ephemeralContainers/0/image",
        ]
    );

    // `kubectl set image`: only the container whose image the update changes.
    let old = spec.clone();
    let mut new = spec.clone();
    new["containers"][1]["image"] = json!("redis:7.2");
    let (_, patch) = run(&a, &none, &review_of("UPDATE", "", new, Some(old.clone()))).await;
    assert_eq!(
        patch,
        [json!({"op": "replace", "path": "/spec/containers/1/image",
                "value": "pp.example:5000/docker.io/library/redis:7.2"})]
    );

    // Other subresources, and DELETE, are never patched.
    for (operation, sub) in [("UPDATE", "status"), ("UPDATE", "binding"), ("DELETE", "")] {
        let (out, patch) = run(
            &a,
            &none,
            &review_of(operation, sub, spec.clone(), Some(old.clone())),
        )
        .await;
        assert!(patch.is_empty(), "{operation} {sub}");
        assert!(out["response"]["warnings"].is_null(), "{out}");
    }

    // An UPDATE without the old object cannot tell what it sets: left alone, with a word.
    let (out, patch) = run(&a, &none, &review_of("UPDATE", "", spec, None)).await;
    assert!(patch.is_empty());
    assert!(out["response"]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("oldObject"));
}

#[tokio::test]
async fn other_kinds_are_allowed_with_a_warning() {
    let mut review: Value = serde_json::from_slice(&pod_review("apps", &["nginx:1"])).unwrap();
    review["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let body = serde_json::to_vec(&review).unwrap();
    let (out, patch) = run(&admission(""), &Known(HashMap::new()), &body).await;
    assert!(patch.is_empty());
    assert_eq!(out["response"]["uid"], "u-1");
    let warning = out["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.contains("apps/v1 Deployment"), "{warning}");
}

#[tokio::test]
async fn invalid_images_are_left_with_a_warning_and_the_rest_rewritten() {
    let (out, patch) = run(
        &admission(""),
        &Known(HashMap::new()),
        &pod_review("apps", &["Not/A:valid ref", "nginx:1"]),
    )
    .await;
    assert_eq!(
        values(&patch),
        ["pp.example:5000/docker.io/library/nginx:1"]
    );
    assert_eq!(patch[0]["path"], "/spec/containers/1/image");
    let warning = out["response"]["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("c0") && warning.contains("not a valid reference"),
        "{warning}"
    );
}

#[tokio::test]
async fn signed_digests_only_pins_to_a_signed_patched_digest_only() {
    let original: Digest = D.parse().unwrap();
    let patched: Digest = format!("sha256:{}", "b".repeat(64)).parse().unwrap();
    let known = || {
        Known(HashMap::from([(
            ("docker.io".to_owned(), original.to_string()),
            patched.clone(),
        )]))
    };
    let images = [format!("nginx@{D}"), "nginx:1.25".to_owned()];
    let images: Vec<&str> = images.iter().map(String::as_str).collect();
    let review = pod_review("apps", &images);
    let pinned = format!("pp.example:5000/docker.io/library/nginx@{patched}");
    let tag = "pp.example:5000/docker.io/library/nginx:1.25";

    let strict = admission("signed_digests_only = true");
    let (_, patch) = run(&strict, &known(), &review).await;
    assert_eq!(values(&patch), [pinned.as_str(), tag]);
    // Patched but not signed: the pin is left as it is; tags are rewritten as ever.
    let (_, patch) = run(&strict, &Unsigned(known()), &review).await;
    assert_eq!(values(&patch), [tag]);
    // Off (the default): the signature is not asked for.
    let (_, patch) = run(&admission(""), &Unsigned(known()), &review).await;
    assert_eq!(values(&patch), [pinned.as_str(), tag]);
}
