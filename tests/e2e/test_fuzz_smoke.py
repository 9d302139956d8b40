"""Fuzzing smoke: builds every libFuzzer target in tests/fuzz (make fuzz-build, incremental) and runs each for a
couple of seconds on its committed corpus and dictionary (make fuzz FUZZ_SECONDS=2). It proves that every target
builds, loads its corpus without a crash or a leak, and fuzzes; the long runs are reported in tests/fuzz/README.md.
Skipped, with the reason, where clang cannot build a libFuzzer program."""
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUZZ_DIR = os.path.join(ROOT, "tests", "fuzz")
SECONDS = 2
PROBE = b"""#include <stddef.h>
#include <stdint.h>
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) { return data && size > 1 ? 0 : 0; }
"""


def libfuzzer_unavailable():
    """None when clang builds and runs a libFuzzer program with the sanitizers `make fuzz` uses, else why not."""
    try:
        subprocess.run(["clang", "--version"], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return "clang is not installed"
    tmp = tempfile.mkdtemp(prefix="qod-fuzz-probe-")
    try:
        src, exe = os.path.join(tmp, "probe.c"), os.path.join(tmp, "probe")
        with open(src, "wb") as f:
            f.write(PROBE)
        p = subprocess.run(["clang", "-fsanitize=address,undefined,fuzzer", src, "-o", exe], capture_output=True,
                           text=True, timeout=120)
        if p.returncode != 0:
            return "clang cannot build a libFuzzer program: %s" % (p.stderr.strip().splitlines() or ["?"])[-1]
        p = subprocess.run([exe, "-runs=1"], capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            return "a libFuzzer program does not run here: %s" % (p.stderr.strip().splitlines() or ["?"])[-1]
        return None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fuzz_targets():
    return sorted(f[:-2] for f in os.listdir(FUZZ_DIR) if f.startswith("fuzz_") and f.endswith(".c"))


def test_every_fuzz_target_runs_without_a_crash():
    why = libfuzzer_unavailable()
    if why:
        skip(why)
    targets = fuzz_targets()
    assert targets, "no tests/fuzz/fuzz_*.c"
    # scripts/fuzz.sh writes each target's log to build/fuzz/NAME.log: two runs at once would mix their logs.
    os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
    with open(os.path.join(ROOT, "build", ".fuzz-smoke.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        p = subprocess.run(["make", "--no-print-directory", "fuzz", "FUZZ_SECONDS=%d" % SECONDS], cwd=ROOT,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=240,
                           stdin=subprocess.DEVNULL)
    tail = "\n".join(p.stdout.splitlines()[-60:])
    assert p.returncode == 0, "make fuzz exited %d (crashing inputs are written to crash-* in %s):\n%s" % (
        p.returncode, ROOT, tail)
    for t in targets:
        lines = [l for l in p.stdout.splitlines() if l.startswith("fuzz %s:" % t)]
        assert len(lines) == 1, "expected one result line for %s:\n%s" % (t, tail)
        # scripts/fuzz.sh prints "?" when it cannot read the count from the log (another run writing the same log).
        m = re.fullmatch(r"fuzz %s: %ds, (\d+|\?) executions, 0 crashes" % (re.escape(t), SECONDS), lines[0])
        assert m and m.group(1) != "0", "%s did not fuzz cleanly: %r" % (t, lines[0])


run(globals(), per_test_timeout=300)
