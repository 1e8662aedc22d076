#!/usr/bin/env bash
# Fails when gen/ or third_party/ differ from what git has committed, i.e.
# someone changed proto/ or a pinned generator without rerunning
# scripts/generate.sh. For CI.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/generate.sh

drift="$(git status --porcelain -- gen third_party)"
if [[ -n "$drift" ]]; then
  echo "error: generated files are out of date; run 'bash scripts/generate.sh' and commit the result:" >&2
  echo "$drift" >&2
  git --no-pager diff --stat -- gen third_party >&2
  exit 1
fi
echo "generated files are up to date"
