"""Several qodd nodes on one PostgreSQL database (issue 12): --store postgres://… --cluster-node URL.

A throw-away PostgreSQL 15 cluster is started by tests/tools/pgtmp.sh (initdb in a temporary directory, as the
postgres user, on a loopback port); each test makes its own database and its own nodes. All nodes share the signing
key and secrets.key (copied from the first node's data directory, as an operator would) and one --public-url (the
load balancer's), and each has its own --cluster-node URL. Leases last 2 s here (--cluster-lease 2).

What is proved: every node serves every request (a session created on one node is read, extended and deleted on the
others at once); app changes made on one node reach the others' caches at once (LISTEN/NOTIFY); one active item per
device and the app's quota hold across nodes (exactly); each status change is delivered once in normal running, by
the node that holds the session, in order; several nodes migrating a fresh database at once; and after a node is
killed under load, its sessions are served, expired and notified by the others: no acknowledged session is lost and
every state change is delivered at least once; the node that takes a dead node's shard sends none of an adopted
session's callbacks before it has read that session's pending ones, and sends them in order; and a node paused past
its lease writes nothing for the shards it lost once it wakes (its writes are fenced by the shard leases), then
stops; a node frozen inside a write loses that transaction after a lease, so the others take its shards; and while
the database server itself is frozen, /readyz answers 503 within its bound. Network partitions (qodd in a network
namespace whose link to the database the test sets down: packets lost both ways, no reset): a node alone answers
503 in bounded time and recovers by itself once the link is back; a node of two stops serving its sessions before
its leases can run out, even while its lease round still waits on a connect, and the other takes them over.
"""
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

HERE = os.path.dirname(os.path.abspath(__file__))
PGTMP = os.path.join(HERE, "..", "tools", "pgtmp.sh")
PG_BIN = os.environ.get("PG_BINDIR", "/usr/lib/postgresql/15/bin")
V0 = "/camara/qod/v0/sessions"
V1 = "/quality-on-demand/v1/sessions"
RETRIEVE = "/quality-on-demand/v1/retrieve-sessions"
PROV = "/qos-provisioning/v0.3/qos-assignments"
LEASE_S = 2
V1_SCOPES = ("quality-on-demand:sessions:create quality-on-demand:sessions:read quality-on-demand:sessions:update "
             "quality-on-demand:sessions:delete quality-on-demand:sessions:retrieve-by-device")
P_SCOPES = ("qos-provisioning:qos-assignments:create qos-provisioning:qos-assignments:read "
            "qos-provisioning:qos-assignments:delete qos-provisioning:qos-assignments:read-by-device")
ALL_SCOPES = "qod " + V1_SCOPES + " " + P_SCOPES

PG_DIR = PG_URI = None
_rng = random.SystemRandom()


def setup_module():
    global PG_DIR, PG_URI
    if not os.path.exists(os.path.join(PG_BIN, "initdb")):
        return
    PG_DIR = tempfile.mkdtemp(prefix="qod-cluster-pg-")
    for _ in range(5):
        port = _rng.randrange(20000, 30000)
        p = subprocess.run(["sh", PGTMP, "start", PG_DIR, str(port)], capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            PG_URI = p.stdout.strip().splitlines()[-1]
            return
    raise AssertionError("could not start PostgreSQL: %s" % p.stderr[-2000:])


def teardown_module():
    if PG_DIR:
        subprocess.run(["sh", PGTMP, "stop", PG_DIR], capture_output=True, timeout=120)
        shutil.rmtree(PG_DIR, ignore_errors=True)


def need_pg():
    if not PG_URI:
        raise Skip("PostgreSQL 15 server binaries not installed (%s)" % PG_BIN)


def psql(sql, db=None):
    """Runs sql as the cluster's superuser through its unix socket; returns stdout."""
    port = PG_URI.rsplit(":", 1)[1].split("/")[0]
    cmd = ["runuser", "-u", "postgres", "--", os.path.join(PG_BIN, "psql"), "-X", "-q", "-At", "-v",
           "ON_ERROR_STOP=1", "-h", PG_DIR, "-p", port, "-U", "postgres", "-d", db or "postgres", "-c", sql]
    if os.getuid() != 0:
        cmd = cmd[4:]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd="/")
    assert p.returncode == 0, p.stderr
    return p.stdout


def fresh_database():
    name = "qc_" + uuid.uuid4().hex[:12]
    psql("CREATE DATABASE %s OWNER qod" % name)
    return PG_URI.rsplit("/", 1)[0] + "/" + name, name


class Cluster:
    """n nodes on one fresh database. The first node is started alone once to make the keys, which are copied to
    the others; then all start together (so the shards are shared out), unless staggered."""

    def __init__(self, n=3, extra=(), together=True):
        need_pg()
        self.uri, self.db = fresh_database()
        self.nodes = [Daemon(start=False) for _ in range(n)]
        self.public = "http://127.0.0.1:%d" % self.nodes[0].port
        for d in self.nodes:
            d.args = ["--store", self.uri, "--cluster-node", "http://127.0.0.1:%d" % d.port,
                      "--cluster-lease", str(LEASE_S), "--public-url", self.public, "--sandbox-delay-ms", "100",
                      "--retry-schedule", "0,0.2,0.5"] + list(extra)
        first = self.nodes[0]
        first.start()
        first.stop()
        for d in self.nodes[1:]:
            for f in ("signing-key.pem", "secrets.key"):
                shutil.copy(os.path.join(first.data_dir, f), os.path.join(d.data_dir, f))
        if together:
            errors = []

            def start(d):
                try:
                    d.start()
                except BaseException as e:  # noqa: BLE001 - raised below, with the node
                    errors.append((self.nodes.index(d), e))
            threads = [threading.Thread(target=start, args=(d,)) for d in self.nodes]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                self.close()
                raise AssertionError("cluster node %d: %s" % errors[0])
        else:
            for d in self.nodes:
                d.start()
        for d in self.nodes:
            assert d.proc and d.proc.poll() is None, d.log()[-3000:]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if exc[0] is not None:  # the nodes' own account of a failure, for a run that cannot be repeated
            for i, d in enumerate(self.nodes):
                print("--- node %d (port %d) log tail ---\n%s" % (i, d.port, d.log()[-3000:]))
        self.close()

    def close(self):
        for d in self.nodes:
            d.close(check=False)

    def shards(self):
        """{node URL: shards held} from the leases table."""
        out = {}
        for line in psql("SELECT holder, count(*) FROM leases WHERE name LIKE 'shard:%%' AND expires_at > now()"
                         " GROUP BY holder", self.db).split():
            holder, n = line.rsplit("|", 1)
            out[holder] = int(n)
        return out

    def app(self, node=0, extra=()):
        app = create_app(self.nodes[node], scopes=ALL_SCOPES, extra=("--rate-limit", "0") + tuple(extra))
        return app, get_token(self.nodes[(node + 1) % len(self.nodes)], app)


def v0_body(recv, phone, duration=60):
    return {"device": {"phoneNumber": phone}, "qosProfile": "QOS_L", "duration": duration,
            "webhook": {"notificationUrl": recv.url("/cb")}}


def new_phone():
    return "+1555%07d" % _rng.randrange(10 ** 7)


def hooks_by_session(recv):
    """{sessionId: [(webhook-id, status), …]} in arrival order, from v0 callbacks."""
    out = {}
    for h in list(recv.requests):
        try:
            b = json.loads(h.body)
        except ValueError:
            continue
        if isinstance(b, dict) and "sessionId" in b:
            out.setdefault(b["sessionId"], []).append((h.headers.get("webhook-id"), b.get("qosStatus")))
    return out


def test_nodes_migrating_a_fresh_database_together_share_the_shards():
    with Cluster(3) as c:
        shards = wait_until(lambda: (lambda s: s if sum(s.values()) == 64 else None)(c.shards()), timeout=10,
                            what="all 64 shards held")
        assert len(shards) == 3 and min(shards.values()) >= 10, shards
        assert psql("SELECT max(version) FROM schema_version", c.db).strip() == "2"
        for d in c.nodes:
            assert "pg_failed" not in d.log(), d.log()[-2000:]


def test_every_node_serves_every_session():
    with Cluster(3) as c, WebhookReceiver(default=(204, {}, b"")) as recv:
        app, tok = c.app()
        n = len(c.nodes)
        made = []
        for i in range(12):
            d = c.nodes[i % n]
            r = expect_status(d.request("POST", V0, body=v0_body(recv, new_phone()), token=tok), 201)
            made.append(r.json()["sessionId"])
        # Read on every node at once after the 201: the same session.
        for sid in made:
            bodies = [expect_status(d.request("GET", V0 + "/" + sid, token=tok), 200).json() for d in c.nodes]
            assert all(b["sessionId"] == sid for b in bodies), bodies
        # v1: create on one node, extend on another, read on a third.
        phone = new_phone()
        r = expect_status(c.nodes[0].request("POST", V1, token=tok, body={
            "device": {"phoneNumber": phone}, "applicationServer": {"ipv4Address": "198.51.100.7"},
            "qosProfile": "QOS_L", "duration": 60, "sink": recv.url("/v1")}), 201)
        sid1 = r.json()["sessionId"]
        wait_until(lambda: c.nodes[2].request("GET", V1 + "/" + sid1, token=tok).json().get("qosStatus")
                   == "AVAILABLE", timeout=5, what="v1 AVAILABLE")
        expect_status(c.nodes[1].request("POST", V1 + "/" + sid1 + "/extend", token=tok,
                                         body={"requestedAdditionalDuration": 30}), 200)
        assert c.nodes[2].request("GET", V1 + "/" + sid1, token=tok).json()["duration"] == 90
        # retrieve-by-device on a node that does not hold it.
        found = [expect_status(d.request("POST", "/quality-on-demand/v1/retrieve-sessions", token=tok,
                                         body={"device": {"phoneNumber": phone}}), 200).json() for d in c.nodes]
        assert all(len(f) == 1 and f[0]["sessionId"] == sid1 for f in found), found
        # Delete each v0 session on a node other than the one that made it; read the end everywhere.
        for i, sid in enumerate(made):
            expect_status(c.nodes[(i + 1) % n].request("DELETE", V0 + "/" + sid, token=tok), 204)
            for d in c.nodes:
                assert d.request("GET", V0 + "/" + sid, token=tok).json()["qosStatus"] == "DELETED"
        # Each change delivered once, in order, signed.
        wait_until(lambda: all(len(hooks_by_session(recv).get(s, [])) >= 2 for s in made), timeout=10,
                   what="AVAILABLE and DELETED of each")
        time.sleep(0.5)
        hooks = hooks_by_session(recv)
        for sid in made:
            assert [st for _, st in hooks[sid]] == ["AVAILABLE", "DELETED"], (sid, hooks[sid])
            assert len({w for w, _ in hooks[sid]}) == 2, hooks[sid]
        for h in recv.requests:
            if h.path == "/cb":
                verify_standard_webhook(app["webhook_secret"], h.headers, h.body)


def test_app_changes_on_one_node_reach_the_others_at_once():
    with Cluster(3) as c:
        app, tok = c.app(node=0)
        # Made on node 0: node 2 issues tokens at once.
        get_token(c.nodes[2], app)
        r = c.nodes[1].qodctl_json("app", "rotate-secret", app["client_id"], "--json")
        new = dict(app, client_secret=r["client_secret"])
        wait_until(lambda: token_response(c.nodes[2], app).status == 401, timeout=2, what="old secret refused")
        # Node 0 is told on its own, maybe a moment after node 2.
        wait_until(lambda: token_response(c.nodes[0], new).status == 200, timeout=2, interval=0.05,
                   what="new secret accepted on node 0")
        c.nodes[2].qodctl("app", "delete", app["client_id"])
        wait_until(lambda: token_response(c.nodes[0], new).status == 401, timeout=2, what="deleted app refused")
        # A device registered on one node is known to the others (live sessions on the simulated network).
        live = create_app(c.nodes[0], env="live", scopes=V1_SCOPES, extra=("--rate-limit", "0"))
        ltok = get_token(c.nodes[1], live)
        phone = new_phone()
        c.nodes[2].qodctl("device", "add", "--phone", phone, "--ipv4", "10.9.%d.%d" % (_rng.randrange(256),
                                                                                      _rng.randrange(1, 255)))
        body = {"device": {"phoneNumber": phone}, "applicationServer": {"ipv4Address": "198.51.100.7"},
                "qosProfile": "QOS_L", "duration": 60}
        # The registration reaches the other nodes by notification (milliseconds): then every node knows it.
        wait_until(lambda: all(phone in d.qodctl("device", "list").stdout for d in c.nodes), timeout=2,
                   what="the device known on every node")
        for d in c.nodes:
            r = d.request("POST", V1, token=ltok, body=body)
            assert r.status in (201, 409), r  # known everywhere: never 404 IDENTIFIER_NOT_FOUND


def test_one_device_and_the_quota_hold_across_nodes():
    with Cluster(3) as c, WebhookReceiver(default=(204, {}, b"")) as recv:
        app, tok = c.app(extra=("--max-sessions", "5"))
        # One device, one create per node at the same moment: exactly one 201.
        phone = new_phone()
        out = [None] * 6
        def create(i, phone_):
            out[i] = c.nodes[i % 3].request("POST", V0, body=v0_body(recv, phone_), token=tok).status
        ts = [threading.Thread(target=create, args=(i, phone)) for i in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert sorted(out) == [201, 409, 409, 409, 409, 409], out
        # The quota of 5 active sessions: 12 more devices at once across nodes → 4 more 201 (one is active).
        out = [None] * 12
        ts = [threading.Thread(target=create, args=(i, new_phone())) for i in range(12)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert out.count(201) == 4 and out.count(429) == 8, out


def test_rate_limit_is_shared_between_the_nodes():
    with Cluster(2) as c:
        app = create_app(c.nodes[0], scopes=ALL_SCOPES, extra=("--rate-limit", "20", "--burst", "20"))
        tok = get_token(c.nodes[1], app)
        ok = sent = 0
        t0 = time.monotonic()
        # At least a second and at least 40 requests (20 a node: each node's half burst of 10 is then surely used).
        while time.monotonic() - t0 < 1.0 or sent < 40:
            sent += len(c.nodes)
            for d in c.nodes:
                st = d.request("GET", V0 + "/" + str(uuid.uuid4()), token=tok).status
                assert st in (404, 429), st
                ok += st == 404
        took = time.monotonic() - t0
        # Each node takes half of rate and burst: the cluster admits at most burst + rate × time (+1 per node).
        assert ok <= 20 + 20 * took + 2, (ok, took)
        assert ok >= 10, ok


def test_a_node_killed_under_load_loses_nothing():
    with Cluster(3) as c, WebhookReceiver(default=(204, {}, b"")) as recv:
        app, tok = c.app()
        acked, on_victim, lock, stop = {}, {}, threading.Lock(), threading.Event()
        victim = c.nodes[1]
        survivors = [c.nodes[0], c.nodes[2]]

        def load(k):
            rng = random.Random(k)
            while not stop.is_set():
                d = c.nodes[rng.randrange(3)]
                if d is victim and victim.proc.poll() is not None:
                    d = survivors[rng.randrange(2)]
                phone = new_phone()
                try:
                    r = d.request("POST", V0, body=v0_body(recv, phone, duration=rng.choice((2, 3, 60))),
                                  token=tok, timeout=10)
                except Exception:  # noqa: BLE001 - connection cut by the kill: not acknowledged
                    continue
                if r.status == 201:
                    with lock:
                        acked[r.json()["sessionId"]] = r.json()["duration"]
                        on_victim[r.json()["sessionId"]] = d is victim
                else:
                    assert r.status in (503, 409), r

        threads = [threading.Thread(target=load, args=(k,), daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        victim.kill()
        time.sleep(LEASE_S + 2.5)
        stop.set()
        for t in threads:
            t.join(20)
        assert len(acked) > 20, len(acked)
        # Every acknowledged session is served by the survivors; short ones end EXPIRED on time.
        wait_until(lambda: c.shards() and set(c.shards()) <= {"http://127.0.0.1:%d" % d.port for d in survivors}
                   and sum(c.shards().values()) == 64, timeout=10, what="the victim's shards taken over")
        for sid, dur in acked.items():
            r = expect_status(survivors[0].request("GET", V0 + "/" + sid, token=tok), 200)
            if dur < 60:
                wait_until(lambda: survivors[1].request("GET", V0 + "/" + sid, token=tok).json()["qosStatus"]
                           == "EXPIRED", timeout=10, what="session %s EXPIRED" % sid)
        # Every state change committed (the outbox) is delivered at least once, with its webhook-id; a short
        # session whose node died before it became available ends EXPIRED without AVAILABLE, which is right.
        missing = []

        def delivered():
            got = {h.headers.get("webhook-id") for h in list(recv.requests)}
            rows = [line.split("|") for line in psql("SELECT id, session, state FROM events", c.db).split()]
            missing[:] = [r for r in rows if r[1] in acked and (r[2] != "1" or r[0] not in got)]
            return rows if not missing else None
        try:
            rows = wait_until(delivered, timeout=20, what="every committed change delivered")
        except AssertionError:
            raise AssertionError("%d events of acknowledged sessions not delivered, e.g. %r"
                                 % (len(missing), missing[:8])) from None
        hooks = hooks_by_session(recv)
        for sid, dur in acked.items():
            sts = [st for _, st in hooks.get(sid, [])]
            if dur < 60:
                assert "EXPIRED" in sts, (sid, sts, on_victim.get(sid))
            elif not on_victim.get(sid):
                assert "AVAILABLE" in sts, (sid, sts)
            first_end = next((i for i, st in enumerate(sts) if st != "AVAILABLE"), len(sts))
            assert "AVAILABLE" not in sts[first_end:], (sid, sts)  # never AVAILABLE after the end
        dups = sum(len(v) - len({w for w, _ in v}) for v in hooks.values())
        events = len([r for r in rows if r[1] in acked])
        print("CLUSTER sessions_acknowledged=%d lost=0 events=%d events_lost=0 duplicates=%d"
              % (len(acked), events, dups))


def test_a_create_repeated_with_its_idempotency_key_after_its_node_died_is_answered_as_made():
    # A create made on a node that then dies (SIGKILL) is adopted by the other with its Idempotency-Key: the app's
    # retry with the key gets the first 201 and its session, not a 409 for its own device.
    with Cluster(2) as c, WebhookReceiver(default=(204, {}, b"")) as recv:
        app, tok = c.app()
        victim, survivor = c.nodes
        key = {"Idempotency-Key": str(uuid.uuid4())}
        body = v0_body(recv, new_phone())
        first = expect_status(victim.request("POST", V0, body=body, token=tok, headers=key), 201).json()
        victim.kill()
        victim_url = "http://127.0.0.1:%d" % victim.port
        wait_until(lambda: victim_url not in c.shards() and sum(c.shards().values()) == 64, timeout=LEASE_S * 6,
                   interval=0.1, what="the survivor holding the dead node's shards")
        r = wait_until(lambda: (lambda r: r if r.status != 503 else None)(
            survivor.request("POST", V0, body=body, token=tok, headers=key)), timeout=LEASE_S * 3,
            what="the retry answered")
        assert r.status == 201 and r.json()["sessionId"] == first["sessionId"], (r, first)
        r = survivor.request("POST", V0, body=body, token=tok)
        assert r.status == 409, r


def test_an_adopted_session_s_callbacks_wait_for_the_rescan_and_go_out_in_order():
    # docs/reliability.md, defect 7. A node dies with a session's AVAILABLE pending (its receiver failed). The
    # other node takes the shard, finds the session past its end and commits its EXPIRED at once. That commit
    # prompts a load of new events, but the session's earlier AVAILABLE is behind the load's position: only the
    # rescan that follows the adoption reads it. Holding that rescan (a test hook) widens the window between the
    # two: nothing of the session may go out before the rescan, and then AVAILABLE goes before EXPIRED.
    failing = threading.Event()
    failing.set()
    with Cluster(2, extra=("--test-hooks", "--retry-schedule", "0,1,1")) as c, \
            WebhookReceiver(responder=lambda h: (500, {}, b"") if failing.is_set() else None,
                            default=(204, {}, b"")) as recv:
        app, tok = c.app()
        keeper, victim = c.nodes[0], c.nodes[1]
        keeper.qodctl("test", "hold-rescans")
        sid = expect_status(victim.request("POST", V0, body=v0_body(recv, new_phone(), duration=1), token=tok),
                            201).json()["sessionId"]
        wait_until(lambda: hooks_by_session(recv).get(sid), timeout=10, what="the first AVAILABLE attempt")
        victim.kill()
        failing.clear()
        before = hooks_by_session(recv)[sid]
        assert [st for _, st in before] == ["AVAILABLE"], before
        keeper_url = "http://127.0.0.1:%d" % keeper.port
        wait_until(lambda: c.shards() == {keeper_url: 64}, timeout=LEASE_S * 3 + 10, what="the shards taken over")
        wait_until(lambda: psql("SELECT count(*) FROM events WHERE session = '%s'" % sid, c.db).strip() == "2",
                   timeout=10, what="the session's EXPIRED committed by the node that took it")
        # A load prompted by that commit would send EXPIRED within milliseconds; give it a moment to show.
        time.sleep(0.5)
        assert hooks_by_session(recv)[sid] == before, hooks_by_session(recv)[sid]
        keeper.qodctl("test", "hold-rescans", "--release")
        recv.wait_until(lambda _: len(hooks_by_session(recv)[sid]) >= 3, timeout=10,
                        what="AVAILABLE and EXPIRED after the rescan")
        time.sleep(0.3)
        hooks = hooks_by_session(recv)[sid]
        assert [st for _, st in hooks] == ["AVAILABLE", "AVAILABLE", "EXPIRED"], hooks
        assert hooks[0][0] == hooks[1][0], hooks  # the same event again, with its webhook-id


def test_a_node_paused_past_its_lease_writes_nothing_after_it_wakes():
    # A node stopped (SIGSTOP: a frozen VM, a long GC-like stall) for longer than its lease loses its shards to the
    # other node, which expires their sessions. When it wakes, its own expiry timers for the same sessions are
    # overdue: its writes are fenced by the shard leases it no longer holds, so each session ends exactly once,
    # and the node stops itself.
    with Cluster(2) as c, WebhookReceiver(default=(204, {}, b"")) as recv:
        app, tok = c.app()
        sleeper, other = c.nodes[1], c.nodes[0]
        sids = []
        for _ in range(8):
            r = expect_status(sleeper.request("POST", V0, body=v0_body(recv, new_phone(), duration=3), token=tok),
                              201)
            sids.append(r.json()["sessionId"])
        for sid in sids:
            wait_until(lambda: sleeper.request("GET", V0 + "/" + sid, token=tok).json()["qosStatus"] == "AVAILABLE",
                       timeout=10, what="session %s AVAILABLE" % sid)
        sleeper.proc.send_signal(signal.SIGSTOP)
        def status(sid):
            # Until the shard is taken over the request is forwarded to the frozen node: 503 or a timeout.
            try:
                r = other.request("GET", V0 + "/" + sid, token=tok, timeout=3)
            except OSError:
                return None
            return r.json().get("qosStatus") if r.status == 200 else None
        try:
            for sid in sids:
                wait_until(lambda: status(sid) == "EXPIRED", timeout=LEASE_S * 3 + 10,
                           what="session %s EXPIRED by the other node" % sid)
        finally:
            sleeper.proc.send_signal(signal.SIGCONT)
        # The woken node notices it lost its shards and stops; meanwhile none of its overdue work is committed.
        wait_until(lambda: sleeper.proc.poll() is not None, timeout=LEASE_S * 3 + 10, what="the woken node stopping")
        ends = {}
        for line in psql("SELECT session, count(*) FROM events WHERE doc::json->>'state' = 'ended'"
                         " GROUP BY session", c.db).split():
            sid, n = line.rsplit("|", 1)
            ends[sid] = int(n)
        assert {sid: ends.get(sid, 0) for sid in sids} == {sid: 1 for sid in sids}, ends
        assert "fenced" in sleeper.log() or "shard_taken" in sleeper.log(), sleeper.log()[-3000:]


def _frozen_in_transaction(db):
    """Writer backends idle inside a transaction that share-locks a lease row (a fence), for 300 ms or more."""
    return int(psql("SELECT count(DISTINCT a.pid) FROM pg_stat_activity a JOIN pg_locks k ON k.pid = a.pid"
                    " WHERE a.application_name = 'qodd-writer' AND a.state = 'idle in transaction'"
                    " AND now() - a.state_change > interval '300 ms'"
                    " AND k.relation = 'leases'::regclass AND k.granted", db).strip() or 0)


def test_a_node_frozen_inside_a_transaction_does_not_hold_its_shards():
    # A node frozen between a transaction's fence and its COMMIT keeps the share lock on its shard leases (and the
    # events' lock every node's writes take): no other node could take the shards over, and the node taking over
    # would block on the lock. The database ends such a transaction after a lease's time, the other node takes
    # every shard and writes again, and the woken node stops, its commit lost with its connection. Every session
    # acknowledged stays served.
    with Cluster(2) as c, WebhookReceiver(default=(204, {}, b"")) as recv:
        app, tok = c.app()
        sleeper, other = c.nodes[1], c.nodes[0]
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def load():
            while not stop.is_set():
                try:
                    r = sleeper.request("POST", V0, body=v0_body(recv, new_phone(), duration=60), token=tok,
                                        timeout=3)
                    if r.status == 201:
                        with lock:
                            acked.append(r.json()["sessionId"])
                except OSError:
                    pass

        threads = [threading.Thread(target=load, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        frozen = False
        try:
            # Freeze the node at random moments until one lands inside a transaction (one in 5-15 here; bounded).
            # Between tries it runs long enough to renew its leases, so that it never loses them meanwhile.
            for _ in range(100):
                time.sleep(_rng.uniform(0.2, 0.5))
                sleeper.proc.send_signal(signal.SIGSTOP)
                time.sleep(0.4)
                if _frozen_in_transaction(c.db):
                    frozen = True
                    break
                sleeper.proc.send_signal(signal.SIGCONT)
            assert frozen, "the node was never frozen inside a transaction"
            stop.set()
            other_url = "http://127.0.0.1:%d" % other.port
            wait_until(lambda: c.shards() == {other_url: 64}, timeout=LEASE_S * 3 + 5,
                       what="the frozen node's shards taken over")
            # The frozen transaction held the events' lock too, which every node's writes take: they go on.
            expect_status(other.request("POST", V0, body=v0_body(recv, new_phone(), duration=60), token=tok,
                                        timeout=10), 201)
        finally:
            stop.set()
            sleeper.proc.send_signal(signal.SIGCONT)
        for t in threads:
            t.join(10)
        wait_until(lambda: sleeper.proc.poll() is not None, timeout=LEASE_S * 3 + 10, what="the woken node stopping")
        assert len(acked) > 5, len(acked)
        for sid in acked:
            expect_status(other.request("GET", V0 + "/" + sid, token=tok), 200)




def _pg_processes():
    """The PostgreSQL server's processes: the postmaster (from its pid file) and its children."""
    with open(os.path.join(PG_DIR, "data", "postmaster.pid")) as f:
        pm = int(f.readline())
    kids = subprocess.run(["pgrep", "-P", str(pm)], capture_output=True, text=True).stdout.split()
    return [pm] + [int(k) for k in kids]


def _signal_if_there(pid, sig):
    """A process that exited meanwhile needs nothing: one caught exiting when it was stopped finishes its exit, and
    its parent may reap it as soon as the parent resumes."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


@contextlib.contextmanager
def _frozen(pids):
    """The processes stopped (SIGSTOP) for the body, and resumed after it whatever happens."""
    for p in pids:
        _signal_if_there(p, signal.SIGSTOP)
    try:
        yield
    finally:
        for p in pids:
            _signal_if_there(p, signal.SIGCONT)


def test_a_node_whose_lease_connection_stops_answering_renews_on_a_new_one():
    # The database process serving a node's lease connection stops answering (frozen here; a connection cut off
    # without a reset looks the same from the node). The lease round gives that connection up after a quarter lease
    # and renews on a new one, so the node keeps its shards. Before, the round waited for as long as the process
    # did, and every lease ran out while the node went on serving as if it held them.
    with Cluster(1) as c:
        node = c.nodes[0]
        url = "http://127.0.0.1:%d" % node.port
        wait_until(lambda: c.shards() == {url: 64}, timeout=LEASE_S * 3, what="the node holding every shard")
        lease_pid = "SELECT pid FROM pg_stat_activity WHERE application_name = 'qodd-lease'"
        pid = int(psql(lease_pid, c.db).strip())
        with _frozen([pid]):
            wait_until(lambda: "pg_no_answer" in node.log(), timeout=LEASE_S * 3, what="the round giving up the call")
            wait_until(lambda: psql(lease_pid, c.db).split() not in ([], [str(pid)]), timeout=LEASE_S * 3,
                       what="a new lease connection")
            wait_until(lambda: c.shards() == {url: 64}, timeout=LEASE_S * 3, what="the leases renewed")
            assert node.proc.poll() is None, node.log()[-3000:]
        # Its leases go on being renewed: a whole lease later the node still holds every shard and writes.
        time.sleep(LEASE_S)
        assert c.shards() == {url: 64}, c.shards()
        app, tok = c.app()
        with WebhookReceiver(default=(204, {}, b"")) as recv:
            expect_status(node.request("POST", V0, body=v0_body(recv, new_phone()), token=tok), 201)


def test_a_node_whose_database_stops_answering_stops_itself_within_its_lease():
    # The database server frozen (to the node, the same as a network cut without a reset): the node can no longer
    # renew its leases, and must stop before they run out (another node could take its shards then). Its calls
    # give up at their limit, so the round sees the time pass; before, the round waited for ever and the node went
    # on serving sessions it no longer held.
    with Cluster(1) as c:
        node = c.nodes[0]
        url = "http://127.0.0.1:%d" % node.port
        wait_until(lambda: c.shards() == {url: 64}, timeout=LEASE_S * 3, what="the node holding every shard")
        t = time.monotonic()
        with _frozen(_pg_processes()):
            wait_until(lambda: node.proc.poll() is not None, timeout=LEASE_S * 5, what="the node stopping itself")
            took = time.monotonic() - t
        assert "lease_expiring" in node.log(), node.log()[-3000:]
        assert took < scaled(LEASE_S * 5), took


def _sandbox_token(d):
    """A token of a new sandbox app without a rate limit on the single daemon d."""
    app = d.qodctl_json("app", "create", "--name", "a", "--env", "sandbox", "--rate-limit", "0", "--json")
    return get_token(d, app)


def _slow_commits(db, seconds, slow, refused=None):
    """A deferred trigger on db's sessions: the COMMIT of a session whose document names a phone of slow takes
    seconds; then one naming refused is refused."""
    names = " OR ".join("NEW.doc LIKE '%%%s%%'" % p for p in slow)
    refuse = ("IF NEW.doc LIKE '%%%s%%' THEN RAISE EXCEPTION 'refused at commit'; END IF;" % refused) if refused else ""
    psql("CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
         " IF %s THEN PERFORM pg_sleep(%d); END IF; %s RETURN NULL; END $$;"
         " CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON sessions DEFERRABLE INITIALLY DEFERRED"
         " FOR EACH ROW EXECUTE FUNCTION slow_commit()" % (names, seconds, refuse), db=db)


def test_readiness_answers_503_in_bounded_time_while_the_database_does_not_answer():
    # The database server frozen (as a network cut without a reset would look): /readyz must say so within its
    # bound, every time, instead of holding an HTTP thread until the database answers; requests that need no
    # store are still answered, and a create, which does, is answered 503 once the store's call has waited its
    # limit (--store-timeout 1) and a new connection has failed as long; once the server resumes, the node is
    # ready and creates again.
    need_pg()
    uri, _ = fresh_database()
    with WebhookReceiver(default=(204, {}, b"")) as recv:
        d = Daemon(args=["--store", uri, "--sandbox-delay-ms", "0", "--store-timeout", "1"])
        try:
            tok = _sandbox_token(d)
            sid = expect_status(d.request("POST", V0, body=v0_body(recv, new_phone()), token=tok), 201).json()[
                "sessionId"]
            expect_status(d.request("GET", "/readyz"), 200)
            with _frozen(_pg_processes()):
                for _ in range(4):  # more than the HTTP threads: none stays held
                    t = time.monotonic()
                    r = d.request("GET", "/readyz", timeout=20)
                    took = time.monotonic() - t
                    assert r.status == 503 and r.json()["code"] == "UNAVAILABLE", r
                    assert r.headers.get("Retry-After") == "1", r.headers
                    assert took < scaled(5), took
                expect_status(d.request("GET", "/healthz", timeout=5), 200)
                r = expect_status(d.request("GET", V0 + "/" + sid, token=tok, timeout=5), 200)
                assert r.json()["qosStatus"] == "AVAILABLE", r.json()
                t = time.monotonic()
                r = d.request("POST", V0, body=v0_body(recv, new_phone()), token=tok, timeout=30)
                took = time.monotonic() - t
                assert r.status == 503 and r.json()["code"] == "UNAVAILABLE", r
                assert took < scaled(10), took
            wait_until(lambda: d.request("GET", "/readyz").status == 200, timeout=10, what="ready again")
            expect_status(d.request("POST", V0, body=v0_body(recv, new_phone()), token=tok), 201)
        finally:
            d.close()



def test_a_create_whose_commit_goes_unanswered_is_answered_by_what_the_database_did():
    # A deferred trigger makes the database take 3 s over the COMMIT of two sessions, then refuse the second: qodd
    # (--store-timeout 1) gives the writer's connection up after 1 s, asks a new one what became of each
    # transaction, and answers the app by it: 201 for the committed one, 503 for the refused one, which is not in
    # the database, nor served after a restart.
    need_pg()
    uri, db = fresh_database()
    kept, refused = new_phone(), new_phone()
    with WebhookReceiver(default=(204, {}, b"")) as recv:
        d = Daemon(args=["--store", uri, "--store-timeout", "1", "--sandbox-delay-ms", "0"])
        try:
            tok = _sandbox_token(d)
            _slow_commits(db, 3, (kept, refused), refused=refused)
            t = time.monotonic()
            r = expect_status(d.request("POST", V0, body=v0_body(recv, kept), token=tok, timeout=30), 201)
            assert time.monotonic() - t >= 2.5, "the commit was not slowed down"
            sid = r.json()["sessionId"]
            r = d.request("POST", V0, body=v0_body(recv, refused), token=tok, timeout=30)
            assert r.status == 503 and r.json()["code"] == "UNAVAILABLE", r
            log = d.log()
            assert "pg_no_answer" in log and "pg_commit_confirmed" in log and "pg_commit_aborted" in log, \
                d.log_tail()
            assert psql("SELECT count(*) FROM sessions WHERE doc LIKE '%%%s%%'" % kept, db=db).strip() == "1"
            assert psql("SELECT count(*) FROM sessions WHERE doc LIKE '%%%s%%'" % refused, db=db).strip() == "0"
            d.restart()
            expect_status(d.request("GET", V0 + "/" + sid, token=tok), 200)
            # The refused phone has no session anywhere: a new one for it is created at once.
            psql("DROP TRIGGER slow_commit ON sessions", db=db)
            expect_status(d.request("POST", V0, body=v0_body(recv, refused), token=tok), 201)
        finally:
            d.close()


def test_a_create_reported_failed_whose_commit_is_found_made_later_is_served_then():
    # The database takes 7 s over one create's COMMIT: longer than qodd (--store-timeout 1) waits for it, then looks
    # it up (5 s), so the app is answered 503 while the commit may still be made, and it is. At the next write (or
    # within 2 s, idle) qodd asks again, finds it made, and reads the session from the store: it is served, provisioned and
    # notified like any other, a retry with the create's Idempotency-Key gets its 201, and the device is taken (409),
    # where before the node knew nothing of a session the database held (404, no timers, no callbacks) until a
    # restart.
    need_pg()
    uri, db = fresh_database()
    late, other = new_phone(), new_phone()
    with WebhookReceiver(default=(204, {}, b"")) as recv:
        d = Daemon(args=["--store", uri, "--store-timeout", "1", "--sandbox-delay-ms", "0"])
        try:
            tok = _sandbox_token(d)
            _slow_commits(db, 7, (late,))
            key = {"Idempotency-Key": str(uuid.uuid4())}
            r = d.request("POST", V0, body=v0_body(recv, late), token=tok, timeout=30, headers=key)
            assert r.status == 503 and r.json()["code"] == "UNAVAILABLE", r
            assert "pg_commit_unknown" in d.log(), d.log_tail()
            sid = wait_until(lambda: psql("SELECT key FROM sessions WHERE doc LIKE '%%%s%%'" % late, db=db).strip(),
                             timeout=10, what="the COMMIT made by the server after all")
            # Creates go on meanwhile.
            expect_status(d.request("POST", V0, body=v0_body(recv, other), token=tok), 201)
            wait_until(lambda: "pg_commit_found" in d.log(), timeout=5, what="the late commit found")
            wait_until(lambda: d.request("GET", V0 + "/" + sid, token=tok).status == 200, timeout=5,
                       what="the session served")
            recv.wait_until(lambda hs: any(json.loads(h.body).get("sessionId") == sid and
                                           json.loads(h.body).get("qosStatus") == "AVAILABLE" for h in hs),
                            timeout=10, what="its AVAILABLE callback")
            # The app's retry with its Idempotency-Key is answered as the create was made; without, the device is
            # taken.
            r = expect_status(d.request("POST", V0, body=v0_body(recv, late), token=tok, headers=key), 201)
            assert r.json()["sessionId"] == sid, r.json()
            r = d.request("POST", V0, body=v0_body(recv, late), token=tok)
            assert r.status == 409, r
            expect_status(d.request("DELETE", V0 + "/" + sid, token=tok), 204)
            assert _sessions_in(db)[sid] == "ended"
        finally:
            d.close()

# --------------------------------------------------------------------------------------------------------------
# Network partitions: qodd in a network namespace whose link to the database the test cuts


class _Relay:
    """Forwards TCP connections made to host:port (an address on the cut-off link) to the database's loopback
    port. The database stays on loopback; what qodd sees of a cut is the link's: packets lost both ways, no reset.
    A connection whose qodd side stays silent through a cut is given up by keepalives once the link is back."""

    def __init__(self, host, target_port):
        self.target = target_port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.closed:
            try:
                down, _ = self.sock.accept()
            except OSError:
                return
            try:
                up = socket.create_connection(("127.0.0.1", self.target), timeout=10)
                up.settimeout(None)
            except OSError:
                down.close()
                continue
            down.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            for opt, v in ((socket.TCP_KEEPIDLE, 2), (socket.TCP_KEEPINTVL, 1), (socket.TCP_KEEPCNT, 3)):
                down.setsockopt(socket.IPPROTO_TCP, opt, v)
            self.conns += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a, b):
        try:
            while True:
                data = a.recv(65536)
                if not data:
                    break
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            with contextlib.suppress(OSError):
                x.shutdown(socket.SHUT_RDWR)

    def close(self):
        self.closed = True
        for x in [self.sock] + self.conns:
            with contextlib.suppress(OSError):
                x.close()


class _CutOff:
    """A network namespace for qodd nodes, joined to the test's by two veth pairs: one carries HTTP (the test's
    requests, the nodes' forwarding, both ends' addresses in .http), the other the database connections (through a
    _Relay on its root side). cut() sets that second link down (every packet on it is lost, both ways, and no reset
    is sent: a partition, not a refusal), heal() sets it up again. Needs root and iproute2; skips otherwise."""

    def __init__(self):
        if shutil.which("ip") is None:
            skip("the ip command is not installed")
        if os.geteuid() != 0:
            skip("network namespaces need root")
        tag = "%d%d" % (os.getpid() % 100000, _rng.randrange(10))
        self.ns = "qodcut" + tag
        self.http_if, self.db_if = "qch" + tag, "qcd" + tag
        n = _rng.randrange(1, 250)
        self.http = ("10.231.%d.1" % n, "10.231.%d.2" % n)  # (the test's side, the namespace's side)
        self.db = ("10.232.%d.1" % n, "10.232.%d.2" % n)
        p = subprocess.run(["ip", "netns", "add", self.ns], capture_output=True, text=True)
        if p.returncode != 0:
            skip("ip netns add failed: %s" % p.stderr.strip())
        self.relay = None
        try:
            self._ip("-n", self.ns, "link", "set", "lo", "up")
            for ifname, (outer, inner) in ((self.http_if, self.http), (self.db_if, self.db)):
                self._ip("link", "add", ifname + "a", "type", "veth", "peer", "name", ifname + "b", "netns", self.ns)
                self._ip("addr", "add", outer + "/30", "dev", ifname + "a")
                self._ip("link", "set", ifname + "a", "up")
                self._ip("-n", self.ns, "addr", "add", inner + "/30", "dev", ifname + "b")
                self._ip("-n", self.ns, "link", "set", ifname + "b", "up")
            self.relay = _Relay(self.db[0], int(PG_URI.rsplit(":", 1)[1].split("/")[0]))
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _ip(*args):
        p = subprocess.run(["ip"] + list(args), capture_output=True, text=True)
        assert p.returncode == 0, "ip %s: %s" % (" ".join(args), p.stderr)

    def store_uri(self, uri):
        """uri (on the database's loopback port) as reached from inside the namespace: through the relay."""
        head, tail = uri.split("@", 1)
        return "%s@%s:%d/%s" % (head, self.db[0], self.relay.port, tail.split("/", 1)[1])

    def daemon(self, **kw):
        """A Daemon (not started) run inside the namespace, listening on its side of the HTTP link."""
        return _NsDaemon(self, **kw)

    def cut(self):
        self._ip("link", "set", self.db_if + "a", "down")

    def heal(self):
        self._ip("link", "set", self.db_if + "a", "up")

    def close(self):
        if self.relay:
            self.relay.close()
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        for ifname in (self.http_if, self.db_if):  # gone with the namespace; here in case it was not
            subprocess.run(["ip", "link", "del", ifname + "a"], capture_output=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _NsDaemon(Daemon):
    def __init__(self, net, **kw):
        super().__init__(start=False, **kw)
        self.net = net
        self.host = net.http[1]

    def argv(self):
        return ["ip", "netns", "exec", self.net.ns] + super().argv()


def _sessions_in(db):
    return {line.split("|")[0]: line.split("|")[1] for line in
            psql("SELECT key, doc::json->>'state' FROM sessions", db).split()}


def test_a_node_cut_off_from_the_database_answers_503_in_bounded_time_and_recovers_when_the_link_returns():
    # A partition, not a frozen server: the packets of the node's connections are lost and so are those of new
    # ones (a connect waits for its timeout instead of failing at once). Creates answer 503 within a bound
    # (--store-timeout 1: the call's limit, then two connects'; behind the session's AVAILABLE change, whose COMMIT
    # may be the write the cut catches, also that transaction's lookup, 5 s: docs/operations.md), reads from memory
    # go on, /readyz says 503; once the link is back the node reconnects by itself, without a restart, writes the
    # change it could not, and creates again. Every create answered 201 is in the database, and none answered 503
    # is.
    need_pg()
    uri, db = fresh_database()
    with _CutOff() as net, WebhookReceiver(default=(204, {}, b"")) as recv:
        d = net.daemon(args=["--store", net.store_uri(uri), "--sandbox-delay-ms", "0", "--store-timeout", "1"])
        try:
            d.start()
            tok = _sandbox_token(d)
            made = [expect_status(d.request("POST", V0, body=v0_body(recv, new_phone()), token=tok), 201).json()[
                "sessionId"]]
            net.cut()
            took = []
            for _ in range(2):
                t = time.monotonic()
                r = d.request("POST", V0, body=v0_body(recv, new_phone()), token=tok, timeout=60)
                took.append(time.monotonic() - t)
                assert r.status == 503 and r.json()["code"] == "UNAVAILABLE", r
            print("PARTITION create 503 after %s s" % ", ".join("%.2f" % x for x in took))
            assert max(took) < scaled(14), took
            t = time.monotonic()
            r = d.request("GET", "/readyz", timeout=20)
            assert r.status == 503 and time.monotonic() - t < scaled(5), (r, time.monotonic() - t)
            r = expect_status(d.request("GET", V0 + "/" + made[0], token=tok, timeout=5), 200)
            assert r.json()["qosStatus"] == "AVAILABLE", r.json()
            net.heal()
            t = time.monotonic()

            def created():
                r = d.request("POST", V0, body=v0_body(recv, new_phone()), token=tok, timeout=60)
                if r.status == 201:
                    made.append(r.json()["sessionId"])
                    return True
                assert r.status == 503, r
                return False
            wait_until(created, timeout=20, interval=0.2, what="a create to succeed once the link is back")
            print("PARTITION created again %.2f s after the link came back" % (time.monotonic() - t))
            expect_status(d.request("GET", "/readyz"), 200)
            assert "pg_no_answer" in d.log(), d.log_tail()
            wait_until(lambda: _sessions_in(db).get(made[0]) == "available", timeout=10,
                       what="the AVAILABLE change the cut caught written once the link is back")
            assert sorted(_sessions_in(db)) == sorted(made), (_sessions_in(db), made)
            assert d.stop() == 0, d.log_tail()
        finally:
            d.close()


def test_a_node_cut_off_from_the_database_stops_within_its_lease_and_another_serves_its_sessions():
    # Two nodes; only one of them loses the database (its link cut; HTTP between the nodes still works). It can no
    # longer renew its leases: it stops serving its sessions before they run out, even while its lease round is
    # still waiting on a connect (before, it served them until the round gave up, past the leases' end), then
    # stops itself; the other takes its shards once the leases have run out, and serves, deletes and expires its
    # sessions. Once the link is back the cut-off node starts again and serves (by forwarding to the holder).
    need_pg()
    uri, db = fresh_database()
    with _CutOff() as net, WebhookReceiver(default=(204, {}, b"")) as recv:
        inner = net.daemon()
        outer = Daemon(start=False)
        outer.host = net.http[0]
        nodes = (inner, outer)
        url = {n: "http://%s:%d" % (n.host, n.port) for n in nodes}
        for n, store in ((inner, net.store_uri(uri)), (outer, uri)):
            n.args = ["--store", store, "--cluster-node", url[n], "--cluster-lease", str(LEASE_S),
                      "--public-url", url[outer], "--sandbox-delay-ms", "0"]
        try:
            outer.start()
            outer.stop()
            for f in ("signing-key.pem", "secrets.key"):
                shutil.copy(os.path.join(outer.data_dir, f), os.path.join(inner.data_dir, f))
            threads = [threading.Thread(target=n.start) for n in nodes]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            assert all(n.proc and n.proc.poll() is None for n in nodes), [n.log_tail() for n in nodes]

            def held():
                out = {}
                for line in psql("SELECT holder, count(*) FROM leases WHERE name LIKE 'shard:%%'"
                                 " AND expires_at > now() GROUP BY holder", db).split():
                    holder, k = line.rsplit("|", 1)
                    out[holder] = int(k)
                return out
            wait_until(lambda: held().get(url[inner], 0) > 0 and sum(held().values()) == 64, timeout=LEASE_S * 4,
                       what="both nodes holding shards")
            app = create_app(outer, scopes=ALL_SCOPES, extra=("--rate-limit", "0"))
            wait_until(lambda: token_response(inner, app).status == 200, timeout=5, what="the app known inside")
            tok = get_token(inner, app)
            # Created on the inner node: in shards it holds.
            sids = [expect_status(inner.request("POST", V0, body=v0_body(recv, new_phone(), duration=d_s),
                                                token=tok), 201).json()["sessionId"] for d_s in (60, 60, 8)]
            # A v1 session too, read back by its device (retrieve-sessions: answered from the node's own memory).
            by_phone = {"device": {"phoneNumber": new_phone()}}
            sid1 = expect_status(inner.request("POST", V1, token=tok, body=dict(
                by_phone, applicationServer={"ipv4Address": "198.51.100.7"}, qosProfile="QOS_L", duration=60,
                sink=recv.url("/v1"))), 201).json()["sessionId"]
            assert [x["sessionId"] for x in expect_status(inner.request(
                "POST", RETRIEVE, token=tok, body=by_phone), 200).json()] == [sid1]
            assert held().get(url[inner], 0) > 0
            # The sessions' changes and their first callback attempts' outcomes (the receiver cannot be reached from
            # the namespace) written first: a write in flight at the cut would hold the node's exit for up to
            # --store-timeout, its writer waiting on the lost database.
            time.sleep(0.1)  # outcomes are gathered for up to 10 ms before they are written
            wait_until(lambda: metrics(inner).get("qod_store_queue", 1) == 0, timeout=5, what="the writes done")
            t = time.monotonic()
            net.cut()
            # (seconds after the cut, status) of reads on the cut-off node while it runs: by id, and by device.
            answers, found = [], []
            while inner.proc.poll() is None and time.monotonic() - t < scaled(LEASE_S * 5):
                for into, method, path, body in ((answers, "GET", V0 + "/" + sids[1], None),
                                                 (found, "POST", RETRIEVE, by_phone)):
                    sent = time.monotonic() - t
                    try:
                        into.append((sent, inner.request(method, path, body=body, token=tok, timeout=5).status))
                    except OSError:
                        into.append((sent, None))
                time.sleep(0.05)
            wait_until(lambda: inner.proc.poll() is not None, timeout=LEASE_S * 5, what="the cut-off node stopping")
            stopped = time.monotonic() - t
            # Its leases were last renewed before the cut: 4/5 of a lease later it acts on none of them.
            for seen in (answers, found):
                late = [a for a in seen if a[0] > LEASE_S * 0.8 + 0.2 and a[1] == 200]
                assert not late, "served after its leases' time: %r" % seen
                assert any(status == 200 for _, status in seen[:3]), seen
                assert any(status == 503 for _, status in seen), seen
            assert "lease_expiring" in inner.log(), inner.log_tail()
            wait_until(lambda: held() == {url[outer]: 64}, timeout=LEASE_S * 6, interval=0.1,
                       what="the other node holding every shard")
            print("PARTITION node stopped %.2f s after the cut; its shards taken over %.2f s after it"
                  % (stopped, time.monotonic() - t))
            for sid in sids[:2]:
                r = expect_status(outer.request("GET", V0 + "/" + sid, token=tok), 200)
                assert r.json()["qosStatus"] == "AVAILABLE", r.json()
            assert [x["sessionId"] for x in expect_status(outer.request(
                "POST", RETRIEVE, token=tok, body=by_phone), 200).json()] == [sid1]
            expect_status(outer.request("DELETE", V0 + "/" + sids[0], token=tok), 204)
            wait_until(lambda: _sessions_in(db).get(sids[2]) == "ended", timeout=10,
                       what="the short session expired by the node that took it over")
            assert _sessions_in(db)[sids[0]] == "ended" and _sessions_in(db)[sids[1]] == "available"
            # The link back, the node starts again; the other holding every shard, it serves by forwarding.
            net.heal()
            inner.start()
            r = expect_status(inner.request("GET", V0 + "/" + sids[1], token=tok), 200)
            assert r.json()["qosStatus"] == "AVAILABLE", r.json()
            expect_status(inner.request("DELETE", V0 + "/" + sids[1], token=tok), 204)
            assert _sessions_in(db)[sids[1]] == "ended"
        except BaseException:
            for i, n in enumerate(nodes):
                print("--- %s node log tail ---\n%s" % (("inner", "outer")[i], n.log()[-3000:]))
            raise
        finally:
            for n in nodes:
                n.close(check=False)


if __name__ == "__main__":
    run(globals())
