"""Long fault tests (make test-faults) of many sessions ending at once.

- 300,000 sessions whose end passed while qodd was down. The engine ends them all before the API opens, and the
  writes of those ends wait in the store's queue, which stays bounded (STORE_QUEUE_HIGH in src/core/engine.c):
  memory must not grow with the number of sessions ending at once.
- 100,000 sessions ending together while another process holds the database's write lock. The writer makes no
  progress; the engine holds its timers at the bound for STORE_STALL_MS only, then ends every session on time in
  memory, and nothing is lost once the lock is let go.

The rows are written straight into the store with the benchmark's writer (bench/run.py insert_sessions), as
`make bench` does for its scale and expiry scenarios.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from qodlib import *  # noqa: E402,F401,F403

bench = bench_module()

N = 300000


def status_mib(d, field):
    with open("/proc/%d/status" % d.pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("%s not in /proc/%d/status" % (field, d.pid))


def start_with(rows_expire_ms, n=N):
    """A stopped daemon's store filled with n available sessions expiring at rows_expire_ms, then started; returns
    the daemon (ready), its app's token and the first and last session ids."""
    d = Daemon(args=["--sandbox-delay-ms", "0", "--log-level", "info"])
    try:
        app = create_app(d, name="mass", extra=("--rate-limit", "0", "--max-sessions", "0"))
        tok = get_token(d, app)
        assert d.stop() == 0
        first, last = bench.insert_sessions(d.data_dir, app["client_id"], n, "50", "available",
                                            "http://127.0.0.1:9/cb", 3600, expires_ms=rows_expire_ms)
        d.start()
        wait_until(lambda: d.request("GET", "/readyz").status == 200, timeout=scaled(120), interval=0.1,
                   what="/readyz after loading %d sessions" % n)
        return d, tok, first, last
    except BaseException:
        d.close(check=False)
        raise


def test_300k_sessions_ended_while_down_end_before_the_api_opens_in_bounded_memory():
    if VALGRIND or PG:
        skip("memory figures of the SQLite store without valgrind")
    now_ms = int(time.time() * 1000)
    # Reference: the same sessions, still running: what holding them costs.
    d, tok, first, last = start_with(now_ms + 3600 * 1000)
    with d:
        held = status_mib(d, "VmHWM")
        assert metrics(d).get('qod_sessions{state="available"}') == N
    # Every one of them ended an hour ago.
    d, tok, first, last = start_with(now_ms - 3600 * 1000)
    with d:
        peak = status_mib(d, "VmHWM")
        mt = metrics(d)
        assert mt.get('qod_sessions{state="ended"}') == N and mt.get('qod_sessions{state="available"}') == 0, \
            {k: v for k, v in mt.items() if k.startswith("qod_sessions{")}
        for sid in (first, last):
            r = expect_status(d.request("GET", "/camara/qod/v0/sessions/" + sid, token=tok), 200)
            assert r.json()["qosStatus"] == "EXPIRED", r.json()
        # Each end queues about 2.5 KiB of store batch until written. The engine stops ending sessions while
        # 65,536 batches are queued (checked every 256 timers), so the queue's high-water mark stays near that,
        # however many end at once. Unbounded, it grew with N (and peak memory with it: 642 MiB against 458 for
        # this N in an optimised build).
        qmax = mt.get("qod_store_queue_max")
        print("HELD %.0f MiB, PEAK after %d overdue ends %.0f MiB (+%.0f), store queue max %d" % (
            held, N, peak, peak - held, qmax))
        assert qmax is not None and qmax <= 65536 + 1024, "store queue high-water mark %r" % qmax
        assert peak - held < 600, "ending %d sessions at start took %.0f MiB more than holding them" % (
            N, peak - held)


def test_sessions_end_on_time_while_the_store_writer_is_stalled_and_none_is_lost():
    if VALGRIND or PG:
        skip("stalls the SQLite writer with a lock of its own; times it without valgrind")
    n, high, stall_s = 100000, 65536, 2.0  # STORE_QUEUE_HIGH and STORE_STALL_MS in src/core/engine.c
    expires = (int(time.time()) + 12) * 1000
    d, tok, first, last = start_with(expires, n)
    with d:
        assert time.time() < expires / 1000.0 - 1, "loading %d sessions took too long for this test" % n
        time.sleep(max(0.0, expires / 1000.0 - 0.5 - time.time()))
        # Another process takes the write lock: qodd's writer waits in SQLite's busy handler (5 s, then the
        # batches fail and the engine retries them every second), and its queue fills with the sessions' ends.
        with sqlite_write_lock(d):
            locked_at = time.time()
            seen = {}

            def all_ended():
                mt = metrics(d)
                seen.update(mt)
                return mt.get('qod_sessions{state="ended"}') == n
            # At the bound the engine waits for the writer; after STORE_STALL_MS with no progress it ends the rest
            # anyway, on time in memory, and their writes queue past the bound.
            wait_until(all_ended, timeout=expires / 1000.0 + 4.5 - time.time(), interval=0.05,
                       what=lambda: "every session ended with the writer stalled (ended %r, store queue %r)" % (
                           seen.get('qod_sessions{state="ended"}'), seen.get("qod_store_queue")))
            ended_after = time.time() - expires / 1000.0
            queued = seen.get("qod_store_queue")
            for sid in (first, last):
                r = expect_status(d.request("GET", "/camara/qod/v0/sessions/" + sid, token=tok), 200)
                assert r.json()["qosStatus"] == "EXPIRED", r.json()
        print("ALL %d ENDED %.2f s after their end with the writer stalled (locked %.2f s before); queue %r" % (
            n, ended_after, expires / 1000.0 - locked_at, queued))
        assert ended_after >= stall_s - 0.2, "ended %.2f s after the instant: the engine did not wait" % ended_after
        assert queued is not None and queued > high + 1024, "store queue %r: the ends did not queue" % queued
        # The lock is gone: every end reaches the store, nothing lost.
        wait_until(lambda: metrics(d).get("qod_store_queue") == 0, timeout=scaled(60), interval=0.1,
                   what="the store's queue to drain")
        assert d.stop() == 0
        d.start()
        mt = metrics(d)
        assert mt.get('qod_sessions{state="ended"}') == n and mt.get('qod_sessions{state="available"}') == 0, \
            {k: v for k, v in mt.items() if k.startswith("qod_sessions{")}


run(globals(), per_test_timeout=1800)
