#!/usr/bin/env python3
"""Runs every unit test binary and every e2e test file, in parallel, and prints "N passed, N failed".

Each unit binary and each e2e file prints one line per test: "PASS name", "FAIL name" or "SKIP name: reason".
A binary or file that dies, or prints nothing, counts as one failure of its own.
"""
import argparse
import concurrent.futures
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def collect(build, unit_only, only, e2e_dir_name="tests/e2e", e2e_only=False):
    jobs = []
    unit_dir = os.path.join(ROOT, build, "tests", "unit")
    if e2e_dir_name != "tests/e2e" or e2e_only:
        unit_dir = os.path.join(ROOT, "nonexistent")
    for dirpath, _, files in os.walk(unit_dir):
        for f in sorted(files):
            path = os.path.join(dirpath, f)
            # Only binaries whose source still exists: a renamed or removed test leaves its old binary behind.
            src = os.path.join(ROOT, "tests", "unit", os.path.relpath(path, unit_dir) + ".c")
            if f.startswith("test_") and os.access(path, os.X_OK) and not f.endswith(".d") and os.path.exists(src):
                jobs.append(("unit", os.path.relpath(path, ROOT), [path]))
    if not unit_only:
        e2e_dir = os.path.join(ROOT, e2e_dir_name)
        for f in sorted(os.listdir(e2e_dir)) if os.path.isdir(e2e_dir) else []:
            if f.startswith("test_") and f.endswith(".py"):
                jobs.append(("e2e", e2e_dir_name + "/" + f, [sys.executable, os.path.join(e2e_dir, f)]))
    if only:
        jobs = [j for j in jobs if any(o in j[1] for o in only)]
    return jobs


def run_one(job, build, timeout):
    kind, name, argv = job
    env = dict(os.environ)
    env["QOD_BUILD"] = os.path.join(ROOT, build)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    start = time.monotonic()
    try:
        p = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
        out, rc = p.stdout.decode(errors="replace"), p.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode(errors="replace") + "\n(timed out after %ds)" % timeout
        rc = -1
    return kind, name, out, rc, time.monotonic() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--unit-only", action="store_true")
    ap.add_argument("--e2e-only", action="store_true", help="only the black-box test files, no unit binaries")
    ap.add_argument("--only", action="append", default=[],
                    help="run only the files whose path contains this (repeatable: any of them)")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("QOD_TEST_JOBS", "4")))
    ap.add_argument("--timeout", type=int, default=600)
    ap.add_argument("--dir", default="tests/e2e", help="directory of black-box test files")
    ap.add_argument("--allow-empty", action="store_true")
    args = ap.parse_args()

    jobs = collect(args.build, args.unit_only, args.only, args.dir, args.e2e_only)
    if not jobs and args.allow_empty:
        print("0 passed, 0 failed")
        return 0
    passed = failed = skipped = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = [pool.submit(run_one, j, args.build, args.timeout) for j in jobs]
        for fut in concurrent.futures.as_completed(futs):
            kind, name, out, rc, secs = fut.result()
            p = f = s = 0
            for line in out.splitlines():
                if line.startswith("PASS "):
                    p += 1
                elif line.startswith("FAIL "):
                    f += 1
                elif line.startswith("SKIP "):
                    s += 1
            ok = rc == 0 and f == 0 and p + s > 0
            if not ok and f == 0:
                f = 1  # died, or ran nothing: count the file itself as failed
            passed, failed, skipped = passed + p, failed + f, skipped + s
            status = "ok" if ok else "FAILED"
            print("%-7s %-45s %3d passed %3d failed %3d skipped  %5.1fs" % (status, name, p, f, s, secs))
            if not ok or os.environ.get("QOD_TEST_VERBOSE"):
                for line in out.splitlines():
                    print("    | " + line)
            sys.stdout.flush()
    tail = "%d passed, %d failed" % (passed, failed)
    if skipped:
        tail += ", %d skipped" % skipped
    print(tail)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
