#!/usr/bin/env bash
# The test command of the README: formatting, lints, the contracts' lint and breaking-change
# check, unused and unvetted dependencies (cargo machete, cargo deny), and every test
# (unit, integration, end to end) against the real PostgreSQL, Redis, S3 server, Envoy and
# Chromium that scripts/setup.sh provides.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

TOOLS="${EASEL_TOOLS_DIR:-$HOME/.cache/easel-tools}"
export PATH="$TOOLS/bin:$TOOLS/node_modules/.bin:$TOOLS/envoy-venv/bin:$PATH"
export NODE_PATH="$TOOLS/node_modules${NODE_PATH:+:$NODE_PATH}"
# Builds are cached outside the checkout so a fresh clone reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/easel-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

echo "== cargo fmt --check"
cargo fmt --all --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== buf lint"
buf lint

echo "== buf breaking (against the previous commit)"
bash scripts/buf-breaking.sh

echo "== cargo machete (unused dependencies)"
cargo machete

echo "== cargo deny (advisories offline, licenses, duplicate versions, sources)"
bash scripts/advisory-db.sh
# The crates of every platform must be in the local cache for `--offline` (cargo metadata).
cargo fetch --locked --quiet
cargo deny --offline --locked check

echo "== generated clients (drift gate)"
bash scripts/generate-clients.sh --check

echo "== deployment manifests"
bash scripts/validate-deploy.sh

echo "== build"
# Every binary the tests run as a process is built here, with the test build's feature set, so
# no test spends its time budget compiling (see workspace_binary in the test fixtures).
cargo build --workspace --bins --tests --locked
export EASEL_TEST_BINARIES_BUILT=1

echo "== tests"
cargo nextest run --workspace --locked --profile "${EASEL_NEXTEST_PROFILE:-default}"
