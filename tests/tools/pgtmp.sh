#!/bin/sh
# A throwaway PostgreSQL 15 cluster for tests.
#
#   pgtmp.sh start DIR PORT   initdb in DIR/data (first time only), start on 127.0.0.1:PORT with the unix sockets
#                             in DIR, make sure role qod (password qod, CREATEDB so that tests can make one database
#                             per daemon) owns database qod, and print the URI postgres://qod:qod@127.0.0.1:PORT/qod
#                             on stdout.
#   pgtmp.sh stop DIR         stop the cluster (fast shutdown) and wait until the server process is gone.
#
# Run as root, the server commands run as the `postgres` user (initdb and pg_ctl refuse root) and DIR is given to
# that user; run as anyone else, they run as the caller. Works from any working directory. PG_BINDIR overrides
# the location of the server binaries. Exit status 0 on success; messages other than the URI go to stderr.
set -eu

BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
WAIT_SECS=30

die() {
    echo "pgtmp: $*" >&2
    exit 1
}

# Runs a command as the cluster's owner, from / so that the caller's working directory does not matter.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

# Waits (bounded) until the server accepts connections on both the unix socket and TCP.
wait_ready() { # dir port
    i=0
    while [ "$i" -lt $((WAIT_SECS * 10)) ]; do
        if "$BINDIR/pg_isready" -q -h "$1" -p "$2" -t 1 && "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$2" -t 1; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}

# Runs one SQL statement as the superuser over the unix socket; prints the unaligned result.
sql() { # dir port db statement
    as_owner "$BINDIR/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$1" -p "$2" -U postgres -d "$3" -c "$4"
}

start() { # dir port
    dir=$1
    port=$2
    case $port in
    '' | *[!0-9]*) die "port must be a number: $port" ;;
    esac
    [ -x "$BINDIR/initdb" ] || die "PostgreSQL server binaries not found in $BINDIR"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    if [ "$(id -u)" = 0 ]; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' user to run the server as"
        chown postgres: "$dir"
    fi
    chmod 0700 "$dir"
    as_owner test -w "$dir" || die "$dir is not writable by the server's user (keep it out of /root)"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        # --no-sync: a throwaway cluster does not need initdb's final fsync of every file.
        as_owner "$BINDIR/initdb" -D "$dir/data" --locale=C --encoding=UTF8 -U postgres --auth-local=trust \
            --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1 ||
            die "initdb failed, see $dir/initdb.log"
    fi
    if ! as_owner "$BINDIR/pg_ctl" start -D "$dir/data" -l "$dir/postgres.log" -w -t "$WAIT_SECS" -s \
        -o "-p $port -k $dir -c listen_addresses=127.0.0.1" >/dev/null 2>&1; then
        tail -n 5 "$dir/postgres.log" >&2 2>/dev/null || true
        die "the server did not start on port $port"
    fi
    wait_ready "$dir" "$port" || die "the server on port $port is not ready after ${WAIT_SECS}s"
    if [ "$(sql "$dir" "$port" postgres "SELECT 1 FROM pg_roles WHERE rolname = 'qod'")" != 1 ]; then
        sql "$dir" "$port" postgres "CREATE ROLE qod LOGIN CREATEDB PASSWORD 'qod'" >/dev/null
    else
        # A cluster made before the role needed CREATEDB.
        sql "$dir" "$port" postgres "ALTER ROLE qod CREATEDB" >/dev/null
    fi
    if [ "$(sql "$dir" "$port" postgres "SELECT 1 FROM pg_database WHERE datname = 'qod'")" != 1 ]; then
        sql "$dir" "$port" postgres "CREATE DATABASE qod OWNER qod" >/dev/null
    fi
    echo "postgres://qod:qod@127.0.0.1:$port/qod"
}

# True while the process exists and is not a zombie (a stopped server can linger as one until it is reaped).
alive() { # pid
    [ -r "/proc/$1/stat" ] || return 1
    state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "$state" != Z ] && [ "$state" != X ]
}

stop() { # dir
    [ -d "$1/data" ] || die "no cluster in $1"
    dir=$(cd "$1" && pwd -P)
    pidfile="$dir/data/postmaster.pid"
    [ -f "$pidfile" ] || return 0
    pid=$(head -n 1 "$pidfile")
    if ! as_owner "$BINDIR/pg_ctl" stop -D "$dir/data" -m fast -w -t "$WAIT_SECS" -s >/dev/null 2>&1; then
        alive "$pid" && die "pg_ctl stop failed for $dir"
    fi
    i=0
    while alive "$pid" && [ "$i" -lt $((WAIT_SECS * 10)) ]; do
        sleep 0.1
        i=$((i + 1))
    done
    if alive "$pid"; then
        die "the server (pid $pid) is still running after ${WAIT_SECS}s"
    fi
}

case ${1:-} in
start)
    [ $# -eq 3 ] || die "usage: $0 start DIR PORT"
    start "$2" "$3"
    ;;
stop)
    [ $# -eq 2 ] || die "usage: $0 stop DIR"
    stop "$2"
    ;;
*)
    die "usage: $0 start DIR PORT | $0 stop DIR"
    ;;
esac
