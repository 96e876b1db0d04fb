"""The Helm chart deploy/helm/patchpull, checked the way scripts/validate-deploy.sh checks
deploy/ (it calls `check` with its renderings):

1. `helm lint --strict` and `helm template` with each value set: the chart's defaults and
   every ci/*-values.yaml (release `patchpull` in namespace `patchpull`, as
   docs/deployment.md installs it);
2. every rendered object valid against the Kubernetes API schema, strictly; the objects of
   cert-manager and prometheus-operator kinds (no schema in kubernetes-validate) against
   their CustomResourceDefinitions' schemas (crd-schemas/), as strictly;
3. the chart's seccomp profile is deploy/seccomp/patchpull-sandbox.json, byte for byte;
4. equivalence: the defaults render the objects of deploy/, ci/node-values.yaml those of
   deploy/node/, ci/restricted-values.yaml those of deploy/restricted/ and
   ci/ha-values.yaml those of deploy/ha/ (but the Redis, which the chart leaves to the
   platform, and the chart's NetworkPolicy, whose address ranges are examples), the same but for
   Helm's own labels, the config checksum annotation and the Namespace (which a chart does
   not own: docs/deployment.md, "Helm"); patchpull.toml is compared as TOML data;
5. with a render directory, writes each rendering there as helm_<set>.json.
"""

import copy
import json
import pathlib
import subprocess
import tomllib

import jsonschema
import kubernetes_validate
import yaml

CHART = pathlib.Path("deploy/helm/patchpull")
RELEASE = ["patchpull", str(CHART), "--namespace", "patchpull"]
# The value sets whose rendering must be a kustomization's.
EQUIVALENT = {"defaults": "deploy", "node": "deploy/node", "restricted": "deploy/restricted",
              "ha": "deploy/ha"}
# Labels and annotations Helm and the chart add to what deploy/ has.
HELM_LABELS = {"helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/version",
               "app.kubernetes.io/managed-by"}
CHART_ANNOTATIONS = {"checksum/config", "checksum/profile", "helm.sh/resource-policy"}
# Where a value set renders otherwise than its kustomization on purpose (docs/deployment.md,
# "Helm"): set -> (kind, name) -> paths left out of the comparison.
KNOWN_DIFFERENCES = {
    # deploy/node/ keeps base's admission.enabled = true without a webhook; the chart
    # switches the endpoint off with the webhook.
    "node": {("ConfigMap", "patchpull-config"): [("data", "patchpull.toml", "admission",
                                                  "enabled")]},
}
# Objects one side has on purpose: set -> side -> (kind, name). deploy/ha/ deploys a Redis
# (the chart expects an external one, coordination.redisUrl); the chart's ci/ha-values.yaml
# switches on its NetworkPolicy with example address ranges, which deploy/ha/ cannot know.
ONLY_ON_ONE_SIDE = {
    "ha": {"kustomization": {("Deployment", "redis"), ("Service", "redis")},
           "chart": {("NetworkPolicy", "patchpull")}},
}
# Operator kinds kubernetes-validate has no schema for: their CRDs' schemas (crd-schemas/).
CRD_SCHEMAS = pathlib.Path(__file__).parent / "crd-schemas"


def value_sets():
    sets = {"defaults": []}
    for path in sorted(CHART.glob("ci/*-values.yaml")):
        sets[path.name.removesuffix("-values.yaml")] = ["--values", str(path)]
    return sets


def run(helm, args):
    out = subprocess.run([helm, *args], capture_output=True, text=True)
    return out.returncode, out.stdout + out.stderr


def strict(schema):
    """`schema` with unknown fields refused wherever it names an object's fields, as the
    API server's strict field validation does (not inside allOf/anyOf/oneOf, whose
    branches name only some fields)."""
    if not isinstance(schema, dict):
        return schema
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get(
                "x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        schema["items"] = strict(schema["items"])
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    return schema


def crd_schema(api_version, kind):
    path = CRD_SCHEMAS / f"{api_version.replace('/', '_')}_{kind}.json"
    if not path.exists():
        return None
    schema = strict(json.loads(path.read_text()))
    # The API server's own: every object has a name.
    schema["properties"]["metadata"] = {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string"}}, "additionalProperties": True}
    schema["required"] = sorted(set(schema.get("required", [])) | {"metadata"})
    return schema


def validate(name, doc, version):
    schema = crd_schema(doc.get("apiVersion", ""), doc.get("kind", ""))
    if schema is not None:
        found = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc),
                       key=lambda e: list(e.path))
        return [f"{name}: {e.message} at {'.'.join(map(str, e.path))}" for e in found]
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.utils.ValidationError as e:
        return [f"{name}: {e.message} at {'.'.join(map(str, e.path))}"]
    except Exception as e:  # unknown kind or version: also a failure
        return [f"{name}: {e}"]
    return []


def normalized(doc):
    """`doc` without what Helm adds (labels, annotations), patchpull.toml parsed, volumes
    in name order."""
    doc = copy.deepcopy(doc)

    def strip(meta):
        for key, drop in (("labels", HELM_LABELS), ("annotations", CHART_ANNOTATIONS)):
            if isinstance(meta.get(key), dict):
                meta[key] = {k: v for k, v in meta[key].items() if k not in drop}
                if not meta[key]:
                    del meta[key]

    def walk(node):
        if isinstance(node, dict):
            for key in ("metadata",):
                if isinstance(node.get(key), dict):
                    strip(node[key])
            # A Pod's volumes are a set by name: kustomize reorders a patched one.
            if isinstance(node.get("volumes"), list) and all(
                    isinstance(v, dict) and "name" in v for v in node["volumes"]):
                node["volumes"] = sorted(node["volumes"], key=lambda v: v["name"])
            for key in ("matchLabels", "selector"):
                if isinstance(node.get(key), dict) and all(
                        isinstance(v, str) for v in node[key].values()):
                    node[key] = {k: v for k, v in node[key].items() if k not in HELM_LABELS}
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(doc)
    data = doc.get("data", {})
    if doc.get("kind") == "ConfigMap" and "patchpull.toml" in data:
        data["patchpull.toml"] = tomllib.loads(data["patchpull.toml"])
    return doc


def first_difference(a, b, path=""):
    if type(a) is not type(b):
        return f"{path or '.'}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"
    if isinstance(a, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{path}.{key}: only in {'the chart' if key in a else 'deploy/'}"
            found = first_difference(a[key], b[key], f"{path}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{path}: {json.dumps(a)[:200]} != {json.dumps(b)[:200]}"


def equivalence(set_name, docs, root, kustomized):
    def ident(d):
        return (d["kind"], d["metadata"]["name"])

    errors = []
    ours = {ident(d): normalized(d) for d in docs}
    theirs = {ident(d): normalized(d) for d in kustomized if d["kind"] != "Namespace"}
    for key, paths in KNOWN_DIFFERENCES.get(set_name, {}).items():
        for path in paths:
            for side in (ours, theirs):
                node = side.get(key, {})
                for part in path[:-1]:
                    node = node.get(part, {})
                node.pop(path[-1], None)
    for side, name in (("chart", ours), ("kustomization", theirs)):
        for key in ONLY_ON_ONE_SIDE.get(set_name, {}).get(side, ()):
            if name.pop(key, None) is None:
                errors.append(f"helm {set_name}: {key[0]} {key[1]} expected in the {side}")
    for key in sorted(set(ours) | set(theirs)):
        if key not in theirs:
            errors.append(f"helm {set_name}: {key[0]} {key[1]} is not in {root}")
        elif key not in ours:
            errors.append(f"helm {set_name}: {key[0]} {key[1]} of {root} is missing")
        else:
            found = first_difference(ours[key], theirs[key])
            if found:
                errors.append(f"helm {set_name}: {key[0]} {key[1]} differs from {root}'s "
                              f"at {found}")
    return errors


def check(rendered, version, helm, render_dir):
    errors = []
    profile = pathlib.Path("deploy/seccomp/patchpull-sandbox.json").read_bytes()
    if (CHART / "files/patchpull-sandbox.json").read_bytes() != profile:
        errors.append(f"{CHART}/files/patchpull-sandbox.json must be "
                      "deploy/seccomp/patchpull-sandbox.json as it is (copy it)")
    for set_name, args in value_sets().items():
        code, out = run(helm, ["lint", "--strict", str(CHART), "--namespace", "patchpull",
                               *args])
        if code != 0:
            errors.append(f"helm lint {set_name}:\n{out}")
        code, out = run(helm, ["template", *RELEASE, *args])
        if code != 0:
            errors.append(f"helm template {set_name}:\n{out}")
            continue
        docs = [d for d in yaml.safe_load_all(out) if d]
        before = len(errors)
        for doc in docs:
            errors.extend(validate(f"helm {set_name}: {doc.get('kind')} "
                                   f"{doc.get('metadata', {}).get('name')}", doc, version))
        if set_name in EQUIVALENT:
            root = EQUIVALENT[set_name]
            errors.extend(equivalence(set_name, docs, root, rendered[root]))
        state = "valid" if len(errors) == before else "checked"
        print(f"validate-deploy: helm {set_name}: {len(docs)} objects {state}"
              + (f", equivalent to {EQUIVALENT[set_name]}/"
                 if set_name in EQUIVALENT and state == "valid" else ""))
        if render_dir:
            out_file = pathlib.Path(render_dir, f"helm_{set_name}.json")
            out_file.write_text(json.dumps(docs, indent=1))
    return errors
