"""Hardening: per-app rate limits (GCRA token bucket) with RateLimit / RateLimit-Policy / Retry-After, token
endpoint limits per client and per source address, the active-session quota, body / header / JSON nesting limits,
slow clients (idle, slowloris, slow body), the per-address and total connection limits (503 shedding), secrets
absent from the log and the database, file modes, Cache-Control: no-store, optional TLS, object-level
authorization across every session and assignment endpoint (admin included) and strict JSON (duplicate keys, NUL,
UTF-8, error bodies that quote the client).

Black-box: every test talks to a real build/qodd over HTTP (or raw TCP), the admin socket (qodctl) or the file
system. Shared daemon D (setup_module): `--sandbox-delay-ms 0 --max-body 1048576` (so that a 100000-byte body
reaches the JSON parser), with a callback sink RECV. Tests that need other options start their own daemon.
Loopback accepts the whole 127/8, so "another client address" is a socket bound to 127.0.0.2.
"""
import base64
import http.client
import os
import random
import shutil
import socket
import ssl
import stat
import sys
import threading
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

V0 = "/camara/qod/v0"
V0_SESSIONS = V0 + "/sessions"
V0_PROFILES = V0 + "/qos-profiles"
V1_SESSIONS = "/quality-on-demand/v1/sessions"
V1_RETRIEVE = "/quality-on-demand/v1/retrieve-sessions"
ASSIGNMENTS = "/qos-provisioning/v0.3/qos-assignments"
ASSIGNMENT_RETRIEVE = "/qos-provisioning/v0.3/retrieve-qos-assignment"
PROFILES_RETRIEVE = "/qos-profiles/v1/retrieve-qos-profiles"
SANDBOX_EVENTS = "/sandbox/v0/sessions/%s/network-events"
OTHER_ADDR = "127.0.0.2"
# A client address no other test or harness probe uses (the per-address connection limit test).
LIMITED_ADDR = "127.0.0.3"
AUTH_TOKEN = "secret-token-abcdefghijklmnop"
RATELIMIT_RE = re.compile(r'^"app";r=(\d+);t=(\d+)$')

D = None     # shared daemon
RECV = None  # callback sink for D's sandbox sessions

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


def unlimited_app(d, name="app", extra=()):
    """A sandbox app without rate limit and a token for it."""
    a = create_app(d, name=name, extra=("--rate-limit", "0") + tuple(extra))
    return a, get_token(d, a)


def v0_body(phone=None, url=None, **extra):
    b = {"device": {"phoneNumber": phone or new_phone()}, "qosProfile": "QOS_L", "duration": 60,
         "webhook": {"notificationUrl": url or RECV.url("/cb")}}
    b.update(extra)
    return b


def v1_body(phone=None, **extra):
    b = {"device": {"phoneNumber": phone or new_phone()}, "applicationServer": {"ipv4Address": "198.51.100.7"},
         "qosProfile": "QOS_L", "duration": 60}
    b.update(extra)
    return b


def create_assignment(d, tok, phone=None):
    body = {"device": {"phoneNumber": phone or new_phone()}, "qosProfile": "QOS_L"}
    return expect_status(d.request("POST", ASSIGNMENTS, body=body, token=tok), 201).json()


def create_v0(d, tok, body=None):
    return expect_status(d.request("POST", V0_SESSIONS, body=body or v0_body(), token=tok), 201).json()


def create_v1(d, tok, body=None):
    return expect_status(d.request("POST", V1_SESSIONS, body=body or v1_body(), token=tok), 201).json()


def post_raw(d, path, raw, tok=None, ctype="application/json"):
    return d.request("POST", path, raw=raw, headers={"Content-Type": ctype}, token=tok)


def expect_healthy(d):
    """The daemon process is alive and answers /healthz."""
    assert d.running(), "qodd exited (code %s); log tail:\n%s" % (d.proc.poll(), d.log_tail(40))
    expect_status(d.request("GET", "/healthz"), 200)


def retry_after_seconds(resp):
    v = resp.headers.get("Retry-After")
    assert v is not None and re.fullmatch(r"\d+", v) and int(v) >= 1, \
        "Retry-After must be whole seconds >= 1, got %r: %r" % (v, resp)
    return int(v)


def ratelimit(resp):
    """(remaining, reset seconds) from the RateLimit header (IETF httpapi draft syntax)."""
    v = resp.headers.get("RateLimit")
    m = RATELIMIT_RE.match(v or "")
    assert m, 'RateLimit must be \'"app";r=N;t=S\', got %r: %r' % (v, resp)
    return int(m.group(1)), int(m.group(2))


def cache_tokens(resp):
    v = resp.headers.get("Cache-Control")
    assert v is not None, "no Cache-Control header: %r" % resp
    return {t.strip().lower() for t in v.split(",") if t.strip()}


def expect_no_store(resp, what):
    toks = cache_tokens(resp)
    assert "no-store" in toks, "%s: Cache-Control %r lacks no-store: %r" % (what, resp.headers.get("Cache-Control"),
                                                                            resp)


def connect(d, source=None, timeout=5):
    """A raw TCP connection to d, from `source` (an address on loopback) when given."""
    return socket.create_connection((d.host, d.port), timeout=scaled(timeout),
                                    source_address=(source, 0) if source else None)


class _SourceConn(http.client.HTTPConnection):
    """An HTTPConnection whose socket is bound to a chosen local address."""

    def __init__(self, host, port, source, timeout):
        super().__init__(host, port, timeout=timeout)
        self._source = source

    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), self.timeout,
                                             source_address=(self._source, 0))


def request_from(d, source, method, path, body=None, form=None, auth=None, token=None, timeout=5):
    """One request on a fresh connection from the local address `source`; returns (status, headers, bytes)."""
    conn = _SourceConn(d.host, d.port, source, scaled(timeout))
    h = {}
    data = None
    if body is not None:
        data, h["Content-Type"] = json.dumps(body).encode(), "application/json"
    if form is not None:
        data, h["Content-Type"] = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    if auth is not None:
        h["Authorization"] = "Basic " + base64.b64encode(("%s:%s" % auth).encode()).decode()
    if token is not None:
        h["Authorization"] = "Bearer " + token
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
    finally:
        conn.close()


def server_closed(sock, wait):
    """Waits up to `wait` seconds for the server to close sock. True when it did (EOF or reset); any bytes
    received before that (e.g. an error response) are ignored."""
    deadline = time.monotonic() + wait
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except socket.timeout:
            return False
        except OSError:
            return True


def trickle(d, data, interval=1.0, give_up=8.0):
    """Sends data one byte every `interval` seconds on a fresh connection (a slowloris client) and returns the
    seconds until the server closed the connection, or None when it was still open after give_up seconds."""
    s = connect(d)
    t0 = time.monotonic()
    try:
        for b in data:
            try:
                s.sendall(bytes([b]))
            except OSError:
                return time.monotonic() - t0
            if server_closed(s, interval):
                return time.monotonic() - t0
            if time.monotonic() - t0 > give_up:
                return None
        # Everything sent (the test gave too little data): wait for the rest of give_up.
        left = give_up - (time.monotonic() - t0)
        return time.monotonic() - t0 if left > 0 and server_closed(s, left) else None
    finally:
        s.close()


def exchange(d, data, timeout=10):
    """Sends raw bytes and returns what comes back until the server closes or the timeout passes. A reset or a
    broken pipe while sending (the server answered and closed early) is not an error."""
    chunks = []
    with connect(d, timeout=timeout) as s:
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                chunks.append(c)
        except (socket.timeout, ConnectionResetError):
            pass
    return b"".join(chunks)


def status_of(raw):
    """The status code of a raw HTTP response, or None when there is none."""
    m = re.match(rb"HTTP/1\.[01] (\d{3}) ", raw)
    return int(m.group(1)) if m else None


def keepalive_conn(d, source=None):
    """A connection that completed one GET /healthz and stays open (keep-alive): the server surely holds it."""
    c = _SourceConn(d.host, d.port, source, scaled(5)) if source else \
        http.client.HTTPConnection(d.host, d.port, timeout=scaled(5))
    c.request("GET", "/healthz")
    r = c.getresponse()
    r.read()
    assert r.status == 200 and not r.will_close, "keep-alive GET /healthz: %d (will_close=%s)" % (r.status,
                                                                                                r.will_close)
    return c


def make_cert(directory):
    cert, key = os.path.join(directory, "c.pem"), os.path.join(directory, "k.pem")
    p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=localhost"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        skip("openssl req failed: %s" % p.stderr.strip()[-300:])
    return cert, key


def is_valid_utf8_json(body):
    try:
        json.loads(body.decode("utf-8", errors="strict"))
        return True
    except (UnicodeDecodeError, ValueError):
        return False


# --------------------------------------------------------------------------------------------------------------
# Module set-up


def setup_module():
    global D, RECV
    RECV = WebhookReceiver()
    D = Daemon(args=["--sandbox-delay-ms", "0", "--max-body", "1048576"])


def teardown_module():
    D.close()
    RECV.close()


# --------------------------------------------------------------------------------------------------------------
# Per-app rate limit (GCRA token bucket)


def _burst(d, tok, n, path=V0_PROFILES):
    """n GETs on one keep-alive connection as fast as possible; returns (responses, seconds taken)."""
    out = []
    with d.session() as s:
        t0 = time.monotonic()
        for _ in range(n):
            out.append(s.request("GET", path, token=tok))
        return out, time.monotonic() - t0


def test_burst_beyond_app_limit_gets_429_with_retry_after_and_ratelimit_headers():
    cluster_skip("app rate limits are split over the live nodes (rate ÷ nodes, docs/operations.md): a node's policy "
                 "is not the app's")
    app = create_app(D, name="rl5", extra=("--rate-limit", "5", "--burst", "5"))
    tok = get_token(D, app)
    rs, took = _burst(D, tok, 6)
    if took > 0.18:
        skip("6 requests took %.2fs: a token refilled meanwhile, the burst cannot be judged exactly" % took)
    remaining = []
    for i, r in enumerate(rs[:5]):
        expect_status(r, 200)
        assert r.headers.get("RateLimit-Policy") == '"app";q=5;w=1', \
            "request %d: RateLimit-Policy %r: %r" % (i + 1, r.headers.get("RateLimit-Policy"), r)
        rem, reset = ratelimit(r)
        assert reset >= 1, "request %d: t=%d" % (i + 1, reset)
        remaining.append(rem)
    assert remaining == [4, 3, 2, 1, 0], "RateLimit r over the burst: %r" % remaining
    r = rs[5]
    body = expect_camara_error(r, 429, "TOO_MANY_REQUESTS")
    assert set(body) == {"status", "code", "message"}, body
    retry_after_seconds(r)
    assert r.headers.get("RateLimit-Policy") == '"app";q=5;w=1', r
    rem, reset = ratelimit(r)
    assert rem == 0 and reset >= 1, "429 RateLimit: r=%d t=%d" % (rem, reset)


def test_requests_succeed_again_after_retry_after():
    app = create_app(D, name="rl-recover", extra=("--rate-limit", "5", "--burst", "5"))
    tok = get_token(D, app)
    with D.session() as s:
        r = None
        for _ in range(50):
            r = s.request("GET", V0_PROFILES, token=tok)
            if r.status == 429:
                break
        expect_camara_error(r, 429, "TOO_MANY_REQUESTS")
        wait = retry_after_seconds(r)
        assert wait <= 2, "Retry-After %d for a 5/s bucket" % wait
        time.sleep(wait + 0.05)
        r2 = s.request("GET", V0_PROFILES, token=tok)
        expect_status(r2, 200)
        rem, _ = ratelimit(r2)
        assert rem >= 0, r2


def test_one_apps_limit_does_not_affect_another_app():
    cluster_skip("app rate limits are split over the live nodes (rate ÷ nodes, docs/operations.md): a node's policy "
                 "is not the app's")
    a = create_app(D, name="rl-a", extra=("--rate-limit", "2", "--burst", "2"))
    b = create_app(D, name="rl-b", extra=("--rate-limit", "5", "--burst", "5"))
    ta, tb = get_token(D, a), get_token(D, b)
    with D.session() as s:
        statuses = [s.request("GET", V0_PROFILES, token=ta).status for _ in range(8)]
        assert 429 in statuses, "app a (2/s, burst 2) was never limited: %r" % statuses
        rb = s.request("GET", V0_PROFILES, token=tb)
    expect_status(rb, 200)
    assert rb.headers.get("RateLimit-Policy") == '"app";q=5;w=1', rb
    rem, _ = ratelimit(rb)
    assert rem == 4, "app b's bucket was touched by app a's requests: r=%d" % rem


def test_rate_limit_zero_is_unlimited_without_ratelimit_headers():
    app, tok = unlimited_app(D, "rl0")
    with D.session() as s:
        for i in range(300):
            r = s.request("GET", V0_PROFILES, token=tok)
            assert r.status == 200, "request %d of an unlimited app: %r" % (i + 1, r)
            assert "RateLimit" not in r.headers and "RateLimit-Policy" not in r.headers, \
                "an unlimited app got RateLimit headers: %r" % r


def test_default_app_limit_is_advertised():
    cluster_skip("app rate limits are split over the live nodes (rate ÷ nodes, docs/operations.md): a node's policy "
                 "is not the app's")
    app = create_app(D, name="rl-default")
    tok = get_token(D, app)
    r = expect_status(D.request("GET", V0_PROFILES, token=tok), 200)
    # The bucket holds the burst (200) and refills in burst/rate = 2 s: q is what a window allows, so r <= q.
    assert r.headers.get("RateLimit-Policy") == '"app";q=200;w=2', \
        "default policy (100/s, burst 200) not advertised: %r" % r
    ratelimit(r)


def test_set_limits_changes_the_limit_live():
    cluster_skip("app rate limits are split over the live nodes (rate ÷ nodes, docs/operations.md): a node's policy "
                 "is not the app's")
    app, tok = unlimited_app(D, "rl-live")
    cid = app["client_id"]
    r = expect_status(D.request("GET", V0_PROFILES, token=tok), 200)
    assert "RateLimit" not in r.headers, r
    D.qodctl("app", "set-limits", cid, "--rate-limit", "2", "--burst", "2")
    with D.session() as s:
        rs = [s.request("GET", V0_PROFILES, token=tok) for _ in range(8)]
    assert rs[0].status == 200 and rs[0].headers.get("RateLimit-Policy") == '"app";q=2;w=1', \
        "set-limits --rate-limit 2 not applied to the next request: %r" % rs[0]
    assert 429 in [x.status for x in rs], "never limited after set-limits 2/s burst 2: %r" % rs
    D.qodctl("app", "set-limits", cid, "--rate-limit", "0")
    r = expect_status(D.request("GET", V0_PROFILES, token=tok), 200)
    assert "RateLimit" not in r.headers and "RateLimit-Policy" not in r.headers, \
        "set-limits --rate-limit 0 should lift the limit at once: %r" % r


# --------------------------------------------------------------------------------------------------------------
# Token endpoint limits


def test_token_endpoint_limited_per_client_with_slow_down_and_retry_after():
    cluster_skip("token-endpoint buckets are per qodd process (docs/operations.md, Limits): round-robin over the "
                 "nodes multiplies them")
    with Daemon(args=["--token-rate-client", "2", "--token-rate-ip", "1000"]) as d:
        a, b = create_app(d, name="tok-a"), create_app(d, name="tok-b")
        # Twelve requests: only if they took over 4 s in all could the bucket (burst 4, 2/s) refill for every one.
        rs = [token_response(d, a) for _ in range(12)]
        limited = [r for r in rs if r.status == 429]
        assert limited, "12 quick token requests at 2/s (burst 4) were never limited: %r" % [x.status for x in rs]
        assert all(r.status in (200, 429) for r in rs), rs
        assert [r.status for r in rs[:4]] == [200] * 4, "the burst of 4 should pass: %r" % [x.status for x in rs]
        r = limited[0]
        expect_oauth_error(r, 429, "slow_down")
        retry_after_seconds(r)
        expect_no_store(r, "token 429")
        # Another client is not affected.
        expect_status(token_response(d, b), 200)
        # Recovery.
        time.sleep(retry_after_seconds(r) + 0.05)
        expect_status(token_response(d, a), 200)


def test_token_endpoint_limits_wrong_secret_attempts():
    cluster_skip("token-endpoint buckets are per qodd process (docs/operations.md, Limits): round-robin over the "
                 "nodes multiplies them")
    with Daemon(args=["--token-rate-client", "2", "--token-rate-ip", "1000"]) as d:
        a = create_app(d, name="guess")
        bad = dict(a, client_secret="not-the-secret")
        rs = [token_response(d, bad) for _ in range(12)]
        statuses = [r.status for r in rs]
        assert set(statuses) <= {401, 429} and 429 in statuses, \
            "wrong-secret attempts were not limited: %r" % statuses
        for r in rs:
            if r.status == 401:
                expect_oauth_error(r, 401, "invalid_client")
            else:
                expect_oauth_error(r, 429, "slow_down")
                retry_after_seconds(r)
        # client_secret_post is the same bucket.
        r = d.request("POST", "/oauth2/token", form={"grant_type": "client_credentials", "client_id": a["client_id"],
                                                      "client_secret": "still-wrong"})
        expect_oauth_error(r, 429, "slow_down")


def test_token_endpoint_limited_per_source_address():
    cluster_skip("token-endpoint buckets are per qodd process (docs/operations.md, Limits): round-robin over the "
                 "nodes multiplies them")
    with Daemon(args=["--token-rate-client", "0", "--token-rate-ip", "2"]) as d:
        # Ten requests: only if they took over 3 s in all could the bucket (burst 4, 2/s) refill for every one.
        apps = [create_app(d, name="ip%d" % i) for i in range(10)]
        rs = [token_response(d, a) for a in apps]
        statuses = [r.status for r in rs]
        assert 429 in statuses, "10 clients from one address at 2/s (burst 4) were never limited: %r" % statuses
        r = [x for x in rs if x.status == 429][0]
        expect_oauth_error(r, 429, "slow_down")
        retry_after_seconds(r)
        # Another source address has its own bucket.
        st, _, body = request_from(d, OTHER_ADDR, "POST", "/oauth2/token", form={"grant_type": "client_credentials"},
                                   auth=(apps[0]["client_id"], apps[0]["client_secret"]))
        assert st == 200, "a client from %s was limited by 127.0.0.1's bucket: %d %r" % (OTHER_ADDR, st, body)


# --------------------------------------------------------------------------------------------------------------
# Quota


def test_quota_third_active_session_gets_429_quota_exceeded():
    app, tok = unlimited_app(D, "quota", extra=("--max-sessions", "2"))
    create_v0(D, tok)
    create_v1(D, tok)
    r = D.request("POST", V0_SESSIONS, body=v0_body(), token=tok)
    expect_camara_error(r, 429, "QUOTA_EXCEEDED")
    r = D.request("POST", V1_SESSIONS, body=v1_body(), token=tok)
    expect_camara_error(r, 429, "QUOTA_EXCEEDED")


# --------------------------------------------------------------------------------------------------------------
# Body, header and JSON nesting limits


def test_10mb_body_gets_413_and_daemon_stays_up():
    app, tok = unlimited_app(D, "big")
    big = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    for path in (V0_SESSIONS, V1_SESSIONS, "/oauth2/token"):
        try:
            r = D.request("POST", path, raw=big, headers={"Content-Type": "application/json"}, token=tok, timeout=30)
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            r = None  # closed by the server after (or instead of) the 413: acceptable
        if r is not None:
            expect_camara_error(r, 413, "PAYLOAD_TOO_LARGE")
        expect_healthy(D)
    create_v0(D, tok)


def test_10mb_chunked_body_gets_413():
    chunk = b" " * 65536
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
            "Connection: close\r\n\r\n" % V0_SESSIONS).encode()
    data = head + b"1\r\n{\r\n" + (b"10000\r\n" + chunk + b"\r\n") * 160 + b"1\r\n}\r\n0\r\n\r\n"
    raw = exchange(D, data, timeout=30)
    st = status_of(raw)
    assert st in (413, None), "a 10 MB chunked body got %r" % raw[:300]
    if st == 413:
        assert b'"PAYLOAD_TOO_LARGE"' in raw, raw[:400]
    expect_healthy(D)


def test_max_body_option_413_above_and_accepted_below():
    with Daemon(args=["--max-body", "2048", "--sandbox-delay-ms", "0"]) as d:
        app, tok = unlimited_app(d, "small")
        body = json.dumps(v0_body()).encode()
        over = body[:-1] + b" " * (3000 - len(body)) + b"}"
        under = body[:-1] + b" " * (2000 - len(body)) + b"}"
        assert len(over) == 3000 and len(under) == 2000
        expect_camara_error(post_raw(d, V0_SESSIONS, over, tok), 413, "PAYLOAD_TOO_LARGE")
        expect_status(post_raw(d, V0_SESSIONS, under, tok), 201)
        expect_healthy(d)


def _nested_bodies():
    return {
        "depth 100 arrays": b"[" * 100 + b"]" * 100,
        "depth 100 objects": b'{"a":' * 100 + b"1" + b"}" * 100,
        "100000 [": b"[" * 100000,
        "100000 {\"a\":": b'{"a":' * 20000,
        "deep inside device": json.dumps({"device": {"phoneNumber": "+15550000000"}})[:-1].encode()
        + b',"x":' + b"[" * 100 + b"]" * 100 + b"}",
    }


def test_deeply_nested_json_is_400_invalid_argument_without_crash():
    app, tok = unlimited_app(D, "nest")
    sid = str(uuid.uuid4())
    paths = [V0_SESSIONS, V1_SESSIONS, V1_RETRIEVE, V1_SESSIONS + "/" + sid + "/extend", SANDBOX_EVENTS % sid,
             PROFILES_RETRIEVE, ASSIGNMENTS, ASSIGNMENT_RETRIEVE]
    for name, raw in _nested_bodies().items():
        for path in paths:
            r = post_raw(D, path, raw, tok)
            b = expect_camara_error(r, 400, "INVALID_ARGUMENT")
            assert is_valid_utf8_json(r.body), (name, path, r)
            assert b["status"] == 400, (name, path, b)
        expect_healthy(D)


def test_100kb_of_headers_is_refused_and_daemon_stays_up():
    many = "".join("X-Pad-%d: %s\r\n" % (i, "a" * 1000) for i in range(100))
    one = "X-Huge: %s\r\n" % ("b" * 100000)
    tiny = "".join("X-%d: 1\r\n" % i for i in range(12000))
    for name, hdrs in (("100 x 1 KB", many), ("one 100 KB header", one), ("12000 small headers", tiny)):
        raw = exchange(D, ("GET /healthz HTTP/1.1\r\nHost: x\r\n%s\r\n" % hdrs).encode(), timeout=10)
        st = status_of(raw)
        assert st in (None, 400, 413, 431), "%s of headers got %r" % (name, raw[:300])
        expect_healthy(D)
    # Well under the limit of about 16 KiB (docs/errors.md): 8 KiB of headers is served.
    pad = "".join("X-Pad-%d: %s\r\n" % (i, "c" * 1000) for i in range(8))
    raw = exchange(D, ("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n%s\r\n" % pad).encode(),
                   timeout=10)
    assert status_of(raw) == 200, raw[:300]


# --------------------------------------------------------------------------------------------------------------
# Slow clients and connection limits


def test_idle_connection_is_closed_after_conn_timeout():
    with Daemon(args=["--conn-timeout", "2"]) as d:
        s = connect(d)
        try:
            t0 = time.monotonic()
            assert server_closed(s, scaled(6)), "an idle connection was still open after 6 s (--conn-timeout 2)"
            took = time.monotonic() - t0
            assert took <= scaled(3.5), "idle connection closed after %.1fs (--conn-timeout 2)" % took
        finally:
            s.close()
        expect_healthy(d)


def test_slowloris_headers_are_cut_off():
    """A client that sends its request line and headers one byte a second never goes idle for the timeout, yet
    must be disconnected: a request has a deadline, not only an inactivity timer."""
    with Daemon(args=["--conn-timeout", "2"]) as d:
        data = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 200
        took = trickle(d, data, interval=1.0, give_up=scaled(8))
        assert took is not None, "a slowloris client (1 byte/s) was still connected after 8 s (--conn-timeout 2)"
        assert took <= scaled(4.5), "slowloris client cut off only after %.1fs (--conn-timeout 2)" % took
        expect_healthy(d)


def test_slow_body_is_cut_off():
    """Complete headers, then the body one byte a second (slow POST): disconnected like a slowloris client."""
    with Daemon(args=["--conn-timeout", "2"]) as d:
        head = ("POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n"
                % V0_SESSIONS).encode()
        s = connect(d)
        try:
            s.sendall(head)
            t0 = time.monotonic()
            took = None
            for _ in range(int(scaled(10))):
                try:
                    s.sendall(b" ")
                except OSError:
                    took = time.monotonic() - t0
                    break
                if server_closed(s, 1.0):
                    took = time.monotonic() - t0
                    break
        finally:
            s.close()
        assert took is not None, "a slow body (1 byte/s) was still being read after 10 s (--conn-timeout 2)"
        # The whole request's deadline is twice the timeout (4 s from the headers), checked every 250 ms: the
        # bound leaves a loaded machine 1.25 s, and a body without a deadline would be read for the full 10 s.
        assert took <= scaled(5.5), "slow body cut off only after %.1fs (--conn-timeout 2)" % took
        expect_healthy(d)


def test_per_address_connection_limit():
    # The limited client is an address nothing else uses. The harness's own /healthz probes come from 127.0.0.1,
    # and qodd may count a probe's connection for a moment after the probe closed it: at 127.0.0.1 the 5th held
    # connection could be refused as a 6th.
    limited = LIMITED_ADDR
    with Daemon(args=["--max-conns-per-ip", "5"]) as d:
        held = [keepalive_conn(d, limited) for _ in range(5)]
        try:
            # The 6th connection from the limited address is refused or closed without being served.
            served = None
            try:
                st, _, body = request_from(d, limited, "GET", "/healthz", timeout=3)
                served = (st, body)
            except (OSError, http.client.HTTPException):
                pass
            assert served is None or served[0] != 200, \
                "a 6th connection from %s was served with --max-conns-per-ip 5: %r" % (limited, served)
            # Another client address is still served.
            st, _, body = request_from(d, OTHER_ADDR, "GET", "/healthz")
            assert st == 200, "client %s not served while %s is at its limit: %d %r" % (OTHER_ADDR, limited, st,
                                                                                      body)
            # The held connections still work.
            held[0].request("GET", "/healthz")
            r = held[0].getresponse()
            r.read()
            assert r.status == 200, r.status
        finally:
            for c in held:
                c.close()

        def served_again():
            try:
                return request_from(d, limited, "GET", "/healthz", timeout=2)[0] == 200
            except (OSError, http.client.HTTPException):
                return False
        wait_until(served_again, timeout=5, what="%s to be served again after closing its connections" % limited)


def test_many_connections_get_503_with_retry_after_then_recover():
    with Daemon(args=["--max-conns", "40", "--max-conns-per-ip", "0"]) as d:
        app, tok = unlimited_app(d, "busy")
        # 37 idle connections and the request make 38, over the shedding mark (36, 90% of 40), and leave room
        # under the limit of 40 for the /healthz below and for a probe connection qodd may not yet have seen close.
        socks = [connect(d) for _ in range(37)]
        shed = {}
        try:
            def shed_now():
                try:
                    r = d.request("GET", V0_PROFILES, token=tok, timeout=3)
                except (OSError, http.client.HTTPException) as e:
                    shed["refused"] = repr(e)  # refused outright: acceptable
                    return True
                assert r.status in (200, 503), "while busy: %r" % r
                if r.status == 503:
                    shed["resp"] = r
                    return True
                return False
            wait_until(shed_now, timeout=5, what="a request to be shed with 38 of 40 connections open")
            r = shed.get("resp")
            if r is not None:
                expect_camara_error(r, 503, "UNAVAILABLE")
                assert r.json()["message"] == "The server is overloaded. Retry later.", r.json()
                retry_after_seconds(r)
                # Probes and scrapes still answer while the API sheds load (docs/errors.md).
                expect_status(d.request("GET", "/healthz", timeout=3), 200)
            assert d.running(), "qodd died under 37 idle connections"
        finally:
            for s in socks:
                s.close()

        def normal():
            try:
                return d.request("GET", V0_PROFILES, token=tok, timeout=3).status == 200
            except (OSError, http.client.HTTPException):
                return False
        wait_until(normal, timeout=5, what="normal service after the idle connections closed")
        expect_status(token_response(d, app), 200)


# --------------------------------------------------------------------------------------------------------------
# Secrets and files


def _find_secrets(blob, needles):
    return sorted(name for name, v in needles.items() if v in blob)


def test_secrets_absent_from_log_and_database():
    recv = WebhookReceiver()
    try:
        with Daemon(args=["--sandbox-delay-ms", "0"]) as d:
            app = create_app(d, name="secretive", extra=("--rate-limit", "0"))
            tok = get_token(d, app)
            # client_secret_post as well as Basic, and a failed attempt with a wrong secret.
            r = d.request("POST", "/oauth2/token", form={"grant_type": "client_credentials",
                                                         "client_id": app["client_id"],
                                                         "client_secret": app["client_secret"]})
            tok2 = expect_status(r, 200).json()["access_token"]
            expect_status(token_response(d, dict(app, client_secret=app["client_secret"][::-1])), 401)
            expect_status(d.request("GET", V0_PROFILES, token=token_flip_signature(tok)), 401)
            s0 = create_v0(d, tok, v0_body(url=recv.url("/v0"),
                                           webhook={"notificationUrl": recv.url("/v0"),
                                                    "notificationAuthToken": AUTH_TOKEN}))
            sink_token = "sink-secret-" + uuid.uuid4().hex
            s1 = create_v1(d, tok, v1_body(sink=recv.url("/v1"), sinkCredential={
                "credentialType": "ACCESSTOKEN", "accessToken": sink_token,
                "accessTokenExpiresUtc": "2099-01-01T00:00:00Z", "accessTokenType": "bearer"}))
            # The callbacks went out with the tokens (so the daemon did keep them), then rotate the secrets.
            recv.wait_until(lambda hs: any(h.path == "/v0" for h in hs) and any(h.path == "/v1" for h in hs),
                            timeout=10, what="a v0 and a v1 callback")
            auths = {h.path: h.headers.get("Authorization") for h in recv.requests}
            assert auths.get("/v0") == "Bearer " + AUTH_TOKEN, auths
            assert auths.get("/v1") == "Bearer " + sink_token, auths
            rot = d.qodctl_json("app", "rotate-webhook-secret", app["client_id"], "--json")
            rs = d.qodctl_json("app", "rotate-secret", app["client_id"], "--json")
            whsec_new = rot["webhook_secret"]
            key = app["webhook_secret"][len("whsec_"):]
            needles = {
                "client_secret": app["client_secret"],
                "rotated client_secret": rs["client_secret"],
                "webhook_secret": app["webhook_secret"],
                "webhook secret key (base64)": key,
                "webhook secret key (raw)": base64.b64decode(key),
                "rotated webhook_secret key": whsec_new[len("whsec_"):],
                "access token": tok,
                "access token signature": jwt_split(tok)[2],
                "second access token": tok2,
                "notificationAuthToken": AUTH_TOKEN,
                "sinkCredential.accessToken": sink_token,
            }
            needles = {k: (v if isinstance(v, bytes) else v.encode()) for k, v in needles.items()}

            def db_dump():
                """On PostgreSQL: every row of every table of the daemon's database, as text."""
                tables = [r[0] for r in psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", d.pg_uri)]
                return "\n".join(r[0] for t in tables for r in psql('SELECT t::text FROM "%s" t' % t, d.pg_uri))

            def scan(when):
                found = {}
                for f in sorted(os.listdir(d.data_dir)):
                    p = os.path.join(d.data_dir, f)
                    if not stat.S_ISREG(os.lstat(p).st_mode) or f in ("secrets.key", "signing-key.pem"):
                        continue
                    with open(p, "rb") as fh:
                        hits = _find_secrets(fh.read(), needles)
                    if hits:
                        found[f] = hits
                with open(d.log_path, "rb") as fh:
                    hits = _find_secrets(fh.read(), needles)
                if hits:
                    found["qodd.log (--log-level debug)"] = hits
                if PG:
                    hits = _find_secrets(db_dump().encode(), needles)
                    if hits:
                        found["the PostgreSQL database"] = hits
                assert not found, "secrets found %s: %r" % (when, found)
                files = set(os.listdir(d.data_dir))
                assert PG or "qod.db" in files, files
                return files

            files = scan("while running")
            # The sessions are really in the database (so the scan looked at the right file).
            if PG:
                db = db_dump().encode()
            else:
                assert "qod.db-wal" in files, "expected a WAL file while running: %r" % files
                with open(os.path.join(d.data_dir, "qod.db"), "rb") as fh:
                    db = fh.read()
                with open(os.path.join(d.data_dir, "qod.db-wal"), "rb") as fh:
                    db += fh.read()
            assert s0["sessionId"].encode() in db and s1["sessionId"].encode() in db, \
                "the sessions are not in qod.db/qod.db-wal: the scan proves nothing"
            d.stop()  # checkpoint: the WAL is folded into qod.db
            scan("after a clean stop")
    finally:
        recv.close()


def test_data_dir_and_key_files_have_safe_modes():
    with Daemon(make_data_dir=False) as d:
        create_app(d, name="modes")
        mode = lambda p: stat.S_IMODE(os.stat(p).st_mode)  # noqa: E731
        assert mode(d.data_dir) == 0o700, "data dir created %o" % mode(d.data_dir)
        for f in ("secrets.key", "signing-key.pem") + (() if PG else ("qod.db",)):
            assert mode(os.path.join(d.data_dir, f)) == 0o600, "%s is %o" % (f, mode(os.path.join(d.data_dir, f)))
        sock = os.path.join(d.data_dir, "qodd.sock")
        assert stat.S_ISSOCK(os.stat(sock).st_mode), "qodd.sock is not a socket"
        assert mode(sock) == 0o600, "qodd.sock is %o" % mode(sock)
    # An existing, too open directory is tightened.
    base = tempfile.mkdtemp(prefix="qod-e2e-modes-")
    try:
        data = os.path.join(base, "data")
        os.mkdir(data)
        os.chmod(data, 0o755)
        with Daemon(data_dir=data):
            assert stat.S_IMODE(os.stat(data).st_mode) == 0o700, "existing data dir left %o" % \
                stat.S_IMODE(os.stat(data).st_mode)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Cache-Control


def test_cache_control_no_store_on_token_and_session_responses():
    app, tok = unlimited_app(D, "nostore")
    expect_no_store(expect_status(token_response(D, app), 200), "token 200")
    expect_no_store(expect_status(token_response(D, dict(app, client_secret="x")), 401), "token 401")
    s0 = D.request("POST", V0_SESSIONS, body=v0_body(), token=tok)
    expect_no_store(expect_status(s0, 201), "v0 POST 201")
    sid0 = s0.json()["sessionId"]
    expect_no_store(expect_status(D.request("GET", V0_SESSIONS + "/" + sid0, token=tok), 200), "v0 GET 200")
    expect_no_store(expect_status(D.request("GET", V0_SESSIONS + "/" + str(uuid.uuid4()), token=tok), 404),
                    "v0 GET 404")
    expect_no_store(expect_status(D.request("POST", V0_SESSIONS, body={"device": {}}, token=tok), 400),
                    "v0 POST 400")
    s1 = D.request("POST", V1_SESSIONS, body=v1_body(), token=tok)
    expect_no_store(expect_status(s1, 201), "v1 POST 201")
    sid1 = s1.json()["sessionId"]
    expect_no_store(expect_status(D.request("GET", V1_SESSIONS + "/" + sid1, token=tok), 200), "v1 GET 200")
    dev = s1.json()["device"]
    expect_no_store(expect_status(D.request("POST", V1_RETRIEVE, body={"device": dev}, token=tok), 200),
                    "v1 retrieve 200")
    expect_no_store(D.request("DELETE", V0_SESSIONS + "/" + sid0, token=tok), "v0 DELETE")
    expect_no_store(D.request("DELETE", V1_SESSIONS + "/" + sid1, token=tok), "v1 DELETE")
    a = D.request("POST", ASSIGNMENTS, body={"device": {"phoneNumber": new_phone()}, "qosProfile": "QOS_L"},
                  token=tok)
    expect_no_store(expect_status(a, 201), "assignment POST 201")
    aid = a.json()["assignmentId"]
    expect_no_store(expect_status(D.request("GET", ASSIGNMENTS + "/" + aid, token=tok), 200), "assignment GET 200")
    expect_no_store(D.request("DELETE", ASSIGNMENTS + "/" + aid, token=tok), "assignment DELETE")


# --------------------------------------------------------------------------------------------------------------
# TLS


def test_tls_listener_serves_https_with_https_issuer():
    tmp = tempfile.mkdtemp(prefix="qod-e2e-tls-")
    try:
        cert, key = make_cert(tmp)
        with Daemon(args=["--tls-cert", cert, "--tls-key", key], start=False) as d:
            d.start(wait=False)
            ctx = ssl.create_default_context(cafile=cert)
            ctx.check_hostname = False  # the certificate names localhost; we connect to 127.0.0.1

            def get(path):
                conn = http.client.HTTPSConnection(d.host, d.port, context=ctx, timeout=scaled(5))
                try:
                    conn.request("GET", path)
                    r = conn.getresponse()
                    return r.status, r.read()
                finally:
                    conn.close()

            def healthy():
                if not d.running():
                    raise AssertionError("qodd exited: %s" % d.log_tail(20))
                try:
                    return get("/healthz")[0] == 200
                except (OSError, http.client.HTTPException):
                    return False
            wait_until(healthy, timeout=15, what="GET https://127.0.0.1/healthz")
            st, body = get("/.well-known/openid-configuration")
            assert st == 200, (st, body)
            issuer = json.loads(body)["issuer"]
            assert issuer.startswith("https://"), "issuer %r with TLS on" % issuer
            # Plain HTTP on the TLS port gets no HTTP answer and does not hurt the daemon.
            raw = exchange(d, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", timeout=3)
            assert status_of(raw) in (None, 400), raw[:200]
            assert get("/healthz")[0] == 200
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_tls_cert_without_key_fails_start_with_one_line_naming_tls_cert():
    tmp = tempfile.mkdtemp(prefix="qod-e2e-tls-")
    try:
        cert, key = make_cert(tmp)
        for args in (["--tls-cert", cert], ["--tls-key", key]):
            data = os.path.join(tmp, "data")
            p = run_qodd(["--listen", "127.0.0.1:%d" % free_port(), "--data", data] + args)
            assert p.returncode != 0, "qodd started with only %s" % args[0]
            lines = [l for l in p.stderr.splitlines() if l.strip()]
            assert any("tls-cert" in l for l in lines), "stderr does not name tls-cert: %r" % p.stderr
            # Like every other bad option (docs/operations.md): exit code 2, one stderr line, nothing created.
            assert len(lines) == 1, "expected one stderr line for %s, got %r" % (args[0], p.stderr)
            assert p.returncode == 2, "a bad option combination exits 2, got %d" % p.returncode
            assert not os.path.exists(os.path.join(data, "qod.db")), \
                "%s alone was refused only after the data directory and database were created" % args[0]
            shutil.rmtree(data, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# Object-level authorization


def _two_apps_and_sessions():
    a, ta = unlimited_app(D, "owner")
    b, tb = unlimited_app(D, "intruder")
    phone0, phone1, phone2 = new_phone(), new_phone(), new_phone()
    s0 = create_v0(D, ta, v0_body(phone=phone0))
    s1 = create_v1(D, ta, v1_body(phone=phone1))
    s2 = create_assignment(D, ta, phone2)

    def available(path, field):
        r = D.request("GET", path, token=ta)
        return r.status == 200 and r.json()[field] == "AVAILABLE"
    for path, field in ((V0_SESSIONS + "/" + s0["sessionId"], "qosStatus"),
                        (V1_SESSIONS + "/" + s1["sessionId"], "qosStatus"),
                        (ASSIGNMENTS + "/" + s2["assignmentId"], "status")):
        wait_until(lambda: available(path, field), timeout=5, what="A's %s to become AVAILABLE" % path)
    return a, ta, b, tb, s0, s1, s2, (phone0, phone1, phone2)


def test_cross_app_access_is_denied_on_every_session_endpoint():
    a, ta, b, tb, s0, s1, s2, phones = _two_apps_and_sessions()
    id0, id1, id2 = s0["sessionId"], s1["sessionId"], s2["assignmentId"]
    calls = [
        ("GET", V0_SESSIONS + "/" + id0, None),
        ("DELETE", V0_SESSIONS + "/" + id0, None),
        ("POST", SANDBOX_EVENTS % id0, {"qosStatus": "UNAVAILABLE"}),
        ("GET", V1_SESSIONS + "/" + id1, None),
        ("DELETE", V1_SESSIONS + "/" + id1, None),
        ("POST", V1_SESSIONS + "/" + id1 + "/extend", {"requestedAdditionalDuration": 10}),
        ("POST", SANDBOX_EVENTS % id1, {"qosStatus": "UNAVAILABLE"}),
        # QoS Provisioning assignments.
        ("GET", ASSIGNMENTS + "/" + id2, None),
        ("DELETE", ASSIGNMENTS + "/" + id2, None),
        ("POST", SANDBOX_EVENTS % id2, {"qosStatus": "UNAVAILABLE"}),
    ]
    # The other surface's path with the same ids: that API knows no such session, whoever asks.
    elsewhere = [
        ("GET", V1_SESSIONS + "/" + id0, None),
        ("GET", V0_SESSIONS + "/" + id1, None),
        ("DELETE", V1_SESSIONS + "/" + id0, None),
        ("DELETE", V0_SESSIONS + "/" + id1, None),
    ]
    for (method, path, body), (status, code) in [(c, (403, "PERMISSION_DENIED")) for c in calls] + \
            [(c, (404, "NOT_FOUND")) for c in elsewhere]:
        r = D.request(method, path, body=body, token=tb)
        expect_camara_error(r, status, code)
        for secret in [a["client_id"].encode()] + [p.encode() for p in phones]:
            assert secret not in r.body, "%s %s leaks A's data to B: %r" % (method, path, r.body)
    # Nothing changed for A.
    g0 = expect_status(D.request("GET", V0_SESSIONS + "/" + id0, token=ta), 200).json()
    g1 = expect_status(D.request("GET", V1_SESSIONS + "/" + id1, token=ta), 200).json()
    assert g0["qosStatus"] == "AVAILABLE", g0
    assert g1["qosStatus"] == "AVAILABLE" and g1["duration"] == 60, g1
    g2 = expect_status(D.request("GET", ASSIGNMENTS + "/" + id2, token=ta), 200).json()
    assert g2["status"] == "AVAILABLE", g2


def test_cross_app_retrieve_returns_nothing_of_the_other_app():
    a, ta, b, tb, s0, s1, s2, (phone0, phone1, phone2) = _two_apps_and_sessions()
    # A's v0 session belongs to the v0 API: CAMARA v1's retrieve does not list it, for A either.
    for phone, sid in ((phone0, None), (phone1, s1["sessionId"])):
        r = expect_status(D.request("POST", V1_RETRIEVE, body={"device": {"phoneNumber": phone}}, token=tb), 200)
        assert r.json() == [], "B retrieved A's session for %s: %r" % (phone, r.body)
        mine = expect_status(D.request("POST", V1_RETRIEVE, body={"device": {"phoneNumber": phone}}, token=ta), 200)
        assert [x["sessionId"] for x in mine.json()] == ([sid] if sid else []), "A's own retrieve: %r" % mine.body
    dev = {"device": {"phoneNumber": phone2}}
    r = D.request("POST", ASSIGNMENT_RETRIEVE, body=dev, token=tb)
    expect_camara_error(r, 404, "NOT_FOUND")
    assert s2["assignmentId"].encode() not in r.body, r.body
    mine = expect_status(D.request("POST", ASSIGNMENT_RETRIEVE, body=dev, token=ta), 200).json()
    assert mine["assignmentId"] == s2["assignmentId"], mine


def test_qodctl_session_list_filters_by_app():
    cluster_skip("qodctl session list/show sees only the sessions its node holds (docs/operations.md)")
    a, ta, b, tb, s0, s1, s2, phones = _two_apps_and_sessions()
    ids = {s0["sessionId"], s1["sessionId"], s2["assignmentId"]}
    listed_b = D.qodctl_json("session", "list", "--app", b["client_id"], "--json")
    assert listed_b == [], "session list --app B shows: %r" % listed_b
    text_b = D.qodctl("session", "list", "--app", b["client_id"]).stdout
    assert not any(i in text_b for i in ids), text_b
    listed_a = D.qodctl_json("session", "list", "--app", a["client_id"], "--json")
    assert {x["sessionId"] for x in listed_a} == ids, listed_a
    assert all(x["client_id"] == a["client_id"] for x in listed_a), listed_a


def create_v0_with_key(d, tok, key):
    r = d.request("POST", V0_SESSIONS, body=v0_body(), token=tok, headers={"Idempotency-Key": key})
    return expect_status(r, 201).json()


def test_idempotency_keys_are_per_app():
    """App B reusing app A's Idempotency-Key neither replays A's session nor learns that A used the key."""
    a, ta = unlimited_app(D, "idem-a")
    b, tb = unlimited_app(D, "idem-b")
    key = "shared-key-" + uuid.uuid4().hex
    sa = create_v0_with_key(D, ta, key)
    # The same body (same device) would be a CONFLICT for the device, so B uses another device.
    r = expect_status(D.request("POST", V0_SESSIONS, body=v0_body(), token=tb, headers={"Idempotency-Key": key}),
                      201)
    assert r.json()["sessionId"] != sa["sessionId"] and "Idempotent-Replayed" not in r.headers, \
        "B got A's session back for A's Idempotency-Key: %r" % r


# --------------------------------------------------------------------------------------------------------------
# Strict JSON


def test_duplicate_keys_are_400():
    app, tok = unlimited_app(D, "dup")
    phone = new_phone()
    url = RECV.url("/cb")
    sid = str(uuid.uuid4())
    cases = [
        (V0_SESSIONS, '{"device":{"phoneNumber":"%s"},"qosProfile":"QOS_L","qosProfile":"QOS_S","duration":60,'
                      '"webhook":{"notificationUrl":"%s"}}' % (phone, url)),
        (V0_SESSIONS, '{"device":{"phoneNumber":"%s","phoneNumber":"%s"},"qosProfile":"QOS_L","duration":60,'
                      '"webhook":{"notificationUrl":"%s"}}' % (phone, new_phone(), url)),
        (V0_SESSIONS, '{"device":{"phoneNumber":"%s"},"qosProfile":"QOS_L","duration":60,'
                      '"webhook":{"notificationUrl":"%s","notificationUrl":"http://127.0.0.1:1/x"}}' % (phone, url)),
        (V1_SESSIONS, '{"device":{"phoneNumber":"%s"},"applicationServer":{"ipv4Address":"198.51.100.1",'
                      '"ipv4Address":"198.51.100.2"},"qosProfile":"QOS_L","duration":60}' % phone),
        (V1_SESSIONS, '{"device":{"phoneNumber":"%s"},"applicationServer":{"ipv4Address":"198.51.100.1"},'
                      '"qosProfile":"QOS_L","duration":60,"duration":61}' % phone),
        (V1_RETRIEVE, '{"device":{"phoneNumber":"%s"},"device":{"phoneNumber":"%s"}}' % (phone, new_phone())),
        (V1_SESSIONS + "/" + sid + "/extend", '{"requestedAdditionalDuration":10,"requestedAdditionalDuration":20}'),
        (PROFILES_RETRIEVE, '{"name":"QOS_L","name":"QOS_S"}'),
    ]
    for path, raw in cases:
        r = post_raw(D, path, raw.encode(), tok)
        expect_camara_error(r, 400, "INVALID_ARGUMENT")
    # Nothing was created for the phone used in the v0/v1 cases.
    r = expect_status(D.request("POST", V1_RETRIEVE, body={"device": {"phoneNumber": phone}}, token=tok), 200)
    assert r.json() == [], r.body


def test_nul_in_json_strings_is_400():
    app, tok = unlimited_app(D, "nul")
    url = RECV.url("/cb")
    base = '{"device":{"phoneNumber":"%s"},"qosProfile":"QOS_L","duration":60,"webhook":{"notificationUrl":"%s",' \
           '"notificationAuthToken":"%s"}}'
    for tokval in (b"abc\x00defghijklmnopqrstuvwxyz", b"abc\\u0000defghijklmnopqrstuvwxyz"):
        raw = (base % (new_phone(), url, "TOKEN")).encode().replace(b"TOKEN", tokval)
        expect_camara_error(post_raw(D, V0_SESSIONS, raw, tok), 400, "INVALID_ARGUMENT")
    for raw in (b'{"name":"QOS_L\x00"}', b'{"name":"QOS_L\\u0000"}', b'{"name":"QOS_L"}\x00',
                b'{"name\x00":"QOS_L"}'):
        expect_camara_error(post_raw(D, PROFILES_RETRIEVE, raw, tok), 400, "INVALID_ARGUMENT")
    expect_healthy(D)


INVALID_UTF8 = {
    "lone 0xff": b"\xff",
    "stray continuation byte": b"\x80",
    "overlong '/'": b"\xc0\xaf",
    "UTF-8-encoded surrogate": b"\xed\xa0\x80",
    "truncated 3-byte sequence": b"\xe2\x82",
    "beyond U+10FFFF": b"\xf4\x90\x80\x80",
}


def _utf8_cases(bad):
    """(path, raw body) pairs that put the byte sequence `bad` into every kind of string the API reads."""
    url = RECV.url("/cb").encode()
    sid = str(uuid.uuid4()).encode()
    phone = new_phone().encode()
    v0 = b'{"device":{"phoneNumber":"%s"},"qosProfile":"QOS_L","duration":60,"webhook":{"notificationUrl":"%s"}}' \
        % (phone, url)
    v1 = b'{"device":{"phoneNumber":"%s"},"applicationServer":{"ipv4Address":"198.51.100.1"},"qosProfile":"QOS_L",' \
         b'"duration":60}' % phone
    cred = b',"sinkCredential":{"credentialType":"ACCESSTOKEN","accessToken":"tok-%s","accessTokenType":"bearer",' \
           b'"accessTokenExpiresUtc":"2099-01-01T00:00:00Z"}'
    return [
        (V0_SESSIONS, v0.replace(b'"QOS_L"', b'"QOS_L' + bad + b'"')),
        (V0_SESSIONS, v0.replace(url, url + bad)),
        (V0_SESSIONS, v0[:-2] + b',"notificationAuthToken":"abcdefghijklmnopqrstuvwxyz' + bad + b'"}}'),
        (V0_SESSIONS, v0.replace(b'"phoneNumber":"%s"' % phone,
                                 b'"networkAccessIdentifier":"user' + bad + b'@example.com"')),
        (V0_SESSIONS, v0[:-1] + b',"x' + bad + b'":1}'),
        (V1_SESSIONS, v1.replace(b'"QOS_L"', b'"QOS_L' + bad + b'"')),
        (V1_SESSIONS, v1[:-1] + b',"sink":"' + url + bad + b'"}'),
        (V1_SESSIONS, v1[:-1] + b',"sink":"' + url + b'"' + cred % bad + b'}'),
        (V1_SESSIONS, v1.replace(b'"198.51.100.1"', b'"198.51.100.1' + bad + b'"')),
        (V1_RETRIEVE, b'{"device":{"networkAccessIdentifier":"user' + bad + b'@example.com"}}'),
        (V1_SESSIONS + "/" + sid.decode() + "/extend", b'{"requestedAdditionalDuration":10,"' + bad + b'":1}'),
        (SANDBOX_EVENTS % sid.decode(), b'{"qosStatus":"AVAILABLE' + bad + b'"}'),
        (PROFILES_RETRIEVE, b'{"name":"QOS_' + bad + b'"}'),
        (PROFILES_RETRIEVE, b'{"status":"ACTIVE' + bad + b'"}'),
        (ASSIGNMENTS, b'{"device":{"phoneNumber":"%s"},"qosProfile":"QOS_L' % phone + bad + b'"}'),
        (ASSIGNMENTS, b'{"device":{"phoneNumber":"%s"},"qosProfile":"QOS_L","sink":"' % phone + url + bad + b'"}'),
        (ASSIGNMENT_RETRIEVE, b'{"device":{"networkAccessIdentifier":"user' + bad + b'@example.com"}}'),
    ]


def test_invalid_utf8_in_json_strings_is_400():
    """RFC 8259 §8.1: JSON text is UTF-8. Every string the API reads (values and member names, on every endpoint
    that takes a body) is refused with 400 when it holds invalid UTF-8, never accepted or stored."""
    app, tok = unlimited_app(D, "utf8")
    accepted = {}
    for name, bad in INVALID_UTF8.items():
        for path, raw in _utf8_cases(bad):
            r = post_raw(D, path, raw, tok)
            # Only the status is judged here: whether the error body quoting the bytes stays valid UTF-8 is
            # test_error_bodies_are_valid_utf8_json_when_they_quote_the_client's concern.
            if r.status != 400 or b'"status":400' not in r.body:
                accepted["%s in %r" % (name, raw[:90])] = "%d %r" % (r.status, r.body[:80])
    assert not accepted, "invalid UTF-8 in a JSON string was not refused with 400: %r" % accepted
    expect_healthy(D)


def test_error_bodies_are_valid_utf8_json_when_they_quote_the_client():
    """Error messages quote parts of the request (an unknown member, a profile name, cut at 64 bytes): the error
    body itself must stay valid UTF-8 JSON, whatever the client sent."""
    app, tok = unlimited_app(D, "quote")
    long_name = "Q" * 63 + "\u00e9"  # valid UTF-8: a 2-byte character straddling byte 64
    bad_bodies = {
        "qosProfile cut inside a character": json.dumps(v0_body(qosProfile=long_name)).encode(),
        "unknown member cut inside a character": json.dumps(dict(v0_body(), **{long_name: 1})).encode(),
        "qosProfile with invalid UTF-8": json.dumps(v0_body(qosProfile="QOS_X")).encode().replace(b"QOS_X",
                                                                                              b"QOS_\xff"),
        "unknown member with invalid UTF-8": json.dumps(dict(v0_body(), zz=1)).encode().replace(b'"zz"', b'"\xc3("'),
    }
    broken = {}
    for name, raw in bad_bodies.items():
        r = post_raw(D, V0_SESSIONS, raw, tok)
        assert r.status == 400, "%s: %r" % (name, r)
        if not is_valid_utf8_json(r.body):
            broken[name] = r.body
    assert not broken, "error bodies that are not valid UTF-8 JSON: %r" % broken


# --------------------------------------------------------------------------------------------------------------
# The admin socket: every command, every argument of the wrong type or size


ADMIN_COMMANDS = ("test.clock", "test.hold-rescans", "consent.approve", "consent.list", "deliveries.list",
                  "deliveries.retry", "deliveries.gone", "deliveries.forget-gone", "session.list", "session.show",
                  "device.add", "device.list", "device.remove", "app.create", "app.list", "app.show", "app.delete",
                  "app.rotate-secret", "app.set-limits", "app.rotate-webhook-secret")
ADMIN_ARGS = ("all", "auth_req_id", "client_id", "env", "event_id", "ineligible", "name", "offset_ms", "phone",
              "release", "scopes", "session_id", "state", "url", "limit", "rate_limit", "max_sessions")
ADMIN_BAD_VALUES = (None, True, -1, 0, 2 ** 63, -2 ** 63, 1e308, 0.5, "", "\u0000", "x" * 60000, "\u00e9\ud83d\ude00",
                    "../../etc/passwd", "' OR 1=1 --", [], [1, "a"], {}, {"a": {"b": {"c": 1}}})


def admin_exchange(d, lines):
    """Sends raw request lines on one admin connection; returns the reply lines (bytes), one per request."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(scaled(20))
        s.connect(d.socket_path)
        replies, buf = [], b""
        for line in lines:
            s.sendall(line + b"\n")
            while b"\n" not in buf:
                chunk = s.recv(65536)
                assert chunk, "the admin socket closed after %d replies, on %r" % (len(replies), line[:200])
                buf += chunk
            reply, buf = buf.split(b"\n", 1)
            replies.append(reply)
        return replies


def test_admin_socket_answers_every_malformed_command_in_its_shape_and_keeps_the_data():
    # Requests an operator's script could send by mistake: each command with no arguments, arguments of every
    # wrong type, empty, over-long, NUL, non-ASCII and nested values. Each gets one JSON line, {"ok":false,
    # "error":"..."} or a result; none kills the daemon, and the app, device and session made before are intact.
    d = Daemon(args=["--sandbox-delay-ms", "0"])
    try:
        app, tok = new_app(d, name="keeper")
        phone = new_phone()
        add_device(d, phone)
        r = expect_status(d.request("POST", V0_SESSIONS, body=v0_body(phone), token=tok), 201)
        sid = r.json()["sessionId"]
        before = (d.qodctl_json("app", "show", app["client_id"], "--json"),
                  d.request("GET", V0_SESSIONS + "/" + sid, token=tok).json())
        lines = [b"", b"{", b"[]", b"null", b'{"cmd":5}', b'{"cmd":"app.list","args":5}', b"\xff\xfe",
                 b'{"cmd":"app.list","cmd":"app.list"}', b'{"args":{}}']
        for cmd in ADMIN_COMMANDS:
            lines.append(json.dumps({"cmd": cmd}).encode())
            for args in ("x", 1, [], None):
                lines.append(json.dumps({"cmd": cmd, "args": args}).encode())
            for name in ADMIN_ARGS:
                for v in ADMIN_BAD_VALUES:
                    lines.append(json.dumps({"cmd": cmd, "args": {name: v}}).encode())
        replies = admin_exchange(d, lines)
        bad = []
        for line, reply in zip(lines, replies):
            try:
                o = json.loads(reply)
                ok = isinstance(o, dict) and (o.get("ok") is True or (
                    o.get("ok") is False and isinstance(o.get("error"), str) and o["error"]))
            except ValueError:
                ok = False
            if not ok:
                bad.append((line[:120], reply[:200]))
        assert not bad, "%d replies not in the documented shape, e.g. %r" % (len(bad), bad[:5])
        assert d.proc.poll() is None, d.log_tail(30)
        # An over-long request is refused on its own connection, which the daemon then closes.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(scaled(20))
            s.connect(d.socket_path)
            s.sendall(json.dumps({"cmd": "app.list", "args": {"name": "x" * 70000}}).encode() + b"\n")
            reply = s.recv(65536)
        o = json.loads(reply.split(b"\n", 1)[0])
        assert o["ok"] is False and o["error"], o
        after = (d.qodctl_json("app", "show", app["client_id"], "--json"),
                 d.request("GET", V0_SESSIONS + "/" + sid, token=tok).json())
        assert after == before, (before, after)
        assert phone in d.qodctl("device", "list").stdout
    finally:
        d.close()


run(globals())
