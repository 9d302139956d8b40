#include "api/api.h"

#include "api/errors.h"
#include "api/health.h"
#include "api/oauth.h"
#include "api/peers.h"
#include "api/ratelimit.h"
#include "api/routes.h"
#include "util/err.h"
#include "util/log.h"
#include "util/rand.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct qod_api {
    qod_api_deps deps;
    qod_metrics *metrics;
    qod_ratelimit *rl_apps, *rl_client, *rl_ip;
    const char *route_names[QOD_METRICS_MAX_ROUTES];
};

qod_ratelimit *qod_api_rl_apps(qod_api *api)
{
    return api->rl_apps;
}

qod_ratelimit *qod_api_rl_token_client(qod_api *api)
{
    return api->rl_client;
}

qod_ratelimit *qod_api_rl_token_ip(qod_api *api)
{
    return api->rl_ip;
}

int qod_api_create(const qod_api_deps *deps, qod_api **out)
{
    *out = NULL;
    qod_api *api = calloc(1, sizeof *api);
    if (!api)
        return QOD_ERR_NOMEM;
    api->deps = *deps;
    int n = 0;
    for (const qod_route *rt = qod_routes; rt->method && n < QOD_METRICS_MAX_ROUTES; rt++, n++)
        api->route_names[n] = rt->pattern;
    api->metrics = qod_metrics_create(api->route_names, n);
    api->rl_apps = qod_ratelimit_create(1 << 16);
    api->rl_client = qod_ratelimit_create(1 << 16);
    api->rl_ip = qod_ratelimit_create(1 << 16);
    if (!api->metrics || !api->rl_apps || !api->rl_client || !api->rl_ip) {
        qod_api_destroy(api);
        return QOD_ERR_NOMEM;
    }
    *out = api;
    return QOD_OK;
}

void qod_api_destroy(qod_api *api)
{
    if (!api)
        return;
    qod_metrics_destroy(api->metrics);
    qod_ratelimit_destroy(api->rl_apps);
    qod_ratelimit_destroy(api->rl_client);
    qod_ratelimit_destroy(api->rl_ip);
    free(api);
}

const qod_api_deps *qod_api_deps_of(const qod_api *api)
{
    return &api->deps;
}

qod_metrics *qod_api_metrics(qod_api *api)
{
    return api->metrics;
}

bool qod_correlator_valid(const char *s)
{
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= QOD_CORRELATOR_MAX)
            return false;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
            continue;
        if (!strchr("-_:;./<>{}", c))
            return false;
    }
    return true;
}

void qod_api_lower_param(qod_call *c, int i)
{
    if (i < 0 || i >= QOD_MAX_PATH_PARAMS || !c->params[i])
        return;
    /* params point into c->param_buf, which the call owns. */
    for (char *p = c->param_buf + (c->params[i] - c->param_buf); *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char)(*p - 'A' + 'a');
}

bool qod_req_content_type_is(const qod_req *r, const char *media)
{
    const char *ct = qod_req_header(r, "Content-Type");
    if (!ct)
        return false;
    while (*ct == ' ')
        ct++;
    size_t n = strlen(media);
    if (strncasecmp(ct, media, n) != 0)
        return false;
    ct += n;
    while (*ct == ' ')
        ct++;
    return *ct == '\0' || *ct == ';';
}

/* Matches a path against a pattern whose "{name}" segments capture into c->params. */
static bool match_pattern(const char *pattern, const char *path, qod_call *c)
{
    size_t used = 0;
    int np = 0;
    const char *p = pattern, *s = path;
    while (*p && *s) {
        if (*p == '{') {
            const char *pe = strchr(p, '}');
            const char *se = strchr(s, '/');
            size_t sl = se ? (size_t)(se - s) : strlen(s);
            if (!pe || sl == 0 || np >= QOD_MAX_PATH_PARAMS || used + sl + 1 > sizeof c->param_buf)
                return false;
            memcpy(c->param_buf + used, s, sl);
            c->param_buf[used + sl] = '\0';
            c->params[np++] = c->param_buf + used;
            used += sl + 1;
            p = pe + 1;
            s += sl;
            continue;
        }
        if (*p != *s)
            return false;
        p++;
        s++;
    }
    return *p == '\0' && *s == '\0';
}

/* Finds the route; on a path match with the wrong method, fills allow and returns -2; no match -1. */
static int find_route(const char *method, const char *path, qod_call *c, char *allow, size_t cap)
{
    allow[0] = '\0';
    bool path_hit = false;
    for (int i = 0; qod_routes[i].method; i++) {
        if (!match_pattern(qod_routes[i].pattern, path, c))
            continue;
        if (strcmp(qod_routes[i].method, method) == 0 ||
            (strcmp(method, "HEAD") == 0 && strcmp(qod_routes[i].method, "GET") == 0))
            return i;
        path_hit = true;
        size_t l = strlen(allow);
        if (!strstr(allow, qod_routes[i].method))
            snprintf(allow + l, cap - l, "%s%s", l ? ", " : "", qod_routes[i].method);
    }
    return path_hit ? -2 : -1;
}

/* The correlator: the client's when valid, a new UUID otherwise. False when the client's is invalid. An empty one
 * (the pattern's {0,256} admits it) counts as none: an empty header cannot be echoed by libmicrohttpd. */
static bool take_correlator(qod_call *c, qod_req *r)
{
    const char *x = qod_req_header(r, "x-correlator");
    if (x && !*x)
        x = NULL;
    if (x && qod_correlator_valid(x)) {
        snprintf(c->correlator, sizeof c->correlator, "%s", x);
    } else {
        /* A correlation id needs to be unique, not secret: no CSPRNG call per request. */
        qod_uuid_fast(c->correlator);
    }
    qod_req_add_header(r, "x-correlator", c->correlator);
    return !x || qod_correlator_valid(x);
}

/* Checks body size and media type for routes that take a body; responds and returns false on failure. */
static bool check_body(const qod_route *rt, qod_req *r)
{
    size_t len = 0;
    qod_req_body(r, &len);
    if (qod_req_body_too_large(r)) {
        qod_api_error(r, 413, "PAYLOAD_TOO_LARGE", "The request body is larger than the limit.");
        return false;
    }
    if (rt->body == QOD_BODY_JSON && (len > 0 || strcmp(qod_req_method(r), "POST") == 0) &&
        !qod_req_content_type_is(r, "application/json")) {
        qod_api_error(r, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type must be application/json.");
        return false;
    }
    return true;
}

static void free_call(void *p)
{
    free(p);
}

void qod_api_dispatch(void *ctx, qod_req *r)
{
    qod_api *api = ctx;
    qod_call *c = calloc(1, sizeof *c);
    if (!c) {
        qod_req_add_header(r, "Retry-After", "1");
        qod_api_error(r, 503, "UNAVAILABLE", "Out of memory.");
        return;
    }
    c->api = api;
    c->route = -1;
    qod_req_set_user(r, c, free_call);
    if (!take_correlator(c, r)) {
        qod_api_error(r, 400, "INVALID_ARGUMENT", "Invalid x-correlator header.");
        return;
    }
    char allow[64];
    int i = find_route(qod_req_method(r), qod_req_path(r), c, allow, sizeof allow);
    if (i == -1) {
        qod_api_error(r, 404, "NOT_FOUND", "The requested path is not found.");
        return;
    }
    if (i == -2) {
        qod_req_add_header(r, "Allow", allow);
        qod_api_error(r, 405, "METHOD_NOT_ALLOWED", NULL);
        return;
    }
    c->route = i;
    const qod_route *rt = &qod_routes[i];
    if (qod_req_overloaded(r) && !(rt->flags & QOD_ROUTE_OPS)) {
        /* Shed load early and cheaply instead of falling over (health probes still answer). */
        qod_req_add_header(r, "Retry-After", "1");
        qod_req_add_header(r, "Connection", "close");
        qod_api_error(r, 503, "UNAVAILABLE",
                      qod_req_draining(r) ? "The server is shutting down. Retry later."
                                          : "The server is overloaded. Retry later.");
        return;
    }
    if (rt->flags & QOD_ROUTE_NO_STORE)
        qod_req_add_header(r, "Cache-Control", "no-store");
    if (!check_body(rt, r))
        return;
    /* Another node's session (or no shard here for a create): that node answers, authentication included. */
    if ((rt->flags & (QOD_ROUTE_SESSION | QOD_ROUTE_CREATE)) && qod_peers_route(c, r))
        return;
    if (rt->scope && !qod_oauth_check(c, r, rt->scope))
        return;
    rt->fn(c, r);
}

void qod_api_done(void *ctx, qod_req *r, unsigned status, uint64_t dur_ns)
{
    qod_api *api = ctx;
    const qod_call *c = qod_req_user(r);
    qod_metrics_observe(api->metrics, c ? c->route : -1, status, dur_ns);
}
