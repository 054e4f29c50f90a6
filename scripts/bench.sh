#!/usr/bin/env bash
# `npm run bench`: measures against the local stack (started if needed). Prints; asserts nothing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
env_lines="$(bash scripts/stack.sh up)" || { echo "bench: the local stack did not start (see above)" >&2; exit 1; }
eval "$env_lines"
export NODE_NO_WARNINGS=1
exec node --import tsx "bench/${REKEY_BENCH:-rotation}.ts"
