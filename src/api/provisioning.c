#include "api/provisioning.h"

#include "api/errors.h"
#include "api/konera_v1.h"
#include "api/peers.h"
#include "core/engine.h"
#include "util/err.h"
#include "util/json.h"
#include "util/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PROV_BASE "/qos-provisioning/v0.3/qos-assignments/"
#define EVENT_TYPE "org.camaraproject.qos-provisioning.v0.status-changed"

static const char *prov_status(qod_session_status st)
{
    return st.state == QOD_SS_REQUESTED ? "REQUESTED" : st.state == QOD_SS_AVAILABLE ? "AVAILABLE" : "UNAVAILABLE";
}

/* Assignments have no duration, so they end only by deletion or by the network. A revoked one stays AVAILABLE
 * with DELETE_REQUESTED while an asynchronous network releases it. */
static const char *prov_status_info(qod_session_status st, bool releasing)
{
    if (st.state != QOD_SS_ENDED)
        return releasing ? "DELETE_REQUESTED" : NULL;
    return st.reason == QOD_END_DELETED ? "DELETE_REQUESTED" : "NETWORK_TERMINATED";
}

static void render(const qod_session *s, qod_buf *out)
{
    qod_buf_printf(out, "{\"assignmentId\":\"%s\",\"qosProfile\":", s->id);
    qod_buf_json_str(out, s->profile->name);
    if (!(s->extra && strstr(s->extra, "\"threeLegged\":true"))) {
        qod_buf_puts(out, ",\"device\":");
        qod_buf_puts(out, s->device_json);
    }
    if (s->url && s->url[0]) {
        qod_buf_puts(out, ",\"sink\":");
        qod_buf_json_str(out, s->url);
    }
    qod_buf_printf(out, ",\"status\":\"%s\"", prov_status(s->st));
    if (s->available_ms) {
        char t[32];
        qod_time_fmt(s->available_ms, t, sizeof t);
        qod_buf_printf(out, ",\"startedAt\":\"%s\"", t);
    }
    const char *info = prov_status_info(s->st, s->releasing);
    if (info)
        qod_buf_printf(out, ",\"statusInfo\":\"%s\"", info);
    qod_buf_puts(out, "}");
}

static void render_cb(void *arg, const qod_session *s, qod_buf *out)
{
    (void)arg;
    render(s, out);
}

static void render_read(void *arg, const qod_session *s)
{
    render(s, arg);
}

static bool fail(qod_req *r, unsigned status, const char *code, const char *msg)
{
    qod_api_error(r, status, code, msg);
    return false;
}

typedef qod_camara_create prov_create;

static bool parse_create(qod_call *c, qod_req *r, prov_create *v)
{
    static const char *const keys[] = {"device", "qosProfile", "sink", "sinkCredential", NULL};
    size_t len;
    const char *body = qod_req_body(r, &len), *bad = NULL, *name = NULL;
    char err[256];
    if (qod_json_parse(body, len, 0, &v->root, err, sizeof err) != QOD_OK)
        return fail(r, 400, "INVALID_ARGUMENT", err);
    if (!cJSON_IsObject(v->root))
        return fail(r, 400, "INVALID_ARGUMENT", "The request body must be a JSON object.");
    if (!qod_json_only_keys(v->root, keys, &bad)) {
        snprintf(err, sizeof err, "unknown member '%.64s'", bad);
        return fail(r, 400, "INVALID_ARGUMENT", err);
    }
    if (qod_json_str(v->root, "qosProfile", &name) != QOD_OK || !qod_profile_name_valid(name))
        return fail(r, 400, "INVALID_ARGUMENT", "qosProfile is required: a profile name");
    v->profile = qod_profiles_find(qod_api_deps_of(c->api)->profiles, name);
    if (!v->profile)
        return fail(r, 400, "INVALID_ARGUMENT", "qosProfile is not a profile of the catalogue");
    if (v->profile->status != QOD_PROFILE_ACTIVE || !v->profile->provisionable)
        return fail(r, 422, "QOS_PROVISIONING.QOS_PROFILE_NOT_APPLICABLE",
                    "The requested QoS Profile is not compatible with the QoS Provisioning service.");
    return qod_camara_create_target(c, r, v, "QOS_PROVISIONING.QOS_PROFILE_NOT_APPLICABLE",
                                    "The requested QoS Profile is not available for this device.");
}

static const qod_camara_answers prov_answers = {
    .base = PROV_BASE,
    .conflict = "There is another existing provisioning (or QoD session) for the same device",
    .not_applicable = "Service not applicable for the provided identifier",
};

static void created(void *arg, int rc, const char *id, const char *body)
{
    qod_camara_created(arg, rc, id, body, &prov_answers);
}

void qod_prov_create(qod_call *c, qod_req *r)
{
    prov_create v;
    memset(&v, 0, sizeof v);
    qod_buf_init(&v.extra, 4096);
    if (parse_create(c, r, &v))
        qod_camara_create_submit(c, r, &v, QOD_SURFACE_PROV, render_cb, created, &prov_answers);
    cJSON_Delete(v.root);
    qod_buf_dispose(&v.extra);
}

void qod_prov_get(qod_call *c, qod_req *r)
{
    if (!qod_camara_id_ok(c, r, "assignmentId", QOD_KIND_ASSIGNMENT))
        return;
    qod_buf b;
    qod_buf_init(&b, 0);
    int rc = qod_engine_read(qod_api_deps_of(c->api)->engine, c->params[0], c->app.client_id, QOD_KIND_ASSIGNMENT,
                             render_read, &b);
    if (rc == QOD_OK)
        qod_api_json(r, 200, b.data, b.len);
    else
        qod_camara_lookup_error(r, rc);
    qod_buf_dispose(&b);
}

static void revoked(void *arg, int rc, const char *id, const char *body)
{
    qod_req *r = arg;
    if (rc == QOD_OK && body) {
        qod_api_json(r, 202, body, strlen(body));
        qod_req_complete(r);
    } else {
        qod_api_deleted(arg, rc, id, body);
    }
}

void qod_prov_delete(qod_call *c, qod_req *r)
{
    if (!qod_camara_id_ok(c, r, "assignmentId", QOD_KIND_ASSIGNMENT))
        return;
    /* The sim and tc backends release at once: 204 after the commit. The NEF releases a live device
     * asynchronously: 202 with the assignment still AVAILABLE and DELETE_REQUESTED, the event when released. */
    int rc =
        qod_engine_revoke(qod_api_deps_of(c->api)->engine, c->params[0], c->app.client_id, render_cb, NULL, revoked, r);
    if (rc == QOD_OK)
        qod_req_defer(r);
    else if (rc == QOD_ERR_STATE)
        qod_req_respond(r, 204, NULL, NULL, 0); /* already UNAVAILABLE: no event */
    else
        qod_camara_lookup_error(r, rc);
}

void qod_prov_retrieve(qod_call *c, qod_req *r)
{
    char key[QOD_DEVICE_KEY_MAX];
    int n;
    qod_buf b;
    qod_buf_init(&b, 0);
    if (qod_camara_retrieve(c, r, QOD_KIND_ASSIGNMENT, render_read, &b, key, sizeof key, &n)) {
        if (n)
            qod_api_json(r, 200, b.data, b.len);
        else if (!*key || !qod_peers_by_device(c, r, key, QOD_KIND_ASSIGNMENT))
            qod_api_error(r, 404, "NOT_FOUND", "No QoS profile assignment for this device.");
    }
    qod_buf_dispose(&b);
}

int qod_prov_render_event(const qod_event_view *ev, qod_buf *body, const char **content_type, const char **token)
{
    qod_session_status st = {QOD_SS_REQUESTED, QOD_END_NONE};
    if (qod_session_state_parse(ev->state, &st.state) != QOD_OK ||
        qod_end_reason_parse(ev->reason, &st.reason) != QOD_OK)
        return QOD_ERR_STATE;
    if (st.state == QOD_SS_REQUESTED || (st.reason == QOD_END_DELETED && !ev->available_ms))
        return QOD_RENDER_SKIP;
    return qod_camara_cloudevent(ev, EVENT_TYPE, "assignmentId", "status", prov_status(st), prov_status_info(st, false),
                                 body, content_type, token);
}
