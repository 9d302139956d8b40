#include "daemon/daemon.h"

#include "api/admin.h"
#include "api/api.h"
#include "api/forward.h"
#include "api/http.h"
#include "api/konera_v0.h"
#include "api/konera_v1.h"
#include "api/provisioning.h"
#include "auth/apps.h"
#include "auth/ciba.h"
#include "auth/jwt.h"
#include "auth/tokcache.h"
#include "core/cluster.h"
#include "core/engine.h"
#include "core/loop.h"
#include "core/profiles.h"
#include "core/registry.h"
#include "notify/delivery.h"
#include "notify/urlguard.h"
#include "store/store.h"
#include "util/err.h"
#include "util/file.h"
#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define DRAIN_MS 10000

struct qod_daemon {
    char public_url[256];
    int lock_fd;
    qod_store *store;
    qod_seal *seal;
    qod_apps *apps;
    qod_jwt_key *key;
    qod_tokcache *tokens;
    qod_ciba *ciba;
    qod_profiles *profiles;
    qod_registry *registry;
    qod_engine *engine;
    qod_delivery *delivery;
    qod_cidrs allow;
    char *tls_cert, *tls_key;
    qod_api *api;
    qod_http *http;
    qod_admin *admin;
    qod_cluster *cluster; /* several nodes (--cluster-node), or NULL */
    qod_forward *forward;
    qod_store_listener *listener; /* other nodes' changes to apps and devices */
    qod_engine *_Atomic adopter;  /* the engine, once it may adopt shards */
    /* Late commits (on_late_commit) are read in by a thread of their own, started at the first: the scan of the
     * sessions table may take seconds, which the engine's loop (its timers) must not wait for. */
    pthread_mutex_t resync_mu;
    pthread_cond_t resync_cv;
    pthread_t resync_thread;
    bool resync_started, resync_pending, resync_stopping;
    _Atomic uint64_t delivery_shards; /* the shards the delivery treats as ours (delivery_owns_refresh) */
};

/* Creates the data directory 0700 (tightening an existing one) and takes its lock. */
static int prepare_data_dir(const char *dir, int *lock_fd, char *err, size_t errcap)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errcap, "cannot create data directory %s: %s", dir, strerror(errno));
        return -errno;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(err, errcap, "data directory %s is not a directory", dir);
        return QOD_ERR_INVALID;
    }
    if ((sb.st_mode & 0777) != 0700 && chmod(dir, 0700) != 0) {
        snprintf(err, errcap, "cannot set mode 0700 on %s: %s", dir, strerror(errno));
        return -errno;
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/qodd.lock", dir);
    *lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (*lock_fd < 0 || flock(*lock_fd, LOCK_EX | LOCK_NB) != 0) {
        snprintf(err, errcap, "data directory %s is in use by another qodd (%s)", dir, strerror(errno));
        return QOD_ERR_BUSY;
    }
    return QOD_OK;
}

/* The store for messages and logs: the data directory, or the PostgreSQL URI without its password. */
static void store_where(const qod_options *o, char *out, size_t cap)
{
    if (!o->store || !*o->store) {
        snprintf(out, cap, "in %s", o->data);
        return;
    }
    const char *rest = strstr(o->store, "://");
    rest = rest ? rest + 3 : o->store;
    const char *at = strrchr(rest, '@');
    snprintf(out, cap, "postgres://%s", at ? at + 1 : rest);
}

/* Reads the sessions this node should hold and does not (shards it took; creates found committed late), then the
 * outbox for their pending events. */
static void on_shards_taken(void *ctx)
{
    qod_daemon *d = ctx;
    qod_engine *e = atomic_load(&d->adopter);
    if (e) {
        int n = qod_engine_adopt(e);
        if (n < 0)
            QOD_ERROR("qodd", "adopt_failed", "err=\"%s\"", qod_strerror(n));
        qod_delivery_rescan(d->delivery);
    }
}

static void *resync_main(void *arg)
{
    qod_daemon *d = arg;
    pthread_setname_np(pthread_self(), "qod-resync");
    pthread_mutex_lock(&d->resync_mu);
    while (!d->resync_stopping) {
        if (!d->resync_pending) {
            pthread_cond_wait(&d->resync_cv, &d->resync_mu);
            continue;
        }
        d->resync_pending = false; /* late commits found during the scan ask for another */
        pthread_mutex_unlock(&d->resync_mu);
        on_shards_taken(d);
        pthread_mutex_lock(&d->resync_mu);
    }
    pthread_mutex_unlock(&d->resync_mu);
    return NULL;
}

/* On the store's writer thread: changes reported failed were made after all (a COMMIT whose answer was lost). The
 * sessions they created are read again from the store, by the resync thread. */
static void on_late_commit(void *ctx)
{
    qod_daemon *d = ctx;
    pthread_mutex_lock(&d->resync_mu);
    bool run = !d->resync_stopping && atomic_load(&d->adopter);
    if (run && !d->resync_started)
        run = d->resync_started = pthread_create(&d->resync_thread, NULL, resync_main, d) == 0;
    d->resync_pending |= run;
    pthread_cond_signal(&d->resync_cv);
    pthread_mutex_unlock(&d->resync_mu);
    if (!run)
        QOD_ERROR("qodd", "resync_not_run", "detail=\"found while starting or stopping: read at the next start\"");
}

/* Waits for a resync in progress; late commits found from now on are read at the next start. */
static void resync_stop(qod_daemon *d)
{
    pthread_mutex_lock(&d->resync_mu);
    d->resync_stopping = true;
    bool started = d->resync_started;
    pthread_cond_signal(&d->resync_cv);
    pthread_mutex_unlock(&d->resync_mu);
    if (started)
        pthread_join(d->resync_thread, NULL);
}

/* --store-timeout in ms; a cluster node's writer may wait up to a lease for another node's transaction (the server
 * ends one that idles longer), so it waits at least that long, and some more. */
static int64_t store_answer_ms(const qod_options *o)
{
    int64_t ms = o->store_timeout * 1000;
    int64_t least = o->cluster_node[0] ? o->cluster_lease * 1000 + 5000 : 0;
    return ms > 0 && ms < least ? least : ms;
}

static int open_state(qod_daemon *d, const qod_options *o, char *err, size_t errcap)
{
    char path[4200];
    bool pg = o->store && *o->store;
    qod_store_opts so = {.uri = pg ? o->store : o->data,
                         .sync_full = strcmp(o->sync, "full") == 0,
                         .txn_idle_max_ms = pg && o->cluster_node[0] ? o->cluster_lease * 1000 : 0,
                         .answer_max_ms = pg ? store_answer_ms(o) : 0,
                         .late_commit = on_late_commit,
                         .late_ctx = d};
    int rc = qod_store_open(&so, &d->store);
    if (rc != QOD_OK) {
        char where[300];
        store_where(o, where, sizeof where);
        snprintf(err, errcap, "cannot open the store %s: %s", where, qod_strerror(rc));
        return rc;
    }
    snprintf(path, sizeof path, "%s/secrets.key", o->data);
    rc = qod_seal_open(path, &d->seal);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "cannot load or create the secrets key %s: %s", path, qod_strerror(rc));
        return rc;
    }
    rc = qod_apps_create(d->store, d->seal, &d->apps);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "cannot load apps: %s", qod_strerror(rc));
        return rc;
    }
    snprintf(path, sizeof path, "%s/signing-key.pem", o->data);
    rc = qod_jwt_key_load_or_create(path, &d->key);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "cannot load or create the signing key %s: %s", path, qod_strerror(rc));
        return rc;
    }
    d->tokens = qod_tokcache_create(100000);
    d->ciba = qod_ciba_create();
    return d->tokens && d->ciba ? QOD_OK : QOD_ERR_NOMEM;
}

/* ---- several nodes ------------------------------------------------------------------------------------------- */

static bool cluster_owns(void *ctx, const char *id)
{
    return qod_cluster_owns(ctx, id);
}

static void cluster_new_id(void *ctx, char id[37])
{
    qod_cluster_new_id(ctx, id);
}

/* The delivery's view of the holdings: a shard taken since its last read of the outbox from the start is not
 * yet its own (the rescan that follows the adoption loads its sessions' events in order); a shard lost is not
 * its own at once. */
static bool delivery_owns(void *ctx, const char *id)
{
    qod_daemon *d = ctx;
    uint64_t both = atomic_load(&d->delivery_shards) & qod_cluster_held_mask(d->cluster);
    return (both >> qod_cluster_shard_of(id)) & 1;
}

static void delivery_owns_refresh(void *ctx)
{
    qod_daemon *d = ctx;
    atomic_store(&d->delivery_shards, qod_cluster_held_mask(d->cluster));
}

/* A session this node does not hold cannot be written here (a store error: 503, retry later). */
static int cluster_fence(void *ctx, qod_store_batch *b, const char *id)
{
    char name[32];
    int64_t epoch = 0;
    if (!qod_cluster_lease_of(ctx, id, name, sizeof name, &epoch))
        return QOD_ERR_STORE;
    return qod_store_batch_fence(b, name, qod_cluster_node(ctx), epoch);
}

static int delivery_fence(void *ctx, qod_store_batch *b, const char *id)
{
    return cluster_fence(((qod_daemon *)ctx)->cluster, b, id);
}

/* A lease could not be kept: another node may be doing this node's work already. Stop cleanly; a supervisor
 * starts the node again, and it joins afresh. */
static void on_lease_lost(void *ctx)
{
    (void)ctx;
    QOD_ERROR("qodd", "cluster_lease_lost", "detail=\"stopping: another node may hold our sessions now\"");
    kill(getpid(), SIGTERM);
}

static void on_peer_change(void *ctx, const char *channel, const char *payload)
{
    qod_daemon *d = ctx;
    long long seq = 0;
    char session[64] = "";
    if (strcmp(channel, "apps") == 0)
        qod_apps_refresh(d->apps, payload);
    else if (strcmp(channel, "devices") == 0)
        qod_registry_refresh(d->registry, payload);
    else if (strcmp(channel, "requeue") == 0 && !payload)
        qod_delivery_rescan(d->delivery); /* replays may have been missed: pending events are in the store */
    else if (strcmp(channel, "gone") == 0 && payload)
        qod_delivery_gone(d->delivery, payload);
    else if (strcmp(channel, "ungone") == 0 && payload)
        qod_delivery_forget_gone(d->delivery, payload);
    else if (strcmp(channel, "requeue") == 0 && payload && sscanf(payload, "%lld %63s", &seq, session) == 2 &&
             qod_cluster_owns(d->cluster, session))
        qod_delivery_requeue(d->delivery, session, seq); /* a replay asked on another node: ours to send */
}

static int open_cluster(qod_daemon *d, const qod_options *o, char *err, size_t errcap)
{
    if (!o->cluster_node[0])
        return QOD_OK;
    qod_cluster_opts co = {.uri = o->store,
                           .node = o->cluster_node,
                           .lease_ms = o->cluster_lease * 1000,
                           .acquired = on_shards_taken,
                           .lost = on_lease_lost,
                           .ctx = d};
    return qod_cluster_start(&co, &d->cluster, err, errcap);
}

/* The other nodes' changes to apps and devices, and the forwarder; after the registry exists. */
static int open_peers(qod_daemon *d, const qod_options *o, char *err, size_t errcap)
{
    if (!d->cluster)
        return QOD_OK;
    static const char *const channels[] = {"apps", "devices", "gone", "ungone", "requeue", NULL};
    int rc = qod_store_listen(o->store, channels, on_peer_change, d, &d->listener);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "cluster: cannot listen for the other nodes' changes: %s", qod_strerror(rc));
        return rc;
    }
    qod_apps_set_shared(d->apps);
    /* Apps or devices changed between loading them and listening: read them again. */
    qod_apps_refresh(d->apps, NULL);
    qod_registry_refresh(d->registry, NULL);
    rc = qod_forward_create(5000, &d->forward);
    if (rc != QOD_OK)
        snprintf(err, errcap, "cluster: cannot start the forwarder: %s", qod_strerror(rc));
    return rc;
}

static int open_engine(qod_daemon *d, const qod_options *o, char *err, size_t errcap)
{
    int rc =
        o->profiles[0] ? qod_profiles_load(o->profiles, &d->profiles, err, errcap) : qod_profiles_default(&d->profiles);
    if (rc != QOD_OK)
        return rc;
    rc = qod_registry_create(d->store, &d->registry);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "cannot load the subscriber registry: %s", qod_strerror(rc));
        return rc;
    }
    const qod_net_backend *be = qod_net_find(o->network);
    if (!be) {
        snprintf(err, errcap, "option 'network': backend '%s' is not available", o->network);
        return QOD_ERR_INVALID;
    }
    qod_engine_opts eo = {
        .store = d->store,
        .profiles = d->profiles,
        .registry = d->registry,
        .backend = be,
        .net = {.sandbox_delay_ms = o->sandbox_delay_ms,
                .cell_capacity_kbps = o->sim_cell_capacity,
                .tc_dev = o->tc_dev,
                .tc_uplink_dev = o->tc_uplink_dev,
                .tc_link_kbps = qod_options_rate_kbps(o->tc_link_rate),
                .tc_share = o->tc_share,
                /* Several nodes: the NEF calls back the node that subscribed, not the load balancer. */
                .public_url = o->cluster_node[0] ? o->cluster_node : d->public_url,
                .nef_url = o->nef_url,
                .nef_scs_as_id = o->nef_scs_as_id,
                .nef_token_url = o->nef_token_url,
                .nef_client_id = o->nef_client_id,
                .nef_client_secret = o->nef_client_secret,
                .nef_scope = o->nef_scope,
                .nef_bearer = o->nef_bearer,
                .nef_ca = o->nef_ca,
                .nef_client_cert = o->nef_client_cert,
                .nef_client_key = o->nef_client_key,
                .nef_timeout_ms = (int64_t)(o->nef_timeout_s * 1000),
                .nef_allocation_ms = (int64_t)(o->nef_allocation_timeout_s * 1000)},
        .retention_ms = o->retention * 1000,
        .seal = d->seal,
    };
    if (d->cluster) {
        eo.owns = cluster_owns;
        eo.new_id = cluster_new_id;
        eo.fence = cluster_fence;
        eo.cluster_ctx = d->cluster;
    }
    rc = qod_engine_create(&eo, &d->engine, err, errcap);
    return rc;
}

/* The delivery runs on a thread of its own; the engine tells it about new outbox events. */
static int open_delivery(qod_daemon *d, const qod_options *o, char *err, size_t errcap)
{
    qod_delivery_opts dopt = {
        .store = d->store,
        .apps = d->apps,
        .timeout_ms = (int64_t)(o->callback_timeout_s * 1000),
        .per_host = (int)o->callback_per_host,
        .global = (int)o->callback_max_inflight,
        .max_loaded = (size_t)o->callback_max_loaded,
        .gone_max = (size_t)o->callback_gone_max,
        .ca_file = o->callback_ca[0] ? o->callback_ca : NULL,
        .allow = &d->allow,
        .seal = d->seal,
        .owns = d->cluster ? delivery_owns : NULL,
        .owns_refresh = d->cluster ? delivery_owns_refresh : NULL,
        .fence = d->cluster ? delivery_fence : NULL,
        .owns_ctx = d,
    };
    int rc = qod_cidrs_parse(o->callback_allow, &d->allow, err, errcap);
    rc = rc ? rc : qod_retry_schedule_parse(o->retry_schedule, &dopt, err, errcap);
    rc = rc ? rc : qod_delivery_create(&dopt, &d->delivery);
    if (rc != QOD_OK)
        return rc;
    qod_delivery_set_renderer(d->delivery, QOD_SURFACE_V0, qod_v0_render_event);
    qod_delivery_set_renderer(d->delivery, QOD_SURFACE_V1, qod_v1_render_event);
    qod_delivery_set_renderer(d->delivery, QOD_SURFACE_PROV, qod_prov_render_event);
    qod_engine_set_events_hook(d->engine, qod_delivery_kick, d->delivery);
    rc = qod_delivery_start(d->delivery);
    return rc ? rc : qod_engine_start(d->engine);
}

/* The cluster's series for /metrics. */
static void cluster_metrics(void *arg, qod_buf *out)
{
    qod_daemon *d = arg;
    uint64_t relayed = 0, failed = 0;
    qod_forward_stats(d->forward, &relayed, &failed);
    qod_buf_printf(out,
                   "# HELP qod_cluster_shards Shards of sessions this node holds (of %d).\n"
                   "# TYPE qod_cluster_shards gauge\nqod_cluster_shards %d\n"
                   "# HELP qod_cluster_nodes Live nodes seen at the last lease round.\n"
                   "# TYPE qod_cluster_nodes gauge\nqod_cluster_nodes %d\n"
                   "# HELP qod_forwarded_total Requests forwarded to the node that holds their session.\n"
                   "# TYPE qod_forwarded_total counter\nqod_forwarded_total{outcome=\"relayed\"} %llu\n"
                   "qod_forwarded_total{outcome=\"failed\"} %llu\n",
                   QOD_CLUSTER_SHARDS, qod_cluster_held(d->cluster), qod_cluster_nodes(d->cluster),
                   (unsigned long long)relayed, (unsigned long long)failed);
}

static int start_servers(qod_daemon *d, const qod_options *o, char *err, size_t errcap)
{
    qod_api_deps deps = {
        .public_url = d->public_url,
        .token_ttl_s = o->token_ttl,
        .apps = d->apps,
        .key = d->key,
        .tokens = d->tokens,
        .store = d->store,
        .engine = d->engine,
        .profiles = d->profiles,
        .callback_allow = &d->allow,
        .token_rate_client = o->token_rate_client,
        .token_rate_ip = o->token_rate_ip,
        .ciba = d->ciba,
        .registry = d->registry,
        .ciba_auto_approve = o->ciba_auto_approve,
        .cluster = d->cluster,
        .forward = d->forward,
        .node_url = o->cluster_node,
    };
    int rc = qod_api_create(&deps, &d->api);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "cannot create the API: %s", qod_strerror(rc));
        return rc;
    }
    qod_metrics_add_writer(qod_api_metrics(d->api), qod_delivery_metrics, d->delivery);
    qod_metrics_add_writer(qod_api_metrics(d->api), qod_engine_metrics, d->engine);
    qod_metrics_add_writer(qod_api_metrics(d->api), qod_store_metrics, d->store);
    if (d->cluster)
        qod_metrics_add_writer(qod_api_metrics(d->api), cluster_metrics, d);
    char path[4200];
    snprintf(path, sizeof path, "%s/qodd.sock", o->data);
    qod_admin_deps ad = {.apps = d->apps,
                         .tokens = d->tokens,
                         .engine = d->engine,
                         .registry = d->registry,
                         .store = d->store,
                         .delivery = d->delivery,
                         .ciba = d->ciba,
                         .test_hooks = o->test_hooks};
    rc = qod_admin_start(path, &ad, &d->admin);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "cannot open the admin socket %s: %s", path, qod_strerror(rc));
        return rc;
    }
    size_t n;
    if (!o->tls_cert[0] != !o->tls_key[0]) {
        snprintf(err, errcap, "option 'tls-cert': --tls-cert and --tls-key go together");
        return QOD_ERR_INVALID;
    }
    if (o->tls_cert[0] && ((rc = qod_file_read(o->tls_cert, 1 << 20, &d->tls_cert, &n, err, errcap)) != QOD_OK ||
                           (rc = qod_file_read(o->tls_key, 1 << 20, &d->tls_key, &n, err, errcap)) != QOD_OK))
        return rc;
    qod_http_opts ho = {
        .listen = o->listen,
        .threads = (unsigned)o->threads,
        .conn_timeout_s = (unsigned)o->conn_timeout,
        .per_ip_limit = (unsigned)o->max_conns_per_ip,
        .conn_limit = (unsigned)o->max_conns,
        .max_body = (size_t)o->max_body,
        .tls_cert_pem = d->tls_cert,
        .tls_key_pem = d->tls_key,
        .dispatch = qod_api_dispatch,
        .done = qod_api_done,
        .ctx = d->api,
    };
    return qod_http_start(&ho, &d->http, err, errcap);
}

int qod_daemon_start(const qod_options *o, qod_daemon **out, char *err, size_t errcap)
{
    *out = NULL;
    qod_daemon *d = calloc(1, sizeof *d);
    if (!d)
        return QOD_ERR_NOMEM;
    d->lock_fd = -1;
    pthread_mutex_init(&d->resync_mu, NULL);
    pthread_cond_init(&d->resync_cv, NULL);
    if (o->public_url[0])
        snprintf(d->public_url, sizeof d->public_url, "%s", o->public_url);
    else
        snprintf(d->public_url, sizeof d->public_url, "%s://%s", o->tls_cert[0] ? "https" : "http", o->listen);
    size_t ul = strlen(d->public_url);
    while (ul && d->public_url[ul - 1] == '/')
        d->public_url[--ul] = '\0';
    int rc = prepare_data_dir(o->data, &d->lock_fd, err, errcap);
    rc = rc ? rc : open_state(d, o, err, errcap);
    rc = rc ? rc : open_cluster(d, o, err, errcap);
    rc = rc ? rc : open_engine(d, o, err, errcap);
    rc = rc ? rc : open_peers(d, o, err, errcap);
    rc = rc ? rc : open_delivery(d, o, err, errcap);
    rc = rc ? rc : start_servers(d, o, err, errcap);
    if (rc != QOD_OK) {
        qod_daemon_stop(d);
        return rc;
    }
    /* Shards taken between the engine's load and now are adopted here; later ones by on_shards_taken. */
    atomic_store(&d->adopter, d->engine);
    if (d->cluster)
        on_shards_taken(d);
    char where[300];
    store_where(o, where, sizeof where);
    QOD_INFO("qodd", "started", "listen=%s port=%u data=%s store=\"%s\" network=%s issuer=%s sync=%s", o->listen,
             qod_http_port(d->http), o->data, where, o->network, d->public_url, o->sync);
    *out = d;
    return QOD_OK;
}

void qod_daemon_wait(qod_daemon *d)
{
    (void)d;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    int sig = 0;
    /* SIGHUP would kill a daemon by default; configuration is read at start only, so it is noted and ignored. */
    while (sigwait(&set, &sig) != 0 || sig == SIGHUP)
        if (sig == SIGHUP)
            QOD_WARN("qodd", "sighup_ignored", "detail=\"restart qodd to apply new options\"");
    QOD_INFO("qodd", "stopping", "signal=%d", sig);
}

void qod_daemon_stop(qod_daemon *d)
{
    if (!d)
        return;
    /* Order: stop taking requests and drain them, then the admin socket, then state. */
    atomic_store(&d->adopter, NULL);
    qod_http_stop(d->http, DRAIN_MS);
    qod_forward_destroy(d->forward);
    qod_admin_stop(d->admin);
    qod_api_destroy(d->api);
    resync_stop(d);
    /* The engine's loop stops first, then the delivery's (its last outcomes are submitted); the store then
     * drains the batches in flight, whose completions still reach the engine and the delivery; only then are
     * those freed. */
    qod_engine_stop(d->engine);
    qod_delivery_stop(d->delivery);
    /* Leases go only now, when this node no longer acts on its sessions: the others take them at once. */
    qod_cluster_stop(d->cluster);
    qod_store_listen_stop(d->listener);
    qod_store_close(d->store);
    qod_delivery_destroy(d->delivery);
    qod_engine_destroy(d->engine);
    qod_tokcache_destroy(d->tokens);
    qod_ciba_destroy(d->ciba);
    qod_jwt_key_destroy(d->key);
    qod_apps_destroy(d->apps);
    qod_registry_destroy(d->registry);
    qod_profiles_destroy(d->profiles);
    qod_seal_close(d->seal);
    if (d->lock_fd >= 0)
        close(d->lock_fd);
    free(d->tls_cert);
    if (d->tls_key)
        memset(d->tls_key, 0, strlen(d->tls_key));
    free(d->tls_key);
    pthread_cond_destroy(&d->resync_cv);
    pthread_mutex_destroy(&d->resync_mu);
    free(d);
    QOD_INFO("qodd", "stopped", "%s", "");
}
