"""Foundation: daemon options and config, data directory, health/metrics, x-correlator, error shapes, qodctl app
management, OAuth2 client credentials with ES256 JWTs, token checks on protected routes, restarts and logs.

Black-box: every test talks to a real build/qodd (one shared daemon started in setup_module, plus dedicated daemons
where a test needs special options or restarts) over HTTP, the admin socket (qodctl) or the file system.
"""
import base64
import os
import shutil
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

# Any route that needs a `qod` token. The sessions API comes with the next issue; until then the route may answer
# 404, which still proves the token was accepted (it is neither 401 nor 403).
PROTECTED = "/camara/qod/v0/sessions/00000000-0000-4000-8000-000000000000"

D = None      # the shared daemon
APP = None    # a sandbox app with the default scopes on D
TOKEN = None  # a token of APP


def setup_module():
    global D, APP, TOKEN
    D = Daemon()
    APP = create_app(D, name="shared")
    TOKEN = get_token(D, APP)


def teardown_module():
    D.close()


def expect_accepted(resp):
    """The token got through authentication and authorization (the route itself may still say 404)."""
    assert resp.status not in (401, 403) and resp.status < 500, "token not accepted: %r" % resp


def daemon_key(d):
    """The daemon's signing key, read from its data directory (for minting tokens the daemon should judge)."""
    with open(os.path.join(d.data_dir, "signing-key.pem")) as f:
        return EcKey.from_pem(f.read())


def jwks(d):
    r = expect_status(d.request("GET", "/.well-known/jwks.json"), 200)
    return r.json()


def mint(d, base_token, **claims):
    """A token signed with d's real key and kid, with base_token's claims overridden by `claims`."""
    header, payload = jwt_parts(base_token)
    payload = dict(payload, jti=str(uuid.uuid4()))
    payload.update(claims)
    return forge_token({"alg": "ES256", "typ": "JWT", "kid": header["kid"]}, payload, key=daemon_key(d))


def mint_control(d):
    """A freshly minted, otherwise valid token; skips the calling test when the daemon does not accept such a
    token (e.g. it also tracks issued token ids), since then a rejection proves nothing."""
    now = int(time.time())
    tok = mint(d, TOKEN, iat=now, exp=now + 600)
    r = d.request("GET", PROTECTED, token=tok)
    if r.status in (401, 403):
        skip("a token minted with the daemon's own key is not accepted (%d), so minted tokens prove nothing"
             % r.status)
    return tok


# --------------------------------------------------------------------------------------------------------------
# Command line, environment and config file


def test_help_exits_zero_and_lists_options():
    p = run_qodd(["--help"])
    assert p.returncode == 0, "qodd --help exited %d: %s" % (p.returncode, p.stderr)
    text = p.stdout + p.stderr
    for opt in ("--listen", "--data", "--network", "--public-url", "--log-level", "--log-format", "--config",
                "--sync"):
        assert opt in text, "qodd --help does not list %s:\n%s" % (opt, text)


def _expect_startup_error(args, name, env=None):
    """qodd refuses to start: non-zero exit and one stderr line that names the offending option (any of `name`
    when it is a tuple). A free port and a scratch data directory come first, so that a qodd that wrongly accepts
    the arguments runs harmlessly until run_qodd gives up on it."""
    tmp = tempfile.mkdtemp(prefix="qod-e2e-")
    pre = ["--data", os.path.join(tmp, "data")]
    if "--listen" not in args:
        pre = ["--listen", "127.0.0.1:%d" % free_port()] + pre
    try:
        p = run_qodd(pre + list(args), env=env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert p.returncode != 0, "qodd accepted %r (exit 0): %s" % (args, p.stderr)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, "expected one stderr line, got %r" % p.stderr
    names = name if isinstance(name, tuple) else (name,)
    assert any(n in lines[0] for n in names), "stderr does not name %s: %r" % (" or ".join(names), lines[0])
    return lines[0]


def test_unknown_option_fails_naming_it():
    _expect_startup_error(["--bogus", "1"], "bogus")


def test_listen_port_out_of_range_fails():
    _expect_startup_error(["--listen", "127.0.0.1:70000"], "listen")


def test_listen_without_port_fails():
    _expect_startup_error(["--listen", "127.0.0.1"], "listen")


def test_log_level_invalid_fails():
    _expect_startup_error(["--log-level", "loud"], "log-level")


def test_log_format_invalid_fails():
    _expect_startup_error(["--log-format", "xml"], "log-format")


def test_option_without_value_fails():
    _expect_startup_error(["--network"], "network")


def test_network_unknown_backend_fails():
    _expect_startup_error(["--network", "carrier-pigeon"], "network")


def test_env_log_level_invalid_fails():
    _expect_startup_error([], ("QOD_LOG_LEVEL", "log-level", "log_level"), env={"QOD_LOG_LEVEL": "loud"})


def test_env_listen_honoured():
    port = free_port()
    with Daemon(port=port, cli_listen=False, env={"QOD_LISTEN": "127.0.0.1:%d" % port}) as d:
        expect_status(d.request("GET", "/healthz"), 200)


def test_config_file_honoured():
    port = free_port()
    base = tempfile.mkdtemp(prefix="qod-e2e-conf-")
    conf = os.path.join(base, "qodd.conf")
    with open(conf, "w") as f:
        f.write("# test configuration\n\nlisten = 127.0.0.1:%d\n" % port)
    try:
        # Daemon waits for /healthz on `port`, which only the file names.
        with Daemon(args=["--config", conf], port=port, cli_listen=False) as d:
            expect_status(d.request("GET", "/healthz"), 200)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_config_file_unknown_key_fails():
    base = tempfile.mkdtemp(prefix="qod-e2e-conf-")
    conf = os.path.join(base, "qodd.conf")
    with open(conf, "w") as f:
        f.write("listen = 127.0.0.1:%d\nfrobnicate = 3\n" % free_port())
    try:
        _expect_startup_error(["--config", conf], "frobnicate")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_config_file_missing_fails():
    _expect_startup_error(["--config", "/nonexistent/qod-e2e.conf"], ("config", "/nonexistent/qod-e2e.conf"))


# --------------------------------------------------------------------------------------------------------------
# Data directory


def test_data_dir_created_with_mode_0700():
    with Daemon(make_data_dir=False) as d:
        st = os.stat(d.data_dir)
        assert stat.S_ISDIR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o700, "data dir mode %o" % stat.S_IMODE(st.st_mode)


def test_data_dir_holds_sqlite_database():
    if PG:
        # The PostgreSQL equivalent: the daemon's tables are in its database, and no qod.db was made beside the keys.
        assert psql("SELECT to_regclass('sessions') IS NOT NULL", D.pg_uri) == [["t"]], "no sessions table"
        assert not os.path.exists(os.path.join(D.data_dir, "qod.db")), "qod.db created although --store is set"
        return
    path = os.path.join(D.data_dir, "qod.db")
    st = os.stat(path)
    assert stat.S_ISREG(st.st_mode), "qod.db is not a regular file"
    if st.st_size >= 16:
        with open(path, "rb") as f:
            assert f.read(16) == b"SQLite format 3\0", "qod.db is not an SQLite database"


def test_signing_key_file_mode_0600():
    path = os.path.join(D.data_dir, "signing-key.pem")
    st = os.stat(path)
    assert stat.S_ISREG(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, "signing-key.pem mode %o" % stat.S_IMODE(st.st_mode)
    with open(path) as f:
        assert "PRIVATE KEY-----" in f.read(), "signing-key.pem is not a PEM private key"


def test_signing_key_matches_jwks():
    try:
        key = daemon_key(D)
    except ValueError as e:
        skip("signing key format not readable by the test: %s" % e)
    ks = jwks(D)["keys"]
    assert any(jwk_public_numbers(k) == (key.x, key.y) for k in ks), "JWKS does not publish the key on disk"


def test_admin_socket_mode_0600():
    st = os.stat(D.socket_path)
    assert stat.S_ISSOCK(st.st_mode), "qodd.sock is not a socket"
    assert stat.S_IMODE(st.st_mode) == 0o600, "qodd.sock mode %o" % stat.S_IMODE(st.st_mode)


# --------------------------------------------------------------------------------------------------------------
# Health, readiness, metrics


def test_healthz_ok():
    expect_status(D.request("GET", "/healthz"), 200)


def test_readyz_ok():
    expect_status(D.request("GET", "/readyz"), 200)


def test_every_answer_has_one_date_header_in_http_date_format():
    # qodd writes the Date header itself (RFC 9110 IMF-fixdate), instead of libmicrohttpd: one, and current.
    import email.utils
    for method, path, status in (("GET", "/healthz", 200), ("GET", "/no/such/path", 404),
                                 ("POST", "/camara/qod/v0/sessions", 401)):
        before = time.time()
        r = expect_status(D.request(method, path, body={} if method == "POST" else None), status)
        after = time.time()
        dates = [v for k, v in r.header_list if k.lower() == "date"]
        assert len(dates) == 1, "%s %s: Date headers %r" % (method, path, dates)
        assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) "
                            r"\d{4} \d\d:\d\d:\d\d GMT", dates[0]), dates[0]
        t = email.utils.parsedate_to_datetime(dates[0]).timestamp()
        assert int(before) - 1 <= t <= after + 1, (dates[0], before, after)


def test_metrics_exposition():
    expect_status(D.request("GET", "/healthz"), 200)
    r = expect_status(D.request("GET", "/metrics"), 200)
    assert r.headers.get("content-type", "").startswith("text/plain"), r.headers.get("content-type")
    text = r.text
    assert re.search(r"^# TYPE qod_http_requests_total counter$", text, re.M), text[:2000]
    assert re.search(r'^qod_http_requests_total\{(?=[^}]*\broute="[^"]+")(?=[^}]*\bstatus="200")[^}]*\}'
                     r' [0-9.e+]+$', text, re.M), "no requests_total line with route and status:\n" + text[:3000]
    assert re.search(r"^# TYPE qod_http_request_duration_seconds histogram$", text, re.M), text[:3000]
    assert re.search(r'^qod_http_request_duration_seconds_bucket\{[^}]*\ble="\+Inf"[^}]*\} [0-9]+$', text, re.M), \
        "no duration histogram +Inf bucket:\n" + text[:3000]
    assert re.search(r"^qod_http_request_duration_seconds_count(\{[^}]*\})? [0-9]+$", text, re.M), text[:3000]


def test_metrics_count_the_store_writers_group_commits():
    cluster_skip("metrics are per node (docs/operations.md): the commit and the scrapes may reach different nodes")
    before = metrics(D)
    for k in ("qod_store_commits_total", "qod_store_batches_total", "qod_store_commit_seconds_total", "qod_store_queue"):
        assert k in before, sorted(before)
    create_app(D, name="store-metrics")  # one committed batch at least
    after = metrics(D)
    assert after["qod_store_commits_total"] > before["qod_store_commits_total"], (before, after)
    assert after["qod_store_batches_total"] > before["qod_store_batches_total"], (before, after)
    assert after["qod_store_batches_total"] >= after["qod_store_commits_total"], after
    assert after["qod_store_commit_seconds_total"] > before["qod_store_commit_seconds_total"], (before, after)
    assert after["qod_store_queue"] >= 0


def test_metrics_route_label_is_bounded():
    cluster_skip("metrics are per node (docs/operations.md): the requests counted here reached several nodes")
    # Unknown paths must not become label values (one time series per scanner probe would exhaust memory).
    probe = "probe-%s" % uuid.uuid4().hex
    expect_status(D.request("GET", "/" + probe), 404)
    text = expect_status(D.request("GET", "/metrics"), 200).text
    assert probe not in text, "raw unknown path used as a metrics label"
    assert re.search(r'^qod_http_requests_total\{[^}]*\bstatus="404"[^}]*\} [0-9.e+]+$', text, re.M), text[:3000]


# --------------------------------------------------------------------------------------------------------------
# x-correlator


def test_correlator_valid_echoed():
    c = "abc-123_X:y;z./<>{}"
    for r in (D.request("GET", "/healthz", headers={"x-correlator": c}),
              D.request("GET", "/no-such-route", headers={"x-correlator": c}),
              D.request("GET", PROTECTED, headers={"x-correlator": c}),
              D.request("GET", PROTECTED, token=TOKEN, headers={"x-correlator": c})):
        assert r.headers.get("x-correlator") == c, "x-correlator not echoed on %d: %r" % (r.status, r.headers)


def test_correlator_generated_when_absent():
    seen = set()
    for _ in range(2):
        r = expect_status(D.request("GET", "/healthz"), 200)
        c = r.headers.get("x-correlator")
        assert c and CORRELATOR_RE.match(c), "no valid generated x-correlator: %r" % c
        seen.add(c)
    assert len(seen) == 2, "generated correlators repeat: %r" % seen


def _expect_bad_correlator(value):
    r = D.request("GET", PROTECTED, token=TOKEN, headers={"x-correlator": value})
    expect_camara_error(r, 400, "INVALID_ARGUMENT")
    back = r.headers.get("x-correlator")
    assert back and back != value and CORRELATOR_RE.match(back), "error must carry a generated correlator: %r" % back


def test_correlator_with_space_rejected():
    _expect_bad_correlator("has space")


def test_correlator_with_control_char_rejected():
    _expect_bad_correlator("ctl\x01char")


def test_correlator_with_non_ascii_rejected():
    _expect_bad_correlator("caf\xe9")


def test_correlator_too_long_rejected():
    _expect_bad_correlator("a" * 257)


def test_correlator_max_length_accepted():
    c = "b" * 256
    r = D.request("GET", "/healthz", headers={"x-correlator": c})
    expect_status(r, 200)
    assert r.headers.get("x-correlator") == c


# --------------------------------------------------------------------------------------------------------------
# Routing errors


def test_unknown_route_404():
    expect_camara_error(D.request("GET", "/no/such/route"), 404, "NOT_FOUND")


def test_wrong_method_405_with_allow():
    for m in ("PUT", "GET"):
        r = D.request(m, "/oauth2/token")
        expect_camara_error(r, 405, "METHOD_NOT_ALLOWED")
        allow = [a.strip().upper() for a in r.headers.get("allow", "").split(",")]
        assert "POST" in allow, "Allow header %r lacks POST" % r.headers.get("allow")


def test_wrong_content_type_on_json_endpoint():
    skip("needs a JSON endpoint (POST /camara/qod/v0/sessions, next issue)")


def test_token_endpoint_rejects_json_body():
    r = D.request("POST", "/oauth2/token", body={"grant_type": "client_credentials"},
                  auth=(APP["client_id"], APP["client_secret"]))
    expect_oauth_error(r, 400, "invalid_request")


# --------------------------------------------------------------------------------------------------------------
# qodctl app management


def test_app_create_json_fields():
    a = create_app(D, name="fields")
    for k in ("client_id", "client_secret", "webhook_secret", "env", "scopes"):
        assert k in a, "missing %s in %r" % (k, a)
    assert isinstance(a["client_id"], str) and a["client_id"]
    assert a["env"] == "sandbox"
    sec = a["client_secret"]
    assert isinstance(sec, str) and len(sec) >= 32, "client_secret too short: %r" % sec
    assert len(set(sec)) >= 12, "client_secret looks low-entropy: %r" % sec
    ws = a["webhook_secret"]
    assert ws.startswith("whsec_"), ws
    key = base64.b64decode(ws[len("whsec_"):], validate=True)
    assert 24 <= len(key) <= 64, "webhook key is %d bytes (Standard Webhooks: 24..64)" % len(key)
    b = create_app(D, name="fields2")
    assert len({a["client_id"], b["client_id"]}) == 2
    assert a["client_secret"] != b["client_secret"] and a["webhook_secret"] != b["webhook_secret"]


def test_app_create_default_scopes_include_qod():
    a = create_app(D, name="defaults")
    assert "qod" in scope_list(a["scopes"]), a["scopes"]


def test_app_create_live_env():
    a = create_app(D, env="live", name="live")
    assert a["env"] == "live", a


def test_app_create_bad_env_fails():
    p = D.qodctl("app", "create", "--name", "x", "--env", "bogus", "--json", check=False)
    assert p.returncode != 0, "qodctl accepted --env bogus: %s" % p.stdout
    assert "env" in p.stderr.lower(), "unclear error: %r" % p.stderr


def test_app_list_table_and_json():
    a = create_app(D, name="listed")
    p = D.qodctl("app", "list")
    assert a["client_id"] in p.stdout, p.stdout
    apps = D.qodctl_json("app", "list", "--json")
    assert isinstance(apps, list), apps
    assert any(x.get("client_id") == a["client_id"] for x in apps), apps


def test_app_show_and_list_hide_client_secret():
    a = create_app(D, name="secretive")
    p = D.qodctl("app", "show", a["client_id"], "--json")
    shown = json.loads(p.stdout)
    assert shown.get("client_id") == a["client_id"], shown
    assert a["client_secret"] not in p.stdout, "app show prints the client secret"
    assert not shown.get("client_secret"), shown
    lst = D.qodctl("app", "list", "--json").stdout + D.qodctl("app", "list").stdout
    assert a["client_secret"] not in lst, "app list prints the client secret"


def test_app_delete_then_show_fails():
    a = create_app(D, name="doomed")
    D.qodctl("app", "delete", a["client_id"])
    p = D.qodctl("app", "show", a["client_id"], "--json", check=False)
    assert p.returncode != 0, "deleted app still shown: %s" % p.stdout
    assert p.stderr.strip(), "no error message"


def test_app_delete_revokes_client_credentials():
    a = create_app(D, name="doomed2")
    get_token(D, a)
    D.qodctl("app", "delete", a["client_id"])
    expect_oauth_error(token_response(D, a), 401, "invalid_client")


def test_app_delete_unknown_fails():
    p = D.qodctl("app", "delete", "no-such-client", check=False)
    assert p.returncode != 0 and p.stderr.strip()


def test_app_rotate_secret():
    a = create_app(D, name="rotating")
    get_token(D, a)
    r = D.qodctl_json("app", "rotate-secret", a["client_id"], "--json")
    new = r.get("client_secret")
    assert new and new != a["client_secret"], r
    expect_oauth_error(token_response(D, a), 401, "invalid_client")
    get_token(D, dict(a, client_secret=new))


def test_app_limits_shown():
    a = create_app(D, name="limited", extra=("--rate-limit", "50", "--max-sessions", "7"))
    shown = D.qodctl_json("app", "show", a["client_id"], "--json")
    assert shown.get("rate_limit") == 50, shown
    assert shown.get("max_sessions") == 7, shown


def test_app_default_limits_shown():
    shown = D.qodctl_json("app", "show", APP["client_id"], "--json")
    assert shown.get("rate_limit") == 100, shown
    assert shown.get("max_sessions") == 10000, shown


def test_qodctl_socket_option():
    apps = json.loads(D.qodctl("--socket", D.socket_path, "app", "list", "--json", data=False).stdout)
    assert any(x.get("client_id") == APP["client_id"] for x in apps)


def test_qodctl_without_daemon_fails():
    tmp = tempfile.mkdtemp(prefix="qod-e2e-nodaemon-")
    try:
        p = subprocess.run([qodctl_path(), "--data", tmp, "app", "list"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=scaled(10), stdin=subprocess.DEVNULL)
    finally:
        os.rmdir(tmp)
    assert p.returncode != 0, "qodctl succeeded with no daemon"
    assert p.stderr.strip(), "no error message"


def test_qodctl_unknown_command_fails():
    p = D.qodctl("frobnicate", check=False)
    assert p.returncode != 0 and p.stderr.strip()


# --------------------------------------------------------------------------------------------------------------
# OAuth2 token endpoint


def test_token_basic_auth():
    r = expect_status(token_response(D, APP), 200)
    b = r.json()
    assert isinstance(b.get("access_token"), str) and b["access_token"], b
    assert b.get("token_type") == "Bearer", b
    assert isinstance(b.get("expires_in"), int) and not isinstance(b["expires_in"], bool) and b["expires_in"] > 0, b
    assert isinstance(b.get("scope"), str) and "qod" in b["scope"].split(), b


def test_token_response_not_cacheable():
    r = expect_status(token_response(D, APP), 200)
    assert "no-store" in r.headers.get("cache-control", ""), r.headers
    assert r.headers.get("content-type", "").startswith("application/json"), r.headers


def test_token_form_client_auth():
    r = D.request("POST", "/oauth2/token", form={"grant_type": "client_credentials", "client_id": APP["client_id"],
                                                  "client_secret": APP["client_secret"]})
    expect_status(r, 200)
    assert r.json().get("access_token")


def test_token_wrong_secret_401():
    r = D.request("POST", "/oauth2/token", form={"grant_type": "client_credentials"},
                  auth=(APP["client_id"], APP["client_secret"] + "x"))
    expect_oauth_error(r, 401, "invalid_client")
    assert r.headers.get("www-authenticate", "").lower().startswith("basic"), r.headers


def test_token_wrong_secret_form_401():
    r = D.request("POST", "/oauth2/token", form={"grant_type": "client_credentials", "client_id": APP["client_id"],
                                                  "client_secret": "wrong"})
    expect_oauth_error(r, 401, "invalid_client")


def test_token_unknown_client_401():
    r = D.request("POST", "/oauth2/token", form={"grant_type": "client_credentials"},
                  auth=("no-such-client", "whatever-secret"))
    expect_oauth_error(r, 401, "invalid_client")


def test_token_no_client_auth_401():
    r = D.request("POST", "/oauth2/token", form={"grant_type": "client_credentials"})
    expect_oauth_error(r, 401, "invalid_client")


def test_token_missing_grant_type_400():
    r = D.request("POST", "/oauth2/token", form={"scope": "qod"}, auth=(APP["client_id"], APP["client_secret"]))
    expect_oauth_error(r, 400, "invalid_request")


def test_token_unsupported_grant_type_400():
    r = D.request("POST", "/oauth2/token", form={"grant_type": "password", "username": "u", "password": "p"},
                  auth=(APP["client_id"], APP["client_secret"]))
    expect_oauth_error(r, 400, "unsupported_grant_type")


def test_token_subset_scope():
    a = create_app(D, scopes="qod qos-profiles:read", name="twoscopes")
    r = expect_status(token_response(D, a, scope="qos-profiles:read"), 200)
    assert r.json()["scope"] == "qos-profiles:read", r.json()
    _, payload = jwt_parts(r.json()["access_token"])
    assert payload.get("scope") == "qos-profiles:read", payload
    full = expect_status(token_response(D, a), 200).json()
    assert set(full["scope"].split()) == {"qod", "qos-profiles:read"}, full


def test_token_invalid_scope_400():
    r = token_response(D, APP, scope="qod quality-on-demand:sessions:delete-everything")
    expect_oauth_error(r, 400, "invalid_scope")


def test_token_scope_not_granted_400():
    a = create_app(D, scopes="qos-profiles:read", name="narrow")
    expect_oauth_error(token_response(D, a, scope="qod"), 400, "invalid_scope")


def test_token_is_es256_jwt_with_known_kid():
    header, _ = jwt_parts(TOKEN)
    assert header.get("alg") == "ES256", header
    assert header.get("kid"), header
    kids = [k.get("kid") for k in jwks(D)["keys"]]
    assert header["kid"] in kids, "kid %r not in JWKS %r" % (header["kid"], kids)


def test_jwks_publishes_p256_public_key_only():
    ks = jwks(D)
    assert isinstance(ks.get("keys"), list) and ks["keys"], ks
    k = ks["keys"][0]
    assert k.get("kty") == "EC" and k.get("crv") == "P-256", k
    assert len(b64url_decode(k["x"])) == 32 and len(b64url_decode(k["y"])) == 32, k
    for priv in ("d", "p", "q", "dp", "dq", "qi", "k"):
        assert priv not in k, "JWKS leaks private member %r" % priv
    if "alg" in k:
        assert k["alg"] == "ES256", k


def test_token_claims():
    before = int(time.time())
    r = expect_status(token_response(D, APP), 200).json()
    _, p = jwt_parts(r["access_token"])
    for c in ("iss", "sub", "client_id", "scope", "iat", "exp", "jti"):
        assert c in p, "claim %s missing: %r" % (c, p)
    assert p["client_id"] == APP["client_id"], p
    assert p["sub"] == APP["client_id"], "2-legged token subject should be the client: %r" % p
    assert isinstance(p["iat"], int) and abs(p["iat"] - before) <= 60, p
    assert isinstance(p["exp"], int) and abs((p["exp"] - p["iat"]) - r["expires_in"]) <= 2, (p, r)
    _, p2 = jwt_parts(get_token(D, APP))
    assert p2["jti"] != p["jti"], "jti repeats"


def test_token_signature_verifies_with_jwks():
    header, _ = jwt_parts(TOKEN)
    key = [k for k in jwks(D)["keys"] if k.get("kid") == header["kid"]][0]
    h, p, s = jwt_split(TOKEN)
    sig = b64url_decode(s)
    assert len(sig) == 64, "ES256 JWS signature must be 64 bytes r||s, got %d" % len(sig)
    x, y = jwk_public_numbers(key)
    assert es256_verify(x, y, (h + "." + p).encode(), sig), "signature does not verify with the JWKS key"


def test_openid_configuration():
    r = expect_status(D.request("GET", "/.well-known/openid-configuration"), 200)
    c = r.json()
    for k in ("issuer", "token_endpoint", "jwks_uri"):
        assert isinstance(c.get(k), str) and c[k], "%s missing: %r" % (k, c)
    assert c["token_endpoint"].endswith("/oauth2/token"), c
    assert c["jwks_uri"].endswith("/.well-known/jwks.json"), c
    _, p = jwt_parts(TOKEN)
    assert p["iss"] == c["issuer"], (p["iss"], c["issuer"])


def test_public_url_is_issuer():
    url = "https://qod.example.test"
    with Daemon(args=["--public-url", url]) as d:
        c = expect_status(d.request("GET", "/.well-known/openid-configuration"), 200).json()
        assert c["issuer"] == url, c
        assert c["token_endpoint"] == url + "/oauth2/token", c
        assert c["jwks_uri"] == url + "/.well-known/jwks.json", c
        _, p = jwt_parts(get_token(d, create_app(d)))
        assert p["iss"] == url, p


# --------------------------------------------------------------------------------------------------------------
# Protected routes: authentication and authorization


def test_protected_valid_token_accepted():
    expect_accepted(D.request("GET", PROTECTED, token=TOKEN))


def test_protected_no_token_401():
    expect_camara_error(D.request("GET", PROTECTED), 401, "UNAUTHENTICATED")


def test_protected_basic_auth_is_not_a_token_401():
    r = D.request("GET", PROTECTED, auth=(APP["client_id"], APP["client_secret"]))
    expect_camara_error(r, 401, "UNAUTHENTICATED")


def test_protected_malformed_tokens_401():
    for bad in ("abc", "a.b.c", "a.b", "..", TOKEN + ".x", TOKEN[:-10], "Bearer " + TOKEN, "x" * 5000):
        r = D.request("GET", PROTECTED, token=bad)
        expect_camara_error(r, 401, "UNAUTHENTICATED")


def test_protected_flipped_payload_401():
    expect_camara_error(D.request("GET", PROTECTED, token=token_flip_payload(TOKEN)), 401, "UNAUTHENTICATED")


def test_protected_extended_expiry_401():
    _, p = jwt_parts(TOKEN)
    forged = token_tamper_claims(TOKEN, exp=p["exp"] + 86400)
    expect_camara_error(D.request("GET", PROTECTED, token=forged), 401, "UNAUTHENTICATED")


def test_protected_flipped_signature_401():
    expect_camara_error(D.request("GET", PROTECTED, token=token_flip_signature(TOKEN)), 401, "UNAUTHENTICATED")


def test_protected_alg_none_401():
    expect_camara_error(D.request("GET", PROTECTED, token=token_alg_none(TOKEN)), 401, "UNAUTHENTICATED")


def test_protected_hs256_alg_confusion_401():
    k = jwks(D)["keys"][0]
    for secret in (json.dumps(k).encode(), b64url_decode(k["x"]) + b64url_decode(k["y"]), b""):
        forged = token_hs256(TOKEN, secret)
        expect_camara_error(D.request("GET", PROTECTED, token=forged), 401, "UNAUTHENTICATED")


def test_protected_expired_token_401():
    mint_control(D)
    now = int(time.time())
    expired = mint(D, TOKEN, iat=now - 7200, exp=now - 3600)
    r = expect_camara_error(D.request("GET", PROTECTED, token=expired), 401, "UNAUTHENTICATED")
    assert r["message"] == "The access token expired.", r


def test_protected_token_issued_in_the_future_401_not_valid_yet():
    # A token whose iat is more than 60 s ahead (a node's clock ran fast, or went back here) is not valid yet,
    # and the message says so rather than that it expired.
    mint_control(D)
    now = int(time.time())
    early = mint(D, TOKEN, iat=now + 3600, exp=now + 7200)
    r = expect_camara_error(D.request("GET", PROTECTED, token=early), 401, "UNAUTHENTICATED")
    assert r["message"] == "The access token is not valid yet: it was issued in the future.", r


def test_protected_wrong_issuer_401():
    mint_control(D)
    now = int(time.time())
    forged = mint(D, TOKEN, iat=now, exp=now + 600, iss="https://attacker.example")
    expect_camara_error(D.request("GET", PROTECTED, token=forged), 401, "UNAUTHENTICATED")


def test_protected_foreign_key_401():
    # Signed with a key that is not the daemon's, but carrying the daemon's kid and claims.
    header, payload = jwt_parts(TOKEN)
    forged = forge_token(header, payload, key=EcKey.generate())
    expect_camara_error(D.request("GET", PROTECTED, token=forged), 401, "UNAUTHENTICATED")


def test_protected_token_from_other_daemon_401():
    with Daemon() as other:
        foreign = get_token(other, create_app(other, name="foreign"))
    expect_camara_error(D.request("GET", PROTECTED, token=foreign), 401, "UNAUTHENTICATED")


def test_protected_missing_scope_403():
    a = create_app(D, scopes="qos-profiles:read", name="noqod")
    tok = get_token(D, a)
    expect_camara_error(D.request("GET", PROTECTED, token=tok), 403, "PERMISSION_DENIED")


def test_protected_subset_token_without_qod_403():
    a = create_app(D, scopes="qod qos-profiles:read", name="subset")
    tok = get_token(D, a, scope="qos-profiles:read")
    expect_camara_error(D.request("GET", PROTECTED, token=tok), 403, "PERMISSION_DENIED")


# --------------------------------------------------------------------------------------------------------------
# Restarts, signals, logs


def test_tokens_and_apps_survive_restart():
    with Daemon() as d:
        app = create_app(d, name="durable")
        tok = get_token(d, app)
        assert d.stop() == 0
        d.start()
        expect_accepted(d.request("GET", PROTECTED, token=tok))
        get_token(d, app)
        assert any(x.get("client_id") == app["client_id"] for x in d.qodctl_json("app", "list", "--json"))


def test_tokens_survive_sigkill_and_restart_same_port():
    with Daemon() as d:
        app = create_app(d, name="crashy")
        tok = get_token(d, app)
        kid = jwt_parts(tok)[0]["kid"]
        d.kill()
        d.start()  # same port at once: the daemon must not be blocked by TIME_WAIT
        expect_accepted(d.request("GET", PROTECTED, token=tok))
        assert kid in [k.get("kid") for k in jwks(d)["keys"]], "signing key changed across the crash"
        get_token(d, app)


def test_sigterm_exits_zero():
    d = Daemon()
    try:
        expect_status(d.request("GET", "/healthz"), 200)
        rc = d.stop()
        assert rc == 0, "exit code %r after SIGTERM; log:\n%s" % (rc, d.log_tail())
    finally:
        d.close()


def test_sigterm_with_idle_keepalive_connection_exits_promptly():
    d = Daemon()
    try:
        s = d.session()
        expect_status(s.request("GET", "/healthz"), 200)
        rc = d.stop(timeout=5)  # the idle client must not hold up the shutdown
        s.close()
        assert rc == 0, "exit code %r" % rc
    finally:
        d.close()


def test_keepalive_connection_is_reused():
    with D.session() as s:
        for _ in range(3):
            expect_status(s.request("GET", "/healthz"), 200)
        expect_status(s.request("POST", "/oauth2/token", form={"grant_type": "client_credentials"},
                                auth=(APP["client_id"], APP["client_secret"])), 200)
        expect_status(s.request("GET", "/no-such-route"), 404)
        assert s.connects == 1, "server closed the keep-alive connection (%d connects)" % s.connects


def test_json_log_format():
    with Daemon(args=["--log-format", "json"], split_stdout=True) as d:
        app = create_app(d, name="logger")
        get_token(d, app)
        d.request("GET", "/no-such-route")
        d.request("GET", PROTECTED, token="garbage")
        assert d.stop() == 0
        lines = [l for l in d.log().splitlines() if l.strip()]
        assert lines, "no log lines at debug level"
        for l in lines:
            try:
                o = json.loads(l)
            except ValueError:
                raise AssertionError("log line is not JSON: %r" % l) from None
            assert isinstance(o, dict), l
            for k in ("ts", "level", "mod", "event"):
                assert k in o, "log line lacks %r: %r" % (k, l)


def test_logs_do_not_contain_secrets():
    with Daemon(split_stdout=True) as d:
        app = create_app(d, name="quiet")
        tok = get_token(d, app)
        d.request("GET", PROTECTED, token=tok)
        d.request("POST", "/oauth2/token", form={"grant_type": "client_credentials"},
                  auth=(app["client_id"], app["client_secret"] + "x"))
        log = d.log() + d.stdout_text()
        assert app["client_secret"] not in log, "client secret in the log"
        assert tok not in log and jwt_split(tok)[2] not in log, "access token in the log"
        assert app["webhook_secret"] not in log, "webhook secret in the log"


if __name__ == "__main__":
    run(globals())
