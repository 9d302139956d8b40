"""Mechanical conformance of qodd's CAMARA APIs with the OpenAPI files of CAMARA release r3.2:
quality-on-demand 1.1.0 (/quality-on-demand/v1), qos-profiles 1.1.0 (/qos-profiles/v1) and qos-provisioning 0.3.0
(/qos-provisioning/v0.3).

Nothing here is a hand-written expectation of a body's shape: every response the tests provoke is judged against
the spec file itself, by
1. its status: one the operation declares under `responses` (`$ref`s to components/responses resolved);
2. its body: valid (jsonschema, Draft 4 semantics as OpenAPI 3.0 uses, with a FormatChecker so that date-time,
   uuid, ipv4/ipv6, int32 and uri are checked) against the schema the spec declares for that operation and status;
   `application/json` Content-Type; no body where the spec declares none; an error body's `status` equal to the
   HTTP status (the per-status `code` enums are inside the spec's error schemas);
3. the headers the spec declares on that response (x-correlator: valid per its schema, and the request's own value
   echoed);
4. notifications: each callback POST the daemon makes to a `sink` against the `callbacks` section of the operation
   that took the sink (request body schema, media type, the x-correlator parameter, bearer auth when the app gave a
   sinkCredential).
The cases (which request, which status) come from each operation's response list and the spec's text (e.g. "the
server will return an error with the 422 MISSING_IDENTIFIER error code"); a case's expected code is given only
where the spec's text names one. Every error matrix collects all problems and fails once, naming each case.
test_every_declared_status_is_provoked (last) checks, from the spec files, that every path x method and every
declared status was provoked by this file.

The spec files are not in the repository: they are looked for in $QOD_CAMARA_SPECS, <repo>/../shared/reference/camara
and /work/shared/reference/camara (every test skips when none holds them). Needs PyYAML and jsonschema (the Debian
packages python3-yaml and python3-jsonschema do).

Daemons: D (default catalogue, --sandbox-delay-ms 100) with sandbox apps APP and OTHER, a live app LIVE, a
rate-limited app and a quota-limited one; P (a catalogue with every QosProfile attribute, an INACTIVE, a DEPRECATED
and a non-provisionable profile); the 202 of an asynchronous revocation needs the nef backend, so that test starts
its own daemon against tests/e2e/nef_emulator.py. Sinks are https on loopback (a throw-away self-signed certificate,
trusted with --callback-ca), as the spec's `sink` pattern `^https://` asks.
"""
import copy
import os
import re
import shutil
import subprocess
import sys
import threading
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qodlib import *  # noqa: E402,F401,F403

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
SPEC_FILES = [  # (file, base path qodd serves it under)
    ("quality-on-demand-v1.1.0.yaml", "/quality-on-demand/v1"),
    ("qos-profiles-v1.1.0.yaml", "/qos-profiles/v1"),
    ("qos-provisioning-v0.3.0.yaml", "/qos-provisioning/v0.3"),
]
DIST_PACKAGES = "/usr/lib/python3/dist-packages"
CIBA_GRANT = "urn:openid:params:grant-type:ciba"
APP_SERVER = {"ipv4Address": "198.51.100.0/24"}
NOBODY = object()

# Errata: places where a spec file contradicts itself, and the reading this file validates against instead.
# Each entry: (spec file, JSON pointer into the file, the value found there, the value used, why).
SPEC_ERRATA = [
    ("qos-provisioning-v0.3.0.yaml", "/components/schemas/EventStatusChanged/allOf/1/properties/data/required",
     ["assignmentId", "qosStatus"], ["assignmentId", "status"],
     "the same schema's `data.properties` define `assignmentId`, `status` and `statusInfo` (no `qosStatus`), and "
     "the spec's own ASSIGNMENT_STATUS_CHANGED_EXAMPLE carries `status`: as written, no event could both follow the "
     "properties and the example and be valid. CAMARA fixed it to [assignmentId, status] in 0.4.0-rc.1."),
]

# Statuses an operation may answer although it does not list them. Each spec's "Additional CAMARA error responses"
# says: "The list of error codes in this API specification is not exhaustive. Therefore the API specification may
# not document some non-mandatory error statuses as indicated in `CAMARA API Design Guide`. Please refer to the
# `CAMARA_common.yaml` of the Commonalities Release associated to this API version [...] As a specific rule, error
# `501 - NOT_IMPLEMENTED` can be only a possible error response if it is explicitly documented in the API."
# So: the other statuses of CAMARA_common.yaml (Commonalities 0.6), each with its one code there, judged as the
# spec's own ErrorInfo plus that status and code (and the spec's x-correlator header). 501 is not among them.
GENERIC_STATUSES = {405: "METHOD_NOT_ALLOWED", 406: "NOT_ACCEPTABLE", 410: "GONE", 412: "FAILED_PRECONDITION",
                    415: "UNSUPPORTED_MEDIA_TYPE", 500: "INTERNAL", 502: "BAD_GATEWAY", 503: "UNAVAILABLE",
                    504: "TIMEOUT"}

SKIP_REASON = None
SPECS = {}   # file -> Spec
OP = {}      # operationId -> Op
SEEN = {}    # (operationId, status) -> first case label that provoked it
_seen_lock = threading.Lock()

D = P = RECV = TLS_DIR = None
APP = OTHER = LIVE = RL_APP = Q_APP = PAPP = None
TOKEN = OTHER_TOKEN = LIVE_TOKEN = RL_TOKEN = Q_TOKEN = PTOKEN = None
T3 = T3_PHONE = None          # a 3-legged token of APP on D, for the device T3_PHONE
INELIGIBLE = None             # a live subscriber of D registered as ineligible


# --------------------------------------------------------------------------------------------------------------
# Libraries and spec files


def _import_libs():
    """(yaml, jsonschema, None) or (None, None, reason)."""
    try:
        import jsonschema
        import yaml
    except ImportError:
        if DIST_PACKAGES not in sys.path:
            sys.path.append(DIST_PACKAGES)
        try:
            import jsonschema
            import yaml
        except ImportError as e:
            return None, None, ("the conformance tests need PyYAML and jsonschema (Debian: apt-get install "
                                "python3-yaml python3-jsonschema; or pip install pyyaml jsonschema); also looked in "
                                "%s: %s" % (DIST_PACKAGES, e))
    return yaml, jsonschema, None


def _spec_dir():
    """(directory holding every file of SPEC_FILES, None) or (None, text saying where it looked)."""
    env = os.environ.get("QOD_CAMARA_SPECS")
    candidates = [("$QOD_CAMARA_SPECS", env)] if env else []
    candidates += [("<repo>/../shared/reference/camara", os.path.join(REPO, "..", "shared", "reference", "camara")),
                   ("", "/work/shared/reference/camara")]
    for _, c in candidates:
        if os.path.isdir(c) and all(os.path.isfile(os.path.join(c, f)) for f, _ in SPEC_FILES):
            return os.path.abspath(c), None
    looked = ["$QOD_CAMARA_SPECS (not set)"] if not env else []
    looked += ["%s%s" % (c, " (%s)" % label if label else "") for label, c in candidates]
    return None, ("CAMARA r3.2 spec files (%s) not found; looked in: %s"
                  % (", ".join(f for f, _ in SPEC_FILES), "; ".join(looked)))


def _pointer(doc, ptr):
    node = doc
    for part in ptr.lstrip("#").strip("/").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _set_pointer(doc, ptr, value):
    parts = ptr.strip("/").split("/")
    parent = _pointer(doc, "/" + "/".join(parts[:-1]))
    if isinstance(parent, list):
        parent[int(parts[-1])] = value
    else:
        parent[parts[-1]] = value


# Keywords of the OpenAPI 3.0 Schema Object that are annotations or OpenAPI-only, not JSON Schema validation.
_OAS_ONLY = {"discriminator", "example", "examples", "externalDocs", "xml", "deprecated", "readOnly", "writeOnly"}
# Keywords whose value is a map of name -> schema (the names are data, not keywords).
_SCHEMA_MAPS = {"properties", "patternProperties", "definitions"}
# Keywords whose value is data, never a schema.
_DATA = {"enum", "required", "default", "const"}


def _to_json_schema(node):
    """An OpenAPI 3.0 Schema Object as a Draft 4 JSON Schema: OpenAPI-only keywords dropped, `nullable: true`
    turned into a "null" type (and a null enum member)."""
    if isinstance(node, list):
        return [_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k in _OAS_ONLY or k.startswith("x-") or k == "nullable":
            continue
        if k in _SCHEMA_MAPS and isinstance(v, dict):
            out[k] = {name: _to_json_schema(s) for name, s in v.items()}
        elif k in _DATA:
            out[k] = copy.deepcopy(v)
        else:
            out[k] = _to_json_schema(v)
    if node.get("nullable") is True:
        if isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = out["enum"] + [None]
    return out


def _retarget(node, old, new):
    if isinstance(node, list):
        return [_retarget(x, old, new) for x in node]
    if isinstance(node, dict):
        return {k: (new if k == "$ref" and v == old else _retarget(v, old, new)) for k, v in node.items()}
    return node


def _schemas(doc):
    """components/schemas as JSON Schemas. A `discriminator` with a `mapping` becomes a constraint: an instance whose
    discriminating property has a mapped value must also be valid against the mapped schema (e.g. a CloudEvent of
    type org.camaraproject.quality-on-demand.v1.qos-status-changed against EventQosStatusChanged, whose `data` is
    otherwise unchecked). The mapped schema's own reference back to the base (allOf: [$ref base]) is pointed at a
    copy of the base without the constraint, so that validation does not loop."""
    raw = (doc.get("components") or {}).get("schemas") or {}
    out = {name: _to_json_schema(s) for name, s in raw.items()}
    for name, s in raw.items():
        disc = s.get("discriminator") if isinstance(s, dict) else None
        if not disc or not disc.get("mapping"):
            continue
        prop = disc["propertyName"]
        base = name + "__without_discriminator"
        out[base] = copy.deepcopy(out[name])
        clauses = []
        for value, ref in disc["mapping"].items():
            target = ref.rsplit("/", 1)[-1]
            variant = "%s__as_%s" % (target, name)
            out[variant] = _retarget(out[target], "#/components/schemas/" + name, "#/components/schemas/" + base)
            clauses.append({"anyOf": [{"not": {"required": [prop], "properties": {prop: {"enum": [value]}}}},
                                      {"$ref": "#/components/schemas/" + variant}]})
        out[name] = {"allOf": [out[name]] + clauses}
    return out


_URI_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]*$")
_URI_REF_RE = re.compile(r"^[^\s<>\"{}|\\^`]*$")


def _format_checker(jsonschema):
    """jsonschema's FormatChecker with every format it knows, plus the OpenAPI 3.0 formats int32/int64 and, when the
    optional packages behind them are missing, uri / uri-reference (RFC 3986 character rules) and date-time."""
    fc = jsonschema.FormatChecker()

    def add(name, fn):
        if name not in fc.checkers:
            fc.checks(name)(fn)
    add("int32", lambda v: not isinstance(v, int) or isinstance(v, bool) or -2 ** 31 <= v < 2 ** 31)
    add("int64", lambda v: not isinstance(v, int) or isinstance(v, bool) or -2 ** 63 <= v < 2 ** 63)
    add("uri", lambda v: not isinstance(v, str) or bool(_URI_RE.match(v)))
    add("uri-reference", lambda v: not isinstance(v, str) or bool(_URI_REF_RE.match(v)))

    def date_time(v):
        if not isinstance(v, str):
            return True
        if not RFC3339_RE.match(v):
            return False
        try:
            datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            return False
        return True
    add("date-time", date_time)
    return fc


class Spec:
    """One OpenAPI file: its document, base path, JSON-Schema form of its components/schemas and its operations."""

    def __init__(self, yaml, jsonschema, path, base):
        with open(path) as f:
            self.doc = yaml.safe_load(f)
        self.file = os.path.basename(path)
        self.base = base
        self.title = "%s %s" % (self.doc["info"]["title"], self.doc["info"]["version"])
        for file, ptr, found, used, _ in SPEC_ERRATA:
            if file == self.file:
                have = _pointer(self.doc, ptr)
                assert have == found, ("erratum for %s%s no longer applies (found %r): review SPEC_ERRATA"
                                       % (file, ptr, have))
                _set_pointer(self.doc, ptr, copy.deepcopy(used))
        self.schemas = _schemas(self.doc)
        self.jsonschema = jsonschema
        self.fc = _format_checker(jsonschema)
        self._validators = {}  # id(schema) -> (validator, schema): the schema is kept so that its id stays unique
        self._generic = {}
        self.ops = []
        for template, item in self.doc["paths"].items():
            for method, raw in item.items():
                if method in ("get", "put", "post", "delete", "patch", "head", "options", "trace"):
                    self.ops.append(Op(self, method.upper(), template, raw))

    def resolve(self, obj):
        seen = 0
        while isinstance(obj, dict) and "$ref" in obj:
            ref = obj["$ref"]
            assert ref.startswith("#/"), "only local $refs are expected in %s: %r" % (self.file, ref)
            obj = _pointer(self.doc, ref)
            seen += 1
            assert seen < 20, "$ref loop at %r" % ref
        return obj

    def generic_error(self, status):
        """The response object CAMARA_common.yaml gives `status` (GENERIC_STATUSES), built on this spec's ErrorInfo
        and x-correlator header."""
        if status not in self._generic:
            self._generic[status] = {
                "headers": {"x-correlator": {"$ref": "#/components/headers/x-correlator"}},
                "content": {"application/json": {"schema": {"allOf": [
                    {"$ref": "#/components/schemas/ErrorInfo"},
                    {"type": "object", "properties": {"status": {"enum": [status]},
                                                      "code": {"enum": [GENERIC_STATUSES[status]]}}}]}}}}
        return self._generic[status]

    def errors(self, schema, instance):
        """Validation errors of instance against an OpenAPI schema of this file, as readable lines."""
        key = id(schema)
        v = self._validators.get(key)
        if v is None:
            root = {"allOf": [_to_json_schema(schema)], "components": {"schemas": self.schemas}}
            cls = self.jsonschema.Draft4Validator
            cls.check_schema(root)
            v = self._validators[key] = (cls(root, format_checker=self.fc), schema)
        return [_fmt_error(e) for e in sorted(v[0].iter_errors(instance), key=lambda e: list(e.absolute_path))]


def _fmt_error(e, depth=0):
    where = "/" + "/".join(str(p) for p in e.absolute_path)
    msg = e.message if len(e.message) <= 240 else e.message[:100] + " … " + e.message[-130:]
    line = "%s: %s [schema: %s]" % (where, msg, "/".join(str(p) for p in e.absolute_schema_path))
    subs = [c for c in (e.context or []) if c.validator != "not"]
    if subs and depth < 2:
        line += " because " + "; ".join(_fmt_error(c, depth + 1) for c in subs[:4])
    return line


class Op:
    """One operation (path x method) of a spec."""

    def __init__(self, spec, method, template, raw):
        self.spec, self.method, self.template, self.raw = spec, method, template, raw
        self.id = raw.get("operationId") or "%s %s" % (method, template)
        self.responses = {str(k): spec.resolve(v) for k, v in raw["responses"].items()}

    def __repr__(self):
        return "%s (%s %s%s)" % (self.id, self.method, self.spec.base, self.template)

    def path(self, **params):
        p = self.template
        for k, v in params.items():
            p = p.replace("{%s}" % k, v)
        assert "{" not in p, "missing path parameter for %s: %s" % (self.id, p)
        return self.spec.base + p

    def param_schema(self, name, where="header"):
        for prm in self.raw.get("parameters") or []:
            prm = self.spec.resolve(prm)
            if prm.get("in") == where and prm.get("name", "").lower() == name.lower():
                return prm.get("schema")
        return None

    def check(self, resp, sent_correlator=None):
        """Everything the spec says about this response: status, headers, media type, body. Returns problems."""
        out = []
        declared = self.responses.get(str(resp.status)) or self.responses.get("%dXX" % (resp.status // 100)) \
            or self.responses.get("default")
        if declared is None and resp.status in GENERIC_STATUSES:
            declared = self.spec.generic_error(resp.status)
        if declared is None:
            return ["HTTP %d is not a response %s declares for %s (it declares %s)"
                    % (resp.status, self.spec.file, self.id, ", ".join(sorted(self.responses)))]
        for name, h in (declared.get("headers") or {}).items():
            h = self.spec.resolve(h)
            value = resp.headers.get(name)
            sent_ok = (sent_correlator is not None and name.lower() == "x-correlator"
                       and not self.spec.errors(self.param_schema(name) or {}, sent_correlator))
            if value is None:
                if h.get("required"):
                    out.append("header %s (required by the spec) is missing" % name)
                elif sent_ok:
                    out.append("the request's x-correlator %r is not echoed (no x-correlator header)" % sent_correlator)
                continue
            if h.get("schema"):
                out += ["header %s %r: %s" % (name, value, e) for e in self.spec.errors(h["schema"], value)]
            if sent_ok and value != sent_correlator:
                out.append("x-correlator %r is not the request's %r" % (value, sent_correlator))
        content = declared.get("content")
        if not content:
            if resp.body:
                out.append("the spec declares no content for HTTP %d, but the body is %r" % (resp.status,
                                                                                          resp.body[:200]))
            return out
        media = "application/json" if "application/json" in content else sorted(content)[0]
        ct = (resp.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ct != media:
            out.append("Content-Type %r, the spec declares %s" % (resp.headers.get("content-type"), media))
        try:
            body = json.loads(resp.body)
        except ValueError:
            return out + ["the body is not JSON: %r" % resp.body[:200]]
        schema = content[media].get("schema")
        if schema is not None:
            out += ["body %s" % e for e in self.spec.errors(schema, body)]
        if resp.status >= 400 and isinstance(body, dict) and body.get("status") != resp.status:
            out.append("body status %r is not the HTTP status %d" % (body.get("status"), resp.status))
        return out

    def callback(self):
        """The callback POST operation declared by this operation (one per spec here)."""
        cbs = self.raw.get("callbacks") or {}
        assert len(cbs) == 1, "%s declares %d callbacks" % (self.id, len(cbs))
        (_, cb), = cbs.items()
        cb = self.spec.resolve(cb)
        assert len(cb) == 1, cb.keys()
        (expr, item), = cb.items()
        return expr, self.spec.resolve(item)["post"]

    def check_callback(self, hook, sink, credential=None):
        """A notification the daemon sent to `sink` against the callback this operation declares."""
        expr, cb = self.callback()
        out = []
        if hook.method != "POST":
            out.append("notification method %s, the spec declares POST" % hook.method)
        assert expr == "{$request.body#/sink}", expr
        want_path = "/" + sink.split("://", 1)[1].split("/", 1)[1]
        if hook.path != want_path:
            out.append("notification sent to %r, not to the sink's path %r" % (hook.path, want_path))
        for prm in cb.get("parameters") or []:
            prm = self.spec.resolve(prm)
            if prm.get("in") != "header":
                continue
            value = hook.headers.get(prm["name"])
            if value is None:
                if prm.get("required"):
                    out.append("notification lacks required header %s" % prm["name"])
                continue
            out += ["notification header %s %r: %s" % (prm["name"], value, e)
                    for e in self.spec.errors(prm.get("schema") or {}, value)]
        security = cb.get("security") or []
        auth = hook.headers.get("authorization")
        if credential is not None:
            # The sinkCredential given: the bearer scheme of notificationsBearerAuth with its accessToken.
            schemes = [self.spec.resolve(self.spec.doc["components"]["securitySchemes"][name])
                       for req in security for name in req]
            assert any(s.get("type") == "http" and s.get("scheme") == "bearer" for s in schemes), security
            if auth != "Bearer " + credential["accessToken"]:
                out.append("notification Authorization %r, expected the sinkCredential's bearer token" % auth)
        elif auth is not None and {} not in security:
            out.append("notification carries Authorization %r though the app gave no sinkCredential" % auth)
        rb = self.spec.resolve(cb["requestBody"])
        content = rb["content"]
        (media, mt), = content.items()
        ct = (hook.headers.get("content-type") or "").split(";")[0].strip().lower()
        if ct != media:
            out.append("notification Content-Type %r, the spec declares %s" % (hook.headers.get("content-type"),
                                                                               media))
        try:
            body = json.loads(hook.body)
        except ValueError:
            return out + ["notification body is not JSON: %r" % hook.body[:200]]
        out += ["notification body %s" % e for e in self.spec.errors(mt["schema"], body)]
        return out


def _load():
    global SKIP_REASON
    yaml, jsonschema, why = _import_libs()
    if why:
        SKIP_REASON = why
        return False
    directory, why = _spec_dir()
    if why:
        SKIP_REASON = why
        return False
    for f, base in SPEC_FILES:
        s = SPECS[f] = Spec(yaml, jsonschema, os.path.join(directory, f), base)
        for op in s.ops:
            assert op.id not in OP, "operationId %s twice" % op.id
            OP[op.id] = op
    return True


def need():
    if SKIP_REASON:
        raise Skip(SKIP_REASON)


def _all_ops():
    return [op for f, _ in SPEC_FILES for op in SPECS[f].ops]


# --------------------------------------------------------------------------------------------------------------
# Requests and judgement


def correlator():
    return "conf-" + uuid.uuid4().hex[:16]


def call(d, op, params=None, token=None, body=NOBODY, raw=None, headers=None):
    """One request to op; returns (response, the x-correlator sent or None)."""
    h = {"x-correlator": correlator()}
    h.update(headers or {})
    if raw is not None:
        h.setdefault("Content-Type", "application/json")
    sent = h.get("x-correlator")
    if sent is None:
        h.pop("x-correlator", None)
    kw = {}
    if body is not NOBODY:
        kw["body"] = body
    elif raw is not None:
        kw["raw"] = raw
    elif op.method == "POST":
        kw["raw"] = b""
    resp = d.request(op.method, op.path(**(params or {})), token=token, headers=h, **kw)
    return resp, sent


def _excerpt(resp):
    return "HTTP %d %s" % (resp.status, resp.body[:400].decode("utf-8", "replace"))


class Report:
    """Collects the problems of many cases; done() fails once, naming every failing case."""

    def __init__(self, what):
        self.what = what
        self.problems = []
        self.count = 0

    def judge(self, label, op, resp, sent, expect=None, code=None):
        """Checks resp against the spec (always) and against the case: expect = a status or a set of them; code =
        a code or a set of codes the spec's text names for the case. Returns the parsed body (or None)."""
        self.count += 1
        with _seen_lock:
            SEEN.setdefault((op.id, str(resp.status)), label)
        probs = op.check(resp, sent)
        if expect is not None:
            want = {expect} if isinstance(expect, int) else set(expect)
            if resp.status not in want:
                probs.insert(0, "HTTP %d, expected %s" % (resp.status, " or ".join(map(str, sorted(want)))))
        body = None
        try:
            body = json.loads(resp.body) if resp.body else None
        except ValueError:
            pass
        if code is not None and resp.status >= 400:
            want = {code} if isinstance(code, str) else set(code)
            got = body.get("code") if isinstance(body, dict) else None
            if got not in want:
                probs.append("code %r, the spec names %s for this case" % (got, " or ".join(sorted(want))))
        if probs:
            self.problems.append("%s [%s %s%s]\n      %s\n      response: %s"
                                 % (label, op.method, op.spec.base, op.template, "\n      ".join(probs),
                                    _excerpt(resp)))
        return body

    def note(self, label, problems):
        if problems:
            self.problems.append("%s\n      %s" % (label, "\n      ".join(problems)))

    def done(self):
        assert not self.problems, "%s: %d of %d case(s) do not conform:\n  - %s" % (
            self.what, len(self.problems), self.count, "\n  - ".join(self.problems))


# --------------------------------------------------------------------------------------------------------------
# Helpers: bodies, credentials, 3-legged tokens, waiting


def iso_utc(t):
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sink_credential(token=None):
    return {"credentialType": "ACCESSTOKEN", "accessToken": token or ("sinktok-" + uuid.uuid4().hex),
            "accessTokenExpiresUtc": iso_utc(time.time() + 3600), "accessTokenType": "bearer"}


def sink(tag="s"):
    return RECV.url("/%s/%s" % (tag, uuid.uuid4().hex[:12]))


def session_body(phone=None, device=None, profile="QOS_L", duration=60, **extra):
    b = {"applicationServer": dict(APP_SERVER), "qosProfile": profile, "duration": duration}
    if device is not NOBODY:
        b["device"] = device if device is not None else {"phoneNumber": phone or new_phone()}
    b.update(extra)
    return b


def assignment_body(phone=None, device=None, profile="QOS_L", **extra):
    b = {"qosProfile": profile}
    if device is not NOBODY:
        b["device"] = device if device is not None else {"phoneNumber": phone or new_phone()}
    b.update(extra)
    return b


def three_legged(d, app, phone):
    """A 3-legged (CIBA) token of a sandbox app for phone, with every scope of the app."""
    scopes = "openid " + " ".join(scope_list(app.get("scopes")) or [])
    r = d.request("POST", "/oauth2/bc-authorize", form={"login_hint": "tel:" + phone, "scope": scopes.strip()},
                  auth=(app["client_id"], app["client_secret"]))
    assert r.status == 200, "bc-authorize: %r" % r
    r = d.request("POST", "/oauth2/token", form={"grant_type": CIBA_GRANT, "auth_req_id": r.json()["auth_req_id"]},
                  auth=(app["client_id"], app["client_secret"]))
    assert r.status == 200, "CIBA token: %r" % r
    return r.json()["access_token"]


def daemon_key(d):
    with open(os.path.join(d.data_dir, "signing-key.pem")) as f:
        return EcKey.from_pem(f.read())


def expired_token(d, base):
    header, payload = jwt_parts(base)
    now = int(time.time())
    payload = dict(payload, jti=str(uuid.uuid4()), iat=now - 7200, exp=now - 3600)
    return forge_token({"alg": "ES256", "typ": "JWT", "kid": header["kid"]}, payload, key=daemon_key(d))


def session_status(d, tok, sid):
    r = d.request("GET", OP["getSession"].path(sessionId=sid), token=tok)
    return r.json().get("qosStatus") if r.status == 200 else None


def assignment_status(d, tok, aid):
    r = d.request("GET", OP["getQosAssignmentById"].path(assignmentId=aid), token=tok)
    return r.json().get("status") if r.status == 200 else None


def wait_session(d, tok, sid, status, timeout=5):
    wait_until(lambda: session_status(d, tok, sid) == status, timeout=timeout,
               what=lambda: "session %s to become %s (is %s)" % (sid, status, session_status(d, tok, sid)))


def wait_assignment(d, tok, aid, status, timeout=5):
    wait_until(lambda: assignment_status(d, tok, aid) == status, timeout=timeout,
               what=lambda: "assignment %s to become %s (is %s)" % (aid, status, assignment_status(d, tok, aid)))


def create_session(d, tok, b):
    r, _ = call(d, OP["createSession"], token=tok, body=b)
    assert r.status == 201, "creating a session for the test: %r" % r
    return r.json()["sessionId"]


def create_assignment(d, tok, b):
    r, _ = call(d, OP["createQosAssignment"], token=tok, body=b)
    assert r.status == 201, "creating an assignment for the test: %r" % r
    return r.json()["assignmentId"]


def cleanup(d, tok, resp):
    """Ends the session or assignment a 201 made (a case that should have been refused, or a sample request)."""
    if resp.status != 201:
        return
    try:
        b = resp.json()
    except AssertionError:
        return
    if isinstance(b, dict) and b.get("sessionId"):
        call(d, OP["deleteSession"], {"sessionId": b["sessionId"]}, token=tok)
    elif isinstance(b, dict) and b.get("assignmentId"):
        call(d, OP["revokeQosAssignment"], {"assignmentId": b["assignmentId"]}, token=tok)


def force_network_event(d, tok, rid, status="UNAVAILABLE"):
    r = d.request("POST", "/sandbox/v0/sessions/%s/network-events" % rid, body={"qosStatus": status}, token=tok)
    assert r.status in (200, 204), "sandbox network event: %r" % r


def hooks_at(url):
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    return [h for h in list(RECV.requests) if h.path == path]


def wait_hooks(url, n, timeout=5):
    RECV.wait_until(lambda hs: len(hooks_at(url)) >= n or None, timeout=timeout,
                    what="%d notification(s) at %s" % (n, url))
    return hooks_at(url)


def daemon_args(extra=()):
    return ["--sandbox-delay-ms", "100", "--token-rate-client", "0", "--token-rate-ip", "0",
            "--callback-ca", os.path.join(TLS_DIR, "cert.pem"), "--callback-allow", "127.0.0.1/32",
            "--retry-schedule", "0,0.5,1"] + list(extra)


def catalogue():
    """Every QosProfile attribute on FULL; other statuses; a profile QoS Provisioning may not assign."""
    def prof(name, status="ACTIVE", **kw):
        p = {"name": name, "description": name + " profile", "status": status,
             "targetMinDownstreamRate": {"value": 5, "unit": "Mbps"}, "maxDownstreamRate": {"value": 20, "unit": "Mbps"},
             "minDuration": {"value": 1, "unit": "Seconds"}, "maxDuration": {"value": 86400, "unit": "Seconds"},
             "priority": 30, "packetDelayBudget": {"value": 100, "unit": "Milliseconds"}, "packetErrorLossRate": 4}
        p.update(kw)
        return p
    full = prof("QOS_FULL", description="Every attribute of the QosProfile schema.",
                countryAvailability=[{"countryName": "GB", "networks": ["23591", "23415"]}, {"countryName": "DE"}],
                targetMinUpstreamRate={"value": 2, "unit": "Mbps"}, maxUpstreamRate={"value": 10, "unit": "Mbps"},
                maxUpstreamBurstRate={"value": 20, "unit": "Mbps"}, maxDownstreamBurstRate={"value": 40, "unit": "Mbps"},
                maxDuration={"value": 1, "unit": "Days"}, priority=10,
                jitter={"value": 5, "unit": "Milliseconds"}, packetErrorLossRate=3, l4sQueueType="l4s-queue",
                serviceClass="real_time_interactive")
    return [prof("QOS_L"), prof("QOS_M"), full, prof("QOS_OFF", "INACTIVE"), prof("QOS_OLD", "DEPRECATED"),
            prof("QOS_SESSIONS_ONLY", **{"x-provisionable": False})]


# --------------------------------------------------------------------------------------------------------------
# Module set-up


def setup_module():
    global D, P, RECV, TLS_DIR, APP, OTHER, LIVE, RL_APP, Q_APP, PAPP, TOKEN, OTHER_TOKEN, LIVE_TOKEN, RL_TOKEN
    global Q_TOKEN, PTOKEN, T3, T3_PHONE, INELIGIBLE
    if not _load():
        return
    TLS_DIR = tempfile.mkdtemp(prefix="conf-tls-")
    cert, key = make_tls_cert(TLS_DIR)
    RECV = WebhookReceiver(certfile=cert, keyfile=key, default=(204, {}, b""))
    path = os.path.join(TLS_DIR, "profiles.json")
    with open(path, "w") as f:
        json.dump(catalogue(), f)
    D = Daemon(args=daemon_args())
    P = Daemon(args=daemon_args(["--profiles", path]))
    APP, TOKEN = new_app(D, "conformance")
    OTHER, OTHER_TOKEN = new_app(D, "other")
    LIVE, LIVE_TOKEN = new_app(D, "live", env="live")
    RL_APP = create_app(D, name="rate-limited", extra=("--rate-limit", "1", "--burst", "1"))
    RL_TOKEN = get_token(D, RL_APP)
    Q_APP, Q_TOKEN = new_app(D, "quota", extra=("--max-sessions", "1"))
    PAPP, PTOKEN = new_app(P, "profiles")
    INELIGIBLE = new_phone()
    D.qodctl("device", "add", "--phone", INELIGIBLE, "--ineligible")
    T3_PHONE = new_phone()
    T3 = three_legged(D, APP, T3_PHONE)


def teardown_module():
    for x in (P, D, RECV):
        if x is not None:
            x.close()
    if TLS_DIR:
        shutil.rmtree(TLS_DIR, ignore_errors=True)


# --------------------------------------------------------------------------------------------------------------
# The checker itself: the spec's own examples pass, known deviations are caught (no daemon involved)


def _examples(op):
    """[(where, status or None for the callback, schema, value)] of every example the spec attaches to op."""
    out = []
    for status, r in op.responses.items():
        for media, c in (r.get("content") or {}).items():
            for name, ex in (c.get("examples") or {}).items():
                out.append(("%s %s %s" % (op.id, status, name), status, c["schema"], op.spec.resolve(ex)["value"]))
            if "example" in c:
                out.append(("%s %s example" % (op.id, status), status, c["schema"], c["example"]))
    if op.raw.get("callbacks"):
        _, cb = op.callback()
        for media, c in op.spec.resolve(cb["requestBody"])["content"].items():
            for name, ex in (c.get("examples") or {}).items():
                out.append(("%s callback %s" % (op.id, name), None, c["schema"], op.spec.resolve(ex)["value"]))
    return out


def test_the_specs_own_examples_pass_the_checker():
    """Every example the three files attach to a response or a callback is valid against its schema as this file
    reads it (OpenAPI 3.0 -> JSON Schema, discriminators, SPEC_ERRATA): a check that the reading is right, and that
    a failure further on is the daemon's, not the reading's."""
    need()
    problems, n = [], 0
    for op in _all_ops():
        for where, _, schema, value in _examples(op):
            n += 1
            problems += ["%s: %s" % (where, e) for e in op.spec.errors(schema, value)]
    assert n >= 40, "only %d examples found" % n
    assert not problems, "examples of the spec that do not validate:\n  " + "\n  ".join(problems)


def _fake(status, body=None, headers=None, ct="application/json"):
    h = [("Content-Type", ct)] if body is not None and ct else []
    h += list((headers or {}).items())
    raw = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else b"")
    return Response(status, "", h, raw)


def _fake_hook(body, headers=None, path="/cb/x", ct="application/cloudevents+json"):
    h = [("Content-Type", ct)] + list((headers or {}).items())
    return Hook("POST", path, h, json.dumps(body).encode(), time.time())


def test_the_checker_catches_deviations():
    """Bodies, statuses and headers that break the spec in one way each: the checker must report every one (else
    the daemon tests above would pass vacuously)."""
    need()
    sid = str(uuid.uuid4())
    good = {"sessionId": sid, "qosProfile": "QOS_L", "duration": 60, "applicationServer": dict(APP_SERVER),
            "qosStatus": "AVAILABLE", "startedAt": "2024-06-01T12:00:00Z", "expiresAt": "2024-06-01T12:01:00Z"}
    ev = {"id": "1", "source": "https://api.example.com", "type": "org.camaraproject.quality-on-demand.v1.qos-status-"
          "changed", "specversion": "1.0", "time": "2024-06-01T12:00:00Z",
          "data": {"sessionId": sid, "qosStatus": "AVAILABLE"}}
    pev = {"id": "1", "source": "https://api.example.com", "type": "org.camaraproject.qos-provisioning.v0.status-"
           "changed", "specversion": "1.0", "time": "2024-06-01T12:00:00Z",
           "data": {"assignmentId": sid, "status": "AVAILABLE"}}
    profile = {"name": "QOS_L", "status": "ACTIVE", "maxDownstreamRate": {"value": 20, "unit": "Mbps"}}
    err404 = {"status": 404, "code": "NOT_FOUND", "message": "x"}
    g, c = OP["getSession"], OP["createSession"]
    # The baseline is clean: each case below differs from it in one respect.
    assert g.check(_fake(200, good, {"x-correlator": "abc"}), "abc") == []
    assert g.check(_fake(404, err404)) == []
    assert c.check_callback(_fake_hook(ev), "https://h/cb/x") == []
    assert OP["createQosAssignment"].check_callback(_fake_hook(pev), "https://h/cb/x") == []
    assert OP["getQosProfile"].check(_fake(200, profile)) == []
    cases = [
        ("sessionId missing", g, _fake(200, without(good, "sessionId")), "required property"),
        ("duration 0", g, _fake(200, dict(good, duration=0)), "minimum"),
        ("duration a string", g, _fake(200, dict(good, duration="60")), "is not of type"),
        ("duration beyond int32", g, _fake(200, dict(good, duration=2 ** 31)), "int32"),
        ("startedAt without time zone", g, _fake(200, dict(good, startedAt="2024-06-01T12:00:00")), "date-time"),
        ("sessionId not a UUID", g, _fake(200, dict(good, sessionId="abc")), "uuid"),
        ("qosStatus not in the enum", g, _fake(200, dict(good, qosStatus="EXPIRED")), "is not one of"),
        ("statusInfo not in the enum", g, _fake(200, dict(good, statusInfo="GONE")), "is not one of"),
        ("two identifiers echoed", g, _fake(200, dict(good, device={"phoneNumber": "+12345678", "ipv6Address":
                                                                     "2001:db8::1"})), "too many properties"),
        ("device.ipv4Address without port or private address", g, _fake(200, dict(
            good, device={"ipv4Address": {"publicAddress": "203.0.113.1"}})), "anyOf"),
        ("http sink", g, _fake(200, dict(good, sink="http://a.example/cb")), "does not match"),
        ("404 code not in the enum", g, _fake(404, dict(err404, code="SESSION_NOT_FOUND")), "is not one of"),
        ("404 body status 400", g, _fake(404, dict(err404, status=400)), "not the HTTP status"),
        ("error without message", g, _fake(404, without(err404, "message")), "required property"),
        ("400 with a code of another operation", g, _fake(400, {"status": 400, "message": "m",
                                                               "code": "QUALITY_ON_DEMAND.DURATION_OUT_OF_RANGE"}),
         "is not one of"),
        ("a status the operation does not declare", g, _fake(409, {"status": 409, "code": "CONFLICT",
                                                                   "message": "m"}), "not a response"),
        ("501 (excluded from the generic statuses)", g, _fake(501, {"status": 501, "code": "NOT_IMPLEMENTED",
                                                                    "message": "m"}), "not a response"),
        ("415 with a code CAMARA_common does not give it", g, _fake(415, {"status": 415, "code": "INVALID_ARGUMENT",
                                                                          "message": "m"}), "is not one of"),
        ("Content-Type text/plain", g, _fake(200, good, ct="text/plain"), "Content-Type"),
        ("a body that is not JSON", g, _fake(200, b"{", ct="application/json"), "not JSON"),
        ("a body on a 204", OP["deleteSession"], _fake(204, {"a": 1}), "no content"),
        ("x-correlator outside the pattern", g, _fake(200, good, {"x-correlator": "a b"}), "does not match"),
        ("x-correlator not echoed", g, _fake(200, good, {"x-correlator": "other"}), "not the request's"),
        ("x-correlator missing", g, _fake(200, good), "not echoed"),
        ("profile rate above 1024", OP["getQosProfile"], _fake(200, dict(profile, maxDownstreamRate={
            "value": 2000, "unit": "Mbps"})), "maximum"),
        ("profile unit not in the enum", OP["getQosProfile"], _fake(200, dict(profile, maxDownstreamRate={
            "value": 2, "unit": "MBps"})), "is not one of"),
        ("retrieve-sessions not an array", OP["retrieveSessionsByDevice"], _fake(200, good), "is not of type"),
        ("assignment status not in the enum", OP["getQosAssignmentById"], _fake(200, {
            "assignmentId": sid, "qosProfile": "QOS_L", "status": "EXPIRED"}), "is not one of"),
    ]
    sent = {"x-correlator not echoed": "abc", "x-correlator missing": "abc"}
    missed = []
    for label, op, resp, want in cases:
        probs = op.check(resp, sent.get(label))
        if not any(want in p for p in probs):
            missed.append("%s: expected a problem mentioning %r, got %r" % (label, want, probs))
    hook_cases = [
        ("event qosStatus REQUESTED (EventQosStatus; reached through the discriminator)", c,
         dict(ev, data={"sessionId": sid, "qosStatus": "REQUESTED"}), "is not one of", None),
        ("event without data.sessionId", c, dict(ev, data={"qosStatus": "AVAILABLE"}), "required property", None),
        ("event data.sessionId not a UUID", c, dict(ev, data={"sessionId": "x", "qosStatus": "AVAILABLE"}), "uuid",
         None),
        ("event type of another API", c, dict(ev, type=pev["type"]), "is not one of", None),
        ("event without time", c, without(ev, "time"), "required property", None),
        ("event specversion 0.3", c, dict(ev, specversion="0.3"), "is not one of", None),
        ("provisioning event without data.status (erratum)", OP["createQosAssignment"],
         dict(pev, data={"assignmentId": sid}), "required property", None),
        ("provisioning event status REQUESTED", OP["createQosAssignment"],
         dict(pev, data={"assignmentId": sid, "status": "REQUESTED"}), "is not one of", None),
        ("no bearer token though a sinkCredential was given", c, ev, "Authorization", {"accessToken": "t"}),
    ]
    for label, op, body, want, cred in hook_cases:
        probs = op.check_callback(_fake_hook(body), "https://h/cb/x", cred)
        if not any(want in p for p in probs):
            missed.append("%s: expected a problem mentioning %r, got %r" % (label, want, probs))
    for label, hook, want in (
            ("notification Content-Type application/json", _fake_hook(ev, ct="application/json"), "Content-Type"),
            ("notification to another path", _fake_hook(ev, path="/other"), "sink's path"),
            ("notification x-correlator outside the pattern", _fake_hook(ev, {"x-correlator": "a b"}),
             "does not match")):
        probs = c.check_callback(hook, "https://h/cb/x")
        if not any(want in p for p in probs):
            missed.append("%s: expected a problem mentioning %r, got %r" % (label, want, probs))
    assert not missed, "the checker misses deviations:\n  " + "\n  ".join(missed)


# --------------------------------------------------------------------------------------------------------------
# Quality-on-Demand 1.1.0: createSession


def test_create_session_success_responses_match_the_spec():
    need()
    op, rep = OP["createSession"], Report("createSession 201")
    ids = []
    cases = [
        ("phone number, https sink and sinkCredential", TOKEN,
         session_body(sink=sink(), sinkCredential=sink_credential())),
        ("phone, IPv4, IPv6 and NAI together (one identifier is echoed: DeviceResponse maxProperties 1)", TOKEN,
         session_body(device={"phoneNumber": new_phone(), "ipv4Address": {"publicAddress": "203.0.113.9",
                                                                           "privateAddress": "10.0.0.9"},
                              "ipv6Address": new_ipv6(), "networkAccessIdentifier": new_nai()})),
        ("IPv4 public address and port", TOKEN,
         session_body(device={"ipv4Address": {"publicAddress": "203.0.113.%d" % (1 + len(ids)), "publicPort": 59765}})),
        ("IPv4 public and private address", TOKEN,
         session_body(device={"ipv4Address": {"publicAddress": new_ipv4(), "privateAddress": new_ipv4()}})),
        ("IPv6 address", TOKEN, session_body(device={"ipv6Address": new_ipv6()})),
        ("ports and an IPv6 application server", TOKEN,
         session_body(applicationServer={"ipv4Address": "198.51.100.7", "ipv6Address": "2001:db8:85a3:8d3::/64"},
                      devicePorts={"ports": [5060, 5070], "ranges": [{"from": 5010, "to": 5020}]},
                      applicationServerPorts={"ranges": [{"from": 0, "to": 65535}]})),
        ("the profile's largest duration", TOKEN, session_body(duration=86400)),
        ("the shortest phone number the pattern allows", TOKEN, session_body(phone="+12345")),
        ("the longest phone number the pattern allows", TOKEN, session_body(phone="+123456789012345")),
        ("IPv4 public and private address and port", TOKEN, session_body(device={"ipv4Address": {
            "publicAddress": new_ipv4(), "privateAddress": new_ipv4(), "publicPort": 0}})),
        ("application server IPv6 /128, ports 0", TOKEN, session_body(
            applicationServer={"ipv6Address": "2001:db8::1/128"}, devicePorts={"ports": [0]})),
        ("sinkCredential expiry with an offset and fractions", TOKEN, session_body(sink=sink(), sinkCredential=dict(
            sink_credential(), accessTokenExpiresUtc="2099-12-31T23:59:59.123+02:00"))),
        ("3-legged token, no device", T3, session_body(device=NOBODY, sink=sink())),
    ]
    for label, tok, b in cases:
        r, sent = call(D, op, token=tok, body=b)
        body = rep.judge(label, op, r, sent, 201)
        if r.status == 201 and isinstance(body, dict) and body.get("sessionId"):
            ids.append((tok, body["sessionId"]))
    for tok, sid in ids:  # free the devices for the other tests
        call(D, OP["deleteSession"], {"sessionId": sid}, token=tok)
    rep.done()


def test_create_session_errors_match_the_spec():
    need()
    op, rep = OP["createSession"], Report("createSession errors")
    ok = session_body()
    cred = sink_credential()
    bad = [  # (label, body or raw bytes, code named by the spec's text or None)
        ("malformed JSON", b'{"device": {"phoneNumber": ', None),
        ("a JSON array, not an object", b"[]", None),
        ("an empty object", {}, None),
        ("applicationServer missing (required)", without(ok, "applicationServer"), None),
        ("qosProfile missing (required)", without(ok, "qosProfile"), None),
        ("duration missing (required)", without(ok, "duration"), None),
        ("duration 0 (minimum 1)", dict(ok, duration=0), None),
        ("duration a string", dict(ok, duration="60"), None),
        ("duration not whole", dict(ok, duration=1.5), None),
        ("duration above int32", dict(ok, duration=2 ** 31), None),
        ("duration above the profile's maxDuration", dict(ok, duration=86401),
         "QUALITY_ON_DEMAND.DURATION_OUT_OF_RANGE"),
        ("qosProfile shorter than minLength 3", dict(ok, qosProfile="QL"), None),
        ("qosProfile outside its pattern", dict(ok, qosProfile="QOS L!"), None),
        ("qosProfile a number", dict(ok, qosProfile=7), None),
        ("device empty (minProperties 1)", dict(ok, device={}), None),
        ("device.phoneNumber outside its pattern", dict(ok, device={"phoneNumber": "0044 20 7946"}), None),
        ("device.ipv4Address with publicAddress only (anyOf)", dict(ok, device={"ipv4Address": {
            "publicAddress": "203.0.113.5"}}), None),
        ("device.ipv4Address.publicAddress not ipv4", dict(ok, device={"ipv4Address": {
            "publicAddress": "203.0.113.300", "publicPort": 1}}), None),
        ("device.ipv4Address.publicPort above 65535", dict(ok, device={"ipv4Address": {
            "publicAddress": "203.0.113.5", "publicPort": 65536}}), None),
        ("device.ipv6Address not ipv6", dict(ok, device={"ipv6Address": "2001:db8::g"}), None),
        ("applicationServer empty (minProperties 1)", dict(ok, applicationServer={}), None),
        ("applicationServer.ipv4Address not an address", dict(ok, applicationServer={"ipv4Address": "server"}),
         None),
        ("applicationServer.ipv4Address with a mask of 33", dict(ok, applicationServer={
            "ipv4Address": "198.51.100.0/33"}), None),
        ("devicePorts empty (minProperties 1)", dict(ok, devicePorts={}), None),
        ("devicePorts.ports empty (minItems 1)", dict(ok, devicePorts={"ports": []}), None),
        ("devicePorts.ports item above 65535", dict(ok, devicePorts={"ports": [70000]}), None),
        ("applicationServerPorts range without `to`", dict(ok, applicationServerPorts={"ranges": [{"from": 1}]}),
         None),
        ("sink not a URI", dict(ok, sink="not a url"), None),
        ("sink a number", dict(ok, sink=42), None),
        ("sinkCredential without credentialType", dict(ok, sink=sink(), sinkCredential=without(cred,
                                                                                          "credentialType")), None),
        ("sinkCredential PLAIN (spec: MUST be ACCESSTOKEN)", dict(ok, sink=sink(), sinkCredential={
            "credentialType": "PLAIN", "identifier": "user", "secret": "pw"}), "INVALID_CREDENTIAL"),
        ("sinkCredential REFRESHTOKEN (spec: MUST be ACCESSTOKEN)", dict(ok, sink=sink(), sinkCredential=dict(
            cred, credentialType="REFRESHTOKEN", refreshToken="r", refreshTokenEndpoint="https://a.example/t")),
         "INVALID_CREDENTIAL"),
        ("sinkCredential accessTokenType mac (enum: bearer)", dict(ok, sink=sink(), sinkCredential=dict(
            cred, accessTokenType="mac")), "INVALID_TOKEN"),
        ("sinkCredential without accessToken", dict(ok, sink=sink(), sinkCredential=without(cred, "accessToken")),
         None),
        ("sinkCredential without accessTokenExpiresUtc", dict(ok, sink=sink(), sinkCredential=without(
            cred, "accessTokenExpiresUtc")), None),
        ("sinkCredential accessTokenExpiresUtc not date-time", dict(ok, sink=sink(), sinkCredential=dict(
            cred, accessTokenExpiresUtc="tomorrow")), None),
    ]
    for label, b, code in bad:
        if isinstance(b, bytes):
            r, sent = call(D, op, token=TOKEN, raw=b)
        else:
            b = dict(b, device={"phoneNumber": new_phone()}) if isinstance(b, dict) and b.get("device") == ok[
                "device"] else b
            r, sent = call(D, op, token=TOKEN, body=b)
        rep.judge("400: " + label, op, r, sent, 400, code)
        if r.status == 201:
            call(D, OP["deleteSession"], {"sessionId": r.json()["sessionId"]}, token=TOKEN)
    # A sink the spec's pattern ^https:// refuses, from a live app (sandbox apps may use http: docs/api.md).
    r, sent = call(D, op, token=LIVE_TOKEN, body=session_body(sink="http://app.example.com/cb"))
    rep.judge("400: an http sink (pattern ^https://), live app", op, r, sent, 400)

    # 404: device not found (GenericDevice404)
    r, sent = call(D, op, token=TOKEN, body=session_body(phone="+99999990404"))
    rep.judge("404: sandbox number +99999990404", op, r, sent, 404, {"IDENTIFIER_NOT_FOUND", "NOT_FOUND"})
    r, sent = call(D, op, token=LIVE_TOKEN, body=session_body(sink="https://app.example.com/cb"))
    rep.judge("404: live app, device not a subscriber", op, r, sent, 404, {"IDENTIFIER_NOT_FOUND", "NOT_FOUND"})

    # 409: a second session for the same device (SessionInConflict409)
    phone = new_phone()
    sid = create_session(D, TOKEN, session_body(phone=phone))
    r, sent = call(D, op, token=TOKEN, body=session_body(phone=phone))
    rep.judge("409: a second session for the device", op, r, sent, 409, "CONFLICT")
    call(D, OP["deleteSession"], {"sessionId": sid}, token=TOKEN)
    phone = new_phone()
    aid = create_assignment(D, TOKEN, assignment_body(phone=phone))
    r, sent = call(D, op, token=TOKEN, body=session_body(phone=phone))
    rep.judge("409: the device holds a QoS assignment", op, r, sent, 409, "CONFLICT")
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=TOKEN)

    # 422 (CreateSessionUnprocessableEntity422): the spec's text names each code.
    r, sent = call(D, op, token=TOKEN, body=session_body(device=NOBODY))
    rep.judge("422: no device with a 2-legged token", op, r, sent, 422, "MISSING_IDENTIFIER")
    r, sent = call(D, op, token=T3, body=session_body())
    rep.judge("422: a device with a 3-legged token", op, r, sent, 422, "UNNECESSARY_IDENTIFIER")
    r, sent = call(D, op, token=TOKEN, body=session_body(device={"networkAccessIdentifier": new_nai()}))
    rep.judge("422: networkAccessIdentifier only (not supported in this version)", op, r, sent, 422,
              "UNSUPPORTED_IDENTIFIER")
    r, sent = call(D, op, token=TOKEN, body=session_body(phone="+99999990422"))
    rep.judge("422: sandbox number +99999990422", op, r, sent, 422, "SERVICE_NOT_APPLICABLE")
    r, sent = call(D, op, token=LIVE_TOKEN, body=session_body(phone=INELIGIBLE, sink="https://app.example.com/cb"))
    rep.judge("422: live app, subscriber not eligible", op, r, sent, 422, "SERVICE_NOT_APPLICABLE")
    for profile, status in (("QOS_OFF", "INACTIVE"), ("QOS_OLD", "DEPRECATED")):
        r, sent = call(P, op, token=PTOKEN, body=session_body(profile=profile))
        rep.judge("422: a %s profile" % status, op, r, sent, 422, "QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE")
        if r.status == 201:
            call(P, OP["deleteSession"], {"sessionId": r.json()["sessionId"]}, token=PTOKEN)

    # 429 QUOTA_EXCEEDED: an app allowed one active session asks for a second.
    sid = create_session(D, Q_TOKEN, session_body())
    r, sent = call(D, op, token=Q_TOKEN, body=session_body())
    rep.judge("429: over the app's session quota", op, r, sent, 429, "QUOTA_EXCEEDED")
    call(D, OP["deleteSession"], {"sessionId": sid}, token=Q_TOKEN)
    rep.done()


# --------------------------------------------------------------------------------------------------------------
# Quality-on-Demand 1.1.0: getSession, deleteSession, extendQosSessionDuration, retrieveSessionsByDevice


def test_get_session_in_every_status_matches_the_spec():
    need()
    get, rep = OP["getSession"], Report("getSession 200")
    # REQUESTED: +99999991003 stays REQUESTED 10 s.
    slow = create_session(D, TOKEN, session_body(phone="+99999991003"))
    r, sent = call(D, get, {"sessionId": slow}, token=TOKEN)
    rep.judge("200: REQUESTED (+99999991003)", get, r, sent, 200)
    call(D, OP["deleteSession"], {"sessionId": slow}, token=TOKEN)
    r, sent = call(D, get, {"sessionId": slow}, token=TOKEN)
    rep.judge("200: UNAVAILABLE, deleted while REQUESTED", get, r, sent, 200)
    # AVAILABLE, then deleted at once (available for well under a second: duration minimum 1 still holds).
    sid = create_session(D, TOKEN, session_body(sink=sink(), sinkCredential=sink_credential()))
    wait_session(D, TOKEN, sid, "AVAILABLE")
    r, sent = call(D, get, {"sessionId": sid}, token=TOKEN)
    rep.judge("200: AVAILABLE", get, r, sent, 200)
    call(D, OP["deleteSession"], {"sessionId": sid}, token=TOKEN)
    r, sent = call(D, get, {"sessionId": sid}, token=TOKEN)
    rep.judge("200: UNAVAILABLE / DELETE_REQUESTED", get, r, sent, 200)
    # Refused by the network: +99999991001.
    sid = create_session(D, TOKEN, session_body(phone="+99999991001"))
    wait_session(D, TOKEN, sid, "UNAVAILABLE")
    r, sent = call(D, get, {"sessionId": sid}, token=TOKEN)
    rep.judge("200: UNAVAILABLE, refused by the network (+99999991001)", get, r, sent, 200)
    # Ended by the network after AVAILABLE.
    sid = create_session(D, TOKEN, session_body())
    wait_session(D, TOKEN, sid, "AVAILABLE")
    force_network_event(D, TOKEN, sid)
    r, sent = call(D, get, {"sessionId": sid}, token=TOKEN)
    rep.judge("200: UNAVAILABLE / NETWORK_TERMINATED after AVAILABLE", get, r, sent, 200)
    # DURATION_EXPIRED: one second.
    sid = create_session(D, TOKEN, session_body(duration=1))
    wait_session(D, TOKEN, sid, "UNAVAILABLE", timeout=5)
    r, sent = call(D, get, {"sessionId": sid}, token=TOKEN)
    rep.judge("200: UNAVAILABLE / DURATION_EXPIRED", get, r, sent, 200)
    # Several identifiers, and a 3-legged token's own session.
    sid = create_session(D, TOKEN, session_body(device={"ipv6Address": new_ipv6(), "phoneNumber": new_phone()}))
    r, sent = call(D, get, {"sessionId": sid}, token=TOKEN)
    rep.judge("200: created with two identifiers", get, r, sent, 200)
    call(D, OP["deleteSession"], {"sessionId": sid}, token=TOKEN)
    sid = create_session(D, T3, session_body(device=NOBODY))
    r, sent = call(D, get, {"sessionId": sid}, token=T3)
    rep.judge("200: 3-legged", get, r, sent, 200)
    call(D, OP["deleteSession"], {"sessionId": sid}, token=T3)
    rep.done()


def _by_id_errors(rep, op, param, own_id, body=NOBODY):
    """The 400/403/404 cases every operation on /{id} shares (Generic400/403/404)."""
    for label, value in (("not a UUID", "not-a-uuid"), ("a UUID with a trailing character", str(uuid.uuid4()) + "0"),
                         ("a UUID without dashes", uuid.uuid4().hex)):
        r, sent = call(D, op, {param: value}, token=TOKEN, body=body)
        rep.judge("400: path parameter %s" % label, op, r, sent, 400)
    r, sent = call(D, op, {param: str(uuid.uuid4())}, token=TOKEN, body=body)
    rep.judge("404: unknown id", op, r, sent, 404, "NOT_FOUND")
    # "The session must have been created by the same API client given in the access token" (no status named:
    # Generic403 and Generic404 are both declared).
    r, sent = call(D, op, {param: own_id}, token=OTHER_TOKEN, body=body)
    rep.judge("403/404: another app's resource", op, r, sent, {403, 404}, {"PERMISSION_DENIED", "NOT_FOUND"})
    # "If a 3-legged access token is used, the subject associated with the session must also be associated with
    # the access token."
    r, sent = call(D, op, {param: own_id}, token=T3, body=body)
    rep.judge("403/404: a 3-legged token of another device", op, r, sent, {403, 404},
              {"PERMISSION_DENIED", "NOT_FOUND"})


def test_get_session_errors_match_the_spec():
    need()
    op, rep = OP["getSession"], Report("getSession errors")
    sid = create_session(D, TOKEN, session_body())
    _by_id_errors(rep, op, "sessionId", sid)
    aid = create_assignment(D, TOKEN, assignment_body())
    r, sent = call(D, op, {"sessionId": aid}, token=TOKEN)
    rep.judge("404: an assignment's id is no session", op, r, sent, 404, "NOT_FOUND")
    call(D, OP["deleteSession"], {"sessionId": sid}, token=TOKEN)
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=TOKEN)
    rep.done()


def test_delete_session_matches_the_spec():
    need()
    op, rep = OP["deleteSession"], Report("deleteSession")
    sid = create_session(D, TOKEN, session_body(sink=sink()))
    _by_id_errors(rep, op, "sessionId", sid)
    r, sent = call(D, op, {"sessionId": sid}, token=TOKEN)
    rep.judge("204: REQUESTED or AVAILABLE session", op, r, sent, 204)
    r, sent = call(D, op, {"sessionId": sid}, token=TOKEN)
    rep.judge("204/404: the same session again (already UNAVAILABLE)", op, r, sent, {204, 404})
    sid = create_session(D, TOKEN, session_body())
    wait_session(D, TOKEN, sid, "AVAILABLE")
    r, sent = call(D, op, {"sessionId": sid}, token=TOKEN)
    rep.judge("204: AVAILABLE session", op, r, sent, 204)
    sid = create_session(D, T3, session_body(device=NOBODY))
    r, sent = call(D, op, {"sessionId": sid}, token=T3)
    rep.judge("204: 3-legged", op, r, sent, 204)
    rep.done()


def test_extend_session_matches_the_spec():
    need()
    op, rep = OP["extendQosSessionDuration"], Report("extendQosSessionDuration")
    sid = create_session(D, TOKEN, session_body(duration=60))
    wait_session(D, TOKEN, sid, "AVAILABLE")
    ok = {"requestedAdditionalDuration": 30}
    r, sent = call(D, op, {"sessionId": sid}, token=TOKEN, body=ok)
    rep.judge("200: AVAILABLE session", op, r, sent, 200)
    r, sent = call(D, op, {"sessionId": sid}, token=TOKEN, body={"requestedAdditionalDuration": 200000})
    rep.judge("200: beyond the profile's maxDuration (capped, not refused)", op, r, sent, 200)
    _by_id_errors(rep, op, "sessionId", sid, body=ok)
    for label, b in (("malformed JSON", b'{"requestedAdditionalDuration": '), ("an empty object", {}),
                     ("requestedAdditionalDuration 0 (minimum 1)", {"requestedAdditionalDuration": 0}),
                     ("requestedAdditionalDuration negative", {"requestedAdditionalDuration": -5}),
                     ("requestedAdditionalDuration a string", {"requestedAdditionalDuration": "30"}),
                     ("requestedAdditionalDuration above int32", {"requestedAdditionalDuration": 2 ** 31}),
                     ("a JSON array", b"[30]")):
        if isinstance(b, bytes):
            r, sent = call(D, op, {"sessionId": sid}, token=TOKEN, raw=b)
        else:
            r, sent = call(D, op, {"sessionId": sid}, token=TOKEN, body=b)
        rep.judge("400: " + label, op, r, sent, 400)
    call(D, OP["deleteSession"], {"sessionId": sid}, token=TOKEN)
    # 409 SessionStatusConflict409: "Extend ... an active QoS session (with qosStatus = AVAILABLE)".
    r, sent = call(D, op, {"sessionId": sid}, token=TOKEN, body=ok)
    rep.judge("409: an UNAVAILABLE session", op, r, sent, 409, "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED")
    slow = create_session(D, TOKEN, session_body(phone="+99999991003"))
    r, sent = call(D, op, {"sessionId": slow}, token=TOKEN, body=ok)
    rep.judge("409: a REQUESTED session (+99999991003)", op, r, sent, 409,
              "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED")
    call(D, OP["deleteSession"], {"sessionId": slow}, token=TOKEN)
    rep.done()


def _device_lookup_errors(rep, op, d, tok, live_tok, three, body_of, with_missing=True):
    """The device-identification cases of the retrieve operations (400, GenericDevice404, Generic422)."""
    for label, raw in (("malformed JSON", b'{"device": '), ("a JSON array", b"[]")):
        r, sent = call(d, op, token=tok, raw=raw)
        rep.judge("400: " + label, op, r, sent, 400)
    for label, dev in (("device empty (minProperties 1)", {}),
                       ("device.phoneNumber outside its pattern", {"phoneNumber": "12345"}),
                       ("device.ipv4Address publicAddress only", {"ipv4Address": {"publicAddress": "203.0.113.5"}}),
                       ("device.ipv6Address not ipv6", {"ipv6Address": "::g"}),
                       ("device a string", "+15550000000")):
        r, sent = call(d, op, token=tok, body=body_of(dev))
        rep.judge("400: " + label, op, r, sent, 400)
    if with_missing:
        r, sent = call(d, op, token=tok, body={})
        rep.judge("422: no device with a 2-legged token", op, r, sent, 422, "MISSING_IDENTIFIER")
    r, sent = call(d, op, token=three, body=body_of({"phoneNumber": new_phone()}))
    rep.judge("422: a device with a 3-legged token", op, r, sent, 422, "UNNECESSARY_IDENTIFIER")
    r, sent = call(d, op, token=tok, body=body_of({"networkAccessIdentifier": new_nai()}))
    rep.judge("422: networkAccessIdentifier only", op, r, sent, 422, "UNSUPPORTED_IDENTIFIER")
    if live_tok is not None:
        r, sent = call(d, op, token=live_tok, body=body_of({"phoneNumber": new_phone()}))
        rep.judge("404: live app, device not a subscriber", op, r, sent, 404, "IDENTIFIER_NOT_FOUND")
        r, sent = call(d, op, token=live_tok, body=body_of({"phoneNumber": INELIGIBLE}))
        rep.judge("422: live app, subscriber not eligible", op, r, sent, 422, "SERVICE_NOT_APPLICABLE")


def test_retrieve_sessions_matches_the_spec():
    need()
    op, rep = OP["retrieveSessionsByDevice"], Report("retrieveSessionsByDevice")
    phone = new_phone()
    sid = create_session(D, TOKEN, session_body(phone=phone, sink=sink()))
    r, sent = call(D, op, token=TOKEN, body={"device": {"phoneNumber": phone}})
    body = rep.judge("200: the device's session", op, r, sent, 200)
    if r.status == 200 and not (isinstance(body, list) and len(body) == 1):
        rep.note("200: the device's session", ["expected the one session, got %r" % (body,)])
    wait_session(D, TOKEN, sid, "AVAILABLE")
    r, sent = call(D, op, token=TOKEN, body={"device": {"phoneNumber": phone}})
    rep.judge("200: the device's AVAILABLE session", op, r, sent, 200)
    call(D, OP["deleteSession"], {"sessionId": sid}, token=TOKEN)
    r, sent = call(D, op, token=TOKEN, body={"device": {"phoneNumber": new_phone()}})
    rep.judge("200: a device without sessions (empty array)", op, r, sent, 200)
    r, sent = call(D, op, token=TOKEN, body={"device": {"ipv4Address": {"publicAddress": new_ipv4(),
                                                                        "publicPort": 443}}})
    rep.judge("200: an IPv4 device", op, r, sent, 200)
    sid = create_session(D, T3, session_body(device=NOBODY))
    r, sent = call(D, op, token=T3, body={})
    rep.judge("200: 3-legged, no device", op, r, sent, 200)
    call(D, OP["deleteSession"], {"sessionId": sid}, token=T3)
    _device_lookup_errors(rep, op, D, TOKEN, LIVE_TOKEN, T3, lambda dev: {"device": dev})
    rep.done()


# --------------------------------------------------------------------------------------------------------------
# QoS Profiles 1.1.0


def test_get_qos_profile_matches_the_spec():
    need()
    op, rep = OP["getQosProfile"], Report("getQosProfile")
    for d, tok, names in ((D, TOKEN, ("QOS_L", "QOS_M", "QOS_S")),
                          (P, PTOKEN, [p["name"] for p in catalogue()])):
        for name in names:
            r, sent = call(d, op, {"name": name}, token=tok)
            rep.judge("200: %s (%s catalogue)" % (name, "default" if d is D else "full"), op, r, sent, 200)
    r, sent = call(D, op, {"name": "QOS_L"}, token=T3)
    rep.judge("200: 3-legged", op, r, sent, 200)
    for label, name in (("shorter than minLength 3", "QL"), ("longer than maxLength 256", "Q" * 257),
                        ("outside the pattern", "QOS%21L"), ("with a space", "QOS%20L")):
        r, sent = call(D, op, {"name": name}, token=TOKEN)
        rep.judge("400: name " + label, op, r, sent, 400)
    r, sent = call(D, op, {"name": "QOS_NOT_IN_CATALOGUE"}, token=TOKEN)
    rep.judge("404: unknown profile", op, r, sent, 404, "NOT_FOUND")
    rep.done()


def test_retrieve_qos_profiles_matches_the_spec():
    need()
    op, rep = OP["retrieveQoSProfiles"], Report("retrieveQoSProfiles")
    for d, tok, label, b in ((D, TOKEN, "no filter", {}), (P, PTOKEN, "no filter, full catalogue", {}),
                             (P, PTOKEN, "status INACTIVE", {"status": "INACTIVE"}),
                             (P, PTOKEN, "status DEPRECATED", {"status": "DEPRECATED"}),
                             (D, TOKEN, "name", {"name": "QOS_M"}),
                             (D, TOKEN, "device", {"device": {"phoneNumber": new_phone()}}),
                             (D, TOKEN, "device, name and status", {"device": {"ipv6Address": new_ipv6()},
                                                                    "name": "QOS_L", "status": "ACTIVE"}),
                             (D, T3, "3-legged", {})):
        r, sent = call(d, op, token=tok, body=b)
        rep.judge("200: " + label, op, r, sent, 200)
    r, sent = call(D, op, token=TOKEN, body={"name": "QOS_NOT_IN_CATALOGUE"})
    rep.judge("200/404: a name no profile has", op, r, sent, {200, 404})
    for label, b in (("status not in the enum", {"status": "GONE"}), ("name shorter than minLength 3",
                                                                       {"name": "QL"}),
                     ("name outside the pattern", {"name": "QOS L"}), ("status a number", {"status": 1})):
        r, sent = call(D, op, token=TOKEN, body=b)
        rep.judge("400: " + label, op, r, sent, 400)
    _device_lookup_errors(rep, op, D, TOKEN, LIVE_TOKEN, T3, lambda dev: {"device": dev}, with_missing=False)
    rep.done()


# --------------------------------------------------------------------------------------------------------------
# QoS Provisioning 0.3.0


def test_create_qos_assignment_success_responses_match_the_spec():
    need()
    op, rep = OP["createQosAssignment"], Report("createQosAssignment 201")
    made = []
    for label, d, tok, b in (
            ("phone number, https sink and sinkCredential", D, TOKEN,
             assignment_body(sink=sink(), sinkCredential=sink_credential())),
            ("several identifiers (one echoed: DeviceResponse maxProperties 1)", D, TOKEN,
             assignment_body(device={"phoneNumber": new_phone(), "ipv6Address": new_ipv6(),
                                     "ipv4Address": {"publicAddress": new_ipv4(), "publicPort": 1}})),
            ("IPv4 device", D, TOKEN, assignment_body(device={"ipv4Address": {"publicAddress": new_ipv4(),
                                                                              "privateAddress": new_ipv4()}})),
            ("refused at once (+99999991001)", D, TOKEN, assignment_body(phone="+99999991001")),
            ("explicitly provisionable profile on the full catalogue", P, PTOKEN, assignment_body(profile="QOS_M")),
            ("3-legged token, no device", D, T3, assignment_body(device=NOBODY, sink=sink()))):
        r, sent = call(d, op, token=tok, body=b)
        body = rep.judge("201: " + label, op, r, sent, 201)
        if r.status == 201 and isinstance(body, dict) and body.get("assignmentId"):
            made.append((d, tok, body["assignmentId"]))
    for d, tok, aid in made:
        call(d, OP["revokeQosAssignment"], {"assignmentId": aid}, token=tok)
    rep.done()


def test_create_qos_assignment_errors_match_the_spec():
    need()
    op, rep = OP["createQosAssignment"], Report("createQosAssignment errors")
    cred = sink_credential()

    def ok(**kw):
        return assignment_body(**kw)
    for label, b, code in (
            ("malformed JSON", b'{"qosProfile": ', None), ("a JSON array", b"[]", None),
            ("an empty object (qosProfile required)", {}, None),
            ("qosProfile missing", without(ok(), "qosProfile"), None),
            ("qosProfile shorter than minLength 3", ok(profile="QL"), None),
            ("qosProfile outside the pattern", ok(profile="QOS L"), None),
            ("device empty", ok(device={}), None),
            ("device.phoneNumber outside its pattern", ok(device={"phoneNumber": "+0123"}), None),
            ("device.ipv4Address publicAddress only", ok(device={"ipv4Address": {"publicAddress": "203.0.113.8"}}),
             None),
            ("device.ipv6Address not ipv6", ok(device={"ipv6Address": "2001:db8::1::1"}), None),
            ("sink not a URI", ok(sink="not a url"), None),
            ("sinkCredential without credentialType", ok(sink=sink(), sinkCredential=without(cred, "credentialType")),
             None),
            ("sinkCredential PLAIN (MUST be ACCESSTOKEN)", ok(sink=sink(), sinkCredential={
                "credentialType": "PLAIN", "identifier": "u", "secret": "s"}), "INVALID_CREDENTIAL"),
            ("sinkCredential accessTokenType mac", ok(sink=sink(), sinkCredential=dict(cred, accessTokenType="mac")),
             "INVALID_TOKEN"),
            ("sinkCredential accessTokenExpiresUtc not date-time", ok(sink=sink(), sinkCredential=dict(
                cred, accessTokenExpiresUtc="2030-01-01")), None)):
        if isinstance(b, bytes):
            r, sent = call(D, op, token=TOKEN, raw=b)
        else:
            r, sent = call(D, op, token=TOKEN, body=b)
        rep.judge("400: " + label, op, r, sent, 400, code)
        if r.status == 201:
            call(D, OP["revokeQosAssignment"], {"assignmentId": r.json()["assignmentId"]}, token=TOKEN)
    r, sent = call(D, op, token=LIVE_TOKEN, body=ok(sink="http://app.example.com/cb"))
    rep.judge("400: an http sink (pattern ^https://), live app", op, r, sent, 400)

    r, sent = call(D, op, token=TOKEN, body=ok(phone="+99999990404"))
    rep.judge("404: sandbox number +99999990404", op, r, sent, 404, {"IDENTIFIER_NOT_FOUND", "NOT_FOUND"})
    r, sent = call(D, op, token=LIVE_TOKEN, body=ok())
    rep.judge("404: live app, device not a subscriber", op, r, sent, 404, {"IDENTIFIER_NOT_FOUND", "NOT_FOUND"})

    phone = new_phone()
    aid = create_assignment(D, TOKEN, ok(phone=phone))
    r, sent = call(D, op, token=TOKEN, body=ok(phone=phone))
    rep.judge("409: a second assignment for the device", op, r, sent, 409, "CONFLICT")
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=TOKEN)
    phone = new_phone()
    sid = create_session(D, TOKEN, session_body(phone=phone))
    r, sent = call(D, op, token=TOKEN, body=ok(phone=phone))
    rep.judge("409: the device holds a QoD session", op, r, sent, 409, "CONFLICT")
    call(D, OP["deleteSession"], {"sessionId": sid}, token=TOKEN)

    r, sent = call(D, op, token=TOKEN, body=ok(device=NOBODY))
    rep.judge("422: no device with a 2-legged token", op, r, sent, 422, "MISSING_IDENTIFIER")
    r, sent = call(D, op, token=T3, body=ok())
    rep.judge("422: a device with a 3-legged token", op, r, sent, 422, "UNNECESSARY_IDENTIFIER")
    r, sent = call(D, op, token=TOKEN, body=ok(device={"networkAccessIdentifier": new_nai()}))
    rep.judge("422: networkAccessIdentifier only", op, r, sent, 422, "UNSUPPORTED_IDENTIFIER")
    r, sent = call(D, op, token=TOKEN, body=ok(phone="+99999990422"))
    rep.judge("422: sandbox number +99999990422", op, r, sent, 422, "SERVICE_NOT_APPLICABLE")
    r, sent = call(D, op, token=LIVE_TOKEN, body=ok(phone=INELIGIBLE))
    rep.judge("422: live app, subscriber not eligible", op, r, sent, 422, "SERVICE_NOT_APPLICABLE")
    for profile, why in (("QOS_OFF", "INACTIVE"), ("QOS_OLD", "DEPRECATED"),
                         ("QOS_SESSIONS_ONLY", "not compatible with QoS Provisioning")):
        r, sent = call(P, op, token=PTOKEN, body=ok(profile=profile))
        rep.judge("422: a profile %s" % why, op, r, sent, 422, "QOS_PROVISIONING.QOS_PROFILE_NOT_APPLICABLE")
        if r.status == 201:
            call(P, OP["revokeQosAssignment"], {"assignmentId": r.json()["assignmentId"]}, token=PTOKEN)

    aid = create_assignment(D, Q_TOKEN, ok())
    r, sent = call(D, op, token=Q_TOKEN, body=ok())
    rep.judge("429: over the app's quota", op, r, sent, 429, "QUOTA_EXCEEDED")
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=Q_TOKEN)
    rep.done()


def test_get_qos_assignment_matches_the_spec():
    need()
    op, rep = OP["getQosAssignmentById"], Report("getQosAssignmentById")
    slow = create_assignment(P, PTOKEN, assignment_body(phone="+99999991003"))
    r, sent = call(P, op, {"assignmentId": slow}, token=PTOKEN)
    rep.judge("200: REQUESTED (+99999991003)", op, r, sent, 200)
    call(P, OP["revokeQosAssignment"], {"assignmentId": slow}, token=PTOKEN)
    r, sent = call(P, op, {"assignmentId": slow}, token=PTOKEN)
    rep.judge("200: UNAVAILABLE, revoked while REQUESTED", op, r, sent, 200)
    aid = create_assignment(D, TOKEN, assignment_body(sink=sink(), sinkCredential=sink_credential()))
    wait_assignment(D, TOKEN, aid, "AVAILABLE")
    r, sent = call(D, op, {"assignmentId": aid}, token=TOKEN)
    rep.judge("200: AVAILABLE", op, r, sent, 200)
    _by_id_errors(rep, op, "assignmentId", aid)
    sid = create_session(D, TOKEN, session_body())
    r, sent = call(D, op, {"assignmentId": sid}, token=TOKEN)
    rep.judge("404: a session's id is no assignment", op, r, sent, 404, "NOT_FOUND")
    call(D, OP["deleteSession"], {"sessionId": sid}, token=TOKEN)
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=TOKEN)
    r, sent = call(D, op, {"assignmentId": aid}, token=TOKEN)
    rep.judge("200: UNAVAILABLE / DELETE_REQUESTED", op, r, sent, 200)
    aid = create_assignment(D, TOKEN, assignment_body(phone="+99999991001"))
    wait_assignment(D, TOKEN, aid, "UNAVAILABLE")
    r, sent = call(D, op, {"assignmentId": aid}, token=TOKEN)
    rep.judge("200: UNAVAILABLE, refused (+99999991001)", op, r, sent, 200)
    aid = create_assignment(D, TOKEN, assignment_body())
    wait_assignment(D, TOKEN, aid, "AVAILABLE")
    force_network_event(D, TOKEN, aid)
    r, sent = call(D, op, {"assignmentId": aid}, token=TOKEN)
    rep.judge("200: UNAVAILABLE / NETWORK_TERMINATED", op, r, sent, 200)
    aid = create_assignment(D, T3, assignment_body(device=NOBODY))
    r, sent = call(D, op, {"assignmentId": aid}, token=T3)
    rep.judge("200: 3-legged", op, r, sent, 200)
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=T3)
    rep.done()


def test_revoke_qos_assignment_matches_the_spec():
    need()
    op, rep = OP["revokeQosAssignment"], Report("revokeQosAssignment")
    aid = create_assignment(D, TOKEN, assignment_body(sink=sink()))
    _by_id_errors(rep, op, "assignmentId", aid)
    wait_assignment(D, TOKEN, aid, "AVAILABLE")
    r, sent = call(D, op, {"assignmentId": aid}, token=TOKEN)
    rep.judge("204: AVAILABLE assignment", op, r, sent, {202, 204})
    r, sent = call(D, op, {"assignmentId": aid}, token=TOKEN)
    rep.judge("204/404: the same assignment again (already UNAVAILABLE)", op, r, sent, {204, 404})
    aid = create_assignment(D, T3, assignment_body(device=NOBODY))
    r, sent = call(D, op, {"assignmentId": aid}, token=T3)
    rep.judge("204: 3-legged", op, r, sent, {202, 204})
    rep.done()


def test_retrieve_qos_assignment_matches_the_spec():
    need()
    op, rep = OP["getQosAssignmentByDevice"], Report("getQosAssignmentByDevice")
    phone = new_phone()
    aid = create_assignment(D, TOKEN, assignment_body(phone=phone, sink=sink()))
    r, sent = call(D, op, token=TOKEN, body={"device": {"phoneNumber": phone}})
    rep.judge("200: the device's assignment", op, r, sent, 200)
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=TOKEN)
    ip = {"publicAddress": new_ipv4(), "privateAddress": new_ipv4()}
    aid = create_assignment(D, TOKEN, assignment_body(device={"ipv4Address": ip}))
    r, sent = call(D, op, token=TOKEN, body={"device": {"ipv4Address": ip}})
    rep.judge("200: an IPv4 device's assignment", op, r, sent, 200)
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=TOKEN)
    aid = create_assignment(D, T3, assignment_body(device=NOBODY))
    r, sent = call(D, op, token=T3, body={})
    rep.judge("200: 3-legged, no device", op, r, sent, 200)
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid}, token=T3)
    # "If no QoS profile assignment is found for the device, an error response 404 is returned with code
    # NOT_FOUND."
    r, sent = call(D, op, token=TOKEN, body={"device": {"phoneNumber": new_phone()}})
    rep.judge("404: no assignment for the device", op, r, sent, 404, "NOT_FOUND")
    _device_lookup_errors(rep, op, D, TOKEN, LIVE_TOKEN, T3, lambda dev: {"device": dev})
    rep.done()


# --------------------------------------------------------------------------------------------------------------
# Every operation: 401, 403, 429, an invalid x-correlator


def _sample(op_id):
    """(path parameters, body) of a well-formed request to each operation."""
    rid = str(uuid.uuid4())
    return {
        "createSession": ({}, session_body()),
        "getSession": ({"sessionId": rid}, NOBODY),
        "deleteSession": ({"sessionId": rid}, NOBODY),
        "extendQosSessionDuration": ({"sessionId": rid}, {"requestedAdditionalDuration": 10}),
        "retrieveSessionsByDevice": ({}, {"device": {"phoneNumber": new_phone()}}),
        "retrieveQoSProfiles": ({}, {}),
        "getQosProfile": ({"name": "QOS_L"}, NOBODY),
        "createQosAssignment": ({}, assignment_body()),
        "getQosAssignmentById": ({"assignmentId": rid}, NOBODY),
        "revokeQosAssignment": ({"assignmentId": rid}, NOBODY),
        "getQosAssignmentByDevice": ({}, {"device": {"phoneNumber": new_phone()}}),
    }[op_id]


def test_every_operation_answers_401_without_a_valid_token():
    need()
    rep = Report("401 Generic401")
    expired = expired_token(D, TOKEN)
    for op in _all_ops():
        params, b = _sample(op.id)
        for label, headers in (("no Authorization header", None),
                               ("not a JWT", {"Authorization": "Bearer not.a.jwt"}),
                               ("a forged signature", {"Authorization": "Bearer " + token_flip_signature(TOKEN)}),
                               ("an expired token", {"Authorization": "Bearer " + expired}),
                               ("Basic credentials", {"Authorization": "Basic Zm9vOmJhcg=="})):
            r, sent = call(D, op, params, body=b, headers=headers)
            rep.judge("401: " + label, op, r, sent, 401, "UNAUTHENTICATED")
    rep.done()


def test_every_operation_answers_403_without_its_scope():
    need()
    rep = Report("403 Generic403")
    scopes = scope_list(APP.get("scopes"))
    for op in _all_ops():
        needed = [s for req in op.raw.get("security") or [] for v in req.values() for s in v]
        assert needed, "%s declares no scope" % op
        others = [s for s in scopes if s not in needed]
        tok = get_token(D, APP, " ".join(others))
        params, b = _sample(op.id)
        r, sent = call(D, op, params, token=tok, body=b)
        rep.judge("403: a token without %s" % " ".join(needed), op, r, sent, 403, "PERMISSION_DENIED")
        cleanup(D, TOKEN, r)
    rep.done()


def test_every_operation_answers_429_when_the_app_is_over_its_rate():
    need()
    rep = Report("429 Generic429")
    for op in _all_ops():
        got = None
        for _ in range(6):
            params, b = _sample(op.id)
            r, sent = call(D, op, params, token=RL_TOKEN, body=b)
            rep.judge("any answer while rate-limited", op, r, sent)
            if r.status == 429:
                got = r
                rep.judge("429: over the app's rate (1/s, burst 1)", op, r, sent, 429, "TOO_MANY_REQUESTS")
                break
        if got is None:
            rep.problems.append("%s: no 429 in 6 quick requests from an app limited to 1 request/s" % op)
    rep.done()


def test_every_operation_refuses_an_invalid_x_correlator():
    need()
    rep = Report("x-correlator parameter")
    for op in _all_ops():
        schema = op.param_schema("x-correlator")
        assert schema is not None, "%s declares no x-correlator parameter" % op
        for label, value in (("a space", "has space"), ("257 characters", "a" * 257), ("a quote", 'x"y'),
                             ("a percent sign", "50%")):
            assert op.spec.errors(schema, value), "%r should be invalid for the spec's XCorrelator" % value
            params, b = _sample(op.id)
            r, sent = call(D, op, params, token=TOKEN, body=b, headers={"x-correlator": value})
            rep.judge("400: x-correlator with %s (outside the parameter's pattern)" % label, op, r, sent, 400)
            cleanup(D, TOKEN, r)
        # A request without one: whatever the answer carries must still match the schema (checked by judge).
        params, b = _sample(op.id)
        r, sent = call(D, op, params, token=TOKEN, body=b, headers={"x-correlator": None})
        rep.judge("no x-correlator sent", op, r, sent)
        cleanup(D, TOKEN, r)
        for value in ("{a}<b>:c;d./e_f-g", "Z" * 256, "1"):
            params, b = _sample(op.id)
            r, sent = call(D, op, params, token=TOKEN, body=b, headers={"x-correlator": value})
            rep.judge("x-correlator %r (valid: echoed)" % (value[:20] + ("…" if len(value) > 20 else "")),
                      op, r, sent)
            cleanup(D, TOKEN, r)
    rep.done()


def test_every_request_body_in_another_media_type_is_refused():
    """Each requestBody declares application/json only. A body sent as text/plain, or without Content-Type, is a 400
    (declared) or the 415 UNSUPPORTED_MEDIA_TYPE CAMARA_common gives (GENERIC_STATUSES)."""
    need()
    rep = Report("request media type")
    for op in _all_ops():
        if not op.raw.get("requestBody"):
            continue
        assert list(op.spec.resolve(op.raw["requestBody"])["content"]) == ["application/json"], op
        for label, ct in (("text/plain", "text/plain"), ("no Content-Type", None),
                          ("application/xml", "application/xml")):
            params, b = _sample(op.id)
            r, sent = call(D, op, params, token=TOKEN, raw=json.dumps(b).encode(), headers={"Content-Type": ct})
            rep.judge("400/415: a JSON body sent as %s" % label, op, r, sent, {400, 415})
            cleanup(D, TOKEN, r)
    rep.done()


def test_every_operation_answers_an_empty_x_correlator_with_one_of_its_own():
    """The spec's XCorrelator pattern ^[a-zA-Z0-9-_:;.\\/<>{}]{0,256}$ admits the empty string. An empty header cannot
    be echoed (libmicrohttpd sends no header with an empty value), so qodd counts it as absent and answers with a
    generated correlator, as docs/api.md says ("Where the specs left a choice"). Checked: the request is served as
    any other (the response conforms to the spec), and it carries a non-empty x-correlator within the pattern."""
    need()
    rep = Report("empty x-correlator")
    for op in _all_ops():
        assert not op.spec.errors(op.param_schema("x-correlator"), ""), "'' should be a valid XCorrelator"
        params, b = _sample(op.id)
        r, _ = call(D, op, params, token=TOKEN, body=b, headers={"x-correlator": ""})
        rep.judge("x-correlator '' (counted as absent: a generated one answers)", op, r, None)
        if not r.headers.get("x-correlator"):
            rep.note("x-correlator '' [%s %s%s]" % (op.method, op.spec.base, op.template),
                     ["no x-correlator in the response: %r" % r.headers.get("x-correlator")])
        cleanup(D, TOKEN, r)
    rep.done()


def test_sandbox_apps_http_sinks_are_the_documented_exception_to_the_sink_pattern():
    """`sink` has `pattern: ^https:\\/\\/.+$` in CreateSession/CreateAssignment and in SessionInfo/AssignmentInfo.
    docs/api.md deliberately lets sandbox apps use http (and loopback) sinks for local testing ("Sinks: sandbox
    apps may use http and loopback sinks for local testing (the spec's pattern is https)"); live apps get the
    spec's 400 INVALID_SINK (test_create_session_errors_match_the_spec). This test pins that exception to sandbox
    apps: a sandbox app's http sink is taken and echoed as given, and nothing else of the response deviates."""
    need()
    rep = Report("sandbox http sink")
    for op, b in ((OP["createSession"], session_body(sink="http://127.0.0.1:9/cb")),
                  (OP["createQosAssignment"], assignment_body(sink="http://127.0.0.1:9/cb"))):
        r, sent = call(D, op, token=TOKEN, body=b)
        body = json.loads(r.body) if r.status == 201 else None
        if r.status != 201 or body.get("sink") != "http://127.0.0.1:9/cb":
            rep.note("sandbox app, http sink [%s %s%s]" % (op.method, op.spec.base, op.template),
                     ["expected 201 echoing the http sink (documented): %s" % _excerpt(r)])
        else:
            r.body = json.dumps(dict(body, sink="https://127.0.0.1:9/cb")).encode()
            rep.judge("201: sandbox app, http sink (judged with the sink as https)", op, r, sent, 201)
            r.body = json.dumps(body).encode()
        cleanup(D, TOKEN, r)
    rep.done()


# --------------------------------------------------------------------------------------------------------------
# Notifications (the operations' `callbacks`)


def _judge_notifications(rep, op, scenarios, status_member):
    """scenarios: [(label, sink, sinkCredential or None, [(status, statusInfo)] the spec's text gives, in order)].
    Each notification is checked against op's callback; the sequence against the expected one."""
    for label, url, cred, want in scenarios:
        hooks = wait_hooks(url, len(want), timeout=6)
        got = []
        for h in hooks:
            rep.count += 1
            rep.note("%s: notification %s" % (label, h.body[:200]), op.check_callback(h, url, cred))
            try:
                data = json.loads(h.body).get("data") or {}
            except (ValueError, AttributeError):
                data = {}
            got.append((data.get(status_member), data.get("statusInfo")))
        if got != want:
            rep.note(label, ["notifications %r, the spec's descriptions give %r" % (got, want)])


def test_session_notifications_match_the_callback_schema():
    need()
    op, rep = OP["createSession"], Report("createSession callbacks")
    # AVAILABLE, then deleted: UNAVAILABLE / DELETE_REQUESTED.
    s1, c1 = sink("qod"), sink_credential()
    sid1 = create_session(D, TOKEN, session_body(sink=s1, sinkCredential=c1))
    # One second: AVAILABLE, then UNAVAILABLE / DURATION_EXPIRED.
    s2 = sink("qod")
    create_session(D, TOKEN, session_body(sink=s2, duration=1))
    # Refused by the network: UNAVAILABLE / NETWORK_TERMINATED only.
    s3, c3 = sink("qod"), sink_credential()
    create_session(D, TOKEN, session_body(phone="+99999991001", sink=s3, sinkCredential=c3))
    # Ended by the network after AVAILABLE (3-legged).
    s4 = sink("qod")
    sid4 = create_session(D, T3, session_body(device=NOBODY, sink=s4))
    wait_hooks(s1, 1)
    call(D, OP["deleteSession"], {"sessionId": sid1}, token=TOKEN)
    wait_hooks(s4, 1)
    force_network_event(D, T3, sid4)
    _judge_notifications(rep, op, [
        ("AVAILABLE, then deleted", s1, c1, [("AVAILABLE", None), ("UNAVAILABLE", "DELETE_REQUESTED")]),
        ("duration 1", s2, None, [("AVAILABLE", None), ("UNAVAILABLE", "DURATION_EXPIRED")]),
        ("refused by the network", s3, c3, [("UNAVAILABLE", "NETWORK_TERMINATED")]),
        ("ended by the network, 3-legged", s4, None, [("AVAILABLE", None), ("UNAVAILABLE", "NETWORK_TERMINATED")]),
    ], "qosStatus")
    rep.done()


def test_assignment_notifications_match_the_callback_schema():
    need()
    op, rep = OP["createQosAssignment"], Report("createQosAssignment callbacks")
    s1, c1 = sink("prov"), sink_credential()
    aid1 = create_assignment(D, TOKEN, assignment_body(sink=s1, sinkCredential=c1))
    s2 = sink("prov")
    create_assignment(D, TOKEN, assignment_body(phone="+99999991001", sink=s2))
    s3, c3 = sink("prov"), sink_credential()
    aid3 = create_assignment(D, T3, assignment_body(device=NOBODY, sink=s3, sinkCredential=c3))
    wait_hooks(s1, 1)
    call(D, OP["revokeQosAssignment"], {"assignmentId": aid1}, token=TOKEN)
    wait_hooks(s3, 1)
    force_network_event(D, T3, aid3)
    _judge_notifications(rep, op, [
        ("AVAILABLE, then revoked", s1, c1, [("AVAILABLE", None), ("UNAVAILABLE", "DELETE_REQUESTED")]),
        ("refused by the network", s2, None, [("UNAVAILABLE", "NETWORK_TERMINATED")]),
        ("ended by the network, 3-legged", s3, c3, [("AVAILABLE", None), ("UNAVAILABLE", "NETWORK_TERMINATED")]),
    ], "status")
    rep.done()


# --------------------------------------------------------------------------------------------------------------
# 202: an asynchronous revocation (the nef backend, live device)


class NefEmulator:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "nef_emulator.py"), "--port", "0"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("READY "), "nef emulator did not start: %r" % line
        self.port = int(line.split()[1])
        self.url = "http://127.0.0.1:%d" % self.port

    def control(self, **kw):
        import http.client
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        c.request("POST", "/_control", body=json.dumps(kw), headers={"Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        c.close()
        assert r.status == 200, r.status

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def test_revoke_qos_assignment_202_matches_the_spec():
    """With the nef backend a live device's assignment is released by the NEF, and DELETE answers 202 until it
    confirms (docs/api.md): the spec's 202 response, and the notifications of that path."""
    need()
    op, rep = OP["revokeQosAssignment"], Report("revokeQosAssignment 202")
    emu = NefEmulator()
    d = None
    try:
        d = Daemon(args=["--network", "nef", "--nef-url", emu.url, "--nef-scs-as-id", "conformance",
                         "--nef-timeout", "3", "--callback-ca", os.path.join(TLS_DIR, "cert.pem"),
                         "--callback-allow", "127.0.0.1/32", "--token-rate-client", "0", "--token-rate-ip", "0"])
        _, tok = new_app(d, "nef-live", env="live")
        phone = new_phone()
        d.qodctl("device", "add", "--phone", phone, "--ipv4", new_ipv4())
        url, cred = sink("nef"), sink_credential()
        aid = create_assignment(d, tok, assignment_body(phone=phone, sink=url, sinkCredential=cred))
        wait_hooks(url, 1, timeout=8)
        # The NEF refuses the first two DELETEs (503): the release is retried (0.5 s, then 1 s) meanwhile.
        emu.control(fail=503, times=2, op="delete")
        r, sent = call(d, op, {"assignmentId": aid}, token=tok)
        rep.judge("202: release pending at the NEF", op, r, sent, 202)
        r, sent = call(d, op, {"assignmentId": aid}, token=tok)
        rep.judge("202: again while pending", op, r, sent, 202)
        r, sent = call(d, OP["getQosAssignmentById"], {"assignmentId": aid}, token=tok)
        rep.judge("200: AVAILABLE with DELETE_REQUESTED", OP["getQosAssignmentById"], r, sent, 200)
        _judge_notifications(rep, OP["createQosAssignment"], [
            ("nef: AVAILABLE, then revoked", url, cred, [("AVAILABLE", None), ("UNAVAILABLE", "DELETE_REQUESTED")]),
        ], "status")
    finally:
        if d is not None:
            d.close()
        emu.close()
    rep.done()


# --------------------------------------------------------------------------------------------------------------
# Coverage, from the spec files


def test_every_declared_status_is_provoked():
    """Every path x method of the three files was called, and every status each declares was provoked by a case
    above (SEEN); the only exceptions are listed here with the reason."""
    need()
    if sys.argv[1:]:
        raise Skip("judges the whole file's cases: run the file without a test name")
    # (operationId, status) -> why it cannot be provoked black-box. Empty: every declared status is provoked (the
    # 202 of revokeQosAssignment with the nef backend and its emulator, the 429s with small per-app limits).
    not_provoked = {}
    missing, stale = [], []
    for op in _all_ops():
        for status in op.responses:
            key = (op.id, status)
            if key not in SEEN and key not in not_provoked:
                missing.append("%s %s" % (op, status))
            if key in SEEN and key in not_provoked:
                stale.append("%s %s (provoked by %r)" % (op, status, SEEN[key]))
    assert not missing and not stale, "statuses the spec declares but no case provoked: %s; listed as not " \
        "provokable but provoked: %s" % (missing, stale)


run(globals())
