#!/usr/bin/env bash
# Regenerates the client code under clients/ from proto/ with buf.gen.yaml's local plugins
# (installed by scripts/setup.sh). With --check, generates into a scratch copy instead and
# fails listing every file that differs from the committed code: the drift gate of
# scripts/test.sh, so a contract change without regenerated clients cannot land.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS="${EASEL_TOOLS_DIR:-$HOME/.cache/easel-tools}"
export PATH="$TOOLS/clients-venv/bin:$TOOLS/bin:$TOOLS/node_modules/.bin:$PATH"

# The directories buf.gen.yaml writes; everything in them is generated.
GENERATED=(
  clients/python/src/easel/jobs
  clients/python/src/easel/account
  clients/python/src/easel/models
  clients/ts/src/gen
)

if [ "${1:-}" != "--check" ]; then
  rm -rf "${GENERATED[@]}"
  buf generate
  exit 0
fi

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
cp -r proto buf.yaml buf.gen.yaml "$scratch/"
mkdir -p "$scratch/clients/python"
cp -r clients/python/codegen "$scratch/clients/python/"
(cd "$scratch" && buf generate)
status=0
for dir in "${GENERATED[@]}"; do
  if ! diff -r "$scratch/$dir" "$dir" >"$scratch/diff.txt" 2>&1; then
    echo "generated client code differs from proto/ in $dir:" >&2
    head -n 40 "$scratch/diff.txt" >&2
    status=1
  fi
done
if [ "$status" -ne 0 ]; then
  echo "run scripts/generate-clients.sh and commit the result" >&2
fi
exit "$status"
