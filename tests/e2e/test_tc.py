"""The tc network backend, proven by measurement: qodd --network tc shapes a real (virtual) link.

Topology (network namespaces built by this file, private addresses that exist only inside them):

    srv 10.77.2.2 ==[rsrv: upstream]== rtr ==[rdev: downstream]== lan --- dev1 10.77.1.2
                                                                     \\--- dev2 10.77.1.6

rtr and lan route (ip_forward=1). The bottlenecks are rtr's interfaces, where qodd runs with
`--network tc --tc-dev rdev --tc-uplink-dev rsrv --tc-link-rate 20mbit` (share 0.8: 16 mbit of guaranteed rates
per direction): rdev shapes what goes to the devices, rsrv what they send. Load and probes come
from our own tools (build/tools/qodperf: paced UDP bulk sender and receiver, UDP echo server and RTT prober;
build/tools/tcdump: the classes and filters on an interface, through the backend's own netlink code).

The file runs twice: the outer process (the one tests/run.py starts) builds the namespaces, runs itself again
inside `rtr` (so qodd, the harness and qodctl all share rtr's loopback) and removes every namespace at the end,
failure or not. Without root or network namespaces, every test is reported as SKIP with the reason.
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

INNER_ENV = "QOD_TC_INNER"
NS_ENV = "QOD_TC_NS"
LINK_KBIT = 20000
DEV1, DEV2, SRV = "10.77.1.2", "10.77.1.6", "10.77.2.2"
ECHO_PORT = 7007
V0 = "/camara/qod/v0/sessions"
URL = "https://callbacks.example.invalid/qod"  # live apps need https; delivery failing is fine here

D = None
TOKEN = None
SANDBOX_TOKEN = None
STATE = {}     # what one test leaves for the next (session ids)
FIGURES = {}   # measured numbers, printed as a table at the end
_procs = []


# ---------------------------------------------------------------------------------------------------------------
# Outer process: namespaces


def _ns_names(prefix):
    return {n: "%s-%s" % (prefix, n) for n in ("srv", "rtr", "lan", "dev1", "dev2")}


def _sh(*argv):
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=30)
    if p.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(argv), p.stderr.strip() or p.stdout.strip()))
    return p.stdout


def _build_topology(ns):
    for n in ns.values():
        _sh("ip", "netns", "add", n)
        _sh("ip", "-n", n, "link", "set", "lo", "up")
    links = [  # (ns a, if a, addr a, ns b, if b, addr b)
        ("rtr", "rdev", "10.77.0.1/30", "lan", "lrtr", "10.77.0.2/30"),
        ("rtr", "rsrv", "10.77.2.1/24", "srv", "srtr", SRV + "/24"),
        ("lan", "ld1", "10.77.1.1/30", "dev1", "d1", DEV1 + "/30"),
        ("lan", "ld2", "10.77.1.5/30", "dev2", "d2", DEV2 + "/30"),
    ]
    for a, ia, aa, b, ib, ab in links:
        _sh("ip", "link", "add", ia, "netns", ns[a], "type", "veth", "peer", "name", ib, "netns", ns[b])
        for n, i, addr in ((a, ia, aa), (b, ib, ab)):
            _sh("ip", "-n", ns[n], "addr", "add", addr, "dev", i)
            _sh("ip", "-n", ns[n], "link", "set", i, "up")
    for n in ("rtr", "lan"):
        _sh("ip", "netns", "exec", ns[n], "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward")
    _sh("ip", "-n", ns["rtr"], "route", "add", "10.77.1.0/24", "via", "10.77.0.2")
    _sh("ip", "-n", ns["lan"], "route", "add", "default", "via", "10.77.0.1")
    _sh("ip", "-n", ns["srv"], "route", "add", "default", "via", "10.77.2.1")
    _sh("ip", "-n", ns["dev1"], "route", "add", "default", "via", "10.77.1.1")
    _sh("ip", "-n", ns["dev2"], "route", "add", "default", "via", "10.77.1.5")


def _remove_topology(ns):
    for n in ns.values():
        subprocess.run(["ip", "netns", "del", n], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _remove_stale_topologies():
    """Removes the namespaces of earlier runs that were killed before they could clean up."""
    p = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in p.stdout.splitlines():
        m = re.match(r"^qtc(\d+)-(srv|rtr|lan|dev1|dev2)\b", line)
        if m and not os.path.exists("/proc/%s" % m.group(1)):
            subprocess.run(["ip", "netns", "del", line.split()[0]], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)


def _outer():
    tests = [k for k, v in globals().items() if k.startswith("test_") and callable(v)]

    def skip_all(why):
        for t in tests:
            print("SKIP %s: %s" % (t, why))
        return 0

    if os.geteuid() != 0:
        return skip_all("needs root to create network namespaces")
    if subprocess.run(["sh", "-c", "command -v ip"], stdout=subprocess.DEVNULL).returncode != 0:
        return skip_all("the ip command (iproute2) is not installed")
    _remove_stale_topologies()
    ns = _ns_names("qtc%d" % os.getpid())
    try:
        _sh("ip", "netns", "add", ns["srv"])
    except (RuntimeError, OSError) as e:
        _remove_topology(ns)
        return skip_all("network namespaces are unavailable: %s" % e)
    try:
        _sh("ip", "netns", "del", ns["srv"])
        _build_topology(ns)
        env = dict(os.environ, **{INNER_ENV: "1", NS_ENV: ns["rtr"][:-4]})
        p = subprocess.run(["ip", "netns", "exec", ns["rtr"], sys.executable, os.path.abspath(__file__)]
                           + sys.argv[1:], env=env)
        return p.returncode
    finally:
        _remove_topology(ns)


# ---------------------------------------------------------------------------------------------------------------
# Inner process: tools and API helpers


def ns(name):
    return "%s-%s" % (os.environ[NS_ENV], name)


def tool(name):
    path = os.path.join(BUILD, "tools", name)
    assert os.access(path, os.X_OK), "%s is missing: build it with `make %s`" % (path, path)
    return path


def spawn(where, name, *args):
    """Starts a tool inside namespace `where` (None: here, in rtr); its stdout is JSON read by finish()."""
    argv = ([] if where is None else ["ip", "netns", "exec", ns(where)]) + [tool(name)] + [str(a) for a in args]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _procs.append(p)
    return p


def finish(p, timeout=30):
    out, err = p.communicate(timeout=timeout)
    _procs.remove(p)
    assert p.returncode == 0, "%s exited %s: %s" % (" ".join(p.args), p.returncode, err)
    return json.loads(out)


def tcdump(dev="rdev"):
    p = subprocess.run([tool("tcdump"), "show", dev], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       timeout=10)
    assert p.returncode == 0, "tcdump failed: %s" % p.stderr
    return json.loads(p.stdout)


def session_classes(state):
    """{minor: class} of the session range 1:100..1:fffd."""
    out = {}
    for c in state["classes"]:
        major, minor = c["id"].split(":")
        if major == "1" and 0x100 <= int(minor, 16) <= 0xfffd:
            out[int(minor, 16)] = c
    return out


def session_filters(state):
    return [f for f in state["filters"] if 0x100 <= f["pref"] <= 0xfffd and f["classid"]]


def dst_of(f, off=16):
    """The address a filter matches exactly at offset off (16: destination, 12: source), dotted."""
    for k in f["keys"]:
        if k["off"] == off and k["mask"] == "ffffffff":
            v = int(k["val"], 16)
            return "%d.%d.%d.%d" % (v >> 24, v >> 16 & 255, v >> 8 & 255, v & 255)
    return None


def create(phone, profile, **extra):
    body = {"device": {"phoneNumber": phone}, "qosProfile": profile, "duration": 600,
            "webhook": {"notificationUrl": URL}}
    body.update(extra)
    r = D.request("POST", V0, body=body, token=TOKEN)
    expect_status(r, 201)
    return r.json()["sessionId"]


def status(sid, token=None):
    r = D.request("GET", "%s/%s" % (V0, sid), token=token or TOKEN)
    expect_status(r, 200)
    return r.json()["qosStatus"]


def wait_status(sid, want, token=None, timeout=5):
    return wait_until(lambda: status(sid, token) == want, timeout=timeout,
                      what=lambda: "session %s to become %s (is %s)" % (sid, want, status(sid, token)))


def delete(sid):
    expect_status(D.request("DELETE", "%s/%s" % (V0, sid), token=TOKEN), 204)


def rtt_under_load(label, load_kbit=25000, seconds=3.0, upstream=False):
    """p50/p95 of 200 probes (10 ms apart) from dev1 to the echo server on srv while a bulk UDP flow of load_kbit
    (0 = no load) goes from srv to dev1 (downstream) or from dev1 to srv (upstream)."""
    echo = spawn("srv", "qodperf", "echo", ECHO_PORT, seconds + 3)
    sink = send = None
    if load_kbit:
        a, b, addr = ("srv", "dev1", DEV1) if not upstream else ("dev1", "srv", SRV)
        sink = spawn(b, "qodperf", "recv", 5001, seconds + 1, 0.5)
        send = spawn(a, "qodperf", "send", addr, 5001, load_kbit, seconds + 1.5)
        time.sleep(0.7)  # let the queue fill
    else:
        time.sleep(0.2)
    ping = finish(spawn("dev1", "qodperf", "ping", SRV, ECHO_PORT, 200, 10, 1500))
    bulk = None
    if send:
        finish(send)
        bulk = finish(sink)["kbps"]
    echo.kill()
    echo.wait()
    _procs.remove(echo)
    FIGURES[label] = dict(ping, bulk_kbps=bulk)
    print("    %-40s p50 %8.3f ms  p95 %8.3f ms  lost %3d/%d  bulk %s kbit/s"
          % (label, ping["p50_ms"], ping["p95_ms"], ping["lost"], ping["sent"],
             "-" if bulk is None else "%.0f" % bulk))
    assert ping["received"] >= ping["sent"] * 0.8, "too many probes lost: %r" % ping
    return ping


def throughput_pair(label, seconds=4.0):
    """Rates (kbit/s of UDP payload) dev1 and dev2 receive while srv sends 20 mbit to each."""
    r1 = spawn("dev1", "qodperf", "recv", 5001, seconds, 1)
    r2 = spawn("dev2", "qodperf", "recv", 5002, seconds, 1)
    time.sleep(0.2)
    s1 = spawn("srv", "qodperf", "send", DEV1, 5001, 20000, seconds + 0.8)
    s2 = spawn("srv", "qodperf", "send", DEV2, 5002, 20000, seconds + 0.8)
    finish(s1)
    finish(s2)
    a, b = finish(r1)["kbps"], finish(r2)["kbps"]
    FIGURES[label] = {"dev1_kbps": a, "dev2_kbps": b}
    print("    %-40s dev1 %8.0f kbit/s   dev2 (best effort) %8.0f kbit/s" % (label, a, b))
    return a, b


# ---------------------------------------------------------------------------------------------------------------
# Tests (inner process)


def setup_module():
    global D, TOKEN, SANDBOX_TOKEN
    for t in ("qodperf", "tcdump"):
        tool(t)
    D = Daemon(args=["--network", "tc", "--tc-dev", "rdev", "--tc-uplink-dev", "rsrv",
                     "--tc-link-rate", "%dkbit" % LINK_KBIT,
                     "--tc-guaranteed-share", "0.8", "--sandbox-delay-ms", "100"])
    app = create_app(D, env="live", name="tc", extra=("--rate-limit", "0"))
    TOKEN = get_token(D, app)
    SANDBOX_TOKEN = get_token(D, create_app(D, env="sandbox", name="tc-sandbox", extra=("--rate-limit", "0")))
    D.qodctl("device", "add", "--phone", "+15550000001", "--ipv4", DEV1)
    D.qodctl("device", "add", "--phone", "+15550000002", "--ipv4", DEV2)
    D.qodctl("device", "add", "--phone", "+15550000003")  # no IPv4 address


def teardown_module():
    for p in list(_procs):
        p.kill()
        p.wait()
    if FIGURES:
        print("    figures (JSON): %s" % json.dumps(FIGURES, sort_keys=True))


def test_root_tree_installed_at_start():
    for dev in ("rdev", "rsrv"):
        check_root(tcdump(dev))


def check_root(st):
    assert st["root"]["kind"] == "htb" and st["root"]["handle"] == "1:0" and st["root"]["default"] == "fffe", st
    by_id = {c["id"]: c for c in st["classes"]}
    assert by_id["1:1"]["rate_kbit"] == LINK_KBIT, by_id
    be = by_id["1:fffe"]
    assert be["prio"] == 7 and be["rate_kbit"] == LINK_KBIT * 0.2 and be["ceil_kbit"] == LINK_KBIT, be
    assert be["leaf"] == "bfifo", be
    assert not session_classes(st) and not session_filters(st), st


def test_baseline_rtt_without_load():
    ping = rtt_under_load("baseline, no load", load_kbit=0)
    assert ping["p95_ms"] < 20, ping


def test_qos_l_cuts_rtt_under_load_10x():
    before = rtt_under_load("bulk to dev1, no session")
    before_up = rtt_under_load("bulk from dev1, no session", upstream=True)
    # The session covers dev1's traffic with the game server (the echo port); the bulk download stays best effort.
    sid = create("+15550000001", "QOS_L", applicationServer={"ipv4Address": SRV},
                 applicationServerPorts={"ports": [ECHO_PORT]})
    wait_status(sid, "AVAILABLE")
    STATE["qos_l"] = sid
    st = tcdump()
    classes, filters = session_classes(st), session_filters(st)
    assert len(classes) == 1 and len(filters) == 1, st
    cls = list(classes.values())[0]
    assert cls["prio"] == 0 and cls["rate_kbit"] == 5000 and cls["ceil_kbit"] == LINK_KBIT, cls
    assert dst_of(filters[0]) == DEV1 and dst_of(filters[0], 12) == SRV, filters
    assert filters[0]["classid"] == cls["id"], filters
    # Upstream on rsrv: the device is the source, the server the destination, the server port the destination port.
    up = tcdump("rsrv")
    ucls, ufilters = list(session_classes(up).values()), session_filters(up)
    assert len(ucls) == 1 and ucls[0]["rate_kbit"] == 2000 and ucls[0]["prio"] == 0, up
    assert len(ufilters) == 1 and dst_of(ufilters[0], 12) == DEV1 and dst_of(ufilters[0], 16) == SRV, ufilters
    assert {"off": 20, "val": "00001b5f", "mask": "0000ffff"} in ufilters[0]["keys"], ufilters
    after = rtt_under_load("bulk to dev1, QOS_L session")
    after_up = rtt_under_load("bulk from dev1, QOS_L session", upstream=True)
    for what, b, a in (("downstream", before, after), ("upstream", before_up, after_up)):
        ratio = b["p95_ms"] / max(a["p95_ms"], 0.001)
        FIGURES["qos_l_p95_ratio_" + what] = ratio
        print("    QOS_L p95 improvement, %s load: %.0fx" % (what, ratio))
    assert after["p95_ms"] * 10 <= before["p95_ms"], (before, after)
    assert after_up["p95_ms"] * 10 <= before_up["p95_ms"], (before_up, after_up)


def test_delete_returns_device_to_best_effort():
    sid = STATE.get("qos_l") or skip("no QOS_L session from the previous test")
    delete(sid)
    for dev in ("rdev", "rsrv"):
        st = tcdump(dev)
        assert not session_classes(st) and not session_filters(st), st
    again = rtt_under_load("bulk to dev1, session deleted")
    with_session = FIGURES["bulk to dev1, QOS_L session"]["p95_ms"]
    assert again["p95_ms"] >= 10 * with_session, (again, with_session)


def test_qos_s_gets_90_percent_of_guaranteed_rate():
    before, _ = throughput_pair("20+20 mbit offered, no session")
    sid = create("+15550000001", "QOS_S")
    wait_status(sid, "AVAILABLE")
    STATE["qos_s"] = sid
    cls = list(session_classes(tcdump()).values())
    assert len(cls) == 1 and cls[0]["rate_kbit"] == 15000 and cls[0]["prio"] == 3, cls
    after, other = throughput_pair("20+20 mbit offered, QOS_S for dev1")
    assert after >= 0.9 * 15000, (before, after)
    assert other > 0, "best effort must not starve: %r" % other


def test_admission_refuses_what_does_not_fit():
    STATE.get("qos_s") or skip("no QOS_S session from the previous test")
    # 15 mbit are guaranteed to dev1; another 15 would exceed 0.8 x 20 mbit = 16 mbit.
    sid = create("+15550000002", "QOS_S")
    wait_status(sid, "UNAVAILABLE")
    assert len(session_classes(tcdump())) == 1
    assert "admission_refused" in D.log()


def test_restart_reconciles_classes_and_filters():
    sid = STATE.get("qos_s") or skip("no QOS_S session from the previous test")
    D.kill()
    # While qodd is down the kernel keeps enforcing; then a stray class and filter of ours appear (as if a session
    # had ended while the daemon could not remove them).
    subprocess.run([tool("tcdump"), "stray", "rdev", "1234", DEV2], check=True, timeout=10)
    st = tcdump()
    assert 0x1234 in session_classes(st) and len(session_classes(st)) == 2, st
    D.start()
    # Reconciliation keeps the old classes until the active sessions are installed again, then (on the engine
    # loop's first tick, right after start) removes whatever no session claimed.
    st = wait_until(lambda: (lambda s: s if len(session_classes(s)) == 1 else None)(tcdump()), timeout=5,
                    what="the stale classes to be removed")
    classes, filters = session_classes(st), session_filters(st)
    assert 0x1234 not in classes, st
    assert len(classes) == 1 and list(classes.values())[0]["rate_kbit"] == 15000, st
    assert [dst_of(f) for f in filters] == [DEV1], filters
    assert [dst_of(f, 12) for f in session_filters(tcdump("rsrv"))] == [DEV1]
    assert status(sid) == "AVAILABLE"
    after, _ = throughput_pair("20+20 mbit offered, QOS_S after restart")
    assert after >= 0.9 * 15000, after
    delete(sid)
    assert not session_classes(tcdump()) and not session_classes(tcdump("rsrv"))


def test_port_ranges_become_aligned_filters():
    # 5000-5010 is 5000-5007, 5008-5009 and 5010: three u32 port blocks, crossed with one server port.
    sid = create("+15550000002", "QOS_M", devicePorts={"ranges": [{"from": 5000, "to": 5010}]},
                 applicationServerPorts={"ports": [443]})
    wait_status(sid, "AVAILABLE")
    filters = session_filters(tcdump())
    assert len(filters) == 3 and {dst_of(f) for f in filters} == {DEV2}, filters
    ports = sorted(k["val"] + "/" + k["mask"] for f in filters for k in f["keys"] if k["off"] == 20)
    assert ports == ["01bb1388/fffffff8", "01bb1390/fffffffe", "01bb1392/ffffffff"], ports
    delete(sid)
    assert not session_filters(tcdump())


def test_device_without_ipv4_is_not_applicable():
    body = {"device": {"phoneNumber": "+15550000003"}, "qosProfile": "QOS_L", "duration": 60,
            "webhook": {"notificationUrl": URL}}
    expect_camara_error(D.request("POST", V0, body=body, token=TOKEN), 422, "SERVICE_NOT_APPLICABLE")


def test_ipv6_application_server_is_not_applicable():
    body = {"device": {"phoneNumber": "+15550000002"}, "qosProfile": "QOS_L", "duration": 60,
            "webhook": {"notificationUrl": URL}, "applicationServer": {"ipv6Address": "2001:db8::1"}}
    expect_camara_error(D.request("POST", V0, body=body, token=TOKEN), 422, "SERVICE_NOT_APPLICABLE")


def test_a_device_named_by_its_ipv6_address_is_not_applicable():
    # The filters match IPv4 only: a session for a device the app names by IPv6 would be AVAILABLE while that IPv6
    # traffic stays best effort. By its phone number the same dual-stack device is shaped (its IPv4).
    D.qodctl("device", "add", "--phone", "+15550000004", "--ipv4", "10.77.1.10", "--ipv6", "2001:db8:77::10")
    body = {"device": {"ipv6Address": "2001:db8:77::10"}, "qosProfile": "QOS_L", "duration": 60,
            "webhook": {"notificationUrl": URL}}
    expect_camara_error(D.request("POST", V0, body=body, token=TOKEN), 422, "SERVICE_NOT_APPLICABLE")
    assert not session_classes(tcdump())


def test_sandbox_numbers_still_work_without_enforcement():
    def sandbox(phone):
        body = {"device": {"phoneNumber": phone}, "qosProfile": "QOS_L", "duration": 60,
                "webhook": {"notificationUrl": "http://callbacks.example.invalid/cb"}}
        r = D.request("POST", V0, body=body, token=SANDBOX_TOKEN)
        return r
    ok = sandbox("+99999991000")
    expect_status(ok, 201)
    refused = sandbox("+99999991001")
    expect_status(refused, 201)
    wait_status(ok.json()["sessionId"], "AVAILABLE", token=SANDBOX_TOKEN)
    wait_status(refused.json()["sessionId"], "UNAVAILABLE", token=SANDBOX_TOKEN)
    expect_camara_error(sandbox("+99999990422"), 422, "SERVICE_NOT_APPLICABLE")
    assert not session_classes(tcdump())


def start_fails(args, says):
    """Starts a qodd with args; it must exit non-zero having logged says."""
    d = Daemon(args=args, start=False)
    try:
        d.start(wait=False)
        rc = d.proc.wait(timeout=scaled(15))
        assert rc != 0, rc
        assert says in d.log(), d.log()
    finally:
        d.close(check=False)


def test_the_same_interface_for_both_directions_fails_start_before_touching_it():
    start_fails(["--network", "tc", "--tc-dev", "rdev", "--tc-uplink-dev", "rdev", "--tc-link-rate", "20mbit"],
                "--tc-uplink-dev rdev is the --tc-dev interface itself")
    check_root(tcdump())  # the running daemon's tree, untouched (a refused start must not replace it)


def test_an_operators_own_root_qdisc_is_replaced_with_a_warning_naming_it():
    subprocess.run(["ip", "link", "add", "tfx0", "type", "veth", "peer", "name", "tfx1"], check=True)
    try:
        subprocess.run(["tc", "qdisc", "add", "dev", "tfx0", "root", "handle", "5:", "htb", "default", "10"],
                       check=True)
        subprocess.run(["tc", "class", "add", "dev", "tfx0", "parent", "5:", "classid", "5:10", "htb", "rate",
                        "1mbit"], check=True)
        d = Daemon(args=["--network", "tc", "--tc-dev", "tfx0", "--tc-link-rate", "20mbit"])
        with d:
            assert re.search(r"event=root_replaced ifindex=\d+ kind=htb handle=5: classes=1 filters=0", d.log()), \
                d.log_tail(10)
            check_root(tcdump("tfx0"))
    finally:
        subprocess.run(["ip", "link", "del", "tfx0"], check=False)


def test_a_class_the_release_could_not_remove_is_removed_once_it_can_be():
    # A foreign filter bound to the session's class (flowid 1:N) makes the kernel refuse the class's removal
    # (EBUSY): the release fails, the handle stays reserved, and the loop tries again until it is gone.
    sid = create("+15550000001", "QOS_M")
    wait_status(sid, "AVAILABLE")
    (minor,) = session_classes(tcdump())
    foreign = ["dev", "rdev", "parent", "1:", "protocol", "ip", "prio", "50"]
    subprocess.run(["tc", "filter", "add"] + foreign + ["u32", "match", "ip", "dst", "192.0.2.99/32", "flowid",
                                                        "1:%x" % minor], check=True)
    try:
        delete(sid)
        wait_until(lambda: "release_failed session=%s" % sid in D.log(), timeout=5, what="the failed release")
        assert minor in session_classes(tcdump())
    finally:
        subprocess.run(["tc", "filter", "del"] + foreign, check=False)
    wait_until(lambda: minor not in session_classes(tcdump()), timeout=12, what="the class removed on a retry")
    assert not session_filters(tcdump())


def test_missing_interface_fails_start_clearly():
    start_fails(["--network", "tc", "--tc-dev", "nosuch0", "--tc-link-rate", "20mbit"],
                "no network interface named 'nosuch0'")


if __name__ == "__main__":
    if os.environ.get(INNER_ENV) == "1":
        run(globals())
    else:
        sys.exit(_outer())
