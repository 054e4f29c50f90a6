#!/usr/bin/env bash
# `npm test`: start the local stack if it is not running, run every test against it, and end with
# the plain "N passed, N failed" line. Extra arguments go to mocha (e.g. -g 'rolls back').
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
env_lines="$(bash scripts/stack.sh up)" || { echo "test: the local stack did not start (see above)" >&2; exit 1; }
eval "$env_lines"
if [[ "${CI:-}" == "true" || "${REKEY_STACK_DOWN:-}" == "1" ]]; then
  trap 'bash scripts/stack.sh down' EXIT
fi
mkdir -p artifacts
set +e
node_modules/.bin/mocha "$@" 2>&1 | tee artifacts/test-output.txt
status=${PIPESTATUS[0]}
set -e
# The reporter counts a run with no test as a failure; so does this script.
if ! grep -Eq '^[1-9][0-9]* passed, 0 failed$' artifacts/test-output.txt; then
  [[ $status -eq 0 ]] && status=1
fi
exit "$status"
