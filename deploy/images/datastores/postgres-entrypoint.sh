#!/bin/sh
# The dev data-store image's PostgreSQL entrypoint: the part of the official image's contract the
# dev overlay uses (POSTGRES_USER, POSTGRES_DB, POSTGRES_HOST_AUTH_METHOD, PGDATA). Initialises
# PGDATA when empty, then execs postgres as PID 1 (SIGTERM = smart shutdown).
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
: "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
bin=/usr/lib/postgresql/15/bin
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA"
  chmod 700 "$PGDATA"
  "$bin/initdb" --pgdata="$PGDATA" --username="$POSTGRES_USER" --auth-local=trust \
    --auth-host="$POSTGRES_HOST_AUTH_METHOD" --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  echo "host all all all $POSTGRES_HOST_AUTH_METHOD" >> "$PGDATA/pg_hba.conf"
  "$bin/pg_ctl" --pgdata="$PGDATA" --options="-c listen_addresses='' -k /tmp" --wait start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then
    "$bin/createdb" --host=/tmp --username="$POSTGRES_USER" "$POSTGRES_DB"
  fi
  "$bin/pg_ctl" --pgdata="$PGDATA" --mode=fast --wait stop >/dev/null
  echo "postgres-entrypoint: initialised $PGDATA (database $POSTGRES_DB, owner $POSTGRES_USER)"
fi
exec "$bin/postgres" -D "$PGDATA" -c listen_addresses='*' "$@"
