/* The HTTP API layer: routing, x-correlator, authentication, scopes and the shared request context.
 * Each surface (oauth, konera_v0, health, sandbox…) implements handlers for the route table in api.c. */
#ifndef QOD_API_API_H
#define QOD_API_API_H

#include "api/http.h"
#include "api/metrics.h"
#include "auth/apps.h"
#include "auth/jwt.h"
#include "auth/tokcache.h"
#include "notify/urlguard.h"
#include "store/store.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct qod_engine qod_engine;
typedef struct qod_profiles qod_profiles;
typedef struct qod_ciba qod_ciba;
typedef struct qod_registry qod_registry;
typedef struct qod_cluster qod_cluster;
typedef struct qod_forward qod_forward;

/* What the API layer needs from the daemon; all borrowed, all outlive the API. */
typedef struct {
    const char *public_url; /* issuer and link base, without trailing slash */
    int64_t token_ttl_s;
    qod_apps *apps;
    qod_jwt_key *key;
    qod_tokcache *tokens;
    qod_store *store;
    qod_engine *engine;
    const qod_profiles *profiles;
    const qod_cidrs *callback_allow; /* --callback-allow ranges */
    double token_rate_client;        /* token endpoint: requests per second per client_id (0 = none) */
    double token_rate_ip;            /* token endpoint: requests per second per source address (0 = none) */
    qod_ciba *ciba;                  /* pending 3-legged (CIBA) requests */
    qod_registry *registry;          /* live devices, for CIBA login hints */
    bool ciba_auto_approve;          /* live apps' CIBA requests are approved without an operator */
    qod_cluster *cluster;            /* several nodes on one database (peers.h), or NULL */
    qod_forward *forward;            /* forwards requests to the node that holds their session (with cluster) */
    const char *node_url;            /* this node's URL in the cluster */
} qod_api_deps;

typedef struct qod_api qod_api;

#define QOD_CORRELATOR_MAX 256
#define QOD_MAX_PATH_PARAMS 2

/* The per-request context handed to handlers; lives until the response is sent (it is the request's user
 * data), so asynchronous handlers may keep using it until they resume the request. */
typedef struct {
    qod_api *api;
    int route;
    const char *params[QOD_MAX_PATH_PARAMS]; /* path parameters, in pattern order */
    char param_buf[1024];
    qod_app app;           /* the authenticated app (when the route needs a token) */
    qod_jwt_claims claims; /* the token's claims */
    bool authenticated;
    char correlator[QOD_CORRELATOR_MAX + 1];
} qod_call;

typedef void (*qod_handler)(qod_call *c, qod_req *r);

/* Creates the API; deps are copied (their pointees borrowed). */
int qod_api_create(const qod_api_deps *deps, qod_api **out);
/* Frees; NULL is a no-op. */
void qod_api_destroy(qod_api *api);
/* The dependencies. */
const qod_api_deps *qod_api_deps_of(const qod_api *api);
typedef struct qod_ratelimit qod_ratelimit;
/* The rate limiters: per app (API calls), per client and per source address (token endpoint). */
qod_ratelimit *qod_api_rl_apps(qod_api *api);
qod_ratelimit *qod_api_rl_token_client(qod_api *api);
qod_ratelimit *qod_api_rl_token_ip(qod_api *api);
/* The metrics registry (for other modules' writers). */
qod_metrics *qod_api_metrics(qod_api *api);
/* The libmicrohttpd dispatch and done callbacks (ctx = the qod_api). */
void qod_api_dispatch(void *ctx, qod_req *r);
void qod_api_done(void *ctx, qod_req *r, unsigned status, uint64_t dur_ns);
/* Lower-cases path parameter i in place (UUIDs compare in lower case). */
void qod_api_lower_param(qod_call *c, int i);
/* True when s matches the CAMARA XCorrelator pattern (letters, digits and -_:;./<>{}; at most 256). */
bool qod_correlator_valid(const char *s);
/* True when the request's Content-Type is the given media type (parameters such as charset allowed). */
bool qod_req_content_type_is(const qod_req *r, const char *media);

#endif
