/* The store's generic half: batches, the queue and the group-committing writer thread.
 * Everything queued while the previous commit ran goes into the next transaction, so one fsync
 * acknowledges many requests. Each batch runs inside a savepoint, so one failing batch (a conditional
 * insert that lost) does not take the others of its group down. */
#include "store/store.h"

#include "util/err.h"
#include "util/log.h"
#include "util/time.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The most batches one transaction takes. Under a backlog (a mass expiry, a restart's reprovisioning) larger groups
 * spread the commit and its fsync over more batches: 1,024 → 4,096 raised the writer from ~27,000 to ~50,000
 * batches/s in the bench's expiry run. Without a backlog groups are as small as what arrived meanwhile. */
#define STORE_MAX_GROUP 4096
#define STORE_IDLE_MS 2000 /* quiet this long, the writer calls the implementation's idle */

struct qod_store_batch {
    qod_store_op *head, *tail;
    size_t n;
    qod_store_done_fn done;
    void *arg;
    int rc;
    qod_store_batch *next;
};

/* Pings run on a thread of their own, started by the first: a caller waits no longer than its deadline even when
 * the database does not answer at all (its server frozen, or cut off by the network without a reset). */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* monotonic clock */
    uint64_t asked, answered; /* pings asked for, and the last one the thread has answered */
    int rc;                   /* that answer */
    bool started, stop;
    pthread_t thread;
} pinger;

struct qod_store {
    const qod_store_impl *impl;
    void *h;
    pinger ping;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    qod_store_batch *qhead, *qtail;
    bool closing;
    bool started;
    pthread_t thread;
    size_t queued;                 /* batches waiting for the writer (under mu) */
    size_t queued_max;             /* the most there have been at once (under mu) */
    atomic_ullong groups, batches; /* transactions committed (or tried) and the batches in them */
    atomic_ullong group_us;        /* time spent in them, fsync included */
};

qod_store_batch *qod_store_batch_new(void)
{
    return calloc(1, sizeof(qod_store_batch));
}

static void op_free(qod_store_op *op)
{
    free(op->key);
    free(op->owner);
    free(op->idx);
    free(op->doc);
    free(op);
}

void qod_store_batch_free(qod_store_batch *b)
{
    if (!b)
        return;
    for (qod_store_op *op = b->head, *next; op; op = next) {
        next = op->next;
        op_free(op);
    }
    free(b);
}

size_t qod_store_batch_len(const qod_store_batch *b)
{
    return b->n;
}

static char *dup_or_empty(const char *s)
{
    return strdup(s ? s : "");
}

static int push(qod_store_batch *b, qod_store_op *op)
{
    if (!op->key || !op->owner || !op->idx || !op->doc) {
        op_free(op);
        return QOD_ERR_NOMEM;
    }
    if (op->kind == QOD_OP_FENCE && b->head) {
        op->next = b->head; /* fences go first */
        b->head = op;
    } else {
        if (b->tail)
            b->tail->next = op;
        else
            b->head = op;
        b->tail = op;
    }
    b->n++;
    return QOD_OK;
}

static int add_row_op(qod_store_batch *b, qod_store_op_kind kind, qod_store_table t, const char *key, const char *owner,
                      const char *idx, int64_t state, int64_t num, const char *doc)
{
    qod_store_op *op = calloc(1, sizeof *op);
    if (!op)
        return QOD_ERR_NOMEM;
    op->kind = kind;
    op->table = t;
    op->key = dup_or_empty(key);
    op->owner = dup_or_empty(owner);
    op->idx = dup_or_empty(idx);
    op->doc = dup_or_empty(doc);
    op->state = state;
    op->num = num;
    return push(b, op);
}

int qod_store_batch_put(qod_store_batch *b, qod_store_table t, const char *key, const char *owner, const char *idx,
                        int64_t state, int64_t num, const char *doc)
{
    return add_row_op(b, QOD_OP_PUT, t, key, owner, idx, state, num, doc);
}

int qod_store_batch_insert(qod_store_batch *b, qod_store_table t, const char *key, const char *owner, const char *idx,
                           int64_t state, int64_t num, const char *doc)
{
    return add_row_op(b, QOD_OP_INSERT, t, key, owner, idx, state, num, doc);
}

int qod_store_batch_update(qod_store_batch *b, qod_store_table t, const char *key, int64_t state, int64_t num,
                           const char *doc)
{
    return add_row_op(b, QOD_OP_UPDATE, t, key, NULL, NULL, state, num, doc);
}

int qod_store_batch_cap(qod_store_batch *b, qod_store_table t, const char *owner, int64_t state_below, int64_t max)
{
    return add_row_op(b, QOD_OP_CAP, t, NULL, owner, NULL, state_below, max, NULL);
}

int qod_store_batch_notify(qod_store_batch *b, const char *channel, const char *payload)
{
    return add_row_op(b, QOD_OP_NOTIFY, QOD_TBL_COUNT, channel, NULL, NULL, 0, 0, payload);
}

int qod_store_batch_del(qod_store_batch *b, qod_store_table t, const char *key)
{
    return add_row_op(b, QOD_OP_DEL, t, key, NULL, NULL, 0, 0, NULL);
}

int qod_store_batch_event(qod_store_batch *b, const char *id, const char *session, const char *owner,
                          int64_t created_ms, const char *doc)
{
    /* For events: key = webhook-id, idx = session, num = created time. */
    return add_row_op(b, QOD_OP_EVENT, QOD_TBL_COUNT, id, owner, session, 0, created_ms, doc);
}

bool qod_store_op_is_fence(const qod_store_op *op, const char *name, const char *holder, int64_t epoch)
{
    return op->kind == QOD_OP_FENCE && op->num == epoch && strcmp(op->key, name) == 0 && strcmp(op->owner, holder) == 0;
}

int qod_store_batch_fence(qod_store_batch *b, const char *name, const char *holder, int64_t epoch)
{
    /* Fences go first, once each: a batch of many sessions' writes (callback outcomes) shares its shards' fences. */
    for (qod_store_op *op = b->head; op && op->kind == QOD_OP_FENCE; op = op->next)
        if (qod_store_op_is_fence(op, name, holder, epoch))
            return QOD_OK;
    return add_row_op(b, QOD_OP_FENCE, QOD_TBL_COUNT, name, holder, NULL, 0, epoch, NULL);
}

int qod_store_batch_event_unsent(qod_store_batch *b, const char *id, const char *session, const char *owner,
                                 int64_t created_ms, const char *doc)
{
    return add_row_op(b, QOD_OP_EVENT, QOD_TBL_COUNT, id, owner, session, 1, created_ms, doc);
}

int qod_store_batch_event_state(qod_store_batch *b, int64_t seq, int64_t state, int64_t attempts, int64_t next_ms)
{
    int rc = add_row_op(b, QOD_OP_EVENT_STATE, QOD_TBL_COUNT, NULL, NULL, NULL, state, 0, NULL);
    if (rc == QOD_OK) {
        b->tail->seq = seq;
        b->tail->attempts = attempts;
        b->tail->next_ms = next_ms;
    }
    return rc;
}

int qod_store_batch_event_del_session(qod_store_batch *b, const char *session)
{
    return add_row_op(b, QOD_OP_EVENT_DEL_SESSION, QOD_TBL_COUNT, NULL, NULL, session, 0, 0, NULL);
}

int qod_store_batch_event_requeue(qod_store_batch *b, const char *session, int64_t from_seq, int64_t next_ms)
{
    int rc = add_row_op(b, QOD_OP_EVENT_REQUEUE, QOD_TBL_COUNT, NULL, NULL, session, 0, 0, NULL);
    if (rc == QOD_OK) {
        b->tail->seq = from_seq;
        b->tail->next_ms = next_ms;
    }
    return rc;
}

/* Applies one batch inside a savepoint; returns its rc. */
static int apply_batch(qod_store *st, qod_store_batch *b)
{
    int rc = st->impl->savepoint(st->h, 0);
    for (qod_store_op *op = b->head; rc == QOD_OK && op; op = op->next)
        rc = st->impl->apply(st->h, op);
    if (rc == QOD_OK)
        rc = st->impl->savepoint(st->h, 1);
    else
        st->impl->savepoint(st->h, -1);
    return rc;
}

static void finish_group(qod_store *st, qod_store_batch *group, int rc, bool any_ok);

/* Applies every op of the group in one go (no savepoints); the first failure stops it and is returned. */
static int apply_all(qod_store *st, qod_store_batch *group)
{
    size_t n = 0;
    for (qod_store_batch *b = group; b; b = b->next)
        n += b->n;
    const qod_store_op **ops = st->impl->apply_many && n > 1 ? malloc(n * sizeof *ops) : NULL;
    if (ops) {
        size_t i = 0;
        for (qod_store_batch *b = group; b; b = b->next)
            for (qod_store_op *op = b->head; op; op = op->next)
                ops[i++] = op;
        int rc = st->impl->apply_many(st->h, ops, i);
        free(ops);
        return rc;
    }
    int rc = QOD_OK;
    for (qod_store_batch *b = group; b && rc == QOD_OK; b = b->next)
        for (qod_store_op *op = b->head; rc == QOD_OK && op; op = op->next)
            rc = st->impl->apply(st->h, op);
    return rc;
}

static void commit_group(qod_store *st, qod_store_batch *group)
{
    /* Optimistic first: the whole group without savepoints (two round trips fewer per batch on PostgreSQL). A
     * batch that fails is rare (a lost conditional insert, a cap, a full disk): the group is then rolled back
     * and applied again with one savepoint per batch, so that only the failing batches fail. */
    int rc = st->impl->begin(st->h);
    int orc = QOD_OK;
    if (rc == QOD_OK) {
        orc = apply_all(st, group);
        if (orc == QOD_OK || !group->next) {
            /* All applied; or the group is one batch, which fails whole: nothing else to keep. */
            for (qod_store_batch *b = group; b; b = b->next)
                b->rc = orc;
            if (orc != QOD_OK)
                st->impl->rollback(st->h);
            finish_group(st, group, orc == QOD_OK ? QOD_OK : QOD_ERR_STORE, orc == QOD_OK);
            return;
        }
        st->impl->rollback(st->h);
        rc = st->impl->begin(st->h);
    }
    bool any_ok = false;
    for (qod_store_batch *b = group; b; b = b->next) {
        b->rc = rc == QOD_OK ? apply_batch(st, b) : rc;
        any_ok |= b->rc == QOD_OK;
    }
    finish_group(st, group, rc, any_ok);
}

/* Commits (or rolls back) the group's transaction and completes its batches. */
static void finish_group(qod_store *st, qod_store_batch *group, int rc, bool any_ok)
{
    if (rc == QOD_OK) {
        int crc = any_ok ? st->impl->commit(st->h) : QOD_OK;
        if (!any_ok)
            st->impl->rollback(st->h);
        if (crc != QOD_OK) {
            st->impl->rollback(st->h);
            QOD_WARN("store", "commit_failed", "err=\"%s\"", qod_strerror(crc));
            for (qod_store_batch *b = group; b; b = b->next)
                if (b->rc == QOD_OK)
                    b->rc = crc;
        }
    }
    for (qod_store_batch *b = group, *next; b; b = next) {
        next = b->next;
        if (b->done)
            b->done(b->rc, b->arg);
        qod_store_batch_free(b);
    }
}

static void *writer_main(void *arg)
{
    qod_store *st = arg;
    pthread_setname_np(pthread_self(), "qod-store");
    pthread_mutex_lock(&st->mu);
    for (;;) {
        while (!st->qhead && !st->closing) {
            if (!st->impl->idle) {
                pthread_cond_wait(&st->cv, &st->mu);
                continue;
            }
            struct timespec until = qod_time_mono_after(STORE_IDLE_MS);
            if (pthread_cond_timedwait(&st->cv, &st->mu, &until) == ETIMEDOUT && !st->qhead && !st->closing) {
                pthread_mutex_unlock(&st->mu);
                st->impl->idle(st->h);
                pthread_mutex_lock(&st->mu);
            }
        }
        if (!st->qhead && st->closing)
            break;
        qod_store_batch *group = st->qhead, *last = group;
        size_t n = 1;
        for (; n < STORE_MAX_GROUP && last->next; n++)
            last = last->next;
        st->qhead = last->next;
        if (!st->qhead)
            st->qtail = NULL;
        last->next = NULL;
        st->queued -= n;
        pthread_mutex_unlock(&st->mu);
        int64_t t0 = qod_time_mono_ns();
        commit_group(st, group);
        atomic_fetch_add(&st->group_us, (unsigned long long)((qod_time_mono_ns() - t0) / 1000));
        atomic_fetch_add(&st->groups, 1);
        atomic_fetch_add(&st->batches, n);
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

int qod_store_open(const qod_store_opts *opts, qod_store **out)
{
    *out = NULL;
    qod_store *st = calloc(1, sizeof *st);
    if (!st)
        return QOD_ERR_NOMEM;
    bool pg = strncmp(opts->uri, "postgres://", 11) == 0 || strncmp(opts->uri, "postgresql://", 13) == 0;
    st->impl = pg ? &qod_store_postgres : &qod_store_sqlite;
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t wa;
    pthread_condattr_init(&wa);
    pthread_condattr_setclock(&wa, CLOCK_MONOTONIC); /* the writer's idle wait */
    pthread_cond_init(&st->cv, &wa);
    pthread_condattr_destroy(&wa);
    pthread_mutex_init(&st->ping.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->ping.cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = st->impl->open(opts, &st->h);
    if (rc == QOD_OK) {
        rc = pthread_create(&st->thread, NULL, writer_main, st) == 0 ? QOD_OK : QOD_ERR_NOMEM;
        st->started = rc == QOD_OK;
    }
    if (rc != QOD_OK) {
        qod_store_close(st);
        return rc;
    }
    *out = st;
    return QOD_OK;
}

void qod_store_close(qod_store *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    st->closing = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (st->started)
        pthread_join(st->thread, NULL);
    pthread_mutex_lock(&st->ping.mu);
    st->ping.stop = true;
    pthread_cond_broadcast(&st->ping.cv);
    bool pinging = st->ping.started;
    pthread_mutex_unlock(&st->ping.mu);
    if (pinging)
        pthread_join(st->ping.thread, NULL); /* after its ping: it uses the connection closed below */
    if (st->h)
        st->impl->close(st->h);
    pthread_mutex_destroy(&st->ping.mu);
    pthread_cond_destroy(&st->ping.cv);
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    free(st);
}

int qod_store_submit(qod_store *st, qod_store_batch *b, qod_store_done_fn done, void *arg)
{
    b->done = done;
    b->arg = arg;
    b->next = NULL;
    pthread_mutex_lock(&st->mu);
    bool closing = st->closing;
    if (!closing) {
        if (st->qtail)
            st->qtail->next = b;
        else
            st->qhead = b;
        st->qtail = b;
        if (++st->queued > st->queued_max)
            st->queued_max = st->queued;
        pthread_cond_signal(&st->cv);
    }
    pthread_mutex_unlock(&st->mu);
    if (closing) {
        qod_store_batch_free(b);
        return QOD_ERR_CLOSED;
    }
    return QOD_OK;
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
} waiter;

static void wake(int rc, void *arg)
{
    waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int qod_store_commit(qod_store *st, qod_store_batch *b)
{
    waiter w = {.done = false, .rc = QOD_OK};
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = qod_store_submit(st, b, wake, &w);
    if (rc == QOD_OK) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.rc;
    }
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    return rc;
}

static void *pinger_main(void *arg)
{
    qod_store *st = arg;
    pinger *p = &st->ping;
    pthread_setname_np(pthread_self(), "qod-store-ping");
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->stop && p->answered == p->asked)
            pthread_cond_wait(&p->cv, &p->mu);
        if (p->stop)
            break;
        uint64_t target = p->asked;
        pthread_mutex_unlock(&p->mu);
        int rc = st->impl->schema_version(st->h) > 0 ? QOD_OK : QOD_ERR_STORE;
        pthread_mutex_lock(&p->mu);
        p->answered = target;
        p->rc = rc;
        pthread_cond_broadcast(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int qod_store_ping(qod_store *st, int64_t wait_ms)
{
    pinger *p = &st->ping;
    struct timespec until = qod_time_mono_after(wait_ms);
    pthread_mutex_lock(&p->mu);
    if (!p->started && !p->stop)
        p->started = pthread_create(&p->thread, NULL, pinger_main, st) == 0;
    /* Answered only by a ping begun after this call: one still running began before and may be stuck. */
    uint64_t mine = ++p->asked;
    pthread_cond_broadcast(&p->cv);
    int rc = p->started ? QOD_OK : QOD_ERR_NOMEM;
    while (rc == QOD_OK && p->answered < mine)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &until) == ETIMEDOUT)
            rc = QOD_ERR_BUSY;
    if (rc == QOD_OK)
        rc = p->rc;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

int qod_store_schema_version(qod_store *st)
{
    return st->impl->schema_version(st->h);
}

int qod_store_get(qod_store *st, qod_store_table t, const char *key, void (*fn)(void *arg, const qod_store_row *r),
                  void *arg)
{
    return st->impl->get(st->h, t, key, fn, arg);
}

int qod_store_scan(qod_store *st, qod_store_table t, const char *owner, int (*fn)(void *arg, const qod_store_row *r),
                   void *arg)
{
    return st->impl->scan(st->h, t, owner, fn, arg);
}

int qod_store_scan_idx(qod_store *st, qod_store_table t, const char *idx, int (*fn)(void *arg, const qod_store_row *r),
                       void *arg)
{
    return st->impl->scan_idx(st->h, t, idx, fn, arg);
}

int qod_store_scan_events(qod_store *st, int64_t state, int64_t after_seq, size_t limit,
                          int (*fn)(void *arg, const qod_store_event *e), void *arg)
{
    return st->impl->scan_events(st->h, state, after_seq, limit, fn, arg);
}

size_t qod_store_queued(qod_store *st, uint64_t *done)
{
    pthread_mutex_lock(&st->mu);
    size_t queued = st->queued;
    pthread_mutex_unlock(&st->mu);
    if (done)
        *done = atomic_load(&st->batches);
    return queued;
}

void qod_store_metrics(void *arg, qod_buf *out)
{
    qod_store *st = arg;
    pthread_mutex_lock(&st->mu);
    size_t queued = st->queued, queued_max = st->queued_max;
    pthread_mutex_unlock(&st->mu);
    qod_buf_printf(out,
                   "# HELP qod_store_commits_total Group commits (transactions) of the store's writer.\n"
                   "# TYPE qod_store_commits_total counter\nqod_store_commits_total %llu\n"
                   "# HELP qod_store_batches_total Batches written by those commits (several per group).\n"
                   "# TYPE qod_store_batches_total counter\nqod_store_batches_total %llu\n"
                   "# HELP qod_store_commit_seconds_total Time the writer spent in group commits, sync included.\n"
                   "# TYPE qod_store_commit_seconds_total counter\nqod_store_commit_seconds_total %.6f\n"
                   "# HELP qod_store_queue Batches waiting for the writer.\n"
                   "# TYPE qod_store_queue gauge\nqod_store_queue %zu\n"
                   "# HELP qod_store_queue_max The most batches that have waited for the writer at once.\n"
                   "# TYPE qod_store_queue_max gauge\nqod_store_queue_max %zu\n",
                   (unsigned long long)atomic_load(&st->groups), (unsigned long long)atomic_load(&st->batches),
                   (double)atomic_load(&st->group_us) / 1e6, queued, queued_max);
}
