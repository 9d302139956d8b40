#include "api/peers.h"

#include "api/errors.h"
#include "api/forward.h"
#include "api/routes.h"
#include "core/cluster.h"
#include "core/session.h"
#include "store/store.h"
#include "util/err.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void unavailable(qod_req *r, const char *msg)
{
    qod_req_add_header(r, "Retry-After", "1");
    qod_api_error(r, 503, "UNAVAILABLE", msg);
}

/* Forwards r to url; true in every case (r forwarded, or answered 503). */
static bool forward_to(qod_call *c, qod_req *r, const char *url)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    int rc = qod_forward_request(d->forward, r, url, d->node_url);
    if (rc != QOD_OK) {
        QOD_WARN("peers", "forward_refused", "to=%s err=\"%s\"", url, qod_strerror(rc));
        unavailable(r, "The node that holds this session cannot be reached now; retry.");
    }
    return true;
}

bool qod_peers_route(qod_call *c, qod_req *r)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    const qod_route *rt = &qod_routes[c->route];
    if (!d->cluster)
        return false;
    char url[QOD_CLUSTER_URL_MAX];
    bool forwarded = qod_forward_is_forwarded(r);
    if (rt->flags & QOD_ROUTE_CREATE) {
        if (qod_cluster_held(d->cluster) > 0)
            return false;
        if (forwarded || qod_cluster_any_owner(d->cluster, url, sizeof url) != QOD_OK) {
            unavailable(r, "No node can take new sessions right now; retry.");
            return true;
        }
        return forward_to(c, r, url);
    }
    const char *id = c->params[0];
    int rc = id ? qod_cluster_owner(d->cluster, id, url, sizeof url) : QOD_ERR_STATE;
    if (rc == QOD_ERR_STATE)
        return false; /* ours */
    if (forwarded || rc != QOD_OK) {
        /* Its node died and its leases have not run out yet, or ownership moved while the request travelled. */
        unavailable(r, "The node that holds this session is not available right now; retry.");
        return true;
    }
    return forward_to(c, r, url);
}

bool qod_peers_stale(qod_call *c, qod_req *r)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    if (!d->cluster || qod_cluster_current(d->cluster))
        return false;
    unavailable(r, "The node that holds this session is not available right now; retry.");
    return true;
}

typedef struct {
    const char *app;
    qod_kind kind;
    char id[40];
} device_find;

static int find_active(void *arg, const qod_store_row *row)
{
    device_find *f = arg;
    /* Active (requested or available) rows of this app; the kind is told by the surface in the document. */
    if (row->state >= (int64_t)QOD_SS_ENDED * 10 || strcmp(row->owner, f->app) != 0)
        return 0;
    const char *surface = strstr(row->doc, "\"surface\":");
    if (surface && qod_kind_matches(f->kind, (qod_surface)atoi(surface + strlen("\"surface\":")))) {
        snprintf(f->id, sizeof f->id, "%s", row->key);
        return 1;
    }
    return 0;
}

bool qod_peers_by_device(qod_call *c, qod_req *r, const char *device_key, qod_kind kind)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    if (!d->cluster || !device_key[0] || qod_forward_is_forwarded(r))
        return false;
    device_find f = {c->app.client_id, kind, ""};
    if (qod_store_scan_idx(d->store, QOD_TBL_SESSIONS, device_key, find_active, &f) != QOD_OK || !f.id[0])
        return false;
    char url[QOD_CLUSTER_URL_MAX];
    int rc = qod_cluster_owner(d->cluster, f.id, url, sizeof url);
    if (rc == QOD_ERR_STATE)
        return false; /* ours after all (adopted since): this node answers */
    if (rc != QOD_OK) {
        unavailable(r, "The node that holds this session is not available right now; retry.");
        return true;
    }
    return forward_to(c, r, url);
}
