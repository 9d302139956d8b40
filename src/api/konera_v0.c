#include "api/konera_v0.h"

#include "api/errors.h"
#include "api/konera_v1.h"
#include "core/flows.h"
#include "notify/urlguard.h"
#include "util/err.h"
#include "util/json.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/time.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define V0_BASE "/camara/qod/v0/sessions/"
#define IDEM_KEY_MAX 255
#define TOKEN_MIN 20
#define TOKEN_MAX 256

const char *qod_v0_status(qod_session_status st)
{
    if (st.state == QOD_SS_REQUESTED)
        return "REQUESTED";
    if (st.state == QOD_SS_AVAILABLE)
        return "AVAILABLE";
    switch (st.reason) {
    case QOD_END_EXPIRED:
        return "EXPIRED";
    case QOD_END_DELETED:
        return "DELETED";
    default:
        return "UNAVAILABLE";
    }
}

/* Copies the members of the stored "extra" object (applicationServer, ports) into the response. */
static void render_extra(const char *extra, qod_buf *out)
{
    size_t n = extra ? strlen(extra) : 0;
    if (n > 2 && extra[0] == '{' && extra[n - 1] == '}') {
        qod_buf_puts(out, ",");
        qod_buf_append(out, extra + 1, n - 2);
    }
}

void qod_v0_render(const qod_session *s, qod_buf *out)
{
    char started[32], expires[32];
    qod_time_fmt(s->created_ms, started, sizeof started);
    qod_time_fmt(s->expires_ms, expires, sizeof expires);
    /* Without printf: this is the body of every GET. */
    qod_buf_puts(out, "{\"sessionId\":\"");
    qod_buf_puts(out, s->id);
    qod_buf_puts(out, "\",\"qosProfile\":");
    qod_buf_json_str(out, s->profile->name);
    qod_buf_puts(out, ",\"qosStatus\":\"");
    qod_buf_puts(out, qod_v0_status(s->st));
    qod_buf_puts(out, "\",\"startedAt\":\"");
    qod_buf_puts(out, started);
    qod_buf_puts(out, "\",\"expiresAt\":\"");
    qod_buf_puts(out, expires);
    qod_buf_puts(out, "\",\"duration\":");
    qod_buf_put_i64(out, s->duration_s);
    qod_buf_puts(out, ",\"device\":");
    qod_buf_puts(out, s->device_json);
    qod_buf_puts(out, ",\"webhook\":{\"notificationUrl\":");
    qod_buf_json_str(out, s->url);
    qod_buf_puts(out, "}");
    render_extra(s->extra, out);
    qod_buf_puts(out, "}");
}

int qod_v0_render_event(const qod_event_view *ev, qod_buf *body, const char **content_type, const char **token)
{
    (void)token;
    qod_session_status st = {QOD_SS_REQUESTED, QOD_END_NONE};
    if (qod_session_state_parse(ev->state, &st.state) != QOD_OK ||
        qod_end_reason_parse(ev->reason, &st.reason) != QOD_OK)
        return QOD_ERR_STATE;
    *content_type = "application/json";
    qod_buf_puts(body, "{\"sessionId\":");
    qod_buf_json_str(body, ev->session);
    return qod_buf_printf(body, ",\"event\":\"QOS_STATUS_CHANGED\",\"qosStatus\":\"%s\"}", qod_v0_status(st));
}

static void render_cb(void *arg, const qod_session *s, qod_buf *out)
{
    (void)arg;
    qod_v0_render(s, out);
}

/* Everything a create needs, owned by the handler's stack frame. */
typedef struct {
    cJSON *root;
    qod_device device;
    const qod_profile *profile;
    int64_t duration;
    const char *url, *token;
    qod_buf extra;
    char err[512];
} v0_create;

static bool fail(qod_req *r, unsigned status, const char *code, const char *msg)
{
    qod_api_error(r, status, code, msg);
    return false;
}

static bool parse_webhook(qod_call *c, qod_req *r, v0_create *v)
{
    static const char *const keys[] = {"notificationUrl", "notificationAuthToken", NULL};
    const char *bad = NULL;
    const cJSON *wh = NULL;
    int rc = qod_json_obj(v->root, "webhook", &wh);
    if (rc != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", "webhook is required: an object with notificationUrl");
    if (!qod_json_only_keys(wh, keys, &bad)) {
        snprintf(v->err, sizeof v->err, "webhook has an unknown member '%.64s'", bad);
        return fail(r, 400, "INVALID_ARGUMENT", v->err);
    }
    if (qod_json_str(wh, "notificationUrl", &v->url) != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", "webhook.notificationUrl is required and must be a string");
    if (qod_url_check(v->url, c->app.env == QOD_APP_SANDBOX, qod_api_deps_of(c->api)->callback_allow, v->err,
                      sizeof v->err) != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", v->err);
    rc = qod_json_str(wh, "notificationAuthToken", &v->token);
    if (rc == QOD_ERR_INVALID || (rc == QOD_OK && (strlen(v->token) < TOKEN_MIN || strlen(v->token) > TOKEN_MAX)))
        return fail(r, 400, "INVALID_ARGUMENT",
                    "webhook.notificationAuthToken must be a string of 20 to 256 characters");
    for (const char *p = rc == QOD_OK ? v->token : ""; *p; p++)
        if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
            return fail(r, 400, "INVALID_ARGUMENT", "webhook.notificationAuthToken must be printable ASCII");
    if (rc != QOD_OK)
        v->token = NULL;
    return true;
}

static bool parse_profile_duration(qod_call *c, qod_req *r, v0_create *v)
{
    const char *name = NULL;
    if (qod_json_str(v->root, "qosProfile", &name) != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", "qosProfile is required and must be a string");
    v->profile = qod_profiles_find(qod_api_deps_of(c->api)->profiles, name);
    if (!v->profile) {
        snprintf(v->err, sizeof v->err, "qosProfile '%.64s' is not in the catalogue (GET /camara/qod/v0/qos-profiles)",
                 name);
        return fail(r, 400, "INVALID_ARGUMENT", v->err);
    }
    if (v->profile->status != QOD_PROFILE_ACTIVE)
        return fail(r, 422, "QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE",
                    "The requested QoS profile is not active: it cannot be used for new sessions.");
    /* Below 1 breaks the schema (INVALID_ARGUMENT); above the profile's range is OUT_OF_RANGE. */
    int rc = qod_json_int(v->root, "duration", INT64_MIN / 4, INT64_MAX / 4, &v->duration);
    if (rc != QOD_OK || v->duration < 1)
        return fail(r, 400, "INVALID_ARGUMENT", "duration is required: a whole number of seconds, at least 1");
    if (v->duration < v->profile->min_duration_s || v->duration > v->profile->max_duration_s) {
        snprintf(v->err, sizeof v->err, "duration must be between %lld and %lld seconds for %s",
                 (long long)v->profile->min_duration_s, (long long)v->profile->max_duration_s, v->profile->name);
        return fail(r, 400, "OUT_OF_RANGE", v->err);
    }
    return true;
}

/* applicationServer, devicePorts, applicationServerPorts: validated and kept as one normalised object. */
static bool parse_flows(qod_req *r, v0_create *v)
{
    static const char *const names[] = {"applicationServer", "devicePorts", "applicationServerPorts"};
    qod_buf_puts(&v->extra, "{");
    bool any = false;
    for (int i = 0; i < 3; i++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(v->root, names[i]);
        if (!it || cJSON_IsNull(it))
            continue;
        qod_buf_printf(&v->extra, "%s\"%s\":", any ? "," : "", names[i]);
        any = true;
        qod_app_server as;
        qod_ports ports;
        int rc = i == 0 ? qod_app_server_parse(it, names[i], &as, &v->extra, v->err, sizeof v->err)
                        : qod_ports_parse(it, names[i], &ports, &v->extra, v->err, sizeof v->err);
        if (rc != QOD_OK)
            return fail(r, 400, "INVALID_ARGUMENT", v->err);
    }
    qod_buf_puts(&v->extra, "}");
    if (!any)
        qod_buf_reset(&v->extra);
    return true;
}

/* With a 3-legged token, v0 requests may only name the token's device. */
static bool same_device_as_token(qod_call *c, const qod_device *d)
{
    cJSON *t = cJSON_Parse(c->claims.device);
    qod_device td;
    qod_engine *e = qod_api_deps_of(c->api)->engine;
    bool sandbox = c->app.env == QOD_APP_SANDBOX;
    char err[64], k1[QOD_DEVICE_KEY_MAX], k2[QOD_DEVICE_KEY_MAX];
    bool same = t && qod_device_parse(t, &td, err, sizeof err) == QOD_OK &&
                qod_engine_device_key(e, sandbox, &td, qod_device_choose(&td), k1, sizeof k1) == QOD_OK &&
                qod_engine_device_key(e, sandbox, d, qod_device_choose(d), k2, sizeof k2) == QOD_OK &&
                strcmp(k1, k2) == 0;
    cJSON_Delete(t);
    return same;
}

static bool parse_create(qod_call *c, qod_req *r, v0_create *v)
{
    static const char *const keys[] = {
        "device", "qosProfile", "duration", "webhook", "applicationServer", "devicePorts", "applicationServerPorts",
        NULL};
    size_t len;
    const char *body = qod_req_body(r, &len);
    const char *bad = NULL;
    int rc = qod_json_parse(body, len, 0, &v->root, v->err, sizeof v->err);
    if (rc != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", v->err);
    if (!cJSON_IsObject(v->root))
        return fail(r, 400, "INVALID_ARGUMENT", "The request body must be a JSON object.");
    if (!qod_json_only_keys(v->root, keys, &bad)) {
        snprintf(v->err, sizeof v->err, "unknown member '%.64s'", bad);
        return fail(r, 400, "INVALID_ARGUMENT", v->err);
    }
    const cJSON *dev = cJSON_GetObjectItemCaseSensitive(v->root, "device");
    if (!dev)
        return fail(r, 400, "INVALID_ARGUMENT", "device is required");
    if (qod_device_parse(dev, &v->device, v->err, sizeof v->err) != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", v->err);
    if (c->claims.device[0] && !same_device_as_token(c, &v->device))
        return fail(r, 403, "PERMISSION_DENIED", "The access token is for another device.");
    if (!parse_profile_duration(c, r, v))
        return false;
    if (!qod_profile_for_device(v->profile, v->device.present & QOD_DEV_PHONE ? v->device.phone : ""))
        return fail(r, 422, "QUALITY_ON_DEMAND.QOS_PROFILE_NOT_APPLICABLE",
                    "The requested QoS profile is not available for this device.");
    return parse_webhook(c, r, v) && parse_flows(r, v);
}

static void body_hash(const char *body, size_t len, char out[65])
{
    unsigned char md[32];
    unsigned int n = 0;
    EVP_Digest(body, len, md, &n, EVP_sha256(), NULL);
    for (int i = 0; i < 32; i++)
        snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool idem_key_valid(const char *k)
{
    size_t n = strlen(k);
    if (n == 0 || n > IDEM_KEY_MAX)
        return false;
    for (; *k; k++)
        if ((unsigned char)*k < 0x21 || (unsigned char)*k > 0x7e)
            return false;
    return true;
}

static void add_location(qod_req *r, const char *id)
{
    char loc[96];
    snprintf(loc, sizeof loc, V0_BASE "%s", id);
    qod_req_add_header(r, "Location", loc);
}

static void create_error(qod_req *r, int rc);

static void created(void *arg, int rc, const char *id, const char *body)
{
    qod_req *r = arg;
    if (rc == QOD_OK) {
        add_location(r, id);
        qod_api_json(r, 201, body, strlen(body));
    } else {
        QOD_WARN("v0", "create_not_committed", "err=\"%s\"", qod_strerror(rc));
        /* At commit: the device taken or the quota reached meanwhile (by another node sharing the store). */
        if (rc == QOD_ERR_EXISTS || rc == QOD_ERR_LIMIT)
            create_error(r, rc);
        else
            qod_api_error_from(r, rc);
    }
    qod_req_complete(r);
}

static void create_error(qod_req *r, int rc)
{
    switch (rc) {
    case QOD_ERR_EXISTS:
        qod_api_error(r, 409, "CONFLICT", "The device already has an active QoD session.");
        break;
    case QOD_ERR_LIMIT:
        qod_api_error(r, 429, "QUOTA_EXCEEDED", "The app has reached its limit of active sessions.");
        break;
    case QOD_ERR_NOTFOUND:
        qod_api_error(r, 404, "IDENTIFIER_NOT_FOUND", "Device identifier not found.");
        break;
    case QOD_ERR_UNSUPPORTED:
        qod_api_error(r, 422, "SERVICE_NOT_APPLICABLE", "The service is not available for the provided identifier.");
        break;
    case QOD_ERR_BUSY:
        qod_api_error(r, 409, "CONFLICT", "A request with the same Idempotency-Key is still in progress.");
        break;
    case QOD_ERR_INVALID:
        qod_api_error(r, 422, "IDEMPOTENCY_KEY_MISMATCH",
                      "The Idempotency-Key was already used with a different request body.");
        break;
    default:
        qod_api_error_from(r, rc);
        break;
    }
}

/* Answers a create that was not started: a replay of the first answer, or the error rc. */
static void replayed(qod_req *r, int rc, qod_replay *replay)
{
    if (rc == QOD_ENGINE_REPLAYED) {
        add_location(r, replay->session_id);
        qod_req_add_header(r, "Idempotent-Replayed", "true");
        qod_api_json(r, replay->status, replay->body, strlen(replay->body));
        free(replay->body);
        replay->body = NULL;
    } else {
        create_error(r, rc);
    }
}

void qod_v0_create(qod_call *c, qod_req *r)
{
    v0_create v;
    memset(&v, 0, sizeof v);
    qod_buf_init(&v.extra, 16384);
    const char *idem = qod_req_header(r, "Idempotency-Key");
    char hash[65] = "";
    if (idem && !idem_key_valid(idem)) {
        qod_api_error(r, 400, "INVALID_ARGUMENT", "Idempotency-Key must be 1 to 255 printable ASCII characters.");
        goto out;
    }
    size_t len;
    const char *body = qod_req_body(r, &len);
    qod_replay replay = {0};
    if (idem) {
        /* A key already used is answered before the body is validated: a replay returns the first answer whatever
         * changed since, and another body is a mismatch even when it is invalid. */
        body_hash(body, len, hash);
        int rc = qod_engine_replay(qod_api_deps_of(c->api)->engine, c->app.client_id, idem, hash, &replay);
        if (rc != QOD_OK) {
            replayed(r, rc, &replay);
            goto out;
        }
    }
    if (!parse_create(c, r, &v))
        goto out;
    qod_create_spec spec = {
        .app_id = c->app.client_id,
        .sandbox = c->app.env == QOD_APP_SANDBOX,
        .max_sessions = c->app.max_sessions,
        .device = &v.device,
        .kind = qod_device_choose(&v.device),
        .profile = v.profile,
        .duration_s = v.duration,
        .url = v.url,
        .token = v.token,
        .extra = v.extra.len ? v.extra.data : NULL,
        .surface = QOD_SURFACE_V0,
        .idem_key = idem,
        .idem_hash = hash,
        .render = render_cb,
    };
    int rc = qod_engine_create_session(qod_api_deps_of(c->api)->engine, &spec, created, r, &replay);
    if (rc == QOD_OK)
        qod_req_defer(r);
    else
        replayed(r, rc, &replay);
out:
    cJSON_Delete(v.root);
    qod_buf_dispose(&v.extra);
}

static void render_read(void *arg, const qod_session *s)
{
    qod_v0_render(s, arg);
}

/* Checks the {sessionId} parameter (400 when it is not a UUID) and, with a 3-legged token, that the item of that
 * kind is the token's device's (403 otherwise). */
static bool session_id_ok(qod_call *c, qod_req *r, qod_kind kind)
{
    return qod_camara_id_ok(c, r, "sessionId", kind);
}

static void lookup_error(qod_req *r, int rc)
{
    if (rc == QOD_ERR_DENIED)
        qod_api_error(r, 403, "PERMISSION_DENIED", "This session belongs to another application.");
    else if (rc == QOD_ERR_NOTFOUND)
        qod_api_error(r, 404, "NOT_FOUND", "The specified session is not found.");
    else
        qod_api_error_from(r, rc);
}

void qod_v0_get(qod_call *c, qod_req *r)
{
    if (!session_id_ok(c, r, QOD_KIND_V0))
        return;
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc =
        qod_engine_read(qod_api_deps_of(c->api)->engine, c->params[0], c->app.client_id, QOD_KIND_V0, render_read, &b);
    if (rc == QOD_OK)
        qod_api_json(r, 200, b.data, b.len);
    else
        lookup_error(r, rc);
    qod_buf_dispose(&b);
}

void qod_v0_delete(qod_call *c, qod_req *r)
{
    if (!session_id_ok(c, r, QOD_KIND_V0))
        return;
    int rc = qod_engine_delete_session(qod_api_deps_of(c->api)->engine, c->params[0], c->app.client_id, QOD_KIND_V0,
                                       qod_api_deleted, r);
    if (rc == QOD_OK)
        qod_req_defer(r);
    else if (rc == QOD_ERR_STATE)
        qod_api_error(r, 409, "CONFLICT", "The session has already ended.");
    else
        lookup_error(r, rc);
}

void qod_v0_profiles(qod_call *c, qod_req *r)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_profiles_to_json(qod_api_deps_of(c->api)->profiles, &b);
    qod_api_json(r, 200, b.data, b.len);
    qod_buf_dispose(&b);
}

extern const char qod_openapi_v0[];

void qod_v0_openapi(qod_call *c, qod_req *r)
{
    (void)c;
    qod_req_respond(r, 200, "application/yaml", qod_openapi_v0, strlen(qod_openapi_v0));
}

/* A TS 29.571 ProblemDetails answer to the NEF (TS 29.122's callback responses are 3GPP's, not CAMARA's errors). */
static void nef_problem(qod_req *r, unsigned status, const char *title, const char *detail, const char *cause)
{
    char body[256];
    int n = snprintf(body, sizeof body, "{\"title\":\"%s\",\"status\":%u,\"detail\":\"%s\",\"cause\":\"%s\"}", title,
                     status, detail, cause);
    qod_req_respond(r, status, "application/problem+json", body, n > 0 && (size_t)n < sizeof body ? (size_t)n : 0);
}

void qod_nef_notification(qod_call *c, qod_req *r)
{
    size_t len;
    const char *body = qod_req_body(r, &len);
    /* The unguessable path token is the only credential: the NEF learnt it when we subscribed. */
    int rc = qod_engine_network_notify(qod_api_deps_of(c->api)->engine, c->params[0], body, len);
    if (rc == QOD_OK)
        qod_req_respond(r, 204, NULL, NULL, 0);
    else if (rc == QOD_ERR_INVALID)
        nef_problem(r, 400, "Bad Request", "Malformed UserPlaneNotificationData.", "INVALID_MSG_FORMAT");
    else
        nef_problem(r, 404, "Not Found", "Unknown notification destination.", "RESOURCE_NOT_FOUND");
}

/* A forced network event, answered once its change is committed (as a delete is): by then a create for the same
 * device through any node no longer meets the ended session in the store. */
typedef struct {
    qod_req *r;
    qod_engine *engine;
    char id[40];
    char app_id[QOD_APP_ID_LEN + 1];
} event_ctx;

static void render_own(void *arg, const qod_session *s)
{
    if (s->surface == QOD_SURFACE_V1)
        qod_v1_render(s, arg);
    else
        qod_v0_render(s, arg);
}

/* Never called with the engine's lock held when rc is QOD_OK (the store's writer reports commits). */
static void network_event_committed(void *arg, int rc, const char *session_id, const char *body)
{
    (void)session_id;
    (void)body;
    event_ctx *ec = arg;
    qod_req *r = ec->r;
    qod_buf b;
    qod_buf_init(&b, 0);
    if (rc != QOD_OK)
        qod_api_error_from(r, rc);
    /* Sessions answer with their state now, in the words of the API that created them; assignments (QoS
     * Provisioning) with 204. */
    else if (qod_engine_read(ec->engine, ec->id, ec->app_id, QOD_KIND_SESSION, render_own, &b) == QOD_OK)
        qod_api_json(r, 200, b.data, b.len);
    else
        qod_req_respond(r, 204, NULL, NULL, 0);
    qod_buf_dispose(&b);
    free(ec);
    qod_req_complete(r);
}

void qod_sandbox_network_event(qod_call *c, qod_req *r)
{
    static const char *const keys[] = {"qosStatus", NULL};
    if (!session_id_ok(c, r, QOD_KIND_ANY))
        return;
    if (c->app.env != QOD_APP_SANDBOX) {
        qod_api_error(r, 403, "PERMISSION_DENIED", "Network events can only be forced for sandbox apps.");
        return;
    }
    size_t len;
    const char *body = qod_req_body(r, &len);
    cJSON *o = NULL;
    char err[256];
    const char *st = NULL, *bad = NULL;
    int rc = qod_json_parse(body, len, 0, &o, err, sizeof err);
    if (rc != QOD_OK || !cJSON_IsObject(o) || !qod_json_only_keys(o, keys, &bad) ||
        qod_json_str(o, "qosStatus", &st) != QOD_OK || (strcmp(st, "UNAVAILABLE") && strcmp(st, "AVAILABLE"))) {
        qod_api_error(r, 400, "INVALID_ARGUMENT", "Body must be {\"qosStatus\": \"UNAVAILABLE\" | \"AVAILABLE\"}.");
        cJSON_Delete(o);
        return;
    }
    qod_net_outcome out = strcmp(st, "AVAILABLE") == 0 ? QOD_NET_AVAILABLE : QOD_NET_TERMINATED;
    cJSON_Delete(o);
    event_ctx *ec = malloc(sizeof *ec);
    if (!ec) {
        qod_api_error_from(r, QOD_ERR_NOMEM);
        return;
    }
    *ec = (event_ctx){r, qod_api_deps_of(c->api)->engine, "", ""};
    snprintf(ec->id, sizeof ec->id, "%s", c->params[0]);
    snprintf(ec->app_id, sizeof ec->app_id, "%s", c->app.client_id);
    rc = qod_engine_network_event(ec->engine, ec->id, ec->app_id, out, network_event_committed, ec);
    if (rc == QOD_OK) {
        qod_req_defer(r);
        return;
    }
    free(ec);
    if (rc == QOD_ERR_STATE)
        qod_api_error(r, 409, "CONFLICT", "The session cannot make that transition now.");
    else
        lookup_error(r, rc);
}
