#!/bin/sh
# `make test-pg`: the black-box suite (tests/e2e) with every daemon on PostgreSQL instead of its SQLite file.
#
#   test-pg.sh BUILD [tests/run.py options...]
#
# Starts a throw-away PostgreSQL 15 cluster (pgtmp.sh) in a temporary directory on a free port below the kernel's
# ephemeral range, runs tests/run.py on tests/e2e with QOD_TEST_PG set to its URI (the harness then gives each
# daemon a database of its own), and stops and removes the cluster however the run ends. The last line is the
# runner's "N passed, N failed"; the exit status is the runner's. QOD_TEST_CLUSTER=N in the environment (`make
# test-cluster`) makes each daemon N nodes on its database.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 BUILD [run.py options...]" >&2; exit 2; }
build=$1
shift
cd "$(dirname "$0")/../.."
pgtmp=tests/tools/pgtmp.sh

# Out of /root and $TMPDIR on purpose: the server runs as the postgres user, which must be able to enter it.
dir=$(mktemp -d /tmp/qod-pg-XXXXXX)
# shellcheck disable=SC2317 # run by the EXIT trap
cleanup() {
    "$pgtmp" stop "$dir" >/dev/null 2>&1 || true
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port below the ephemeral range (like tests/unit/store/test_store.c), so that no outgoing connection of the
# test run can take it from under the server; free now, which the start confirms.
pick_port() {
    python3 -c '
import random, socket
low = 32768
try:
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
except (OSError, ValueError, IndexError):
    pass
base = low - 11000 if low > 12000 else 1024
for _ in range(64):
    p = base + random.randrange(10000)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
    print(p)
    break
else:
    print(base)
'
}

uri=""
for attempt in 1 2 3 4; do
    port=$(pick_port)
    if uri=$("$pgtmp" start "$dir" "$port"); then
        break
    fi
    uri=""
    echo "test-pg: no cluster on port $port (attempt $attempt)" >&2
done
[ -n "$uri" ] || { echo "test-pg: could not start PostgreSQL" >&2; exit 1; }
if [ "${QOD_TEST_CLUSTER:-0}" -ge 2 ] 2>/dev/null; then
    echo "test-pg: PostgreSQL 15 on 127.0.0.1:$port (one database per daemon, $QOD_TEST_CLUSTER nodes on each)"
else
    echo "test-pg: PostgreSQL 15 on 127.0.0.1:$port (one database per daemon)"
fi

# Two hosts, tried in order: TCP with the password, as in production, then the unix socket in $dir. Daemons that a
# test runs inside a network namespace (test_tc, the URL guard test of test_callbacks) have a loopback of their own,
# where the TCP attempt is refused at once; the socket, a file, is reachable from every namespace.
socket_host=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' \
    "$(cd "$dir" && pwd -P)")
uri=$(echo "$uri" | sed "s|@127.0.0.1:$port/|@127.0.0.1:$port,$socket_host:$port/|")
case $uri in
*"$socket_host"*) ;;
*) echo "test-pg: unexpected URI from pgtmp.sh: $uri" >&2; exit 1 ;;
esac

rc=0
QOD_TEST_PG=$uri python3 tests/run.py --build "$build" --dir tests/e2e --e2e-only "$@" || rc=$?
exit "$rc"
