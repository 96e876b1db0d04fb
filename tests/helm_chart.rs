//! The Helm chart `deploy/helm/patchpull` as a platform engineer meets it: rendered by the
//! real helm (3.17.1, installed by `scripts/validate-deploy.sh`, which also lints each
//! value set and validates every object against the Kubernetes schema), then read the way
//! the cluster and patchpull read it:
//!
//! - the defaults give the Pod the security context deploy/ ships (which
//!   `tests/deploy_runtime.rs` runs under dockerd) and a configuration patchpull accepts;
//! - credentials come from Secrets and reach patchpull through the environment, once the
//!   kubelet has expanded it, never through the ConfigMap;
//! - TLS from cert-manager or a Secret, the webhook's CA bundle, the node route's hosts.toml
//!   files (the same bytes `patchpull hosts-toml` writes), HA, restricted;
//! - values that cannot work are refused at render time with the reason.
//!
//! Needs python3 with venv (and PyPI, once) for the validator and helm; skipped without
//! them unless `REQUIRE_TEST_TOOLS=1`.

// Tests panic on purpose when something is off; unwrap is how they say so.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/helm/patchpull");
const HELM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/deploy-venv/bin/helm");

fn tools() -> bool {
    let venv = Command::new("python3")
        .args(["-c", "import ensurepip, venv"])
        .output()
        .is_ok_and(|o| o.status.success());
    if venv {
        return true;
    }
    if std::env::var("REQUIRE_TEST_TOOLS").as_deref() == Ok("1") {
        panic!("python3 with venv is missing (REQUIRE_TEST_TOOLS=1)");
    }
    eprintln!("SKIP: python3 with venv missing; scripts/test.sh installs it");
    false
}

/// The directory where `scripts/validate-deploy.sh` wrote its renderings: deploy/'s
/// kustomizations (`deploy.json`, ...) and the chart's value sets (`helm_<set>.json`). Run
/// once for all tests of this binary; it fails on any lint, schema or equivalence error.
fn renders() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // This binary's own directory, written anew on each run.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm_chart-renders");
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new("scripts/validate-deploy.sh")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("DEPLOY_RENDER_DIR", &dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/validate-deploy.sh failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn objects(file: &str) -> Vec<Value> {
    let path = renders().join(format!("{file}.json"));
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn has(objects: &[Value], kind: &str) -> bool {
    objects.iter().any(|o| o["kind"] == kind)
}

fn pod(objects: &[Value]) -> &Value {
    &find(objects, "Deployment", "patchpull")["spec"]["template"]
}

fn container(objects: &[Value]) -> &Value {
    &pod(objects)["spec"]["containers"][0]
}

fn config_text(objects: &[Value]) -> String {
    find(objects, "ConfigMap", "patchpull-config")["data"]["patchpull.toml"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn config(objects: &[Value]) -> toml::Value {
    toml::from_str(&config_text(objects)).unwrap()
}

/// `helm template` of the chart as docs/deployment.md installs it, with more arguments.
fn helm_template(args: &[&str]) -> Output {
    renders(); // helm is installed by then
    Command::new(HELM)
        .args(["template", "patchpull", CHART, "--namespace", "patchpull"])
        .args(args)
        .output()
        .unwrap()
}

fn helm_objects(args: &[&str]) -> Vec<Value> {
    let out = helm_template(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    yaml_documents(&out.stdout)
}

/// YAML documents as JSON, through the validator's Python (the crate has no YAML parser).
fn yaml_documents(yaml: &[u8]) -> Vec<Value> {
    use std::io::Write;
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/target/deploy-venv/bin/python");
    let mut child = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(sys.stdin) if d]))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(yaml).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The container's environment as the kubelet gives it: `secretKeyRef`s from `secrets`
/// ((name, key) -> value; an optional one that is missing is left out) and `$(VAR)`
/// references to earlier variables replaced by their values.
fn kubelet_env(container: &Value, secrets: &BTreeMap<(&str, &str), &str>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_owned();
        let value = if let Some(value) = var["value"].as_str() {
            let mut expanded = value.to_owned();
            for (earlier, its) in &env {
                expanded = expanded.replace(&format!("$({earlier})"), its);
            }
            expanded
        } else {
            let reference = &var["valueFrom"]["secretKeyRef"];
            let key = (
                reference["name"].as_str().unwrap(),
                reference["key"].as_str().unwrap(),
            );
            match secrets.get(&key) {
                Some(value) => (*value).to_owned(),
                None if reference["optional"] == true => continue,
                None => panic!("the Pod would not start: Secret {key:?} is missing"),
            }
        };
        env.push((name, value));
    }
    env
}

/// `patchpull <args>` with `config` as its file (the TLS files as stand-ins) and `env`,
/// nothing else of this process's PATCHPULL_* variables.
fn patchpull(config: &str, env: &[(String, String)], args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    for name in ["tls.crt", "tls.key"] {
        std::fs::write(dir.path().join(name), "stand-in\n").unwrap();
    }
    let text = config.replace("/etc/patchpull/tls/", &format!("{}/", dir.path().display()));
    let file = dir.path().join("patchpull.toml");
    std::fs::write(&file, text).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_patchpull"));
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("PATCHPULL_")) {
        command.env_remove(name);
    }
    let out = command
        .arg("--config")
        .arg(&file)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.path())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_defaults_run_deploys_security_context_with_a_config_patchpull_accepts() {
    if !tools() {
        return;
    }
    let chart = objects("helm_defaults");
    let deploy = objects("deploy");
    // What tests/deploy_runtime.rs runs under dockerd, field for field.
    assert_eq!(
        pod(&chart)["spec"]["securityContext"],
        pod(&deploy)["spec"]["securityContext"]
    );
    assert_eq!(
        container(&chart)["securityContext"],
        container(&deploy)["securityContext"]
    );
    assert_eq!(pod(&chart)["spec"]["hostUsers"], false);
    assert_eq!(
        pod(&chart)["spec"]["securityContext"]["seccompProfile"],
        serde_json::json!({"type": "Localhost", "localhostProfile": "profiles/patchpull-sandbox.json"})
    );
    assert_eq!(
        container(&chart)["securityContext"]["procMount"],
        "Unmasked"
    );
    assert_eq!(
        pod(&chart)["metadata"]["annotations"]
            ["container.apparmor.security.beta.kubernetes.io/patchpull"],
        "unconfined"
    );
    assert_eq!(
        container(&chart)["volumeMounts"],
        container(&deploy)["volumeMounts"]
    );
    assert_eq!(
        pod(&chart)["spec"]["volumes"],
        pod(&deploy)["spec"]["volumes"]
    );
    // The node gets the profile file deploy/ ships.
    let profile = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/seccomp/patchpull-sandbox.json"
    ))
    .unwrap();
    assert_eq!(
        find(&chart, "ConfigMap", "patchpull-seccomp")["data"]["patchpull-sandbox.json"],
        profile.as_str()
    );
    let installer = find(&chart, "DaemonSet", "patchpull-seccomp");
    assert_eq!(
        installer["spec"]["template"]["spec"]["volumes"][1]["hostPath"]["path"],
        "/var/lib/kubelet/seccomp"
    );

    // Secret references: the TLS Secret mounted, the admin token optional.
    let tls = &pod(&chart)["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "tls")
        .unwrap()["secret"]["secretName"];
    assert_eq!(tls, "patchpull-tls");
    let admin = &container(&chart)["env"][0];
    assert_eq!(admin["name"], "PATCHPULL_PATCH__ADMIN_TOKEN");
    assert_eq!(
        admin["valueFrom"]["secretKeyRef"],
        serde_json::json!({"name": "patchpull-admin", "key": "token", "optional": true})
    );

    // The configuration: the upstream, the address, and patchpull starts with it.
    let config = config(&chart);
    let upstreams = config["upstream"].as_array().unwrap();
    assert_eq!(upstreams.len(), 1);
    assert_eq!(upstreams[0]["name"].as_str(), Some("docker.io"));
    assert_eq!(
        upstreams[0]["url"].as_str(),
        Some("https://registry-1.docker.io")
    );
    assert_eq!(config["patch"]["workers"].as_integer(), Some(2));
    assert_eq!(
        config["admission"]["registry"].as_str(),
        Some("patchpull.example.internal:5000")
    );
    let env = kubelet_env(container(&chart), &BTreeMap::new());
    let (ok, out) = patchpull(&config_text(&chart), &env, &["config", "check"]);
    assert!(ok, "{out}");
    assert!(out.contains("https://registry-1.docker.io"), "{out}");

    // The webhook: the CA from cert-manager's injector, calls to the release's Service.
    let webhook = find(&chart, "MutatingWebhookConfiguration", "patchpull");
    assert_eq!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "patchpull/patchpull-tls"
    );
    assert_eq!(
        webhook["webhooks"][0]["clientConfig"]["service"],
        serde_json::json!({"namespace": "patchpull", "name": "patchpull", "port": 5000, "path": "/admission/v1/mutate"})
    );
    assert!(!has(&chart, "NetworkPolicy") && !has(&chart, "ServiceMonitor"));
}

#[test]
fn credentials_come_from_secrets_and_tls_from_cert_manager() {
    if !tools() {
        return;
    }
    let chart = objects("helm_cert-manager");
    let text = config_text(&chart);
    assert!(
        !text.contains("username") && !text.contains("password"),
        "no credentials in the ConfigMap:\n{text}"
    );
    let parsed = config(&chart);
    let names: Vec<&str> = parsed["upstream"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["docker.io", "ghcr.io", "internal"]);

    let refs: Vec<(String, String)> = container(&chart)["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["valueFrom"]["secretKeyRef"].as_object())
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["key"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for expected in [
        ("dockerhub-credentials", "username"),
        ("dockerhub-credentials", "password"),
        ("ghcr-credentials", "user"),
        ("ghcr-credentials", "token"),
    ] {
        assert!(
            refs.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} in {refs:?}"
        );
    }
    // What patchpull sees once the kubelet has filled in the Secrets' values.
    let secrets = BTreeMap::from([
        (("dockerhub-credentials", "username"), "mirror-bot"),
        (("dockerhub-credentials", "password"), "dckr_pat_s3cr3t"),
        (("ghcr-credentials", "user"), "octo"),
        (("ghcr-credentials", "token"), "ghp_t0ken'with$(no-var)"),
    ]);
    let env = kubelet_env(container(&chart), &secrets);
    let (ok, out) = patchpull(&text, &env, &["config", "check"]);
    assert!(ok, "{out}");
    assert!(out.contains("mirror-bot") && out.contains("octo"), "{out}");
    assert!(out.contains("[REDACTED]"), "{out}");
    assert!(
        !out.contains("dckr_pat_s3cr3t") && !out.contains("ghp_t0ken"),
        "{out}"
    );
    assert!(out.contains("https://registry.corp.example:8443"), "{out}");

    // The serving certificate names the Service and the nodes' address, from a CA of the
    // release's own, and the webhook trusts that certificate's CA.
    let certificate = find(&chart, "Certificate", "patchpull-tls");
    assert_eq!(certificate["spec"]["secretName"], "patchpull-tls");
    let dns: Vec<&str> = certificate["spec"]["dnsNames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    assert_eq!(
        dns,
        [
            "patchpull.patchpull.svc",
            "patchpull.patchpull.svc.cluster.local",
            "patchpull.example.internal",
            "patchpull.example.org"
        ]
    );
    assert_eq!(certificate["spec"]["issuerRef"]["name"], "patchpull-ca");
    find(&chart, "Issuer", "patchpull-ca");
    assert_eq!(
        find(&chart, "Certificate", "patchpull-ca")["spec"]["isCA"],
        true
    );
    let webhook = find(&chart, "MutatingWebhookConfiguration", "patchpull");
    assert_eq!(
        webhook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "patchpull/patchpull-tls"
    );

    // Prometheus scrapes over HTTPS and verifies with the CA.
    let monitor = find(&chart, "ServiceMonitor", "patchpull");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(endpoint["path"], "/metrics");
    assert_eq!(
        endpoint["tlsConfig"]["ca"]["secret"],
        serde_json::json!({"name": "patchpull-tls", "key": "ca.crt"})
    );
    let service = find(&chart, "Service", "patchpull");
    assert_eq!(service["spec"]["ports"][0]["name"], endpoint["port"]);
}

#[test]
fn a_ca_bundle_given_by_hand_and_an_issuer_of_ones_own() {
    if !tools() {
        return;
    }
    let chart = objects("helm_webhook-ca");
    let webhook = find(&chart, "MutatingWebhookConfiguration", "patchpull");
    assert_eq!(
        webhook["webhooks"][0]["clientConfig"]["caBundle"],
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg=="
    );
    assert!(webhook["metadata"]["annotations"].is_null(), "{webhook}");
    let excluded = &webhook["webhooks"][0]["namespaceSelector"]["matchExpressions"][0]["values"];
    assert_eq!(
        excluded,
        &serde_json::json!(["patchpull", "kube-system", "cert-manager"])
    );
    let certificate = find(&chart, "Certificate", "patchpull-serving");
    assert_eq!(
        certificate["spec"]["issuerRef"],
        serde_json::json!({"name": "corp-ca", "kind": "ClusterIssuer"})
    );
    assert_eq!(
        certificate["spec"]["ipAddresses"],
        serde_json::json!(["10.0.0.50"])
    );
    assert!(!has(&chart, "Issuer"), "no CA of the chart's own");
    let image = container(&chart)["image"].as_str().unwrap();
    assert!(
        image.starts_with("registry.example/patchpull@sha256:"),
        "{image}"
    );
    assert_eq!(
        container(&chart)["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "ops-tokens"
    );
    let config = config(&chart);
    assert_eq!(
        config["admission"]["registry"].as_str(),
        Some("10.0.0.50:5000")
    );
    assert_eq!(
        config["admission"]["namespaces_exclude"],
        toml::Value::Array(vec![
            "cert-manager".into(),
            "kube-system".into(),
            "patchpull".into()
        ])
    );
}

#[test]
fn ha_runs_three_spread_replicas_over_the_shared_store_keys() {
    if !tools() {
        return;
    }
    let chart = objects("helm_ha");
    let deployment = find(&chart, "Deployment", "patchpull");
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert_eq!(deployment["spec"]["strategy"]["type"], "RollingUpdate");
    let anti = &pod(&chart)["spec"]["affinity"]["podAntiAffinity"]
        ["requiredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["labelSelector"]["matchLabels"],
        pod(&chart)["metadata"]["labels"]
    );
    // Without podAntiAffinity: hard, a preference: replicas still schedule on one node.
    let soft = helm_objects(&[
        "--set",
        "replicaCount=2",
        "--set",
        "storage.backend=registry",
    ]);
    let preferred = &pod(&soft)["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(preferred["weight"], 100);
    assert_eq!(
        preferred["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let store = pod(&chart)["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "store")
        .unwrap();
    assert!(
        store["emptyDir"].is_object(),
        "a cache per replica: {store}"
    );
    assert!(!has(&chart, "PersistentVolumeClaim"));
    let pdb = find(&chart, "PodDisruptionBudget", "patchpull");
    assert_eq!(pdb["spec"]["minAvailable"], 2);
    assert!(pdb["spec"]["maxUnavailable"].is_null());

    let config = config(&chart);
    assert_eq!(config["storage"]["backend"].as_str(), Some("registry"));
    assert_eq!(
        config["storage"]["registry"]["url"].as_str(),
        Some("https://registry.internal:5000")
    );
    assert_eq!(
        config["storage"]["registry"]["repository_prefix"].as_str(),
        Some("patchpull")
    );
    assert_eq!(
        config["coordination"]["redis_url"].as_str(),
        Some("redis://redis.patchpull.svc:6379/0")
    );
    // Until issue 16's keys exist patchpull refuses them, and only them.
    let (ok, out) = patchpull(&config_text(&chart), &[], &["config", "check"]);
    if !ok {
        let problems: Vec<&str> = out
            .lines()
            .filter(|l| l.trim_start().starts_with("- "))
            .collect();
        assert!(!problems.is_empty(), "{out}");
        for problem in problems {
            assert!(
                ["storage.backend", "storage.registry", "coordination"]
                    .iter()
                    .any(|k| problem.contains(k)),
                "{out}"
            );
        }
    }

    // Egress: DNS, the upstreams' and repositories' ranges, Redis; nothing else.
    let policy = find(&chart, "NetworkPolicy", "patchpull");
    assert_eq!(
        policy["spec"]["policyTypes"],
        serde_json::json!(["Ingress", "Egress"])
    );
    let egress = policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 4, "{egress:?}");
    assert_eq!(
        egress[0]["ports"][0],
        serde_json::json!({"port": 53, "protocol": "UDP"})
    );
    let cidrs: Vec<&str> = egress
        .iter()
        .filter_map(|rule| rule["to"][0]["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(cidrs, ["198.51.100.0/24", "203.0.113.0/24"]);
    assert_eq!(egress[3]["ports"][0]["port"], 6379);
    assert_eq!(policy["spec"]["ingress"][0]["ports"][0]["port"], 5000);
}

#[test]
fn restricted_stays_within_the_restricted_pod_security_level() {
    if !tools() {
        return;
    }
    let chart = objects("helm_restricted");
    assert!(!has(&chart, "DaemonSet"), "no hostPath");
    assert!(pod(&chart)["spec"]["hostUsers"].is_null());
    assert_eq!(
        pod(&chart)["spec"]["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(container(&chart)["securityContext"]["procMount"].is_null());
    assert!(pod(&chart)["metadata"]["annotations"]
        .as_object()
        .unwrap()
        .keys()
        .all(|k| !k.contains("apparmor")));
    assert_eq!(
        container(&chart)["env"][0],
        serde_json::json!({"name": "PATCHPULL_PATCH__BUILDKIT__ADDRESS", "value": "tcp://buildkitd.buildkit.svc:1234"})
    );
    assert_eq!(
        container(&objects("deploy_restricted"))["securityContext"],
        container(&chart)["securityContext"]
    );
}

#[test]
fn the_node_route_installs_what_patchpull_hosts_toml_writes() {
    if !tools() {
        return;
    }
    let node = objects("helm_node");
    assert!(!has(&node, "MutatingWebhookConfiguration"));
    assert_eq!(config(&node)["admission"]["enabled"].as_bool(), Some(false));
    let daemonset = find(&node, "DaemonSet", "patchpull-node-config");
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["volumes"][2]["hostPath"]["path"],
        "/etc/containerd/certs.d"
    );
    assert_eq!(
        find(&node, "ConfigMap", "patchpull-containerd-hosts")["data"],
        find(
            &objects("deploy_node"),
            "ConfigMap",
            "patchpull-containerd-hosts"
        )["data"]
    );

    // Three upstreams, one with a port, fail-open and fail-closed: each file is the one
    // `patchpull hosts-toml` writes for the rendered configuration.
    for fail_closed in [false, true] {
        let flag = format!("nodeConfig.failClosed={fail_closed}");
        let chart = helm_objects(&[
            "--values",
            &format!("{CHART}/ci/cert-manager-values.yaml"),
            "--set",
            "nodeConfig.enabled=true",
            "--set",
            &flag,
        ]);
        let hosts = &find(&chart, "ConfigMap", "patchpull-containerd-hosts")["data"];
        let out_dir = tempfile::tempdir().unwrap();
        let out = out_dir.path().join("certs.d");
        let mut args = vec![
            "hosts-toml",
            "--server",
            "https://patchpull.example.internal:5000",
            "--ca",
            "patchpull-ca.crt",
            "--out",
            out.to_str().unwrap(),
        ];
        if fail_closed {
            args.push("--fail-closed");
        }
        let (ok, log) = patchpull(&config_text(&chart), &[], &args);
        assert!(ok, "{log}");
        let mut written = BTreeMap::new();
        for entry in std::fs::read_dir(&out).unwrap() {
            let entry = entry.unwrap();
            let dir = entry.file_name().into_string().unwrap();
            // A ConfigMap key cannot hold ':'; containerd also reads host_port_.
            let key = match dir.rsplit_once(':') {
                Some((host, port)) => format!("{host}_{port}_"),
                None => dir,
            };
            written.insert(
                key,
                std::fs::read_to_string(entry.path().join("hosts.toml")).unwrap(),
            );
        }
        let rendered: BTreeMap<String, String> = hosts
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        assert_eq!(rendered, written, "fail-closed: {fail_closed}");
    }
}

#[test]
fn values_that_cannot_work_are_refused_with_the_reason() {
    if !tools() {
        return;
    }
    for (args, reason) in [
        (
            vec!["--set", "replicaCount=3"],
            "replicaCount > 1 needs a store the replicas share",
        ),
        (
            vec!["--set", "networkPolicy.enabled=true"],
            "list the address ranges of your upstreams in networkPolicy.upstreams",
        ),
        (
            vec!["--set", "tls.enabled=false"],
            "webhook.enabled needs tls.enabled",
        ),
        // values.schema.json: a typo or a wrong value is named, not ignored.
        (vec!["--set", "address="], "address: Does not match pattern"),
        (
            vec!["--set", "replicaCounts=3"],
            "Additional property replicaCounts is not allowed",
        ),
        (
            vec!["--set", "upstreams[0].url=registry.example"],
            "upstreams.0.url: Does not match pattern",
        ),
        (
            vec!["--set", "storage.backend=s3"],
            "storage.backend must be one of the following",
        ),
    ] {
        let out = helm_template(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} rendered");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}
