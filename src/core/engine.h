/* The session engine: owns the sessions, their timers and their lifecycle, and orchestrates the store
 * (durable writes, outbox events) and the network backend. Shared by every API surface; knows no HTTP and no
 * SQL. Thread-safe: one short lock guards the tables and the timer heap; durable writes complete
 * asynchronously on the store thread; timers run on the engine loop thread.
 *
 * Every state change is committed together with an outbox event row (the callback to deliver). */
#ifndef QOD_CORE_ENGINE_H
#define QOD_CORE_ENGINE_H

#include "core/device.h"
#include "core/loop.h"
#include "core/profiles.h"
#include "core/registry.h"
#include "core/session.h"
#include "net/backend.h"
#include "store/store.h"
#include "util/buf.h"
#include "util/seal.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct qod_engine qod_engine;

/* Which API created a session: decides the words of its callbacks and when its clock starts. */
typedef enum { QOD_SURFACE_V0 = 0, QOD_SURFACE_V1 = 1, QOD_SURFACE_PROV = 2 } qod_surface;

/* What a lookup may find: QoD sessions (v0 or v1), QoS assignments (provisioning, no duration), either; or the
 * sessions of one API only (a session belongs to the API that created it). */
typedef enum { QOD_KIND_ANY = 0, QOD_KIND_SESSION, QOD_KIND_ASSIGNMENT, QOD_KIND_V0, QOD_KIND_V1 } qod_kind;

/* Whether an item created by the given surface is of that kind. */
bool qod_kind_matches(qod_kind kind, qod_surface surface);

/* A session as the API layer reads it (under the engine lock, inside a read callback). */
typedef struct {
    char id[37];
    char app_id[33];
    qod_session_status st;
    qod_surface surface;
    bool sandbox;
    const qod_profile *profile;
    int64_t duration_s;
    int64_t created_ms;   /* unix ms */
    int64_t available_ms; /* 0 until available */
    int64_t expires_ms;   /* 0 while unknown */
    int64_t ended_ms;     /* 0 until ended */
    char *device_json;    /* the identifier acted on, e.g. {"phoneNumber":"+…"} */
    char *device_key;
    char *url;      /* callback URL, may be "" */
    char *token;    /* callback bearer token, may be NULL */
    char *extra;    /* surface-specific JSON object (application server, ports, sink…), may be NULL */
    bool releasing; /* revoked, still AVAILABLE until the network confirms the release (async backends) */
} qod_session;

typedef struct {
    qod_store *store;
    const qod_profiles *profiles;
    qod_registry *registry;
    const qod_net_backend *backend;
    qod_net_config net;
    int64_t retention_ms;                /* how long ended sessions stay readable */
    const qod_seal *seal;                /* callback tokens are stored sealed */
    void (*events_committed)(void *ctx); /* new outbox rows are durable (delivery wakes up); may be NULL */
    void *events_ctx;
    /* Several nodes share the store (cluster.h): this node holds only the sessions `owns` accepts, makes new ids
     * with `new_id` (one it owns), and caps quotas in the store. All NULL for one node. */
    bool (*owns)(void *ctx, const char *session_id);
    void (*new_id)(void *ctx, char id[37]);
    /* Adds to b the fence (store.h) of the lease that makes this node the session's holder, so that a node that
     * lost the session's shard (paused past its lease) never writes it. */
    int (*fence)(void *ctx, qod_store_batch *b, const char *session_id);
    void *cluster_ctx;
} qod_engine_opts;

/* What a create asks for. Pointers borrowed for the call. */
typedef struct {
    const char *app_id;
    bool sandbox;
    int64_t max_sessions; /* the app's quota of active sessions, 0 = none */
    const qod_device *device;
    qod_device_kind kind;
    const qod_profile *profile;
    int64_t duration_s;
    const char *url;
    const char *token; /* may be NULL */
    const char *extra; /* compact JSON object or NULL */
    qod_surface surface;
    const char *idem_key;  /* Idempotency-Key, or NULL */
    const char *idem_hash; /* hex SHA-256 of the request body when idem_key is set */
    /* Renders the response body of the new session (kept for idempotent replays). Runs under the lock. */
    void (*render)(void *arg, const qod_session *s, qod_buf *out);
    void *render_arg;
} qod_create_spec;

/* Completion of an asynchronous create or delete, on the store thread. On success body is the rendered
 * response (create) or NULL (delete); it is borrowed for the call. */
typedef void (*qod_engine_done)(void *arg, int rc, const char *session_id, const char *body);

/* A stored response returned again for a repeated Idempotency-Key. body is owned by the caller (free). */
typedef struct {
    unsigned status;
    char *body;
    char session_id[37];
} qod_replay;

#define QOD_ENGINE_REPLAYED 1

/* Creates the engine, its backend and loop, and loads every session from the store: expired ones are
 * ended (with their event), timers re-armed. Does not start the loop. */
int qod_engine_create(const qod_engine_opts *opts, qod_engine **out, char *err, size_t errcap);
/* Sets the hook told when new outbox rows are durable (before qod_engine_start). */
void qod_engine_set_events_hook(qod_engine *e, void (*fn)(void *ctx), void *ctx);
/* Starts the loop thread and re-provisions the sessions in flight. */
int qod_engine_start(qod_engine *e);
/* Stops the loop thread: no timer fires after this. NULL is a no-op. */
void qod_engine_stop(qod_engine *e);
/* Frees everything (stops first if needed); call after the store has drained. NULL is a no-op. */
void qod_engine_destroy(qod_engine *e);
/* The engine's loop (delivery and network backends add their sockets to it). */
qod_loop *qod_engine_loop(qod_engine *e);

/* Starts a create. Returns QOD_OK (done will run once), QOD_ENGINE_REPLAYED (*replay filled, done never runs),
 * or an error with done never run: QOD_ERR_EXISTS (device has an active session), QOD_ERR_LIMIT (app quota),
 * QOD_ERR_NOTFOUND (unknown device), QOD_ERR_UNSUPPORTED (service not applicable to the device),
 * QOD_ERR_BUSY (same Idempotency-Key in flight), QOD_ERR_INVALID (same key, different body). */
int qod_engine_create_session(qod_engine *e, const qod_create_spec *spec, qod_engine_done done, void *arg,
                              qod_replay *replay);
/* The answer to a create already made with app_id's Idempotency-Key, before the request is validated (a replay
 * must not depend on what changed since, such as a profile no longer active): QOD_ENGINE_REPLAYED (*replay filled),
 * QOD_ERR_BUSY (the first is still in flight), QOD_ERR_INVALID (the key was used with another body), or QOD_OK when
 * the key is new (the create's own check decides then). */
int qod_engine_replay(qod_engine *e, const char *app_id, const char *idem_key, const char *idem_hash,
                      qod_replay *replay);
/* Reads a session under the lock: fn runs once on success. QOD_ERR_NOTFOUND, or QOD_ERR_DENIED when app_id
 * (if non-NULL) is not the owner. */
int qod_engine_read(qod_engine *e, const char *id, const char *app_id, qod_kind kind,
                    void (*fn)(void *arg, const qod_session *s), void *arg);
/* Ends a session early. QOD_OK (done runs after the commit), QOD_ERR_NOTFOUND, QOD_ERR_DENIED, or
 * QOD_ERR_STATE when it has already ended. */
int qod_engine_delete_session(qod_engine *e, const char *id, const char *app_id, qod_kind kind, qod_engine_done done,
                              void *arg);
/* Loads the sessions this node owns now (without a cluster: every one) but does not hold yet (shards taken over
 * from a node that died; a create reported failed whose commit was found made later), arms their timers and
 * provisions them again. Any thread; returns how many were adopted, or an error. */
int qod_engine_adopt(qod_engine *e);
/* Revokes a QoS assignment. When it is AVAILABLE and the backend releases asynchronously (release_async), it
 * stays AVAILABLE with `releasing` set until the network confirms, then ends DELETED with its event: done runs
 * after the commit of the flag with body = the assignment rendered by render (the 202 answer). Otherwise it is
 * qod_engine_delete_session (done with body NULL: 204). Same errors as delete. */
int qod_engine_revoke(qod_engine *e, const char *id, const char *app_id,
                      void (*render)(void *arg, const qod_session *s, qod_buf *out), void *render_arg,
                      qod_engine_done done, void *arg);
/* Extends an AVAILABLE session by add_s seconds, capped at max_total_s in all. QOD_OK (done runs after the
 * commit; read the session again for the new times), QOD_ERR_NOTFOUND, QOD_ERR_DENIED, or QOD_ERR_STATE when
 * the session is not AVAILABLE. */
int qod_engine_extend_session(qod_engine *e, const char *id, const char *app_id, int64_t add_s, int64_t max_total_s,
                              qod_engine_done done, void *arg);
/* The key of "one active item per device" for a device named by one identifier: a registered live device is
 * keyed by its phone whichever identifier names it; others by the identifier. */
int qod_engine_device_key(qod_engine *e, bool sandbox, const qod_device *d, qod_device_kind kind, char *key,
                          size_t cap);
/* Calls fn under the lock for the active session of a device key owned by app_id, if any; returns how many
 * sessions fn saw (0 or 1). */
int qod_engine_find_by_device(qod_engine *e, const char *device_key, const char *app_id, qod_kind kind,
                              void (*fn)(void *arg, const qod_session *s), void *arg);
/* Hands a notification the network POSTed to us to the backend (no engine lock held). */
int qod_engine_network_notify(qod_engine *e, const char *token, const char *body, size_t len);
/* Forces a network-side outcome (sandbox). QOD_ERR_STATE when the transition is not legal now. On QOD_OK, done is
 * called once the change is committed (or could not be), as for a delete. */
int qod_engine_network_event(qod_engine *e, const char *id, const char *app_id, qod_net_outcome o, qod_engine_done done,
                             void *arg);
/* Calls fn for each session (of app_id when non-NULL); fn returns non-zero to stop. The lock is held for a few
 * hundred sessions at a time and let go in between, so a walk of a million sessions never holds up the API. A
 * session held throughout is seen exactly once; one created or removed meanwhile may or may not be. fn sees each
 * session under the lock. */
void qod_engine_each(qod_engine *e, const char *app_id, int (*fn)(void *arg, const qod_session *s), void *arg);
/* Counts for metrics. */
typedef struct {
    size_t sessions, requested, available, ended, timers;
    uint64_t created, events;
} qod_engine_stats;
void qod_engine_stats_get(qod_engine *e, qod_engine_stats *out);

/* Appends the engine's metrics (Prometheus text): sessions by state, timers, creations, events. */
void qod_engine_metrics(void *engine, qod_buf *out);
/* Maps the engine outcome names for docs and logs. */
const char *qod_net_outcome_name(qod_net_outcome o);

#endif
