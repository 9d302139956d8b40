/* Requests that belong to another node of a cluster (core/cluster.h): found here, forwarded there
 * (api/forward.h). A request already forwarded by a node is never forwarded again. */
#ifndef QOD_API_PEERS_H
#define QOD_API_PEERS_H

#include "api/api.h"
#include "core/engine.h"

#include <stdbool.h>

/* For routes flagged QOD_ROUTE_SESSION or QOD_ROUTE_CREATE, before authentication: true when r was forwarded to
 * the node that holds its session (or, for a create, to a node that holds shards when this one holds none), or
 * answered 503 because no node holds it right now. False: this node answers. Always false without a cluster. */
bool qod_peers_route(qod_call *c, qod_req *r);
/* For the retrieve-by-device operations, after this node found nothing of its own: true when the device's active
 * item of this app lives on another node and r was forwarded there (or answered 503). */
bool qod_peers_by_device(qod_call *c, qod_req *r, const char *device_key, qod_kind kind);
/* For an answer this node found in its own memory without asking the cluster (retrieve-by-device): true when its
 * leases are not current (qod_cluster_current: the lease round is late, the database likely out of reach), and r
 * was answered 503 as qod_peers_route answers a session by id then. */
bool qod_peers_stale(qod_call *c, qod_req *r);

#endif
