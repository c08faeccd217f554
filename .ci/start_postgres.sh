#!/usr/bin/env bash
# Start a throwaway PostgreSQL cluster on loopback for the store tests.
#
# Usage:  eval "$(.ci/start_postgres.sh)"     # exports LETHE_TEST_PG_DSN
#         .ci/start_postgres.sh stop
# Installs the Debian package when missing (needs root), runs the server as the
# unprivileged `postgres` user, data under $LETHE_PG_DIR (default /tmp/lethe-pg).
# The DSN is also written to $LETHE_PG_DIR/dsn. Idempotent: a running cluster is reused.
set -euo pipefail

PGDIR="${LETHE_PG_DIR:-/tmp/lethe-pg}"
PGPORT="${LETHE_PG_PORT:-54329}"
PGUSER_OS="${LETHE_PG_OSUSER:-postgres}"

find_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1
}

BIN="$(find_bin || true)"
if [ -z "$BIN" ] || [ ! -x "$BIN/pg_ctl" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "postgresql is not installed and this is not root: apt-get install -y postgresql" >&2
    exit 1
  fi
  echo "installing postgresql (Debian package)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
  BIN="$(find_bin)"
fi

as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    id "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --no-create-home "$PGUSER_OS"
    runuser -u "$PGUSER_OS" -- "$@"
  else
    "$@"
  fi
}

if [ "${1:-start}" = "stop" ]; then
  as_pg "$BIN/pg_ctl" -D "$PGDIR/data" -m fast stop >&2 || true
  exit 0
fi

mkdir -p "$PGDIR"
if [ "$(id -u)" -eq 0 ]; then
  id "$PGUSER_OS" >/dev/null 2>&1 || useradd --system --no-create-home "$PGUSER_OS"
  chown "$PGUSER_OS" "$PGDIR"
fi

if [ ! -f "$PGDIR/data/PG_VERSION" ]; then
  as_pg "$BIN/initdb" -D "$PGDIR/data" -U lethe --auth=trust -E UTF8 --no-locale >&2
fi

if ! as_pg "$BIN/pg_ctl" -D "$PGDIR/data" status >/dev/null 2>&1; then
  as_pg "$BIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PGPORT -k $PGDIR -c fsync=on -c max_connections=200" start >&2
fi

DSN="postgresql://lethe@127.0.0.1:$PGPORT/postgres"
if [ "$(id -u)" -eq 0 ]; then
  printf '%s\n' "$DSN" | runuser -u "$PGUSER_OS" -- tee "$PGDIR/dsn" >/dev/null
else
  printf '%s\n' "$DSN" > "$PGDIR/dsn"
fi
echo "export LETHE_TEST_PG_DSN=$DSN"
