"""The bench driver (bench/run.py, `make bench`) with a tiny load, so that it cannot rot: every scenario must run
and land in the JSON results. No performance target is checked here. Skipped when wrk or nginx is missing and
cannot be installed (not root, or apt-get fails)."""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403
from qodlib import BUILD, Skip, run  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
SCENARIOS = ["get_v0", "get_v1", "create_sync_full", "create_sync_normal", "lifecycle", "token", "scale",
             "mass_expiry", "callbacks", "callback_backlog"]


def missing_tools():
    return [t for t in ("wrk", "nginx") if not shutil.which(t, path=SBIN_PATH)]


def ensure_tools():
    missing = missing_tools()
    if not missing:
        return
    if os.geteuid() != 0:
        raise Skip("%s not installed and not root to install them" % " and ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "-o", "DPkg::Lock::Timeout=120", "--no-install-recommends"] + missing
    try:
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          timeout=300).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=300)
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        pass
    still = missing_tools()
    if still:
        raise Skip("%s not installed and apt-get could not install them" % " and ".join(still))


def test_bench_smoke():
    ensure_tools()
    out = tempfile.mkdtemp(prefix="qod-bench-smoke-")
    try:
        docs = os.path.join(ROOT, "docs", "benchmarks.md")
        before = os.stat(docs).st_mtime_ns if os.path.exists(docs) else None
        p = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--build", BUILD, "--smoke",
                            "--out", out], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240)
        assert p.returncode == 0, "bench/run.py --smoke exited %d:\n%s" % (p.returncode, p.stdout[-6000:])
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
        assert res["mode"] == "smoke", res["mode"]
        assert res["reference"]["rate"] > 0, res["reference"]
        for k in ("cpu", "nproc", "kernel", "libraries"):
            assert k in res["machine"], res["machine"]
        for name in SCENARIOS:
            sc = res["scenarios"].get(name)
            assert sc is not None, "scenario %s missing from the results: %s" % (name, sorted(res["scenarios"]))
            assert "error" not in sc, "scenario %s failed: %s" % (name, sc["error"])
        for name in ("get_v0", "get_v1", "create_sync_full", "create_sync_normal", "lifecycle", "token"):
            sc = res["scenarios"][name]
            assert sc["requests"] > 0 and sc["rate"] > 0 and sc["ratio"] is not None, (name, sc)
            assert sc["non_2xx"] == 0, "%s answered %d non-2xx responses: %s" % (name, sc["non_2xx"], sc["statuses"])
        lc = res["scenarios"]["lifecycle"]["mix"]
        assert lc["create"] > 0 and lc["get"] > 0 and lc["delete"] > 0, lc
        sc = res["scenarios"]["scale"]
        assert sc["sessions_held"] == sc["sessions"] and sc["rss_mib"] > 0, sc
        ex = res["scenarios"]["mass_expiry"]
        assert ex["expired"] == ex["sessions"] and ex["delivered"] == ex["sessions"], ex
        cb = res["scenarios"]["callbacks"]
        assert cb["delivered"] == cb["callbacks"], cb
        bl = res["scenarios"]["callback_backlog"]
        assert bl["delivered"] == bl["backlog"], bl
        with open(os.path.join(out, "benchmarks.md")) as f:
            md = f.read()
        assert md.startswith("## API and engine benchmarks (make bench)"), md[:200]
        after = os.stat(docs).st_mtime_ns if os.path.exists(docs) else None
        assert before == after, "--out must leave docs/benchmarks.md alone"
    finally:
        shutil.rmtree(out, ignore_errors=True)


run(globals(), per_test_timeout=300)
