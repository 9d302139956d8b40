#include "core/cluster.h"

#include "store/pg_lease.h"
#include "util/err.h"
#include "util/hmap.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/stopper.h"
#include "util/time.h"

#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NODE_PREFIX "node:"
#define SHARD_PREFIX "shard:"
/* New ids tried for one in a held shard: with 1 shard of 64 held, 4096 tries miss with probability 1e-28. */
#define NEW_ID_TRIES 4096

struct qod_cluster {
    qod_cluster_opts o;
    char node[QOD_CLUSTER_URL_MAX];
    char node_lease[QOD_CLUSTER_URL_MAX + 8]; /* "node:" + URL: the lease that announces the node */
    char instance[40]; /* this process: holds the node's own lease, so two live processes cannot share a URL */
    qod_pg_lease *pl;
    _Atomic uint64_t held;                     /* bit s: this node holds shard s */
    _Atomic int64_t epoch[QOD_CLUSTER_SHARDS]; /* the fencing epoch of each held shard's lease */
    atomic_int nodes;
    pthread_mutex_t mu;                                    /* guards holders */
    char holders[QOD_CLUSTER_SHARDS][QOD_CLUSTER_URL_MAX]; /* "" when free at the last round */
    bool free_before[QOD_CLUSTER_SHARDS];                  /* free at the previous round too (cluster thread only) */
    int64_t last_renewed_ms; /* monotonic time of the last round that renewed every lease */
    /* Monotonic time until which requests for held sessions are served from memory: 4/5 of a lease past the start
     * of the last round that renewed every lease. A round stuck on a database out of reach does not extend it. */
    _Atomic int64_t act_until_ms;
    pthread_t thread;
    bool started;
    atomic_bool expired; /* the leases could not be renewed in time: no more writes, nothing to release at the stop */
    qod_stopper stop;
};

int qod_cluster_shard_of(const char *id)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const char *p = id; *p; p++) {
        h ^= (unsigned char)tolower((unsigned char)*p);
        h *= 0x100000001b3ull;
    }
    return (int)(h % QOD_CLUSTER_SHARDS);
}

static void shard_name(char *out, size_t cap, int s)
{
    snprintf(out, cap, SHARD_PREFIX "%02d", s);
}

bool qod_cluster_owns(const qod_cluster *c, const char *id)
{
    return (qod_cluster_held_mask(c) >> qod_cluster_shard_of(id)) & 1;
}

int qod_cluster_held(const qod_cluster *c)
{
    return __builtin_popcountll(qod_cluster_held_mask(c));
}

uint64_t qod_cluster_held_mask(const qod_cluster *c)
{
    return atomic_load(&((qod_cluster *)c)->held);
}

bool qod_cluster_current(const qod_cluster *c)
{
    return qod_time_mono_ms() < atomic_load(&((qod_cluster *)c)->act_until_ms);
}

/* The leases are all renewed as of now (monotonic, taken before the renewals were asked). */
static void renewed_at(qod_cluster *c, int64_t now)
{
    c->last_renewed_ms = now;
    atomic_store(&c->act_until_ms, now + c->o.lease_ms * 4 / 5);
}

bool qod_cluster_lease_of(const qod_cluster *c, const char *id, char *name, size_t cap, int64_t *epoch)
{
    qod_cluster *m = (qod_cluster *)c;
    int s = qod_cluster_shard_of(id);
    /* Once the leases could not be renewed in time the node is stopping: its writes would be refused by the
     * database (run out) or wait on one out of reach; they fail here at once. */
    if (!((qod_cluster_held_mask(c) >> s) & 1) || atomic_load(&m->expired))
        return false;
    shard_name(name, cap, s);
    *epoch = atomic_load(&m->epoch[s]);
    return true;
}

const char *qod_cluster_node(const qod_cluster *c)
{
    return c->node;
}

int qod_cluster_nodes(const qod_cluster *c)
{
    int n = atomic_load(&((qod_cluster *)c)->nodes);
    return n > 0 ? n : 1;
}

void qod_cluster_new_id(qod_cluster *c, char id[37])
{
    for (int i = 0; i < NEW_ID_TRIES; i++) {
        qod_uuid_v7(id);
        if (qod_cluster_owns(c, id))
            return;
    }
}

int qod_cluster_owner(qod_cluster *c, const char *id, char *url, size_t cap)
{
    int s = qod_cluster_shard_of(id);
    /* Held but not current (the lease round is late, the database likely out of reach): not served here, and not
     * asked of the database either, which would hold up the round on the lease connection. */
    if ((qod_cluster_held_mask(c) >> s) & 1)
        return qod_cluster_current(c) ? QOD_ERR_STATE : QOD_ERR_NOTFOUND;
    pthread_mutex_lock(&c->mu);
    int rc = c->holders[s][0] && strcmp(c->holders[s], c->node) != 0 ? QOD_OK : QOD_ERR_NOTFOUND;
    if (rc == QOD_OK)
        snprintf(url, cap, "%s", c->holders[s]);
    pthread_mutex_unlock(&c->mu);
    if (rc == QOD_OK)
        return rc;
    /* Not known at the last round (taken since, by a node that just joined or took over): ask the database. */
    char name[32], holder[QOD_CLUSTER_URL_MAX];
    shard_name(name, sizeof name, s);
    if (qod_pg_lease_holder(c->pl, name, holder, sizeof holder, NULL, NULL) != QOD_OK)
        return QOD_ERR_NOTFOUND;
    if (strcmp(holder, c->node) == 0)
        return (qod_cluster_held_mask(c) >> s) & 1 && qod_cluster_current(c) ? QOD_ERR_STATE : QOD_ERR_NOTFOUND;
    pthread_mutex_lock(&c->mu);
    snprintf(c->holders[s], sizeof c->holders[s], "%s", holder);
    pthread_mutex_unlock(&c->mu);
    snprintf(url, cap, "%s", holder);
    return QOD_OK;
}

int qod_cluster_any_owner(qod_cluster *c, char *url, size_t cap)
{
    int rc = QOD_ERR_NOTFOUND;
    /* Start at a different shard each time, so forwarded creates spread over the holders. */
    int first = (int)(qod_time_mono_ms() % QOD_CLUSTER_SHARDS);
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < QOD_CLUSTER_SHARDS && rc != QOD_OK; i++) {
        const char *h = c->holders[(first + i) % QOD_CLUSTER_SHARDS];
        if (h[0] && strcmp(h, c->node) != 0) {
            snprintf(url, cap, "%s", h);
            rc = QOD_OK;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

typedef struct {
    int count;
    char holders[QOD_CLUSTER_SHARDS][QOD_CLUSTER_URL_MAX];
} listing;

static int count_node(void *arg, const char *name, const char *holder)
{
    (void)name;
    (void)holder;
    ((listing *)arg)->count++;
    return 0;
}

static int note_shard(void *arg, const char *name, const char *holder)
{
    listing *l = arg;
    int s = atoi(name + strlen(SHARD_PREFIX));
    if (s >= 0 && s < QOD_CLUSTER_SHARDS)
        snprintf(l->holders[s], sizeof l->holders[s], "%s", holder);
    return 0;
}

/* One round: renew, look, take free shards up to a fair share (or any shard free for two rounds). Returns how
 * many shards were taken; *lost when a lease could not be kept. */
static int round_once(qod_cluster *c, bool *lost)
{
    char name[32];
    int64_t now = qod_time_mono_ms();
    /* The node's own lease announces it; then each held shard. */
    int nrc = qod_pg_lease_acquire(c->pl, c->node_lease, c->instance, c->o.lease_ms, NULL);
    if (nrc == QOD_ERR_BUSY) {
        QOD_ERROR("cluster", "node_taken", "node=%s detail=\"another process holds this node's lease\"", c->node);
        *lost = true;
        return 0;
    }
    bool renewed = nrc == QOD_OK;
    uint64_t held = atomic_load(&c->held);
    /* A call that failed (the database out of reach: each call would wait its limit again) ends the renewals of
     * this round. */
    for (int s = 0; s < QOD_CLUSTER_SHARDS && renewed; s++) {
        if (!((held >> s) & 1))
            continue;
        shard_name(name, sizeof name, s);
        int64_t epoch = 0;
        int rc = qod_pg_lease_acquire(c->pl, name, c->node, c->o.lease_ms, &epoch);
        int64_t had = atomic_load(&c->epoch[s]);
        if (rc == QOD_OK && epoch != had) {
            /* The lease lapsed since the last round (this node was paused, or the database unreachable): writes
             * fenced with the old epoch have failed since. The epoch grows by one per change of hands or lapse,
             * so one more means nobody else held the shard meanwhile and what this node holds is still true;
             * more means another node may have worked on it. */
            if (epoch != had + 1) {
                QOD_ERROR("cluster", "shard_held_meanwhile", "shard=%d node=%s epoch=%lld was=%lld", s, c->node,
                          (long long)epoch, (long long)had);
                *lost = true;
                return 0;
            }
            QOD_WARN("cluster", "shard_lapsed", "shard=%d node=%s epoch=%lld", s, c->node, (long long)epoch);
            atomic_store(&c->epoch[s], epoch);
        }
        if (rc == QOD_ERR_BUSY) {
            QOD_ERROR("cluster", "shard_taken", "shard=%d node=%s", s, c->node);
            *lost = true;
            return 0;
        }
        if (rc != QOD_OK)
            renewed = false;
    }
    /* Counted to the end of the round: its failed calls may each have waited their limit. */
    int64_t since = qod_time_mono_ms() - c->last_renewed_ms;
    if (renewed)
        renewed_at(c, now);
    else if (held && since >= c->o.lease_ms * 4 / 5) {
        QOD_ERROR("cluster", "lease_expiring", "node=%s since_ms=%lld", c->node, (long long)since);
        atomic_store(&c->expired, true);
        *lost = true;
        return 0;
    }
    listing *l = calloc(1, sizeof *l);
    if (!l)
        return 0;
    int rc = qod_pg_lease_list(c->pl, NODE_PREFIX, count_node, l);
    rc = rc ? rc : qod_pg_lease_list(c->pl, SHARD_PREFIX, note_shard, l);
    if (rc != QOD_OK) {
        free(l);
        return 0;
    }
    int nodes = l->count > 0 ? l->count : 1;
    atomic_store(&c->nodes, nodes);
    int fair = (QOD_CLUSTER_SHARDS + nodes - 1) / nodes, mine = __builtin_popcountll(held), taken = 0;
    for (int s = 0; s < QOD_CLUSTER_SHARDS; s++) {
        bool is_free = !l->holders[s][0];
        if (is_free && (mine < fair || c->free_before[s])) {
            shard_name(name, sizeof name, s);
            int64_t epoch = 0;
            /* Without waiting: the row of a lease run out is still locked while its holder, frozen inside a
             * fenced transaction, keeps it open (until the database ends it, after a lease: store.h). Waiting would
             * stop this round from renewing what this node holds. */
            if (qod_pg_lease_take(c->pl, name, c->node, c->o.lease_ms, &epoch) == QOD_OK) {
                atomic_store(&c->epoch[s], epoch);
                atomic_fetch_or(&c->held, (uint64_t)1 << s);
                snprintf(l->holders[s], sizeof l->holders[s], "%s", c->node);
                mine++;
                taken++;
                is_free = false;
            }
        }
        c->free_before[s] = is_free;
    }
    pthread_mutex_lock(&c->mu);
    memcpy(c->holders, l->holders, sizeof c->holders);
    pthread_mutex_unlock(&c->mu);
    free(l);
    if (taken)
        QOD_INFO("cluster", "shards_taken", "node=%s taken=%d held=%d nodes=%d", c->node, taken, mine, nodes);
    return taken;
}

static void *cluster_main(void *arg)
{
    qod_cluster *c = arg;
    pthread_setname_np(pthread_self(), "qod-cluster");
    while (!qod_stopper_wait(&c->stop, c->o.lease_ms / 3)) {
        bool lost = false;
        int taken = round_once(c, &lost);
        if (lost) {
            if (c->o.lost)
                c->o.lost(c->o.ctx);
            break;
        }
        if (taken && c->o.acquired)
            c->o.acquired(c->o.ctx);
    }
    return NULL;
}

int qod_cluster_start(const qod_cluster_opts *opts, qod_cluster **out, char *err, size_t errcap)
{
    *out = NULL;
    if (!opts->node || !*opts->node || strlen(opts->node) >= QOD_CLUSTER_URL_MAX || opts->lease_ms < 300) {
        snprintf(err, errcap, "cluster: the node URL and a lease of at least 300 ms are needed");
        return QOD_ERR_INVALID;
    }
    qod_cluster *c = calloc(1, sizeof *c);
    if (!c)
        return QOD_ERR_NOMEM;
    c->o = *opts;
    snprintf(c->node, sizeof c->node, "%s", opts->node);
    snprintf(c->node_lease, sizeof c->node_lease, NODE_PREFIX "%s", c->node);
    char rnd[37];
    qod_uuid_v4(rnd);
    snprintf(c->instance, sizeof c->instance, "%s", rnd);
    pthread_mutex_init(&c->mu, NULL);
    qod_stopper_init(&c->stop);
    /* A call unanswered for a quarter lease is tried again on a new connection, so that one stuck connection does
     * not lose the leases, and a database out of reach is noticed within the lease (lease_expiring). */
    int rc = qod_pg_lease_open(opts->uri, opts->lease_ms / 4, &c->pl);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "cluster: cannot reach the database for leases: %s", qod_strerror(rc));
        qod_cluster_stop(c);
        return rc;
    }
    /* Announce, let nodes starting together announce too, then take a fair share. */
    /* A lease under this URL may be left by this node's previous, crashed process: it lapses within a lease. */
    int64_t give_up = qod_time_mono_ms() + c->o.lease_ms + 500;
    while ((rc = qod_pg_lease_acquire(c->pl, c->node_lease, c->instance, c->o.lease_ms, NULL)) == QOD_ERR_BUSY &&
           qod_time_mono_ms() < give_up)
        qod_stopper_wait(&c->stop, 200);
    if (rc == QOD_ERR_BUSY)
        snprintf(err, errcap, "cluster: another live node already uses the URL %s", c->node);
    else if (rc != QOD_OK)
        snprintf(err, errcap, "cluster: cannot register the node: %s", qod_strerror(rc));
    if (rc != QOD_OK) {
        qod_cluster_stop(c);
        return rc;
    }
    renewed_at(c, qod_time_mono_ms());
    qod_stopper_wait(&c->stop, c->o.lease_ms / 3);
    bool lost = false;
    round_once(c, &lost);
    if (pthread_create(&c->thread, NULL, cluster_main, c) != 0) {
        qod_cluster_stop(c);
        return QOD_ERR_NOMEM;
    }
    c->started = true;
    QOD_INFO("cluster", "joined", "node=%s shards=%d nodes=%d lease_ms=%lld", c->node, qod_cluster_held(c),
             qod_cluster_nodes(c), (long long)c->o.lease_ms);
    *out = c;
    return QOD_OK;
}

void qod_cluster_stop(qod_cluster *c)
{
    if (!c)
        return;
    qod_stopper_stop(&c->stop);
    if (c->started)
        pthread_join(c->thread, NULL);
    if (c->pl) {
        char name[32];
        uint64_t held = atomic_exchange(&c->held, 0);
        /* Released so that the others take over at once; once a release fails (the database out of reach, each
         * call waiting its limit), the rest run out by themselves. After renewals that failed for most of a lease
         * none is tried: the leases have run out or are about to, and the database is out of reach. */
        int rc = atomic_load(&c->expired) ? QOD_ERR_STATE : QOD_OK;
        for (int s = 0; s < QOD_CLUSTER_SHARDS && rc == QOD_OK; s++) {
            if ((held >> s) & 1) {
                shard_name(name, sizeof name, s);
                rc = qod_pg_lease_release(c->pl, name, c->node);
            }
        }
        if (rc == QOD_OK)
            qod_pg_lease_release(c->pl, c->node_lease, c->instance);
        qod_pg_lease_close(c->pl);
    }
    pthread_mutex_destroy(&c->mu);
    qod_stopper_destroy(&c->stop);
    free(c);
}
