"""CAMARA Quality-on-Demand 1.1.0 (/quality-on-demand/v1), QoS Profiles 1.1.0 (/qos-profiles/v1) and 3-legged
tokens (OpenID CIBA: /oauth2/bc-authorize and the urn:openid:params:grant-type:ciba grant), written from the specs in
shared/reference/camara (descriptions as well as schemas) and issue 5.

Black-box: every test talks to a real build/qodd over HTTP or the admin socket (qodctl).
Shared daemons (setup_module):
- D: `--sandbox-delay-ms 200`, no token-endpoint limits, with sandbox apps APP and OTHER and a live app LIVE (all
  without rate limit). The slow scenarios (expiry, +99999991002, the sink token expiry, a timer moved by extend, the
  live CIBA polling) run in background threads from the start; their tests at the end only judge the results.
- PD: the same with `--profiles FILE`: a catalogue with every QosProfile attribute, an INACTIVE and a DEPRECATED
  profile, a profile with a 10 s .. 2 min duration range and one restricted to one phone number (`x-devices`).
Notifications go to local receivers that answer 204: plain http on loopback for sandbox apps, https with a throw-away
self-signed certificate (trusted with --callback-ca, loopback allowed with --callback-allow) for the live app. Every
notification is checked as a structured-mode CloudEvent and with verify_standard_webhook under the app's secret.
Every test uses its own random phone numbers; a sandbox-table number is used by one test only (one active session per
device and daemon).
"""
import ipaddress
import os
import shutil
import sys
import threading
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

V1 = "/quality-on-demand/v1"
SESSIONS = V1 + "/sessions"
RETRIEVE = V1 + "/retrieve-sessions"
QP = "/qos-profiles/v1"
QP_RETRIEVE = QP + "/retrieve-qos-profiles"
V0_SESSIONS = "/camara/qod/v0/sessions"
V0_PROFILES = "/camara/qod/v0/qos-profiles"
CE_TYPE = "org.camaraproject.quality-on-demand.v1.qos-status-changed"
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
S_CREATE = "quality-on-demand:sessions:create"
S_READ = "quality-on-demand:sessions:read"
S_UPDATE = "quality-on-demand:sessions:update"
S_DELETE = "quality-on-demand:sessions:delete"
S_RETRIEVE = "quality-on-demand:sessions:retrieve-by-device"
S_PROFILES = "qos-profiles:read"
V1_SCOPES = [S_CREATE, S_READ, S_UPDATE, S_DELETE, S_RETRIEVE, S_PROFILES]
CIBA_SCOPE = "openid " + " ".join(V1_SCOPES)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
APP_SERVER = {"ipv4Address": "198.51.100.0/24"}
UNRESOLVABLE_HTTPS = "https://callbacks.example.invalid/qod"  # RFC 2606: never resolves
PROFILE_ATTRS = ("name", "description", "status", "targetMinUpstreamRate", "maxUpstreamRate",
                 "targetMinDownstreamRate", "maxDownstreamRate", "minDuration", "maxDuration", "priority",
                 "packetDelayBudget", "jitter", "packetErrorLossRate")

D = PD = None
RECV = RECV_TLS = None
TLS_DIR = PROFILES_DIR = None
APP = OTHER = LIVE = PAPP = None
TOKEN = OTHER_TOKEN = LIVE_TOKEN = PTOKEN = None
VIP_PHONE = None
CATALOGUE = None
BG = {}

# --------------------------------------------------------------------------------------------------------------
# Helpers


NODEV = object()


def body(phone=None, device=None, profile="QOS_L", duration=60, sink=None, cred=None, server=None, **extra):
    """A valid CreateSession (a fresh phone unless device/phone is given; device=NODEV leaves it out)."""
    b = {"applicationServer": dict(server or APP_SERVER), "qosProfile": profile, "duration": duration}
    if device is not NODEV:
        b["device"] = device if device is not None else {"phoneNumber": phone or new_phone()}
    if sink is not None:
        b["sink"] = sink
    if cred is not None:
        b["sinkCredential"] = cred
    b.update(extra)
    return b


def iso_utc(t):
    """RFC 3339 UTC with milliseconds, like the spec's example "2023-07-03T12:27:08.312Z"."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (int(t * 1000) % 1000)


def cred(token=None, expires=None, kind="ACCESSTOKEN", token_type="bearer"):
    return {"credentialType": kind, "accessToken": token or ("sinktok-" + uuid.uuid4().hex),
            "accessTokenExpiresUtc": iso_utc(expires if expires is not None else time.time() + 3600),
            "accessTokenType": token_type}


def post_session(d, tok, b, headers=None):
    return d.request("POST", SESSIONS, body=b, token=tok, headers=headers)


def create_session(d, tok, b=None):
    """POST /sessions that must answer 201; returns the SessionInfo."""
    r = post_session(d, tok, b if b is not None else body())
    expect_status(r, 201)
    return r.json()


def spath(sid):
    return SESSIONS + "/" + sid


def get_session(d, tok, sid):
    return expect_status(d.request("GET", spath(sid), token=tok), 200).json()


def delete_session(d, tok, sid):
    return d.request("DELETE", spath(sid), token=tok)


def extend(d, tok, sid, n=None, b=None):
    return d.request("POST", spath(sid) + "/extend", token=tok,
                     body=b if b is not None else {"requestedAdditionalDuration": n})


def retrieve(d, tok, b):
    return d.request("POST", RETRIEVE, body=b, token=tok)


def network_event(d, tok, sid, status="UNAVAILABLE"):
    return d.request("POST", "/sandbox/v0/sessions/%s/network-events" % sid, body={"qosStatus": status}, token=tok)


def wait_status(d, tok, sid, want, timeout=3):
    """Polls GET until qosStatus == want; returns the session."""
    last = {}

    def pred():
        s = get_session(d, tok, sid)
        last["s"] = s
        return s if s["qosStatus"] == want else None
    try:
        return wait_until(pred, timeout=timeout, interval=0.02, what="session %s to become %s" % (sid, want))
    except AssertionError as e:
        raise AssertionError("%s; last seen: %r" % (e, last.get("s"))) from None


def track(d, tok, sid, until, timeout, interval=0.03):
    """Polls GET until qosStatus is one of `until`; returns {status: monotonic time first seen}."""
    seen = {}

    def pred():
        st = get_session(d, tok, sid)["qosStatus"]
        seen.setdefault(st, time.monotonic())
        return st in until
    try:
        wait_until(pred, timeout=timeout, interval=interval, what="session %s to reach %s" % (sid, until))
    except AssertionError as e:
        raise AssertionError("%s; statuses seen: %r" % (e, sorted(seen))) from None
    return seen


def expect_error_in(resp, status, codes):
    """A CAMARA error with this status and one of several acceptable codes."""
    b = expect_camara_error(resp, status)
    assert b.get("code") in codes, "code %r not in %r: %r" % (b.get("code"), codes, b)
    return b


def daemon_args(extra=()):
    return ["--sandbox-delay-ms", "200", "--token-rate-client", "0", "--token-rate-ip", "0",
            "--callback-ca", os.path.join(TLS_DIR, "cert.pem"), "--callback-allow", "127.0.0.1/32"] + list(extra)


# -- notifications --

def events_for(recv, sid):
    """[(hook, event)] of session sid, in arrival order."""
    out = []
    for h in list(recv.requests):
        ev = event_of(h)
        if ev and isinstance(ev.get("data"), dict) and ev["data"].get("sessionId") == sid:
            out.append((h, ev))
    return out


def wait_events(recv, sid, n, timeout=5):
    what = "%d notification(s) for session %s" % (n, sid)
    recv.wait_until(lambda hs: len(events_for(recv, sid)) >= n, timeout=timeout, what=what)
    return events_for(recv, sid)


def no_more_events(recv, sid, n, period=0.8):
    """Asserts that session sid has exactly n notifications after waiting period seconds."""
    time.sleep(period)
    evs = events_for(recv, sid)
    assert len(evs) == n, "expected %d notification(s) for %s, got %d: %r" % (n, sid, len(evs), [e for _, e in evs])


def check_event(hook, secret, sid, status, info=None, bearer=None):
    """Checks one notification: CloudEvents 1.0 structured mode, Standard Webhooks signature, Authorization, data.
    Returns the event."""
    ct = hook.headers.get("content-type", "")
    assert ct.split(";")[0].strip().lower() == "application/cloudevents+json", \
        "notification Content-Type is %r (structured mode needs application/cloudevents+json)" % ct
    assert hook.method == "POST", hook
    try:
        ev = verify_standard_webhook(secret, hook.headers, hook.body)
    except WebhookVerifyError as e:
        raise AssertionError("notification signature does not verify: %s; headers %r"
                             % (e, dict(hook.headers.items()))) from None
    assert isinstance(ev, dict), ev
    for k in ("id", "source", "type", "specversion", "time", "datacontenttype", "data"):
        assert k in ev, "CloudEvent lacks %r: %r" % (k, ev)
    assert ev["type"] == CE_TYPE, ev
    assert ev["specversion"] == "1.0", ev
    assert ev["datacontenttype"] == "application/json", ev
    assert isinstance(ev["id"], str) and ev["id"], ev
    assert isinstance(ev["source"], str) and ev["source"] and not re.search(r"\s", ev["source"]), ev
    t = parse_time(ev["time"])
    assert hook.time - 120 <= t <= hook.time + 2, "event time %s is not when it happened (received %s)" \
        % (ev["time"], iso_utc(hook.time))
    data = ev["data"]
    assert isinstance(data, dict) and set(data) <= {"sessionId", "qosStatus", "statusInfo"}, data
    assert data.get("sessionId") == sid, data
    assert data.get("qosStatus") == status, "expected %s/%s, got %r" % (status, info, data)
    if status == "UNAVAILABLE":
        assert data.get("statusInfo") == info, "expected statusInfo %s: %r" % (info, data)
    else:
        assert "statusInfo" not in data, "statusInfo is only for UNAVAILABLE: %r" % data
    if bearer is None:
        assert "authorization" not in hook.headers, "Authorization sent without a sinkCredential: %r" \
            % hook.headers.get("authorization")
    else:
        assert hook.headers.get("authorization") == "Bearer " + bearer, \
            "Authorization %r, expected the sinkCredential's bearer token" % hook.headers.get("authorization")
    return ev


# -- CIBA --

def bc_authorize(d, app, hint, scope=CIBA_SCOPE, auth=True, **extra):
    form = {}
    if hint is not None:
        form["login_hint"] = hint
    if scope is not None:
        form["scope"] = scope
    form.update(extra)
    return d.request("POST", "/oauth2/bc-authorize", form=form,
                     auth=(app["client_id"], app["client_secret"]) if auth else None)


def ciba_token(d, app, rid):
    return d.request("POST", "/oauth2/token", form={"grant_type": CIBA_GRANT, "auth_req_id": rid},
                     auth=(app["client_id"], app["client_secret"]))


def auth_req(d, app, hint, scope=CIBA_SCOPE, **extra):
    r = bc_authorize(d, app, hint, scope, **extra)
    expect_status(r, 200)
    b = r.json()
    assert isinstance(b.get("auth_req_id"), str) and b["auth_req_id"], b
    assert isinstance(b.get("expires_in"), int) and b["expires_in"] > 0, b
    if "interval" in b:
        assert isinstance(b["interval"], int) and b["interval"] >= 0, b
    return b


def three_legged(d, app, hint, scope=CIBA_SCOPE):
    """A 3-legged token for a sandbox app (approved at once): (access_token, token response)."""
    rid = auth_req(d, app, hint, scope)["auth_req_id"]
    r = ciba_token(d, app, rid)
    assert r.status == 200, "CIBA token exchange for a sandbox app: %r" % r
    b = r.json()
    return b["access_token"], b


# --------------------------------------------------------------------------------------------------------------
# Background scenarios on D, judged at the end of the file


class Background:
    """Runs fn() in a thread from now on; result() waits for it and returns its value or re-raises its error."""

    def __init__(self, fn):
        self.value, self.error = None, None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn):
        try:
            self.value = fn()
        except BaseException as e:  # noqa: BLE001
            self.error = e

    def result(self, timeout=40):
        self.thread.join(scaled(timeout))
        assert not self.thread.is_alive(), "background scenario still running after %ss" % scaled(timeout)
        if self.error is not None:
            raise self.error
        return self.value


def scenario_expiry():
    """duration 2, sink without credential: AVAILABLE, then UNAVAILABLE/DURATION_EXPIRED 2 s later."""
    s = create_session(D, TOKEN, body(duration=2, sink=RECV.url("/expiry")))
    seen = track(D, TOKEN, s["sessionId"], ("UNAVAILABLE",), timeout=8)
    final = get_session(D, TOKEN, s["sessionId"])
    evs = wait_events(RECV, s["sessionId"], 2, timeout=3)
    return {"created": s, "seen": seen, "final": final, "events": evs}


def scenario_terminated():
    """+99999991002: AVAILABLE, then UNAVAILABLE/NETWORK_TERMINATED 5 s later."""
    s = create_session(D, TOKEN, body(phone="+99999991002", sink=RECV.url("/terminated")))
    seen = track(D, TOKEN, s["sessionId"], ("UNAVAILABLE",), timeout=12, interval=0.05)
    final = get_session(D, TOKEN, s["sessionId"])
    evs = wait_events(RECV, s["sessionId"], 2, timeout=3)
    return {"created": s, "seen": seen, "final": final, "events": evs}


def scenario_token_expiry():
    """sinkCredential expiring 2.5 s after creation, duration 5: AVAILABLE is notified, the expiry is not."""
    c = cred(expires=time.time() + 2.5)
    s = create_session(D, TOKEN, body(duration=5, sink=RECV.url("/tokexp"), cred=c))
    wait_events(RECV, s["sessionId"], 1, timeout=3)
    track(D, TOKEN, s["sessionId"], ("UNAVAILABLE",), timeout=10, interval=0.05)
    time.sleep(1.5)
    return {"created": s, "cred": c, "final": get_session(D, TOKEN, s["sessionId"]),
            "events": events_for(RECV, s["sessionId"])}


def scenario_extend_timer():
    """duration 2, extended by 3 as soon as AVAILABLE: ends about 5 s after becoming available, not 2."""
    s = create_session(D, TOKEN, body(duration=2))
    seen = track(D, TOKEN, s["sessionId"], ("AVAILABLE", "UNAVAILABLE"), timeout=3, interval=0.01)
    r = extend(D, TOKEN, s["sessionId"], 3)
    seen.update({k: v for k, v in track(D, TOKEN, s["sessionId"], ("UNAVAILABLE",), timeout=10,
                                        interval=0.05).items() if k not in seen})
    return {"created": s, "extend": r, "seen": seen, "final": get_session(D, TOKEN, s["sessionId"])}


def scenario_live_ciba():
    """A live app: pending until `qodctl consent approve`, slow_down when polled too fast, then a token."""
    out = {}
    phone = new_phone()
    add_device(D, phone, "--cell", new_cell())
    out["phone"] = phone
    out["authorize"] = r = bc_authorize(D, LIVE, "tel:" + phone)
    if r.status != 200:
        return out
    b = r.json()
    rid, interval = b.get("auth_req_id"), b.get("interval", 5)
    if not isinstance(interval, int) or interval < 0:
        interval = 5
    out["interval"] = interval
    time.sleep(interval + 0.3)
    out["poll1"] = ciba_token(D, LIVE, rid)          # paced correctly, not approved: authorization_pending
    out["poll2"] = ciba_token(D, LIVE, rid)          # at once again: slow_down
    out["approve"] = D.qodctl("consent", "approve", rid, check=False)
    time.sleep(interval + 5 + 0.3)                   # slow_down adds 5 s to the interval (CIBA 11)
    out["poll3"] = ciba_token(D, LIVE, rid)          # approved: the token
    out["poll4"] = ciba_token(D, LIVE, rid)          # used once: invalid_grant
    if out["poll3"].status == 200:
        tok = out["poll3"].json().get("access_token")
        out["create"] = post_session(D, tok, body(device=NODEV))
        out["create_dev"] = post_session(D, tok, body(phone=phone))
    return out


def scenario_live_ciba_expiry():
    """A live app asks for requested_expiry=1 (CIBA 7.1) and never approves: expired_token after expiry."""
    out = {}
    phone = new_phone()
    add_device(D, phone, "--cell", new_cell())
    out["authorize"] = r = bc_authorize(D, LIVE, "tel:" + phone, requested_expiry="1")
    if r.status != 200:
        return out
    b = r.json()
    out["expires_in"] = b.get("expires_in")
    if isinstance(b.get("expires_in"), int) and b["expires_in"] <= 3:
        time.sleep(b["expires_in"] + 0.8)
        out["poll"] = ciba_token(D, LIVE, b["auth_req_id"])
    return out


# --------------------------------------------------------------------------------------------------------------
# Module set-up


def catalogue():
    full = {
        "name": "QOS_L", "description": "Low latency, every attribute of the schema.", "status": "ACTIVE",
        "countryAvailability": [{"countryName": "GB", "networks": ["23591", "23415"]}, {"countryName": "DE"}],
        "targetMinUpstreamRate": {"value": 2, "unit": "Mbps"}, "maxUpstreamRate": {"value": 10, "unit": "Mbps"},
        "maxUpstreamBurstRate": {"value": 20, "unit": "Mbps"},
        "targetMinDownstreamRate": {"value": 5, "unit": "Mbps"}, "maxDownstreamRate": {"value": 20, "unit": "Mbps"},
        "maxDownstreamBurstRate": {"value": 40, "unit": "Mbps"},
        "minDuration": {"value": 1, "unit": "Seconds"}, "maxDuration": {"value": 1, "unit": "Days"},
        "priority": 10, "packetDelayBudget": {"value": 10, "unit": "Milliseconds"},
        "jitter": {"value": 5, "unit": "Milliseconds"}, "packetErrorLossRate": 3,
        "l4sQueueType": "l4s-queue", "serviceClass": "real_time_interactive",
    }

    def small(name, status, **kw):
        p = {"name": name, "description": name + " profile", "status": status,
             "targetMinDownstreamRate": {"value": 1, "unit": "Mbps"}, "maxDownstreamRate": {"value": 5, "unit": "Mbps"},
             "minDuration": {"value": 1, "unit": "Seconds"}, "maxDuration": {"value": 86400, "unit": "Seconds"},
             "priority": 30, "packetDelayBudget": {"value": 100, "unit": "Milliseconds"}, "packetErrorLossRate": 4}
        p.update(kw)
        return p
    return [full,
            small("QOS_OFF", "INACTIVE"),
            small("QOS_OLD", "DEPRECATED"),
            small("QOS_SHORT", "ACTIVE", minDuration={"value": 10, "unit": "Seconds"},
                  maxDuration={"value": 2, "unit": "Minutes"}),
            small("QOS_VIP", "ACTIVE", **{"x-devices": [VIP_PHONE]})]


def setup_module():
    global D, PD, RECV, RECV_TLS, TLS_DIR, PROFILES_DIR, APP, OTHER, LIVE, PAPP, TOKEN, OTHER_TOKEN, LIVE_TOKEN
    global PTOKEN, VIP_PHONE, CATALOGUE
    RECV = WebhookReceiver(default=(204, {}, b""))
    TLS_DIR = tempfile.mkdtemp(prefix="qod-e2e-tls-")
    cert, key = make_tls_cert(TLS_DIR)
    RECV_TLS = WebhookReceiver(certfile=cert, keyfile=key, default=(204, {}, b""))
    D = Daemon(args=daemon_args())
    APP, TOKEN = new_app(D, "shared")
    OTHER, OTHER_TOKEN = new_app(D, "other")
    LIVE, LIVE_TOKEN = new_app(D, "live", env="live")
    BG["expiry"] = Background(scenario_expiry)
    BG["1002"] = Background(scenario_terminated)
    BG["tokexp"] = Background(scenario_token_expiry)
    BG["extend"] = Background(scenario_extend_timer)
    BG["ciba_live"] = Background(scenario_live_ciba)
    BG["ciba_expiry"] = Background(scenario_live_ciba_expiry)
    VIP_PHONE = new_phone()
    CATALOGUE = catalogue()
    PROFILES_DIR = tempfile.mkdtemp(prefix="qod-e2e-profiles-")
    path = os.path.join(PROFILES_DIR, "profiles.json")
    with open(path, "w") as f:
        json.dump(CATALOGUE, f)
    PD = Daemon(args=daemon_args(["--profiles", path]))
    PAPP, PTOKEN = new_app(PD, "profiles")


def teardown_module():
    for b in BG.values():
        b.thread.join(scaled(30))
    PD.close()
    D.close()
    RECV.close()
    RECV_TLS.close()
    shutil.rmtree(TLS_DIR, ignore_errors=True)
    shutil.rmtree(PROFILES_DIR, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Authentication and scopes


def test_no_token_401_on_every_operation():
    sid = str(uuid.uuid4())
    calls = [("POST", SESSIONS, body()), ("GET", spath(sid), None), ("DELETE", spath(sid), None),
             ("POST", spath(sid) + "/extend", {"requestedAdditionalDuration": 10}),
             ("POST", RETRIEVE, {"device": {"phoneNumber": new_phone()}}),
             ("GET", QP + "/qos-profiles/QOS_L", None), ("POST", QP_RETRIEVE, {})]
    for method, path, b in calls:
        expect_camara_error(D.request(method, path, body=b), 401, "UNAUTHENTICATED")
        expect_camara_error(D.request(method, path, body=b, token="not.a.jwt"), 401, "UNAUTHENTICATED")


def test_each_operation_needs_its_own_scope():
    def tok(scopes):
        return get_token(D, APP, " ".join(scopes))

    def all_but(scope):
        return tok([s for s in V1_SCOPES if s != scope] + ["qod"])
    phone = new_phone()
    s = create_session(D, TOKEN, body(phone=phone, duration=600))
    sid = s["sessionId"]
    wait_status(D, TOKEN, sid, "AVAILABLE")
    # Without the operation's scope (all the others present): 403 PERMISSION_DENIED.
    expect_camara_error(post_session(D, all_but(S_CREATE), body()), 403, "PERMISSION_DENIED")
    expect_camara_error(D.request("GET", spath(sid), token=all_but(S_READ)), 403, "PERMISSION_DENIED")
    expect_camara_error(extend(D, all_but(S_UPDATE), sid, 10), 403, "PERMISSION_DENIED")
    expect_camara_error(retrieve(D, all_but(S_RETRIEVE), {"device": {"phoneNumber": phone}}), 403,
                        "PERMISSION_DENIED")
    expect_camara_error(delete_session(D, all_but(S_DELETE), sid), 403, "PERMISSION_DENIED")
    no_profiles = all_but(S_PROFILES)
    expect_camara_error(D.request("GET", QP + "/qos-profiles/QOS_L", token=no_profiles), 403, "PERMISSION_DENIED")
    expect_camara_error(D.request("POST", QP_RETRIEVE, body={}, token=no_profiles), 403, "PERMISSION_DENIED")
    # The v0 scope alone opens nothing of v1.
    v0 = tok(["qod"])
    expect_camara_error(post_session(D, v0, body()), 403, "PERMISSION_DENIED")
    expect_camara_error(D.request("GET", spath(sid), token=v0), 403, "PERMISSION_DENIED")
    # The session is untouched by the refused calls.
    g = get_session(D, TOKEN, sid)
    assert g["qosStatus"] == "AVAILABLE" and g["duration"] == 600, g
    # With exactly the operation's scope: allowed.
    expect_status(D.request("GET", spath(sid), token=tok([S_READ])), 200)
    expect_status(extend(D, tok([S_UPDATE]), sid, 10), 200)
    r = expect_status(retrieve(D, tok([S_RETRIEVE]), {"device": {"phoneNumber": phone}}), 200)
    assert [x["sessionId"] for x in r.json()] == [sid], r.json()
    expect_status(delete_session(D, tok([S_DELETE]), sid), 204)
    expect_status(post_session(D, tok([S_CREATE]), body()), 201)
    expect_status(D.request("GET", QP + "/qos-profiles/QOS_L", token=tok([S_PROFILES])), 200)
    expect_status(D.request("POST", QP_RETRIEVE, body={}, token=tok([S_PROFILES])), 200)


# --------------------------------------------------------------------------------------------------------------
# POST /sessions


def test_create_201_session_info_requested():
    phone = new_phone()
    b = body(phone=phone, duration=3600, sink=RECV.url("/create"),
             server={"ipv4Address": "198.51.100.0/24", "ipv6Address": "2001:db8:85a3:8d3::/64"},
             devicePorts={"ranges": [{"from": 5010, "to": 5020}], "ports": [5060, 5070]},
             applicationServerPorts={"ports": [8443]})
    r = expect_status(post_session(D, TOKEN, b), 201)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    s = r.json()
    assert UUID_RE.match(s.get("sessionId", "")), s
    assert s["qosStatus"] == "REQUESTED", s
    assert s["duration"] == 3600 and isinstance(s["duration"], int), s
    assert s["qosProfile"] == "QOS_L", s
    assert s["device"] == {"phoneNumber": phone}, s
    assert s["applicationServer"] == b["applicationServer"], s
    assert s["devicePorts"] == b["devicePorts"], s
    assert s["applicationServerPorts"] == b["applicationServerPorts"], s
    assert s["sink"] == b["sink"], s
    for k in ("startedAt", "expiresAt", "statusInfo", "sinkCredential", "webhook"):
        assert k not in s, "%s in a REQUESTED SessionInfo: %r" % (k, s)


def test_create_without_optional_members_omits_them():
    s = create_session(D, TOKEN)
    for k in ("devicePorts", "applicationServerPorts", "sink", "sinkCredential"):
        assert k not in s, "%s present though not given: %r" % (k, s)


def test_x_correlator_echoed_on_success_and_error():
    r = expect_status(post_session(D, TOKEN, body(), headers={"x-correlator": "qod-v1-test:1"}), 201)
    assert r.headers.get("x-correlator") == "qod-v1-test:1", r.headers
    r = post_session(D, TOKEN, without(body(), "qosProfile"), headers={"x-correlator": "qod-v1-test:2"})
    expect_camara_error(r, 400, "INVALID_ARGUMENT")
    assert r.headers.get("x-correlator") == "qod-v1-test:2", r.headers
    r = D.request("POST", QP_RETRIEVE, body={}, token=TOKEN, headers={"x-correlator": "qod-v1-test:3"})
    assert r.headers.get("x-correlator") == "qod-v1-test:3", r.headers


def test_available_has_started_at_and_expires_at():
    t0 = time.time()
    s = create_session(D, TOKEN, body(duration=3600))
    g = wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    t1 = time.time()
    started, expires = parse_time(g["startedAt"]), parse_time(g["expiresAt"])
    assert t0 - 1 <= started <= t1 + 1, "startedAt %s is not when the session became AVAILABLE" % g["startedAt"]
    assert expires - started == 3600, "expiresAt %s != startedAt %s + 3600 s" % (g["expiresAt"], g["startedAt"])
    assert g["duration"] == 3600 and "statusInfo" not in g, g
    same = {k: v for k, v in g.items() if k not in ("qosStatus", "startedAt", "expiresAt")}
    assert same == {k: v for k, v in s.items() if k != "qosStatus"}, "GET differs from create:\n%r\n%r" % (g, s)


def test_sink_credential_never_echoed():
    phone = new_phone()
    c = cred()
    r = expect_status(post_session(D, TOKEN, body(phone=phone, sink=RECV.url("/noecho"), cred=c)), 201)
    sid = r.json()["sessionId"]
    wait_status(D, TOKEN, sid, "AVAILABLE")
    g = D.request("GET", spath(sid), token=TOKEN)
    lst = retrieve(D, TOKEN, {"device": {"phoneNumber": phone}})
    e = extend(D, TOKEN, sid, 5)
    for resp in (r, g, lst, e):
        expect_status(resp, 200 if resp is not r else 201)
        assert c["accessToken"].encode() not in resp.body and b"sinkCredential" not in resp.body, \
            "sinkCredential echoed: %r" % resp.body


def test_application_server_and_port_forms_accepted():
    forms = [{"ipv4Address": "198.51.100.7"}, {"ipv4Address": "198.51.100.0/24"},
             {"ipv6Address": "2001:db8:85a3:8d3:1319:8a2e:370:7344"},
             {"ipv6Address": "2001:db8:85a3:8d3:1319:8a2e:370:7344/128"}, {"ipv6Address": "2001:db8:85a3:8d3::/64"},
             {"ipv4Address": "0.0.0.0/0", "ipv6Address": "2001:db8::1"}]
    for server in forms:
        s = create_session(D, TOKEN, body(server=server))
        assert set(s["applicationServer"]) == set(server), (server, s)
    for ports in ({"ports": [0, 65535]}, {"ranges": [{"from": 0, "to": 65535}]},
                  {"ranges": [{"from": 5010, "to": 5020}, {"from": 6000, "to": 6000}], "ports": [5060]}):
        s = create_session(D, TOKEN, body(devicePorts=ports, applicationServerPorts=ports))
        assert s["devicePorts"] == ports and s["applicationServerPorts"] == ports, s


def test_create_missing_required_member_400():
    for key in ("applicationServer", "qosProfile", "duration"):
        expect_camara_error(post_session(D, TOKEN, without(body(), key)), 400, "INVALID_ARGUMENT")
    for raw in (b"", b"{", b"[]", b"null", b'"x"'):
        r = D.request("POST", SESSIONS, raw=raw, token=TOKEN, headers={"Content-Type": "application/json"})
        expect_camara_error(r, 400, "INVALID_ARGUMENT")


def test_create_invalid_members_400():
    bad = [
        {"applicationServer": {}}, {"applicationServer": "198.51.100.7"},
        {"applicationServer": {"ipv4Address": "300.1.2.3"}}, {"applicationServer": {"ipv4Address": "1.2.3.4/33"}},
        {"applicationServer": {"ipv6Address": "2001:db8::g"}}, {"applicationServer": {"ipv6Address": "2001:db8::/129"}},
        {"devicePorts": {}}, {"devicePorts": {"ports": []}}, {"devicePorts": {"ports": [65536]}},
        {"devicePorts": {"ports": [-1]}}, {"devicePorts": {"ports": ["80"]}}, {"devicePorts": {"ranges": []}},
        {"devicePorts": {"ranges": [{"from": 10}]}}, {"applicationServerPorts": {"ranges": [{"from": 1, "to": 70000}]}},
        {"qosProfile": "ab"}, {"qosProfile": "bad name!"}, {"qosProfile": 5}, {"qosProfile": ""},
        {"duration": 0}, {"duration": -1}, {"duration": "60"}, {"duration": 1.5}, {"duration": None},
        {"duration": True},
    ]
    problems = []
    for change in bad:
        r = post_session(D, TOKEN, body(**change))
        if r.status != 400 or r.json().get("code") != "INVALID_ARGUMENT":
            problems.append("%r → %d %s" % (change, r.status, r.text[:160]))
    assert not problems, "expected 400 INVALID_ARGUMENT:\n" + "\n".join(problems)


def test_create_empty_or_schema_invalid_device_400():
    bad = [
        {}, [], "+15551234567",
        {"phoneNumber": "15551234567"}, {"phoneNumber": "+0123456789"}, {"phoneNumber": "+1 555 123 4567"},
        {"phoneNumber": "+1234"}, {"phoneNumber": "+1234567890123456"}, {"phoneNumber": 15551234567},
        {"ipv4Address": {"publicAddress": "203.0.113.5"}},
        {"ipv4Address": {"privateAddress": "10.0.0.1", "publicPort": 1234}},
        {"ipv4Address": {"publicAddress": "203.0.113.256", "publicPort": 1}},
        {"ipv4Address": {"publicAddress": "203.0.113.0/24", "publicPort": 1}},
        {"ipv4Address": {"publicAddress": "203.0.113.5", "publicPort": 65536}},
        {"ipv4Address": "203.0.113.5"},
        {"ipv6Address": "2001:db8::g"}, {"ipv6Address": "2001:db8::/64"}, {"ipv6Address": "203.0.113.5"},
        {"networkAccessIdentifier": 5},
    ]
    problems = []
    for dev in bad:
        r = post_session(D, TOKEN, body(device=dev))
        if r.status != 400 or r.json().get("code") != "INVALID_ARGUMENT":
            problems.append("device %r → %d %s" % (dev, r.status, r.text[:160]))
    assert not problems, "expected 400 INVALID_ARGUMENT:\n" + "\n".join(problems)


def test_create_unknown_profile_400_invalid_argument():
    for name in ("QOS_XL", "qos_l", "QOS_UNKNOWN"):
        expect_camara_error(post_session(D, TOKEN, body(profile=name)), 400, "INVALID_ARGUMENT")


def test_create_duration_above_profile_max_400_duration_out_of_range():
    expect_camara_error(post_session(D, TOKEN, body(duration=86401)), 400, "QUALITY_ON_DEMAND.DURATION_OUT_OF_RANGE")
    s = create_session(D, TOKEN, body(duration=86400))
    assert s["duration"] == 86400, s


def test_create_2legged_without_device_422_missing_identifier():
    expect_camara_error(post_session(D, TOKEN, body(device=NODEV)), 422, "MISSING_IDENTIFIER")


def test_create_network_access_identifier_only_422_unsupported_identifier():
    r = post_session(D, TOKEN, body(device={"networkAccessIdentifier": new_nai()}))
    expect_camara_error(r, 422, "UNSUPPORTED_IDENTIFIER")


def test_create_several_identifiers_echoes_one_with_its_original_value():
    phone = new_phone()
    dev = {"phoneNumber": phone, "ipv4Address": {"publicAddress": new_ipv4(), "publicPort": 1234},
           "ipv6Address": new_ipv6(), "networkAccessIdentifier": new_nai()}
    s = create_session(D, TOKEN, body(device=dev))
    assert s["device"] == {"phoneNumber": phone}, s
    assert get_session(D, TOKEN, s["sessionId"])["device"] == {"phoneNumber": phone}
    # The session is the chosen identifier's: the phone alone is now in conflict.
    expect_camara_error(post_session(D, TOKEN, body(phone=phone)), 409, "CONFLICT")
    v4 = {"publicAddress": new_ipv4(), "privateAddress": new_ipv4()}
    s = create_session(D, TOKEN, body(device={"ipv4Address": v4, "ipv6Address": new_ipv6(),
                                              "networkAccessIdentifier": new_nai()}))
    assert s["device"] == {"ipv4Address": v4}, s
    v6 = ipaddress.ip_address(new_ipv6()).exploded.upper()  # valid, not canonical: must come back as sent
    s = create_session(D, TOKEN, body(device={"ipv6Address": v6, "networkAccessIdentifier": new_nai()}))
    assert s["device"] == {"ipv6Address": v6}, "not the original value %r: %r" % (v6, s)


def test_create_sandbox_table_404_and_422():
    expect_camara_error(post_session(D, TOKEN, body(phone="+99999990404")), 404, "IDENTIFIER_NOT_FOUND")
    expect_camara_error(post_session(D, TOKEN, body(phone="+99999990422")), 422, "SERVICE_NOT_APPLICABLE")


def test_create_live_unregistered_404_and_ineligible_422():
    expect_camara_error(post_session(D, LIVE_TOKEN, body()), 404, "IDENTIFIER_NOT_FOUND")
    phone = new_phone()
    add_device(D, phone, "--ineligible")
    expect_camara_error(post_session(D, LIVE_TOKEN, body(phone=phone)), 422, "SERVICE_NOT_APPLICABLE")


def test_an_ipv6_device_is_any_address_of_its_64():
    # CAMARA: a device may be identified "by any single IPv6 address from within the subnet allocated to the device
    # (e.g. adding ::0 to the /64 prefix)". A live device registered with one address is found by its /64's ::0,
    # and echoed as the app wrote it; in the sandbox two addresses of one /64 are one device (409).
    phone, addr = new_phone(), new_ipv6()
    add_device(D, phone, "--ipv6", addr)
    net = str(ipaddress.ip_network(addr + "/64", strict=False).network_address)
    s = create_session(D, LIVE_TOKEN, body(device={"ipv6Address": net}))
    assert s["device"] == {"ipv6Address": net}, s
    expect_camara_error(post_session(D, LIVE_TOKEN, body(phone=phone)), 409, "CONFLICT")
    expect_status(delete_session(D, LIVE_TOKEN, s["sessionId"]), 204)
    sandbox = ipaddress.ip_address(new_ipv6())
    create_session(D, TOKEN, body(device={"ipv6Address": str(sandbox)}))
    expect_camara_error(post_session(D, TOKEN, body(device={"ipv6Address": str(sandbox + 1)})), 409, "CONFLICT")


def test_live_lookups_of_an_unknown_or_ineligible_device_answer_as_a_create_would():
    # retrieve-sessions and retrieve-qos-profiles name a device too: a live app gets 404 IDENTIFIER_NOT_FOUND for
    # one the operator does not know and 422 SERVICE_NOT_APPLICABLE for an ineligible one, not an empty answer.
    unknown, ineligible, known = new_phone(), new_phone(), new_phone()
    add_device(D, ineligible, "--ineligible")
    add_device(D, known)
    for path, status, code, phone in ((RETRIEVE, 404, "IDENTIFIER_NOT_FOUND", unknown),
                                      (RETRIEVE, 422, "SERVICE_NOT_APPLICABLE", ineligible),
                                      (QP_RETRIEVE, 404, "IDENTIFIER_NOT_FOUND", unknown),
                                      (QP_RETRIEVE, 422, "SERVICE_NOT_APPLICABLE", ineligible)):
        r = D.request("POST", path, body={"device": {"phoneNumber": phone}}, token=LIVE_TOKEN)
        expect_camara_error(r, status, code)
    assert expect_status(retrieve(D, LIVE_TOKEN, {"device": {"phoneNumber": known}}), 200).json() == []
    expect_status(D.request("POST", QP_RETRIEVE, body={"device": {"phoneNumber": known}}, token=LIVE_TOKEN), 200)


def test_live_session_notifies_its_https_sink():
    phone = new_phone()
    add_device(D, phone, "--cell", new_cell())
    c = cred()
    s = create_session(D, LIVE_TOKEN, body(phone=phone, sink=RECV_TLS.url("/live"), cred=c))
    assert s["device"] == {"phoneNumber": phone} and s["sink"] == RECV_TLS.url("/live"), s
    (hook, _), = wait_events(RECV_TLS, s["sessionId"], 1)
    check_event(hook, LIVE["webhook_secret"], s["sessionId"], "AVAILABLE", bearer=c["accessToken"])


def test_sink_must_be_https_400_invalid_sink():
    phone = new_phone()
    add_device(D, phone, "--cell", new_cell())
    for sink in ("http://app.example.com/cb", "ftp://app.example.com/cb", RECV.url("/live-plain")):
        expect_camara_error(post_session(D, LIVE_TOKEN, body(phone=phone, sink=sink)), 400, "INVALID_SINK")
    for sink in ("app.example.com/cb", "not a url", ""):
        expect_error_in(post_session(D, LIVE_TOKEN, body(phone=phone, sink=sink)), 400,
                        ("INVALID_SINK", "INVALID_ARGUMENT"))
    for sink in ("http://10.1.2.3/cb", "ftp://127.0.0.1/cb"):
        expect_camara_error(post_session(D, TOKEN, body(sink=sink)), 400, "INVALID_SINK")
    # Refusals created nothing; an https sink is fine for live apps, http to loopback for sandbox apps.
    create_session(D, LIVE_TOKEN, body(phone=phone, sink=UNRESOLVABLE_HTTPS))
    create_session(D, TOKEN, body(sink=RECV.url("/plain")))


def test_sink_credential_type_must_be_accesstoken_400_invalid_credential():
    plain = {"credentialType": "PLAIN", "identifier": "user", "secret": "pw"}
    refresh = dict(cred(kind="REFRESHTOKEN"), refreshToken="r", refreshTokenEndpoint="https://idp.example.com/t")
    for c in (plain, refresh):
        r = post_session(D, TOKEN, body(sink=RECV.url("/cred"), cred=c))
        expect_camara_error(r, 400, "INVALID_CREDENTIAL")


def test_sink_credential_token_type_must_be_bearer_400_invalid_token():
    for tt in ("mac", "dpop", "basic"):
        r = post_session(D, TOKEN, body(sink=RECV.url("/cred"), cred=cred(token_type=tt)))
        expect_camara_error(r, 400, "INVALID_TOKEN")


def test_sink_credential_token_type_is_case_insensitive():
    # The schema's enum says "bearer", its description says "MUST be set to `Bearer`", and RFC 6749 7.1 token types
    # are case-insensitive: an app that follows the description must not be refused.
    s = create_session(D, TOKEN, body(sink=RECV.url("/Bearer"), cred=cred(token_type="Bearer")))
    assert "sinkCredential" not in s, s


def test_sink_credential_missing_or_malformed_members_400():
    for change in ({"accessToken": None}, {"accessTokenExpiresUtc": None}, {"accessTokenType": None},
                   {"accessTokenExpiresUtc": "tomorrow"}, {"accessTokenExpiresUtc": "2030-01-01T00:00:00"},
                   {"credentialType": None}):
        c = cred()
        for k, v in change.items():
            if v is None:
                del c[k]
            else:
                c[k] = v
        r = post_session(D, TOKEN, body(sink=RECV.url("/cred"), cred=c))
        expect_error_in(r, 400, ("INVALID_ARGUMENT", "INVALID_CREDENTIAL", "INVALID_TOKEN"))


def test_second_create_same_device_while_available_409():
    b = body()
    s = create_session(D, TOKEN, b)
    wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    expect_camara_error(post_session(D, TOKEN, b), 409, "CONFLICT")
    expect_camara_error(post_session(D, OTHER_TOKEN, b), 409, "CONFLICT")


def test_requested_session_has_no_times_cannot_be_extended_and_conflicts():
    # +99999991003 stays REQUESTED for 10 s.
    b = body(phone="+99999991003")
    s = create_session(D, TOKEN, b)
    g = get_session(D, TOKEN, s["sessionId"])
    assert g["qosStatus"] == "REQUESTED", g
    for k in ("startedAt", "expiresAt", "statusInfo"):
        assert k not in g, "%s in a REQUESTED session: %r" % (k, g)
    expect_camara_error(extend(D, TOKEN, s["sessionId"], 60), 409, "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED")
    expect_camara_error(post_session(D, TOKEN, b), 409, "CONFLICT")
    assert get_session(D, TOKEN, s["sessionId"])["duration"] == 60
    expect_status(delete_session(D, TOKEN, s["sessionId"]), 204)
    assert get_session(D, TOKEN, s["sessionId"])["qosStatus"] == "UNAVAILABLE"


def test_after_delete_the_device_can_start_again():
    b = body()
    s = create_session(D, TOKEN, b)
    wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    expect_status(delete_session(D, TOKEN, s["sessionId"]), 204)
    s2 = create_session(D, TOKEN, b)
    assert s2["sessionId"] != s["sessionId"], s2


def test_v0_and_v1_share_one_engine():
    phone = new_phone()
    v0 = {"device": {"phoneNumber": phone}, "qosProfile": "QOS_L", "duration": 60,
          "webhook": {"notificationUrl": RECV.url("/v0")}}
    expect_status(D.request("POST", V0_SESSIONS, body=v0, token=TOKEN), 201)
    expect_camara_error(post_session(D, TOKEN, body(phone=phone)), 409, "CONFLICT")
    phone2 = new_phone()
    create_session(D, TOKEN, body(phone=phone2))
    v0["device"] = {"phoneNumber": phone2}
    expect_camara_error(D.request("POST", V0_SESSIONS, body=v0, token=TOKEN), 409, "CONFLICT")


def test_a_session_belongs_to_the_api_that_created_it():
    # One engine, one device rule (above); but each API reads, deletes and finds only its own sessions, in its
    # own words: the other API's paths answer 404. The sandbox network event answers in the creating API's form.
    v0_phone, v1_phone = new_phone(), new_phone()
    v0 = {"device": {"phoneNumber": v0_phone}, "qosProfile": "QOS_L", "duration": 60,
          "webhook": {"notificationUrl": RECV.url("/v0")}}
    v0_id = expect_status(D.request("POST", V0_SESSIONS, body=v0, token=TOKEN), 201).json()["sessionId"]
    v1_id = create_session(D, TOKEN, body(phone=v1_phone))["sessionId"]
    expect_camara_error(D.request("GET", V0_SESSIONS + "/" + v1_id, token=TOKEN), 404, "NOT_FOUND")
    expect_camara_error(D.request("GET", spath(v0_id), token=TOKEN), 404, "NOT_FOUND")
    expect_camara_error(extend(D, TOKEN, v0_id, 10), 404, "NOT_FOUND")
    # Nor does a 3-legged token of another device learn that the id exists elsewhere (404, not 403).
    other_tok, _ = three_legged(D, APP, "tel:" + new_phone())
    expect_camara_error(D.request("GET", spath(v0_id), token=other_tok), 404, "NOT_FOUND")
    assert expect_status(retrieve(D, TOKEN, {"device": {"phoneNumber": v0_phone}}), 200).json() == []
    expect_camara_error(D.request("DELETE", V0_SESSIONS + "/" + v1_id, token=TOKEN), 404, "NOT_FOUND")
    expect_camara_error(delete_session(D, TOKEN, v0_id), 404, "NOT_FOUND")
    # Both are still there, each for its own API.
    assert expect_status(D.request("GET", V0_SESSIONS + "/" + v0_id, token=TOKEN), 200).json()["sessionId"] == v0_id
    wait_status(D, TOKEN, v1_id, "AVAILABLE")
    ev = expect_status(network_event(D, TOKEN, v1_id), 200).json()
    assert ev["sessionId"] == v1_id and ev["qosStatus"] == "UNAVAILABLE" and "applicationServer" in ev, ev
    assert "webhook" not in ev and ev.get("statusInfo") == "NETWORK_TERMINATED", ev


# --------------------------------------------------------------------------------------------------------------
# GET, DELETE, extend: whose session, which id


def test_other_client_403_random_404_malformed_400():
    s = create_session(D, TOKEN)
    sid = s["sessionId"]
    rnd = str(uuid.uuid4())
    for label, call in (("GET", lambda tok, i: D.request("GET", spath(i), token=tok)),
                        ("DELETE", lambda tok, i: delete_session(D, tok, i)),
                        ("extend", lambda tok, i: extend(D, tok, i, 10))):
        expect_camara_error(call(OTHER_TOKEN, sid), 403, "PERMISSION_DENIED")
        expect_camara_error(call(TOKEN, rnd), 404, "NOT_FOUND")
        for bad in ("not-a-uuid", "1234", sid[:-1] + "g"):
            r = call(TOKEN, bad)
            assert r.status == 400, "%s with session id %r: %r" % (label, bad, r)
            expect_camara_error(r, 400, "INVALID_ARGUMENT")
    g = get_session(D, TOKEN, sid)
    assert g["qosStatus"] in ("REQUESTED", "AVAILABLE") and g["duration"] == 60, g


# --------------------------------------------------------------------------------------------------------------
# DELETE


def test_delete_available_notifies_delete_requested_and_stays_readable():
    c = cred()
    s = create_session(D, TOKEN, body(duration=3600, sink=RECV.url("/delete"), cred=c))
    sid = s["sessionId"]
    (h1, e1), = wait_events(RECV, sid, 1)
    check_event(h1, APP["webhook_secret"], sid, "AVAILABLE", bearer=c["accessToken"])
    assert get_session(D, TOKEN, sid)["qosStatus"] == "AVAILABLE"
    r = expect_status(delete_session(D, TOKEN, sid), 204)
    assert r.body == b"", r
    evs = wait_events(RECV, sid, 2)
    e2 = check_event(evs[1][0], APP["webhook_secret"], sid, "UNAVAILABLE", "DELETE_REQUESTED",
                     bearer=c["accessToken"])
    assert e2["id"] != e1["id"], "two events with one id: %r %r" % (e1, e2)
    g = get_session(D, TOKEN, sid)
    assert g["qosStatus"] == "UNAVAILABLE" and g["statusInfo"] == "DELETE_REQUESTED", g
    # Deleting it again: 204, and no second notification.
    expect_status(delete_session(D, TOKEN, sid), 204)
    no_more_events(RECV, sid, 2, 0.6)
    expect_camara_error(extend(D, TOKEN, sid, 10), 409, "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED")


def test_deleted_session_reports_termination_time_and_effective_duration():
    # SessionInfo: for UNAVAILABLE, expiresAt "is the time when the session was terminated" and duration "the
    # overall effective duration since startedAt until the session was terminated".
    s = create_session(D, TOKEN, body(duration=3600))
    wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    time.sleep(1.1)
    expect_status(delete_session(D, TOKEN, s["sessionId"]), 204)
    now = time.time()
    g = get_session(D, TOKEN, s["sessionId"])
    started, ended = parse_time(g["startedAt"]), parse_time(g["expiresAt"])
    assert now - 3 <= ended <= now + 1, "expiresAt %s is not the deletion time (now %s)" % (g["expiresAt"], iso_utc(now))
    assert abs(g["duration"] - (ended - started)) <= 1 and 1 <= g["duration"] <= 3, \
        "duration %r is not the effective duration (%s .. %s)" % (g["duration"], g["startedAt"], g["expiresAt"])


def test_delete_network_terminated_session_204_without_notification():
    s = create_session(D, TOKEN, body(sink=RECV.url("/netend")))
    sid = s["sessionId"]
    wait_events(RECV, sid, 1)
    expect_status(network_event(D, TOKEN, sid), 200)
    evs = wait_events(RECV, sid, 2)
    check_event(evs[0][0], APP["webhook_secret"], sid, "AVAILABLE")
    check_event(evs[1][0], APP["webhook_secret"], sid, "UNAVAILABLE", "NETWORK_TERMINATED")
    g = get_session(D, TOKEN, sid)
    assert g["qosStatus"] == "UNAVAILABLE" and g["statusInfo"] == "NETWORK_TERMINATED", g
    expect_camara_error(extend(D, TOKEN, sid, 10), 409, "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED")
    expect_status(delete_session(D, TOKEN, sid), 204)
    no_more_events(RECV, sid, 2, 0.6)


def test_refused_session_unavailable_network_terminated():
    s = create_session(D, TOKEN, body(phone="+99999991001", sink=RECV.url("/refused")))
    assert s["qosStatus"] == "REQUESTED", s
    g = wait_status(D, TOKEN, s["sessionId"], "UNAVAILABLE")
    assert g["statusInfo"] == "NETWORK_TERMINATED", g
    # Never AVAILABLE: no startedAt; expiresAt is when the session was terminated (the spec, SessionInfo).
    ended = datetime.fromisoformat(g["expiresAt"].replace("Z", "+00:00")).timestamp()
    assert "startedAt" not in g and abs(ended - time.time()) < 60, g
    (hook, _), = wait_events(RECV, s["sessionId"], 1)
    check_event(hook, APP["webhook_secret"], s["sessionId"], "UNAVAILABLE", "NETWORK_TERMINATED")
    no_more_events(RECV, s["sessionId"], 1, 0.4)


# --------------------------------------------------------------------------------------------------------------
# POST /sessions/{id}/extend


def test_extend_available_adds_duration_and_moves_expiry():
    s = create_session(D, TOKEN, body(duration=60))
    g = wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    r = expect_status(extend(D, TOKEN, s["sessionId"], 30), 200)
    e = r.json()
    assert e["sessionId"] == s["sessionId"] and e["qosStatus"] == "AVAILABLE", e
    assert e["duration"] == 90, e
    assert e["startedAt"] == g["startedAt"], (e, g)
    assert parse_time(e["expiresAt"]) == parse_time(g["expiresAt"]) + 30, (e, g)
    g2 = get_session(D, TOKEN, s["sessionId"])
    assert g2["duration"] == 90 and g2["expiresAt"] == e["expiresAt"], g2


def test_extend_capped_silently_at_profile_max_duration():
    s = create_session(D, TOKEN, body(duration=86000))
    wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    e = expect_status(extend(D, TOKEN, s["sessionId"], 1000), 200).json()
    assert e["duration"] == 86400, e
    assert parse_time(e["expiresAt"]) - parse_time(e["startedAt"]) == 86400, e
    e = expect_status(extend(D, TOKEN, s["sessionId"], 10), 200).json()
    assert e["duration"] == 86400, e


def test_extend_invalid_body_400():
    s = create_session(D, TOKEN)
    wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    for b in ({"requestedAdditionalDuration": 0}, {"requestedAdditionalDuration": -5}, {},
              {"requestedAdditionalDuration": "10"}, {"requestedAdditionalDuration": 1.5},
              {"requestedAdditionalDuration": None}, [10]):
        r = extend(D, TOKEN, s["sessionId"], b=b)
        assert r.status == 400, "extend %r: %r" % (b, r)
        expect_camara_error(r, 400, "INVALID_ARGUMENT")
    for raw in (b"", b"{"):
        r = D.request("POST", spath(s["sessionId"]) + "/extend", raw=raw, token=TOKEN,
                      headers={"Content-Type": "application/json"})
        expect_camara_error(r, 400, "INVALID_ARGUMENT")
    assert get_session(D, TOKEN, s["sessionId"])["duration"] == 60


# --------------------------------------------------------------------------------------------------------------
# POST /retrieve-sessions


def test_retrieve_sessions_of_a_device():
    phone = new_phone()
    s = create_session(D, TOKEN, body(phone=phone, sink=RECV.url("/retrieve")))
    g = wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    r = expect_status(retrieve(D, TOKEN, {"device": {"phoneNumber": phone}}), 200)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    lst = r.json()
    assert isinstance(lst, list) and [x["sessionId"] for x in lst] == [s["sessionId"]], lst
    item = lst[0]
    assert {k: v for k, v in item.items() if k != "device"} == {k: v for k, v in g.items() if k != "device"}, \
        "retrieved item differs from GET:\n%r\n%r" % (item, g)
    # Another client sees none of this client's sessions; a device without sessions gives [].
    assert expect_status(retrieve(D, OTHER_TOKEN, {"device": {"phoneNumber": phone}}), 200).json() == []
    assert expect_status(retrieve(D, TOKEN, {"device": {"phoneNumber": new_phone()}}), 200).json() == []


def test_retrieve_sessions_by_ipv4():
    v4 = {"publicAddress": new_ipv4(), "publicPort": 4321}
    s = create_session(D, TOKEN, body(device={"ipv4Address": v4}))
    lst = expect_status(retrieve(D, TOKEN, {"device": {"ipv4Address": v4}}), 200).json()
    assert [x["sessionId"] for x in lst] == [s["sessionId"]], lst


def test_retrieve_sessions_device_errors():
    expect_camara_error(retrieve(D, TOKEN, {}), 422, "MISSING_IDENTIFIER")
    for dev in ({}, {"phoneNumber": "12345"}, {"ipv4Address": {"publicAddress": "203.0.113.5"}}):
        expect_camara_error(retrieve(D, TOKEN, {"device": dev}), 400, "INVALID_ARGUMENT")
    expect_camara_error(retrieve(D, TOKEN, {"device": {"networkAccessIdentifier": new_nai()}}), 422,
                        "UNSUPPORTED_IDENTIFIER")
    r = D.request("POST", RETRIEVE, raw=b"{", token=TOKEN, headers={"Content-Type": "application/json"})
    expect_camara_error(r, 400, "INVALID_ARGUMENT")


# --------------------------------------------------------------------------------------------------------------
# Notifications


def test_notification_is_a_signed_structured_cloudevent_with_bearer():
    c = cred()
    s = create_session(D, TOKEN, body(sink=RECV.url("/ce"), cred=c))
    (hook, _), = wait_events(RECV, s["sessionId"], 1)
    assert hook.path == "/ce", hook
    ev = check_event(hook, APP["webhook_secret"], s["sessionId"], "AVAILABLE", bearer=c["accessToken"])
    assert hook.headers.get("webhook-id"), hook.headers
    # The notification's own x-correlator (optional in the spec's callback), per event: the CloudEvent id.
    assert hook.headers.get("x-correlator") == hook.headers["webhook-id"] == ev["id"], (hook.headers, ev)
    no_more_events(RECV, s["sessionId"], 1, 0.3)
    assert ev["data"] == {"sessionId": s["sessionId"], "qosStatus": "AVAILABLE"}, ev


def test_session_without_sink_sends_nothing():
    # Nothing can be observed on the wire without a sink; the operator's view of deliveries must not show any
    # attempt, pending or dead notification for such a session either.
    s = create_session(D, TOKEN)
    wait_status(D, TOKEN, s["sessionId"], "AVAILABLE")
    expect_status(delete_session(D, TOKEN, s["sessionId"]), 204)
    time.sleep(0.3)
    for state in ("pending", "dead"):
        lst = D.qodctl_json("deliveries", "list", "--state", state, "--json")
        mine = [x for x in lst if x.get("session") == s["sessionId"]]
        assert not mine, "%s deliveries for a session without sink: %r" % (state, mine)
    lst = D.qodctl_json("deliveries", "list", "--state", "delivered", "--json")
    tried = [x for x in lst if x.get("session") == s["sessionId"] and x.get("attempts")]
    assert not tried, "delivery attempts for a session without sink: %r" % tried


def test_notification_retried_with_the_same_ids():
    d = Daemon(args=daemon_args(["--retry-schedule", "0,0.3,0.3,0.3"]))
    fails = {"n": 0}
    lock = threading.Lock()

    def responder(hook):
        with lock:
            fails["n"] += 1
            return (500, {}, b"") if fails["n"] == 1 else (204, {}, b"")
    with d, WebhookReceiver(responder=responder) as recv:
        app, tok = new_app(d, "retry")
        s = create_session(d, tok, body(sink=recv.url("/retry")))
        hooks = [h for h, _ in wait_events(recv, s["sessionId"], 2)]
        evs = [check_event(h, app["webhook_secret"], s["sessionId"], "AVAILABLE") for h in hooks]
        assert hooks[0].headers.get("webhook-id") == hooks[1].headers.get("webhook-id"), "webhook-id changed"
        assert evs[0]["id"] == evs[1]["id"], "CloudEvent id changed on retry: %r %r" % (evs[0]["id"], evs[1]["id"])
        no_more_events(recv, s["sessionId"], 2, 0.6)


# --------------------------------------------------------------------------------------------------------------
# /qos-profiles/v1 on the default catalogue


def test_get_qos_profile_has_every_catalogue_attribute():
    for name in ("QOS_L", "QOS_M", "QOS_S"):
        r = expect_status(D.request("GET", QP + "/qos-profiles/" + name, token=TOKEN), 200)
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        p = r.json()
        missing = [a for a in PROFILE_ATTRS if a not in p]
        assert not missing, "profile %s lacks %r: %r" % (name, missing, p)
        assert p["name"] == name and p["status"] == "ACTIVE", p
        assert p["maxDuration"] == {"value": 86400, "unit": "Seconds"} or p["maxDuration"] == \
            {"value": 1, "unit": "Days"} or p["maxDuration"] == {"value": 24, "unit": "Hours"}, p


def test_get_unknown_qos_profile_404():
    expect_camara_error(D.request("GET", QP + "/qos-profiles/QOS_NOPE", token=TOKEN), 404, "NOT_FOUND")


def test_get_qos_profile_schema_invalid_name_400():
    # QosProfileName: 3..256 characters of [a-zA-Z0-9_.-]; the operation documents 400 (Generic400).
    problems = []
    for bad in ("ab", "bad%20name", "bad!name", "a" * 257):
        r = D.request("GET", QP + "/qos-profiles/" + bad, token=TOKEN)
        if r.status != 400 or r.json().get("code") != "INVALID_ARGUMENT":
            problems.append("GET /qos-profiles/%s → %d %s" % (bad[:20], r.status, r.text[:120]))
    assert not problems, "expected 400 INVALID_ARGUMENT:\n" + "\n".join(problems)


def test_retrieve_qos_profiles_all_and_filters():
    def names(b):
        r = expect_status(D.request("POST", QP_RETRIEVE, body=b, token=TOKEN), 200)
        lst = r.json()
        assert isinstance(lst, list), lst
        return lst
    all_ = names({})
    assert sorted(p["name"] for p in all_) == ["QOS_L", "QOS_M", "QOS_S"], all_
    for p in all_:
        g = expect_status(D.request("GET", QP + "/qos-profiles/" + p["name"], token=TOKEN), 200).json()
        assert g == p, "retrieve and GET differ:\n%r\n%r" % (p, g)
    assert [p["name"] for p in names({"name": "QOS_M"})] == ["QOS_M"]
    assert sorted(p["name"] for p in names({"status": "ACTIVE"})) == ["QOS_L", "QOS_M", "QOS_S"]
    assert names({"status": "INACTIVE"}) == []
    assert names({"status": "DEPRECATED"}) == []
    assert names({"name": "QOS_M", "status": "INACTIVE"}) == []
    assert names({"name": "QOS_NOPE"}) == []
    assert sorted(p["name"] for p in names({"device": {"phoneNumber": new_phone()}})) == ["QOS_L", "QOS_M", "QOS_S"]


def test_retrieve_qos_profiles_invalid_filters():
    problems = []
    for b in ({"status": "BOGUS"}, {"status": "active"}, {"name": "x"}, {"name": "bad name!"}, {"name": 5},
              {"device": {}}, {"device": {"phoneNumber": "1"}}):
        r = D.request("POST", QP_RETRIEVE, body=b, token=TOKEN)
        if r.status != 400 or r.json().get("code") != "INVALID_ARGUMENT":
            problems.append("retrieve-qos-profiles %r → %d %s" % (b, r.status, r.text[:120]))
    assert not problems, "expected 400 INVALID_ARGUMENT:\n" + "\n".join(problems)
    r = D.request("POST", QP_RETRIEVE, body={"device": {"networkAccessIdentifier": new_nai()}}, token=TOKEN)
    expect_camara_error(r, 422, "UNSUPPORTED_IDENTIFIER")


def test_v0_and_v1_serve_the_same_catalogue():
    v0 = expect_status(D.request("GET", V0_PROFILES, token=TOKEN), 200).json()
    v1 = expect_status(D.request("POST", QP_RETRIEVE, body={}, token=TOKEN), 200).json()
    key = lambda p: p["name"]  # noqa: E731
    assert sorted(v0, key=key) == sorted(v1, key=key), "v0 and v1 catalogues differ:\n%r\n%r" % (v0, v1)


# --------------------------------------------------------------------------------------------------------------
# A configured catalogue (PD)


def pd_profiles(b, tok=None):
    r = expect_status(PD.request("POST", QP_RETRIEVE, body=b, token=tok or PTOKEN), 200)
    return r.json()


def test_catalogue_profile_served_with_every_attribute():
    want = CATALOGUE[0]
    got = expect_status(PD.request("GET", QP + "/qos-profiles/QOS_L", token=PTOKEN), 200).json()
    assert got == want, "profile differs from the catalogue:\n%r\n%r" % (got, want)


def test_catalogue_statuses_listed_and_filtered():
    allp = pd_profiles({})
    assert sorted(p["name"] for p in allp) == ["QOS_L", "QOS_OFF", "QOS_OLD", "QOS_SHORT"], allp
    assert [p["name"] for p in pd_profiles({"status": "INACTIVE"})] == ["QOS_OFF"]
    assert [p["name"] for p in pd_profiles({"status": "DEPRECATED"})] == ["QOS_OLD"]
    assert sorted(p["name"] for p in pd_profiles({"status": "ACTIVE"})) == ["QOS_L", "QOS_SHORT"]
    got = expect_status(PD.request("GET", QP + "/qos-profiles/QOS_OLD", token=PTOKEN), 200).json()
    assert got["status"] == "DEPRECATED", got


def test_create_with_inactive_or_deprecated_profile_422():
    for name in ("QOS_OFF", "QOS_OLD"):
        expect_camara_error(post_session(PD, PTOKEN, body(profile=name)), 422,
                            "QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE")


def test_duration_outside_the_profile_range_400():
    # QOS_SHORT: minDuration 10 Seconds, maxDuration 2 Minutes.
    for dur in (5, 9, 121, 86400):
        expect_camara_error(post_session(PD, PTOKEN, body(profile="QOS_SHORT", duration=dur)), 400,
                            "QUALITY_ON_DEMAND.DURATION_OUT_OF_RANGE")
    for dur in (10, 120):
        assert create_session(PD, PTOKEN, body(profile="QOS_SHORT", duration=dur))["duration"] == dur


def test_extend_capped_at_the_profile_max_duration():
    s = create_session(PD, PTOKEN, body(profile="QOS_SHORT", duration=100))
    wait_status(PD, PTOKEN, s["sessionId"], "AVAILABLE")
    e = expect_status(extend(PD, PTOKEN, s["sessionId"], 100), 200).json()
    assert e["duration"] == 120, e
    assert parse_time(e["expiresAt"]) - parse_time(e["startedAt"]) == 120, e


def test_restricted_profile_listed_only_with_a_matching_device():
    assert "QOS_VIP" not in [p["name"] for p in pd_profiles({})]
    assert pd_profiles({"name": "QOS_VIP"}) == []
    assert "QOS_VIP" not in [p["name"] for p in pd_profiles({"device": {"phoneNumber": new_phone()}})]
    lst = pd_profiles({"device": {"phoneNumber": VIP_PHONE}})
    assert sorted(p["name"] for p in lst) == ["QOS_L", "QOS_OFF", "QOS_OLD", "QOS_SHORT", "QOS_VIP"], lst
    assert [p["name"] for p in pd_profiles({"device": {"phoneNumber": VIP_PHONE}, "name": "QOS_VIP"})] == ["QOS_VIP"]


def test_restricted_profile_does_not_expose_its_device_list():
    lst = pd_profiles({"device": {"phoneNumber": VIP_PHONE}})
    vip = [p for p in lst if p["name"] == "QOS_VIP"]
    assert vip and "x-devices" not in vip[0], vip
    r = PD.request("POST", QP_RETRIEVE, body={"device": {"phoneNumber": VIP_PHONE}}, token=PTOKEN)
    assert VIP_PHONE.encode() not in r.body, "the profile lists its subscribers: %r" % r.body


def test_restricted_profile_session_only_for_its_devices():
    r = post_session(PD, PTOKEN, body(profile="QOS_VIP"))
    expect_error_in(r, 422, ("QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE", "SERVICE_NOT_APPLICABLE"))
    s = create_session(PD, PTOKEN, body(phone=VIP_PHONE, profile="QOS_VIP"))
    assert s["qosProfile"] == "QOS_VIP", s


def test_restricted_profile_with_3legged_tokens():
    vip_tok, _ = three_legged(PD, PAPP, "tel:" + VIP_PHONE)
    other_tok, _ = three_legged(PD, PAPP, "tel:" + new_phone())
    assert "QOS_VIP" in [p["name"] for p in pd_profiles({}, vip_tok)]
    assert "QOS_VIP" not in [p["name"] for p in pd_profiles({}, other_tok)]
    expect_status(PD.request("GET", QP + "/qos-profiles/QOS_VIP", token=vip_tok), 200)
    expect_camara_error(PD.request("GET", QP + "/qos-profiles/QOS_VIP", token=other_tok), 404, "NOT_FOUND")
    r = PD.request("POST", QP_RETRIEVE, body={"device": {"phoneNumber": VIP_PHONE}}, token=vip_tok)
    expect_camara_error(r, 422, "UNNECESSARY_IDENTIFIER")


# --------------------------------------------------------------------------------------------------------------
# 3-legged tokens (CIBA)


def test_openid_configuration_advertises_ciba():
    c = expect_status(D.request("GET", "/.well-known/openid-configuration"), 200).json()
    assert str(c.get("backchannel_authentication_endpoint", "")).endswith("/oauth2/bc-authorize"), c
    assert CIBA_GRANT in c.get("grant_types_supported", []), c
    assert "poll" in c.get("backchannel_token_delivery_modes_supported", []), c


def test_ciba_sandbox_token_subject_is_the_device():
    a = auth_req(D, APP, "tel:+99999991000")
    r = expect_status(ciba_token(D, APP, a["auth_req_id"]), 200)
    b = r.json()
    assert b.get("token_type", "").lower() == "bearer", b
    assert isinstance(b.get("expires_in"), int) and b["expires_in"] > 0, b
    got = set(scope_list(b.get("scope")))
    assert {S_CREATE, S_READ} <= got, "token scope %r lacks the requested scopes" % b.get("scope")
    _, claims = jwt_parts(b["access_token"])
    assert claims.get("sub") == "tel:+99999991000", claims
    assert "device" in claims and "+99999991000" in json.dumps(claims["device"]), claims
    assert claims.get("client_id") == APP["client_id"], claims


def test_3legged_session_lifecycle():
    tok, _ = three_legged(D, APP, "tel:+99999991000")
    expect_camara_error(post_session(D, tok, body(phone="+99999991000")), 422, "UNNECESSARY_IDENTIFIER")
    expect_camara_error(post_session(D, tok, body(phone=new_phone())), 422, "UNNECESSARY_IDENTIFIER")
    r = expect_status(post_session(D, tok, body(device=NODEV, sink=RECV.url("/3l"))), 201)
    s = r.json()
    assert "device" not in s, "device echoed for a 3-legged session: %r" % s
    sid = s["sessionId"]
    g = wait_status(D, tok, sid, "AVAILABLE")
    assert "device" not in g, g
    (hook, _), = wait_events(RECV, sid, 1)
    check_event(hook, APP["webhook_secret"], sid, "AVAILABLE")
    # The session is the token's device: a second one conflicts, whichever token asks.
    expect_camara_error(post_session(D, tok, body(device=NODEV)), 409, "CONFLICT")
    expect_camara_error(post_session(D, TOKEN, body(phone="+99999991000")), 409, "CONFLICT")
    lst = expect_status(retrieve(D, tok, {}), 200).json()
    assert [x["sessionId"] for x in lst] == [sid], lst
    expect_camara_error(retrieve(D, tok, {"device": {"phoneNumber": "+99999991000"}}), 422, "UNNECESSARY_IDENTIFIER")
    lst = expect_status(retrieve(D, TOKEN, {"device": {"phoneNumber": "+99999991000"}}), 200).json()
    assert [x["sessionId"] for x in lst] == [sid], lst
    e = expect_status(extend(D, tok, sid, 10), 200).json()
    assert e["duration"] == 70, e
    expect_status(delete_session(D, tok, sid), 204)
    evs = wait_events(RECV, sid, 2)
    check_event(evs[1][0], APP["webhook_secret"], sid, "UNAVAILABLE", "DELETE_REQUESTED")


def test_3legged_token_of_another_device_cannot_use_the_session():
    phone_a, phone_b = new_phone(), new_phone()
    tok_a, _ = three_legged(D, APP, "tel:" + phone_a)
    tok_b, _ = three_legged(D, APP, "tel:" + phone_b)
    sid = create_session(D, tok_a, body(device=NODEV))["sessionId"]
    # The spec: "the end user (and device) associated with the session must also be associated with the access
    # token". Which error is not pinned down: 403 PERMISSION_DENIED or 404 NOT_FOUND are both accepted.
    wait_status(D, tok_a, sid, "AVAILABLE")
    problems = []
    for label, r in (("GET", D.request("GET", spath(sid), token=tok_b)), ("extend", extend(D, tok_b, sid, 5)),
                     ("DELETE", delete_session(D, tok_b, sid))):
        if r.status not in (403, 404):
            problems.append("%s with device B's token → %d %s" % (label, r.status, r.text[:160]))
    lst = expect_status(retrieve(D, tok_b, {}), 200).json()
    if lst:
        problems.append("retrieve-sessions with device B's token lists %r" % [x["sessionId"] for x in lst])
    assert not problems, "another device's 3-legged token used device A's session:\n" + "\n".join(problems)


def test_ciba_ipv4_login_hint():
    tok, b = three_legged(D, APP, "ipv4:203.0.113.5")
    _, claims = jwt_parts(tok)
    assert "203.0.113.5" in json.dumps(claims.get("device")) and "203.0.113.5" in claims.get("sub", ""), claims
    s = create_session(D, tok, body(device=NODEV))
    assert "device" not in s, s


def test_ciba_auth_req_id_is_single_use_and_bound_to_its_client():
    rid = auth_req(D, APP, "tel:" + new_phone())["auth_req_id"]
    expect_oauth_error(ciba_token(D, OTHER, rid), 400, "invalid_grant")
    expect_status(ciba_token(D, APP, rid), 200)
    expect_oauth_error(ciba_token(D, APP, rid), 400, "invalid_grant")
    expect_oauth_error(ciba_token(D, APP, "no-such-" + uuid.uuid4().hex), 400, "invalid_grant")
    r = D.request("POST", "/oauth2/token", form={"grant_type": CIBA_GRANT}, auth=(APP["client_id"],
                                                                                  APP["client_secret"]))
    expect_oauth_error(r, 400, "invalid_request")


def test_ciba_bad_authorize_requests():
    hint = "tel:" + new_phone()
    expect_oauth_error(bc_authorize(D, APP, hint, auth=False), 401, "invalid_client")
    expect_oauth_error(bc_authorize(D, dict(APP, client_secret="wrong"), hint), 401, "invalid_client")
    expect_oauth_error(bc_authorize(D, APP, None), 400, "invalid_request")
    limited, _ = new_app(D, "limited", scopes="qos-profiles:read")
    expect_oauth_error(bc_authorize(D, limited, hint, scope="openid " + S_CREATE), 400, "invalid_scope")
    problems = []
    for bad in ("+15551234567", "tel:15551234567", "tel:", "ipv4:300.1.1.1", "mail:a@b.c"):
        r = bc_authorize(D, APP, bad)
        if r.status != 400 or r.json().get("error") not in ("invalid_request", "unknown_user_id"):
            problems.append("login_hint %r → %d %s" % (bad, r.status, r.text[:120]))
    assert not problems, "\n".join(problems)


def test_ciba_authorize_without_openid_scope_400():
    # CIBA Core 7.1: "a CIBA authentication request MUST contain the openid scope value".
    r = bc_authorize(D, APP, "tel:" + new_phone(), scope=S_CREATE + " " + S_READ)
    assert r.status == 400 and r.json().get("error") in ("invalid_request", "invalid_scope"), r


def test_ciba_live_unknown_device_unknown_user_id():
    expect_oauth_error(bc_authorize(D, LIVE, "tel:" + new_phone()), 400, "unknown_user_id")


def test_ciba_responses_are_not_cacheable():
    # RFC 6749 5.1 / CIBA 7.3: Cache-Control: no-store, sent once.
    r = expect_status(bc_authorize(D, APP, "tel:" + new_phone()), 200)
    t = expect_status(ciba_token(D, APP, r.json()["auth_req_id"]), 200)
    for label, resp in (("bc-authorize", r), ("token", t)):
        cc = [v for k, v in resp.header_list if k.lower() == "cache-control"]
        assert cc == ["no-store"], "%s Cache-Control headers: %r" % (label, cc)


def test_ciba_auto_approve_for_registered_live_devices():
    d = Daemon(args=daemon_args(["--ciba-auto-approve"]))
    with d:
        live, _ = new_app(d, "live-auto", env="live")
        phone = new_phone()
        add_device(d, phone, "--cell", new_cell())
        rid = auth_req(d, live, "tel:" + phone)["auth_req_id"]
        r = expect_status(ciba_token(d, live, rid), 200)
        _, claims = jwt_parts(r.json()["access_token"])
        assert claims.get("sub") == "tel:" + phone, claims
        expect_oauth_error(bc_authorize(d, live, "tel:" + new_phone()), 400, "unknown_user_id")


# --------------------------------------------------------------------------------------------------------------
# Slow scenarios started in setup_module


def test_duration_expired_after_duration_of_availability():
    res = BG["expiry"].result()
    seen, final = res["seen"], res["final"]
    assert "AVAILABLE" in seen and "UNAVAILABLE" in seen, "statuses seen: %r" % sorted(seen)
    took = seen["UNAVAILABLE"] - seen["AVAILABLE"]
    assert 1.0 <= took <= 2 + scaled(1), "UNAVAILABLE %.2f s after AVAILABLE (duration 2)" % took
    assert final["statusInfo"] == "DURATION_EXPIRED", final
    assert final["duration"] == 2, final
    assert parse_time(final["expiresAt"]) - parse_time(final["startedAt"]) == 2, final
    sid = res["created"]["sessionId"]
    evs = res["events"]
    assert len(evs) == 2, evs
    check_event(evs[0][0], APP["webhook_secret"], sid, "AVAILABLE")
    check_event(evs[1][0], APP["webhook_secret"], sid, "UNAVAILABLE", "DURATION_EXPIRED")


def test_expired_session_extend_409_delete_204_without_notification():
    res = BG["expiry"].result()
    sid = res["created"]["sessionId"]
    expect_camara_error(extend(D, TOKEN, sid, 10), 409, "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED")
    expect_status(delete_session(D, TOKEN, sid), 204)
    no_more_events(RECV, sid, 2, 0.6)


def test_network_terminated_5s_after_available():
    res = BG["1002"].result()
    seen, final = res["seen"], res["final"]
    assert "AVAILABLE" in seen and "UNAVAILABLE" in seen, "statuses seen: %r" % sorted(seen)
    took = seen["UNAVAILABLE"] - seen["AVAILABLE"]
    assert 4.0 <= took <= 5 + scaled(1), "UNAVAILABLE %.2f s after AVAILABLE (expected 5)" % took
    assert final["statusInfo"] == "NETWORK_TERMINATED", final
    sid = res["created"]["sessionId"]
    evs = res["events"]
    assert len(evs) == 2, evs
    check_event(evs[0][0], APP["webhook_secret"], sid, "AVAILABLE")
    check_event(evs[1][0], APP["webhook_secret"], sid, "UNAVAILABLE", "NETWORK_TERMINATED")


def test_network_terminated_session_reports_effective_duration():
    final = BG["1002"].result()["final"]
    started, ended = parse_time(final["startedAt"]), parse_time(final["expiresAt"])
    assert 4 <= ended - started <= 6, "expiresAt %s is not the termination time (started %s)" \
        % (final["expiresAt"], final["startedAt"])
    assert 4 <= final["duration"] <= 6, "duration %r is not the effective duration (~5 s)" % final["duration"]


def test_no_notification_after_sink_token_expiry():
    res = BG["tokexp"].result()
    sid = res["created"]["sessionId"]
    assert res["final"]["qosStatus"] == "UNAVAILABLE" and res["final"]["statusInfo"] == "DURATION_EXPIRED", \
        res["final"]
    evs = res["events"]
    assert len(evs) == 1, "expected only the AVAILABLE notification (token expired before the end): %r" \
        % [e for _, e in evs]
    check_event(evs[0][0], APP["webhook_secret"], sid, "AVAILABLE", bearer=res["cred"]["accessToken"])


def test_extend_moves_the_expiry_timer():
    res = BG["extend"].result()
    r, seen, final = res["extend"], res["seen"], res["final"]
    expect_status(r, 200)
    e = r.json()
    assert e["duration"] == 5 and parse_time(e["expiresAt"]) - parse_time(e["startedAt"]) == 5, e
    assert "AVAILABLE" in seen and "UNAVAILABLE" in seen, sorted(seen)
    took = seen["UNAVAILABLE"] - seen["AVAILABLE"]
    assert 4.0 <= took <= 5 + scaled(1.5), "ended %.2f s after AVAILABLE; extended to 5 s" % took
    assert final["statusInfo"] == "DURATION_EXPIRED" and final["duration"] == 5, final


def test_ciba_live_pending_then_slow_down():
    res = BG["ciba_live"].result()
    expect_status(res["authorize"], 200)
    expect_oauth_error(res["poll1"], 400, "authorization_pending")
    expect_oauth_error(res["poll2"], 400, "slow_down")


def test_ciba_live_approved_by_qodctl_then_single_use():
    res = BG["ciba_live"].result()
    expect_status(res["authorize"], 200)
    p = res["approve"]
    assert p.returncode == 0, "qodctl consent approve failed: %s %s" % (p.stdout, p.stderr)
    r = expect_status(res["poll3"], 200)
    _, claims = jwt_parts(r.json()["access_token"])
    assert claims.get("sub") == "tel:" + res["phone"], claims
    expect_oauth_error(res["poll4"], 400, "invalid_grant")


def test_ciba_live_token_creates_session_for_its_device():
    res = BG["ciba_live"].result()
    assert "create" in res, "no token: %r" % res.get("poll3")
    r = expect_status(res["create"], 201)
    assert "device" not in r.json(), r.json()
    expect_camara_error(res["create_dev"], 422, "UNNECESSARY_IDENTIFIER")


def test_ciba_expired_token():
    res = BG["ciba_expiry"].result()
    expect_status(res["authorize"], 200)
    if "poll" not in res:
        skip("requested_expiry=1 not honoured (expires_in %r): expiry cannot be reached within the test"
             % res.get("expires_in"))
    expect_oauth_error(res["poll"], 400, "expired_token")


if __name__ == "__main__":
    run(globals())
