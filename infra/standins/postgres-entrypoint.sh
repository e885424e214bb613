#!/bin/sh
# The PostgreSQL stand-in's entrypoint (infra/standins/postgres.Dockerfile): the official postgres image's
# contract as docker-compose.yml uses it. Started as root: it hands the data directory to `postgres` and
# re-runs itself as that user. On an empty data directory it runs initdb with POSTGRES_USER and
# POSTGRES_PASSWORD (scram-sha-256 over TCP, trust on the socket inside the container), creates POSTGRES_DB,
# and runs /docker-entrypoint-initdb.d/*.sql and *.sh once, with the server on its socket only (so a TCP
# pg_isready turns healthy only afterwards). Then it execs the server, listening on every interface.
set -eu

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "postgres stand-in: POSTGRES_PASSWORD is required (as with the official image)" >&2
    exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="$(mktemp)"
    printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
        --encoding=UTF8 -D "$PGDATA"
    rm -f "$pwfile"
    printf "host all all all scram-sha-256\n" >>"$PGDATA/pg_hba.conf"
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start
    if [ "$POSTGRES_DB" != postgres ]; then
        psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d postgres -c "CREATE DATABASE \"$POSTGRES_DB\""
    fi
    for script in /docker-entrypoint-initdb.d/*; do
        case "$script" in
            *.sql) echo "running $script"; psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -f "$script" ;;
            *.sh) echo "running $script"; . "$script" ;;
            *) [ -e "$script" ] && echo "ignoring $script" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop
fi

if [ "${1:-}" = postgres ]; then
    shift
    exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"
