#!/usr/bin/env bash
# Validates the deployment artifacts without a cluster or a Docker engine: the kustomize base,
# overlays and monitoring render (Debian's kubectl), every object is valid against its schema,
# the NetworkPolicies implement the network design, the Envoy configurations pass
# `envoy --mode validate`, and the Compose file is valid against the compose-spec schema.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="${EASEL_TOOLS_DIR:-$HOME/.cache/easel-tools}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python="$TOOLS/deploy-venv/bin/python"

# Each kustomization renders; Kubernetes' own objects are valid against the Kubernetes 1.31
# schemas (kubernetes-validate, offline) and the custom resources (KEDA, cert-manager, the
# Prometheus operator) against their CRDs' schemas (scripts/validate-crds.mjs).
for kustomization in deploy/k8s/base deploy/k8s/overlays/dev deploy/k8s/overlays/prod deploy/k8s/monitoring; do
  name="$(echo "$kustomization" | tr / -)"
  kubectl kustomize "$kustomization" > "$work/$name.yaml"
  read -r core custom < <("$python" scripts/split-manifests.py "$work/$name-core.yaml" "$work/$name-custom.json" < "$work/$name.yaml")
  "$TOOLS/deploy-venv/bin/kubernetes-validate" --strict --kubernetes-version 1.31 "$work/$name-core.yaml" >/dev/null
  if [ "$custom" -gt 0 ]; then
    EASEL_TOOLS_DIR="$TOOLS" node scripts/validate-crds.mjs < "$work/$name-custom.json" >/dev/null
  fi
  echo "$kustomization: $core objects and $custom custom resources valid"
done

# The network design: every edge of the architecture allowed, a sample of others refused.
for overlay in dev prod; do
  "$python" scripts/check-network-policies.py "$overlay" "$work/deploy-k8s-overlays-$overlay.yaml"
done

# The Grafana dashboard is JSON, and every metric its panels and the alerts query is one a
# service exports.
"$python" scripts/check-metric-names.py deploy/k8s/monitoring/grafana-dashboard.json deploy/k8s/monitoring/alerts.yaml

# Both Envoy configurations: the local one, and the edge's (HTTPS and the redirect), which
# needs its certificate files to exist: a throwaway self-signed pair stands in.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=edge \
  -keyout "$work/edge.key" -out "$work/edge.crt" 2>/dev/null
sed -e "s#/etc/envoy/tls/tls.crt#$work/edge.crt#" -e "s#/etc/envoy/tls/tls.key#$work/edge.key#" \
  deploy/k8s/base/envoy-config.yaml > "$work/envoy-edge.yaml"
for config in deploy/envoy/envoy.yaml "$work/envoy-edge.yaml"; do
  "$TOOLS/envoy-venv/bin/envoy" --mode validate -c "$config" --log-level error >/dev/null
done
echo "deploy/envoy/envoy.yaml, deploy/k8s/base/envoy-config.yaml: valid"

# Docker Compose: the file against the compose-spec schema.
"$python" scripts/validate-compose.py deploy/compose/compose.yaml

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
