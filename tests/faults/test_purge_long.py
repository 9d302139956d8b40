"""Long fault test (make test-faults): many sessions purged beside a large outbox of delivered events.

A purge deletes an ended session's row and its delivered events once `--retention` has passed. SQLite's planner
answered the events' `session=? AND state=1` from the state index, so each purge walked every delivered event still
kept. Under a sustained create-read-delete load the writer fell behind by tens of seconds as soon as the first
sessions reached the end of their retention, and every create and delete waited for it (docs/reliability.md,
defect 9).

Here the store holds 50,000 sessions whose retention ended an hour ago, each with two delivered events, beside
50,000 running sessions with one delivered event each. qodd purges the ended ones right after it starts. A create
sent meanwhile waits behind the purges' writes, so its answer shows how long they take. The rows are written
straight into the store with the benchmark's writer (bench/run.py insert_sessions), as test_mass_expiry_long.py does.
"""
import os
import sqlite3
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
from qodlib import *  # noqa: E402,F401,F403

bench = bench_module()

ENDED, RUNNING = 50000, 50000
EVENTS_INSERT = "INSERT INTO events(id,session,owner,created_ms,state,attempts,next_ms,doc) VALUES(?,?,?,?,?,?,?,?)"


def delivered_event(sid, k, app_id, state, reason, at):
    """The row of a session's k-th event, delivered (state 1, one attempt), as src/core/engine.c add_event_row
    writes it."""
    return ("%s-e%d" % (sid, k), sid, app_id, at, 1, 1, at,
            '{"session":"%s","app":"%s","state":"%s","reason":"%s","surface":0,"at_ms":%d}'
            % (sid, app_id, state, reason, at))


def add_ended_sessions(data_dir, app_id, n, ended_ms):
    """n sessions ended (expired) at ended_ms, each with its two delivered events (AVAILABLE, EXPIRED), in the row
    format of src/core/engine.c (session_doc, add_event_row). Returns their ids."""
    created = ended_ms - 60000
    ids = ["%08x-0000-4000-8000-%012x" % (0x7e11ded0, i) for i in range(n)]

    def sessions():
        for i, sid in enumerate(ids):
            phone = "+1520%07d" % i
            doc = bench.SESSION_DOC % (sid, app_id, "ended", 60, created, created, ended_ms, 2, phone, phone,
                                       "http://127.0.0.1:9/cb")
            doc = doc.replace('"reason":""', '"reason":"expired"').replace('"ended_ms":0', '"ended_ms":%d' % ended_ms)
            yield (sid, app_id, "tel:" + phone, 21, ended_ms, doc)  # state 2 (ended) * 10 + reason 1 (expired)

    def events():
        for sid in ids:
            yield delivered_event(sid, 0, app_id, "available", "", created)
            yield delivered_event(sid, 1, app_id, "ended", "expired", ended_ms)

    _write(data_dir, "INSERT INTO sessions(key,owner,idx,state,num,doc) VALUES(?,?,?,?,?,?)", sessions())
    _write(data_dir, EVENTS_INSERT, events())
    return ids


def add_delivered_events(data_dir, app_id, first, n):
    """One delivered event for each of the n running sessions written by insert_sessions from first on."""
    prefix, start = first[:-12], int(first[-12:], 16)
    now = int(time.time() * 1000)

    events = (delivered_event("%s%012x" % (prefix, start + i), 0, app_id, "available", "", now) for i in range(n))
    _write(data_dir, EVENTS_INSERT, events)


def _write(data_dir, sql, rows):
    con = sqlite3.connect(os.path.join(data_dir, "qod.db"), isolation_level=None)
    try:
        con.execute("PRAGMA synchronous=OFF")
        con.execute("BEGIN")
        con.executemany(sql, rows)
        con.execute("COMMIT")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()


def count(data_dir, sql):
    con = sqlite3.connect("file:%s?mode=ro" % os.path.join(data_dir, "qod.db"), uri=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def test_sessions_purged_beside_a_large_outbox_do_not_hold_up_the_writer():
    if VALGRIND or PG:
        skip("writes the SQLite store directly and times the purges without valgrind")
    d = Daemon(args=["--log-level", "info"])
    try:
        app = create_app(d, name="purge", extra=("--rate-limit", "0", "--max-sessions", "0"))
        tok = get_token(d, app)
        assert d.stop() == 0
        now_ms = int(time.time() * 1000)
        ended = add_ended_sessions(d.data_dir, app["client_id"], ENDED, now_ms - 3600 * 1000)
        first, _ = bench.insert_sessions(d.data_dir, app["client_id"], RUNNING, "51", "available",
                                         "http://127.0.0.1:9/cb", 3600)
        add_delivered_events(d.data_dir, app["client_id"], first, RUNNING)
        d.start()
        started = time.monotonic()
        wait_until(lambda: d.request("GET", "/readyz").status == 200, timeout=60, interval=0.1,
                   what="/readyz after loading %d sessions" % (ENDED + RUNNING))
        # The create's write queues behind the purges' writes: answered at once, it shows they are quick. Walking
        # the outbox for each purge, they took hours here.
        t = time.monotonic()
        try:
            r = d.request("POST", "/camara/qod/v0/sessions", token=tok, timeout=60, body={
                "device": {"phoneNumber": new_phone()}, "qosProfile": "QOS_L", "duration": 60,
                "webhook": {"notificationUrl": "http://127.0.0.1:9/cb"}})
        except OSError as e:  # the daemon's request timeout closes the connection; or ours runs out
            raise AssertionError("a create sent once ready got no answer after %.1f s, behind the purges (%s)" % (
                time.monotonic() - t, e))
        create_s = time.monotonic() - t
        expect_status(r, 201)
        seen = {}

        def purged():
            seen.update(metrics(d))
            return seen.get('qod_sessions{state="ended"}') == 0 and seen.get("qod_store_queue") == 0
        wait_until(purged, timeout=30, interval=0.1,
                   what=lambda: "every ended session purged (ended %r, store queue %r)" % (
                       seen.get('qod_sessions{state="ended"}'), seen.get("qod_store_queue")))
        purged_s = time.monotonic() - started
        expect_status(d.request("GET", "/camara/qod/v0/sessions/" + ended[-1], token=tok), 404)
        assert d.stop() == 0
        print("PURGED %d sessions (%d events) beside %d delivered events in %.2f s from start; a create sent once "
              "ready answered in %.2f s" % (ENDED, 2 * ENDED, RUNNING, purged_s, create_s))
        assert create_s < scaled(10), "a create waited %.1f s behind the purges" % create_s
        assert count(d.data_dir, "SELECT count(*) FROM sessions") == RUNNING + 1
        assert count(d.data_dir, "SELECT count(*) FROM events WHERE state=1") == RUNNING
        assert count(d.data_dir, "SELECT count(*) FROM events WHERE session LIKE '7e11ded0-%'") == 0
    finally:
        d.close(check=False)


run(globals(), per_test_timeout=1800)
