/* CAMARA Quality-on-Demand 1.1.0 (/quality-on-demand/v1), on the same engine as the v0 API. Engine statuses map
 * to REQUESTED, AVAILABLE and UNAVAILABLE with statusInfo DURATION_EXPIRED, NETWORK_TERMINATED (refused or
 * ended by the network) or DELETE_REQUESTED. Notifications are CloudEvents 1.0 (structured mode). */
#ifndef QOD_API_KONERA_V1_H
#define QOD_API_KONERA_V1_H

#include "api/api.h"
#include "core/device.h"
#include "core/engine.h"
#include "core/profiles.h"
#include "notify/delivery.h"

/* POST /quality-on-demand/v1/sessions */
void qod_v1_create(qod_call *c, qod_req *r);
/* GET /quality-on-demand/v1/sessions/{sessionId} */
void qod_v1_get(qod_call *c, qod_req *r);
/* DELETE /quality-on-demand/v1/sessions/{sessionId} */
void qod_v1_delete(qod_call *c, qod_req *r);
/* POST /quality-on-demand/v1/sessions/{sessionId}/extend */
void qod_v1_extend(qod_call *c, qod_req *r);
/* POST /quality-on-demand/v1/retrieve-sessions */
void qod_v1_retrieve(qod_call *c, qod_req *r);
/* A CAMARA sink and its credential (borrowed from the request's JSON). */
typedef struct {
    const char *sink;         /* NULL when none */
    const char *token;        /* sinkCredential.accessToken, or NULL */
    int64_t token_expires_ms; /* accessTokenExpiresUtc, 0 when no credential */
} qod_camara_sink;

/* Parses and checks `sink` and `sinkCredential` of a CAMARA request (INVALID_SINK, INVALID_CREDENTIAL,
 * INVALID_TOKEN). Responds and returns false on error. */
bool qod_camara_sink_parse(qod_call *c, qod_req *r, const cJSON *root, qod_camara_sink *out);
/* Writes a CAMARA CloudEvent (structured mode) for an outbox event: {id, source, type, specversion, time,
 * datacontenttype, data: {id_member, status_member, statusInfo?}}; QOD_RENDER_SKIP once the sink's token expired. */
int qod_camara_cloudevent(const qod_event_view *ev, const char *type, const char *id_member, const char *status_member,
                          const char *status, const char *info, qod_buf *body, const char **content_type,
                          const char **token);
/* Checks the {id} path parameter (a UUID; lower-cased) and, with a 3-legged token, that the resource of that kind
 * belongs to the token's device (403 otherwise; a resource of another kind is left to the route's 404). Responds
 * and returns false on error. */
bool qod_camara_id_ok(qod_call *c, qod_req *r, const char *what, qod_kind kind);
/* Answers a failed lookup the CAMARA way: 403 PERMISSION_DENIED, 404 NOT_FOUND, or the generic mapping. */
void qod_camara_lookup_error(qod_req *r, int rc);
/* Renders a v1 notification as a CloudEvent. */
/* A session's CAMARA QoD v1 SessionInfo JSON. */
void qod_v1_render(const qod_session *s, qod_buf *out);
int qod_v1_render_event(const qod_event_view *ev, qod_buf *body, const char **content_type, const char **token);
/* A CAMARA create (a QoD session, a QoS assignment) as it is parsed: its body, device, profile and sink, and the
 * members kept with it (`extra`, a JSON object being built: "" or "{" and members so far). */
typedef struct {
    cJSON *root;
    qod_device device;
    qod_device_kind kind;
    bool from_token;
    const qod_profile *profile;
    int64_t duration; /* seconds (QoD sessions) */
    qod_camara_sink sk;
    qod_buf extra;
    char err[512]; /* room for an error message */
} qod_camara_create;
/* The part of a CAMARA create that the APIs share, once its profile is known: the sink, the device (from the body
 * or the token), that the profile is offered for that device (else 422 with `code` and `text`), then the internal
 * member "_" (3-legged or not, the sink token's expiry, the notifications' source), which closes `extra`. Responds
 * and returns false on error. */
bool qod_camara_create_target(qod_call *c, qod_req *r, qod_camara_create *v, const char *code, const char *text);
/* What an API answers to a create: where its resources live, and the texts of its errors. */
typedef struct {
    const char *base;           /* the Location header is base + id */
    const char *conflict;       /* 409 CONFLICT: the device has an active session or assignment */
    const char *not_applicable; /* 422 SERVICE_NOT_APPLICABLE */
} qod_camara_answers;
/* Hands a parsed create to the engine (the request is deferred until the commit) or answers its refusal; `created`
 * completes it, with qod_camara_created. */
void qod_camara_create_submit(qod_call *c, qod_req *r, qod_camara_create *v, int surface,
                              void (*render)(void *arg, const qod_session *s, qod_buf *out), qod_engine_done created,
                              const qod_camara_answers *a);
/* Completes a deferred create: 201 with Location after the commit, or the error. */
void qod_camara_created(qod_req *r, int rc, const char *id, const char *body, const qod_camara_answers *a);

/* For a live app, that the operator knows the device and the service applies to it: 404 IDENTIFIER_NOT_FOUND or
 * 422 SERVICE_NOT_APPLICABLE otherwise, as a create would answer. Sandbox apps: any device. Responds and returns
 * false on error. */
bool qod_camara_device_known(qod_call *c, qod_req *r, const qod_device *d, qod_device_kind kind);
/* Resolves the device of a CAMARA request from the body's `device` (2-legged) or the token (3-legged), with
 * CAMARA's errors (MISSING_IDENTIFIER, UNNECESSARY_IDENTIFIER, UNSUPPORTED_IDENTIFIER, 400). Responds and
 * returns false on error. *from_token tells whether the device came from the token. */
bool qod_camara_device(qod_call *c, qod_req *r, const cJSON *device, qod_device *out, qod_device_kind *kind,
                       bool *from_token);

/* The common part of the retrieve endpoints (v1 retrieve-sessions, provisioning retrieve): parses the body,
 * {"device": …} (omitted with 3-legged tokens), resolves the device and renders the app's active session or
 * assignment of kind for it into out with render. Responds and returns false on error, or when what it found
 * must not be served (qod_peers_stale); else sets *n to the sessions rendered (0 or 1) and key to the device's
 * key ("" when it has none, so no peer can hold it). */
bool qod_camara_retrieve(qod_call *c, qod_req *r, qod_kind kind, void (*render)(void *arg, const qod_session *s),
                         qod_buf *out, char *key, size_t keycap, int *n);

#endif
