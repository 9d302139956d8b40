/* Shards and shard leases of several nodes (core/cluster.c) against a throwaway PostgreSQL 15 server
 * (store/pgfix.h). Each case that needs the server starts from an empty schema; without the server binaries those
 * cases print "SKIP name: reason". The nodes run with 600 ms leases (a round every 200 ms) so that take-overs are
 * quick; waits for callbacks are bounded and end as soon as the callback ran. */
#include "core/cluster.h"
#include "store/pg_lease.h"

#include "qtest.h"
#include "store/pgfix.h"
#include "util/err.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/stopper.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define LEASE_MS 600
#define NODE_A "http://127.0.0.1:18001"
#define NODE_B "http://127.0.0.1:18002"

/* ---- helpers ---- */

/* One id in each shard, for checking who owns which shard through the public calls. */
static char shard_ids[QOD_CLUSTER_SHARDS][37];

static int fill_shard_ids(void)
{
    int missing = QOD_CLUSTER_SHARDS;
    memset(shard_ids, 0, sizeof shard_ids);
    for (int i = 0; i < 100000 && missing > 0; i++) {
        char id[37];
        qod_uuid_v4(id);
        int s = qod_cluster_shard_of(id);
        if (!shard_ids[s][0]) {
            memcpy(shard_ids[s], id, sizeof id);
            missing--;
        }
    }
    return missing;
}

/* What the callbacks of one node reported. */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int acquired, lost;
} reports;

static void reports_init(reports *r)
{
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
}

static void reports_dispose(reports *r)
{
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
}

static void count_report(reports *r, int *field)
{
    pthread_mutex_lock(&r->mu);
    (*field)++;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void on_acquired(void *ctx)
{
    reports *r = ctx;
    count_report(r, &r->acquired);
}

static void on_lost(void *ctx)
{
    reports *r = ctx;
    count_report(r, &r->lost);
}

/* Waits until *field (acquired or lost of r) is non-zero or ms passed; returns its value. */
static int reports_wait(reports *r, const int *field, int ms)
{
    struct timespec deadline = pgfix_deadline(ms);
    pthread_mutex_lock(&r->mu);
    while (*field == 0 && pthread_cond_timedwait(&r->cv, &r->mu, &deadline) == 0)
        ;
    int v = *field;
    pthread_mutex_unlock(&r->mu);
    return v;
}

static qod_cluster_opts node_opts(const char *url, reports *r)
{
    return (qod_cluster_opts){
        .uri = pgfix.uri, .node = url, .lease_ms = LEASE_MS, .acquired = on_acquired, .lost = on_lost, .ctx = r};
}

/* An empty database with no leases, and quiet logs. */
static int fresh_database(void)
{
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    return pgfix_drop_schema();
}

typedef struct {
    pthread_barrier_t *go;
    qod_cluster_opts o;
    qod_cluster *c;
    int rc;
    char err[256];
} starter;

static void *start_at_once(void *arg)
{
    starter *s = arg;
    pthread_barrier_wait(s->go);
    s->rc = qod_cluster_start(&s->o, &s->c, s->err, sizeof s->err);
    return NULL;
}

/* Starts nodes A and B at the same time on a fresh database; 0 when both started. */
static int start_two(reports *ra, reports *rb, qod_cluster **a, qod_cluster **b)
{
    *a = *b = NULL;
    if (fresh_database() != 0 || fill_shard_ids() != 0)
        return -1;
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, 2);
    starter s[2] = {{.go = &go, .o = node_opts(NODE_A, ra), .rc = 1}, {.go = &go, .o = node_opts(NODE_B, rb), .rc = 1}};
    pthread_t th[2];
    int created = 0;
    for (int i = 0; i < 2; i++)
        created += pthread_create(&th[i], NULL, start_at_once, &s[i]) == 0;
    for (int i = 0; i < created; i++)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&go);
    *a = s[0].c;
    *b = s[1].c;
    if (s[0].rc != QOD_OK || s[1].rc != QOD_OK)
        printf("  start: %s / %s\n", s[0].err, s[1].err);
    return created == 2 && s[0].rc == QOD_OK && s[1].rc == QOD_OK ? 0 : -1;
}

/* Starts node A alone on a fresh database with the given lease; its callbacks report to r (initialised here). */
static int start_one(reports *r, int64_t lease_ms, qod_cluster **c)
{
    reports_init(r);
    *c = NULL;
    if (fresh_database() != 0)
        return -1;
    qod_cluster_opts o = node_opts(NODE_A, r);
    o.lease_ms = lease_ms;
    char err[256] = "";
    int rc = qod_cluster_start(&o, c, err, sizeof err);
    if (rc != QOD_OK)
        printf("  start: %s\n", err);
    return rc;
}

/* The number of shards whose running lease holder is node. */
static int leases_held(const char *node)
{
    char q[256];
    snprintf(q, sizeof q,
             "SELECT count(*) FROM leases WHERE name LIKE 'shard:%%' AND holder = '%s' AND expires_at > now()", node);
    return pgfix_sql_int(q);
}

/* leases_held(node) once it equals want, or its last value after about 5 s. A lease the node holds can show as run
 * out for a moment when a loaded machine delays its renewal round (the lease is 600 ms here); the node renews it
 * at the next round, as nobody else took it. */
static int leases_held_settled(const char *node, int want)
{
    int n = leases_held(node);
    for (int i = 0; i < 100 && n != want; i++) {
        nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL);
        n = leases_held(node);
    }
    return n;
}

/* ==== shard_of: no server needed ==== */

QTEST(shard_of_is_stable_in_range_and_ignores_case)
{
    /* Pinned: nodes of different versions must put an id in the same shard. */
    QT_EQ_INT(qod_cluster_shard_of("0190a5d3-7c1e-7abc-8def-0123456789ab"), 2);
    QT_EQ_INT(qod_cluster_shard_of("0190A5D3-7C1E-7ABC-8DEF-0123456789AB"), 2);
    int bad = 0, differs = 0;
    for (int i = 0; i < 1000; i++) {
        char id[37], upper[37];
        qod_uuid_v7(id);
        for (int j = 0; j < 37; j++)
            upper[j] = id[j] >= 'a' && id[j] <= 'f' ? (char)(id[j] - 'a' + 'A') : id[j];
        int s = qod_cluster_shard_of(id);
        bad += s < 0 || s >= QOD_CLUSTER_SHARDS || qod_cluster_shard_of(id) != s;
        differs += strcmp(id, upper) != 0 && qod_cluster_shard_of(upper) != s;
    }
    QT_EQ_INT(bad, 0);
    QT_EQ_INT(differs, 0);
}

QTEST(shard_of_spreads_random_ids_over_every_shard)
{
    enum { N = 10000 };
    int count[QOD_CLUSTER_SHARDS] = {0};
    for (int i = 0; i < N; i++) {
        char id[37];
        qod_uuid_v4(id);
        count[qod_cluster_shard_of(id)]++;
    }
    int least = N, most = 0;
    for (int s = 0; s < QOD_CLUSTER_SHARDS; s++) {
        least = count[s] < least ? count[s] : least;
        most = count[s] > most ? count[s] : most;
    }
    /* About 156 each; half or twice that is more than six standard deviations away. */
    QT_TRUE(least >= N / QOD_CLUSTER_SHARDS / 2);
    QT_TRUE(most <= 2 * N / QOD_CLUSTER_SHARDS);
}

/* ==== nodes on the server ==== */

QTEST(a_node_alone_holds_every_shard)
{
    reports r;
    qod_cluster *c;
    int rc = start_one(&r, LEASE_MS, &c);
    if (rc != QOD_OK)
        reports_dispose(&r);
    QT_EQ_INT(rc, QOD_OK);
    int held = qod_cluster_held(c), nodes = qod_cluster_nodes(c), in_db = leases_held_settled(NODE_A, held);
    int not_owned = 0, not_state = 0;
    for (int i = 0; i < 200; i++) {
        char id[37], url[QOD_CLUSTER_URL_MAX];
        qod_cluster_new_id(c, id);
        not_owned += !qod_cluster_owns(c, id);
        not_state += qod_cluster_owner(c, id, url, sizeof url) != QOD_ERR_STATE;
    }
    char url[QOD_CLUSTER_URL_MAX] = "";
    int any = qod_cluster_any_owner(c, url, sizeof url);
    qod_cluster_stop(c);
    int after_stop = leases_held(NODE_A);
    reports_dispose(&r);
    QT_EQ_INT(held, QOD_CLUSTER_SHARDS);
    QT_EQ_INT(nodes, 1);
    QT_EQ_INT(in_db, QOD_CLUSTER_SHARDS);
    QT_EQ_INT(not_owned, 0);
    QT_EQ_INT(not_state, 0);
    QT_EQ_INT(any, QOD_ERR_NOTFOUND);
    QT_EQ_INT(after_stop, 0);
    QT_EQ_INT(r.acquired, 0);
    QT_EQ_INT(r.lost, 0);
}

QTEST(two_nodes_started_together_share_the_shards)
{
    reports ra, rb;
    reports_init(&ra);
    reports_init(&rb);
    qod_cluster *a, *b;
    int started = start_two(&ra, &rb, &a, &b);
    int both = 0, neither = 0, wrong_owner = 0;
    char url[QOD_CLUSTER_URL_MAX];
    for (int s = 0; started == 0 && s < QOD_CLUSTER_SHARDS; s++) {
        bool in_a = qod_cluster_owns(a, shard_ids[s]), in_b = qod_cluster_owns(b, shard_ids[s]);
        both += in_a && in_b;
        neither += !in_a && !in_b;
        /* Each node sends the other's sessions to the other. */
        qod_cluster *asker = in_a ? b : a;
        const char *want = in_a ? NODE_A : NODE_B;
        url[0] = '\0';
        wrong_owner += qod_cluster_owner(asker, shard_ids[s], url, sizeof url) != QOD_OK || strcmp(url, want) != 0;
    }
    int not_mine = 0;
    for (int i = 0; started == 0 && i < 200; i++) {
        char id[37];
        qod_cluster_new_id(i % 2 ? a : b, id);
        not_mine += !qod_cluster_owns(i % 2 ? a : b, id) || qod_cluster_owns(i % 2 ? b : a, id);
    }
    int held_a = a ? qod_cluster_held(a) : -1, held_b = b ? qod_cluster_held(b) : -1;
    int nodes_a = a ? qod_cluster_nodes(a) : -1, nodes_b = b ? qod_cluster_nodes(b) : -1;
    int db_a = leases_held_settled(NODE_A, held_a), db_b = leases_held_settled(NODE_B, held_b);
    qod_cluster_stop(a);
    qod_cluster_stop(b);
    reports_dispose(&ra);
    reports_dispose(&rb);
    QT_EQ_INT(started, 0);
    QT_EQ_INT(both, 0);
    QT_EQ_INT(neither, 0);
    QT_EQ_INT(wrong_owner, 0);
    QT_EQ_INT(not_mine, 0);
    QT_EQ_INT(held_a, QOD_CLUSTER_SHARDS / 2);
    QT_EQ_INT(held_b, QOD_CLUSTER_SHARDS / 2);
    QT_EQ_INT(db_a, held_a);
    QT_EQ_INT(db_b, held_b);
    QT_EQ_INT(nodes_a, 2);
    QT_EQ_INT(nodes_b, 2);
}

QTEST(a_stopped_nodes_shards_go_to_the_other)
{
    reports ra, rb;
    reports_init(&ra);
    reports_init(&rb);
    qod_cluster *a, *b;
    int started = start_two(&ra, &rb, &a, &b);
    int held_before = b ? qod_cluster_held(b) : -1, acquired_before = rb.acquired;
    qod_cluster_stop(a);
    int acquired = started == 0 ? reports_wait(&rb, &rb.acquired, 10 * LEASE_MS) : 0;
    /* Shards of a node that left are taken at the next round or the one after. */
    int held = 0;
    for (int i = 0; started == 0 && i < 100 && (held = qod_cluster_held(b)) < QOD_CLUSTER_SHARDS; i++)
        nanosleep(&(struct timespec){.tv_nsec = 20 * 1000 * 1000}, NULL);
    int owned = 0;
    for (int s = 0; started == 0 && s < QOD_CLUSTER_SHARDS; s++)
        owned += qod_cluster_owns(b, shard_ids[s]);
    int nodes = b ? qod_cluster_nodes(b) : -1, db_b = leases_held_settled(NODE_B, held);
    qod_cluster_stop(b);
    reports_dispose(&ra);
    reports_dispose(&rb);
    QT_EQ_INT(started, 0);
    QT_EQ_INT(held_before, QOD_CLUSTER_SHARDS / 2);
    QT_EQ_INT(acquired_before, 0);
    QT_TRUE(acquired >= 1);
    QT_EQ_INT(held, QOD_CLUSTER_SHARDS);
    QT_EQ_INT(owned, QOD_CLUSTER_SHARDS);
    QT_EQ_INT(nodes, 1);
    QT_EQ_INT(db_b, QOD_CLUSTER_SHARDS);
    QT_EQ_INT(rb.lost, 0);
    QT_EQ_INT(ra.lost, 0);
}

/* Someone else takes a shard while the node still holds it: the node can no longer be sure it is alone on the
 * shard's sessions and reports the loss. The node's own lease on it is made to run out first, so that the other
 * holder can take it; the node may renew in between, so this is tried a few times. */
QTEST(a_node_whose_shard_is_taken_reports_lost)
{
    reports r;
    qod_cluster *c;
    int start_rc = start_one(&r, LEASE_MS, &c);
    qod_pg_lease *other = NULL;
    int open_rc = qod_pg_lease_open(pgfix.uri, 0, &other), taken = QOD_ERR_BUSY;
    for (int i = 0; start_rc == QOD_OK && open_rc == QOD_OK && i < 20 && taken == QOD_ERR_BUSY; i++) {
        pgfix_sql("UPDATE leases SET expires_at = now() WHERE name = 'shard:05'", NULL, 0);
        taken = qod_pg_lease_acquire(other, "shard:05", "intruder", 60000, NULL);
    }
    int lost = taken == QOD_OK ? reports_wait(&r, &r.lost, 10 * LEASE_MS) : 0;
    int acquired = r.acquired;
    qod_cluster_stop(c);
    /* Stopping released only the node's own leases. */
    char holder[32] = "";
    int holder_rc = open_rc == QOD_OK ? qod_pg_lease_holder(other, "shard:05", holder, sizeof holder, NULL, NULL) : 0;
    qod_pg_lease_close(other);
    int left = leases_held(NODE_A);
    reports_dispose(&r);
    QT_EQ_INT(start_rc, QOD_OK);
    QT_EQ_INT(open_rc, QOD_OK);
    QT_EQ_INT(taken, QOD_OK);
    QT_EQ_INT(lost, 1);
    QT_EQ_INT(acquired, 0);
    QT_EQ_INT(holder_rc, QOD_OK);
    QT_EQ_STR(holder, "intruder");
    QT_EQ_INT(left, 0);
}

/* Waits until the epoch of the lease that makes c hold id differs from `was` (bounded); returns the last seen. */
static int64_t epoch_change(qod_cluster *c, const char *id, int64_t was, int ms)
{
    char name[32];
    int64_t e = was;
    for (int waited = 0; waited < ms && e == was; waited += 20) {
        if (!qod_cluster_lease_of(c, id, name, sizeof name, &e))
            return -1;
        if (e == was)
            nanosleep(&(struct timespec){.tv_nsec = 20 * 1000000}, NULL);
    }
    return e;
}

QTEST(a_shard_lease_that_lapsed_with_no_other_holder_is_kept_at_the_next_epoch)
{
    reports r;
    qod_cluster *c;
    int fill = fill_shard_ids();
    int start_rc = start_one(&r, LEASE_MS, &c);
    char name[32] = "";
    int64_t e = 0, e2 = 0;
    bool held = start_rc == QOD_OK && fill == 0 && qod_cluster_lease_of(c, shard_ids[5], name, sizeof name, &e);
    if (held) {
        pgfix_sql("UPDATE leases SET expires_at = now() WHERE name = 'shard:05'", NULL, 0);
        e2 = epoch_change(c, shard_ids[5], e, 10 * LEASE_MS);
    }
    int lost = r.lost;
    bool still = held && qod_cluster_owns(c, shard_ids[5]);
    qod_cluster_stop(c);
    reports_dispose(&r);
    QT_EQ_INT(start_rc, QOD_OK);
    QT_TRUE(held);
    QT_EQ_STR(name, "shard:05");
    QT_EQ_INT(e2, e + 1);
    QT_TRUE(still);
    QT_EQ_INT(lost, 0);
}

QTEST(a_shard_lease_another_node_held_meanwhile_reports_lost)
{
    reports r;
    qod_cluster *c;
    int fill = fill_shard_ids();
    int start_rc = start_one(&r, LEASE_MS, &c);
    qod_pg_lease *other = NULL;
    int open_rc = qod_pg_lease_open(pgfix.uri, 0, &other), taken = QOD_ERR_BUSY;
    /* The intruder takes the lapsed lease and gives it back before the node's next round: the node then renews
     * it, two epochs later, and must not trust what it holds. */
    for (int i = 0; fill == 0 && start_rc == QOD_OK && open_rc == QOD_OK && i < 20 && taken == QOD_ERR_BUSY; i++) {
        pgfix_sql("UPDATE leases SET expires_at = now() WHERE name = 'shard:05'", NULL, 0);
        taken = qod_pg_lease_acquire(other, "shard:05", "intruder", 60000, NULL);
    }
    int released = taken == QOD_OK ? qod_pg_lease_release(other, "shard:05", "intruder") : -1;
    int lost = released == QOD_OK ? reports_wait(&r, &r.lost, 10 * LEASE_MS) : 0;
    qod_cluster_stop(c);
    qod_pg_lease_close(other);
    reports_dispose(&r);
    QT_EQ_INT(start_rc, QOD_OK);
    QT_EQ_INT(taken, QOD_OK);
    QT_EQ_INT(released, QOD_OK);
    QT_EQ_INT(lost, 1);
}

/* A transaction left open on a share-locked lease row: a holder frozen between its fence and its COMMIT. The
 * watchdog commits it after ten leases at most (or once asked), so a node that waits for the row cannot hang the
 * test. */
typedef struct {
    PGconn *c;
    qod_stopper done;
    pthread_t thread;
    atomic_bool committed;
} row_holder;

static void *row_holder_main(void *arg)
{
    row_holder *h = arg;
    qod_stopper_wait(&h->done, 10 * LEASE_MS);
    pgfix_unblock(h->c);
    atomic_store(&h->committed, true);
    return NULL;
}

static bool row_holder_start(row_holder *h, const char *lease)
{
    char q[160];
    int rows;
    snprintf(q, sizeof q, "SELECT 1 FROM leases WHERE name = '%s' FOR SHARE", lease);
    h->c = pgfix_block(q, &rows);
    qod_stopper_init(&h->done);
    atomic_init(&h->committed, false);
    pthread_create(&h->thread, NULL, row_holder_main, h);
    return rows == 1;
}

static void row_holder_end(row_holder *h)
{
    qod_stopper_stop(&h->done);
    pthread_join(h->thread, NULL);
    qod_stopper_destroy(&h->done);
}

/* A dead node's shard whose lease ran out while one of its transactions still holds the row: the node taking
 * over does not wait for that row. It takes every other shard at once, and that one when the transaction ends. */
QTEST(a_shard_row_a_dead_holders_transaction_locks_does_not_stall_the_takeover)
{
    reports r;
    qod_cluster *c = NULL;
    int fill = fill_shard_ids();
    qod_pg_lease *dead = NULL;
    reports_init(&r);
    int open_rc = fresh_database() == 0 ? qod_pg_lease_open(pgfix.uri, 0, &dead) : -1;
    int dead_rc = open_rc == QOD_OK ? qod_pg_lease_acquire(dead, "shard:05", "http://dead", LEASE_MS, NULL) : -1;
    row_holder h;
    bool held_open = dead_rc == QOD_OK, locked = held_open && row_holder_start(&h, "shard:05");
    nanosleep(&(struct timespec){.tv_nsec = (LEASE_MS + 100) * 1000000L}, NULL); /* the dead lease runs out */
    qod_cluster_opts o = node_opts(NODE_B, &r);
    char err[256] = "";
    int start_rc = locked ? qod_cluster_start(&o, &c, err, sizeof err) : -1;
    /* Before the row is free again: every other shard is held, that one is not. */
    int held = start_rc == QOD_OK ? leases_held_settled(NODE_B, QOD_CLUSTER_SHARDS - 1) : -1;
    bool owns5 = start_rc == QOD_OK && qod_cluster_owns(c, shard_ids[5]);
    bool still_locked = locked && !atomic_load(&h.committed);
    if (held_open)
        row_holder_end(&h);
    int all = start_rc == QOD_OK ? leases_held_settled(NODE_B, QOD_CLUSTER_SHARDS) : -1;
    int lost = r.lost;
    qod_cluster_stop(c);
    qod_pg_lease_close(dead);
    reports_dispose(&r);
    QT_EQ_INT(fill, 0);
    QT_EQ_INT(dead_rc, QOD_OK);
    QT_TRUE(locked);
    QT_EQ_INT(start_rc, QOD_OK);
    QT_TRUE(still_locked);
    QT_EQ_INT(held, QOD_CLUSTER_SHARDS - 1);
    QT_TRUE(!owns5);
    QT_EQ_INT(all, QOD_CLUSTER_SHARDS);
    QT_EQ_INT(lost, 0);
}

QTEST(a_second_live_process_cannot_take_a_running_nodes_url)
{
    reports r, r2;
    qod_cluster *c, *twin = NULL;
    int rc = start_one(&r, LEASE_MS, &c);
    if (rc != QOD_OK)
        reports_dispose(&r);
    QT_EQ_INT(rc, QOD_OK);
    /* Same URL while the first runs: refused after waiting one lease for a crashed predecessor's to lapse. */
    reports_init(&r2);
    qod_cluster_opts o = node_opts(NODE_A, &r2);
    o.lease_ms = LEASE_MS;
    char err[256] = "";
    int twin_rc = qod_cluster_start(&o, &twin, err, sizeof err);
    bool said = strstr(err, "already uses") != NULL;
    qod_cluster_stop(twin);
    int held = qod_cluster_held(c);
    /* Once the first has left, the URL is free again at once. */
    qod_cluster_stop(c);
    int again_rc = qod_cluster_start(&o, &twin, err, sizeof err);
    int again_held = again_rc == QOD_OK ? qod_cluster_held(twin) : -1;
    qod_cluster_stop(twin);
    reports_dispose(&r);
    reports_dispose(&r2);
    QT_EQ_INT(twin_rc, QOD_ERR_BUSY);
    QT_TRUE(said);
    QT_EQ_INT(held, QOD_CLUSTER_SHARDS);
    QT_EQ_INT(again_rc, QOD_OK);
    QT_EQ_INT(again_held, QOD_CLUSTER_SHARDS);
}

QTEST(start_refuses_bad_options_with_a_message)
{
    static char long_url[QOD_CLUSTER_URL_MAX + 1];
    memset(long_url, 'u', sizeof long_url - 1);
    const char *const nodes[] = {"", NULL, long_url, NODE_A};
    const int64_t leases[] = {LEASE_MS, LEASE_MS, LEASE_MS, 299};
    int bad = 0;
    for (int i = 0; i < 4; i++) {
        qod_cluster_opts o = {.uri = "postgres://qod:qod@127.0.0.1:1/qod", .node = nodes[i], .lease_ms = leases[i]};
        qod_cluster *c = (qod_cluster *)1;
        char err[256] = "";
        int rc = qod_cluster_start(&o, &c, err, sizeof err);
        if (rc != QOD_ERR_INVALID || c != NULL || !strstr(err, "cluster:")) {
            printf("  case %d: rc=%d err=\"%s\"\n", i, rc, err);
            bad++;
        }
    }
    QT_EQ_INT(bad, 0);
}

QTEST(start_fails_on_an_unreachable_database)
{
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    QT_TRUE(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    QT_TRUE(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
    /* Bound but not listening: a connection to it is refused. */
    char uri[128];
    snprintf(uri, sizeof uri, "postgres://qod:qod@127.0.0.1:%d/qod?connect_timeout=2", ntohs(a.sin_port));
    qod_cluster_opts o = {.uri = uri, .node = NODE_A, .lease_ms = LEASE_MS};
    qod_cluster *c = (qod_cluster *)1;
    char err[256] = "";
    int rc = qod_cluster_start(&o, &c, err, sizeof err);
    close(fd);
    QT_EQ_INT(rc, QOD_ERR_STORE);
    QT_TRUE(c == NULL);
    QT_TRUE(strstr(err, "database") != NULL);
}

QTEST(the_shortest_lease_is_accepted)
{
    reports r;
    qod_cluster *c;
    int rc = start_one(&r, 300, &c);
    int held = c ? qod_cluster_held(c) : -1;
    qod_cluster_stop(c);
    qod_cluster_stop(NULL);
    reports_dispose(&r);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(held, QOD_CLUSTER_SHARDS);
    QT_EQ_INT(r.lost, 0);
}

static const qtest_case local[] = {
    QT_CASE(shard_of_is_stable_in_range_and_ignores_case),
    QT_CASE(shard_of_spreads_random_ids_over_every_shard),
    QT_CASE(start_refuses_bad_options_with_a_message),
    QT_CASE(start_fails_on_an_unreachable_database),
};
static const qtest_case on_server[] = {
    QT_CASE(a_node_alone_holds_every_shard),
    QT_CASE(two_nodes_started_together_share_the_shards),
    QT_CASE(a_stopped_nodes_shards_go_to_the_other),
    QT_CASE(a_node_whose_shard_is_taken_reports_lost),
    QT_CASE(a_shard_lease_that_lapsed_with_no_other_holder_is_kept_at_the_next_epoch),
    QT_CASE(a_shard_lease_another_node_held_meanwhile_reports_lost),
    QT_CASE(the_shortest_lease_is_accepted),
    QT_CASE(a_second_live_process_cannot_take_a_running_nodes_url),
    QT_CASE(a_shard_row_a_dead_holders_transaction_locks_does_not_stall_the_takeover),
};

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    qod_log_setup(QOD_LOG_OFF, QOD_LOG_TEXT);
    int fails = 0;
    for (size_t i = 0; i < sizeof local / sizeof local[0]; i++)
        fails += pgfix_run_case(&local[i], "cluster", NULL, only);
    int fatal = 0;
    const char *skip = pgfix_start(&fatal);
    if (skip && fatal) {
        printf("FAIL cluster.pg_start: %s\n", skip);
        fails++;
    }
    for (size_t i = 0; i < sizeof on_server / sizeof on_server[0]; i++)
        fails += pgfix_run_case(&on_server[i], "cluster", skip, only);
    pgfix_stop();
    return fails ? 1 : 0;
}
