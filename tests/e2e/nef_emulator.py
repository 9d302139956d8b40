#!/usr/bin/env python3
"""A NEF emulator for the 3GPP TS 29.122 AsSessionWithQoS API (3gpp-as-session-with-qos/v1), for tests.

    python3 nef_emulator.py --port P [--token-required] [--client-id ID --client-secret S] [--bearer TOKEN]
                            [--notify-delay-ms N] [--token-ttl S] [--tls-cert PEM --tls-key PEM [--client-ca PEM]]

Prints "READY <port>" on stdout once listening (--port 0 picks a free port).

The resource (apiRoot = http://127.0.0.1:P):
  POST   /3gpp-as-session-with-qos/v1/{scsAsId}/subscriptions        201, Location, AsSessionWithQoSSubscription
  GET    /3gpp-as-session-with-qos/v1/{scsAsId}/subscriptions        200, array of the SCS/AS's subscriptions
  GET    /3gpp-as-session-with-qos/v1/{scsAsId}/subscriptions/{id}   200 or 404
  DELETE /3gpp-as-session-with-qos/v1/{scsAsId}/subscriptions/{id}   204 or 404
Request bodies are validated against the data model of TS29122_AsSessionWithQoS.yaml: only known members, types,
the required notificationDestination, supportedFeatures (mandatory in a POST, TS 29.122 clause 5.2.7), exactly one
UE identifier (ueIpv4Addr, ueIpv6Addr, macAddr or gpsi), one of flowInfo/ethFlowInfo/exterAppId, flowInfo items
(integer flowId, 1-2 flowDescriptions as IPFilterRules), events from the UserPlaneEvent enumeration. Errors are
ProblemDetails (application/problem+json).

After a 201 the emulator POSTs a UserPlaneNotificationData {transaction, eventReports:[{event}]} to the
notificationDestination, asynchronously, after --notify-delay-ms: SUCCESSFUL_RESOURCES_ALLOCATION, or
FAILED_RESOURCES_ALLOCATION when refusing (the subscription is then removed).

OAuth2: POST /oauth2/token (client_credentials, HTTP Basic) issues bearer tokens; with --token-required every API
request needs "Authorization: Bearer <issued token or --bearer>" (401 otherwise).

Control API (tests only):
  POST /_control  {"fail": 503, "times": 3, "op": "create|delete|list|any"}  answer the next requests with a status
                  (307/308: with a Location, the request's own URI plus a query, or "location" when given;
                  "retry_after": N adds that Retry-After to the failures)
                  {"delay_ms": N, "ue": "10.0.0.1"}    delay answers (for one UE's creations, or every request)
                  {"notify_delay_ms": N}               delay of the allocation notification
                  {"silent": true|false}               no allocation notification at all
                  {"answer_delay_ms": N}               a create is made at once, answered N ms later
                  {"refuse": true|false, "ue": ...}    allocations fail (FAILED_RESOURCES_ALLOCATION)
                  {"terminate": id}                    SESSION_TERMINATION now, subscription removed
                  {"notify": id, "event": "QOS_NOT_GUARANTEED"}  any event now
                  {"revoke_tokens": true}              every issued OAuth2 token becomes invalid
                  {"add": {scsAsId, subscription[, host]}}  store a subscription directly (no notification;
                                                       its self names host instead of the request's Host)
  GET  /_control/log            every request received: [{method, path, auth, body}]
  GET  /_control/notifications  every notification sent: [{id, url, event, status}]
  GET  /_control/subscriptions  {id: subscription}
"""
import argparse
import base64
import ipaddress
import json
import re
import secrets
import ssl
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote_plus

API = "/3gpp-as-session-with-qos/v1/"
USER_PLANE_EVENTS = {
    "SESSION_TERMINATION", "LOSS_OF_BEARER", "RECOVERY_OF_BEARER", "RELEASE_OF_BEARER", "USAGE_REPORT",
    "FAILED_RESOURCES_ALLOCATION", "QOS_GUARANTEED", "QOS_NOT_GUARANTEED", "QOS_MONITORING",
    "SUCCESSFUL_RESOURCES_ALLOCATION", "ACCESS_TYPE_CHANGE", "PLMN_CHG", "L4S_NOT_AVAILABLE", "L4S_AVAILABLE",
    "BAT_OFFSET_INFO", "RT_DELAY_TWO_QOS_FLOWS", "PACK_DELAY_VAR"}
# Members of AsSessionWithQoSSubscription in the data model.
SUB_MEMBERS = {
    "self", "supportedFeatures", "dnn", "snssai", "notificationDestination", "exterAppId", "extGroupId", "gpsi",
    "flowInfo", "ethFlowInfo", "enEthFlowInfo", "listUeAddrs", "multiModalId", "protoDesc", "qosReference",
    "altQoSReferences", "altQosReqs", "disUeNotif", "ueIpv4Addr", "ipDomain", "ueIpv6Addr", "macAddr",
    "usageThreshold", "sponsorInfo", "qosMonInfo", "pdvMon", "qosDuration", "qosInactInt", "directNotifInd",
    "tscQosReq", "l4sInfo", "requestTestNotification", "websockNotifConfig", "events", "multiModDatFlows",
    "pduSetQos", "rTLatencyInd", "periodInfo", "rttMon", "qosMonDatRate", "avrgWndw", "servAuthInfo",
    "qosMonConReq", "listUeConsDtRt"}
FLOW_INFO_MEMBERS = {"flowId", "flowDescriptions", "tosTC"}
GPSI_RE = re.compile(r"^(msisdn-[0-9]{5,15}|extid-[^@]+@[^@]+)$")
HEX_RE = re.compile(r"^[A-Fa-f0-9]*$")
# TS 29.214 clause 5.3.8 (the encoding flowDescriptions refer to): the keyword "assigned" shall not be used.
ADDR = r"(any|[0-9A-Fa-f.:]+(/[0-9]{1,3})?)"
PORTS = r"( [0-9]{1,5}(-[0-9]{1,5})?(,[0-9]{1,5}(-[0-9]{1,5})?)*)?"
IPFILTER_RE = re.compile(r"^permit (in|out) (ip|[0-9]{1,3}) from %s%s to %s%s$" % (ADDR, PORTS, ADDR, PORTS))


class Invalid(Exception):
    def __init__(self, detail, cause="INVALID_MSG_FORMAT", param=None):
        super().__init__(detail)
        self.detail, self.cause, self.param = detail, cause, param


def _ue_of(body):
    return body.get("ueIpv4Addr") or body.get("ueIpv6Addr") or body.get("macAddr") or body.get("gpsi")


def validate_subscription(b):
    """Raises Invalid when b is not a valid AsSessionWithQoSSubscription for a POST."""
    if not isinstance(b, dict):
        raise Invalid("the body is not a JSON object")
    unknown = sorted(set(b) - SUB_MEMBERS)
    if unknown:
        raise Invalid("unknown member(s) %s" % ", ".join(unknown), param=unknown[0])
    if "self" in b:
        raise Invalid("self is read-only", param="self")
    nd = b.get("notificationDestination")
    if not isinstance(nd, str) or not re.match(r"^https?://[^/\s]+/\S*$", nd):
        raise Invalid("notificationDestination (a Link) is required", "MANDATORY_IE_MISSING", "notificationDestination")
    sf = b.get("supportedFeatures")
    if not isinstance(sf, str) or not HEX_RE.match(sf):
        raise Invalid("supportedFeatures is mandatory in a POST (hex string)", "MANDATORY_IE_MISSING",
                      "supportedFeatures")
    ids = [k for k in ("ueIpv4Addr", "ueIpv6Addr", "macAddr", "gpsi") if k in b]
    if len(ids) != 1:
        raise Invalid("exactly one UE identifier (ueIpv4Addr, ueIpv6Addr, macAddr, gpsi) is required, got %s" % ids)
    for k, fam in (("ueIpv4Addr", ipaddress.IPv4Address), ("ueIpv6Addr", ipaddress.IPv6Address)):
        if k in b:
            try:
                if not isinstance(b[k], str):
                    raise ValueError
                a = fam(b[k])
                if str(a) != b[k]:
                    raise ValueError
            except ValueError:
                raise Invalid("%s is not a canonical address: %r" % (k, b[k]), param=k) from None
    if "gpsi" in b and (not isinstance(b["gpsi"], str) or not GPSI_RE.match(b["gpsi"])):
        raise Invalid("gpsi must be msisdn-<5 to 15 digits> or extid-…", param="gpsi")
    if not any(k in b for k in ("flowInfo", "ethFlowInfo", "exterAppId")):
        raise Invalid("one of flowInfo, ethFlowInfo or exterAppId is required", "MANDATORY_IE_MISSING")
    if "flowInfo" in b:
        fi = b["flowInfo"]
        if not isinstance(fi, list) or not fi:
            raise Invalid("flowInfo must be a non-empty array", param="flowInfo")
        for f in fi:
            if not isinstance(f, dict) or set(f) - FLOW_INFO_MEMBERS:
                raise Invalid("flowInfo items are FlowInfo objects", param="flowInfo")
            if not isinstance(f.get("flowId"), int) or isinstance(f.get("flowId"), bool):
                raise Invalid("FlowInfo.flowId (integer) is required", "MANDATORY_IE_MISSING", "flowId")
            fd = f.get("flowDescriptions")
            if fd is not None:
                if not isinstance(fd, list) or not 1 <= len(fd) <= 2:
                    raise Invalid("flowDescriptions holds 1 or 2 strings", param="flowDescriptions")
                for d in fd:
                    if not isinstance(d, str) or not IPFILTER_RE.match(d):
                        raise Invalid("flowDescriptions item is not an IPFilterRule: %r" % (d,),
                                      param="flowDescriptions")
    if "qosReference" in b and not isinstance(b["qosReference"], str):
        raise Invalid("qosReference is a string", param="qosReference")
    if not isinstance(b.get("qosReference"), str) or not b["qosReference"]:
        raise Invalid("qosReference is required by this NEF", "MANDATORY_IE_MISSING", "qosReference")
    ev = b.get("events")
    if ev is not None:
        if not isinstance(ev, list) or not ev:
            raise Invalid("events must be a non-empty array", param="events")
        for e in ev:
            if e not in USER_PLANE_EVENTS:
                raise Invalid("unknown UserPlaneEvent %r" % (e,), param="events")
    for k in ("disUeNotif", "directNotifInd", "requestTestNotification", "rTLatencyInd"):
        if k in b and not isinstance(b[k], bool):
            raise Invalid("%s is a boolean" % k, param=k)


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.args = args
        self.subs = {}          # id -> (scsAsId, subscription dict)
        self.log = []
        self.notifications = []
        self.tokens = set()
        self.fail = []          # [status, times, op]
        self.fail_location = None  # the Location of an injected 307/308
        self.fail_retry_after = None  # the Retry-After of an injected failure
        self.delay_ms = 0
        self.delay_ue = None
        self.notify_delay_ms = args.notify_delay_ms
        self.refuse = False
        self.silent = False     # no allocation notification after a 201
        self.answer_delay_ms = 0  # a create is made at once, its answer sent this much later
        self.scheme = "https" if args.tls_cert else "http"
        self.refuse_ue = None
        self.seq = 0


def notify(state, sid, url, event, transaction, remove=False):
    body = json.dumps({"transaction": transaction, "eventReports": [{"event": event}]}).encode()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            status = r.status
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError as e:
        status = "error: %s" % e
    with state.lock:
        state.notifications.append({"id": sid, "url": url, "event": event, "status": status})
        if remove:
            state.subs.pop(sid, None)


def notify_later(state, delay_ms, *a, **kw):
    def run():
        time.sleep(delay_ms / 1000.0)
        notify(state, *a, **kw)
    threading.Thread(target=run, daemon=True).start()


def make_handler(state):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _send(self, status, body=None, headers=None, ctype="application/json"):
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            if data:
                self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _problem(self, status, title, detail=None, cause=None, param=None, headers=None):
            p = {"title": title, "status": status}
            if detail:
                p["detail"] = detail
            if cause:
                p["cause"] = cause
            if param:
                p["invalidParams"] = [{"param": param}]
            self._send(status, p, headers, ctype="application/problem+json")

        def _body(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _authorized(self):
            if not state.args.token_required:
                return True
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return False
            tok = auth[7:]
            with state.lock:
                return tok in state.tokens or (state.args.bearer and tok == state.args.bearer)

        def _take_failure(self, op):
            with state.lock:
                if state.fail and state.fail[1] > 0 and state.fail[2] in ("any", op):
                    state.fail[1] -= 1
                    return state.fail[0]
            return None

        def _handle(self, method):
            raw = self._body()
            path = self.path.split("?")[0]
            with state.lock:
                state.log.append({"method": method, "path": path, "auth": self.headers.get("Authorization"),
                                  "body": raw.decode("utf-8", "replace")})
            if path == "/oauth2/token" and method == "POST":
                return self._token(raw)
            if path.startswith("/_control"):
                return self._control(method, path, raw)
            if not path.startswith(API):
                return self._problem(404, "Not Found")
            parts = path[len(API):].split("/")
            if len(parts) < 2 or parts[1] != "subscriptions" or len(parts) > 3 or not parts[0]:
                return self._problem(404, "Not Found")
            if not self._authorized():
                return self._problem(401, "Unauthorized", cause="INVALID_TOKEN")
            scs = parts[0]
            op = {"POST": "create", "DELETE": "delete", "GET": "list"}.get(method, "other")
            with state.lock:
                d = state.delay_ms if state.delay_ue is None else 0
            if d:
                time.sleep(d / 1000.0)
            f = self._take_failure(op)
            if f in (307, 308):  # the resource's other URI: the same one with a query, or the control's location
                with state.lock:
                    loc = state.fail_location or self.path + "?moved=%d" % f
                return self._send(f, None, {"Location": loc})
            if f:
                with state.lock:
                    ra = state.fail_retry_after
                return self._problem(f, "Injected failure", headers={"Retry-After": str(ra)} if ra is not None else None)
            if len(parts) == 2 and method == "POST":
                return self._create(scs, raw)
            if len(parts) == 2 and method == "GET":
                # ip-addrs: a JSON array of IpAddr ({"ipv4Addr"} or {"ipv6Addr"}), the UEs asked about.
                q = parse_qs(self.path.partition("?")[2]).get("ip-addrs")
                try:
                    want = None if q is None else {a.get("ipv4Addr") or a.get("ipv6Addr") for a in json.loads(q[0])}
                except (ValueError, AttributeError, TypeError):
                    return self._problem(400, "Bad Request", "ip-addrs is not a JSON array of IpAddr",
                                         "INVALID_QUERY_PARAM", "ip-addrs")
                with state.lock:
                    items = [dict(s) for (owner, s) in state.subs.values() if owner == scs and
                             (want is None or s.get("ueIpv4Addr") in want or s.get("ueIpv6Addr") in want)]
                return self._send(200, items)
            if len(parts) == 3 and method in ("GET", "DELETE"):
                with state.lock:
                    s = state.subs.get(parts[2])
                    if s is None or s[0] != scs:
                        s = None
                    elif method == "DELETE":
                        del state.subs[parts[2]]
                if s is None:
                    return self._problem(404, "Not Found", cause="SUBSCRIPTION_NOT_FOUND")
                return self._send(200, s[1]) if method == "GET" else self._send(204)
            return self._problem(405, "Method Not Allowed")

        def _create(self, scs, raw):
            try:
                b = json.loads(raw)
                validate_subscription(b)
            except ValueError:
                return self._problem(400, "Malformed request syntax", cause="INVALID_MSG_FORMAT")
            except Invalid as e:
                return self._problem(400, "Invalid request", e.detail, e.cause, e.param)
            ue = _ue_of(b)
            with state.lock:
                if state.delay_ue is not None and state.delay_ue == ue:
                    d = state.delay_ms
                else:
                    d = 0
            if d:
                time.sleep(d / 1000.0)
            with state.lock:
                state.seq += 1
                sid = "sub%d" % state.seq
                loc = "%s://%s%s%s/subscriptions/%s" % (state.scheme, self.headers.get("Host"), API, scs, sid)
                b["self"] = loc
                state.subs[sid] = (scs, b)
                refuse = state.refuse and (state.refuse_ue is None or state.refuse_ue == ue)
                delay = state.notify_delay_ms
                silent = state.silent
            ev = "FAILED_RESOURCES_ALLOCATION" if refuse else "SUCCESSFUL_RESOURCES_ALLOCATION"
            if not silent:
                notify_later(state, delay, sid, b["notificationDestination"], ev, loc, remove=refuse)
            with state.lock:
                answer_delay = state.answer_delay_ms
            if answer_delay:  # made, but the answer comes late (a client's timeout loses it)
                time.sleep(answer_delay / 1000.0)
            return self._send(201, b, {"Location": loc})

        def _token(self, raw):
            form = parse_qs(raw.decode("utf-8", "replace"))
            auth = self.headers.get("Authorization", "")
            ok = False
            if auth.startswith("Basic "):
                try:
                    # RFC 6749 2.3.1: id and secret are form-urlencoded inside HTTP Basic.
                    cid, _, sec = (unquote_plus(x) for x in base64.b64decode(auth[6:]).decode().partition(":"))
                    ok = cid == state.args.client_id and sec == state.args.client_secret
                except ValueError:
                    ok = False
            if form.get("grant_type") != ["client_credentials"]:
                return self._send(400, {"error": "unsupported_grant_type"})
            if not ok:
                return self._send(401, {"error": "invalid_client"}, {"WWW-Authenticate": "Basic"})
            tok = secrets.token_urlsafe(24)
            with state.lock:
                state.tokens.add(tok)
            return self._send(200, {"access_token": tok, "token_type": "Bearer", "expires_in": state.args.token_ttl})

        def _control(self, method, path, raw):
            if method == "GET":
                with state.lock:
                    if path == "/_control/log":
                        return self._send(200, list(state.log))
                    if path == "/_control/notifications":
                        return self._send(200, list(state.notifications))
                    if path == "/_control/subscriptions":
                        return self._send(200, {k: v[1] for k, v in state.subs.items()})
                return self._problem(404, "Not Found")
            c = json.loads(raw or b"{}")
            later = []
            with state.lock:
                if "fail" in c:
                    state.fail = [int(c["fail"]), int(c.get("times", 1)), c.get("op", "any")]
                    state.fail_location = c.get("location")
                    state.fail_retry_after = c.get("retry_after")
                if "delay_ms" in c:
                    state.delay_ms, state.delay_ue = int(c["delay_ms"]), c.get("ue")
                if "answer_delay_ms" in c:
                    state.answer_delay_ms = int(c["answer_delay_ms"])
                if "silent" in c:
                    state.silent = bool(c["silent"])
                if "notify_delay_ms" in c:
                    state.notify_delay_ms = int(c["notify_delay_ms"])
                if "refuse" in c:
                    state.refuse, state.refuse_ue = bool(c["refuse"]), c.get("ue")
                if c.get("revoke_tokens"):
                    state.tokens.clear()
                if "add" in c:
                    state.seq += 1
                    sid = "sub%d" % state.seq
                    s = dict(c["add"]["subscription"])
                    host = c["add"].get("host") or self.headers.get("Host")  # another name: another origin
                    s["self"] = "%s://%s%s%s/subscriptions/%s" % (state.scheme, host, API, c["add"]["scsAsId"], sid)
                    state.subs[sid] = (c["add"]["scsAsId"], s)
                    later.append(("added", sid))
                for key, event in (("terminate", "SESSION_TERMINATION"), ("notify", c.get("event"))):
                    if key in c:
                        s = state.subs.get(c[key])
                        if s is None:
                            return self._problem(404, "Not Found")
                        later.append((c[key], s[1]["notificationDestination"], event, s[1]["self"], key == "terminate"))
            out = {}
            for item in later:
                if item[0] == "added":
                    out["id"] = item[1]
                else:
                    notify(state, *item[:4], remove=item[4])
            return self._send(200, out)

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_DELETE(self):
            self._handle("DELETE")

        def do_PUT(self):
            self._handle("PUT")

        def do_PATCH(self):
            self._handle("PATCH")

    return H


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--token-required", action="store_true")
    ap.add_argument("--client-id", default="qod")
    ap.add_argument("--client-secret", default="secret")
    ap.add_argument("--bearer", default="")
    ap.add_argument("--token-ttl", type=int, default=3600)
    ap.add_argument("--notify-delay-ms", type=int, default=100)
    ap.add_argument("--tls-cert", help="serve https with this PEM certificate (and --tls-key)")
    ap.add_argument("--tls-key")
    ap.add_argument("--client-ca", help="with --tls-cert: require a client certificate signed by these PEM CAs")
    args = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(State(args)))
    srv.daemon_threads = True
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.client_ca)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("READY %d" % srv.server_address[1], flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
