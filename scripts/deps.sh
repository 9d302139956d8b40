#!/bin/sh
# Installs the Debian packages the build and the tests need, only when something is missing.
# pkg-config answers first; apt-get update runs only when an install is really needed.
set -eu
missing=""
need_pkg() { # pkg-config-name debian-package
    pkg-config --exists "$1" 2>/dev/null || missing="$missing $2"
}
need_cmd() { # command debian-package
    command -v "$1" >/dev/null 2>&1 || missing="$missing $2"
}
need_py() { # python-module debian-package (Debian's copy serves another python3 too: the tests look there)
    python3 -c "import $1" 2>/dev/null || [ -d "/usr/lib/python3/dist-packages/$1" ] || missing="$missing $2"
}
need_cmd pkg-config pkg-config
need_cmd cc gcc
need_cmd make make
need_cmd python3 python3
need_cmd ip iproute2
# The CAMARA conformance test (tests/e2e/test_conformance.py) validates responses against the spec's schemas.
need_py yaml python3-yaml
need_py jsonschema python3-jsonschema
# The PostgreSQL server, for the tests of the PostgreSQL store (tests/tools/pgtmp.sh starts throw-away clusters).
[ -x /usr/lib/postgresql/15/bin/initdb ] || missing="$missing postgresql"
if command -v pkg-config >/dev/null 2>&1; then
    need_pkg libmicrohttpd libmicrohttpd-dev
    need_pkg libcurl libcurl4-openssl-dev
    need_pkg libcjson libcjson-dev
    need_pkg openssl libssl-dev
    need_pkg sqlite3 libsqlite3-dev
    need_pkg libnl-route-3.0 libnl-route-3-dev
    need_pkg libpq libpq-dev
else
    missing="$missing libmicrohttpd-dev libcurl4-openssl-dev libcjson-dev libssl-dev libsqlite3-dev libnl-route-3-dev"
    missing="$missing libpq-dev"
fi
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "deps: missing:$missing; run 'make deps' as root or install them with apt-get" >&2
        exit 1
    fi
    echo "deps: installing$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
