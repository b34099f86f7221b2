#!/usr/bin/env bash
# The contracts must not break wire or source compatibility (buf's FILE rules, buf.yaml)
# compared with the previous commit: for a merge commit that is main before the merge, for a
# commit on a branch its parent. Skipped, saying so, only when there is no previous commit.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! previous="$(git rev-parse --verify --quiet 'HEAD~1^{commit}')"; then
  if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = "true" ]; then
    echo "buf breaking: skipped, this shallow clone has no previous commit (clone with full history)"
  else
    echo "buf breaking: skipped, HEAD is the first commit"
  fi
  exit 0
fi
echo "buf breaking: against ${previous}"
buf breaking --against ".git#ref=${previous}"
