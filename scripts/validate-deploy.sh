#!/usr/bin/env bash
# Validates the deployment artifacts without a cluster or a Docker engine: the kustomize base
# renders (Debian's kubectl) and every object is valid against the Kubernetes schemas
# (kubernetes-validate), and the Envoy edge configuration passes `envoy --mode validate`.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${EASEL_TOOLS_DIR:-$HOME/.cache/easel-tools}"

rendered="$(mktemp)"
trap 'rm -f "$rendered"' EXIT
kubectl kustomize deploy/k8s/base > "$rendered"
"$TOOLS/deploy-venv/bin/kubernetes-validate" --strict --kubernetes-version 1.31 "$rendered" >/dev/null
echo "deploy/k8s/base: $(grep -c '^kind:' "$rendered") objects valid"

# Both Envoy configurations: the local/e2e one and the one the Kubernetes ConfigMap carries.
for config in deploy/envoy/envoy.yaml deploy/k8s/base/envoy-config.yaml; do
  "$TOOLS/envoy-venv/bin/envoy" --mode validate -c "$config" --log-level error >/dev/null
  echo "$config: valid"
done

# The image: no Docker engine runs here, so check what the build would need: every path the
# Dockerfile copies from the context exists, and every workspace member is copied.
while read -r source; do
  [ -e "$source" ] || { echo "Dockerfile copies $source, which does not exist" >&2; exit 1; }
done < <(awk '$1 == "COPY" && $2 !~ /^--/ { for (i = 2; i < NF; i++) print $i }' Dockerfile)
for member in $(sed -n '/^members = \[/,/^\]/p' Cargo.toml | grep -o '"[^"]*"' | tr -d '"'); do
  top="${member%%/*}"
  grep -Eq "^COPY ${top}( |/)" Dockerfile || { echo "Dockerfile misses workspace member $member" >&2; exit 1; }
done
echo "Dockerfile: every copied path and workspace member present"
