#!/usr/bin/env python3
"""`make bench`: measures qodd against an nginx reference on the loopback interface (Python 3 standard library only).

    python3 bench/run.py --build build/bench [--quick | --smoke] [--out DIR] [--only a,b] [--perf DIR]

Installs wrk and nginx from Debian when they are missing, describes the machine, measures the reference (nginx, two
workers, a fixed 200-byte JSON body) and then the scenarios of issue 9 with the same wrk settings:

  get_v0, get_v1            authenticated GET of one session (Konera v0, CAMARA v1)
  create_sync_full          authenticated POST creating sessions, each for a distinct device, --sync full (default)
  create_sync_normal        the same with --sync normal
  lifecycle                 create, get x3, delete per session (v0)
  token                     POST /oauth2/token (client credentials, HTTP Basic)
  scale                     N sessions held: resident memory and the restart time until ready to serve
  mass_expiry               M sessions expiring at the same instant: all EXPIRED and their callbacks delivered
  callbacks                 signed callbacks per second to a local keep-alive receiver (nginx answering 204)
  callback_backlog          a backlog built while the receiver is down, drained when it comes back
  pg_create_1node           create_sync_full and get_v0 with qodd on PostgreSQL (--store postgres://…)
  pg_create_2nodes          the same on two nodes sharing one database (--cluster-node), load spread over both

Every throughput is reported absolute and as a ratio to the reference. Results go to bench/results.json and to the
section "API and engine benchmarks (make bench)" of docs/benchmarks.md (with --out DIR: DIR/results.json and
DIR/benchmarks.md, and nothing under docs/). --quick runs a one-minute subset, --smoke a tiny load (seconds) for the
test suite. Exits 0 when every scenario ran (targets met or not), 1 when one failed to run.

Sessions for the scale, expiry and callback scenarios are written straight into the SQLite store while qodd is
stopped, in the row format src/core/engine.c writes (session_doc), then qodd is started on them: creating a million
sessions through the API would take longer than the whole time budget.

The pg_* scenarios start a throw-away PostgreSQL 15 cluster (tests/tools/pgtmp.sh, as the postgres user, in a
directory under /tmp; apt-get install postgresql when its server binaries are missing, except in --smoke mode) with
a fresh database per scenario, and stop it however the run ends. They have no targets: figures only. Without
PostgreSQL they are reported as skipped, which is not a failure.
"""
import argparse
import base64
import datetime
import http.client
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LUA = os.path.join(ROOT, "bench", "lua")
SECTION = "## API and engine benchmarks (make bench)"
FINDINGS = os.path.join(ROOT, "bench", "findings.md")

# Per mode: seconds per wrk run, sessions held (scale), sessions expiring together, callbacks, backlog size,
# seconds between the start of qodd and the common expiry instant, and the upper bound of the waits.
MODES = {
    "full": dict(secs=10, scale=1_000_000, expiring=100_000, callbacks=100_000, backlog=100_000, lead=8, wait=120),
    "quick": dict(secs=3, scale=100_000, expiring=10_000, callbacks=10_000, backlog=10_000, lead=4, wait=60),
    "smoke": dict(secs=1, scale=1000, expiring=1000, callbacks=1000, backlog=1000, lead=3, wait=30),
}
WRK_THREADS, WRK_CONNS = 2, 64
SCENARIOS = ["get_v0", "get_v1", "create_sync_full", "create_sync_normal", "lifecycle", "token", "scale",
             "mass_expiry", "callbacks", "callback_backlog", "pg_create_1node", "pg_create_2nodes"]
PG_SCENARIOS = ("pg_create_1node", "pg_create_2nodes")
PG_BIN = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
PGTMP = os.path.join(ROOT, "tests", "tools", "pgtmp.sh")
V0 = "/camara/qod/v0/sessions"
V1 = "/quality-on-demand/v1/sessions"
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"

_procs = []  # everything we started, stopped on exit whatever happens


def log(msg):
    sys.stdout.write("[bench] %s\n" % msg)
    sys.stdout.flush()


def which(cmd):
    return shutil.which(cmd, path=SBIN_PATH)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def run_cmd(argv, timeout=60, **kw):
    return subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Tools and machine


def ensure_tools():
    """Installs wrk and nginx from Debian when missing (apt-get update only if the first install fails)."""
    missing = [pkg for cmd, pkg in (("wrk", "wrk"), ("nginx", "nginx")) if not which(cmd)]
    if not missing:
        return
    if os.geteuid() != 0:
        raise SystemExit("bench: %s missing and not root: install with apt-get install %s"
                         % (", ".join(missing), " ".join(missing)))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=120", "--no-install-recommends"] + missing
    log("installing " + " ".join(missing))
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=120"], env=env,
                       stdout=subprocess.DEVNULL)
        if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            raise SystemExit("bench: apt-get install %s failed" % " ".join(missing))
    still = [c for c in ("wrk", "nginx") if not which(c)]
    if still:
        raise SystemExit("bench: still missing after install: " + ", ".join(still))


def first_line(argv, stderr=False):
    try:
        p = run_cmd(argv, timeout=10)
        text = (p.stderr if stderr else p.stdout) or p.stdout or p.stderr
        return text.strip().splitlines()[0].strip() if text.strip() else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kb = 0
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_kb = int(line.split()[1])
    except OSError:
        pass
    osname = "?"
    try:
        with open("/etc/os-release") as f:
            for line in f:
                if line.startswith("PRETTY_NAME="):
                    osname = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    libs = {}
    for pkg in ("libmicrohttpd", "libcurl", "libcjson", "openssl", "sqlite3", "libnl-route-3.0"):
        libs[pkg] = first_line(["pkg-config", "--modversion", pkg])
    commit = first_line(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"])
    try:
        dirty = bool(run_cmd(["git", "-C", ROOT, "status", "--porcelain", "-uno", "--", "src"], timeout=10).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        dirty = False
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gib": round(mem_kb / 1048576, 1),
        "kernel": platform.release(),
        "os": osname,
        "libraries": libs,
        "cc": first_line(["cc", "--version"]),
        "wrk": first_line(["wrk", "-v"]),
        "nginx": first_line([which("nginx") or "nginx", "-v"], stderr=True),
        "python": platform.python_version(),
        "commit": commit + (" (src/ modified)" if dirty else ""),
        "loadavg_start": load,
    }


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """User and system CPU seconds used so far by the processes pids (all their threads)."""
    u = k = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            u += int(fields[11])
            k += int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return u / CLK_TCK, k / CLK_TCK


def io_bytes(pids):
    """(wchar, write_bytes) of the processes: bytes passed to write calls (files; socket sends use sendmsg and
    are not counted) and bytes sent to the block layer."""
    w = b = 0
    for pid in pids:
        try:
            with open("/proc/%d/io" % pid) as f:
                kv = dict(line.split(":", 1) for line in f if ":" in line)
            w += int(kv["wchar"])
            b += int(kv["write_bytes"])
        except (OSError, KeyError, ValueError):
            pass
    return w, b


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open("/proc/%s/stat" % d) as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


# ---------------------------------------------------------------------------------------------------------------
# nginx: the reference and the callback receivers

REF_BODY_LEN = 200


def reference_body():
    head = ('{"sessionId":"3fa85f64-5717-4562-b3fc-2c963f66afa6","qosProfile":"QOS_L","qosStatus":"AVAILABLE",'
            '"startedAt":"2026-01-01T00:00:00Z","expiresAt":"2026-01-01T01:00:00Z","duration":3600,"pad":"')
    tail = '"}'
    body = head + "x" * (REF_BODY_LEN - len(head) - len(tail)) + tail
    assert len(body) == REF_BODY_LEN
    return body


class Nginx:
    """nginx with 2 workers in its own prefix directory. servers: [(port, "ref" | "204")]. Started in the
    foreground (daemon off) so that we own its master process."""

    def __init__(self, base, servers, workers=2):
        self.base = base
        self.servers = servers
        self.proc = None
        os.makedirs(os.path.join(base, "tmp"), exist_ok=True)
        os.chmod(base, 0o755)
        os.chmod(os.path.join(base, "tmp"), 0o777)
        blocks = []
        for port, kind in servers:
            if kind == "ref":
                loc = "default_type application/json; return 200 '%s';" % reference_body()
            else:
                loc = "return 204;"
            blocks.append("    server { listen 127.0.0.1:%d backlog=4096; location / { %s } }" % (port, loc))
        t = os.path.join(base, "tmp")
        self.conf = os.path.join(base, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write("worker_processes %d;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\n"
                    "worker_rlimit_nofile 65536;\nevents { worker_connections 8192; }\nhttp {\n"
                    "    access_log off;\n    keepalive_requests 1000000;\n    keepalive_timeout 120s;\n"
                    "    client_body_temp_path %s/body;\n    proxy_temp_path %s/proxy;\n"
                    "    fastcgi_temp_path %s/fcgi;\n    uwsgi_temp_path %s/uwsgi;\n    scgi_temp_path %s/scgi;\n"
                    "%s\n}\n" % (workers, base, base, t, t, t, t, t, "\n".join(blocks)))

    def start(self):
        with open(os.path.join(self.base, "stderr.log"), "ab") as err:
            self.proc = subprocess.Popen([which("nginx"), "-p", self.base, "-c", self.conf, "-e",
                                          os.path.join(self.base, "error.log")],
                                         stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        _procs.append(self)
        for port, _ in self.servers:
            if not wait_port(port, 10, self.proc):
                self.stop()
                raise RuntimeError("nginx did not listen on %d: %s" % (port, self.errors()))
        return self

    def errors(self):
        out = []
        for n in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.base, n), errors="replace") as f:
                    out.append(f.read()[-2000:])
            except OSError:
                pass
        return "\n".join(out)

    def pids(self):
        return [self.proc.pid] + children_of(self.proc.pid)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self in _procs:
            _procs.remove(self)


# ---------------------------------------------------------------------------------------------------------------
# qodd


class Response:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


def http_request(port, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Response(r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read())
    finally:
        conn.close()


class Qodd:
    """build/bench/qodd on a free loopback port with a data directory under base."""

    def __init__(self, build, base, name, args=()):
        self.build = build
        self.base = os.path.join(base, name)
        os.makedirs(self.base, exist_ok=True)
        self.data = os.path.join(self.base, "data")
        os.makedirs(self.data, mode=0o700, exist_ok=True)
        self.args = list(args)
        self.port = free_port()
        self.proc = None
        self.spawned = 0.0
        self.empty_rss_kb = 0

    def pids(self):
        return [self.proc.pid]

    def argv(self):
        return [os.path.join(self.build, "qodd"), "--listen", "127.0.0.1:%d" % self.port, "--data", self.data,
                "--log-level", "warn"] + self.args

    def command(self):
        """The command line as documented (build-relative, data dir elided)."""
        return " ".join([os.path.join(os.path.relpath(self.build, ROOT), "qodd"), "--listen", "127.0.0.1:PORT",
                         "--data", "DIR", "--log-level", "warn"] + self.args)

    def start(self, wait=True, timeout=30):
        with open(os.path.join(self.base, "qodd.log"), "ab") as lf:
            self.spawned = time.monotonic()
            self.proc = subprocess.Popen(self.argv(), stdout=lf, stderr=lf, stdin=subprocess.DEVNULL,
                                         cwd=self.base, start_new_session=True)
        _procs.append(self)
        if wait:
            self.wait_ok("/healthz", timeout)
        return self

    def wait_ok(self, path, timeout, headers=None):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("qodd exited with %s; log: %s" % (self.proc.returncode, self.log_tail()))
            try:
                r = http_request(self.port, "GET", path, headers=headers, timeout=2)
                if r.status == 200:
                    return r
                last = r.status
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.01)
        raise RuntimeError("qodd: GET %s not 200 within %ss (last %s); log: %s" % (path, timeout, last,
                                                                                   self.log_tail()))

    def log_tail(self, n=3000):
        try:
            with open(os.path.join(self.base, "qodd.log"), errors="replace") as f:
                return f.read()[-n:]
        except OSError:
            return ""

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in _procs:
            _procs.remove(self)

    def request(self, method, path, body=None, token=None, headers=None, timeout=10):
        h = dict(headers or {})
        if token:
            h["Authorization"] = "Bearer " + token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        return http_request(self.port, method, path, body=body, headers=h, timeout=timeout)

    def qodctl(self, *args):
        p = run_cmd([os.path.join(self.build, "qodctl"), "--data", self.data] + [str(a) for a in args], timeout=60)
        if p.returncode != 0:
            raise RuntimeError("qodctl %s: %s %s" % (" ".join(map(str, args)), p.stdout, p.stderr))
        return p.stdout

    def metrics(self):
        r = self.request("GET", "/metrics", timeout=30)
        out = {}
        for line in r.body.decode(errors="replace").splitlines():
            if line and not line.startswith("#"):
                name, _, val = line.rpartition(" ")
                try:
                    out[name] = float(val)
                except ValueError:
                    pass
        return out

    def status_kb(self, field):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        return 0

    def app(self):
        """A sandbox app without rate limit or session quota, and a token with every scope."""
        app = json.loads(self.qodctl("app", "create", "--name", "bench", "--rate-limit", "0", "--max-sessions", "0",
                                     "--json"))
        return app, self.token(app)

    def token(self, app):
        basic = base64.b64encode(("%s:%s" % (app["client_id"], app["client_secret"])).encode()).decode()
        r = self.request("POST", "/oauth2/token", body="grant_type=client_credentials",
                         headers={"Authorization": "Basic " + basic,
                                  "Content-Type": "application/x-www-form-urlencoded"})
        if r.status != 200:
            raise RuntimeError("token: %d %r" % (r.status, r.body[:300]))
        return r.json()["access_token"]


def m(metrics, name):
    return metrics.get(name, 0.0)


# ---------------------------------------------------------------------------------------------------------------
# wrk


PORT_NAMES = {}  # port → name shown in documented commands (PORT, RECEIVER_PORT, ...)


def shown(text):
    text = re.sub(r"127\.0\.0\.1:(\d+)", lambda mo: "127.0.0.1:" + PORT_NAMES.get(int(mo.group(1)), "PORT"), text)
    return re.sub(r"/sessions/[0-9a-f-]{36}", "/sessions/$SESSION_ID", text)


def wrk_spec(url, secs, script, headers=(), env=None, token=None, threads=WRK_THREADS, conns=WRK_CONNS):
    """(argv, environment, command as documented) of a wrk run with a script of bench/lua."""
    argv = ["wrk", "-t%d" % threads, "-c%d" % conns, "-d%ds" % secs, "--latency", "-s", os.path.join(LUA, script)]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    full_env = dict(os.environ)
    full_env.update(env or {})
    env_text = " ".join("%s=%s" % (k, v) for k, v in sorted((env or {}).items()))
    shown_argv = [a if a != os.path.join(LUA, script) else "bench/lua/" + script for a in argv]
    shown_argv = ["'%s'" % a if " " in a else a for a in shown_argv]
    cmd = (env_text + " " if env_text else "") + " ".join(shown_argv)
    if token:
        cmd = cmd.replace(token, "$TOKEN")
    return argv, full_env, shown(cmd)


def wrk_parse(rc, stdout, stderr, cmd):
    """The result of one wrk run from the QOD_BENCH_JSON line of bench/lua/report.lua."""
    line = [l for l in stdout.splitlines() if l.startswith("QOD_BENCH_JSON ")]
    if rc != 0 or not line:
        raise RuntimeError("wrk failed (%d): %s %s" % (rc, stdout[-1500:], stderr[-1500:]))
    r = json.loads(line[-1][len("QOD_BENCH_JSON "):])
    secs_run = r["duration_us"] / 1e6
    return {
        "command": cmd,
        "requests": r["requests"],
        "seconds": round(secs_run, 3),
        "rate": round(r["requests"] / secs_run, 1) if secs_run > 0 else 0.0,
        "latency_ms": {k: round(v / 1000.0, 3) for k, v in r["latency_us"].items()},
        "errors": r["errors"],
        "non_2xx": r["errors"]["status"],
        "statuses": r["statuses"],
    }


def server_cpu(pids, s0, s1, io0, io1, c0, c1, n, secs_run):
    return {
        "server_user_us_per_req": round((s1[0] - s0[0]) * 1e6 / n, 1),
        "server_sys_us_per_req": round((s1[1] - s0[1]) * 1e6 / n, 1),
        "server_cores": round((s1[0] - s0[0] + s1[1] - s0[1]) / secs_run, 2) if secs_run else None,
        "wrk_us_per_req": round((c1.children_user - c0.children_user + c1.children_system - c0.children_system)
                                * 1e6 / n, 1),
        "server_file_write_kib_per_req": round((io1[0] - io0[0]) / 1024 / n, 2),
        "server_disk_write_kib_per_req": round((io1[1] - io0[1]) / 1024 / n, 2),
    }


def wrk(url, secs, script, headers=(), env=None, token=None, perf=None, perf_pid=None, server=None,
        threads=WRK_THREADS, conns=WRK_CONNS):
    """Runs wrk -t2 -c64 -d<secs>s --latency with a script of bench/lua; returns the parsed result."""
    argv, full_env, cmd = wrk_spec(url, secs, script, headers, env, token, threads, conns)
    perf_proc = None
    if perf and perf_pid:
        perf_args = os.environ.get("QOD_BENCH_PERF_ARGS", "-F 999 -g").split()
        perf_proc = subprocess.Popen(["perf", "record"] + perf_args + ["-p", str(perf_pid), "-o", perf],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = server.pids() if server else []
    s0 = cpu_seconds(pids)
    io0 = io_bytes(pids)
    c0 = os.times()
    try:
        p = run_cmd(argv, timeout=secs + 120, env=full_env)
        s1 = cpu_seconds(pids)
        io1 = io_bytes(pids)
        c1 = os.times()
    finally:
        if perf_proc:
            perf_proc.send_signal(signal.SIGINT)
            try:
                perf_proc.wait(60)
            except subprocess.TimeoutExpired:
                perf_proc.kill()
    r = wrk_parse(p.returncode, p.stdout, p.stderr, cmd)
    r["cpu"] = server_cpu(pids, s0, s1, io0, io1, c0, c1, max(r["requests"], 1), r["seconds"]) if server else None
    r["loadavg"] = loadavg()
    return r


def wrk_parallel(runs, secs, servers=()):
    """Several wrk processes at once, runs: [(url, script, kwargs of wrk_spec)], all for secs seconds. Returns the
    combined result (requests, rates, statuses and errors summed; each latency percentile the worse of the runs;
    server CPU over every process of servers) with the single runs under "parts"."""
    specs = [wrk_spec(url, secs, script, **kw) for url, script, kw in runs]
    pids = [pid for d in servers for pid in d.pids()]
    s0, io0, c0 = cpu_seconds(pids), io_bytes(pids), os.times()
    procs = []
    try:
        for argv, env, _ in specs:
            procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=secs + 120) for p in procs]
        s1, io1, c1 = cpu_seconds(pids), io_bytes(pids), os.times()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    parts = [wrk_parse(p.returncode, o[0], o[1], spec[2]) for p, o, spec in zip(procs, outs, specs)]
    statuses, errors = {}, {}
    for r in parts:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in r["errors"].items():
            errors[k] = errors.get(k, 0) + v
    n = sum(r["requests"] for r in parts)
    secs_run = max(r["seconds"] for r in parts)
    return {
        "command": "\n".join(r["command"] + " &" for r in parts) + "\nwait",
        "requests": n,
        "seconds": secs_run,
        "rate": round(sum(r["rate"] for r in parts), 1),
        "latency_ms": {k: max(r["latency_ms"][k] for r in parts) for k in parts[0]["latency_ms"]},
        "latency_note": "each percentile is the worse of the %d wrk processes" % len(parts),
        "errors": errors,
        "non_2xx": errors.get("status", 0),
        "statuses": statuses,
        "cpu": server_cpu(pids, s0, s1, io0, io1, c0, c1, max(n, 1), secs_run) if servers else None,
        "loadavg": loadavg(),
        "parts": parts,
    }


def target(what, value, op, limit, unit=""):
    met = value is not None and (value >= limit if op == ">=" else value <= limit)
    shown_limit = "{:,}".format(limit) if isinstance(limit, int) else "%.2f" % limit if limit < 10 else "%g" % limit
    return {"what": what, "value": value, "limit": limit,
            "target": "%s %s%s" % ("≥" if op == ">=" else "≤", shown_limit, unit), "met": bool(met)}


# ---------------------------------------------------------------------------------------------------------------
# Direct inserts into the store (qodd stopped)

SESSION_DOC = ('{"id":"%s","app":"%s","state":"%s","reason":"","surface":0,"sandbox":true,"duration":%d,'
               '"created_ms":%d,"available_ms":%d,"expires_ms":%d,"ended_ms":0,"events":%d,"profile":"QOS_L",'
               '"device":{"phoneNumber":"%s"},"device_key":"tel:%s","url":"%s","token":null,"extra":null}')


def insert_sessions(data_dir, app_id, n, prefix, state, url, duration_s, expires_ms=None):
    """Writes n v0 sandbox sessions (QOS_L, phone +1<prefix><8 digits>) into DIR/qod.db in the row format of
    src/core/engine.c session_doc: state "available" (as if provisioned, one event already sent) or "requested"
    (qodd provisions them at start). Returns the session ids of the first and the last row."""
    now = int(time.time() * 1000)
    exp = expires_ms if expires_ms is not None else now + duration_s * 1000
    created = exp - duration_s * 1000
    code = {"requested": 0, "available": 10}[state]
    avail = created if state == "available" else 0
    events = 1 if state == "available" else 0
    idp = "%08x-%04x-4%03x-8%03x-" % (random.getrandbits(32), random.getrandbits(16), random.getrandbits(12),
                                       random.getrandbits(12))

    def rows():
        for i in range(n):
            sid = "%s%012x" % (idp, i)
            phone = "+1%s%08d" % (prefix, i)
            yield (sid, app_id, "tel:" + phone, code, exp,
                   SESSION_DOC % (sid, app_id, state, duration_s, created, avail, exp, events, phone, phone, url))

    con = sqlite3.connect(os.path.join(data_dir, "qod.db"), isolation_level=None)
    try:
        con.execute("PRAGMA synchronous=OFF")
        con.execute("BEGIN")
        con.executemany("INSERT INTO sessions(key,owner,idx,state,num,doc) VALUES(?,?,?,?,?,?)", rows())
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    return "%s%012x" % (idp, 0), "%s%012x" % (idp, n - 1)


def prepared_daemon(ctx, name, args, n, prefix, state, url, duration_s, expires_ms=None):
    """A qodd whose store holds an app and n sessions written directly; returned stopped, with the app's token
    (tokens survive restarts: the signing key is in the data directory)."""
    d = Qodd(ctx.build, ctx.base, name, args)
    d.start()
    app, tok = d.app()
    d.empty_rss_kb = d.status_kb("VmRSS")
    d.stop()
    t = time.monotonic()
    first, last = insert_sessions(d.data, app["client_id"], n, prefix, state, url, duration_s, expires_ms)
    ctx.note(name, "inserted %d %s sessions in %.1f s" % (n, state, time.monotonic() - t))
    return d, tok, first, last


class Series:
    """(t, value) samples of a metric, t in seconds from an origin."""

    def __init__(self):
        self.pts = []

    def add(self, t, v):
        self.pts.append((t, v))

    def first_reach(self, v):
        """Time at which the series first reached v, linearly interpolated between samples."""
        prev = None
        for t, x in self.pts:
            if x >= v:
                if prev is None or x == prev[1]:
                    return t
                pt, px = prev
                return pt + (t - pt) * (v - px) / (x - px)
            prev = (t, x)
        return None

    def peak_rate(self, window=1.0):
        best = 0.0
        j = 0
        for i in range(len(self.pts)):
            while self.pts[i][0] - self.pts[j][0] > window:
                j += 1
            dt = self.pts[i][0] - self.pts[j][0]
            if dt >= window * 0.5:
                best = max(best, (self.pts[i][1] - self.pts[j][1]) / dt)
        return best


def poll_until(d, done, timeout, interval=0.05, sample=None):
    """Polls /metrics until done(metrics) or timeout; sample(t, metrics) sees every poll. Returns the last metrics
    and whether done was reached."""
    t0 = time.monotonic()
    mt = {}
    while time.monotonic() - t0 < timeout:
        mt = d.metrics()
        if sample:
            sample(time.monotonic(), mt)
        if done(mt):
            return mt, True
        time.sleep(interval)
    return mt, False


# ---------------------------------------------------------------------------------------------------------------
# Scenarios


class Ctx:
    def __init__(self, args, mode):
        self.args = args
        self.mode = mode
        self.p = MODES[mode]
        self.build = os.path.abspath(args.build)
        self.base = tempfile.mkdtemp(prefix="qod-bench-")
        self.ref = None
        self.receiver_port = None
        self.notes = {}
        self.perf = args.perf
        self.pg = None  # the PostgreSQL cluster of the pg_* scenarios, started by the first of them
        self.results = {}  # scenario name → result, as they finish (the pg_* scenarios compare with earlier ones)

    def note(self, scenario, text):
        self.notes.setdefault(scenario, []).append(text)
        log("%s: %s" % (scenario, text))

    def receiver(self, path="/cb"):
        return "http://127.0.0.1:%d%s" % (self.receiver_port, path)

    def ratio(self, rate):
        return round(rate / self.ref["rate"], 3) if self.ref and self.ref["rate"] else None

    def perf_file(self, name):
        if not self.perf:
            return None
        os.makedirs(self.perf, exist_ok=True)
        return os.path.join(os.path.abspath(self.perf), name + ".perf.data")


def settle(d, timeout):
    """Waits for the callbacks of sessions created by a run to be delivered (bounded), so that the next run
    does not pay for them."""
    time.sleep(0.7)  # the sandbox provisioning delay (500 ms) turns the last sessions AVAILABLE
    poll_until(d, lambda mt: m(mt, "qod_delivery_backlog") == 0, timeout, interval=0.2)


def wrk_result(ctx, r, ratio_target=None, p99_target=None):
    r["ratio"] = ctx.ratio(r["rate"])
    r["targets"] = []
    if ratio_target is not None:
        r["targets"].append(target("rate / reference", r["ratio"], ">=", ratio_target))
    if p99_target is not None:
        r["targets"].append(target("p99 latency", r["latency_ms"]["p99"], "<=", p99_target, " ms"))
    return r


def run_reference(ctx):
    r = wrk("http://127.0.0.1:%d/" % ctx.ref_port, ctx.p["secs"], "static.lua", server=ctx.nginx)
    r["server"] = "nginx, 2 workers, fixed %d-byte JSON body (return 200), access_log off" % REF_BODY_LEN
    return r


def scenario_get(ctx, surface):
    d = ctx.d1
    path = "%s/%s" % (V0 if surface == "v0" else V1, ctx.sessions[surface])
    r = wrk("http://127.0.0.1:%d%s" % (d.port, path), ctx.p["secs"], "static.lua",
            headers=["Authorization: Bearer " + ctx.tok1], token=ctx.tok1,
            perf=ctx.perf_file("get_" + surface), perf_pid=d.proc.pid, server=d)
    r["daemon"] = d.command()
    return wrk_result(ctx, r, 0.70, 5.0)


def scenario_create(ctx, d, tok, prefix, name):
    r = wrk("http://127.0.0.1:%d" % d.port, ctx.p["secs"], "create.lua",
            headers=["Authorization: Bearer " + tok], token=tok,
            env={"QOD_BENCH_PREFIX": prefix, "QOD_BENCH_URL": ctx.receiver(), "QOD_BENCH_SURFACE": "v0"},
            perf=ctx.perf_file(name), perf_pid=d.proc.pid, server=d)
    r["daemon"] = d.command()
    r["created"] = r["statuses"].get("201", 0)
    settle(d, ctx.p["wait"])
    mt = d.metrics()
    r["callbacks_delivered_after"] = int(m(mt, "qod_delivery_success_total"))
    return r


def scenario_lifecycle(ctx):
    d = ctx.d1
    r = wrk("http://127.0.0.1:%d" % d.port, ctx.p["secs"], "lifecycle.lua",
            headers=["Authorization: Bearer " + ctx.tok1], token=ctx.tok1,
            env={"QOD_BENCH_PREFIX": "30", "QOD_BENCH_URL": ctx.receiver()},
            perf=ctx.perf_file("lifecycle"), perf_pid=d.proc.pid, server=d)
    r["daemon"] = d.command()
    st = r["statuses"]
    r["mix"] = {"create": st.get("201", 0), "get": st.get("200", 0), "delete": st.get("204", 0)}
    r["sessions_per_s"] = round(r["mix"]["delete"] / r["seconds"], 1) if r["seconds"] else 0
    return wrk_result(ctx, r)


def scenario_token(ctx):
    d = Qodd(ctx.build, ctx.base, "token", ["--token-rate-client", "0", "--token-rate-ip", "0"]).start()
    try:
        app, _ = d.app()
        basic = base64.b64encode(("%s:%s" % (app["client_id"], app["client_secret"])).encode()).decode()
        r = wrk("http://127.0.0.1:%d/oauth2/token" % d.port, ctx.p["secs"], "static.lua",
                headers=["Authorization: Basic " + basic], token=basic,
                env={"QOD_BENCH_METHOD": "POST", "QOD_BENCH_BODY": "grant_type=client_credentials"},
                perf=ctx.perf_file("token"), perf_pid=d.proc.pid, server=d)
        r["command"] = r["command"].replace("$TOKEN", "$CLIENT_CREDENTIALS_BASE64")
        r["daemon"] = d.command()
        return wrk_result(ctx, r)
    finally:
        d.stop()


def scenario_scale(ctx):
    n = ctx.p["scale"]
    d, tok, first, last = prepared_daemon(ctx, "scale", [], n, "40", "available", ctx.receiver(), 86400)
    try:
        d.start(wait=False)
        t0 = d.spawned
        d.wait_ok("/readyz", ctx.p["wait"])
        t_readyz = time.monotonic() - t0
        r = d.wait_ok("%s/%s" % (V0, last), ctx.p["wait"], headers={"Authorization": "Bearer " + tok})
        t_ready = time.monotonic() - t0
        assert r.json()["qosStatus"] == "AVAILABLE", r.body[:200]
        rss_ready = d.status_kb("VmRSS")
        # The reloaded sessions are provisioned again (sandbox delay 500 ms); let that settle, then measure.
        time.sleep(1.5)
        mt = d.metrics()
        held = int(m(mt, 'qod_sessions{state="available"}') + m(mt, 'qod_sessions{state="requested"}'))
        rss = d.status_kb("VmRSS")
        hwm = d.status_kb("VmHWM")
        res = {
            "sessions": n,
            "sessions_held": held,
            "daemon": d.command(),
            "rss_mib": round(rss / 1024, 1),
            "rss_at_ready_mib": round(rss_ready / 1024, 1),
            "peak_rss_mib": round(hwm / 1024, 1),
            "bytes_per_session": round(rss * 1024 / n) if n else None,
            "readyz_s": round(t_readyz, 3),
            "ready_s": round(t_ready, 3),
            "db_mib": round(os.path.getsize(os.path.join(d.data, "qod.db")) / 1048576, 1),
            "loadavg": loadavg(),
        }
        # Reads still fast with all of them held?
        g = wrk("http://127.0.0.1:%d%s/%s" % (d.port, V0, first), max(1, ctx.p["secs"] // 2), "static.lua",
                headers=["Authorization: Bearer " + tok], token=tok)
        res["get_v0_rate_held"] = g["rate"]
        res["get_v0_p99_ms_held"] = g["latency_ms"]["p99"]
        res["get_command"] = g["command"]
        # The targets are for a million sessions. With fewer (--quick, --smoke) memory is projected linearly from
        # the empty daemon's footprint, for information only: the growth also holds the SQLite page caches (up to
        # 64 MiB per connection, bounded, not per session), so a small run overstates the cost of a session. The
        # restart must be ready within 10 s per million (at least 1 s).
        per_m = n / 1e6
        res["empty_rss_mib"] = round(d.empty_rss_kb / 1024, 1)
        res["rss_projected_1m_mib"] = round((d.empty_rss_kb + (rss - d.empty_rss_kb) / per_m) / 1024, 1)
        res["targets"] = [target("sessions held", held, ">=", n)]
        if n >= 1_000_000:
            res["targets"].append(target("resident memory", res["rss_mib"], "<=", 1024, " MiB"))
        res["targets"].append(target("restart until ready", res["ready_s"], "<=", max(round(10 * per_m, 2), 1.0),
                                     " s"))
        t = time.monotonic()
        d.stop(timeout=120)
        res["stop_s"] = round(time.monotonic() - t, 2)
        return res
    finally:
        d.stop()
        if not ctx.args.keep:
            shutil.rmtree(d.data, ignore_errors=True)  # its million sessions are not needed any more


def scenario_mass_expiry(ctx):
    n = ctx.p["expiring"]
    lead_ms = ctx.p["lead"] * 1000
    # One common instant, on a whole second, far enough ahead for the daemon to load the store.
    expires = (int(time.time() * 1000) // 1000 + 2) * 1000 + lead_ms
    d, tok, first, last = prepared_daemon(ctx, "expiry", ["--sandbox-delay-ms", "0"], n, "50", "available",
                                          ctx.receiver(), 3600, expires_ms=expires)
    try:
        d.start()
        d.wait_ok("/readyz", ctx.p["wait"])
        ready_before = expires / 1000.0 - time.time()
        if ready_before <= 0:
            raise RuntimeError("qodd was ready only %.1f s after the expiry instant: raise the lead" % -ready_before)
        ended, delivered = Series(), Series()

        def sample(t, mt):
            w = time.time() - expires / 1000.0
            ended.add(w, m(mt, 'qod_sessions{state="ended"}'))
            delivered.add(w, m(mt, "qod_delivery_success_total"))

        time.sleep(max(0.0, expires / 1000.0 - time.time() - 0.3))
        mt, ok = poll_until(d, lambda mt: m(mt, "qod_delivery_success_total") >= n, ctx.p["wait"], interval=0.05,
                            sample=sample)
        t_ended = ended.first_reach(n)
        t_deliv = delivered.first_reach(n)
        r = d.request("GET", "%s/%s" % (V0, last), token=tok)
        status = r.json().get("qosStatus") if r.status == 200 else r.status
        res = {
            "sessions": n,
            "daemon": d.command(),
            "ready_before_expiry_s": round(ready_before, 2),
            "all_expired_after_s": round(t_ended, 3) if t_ended is not None else None,
            "all_delivered_after_s": round(t_deliv, 3) if t_deliv is not None else None,
            "expired": int(m(mt, 'qod_sessions{state="ended"}')),
            "delivered": int(m(mt, "qod_delivery_success_total")),
            "dead": int(m(mt, "qod_delivery_dead_total")),
            "sample_status": status,
            "loadavg": loadavg(),
        }
        res["targets"] = [target("all EXPIRED, after the expiry instant", res["all_expired_after_s"], "<=", 2.0,
                                 " s"),
                          target("all callbacks delivered, after the expiry instant", res["all_delivered_after_s"],
                                 "<=", 2.0, " s")]
        return res
    finally:
        d.stop()


def scenario_callbacks(ctx):
    n = ctx.p["callbacks"]
    d, tok, first, last = prepared_daemon(ctx, "callbacks", ["--sandbox-delay-ms", "0"], n, "60", "requested",
                                          ctx.receiver(), 86400)
    try:
        d.start(wait=False)
        t0 = d.spawned
        d.wait_ok("/healthz", ctx.p["wait"])
        deliv = Series()
        mt, ok = poll_until(d, lambda mt: m(mt, "qod_delivery_success_total") >= n, ctx.p["wait"], interval=0.1,
                            sample=lambda t, mt: deliv.add(t - t0, m(mt, "qod_delivery_success_total")))
        t_first = deliv.first_reach(1)
        t10, t90, t100 = deliv.first_reach(0.1 * n), deliv.first_reach(0.9 * n), deliv.first_reach(n)
        sustained = 0.8 * n / (t90 - t10) if t10 is not None and t90 is not None and t90 > t10 else None
        res = {
            "callbacks": n,
            "daemon": d.command(),
            "receiver": "nginx, 2 workers, return 204, keep-alive",
            "delivered": int(m(mt, "qod_delivery_success_total")),
            "attempts": int(m(mt, "qod_delivery_attempts_total")),
            "dead": int(m(mt, "qod_delivery_dead_total")),
            "first_delivered_after_start_s": round(t_first, 3) if t_first is not None else None,
            "all_delivered_after_start_s": round(t100, 3) if t100 is not None else None,
            "rate_sustained": round(sustained, 1) if sustained else None,
            "rate_overall": round(n / (t100 - t_first), 1) if t100 and t_first is not None and t100 > t_first
            else None,
            "rate_peak_1s": round(deliv.peak_rate(1.0), 1),
            "loadavg": loadavg(),
        }
        res["ratio"] = ctx.ratio(res["rate_sustained"] or 0)
        res["targets"] = [target("signed callbacks per second (sustained, 10%→90%)", res["rate_sustained"], ">=",
                                 20000)]
        return res
    finally:
        d.stop()


def scenario_backlog(ctx):
    n = ctx.p["backlog"]
    port = free_port()
    # A retry every 2 s (about a minute in all), so no event dies while a large backlog is still being built.
    sched = ",".join(["0"] + ["2"] * 31)
    d, tok, first, last = prepared_daemon(ctx, "backlog", ["--sandbox-delay-ms", "0", "--retry-schedule", sched],
                                          n, "70", "requested", "http://127.0.0.1:%d/cb" % port, 86400)
    ng = Nginx(os.path.join(ctx.base, "nginx-backlog"), [(port, "204")])
    try:
        d.start()
        t0 = time.monotonic()
        # Built: every event written to the outbox and pending in memory, and at least as many failed attempts.
        def built(mt):
            return (m(mt, "qod_status_events_total") >= n and m(mt, "qod_delivery_backlog") >= n and
                    m(mt, "qod_delivery_attempts_total") >= n)

        mt, ok = poll_until(d, built, ctx.p["wait"], interval=0.1)
        if not ok:
            raise RuntimeError("the backlog did not build: %d events, %d pending, %d attempts of %d" %
                               (m(mt, "qod_status_events_total"), m(mt, "qod_delivery_backlog"),
                                m(mt, "qod_delivery_attempts_total"), n))
        t_build = time.monotonic() - t0
        backlog_before = int(m(mt, "qod_delivery_backlog"))
        failed_before = int(sum(v for k, v in mt.items() if k.startswith("qod_delivery_failures_total")))
        ng.start()
        t1 = time.monotonic()
        deliv = Series()
        mt, ok = poll_until(d, lambda mt: m(mt, "qod_delivery_success_total") >= n, ctx.p["wait"], interval=0.1,
                            sample=lambda t, mt: deliv.add(t - t1, m(mt, "qod_delivery_success_total")))
        t_first, t100 = deliv.first_reach(1), deliv.first_reach(n)
        res = {
            "backlog": n,
            "daemon": d.command(),
            "receiver": "nginx, 2 workers, return 204, started once all events were pending and as many attempts "
                        "had failed",
            "build_s": round(t_build, 2),
            "backlog_metric_before": backlog_before,
            "failed_attempts_before": failed_before,
            "delivered": int(m(mt, "qod_delivery_success_total")),
            "dead": int(m(mt, "qod_delivery_dead_total")),
            "first_delivered_after_receiver_s": round(t_first, 3) if t_first is not None else None,
            "drained_after_receiver_s": round(t100, 3) if t100 is not None else None,
            "drain_rate": round(n / t100, 1) if t100 else None,
            "drain_rate_after_first": round(n / (t100 - t_first), 1) if t100 and t_first is not None and
            t100 > t_first else None,
            "loadavg": loadavg(),
        }
        res["targets"] = []
        return res
    finally:
        ng.stop()
        d.stop()


# ---------------------------------------------------------------------------------------------------------------
# PostgreSQL: one node, and two nodes on one database


class PgSkip(Exception):
    """PostgreSQL cannot be had here: the pg_* scenarios are reported as skipped, not failed."""


def ensure_pg(mode):
    """The PostgreSQL 15 server binaries, installed from Debian (package postgresql) when missing, except in smoke
    mode (the test suite must stay fast); PgSkip when they cannot be had."""
    if os.access(os.path.join(PG_BIN, "initdb"), os.X_OK):
        return
    if mode == "smoke":
        raise PgSkip("PostgreSQL server binaries not installed (%s); --smoke does not install them" % PG_BIN)
    if os.geteuid() != 0:
        raise PgSkip("PostgreSQL server binaries not installed (%s) and not root: apt-get install postgresql"
                     % PG_BIN)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=120", "--no-install-recommends",
               "postgresql"]
    log("installing postgresql")
    try:
        if subprocess.run(install, env=env, stdout=subprocess.DEVNULL, timeout=900).returncode != 0:
            subprocess.run(["apt-get", "update", "-q", "-o", "DPkg::Lock::Timeout=120"], env=env,
                           stdout=subprocess.DEVNULL, timeout=900)
            subprocess.run(install, env=env, stdout=subprocess.DEVNULL, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise PgSkip("apt-get install postgresql failed: %s" % e)
    if not os.access(os.path.join(PG_BIN, "initdb"), os.X_OK):
        raise PgSkip("PostgreSQL server binaries still missing after apt-get install postgresql (%s)" % PG_BIN)


def pg_port():
    """A free port below the kernel's ephemeral range (as tests/tools/test-pg.sh), so that no outgoing connection
    of the run can take it from under the server."""
    low = 32768
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        pass
    base = low - 11000 if low > 12000 else 1024
    for _ in range(64):
        port = base + random.randrange(10000)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    return free_port()


class PgCluster:
    """A throw-away PostgreSQL 15 cluster started by tests/tools/pgtmp.sh in its own directory under /tmp (the
    server runs as the postgres user, which must be able to enter it: ctx.base is root's 0700 directory)."""

    def __init__(self, keep=False):
        self.dir = tempfile.mkdtemp(prefix="qod-bench-pg-", dir="/tmp")
        self.keep = keep
        self.port = None
        self.uri = None
        self.started = False

    def start(self):
        _procs.append(self)
        err = ""
        for _ in range(4):
            port = pg_port()
            p = run_cmd(["sh", PGTMP, "start", self.dir, str(port)], timeout=180)
            self.started = True  # stop() is harmless when nothing runs
            if p.returncode == 0 and p.stdout.strip():
                self.port, self.uri = port, p.stdout.strip().splitlines()[-1]
                PORT_NAMES[port] = "PG_PORT"
                return self
            err = p.stderr[-1500:]
        raise RuntimeError("could not start PostgreSQL: %s" % err)

    def pids(self):
        """The postmaster and its children (backends, WAL writer, checkpointer, ...)."""
        try:
            with open(os.path.join(self.dir, "data", "postmaster.pid")) as f:
                pid = int(f.readline())
        except (OSError, ValueError):
            return []
        return [pid] + children_of(pid)

    def psql(self, sql, db="postgres"):
        """Runs sql as the superuser through the cluster's unix socket; returns the unaligned output."""
        cmd = [os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p",
               str(self.port), "-U", "postgres", "-d", db, "-c", sql]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--"] + cmd
        p = run_cmd(cmd, timeout=60, cwd="/")
        if p.returncode != 0:
            raise RuntimeError("psql %r: %s" % (sql, p.stderr.strip()[-500:]))
        return p.stdout

    def database(self, name):
        """A fresh database owned by qod; its URI."""
        self.psql("DROP DATABASE IF EXISTS %s" % name)
        self.psql("CREATE DATABASE %s OWNER qod" % name)
        return self.uri.rsplit("/", 1)[0] + "/" + name

    def shards(self, db):
        """{holder: shards held} from the leases table (live leases only)."""
        out = {}
        for line in self.psql("SELECT holder, count(*) FROM leases WHERE name LIKE 'shard:%' AND expires_at > now() "
                              "GROUP BY holder", db).split():
            holder, n = line.rsplit("|", 1)
            out[holder] = int(n)
        return out

    def stop(self):
        if self in _procs:
            _procs.remove(self)
        if self.started:
            self.started = False
            try:
                run_cmd(["sh", PGTMP, "stop", self.dir], timeout=120)
            except (OSError, subprocess.SubprocessError) as e:
                log("pg: stopping the cluster in %s: %s" % (self.dir, e))
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            log("kept " + self.dir)


def pg_cluster(ctx):
    """The run's PostgreSQL cluster, started at the first pg scenario (PgSkip when it cannot be had)."""
    if ctx.pg is None:
        ensure_pg(ctx.mode)
        ctx.pg = PgCluster(keep=ctx.args.keep).start()
        log("PostgreSQL 15 on 127.0.0.1:%d, %s" % (ctx.pg.port, ctx.pg.dir))
    return ctx.pg


def pg_command(d, label=""):
    """A node's command line as documented: ports named (PORT, PORT1, ..., PG_PORT), data dir elided."""
    argv = [os.path.join(os.path.relpath(d.build, ROOT), "qodd"), "--listen", "127.0.0.1:%d" % d.port, "--data",
            "DIR" + label, "--log-level", "warn"] + d.args
    return shown(" ".join(argv))


def forward_count(metrics_list):
    """Requests forwarded to another node, summed over the nodes, from any counter of /metrics whose name says
    forward (none in this version of qodd: None)."""
    found = [v for mt in metrics_list for k, v in mt.items() if "forward" in k and "fail" not in k]
    return int(sum(found)) if found else None


def pg_compare(ctx, r, key, sqlite_key):
    """Ratios to the nginx reference and to the same figure on SQLite when that scenario ran."""
    r["ratio"] = ctx.ratio(r["rate"])
    other = ctx.results.get(sqlite_key)
    r["vs_sqlite"] = round(r["rate"] / other["rate"], 3) if other and other.get("rate") else None
    r["vs_sqlite_scenario"] = sqlite_key
    r["targets"] = []
    return r


def with_db_cpu(ctx, fn):
    """fn() (a wrk run), with the CPU time PostgreSQL (all its processes) used meanwhile, per request."""
    pids = ctx.pg.pids()
    u0, k0 = cpu_seconds(pids)
    r = fn()
    u1, k1 = cpu_seconds(pids + [p for p in ctx.pg.pids() if p not in pids])
    n = max(r["requests"], 1)
    r["db_cpu"] = {"user_us_per_req": round((u1 - u0) * 1e6 / n, 1), "sys_us_per_req": round((k1 - k0) * 1e6 / n, 1),
                   "cores": round((u1 - u0 + k1 - k0) / r["seconds"], 2) if r["seconds"] else None}
    return r


def pg_get(ctx, nodes, tok, sid, labels):
    return with_db_cpu(ctx, lambda: pg_get_run(ctx, nodes, tok, sid, labels))


def pg_create(ctx, nodes, tok, prefixes):
    r = with_db_cpu(ctx, lambda: pg_create_run(ctx, nodes, tok, prefixes))
    r["created"] = r["statuses"].get("201", 0)
    # Settle (bounded): every session provisioned (none left REQUESTED) and its callback delivered, on every node,
    # so that the GET run does not pay for them.
    t0 = time.monotonic()
    time.sleep(0.7)
    while time.monotonic() - t0 < ctx.p["wait"]:
        mts = [d.metrics() for d in nodes]
        if all(m(mt, 'qod_sessions{state="requested"}') == 0 and m(mt, "qod_delivery_backlog") == 0 for mt in mts):
            break
        time.sleep(0.2)
    r["settle_s"] = round(time.monotonic() - t0, 2)
    r["callbacks_delivered_after"] = int(sum(m(d.metrics(), "qod_delivery_success_total") for d in nodes))
    return r


def pg_get_run(ctx, nodes, tok, sid, labels):
    """GET of session sid spread over the nodes: one wrk per node (64 connections in all)."""
    headers = ["Authorization: Bearer " + tok]
    if len(nodes) == 1:
        d = nodes[0]
        return wrk("http://127.0.0.1:%d%s/%s" % (d.port, V0, sid), ctx.p["secs"], "static.lua", headers=headers,
                   token=tok, server=d)
    per = WRK_CONNS // len(nodes)
    r = wrk_parallel([("http://127.0.0.1:%d%s/%s" % (d.port, V0, sid), "static.lua",
                       dict(headers=headers, token=tok, threads=max(1, WRK_THREADS // len(nodes)), conns=per))
                      for d in nodes], ctx.p["secs"], servers=nodes)
    for part, label in zip(r["parts"], labels):
        part["node"] = label
    return r


def pg_create_run(ctx, nodes, tok, prefixes):
    """Authenticated v0 creates, each for a distinct device, spread over the nodes (one wrk per node)."""
    headers = ["Authorization: Bearer " + tok]
    if len(nodes) == 1:
        d = nodes[0]
        r = wrk("http://127.0.0.1:%d" % d.port, ctx.p["secs"], "create.lua", headers=headers, token=tok,
                env={"QOD_BENCH_PREFIX": prefixes[0], "QOD_BENCH_URL": ctx.receiver(), "QOD_BENCH_SURFACE": "v0"},
                server=d)
    else:
        per = WRK_CONNS // len(nodes)
        r = wrk_parallel([("http://127.0.0.1:%d" % d.port, "create.lua",
                           dict(headers=headers, token=tok, threads=max(1, WRK_THREADS // len(nodes)), conns=per,
                                env={"QOD_BENCH_PREFIX": pfx, "QOD_BENCH_URL": ctx.receiver(),
                                     "QOD_BENCH_SURFACE": "v0"}))
                          for d, pfx in zip(nodes, prefixes)], ctx.p["secs"], servers=nodes)
        for i, part in enumerate(r["parts"]):
            part["node"] = "node %d" % (i + 1)
            part["created"] = part["statuses"].get("201", 0)
    return r


def pg_one_session(ctx, d, tok, phone):
    r = d.request("POST", V0, token=tok, body={"device": {"phoneNumber": phone}, "qosProfile": "QOS_L",
                                               "duration": 86400, "webhook": {"notificationUrl": ctx.receiver()}})
    if r.status != 201:
        raise RuntimeError("create on %s: %d %r" % (d.base, r.status, r.body[:300]))
    return r.json()["sessionId"]


def scenario_pg_1node(ctx):
    pg = pg_cluster(ctx)
    uri = pg.database("bench_pg_create_1node")
    d = Qodd(ctx.build, ctx.base, "pg1", ["--store", uri, "--sync", "full"])
    PORT_NAMES[d.port] = "PORT"
    try:
        d.start()
        d.wait_ok("/readyz", 30)
        _, tok = d.app()
        sid = pg_one_session(ctx, d, tok, "+18100000001")
        settle(d, 10)
        res = {"store": "PostgreSQL 15 (pgtmp.sh defaults: fsync on, synchronous_commit on), on the same machine",
               "daemon": pg_command(d)}
        res["create"] = pg_compare(ctx, pg_create(ctx, [d], tok, ["80"]), "create", "create_sync_full")
        res["get"] = pg_compare(ctx, pg_get(ctx, [d], tok, sid, ["node"]), "get", "get_v0")
        res["sessions_in_db"] = int(pg.psql("SELECT count(*) FROM sessions", "bench_pg_create_1node").strip() or 0)
        res["loadavg"] = loadavg()
        res["targets"] = []
        return res
    finally:
        d.stop()


def scenario_pg_2nodes(ctx):
    pg = pg_cluster(ctx)
    db = "bench_pg_create_2nodes"
    uri = pg.database(db)
    nodes = [Qodd(ctx.build, ctx.base, "pg2-node%d" % (i + 1)) for i in range(2)]
    public = "http://127.0.0.1:%d" % nodes[0].port
    for i, d in enumerate(nodes):
        PORT_NAMES[d.port] = "PORT%d" % (i + 1)
        d.args = ["--store", uri, "--sync", "full", "--cluster-node", "http://127.0.0.1:%d" % d.port,
                  "--public-url", public]
    try:
        # The first node alone once makes the signing key and secrets.key, which the other gets (as an operator
        # would copy them); then both start together, so that they share the shards out.
        nodes[0].start()
        nodes[0].stop()
        for f in ("signing-key.pem", "secrets.key"):
            shutil.copy(os.path.join(nodes[0].data, f), os.path.join(nodes[1].data, f))
        errs = []

        def start(d):
            try:
                d.start()
                d.wait_ok("/readyz", 30)
            except Exception as e:  # noqa: BLE001
                errs.append(e)

        threads = [threading.Thread(target=start, args=(d,)) for d in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errs:
            raise errs[0]
        t0 = time.monotonic()
        holders = {}
        while time.monotonic() - t0 < 30:
            holders = pg.shards(db)
            if sum(holders.values()) == 64 and len(holders) == 2:
                break
            time.sleep(0.2)
        names = {"http://127.0.0.1:%d" % d.port: "node %d" % (i + 1) for i, d in enumerate(nodes)}
        split = {names.get(h, h): n for h, n in sorted(holders.items(), key=lambda kv: names.get(kv[0], kv[0]))}
        ctx.note("pg_create_2nodes", "shards held %s, %.1f s after both were ready" % (split, time.monotonic() - t0))
        _, tok = nodes[0].app()
        # A session made on node 1 (in a shard it holds), readable on both before the load starts: node 2 knows
        # the app and forwards to node 1.
        sid = pg_one_session(ctx, nodes[0], tok, "+18200000001")
        for d in nodes:
            d.wait_ok("%s/%s" % (V0, sid), 10, headers={"Authorization": "Bearer " + tok})
        settle(nodes[0], 10)
        mt0 = [d.metrics() for d in nodes]
        res = {"store": "PostgreSQL 15 (pgtmp.sh defaults: fsync on, synchronous_commit on), on the same machine",
               "daemon": "\n".join(pg_command(d, str(i + 1)) for i, d in enumerate(nodes)),
               "nodes": 2, "shards": split}
        res["create"] = pg_compare(ctx, pg_create(ctx, nodes, tok, ["81", "82"]), "create", "create_sync_full")
        mt1 = [d.metrics() for d in nodes]
        res["get"] = pg_compare(ctx, pg_get(ctx, nodes, tok, sid, ["node 1 (holds the session)",
                                                                   "node 2 (forwards to node 1)"]),
                                "get", "get_v0")
        mt2 = [d.metrics() for d in nodes]
        f0, f1, f2 = forward_count(mt0), forward_count(mt1), forward_count(mt2)
        res["forwarded"] = ({"create": f1 - f0, "get": f2 - f1} if None not in (f0, f1, f2) else None)
        one = ctx.results.get("pg_create_1node")
        for k in ("create", "get"):
            base = one.get(k) if one and "error" not in one and "skipped" not in one else None
            res[k]["vs_1node"] = round(res[k]["rate"] / base["rate"], 3) if base and base.get("rate") else None
        res["shards_after"] = {names.get(h, h): n for h, n in pg.shards(db).items()}
        res["sessions_in_db"] = int(pg.psql("SELECT count(*) FROM sessions", db).strip() or 0)
        res["loadavg"] = loadavg()
        res["targets"] = []
        return res
    finally:
        for d in nodes:
            d.stop()


# ---------------------------------------------------------------------------------------------------------------
# Reporting


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return "{:,.0f}".format(v)
        return ("{:.%df}" % nd).format(v)
    if isinstance(v, int):
        return "{:,}".format(v)
    return str(v)


def met_mark(t):
    return "met" if t["met"] else "**missed**"


def markdown(res, findings):
    mc = res["machine"]
    ref = res.get("reference") or {}
    sc = res["scenarios"]
    p = res["parameters"]
    L = [SECTION, ""]
    L.append("Written by `bench/run.py` (%s mode, %s, %.0f s). Re-run with `make bench` (all scenarios, under 10 "
             "minutes) or `make bench QUICK=1` (about a minute). Machine-readable: `bench/results.json`."
             % (res["mode"], res["finished"], res["elapsed_s"]))
    L += ["", "### Machine", "", "| | |", "|---|---|"]
    L.append("| CPU | %s, %s logical CPUs (%s usable) |" % (mc["cpu"], mc["nproc"], mc["cpus_usable"]))
    L.append("| Memory | %s GiB |" % mc["memory_gib"])
    L.append("| OS, kernel | %s, Linux %s |" % (mc["os"], mc["kernel"]))
    L.append("| qodd libraries | %s |" % ", ".join("%s %s" % kv for kv in mc["libraries"].items()))
    L.append("| Build | `%s`, `-O2 -DNDEBUG`, commit %s |" % (mc["cc"], mc["commit"]))
    L.append("| Load tools | %s; %s; Python %s |" % (mc["wrk"], mc["nginx"], mc["python"]))
    L.append("| Load average at start / end | %s / %s |" % (mc["loadavg_start"], res.get("loadavg_end", "?")))
    L += ["", "### Method", ""]
    L.append("- Everything on 127.0.0.1; wrk, nginx and qodd share the machine's CPUs. Load: `wrk -t%d -c%d -d%ds "
             "--latency` with a script of `bench/lua/`, the same for the reference and for qodd." %
             (WRK_THREADS, WRK_CONNS, p["secs"]))
    L.append("- Reference, measured in the same run: nginx with 2 workers answering a fixed %d-byte JSON body "
             "(`return 200`, `access_log off`, keep-alive). Every rate is also given as a ratio to it." % REF_BODY_LEN)
    L.append("- qodd: `build/bench/qodd --listen 127.0.0.1:PORT --data DIR --log-level warn`, defaults otherwise "
             "(`--sync full`, simulated network with a 500 ms provisioning delay, one HTTP thread per CPU), a "
             "sandbox app with `--rate-limit 0 --max-sessions 0` and a token with every scope. Created sessions "
             "carry a callback URL to a local nginx answering 204, so their callbacks are part of the load.")
    L.append("- Scale, expiry and callback scenarios: the sessions are written into the SQLite store while qodd is "
             "stopped, in the exact row format qodd writes (`src/core/engine.c` session_doc), then qodd is "
             "started on them; counts and times come from its `/metrics` (polled every 50–100 ms) and from "
             "`/proc/PID/status`.")
    L.append("- Per request, the details give the server's CPU time (`/proc/PID/stat`, all its threads; for nginx "
             "master and workers) and the bytes it passed to write calls (`wchar` of `/proc/PID/io`): for qodd that "
             "is the SQLite WAL and database, since its sockets use sendmsg/send; nginx writes its responses with "
             "writev, so its figure is the response size. Both change little with the machine's load, unlike the "
             "rates.")
    L += ["", "### Summary", "", "| Scenario | Result | Ratio to reference | Target | |", "|---|---|---|---|---|"]
    if ref:
        L.append("| Reference: nginx, fixed 200-byte JSON | %s req/s, p99 %s ms | 1.00 | | |" %
                 (fmt(ref["rate"]), fmt(ref["latency_ms"]["p99"], 2)))

    def row(name, result, ratio, tg):
        L.append("| %s | %s | %s | %s | %s |" % (name, result, fmt(ratio, 2) if ratio is not None else "",
                                                 tg["target"] if tg else "", met_mark(tg) if tg else ""))

    def wrk_rows(key, name):
        r = sc.get(key)
        if not r:
            return
        if "error" in r:
            L.append("| %s | failed: %s | | | |" % (name, r["error"][:120]))
            return
        res_text = "%s req/s, p99 %s ms" % (fmt(r["rate"]), fmt(r["latency_ms"]["p99"], 2))
        if r.get("non_2xx") or r["errors"].get("timeout"):
            res_text += " (%s non-2xx, %s timeouts)" % (fmt(r["non_2xx"]), fmt(r["errors"]["timeout"]))
        tgs = r.get("targets") or [None]
        for i, tg in enumerate(tgs):
            row(name if i == 0 else "", res_text if i == 0 else "", r["ratio"] if i == 0 else None, tg)

    wrk_rows("get_v0", "GET session, v0")
    wrk_rows("get_v1", "GET session, v1")
    wrk_rows("create_sync_full", "POST session, `--sync full`")
    wrk_rows("create_sync_normal", "POST session, `--sync normal`")
    wrk_rows("lifecycle", "Lifecycle: create, get ×3, delete")
    wrk_rows("token", "POST /oauth2/token")
    s = sc.get("scale")
    if s and "error" not in s:
        names = ["%s sessions held" % fmt(s["sessions"]), "", ""]
        mem = "%s MiB resident (peak %s)" % (fmt(s["rss_mib"]), fmt(s["peak_rss_mib"]))
        if s["sessions"] < 1_000_000:
            mem += (", %s MiB projected linearly to 1,000,000 (not judged: the growth includes the bounded SQLite"
                    " page caches; the target is judged by the full run)" % fmt(s["rss_projected_1m_mib"]))
        vals = ["%s held" % fmt(s["sessions_held"]), mem,
                "ready %s s after start" % fmt(s["ready_s"], 2)]
        by_what = {t["what"]: t for t in s["targets"]}
        tgs = [by_what.get("sessions held"), by_what.get("resident memory"), by_what.get("restart until ready")]
        for nm, v, tg in zip(names, vals, tgs):
            row(nm or "", v, None, tg)
    elif s:
        L.append("| Scale | failed: %s | | | |" % s["error"][:120])
    e = sc.get("mass_expiry")
    if e and "error" not in e:
        row("%s sessions expiring at one instant" % fmt(e["sessions"]),
            "all EXPIRED after %s s" % fmt(e["all_expired_after_s"], 2), None, e["targets"][0])
        row("", "all callbacks delivered after %s s" % fmt(e["all_delivered_after_s"], 2), None, e["targets"][1])
    elif e:
        L.append("| Mass expiry | failed: %s | | | |" % e["error"][:120])
    c = sc.get("callbacks")
    if c and "error" not in c:
        row("Callbacks to a keep-alive receiver (%s)" % fmt(c["callbacks"]),
            "%s/s sustained, peak %s/s" % (fmt(c["rate_sustained"]), fmt(c["rate_peak_1s"] or None)), c["ratio"],
            c["targets"][0])
    elif c:
        L.append("| Callbacks | failed: %s | | | |" % c["error"][:120])
    b = sc.get("callback_backlog")
    if b and "error" not in b:
        row("Backlog of %s callbacks after the receiver returns" % fmt(b["backlog"]),
            "drained in %s s (%s/s)" % (fmt(b["drained_after_receiver_s"], 2), fmt(b["drain_rate"])), None, None)
    elif b:
        L.append("| Callback backlog | failed: %s | | | |" % b["error"][:120])
    for key, label in (("pg_create_1node", "1 node"), ("pg_create_2nodes", "2 nodes")):
        r = sc.get(key)
        if not r:
            continue
        if "error" in r or "skipped" in r:
            L.append("| PostgreSQL, %s | %s: %s | | | |" % (label, "failed" if "error" in r else "skipped",
                                                           (r.get("error") or r["skipped"])[:120]))
            continue
        for k, what in (("create", "POST session"), ("get", "GET session, v0")):
            x = r[k]
            text = "%s req/s, p99 %s ms" % (fmt(x["rate"]), fmt(x["latency_ms"]["p99"], 2))
            if x.get("non_2xx") or x["errors"].get("timeout"):
                text += " (%s non-2xx, %s timeouts)" % (fmt(x["non_2xx"]), fmt(x["errors"]["timeout"]))
            rel = []
            if x.get("vs_1node") is not None:
                rel.append("%s× 1 node" % fmt(x["vs_1node"], 2))
            if x.get("vs_sqlite") is not None:
                rel.append("%s× SQLite %s" % (fmt(x["vs_sqlite"], 2), x["vs_sqlite_scenario"]))
            if rel:
                text += "; " + ", ".join(rel)
            row("%s, PostgreSQL, %s%s" % (what, label, ", `--sync full`" if k == "create" else ""), text,
                x["ratio"], None)

    # Details per scenario
    L += ["", "### Details", ""]
    if ref:
        L += ["#### Reference (nginx)", ""]
        L += wrk_table(ref, None)
    titles = {"get_v0": "GET /camara/qod/v0/sessions/{id}", "get_v1": "GET /quality-on-demand/v1/sessions/{id}",
              "create_sync_full": "POST /camara/qod/v0/sessions, `--sync full`",
              "create_sync_normal": "POST /camara/qod/v0/sessions, `--sync normal`",
              "lifecycle": "Lifecycle mix (v0): create, get ×3, delete", "token": "POST /oauth2/token"}
    for key, title in titles.items():
        r = sc.get(key)
        if not r or "error" in r:
            continue
        L += ["#### " + title, ""]
        L += wrk_table(r, ref)
        if key == "lifecycle":
            L.append("Mix: %s creates, %s gets, %s deletes; %s complete sessions per second." %
                     (fmt(r["mix"]["create"]), fmt(r["mix"]["get"]), fmt(r["mix"]["delete"]),
                      fmt(r["sessions_per_s"])))
            L.append("")
        if key.startswith("create"):
            L.append("%s sessions created; callbacks delivered by the end of the run and its settling: %s." %
                     (fmt(r["created"]), fmt(r["callbacks_delivered_after"])))
            L.append("")
    if s and "error" not in s:
        L += ["#### Scale: %s sessions held, restart" % fmt(s["sessions"]), "", "| | |", "|---|---|"]
        L.append("| Sessions in the store / held after start | %s / %s |" % (fmt(s["sessions"]),
                                                                          fmt(s["sessions_held"])))
        L.append("| SQLite file | %s MiB |" % fmt(s["db_mib"]))
        L.append("| Resident memory when ready / settled / peak | %s / %s / %s MiB |" %
                 (fmt(s["rss_at_ready_mib"]), fmt(s["rss_mib"]), fmt(s["peak_rss_mib"])))
        L.append("| Resident bytes per session (whole process / above the empty daemon's %s MiB) | %s / %s |" %
                 (fmt(s["empty_rss_mib"]), fmt(s["bytes_per_session"]),
                  fmt(round((s["rss_mib"] - s["empty_rss_mib"]) * 1048576 / s["sessions"]))))
        L.append("| Start → /readyz 200 | %s s |" % fmt(s["readyz_s"], 2))
        L.append("| Start → GET of a loaded session 200 | %s s |" % fmt(s["ready_s"], 2))
        L.append("| GET v0 with all held (%s) | %s req/s, p99 %s ms |" %
                 ("wrk as above, shorter", fmt(s["get_v0_rate_held"]), fmt(s["get_v0_p99_ms_held"], 2)))
        L.append("| SIGTERM → exit | %s s |" % fmt(s.get("stop_s"), 2))
        L.append("")
    if e and "error" not in e:
        L += ["#### Mass expiry: %s sessions with the same expiresAt" % fmt(e["sessions"]), "", "| | |", "|---|---|"]
        L.append("| Ready before the expiry instant | %s s |" % fmt(e["ready_before_expiry_s"], 2))
        L.append("| Last session EXPIRED | %s s after the instant |" % fmt(e["all_expired_after_s"], 2))
        L.append("| Last callback delivered | %s s after the instant |" % fmt(e["all_delivered_after_s"], 2))
        L.append("| Expired / delivered / dead | %s / %s / %s |" % (fmt(e["expired"]), fmt(e["delivered"]),
                                                                 fmt(e["dead"])))
        L.append("| A sampled session's status afterwards | %s |" % e["sample_status"])
        L.append("")
    if c and "error" not in c:
        L += ["#### Callbacks: %s status changes at once" % fmt(c["callbacks"]), ""]
        L.append("Sessions stored as REQUESTED; qodd (`--sandbox-delay-ms 0`) provisions them at start, so each "
                 "becomes AVAILABLE and sends one signed callback (Standard Webhooks HMAC) to nginx answering 204.")
        L += ["", "| | |", "|---|---|"]
        L.append("| Delivered / attempts / dead | %s / %s / %s |" % (fmt(c["delivered"]), fmt(c["attempts"]),
                                                                   fmt(c["dead"])))
        L.append("| First / last delivered after start | %s s / %s s |" % (fmt(c["first_delivered_after_start_s"], 2),
                                                                        fmt(c["all_delivered_after_start_s"], 2)))
        L.append("| Rate sustained (10%%→90%%) / overall / peak 1 s | %s / %s / %s per s |" %
                 (fmt(c["rate_sustained"]), fmt(c["rate_overall"]), fmt(c["rate_peak_1s"] or None)))
        L.append("")
    if b and "error" not in b:
        L += ["#### Callback backlog: %s events, receiver down then back" % fmt(b["backlog"]), ""]
        L.append("Retry schedule `0,2,2,…` (a retry every 2 s). The receiver (nginx, 204) is started once all "
                 "the events are written and pending in memory (`qod_delivery_backlog`) and at least as many "
                 "attempts have failed; up to 2 s pass before a queue retries.")
        L += ["", "| | |", "|---|---|"]
        L.append("| Backlog built in | %s s |" % fmt(b["build_s"], 2))
        L.append("| Failed attempts before the receiver came back | %s |" % fmt(b["failed_attempts_before"]))
        L.append("| First / last delivered after the receiver is up | %s s / %s s |" %
                 (fmt(b["first_delivered_after_receiver_s"], 2), fmt(b["drained_after_receiver_s"], 2)))
        L.append("| Drain rate (whole / from the first delivery) | %s / %s per s |" % (fmt(b["drain_rate"]),
                                                                                     fmt(b["drain_rate_after_first"])))
        L.append("| Delivered / dead | %s / %s |" % (fmt(b["delivered"]), fmt(b["dead"])))
        L.append("")
    L += pg_details(sc, ref)
    failed = [k for k, v in sc.items() if "error" in v]
    if failed:
        L += ["#### Scenarios that failed to run", ""]
        for k in failed:
            L.append("- `%s`: %s" % (k, sc[k]["error"][:500]))
        L.append("")
    L += ["### Commands", "", "```sh"]
    L.append("make bench            # = make BUILD=build/bench OPT=\"-O2 -DNDEBUG\" all && "
             "python3 bench/run.py --build build/bench")
    if ref:
        L.append("# reference\n" + ref["command"])
    for key in ("get_v0", "get_v1", "create_sync_full", "create_sync_normal", "lifecycle", "token"):
        r = sc.get(key)
        if r and "error" not in r:
            L.append("# %s\n%s\n%s" % (key, r["daemon"], r["command"]))
    for key in ("scale", "mass_expiry", "callbacks", "callback_backlog"):
        r = sc.get(key)
        if r and "error" not in r:
            L.append("# %s (sessions written into DIR/qod.db first)\n%s" % (key, r["daemon"]))
    for key in PG_SCENARIOS:
        r = sc.get(key)
        if r and "error" not in r and "skipped" not in r:
            db = "bench_" + key
            L.append("# %s: PostgreSQL 15 in a fresh directory, a fresh database\nsh tests/tools/pgtmp.sh start "
                     "PGDIR PG_PORT\nrunuser -u postgres -- /usr/lib/postgresql/15/bin/psql -h PGDIR -p PG_PORT "
                     "-U postgres -c 'CREATE DATABASE %s OWNER qod'" % (key, db))
            if r.get("nodes", 1) > 1:
                L.append("# node 1 started alone once to make its keys, then signing-key.pem and secrets.key "
                         "copied to DIR2; both started together")
            L.append(r["daemon"])
            L.append("# create\n%s\n# GET\n%s" % (r["create"]["command"], r["get"]["command"]))
    L += ["```", ""]
    if findings:
        L += ["### Profiles and findings", "", findings.strip(), ""]
    return "\n".join(L).rstrip() + "\n"


def pg_details(sc, ref):
    L = []
    for key, title in (("pg_create_1node", "PostgreSQL, one node"),
                       ("pg_create_2nodes", "PostgreSQL, two nodes on one database")):
        r = sc.get(key)
        if not r or "error" in r or "skipped" in r:
            continue
        L += ["#### " + title, ""]
        text = ("qodd with `--store postgres://…` and `--sync full` (each create waits for PostgreSQL's commit), the "
                "simulated network; the database: %s." % r["store"])
        if r.get("nodes", 1) > 1:
            text += (" Two nodes, each with its own `--cluster-node` URL and one `--public-url`, started together; "
                     "shards held: %s (of 64, from the `leases` table). The load is spread over both: one wrk per "
                     "node, `-t1 -c32` each (64 connections in all, as elsewhere); the rate is the sum, and each "
                     "latency percentile the worse of the two. The GET reads one session, held by node 1: every "
                     "GET sent to node 2 is forwarded to node 1." % ", ".join("%s %s" % kv
                                                                               for kv in r["shards"].items()))
            if r.get("forwarded"):
                text += " Forwarded (from `/metrics`): %s creates, %s GETs." % (fmt(r["forwarded"]["create"]),
                                                                              fmt(r["forwarded"]["get"]))
        L += [text, ""]
        for k, what in (("create", "POST /camara/qod/v0/sessions"), ("get", "GET /camara/qod/v0/sessions/{id}")):
            x = r[k]
            L += ["%s:" % what, ""]
            L += wrk_table(x, ref)
            parts = x.get("parts")
            if parts:
                L += ["| Per node | Requests/s | p50 | p99 | Requests | Non-2xx |", "|---|---|---|---|---|---|"]
                for part in parts:
                    L.append("| %s | %s | %s ms | %s ms | %s | %s |" % (
                        part["node"], fmt(part["rate"]), fmt(part["latency_ms"]["p50"], 2),
                        fmt(part["latency_ms"]["p99"], 2), fmt(part["requests"]), fmt(part["non_2xx"])))
                L.append("")
            notes = []
            rel = []
            if x.get("vs_sqlite") is not None:
                rel.append("%s× the SQLite figure (`%s`)" % (fmt(x["vs_sqlite"], 2), x["vs_sqlite_scenario"]))
            if x.get("vs_1node") is not None:
                rel.append("%s× one node" % fmt(x["vs_1node"], 2))
            if rel:
                notes.append("Rate " + ", ".join(rel) + ".")
            dbc = x.get("db_cpu")
            if dbc:
                notes.append("PostgreSQL (all its processes) meanwhile: %s + %s µs CPU per request, %s cores busy."
                             % (fmt(dbc["user_us_per_req"]), fmt(dbc["sys_us_per_req"]), fmt(dbc["cores"], 2)))
            if k == "create":
                notes.append("%s sessions created; callbacks delivered by the end of the run and its settling "
                             "(%s s, until no session was left REQUESTED and no callback pending): %s."
                             % (fmt(x["created"]), fmt(x.get("settle_s"), 1), fmt(x["callbacks_delivered_after"])))
            if notes:
                L += [" ".join(notes), ""]
    return L


def wrk_table(r, ref):
    lat = r["latency_ms"]
    L = ["| Requests/s | Ratio | p50 | p90 | p99 | p99.9 | max | Requests | Non-2xx | Socket errors | Server CPU "
         "per request (user + sys) | Server cores busy | wrk CPU per request | Server write() bytes per request |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    e = r["errors"]
    cpu = r.get("cpu") or {}
    L.append("| %s | %s | %s ms | %s ms | %s ms | %s ms | %s ms | %s | %s | %s | %s + %s µs | %s | %s µs | %s KiB |" % (
        fmt(r["rate"]), fmt(r.get("ratio"), 2) if ref else "1.00", fmt(lat["p50"], 2), fmt(lat["p90"], 2),
        fmt(lat["p99"], 2), fmt(lat["p999"], 2), fmt(lat["max"], 2), fmt(r["requests"]), fmt(r["non_2xx"]),
        fmt(e["connect"] + e["read"] + e["write"] + e["timeout"]), fmt(cpu.get("server_user_us_per_req")),
        fmt(cpu.get("server_sys_us_per_req")), fmt(cpu.get("server_cores"), 2), fmt(cpu.get("wrk_us_per_req")),
        fmt(cpu.get("server_file_write_kib_per_req"), 1)))
    L.append("")
    return L


def merge_section(path, section):
    """Replaces our section of docs/benchmarks.md (from its heading to the next level-2 heading), or appends it;
    everything else in the file is kept as it is."""
    if os.path.exists(path):
        with open(path) as f:
            text = f.read()
    else:
        text = ("# Benchmarks\n\nHow fast Konera QoD is on one machine, measured against a reference on the same "
                "machine. Each section says how it was measured and how to run it again.\n\n")
    lines = text.splitlines(True)
    start = next((i for i, l in enumerate(lines) if l.rstrip() == SECTION), None)
    if start is None:
        if text and not text.endswith("\n"):
            text += "\n"
        if text and not text.endswith("\n\n"):
            text += "\n"
        text += section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = "".join(lines[end:])
        text = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build/bench")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="one-minute subset")
    g.add_argument("--smoke", action="store_true", help="tiny load for the test suite (without the pg_* scenarios "
                   "unless --only names them)")
    ap.add_argument("--out", help="write results.json and benchmarks.md here instead of bench/ and docs/")
    ap.add_argument("--only", help="comma-separated scenarios (%s); writes nothing unless --out" % ",".join(SCENARIOS))
    ap.add_argument("--perf", help="record `perf record -g` of qodd during each wrk scenario into DIR "
                    "(QOD_BENCH_PERF_ARGS overrides the options, default -F 999 -g)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, stores)")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: rewrite the markdown from the existing results.json (e.g. after editing "
                         "bench/findings.md)")
    args = ap.parse_args()
    if args.render:
        return render_only(args)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    # --smoke (the test suite) leaves the pg_* scenarios out unless asked for: a PostgreSQL cluster and two nodes
    # take some 15 s, more than the rest of the smoke run is allowed to grow.
    default = [s for s in SCENARIOS if not (mode == "smoke" and s in PG_SCENARIOS)]
    only = [s.strip() for s in args.only.split(",")] if args.only else default
    bad = [s for s in only if s not in SCENARIOS]
    if bad:
        ap.error("unknown scenario(s): %s" % ", ".join(bad))
    for exe in ("qodd", "qodctl"):
        if not os.access(os.path.join(args.build, exe), os.X_OK):
            ap.error("%s/%s not found: build it first (make bench does)" % (args.build, exe))

    started = time.monotonic()
    # SIGTERM (a timeout of the caller) unwinds like Ctrl-C, so that everything started is stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ensure_tools()
    ctx = Ctx(args, mode)
    log("mode %s, temporary directory %s" % (mode, ctx.base))
    res = {"version": 1, "mode": mode, "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"), "machine": machine(), "parameters": dict(ctx.p, wrk_threads=WRK_THREADS,
                                                                        wrk_connections=WRK_CONNS),
           "scenarios": {}}
    log("machine: %s" % json.dumps(res["machine"]))
    failed = False

    def record(name, fn, *a):
        nonlocal failed
        if name not in only:
            return
        log("%s ..." % name)
        t = time.monotonic()
        try:
            r = fn(*a)
        except PgSkip as e:
            r = {"skipped": str(e)}
        except Exception as e:  # noqa: BLE001 - a scenario that cannot run is reported, the others go on
            failed = True
            r = {"error": "%s: %s" % (type(e).__name__, e)}
        r["elapsed_s"] = round(time.monotonic() - t, 1)
        # The next scenario must not pay for this one's writeback (the scale scenario leaves a 700 MB store).
        os.sync()
        if name in ctx.notes:
            r["notes"] = ctx.notes[name]
        res["scenarios"][name] = r
        log("%s: %s" % (name, summary_line(r)))
    ctx.results = res["scenarios"]

    nginx = None
    try:
        ctx.ref_port, ctx.receiver_port = free_port(), free_port()
        PORT_NAMES.update({ctx.ref_port: "REF_PORT", ctx.receiver_port: "RECEIVER_PORT"})
        nginx = ctx.nginx = Nginx(os.path.join(ctx.base, "nginx"), [(ctx.ref_port, "ref"),
                                                                     (ctx.receiver_port, "204")]).start()
        log("reference ...")
        res["reference"] = ctx.ref = run_reference(ctx)
        log("reference: %s" % summary_line(ctx.ref))

        if any(s in only for s in ("get_v0", "get_v1", "create_sync_full", "lifecycle")):
            ctx.d1 = Qodd(ctx.build, ctx.base, "main").start()
            _, ctx.tok1 = ctx.d1.app()
            ctx.sessions = {}
            for surface, path, body in (
                    ("v0", V0, {"device": {"phoneNumber": "+18000000001"}, "qosProfile": "QOS_L", "duration": 86400,
                                "webhook": {"notificationUrl": ctx.receiver()}}),
                    ("v1", V1, {"device": {"phoneNumber": "+18000000002"}, "qosProfile": "QOS_L", "duration": 86400,
                                "applicationServer": {"ipv4Address": "198.51.100.10"}, "sink": ctx.receiver()})):
                r = ctx.d1.request("POST", path, body=body, token=ctx.tok1)
                if r.status != 201:
                    raise RuntimeError("create %s: %d %r" % (surface, r.status, r.body[:300]))
                ctx.sessions[surface] = r.json()["sessionId"]
            settle(ctx.d1, 10)
            record("get_v0", scenario_get, ctx, "v0")
            record("get_v1", scenario_get, ctx, "v1")

            def create_full():
                r = scenario_create(ctx, ctx.d1, ctx.tok1, "10", "create_sync_full")
                return wrk_result(ctx, r, 0.30, 20.0)

            record("create_sync_full", create_full)
            record("lifecycle", scenario_lifecycle, ctx)
            ctx.d1.stop()

        def create_normal():
            d = Qodd(ctx.build, ctx.base, "normal", ["--sync", "normal"]).start()
            try:
                _, tok = d.app()
                r = scenario_create(ctx, d, tok, "20", "create_sync_normal")
                return wrk_result(ctx, r)  # reported; the targets are for --sync full
            finally:
                d.stop()

        record("create_sync_normal", create_normal)
        record("token", scenario_token, ctx)
        record("scale", scenario_scale, ctx)
        record("mass_expiry", scenario_mass_expiry, ctx)
        record("callbacks", scenario_callbacks, ctx)
        record("callback_backlog", scenario_backlog, ctx)
        record("pg_create_1node", scenario_pg_1node, ctx)
        record("pg_create_2nodes", scenario_pg_2nodes, ctx)
        if ctx.pg:
            ctx.pg.stop()
    except Exception as e:  # noqa: BLE001
        failed = True
        res["error"] = "%s: %s" % (type(e).__name__, e)
        log("error: " + res["error"])
    finally:
        for p in reversed(list(_procs)):  # the last started first: qodd before its database and receiver
            try:
                p.stop()
            except Exception:  # noqa: BLE001
                pass
        if not args.keep:
            shutil.rmtree(ctx.base, ignore_errors=True)
        else:
            log("kept " + ctx.base)

    res["loadavg_end"] = loadavg()
    res["finished"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    res["elapsed_s"] = round(time.monotonic() - started, 1)
    findings = ""
    if os.path.exists(FINDINGS):
        with open(FINDINGS) as f:
            findings = f.read()
    md = markdown(res, findings)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(res, f, indent=1)
        with open(os.path.join(args.out, "benchmarks.md"), "w") as f:
            f.write(md)
        log("wrote %s/results.json and benchmarks.md" % args.out)
    elif args.only:
        log("--only without --out: nothing written")
    else:
        with open(os.path.join(ROOT, "bench", "results.json"), "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
        merge_section(os.path.join(ROOT, "docs", "benchmarks.md"), md)
        log("wrote bench/results.json and docs/benchmarks.md")
    print_summary(res)
    return 1 if failed else 0


def render_only(args):
    src = os.path.join(args.out, "results.json") if args.out else os.path.join(ROOT, "bench", "results.json")
    with open(src) as f:
        res = json.load(f)
    findings = ""
    if os.path.exists(FINDINGS):
        with open(FINDINGS) as f:
            findings = f.read()
    md = markdown(res, findings)
    if args.out:
        with open(os.path.join(args.out, "benchmarks.md"), "w") as f:
            f.write(md)
    else:
        merge_section(os.path.join(ROOT, "docs", "benchmarks.md"), md)
    log("rendered the markdown from " + src)
    return 0


def summary_line(r):
    if "error" in r:
        return "FAILED " + r["error"]
    if "skipped" in r:
        return "skipped: " + r["skipped"]
    if "create" in r and "get" in r:
        s = "; ".join("%s %.0f req/s, p99 %.2f ms%s%s" % (
            k, r[k]["rate"], r[k]["latency_ms"]["p99"],
            ", ratio %.2f" % r[k]["ratio"] if r[k].get("ratio") is not None else "",
            ", %d non-2xx" % r[k]["non_2xx"] if r[k].get("non_2xx") else "") for k in ("create", "get"))
        if r.get("shards"):
            s += "; shards %s" % r["shards"]
        return s
    if "rate" in r:
        s = "%.0f req/s, p99 %.2f ms" % (r["rate"], r["latency_ms"]["p99"])
        if r.get("ratio") is not None:
            s += ", ratio %.2f" % r["ratio"]
        if r.get("non_2xx"):
            s += ", %d non-2xx" % r["non_2xx"]
        if r.get("cpu"):
            s += ", server %.1f+%.1f µs/req on %.2f cores" % (r["cpu"]["server_user_us_per_req"],
                                                             r["cpu"]["server_sys_us_per_req"],
                                                             r["cpu"]["server_cores"] or 0)
    else:
        s = ", ".join("%s=%s" % (k, v) for k, v in r.items()
                      if k not in ("targets", "daemon", "notes", "receiver", "get_command", "command"))
    for t in r.get("targets", []):
        s += "; %s %s (%s %s)" % (t["what"], "met" if t["met"] else "MISSED", t["value"], t["target"])
    return s


def print_summary(res):
    print()
    print("%-22s %s" % ("reference", summary_line(res["reference"]) if res.get("reference") else "-"))
    for k, v in res["scenarios"].items():
        print("%-22s %s" % (k, summary_line(v)))
    missed = [(k, t) for k, v in res["scenarios"].items() for t in v.get("targets", []) if not t["met"]]
    print("\ntargets missed: %d" % len(missed))
    for k, t in missed:
        print("  %s: %s = %s (target %s)" % (k, t["what"], t["value"], t["target"]))


if __name__ == "__main__":
    sys.exit(main())
