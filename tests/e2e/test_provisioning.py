"""CAMARA QoS Provisioning 0.3.0 (/qos-provisioning/v0.3), written from the spec in shared/reference/camara
(qos-provisioning-v0.3.0.yaml, descriptions as well as schemas) and issue 11.

Black-box: every test talks to a real build/qodd over HTTP or the admin socket (qodctl).
Shared daemons (setup_module):
- D: `--sandbox-delay-ms 200`, `--sim-cell-capacity 20000`, `--profiles FILE` with the three usual profiles plus one
  marked `"x-provisionable": false`, one explicitly provisionable, an INACTIVE and a DEPRECATED one and one restricted
  to one phone number (`x-devices`). Sandbox apps APP and OTHER, a live app LIVE. The slow scenarios (+99999991002,
  "an assignment never expires") run in background threads from the start; their tests at the end judge the results.
- R: the default catalogue, `--sim-cell-capacity 20000` (one QOS_S, 15 Mbit/s guaranteed, fits in a cell; two do
  not): the cell-capacity enforcement, then restarts (SIGTERM and SIGKILL) with assignments in every status.
Notifications go to local receivers that answer 204: plain http on loopback for sandbox apps, https with a throw-away
self-signed certificate (trusted with --callback-ca, loopback allowed with --callback-allow) for live apps. Every
notification is checked as a structured-mode CloudEvent and with verify_standard_webhook under the app's secret.
Every test uses its own random phone numbers; a sandbox-table number is used by one test only per daemon (one active
session or assignment per device).

The rule for sessions and assignments (issue 11): a device has at most one active item, session (v0 or v1) or
assignment; creating either while the other is active answers 409 CONFLICT.
"""
import os
import shutil
import sys
import threading
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

BASE = "/qos-provisioning/v0.3"
ASSIGNMENTS = BASE + "/qos-assignments"
RETRIEVE = BASE + "/retrieve-qos-assignment"
V1_SESSIONS = "/quality-on-demand/v1/sessions"
V1_RETRIEVE = "/quality-on-demand/v1/retrieve-sessions"
V0_SESSIONS = "/camara/qod/v0/sessions"
CE_TYPE = "org.camaraproject.qos-provisioning.v0.status-changed"
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
P_CREATE = "qos-provisioning:qos-assignments:create"
P_READ = "qos-provisioning:qos-assignments:read"
P_DELETE = "qos-provisioning:qos-assignments:delete"
P_BY_DEVICE = "qos-provisioning:qos-assignments:read-by-device"
P_SCOPES = [P_CREATE, P_READ, P_DELETE, P_BY_DEVICE]
V1_SCOPES = ["quality-on-demand:sessions:create", "quality-on-demand:sessions:read",
             "quality-on-demand:sessions:update", "quality-on-demand:sessions:delete",
             "quality-on-demand:sessions:retrieve-by-device", "qos-profiles:read"]
CIBA_SCOPE = "openid " + " ".join(P_SCOPES)
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
INFO_KEYS = {"assignmentId", "qosProfile", "device", "sink", "status", "startedAt", "statusInfo"}

D = R = None
RECV = RECV_TLS = None
TMP = None
APP = OTHER = LIVE = RAPP = RLIVE = None
TOKEN = OTHER_TOKEN = LIVE_TOKEN = RTOKEN = RLIVE_TOKEN = None
VIP_PHONE = None
BG = {}

# --------------------------------------------------------------------------------------------------------------
# Helpers


NODEV = object()


def abody(phone=None, device=None, profile="QOS_L", sink=None, cred=None, **extra):
    """A valid CreateAssignment (a fresh phone unless device/phone is given; device=NODEV leaves it out)."""
    b = {"qosProfile": profile}
    if device is not NODEV:
        b["device"] = device if device is not None else {"phoneNumber": phone or new_phone()}
    if sink is not None:
        b["sink"] = sink
    if cred is not None:
        b["sinkCredential"] = cred
    b.update(extra)
    return b


def iso_utc(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (int(t * 1000) % 1000)


def cred(token=None, expires=None, kind="ACCESSTOKEN", token_type="bearer"):
    return {"credentialType": kind, "accessToken": token or ("sinktok-" + uuid.uuid4().hex),
            "accessTokenExpiresUtc": iso_utc(expires if expires is not None else time.time() + 3600),
            "accessTokenType": token_type}


def apath(aid):
    return ASSIGNMENTS + "/" + aid


def post_assignment(d, tok, b, headers=None):
    return d.request("POST", ASSIGNMENTS, body=b, token=tok, headers=headers)


def create_assignment(d, tok, b=None):
    """POST /qos-assignments that must answer 201; returns the AssignmentInfo."""
    r = post_assignment(d, tok, b if b is not None else abody())
    expect_status(r, 201)
    return r.json()


def get_raw(d, tok, aid):
    return d.request("GET", apath(aid), token=tok)


def get_assignment(d, tok, aid):
    return expect_status(get_raw(d, tok, aid), 200).json()


def revoke(d, tok, aid):
    return d.request("DELETE", apath(aid), token=tok)


def retrieve(d, tok, b):
    return d.request("POST", RETRIEVE, body=b, token=tok)


def v1_session(d, tok, phone, profile="QOS_L", duration=60):
    return d.request("POST", V1_SESSIONS, token=tok,
                     body={"device": {"phoneNumber": phone}, "applicationServer": {"ipv4Address": "198.51.100.0/24"},
                           "qosProfile": profile, "duration": duration})


def v0_session(d, tok, phone, sink):
    return d.request("POST", V0_SESSIONS, token=tok,
                     body={"device": {"phoneNumber": phone}, "qosProfile": "QOS_L", "duration": 60,
                           "webhook": {"notificationUrl": sink}})


def wait_status(d, tok, aid, want, timeout=3):
    """Polls GET until status == want; returns the assignment."""
    last = {}

    def pred():
        a = get_assignment(d, tok, aid)
        last["a"] = a
        return a if a.get("status") == want else None
    try:
        return wait_until(pred, timeout=timeout, interval=0.02, what="assignment %s to become %s" % (aid, want))
    except AssertionError as e:
        raise AssertionError("%s; last seen: %r" % (e, last.get("a"))) from None


def track(d, tok, aid, until, timeout, interval=0.03):
    """Polls GET until status is one of `until`; returns {status: monotonic time first seen}."""
    seen = {}

    def pred():
        st = get_assignment(d, tok, aid)["status"]
        seen.setdefault(st, time.monotonic())
        return st in until
    try:
        wait_until(pred, timeout=timeout, interval=interval, what="assignment %s to reach %s" % (aid, until))
    except AssertionError as e:
        raise AssertionError("%s; statuses seen: %r" % (e, sorted(seen))) from None
    return seen


def expect_error_in(resp, status, codes):
    b = expect_camara_error(resp, status)
    assert b.get("code") in codes, "code %r not in %r: %r" % (b.get("code"), codes, b)
    return b


def check_info(a, profile=None, device=None, sink=None, status=None):
    """An AssignmentInfo: only the schema's members, never sinkCredential; device only when given."""
    assert isinstance(a, dict), a
    assert set(a) <= INFO_KEYS, "members outside AssignmentInfo: %r" % sorted(set(a) - INFO_KEYS)
    assert UUID_RE.match(a.get("assignmentId", "")), a
    assert a.get("status") in ("REQUESTED", "AVAILABLE", "UNAVAILABLE"), a
    if profile is not None:
        assert a.get("qosProfile") == profile, a
    if device is NODEV:
        assert "device" not in a, "device echoed though the token identifies it: %r" % a
    elif device is not None:
        assert a.get("device") == device, a
    if sink is NODEV:
        assert "sink" not in a, a
    elif sink is not None:
        assert a.get("sink") == sink, a
    if status is not None:
        assert a["status"] == status, a
    if a["status"] == "REQUESTED":
        assert "startedAt" not in a and "statusInfo" not in a, "REQUESTED with times or statusInfo: %r" % a
    if a["status"] == "AVAILABLE":
        parse_time(a.get("startedAt"))
        assert "statusInfo" not in a, a
    if "statusInfo" in a:
        assert a["status"] == "UNAVAILABLE" and a["statusInfo"] in ("NETWORK_TERMINATED", "DELETE_REQUESTED"), a
    return a


def daemon_args(extra=()):
    return ["--sandbox-delay-ms", "200", "--token-rate-client", "0", "--token-rate-ip", "0",
            "--sim-cell-capacity", "20000", "--callback-ca", os.path.join(TMP, "cert.pem"),
            "--callback-allow", "127.0.0.1/32"] + list(extra)


# -- notifications --

def events_for(recv, aid):
    """[(hook, event)] of assignment aid, in arrival order."""
    out = []
    for h in list(recv.requests):
        ev = event_of(h)
        if ev and isinstance(ev.get("data"), dict) and ev["data"].get("assignmentId") == aid:
            out.append((h, ev))
    return out


def wait_events(recv, aid, n, timeout=5):
    what = "%d notification(s) for assignment %s" % (n, aid)
    recv.wait_until(lambda hs: len(events_for(recv, aid)) >= n, timeout=timeout, what=what)
    return events_for(recv, aid)


def no_more_events(recv, aid, n, period=0.8):
    time.sleep(period)
    evs = events_for(recv, aid)
    assert len(evs) == n, "expected %d notification(s) for %s, got %d: %r" % (n, aid, len(evs), [e for _, e in evs])


def check_event(hook, secret, aid, status, info=None, bearer=None):
    """One notification: CloudEvents 1.0 structured mode, Standard Webhooks signature, Authorization, data."""
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
    assert hook.time - 120 <= t <= hook.time + 2, "event time %s is not when it happened" % ev["time"]
    data = ev["data"]
    assert isinstance(data, dict) and set(data) <= {"assignmentId", "status", "statusInfo"}, data
    assert data.get("assignmentId") == aid, data
    assert data.get("status") == status, "expected %s/%s, got %r" % (status, info, data)
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


# -- CIBA (sandbox apps: approved at once) --

def three_legged(d, app, hint, scope=CIBA_SCOPE):
    r = d.request("POST", "/oauth2/bc-authorize", form={"login_hint": hint, "scope": scope},
                  auth=(app["client_id"], app["client_secret"]))
    expect_status(r, 200)
    rid = r.json()["auth_req_id"]
    t = d.request("POST", "/oauth2/token", form={"grant_type": CIBA_GRANT, "auth_req_id": rid},
                  auth=(app["client_id"], app["client_secret"]))
    assert t.status == 200, "CIBA token exchange for a sandbox app: %r" % t
    return t.json()["access_token"]


# --------------------------------------------------------------------------------------------------------------
# Background scenarios on D, judged at the end of the file


class Background:
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


def scenario_terminated():
    """+99999991002: AVAILABLE, then UNAVAILABLE/NETWORK_TERMINATED 5 s later; then DELETE and retrieve."""
    c = cred()
    a = create_assignment(D, TOKEN, abody(phone="+99999991002", sink=RECV.url("/1002"), cred=c))
    seen = track(D, TOKEN, a["assignmentId"], ("UNAVAILABLE",), timeout=12, interval=0.05)
    final = get_assignment(D, TOKEN, a["assignmentId"])
    evs = wait_events(RECV, a["assignmentId"], 2, timeout=3)
    out = {"created": a, "cred": c, "seen": seen, "final": final, "events": evs}
    out["delete"] = revoke(D, TOKEN, a["assignmentId"])
    time.sleep(0.6)
    out["events_after_delete"] = events_for(RECV, a["assignmentId"])
    out["after_delete"] = get_assignment(D, TOKEN, a["assignmentId"])
    return out


def scenario_no_expiry():
    """An assignment has no duration: still AVAILABLE 3 s after it became available, one notification only."""
    a = create_assignment(D, TOKEN, abody(sink=RECV.url("/noexpiry")))
    t0 = time.monotonic()
    avail = wait_status(D, TOKEN, a["assignmentId"], "AVAILABLE")
    time.sleep(max(0.0, 3.2 - (time.monotonic() - t0)))
    later = get_assignment(D, TOKEN, a["assignmentId"])
    return {"created": a, "available": avail, "later": later, "events": events_for(RECV, a["assignmentId"])}


# --------------------------------------------------------------------------------------------------------------
# Module set-up


def catalogue():
    def prof(name, status="ACTIVE", mbps=5, **kw):
        p = {"name": name, "description": name + " profile", "status": status,
             "targetMinDownstreamRate": {"value": mbps, "unit": "Mbps"},
             "maxDownstreamRate": {"value": mbps * 4, "unit": "Mbps"},
             "minDuration": {"value": 1, "unit": "Seconds"}, "maxDuration": {"value": 86400, "unit": "Seconds"},
             "priority": 30, "packetDelayBudget": {"value": 100, "unit": "Milliseconds"}, "packetErrorLossRate": 4}
        p.update(kw)
        return p
    return [prof("QOS_L", mbps=5), prof("QOS_M", mbps=8), prof("QOS_S", mbps=15),
            prof("QOS_SESSIONS_ONLY", **{"x-provisionable": False}),
            prof("QOS_PROV_OK", **{"x-provisionable": True}),
            prof("QOS_OFF", "INACTIVE"), prof("QOS_OLD", "DEPRECATED"),
            prof("QOS_VIP", **{"x-devices": [VIP_PHONE]})]


def setup_module():
    global D, R, RECV, RECV_TLS, TMP, APP, OTHER, LIVE, RAPP, RLIVE, TOKEN, OTHER_TOKEN, LIVE_TOKEN, RTOKEN
    global RLIVE_TOKEN, VIP_PHONE
    RECV = WebhookReceiver(default=(204, {}, b""))
    TMP = tempfile.mkdtemp(prefix="qod-e2e-prov-")
    cert, key = make_tls_cert(TMP)
    RECV_TLS = WebhookReceiver(certfile=cert, keyfile=key, default=(204, {}, b""))
    VIP_PHONE = new_phone()
    path = os.path.join(TMP, "profiles.json")
    with open(path, "w") as f:
        json.dump(catalogue(), f)
    D = Daemon(args=daemon_args(["--profiles", path]))
    APP, TOKEN = new_app(D, "shared")
    OTHER, OTHER_TOKEN = new_app(D, "other")
    LIVE, LIVE_TOKEN = new_app(D, "live", env="live")
    BG["1002"] = Background(scenario_terminated)
    BG["noexpiry"] = Background(scenario_no_expiry)
    R = Daemon(args=daemon_args())
    RAPP, RTOKEN = new_app(R, "restart")
    RLIVE, RLIVE_TOKEN = new_app(R, "restart-live", env="live")


def teardown_module():
    for b in BG.values():
        b.thread.join(scaled(30))
    R.close()
    D.close()
    RECV.close()
    RECV_TLS.close()
    shutil.rmtree(TMP, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Authentication and scopes


def test_no_token_401_on_every_operation():
    aid = str(uuid.uuid4())
    calls = [("POST", ASSIGNMENTS, abody()), ("GET", apath(aid), None), ("DELETE", apath(aid), None),
             ("POST", RETRIEVE, {"device": {"phoneNumber": new_phone()}})]
    for method, path, b in calls:
        expect_camara_error(D.request(method, path, body=b), 401, "UNAUTHENTICATED")
        expect_camara_error(D.request(method, path, body=b, token="not.a.jwt"), 401, "UNAUTHENTICATED")


def test_each_operation_needs_its_own_scope():
    def tok(scopes):
        return get_token(D, APP, " ".join(scopes))

    def all_but(scope):
        return tok([s for s in P_SCOPES if s != scope] + V1_SCOPES + ["qod"])
    phone = new_phone()
    a = create_assignment(D, TOKEN, abody(phone=phone))
    aid = a["assignmentId"]
    wait_status(D, TOKEN, aid, "AVAILABLE")
    expect_camara_error(post_assignment(D, all_but(P_CREATE), abody()), 403, "PERMISSION_DENIED")
    expect_camara_error(get_raw(D, all_but(P_READ), aid), 403, "PERMISSION_DENIED")
    expect_camara_error(retrieve(D, all_but(P_BY_DEVICE), {"device": {"phoneNumber": phone}}), 403,
                        "PERMISSION_DENIED")
    expect_camara_error(revoke(D, all_but(P_DELETE), aid), 403, "PERMISSION_DENIED")
    # QoD scopes open nothing of provisioning.
    qod = tok(V1_SCOPES + ["qod"])
    expect_camara_error(post_assignment(D, qod, abody()), 403, "PERMISSION_DENIED")
    expect_camara_error(get_raw(D, qod, aid), 403, "PERMISSION_DENIED")
    # Untouched by the refused calls.
    assert get_assignment(D, TOKEN, aid)["status"] == "AVAILABLE"
    # Exactly the operation's scope is enough.
    expect_status(get_raw(D, tok([P_READ]), aid), 200)
    r = expect_status(retrieve(D, tok([P_BY_DEVICE]), {"device": {"phoneNumber": phone}}), 200)
    assert r.json()["assignmentId"] == aid, r.json()
    expect_status(revoke(D, tok([P_DELETE]), aid), 204)
    expect_status(post_assignment(D, tok([P_CREATE]), abody()), 201)


# --------------------------------------------------------------------------------------------------------------
# POST /qos-assignments


def test_create_201_assignment_info_requested_with_location():
    phone = new_phone()
    sink = RECV.url("/create")
    r = expect_status(post_assignment(D, TOKEN, abody(phone=phone, profile="QOS_M", sink=sink, cred=cred())), 201)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    a = check_info(r.json(), profile="QOS_M", device={"phoneNumber": phone}, sink=sink, status="REQUESTED")
    loc = r.headers.get("location", "")
    assert loc.endswith(ASSIGNMENTS + "/" + a["assignmentId"]), "Location %r" % loc
    for k in ("startedAt", "statusInfo", "sinkCredential", "duration", "expiresAt", "sessionId", "qosStatus"):
        assert k not in a, "%s in a REQUESTED AssignmentInfo: %r" % (k, a)


def test_becomes_available_after_the_delay_with_started_at():
    t0 = time.time()
    a = create_assignment(D, TOKEN)
    g = wait_status(D, TOKEN, a["assignmentId"], "AVAILABLE")
    t1 = time.time()
    check_info(g, status="AVAILABLE")
    started = parse_time(g["startedAt"])
    assert t0 - 1 <= started <= t1 + 1, "startedAt %s is not when it became AVAILABLE" % g["startedAt"]
    same = {k: v for k, v in g.items() if k not in ("status", "startedAt")}
    assert same == {k: v for k, v in a.items() if k != "status"}, "GET differs from create:\n%r\n%r" % (g, a)


def test_create_without_sink_omits_it_and_sends_nothing():
    before = RECV.count()
    a = create_assignment(D, TOKEN)
    assert "sink" not in a and "sinkCredential" not in a, a
    wait_status(D, TOKEN, a["assignmentId"], "AVAILABLE")
    expect_status(revoke(D, TOKEN, a["assignmentId"]), 204)
    time.sleep(0.4)
    assert not events_for(RECV, a["assignmentId"]), "notified without a sink"
    assert RECV.count() >= before


def test_x_correlator_echoed_on_success_and_error():
    r = expect_status(post_assignment(D, TOKEN, abody(), headers={"x-correlator": "prov-test:1"}), 201)
    assert r.headers.get("x-correlator") == "prov-test:1", r.headers
    r = post_assignment(D, TOKEN, {"device": {"phoneNumber": new_phone()}}, headers={"x-correlator": "prov-test:2"})
    expect_camara_error(r, 400, "INVALID_ARGUMENT")
    assert r.headers.get("x-correlator") == "prov-test:2", r.headers


def test_create_missing_or_invalid_profile_400():
    problems = []
    for b in ({"device": {"phoneNumber": new_phone()}}, abody(profile="ab"), abody(profile="bad name!"),
              abody(profile=5), abody(profile=""), abody(profile=None), abody(profile=["QOS_L"])):
        r = post_assignment(D, TOKEN, b)
        if r.status != 400 or r.json().get("code") != "INVALID_ARGUMENT":
            problems.append("%r → %d %s" % (b.get("qosProfile", "<missing>"), r.status, r.text[:160]))
    for raw in (b"", b"{", b"[]", b"null", b'"x"'):
        r = D.request("POST", ASSIGNMENTS, raw=raw, token=TOKEN, headers={"Content-Type": "application/json"})
        if r.status != 400 or r.json().get("code") != "INVALID_ARGUMENT":
            problems.append("body %r → %d %s" % (raw, r.status, r.text[:160]))
    assert not problems, "expected 400 INVALID_ARGUMENT:\n" + "\n".join(problems)


def test_create_unknown_profile_400_invalid_argument():
    for name in ("QOS_XL", "qos_l", "QOS_UNKNOWN"):
        expect_camara_error(post_assignment(D, TOKEN, abody(profile=name)), 400, "INVALID_ARGUMENT")


def test_not_provisionable_profile_422_but_usable_for_sessions():
    phone = new_phone()
    expect_camara_error(post_assignment(D, TOKEN, abody(phone=phone, profile="QOS_SESSIONS_ONLY")), 422,
                        "QOS_PROVISIONING.QOS_PROFILE_NOT_APPLICABLE")
    # The refusal created nothing: the device is free, and the profile still serves QoD sessions.
    expect_camara_error(retrieve(D, TOKEN, {"device": {"phoneNumber": phone}}), 404, "NOT_FOUND")
    expect_status(v1_session(D, TOKEN, phone, profile="QOS_SESSIONS_ONLY"), 201)
    a = create_assignment(D, TOKEN, abody(profile="QOS_PROV_OK"))
    assert a["qosProfile"] == "QOS_PROV_OK", a


def test_inactive_or_deprecated_profile_422():
    for name in ("QOS_OFF", "QOS_OLD"):
        expect_camara_error(post_assignment(D, TOKEN, abody(profile=name)), 422,
                            "QOS_PROVISIONING.QOS_PROFILE_NOT_APPLICABLE")


def test_device_restricted_profile_only_for_its_devices():
    expect_camara_error(post_assignment(D, TOKEN, abody(profile="QOS_VIP")), 422,
                        "QOS_PROVISIONING.QOS_PROFILE_NOT_APPLICABLE")
    expect_camara_error(post_assignment(D, TOKEN, abody(profile="QOS_VIP", device={"ipv4Address": {
        "publicAddress": new_ipv4(), "publicPort": 1234}})), 422, "QOS_PROVISIONING.QOS_PROFILE_NOT_APPLICABLE")
    a = create_assignment(D, TOKEN, abody(phone=VIP_PHONE, profile="QOS_VIP"))
    assert a["qosProfile"] == "QOS_VIP", a


def test_create_2legged_without_device_422_missing_identifier():
    expect_camara_error(post_assignment(D, TOKEN, abody(device=NODEV)), 422, "MISSING_IDENTIFIER")


def test_create_network_access_identifier_only_422_unsupported_identifier():
    r = post_assignment(D, TOKEN, abody(device={"networkAccessIdentifier": new_nai()}))
    expect_camara_error(r, 422, "UNSUPPORTED_IDENTIFIER")


def test_create_empty_or_schema_invalid_device_400():
    bad = [{}, [], "+15551234567", {"phoneNumber": "15551234567"}, {"phoneNumber": "+1 555 123 4567"},
           {"phoneNumber": 15551234567}, {"ipv4Address": {"publicAddress": "203.0.113.5"}},
           {"ipv4Address": {"publicAddress": "203.0.113.256", "publicPort": 1}}, {"ipv4Address": "203.0.113.5"},
           {"ipv6Address": "2001:db8::g"}, {"networkAccessIdentifier": 5}]
    problems = []
    for dev in bad:
        r = post_assignment(D, TOKEN, abody(device=dev))
        if r.status != 400 or r.json().get("code") != "INVALID_ARGUMENT":
            problems.append("device %r → %d %s" % (dev, r.status, r.text[:160]))
    assert not problems, "expected 400 INVALID_ARGUMENT:\n" + "\n".join(problems)


def test_create_several_identifiers_echoes_one():
    phone = new_phone()
    dev = {"phoneNumber": phone, "ipv4Address": {"publicAddress": new_ipv4(), "publicPort": 1234},
           "ipv6Address": new_ipv6(), "networkAccessIdentifier": new_nai()}
    a = create_assignment(D, TOKEN, abody(device=dev))
    assert a["device"] == {"phoneNumber": phone}, a
    assert get_assignment(D, TOKEN, a["assignmentId"])["device"] == {"phoneNumber": phone}
    expect_camara_error(post_assignment(D, TOKEN, abody(phone=phone)), 409, "CONFLICT")
    v4 = {"publicAddress": new_ipv4(), "privateAddress": new_ipv4()}
    a = create_assignment(D, TOKEN, abody(device={"ipv4Address": v4, "ipv6Address": new_ipv6()}))
    assert a["device"] == {"ipv4Address": v4}, a
    r = expect_status(retrieve(D, TOKEN, {"device": {"ipv4Address": v4}}), 200).json()
    assert r["assignmentId"] == a["assignmentId"], r
    v6 = new_ipv6()
    a = create_assignment(D, TOKEN, abody(device={"ipv6Address": v6}))
    assert a["device"] == {"ipv6Address": v6}, a


def test_create_sandbox_table_404_and_422():
    expect_camara_error(post_assignment(D, TOKEN, abody(phone="+99999990404")), 404, "IDENTIFIER_NOT_FOUND")
    expect_camara_error(post_assignment(D, TOKEN, abody(phone="+99999990422")), 422, "SERVICE_NOT_APPLICABLE")


def test_create_live_unregistered_404_and_ineligible_422():
    expect_camara_error(post_assignment(D, LIVE_TOKEN, abody()), 404, "IDENTIFIER_NOT_FOUND")
    phone = new_phone()
    add_device(D, phone, "--ineligible")
    expect_camara_error(post_assignment(D, LIVE_TOKEN, abody(phone=phone)), 422, "SERVICE_NOT_APPLICABLE")


def test_sink_rules_invalid_sink():
    phone = new_phone()
    add_device(D, phone, "--cell", new_cell())
    for sink in ("http://app.example.com/cb", "ftp://app.example.com/cb", RECV.url("/live-plain")):
        expect_camara_error(post_assignment(D, LIVE_TOKEN, abody(phone=phone, sink=sink)), 400, "INVALID_SINK")
    for sink in ("app.example.com/cb", "not a url", "", 5):
        expect_error_in(post_assignment(D, LIVE_TOKEN, abody(phone=phone, sink=sink)), 400,
                        ("INVALID_SINK", "INVALID_ARGUMENT"))
    for sink in ("http://10.1.2.3/cb", "ftp://127.0.0.1/cb"):
        expect_camara_error(post_assignment(D, TOKEN, abody(sink=sink)), 400, "INVALID_SINK")
    # The refusals created nothing.
    a = create_assignment(D, LIVE_TOKEN, abody(phone=phone, sink=RECV_TLS.url("/live-ok")))
    assert a["sink"] == RECV_TLS.url("/live-ok"), a


def test_sink_credential_rules():
    plain = {"credentialType": "PLAIN", "identifier": "user", "secret": "pw"}
    refresh = dict(cred(kind="REFRESHTOKEN"), refreshToken="r", refreshTokenEndpoint="https://idp.example.com/t")
    for c in (plain, refresh):
        expect_camara_error(post_assignment(D, TOKEN, abody(sink=RECV.url("/cred"), cred=c)), 400,
                            "INVALID_CREDENTIAL")
    for tt in ("mac", "dpop"):
        expect_camara_error(post_assignment(D, TOKEN, abody(sink=RECV.url("/cred"), cred=cred(token_type=tt))), 400,
                            "INVALID_TOKEN")
    for change in ({"accessToken": None}, {"accessTokenExpiresUtc": None}, {"accessTokenExpiresUtc": "tomorrow"}):
        c = cred()
        for k, v in change.items():
            if v is None:
                del c[k]
            else:
                c[k] = v
        expect_error_in(post_assignment(D, TOKEN, abody(sink=RECV.url("/cred"), cred=c)), 400,
                        ("INVALID_ARGUMENT", "INVALID_CREDENTIAL", "INVALID_TOKEN"))
    # A credential without a sink is meaningless.
    expect_error_in(post_assignment(D, TOKEN, abody(cred=cred())), 400, ("INVALID_ARGUMENT", "INVALID_CREDENTIAL"))


def test_sink_credential_never_echoed():
    phone = new_phone()
    c = cred()
    r = expect_status(post_assignment(D, TOKEN, abody(phone=phone, sink=RECV.url("/noecho"), cred=c)), 201)
    aid = r.json()["assignmentId"]
    wait_status(D, TOKEN, aid, "AVAILABLE")
    g = get_raw(D, TOKEN, aid)
    lst = retrieve(D, TOKEN, {"device": {"phoneNumber": phone}})
    for resp in (r, g, lst):
        assert resp.status in (200, 201), resp
        assert c["accessToken"].encode() not in resp.body and b"sinkCredential" not in resp.body, \
            "sinkCredential echoed: %r" % resp.body


def test_app_quota_counts_assignments_429():
    app, tok = new_app(D, "quota", extra=("--max-sessions", "1"))
    a = create_assignment(D, tok)
    expect_camara_error(post_assignment(D, tok, abody()), 429, "QUOTA_EXCEEDED")
    expect_camara_error(v1_session(D, tok, new_phone()), 429, "QUOTA_EXCEEDED")
    expect_status(revoke(D, tok, a["assignmentId"]), 204)
    create_assignment(D, tok)


# --------------------------------------------------------------------------------------------------------------
# One active session or assignment per device


def test_second_assignment_same_device_409():
    b = abody()
    a = create_assignment(D, TOKEN, b)
    expect_camara_error(post_assignment(D, TOKEN, b), 409, "CONFLICT")  # still REQUESTED
    wait_status(D, TOKEN, a["assignmentId"], "AVAILABLE")
    expect_camara_error(post_assignment(D, TOKEN, dict(b, qosProfile="QOS_M")), 409, "CONFLICT")
    expect_camara_error(post_assignment(D, OTHER_TOKEN, b), 409, "CONFLICT")


def test_requested_assignment_conflicts_and_revoke_without_notification():
    # +99999991003 stays REQUESTED for 10 s.
    b = abody(phone="+99999991003", sink=RECV.url("/slow"))
    a = create_assignment(D, TOKEN, b)
    g = check_info(get_assignment(D, TOKEN, a["assignmentId"]), status="REQUESTED")
    expect_camara_error(post_assignment(D, TOKEN, b), 409, "CONFLICT")
    r = expect_status(retrieve(D, TOKEN, {"device": {"phoneNumber": "+99999991003"}}), 200).json()
    assert r == g, (r, g)
    expect_status(revoke(D, TOKEN, a["assignmentId"]), 204)
    g = get_assignment(D, TOKEN, a["assignmentId"])
    assert g["status"] == "UNAVAILABLE" and g["statusInfo"] == "DELETE_REQUESTED", g
    assert "startedAt" not in g, "never AVAILABLE, yet startedAt: %r" % g
    no_more_events(RECV, a["assignmentId"], 0, 0.4)


def test_assignment_refused_while_the_device_has_a_qod_session():
    p1, p2 = new_phone(), new_phone()
    expect_status(v1_session(D, TOKEN, p1), 201)
    expect_camara_error(post_assignment(D, TOKEN, abody(phone=p1)), 409, "CONFLICT")
    expect_status(v0_session(D, TOKEN, p2, RECV.url("/v0")), 201)
    expect_camara_error(post_assignment(D, TOKEN, abody(phone=p2)), 409, "CONFLICT")
    # Another app's session too.
    p3 = new_phone()
    expect_status(v1_session(D, OTHER_TOKEN, p3), 201)
    expect_camara_error(post_assignment(D, TOKEN, abody(phone=p3)), 409, "CONFLICT")


def test_qod_session_refused_while_the_device_has_an_assignment():
    phone = new_phone()
    a = create_assignment(D, TOKEN, abody(phone=phone))
    expect_camara_error(v1_session(D, TOKEN, phone), 409, "CONFLICT")
    expect_camara_error(v0_session(D, TOKEN, phone, RECV.url("/v0")), 409, "CONFLICT")
    expect_camara_error(v1_session(D, OTHER_TOKEN, phone), 409, "CONFLICT")
    wait_status(D, TOKEN, a["assignmentId"], "AVAILABLE")
    expect_camara_error(v1_session(D, TOKEN, phone), 409, "CONFLICT")
    # Revoked: the device is free for a session (and the session is not an assignment).
    expect_status(revoke(D, TOKEN, a["assignmentId"]), 204)
    expect_status(v1_session(D, TOKEN, phone), 201)
    expect_camara_error(retrieve(D, TOKEN, {"device": {"phoneNumber": phone}}), 404, "NOT_FOUND")
    expect_camara_error(post_assignment(D, TOKEN, abody(phone=phone)), 409, "CONFLICT")


def test_v1_retrieve_sessions_does_not_list_assignments():
    phone = new_phone()
    create_assignment(D, TOKEN, abody(phone=phone))
    r = expect_status(D.request("POST", V1_RETRIEVE, body={"device": {"phoneNumber": phone}}, token=TOKEN), 200)
    assert r.json() == [], "an assignment listed as a QoD session: %r" % r.json()


# --------------------------------------------------------------------------------------------------------------
# GET and DELETE: whose assignment, which id


def test_other_client_403_random_404_malformed_400():
    a = create_assignment(D, TOKEN)
    aid = a["assignmentId"]
    rnd = str(uuid.uuid4())
    for label, call in (("GET", lambda tok, i: get_raw(D, tok, i)), ("DELETE", lambda tok, i: revoke(D, tok, i))):
        expect_camara_error(call(OTHER_TOKEN, aid), 403, "PERMISSION_DENIED")
        expect_camara_error(call(TOKEN, rnd), 404, "NOT_FOUND")
        for bad in ("not-a-uuid", "1234", aid[:-1] + "g"):
            r = call(TOKEN, bad)
            assert r.status == 400, "%s with assignment id %r: %r" % (label, bad, r)
            expect_camara_error(r, 400, "INVALID_ARGUMENT")
    # Upper-case is the same UUID.
    assert get_assignment(D, TOKEN, aid.upper())["assignmentId"] == aid
    g = get_assignment(D, TOKEN, aid)
    assert g["status"] in ("REQUESTED", "AVAILABLE"), g


def test_session_and_assignment_ids_are_not_interchangeable():
    phone = new_phone()
    s = expect_status(v1_session(D, TOKEN, phone), 201).json()
    sid = s["sessionId"]
    expect_camara_error(get_raw(D, TOKEN, sid), 404, "NOT_FOUND")
    expect_camara_error(revoke(D, TOKEN, sid), 404, "NOT_FOUND")
    g = expect_status(D.request("GET", V1_SESSIONS + "/" + sid, token=TOKEN), 200).json()
    assert g["qosStatus"] in ("REQUESTED", "AVAILABLE"), "the session was touched by a DELETE on assignments: %r" % g
    a = create_assignment(D, TOKEN)
    aid = a["assignmentId"]
    expect_camara_error(D.request("GET", V1_SESSIONS + "/" + aid, token=TOKEN), 404, "NOT_FOUND")
    expect_camara_error(D.request("DELETE", V1_SESSIONS + "/" + aid, token=TOKEN), 404, "NOT_FOUND")
    expect_camara_error(D.request("POST", V1_SESSIONS + "/" + aid + "/extend", token=TOKEN,
                                  body={"requestedAdditionalDuration": 10}), 404, "NOT_FOUND")
    r = D.request("GET", V0_SESSIONS + "/" + aid, token=TOKEN)
    assert r.status == 404, "an assignment read through QoD v0: %r" % r
    r = D.request("DELETE", V0_SESSIONS + "/" + aid, token=TOKEN)
    assert r.status == 404, "an assignment deleted through QoD v0: %r" % r
    g = get_assignment(D, TOKEN, aid)
    assert g["status"] in ("REQUESTED", "AVAILABLE"), "the assignment was touched through the sessions API: %r" % g


def test_sandbox_network_event_answer_matches_its_effect_on_assignments():
    # /sandbox/v0/sessions/{id}/network-events is a sessions endpoint: for an assignment id it must either apply the
    # event and say so, or refuse (404) and change nothing; never answer 404 after terminating the assignment.
    a = create_assignment(D, TOKEN, abody(sink=RECV.url("/sbx")))
    aid = a["assignmentId"]
    wait_status(D, TOKEN, aid, "AVAILABLE")
    r = D.request("POST", "/sandbox/v0/sessions/%s/network-events" % aid, body={"qosStatus": "UNAVAILABLE"},
                  token=TOKEN)
    time.sleep(0.2)
    g = get_assignment(D, TOKEN, aid)
    if r.status == 404:
        assert g["status"] == "AVAILABLE", \
            "network-events answered 404 for an assignment but terminated it: %r then %r" % (r, g)
    else:
        assert r.status in (200, 204) and g["status"] == "UNAVAILABLE" and g["statusInfo"] == "NETWORK_TERMINATED", (r, g)


# --------------------------------------------------------------------------------------------------------------
# DELETE (revoke)


def test_revoke_available_notifies_delete_requested_and_stays_readable():
    c = cred()
    phone = new_phone()
    a = create_assignment(D, TOKEN, abody(phone=phone, sink=RECV.url("/revoke"), cred=c))
    aid = a["assignmentId"]
    (h1, e1), = wait_events(RECV, aid, 1)
    check_event(h1, APP["webhook_secret"], aid, "AVAILABLE", bearer=c["accessToken"])
    g1 = get_assignment(D, TOKEN, aid)
    assert g1["status"] == "AVAILABLE", g1
    r = expect_status(revoke(D, TOKEN, aid), 204)
    assert r.body == b"", r
    evs = wait_events(RECV, aid, 2)
    e2 = check_event(evs[1][0], APP["webhook_secret"], aid, "UNAVAILABLE", "DELETE_REQUESTED",
                     bearer=c["accessToken"])
    assert e2["id"] != e1["id"], "two events with one id: %r %r" % (e1, e2)
    g = check_info(get_assignment(D, TOKEN, aid), status="UNAVAILABLE", device={"phoneNumber": phone})
    assert g["statusInfo"] == "DELETE_REQUESTED", g
    assert g.get("startedAt") == g1["startedAt"], "startedAt changed by the revocation: %r %r" % (g1, g)
    # Revoked: retrieve finds nothing; a second DELETE is 204 without a second notification.
    expect_camara_error(retrieve(D, TOKEN, {"device": {"phoneNumber": phone}}), 404, "NOT_FOUND")
    expect_status(revoke(D, TOKEN, aid), 204)
    no_more_events(RECV, aid, 2, 0.6)
    # The device can be assigned again.
    a2 = create_assignment(D, TOKEN, abody(phone=phone))
    assert a2["assignmentId"] != aid, a2


def test_revoke_network_terminated_204_without_notification():
    a = create_assignment(D, TOKEN, abody(phone="+99999991001", sink=RECV.url("/refused")))
    aid = a["assignmentId"]
    assert a["status"] == "REQUESTED", a
    g = wait_status(D, TOKEN, aid, "UNAVAILABLE")
    assert g["statusInfo"] == "NETWORK_TERMINATED" and "startedAt" not in g, g
    (hook, _), = wait_events(RECV, aid, 1)
    check_event(hook, APP["webhook_secret"], aid, "UNAVAILABLE", "NETWORK_TERMINATED")
    expect_status(revoke(D, TOKEN, aid), 204)
    g = get_assignment(D, TOKEN, aid)
    assert g["status"] == "UNAVAILABLE" and g["statusInfo"] == "NETWORK_TERMINATED", \
        "revoking an UNAVAILABLE assignment changed it: %r" % g
    no_more_events(RECV, aid, 1, 0.5)


def test_revoke_while_requested_is_final():
    # Revoked before the network answered: the late grant must not bring it back, and nothing is notified.
    a = create_assignment(D, TOKEN, abody(sink=RECV.url("/early")))
    aid = a["assignmentId"]
    expect_status(revoke(D, TOKEN, aid), 204)
    time.sleep(0.5)
    g = get_assignment(D, TOKEN, aid)
    assert g["status"] == "UNAVAILABLE" and g["statusInfo"] == "DELETE_REQUESTED" and "startedAt" not in g, g
    no_more_events(RECV, aid, 0, 0.1)


# --------------------------------------------------------------------------------------------------------------
# POST /retrieve-qos-assignment


def test_retrieve_returns_the_assignment_info():
    phone = new_phone()
    a = create_assignment(D, TOKEN, abody(phone=phone, sink=RECV.url("/ret")))
    g = wait_status(D, TOKEN, a["assignmentId"], "AVAILABLE")
    r = expect_status(retrieve(D, TOKEN, {"device": {"phoneNumber": phone}}), 200)
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers
    assert r.json() == g, "retrieve differs from GET:\n%r\n%r" % (r.json(), g)


def test_retrieve_404_when_none_and_for_other_apps():
    expect_camara_error(retrieve(D, TOKEN, {"device": {"phoneNumber": new_phone()}}), 404, "NOT_FOUND")
    phone = new_phone()
    create_assignment(D, TOKEN, abody(phone=phone))
    # "The QoS profile assignment must have been created by the same API consumer given in the access token."
    r = retrieve(D, OTHER_TOKEN, {"device": {"phoneNumber": phone}})
    assert r.status in (403, 404), "another app retrieved the assignment: %r" % r
    # A QoD session is not an assignment.
    p2 = new_phone()
    expect_status(v1_session(D, TOKEN, p2), 201)
    expect_camara_error(retrieve(D, TOKEN, {"device": {"phoneNumber": p2}}), 404, "NOT_FOUND")


def test_retrieve_device_errors():
    expect_camara_error(retrieve(D, TOKEN, {}), 422, "MISSING_IDENTIFIER")
    expect_camara_error(retrieve(D, TOKEN, {"device": {"networkAccessIdentifier": new_nai()}}), 422,
                        "UNSUPPORTED_IDENTIFIER")
    for b in ({"device": {}}, {"device": {"phoneNumber": "123"}}, {"device": "+15551234567"}):
        expect_camara_error(retrieve(D, TOKEN, b), 400, "INVALID_ARGUMENT")
    for raw in (b"", b"{", b"[]"):
        r = D.request("POST", RETRIEVE, raw=raw, token=TOKEN, headers={"Content-Type": "application/json"})
        expect_camara_error(r, 400, "INVALID_ARGUMENT")


# --------------------------------------------------------------------------------------------------------------
# Notifications


def test_lifecycle_notifications_in_order_signed_with_bearer():
    c = cred()
    a = create_assignment(D, TOKEN, abody(sink=RECV.url("/order"), cred=c))
    aid = a["assignmentId"]
    wait_status(D, TOKEN, aid, "AVAILABLE")
    expect_status(revoke(D, TOKEN, aid), 204)
    evs = wait_events(RECV, aid, 2)
    check_event(evs[0][0], APP["webhook_secret"], aid, "AVAILABLE", bearer=c["accessToken"])
    check_event(evs[1][0], APP["webhook_secret"], aid, "UNAVAILABLE", "DELETE_REQUESTED", bearer=c["accessToken"])
    assert parse_time(evs[0][1]["time"]) <= parse_time(evs[1][1]["time"]), [e for _, e in evs]
    no_more_events(RECV, aid, 2, 0.4)


def test_live_assignment_notifies_its_https_sink():
    phone = new_phone()
    add_device(D, phone, "--cell", new_cell())
    c = cred()
    a = create_assignment(D, LIVE_TOKEN, abody(phone=phone, sink=RECV_TLS.url("/live"), cred=c))
    assert a["device"] == {"phoneNumber": phone}, a
    (hook, _), = wait_events(RECV_TLS, a["assignmentId"], 1)
    check_event(hook, LIVE["webhook_secret"], a["assignmentId"], "AVAILABLE", bearer=c["accessToken"])


# --------------------------------------------------------------------------------------------------------------
# 3-legged tokens


def test_3legged_assignment_lifecycle():
    phone = new_phone()
    tok = three_legged(D, APP, "tel:" + phone)
    expect_camara_error(post_assignment(D, tok, abody(phone=phone)), 422, "UNNECESSARY_IDENTIFIER")
    expect_camara_error(post_assignment(D, tok, abody(phone=new_phone())), 422, "UNNECESSARY_IDENTIFIER")
    r = expect_status(post_assignment(D, tok, abody(device=NODEV, sink=RECV.url("/3l"))), 201)
    a = check_info(r.json(), device=NODEV, status="REQUESTED")
    aid = a["assignmentId"]
    g = check_info(wait_status(D, tok, aid, "AVAILABLE"), device=NODEV)
    (hook, _), = wait_events(RECV, aid, 1)
    check_event(hook, APP["webhook_secret"], aid, "AVAILABLE")
    # The assignment is the token's device's.
    expect_camara_error(post_assignment(D, tok, abody(device=NODEV)), 409, "CONFLICT")
    expect_camara_error(post_assignment(D, TOKEN, abody(phone=phone)), 409, "CONFLICT")
    expect_camara_error(v1_session(D, TOKEN, phone), 409, "CONFLICT")
    got = expect_status(retrieve(D, tok, {}), 200).json()
    assert got == g, (got, g)
    expect_camara_error(retrieve(D, tok, {"device": {"phoneNumber": phone}}), 422, "UNNECESSARY_IDENTIFIER")
    got = expect_status(retrieve(D, TOKEN, {"device": {"phoneNumber": phone}}), 200).json()
    assert got["assignmentId"] == aid, got
    expect_status(revoke(D, tok, aid), 204)
    evs = wait_events(RECV, aid, 2)
    check_event(evs[1][0], APP["webhook_secret"], aid, "UNAVAILABLE", "DELETE_REQUESTED")
    expect_camara_error(retrieve(D, tok, {}), 404, "NOT_FOUND")


def test_3legged_token_of_another_device_cannot_use_the_assignment():
    pa, pb = new_phone(), new_phone()
    tok_a, tok_b = three_legged(D, APP, "tel:" + pa), three_legged(D, APP, "tel:" + pb)
    aid = create_assignment(D, tok_a, abody(device=NODEV))["assignmentId"]
    wait_status(D, tok_a, aid, "AVAILABLE")
    problems = []
    for label, r in (("GET", get_raw(D, tok_b, aid)), ("DELETE", revoke(D, tok_b, aid))):
        if r.status not in (403, 404):
            problems.append("%s with device B's token → %d %s" % (label, r.status, r.text[:160]))
    r = retrieve(D, tok_b, {})
    if r.status != 404:
        problems.append("retrieve with device B's token → %d %s" % (r.status, r.text[:160]))
    assert not problems, "another device's 3-legged token used device A's assignment:\n" + "\n".join(problems)
    assert get_assignment(D, tok_a, aid)["status"] == "AVAILABLE"


def test_3legged_restricted_profile():
    tok = three_legged(D, APP, "tel:" + new_phone())
    expect_camara_error(post_assignment(D, tok, abody(device=NODEV, profile="QOS_VIP")), 422,
                        "QOS_PROVISIONING.QOS_PROFILE_NOT_APPLICABLE")


def test_one_live_device_is_one_device_whichever_identifier():
    # A registered live device known by its phone number and its IPv4 address: an assignment through one identifier
    # and a session (or a second assignment) through the other would contradict each other in the network.
    problems = []
    for what in ("assignment", "QoD session"):
        phone, ip = new_phone(), new_ipv4()
        add_device(D, phone, "--ipv4", ip, "--cell", new_cell())
        a = create_assignment(D, LIVE_TOKEN, abody(phone=phone))
        wait_status(D, LIVE_TOKEN, a["assignmentId"], "AVAILABLE")
        by_ip = {"ipv4Address": {"publicAddress": ip, "publicPort": 4000}}
        if what == "assignment":
            r = post_assignment(D, LIVE_TOKEN, abody(device=by_ip))
        else:
            r = D.request("POST", V1_SESSIONS, token=LIVE_TOKEN,
                          body={"device": by_ip, "applicationServer": {"ipv4Address": "198.51.100.0/24"},
                                "qosProfile": "QOS_L", "duration": 60})
        if r.status != 409:
            problems.append("device %s registered with IPv4 %s has an assignment by phone, yet a %s by IPv4 → %d %s"
                            % (phone, ip, what, r.status, r.text[:200]))
    assert not problems, "\n".join(problems)


# --------------------------------------------------------------------------------------------------------------
# Catalogue extensions


def test_catalogue_extensions_not_served():
    for name in ("QOS_SESSIONS_ONLY", "QOS_PROV_OK"):
        r = expect_status(D.request("GET", "/qos-profiles/v1/qos-profiles/" + name, token=TOKEN), 200)
        assert b"x-provisionable" not in r.body and b"x-devices" not in r.body, r.body


def test_catalogue_rejects_a_non_boolean_x_provisionable():
    tmp = tempfile.mkdtemp(prefix="qod-e2e-prov-cat-")
    try:
        for bad in ("no", 0, None):
            path = os.path.join(tmp, "p.json")
            with open(path, "w") as f:
                json.dump([{"name": "QOS_X", "status": "ACTIVE", "x-provisionable": bad,
                            "targetMinDownstreamRate": {"value": 1, "unit": "Mbps"}}], f)
            data = os.path.join(tmp, "data-%s" % uuid.uuid4().hex[:6])
            p = run_qodd(["--listen", "127.0.0.1:%d" % free_port(), "--data", data, "--profiles", path])
            assert p.returncode != 0, "qodd started with x-provisionable %r" % (bad,)
            assert "x-provisionable" in p.stdout + p.stderr, (p.stdout, p.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# The simulated network enforces assignments (R: cell capacity 20000 kbit/s, QOS_S guarantees 15000)


CAP = {}


def test_sim_cell_capacity_enforced_for_assignments():
    cluster_skip("the simulated network counts its cells per node (documented in operations.md)")
    cell = new_cell()
    p1, p2, p3 = new_phone(), new_phone(), new_phone()
    for p in (p1, p2, p3):
        add_device(R, p, "--cell", cell)
    c1 = cred()
    a1 = create_assignment(R, RLIVE_TOKEN, abody(phone=p1, profile="QOS_S", sink=RECV_TLS.url("/cap1"), cred=c1))
    wait_status(R, RLIVE_TOKEN, a1["assignmentId"], "AVAILABLE")
    a2 = create_assignment(R, RLIVE_TOKEN, abody(phone=p2, profile="QOS_S", sink=RECV_TLS.url("/cap2")))
    g2 = wait_status(R, RLIVE_TOKEN, a2["assignmentId"], "UNAVAILABLE")
    assert g2["statusInfo"] == "NETWORK_TERMINATED" and "startedAt" not in g2, g2
    (h2, _), = wait_events(RECV_TLS, a2["assignmentId"], 1)
    check_event(h2, RLIVE["webhook_secret"], a2["assignmentId"], "UNAVAILABLE", "NETWORK_TERMINATED")
    # The capacity held by an assignment is the one QoD sessions use too.
    s = expect_status(v1_session(R, RLIVE_TOKEN, p3, profile="QOS_S"), 201).json()
    sid = s["sessionId"]
    wait_until(lambda: expect_status(R.request("GET", V1_SESSIONS + "/" + sid, token=RLIVE_TOKEN), 200).json()
               ["qosStatus"] == "UNAVAILABLE", timeout=3, what="QOS_S session refused in the full cell")
    # Revoking the first frees the cell. (The refused one is revoked too: the spec asks clients to release an
    # UNAVAILABLE assignment before assigning the device again.)
    expect_status(revoke(R, RLIVE_TOKEN, a1["assignmentId"]), 204)
    expect_status(revoke(R, RLIVE_TOKEN, a2["assignmentId"]), 204)
    a3 = create_assignment(R, RLIVE_TOKEN, abody(phone=p2, profile="QOS_S"))
    wait_status(R, RLIVE_TOKEN, a3["assignmentId"], "AVAILABLE")
    CAP.update(cell=cell, holder=a3["assignmentId"], holder_phone=p2, spare=p3)


# --------------------------------------------------------------------------------------------------------------
# Restarts: assignments survive SIGTERM and SIGKILL with their status


def _restart_fixture():
    """On R: assignments AVAILABLE (with sink), UNAVAILABLE/DELETE_REQUESTED, UNAVAILABLE/NETWORK_TERMINATED and a
    3-legged one; returns {label: (token, assignment id)} with the GET of each."""
    out = {}
    phone = new_phone()
    c = cred()
    a = create_assignment(R, RTOKEN, abody(phone=phone, sink=RECV.url("/r-avail"), cred=c))
    wait_events(RECV, a["assignmentId"], 1)
    out["available"] = (RTOKEN, a["assignmentId"], phone)
    out["_bearer"] = c["accessToken"]
    # A GET may be ahead of the store by one commit (reliability.md): each change waited for below is followed by
    # a request answered only after a later commit (the revoke's 204, a create's 201), so that it is in the store
    # before the restart. The last item, "requested", is its own create's commit.
    p3 = new_phone()
    tok3 = three_legged(R, RAPP, "tel:" + p3)
    c = create_assignment(R, tok3, abody(device=NODEV))
    wait_status(R, tok3, c["assignmentId"], "AVAILABLE")
    out["3legged"] = (tok3, c["assignmentId"], p3)
    b = create_assignment(R, RTOKEN)
    wait_status(R, RTOKEN, b["assignmentId"], "AVAILABLE")
    expect_status(revoke(R, RTOKEN, b["assignmentId"]), 204)
    out["revoked"] = (RTOKEN, b["assignmentId"], b["device"]["phoneNumber"])
    d = create_assignment(R, RTOKEN, abody(phone="+99999991001"))
    wait_status(R, RTOKEN, d["assignmentId"], "UNAVAILABLE")
    out["refused"] = (RTOKEN, d["assignmentId"], "+99999991001")
    e = create_assignment(R, RTOKEN, abody(phone="+99999991003"))  # REQUESTED for 10 s
    out["requested"] = (RTOKEN, e["assignmentId"], "+99999991003")
    return out


def _judge_restart(fix, before, how):
    problems = []
    for label, (tok, aid, _) in fix.items():
        r = get_raw(R, tok, aid)
        if r.status != 200:
            problems.append("%s: GET after %s → %r" % (label, how, r))
            continue
        if r.json() != before[label]:
            problems.append("%s: before %s %r, after %r" % (label, how, before[label], r.json()))
    assert not problems, "\n".join(problems)


def _restart_check(kill):
    fix = _restart_fixture()
    bearer = fix.pop("_bearer")
    if "holder" in CAP:
        fix["live-holder"] = (RLIVE_TOKEN, CAP["holder"], CAP["holder_phone"])
    before = {label: get_assignment(R, tok, aid) for label, (tok, aid, _) in fix.items()}
    if kill:
        R.kill()
    else:
        assert R.stop() == 0, "qodd did not exit cleanly on SIGTERM"
    R.start()
    how = "SIGKILL" if kill else "SIGTERM"
    _judge_restart(fix, before, how)
    time.sleep(0.5)  # past the sandbox delay: a re-provisioning must not change or notify anything
    _judge_restart(fix, before, how + " + 0.5 s")
    tok, aid, phone = fix["available"]
    no_more_events(RECV, aid, 1, 0.1)
    # Still enforced: conflicts, retrieve, and the live cell still full.
    expect_camara_error(post_assignment(R, RTOKEN, abody(phone=phone)), 409, "CONFLICT")
    expect_camara_error(v1_session(R, RTOKEN, phone), 409, "CONFLICT")
    got = expect_status(retrieve(R, RTOKEN, {"device": {"phoneNumber": phone}}), 200).json()
    assert got["assignmentId"] == aid, got
    expect_camara_error(retrieve(R, RTOKEN, {"device": {"phoneNumber": fix["revoked"][2]}}), 404, "NOT_FOUND")
    if "holder" in CAP:
        p = new_phone()
        add_device(R, p, "--cell", CAP["cell"])
        x = create_assignment(R, RLIVE_TOKEN, abody(phone=p, profile="QOS_S"))
        g = wait_status(R, RLIVE_TOKEN, x["assignmentId"], "UNAVAILABLE")
        assert g["statusInfo"] == "NETWORK_TERMINATED", "cell capacity forgotten after %s: %r" % (how, g)
    # And revocable after the restart, with its notification.
    expect_status(revoke(R, tok, aid), 204)
    evs = wait_events(RECV, aid, 2)
    check_event(evs[1][0], RAPP["webhook_secret"], aid, "UNAVAILABLE", "DELETE_REQUESTED", bearer=bearer)
    for label in ("3legged", "requested", "refused"):
        t, i, _ = fix[label]
        expect_status(revoke(R, t, i), 204)


def test_assignments_survive_sigterm():
    _restart_check(kill=False)


def test_assignments_survive_sigkill():
    _restart_check(kill=True)


# --------------------------------------------------------------------------------------------------------------
# Slow scenarios started in setup_module


def test_network_terminated_5s_after_available():
    res = BG["1002"].result()
    seen, final = res["seen"], res["final"]
    assert "AVAILABLE" in seen and "UNAVAILABLE" in seen, "statuses seen: %r" % sorted(seen)
    took = seen["UNAVAILABLE"] - seen["AVAILABLE"]
    assert 4.0 <= took <= 5 + scaled(1), "UNAVAILABLE %.2f s after AVAILABLE (expected 5)" % took
    check_info(final, status="UNAVAILABLE")
    assert final["statusInfo"] == "NETWORK_TERMINATED" and "startedAt" in final, final
    aid = res["created"]["assignmentId"]
    evs = res["events"]
    assert len(evs) == 2, evs
    bearer = res["cred"]["accessToken"]
    check_event(evs[0][0], APP["webhook_secret"], aid, "AVAILABLE", bearer=bearer)
    check_event(evs[1][0], APP["webhook_secret"], aid, "UNAVAILABLE", "NETWORK_TERMINATED", bearer=bearer)


def test_network_terminated_assignment_revoke_204_without_notification():
    res = BG["1002"].result()
    expect_status(res["delete"], 204)
    assert len(res["events_after_delete"]) == 2, [e for _, e in res["events_after_delete"]]
    a = res["after_delete"]
    assert a["status"] == "UNAVAILABLE" and a["statusInfo"] == "NETWORK_TERMINATED", a


def test_assignment_never_expires_by_itself():
    res = BG["noexpiry"].result()
    later = res["later"]
    assert later["status"] == "AVAILABLE" and "statusInfo" not in later, \
        "an assignment ended by itself: %r" % later
    assert later["startedAt"] == res["available"]["startedAt"], (res["available"], later)
    evs = res["events"]
    assert len(evs) == 1, [e for _, e in evs]
    check_event(evs[0][0], APP["webhook_secret"], res["created"]["assignmentId"], "AVAILABLE")


if __name__ == "__main__":
    run(globals())
