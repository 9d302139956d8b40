#include "api/konera_v1.h"

#include "api/errors.h"
#include "api/peers.h"
#include "core/engine.h"
#include "core/flows.h"
#include "core/registry.h"
#include "notify/urlguard.h"
#include "util/err.h"
#include "util/json.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define V1_BASE "/quality-on-demand/v1/sessions/"
#define EVENT_TYPE "org.camaraproject.quality-on-demand.v1.qos-status-changed"
#define SINK_TOKEN_MAX 2048

static const char *v1_status(qod_session_status st)
{
    return st.state == QOD_SS_REQUESTED ? "REQUESTED" : st.state == QOD_SS_AVAILABLE ? "AVAILABLE" : "UNAVAILABLE";
}

static const char *v1_status_info(qod_session_status st)
{
    if (st.state != QOD_SS_ENDED)
        return NULL;
    if (st.reason == QOD_END_EXPIRED)
        return "DURATION_EXPIRED";
    if (st.reason == QOD_END_DELETED)
        return "DELETE_REQUESTED";
    return "NETWORK_TERMINATED";
}

/* The stored extra object is {<members echoed to the client>, "_": {<internal members>}}: the echoed part is
 * copied as text, so a read costs no JSON parse. */
static void render_echoed_extra(const char *extra, qod_buf *out)
{
    if (!extra || extra[0] != '{')
        return;
    const char *internal = strstr(extra, "\"_\":");
    size_t end = internal ? (size_t)(internal - extra) : strlen(extra) - 1;
    while (end > 1 && (extra[end - 1] == ',' || extra[end - 1] == ' '))
        end--;
    if (end > 1) {
        qod_buf_puts(out, ",");
        qod_buf_append(out, extra + 1, end - 1);
    }
}

static bool from_token_session(const qod_session *s)
{
    return s->extra && strstr(s->extra, "\"threeLegged\":true");
}

/* Appends ,"key":"value" (value plain ASCII: ids, enum names, timestamps). */
static void put_field(qod_buf *out, const char *key, const char *value)
{
    qod_buf_puts(out, ",\"");
    qod_buf_puts(out, key);
    qod_buf_puts(out, "\":\"");
    qod_buf_puts(out, value);
    qod_buf_puts(out, "\"");
}

/* Without printf: this is the body of every GET. */
void qod_v1_render(const qod_session *s, qod_buf *out)
{
    char t[32];
    qod_buf_puts(out, "{\"sessionId\":\"");
    qod_buf_puts(out, s->id);
    qod_buf_puts(out, "\",\"qosProfile\":");
    qod_buf_json_str(out, s->profile->name);
    int64_t duration = s->duration_s;
    if (s->st.state == QOD_SS_ENDED && s->available_ms)
        duration = (s->ended_ms - s->available_ms + 500) / 1000;
    qod_buf_puts(out, ",\"duration\":");
    qod_buf_put_i64(out, duration > 0 ? duration : 1);
    if (!from_token_session(s)) {
        qod_buf_puts(out, ",\"device\":");
        qod_buf_puts(out, s->device_json);
    }
    render_echoed_extra(s->extra, out);
    if (s->url && s->url[0]) {
        qod_buf_puts(out, ",\"sink\":");
        qod_buf_json_str(out, s->url);
    }
    put_field(out, "qosStatus", v1_status(s->st));
    if (s->available_ms) {
        qod_time_fmt(s->available_ms, t, sizeof t);
        put_field(out, "startedAt", t);
    }
    /* Once unavailable, expiresAt is when the session ended, also for one that never became available (it has
     * no startedAt); while requested there is none. */
    if (s->available_ms || s->st.state == QOD_SS_ENDED) {
        qod_time_fmt(s->st.state == QOD_SS_ENDED ? s->ended_ms : s->expires_ms, t, sizeof t);
        put_field(out, "expiresAt", t);
    }
    const char *info = v1_status_info(s->st);
    if (info)
        put_field(out, "statusInfo", info);
    qod_buf_puts(out, "}");
}

static void render_cb(void *arg, const qod_session *s, qod_buf *out)
{
    (void)arg;
    qod_v1_render(s, out);
}

static bool fail(qod_req *r, unsigned status, const char *code, const char *msg)
{
    qod_api_error(r, status, code, msg);
    return false;
}

bool qod_camara_device_known(qod_call *c, qod_req *r, const qod_device *d, qod_device_kind kind)
{
    if (c->app.env == QOD_APP_SANDBOX)
        return true;
    qod_subscriber sub;
    if (qod_registry_find(qod_api_deps_of(c->api)->registry, d, kind, &sub) != QOD_OK)
        return fail(r, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found.");
    if (!sub.eligible)
        return fail(r, 422, "SERVICE_NOT_APPLICABLE", "The service is not available for the provided identifier.");
    return true;
}

bool qod_camara_device(qod_call *c, qod_req *r, const cJSON *device, qod_device *out, qod_device_kind *kind,
                       bool *from_token)
{
    char err[256];
    *from_token = c->claims.device[0] != '\0';
    if (*from_token && device)
        return fail(r, 422, "UNNECESSARY_IDENTIFIER", "The device is already identified by the access token.");
    if (!*from_token && !device)
        return fail(r, 422, "MISSING_IDENTIFIER", "The device cannot be identified.");
    cJSON *tok = NULL;
    if (*from_token && qod_json_parse(c->claims.device, strlen(c->claims.device), 4, &tok, err, sizeof err) != QOD_OK)
        return fail(r, 401, "UNAUTHENTICATED", "The access token's device is unreadable.");
    int rc = qod_device_parse(*from_token ? tok : device, out, err, sizeof err);
    cJSON_Delete(tok);
    if (rc != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", err);
    *kind = qod_device_choose(out);
    if (*kind == QOD_DEV_NAI)
        return fail(r, 422, "UNSUPPORTED_IDENTIFIER",
                    "networkAccessIdentifier is not supported: use phoneNumber, ipv4Address or ipv6Address.");
    return true;
}

/* A create request, owned by the handler's frame. */
typedef qod_camara_create v1_create;

static bool parse_flows(qod_req *r, v1_create *v)
{
    static const char *const names[] = {"applicationServer", "devicePorts", "applicationServerPorts"};
    for (int i = 0; i < 3; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(v->root, names[i]);
        if (!it || cJSON_IsNull(it)) {
            if (i == 0)
                return fail(r, 400, "INVALID_ARGUMENT", "applicationServer is required");
            continue;
        }
        qod_buf_printf(&v->extra, "%s\"%s\":", v->extra.len > 1 ? "," : "", names[i]);
        qod_app_server as;
        qod_ports ports;
        int rc = i == 0 ? qod_app_server_parse(it, names[i], &as, &v->extra, v->err, sizeof v->err)
                        : qod_ports_parse(it, names[i], &ports, &v->extra, v->err, sizeof v->err);
        if (rc != QOD_OK)
            return fail(r, 400, "INVALID_ARGUMENT", v->err);
    }
    return true;
}

static bool parse_credential(qod_req *r, const cJSON *root, qod_camara_sink *v)
{
    static const char *const keys[] = {"credentialType", "accessToken", "accessTokenExpiresUtc", "accessTokenType",
                                       NULL};
    const cJSON *cred = cJSON_GetObjectItemCaseSensitive(root, "sinkCredential");
    const char *type = NULL, *ttype = NULL, *exp = NULL, *bad = NULL;
    if (!cred || cJSON_IsNull(cred))
        return true;
    if (!cJSON_IsObject(cred) || qod_json_str(cred, "credentialType", &type) != QOD_OK)
        return fail(r, 400, "INVALID_CREDENTIAL", "sinkCredential needs a credentialType");
    if (strcmp(type, "ACCESSTOKEN") != 0)
        return fail(r, 400, "INVALID_CREDENTIAL", "Only Access token is supported");
    if (!qod_json_only_keys(cred, keys, &bad))
        return fail(r, 400, "INVALID_CREDENTIAL", "sinkCredential has an unknown member");
    /* RFC 6749 §7.1: token types are case-insensitive (the spec's enum says bearer, its text Bearer). */
    if (qod_json_str(cred, "accessTokenType", &ttype) != QOD_OK || strcasecmp(ttype, "bearer") != 0)
        return fail(r, 400, "INVALID_TOKEN", "Only bearer token is supported");
    if (qod_json_str(cred, "accessToken", &v->token) != QOD_OK || !v->token[0] || strlen(v->token) > SINK_TOKEN_MAX)
        return fail(r, 400, "INVALID_CREDENTIAL", "sinkCredential.accessToken is required (at most 2048 characters)");
    for (const char *p = v->token; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
            return fail(r, 400, "INVALID_CREDENTIAL", "sinkCredential.accessToken must be printable ASCII");
    if (qod_json_str(cred, "accessTokenExpiresUtc", &exp) != QOD_OK || qod_time_parse(exp, &v->token_expires_ms))
        return fail(r, 400, "INVALID_CREDENTIAL", "sinkCredential.accessTokenExpiresUtc must be an RFC 3339 date-time");
    return true;
}

bool qod_camara_sink_parse(qod_call *c, qod_req *r, const cJSON *root, qod_camara_sink *v)
{
    char err[512];
    memset(v, 0, sizeof *v);
    int rc = qod_json_str(root, "sink", &v->sink);
    if (rc == QOD_ERR_NOTFOUND) {
        v->sink = NULL;
        if (cJSON_GetObjectItemCaseSensitive(root, "sinkCredential"))
            return fail(r, 400, "INVALID_ARGUMENT", "sinkCredential needs a sink");
        return true;
    }
    if (rc != QOD_OK)
        return fail(r, 400, "INVALID_SINK", "sink must be an https URL");
    bool sandbox = c->app.env == QOD_APP_SANDBOX;
    if (!sandbox && strncmp(v->sink, "https://", 8) != 0)
        return fail(r, 400, "INVALID_SINK", "sink not valid for the specified protocol");
    if (qod_url_check(v->sink, sandbox, qod_api_deps_of(c->api)->callback_allow, err, sizeof err) != QOD_OK)
        return fail(r, 400, "INVALID_SINK", err);
    return parse_credential(r, root, v);
}

static bool parse_profile_duration(qod_call *c, qod_req *r, v1_create *v)
{
    const char *name = NULL;
    if (qod_json_str(v->root, "qosProfile", &name) != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", "qosProfile is required and must be a string");
    v->profile = qod_profiles_find(qod_api_deps_of(c->api)->profiles, name);
    if (!v->profile)
        return fail(r, 400, "INVALID_ARGUMENT",
                    "qosProfile is not a profile of the catalogue (POST /qos-profiles/v1/retrieve-qos-profiles)");
    if (v->profile->status != QOD_PROFILE_ACTIVE)
        return fail(r, 422, "QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE",
                    "The requested QoS profile is currently not available for session creation.");
    int rc = qod_json_int(v->root, "duration", INT64_MIN / 4, INT64_MAX / 4, &v->duration);
    if (rc != QOD_OK || v->duration < 1 || v->duration > INT32_MAX)
        return fail(r, 400, "INVALID_ARGUMENT", "duration is required: a whole number of seconds, at least 1");
    if (v->duration < v->profile->min_duration_s || v->duration > v->profile->max_duration_s)
        return fail(r, 400, "QUALITY_ON_DEMAND.DURATION_OUT_OF_RANGE",
                    "The requested duration is out of the allowed range for the specific QoS profile");
    return true;
}

static bool parse_create(qod_call *c, qod_req *r, v1_create *v)
{
    static const char *const keys[] = {"device",     "applicationServer", "devicePorts", "applicationServerPorts",
                                       "qosProfile", "duration",          "sink",        "sinkCredential",
                                       NULL};
    size_t len;
    const char *body = qod_req_body(r, &len);
    const char *bad = NULL;
    if (qod_json_parse(body, len, 0, &v->root, v->err, sizeof v->err) != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", v->err);
    if (!cJSON_IsObject(v->root))
        return fail(r, 400, "INVALID_ARGUMENT", "The request body must be a JSON object.");
    if (!qod_json_only_keys(v->root, keys, &bad)) {
        snprintf(v->err, sizeof v->err, "unknown member '%.64s'", bad);
        return fail(r, 400, "INVALID_ARGUMENT", v->err);
    }
    qod_buf_puts(&v->extra, "{");
    return parse_flows(r, v) && parse_profile_duration(c, r, v) &&
           qod_camara_create_target(c, r, v, "QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE",
                                    "The requested QoS profile is not available for this device.");
}

bool qod_camara_create_target(qod_call *c, qod_req *r, qod_camara_create *v, const char *code, const char *text)
{
    if (!qod_camara_sink_parse(c, r, v->root, &v->sk))
        return false;
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(v->root, "device");
    if (!qod_camara_device(c, r, dev && !cJSON_IsNull(dev) ? dev : NULL, &v->device, &v->kind, &v->from_token))
        return false;
    if (!qod_profile_for_device(v->profile, v->device.present & QOD_DEV_PHONE ? v->device.phone : ""))
        return fail(r, 422, code, text);
    /* Internal members, never echoed: where notifications come from, and until when they may be sent. */
    qod_buf_puts(&v->extra, v->extra.len > 1 ? "," : "{");
    qod_buf_printf(&v->extra,
                   "\"_\":{\"threeLegged\":%s,\"sinkExpiresMs\":%lld,\"source\":", v->from_token ? "true" : "false",
                   (long long)v->sk.token_expires_ms);
    qod_buf_json_str(&v->extra, qod_api_deps_of(c->api)->public_url);
    qod_buf_puts(&v->extra, "}}");
    return true;
}

static void create_error(qod_req *r, int rc, const qod_camara_answers *a)
{
    switch (rc) {
    case QOD_ERR_EXISTS:
        qod_api_error(r, 409, "CONFLICT", a->conflict);
        break;
    case QOD_ERR_LIMIT:
        qod_api_error(r, 429, "QUOTA_EXCEEDED", "Out of resource quota.");
        break;
    case QOD_ERR_NOTFOUND:
        qod_api_error(r, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found.");
        break;
    case QOD_ERR_UNSUPPORTED:
        qod_api_error(r, 422, "SERVICE_NOT_APPLICABLE", a->not_applicable);
        break;
    default:
        qod_api_error_from(r, rc);
        break;
    }
}

void qod_camara_created(qod_req *r, int rc, const char *id, const char *body, const qod_camara_answers *a)
{
    if (rc == QOD_OK) {
        char loc[160];
        snprintf(loc, sizeof loc, "%s%s", a->base, id);
        qod_req_add_header(r, "Location", loc);
        qod_api_json(r, 201, body, strlen(body));
    } else if (rc == QOD_ERR_EXISTS || rc == QOD_ERR_LIMIT) {
        /* At commit: the device taken or the quota reached meanwhile (by another node sharing the store). */
        create_error(r, rc, a);
    } else {
        qod_api_error_from(r, rc);
    }
    qod_req_complete(r);
}

void qod_camara_create_submit(qod_call *c, qod_req *r, qod_camara_create *v, int surface,
                              void (*render)(void *arg, const qod_session *s, qod_buf *out), qod_engine_done created,
                              const qod_camara_answers *a)
{
    qod_create_spec spec = {
        .app_id = c->app.client_id,
        .sandbox = c->app.env == QOD_APP_SANDBOX,
        .max_sessions = c->app.max_sessions,
        .device = &v->device,
        .kind = v->kind,
        .profile = v->profile,
        .duration_s = v->duration,
        .url = v->sk.sink,
        .token = v->sk.token,
        .extra = v->extra.data,
        .surface = surface,
        .render = render,
    };
    qod_replay replay = {0};
    int rc = qod_engine_create_session(qod_api_deps_of(c->api)->engine, &spec, created, r, &replay);
    if (rc == QOD_OK)
        qod_req_defer(r);
    else
        create_error(r, rc, a);
    free(replay.body);
}

static const qod_camara_answers v1_answers = {
    .base = V1_BASE,
    .conflict = "Conflict with an existing session for the same device.",
    .not_applicable = "The service is not available for the provided identifier.",
};

static void created(void *arg, int rc, const char *id, const char *body)
{
    qod_camara_created(arg, rc, id, body, &v1_answers);
}

void qod_v1_create(qod_call *c, qod_req *r)
{
    v1_create v;
    memset(&v, 0, sizeof v);
    qod_buf_init(&v.extra, 16384);
    if (parse_create(c, r, &v))
        qod_camara_create_submit(c, r, &v, QOD_SURFACE_V1, render_cb, created, &v1_answers);
    cJSON_Delete(v.root);
    qod_buf_dispose(&v.extra);
}

typedef struct {
    const char *want_key;
    bool match;
} device_match;

static void match_device(void *arg, const qod_session *s)
{
    device_match *m = arg;
    m->match = strcmp(s->device_key, m->want_key) == 0;
}

/* With a 3-legged token, the session must be the token's device's: another device's token gets 403. */
static bool token_device_ok(qod_call *c, qod_req *r, qod_kind item)
{
    if (!c->claims.device[0])
        return true;
    qod_device d;
    qod_device_kind kind;
    bool from_token;
    char key[QOD_DEVICE_KEY_MAX];
    if (!qod_camara_device(c, r, NULL, &d, &kind, &from_token))
        return false;
    if (qod_engine_device_key(qod_api_deps_of(c->api)->engine, c->app.env == QOD_APP_SANDBOX, &d, kind, key,
                              sizeof key) != QOD_OK)
        return fail(r, 403, "PERMISSION_DENIED", "The access token does not identify the session's device.");
    device_match m = {key, false};
    int rc = qod_engine_read(qod_api_deps_of(c->api)->engine, c->params[0], c->app.client_id, item, match_device, &m);
    if (rc == QOD_OK && !m.match)
        return fail(r, 403, "PERMISSION_DENIED", "Client does not have sufficient permissions to perform this action.");
    return true;
}

bool qod_camara_id_ok(qod_call *c, qod_req *r, const char *what, qod_kind kind)
{
    qod_api_lower_param(c, 0);
    if (!qod_uuid_valid(c->params[0])) {
        char msg[64];
        snprintf(msg, sizeof msg, "%s must be a UUID.", what);
        return fail(r, 400, "INVALID_ARGUMENT", msg);
    }
    return token_device_ok(c, r, kind);
}

static bool session_id_ok(qod_call *c, qod_req *r)
{
    return qod_camara_id_ok(c, r, "sessionId", QOD_KIND_V1);
}

void qod_camara_lookup_error(qod_req *r, int rc)
{
    if (rc == QOD_ERR_DENIED)
        qod_api_error(r, 403, "PERMISSION_DENIED",
                      "Client does not have sufficient permissions to perform this action.");
    else if (rc == QOD_ERR_NOTFOUND)
        qod_api_error(r, 404, "NOT_FOUND", "The specified resource is not found.");
    else
        qod_api_error_from(r, rc);
}

static void render_read(void *arg, const qod_session *s)
{
    qod_v1_render(s, arg);
}

/* Answers 200 with the session as it is now. */
static void respond_session(qod_call *c, qod_req *r, const char *id)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc = qod_engine_read(qod_api_deps_of(c->api)->engine, id, c->app.client_id, QOD_KIND_V1, render_read, &b);
    if (rc == QOD_OK)
        qod_api_json(r, 200, b.data, b.len);
    else
        qod_camara_lookup_error(r, rc);
    qod_buf_dispose(&b);
}

void qod_v1_get(qod_call *c, qod_req *r)
{
    if (session_id_ok(c, r))
        respond_session(c, r, c->params[0]);
}

void qod_v1_delete(qod_call *c, qod_req *r)
{
    if (!session_id_ok(c, r))
        return;
    int rc = qod_engine_delete_session(qod_api_deps_of(c->api)->engine, c->params[0], c->app.client_id, QOD_KIND_V1,
                                       qod_api_deleted, r);
    if (rc == QOD_OK)
        qod_req_defer(r);
    else if (rc == QOD_ERR_STATE)
        qod_req_respond(r, 204, NULL, NULL, 0); /* already UNAVAILABLE: nothing to release, no event */
    else
        qod_camara_lookup_error(r, rc);
}

static void extended(void *arg, int rc, const char *id, const char *body)
{
    (void)body;
    qod_req *r = arg;
    qod_call *c = qod_req_user(r);
    if (rc == QOD_OK)
        respond_session(c, r, id);
    else
        qod_api_error_from(r, rc);
    qod_req_complete(r);
}

typedef struct {
    int64_t max_s;
} profile_max;

static void read_max(void *arg, const qod_session *s)
{
    ((profile_max *)arg)->max_s = s->profile->max_duration_s;
}

void qod_v1_extend(qod_call *c, qod_req *r)
{
    static const char *const keys[] = {"requestedAdditionalDuration", NULL};
    if (!session_id_ok(c, r))
        return;
    size_t len;
    const char *body = qod_req_body(r, &len), *bad = NULL;
    cJSON *o = NULL;
    char err[256];
    int64_t add = 0;
    int rc = qod_json_parse(body, len, 0, &o, err, sizeof err);
    if (rc != QOD_OK || !cJSON_IsObject(o) || !qod_json_only_keys(o, keys, &bad) ||
        qod_json_int(o, "requestedAdditionalDuration", 1, INT32_MAX, &add) != QOD_OK) {
        cJSON_Delete(o);
        qod_api_error(r, 400, "INVALID_ARGUMENT", "Body must be {\"requestedAdditionalDuration\": seconds >= 1}.");
        return;
    }
    cJSON_Delete(o);
    qod_engine *e = qod_api_deps_of(c->api)->engine;
    profile_max pm = {0};
    rc = qod_engine_read(e, c->params[0], c->app.client_id, QOD_KIND_V1, read_max, &pm);
    if (rc == QOD_OK)
        rc = qod_engine_extend_session(e, c->params[0], c->app.client_id, add, pm.max_s, extended, r);
    if (rc == QOD_OK)
        qod_req_defer(r);
    else if (rc == QOD_ERR_STATE)
        qod_api_error(r, 409, "QUALITY_ON_DEMAND.SESSION_EXTENSION_NOT_ALLOWED",
                      "Extending the session duration is not allowed in the current state. The session must be in "
                      "the AVAILABLE state.");
    else
        qod_camara_lookup_error(r, rc);
}

bool qod_camara_retrieve(qod_call *c, qod_req *r, qod_kind kind, void (*render)(void *arg, const qod_session *s),
                         qod_buf *out, char *key, size_t keycap, int *n)
{
    static const char *const keys[] = {"device", NULL};
    size_t len;
    const char *body = qod_req_body(r, &len), *bad = NULL;
    cJSON *o = NULL;
    char err[256];
    qod_device dev;
    qod_device_kind dkind;
    bool from_token, ok = false;
    *key = '\0';
    *n = 0;
    if (qod_json_parse(body, len, 0, &o, err, sizeof err) != QOD_OK || !cJSON_IsObject(o) ||
        !qod_json_only_keys(o, keys, &bad)) {
        qod_api_error(r, 400, "INVALID_ARGUMENT",
                      "Body must be {\"device\": {...}} (device omitted with 3-legged tokens).");
    } else {
        const cJSON *d = cJSON_GetObjectItemCaseSensitive(o, "device");
        ok = qod_camara_device(c, r, d && !cJSON_IsNull(d) ? d : NULL, &dev, &dkind, &from_token);
    }
    cJSON_Delete(o);
    if (!ok || !qod_camara_device_known(c, r, &dev, dkind))
        return false;
    qod_engine *e = qod_api_deps_of(c->api)->engine;
    if (qod_engine_device_key(e, c->app.env == QOD_APP_SANDBOX, &dev, dkind, key, keycap) == QOD_OK)
        *n = qod_engine_find_by_device(e, key, c->app.client_id, kind, render, out);
    else
        *key = '\0';
    return !(*n && qod_peers_stale(c, r));
}

void qod_v1_retrieve(qod_call *c, qod_req *r)
{
    char key[QOD_DEVICE_KEY_MAX];
    int n;
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_buf_puts(&b, "[");
    if (qod_camara_retrieve(c, r, QOD_KIND_V1, render_read, &b, key, sizeof key, &n)) {
        qod_buf_puts(&b, "]");
        if (n || !*key || !qod_peers_by_device(c, r, key, QOD_KIND_V1))
            qod_api_json(r, 200, b.data, b.len);
    }
    qod_buf_dispose(&b);
}

int qod_camara_cloudevent(const qod_event_view *ev, const char *type, const char *id_member, const char *status_member,
                          const char *status, const char *info, qod_buf *body, const char **content_type,
                          const char **token)
{
    cJSON *extra = ev->extra ? cJSON_Parse(ev->extra) : NULL;
    const cJSON *in = cJSON_GetObjectItemCaseSensitive(extra, "_");
    const cJSON *exp = cJSON_GetObjectItemCaseSensitive(in, "sinkExpiresMs");
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(in, "source");
    int64_t expires = cJSON_IsNumber(exp) ? (int64_t)exp->valuedouble : 0;
    int rc = QOD_OK;
    if (*token && expires && qod_time_wall_ms() >= expires) {
        rc = QOD_RENDER_SKIP; /* the sink's credential expired: no more notifications */
    } else {
        char t[32];
        qod_time_fmt(ev->at_ms, t, sizeof t);
        qod_buf_printf(body, "{\"id\":\"%s\",\"source\":", ev->event_id);
        qod_buf_json_str(body, cJSON_IsString(src) ? src->valuestring : "/");
        qod_buf_printf(body,
                       ",\"type\":\"%s\",\"specversion\":\"1.0\",\"datacontenttype\":\"application/json\","
                       "\"time\":\"%s\",\"data\":{\"%s\":\"%s\",\"%s\":\"%s\"",
                       type, t, id_member, ev->session, status_member, status);
        if (info)
            qod_buf_printf(body, ",\"statusInfo\":\"%s\"", info);
        qod_buf_puts(body, "}}");
        *content_type = "application/cloudevents+json";
    }
    cJSON_Delete(extra);
    return rc;
}

int qod_v1_render_event(const qod_event_view *ev, qod_buf *body, const char **content_type, const char **token)
{
    qod_session_status st = {QOD_SS_REQUESTED, QOD_END_NONE};
    if (qod_session_state_parse(ev->state, &st.state) != QOD_OK ||
        qod_end_reason_parse(ev->reason, &st.reason) != QOD_OK)
        return QOD_ERR_STATE;
    /* CAMARA notifies AVAILABLE and UNAVAILABLE; a session deleted before it was ever available sends nothing. */
    if (st.state == QOD_SS_REQUESTED || (st.reason == QOD_END_DELETED && !ev->available_ms))
        return QOD_RENDER_SKIP;
    return qod_camara_cloudevent(ev, EVENT_TYPE, "sessionId", "qosStatus", v1_status(st), v1_status_info(st), body,
                                 content_type, token);
}
