"""Callback delivery (Konera v0 notifications): Standard Webhooks signatures and headers, the bearer token, order per
session, the retry schedule, dead events and their replay, Retry-After, 410 Gone, redirects, timeouts, webhook secret
rotation, crash safety, a receiver that comes back, metrics, the callback URL guard (at creation, with
--callback-allow inside a loopback-only network namespace, and at connect time) and `qodctl webhook listen|verify`.

Black-box: every test starts its own build/qodd (options differ per test) with --sandbox-delay-ms 100 and short
retry schedules, and a WebhookReceiver on 127.0.0.1. Every callback a test receives is checked with
verify_standard_webhook under the app's webhook_secret. Nothing is ever sent to a non-loopback address outside a
network namespace that has only loopback.
"""
import concurrent.futures
import os
import random
import shutil
import socket
import sys
import threading
import queue as queue_mod

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403
from qodlib import qodctl_path  # noqa: E402

V0 = "/camara/qod/v0"
SESSIONS = V0 + "/sessions"
DELAY_MS = 100
BODY_KEYS = {"sessionId", "event", "qosStatus"}
AUTH_TOKEN = "tok-" + "a1B2c3D4e5F6g7H8i9J0" * 2  # 44 printable characters

_rng = random.SystemRandom()
_used = set()
_used_lock = threading.Lock()


# --------------------------------------------------------------------------------------------------------------
# Helpers


def new_phone():
    """A fresh +1555xxxxxxx number (outside the sandbox table: the happy path)."""
    with _used_lock:
        while True:
            p = "+1555%07d" % _rng.randrange(10 ** 7)
            if p not in _used:
                _used.add(p)
                return p


def start(schedule=None, timeout=None, delay_ms=DELAY_MS, extra=()):
    """A dedicated daemon, a sandbox app without rate limit and its token."""
    args = ["--sandbox-delay-ms", str(delay_ms)]
    if schedule is not None:
        args += ["--retry-schedule", schedule]
    if timeout is not None:
        args += ["--callback-timeout", str(timeout)]
    d = Daemon(args=args + list(extra))
    app = create_app(d, name="cb", extra=("--rate-limit", "0"))
    assert app.get("webhook_secret", "").startswith("whsec_"), "app create --json lacks a whsec_ secret: %r" % app
    return d, app, get_token(d, app)


def post_session(d, tok, url, phone=None, duration=60, auth_token=None):
    wh = {"notificationUrl": url}
    if auth_token is not None:
        wh["notificationAuthToken"] = auth_token
    body = {"device": {"phoneNumber": phone or new_phone()}, "qosProfile": "QOS_L", "duration": duration,
            "webhook": wh}
    return d.request("POST", SESSIONS, body=body, token=tok)


def create(d, tok, url, **kw):
    """POST /sessions that must answer 201; returns the session id."""
    r = post_session(d, tok, url, **kw)
    expect_status(r, 201)
    return r.json()["sessionId"]


def delete(d, tok, sid):
    expect_status(d.request("DELETE", SESSIONS + "/" + sid, token=tok), 204)


def verified(secret, hook):
    """The hook's JSON body after checking its Standard Webhooks signature (AssertionError otherwise)."""
    try:
        return verify_standard_webhook(secret, hook.headers, hook.body)
    except WebhookVerifyError as e:
        raise AssertionError("callback signature does not verify: %s; hook %r headers %r"
                             % (e, hook, dict(hook.headers.items()))) from None


def verify_all(secret, hooks):
    for h in hooks:
        verified(secret, h)
    return hooks


def of(hooks, sid=None, status=None):
    """The hooks (in arrival order) of session sid and/or with qosStatus status."""
    out = []
    for h in hooks:
        try:
            b = json.loads(h.body)
        except ValueError:
            continue
        if (sid is None or b.get("sessionId") == sid) and (status is None or b.get("qosStatus") == status):
            out.append(h)
    return out


def wait_hooks(recv, n, sid=None, status=None, timeout=10):
    """Waits until at least n hooks of sid/status arrived; returns them all (arrival order)."""
    what = "%d callback(s) for session %s status %s" % (n, sid, status)
    return recv.wait_until(lambda hs: (lambda m: m if len(m) >= n else None)(of(hs, sid, status)),
                           timeout=timeout, what=what)


def wid(hook):
    return hook.headers.get("webhook-id")


def deliveries(d, state="dead"):
    return d.qodctl_json("deliveries", "list", "--state", state, "--json")


def wait_deliveries(d, pred, state="dead", timeout=10, what="deliveries"):
    """Polls `qodctl deliveries list` (no event to wait for) until pred(list) is truthy; returns the list."""
    box = {}

    def check():
        box["l"] = deliveries(d, state)
        return pred(box["l"])
    try:
        wait_until(check, timeout=timeout, interval=0.05, what=what)
    except AssertionError as e:
        raise AssertionError("%s; last list: %r" % (e, box.get("l"))) from None
    return box["l"]


class Script:
    """A responder: per URL path, a list of answers (status, headers[, body[, delay]]) used in order, then 200."""

    def __init__(self, **paths):
        self.lock = threading.Lock()
        self.paths = {("/" + k): list(v) for k, v in paths.items()}

    def __call__(self, hook):
        with self.lock:
            lst = self.paths.get(hook.path)
            if lst:
                return lst.pop(0)
        return None


def gaps(hooks):
    return [round(b.time - a.time, 3) for a, b in zip(hooks, hooks[1:])]


# --------------------------------------------------------------------------------------------------------------
# Shape, headers, signatures, order


def test_callbacks_are_signed_with_standard_webhooks_headers_and_bearer_token():
    d, app, tok = start()
    with d, WebhookReceiver() as recv:
        t0 = time.time()
        sid = create(d, tok, recv.url("/with-token"), auth_token=AUTH_TOKEN)
        sid2 = create(d, tok, recv.url("/no-token"))
        avail = wait_hooks(recv, 1, sid, "AVAILABLE")[0]
        avail2 = wait_hooks(recv, 1, sid2, "AVAILABLE")[0]
        delete(d, tok, sid)
        deleted = wait_hooks(recv, 1, sid, "DELETED")[0]
        for h in (avail, avail2, deleted):
            assert h.method == "POST", h
            b = verified(app["webhook_secret"], h)
            assert set(b) == BODY_KEYS, "callback body members %r, expected %r" % (sorted(b), sorted(BODY_KEYS))
            assert b["event"] == "QOS_STATUS_CHANGED", b
            assert h.headers.get("content-type", "").split(";")[0].strip() == "application/json", h.headers
            ts = h.headers.get("webhook-timestamp")
            assert re.fullmatch(r"\d+", ts or ""), "webhook-timestamp %r" % ts
            assert t0 - 5 <= int(ts) <= time.time() + 5, "webhook-timestamp %s is not the attempt's time" % ts
            sig = h.headers.get("webhook-signature", "")
            assert re.fullmatch(r"v1,[A-Za-z0-9+/]{43}=", sig), "one v1 signature expected: %r" % sig
            # CAMARA's x-correlator of the notification POST: one per event, named as our logs name it.
            assert h.headers.get("x-correlator") == wid(h), h.headers
        assert avail.path == "/with-token" and deleted.path == "/with-token", (avail, deleted)
        assert avail.headers.get("authorization") == "Bearer " + AUTH_TOKEN, avail.headers
        assert deleted.headers.get("authorization") == "Bearer " + AUTH_TOKEN, deleted.headers
        assert "authorization" not in avail2.headers, "Authorization sent without notificationAuthToken: %r" % (
            avail2.headers,)
        ids = [wid(avail), wid(avail2), wid(deleted)]
        assert all(ids) and len(set(ids)) == 3, "webhook-id must be unique per event: %r" % ids
        assert json.loads(avail.body)["sessionId"] == sid and json.loads(avail2.body)["sessionId"] == sid2
        # Each event exactly once when the receiver acknowledges it.
        recv.expect_quiet(3, 0.3)
        verify_all(app["webhook_secret"], recv.requests)


def test_every_status_change_is_notified_in_order():
    d, app, tok = start()
    with d, WebhookReceiver() as recv:
        expiring = create(d, tok, recv.url("/exp"), duration=1)
        refused = create(d, tok, recv.url("/ref"), phone="+99999991001")
        forced = create(d, tok, recv.url("/net"))
        wait_hooks(recv, 1, forced, "AVAILABLE")
        r = d.request("POST", "/sandbox/v0/sessions/%s/network-events" % forced, body={"qosStatus": "UNAVAILABLE"},
                      token=tok)
        assert r.status in (200, 202, 204), "forcing a network event failed: %r" % r
        wait_hooks(recv, 1, forced, "UNAVAILABLE")
        wait_hooks(recv, 1, expiring, "EXPIRED", timeout=6)
        wait_hooks(recv, 1, refused, "UNAVAILABLE")
        recv.expect_quiet(recv.count(), 0.3)
        hooks = verify_all(app["webhook_secret"], list(recv.requests))
        seq = lambda sid: [json.loads(h.body)["qosStatus"] for h in of(hooks, sid)]
        assert seq(expiring) == ["AVAILABLE", "EXPIRED"], seq(expiring)
        assert seq(refused) == ["UNAVAILABLE"], seq(refused)
        assert seq(forced) == ["AVAILABLE", "UNAVAILABLE"], seq(forced)


def test_next_event_waits_until_the_previous_one_is_acknowledged():
    # The first answer takes 1.5 s; the session expires 1 s after creation, meanwhile.
    d, app, tok = start(timeout=5, schedule="0,0.2")
    with d, WebhookReceiver() as recv:
        recv.respond(200, delay=1.5)
        sid = create(d, tok, recv.url("/slow"), duration=1)
        hooks = wait_hooks(recv, 2, sid, timeout=8)
        recv.expect_quiet(2, 0.3)
        verify_all(app["webhook_secret"], hooks)
        first, second = hooks[0], hooks[1]
        assert json.loads(first.body)["qosStatus"] == "AVAILABLE", first
        assert json.loads(second.body)["qosStatus"] == "EXPIRED", second
        acked = first.time + 1.5
        assert second.time >= acked - 0.05, (
            "EXPIRED was sent %.3fs after AVAILABLE, before AVAILABLE was acknowledged (1.5s)" % (second.time - first.time))
        assert wid(first) != wid(second)


# --------------------------------------------------------------------------------------------------------------
# Retries, dead events, replay


def test_retry_schedule_spacing_same_id_until_2xx():
    d, app, tok = start(schedule="0,0.5,1")
    with d, WebhookReceiver() as recv:
        recv.respond(500)
        recv.respond(502)
        sid = create(d, tok, recv.url("/r"))
        hooks = wait_hooks(recv, 3, sid, "AVAILABLE", timeout=6)
        recv.expect_quiet(3, 0.3)
        verify_all(app["webhook_secret"], hooks)
        ids = {wid(h) for h in hooks}
        assert len(ids) == 1, "webhook-id changed across retries: %r" % ids
        assert {h.headers.get("x-correlator") for h in hooks} == ids, "x-correlator changed across retries"
        g = gaps(hooks)
        assert 0.4 <= g[0] <= 0.9, "second attempt %.3fs after the first failure, schedule says 0.5 ±10%%: %r" % (g[0], g)
        assert 0.85 <= g[1] <= 1.5, "third attempt %.3fs after the second failure, schedule says 1 ±10%%: %r" % (g[1], g)
        # Each attempt is signed with its own timestamp.
        for h in hooks:
            assert abs(int(h.headers["webhook-timestamp"]) - h.time) <= 2, (h.headers["webhook-timestamp"], h.time)
        delivered = wait_deliveries(d, lambda l: [e for e in l if e.get("session") == sid], state="delivered",
                                    what="the event listed as delivered")
        e = [x for x in delivered if x["session"] == sid][0]
        assert e["delivery"] == "delivered" and e["attempts"] == 3 and e["event_id"] == wid(hooks[0]), e
        assert deliveries(d, "dead") == [], "nothing should be dead"


def test_dead_after_last_attempt_then_retry_redelivers_with_same_id():
    d, app, tok = start(schedule="0,0.2,0.2")
    with d, WebhookReceiver(default=(500, {}, b"")) as recv:
        url = recv.url("/dead")
        sid = create(d, tok, url)
        sid2 = create(d, tok, recv.url("/dead2"))
        hooks = wait_hooks(recv, 3, sid, "AVAILABLE", timeout=5)
        wait_hooks(recv, 3, sid2, "AVAILABLE", timeout=5)
        dead = wait_deliveries(d, lambda l: len(l) >= 2, what="two dead events")
        # Exactly as many attempts as the schedule has values, then silence.
        recv.expect_quiet(6, 0.5)
        verify_all(app["webhook_secret"], recv.requests)
        byses = {e["session"]: e for e in dead}
        assert set(byses) == {sid, sid2}, dead
        e = byses[sid]
        assert e["delivery"] == "dead" and e["attempts"] == 3, e
        assert e["event_id"] == wid(hooks[0]) and e["url"] == url, (e, wid(hooks[0]))
        assert deliveries(d, "pending") == []
        default_list = d.qodctl_json("deliveries", "list", "--json")
        assert sorted(e["event_id"] for e in default_list) == sorted(e["event_id"] for e in dead), (
            "`deliveries list` without --state should list the dead events: %r" % default_list)
        # Replay one event: it is delivered again under the same webhook-id.
        recv.default = (200, {}, b"")
        n = recv.count()
        out = d.qodctl("deliveries", "retry", e["event_id"])
        assert "1" in out.stdout, "deliveries retry output: %r" % out.stdout
        again = recv.wait_for(n + 1)[n]
        verified(app["webhook_secret"], again)
        assert wid(again) == e["event_id"] and json.loads(again.body)["sessionId"] == sid, again
        wait_deliveries(d, lambda l: [x for x in l if x["session"] == sid], state="delivered",
                        what="the replayed event listed as delivered")
        still = deliveries(d, "dead")
        assert [x["session"] for x in still] == [sid2], still
        # --all replays the rest.
        d.qodctl("deliveries", "retry", "--all")
        last = recv.wait_for(n + 2)[n + 1]
        verified(app["webhook_secret"], last)
        assert wid(last) == byses[sid2]["event_id"], last
        wait_deliveries(d, lambda l: l == [], what="no dead events left")
        recv.expect_quiet(n + 2, 0.3)
        # The receiver records a callback before it answers, and the outcome is written after: wait for the store.
        both = sorted([(sid, "delivered"), (sid2, "delivered")])
        wait_deliveries(d, lambda l: sorted((e["session"], e["delivery"]) for e in l) == both, state="all",
                        what="both events stored as delivered")
        # An unknown event id is an error.
        bad = d.qodctl("deliveries", "retry", "no-such-event", check=False)
        assert bad.returncode != 0, bad


def test_retry_of_dead_event_is_delivered_before_the_sessions_later_pending_event():
    # AVAILABLE dies (2 attempts, 500); EXPIRED then waits 3 s on a 503 Retry-After. Replaying AVAILABLE during that
    # wait must send it before EXPIRED: per-session order (DESIGN, `deliveries retry`).
    d, app, tok = start(schedule="0,0.2")
    with d, WebhookReceiver() as recv:
        recv.respond(500, times=2)
        recv.respond(503, headers={"Retry-After": "3"})
        sid = create(d, tok, recv.url("/order"), duration=1)
        avail = wait_hooks(recv, 2, sid, "AVAILABLE", timeout=5)
        dead = wait_deliveries(d, lambda l: [e for e in l if e["session"] == sid], what="AVAILABLE dead")
        assert dead[0]["event_id"] == wid(avail[0]), (dead, avail)
        wait_hooks(recv, 1, sid, "EXPIRED", timeout=5)
        t_retry = time.time()
        d.qodctl("deliveries", "retry", dead[0]["event_id"])
        # Both the replayed AVAILABLE and EXPIRED's second attempt must arrive, AVAILABLE first.
        hooks = recv.wait_until(lambda hs: (lambda a, e: (a, e) if a and e else None)(
            [h for h in of(hs, sid, "AVAILABLE") if h.time >= t_retry],
            [h for h in of(hs, sid, "EXPIRED")][1:]), timeout=8, what="replayed AVAILABLE and EXPIRED again")
        verify_all(app["webhook_secret"], recv.requests)
        a, e = hooks[0][0], hooks[1][0]
        assert wid(a) == dead[0]["event_id"]
        seen = ["%s at %+.2fs" % (json.loads(h.body)["qosStatus"], h.time - t_retry) for h in recv.requests]
        assert a.time < e.time, (
            "order per session broken: after `deliveries retry` of the dead AVAILABLE event, the session's pending "
            "EXPIRED event was sent first and AVAILABLE only after it; callbacks (relative to the retry): %s" % seen)


def test_retry_after_is_honoured_for_429_and_503():
    # The schedule's next wait is 30 s; Retry-After: 1 must win.
    d, app, tok = start(schedule="0,30")
    script = Script(**{"429": [(429, {"Retry-After": "1"})], "503": [(503, {"Retry-After": "1"})]})
    with d, WebhookReceiver(responder=script) as recv:
        s429 = create(d, tok, recv.url("/429"))
        s503 = create(d, tok, recv.url("/503"))
        h429 = wait_hooks(recv, 2, s429, timeout=5)
        h503 = wait_hooks(recv, 2, s503, timeout=5)
        verify_all(app["webhook_secret"], recv.requests)
        for name, hs in (("429", h429), ("503", h503)):
            g = gaps(hs)[0]
            assert 0.85 <= g <= 2.5, "%s with Retry-After: 1 was retried after %.3fs" % (name, g)
            assert wid(hs[0]) == wid(hs[1])
        recv.expect_quiet(4, 0.3)


def test_503_and_429_without_retry_after_follow_the_schedule():
    # No Retry-After header: the schedule (1.5 s ±10%) applies, not an immediate retry.
    d, app, tok = start(schedule="0,1.5")
    script = Script(**{"429": [(429, {})], "503": [(503, {})]})
    with d, WebhookReceiver(responder=script) as recv:
        s429 = create(d, tok, recv.url("/429"))
        s503 = create(d, tok, recv.url("/503"))
        h429 = wait_hooks(recv, 2, s429, timeout=5)
        h503 = wait_hooks(recv, 2, s503, timeout=5)
        verify_all(app["webhook_secret"], recv.requests)
        problems = []
        for name, hs in (("429", h429), ("503", h503)):
            g = gaps(hs)[0]
            if not 1.3 <= g <= 2.5:
                problems.append("%s without Retry-After was retried after %.3fs (schedule: 1.5s)" % (name, g))
        assert not problems, "; ".join(problems)


def test_410_gone_kills_the_event_and_every_later_delivery_to_that_url():
    d, app, tok = start(schedule="0,0.2,0.2")
    script = Script(gone=[(410, {})] * 10)
    with d, WebhookReceiver(responder=script) as recv:
        gone = recv.url("/gone")
        s1 = create(d, tok, gone)
        h = wait_hooks(recv, 1, s1, "AVAILABLE")[0]
        verified(app["webhook_secret"], h)
        dead = wait_deliveries(d, lambda l: len(l) >= 1, what="the 410'd event dead")
        assert len(dead) == 1 and dead[0]["event_id"] == wid(h) and dead[0]["attempts"] == 1, dead
        # No retry after 410 (the schedule would retry after 0.2 s).
        recv.expect_quiet(1, 0.6)
        # The same session's next event, and another session's events, to that URL: dead without a request.
        delete(d, tok, s1)
        s2 = create(d, tok, gone)
        ok = create(d, tok, recv.url("/ok"))
        wait_hooks(recv, 1, ok, "AVAILABLE")
        dead = wait_deliveries(d, lambda l: len(l) >= 3, what="three dead events for the gone URL")
        recv.expect_quiet(2, 0.3)
        assert sorted((e["session"], e["attempts"]) for e in dead) == sorted([(s1, 1), (s1, 0), (s2, 0)]), dead
        assert all(e["url"] == gone for e in dead), dead
        assert [x.path for x in recv.requests] == ["/gone", "/ok"], recv.requests
        verify_all(app["webhook_secret"], recv.requests)
        if not CLUSTER:  # metrics are per node; the requests above reached every node
            m = metrics(d)
            assert m.get('qod_delivery_failures_total{reason="gone"}') == 1, m
            assert m.get("qod_delivery_dead_total") == 3, m


def test_410_gone_is_remembered_across_restart():
    d, app, tok = start(schedule="0,0.2")
    script = Script(gone=[(410, {})] * 10)
    with d, WebhookReceiver(responder=script) as recv:
        gone = recv.url("/gone")
        s1 = create(d, tok, gone)
        wait_hooks(recv, 1, s1, "AVAILABLE")
        wait_deliveries(d, lambda l: len(l) >= 1, what="the 410'd event dead")
        d.restart()
        s2 = create(d, tok, gone)
        ok = create(d, tok, recv.url("/ok"))
        wait_hooks(recv, 1, ok, "AVAILABLE")
        dead = wait_deliveries(d, lambda l: len(l) >= 2, what="the new event to the gone URL dead")
        recv.expect_quiet(2, 0.3)
        assert [x.path for x in recv.requests] == ["/gone", "/ok"], (
            "a URL that answered 410 Gone was called again after a restart: %r" % recv.requests)
        assert sorted(e["session"] for e in dead) == sorted([s1, s2]), dead


def test_a_gone_url_forgotten_by_the_operator_is_called_again():
    d, app, tok = start(schedule="0,0.2")
    script = Script(gone=[(410, {})])
    with d, WebhookReceiver(responder=script) as recv:
        gone = recv.url("/gone")
        s1 = create(d, tok, gone)
        wait_hooks(recv, 1, s1, "AVAILABLE")
        wait_deliveries(d, lambda l: len(l) >= 1, what="the 410'd event dead")
        listed = d.qodctl_json("deliveries", "gone", "--json")
        assert [x["url"] for x in listed] == [gone] and re.match(r"\d{4}-\d\d-\d\dT", listed[0]["since"]), listed
        assert gone in d.qodctl("deliveries", "gone").stdout
        if not CLUSTER:
            assert metrics(d).get("qod_delivery_gone_urls") == 1
        # A URL that never answered 410, and no URL at all: refused, and nothing changes.
        p = d.qodctl("deliveries", "forget-gone", recv.url("/other"), check=False)
        assert p.returncode != 0 and "answered 410 Gone" in p.stderr, (p.returncode, p.stdout, p.stderr)
        p = d.qodctl("deliveries", "forget-gone", check=False)
        assert p.returncode != 0 and "url" in p.stderr, (p.returncode, p.stdout, p.stderr)
        assert len(d.qodctl_json("deliveries", "gone", "--json")) == 1
        # Forgotten: a new session's callbacks go to the URL again (the receiver now answers 200), and a restart
        # does not bring the URL back.
        assert d.qodctl_json("deliveries", "forget-gone", gone, "--json") == {"forgotten": gone}
        assert d.qodctl_json("deliveries", "gone", "--json") == []
        s2 = create(d, tok, gone)
        wait_hooks(recv, 1, s2, "AVAILABLE")
        if not CLUSTER:
            assert metrics(d).get("qod_delivery_gone_urls") == 0
        d.restart()
        s3 = create(d, tok, gone)
        wait_hooks(recv, 1, s3, "AVAILABLE")
        # The event that died of the 410 stays dead until it is replayed.
        dead = wait_deliveries(d, lambda l: len(l) >= 1, what="the dead event")
        assert [e["session"] for e in dead] == [s1], dead
        assert d.qodctl_json("deliveries", "retry", "--all", "--json") == {"requeued": 1}
        wait_hooks(recv, 2, s1)
        verify_all(app["webhook_secret"], recv.requests)


def test_the_oldest_gone_url_is_forgotten_past_the_limit_and_called_again():
    # Receivers that answer 410 to a URL of their own per session must not grow qodd without bound: past
    # --callback-gone-max the oldest gone URL is forgotten, in memory and in the store, and called again.
    cluster_skip("the limit is per node: which node forgets first depends on the order the 410s reached each")
    d, app, tok = start(schedule="0,0.2", extra=("--callback-gone-max", "2"))
    script = Script(g1=[(410, {})], g2=[(410, {})], g3=[(410, {})])
    with d, WebhookReceiver(responder=script) as recv:
        urls = [recv.url("/g%d" % i) for i in (1, 2, 3)]
        for n, url in enumerate(urls):
            sid = create(d, tok, url)
            wait_hooks(recv, 1, sid, "AVAILABLE")
            wait_deliveries(d, lambda l: [e for e in l if e["session"] == sid], what="the 410'd event dead")
            want = set(urls[max(0, n - 1):n + 1])
            wait_until(lambda: {x["url"] for x in d.qodctl_json("deliveries", "gone", "--json")} == want,
                       what="the gone URLs %r" % sorted(want))
        assert metrics(d).get("qod_delivery_gone_urls") == 2
        assert "gone_url_forgotten" in d.log() and urls[0] in d.log()
        # The forgotten URL is called again (it answers 200 now); one still remembered is not.
        s1 = create(d, tok, urls[0])
        wait_hooks(recv, 1, s1, "AVAILABLE")
        s3 = create(d, tok, urls[2])
        wait_deliveries(d, lambda l: [e for e in l if e["session"] == s3], what="the event to a gone URL dead")
        assert not of(recv.requests, s3), "a URL remembered as gone was called"
        d.restart()
        assert {x["url"] for x in d.qodctl_json("deliveries", "gone", "--json")} == set(urls[1:])
        assert metrics(d).get("qod_delivery_gone_urls") == 2


def test_redirect_is_a_failure_and_is_not_followed():
    cluster_skip("metrics are per node (docs/operations.md): the requests counted here reached several nodes")
    d, app, tok = start(schedule="0,0.2")
    with d, WebhookReceiver() as target, WebhookReceiver(
            default=(302, {"Location": target.url("/target")}, b"")) as recv:
        sid = create(d, tok, recv.url("/moved"))
        hooks = wait_hooks(recv, 2, sid, timeout=5)
        verify_all(app["webhook_secret"], hooks)
        dead = wait_deliveries(d, lambda l: len(l) >= 1, what="the redirected event dead")
        assert dead[0]["attempts"] == 2 and dead[0]["event_id"] == wid(hooks[0]), dead
        recv.expect_quiet(2, 0.3)
        assert target.count() == 0, "the redirect was followed: %r" % target.requests
        m = metrics(d)
        assert m.get('qod_delivery_failures_total{reason="redirect"}') == 2, m
        assert m.get("qod_delivery_success_total") == 0, m


def test_slow_receiver_times_out_and_is_retried():
    cluster_skip("metrics are per node (docs/operations.md): the requests counted here reached several nodes")
    d, app, tok = start(schedule="0,0.3", timeout=1)
    with d, WebhookReceiver() as recv:
        recv.respond(200, delay=3)
        sid = create(d, tok, recv.url("/slow"))
        hooks = wait_hooks(recv, 2, sid, "AVAILABLE", timeout=6)
        verify_all(app["webhook_secret"], hooks)
        g = gaps(hooks)[0]
        assert 1.1 <= g <= 2.2, "retry %.3fs after the first attempt; expected timeout 1s + 0.3s" % g
        assert wid(hooks[0]) == wid(hooks[1])
        wait_deliveries(d, lambda l: [e for e in l if e["session"] == sid and e["attempts"] == 2],
                        state="delivered", what="delivered on the second attempt")
        m = metrics(d)
        assert m.get('qod_delivery_failures_total{reason="timeout"}') == 1, m


# --------------------------------------------------------------------------------------------------------------
# Webhook secret rotation


def _sig_parts(hook):
    return [p for p in hook.headers.get("webhook-signature", "").split(" ") if p]


def _verifies(secret, hook, part):
    try:
        verify_standard_webhook(secret, dict(hook.headers.items(), **{"webhook-signature": part}), hook.body)
        return True
    except WebhookVerifyError:
        return False


def test_rotated_webhook_secret_signs_with_both_during_grace_then_only_new():
    d, app, tok = start()
    with d, WebhookReceiver() as recv:
        old = app["webhook_secret"]
        assert "previous_webhook_secret_valid_until" not in d.qodctl_json("app", "show", app["client_id"], "--json")
        s1 = create(d, tok, recv.url("/1"))
        h1 = wait_hooks(recv, 1, s1)[0]
        assert len(_sig_parts(h1)) == 1 and _verifies(old, h1, _sig_parts(h1)[0]), h1.headers
        # 5 s: the rotation (with the wait for the other nodes in a cluster run), a create and its callback must
        # all fit in the grace period, on ASan and on a loaded machine.
        grace = 5
        t_asked = time.monotonic()
        rot = d.qodctl_json("app", "rotate-webhook-secret", app["client_id"], "--grace", grace, "--json")
        t_rot = time.monotonic()
        new = rot.get("webhook_secret", "")
        assert new.startswith("whsec_") and new != old, rot
        # The operator's view gives the end of the grace period from then on, never the secrets.
        shown = d.qodctl_json("app", "show", app["client_id"], "--json")
        assert shown.get("previous_webhook_secret_valid_until") == rot["previous_secret_valid_until"], (shown, rot)
        assert "whsec_" not in json.dumps(shown), shown
        s2 = create(d, tok, recv.url("/2"))
        h2 = wait_hooks(recv, 1, s2)[0]
        assert time.monotonic() - t_asked < grace, "test too slow: the grace period may have ended"
        parts = _sig_parts(h2)
        assert len(parts) == 2, "two signatures expected during the grace period: %r" % parts
        with_new = [p for p in parts if _verifies(new, h2, p)]
        with_old = [p for p in parts if _verifies(old, h2, p)]
        assert len(with_new) == 1 and len(with_old) == 1 and with_new != with_old, (parts, with_new, with_old)
        verified(new, h2)
        verified(old, h2)
        # After the grace period: the new secret only (a time-based wait: the grace period must pass).
        wait_until(lambda: time.monotonic() - t_rot > grace + 0.2, timeout=grace + 1, interval=0.05,
                   what="the grace period to end")
        s3 = create(d, tok, recv.url("/3"))
        h3 = wait_hooks(recv, 1, s3)[0]
        parts = _sig_parts(h3)
        assert len(parts) == 1, "only the new signature expected after the grace period: %r" % parts
        verified(new, h3)
        assert not _verifies(old, h3, parts[0]), "the old secret still verifies after the grace period"
        # --grace 0: the previous secret stops at once.
        rot2 = d.qodctl_json("app", "rotate-webhook-secret", app["client_id"], "--grace", "0", "--json")
        newer = rot2["webhook_secret"]
        text = d.qodctl("app", "show", app["client_id"]).stdout
        assert "previous_webhook_secret_valid_until " + rot2["previous_secret_valid_until"] in text, text
        s4 = create(d, tok, recv.url("/4"))
        h4 = wait_hooks(recv, 1, s4)[0]
        assert len(_sig_parts(h4)) == 1, h4.headers
        verified(newer, h4)
        assert not _verifies(new, h4, _sig_parts(h4)[0])


# --------------------------------------------------------------------------------------------------------------
# Crash safety and receivers that come back


def test_undelivered_events_survive_sigkill_with_same_ids_and_order():
    d, app, tok = start(schedule="0" + ",0.3" * 20)
    with d, WebhookReceiver(default=(500, {}, b"")) as recv:
        expiring = create(d, tok, recv.url("/a"), duration=1)
        deleted = create(d, tok, recv.url("/b"))
        wait_hooks(recv, 2, expiring, "AVAILABLE", timeout=5)
        wait_hooks(recv, 2, deleted, "AVAILABLE", timeout=5)
        delete(d, tok, deleted)
        before = {(json.loads(h.body)["sessionId"], json.loads(h.body)["qosStatus"]): wid(h) for h in recv.requests}
        assert d.kill() == -9
        recv.default = (200, {}, b"")
        t_restart = time.time()
        d.start()
        wait_hooks(recv, 1, expiring, "EXPIRED", timeout=10)
        wait_hooks(recv, 1, deleted, "DELETED", timeout=10)
        verify_all(app["webhook_secret"], recv.requests)
        after = [h for h in recv.requests if h.time >= t_restart]
        for sid, final in ((expiring, "EXPIRED"), (deleted, "DELETED")):
            hs = of(after, sid)
            statuses = [json.loads(h.body)["qosStatus"] for h in hs]
            assert statuses and statuses[0] == "AVAILABLE" and statuses[-1] == final, (
                "after restart, session %s got %r; expected AVAILABLE first, %s last" % (sid, statuses, final))
            first_final = statuses.index(final)
            assert "AVAILABLE" not in statuses[first_final:], "order broken: %r" % statuses
            ids_avail = {wid(h) for h in of(recv.requests, sid, "AVAILABLE")}
            assert ids_avail == {before[(sid, "AVAILABLE")]}, "AVAILABLE's webhook-id changed across the crash: %r" % (
                ids_avail,)
            ids_final = {wid(h) for h in of(recv.requests, sid, final)}
            assert len(ids_final) == 1 and ids_final != ids_avail, ids_final
        wait_deliveries(d, lambda l: l == [], state="pending", what="no pending events")
        assert deliveries(d, "dead") == []


def test_graceful_restart_right_after_deliveries_sends_nothing_again():
    # Outcomes reach the store in groups, up to 10 ms after the receiver's answer, and whatever is still gathered
    # at SIGTERM is written on the way out. Either way every answered callback is on disk as delivered.
    n = 30
    d, app, tok = start(delay_ms=0)
    with d, WebhookReceiver() as recv:
        sids = [create(d, tok, recv.url("/t")) for _ in range(n)]
        for sid in sids:
            wait_hooks(recv, 1, sid, "AVAILABLE", timeout=5)
        # The receiver records a callback before it answers: wait until qodd has every answer (the counter rises
        # when an outcome is gathered, before it is written), so that none is still in flight at the stop.
        wait_until(lambda: metric_sum(d, "qod_delivery_success_total") >= n, timeout=5,
                   what="qodd to have the receiver's %d answers" % n)
        assert d.stop() == 0
        delivered_before = len(recv.requests)
        d.start()
        l = deliveries(d, "delivered")
        assert {e["session"] for e in l} >= set(sids), "not stored as delivered: %r" % (
            set(sids) - {e["session"] for e in l})
        assert deliveries(d, "pending") == []
        # A resend would go out at once (the schedule's first wait is 0).
        recv.expect_quiet(delivered_before, 0.5)
        verify_all(app["webhook_secret"], recv.requests)


def test_receiver_down_then_up_gets_the_event():
    # Attempts every 0.3 s for 6 s: time enough to see a failure and start the receiver on a loaded machine.
    d, app, tok = start(schedule="0" + ",0.3" * 20)
    with d:
        port = free_port()
        sid = create(d, tok, "http://127.0.0.1:%d/back" % port)
        # Event: the daemon has seen the connection refused at least once.
        wait_until(lambda: metric_sum(d, 'qod_delivery_failures_total{reason="connect"}') >= 1, timeout=5,
                   interval=0.05, what="a failed connect")
        with WebhookReceiver(port=port) as recv:
            h = wait_hooks(recv, 1, sid, "AVAILABLE", timeout=5)[0]
            verified(app["webhook_secret"], h)
            l = wait_deliveries(d, lambda l: [e for e in l if e["session"] == sid], state="delivered",
                                what="delivered after the receiver came back")
            assert l[0]["attempts"] >= 2 and l[0]["event_id"] == wid(h), l
            recv.expect_quiet(1, 0.3)


def test_a_backlog_larger_than_memory_is_delivered_with_no_new_event_to_prompt_it():
    # --callback-max-loaded bounds the events held in memory; the others wait in the store. They must be loaded as
    # room frees up, even when no new event is committed meanwhile.
    n, room = 100, 16
    d, app, tok = start(schedule="0" + ",0.3" * 30, delay_ms=0, extra=("--callback-max-loaded", str(room)))
    with d:
        port = free_port()
        sids = {create(d, tok, "http://127.0.0.1:%d/backlog" % port) for _ in range(n)}
        wait_until(lambda: metrics(d).get('qod_delivery_failures_total{reason="connect"}', 0) >= 1, timeout=5,
                   interval=0.05, what="a failed connect")
        assert metrics(d)["qod_delivery_backlog"] <= room, metrics(d)["qod_delivery_backlog"]
        with WebhookReceiver(port=port) as recv:
            def all_there(hs):
                got = {json.loads(h.body)["sessionId"] for h in of(hs, status="AVAILABLE")}
                return got if got >= sids else None
            recv.wait_until(all_there, timeout=scaled(15), what="the AVAILABLE callbacks of all %d sessions" % n)
            verify_all(app["webhook_secret"], recv.requests)
        wait_until(lambda: metrics(d)["qod_delivery_backlog"] == 0, timeout=5, interval=0.05, what="no backlog")


def test_deliveries_list_reads_a_large_outbox_in_pages_and_shows_every_event_once():
    # `deliveries list` reads the outbox 512 rows per scan, letting go of the store's read connection (which
    # delivery needs) in between. The pages must join up: every event once, in seq order, a filter that matches
    # nothing in the first pages, and a limit that ends inside a page.
    n_a, n_b = 1100, 20
    d, app, tok = start(schedule="0,600", delay_ms=0)
    with d:
        url = "http://127.0.0.1:%d/down" % free_port()
        app_b = create_app(d, name="cb-b", extra=("--rate-limit", "0"))
        tok_b = get_token(d, app_b)
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            sids_a = set(ex.map(lambda _: create(d, tok, url), range(n_a)))
        sids_b = {create(d, tok_b, url) for _ in range(n_b)}
        everyone = sids_a | sids_b
        wait_until(lambda: len({e["session"] for e in d.qodctl_json(
            "deliveries", "list", "--state", "all", "--limit", "100000", "--json")}) == len(everyone),
            timeout=scaled(20), interval=0.2, what="an event of every session in the outbox")
        listed = d.qodctl_json("deliveries", "list", "--state", "all", "--limit", "100000", "--json")
        seqs = [e["seq"] for e in listed]
        assert seqs == sorted(set(seqs)), "seqs not strictly increasing (a page listed twice or out of order)"
        assert len({e["event_id"] for e in listed}) == len(listed)
        assert {e["session"] for e in listed} == everyone
        only_b = d.qodctl_json("deliveries", "list", "--state", "all", "--app", app_b["client_id"], "--limit",
                               "100000", "--json")
        assert {e["session"] for e in only_b} == sids_b and all(e["client_id"] == app_b["client_id"]
                                                                for e in only_b), only_b[:3]
        first = d.qodctl_json("deliveries", "list", "--state", "all", "--limit", "700", "--json")
        assert [e["seq"] for e in first] == seqs[:700]


# --------------------------------------------------------------------------------------------------------------
# Metrics


def test_delivery_metrics_count_attempts_outcomes_and_latency():
    cluster_skip("metrics are per node (docs/operations.md): the requests counted here reached several nodes")
    d, app, tok = start(schedule="0,0.1")
    script = Script(fail=[(500, {})] * 2, bad=[(400, {})] * 2)
    with d, WebhookReceiver(responder=script) as recv:
        m0 = metrics(d)
        for name in ("qod_delivery_attempts_total", "qod_delivery_success_total", "qod_delivery_dead_total",
                     "qod_delivery_backlog", 'qod_delivery_failures_total{reason="http_5xx"}',
                     'qod_delivery_latency_seconds_bucket{le="+Inf"}'):
            assert name in m0, "%s missing from /metrics: %r" % (name, sorted(m0))
        ok = create(d, tok, recv.url("/ok"))
        fail = create(d, tok, recv.url("/fail"))
        bad = create(d, tok, recv.url("/bad"))
        wait_hooks(recv, 1, ok)
        wait_hooks(recv, 2, fail)
        wait_hooks(recv, 2, bad)
        wait_deliveries(d, lambda l: len(l) == 2, what="two dead events")
        verify_all(app["webhook_secret"], recv.requests)
        m = wait_until(lambda: (lambda x: x if x.get("qod_delivery_backlog") == 0 else None)(metrics(d)),
                       timeout=3, what="an empty backlog")
        want = {"qod_delivery_attempts_total": 5, "qod_delivery_success_total": 1, "qod_delivery_dead_total": 2,
                'qod_delivery_failures_total{reason="http_5xx"}': 2,
                'qod_delivery_failures_total{reason="http_4xx"}': 2,
                'qod_delivery_latency_seconds_bucket{le="+Inf"}': 1, "qod_delivery_latency_seconds_count": 1}
        got = {k: m.get(k) for k in want}
        assert got == want, "metrics %r, expected %r" % (got, want)
        buckets = sorted((float(re.search(r'le="([^"]+)"', k).group(1).replace("+Inf", "inf")), v)
                         for k, v in m.items() if k.startswith("qod_delivery_latency_seconds_bucket"))
        assert all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])), "buckets not cumulative: %r" % buckets
        assert dict(buckets).get(5.0) == 1, "a delivery within ~0.2s should be in le=5: %r" % buckets


# --------------------------------------------------------------------------------------------------------------
# The callback URL guard


def test_url_guard_at_session_creation():
    d = Daemon(args=["--sandbox-delay-ms", "600000"])
    with d, WebhookReceiver() as recv:
        sbx = create_app(d, name="sbx", extra=("--rate-limit", "0"))
        live = create_app(d, name="live", env="live", extra=("--rate-limit", "0"))
        stok, ltok = get_token(d, sbx), get_token(d, live)
        lphone = new_phone()
        d.qodctl("device", "add", "--phone", lphone)
        live_bad = [
            ("http://app.example.com/cb", "https"),
            ("https://127.0.0.1/", "loopback"),
            ("https://10.0.0.1/", "private"),
            ("https://169.254.169.254/", "metadata"),
            ("https://[::1]/", "loopback"),
            ("https://[fd00::1]/", "private"),
            ("https://localhost/", "loopback"),
            ("https://user:pw@app.example.com/cb", "credentials"),
            ("ftp://app.example.com/cb", None),
        ]
        problems = []
        for url, word in live_bad:
            r = post_session(d, ltok, url, phone=lphone)
            if r.status != 400:
                problems.append("live %s → %d %s" % (url, r.status, r.text[:200]))
                continue
            b = expect_camara_error(r, 400, "INVALID_ARGUMENT")
            if word and word not in b["message"].lower():
                problems.append("live %s: message %r does not say %r" % (url, b["message"], word))
        sphone = new_phone()
        sbx_bad = [
            ("http://10.1.2.3/", "private"),
            ("http://169.254.169.254/", "metadata"),
            ("http://192.168.1.1:8080/cb", "private"),
            ("http://[fd00::1]/", "private"),
            ("http://[fe80::1]/", "link-local"),
            ("ftp://127.0.0.1/", None),
            ("http://127.0.0.1:8080/a b", None),
            ("http://127.0.0.1:8080/" + "a" * 2100, None),
        ]
        for url, word in sbx_bad:
            r = post_session(d, stok, url, phone=sphone)
            if r.status != 400:
                problems.append("sandbox %s → %d %s" % (url[:80], r.status, r.text[:200]))
                continue
            b = expect_camara_error(r, 400, "INVALID_ARGUMENT")
            if word and word not in b["message"].lower():
                problems.append("sandbox %s: message %r does not say %r" % (url, b["message"], word))
        assert not problems, "\n".join(problems)
        # Refusals created nothing: the same devices still get a session (no 409).
        sid = create(d, stok, recv.url("/ok"), phone=sphone)
        sid2 = create(d, stok, "http://localhost:%d/ok" % recv.port)
        sid3 = create(d, stok, "http://[::1]:%d/ok" % recv.port)
        for s in (sid, sid2, sid3):
            delete(d, stok, s)
        # The DELETED callbacks of the loopback URLs (IPv4 and the name) arrive, signed.
        wait_hooks(recv, 1, sid, "DELETED")
        wait_hooks(recv, 1, sid2, "DELETED")
        verify_all(sbx["webhook_secret"], recv.requests)


_NETNS_CHILD = "--netns-child"


def _netns_scenario():
    """Runs inside a network namespace that has only loopback (see test_callback_allow_and_connect_guard_in_netns)
    and prints one JSON line with what it saw."""
    out = {}
    # 1. --callback-allow 10.0.0.0/8 opens http://10.1.2.3/ for a sandbox app; 192.168.x stays closed.
    d = Daemon(args=["--sandbox-delay-ms", "600000", "--callback-allow", "10.0.0.0/8", "--retry-schedule", "0"])
    with d:
        app = create_app(d, name="allow", extra=("--rate-limit", "0"))
        tok = get_token(d, app)
        r = post_session(d, tok, "http://10.1.2.3/cb")
        out["allowed_status"] = r.status
        out["allowed_body"] = r.text[:300]
        r2 = post_session(d, tok, "http://192.168.1.1/cb")
        out["other_private_status"] = r2.status
        if r.status == 201:
            sid = r.json()["sessionId"]
            delete(d, tok, sid)  # a DELETED event: one attempt, fails (network unreachable here), dead
            out["dead"] = wait_deliveries(d, lambda l: len(l) >= 1, what="the DELETED event dead")
            out["metrics_allow"] = {k: v for k, v in metrics(d).items() if k.startswith("qod_delivery_failures")}
    # 2. Connect-time guard: a live app's https URL with a name that /etc/hosts maps to 127.0.0.1 passes the
    #    creation check (a name) and must be refused at connect time; no connection reaches the listener.
    name = None
    try:
        with open("/etc/hosts") as f:
            for line in f:
                parts = line.split("#")[0].split()
                if len(parts) >= 2 and parts[0].startswith("127."):
                    for n in parts[1:]:
                        if n.lower() != "localhost" and not n.lower().endswith(".localhost"):
                            name = name or n
    except OSError:
        pass
    out["loopback_name"] = name
    if name:
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(8)
        lsock.setblocking(False)
        port = lsock.getsockname()[1]
        d = Daemon(args=["--sandbox-delay-ms", "100", "--retry-schedule", "0,0.1"])
        with d:
            live = create_app(d, name="live", env="live", extra=("--rate-limit", "0"))
            ltok = get_token(d, live)
            phone = new_phone()
            d.qodctl("device", "add", "--phone", phone)
            r = post_session(d, ltok, "https://%s:%d/cb" % (name, port), phone=phone)
            out["live_name_status"] = r.status
            out["live_name_body"] = r.text[:300]
            if r.status == 201:
                out["guard_dead"] = wait_deliveries(d, lambda l: len(l) >= 1, what="the event dead by the guard")
                out["metrics_guard"] = {k: v for k, v in metrics(d).items() if k.startswith("qod_delivery_failures")}
            try:
                c, _ = lsock.accept()
                c.close()
                out["connections"] = 1
            except BlockingIOError:
                out["connections"] = 0
        lsock.close()
    print("NETNS-RESULT " + json.dumps(out), flush=True)


def test_callback_allow_and_connect_guard_in_netns():
    cluster_skip("runs qodd inside a network namespace and reads one node's metrics (metrics are per node, "
                 "docs/operations.md)")
    if shutil.which("ip") is None:
        skip("the ip command is not installed")
    if os.geteuid() != 0:
        skip("network namespaces need root")
    ns = "qodcb%d" % os.getpid()
    p = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
    if p.returncode != 0:
        skip("ip netns add failed: %s" % p.stderr.strip())
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, capture_output=True)
        # Without --callback-allow the URL is refused (no session, so nothing is sent): checked outside the netns.
        d = Daemon(args=["--sandbox-delay-ms", "600000"])
        with d:
            app = create_app(d, name="noallow", extra=("--rate-limit", "0"))
            r = post_session(d, get_token(d, app), "http://10.1.2.3/cb")
            expect_camara_error(r, 400, "INVALID_ARGUMENT")
        child = subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), _NETNS_CHILD],
                               capture_output=True, text=True, timeout=scaled(60))
        lines = [l for l in child.stdout.splitlines() if l.startswith("NETNS-RESULT ")]
        assert child.returncode == 0 and lines, "netns child failed (rc %d):\n%s\n%s" % (
            child.returncode, child.stdout[-3000:], child.stderr[-3000:])
        res = json.loads(lines[-1][len("NETNS-RESULT "):])
        assert res["allowed_status"] == 201, "http://10.1.2.3/ with --callback-allow 10.0.0.0/8: %r" % res
        assert res["other_private_status"] == 400, res
        dead = res["dead"]
        assert len(dead) == 1 and dead[0]["url"] == "http://10.1.2.3/cb" and dead[0]["attempts"] == 1, dead
        assert res["metrics_allow"].get('qod_delivery_failures_total{reason="guard"}') == 0, res["metrics_allow"]
        if not res.get("loopback_name"):
            skip("allow list checked; no non-localhost name for 127.x in /etc/hosts for the connect-time guard")
        assert res["live_name_status"] == 201, "live https://%s/ (a name) refused at creation: %r" % (
            res["loopback_name"], res.get("live_name_body"))
        gd = res["guard_dead"]
        assert len(gd) == 1 and gd[0]["attempts"] == 1, gd
        assert res["metrics_guard"].get('qod_delivery_failures_total{reason="guard"}') == 1, res["metrics_guard"]
        assert res["connections"] == 0, "the daemon connected to a loopback address for a live app"
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


# --------------------------------------------------------------------------------------------------------------
# qodctl webhook listen / verify


class _Lines:
    """Reads a subprocess's stdout lines in a thread; wait(pred) blocks until a line matches."""

    def __init__(self, proc):
        self.q = queue_mod.Queue()
        self.lines = []
        self.t = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.t.start()

    def _read(self, proc):
        for line in proc.stdout:
            self.q.put(line.rstrip("\n"))

    def wait(self, pred, timeout=10, what="line"):
        deadline = time.monotonic() + scaled(timeout)
        for l in self.lines:
            if pred(l):
                return l
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting for %s; lines: %r" % (what, self.lines))
            try:
                l = self.q.get(timeout=left)
            except queue_mod.Empty:
                continue
            self.lines.append(l)
            if pred(l):
                return l


def _post(port, body, headers):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        c.request("POST", "/cb", body=body, headers=headers)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def test_qodctl_webhook_listen_and_verify():
    d, app, tok = start()
    other = create_app(d, name="other")
    tmp = tempfile.mkdtemp(prefix="qod-e2e-listen-")
    save = os.path.join(tmp, "saved")
    port = free_port()
    proc = subprocess.Popen([qodctl_path(), "webhook", "listen", "--port", str(port), "--secret",
                             app["webhook_secret"], "--save", save], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    try:
        out = _Lines(proc)
        out.wait(lambda l: "Listening" in l, what="the Listening line")
        sid = create(d, tok, "http://127.0.0.1:%d/cb" % port)
        line = out.wait(lambda l: " verified " in l and sid in l, what="a verified line for the session")
        m = re.search(r" verified (\S+) ", line)
        event_id = m.group(1)
        l = wait_deliveries(d, lambda l: [e for e in l if e["session"] == sid], state="delivered",
                            what="delivered to the listener (204)")
        assert l[0]["event_id"] == event_id and l[0]["attempts"] == 1, (l, line)
        files = wait_until(lambda: [f for f in os.listdir(save) if f.endswith(".json")], timeout=3,
                           what="a saved delivery")
        path = os.path.join(save, files[0])
        with open(path) as f:
            saved = json.load(f)
        assert saved["headers"]["webhook-id"] == event_id, saved
        verify_standard_webhook(app["webhook_secret"], saved["headers"], saved["body"])
        ok = subprocess.run([qodctl_path(), "webhook", "verify", "--secret", app["webhook_secret"], "--file", path],
                            capture_output=True, text=True, timeout=scaled(10))
        assert ok.returncode == 0 and "verified" in ok.stdout and "NOT" not in ok.stdout, ok
        bad = subprocess.run([qodctl_path(), "webhook", "verify", "--secret", other["webhook_secret"], "--file",
                              path], capture_output=True, text=True, timeout=scaled(10))
        assert bad.returncode == 1 and "NOT verified" in (bad.stdout + bad.stderr), bad
        # A request signed by us with the right secret is verified (204); a forged one is rejected (400).
        body = json.dumps({"sessionId": "x", "event": "QOS_STATUS_CHANGED", "qosStatus": "AVAILABLE"})
        ts = str(int(time.time()))
        good_h = {"Content-Type": "application/json", "webhook-id": "msg_good", "webhook-timestamp": ts,
                  "webhook-signature": sign_standard_webhook(app["webhook_secret"], "msg_good", ts, body)}
        st, _ = _post(port, body, good_h)
        assert st == 204, st
        out.wait(lambda l: " verified msg_good " in l, what="verified msg_good")
        forged_h = dict(good_h, **{"webhook-id": "msg_forged",
                                   "webhook-signature": sign_standard_webhook(other["webhook_secret"], "msg_forged",
                                                                              ts, body)})
        st, _ = _post(port, body, forged_h)
        assert st == 400, st
        out.wait(lambda l: "REJECTED" in l and "msg_forged" in l, what="REJECTED msg_forged")
        old_ts = str(int(time.time()) - 3600)
        stale_h = dict(good_h, **{"webhook-id": "msg_stale", "webhook-timestamp": old_ts,
                                  "webhook-signature": sign_standard_webhook(app["webhook_secret"], "msg_stale",
                                                                             old_ts, body)})
        st, _ = _post(port, body, stale_h)
        assert st == 400, st
        out.wait(lambda l: "REJECTED" in l and "msg_stale" in l, what="REJECTED msg_stale")
        tampered = body.replace("AVAILABLE", "EXPIRED")
        st, _ = _post(port, tampered, good_h)
        assert st == 400, st
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=scaled(5)) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        d.close(check=False)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == [_NETNS_CHILD]:
    try:
        _netns_scenario()
    finally:
        from qodlib import _cleanup_all  # noqa: E402
        _cleanup_all()
    sys.exit(0)

run(globals())
