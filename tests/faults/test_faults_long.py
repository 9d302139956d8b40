"""Long fault tests, run by `make test-faults` (python3 tests/run.py --dir tests/faults) and in CI.

The same scenarios as tests/e2e/test_faults.py (imported from there), longer and harder, plus a daemon stopped and
restarted while its disk is still full:
- 100 SIGKILL rounds under heavier mixed load (4 client threads, rounds of 0 to 2.5 s, some killed while recovering);
- three disk-full episodes in a row on one daemon;
- SIGTERM while the disk is full, restart while it is still full, then space returns;
- callback receivers that answer 500 (and hang, reset, crawl) for three minutes while another app's callbacks flow;
- 50 SIGTERMs under load.
Each prints its measured totals (TOTALS / DISKFULL / BADRECV / SIGTERM lines) for docs/reliability.md.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from qodlib import *  # noqa: E402,F401,F403
import test_faults as tf  # noqa: E402


def test_sigkill_100_rounds_under_heavier_load():
    tf.run_kill_rounds(rounds=100, round_s=(0.0, 2.5), threads=4, pace=0.003, get_sample=200)


def test_disk_full_three_times_in_a_row():
    tf.run_disk_full(cycles=3)


def test_stop_while_the_disk_is_full_then_restart_while_still_full():
    """What a stop during a full disk costs: status changes made in memory while nothing could be written are lost
    (logged as unsaved_change_lost_at_stop); nothing acknowledged is lost, the daemon starts again on the full
    disk (reads work, writes get 503), and once space returns every session's end is derived again and delivered."""
    fs = tf.Tmpfs("3m")
    d = None
    try:
        d, app, tok = tf.start_daemon(["--retention", "3600", "--retry-schedule", "0" + ",0.3" * 20],
                                      data_dir=fs.dir)
        with tf.quiet_receiver() as recv:
            hooks = tf.Hooks(recv, app["webhook_secret"])
            url = recv.url("/cb")
            acked = {}
            refused = 0
            t0 = time.monotonic()
            while refused < 3:
                assert time.monotonic() - t0 < scaled(60), "the disk never filled"
                r = d.request("POST", tf.SESSIONS, body=tf.session_body(url, duration=2), token=tok)
                if r.status == 201:
                    acked[r.json()["sessionId"]] = r.json()
                else:
                    tf.expect_unavailable(r, "POST /sessions")
                    refused += 1
            # Every session becomes AVAILABLE and then EXPIRED in memory while the disk stays full.
            wait_until(lambda: all(s["qosStatus"] == "EXPIRED" for s in (
                d.request("GET", tf.SESSIONS + "/" + sid, token=tok).json() for sid in list(acked)[-5:])),
                timeout=10, interval=0.2, what="the last sessions to expire in memory")
            before = len(hooks.all())
            rc = d.stop()
            assert rc == 0, "qodd exited %r on SIGTERM with a full disk; log:\n%s" % (rc, d.log_tail(30))
            lost_changes = d.log().count("unsaved_change_lost_at_stop")
            # Start again on the still-full disk: it must come up, serve reads and refuse writes cleanly.
            d.start()
            tok = get_token(d, app)
            with d.session() as s:
                for sid in acked:
                    r = s.request("GET", tf.SESSIONS + "/" + sid, token=tok)
                    assert r.status == 200, "acknowledged session %s after a restart on a full disk: %r" % (sid, r)
            r = d.request("POST", tf.SESSIONS, body=tf.session_body(url), token=tok)
            if r.status != 201:
                tf.expect_unavailable(r, "POST /sessions after a restart on a full disk")
            tf.expect_integrity(d, "after a restart on a full disk")
            fs.resize("64m")
            wait_until(lambda: all(sid in {x[1] for x in hooks.all() if x[2] == "EXPIRED"} for sid in acked),
                       timeout=30, interval=0.2, what="every session's EXPIRED delivered after space returned")
            stored = tf.stored_sessions(d)
            missing = [sid for sid in acked if sid not in stored]
            assert not missing, "acknowledged sessions lost: %r" % missing[:5]
            assert all(stored[sid] == "EXPIRED" for sid in acked), "not all sessions EXPIRED in the store"
            problems, _, dups = tf.check_callback_stream(hooks.all())
            assert not problems, "\n".join(problems[:30])
            seen = hooks.statuses()
            no_available = [sid for sid in acked if "AVAILABLE" not in seen.get(sid, [])]
            tf.expect_integrity(d, "after space returned")
            print("STOPFULL %s" % json.dumps({"sessions": len(acked), "changes_lost_at_stop": lost_changes,
                                               "sessions_without_AVAILABLE_callback": len(no_available),
                                               "callbacks_before_stop": before, "duplicates": dups},
                                              sort_keys=True))
    finally:
        if d is not None:
            d.close(check=False)
        fs.close()


def test_receivers_fail_for_three_minutes_while_another_app_flows():
    tf.run_bad_receivers(storm_s=180, schedule="0,1,2,4,8,16", shares=(0.01, 0.09, 0.2, 0.7))


def test_sigterm_50_times_under_load():
    tf.run_sigterm_trials(trials=50)


run(globals(), per_test_timeout=1800)
