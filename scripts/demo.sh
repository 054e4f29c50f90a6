#!/usr/bin/env bash
# `npm run demo`: bring up the local stack (left running afterwards, for the Temporal UI) and rotate
# the demo database credential end to end.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
env_lines="$(bash scripts/stack.sh up)" || { echo "demo: the local stack did not start (see above)" >&2; exit 1; }
eval "$env_lines"
export NODE_NO_WARNINGS=1
exec node --import tsx demo/run.ts
