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

if [ -f deploy/envoy/envoy.yaml ]; then
  "$TOOLS/envoy-venv/bin/envoy" --mode validate -c deploy/envoy/envoy.yaml --log-level error >/dev/null
  echo "deploy/envoy/envoy.yaml: valid"
fi
