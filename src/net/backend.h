/* The network backend interface: how the engine asks a network to provision, and learns the outcome.
 * Implementations (sim.c; later tc.c and nef.c) are static const vtables registered by name.
 *
 * Threading: the engine calls every function with its lock held, from whichever thread made the change, so
 * calls are serialised; implementations must not block. Outcomes are reported through the sink, at once or
 * later (report_after runs on the engine's timer loop). Reports for sessions that ended meanwhile are ignored. */
#ifndef QOD_NET_BACKEND_H
#define QOD_NET_BACKEND_H

#include "core/device.h"
#include "core/loop.h"
#include "core/profiles.h"
#include "core/registry.h"
#include "util/buf.h"

#include <stdbool.h>
#include <stdint.h>

/* RELEASED answers a release the backend said it makes asynchronously (release_async): the network confirmed
 * it, or gave up trying. */
typedef enum { QOD_NET_AVAILABLE = 0, QOD_NET_REFUSED, QOD_NET_TERMINATED, QOD_NET_RELEASED } qod_net_outcome;

/* What a backend sees of a session. All pointers borrowed for the duration of the call. */
typedef struct {
    const char *id;
    const qod_device *device;
    qod_device_kind kind; /* the identifier acted on */
    const qod_profile *profile;
    bool sandbox;
    const qod_subscriber *sub; /* registry entry for live devices, NULL for sandbox ones */
    const char *flows;         /* JSON object {applicationServer?, devicePorts?, applicationServerPorts?} or NULL */
} qod_net_session;

/* The engine's side, given to the backend at creation. */
typedef struct {
    void *ctx;
    /* Reports an outcome now. */
    void (*report)(void *ctx, const char *session_id, qod_net_outcome o, const char *why);
    /* Reports an outcome after delay_ms (replacing an earlier pending report of the same session). */
    void (*report_after)(void *ctx, const char *session_id, int64_t delay_ms, qod_net_outcome o, const char *why);
    /* Reports an outcome from a thread that does NOT hold the engine lock (the loop thread after an HTTP
     * exchange, or an HTTP thread handling a network notification): takes the lock itself. */
    void (*report_unlocked)(void *ctx, const char *session_id, qod_net_outcome o, const char *why);
    /* Records a QoS-not-guaranteed style notice for metrics and logs (no status change); unlocked. */
    void (*notice)(void *ctx, const char *session_id, const char *what);
} qod_net_sink;

/* Backend settings from the daemon's options. */
typedef struct {
    int64_t sandbox_delay_ms;   /* provisioning delay of sandbox (and simulated) sessions */
    int64_t cell_capacity_kbps; /* simulated guaranteed capacity per cell */
    const char *tc_dev;         /* tc: interface toward the devices (downstream) */
    const char *tc_uplink_dev;  /* tc: optional interface for the other direction, or "" */
    int64_t tc_link_kbps;       /* tc: link rate of tc_dev (and of the uplink) */
    double tc_share;            /* tc: share of the link that guaranteed rates may use (admission) */
    qod_loop *loop;             /* the engine loop, for backends doing network I/O (nef) */
    const char *public_url;     /* our base URL, for callbacks the network sends us */
    const char *nef_url;        /* nef: apiRoot of the NEF */
    const char *nef_scs_as_id;  /* nef: our SCS/AS identifier */
    const char *nef_token_url;  /* nef: OAuth2 token endpoint (client credentials), or "" */
    const char *nef_client_id;
    const char *nef_client_secret;
    const char *nef_scope;                        /* nef: the OAuth2 scope asked for, or "" */
    const char *nef_bearer;                       /* nef: a static bearer token, or "" */
    const char *nef_ca;                           /* nef: PEM CA file verifying the NEF, or "" for the system's */
    const char *nef_client_cert, *nef_client_key; /* nef: mutual TLS, or "" */
    int64_t nef_timeout_ms;                       /* nef: per request */
    int64_t nef_allocation_ms; /* nef: from a subscription's 201 to its allocation's outcome, at most */
} qod_net_config;

typedef struct {
    const char *name;
    int (*create)(const qod_net_config *cfg, const qod_net_sink *sink, void **self, char *err, size_t errcap);
    void (*destroy)(void *self);
    /* Admission at create time, synchronous: QOD_OK, QOD_ERR_NOTFOUND (the network does not know the device) or
     * QOD_ERR_UNSUPPORTED (the service does not apply to it). */
    int (*check)(void *self, const qod_net_session *s);
    /* Starts provisioning; the outcome comes through the sink. */
    int (*provision)(void *self, const qod_net_session *s);
    /* The session became available. */
    void (*activated)(void *self, const qod_net_session *s);
    /* The session ended: release whatever it holds (idempotent). */
    void (*release)(void *self, const qod_net_session *s);
    /* Optional: true when releasing s takes the network a while; the backend then reports QOD_NET_RELEASED for
     * it once done (or given up), after every release call. NULL or false: release takes effect at once. */
    bool (*release_async)(void *self, const qod_net_session *s);
    /* Optional: a notification the network POSTed to /nef/v1/notifications/{token}. Called WITHOUT the engine
     * lock (report through sink.report_unlocked). QOD_OK, QOD_ERR_NOTFOUND (unknown token: 404) or
     * QOD_ERR_INVALID (malformed body: 400). */
    int (*notify)(void *self, const char *token, const char *body, size_t len);
    /* Optional: appends backend metrics (Prometheus text). Unlocked. */
    void (*metrics)(void *self, qod_buf *out);
} qod_net_backend;

/* The backend registered under name, or NULL. */
const qod_net_backend *qod_net_find(const char *name);

extern const qod_net_backend qod_net_sim;
extern const qod_net_backend qod_net_tc;
extern const qod_net_backend qod_net_nef;

#endif
