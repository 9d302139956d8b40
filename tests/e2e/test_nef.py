"""The nef network backend (qodd --network nef) against tests/e2e/nef_emulator.py, a TS 29.122 AsSessionWithQoS
emulator run as a subprocess: subscription bodies, every notification mapping, deletion (404 counts as gone),
5xx retries, a NEF that is down, a slow NEF, OAuth2 and bearer authentication, forged notification paths, restart
reconciliation (adoption and orphans), and the callbacks the live app receives. Live apps call back over https:
a self-signed certificate for 127.0.0.1 is trusted with --callback-ca and loopback allowed with --callback-allow.
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

HERE = os.path.dirname(os.path.abspath(__file__))
SESSIONS = "/camara/qod/v0/sessions"
SCS = "konera-test"
TLS_DIR = None
_emulators = []
_rng = random.SystemRandom()


class Emulator:
    def __init__(self, *args, client=None):
        """args: nef_emulator.py's options; client: (cert, key) the test's own calls present, with --client-ca."""
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "nef_emulator.py"), "--port", "0"] +
                                     list(args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY "), "emulator did not start: %r" % line
        self.port = int(line.split()[1])
        self.tls = "--tls-cert" in args
        self.client = client
        self.url = "%s://127.0.0.1:%d" % ("https" if self.tls else "http", self.port)
        _emulators.append(self)

    def req(self, method, path, body=None):
        import http.client
        if self.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=os.path.join(TLS_DIR, "cert.pem"))
            if self.client:
                ctx.load_cert_chain(*self.client)
            c = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=ctx)
        else:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, (json.loads(data) if data else None)

    def control(self, **kw):
        st, b = self.req("POST", "/_control", kw)
        assert st == 200, (st, b)
        return b

    def log(self, method=None, contains=""):
        return [e for e in self.req("GET", "/_control/log")[1]
                if (method is None or e["method"] == method) and contains in e["path"] + e["body"]]

    def subs(self):
        return self.req("GET", "/_control/subscriptions")[1]

    def notifications(self):
        return self.req("GET", "/_control/notifications")[1]

    def sub_of(self, ip):
        for sid, s in self.subs().items():
            if s.get("ueIpv4Addr") == ip:
                return sid, s
        return None, None

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def setup_module():
    global TLS_DIR
    TLS_DIR = tempfile.mkdtemp(prefix="qod-nef-tls-")
    make_tls_cert(TLS_DIR)
    shared()  # started here: the harness closes what a test itself leaves running


def teardown_module():
    if D is not None:
        RECV.close()
        D.close()
    for e in _emulators:
        e.close()
    shutil.rmtree(TLS_DIR, ignore_errors=True)


def start(emu_url, extra=(), data_dir=None, port=None):
    args = ["--network", "nef", "--nef-url", emu_url, "--nef-scs-as-id", SCS, "--nef-timeout", "3",
            "--callback-ca", os.path.join(TLS_DIR, "cert.pem"), "--callback-allow", "127.0.0.1/32",
            "--retry-schedule", "0,0.2"] + list(extra)
    return Daemon(args=args, data_dir=data_dir, port=port)


def receiver():
    return WebhookReceiver(certfile=os.path.join(TLS_DIR, "cert.pem"), keyfile=os.path.join(TLS_DIR, "key.pem"),
                           default=(204, {}, b""))


def live_app(d):
    app = create_app(d, env="live", name="nef", extra=("--rate-limit", "0"))
    return get_token(d, app)


def new_device(d):
    phone = "+1555%07d" % _rng.randrange(10 ** 7)
    ip = "10.%d.%d.%d" % (_rng.randrange(256), _rng.randrange(256), _rng.randrange(1, 255))
    d.qodctl("device", "add", "--phone", phone, "--ipv4", ip)
    return phone, ip


def create(d, tok, recv, phone, **extra):
    body = {"device": {"phoneNumber": phone}, "qosProfile": "QOS_L", "duration": 60,
            "webhook": {"notificationUrl": recv.url("/cb")}}
    body.update(extra)
    r = d.request("POST", SESSIONS, body=body, token=tok)
    expect_status(r, 201)
    return r.json()["sessionId"]


def available(emu, d, tok, recv):
    """A new device with an AVAILABLE session at the emulator: (phone, ip, session id, subscription id, its body)."""
    phone, ip = new_device(d)
    sid = create(d, tok, recv, phone)
    wait_status(d, tok, sid, "AVAILABLE")
    nid, sub = emu.sub_of(ip)
    return phone, ip, sid, nid, sub


def status(d, tok, sid):
    r = d.request("GET", SESSIONS + "/" + sid, token=tok)
    return r.json().get("qosStatus") if r.status == 200 else "GONE(%d)" % r.status


def wait_status(d, tok, sid, want, timeout=5):
    wait_until(lambda: status(d, tok, sid) == want, timeout=timeout, what="session %s %s" % (sid, want))


def hooks_of(recv, sid):
    out = []
    for h in list(recv.requests):
        try:
            b = json.loads(h.body)
        except ValueError:
            continue
        if isinstance(b, dict) and b.get("sessionId") == sid:
            out.append(b.get("qosStatus"))
    return out


# --------------------------------------------------------------------------------------------------------------
# One emulator and one daemon for the mapping tests

EMU = D = TOK = RECV = None


def shared():
    global EMU, D, TOK, RECV
    if D is None:
        EMU = Emulator()
        D = start(EMU.url)
        TOK = live_app(D)
        RECV = receiver()
        RECV.__enter__()
    return EMU, D, TOK, RECV


def test_allocation_makes_the_session_available_with_a_valid_subscription():
    emu, d, tok, recv = shared()
    phone, ip = new_device(d)
    sid = create(d, tok, recv, phone, applicationServer={"ipv4Address": "192.0.2.10"},
                 devicePorts={"ports": [5000]}, applicationServerPorts={"ranges": [{"from": 8000, "to": 8010}]})
    wait_status(d, tok, sid, "AVAILABLE")
    _, s = emu.sub_of(ip)
    assert s, "no subscription for %s: %r" % (ip, emu.subs())
    assert s["qosReference"] == "QOS_L" and s["supportedFeatures"] == "0", s
    assert "gpsi" not in s, "an IP is preferred over the GPSI: %r" % s
    assert s["flowInfo"] == [{"flowId": 1, "flowDescriptions": [
        "permit out ip from 192.0.2.10 8000-8010 to %s 5000" % ip,
        "permit in ip from %s 5000 to 192.0.2.10 8000-8010" % ip]}], s["flowInfo"]
    assert set(s["events"]) == {"SUCCESSFUL_RESOURCES_ALLOCATION", "FAILED_RESOURCES_ALLOCATION",
                                "SESSION_TERMINATION", "QOS_GUARANTEED", "QOS_NOT_GUARANTEED"}, s["events"]
    m = re.match(r"^http://127\.0\.0\.1:%d/nef/v1/notifications/([A-Za-z0-9_-]{43})$" % d.port,
                 s["notificationDestination"])
    assert m, s["notificationDestination"]
    recv.wait_until(lambda hs: hooks_of(recv, sid) == ["AVAILABLE"] or None, timeout=5, what="AVAILABLE callback")


def test_gpsi_when_the_device_has_no_ip():
    emu, d, tok, recv = shared()
    phone = "+1555%07d" % _rng.randrange(10 ** 7)
    d.qodctl("device", "add", "--phone", phone)
    sid = create(d, tok, recv, phone)
    wait_status(d, tok, sid, "AVAILABLE")
    got = [s for s in emu.subs().values() if s.get("gpsi") == "msisdn-" + phone[1:]]
    assert len(got) == 1 and "ueIpv4Addr" not in got[0], emu.subs()
    # TS 29.214 clause 5.3.8 forbids the keyword "assigned": without the UE's address the filter names "any".
    assert got[0]["flowInfo"][0]["flowDescriptions"] == ["permit out ip from any to any",
                                                         "permit in ip from any to any"], got[0]


def test_failed_allocation_makes_the_session_unavailable():
    emu, d, tok, recv = shared()
    phone, ip = new_device(d)
    emu.control(refuse=True, ue=ip)
    sid = create(d, tok, recv, phone)
    wait_status(d, tok, sid, "UNAVAILABLE")
    emu.control(refuse=False)
    recv.wait_until(lambda hs: hooks_of(recv, sid) == ["UNAVAILABLE"] or None, timeout=5, what="UNAVAILABLE hook")


def test_termination_makes_an_available_session_unavailable():
    emu, d, tok, recv = shared()
    phone, ip, sid, nid, _ = available(emu, d, tok, recv)
    emu.control(terminate=nid)
    wait_status(d, tok, sid, "UNAVAILABLE")
    recv.wait_until(lambda hs: hooks_of(recv, sid) == ["AVAILABLE", "UNAVAILABLE"] or None, timeout=5,
                    what="AVAILABLE then UNAVAILABLE")


def test_qos_not_guaranteed_is_counted_without_a_status_change():
    emu, d, tok, recv = shared()
    phone, ip = new_device(d)
    sid = create(d, tok, recv, phone)
    wait_status(d, tok, sid, "AVAILABLE")
    before = metrics(d).get("qod_nef_qos_not_guaranteed_total", 0)
    nid, _ = emu.sub_of(ip)
    emu.control(notify=nid, event="QOS_NOT_GUARANTEED")
    emu.control(notify=nid, event="QOS_GUARANTEED")
    m = metrics(d)
    assert m["qod_nef_qos_not_guaranteed_total"] == before + 1, m
    assert m['qod_nef_notifications_total{event="QOS_GUARANTEED"}'] >= 1, m
    assert status(d, tok, sid) == "AVAILABLE"


def test_delete_removes_the_subscription_and_404_counts_as_gone():
    emu, d, tok, recv = shared()
    phone, ip, sid, nid, _ = available(emu, d, tok, recv)
    expect_status(d.request("DELETE", SESSIONS + "/" + sid, token=tok), 204)
    wait_until(lambda: nid not in emu.subs(), timeout=5, what="the subscription deleted")
    assert len(emu.log("DELETE", nid)) == 1
    # A subscription the NEF already forgot: one DELETE answered 404, no retry.
    phone, ip, sid, nid, _ = available(emu, d, tok, recv)
    emu.control(fail=404, times=1, op="delete")
    expect_status(d.request("DELETE", SESSIONS + "/" + sid, token=tok), 204)
    wait_until(lambda: "unsubscribed" in d.log() and "status=404" in d.log(), timeout=5, what="404 as gone")
    time.sleep(0.8)
    assert len(emu.log("DELETE", nid)) == 1, emu.log("DELETE", nid)


def test_a_delete_redirected_is_followed_on_the_nefs_origin_only():
    emu, d, tok, recv = shared()
    for code in (307, 308):
        phone, ip, sid, nid, _ = available(emu, d, tok, recv)
        emu.control(fail=code, times=1, op="delete")
        expect_status(d.request("DELETE", SESSIONS + "/" + sid, token=tok), 204)
        wait_until(lambda: nid not in emu.subs(), timeout=5, what="the subscription deleted after a %d" % code)
        assert len(emu.log("DELETE", nid)) == 2, emu.log("DELETE", nid)
    # Elsewhere: not followed (the bearer token would go with it); logged, the subscription forgotten.
    phone, ip, sid, nid, _ = available(emu, d, tok, recv)
    emu.control(fail=307, times=1, op="delete", location="http://127.0.0.2:9/elsewhere")
    expect_status(d.request("DELETE", SESSIONS + "/" + sid, token=tok), 204)
    wait_until(lambda: "delete_failed session=%s" % sid in d.log(), timeout=5, what="the redirect refused")
    assert len(emu.log("DELETE", nid)) == 1 and nid in emu.subs()
    emu.control(fail=0, times=0)


def test_an_allocation_never_reported_refuses_the_session_and_deletes_its_subscription():
    emu = Emulator()
    d = start(emu.url, ["--nef-allocation-timeout", "1"])
    with d, receiver() as recv:
        tok = live_app(d)
        emu.control(silent=True)
        phone, ip = new_device(d)
        t0 = time.monotonic()
        sid = create(d, tok, recv, phone)
        wait_until(lambda: emu.sub_of(ip)[0], timeout=5, what="the subscription")
        nid, _ = emu.sub_of(ip)
        wait_status(d, tok, sid, "UNAVAILABLE", timeout=6)
        assert time.monotonic() - t0 >= 0.95, "refused before its second of waiting"
        assert "allocation_overdue session=%s" % sid in d.log(), d.log_tail(20)
        wait_until(lambda: nid not in emu.subs(), timeout=5, what="the subscription deleted")
        recv.wait_until(lambda hs: hooks_of(recv, sid) == ["UNAVAILABLE"] or None, timeout=5, what="hook")
        # Reported in time: the deadline goes with it.
        emu.control(silent=False)
        phone, ip = new_device(d)
        sid = create(d, tok, recv, phone)
        wait_status(d, tok, sid, "AVAILABLE")
        time.sleep(1.5)
        assert status(d, tok, sid) == "AVAILABLE" and "allocation_overdue session=%s" % sid not in d.log()


def test_503_is_retried_until_the_nef_accepts():
    emu, d, tok, recv = shared()
    phone, ip = new_device(d)
    emu.control(fail=503, times=2, op="create")
    sid = create(d, tok, recv, phone)
    wait_status(d, tok, sid, "AVAILABLE", timeout=8)
    assert len(emu.log("POST", ip)) == 3, emu.log("POST", ip)
    # The NEF's Retry-After is waited for (here 2 s, against 0.5 s of backoff).
    phone, ip = new_device(d)
    emu.control(fail=503, times=1, op="create", retry_after=2)
    t0 = time.monotonic()
    sid = create(d, tok, recv, phone)
    wait_status(d, tok, sid, "AVAILABLE", timeout=8)
    assert time.monotonic() - t0 >= 1.9 and len(emu.log("POST", ip)) == 2, emu.log("POST", ip)
    emu.control(fail=0, times=0)


def test_forged_and_malformed_notifications():
    emu, d, tok, recv = shared()
    r = d.request("POST", "/nef/v1/notifications/" + "A" * 43,
                  body={"transaction": "x", "eventReports": [{"event": "SESSION_TERMINATION"}]})
    expect_status(r, 404)
    assert r.json()["cause"] == "RESOURCE_NOT_FOUND" and r.json()["status"] == 404, r.json()
    phone, ip = new_device(d)
    sid = create(d, tok, recv, phone)
    wait_status(d, tok, sid, "AVAILABLE")
    _, s = emu.sub_of(ip)
    path = s["notificationDestination"].split(str(d.port), 1)[1]
    r = expect_status(d.request("POST", path, body={"transaction": "x"}), 400)
    # Answers to the NEF are TS 29.571 ProblemDetails.
    assert r.headers.get("content-type") == "application/problem+json", r.headers.get("content-type")
    assert r.json() == {"title": "Bad Request", "status": 400, "detail": "Malformed UserPlaneNotificationData.",
                        "cause": "INVALID_MSG_FORMAT"}, r.json()
    expect_status(d.request("POST", path, body={"transaction": "x", "eventReports": []}), 400)
    assert status(d, tok, sid) == "AVAILABLE"
    # The emulator's own notifications were all accepted.
    assert all(n["status"] == 204 for n in emu.notifications()), emu.notifications()


def test_a_terminal_event_after_many_reports_still_ends_the_session():
    emu, d, tok, recv = shared()
    phone, ip = new_device(d)
    sid = create(d, tok, recv, phone)
    wait_status(d, tok, sid, "AVAILABLE")
    _, s = emu.sub_of(ip)
    path = s["notificationDestination"].split(str(d.port), 1)[1]
    reports = [{"event": "QOS_GUARANTEED"}] * 40 + [{"event": "SESSION_TERMINATION"}]
    expect_status(d.request("POST", path, body={"transaction": s["self"], "eventReports": reports}), 204)
    wait_status(d, tok, sid, "UNAVAILABLE")


def test_a_subscription_left_by_a_create_retry_is_deleted_when_it_notifies():
    # The NEF makes a subscription only after --nef-timeout, and after the retry's lookup: qodd posts again and
    # gets a second one.
    # The first one's notifications carry the session's token but name the other subscription (transaction):
    # they are not acted on, and that subscription is deleted.
    emu = Emulator("--notify-delay-ms", "1500")
    d = start(emu.url, ["--nef-timeout", "1"])
    with d, receiver() as recv:
        tok = live_app(d)
        phone, ip = new_device(d)
        emu.control(delay_ms=3000, ue=ip)  # made after the retry's lookup (1.5 s) found nothing
        sid = create(d, tok, recv, phone)
        wait_until(lambda: len(emu.log("POST", ip)) >= 1, timeout=5, what="the first POST")
        emu.control(delay_ms=0)
        wait_until(lambda: "subscribed" in d.log(), timeout=10, what="the retry's subscription")
        current = re.search(r"event=subscribed session=%s location=\S*/([^/\s]+) " % sid, d.log()).group(1)
        wait_status(d, tok, sid, "AVAILABLE", timeout=10)
        # Both subscriptions notify (the first one 3 s + 1.5 s after the create); the first one is then deleted.
        wait_until(lambda: len(emu.notifications()) == 2, timeout=10, what="both subscriptions' notifications")
        wait_until(lambda: list(emu.subs()) == [current], timeout=10,
                   what="only the session's subscription left at the NEF: %r" % emu.subs())
        posts = [e for e in emu.log("POST", ip) if e["path"].endswith("/subscriptions")]
        assert len(posts) == 2, posts
        assert len(emu.log("DELETE")) == 1, emu.log("DELETE")
        assert metrics(d)['qod_nef_notifications_rejected_total{reason="stale"}'] >= 1
        assert "notification_stale" in d.log(), d.log_tail(20)
        # The session is still the current subscription's: its end ends the session.
        emu.control(terminate=current)
        wait_status(d, tok, sid, "UNAVAILABLE")


def test_a_create_whose_answer_was_lost_is_looked_up_before_it_is_posted_again():
    # The NEF makes the subscription at once but answers after --nef-timeout: before posting again, qodd asks the
    # NEF for the UE's subscriptions (ip-addrs) and takes the one with its token; no second subscription.
    emu = Emulator()
    d = start(emu.url, ["--nef-timeout", "1"])
    with d, receiver() as recv:
        tok = live_app(d)
        phone, ip = new_device(d)
        emu.control(answer_delay_ms=2500)
        sid = create(d, tok, recv, phone)
        wait_until(lambda: "found_after_retry session=%s" % sid in d.log(), timeout=10, what="the lookup")
        emu.control(answer_delay_ms=0)
        wait_status(d, tok, sid, "AVAILABLE")
        posts = [e for e in emu.log("POST", ip) if e["path"].endswith("/subscriptions")]
        finds = [e for e in emu.log("GET") if e["path"].endswith("/subscriptions")]
        assert len(posts) == 1 and len(emu.subs()) == 1, (posts, emu.subs())
        assert len(finds) == 2, finds  # the start-up list, then the lookup
        nid = list(emu.subs())[0]
        expect_status(d.request("DELETE", SESSIONS + "/" + sid, token=tok), 204)
        wait_until(lambda: nid not in emu.subs(), timeout=5, what="the found subscription deleted")
        # The lookup finds nothing (the NEF did not make it): posted again.
        phone, ip = new_device(d)
        emu.control(fail=504, times=1, op="create")
        sid = create(d, tok, recv, phone)
        wait_status(d, tok, sid, "AVAILABLE")
        posts = [e for e in emu.log("POST", ip) if e["path"].endswith("/subscriptions")]
        assert len(posts) == 2 and metrics(d)['qod_nef_requests_total{op="find",outcome="ok"}'] == 2


def test_a_delete_the_nef_refuses_for_long_is_retried_until_it_is_gone():
    # More failures than the first budget's four attempts: the session ends at once all the same, and the
    # subscription (still holding its QoS at the NEF) is deleted by later attempts.
    emu = Emulator()
    d = start(emu.url)
    with d, receiver() as recv:
        tok = live_app(d)
        phone, ip, sid, nid, _ = available(emu, d, tok, recv)
        emu.control(fail=503, times=4, op="delete")
        expect_status(d.request("DELETE", SESSIONS + "/" + sid, token=tok), 204)
        wait_until(lambda: "delete_retrying" in d.log(), timeout=10, what="the delete kept for later")
        assert nid in emu.subs() and metrics(d)["qod_nef_subscriptions"] == 1
        wait_until(lambda: nid not in emu.subs(), timeout=15, what="the subscription deleted")
        assert len(emu.log("DELETE", nid)) == 5, emu.log("DELETE", nid)
        wait_until(lambda: metrics(d)["qod_nef_subscriptions"] == 0, timeout=5, what="the gauge at 0")
        assert status(d, tok, sid) == "DELETED"


def test_slow_nef_does_not_block_other_sessions():
    emu, d, tok, recv = shared()
    slow_phone, slow_ip = new_device(d)
    phone, ip = new_device(d)
    # The slow NEF answers after 6 s (under --nef-timeout's 10): the fast session must be AVAILABLE well before,
    # with room for a loaded machine.
    emu.control(delay_ms=6000, ue=slow_ip)
    slow = create(d, tok, recv, slow_phone)
    time.sleep(0.1)
    t0 = time.monotonic()
    fast = create(d, tok, recv, phone)
    wait_status(d, tok, fast, "AVAILABLE", timeout=5)
    assert time.monotonic() - t0 < 5 and status(d, tok, slow) == "REQUESTED"
    emu.control(delay_ms=0)
    wait_status(d, tok, slow, "AVAILABLE", timeout=9)


def test_nef_down_refuses_after_retries():
    closed = free_port()
    d = start("http://127.0.0.1:%d" % closed)
    with d, receiver() as recv:
        tok = live_app(d)
        phone, _ = new_device(d)
        sid = create(d, tok, recv, phone)
        time.sleep(3)
        assert status(d, tok, sid) == "REQUESTED", "refused before the retries were spent"
        # The start-up list's retries (7.5 s) come first, then the create's own (7.5 s).
        wait_status(d, tok, sid, "UNAVAILABLE", timeout=20)
        assert d.log().count("list_attempt_failed") == 4, d.log_tail(20)
        assert "subscription_failed" in d.log() and "attempts=5" in d.log(), d.log_tail(20)
        m = metrics(d)
        assert m['qod_nef_requests_total{op="create",outcome="connect"}'] == 5, m
        recv.wait_until(lambda hs: hooks_of(recv, sid) == ["UNAVAILABLE"] or None, timeout=5, what="hook")


def test_oauth2_client_credentials_and_refresh_after_401():
    # A secret with characters RFC 6749 2.3.1 has form-urlencoded inside HTTP Basic (":" would split it).
    secret = "s3:cr et+/%"
    emu = Emulator("--token-required", "--client-id", "qodd", "--client-secret", secret)
    d = start(emu.url, ["--nef-token-url", emu.url + "/oauth2/token", "--nef-client-id", "qodd",
                        "--nef-client-secret", secret, "--nef-scope", "3gpp-as-session-with-qos nef:qos"])
    with d, receiver() as recv:
        tok = live_app(d)
        phone, ip = new_device(d)
        sid = create(d, tok, recv, phone)
        wait_status(d, tok, sid, "AVAILABLE")
        assert len(emu.log("POST", "/oauth2/token")) == 1
        token_body = emu.log("POST", "/oauth2/token")[0]["body"]
        assert token_body == "grant_type=client_credentials&scope=3gpp-as-session-with-qos%20nef%3Aqos", token_body
        assert all(e["auth"] and e["auth"].startswith("Bearer ") for e in emu.log("POST", ip))
        emu.control(revoke_tokens=True)
        phone2, ip2 = new_device(d)
        sid2 = create(d, tok, recv, phone2)
        wait_status(d, tok, sid2, "AVAILABLE")
        assert len(emu.log("POST", "/oauth2/token")) == 2, "a 401 must fetch a new token once"
        assert len(emu.log("POST", ip2)) == 2


def test_tls_toward_the_nef_with_its_ca_and_a_client_certificate():
    cert = os.path.join(TLS_DIR, "cert.pem")
    tmp = tempfile.mkdtemp(prefix="qod-nef-client-")
    try:
        ccert, ckey = make_tls_cert(tmp, name="client", cn="qodd")
        emu = Emulator("--tls-cert", cert, "--tls-key", os.path.join(TLS_DIR, "key.pem"), "--client-ca", ccert,
                       client=(ccert, ckey))
        # The NEF's CA and our client certificate: mutual TLS.
        d = start(emu.url, ["--nef-ca", cert, "--nef-client-cert", ccert, "--nef-client-key", ckey])
        with d, receiver() as recv:
            tok = live_app(d)
            phone, ip = new_device(d)
            sid = create(d, tok, recv, phone)
            wait_status(d, tok, sid, "AVAILABLE")
            assert emu.sub_of(ip)[0], emu.subs()
        # Without the NEF's CA its certificate is not trusted: refused at once (not a transient failure).
        d = start(emu.url)
        with d, receiver() as recv:
            tok = live_app(d)
            phone, ip = new_device(d)
            sid = create(d, tok, recv, phone)
            wait_status(d, tok, sid, "UNAVAILABLE", timeout=8)
            assert "certificate" in d.log(), d.log_tail(20)
            assert emu.sub_of(ip)[0] is None
        # A file that cannot be read stops the start, naming the option; a certificate needs its key.
        for extra, name in ((["--nef-ca", os.path.join(tmp, "missing.pem")], "nef-ca"),
                            (["--nef-client-cert", ccert], "nef-client-cert")):
            p = run_qodd(["--listen", "127.0.0.1:%d" % free_port(), "--data", os.path.join(tmp, "data"),
                          "--network", "nef", "--nef-url", emu.url] + extra)
            assert p.returncode != 0 and name in p.stderr, (p.returncode, p.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_static_bearer_token():
    emu = Emulator("--token-required", "--bearer", "static-tok-123")
    d = start(emu.url, ["--nef-bearer-token", "static-tok-123"])
    with d, receiver() as recv:
        tok = live_app(d)
        phone, ip = new_device(d)
        sid = create(d, tok, recv, phone)
        wait_status(d, tok, sid, "AVAILABLE")
        assert emu.log("POST", ip)[0]["auth"] == "Bearer static-tok-123"
        # A resource URI on another origin (the same emulator named "localhost": not the --nef-url's origin) gets
        # no Authorization: the orphan's DELETE goes there without the token (and is refused).
        nid, sub = emu.sub_of(ip)
        d.stop()
        orphan = emu.control(add={"scsAsId": SCS, "host": "localhost:%d" % emu.port, "subscription": dict(
            sub, ueIpv4Addr="10.255.0.9", notificationDestination=sub["notificationDestination"][:-5] + "QQQQQ")})["id"]
        d.start()
        wait_until(lambda: emu.log("DELETE", orphan), timeout=5, what="the orphan's DELETE")
        assert emu.log("DELETE", orphan)[0]["auth"] is None, emu.log("DELETE", orphan)
        assert all(e["auth"] == "Bearer static-tok-123" for e in emu.log("GET") if e["path"].startswith("/3gpp"))
    emu2 = Emulator("--token-required", "--bearer", "static-tok-123")
    d = start(emu2.url, ["--nef-bearer-token", "wrong"])
    with d, receiver() as recv:
        tok = live_app(d)
        phone, ip = new_device(d)
        sid = create(d, tok, recv, phone)
        wait_status(d, tok, sid, "UNAVAILABLE")


def test_restart_adopts_live_subscriptions_and_deletes_orphans():
    emu = Emulator()
    d = start(emu.url)
    with d, receiver() as recv:
        tok = live_app(d)
        phone, ip, sid, nid, s = available(emu, d, tok, recv)
        d.stop()
        prefix = s["notificationDestination"].rsplit("/", 1)[0] + "/"
        orphan = emu.control(add={"scsAsId": SCS, "subscription": dict(
            s, ueIpv4Addr="10.255.0.1", notificationDestination=prefix + "B" * 43)})["id"]
        foreign = emu.control(add={"scsAsId": SCS, "subscription": dict(
            s, ueIpv4Addr="10.255.0.2", notificationDestination="http://other.example/cb/x")})["id"]
        # A duplicate of the live one (same token: a create's retry left it) is listed after it.
        dup = emu.control(add={"scsAsId": SCS, "subscription": dict(s)})["id"]
        posts = len(emu.log("POST", ip))
        d.start()
        wait_until(lambda: orphan not in emu.subs() and dup not in emu.subs(), timeout=5,
                   what="the orphan and the duplicate deleted")
        assert nid in emu.subs() and foreign in emu.subs(), emu.subs()
        time.sleep(0.5)
        assert len(emu.log("POST", ip)) == posts, "the live subscription was created again instead of adopted"
        assert status(d, tok, sid) == "AVAILABLE"
        emu.control(terminate=nid)
        wait_status(d, tok, sid, "UNAVAILABLE")
        recv.wait_until(lambda hs: hooks_of(recv, sid)[-1:] == ["UNAVAILABLE"] or None, timeout=5,
                        what="UNAVAILABLE hook after restart")


def test_a_start_up_list_the_nef_fails_is_asked_again_before_anything_is_subscribed_afresh():
    # Subscribing the available sessions afresh after one failed list would leave their subscriptions (and QoS)
    # behind at the NEF: the list is asked again, the sessions waiting, and the live subscription is adopted.
    emu = Emulator()
    d = start(emu.url)
    with d, receiver() as recv:
        tok = live_app(d)
        phone, ip, sid, nid, _ = available(emu, d, tok, recv)
        d.stop()
        emu.control(fail=503, times=2, op="list")
        def lists():
            return [e for e in emu.log("GET") if e["path"].startswith("/3gpp-as-session-with-qos/")]
        before = len(lists())
        d.start()
        wait_until(lambda: "event=reconciled adopted=1" in d.log(), timeout=10, what="the list read at last")
        assert len(lists()) - before == 3, lists()
        assert d.log().count("list_attempt_failed") == 2, d.log_tail(20)
        posts = [e for e in emu.log("POST", ip) if e["path"].endswith("/subscriptions")]
        assert len(posts) == 1 and list(emu.subs()) == [nid], (posts, emu.subs())
        assert status(d, tok, sid) == "AVAILABLE"
        emu.control(terminate=nid)
        wait_status(d, tok, sid, "UNAVAILABLE")


def test_sandbox_sessions_still_use_the_simulated_network():
    emu, d, tok, recv = shared()
    app = create_app(d, name="sbx", extra=("--rate-limit", "0"))
    stok = get_token(d, app)
    r = d.request("POST", SESSIONS, body={"device": {"phoneNumber": "+99999991001"}, "qosProfile": "QOS_L",
                                           "duration": 60, "webhook": {"notificationUrl": recv.url("/cb")}},
                  token=stok)
    expect_status(r, 201)
    wait_status(d, stok, r.json()["sessionId"], "UNAVAILABLE", timeout=8)


# --------------------------------------------------------------------------------------------------------------
# QoS Provisioning over the NEF: revocation is asynchronous (202, DELETE_REQUESTED until the NEF confirms)

ASSIGNMENTS = "/qos-provisioning/v0.3/qos-assignments"
P_SCOPES = ("qos-provisioning:qos-assignments:create qos-provisioning:qos-assignments:read "
            "qos-provisioning:qos-assignments:delete")


def prov_app(d, env="live"):
    app = create_app(d, env=env, name="prov-" + env, extra=("--rate-limit", "0"))
    return get_token(d, app, P_SCOPES)


def assign(d, tok, recv, phone):
    r = d.request("POST", ASSIGNMENTS, token=tok,
                  body={"device": {"phoneNumber": phone}, "qosProfile": "QOS_L", "sink": recv.url("/prov")})
    expect_status(r, 201)
    return r.json()["assignmentId"]


def assignment(d, tok, aid):
    r = d.request("GET", ASSIGNMENTS + "/" + aid, token=tok)
    expect_status(r, 200)
    b = r.json()
    return b["status"], b.get("statusInfo")


def prov_events(recv, aid):
    out = []
    for h in list(recv.requests):
        try:
            b = json.loads(h.body)
        except ValueError:
            continue
        data = b.get("data") if isinstance(b, dict) else None
        if isinstance(data, dict) and data.get("assignmentId") == aid:
            assert b.get("type") == "org.camaraproject.qos-provisioning.v0.status-changed", b
            out.append((data.get("status"), data.get("statusInfo")))
    return out


def test_revoking_an_assignment_answers_202_and_ends_it_when_the_nef_has_released():
    emu, d, tok, recv = shared()
    ptok = prov_app(d)
    phone, ip = new_device(d)
    aid = assign(d, ptok, recv, phone)
    wait_until(lambda: assignment(d, ptok, aid) == ("AVAILABLE", None), timeout=5, what="assignment AVAILABLE")
    nid, _ = emu.sub_of(ip)
    assert nid, emu.subs()
    # The NEF answers the first three DELETEs 503: the release takes the retries (0.5 s, 1 s, then 2 s), time for
    # the checks below while it is pending, on a loaded machine too.
    emu.control(fail=503, times=3, op="delete")
    r = d.request("DELETE", ASSIGNMENTS + "/" + aid, token=ptok)
    expect_status(r, 202)
    b = r.json()
    assert (b["assignmentId"], b["status"], b.get("statusInfo")) == (aid, "AVAILABLE", "DELETE_REQUESTED"), b
    assert r.headers.get("x-correlator"), r.headers
    # Until the NEF confirms: still AVAILABLE with DELETE_REQUESTED, a repeated revocation answers the same, and
    # the device is still held (a new assignment for it is a conflict).
    assert assignment(d, ptok, aid) == ("AVAILABLE", "DELETE_REQUESTED")
    r = d.request("DELETE", ASSIGNMENTS + "/" + aid, token=ptok)
    expect_status(r, 202)
    assert r.json()["statusInfo"] == "DELETE_REQUESTED"
    r = d.request("POST", ASSIGNMENTS, token=ptok,
                  body={"device": {"phoneNumber": phone}, "qosProfile": "QOS_L", "sink": recv.url("/prov")})
    expect_status(r, 409)
    assert prov_events(recv, aid) == [("AVAILABLE", None)], prov_events(recv, aid)
    wait_until(lambda: assignment(d, ptok, aid) == ("UNAVAILABLE", "DELETE_REQUESTED"), timeout=8,
               what="assignment UNAVAILABLE once released")
    assert nid not in emu.subs()
    assert len(emu.log("DELETE", nid)) >= 3, emu.log("DELETE", nid)
    recv.wait_until(lambda hs: prov_events(recv, aid)[-1:] == [("UNAVAILABLE", "DELETE_REQUESTED")] or None,
                    timeout=5, what="the final UNAVAILABLE event")
    assert prov_events(recv, aid) == [("AVAILABLE", None), ("UNAVAILABLE", "DELETE_REQUESTED")]
    # Released: the device is free again, and deleting the ended assignment is a 204 with no event.
    expect_status(d.request("DELETE", ASSIGNMENTS + "/" + aid, token=ptok), 204)
    aid2 = assign(d, ptok, recv, phone)
    wait_until(lambda: assignment(d, ptok, aid2) == ("AVAILABLE", None), timeout=5, what="second assignment")
    expect_status(d.request("DELETE", ASSIGNMENTS + "/" + aid2, token=ptok), 202)
    wait_until(lambda: assignment(d, ptok, aid2)[0] == "UNAVAILABLE", timeout=5, what="second released")


def test_a_revocation_cut_by_a_crash_is_finished_after_the_restart():
    emu = Emulator()
    d = start(emu.url)
    with d, receiver() as recv:
        ptok = prov_app(d)
        phone, ip = new_device(d)
        aid = assign(d, ptok, recv, phone)
        wait_until(lambda: assignment(d, ptok, aid) == ("AVAILABLE", None), timeout=5, what="AVAILABLE")
        nid, _ = emu.sub_of(ip)
        emu.control(fail=503, times=100, op="delete")
        expect_status(d.request("DELETE", ASSIGNMENTS + "/" + aid, token=ptok), 202)
        wait_until(lambda: len(emu.log("DELETE", nid)) >= 1, timeout=5, what="a first DELETE")
        d.kill()
        emu.control(fail=0, times=0, op="delete")
        d.start()
        # The flag was committed with the 202: after the restart the release is made again and then ends it.
        wait_until(lambda: assignment(d, ptok, aid) == ("UNAVAILABLE", "DELETE_REQUESTED"), timeout=8,
                   what="revocation finished after the restart")
        assert nid not in emu.subs(), emu.subs()
        recv.wait_until(lambda hs: ("UNAVAILABLE", "DELETE_REQUESTED") in prov_events(recv, aid) or None,
                        timeout=5, what="the final event after the restart")


def test_sandbox_assignments_on_the_nef_backend_are_revoked_at_once():
    emu, d, tok, recv = shared()
    stok = prov_app(d, env="sandbox")
    aid = assign(d, stok, recv, "+99999991000")
    wait_until(lambda: assignment(d, stok, aid) == ("AVAILABLE", None), timeout=5, what="sandbox AVAILABLE")
    expect_status(d.request("DELETE", ASSIGNMENTS + "/" + aid, token=stok), 204)
    assert assignment(d, stok, aid) == ("UNAVAILABLE", "DELETE_REQUESTED")


if __name__ == "__main__":
    run(globals())
