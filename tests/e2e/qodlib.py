"""Shared harness for the black-box tests in tests/e2e (Python 3.11 standard library only).

A test file does `from qodlib import *`, defines `test_*` functions (and optionally `setup_module()` /
`teardown_module()`), and ends with `run(globals())`. Each test prints one line, `PASS name`, `FAIL name` (followed by
the indented traceback and the tail of the logs of the daemons still running) or `SKIP name: reason`.

Main pieces:
- Daemon: starts `$QOD_BUILD/qodd` on a free port with a temporary data directory, waits for /healthz, and offers
  request(), session(), qodctl(), stop(), kill(), start(), log(). QOD_VALGRIND=1 runs it under valgrind.
- QOD_TEST_PG=URI (a database the role can connect to, with CREATEDB; `make test-pg` sets it): every Daemon
  runs on its own fresh PostgreSQL database (`--store`) instead of the SQLite file; see PG, store_kind(), psql().
- QOD_TEST_CLUSTER=N (N >= 2, with QOD_TEST_PG; `make test-cluster` sets 3): every Daemon on PostgreSQL is N qodd
  nodes on its one database (see Daemon); requests go round-robin over the nodes. CLUSTER is N (0 without it);
  cluster_skip(reason) skips a test that cannot be meaningful on several nodes.
- create_app(), get_token(): the usual way to obtain credentials.
- WebhookReceiver: a real HTTP callback sink that records requests and answers as told.
- verify_standard_webhook(), sign_standard_webhook(): Standard Webhooks 1.0.
- JWT helpers (jwt_parts, forge_token, token_*) and a pure-Python P-256 ECDSA (EcKey, es256_verify) so the tests can
  verify the daemon's signatures and mint tokens with its key without third-party packages.
"""
import atexit
import base64
import contextlib
import csv
import datetime
import faulthandler
import hashlib
import hmac
import http.client
import http.server
import io
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import uuid

__all__ = [
    "BUILD", "VALGRIND", "SLOW", "scaled", "Skip", "skip", "run", "free_port", "Daemon", "Response", "Headers",
    "Session", "run_qodd", "qodd_path", "qodctl_path", "create_app", "get_token", "WebhookReceiver", "Hook",
    "verify_standard_webhook", "sign_standard_webhook", "WebhookVerifyError", "b64url", "b64url_decode",
    "jwt_parts", "jwt_split", "forge_token", "token_alg_none", "token_hs256", "token_flip_payload",
    "token_tamper_claims", "token_flip_signature", "EcKey", "es256_verify", "jwk_public_numbers",
    "jwk_thumbprint", "expect_status", "expect_camara_error", "expect_oauth_error", "scope_list",
    "wait_until", "CORRELATOR_RE", "json", "os", "re", "time", "uuid", "subprocess", "signal", "tempfile",
    "PG", "store_kind", "psql", "CLUSTER", "cluster_skip", "sqlite_write_lock", "bench_module",
]

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repository
BUILD = os.environ.get("QOD_BUILD") or os.path.join(_ROOT, "build")
VALGRIND = os.environ.get("QOD_VALGRIND") == "1"
# Every timeout in the harness and the tests is multiplied by SLOW: valgrind runs the daemon 20-50x slower.
SLOW = 10 if VALGRIND else 1
# Prefix of the lines the harness itself writes into a daemon's log file.
HARNESS_MARK = "=== qodlib: "
CORRELATOR_RE = re.compile(r"^[a-zA-Z0-9\-_:;./<>{}]{0,256}$")
# The PostgreSQL database the per-daemon databases are created from (None: the daemons use their SQLite file).
PG_URI = os.environ.get("QOD_TEST_PG") or None
PG = bool(PG_URI)
# QOD_TEST_CLUSTER=N: each Daemon on PostgreSQL is N nodes of one cluster (0: one process, as always).
try:
    CLUSTER = int(os.environ.get("QOD_TEST_CLUSTER") or 0)
except ValueError:
    raise SystemExit("QOD_TEST_CLUSTER must be a number of nodes") from None
if CLUSTER < 2:
    CLUSTER = 0
elif not PG:
    raise SystemExit("QOD_TEST_CLUSTER needs QOD_TEST_PG: several nodes share one PostgreSQL database")
# Seconds a node's leases last in cluster runs: a stopped node's shards move at once anyway. Not test_cluster.py's
# 2 s: `make test-cluster` runs six files of three nodes each on two CPUs, and a node starved of CPU for 2 s lost
# its shards to another and stopped itself (a clean stop, so its admin socket was gone) right after the start.
CLUSTER_LEASE_S = 4
# The CIBA grant: its token polls must reach the node that took bc-authorize (CIBA requests are node-local).
_CIBA_GRANT = "urn:openid:params:grant-type:ciba"


def store_kind():
    """"postgres" when the daemons under test keep their state in PostgreSQL (QOD_TEST_PG), else "sqlite"."""
    return "postgres" if PG else "sqlite"


def cluster_skip(reason):
    """Skips the calling test under QOD_TEST_CLUSTER; reason says which documented limitation or which property of
    the test (one process's memory, timing or logs) makes it meaningless on several nodes."""
    if CLUSTER:
        raise Skip("cluster: " + reason)


def scaled(seconds):
    """A timeout, stretched when the daemon runs under valgrind."""
    return seconds * SLOW


def qodd_path():
    return os.path.join(BUILD, "qodd")


def qodctl_path():
    return os.path.join(BUILD, "qodctl")


# ---------------------------------------------------------------------------------------------------------------
# Test runner


class Skip(Exception):
    """Raise (or call skip()) inside a test to report `SKIP name: reason`."""


def skip(reason):
    raise Skip(reason)


# Strong references: a daemon a failed test forgot to close must still be stopped and its directory removed.
_live_daemons = set()
_live_receivers = set()
_out_lock = threading.Lock()


def _emit(line):
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def _indent(text, prefix="    "):
    return "\n".join(prefix + l for l in text.rstrip("\n").splitlines())


def _daemon_log_tails(lines=30):
    out = []
    for d in list(_live_daemons):
        try:
            tail = d.log_tail(lines)
        except Exception:
            continue
        out.append("--- qodd log tail (port %s, %s) ---" % (d.port, d.base))
        out.append(tail if tail.strip() else "(empty)")
    return "\n".join(out)


def _cleanup_all():
    for d in list(_live_daemons):
        try:
            d.close(check=False)
        except Exception:
            pass
    for r in list(_live_receivers):
        try:
            r.close()
        except Exception:
            pass
    # Databases whose data directory outlived its daemons (a test's own directory) go with the process.
    for data_dir in list(_pg_dbs):
        _pg_drop(_pg_dbs.pop(data_dir)[0])
    _release_ports()  # before os._exit, which runs no atexit handler


atexit.register(_cleanup_all)


def run(module_globals, per_test_timeout=120):
    """Runs every `test_*` function of the calling module in definition order and exits (status 1 if any failed).

    Command-line arguments, when given, select tests by substring. A test that hangs longer than
    per_test_timeout (scaled) is reported as failed with all thread stacks, and the process exits."""
    name = module_globals.get("__name__")
    tests = [f for k, f in module_globals.items()
             if k.startswith("test_") and callable(f) and getattr(f, "__module__", None) == name]
    tests.sort(key=lambda f: f.__code__.co_firstlineno)
    only = sys.argv[1:]
    if only:
        tests = [f for f in tests if any(o in f.__name__ for o in only)]
    failed = 0

    setup = module_globals.get("setup_module")
    teardown = module_globals.get("teardown_module")
    setup_error = None
    if setup and tests:
        try:
            setup()
        except BaseException:
            setup_error = traceback.format_exc()

    for f in tests:
        tname = f.__name__
        if setup_error is not None:
            _emit("FAIL %s" % tname)
            _emit(_indent("setup_module failed:\n" + setup_error))
            failed += 1
            continue
        timer = threading.Timer(scaled(per_test_timeout), _on_test_timeout, args=(tname, scaled(per_test_timeout)))
        timer.daemon = True
        timer.start()
        before = set(_live_daemons) | set(_live_receivers)
        try:
            f()
        except Skip as e:
            _emit("SKIP %s: %s" % (tname, str(e) or "skipped"))
        except BaseException as e:  # noqa: BLE001 - a test may raise anything, KeyboardInterrupt aside
            if isinstance(e, KeyboardInterrupt):
                raise
            failed += 1
            _emit("FAIL %s" % tname)
            detail = traceback.format_exc()
            tails = _daemon_log_tails()
            if tails:
                detail += tails
            _emit(_indent(detail))
        else:
            _emit("PASS %s" % tname)
        finally:
            timer.cancel()
            # Whatever the test started and did not close (e.g. because an assertion fired) goes now, so that
            # the next test starts clean and no process outlives the file.
            for leftover in (set(_live_daemons) | set(_live_receivers)) - before:
                try:
                    leftover.close(check=False) if isinstance(leftover, Daemon) else leftover.close()
                except Exception:
                    pass

    if teardown and tests and setup_error is None:
        try:
            teardown()
        except BaseException:
            failed += 1
            _emit("FAIL teardown_module")
            _emit(_indent(traceback.format_exc()))
    _cleanup_all()
    sys.stdout.flush()
    os._exit(1 if failed else 0)


def _on_test_timeout(tname, secs):
    _emit("FAIL %s" % tname)
    _emit("    timed out after %ss; thread stacks follow" % secs)
    sys.stdout.flush()
    faulthandler.dump_traceback(file=sys.stdout, all_threads=True)
    tails = _daemon_log_tails()
    if tails:
        _emit(_indent(tails))
    _cleanup_all()
    sys.stdout.flush()
    os._exit(1)


def wait_until(pred, timeout=5.0, interval=0.02, what="condition"):
    """Polls pred() until it returns a truthy value (returned) or the scaled timeout passes (AssertionError).
    Use it only when there is no event to wait for (e.g. a file to appear). `what` names the condition in the
    error; a function is called then, so that the text can show values as they were at the timeout."""
    deadline = time.monotonic() + scaled(timeout)
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (scaled(timeout),
                                                                          what() if callable(what) else what))
        time.sleep(interval)


_bench = None


def bench_module():
    """bench/run.py as a module, loaded once: the long fault tests fill stores with its writer (insert_sessions), as
    `make bench` does."""
    global _bench
    if _bench is None:
        import importlib.util
        spec = importlib.util.spec_from_file_location("bench_run", os.path.join(_ROOT, "bench", "run.py"))
        _bench = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(_bench)
    return _bench


@contextlib.contextmanager
def sqlite_write_lock(d):
    """Holds the write lock of d's SQLite store from another connection while the block runs: qodd's writer waits
    in SQLite's busy handler (5 s; then its batches fail and are retried). Let go when the block ends."""
    con = sqlite3.connect(os.path.join(d.data_dir, "qod.db"), isolation_level=None, timeout=5)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield
    finally:
        con.rollback()
        con.close()


# ---------------------------------------------------------------------------------------------------------------
# HTTP client side


_PORTS_DIR = os.path.join(tempfile.gettempdir(), "qod-test-ports")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _reserve_port(port):
    """Claims port for this process among all test processes (a file named by the port, holding our pid), for as
    long as the process lives: a daemon stopped and started again on its port must not find it taken in between
    by another test file's daemon, which the kernel's pick alone allows. A claim whose process is gone is void."""
    if not _reserved_ports:
        _sweep_port_claims()
    path = os.path.join(_PORTS_DIR, str(port))
    for _ in range(2):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = int(f.read().strip() or 0)
            except (OSError, ValueError):
                owner = 0
            if owner == os.getpid() or (owner and _pid_alive(owner)):
                return False
            with contextlib.suppress(OSError):
                if not owner and time.time() - os.stat(path).st_mtime < 10:
                    return False  # being written by its owner right now
            with contextlib.suppress(OSError):
                os.unlink(path)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        _reserved_ports.append(path)
        return True
    return False


_reserved_ports = []


def _sweep_port_claims():
    """Removes the claims of processes that are gone (killed before they could release theirs), once per process."""
    os.makedirs(_PORTS_DIR, exist_ok=True)
    for name in os.listdir(_PORTS_DIR):
        path = os.path.join(_PORTS_DIR, name)
        try:
            with open(path) as f:
                owner = int(f.read().strip() or 0)
        except (OSError, ValueError):
            continue
        if owner and owner != os.getpid() and not _pid_alive(owner):
            with contextlib.suppress(OSError):
                os.unlink(path)


@atexit.register
def _release_ports():
    for path in _reserved_ports:
        with contextlib.suppress(OSError):
            os.unlink(path)
    del _reserved_ports[:]


def _listens(pid, port):
    """Whether process pid (or a child of it) holds the socket listening on TCP port, in pid's network namespace:
    a /healthz answer on our port may come from another test's daemon while ours is still starting. True where
    /proc cannot tell."""
    inodes = set()
    try:
        for name in ("tcp", "tcp6"):
            with open("/proc/%d/net/%s" % (pid, name)) as f:
                for line in f.readlines()[1:]:
                    col = line.split()
                    if col[3] == "0A" and int(col[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add("socket:[%s]" % col[9])
        pids = [pid]
        for task in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, task)) as f:
                pids += [int(x) for x in f.read().split()]
    except (OSError, IndexError, ValueError):
        return True
    if not inodes:
        return True
    for p in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir("/proc/%d/fd" % p):
                with contextlib.suppress(OSError):
                    if os.readlink("/proc/%d/fd/%s" % (p, fd)) in inodes:
                        return True
    return False


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick), and that no other test process (nor
    this one) has had from free_port while it lives."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if _reserve_port(port):
            return port
    raise AssertionError("no free TCP port that another test process has not claimed in %s" % _PORTS_DIR)


class Headers:
    """Case-insensitive, read-only view of response headers. Repeated headers are joined with ", "."""

    def __init__(self, pairs):
        self._d = {}
        for k, v in pairs:
            lk = k.lower()
            self._d[lk] = (self._d[lk] + ", " + v) if lk in self._d else v

    def __getitem__(self, k):
        return self._d[k.lower()]

    def get(self, k, default=None):
        return self._d.get(k.lower(), default)

    def __contains__(self, k):
        return k.lower() in self._d

    def keys(self):
        return self._d.keys()

    def items(self):
        return self._d.items()

    def __iter__(self):
        return iter(self._d)

    def __len__(self):
        return len(self._d)

    def __repr__(self):
        return "Headers(%r)" % self._d


class Response:
    """One HTTP response: status, headers (Headers), header_list [(name, value)], body (bytes)."""

    def __init__(self, status, reason, header_list, body):
        self.status = status
        self.reason = reason
        self.header_list = header_list
        self.headers = Headers(header_list)
        self.body = body

    @property
    def text(self):
        return self.body.decode("utf-8", errors="replace")

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError as e:
            raise AssertionError("response body is not JSON (%s): status %d, body %r"
                                 % (e, self.status, self.body[:500])) from None

    def __repr__(self):
        return "<Response %d %s %r>" % (self.status, dict(self.headers.items()), self.body[:300])


def _prepare(body, headers, token, form, raw, auth):
    h = {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        h["Content-Type"] = "application/x-www-form-urlencoded"
    elif raw is not None:
        data = raw if isinstance(raw, bytes) else raw.encode()
    if token is not None:
        h["Authorization"] = "Bearer " + token
    if auth is not None:
        cred = ("%s:%s" % auth).encode()
        h["Authorization"] = "Basic " + base64.b64encode(cred).decode()
    for k, v in (headers or {}).items():
        # A caller's header replaces ours whatever its case; None removes it.
        for existing in [x for x in h if x.lower() == k.lower()]:
            del h[existing]
        if v is not None:
            h[k] = v
    return data, h


def _exchange(conn, method, path, data, h):
    skip_accept = any(k.lower() == "accept-encoding" for k in h)
    skip_host = any(k.lower() == "host" for k in h)
    conn.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=skip_accept)
    for k, v in h.items():
        conn.putheader(k, v)
    if data is not None and not any(k.lower() in ("content-length", "transfer-encoding") for k in h):
        conn.putheader("Content-Length", str(len(data)))
    elif data is None and method in ("POST", "PUT", "PATCH") and not any(
            k.lower() in ("content-length", "transfer-encoding") for k in h):
        conn.putheader("Content-Length", "0")
    conn.endheaders(data)
    r = conn.getresponse()
    body = r.read()
    return Response(r.status, r.reason, list(r.getheaders()), body), r.will_close


class Session:
    """A keep-alive HTTP/1.1 connection to the daemon. `connects` counts TCP connections opened so a test can
    tell whether the server kept the connection open."""

    def __init__(self, host, port, timeout):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None
        self.connects = 0

    def request(self, method, path, body=None, headers=None, token=None, form=None, raw=None, auth=None):
        data, h = _prepare(body, headers, token, form, raw, auth)
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self.conn.connect()
            self.connects += 1
        resp, will_close = _exchange(self.conn, method, path, data, h)
        if will_close:
            self.conn.close()
            self.conn = None
        return resp

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------------------------
# The daemon under test


def _base_env(env):
    """The environment for qodd/qodctl: ours minus QOD_* option variables (so an operator's shell settings do not
    leak into tests), plus `env` (a None value removes a variable)."""
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("QOD_") or k in ("QOD_BUILD", "QOD_VALGRIND") or k.startswith("QOD_TEST_")}
    for k, v in (env or {}).items():
        if v is None:
            e.pop(k, None)
        else:
            e[k] = v
    return e


def _valgrind_prefix(logfile):
    return ["valgrind", "--error-exitcode=99", "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--log-file=" + logfile]


def run_qodd(args, env=None, timeout=10, cwd=None):
    """Runs qodd to completion (for --help and start-up errors) and returns the CompletedProcess (text).

    Runs in a temporary working directory so nothing lands in the repository; raises AssertionError when qodd is
    still running after the (scaled) timeout, which is what happens if it ignores a bad option."""
    tmp = tempfile.mkdtemp(prefix="qod-e2e-run-")
    try:
        argv = [qodd_path()] + list(args)
        vlog = os.path.join(tmp, "valgrind.log")
        if VALGRIND:
            argv = _valgrind_prefix(vlog) + argv
        p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_base_env(env),
                             cwd=cwd or tmp, stdin=subprocess.DEVNULL)
        try:
            out, err = p.communicate(timeout=scaled(timeout))
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError("qodd %s did not exit within %ss; stdout=%r stderr=%r"
                                 % (" ".join(args), scaled(timeout), out[-2000:], err[-2000:])) from None
        if VALGRIND and p.returncode == 99:
            with open(vlog, errors="replace") as f:
                raise AssertionError("valgrind reported errors:\n" + f.read()[-6000:])
        return subprocess.CompletedProcess(argv, p.returncode, out, err)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL: one database per data directory


def psql(sql, uri=None, timeout=30):
    """Runs one SQL statement with psql on uri (default: QOD_TEST_PG) and returns the rows as lists of strings
    (NULL is ""). Raises AssertionError with psql's message when it fails."""
    env = dict(os.environ, PGCONNECT_TIMEOUT="5")
    try:
        p = subprocess.run(["psql", "-X", "-q", "-t", "--csv", "-v", "ON_ERROR_STOP=1", uri or PG_URI, "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           stdin=subprocess.DEVNULL, timeout=scaled(timeout))
    except subprocess.TimeoutExpired:
        raise AssertionError("psql timed out after %ss: %s" % (scaled(timeout), sql)) from None
    if p.returncode != 0:
        raise AssertionError("psql failed (%d) on %r: %s" % (p.returncode, sql, p.stderr.strip()))
    return list(csv.reader(io.StringIO(p.stdout)))


# realpath(data dir) -> [database name, number of open Daemons on it]. A second Daemon on the same data directory
# uses the same database, as it would use the same SQLite file.
_pg_dbs = {}
_pg_lock = threading.Lock()


def _pg_db_uri(name):
    """QOD_TEST_PG with its database replaced by name (user, password, host, port and parameters kept)."""
    u = urllib.parse.urlsplit(PG_URI)
    return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))


def _pg_acquire(data_dir):
    """The URI of the database that belongs to data_dir, created (empty) on first use."""
    key = os.path.realpath(data_dir)
    with _pg_lock:
        ent = _pg_dbs.get(key)
        if ent is None:
            name = "qt_" + secrets.token_hex(8)
            psql("CREATE DATABASE %s" % name)
            ent = _pg_dbs[key] = [name, 0]
        ent[1] += 1
        return _pg_db_uri(ent[0])


def _pg_release(data_dir):
    """One Daemon on data_dir is closed. The database goes with the last one, unless the directory (a test's own)
    is still there and may get another Daemon; _cleanup_all drops those at the end."""
    key = os.path.realpath(data_dir)
    with _pg_lock:
        ent = _pg_dbs.get(key)
        if ent is None:
            return
        ent[1] -= 1
        if ent[1] > 0 or os.path.exists(data_dir):
            return
        del _pg_dbs[key]
    _pg_drop(ent[0])


def _pg_drop(name):
    """Best effort: FORCE ends what is still connected (a killed daemon's backends may linger for a moment)."""
    try:
        psql("DROP DATABASE IF EXISTS %s WITH (FORCE)" % name)
    except Exception:  # noqa: BLE001 - a leftover database in a throw-away cluster harms nobody
        pass


def _has_store_option(args, env):
    return any(a == "--store" or str(a).startswith("--store=") for a in args) or "QOD_STORE" in (env or {})


class Daemon:
    """A running qodd on 127.0.0.1:port with its own data directory.

    Layout: base = mkdtemp(); data dir = base/data (pre-created 0700 unless make_data_dir=False, in which case qodd
    must create it); log = base/qodd.log (stdout and stderr, appended across restarts; with split_stdout=True
    stdout goes to base/qodd.stdout instead). Everything under base is removed by close().

    args: extra qodd arguments. env: extra environment (None value removes). data_dir: use this directory instead
    (not removed by close). port: use this port. cli_listen / cli_data: pass --listen / --data on the command line
    (turn off to supply them through --config or QOD_* variables). start: start now and wait for /healthz.

    Under QOD_TEST_PG, unless args or env choose a store, `--store URI` of the data directory's own database is
    appended (pg_uri, set at the first start; None on SQLite): it lives as long as the data directory, like the
    SQLite file would.

    Under QOD_TEST_CLUSTER=N, a Daemon whose store is PostgreSQL (and that runs neither TLS, the tc backend nor a
    cluster of its own) is N nodes on that one database: node 0 is this object (port, data dir, log, proc, pid and
    url are its own), nodes 1..N-1 (peers) have their own port, data dir and log under base. At the first start,
    node 0 runs alone to create signing-key.pem and secrets.key, stops, and the keys are copied to the peers; then,
    and at every later start, all nodes start together, so that they share the shards (a node that joins a running
    cluster takes only free shards). Every node gets the test's args plus --cluster-node (its own URL),
    --cluster-lease CLUSTER_LEASE_S and --public-url (node 0's URL, unless the test gives its own). request(),
    session() and raw_exchange() go round-robin over the running nodes, except CIBA (bc-authorize and the CIBA token
    grant go to node 0, the sticky routing docs/operations.md asks for); qodctl() talks to node 0 and, after an app
    or device change, waits until every peer shows it; log() is all nodes' logs; stop/kill/signal/start/close act
    on all nodes; running() is true when all run."""

    _root = None  # the cluster's node 0, on a peer

    def __init__(self, args=(), env=None, data_dir=None, port=None, start=True, make_data_dir=True,
                 cli_listen=True, cli_data=True, split_stdout=False, log_level="debug"):
        self.args = list(args)
        self.env = dict(env or {})
        self.base = tempfile.mkdtemp(prefix="qod-e2e-")
        self.own_data = data_dir is None
        self.data_dir = data_dir or os.path.join(self.base, "data")
        if self.own_data and make_data_dir:
            os.mkdir(self.data_dir, 0o700)
        self.log_path = os.path.join(self.base, "qodd.log")
        self.stdout_path = os.path.join(self.base, "qodd.stdout") if split_stdout else None
        self.valgrind_log = os.path.join(self.base, "valgrind.%p.log")
        self.cli_listen, self.cli_data = cli_listen, cli_data
        self.log_level = log_level
        self.fixed_port = port is not None
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.proc = None
        self.closed = False
        self.pg_uri = None
        self.peers = []
        self.cluster_size = None  # decided at the first start: CLUSTER or 1
        self._rr = 0
        self._rr_lock = threading.Lock()
        self._dead_epochs = None  # {shard lease: epoch} when the cluster was killed, until it serves them again
        _live_daemons.add(self)
        if start:
            try:
                self.start()
            except BaseException:
                self.close(check=False)
                raise

    # -- lifecycle --

    def argv(self):
        a = [qodd_path()]
        if self.cli_listen:
            a += ["--listen", "%s:%d" % (self.host, self.port)]
        if self.cli_data:
            a += ["--data", self.data_dir]
        if self.log_level:
            a += ["--log-level", self.log_level]
        a += self.args
        if self.pg_uri and not _has_store_option(self.args, self.env):
            a += ["--store", self.pg_uri]
        root = self._root or self
        if (root.cluster_size or 1) > 1:
            a += ["--cluster-node", "http://%s:%d" % (self.host, self.port), "--cluster-lease", str(CLUSTER_LEASE_S)]
            if not any(str(x) == "--public-url" or str(x).startswith("--public-url=") for x in root.args) \
                    and "QOD_PUBLIC_URL" not in root.env:
                a += ["--public-url", "http://%s:%d" % (root.host, root.port)]
        if VALGRIND:
            a = _valgrind_prefix(self.valgrind_log) + a
        return a

    def start(self, wait=True):
        """Starts qodd (again) on the same port and data directory and waits for GET /healthz to answer 200.
        On the first start, a port taken by someone else in the meantime is replaced by a new free one."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        # At the first start rather than in __init__: a test may set args (its own --store) in between.
        if PG and self.pg_uri is None and not _has_store_option(self.args, self.env):
            self.pg_uri = _pg_acquire(self.data_dir)
        if self.cluster_size is None:
            self.cluster_size = CLUSTER if self._cluster_fits() else 1
        if self.cluster_size > 1:
            return self._start_cluster(wait)
        return self._start_one(wait)

    def _cluster_fits(self):
        """Whether this Daemon can be a cluster: on PostgreSQL, without TLS (the nodes forward over plain HTTP),
        the tc backend (refused with several nodes) or a --cluster-node of the test's own."""
        if not CLUSTER:
            return False
        a = [str(x) for x in self.args]
        pairs = set(zip(a, a[1:])) | {tuple(x.split("=", 1)) for x in a if "=" in x}
        if any(x.startswith(("--tls-cert", "--cluster-node")) for x in a) or ("--network", "tc") in pairs \
                or self.env.get("QOD_NETWORK") == "tc" or "QOD_CLUSTER_NODE" in self.env:
            return False
        if self.pg_uri:
            return True
        store = [v for k, v in pairs if k == "--store"] or [self.env.get("QOD_STORE", "")]
        return store[-1].startswith(("postgres://", "postgresql://"))

    def _nodes(self):
        return [self] + self.peers

    def _start_cluster(self, wait):
        if not self.peers:
            # Node 0 alone makes the keys; it stops again (releasing its leases) so that all nodes then start
            # together and share the shards, as test_cluster.py does.
            self._start_one(True)
            rc = self._stop_one()
            assert rc == 0, "cluster node 0 exited %s after its first start; log tail:\n%s" % (rc, self.log_tail(40))
            self.peers = [_Peer(self, i) for i in range(1, self.cluster_size)]
            for peer in self.peers:
                for f in ("signing-key.pem", "secrets.key"):
                    shutil.copy(os.path.join(self.data_dir, f), os.path.join(peer.data_dir, f))
        errors = []

        def one(node):
            try:
                node._start_one(wait)
            except BaseException as e:  # noqa: BLE001 - reported below, with the node
                errors.append((node, e))
        threads = [threading.Thread(target=one, args=(n,)) for n in self._nodes()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            node, e = errors[0]
            raise AssertionError("cluster node %d (port %d): %s" % (self._nodes().index(node), node.port, e))
        if wait and self._dead_epochs is not None:
            self._await_adoption()
        return self

    def _shard_epochs(self, live_only=False):
        rows = psql("SELECT name, epoch FROM leases WHERE name LIKE 'shard:%%'%s"
                    % (" AND expires_at > now()" if live_only else ""), self.pg_uri)
        return {name: int(epoch) for name, epoch in rows}

    def _await_adoption(self):
        """After kill(), the dead nodes' shard leases hold their sessions (503) until they run out, even for a
        node restarted with the same URL (docs/operations.md, "A node dies"); a test's next request must not fall
        into that window, so this waits until every shard the dead nodes held is leased anew (a higher epoch)."""
        dead, self._dead_epochs = self._dead_epochs, None
        wait_until(lambda: (lambda now: all(now.get(k, 0) > e for k, e in dead.items()))(
            self._shard_epochs(live_only=True)), timeout=CLUSTER_LEASE_S * 4, interval=0.1,
            what="the restarted cluster to lease the killed nodes' shards again")

    def _start_one(self, wait):
        for attempt in range(3):
            self._spawn()
            if not wait:
                return self
            try:
                self.wait_healthy()
                return self
            except _EarlyExit as e:
                in_use = "in use" in e.log_tail.lower() or "eaddrinuse" in e.log_tail.lower()
                if in_use and not self.fixed_port and attempt < 2 and not self._ever_healthy:
                    self.port = free_port()
                    continue
                raise AssertionError(str(e)) from None
        return self

    _ever_healthy = False

    def _spawn(self):
        with open(self.log_path, "ab") as log:
            log.write((HARNESS_MARK + "start %s: %s\n" % (time.strftime("%H:%M:%S"), " ".join(self.argv()))).encode())
            log.flush()
            out = open(self.stdout_path, "ab") if self.stdout_path else log
            try:
                self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=log, stdin=subprocess.DEVNULL,
                                             env=_base_env(self.env), cwd=self.base, start_new_session=True)
            finally:
                if out is not log:
                    out.close()

    def wait_healthy(self, timeout=15):
        deadline = time.monotonic() + scaled(timeout)
        last = None
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise _EarlyExit("qodd exited with code %s before answering /healthz; log tail:\n%s"
                                 % (rc, self.log_tail(40)), self.log_tail(40))
            try:
                r = self._request_at(self.port, "GET", "/healthz", timeout=1)
                if r.status == 200 and not _listens(self.proc.pid, self.port):
                    last = "another process answers on port %d" % self.port
                elif r.status == 200:
                    self._ever_healthy = True
                    return
                last = "status %d" % r.status
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            if time.monotonic() >= deadline:
                raise AssertionError("qodd did not answer GET /healthz with 200 within %ss (last: %s); log tail:\n%s"
                                     % (scaled(timeout), last, self.log_tail(40)))
            time.sleep(0.02)

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def running(self):
        """True when qodd runs (in a cluster: every node)."""
        return all(n._running_one() for n in self._nodes())

    def _running_one(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        for n in self._nodes():
            if n.proc is not None:
                n.proc.send_signal(sig)

    def stop(self, timeout=15):
        """SIGTERM, wait (scaled timeout) and return the exit code (negative = killed by that signal).
        If qodd does not exit in time it is killed and AssertionError is raised. In a cluster all nodes stop
        together; the code is node 0's, or the first other node's that is not 0."""
        if not self.peers:
            return self._stop_one(timeout)
        results = {}

        def one(node):
            try:
                results[node] = node._stop_one(timeout)
            except BaseException as e:  # noqa: BLE001 - raised below
                results[node] = e
        threads = [threading.Thread(target=one, args=(n,)) for n in self._nodes()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n in self._nodes():
            if isinstance(results.get(n), BaseException):
                raise results[n]
        codes = [results.get(n) for n in self._nodes()]
        return next((c for c in codes if c), codes[0])

    def _stop_one(self, timeout=15):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=scaled(timeout))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("qodd did not exit within %ss of SIGTERM; log tail:\n%s"
                                     % (scaled(timeout), self.log_tail(40))) from None
        return self.proc.returncode

    def kill(self):
        """SIGKILL (a crash) and reap; returns the exit code (-9). In a cluster every node is killed."""
        if self.peers and self.pg_uri and self._running_one():
            self._dead_epochs = self._shard_epochs()
        for n in self._nodes():
            if n.proc is not None and n.proc.poll() is None:
                n.proc.kill()
        for n in self.peers:
            if n.proc is not None:
                n.proc.wait()
        if self.proc is None:
            return None
        return self.proc.wait()

    def restart(self):
        rc = self.stop()
        self.start()
        return rc

    def close(self, check=True):
        """Stops qodd and removes the temporary directory. With check and QOD_VALGRIND=1, a valgrind error exit
        (code 99) raises AssertionError with the valgrind report."""
        if self.closed:
            return
        self.closed = True
        rc = None
        err = None
        try:
            rc = self.stop()
        except AssertionError as e:
            err = e
        vreport = ""
        if VALGRIND and rc == 99:
            vreport = self.valgrind_report()
        _live_daemons.discard(self)
        shutil.rmtree(self.base, ignore_errors=True)
        if self.pg_uri:
            _pg_release(self.data_dir)
        if check and err is not None:
            raise err
        if check and VALGRIND and rc == 99:
            raise AssertionError("valgrind reported errors in qodd:\n" + vreport[-8000:])

    def valgrind_report(self):
        out = []
        for f in sorted(os.listdir(self.base)):
            if f.startswith("valgrind."):
                with open(os.path.join(self.base, f), errors="replace") as fh:
                    out.append(fh.read())
        return "\n".join(out)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        self.close(check=exc_type is None)

    # -- logs --

    def log(self, harness_lines=False):
        """All text qodd wrote to its log so far, over all its runs (in a cluster: node 0's, then each other
        node's). The harness's own marker lines (one per start) are left out unless harness_lines."""
        return "".join(n._log_one(harness_lines) for n in self._nodes())

    def _log_one(self, harness_lines):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""
        if harness_lines:
            return text
        return "".join(l for l in text.splitlines(True) if not l.startswith(HARNESS_MARK))

    def log_tail(self, n=30):
        """The last n lines of the log (in a cluster: of each node's, under a header line per node)."""
        if not self.peers:
            return "\n".join(self._log_one(True).splitlines()[-n:])
        return "\n".join("%s node %d (port %d) ---\n%s" % (HARNESS_MARK, i, node.port,
                                                          "\n".join(node._log_one(True).splitlines()[-n:]))
                         for i, node in enumerate(self._nodes()))

    def stdout_text(self):
        if not self.stdout_path:
            return ""
        try:
            with open(self.stdout_path, "rb") as f:
                return f.read().decode("utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    # -- HTTP --

    def url(self, path="/"):
        return "http://%s:%d%s" % (self.host, self.port, path)

    def request(self, method, path, body=None, headers=None, token=None, form=None, raw=None, auth=None,
                timeout=10):
        """One request on a fresh connection. body: JSON-encoded (Content-Type application/json); form: dict sent
        form-encoded; raw: bytes sent as-is (set Content-Type in headers). auth=(user, password) sends HTTP Basic;
        token sends `Authorization: Bearer`. headers override ours; a None value removes one of ours.
        In a cluster, the next node in turn answers (see _pick_port)."""
        data, h = _prepare(body, headers, token, form, raw, auth)
        return self._request_at(self._pick_port(path, data), method, path, data=data, h=h, timeout=timeout)

    def _pick_port(self, path="", data=None):
        """The port of the node that takes the next request: node 0 on one node and for CIBA (bc-authorize and its
        token polls must meet on one node: sticky routing as docs/operations.md asks); else the next running node
        in turn."""
        if not self.peers:
            return self.port
        if path.startswith("/oauth2/bc-authorize") or (
                path.startswith("/oauth2/token") and data and urllib.parse.quote(_CIBA_GRANT, safe="").encode()
                in (data if isinstance(data, bytes) else data.encode())):
            return self.port
        nodes = self._nodes()
        with self._rr_lock:
            first = self._rr
            self._rr += 1
        for k in range(len(nodes)):
            node = nodes[(first + k) % len(nodes)]
            if node._running_one():
                return node.port
        return self.port

    def _request_at(self, port, method, path, body=None, headers=None, token=None, form=None, raw=None, auth=None,
                    timeout=10, data=None, h=None):
        if h is None:
            data, h = _prepare(body, headers, token, form, raw, auth)
        conn = http.client.HTTPConnection(self.host, port, timeout=scaled(timeout))
        try:
            resp, _ = _exchange(conn, method, path, data, h)
            return resp
        finally:
            conn.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, **kw):
        return self.request("POST", path, **kw)

    def session(self, timeout=10):
        """A keep-alive connection (Session) to this daemon. In a cluster, a _ClusterSession: one keep-alive
        connection per node, each request on the next node's."""
        if self.peers:
            return _ClusterSession(self, scaled(timeout))
        return Session(self.host, self.port, scaled(timeout))

    def raw_exchange(self, data, timeout=5, read_until_close=True):
        """Sends raw bytes on a new TCP connection and returns whatever comes back until the server closes the
        connection or the (scaled) timeout passes. For malformed-HTTP tests."""
        chunks = []
        with socket.create_connection((self.host, self._pick_port()), timeout=scaled(timeout)) as s:
            if data:
                s.sendall(data)
            try:
                while True:
                    c = s.recv(65536)
                    if not c:
                        break
                    chunks.append(c)
                    if not read_until_close:
                        break
            except socket.timeout:
                pass
            except ConnectionResetError:
                pass
        return b"".join(chunks)

    # -- qodctl --

    @property
    def socket_path(self):
        return os.path.join(self.data_dir, "qodd.sock")

    def qodctl(self, *args, check=True, data=True, input=None, timeout=30, env=None):
        """Runs `qodctl --data DIR *args` (without --data when data=False) and returns the CompletedProcess (text).
        With check, a non-zero exit raises AssertionError showing stdout and stderr."""
        argv = [qodctl_path()] + (["--data", self.data_dir] if data else []) + [str(a) for a in args]
        try:
            p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, input=input,
                               timeout=scaled(timeout), env=_base_env(env), cwd=self.base,
                               stdin=None if input is not None else subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("%s timed out after %ss" % (" ".join(argv), scaled(timeout))) from e
        if check and p.returncode != 0:
            raise AssertionError("%s exited %d\nstdout: %s\nstderr: %s\nthis daemon's log tail:\n%s"
                                 % (" ".join(argv), p.returncode, p.stdout, p.stderr, self.log_tail(20)))
        if p.returncode == 0 and data and self.peers:
            self._await_peers([str(a) for a in args], p.stdout)
        return p

    def _await_peers(self, args, stdout):
        """After an app or device change made through node 0, waits (bounded) until every running peer's admin
        view equals node 0's: the change travels by NOTIFY, and a test's next request may reach another node.
        A new client secret shows in no view: each peer is asked for a token with it until it issues one."""
        verb = tuple(args[:2])
        if verb == ("app", "rotate-secret"):
            self._await_peers_secret(args, stdout)
            return
        if verb == ("deliveries", "forget-gone"):
            self._await_nodes_forget_gone()
            return
        if verb in (("app", "create"), ("app", "delete"), ("app", "set-limits"), ("app", "rotate-webhook-secret")):
            what = ["app", "list", "--json"]
        elif verb in (("device", "add"), ("device", "remove")):
            what = ["device", "list", "--json"]
        else:
            return

        def view(node):
            """{key: entry as JSON} of a node's app or device list (key: client_id or phone)."""
            p = subprocess.run([qodctl_path(), "--data", node.data_dir] + what, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, timeout=scaled(10), env=_base_env(self.env),
                               cwd=self.base, stdin=subprocess.DEVNULL)
            try:
                return {x.get("client_id") or x.get("phone"): json.dumps(x, sort_keys=True)
                        for x in json.loads(p.stdout)}
            except (ValueError, TypeError, AttributeError):
                return None
        # Only the item this command changed is compared: other tests may change other items meanwhile.
        key = None
        if verb in (("app", "delete"), ("app", "set-limits"), ("app", "rotate-webhook-secret")) and len(args) > 2:
            key = args[2]
        elif verb in (("device", "add"), ("device", "remove")) and "--phone" in args:
            key = args[args.index("--phone") + 1]
        mine = view(self) or {}

        def caught_up(peer):
            theirs = view(peer)
            if theirs is None:
                return False
            if key is None:  # app create: every app node 0 shows is shown by the peer too
                return all(theirs.get(k) == v for k, v in mine.items())
            return theirs.get(key) == mine.get(key)
        self._await_nodes(self.peers, caught_up, "cluster node %%d to show `qodctl %s` as node 0 does"
                          % " ".join(args[:2]))

    def _await_nodes(self, nodes, ready, what):
        """Waits (bounded) until ready(node) holds for each running node of nodes; what names the wait, with %d
        for the node's number."""
        for node in nodes:
            if node._running_one():
                wait_until(lambda: ready(node), timeout=5, interval=0.01, what=what % self._nodes().index(node))

    def _await_nodes_forget_gone(self):
        """After `deliveries forget-gone` through node 0: waits until every running node holds in memory as many
        gone URLs (qod_delivery_gone_urls) as the store lists; each node hears of the change on its own."""
        want = float(len(self.qodctl_json("deliveries", "gone", "--limit", "10000000", "--json")))

        def gauge(node):
            r = expect_status(self._request_at(node.port, "GET", "/metrics"), 200)
            return _parse_metrics(r).get("qod_delivery_gone_urls")
        self._await_nodes(self._nodes(), lambda node: gauge(node) == want,
                          "cluster node %d to forget the URL `qodctl deliveries forget-gone` named")

    def _await_peers_secret(self, args, stdout):
        """After `app rotate-secret CLIENT_ID` through node 0: waits until every running peer issues a token for the
        new secret, read from what qodctl printed (JSON or text)."""
        try:
            secret = json.loads(stdout)["client_secret"]
        except (ValueError, KeyError, TypeError):
            m = re.search(r"^client_secret\s+(\S+)", stdout, re.M)
            assert m, "no client_secret in what `qodctl app rotate-secret` printed: %r" % stdout
            secret = m.group(1)
        form = {"grant_type": "client_credentials"}

        def issued(peer):
            return self._request_at(peer.port, "POST", "/oauth2/token", form=form, auth=(args[2], secret)).status == 200
        self._await_nodes(self.peers, issued, "cluster node %d to take the secret `qodctl app rotate-secret` made")

    def qodctl_json(self, *args):
        p = self.qodctl(*args)
        try:
            return json.loads(p.stdout)
        except ValueError:
            raise AssertionError("qodctl %s did not print JSON: %r" % (" ".join(map(str, args)), p.stdout)) from None


class _Peer(Daemon):
    """Node i (>= 1) of a cluster Daemon (root): its own port, data directory and log under root.base; root's args
    (less --listen and --data) and env at each start. Started, stopped and logged only through root."""

    def __init__(self, root, i):
        self._root = root
        self.base = os.path.join(root.base, "node%d" % i)
        os.mkdir(self.base, 0o700)
        self.own_data = True
        self.data_dir = os.path.join(self.base, "data")
        os.mkdir(self.data_dir, 0o700)
        self.log_path = os.path.join(self.base, "qodd.log")
        self.stdout_path = None
        self.valgrind_log = os.path.join(self.base, "valgrind.%p.log")
        self.cli_listen = self.cli_data = True
        self.log_level = root.log_level
        self.fixed_port = False
        self.port = free_port()
        self.host = root.host
        self.proc = None
        self.closed = False
        self.pg_uri = root.pg_uri
        self.peers = []
        self.cluster_size = 1

    @property
    def args(self):
        out, skip_next = [], False
        for a in self._root.args:
            a = str(a)
            if skip_next:
                skip_next = False
            elif a in ("--listen", "--data"):
                skip_next = True
            elif not a.startswith(("--listen=", "--data=")):
                out.append(a)
        return out

    @property
    def env(self):
        return self._root.env


class _ClusterSession:
    """Session's interface over a cluster: one keep-alive connection per node, each request on the next node's
    (CIBA on node 0's). connects is the most TCP connections opened to any one node: 1 while every node kept its
    connection open."""

    def __init__(self, daemon, timeout):
        self.daemon = daemon
        self.timeout = timeout
        self.by_port = {}

    @property
    def connects(self):
        return max([s.connects for s in self.by_port.values()] or [0])

    def request(self, method, path, body=None, headers=None, token=None, form=None, raw=None, auth=None):
        data, _ = _prepare(body, headers, token, form, raw, auth)
        port = self.daemon._pick_port(path, data)
        s = self.by_port.get(port)
        if s is None:
            s = self.by_port[port] = Session(self.daemon.host, port, self.timeout)
        return s.request(method, path, body=body, headers=headers, token=token, form=form, raw=raw, auth=auth)

    def close(self):
        for s in self.by_port.values():
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _EarlyExit(Exception):
    def __init__(self, msg, log_tail):
        super().__init__(msg)
        self.log_tail = log_tail


# ---------------------------------------------------------------------------------------------------------------
# Apps and tokens


def scope_list(v):
    """Scopes as a list, whether the daemon printed a space-separated string or a JSON array."""
    if v is None:
        return []
    if isinstance(v, str):
        return v.split()
    return list(v)


def create_app(d, env="sandbox", scopes=None, name="test", extra=()):
    """`qodctl app create --name N --env E [--scopes S] --json` → dict with client_id, client_secret,
    webhook_secret, env, scopes. scopes may be a string or a list."""
    args = ["app", "create", "--name", name, "--env", env]
    if scopes is not None:
        args += ["--scopes", scopes if isinstance(scopes, str) else " ".join(scopes)]
    args += list(extra) + ["--json"]
    app = d.qodctl_json(*args)
    for k in ("client_id", "client_secret"):
        assert k in app, "app create --json lacks %r: %r" % (k, app)
    return app


def token_response(d, app, scope=None, grant_type="client_credentials"):
    form = {"grant_type": grant_type}
    if scope is not None:
        form["scope"] = scope
    return d.request("POST", "/oauth2/token", form=form, auth=(app["client_id"], app["client_secret"]))


def get_token(d, app, scope=None):
    """An access token for app (client credentials, HTTP Basic)."""
    r = token_response(d, app, scope)
    assert r.status == 200, "token request failed: %r" % r
    return r.json()["access_token"]


__all__ += ["token_response"]


def make_tls_cert(directory, name="cert", cn="127.0.0.1"):
    """A self-signed P-256 certificate (CA:TRUE, so it can be its own trust anchor) and its key, written to
    directory as NAME.pem and NAME-key.pem (cert.pem and key.pem for the default name); an IP address as cn is
    also its subjectAltName. Returns (cert, key)."""
    cert = os.path.join(directory, name + ".pem")
    key = os.path.join(directory, "key.pem" if name == "cert" else name + "-key.pem")
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn]
    if re.match(r"^[0-9.]+$", cn):
        argv += ["-addext", "subjectAltName=IP:" + cn]
    p = subprocess.run(argv, capture_output=True, text=True)
    assert p.returncode == 0, "openssl req failed: %s" % p.stderr
    return cert, key


def without(body, key):
    """A copy of the dict body without key (which it has)."""
    b = dict(body)
    del b[key]
    return b


__all__ += ["make_tls_cert", "without"]


def metrics(d):
    """GET /metrics as {"name{labels}": float} (lines whose value is not a number are left out)."""
    return _parse_metrics(expect_status(d.request("GET", "/metrics"), 200))


def metric_sum(d, name):
    """A counter summed over d's running nodes (one node outside a cluster run): metrics are per node."""
    total = 0.0
    for node in d._nodes():
        if node._running_one():
            total += _parse_metrics(expect_status(d._request_at(node.port, "GET", "/metrics"), 200)).get(name, 0.0)
    return total


def _parse_metrics(r):
    out = {}
    for line in r.text.splitlines():
        m = re.match(r"^([^#\s]\S*)\s+(\S+)$", line)
        if m:
            try:
                out[m.group(1)] = float(m.group(2))
            except ValueError:
                pass
    return out


__all__ += ["metrics", "metric_sum"]


# ---------------------------------------------------------------------------------------------------------------
# Fresh device identifiers, never handed out twice in one test process

_used = set()
_used_lock = threading.Lock()
_rng = random.SystemRandom()
_cell = [100]


def _unique(make):
    with _used_lock:
        while True:
            v = make()
            if v not in _used:
                _used.add(v)
                return v


def new_phone():
    """A fresh +1555xxxxxxx number (outside the sandbox table, so: happy path)."""
    return _unique(lambda: "+1555%07d" % _rng.randrange(10 ** 7))


def new_ipv4():
    return _unique(lambda: "10.%d.%d.%d" % (_rng.randrange(256), _rng.randrange(256), _rng.randrange(1, 255)))


def new_ipv6():
    return _unique(lambda: "2001:db8:%x:%x::%x" % (_rng.randrange(65536), _rng.randrange(65536),
                                                   _rng.randrange(1, 65536)))


def new_nai():
    return _unique(lambda: "user-%s@example.com" % uuid.uuid4().hex[:12])


def new_cell():
    """A fresh cell id for `qodctl device add --cell` (cells of the simulated network)."""
    with _used_lock:
        _cell[0] += 1
        return _cell[0]


__all__ += ["new_phone", "new_ipv4", "new_ipv6", "new_nai", "new_cell"]


def new_app(d, name="app", env="sandbox", scopes=None, extra=()):
    """An app without a rate limit (the tests poll a lot) and a token for it."""
    a = create_app(d, env=env, name=name, scopes=scopes, extra=("--rate-limit", "0") + tuple(extra))
    return a, get_token(d, a)


def add_device(d, phone, *opts):
    """Registers a live subscriber (`qodctl device add --phone PHONE OPTS…`)."""
    d.qodctl("device", "add", "--phone", phone, *[str(o) for o in opts])


def event_of(hook):
    """The JSON object a callback carried, or None."""
    try:
        ev = json.loads(hook.body)
    except ValueError:
        return None
    return ev if isinstance(ev, dict) else None


RFC3339_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def parse_time(s):
    """Unix seconds of an RFC 3339 date-time with a time zone (asserts the format)."""
    assert isinstance(s, str) and RFC3339_RE.match(s), "not an RFC 3339 date-time with time zone: %r" % (s,)
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()


__all__ += ["new_app", "add_device", "event_of", "RFC3339_RE", "parse_time"]


# ---------------------------------------------------------------------------------------------------------------
# Assertions with useful messages


def expect_status(resp, status):
    assert resp.status == status, "expected HTTP %d, got %r" % (status, resp)
    return resp


def expect_camara_error(resp, status, code=None):
    """Asserts a CAMARA error: HTTP status, JSON body {"status": status, "code": code, "message": str}."""
    expect_status(resp, status)
    ct = resp.headers.get("content-type", "")
    assert ct.startswith("application/json"), "error Content-Type is %r: %r" % (ct, resp)
    b = resp.json()
    assert isinstance(b, dict), b
    assert b.get("status") == status, "body status %r != %d: %r" % (b.get("status"), status, b)
    if code is not None:
        assert b.get("code") == code, "body code %r != %r: %r" % (b.get("code"), code, b)
    assert isinstance(b.get("message"), str), "body message missing: %r" % b
    return b


def expect_oauth_error(resp, status, error):
    """Asserts an RFC 6749 §5.2 error body {"error": error, ...}."""
    expect_status(resp, status)
    b = resp.json()
    assert isinstance(b, dict) and b.get("error") == error, "expected error %r, got %r" % (error, b)
    return b


# ---------------------------------------------------------------------------------------------------------------
# Webhook receiver


class Hook:
    """One request received by a WebhookReceiver."""

    def __init__(self, method, path, header_list, body, t):
        self.method, self.path, self.header_list, self.body, self.time = method, path, header_list, body, t
        self.headers = Headers(header_list)

    def json(self):
        try:
            return json.loads(self.body)
        except ValueError:
            raise AssertionError("webhook body is not JSON: %r" % self.body[:500]) from None

    def __repr__(self):
        return "<Hook %s %s %r>" % (self.method, self.path, self.body[:300])


class WebhookReceiver:
    """A threaded HTTP/1.1 server on 127.0.0.1 that records every request.

    Answers come from, in order: the queue filled by respond() (one entry per request), else the function given as
    `responder(hook) -> (status, headers_dict, body_bytes)` or None, else `default` (status, headers, body).
    An answer may carry a delay in seconds (respond(..., delay=2)) to simulate a slow sink.
    With certfile/keyfile it speaks HTTPS. port: listen on this port (default 0: the kernel's pick)."""

    def __init__(self, responder=None, default=(200, {}, b""), certfile=None, keyfile=None, port=0):
        self.requests = []
        self.cond = threading.Condition()
        self.queue = []
        self.responder = responder
        self.default = default
        self.closed = False
        recv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
                    body = self._read_chunked()
                hook = Hook(self.command, self.path, list(self.headers.items()), body, time.time())
                status, headers, rbody, delay = recv._answer(hook)
                with recv.cond:
                    recv.requests.append(hook)
                    recv.cond.notify_all()
                if delay:
                    time.sleep(delay)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(rbody)))
                    self.end_headers()
                    if rbody:
                        self.wfile.write(rbody)
                except OSError:
                    pass

            def _read_chunked(self):
                out = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()

            do_POST = do_GET = do_PUT = do_DELETE = do_PATCH = _handle

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", port or free_port()), Handler)
        self.tls = certfile is not None
        if self.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(certfile, keyfile)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        _live_receivers.add(self)

    def _answer(self, hook):
        with self.cond:
            if self.queue:
                return self.queue.pop(0)
        if self.responder is not None:
            r = self.responder(hook)
            if r is not None:
                r = tuple(r)
                return (r + (None, {}, b"", 0)[len(r):]) if len(r) < 4 else r
        s, h, b = self.default
        return s, h, b, 0

    def respond(self, status=200, headers=None, body=b"", delay=0, times=1):
        """Queues the answer for the next `times` requests."""
        if isinstance(body, str):
            body = body.encode()
        with self.cond:
            for _ in range(times):
                self.queue.append((status, dict(headers or {}), body, delay))

    def url(self, path="/cb"):
        return "%s://127.0.0.1:%d%s" % ("https" if self.tls else "http", self.port, path)

    def count(self):
        with self.cond:
            return len(self.requests)

    def wait_for(self, n, timeout=10):
        """Blocks until at least n requests arrived (returns the first n) or the scaled timeout passes."""
        deadline = time.monotonic() + scaled(timeout)
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("webhook receiver got %d of %d requests within %ss: %r"
                                         % (len(self.requests), n, scaled(timeout), self.requests))
                self.cond.wait(left)
            return list(self.requests[:n])

    def wait_until(self, pred, timeout=10, what="matching webhook"):
        """Blocks until pred(list_of_hooks) is truthy; returns its value."""
        deadline = time.monotonic() + scaled(timeout)
        with self.cond:
            while True:
                v = pred(list(self.requests))
                if v:
                    return v
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("timed out after %ss waiting for %s; got %r"
                                         % (scaled(timeout), what, self.requests))
                self.cond.wait(left)

    def expect_quiet(self, n, period):
        """Asserts no request beyond the first n arrives within period seconds (not scaled: a negative check)."""
        deadline = time.monotonic() + period
        with self.cond:
            while len(self.requests) <= n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self.cond.wait(left)
            raise AssertionError("unexpected extra webhook: %r" % self.requests[n:])

    def close(self):
        if self.closed:
            return
        self.closed = True
        _live_receivers.discard(self)
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------------------------------------------------------
# Standard Webhooks 1.0


class WebhookVerifyError(AssertionError):
    pass


def _whsec_key(secret):
    if secret.startswith("whsec_"):
        secret = secret[len("whsec_"):]
    return base64.b64decode(secret, validate=True)


def sign_standard_webhook(secret, msg_id, timestamp, body):
    """The `webhook-signature` value ("v1,<base64>") for body (bytes) under a whsec_ secret."""
    if isinstance(body, str):
        body = body.encode()
    content = ("%s.%s." % (msg_id, timestamp)).encode() + body
    mac = hmac.new(_whsec_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def verify_standard_webhook(secret, headers, body, tolerance=300, now=None):
    """Verifies a Standard Webhooks 1.0 request and returns its parsed JSON body.

    headers: any mapping (case-insensitive lookup is done here) or a Hook's Headers. Raises WebhookVerifyError
    when a header is missing, the timestamp is outside ±tolerance seconds (None disables the check) or no v1
    signature in the space-separated list matches."""
    if isinstance(body, str):
        body = body.encode()
    h = {k.lower(): v for k, v in headers.items()}
    msg_id, ts, sigs = h.get("webhook-id"), h.get("webhook-timestamp"), h.get("webhook-signature")
    if not msg_id or not ts or not sigs:
        raise WebhookVerifyError("missing webhook-id/-timestamp/-signature header: %r" % h)
    if not re.fullmatch(r"\d+", ts):
        raise WebhookVerifyError("webhook-timestamp is not unix seconds: %r" % ts)
    if tolerance is not None:
        now = time.time() if now is None else now
        if abs(now - int(ts)) > tolerance:
            raise WebhookVerifyError("webhook-timestamp %s is %ds away from now" % (ts, now - int(ts)))
    expected = sign_standard_webhook(secret, msg_id, ts, body).split(",", 1)[1]
    for part in sigs.split(" "):
        if "," not in part:
            continue
        version, sig = part.split(",", 1)
        if version == "v1" and hmac.compare_digest(sig, expected):
            try:
                return json.loads(body) if body else None
            except ValueError:
                return body
    raise WebhookVerifyError("no matching v1 signature in %r" % sigs)


# ---------------------------------------------------------------------------------------------------------------
# base64url and JWT helpers


def b64url(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(s):
    if isinstance(s, bytes):
        s = s.decode()
    if not re.fullmatch(r"[A-Za-z0-9_-]*", s):
        raise ValueError("not base64url: %r" % s[:80])
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_split(token):
    """(header_b64, payload_b64, signature_b64) of a compact JWS."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a compact JWS (%d parts)" % len(parts))
    return tuple(parts)


def jwt_parts(token):
    """(header dict, payload dict), decoded without verification."""
    h, p, _ = jwt_split(token)
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p))


def _compact(header, payload):
    enc = lambda x: b64url(x if isinstance(x, (bytes, str)) else json.dumps(x, separators=(",", ":")))
    return enc(header) + "." + enc(payload)


def forge_token(header, payload, signature=b"", key=None, hmac_key=None):
    """Builds a compact JWS from header and payload (dicts, or bytes used verbatim). The signature is ES256 with
    key (an EcKey with a private part), HS256 with hmac_key (bytes), or the given raw signature bytes."""
    signing_input = _compact(header, payload)
    if key is not None:
        signature = key.sign(signing_input.encode())
    elif hmac_key is not None:
        signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64url(signature)


def token_alg_none(token):
    """The token's claims under {"alg":"none"} with an empty signature."""
    header, payload = jwt_parts(token)
    header = dict(header, alg="none")
    return _compact(header, payload) + "."


def token_hs256(token, secret):
    """The token's claims re-signed with HS256 under secret (the "alg confusion" attack when secret is the
    server's public key material)."""
    header, payload = jwt_parts(token)
    header = dict(header, alg="HS256")
    return forge_token(header, payload, hmac_key=secret if isinstance(secret, bytes) else secret.encode())


def token_flip_payload(token):
    """The token with one character of a claim value changed (still valid base64url and JSON), signature kept."""
    h, p, s = jwt_split(token)
    raw = bytearray(b64url_decode(p))
    # Change a character inside a string value, preferring the jti (which no other check looks at, so only the
    # signature can catch it): a letter's case is flipped, a digit incremented.
    m = (re.search(rb'"jti"\s*:\s*"[^"]*?([A-Za-z0-9])', bytes(raw))
         or re.search(rb':\s*"([A-Za-z0-9])', bytes(raw)))
    assert m, "no string claim to flip in %r" % bytes(raw)
    i = m.start(1)
    c = raw[i]
    raw[i] = (c ^ 0x20) if chr(c).isalpha() else (ord("0") + (c - ord("0") + 1) % 10)
    return h + "." + b64url(bytes(raw)) + "." + s


def token_tamper_claims(token, **changes):
    """The token with claims changed (e.g. exp=...), original header and signature kept."""
    header, payload = jwt_parts(token)
    payload.update(changes)
    return _compact(header, payload) + "." + jwt_split(token)[2]


def token_flip_signature(token):
    """The token with one bit of its signature flipped."""
    h, p, s = jwt_split(token)
    sig = bytearray(b64url_decode(s))
    sig[-1] ^= 0x01
    return h + "." + p + "." + b64url(bytes(sig))


# ---------------------------------------------------------------------------------------------------------------
# P-256 ECDSA in pure Python (enough to verify the daemon's ES256 tokens and to mint tokens with its key).

_P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffff
_A = _P - 3
_B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604b
_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551
_G = (0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296,
      0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5)


def _on_curve(pt):
    x, y = pt
    return 0 <= x < _P and 0 <= y < _P and (y * y - (x * x * x + _A * x + _B)) % _P == 0


# Jacobian coordinates (X, Y, Z) with x = X/Z^2, y = Y/Z^3; None is the point at infinity.
def _jdouble(p):
    if p is None:
        return None
    x, y, z = p
    if y == 0:
        return None
    ysq = y * y % _P
    s = 4 * x * ysq % _P
    m = (3 * x * x + _A * pow(z, 4, _P)) % _P
    nx = (m * m - 2 * s) % _P
    ny = (m * (s - nx) - 8 * ysq * ysq) % _P
    nz = 2 * y * z % _P
    return (nx, ny, nz)


def _jadd(p, q):
    if p is None:
        return q
    if q is None:
        return p
    x1, y1, z1 = p
    x2, y2, z2 = q
    z1s, z2s = z1 * z1 % _P, z2 * z2 % _P
    u1, u2 = x1 * z2s % _P, x2 * z1s % _P
    s1, s2 = y1 * z2s * z2 % _P, y2 * z1s * z1 % _P
    if u1 == u2:
        return _jdouble(p) if s1 == s2 else None
    h, r = (u2 - u1) % _P, (s2 - s1) % _P
    h2 = h * h % _P
    h3 = h * h2 % _P
    u1h2 = u1 * h2 % _P
    nx = (r * r - h3 - 2 * u1h2) % _P
    ny = (r * (u1h2 - nx) - s1 * h3) % _P
    nz = h * z1 * z2 % _P
    return (nx, ny, nz)


def _jmul(k, pt):
    r = None
    q = (pt[0], pt[1], 1)
    while k:
        if k & 1:
            r = _jadd(r, q)
        q = _jdouble(q)
        k >>= 1
    return r


def _affine(p):
    if p is None:
        return None
    x, y, z = p
    zi = pow(z, -1, _P)
    return (x * zi * zi % _P, y * zi * zi * zi % _P)


def es256_verify(x, y, message, signature):
    """True when signature (64 bytes r||s, JWS form) is a valid ECDSA P-256/SHA-256 signature of message
    under the public key (x, y) (ints or 32-byte big-endian bytes)."""
    if isinstance(x, bytes):
        x = int.from_bytes(x, "big")
    if isinstance(y, bytes):
        y = int.from_bytes(y, "big")
    if len(signature) != 64 or not _on_curve((x, y)):
        return False
    r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    if not (1 <= r < _N and 1 <= s < _N):
        return False
    z = int.from_bytes(hashlib.sha256(message).digest(), "big")
    w = pow(s, -1, _N)
    pt = _affine(_jadd(_jmul(z * w % _N, _G), _jmul(r * w % _N, (x, y))))
    return pt is not None and pt[0] % _N == r


def _der_read(buf, i):
    """(tag, value bytes, next index) of the DER TLV at buf[i]."""
    tag = buf[i]
    ln = buf[i + 1]
    i += 2
    if ln & 0x80:
        nb = ln & 0x7f
        ln = int.from_bytes(buf[i:i + nb], "big")
        i += nb
    return tag, buf[i:i + ln], i + ln


def _der_children(buf):
    out, i = [], 0
    while i < len(buf):
        tag, val, i = _der_read(buf, i)
        out.append((tag, val))
    return out


class EcKey:
    """A P-256 key: d (private scalar or None) and the public point (x, y)."""

    def __init__(self, d=None, x=None, y=None):
        self.d = d
        if d is not None and x is None:
            x, y = _affine(_jmul(d, _G))
        self.x, self.y = x, y

    @classmethod
    def generate(cls):
        return cls(d=secrets.randbelow(_N - 1) + 1)

    @classmethod
    def from_pem(cls, text):
        """Loads an unencrypted "EC PRIVATE KEY" (SEC1) or "PRIVATE KEY" (PKCS#8) PEM holding a P-256 key."""
        if isinstance(text, bytes):
            text = text.decode()
        m = re.search(r"-----BEGIN (EC PRIVATE KEY|PRIVATE KEY)-----(.*?)-----END \1-----", text, re.S)
        if not m:
            raise ValueError("no unencrypted EC/PKCS#8 private key in PEM")
        der = base64.b64decode("".join(m.group(2).split()))
        _, seq, _ = _der_read(der, 0)
        items = _der_children(seq)
        if m.group(1) == "PRIVATE KEY":
            # PKCS#8: version, AlgorithmIdentifier, OCTET STRING wrapping the SEC1 ECPrivateKey.
            octet = [v for t, v in items if t == 0x04][0]
            _, seq, _ = _der_read(octet, 0)
            items = _der_children(seq)
        d = int.from_bytes([v for t, v in items if t == 0x04][0], "big")
        return cls(d=d)

    def sign(self, message):
        """ES256 signature (64 bytes r||s) of message."""
        assert self.d is not None, "public key only"
        z = int.from_bytes(hashlib.sha256(message).digest(), "big")
        while True:
            k = secrets.randbelow(_N - 1) + 1
            r = _affine(_jmul(k, _G))[0] % _N
            if r == 0:
                continue
            s = pow(k, -1, _N) * (z + r * self.d) % _N
            if s:
                return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def verify(self, message, signature):
        return es256_verify(self.x, self.y, message, signature)

    def jwk(self):
        return {"kty": "EC", "crv": "P-256", "x": b64url(self.x.to_bytes(32, "big")),
                "y": b64url(self.y.to_bytes(32, "big"))}


def jwk_public_numbers(jwk):
    """(x, y) ints of an EC P-256 JWK."""
    return int.from_bytes(b64url_decode(jwk["x"]), "big"), int.from_bytes(b64url_decode(jwk["y"]), "big")


def jwk_thumbprint(jwk):
    """RFC 7638 thumbprint (base64url SHA-256) of an EC JWK."""
    canon = '{"crv":"%s","kty":"EC","x":"%s","y":"%s"}' % (jwk["crv"], jwk["x"], jwk["y"])
    return b64url(hashlib.sha256(canon.encode()).digest())
