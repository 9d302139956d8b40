/* Several qodd nodes on one PostgreSQL database (--store postgres://… --cluster).
 *
 * Sessions are split into QOD_CLUSTER_SHARDS shards by a hash of their id. Each shard is leased (store/pg_lease.h,
 * on the database's clock) by one node, which alone holds that shard's sessions in memory and does their work
 * that must happen once: expiry and purge, network backend calls, callback attempts. Any node takes any request:
 * one for a session of another node's shard is forwarded there (api/forward.h); a create takes an id in a shard
 * this node holds. Every node renews its leases every third of the lease time; a node that dies stops renewing,
 * its shards fall free when their leases run out, and the others take them over (qod_engine_adopt). A node that
 * cannot renew in time, or finds a shard taken from it, is no longer sure to be alone on it: it reports `lost`
 * and the daemon stops. Nodes do not hand shards over while alive: a node that joins late takes only free
 * shards (those of nodes that left or died), and serves the rest by forwarding. */
#ifndef QOD_CORE_CLUSTER_H
#define QOD_CORE_CLUSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QOD_CLUSTER_SHARDS 64
#define QOD_CLUSTER_URL_MAX 256

typedef struct qod_cluster qod_cluster;

typedef struct {
    const char *uri;             /* the PostgreSQL store's URI */
    const char *node;            /* this node's base URL as the other nodes reach it (http://host:port): its identity */
    int64_t lease_ms;            /* lease time; renewed every third of it */
    void (*acquired)(void *ctx); /* shards were taken over after the start (cluster thread): adopt them */
    void (*lost)(void *ctx);     /* a lease was lost (cluster thread): the node must stop */
    void *ctx;
} qod_cluster_opts;

/* Joins: registers the node, waits a moment for nodes starting together to register, and takes its share of the
 * free shards before returning, so that the engine then loads exactly the sessions it owns. */
int qod_cluster_start(const qod_cluster_opts *opts, qod_cluster **out, char *err, size_t errcap);
/* Leaves: stops renewing and releases every lease at once, so the others take the shards at their next round.
 * NULL is a no-op. */
void qod_cluster_stop(qod_cluster *c);

/* The shard of a session id (case-insensitive, as ids are accepted in upper case). */
int qod_cluster_shard_of(const char *id);
/* True when this node holds the id's shard. Lock-free. */
bool qod_cluster_owns(const qod_cluster *c, const char *id);
/* Number of shards this node holds. */
int qod_cluster_held(const qod_cluster *c);
/* The shards this node holds, bit s for shard s. Lock-free. */
uint64_t qod_cluster_held_mask(const qod_cluster *c);
/* False once this node's leases were last renewed more than 4/5 of a lease ago, even while its lease round is still
 * waiting on a database out of reach (a call's limit, a connect's): qod_cluster_owner then serves none of its
 * sessions from memory, before another node can take them. Writes need no such check: the database fences them. */
bool qod_cluster_current(const qod_cluster *c);
/* A new UUIDv7 whose shard this node holds (any UUIDv7 when it holds none). */
void qod_cluster_new_id(qod_cluster *c, char id[37]);
/* Where id's session lives: QOD_OK with the other node's URL, QOD_ERR_STATE when it is this node's,
 * QOD_ERR_NOTFOUND when no node holds its shard right now (a node died and its leases have not run out). */
int qod_cluster_owner(qod_cluster *c, const char *id, char *url, size_t cap);
/* A node that holds shards, for creates arriving at a node that holds none: QOD_OK with its URL, or
 * QOD_ERR_NOTFOUND. */
int qod_cluster_any_owner(qod_cluster *c, char *url, size_t cap);
/* The lease that makes this node the holder of id's shard: its name ("shard:NN") and fencing epoch, for
 * qod_store_batch_fence with holder qod_cluster_node(c). False when this node does not hold the shard. */
bool qod_cluster_lease_of(const qod_cluster *c, const char *id, char *name, size_t cap, int64_t *epoch);
/* This node's URL, the holder name of its shard leases. */
const char *qod_cluster_node(const qod_cluster *c);
/* Live nodes seen at the last round (at least 1). */
int qod_cluster_nodes(const qod_cluster *c);

#endif
