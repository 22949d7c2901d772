#!/bin/sh
# The postgres:15-bookworm stand-in's entrypoint (tests/docker_engine.py): what the official
# image's docker-entrypoint.sh does with the settings the stack gives it. On an empty PGDATA:
# initdb with POSTGRES_USER and the password of POSTGRES_PASSWORD(_FILE), password logins from
# any address (scram-sha-256), listening on every address, and POSTGRES_DB created. Then it runs
# its arguments (postgres).
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  password=${POSTGRES_PASSWORD:-}
  if [ -n "${POSTGRES_PASSWORD_FILE:-}" ]; then
    password=$(cat "$POSTGRES_PASSWORD_FILE")
  fi
  user=${POSTGRES_USER:-postgres}
  printf '%s\n' "$password" >/tmp/pwfile
  initdb --username="$user" --pwfile=/tmp/pwfile --auth-local=trust \
    --auth-host=scram-sha-256 -D "$PGDATA"
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  database=${POSTGRES_DB:-$user}
  if [ "$database" != postgres ]; then
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    createdb --username="$user" "$database"
    pg_ctl -D "$PGDATA" -m fast -w stop
  fi
fi
exec "$@"
