#!/usr/bin/env bash
# Puts the offline RustSec advisory snapshot where `cargo deny` looks for its database
# ($CARGO_HOME/advisory-dbs/<name of the advisory-db URL>), as the git repository it expects,
# committed at the snapshot's date so cargo-deny judges its age honestly. Nothing is fetched:
# `cargo deny --offline` then checks against exactly this snapshot. Done again only when the
# snapshot changes.
set -euo pipefail

source_dir="${EASEL_ADVISORY_DB:-/work/shared/advisory-db}"
if [ ! -d "$source_dir/crates" ]; then
  echo "advisory-db: no RustSec snapshot at $source_dir (set EASEL_ADVISORY_DB)" >&2
  exit 1
fi
# The snapshot's commit and date (see /work/shared/advisory-db.md).
snapshot="${EASEL_ADVISORY_DB_COMMIT:-bf5c0d245a92671908518d7e765914d437954ed6}"
snapshot_date="${EASEL_ADVISORY_DB_DATE:-2026-08-21T00:00:00Z}"

# cargo-deny names a database directory after its URL: this is https://github.com/rustsec/advisory-db.
target="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs/advisory-db-3157b0e258782691"
if [ "$(cat "$target/.easel-snapshot" 2>/dev/null)" = "$snapshot" ]; then
  exit 0
fi
rm -rf "$target"
mkdir -p "$target"
cp -R "$source_dir/." "$target/"
(
  cd "$target"
  export GIT_AUTHOR_DATE="$snapshot_date" GIT_COMMITTER_DATE="$snapshot_date"
  git init -q
  git add -A
  git -c user.name=easel -c user.email=ci@easel.invalid commit -q -m "RustSec snapshot $snapshot"
)
echo "$snapshot" > "$target/.easel-snapshot"
echo "advisory-db: snapshot $snapshot ready at $target"
