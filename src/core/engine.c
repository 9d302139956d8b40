#include "core/engine.h"

#include "core/timers.h"
#include "util/err.h"
#include "util/hmap.h"
#include "util/json.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/time.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IDEM_TTL_MS (24LL * 3600 * 1000)
#define SLOT_LIFE 0 /* expiry, then retention purge */
#define SLOT_NET 1  /* a pending network report */

enum { TK_EXPIRE = 1, TK_PURGE, TK_NET_AVAILABLE, TK_NET_REFUSED, TK_NET_TERMINATED };

typedef struct {
    qod_session s; /* first: a sess* is a qod_session* */
    qod_timer timers[2];
    bool pending; /* created in memory, not yet committed */
    uint32_t nevents;
    uint32_t unsaved; /* status changes whose commit failed and waits in the retry list */
} sess;

/* A status change that could not be committed (disk full, store down): kept in memory, in order, and retried
 * until it is durable, so no callback is ever lost. */
typedef struct unsaved {
    char session[37];
    char owner[33];
    char event_id[QOD_UUID_LEN + 1];
    int64_t created_ms;
    char *event_doc;
    bool unsent; /* the session has no callback URL: stored delivered */
    struct unsaved *next;
} unsaved;

typedef struct {
    char app_id[33];
    int64_t active;
} app_count;

typedef struct idem_rec {
    char *key; /* "app_id:Idempotency-Key" */
    char hash[65];
    char session_id[37];
    unsigned status;
    char *body;
    bool pending;
    int64_t created_ms;
    struct idem_rec *next; /* creation order, for expiry */
} idem_rec;

struct qod_engine {
    qod_engine_opts o;
    pthread_mutex_t mu;
    qod_hmap by_id, by_dev, apps, idem;
    idem_rec *idem_head, *idem_tail;
    qod_timers timers;
    qod_loop *loop;
    qod_loop *stopped_loop; /* after qod_engine_stop, until destroy */
    void *be;
    atomic_llong deadline;  /* the loop's current wake-up time (monotonic ms) */
    bool running;           /* the loop thread runs */
    unsaved *uhead, *utail; /* failed status commits, oldest first */
    atomic_ullong notices;  /* network notices (e.g. QoS not guaranteed) */
    bool retry_inflight;
    int64_t retry_at; /* monotonic ms of the next retry */
    uint64_t created, events;
    size_t in_state[3];     /* sessions in by_id by state, kept as they change, so metrics never walk by_id */
    bool store_backlog;     /* the store's queue was at STORE_QUEUE_HIGH when last asked (store_backlogged) */
    uint64_t store_done;    /* the store writer's batch count when last seen moving in that backlog */
    int64_t store_moved_ms; /* monotonic ms when it was, or when the backlog began */
};

/* by_id with its per-state counts (session ids are unique: a put never replaces). Caller holds the lock. */
static int index_add(qod_engine *e, sess *x)
{
    int rc = qod_hmap_put(&e->by_id, x->s.id, x);
    if (rc == QOD_OK)
        e->in_state[x->s.st.state]++;
    return rc;
}

static void index_del(qod_engine *e, sess *x)
{
    if (qod_hmap_del(&e->by_id, x->s.id))
        e->in_state[x->s.st.state]--;
}

const char *qod_net_outcome_name(qod_net_outcome o)
{
    static const char *const names[] = {"available", "refused", "terminated", "released"};
    return (unsigned)o < 4 ? names[o] : "?";
}

/* ---- small helpers ---------------------------------------------------------------------------------------- */

static sess *sess_of_timer(qod_timer *t)
{
    return (sess *)(void *)((char *)(t - t->slot) - offsetof(sess, timers));
}

static void sess_free(sess *x)
{
    if (!x)
        return;
    free(x->s.device_json);
    free(x->s.device_key);
    free(x->s.url);
    free(x->s.token);
    free(x->s.extra);
    free(x);
}

/* Arms a timer and wakes the loop when it is now the earliest. Caller holds the lock. */
static void arm(qod_engine *e, sess *x, int slot, int64_t due, int kind)
{
    if (qod_timers_arm(&e->timers, &x->timers[slot], due, (uint8_t)kind) != QOD_OK) {
        QOD_ERROR("engine", "timer_alloc_failed", "session=%s", x->s.id);
        return;
    }
    /* Before the loop runs (start-up loads a million timers) its first tick sees them all: no wake-ups. */
    if (e->running && due < atomic_load(&e->deadline) && e->loop)
        qod_loop_wake(e->loop);
}

static app_count *count_of(qod_engine *e, const char *app_id, bool create)
{
    app_count *c = qod_hmap_get(&e->apps, app_id);
    if (!c && create && (c = calloc(1, sizeof *c))) {
        snprintf(c->app_id, sizeof c->app_id, "%s", app_id);
        if (qod_hmap_put(&e->apps, c->app_id, c) != QOD_OK) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

/* Parses the stored identifier back into a device for the backend. */
static int net_view(qod_engine *e, sess *x, qod_device *dev, qod_subscriber *sub, qod_net_session *ns)
{
    char err[128];
    cJSON *o = NULL;
    int rc = qod_json_parse_own(x->s.device_json, strlen(x->s.device_json), &o);
    rc = rc ? rc : qod_device_parse(o, dev, err, sizeof err);
    cJSON_Delete(o);
    if (rc != QOD_OK)
        return rc;
    qod_device_kind k = qod_device_choose(dev);
    bool live = !x->s.sandbox && qod_registry_find(e->o.registry, dev, k, sub) == QOD_OK;
    *ns = (qod_net_session){x->s.id, dev, k, x->s.profile, x->s.sandbox, live ? sub : NULL, x->s.extra};
    return QOD_OK;
}

typedef enum { NET_PROVISION, NET_ACTIVATED, NET_RELEASE } net_call;

static void call_backend(qod_engine *e, sess *x, net_call what)
{
    qod_device dev;
    qod_subscriber sub;
    qod_net_session ns;
    if (net_view(e, x, &dev, &sub, &ns) != QOD_OK) {
        QOD_ERROR("engine", "device_unreadable", "session=%s", x->s.id);
        return;
    }
    if (what == NET_PROVISION)
        e->o.backend->provision(e->be, &ns);
    else if (what == NET_ACTIVATED)
        e->o.backend->activated(e->be, &ns);
    else
        e->o.backend->release(e->be, &ns);
}

/* True when the backend releases x asynchronously (it reports QOD_NET_RELEASED when done). */
static bool release_async(qod_engine *e, sess *x)
{
    qod_device dev;
    qod_subscriber sub;
    qod_net_session ns;
    return e->o.backend->release_async && net_view(e, x, &dev, &sub, &ns) == QOD_OK &&
           e->o.backend->release_async(e->be, &ns);
}

/* ---- persistence -------------------------------------------------------------------------------------------- */

/* The store documents are built with appends, not printf: they are written for every change of every session. */
static void put_key(qod_buf *b, const char *key)
{
    qod_buf_puts(b, ",\"");
    qod_buf_puts(b, key);
    qod_buf_puts(b, "\":");
}

static void put_i64(qod_buf *b, const char *key, int64_t v)
{
    put_key(b, key);
    qod_buf_put_i64(b, v);
}

/* A value that is ours and needs no escaping (ids, engine words). */
static void put_word(qod_buf *b, const char *key, const char *v)
{
    put_key(b, key);
    qod_buf_puts(b, "\"");
    qod_buf_puts(b, v);
    qod_buf_puts(b, "\"");
}

static void put_bool(qod_buf *b, const char *key, bool v)
{
    put_key(b, key);
    qod_buf_puts(b, v ? "true" : "false");
}

static void put_json_or_null(qod_buf *b, const char *key, const char *json)
{
    put_key(b, key);
    qod_buf_puts(b, json && *json ? json : "null");
}

static void put_str_or_null(qod_buf *b, const char *key, const char *s)
{
    put_key(b, key);
    if (s)
        qod_buf_json_str(b, s);
    else
        qod_buf_puts(b, "null");
}

/* The callback token, sealed: it is the app's secret toward its own receiver. */
static void put_sealed_or_null(const qod_engine *e, qod_buf *b, const char *key, const char *s)
{
    qod_buf sealed;
    qod_buf_init(&sealed, 0);
    if (s && qod_seal_encrypt(e->o.seal, s, &sealed) == QOD_OK)
        put_str_or_null(b, key, sealed.data);
    else
        put_str_or_null(b, key, NULL);
    qod_buf_dispose(&sealed);
}

static void session_doc(const qod_engine *e, const sess *x, qod_buf *b)
{
    const qod_session *s = &x->s;
    qod_buf_puts(b, "{\"id\":\"");
    qod_buf_puts(b, s->id);
    qod_buf_puts(b, "\"");
    put_word(b, "app", s->app_id);
    put_word(b, "state", qod_session_state_name(s->st.state));
    put_word(b, "reason", qod_end_reason_name(s->st.reason));
    put_i64(b, "surface", (int)s->surface);
    put_bool(b, "sandbox", s->sandbox);
    put_i64(b, "duration", s->duration_s);
    put_i64(b, "created_ms", s->created_ms);
    put_i64(b, "available_ms", s->available_ms);
    put_i64(b, "expires_ms", s->expires_ms);
    put_i64(b, "ended_ms", s->ended_ms);
    put_i64(b, "events", x->nevents);
    put_bool(b, "releasing", s->releasing);
    put_key(b, "profile");
    qod_buf_json_str(b, s->profile->name);
    put_json_or_null(b, "device", s->device_json);
    put_str_or_null(b, "device_key", s->device_key);
    put_str_or_null(b, "url", s->url);
    put_sealed_or_null(e, b, "token", s->token);
    put_json_or_null(b, "extra", s->extra);
    qod_buf_puts(b, "}");
}

/* With several nodes, every write of a session is fenced by the lease of its shard. */
static int add_fence(const qod_engine *e, qod_store_batch *b, const char *session_id)
{
    return e->o.fence ? e->o.fence(e->o.cluster_ctx, b, session_id) : QOD_OK;
}

static int add_session_row(const qod_engine *e, qod_store_batch *b, const sess *x, bool insert)
{
    int rc = add_fence(e, b, x->s.id);
    if (rc != QOD_OK)
        return rc;
    qod_buf doc;
    qod_buf_init(&doc, 0);
    session_doc(e, x, &doc);
    int64_t state = (int64_t)x->s.st.state * 10 + x->s.st.reason;
    rc = insert ? qod_store_batch_insert(b, QOD_TBL_SESSIONS, x->s.id, x->s.app_id, x->s.device_key, state,
                                         x->s.expires_ms, doc.data)
                : qod_store_batch_update(b, QOD_TBL_SESSIONS, x->s.id, state, x->s.expires_ms, doc.data);
    qod_buf_dispose(&doc);
    return rc;
}

/* Appends the event kept in u to b (first try or retry). */
static int add_unsaved_event(qod_store_batch *b, const unsaved *u)
{
    return (u->unsent ? qod_store_batch_event_unsent : qod_store_batch_event)(b, u->event_id, u->session, u->owner,
                                                                              u->created_ms, u->event_doc);
}

/* Appends the outbox event for the session's current status (engine terms; the delivery renders it), and
 * keeps a copy in *u for a retry should the commit fail. */
static int add_event_row(qod_engine *e, qod_store_batch *b, sess *x, unsaved *u)
{
    char id[QOD_UUID_LEN + 1];
    qod_uuid_v7(id);
    int64_t now = qod_time_wall_ms();
    qod_buf doc;
    qod_buf_init(&doc, 0);
    qod_buf_puts(&doc, "{\"session\":\"");
    qod_buf_puts(&doc, x->s.id);
    qod_buf_puts(&doc, "\"");
    put_word(&doc, "app", x->s.app_id);
    put_word(&doc, "state", qod_session_state_name(x->s.st.state));
    put_word(&doc, "reason", qod_end_reason_name(x->s.st.reason));
    put_i64(&doc, "surface", (int)x->s.surface);
    put_i64(&doc, "at_ms", now);
    put_i64(&doc, "seq", ++x->nevents);
    put_i64(&doc, "available_ms", x->s.available_ms);
    put_str_or_null(&doc, "url", x->s.url);
    put_sealed_or_null(e, &doc, "token", x->s.token);
    put_json_or_null(&doc, "extra", x->s.extra);
    qod_buf_puts(&doc, "}");
    /* Without a callback URL there is nothing to deliver: the event is stored delivered, never loaded. */
    u->unsent = !x->s.url || !x->s.url[0];
    snprintf(u->session, sizeof u->session, "%s", x->s.id);
    snprintf(u->owner, sizeof u->owner, "%s", x->s.app_id);
    memcpy(u->event_id, id, sizeof id);
    u->created_ms = now;
    u->event_doc = qod_buf_steal(&doc);
    qod_buf_dispose(&doc);
    e->events++;
    return u->event_doc ? add_unsaved_event(b, u) : QOD_ERR_NOMEM;
}

static void after_change_commit(int rc, void *arg)
{
    qod_engine *e = arg;
    if (rc != QOD_OK)
        QOD_ERROR("engine", "state_commit_failed", "err=\"%s\"", qod_strerror(rc));
    else if (e->o.events_committed)
        e->o.events_committed(e->o.events_ctx);
}

/* Writes the session row and its status event in one batch. Caller holds the lock. */
static void persist_change(qod_engine *e, sess *x, qod_engine_done done, void *arg);

/* ---- state changes ------------------------------------------------------------------------------------------ */

static void on_ended(qod_engine *e, sess *x)
{
    qod_timers_cancel(&e->timers, &x->timers[SLOT_NET]);
    if (qod_hmap_get(&e->by_dev, x->s.device_key) == x)
        qod_hmap_del(&e->by_dev, x->s.device_key);
    app_count *c = count_of(e, x->s.app_id, false);
    if (c && c->active > 0)
        c->active--;
    if (!x->s.releasing)
        call_backend(e, x, NET_RELEASE); /* a revocation asked for it already */
    arm(e, x, SLOT_LIFE, qod_time_mono_ms() + e->o.retention_ms, TK_PURGE);
}

/* Applies ev; returns QOD_OK when the status changed. Caller holds the lock. */
static int change(qod_engine *e, sess *x, qod_session_event ev, const char *why, qod_engine_done done, void *arg)
{
    qod_session_status st = x->s.st;
    int rc = qod_session_apply(&st, ev);
    if (rc != QOD_OK)
        return rc;
    int64_t now = qod_time_wall_ms();
    e->in_state[x->s.st.state]--;
    e->in_state[st.state]++;
    x->s.st = st;
    if (st.state == QOD_SS_AVAILABLE) {
        x->s.available_ms = now;
        if (x->s.surface == QOD_SURFACE_V1) {
            /* CAMARA v1 counts the duration from availability. */
            x->s.expires_ms = now + x->s.duration_s * 1000;
            arm(e, x, SLOT_LIFE, qod_time_mono_ms() + x->s.duration_s * 1000, TK_EXPIRE);
        }
    } else if (st.state == QOD_SS_ENDED) {
        x->s.ended_ms = now;
        on_ended(e, x);
    }
    persist_change(e, x, done, arg);
    if (st.state == QOD_SS_AVAILABLE)
        call_backend(e, x, NET_ACTIVATED);
    QOD_INFO("engine", "session_changed", "session=%s app=%s state=%s reason=%s why=\"%s\"", x->s.id, x->s.app_id,
             qod_session_state_name(st.state), qod_end_reason_name(st.reason), why ? why : "");
    return QOD_OK;
}

typedef struct {
    qod_engine *e;
    qod_engine_done done;
    void *arg;
    unsaved *u;
} change_ctx;

/* Appends a failed change to the retry list. Caller holds the lock. */
static void keep_unsaved(qod_engine *e, unsaved *u)
{
    sess *x = qod_hmap_get(&e->by_id, u->session);
    if (x)
        x->unsaved++;
    u->next = NULL;
    if (e->utail)
        e->utail->next = u;
    else
        e->uhead = u;
    e->utail = u;
    if (!e->retry_at)
        e->retry_at = qod_time_mono_ms() + 1000;
}

static void change_committed(int rc, void *arg)
{
    change_ctx *c = arg;
    after_change_commit(rc, c->e);
    if (rc != QOD_OK) {
        pthread_mutex_lock(&c->e->mu);
        keep_unsaved(c->e, c->u);
        pthread_mutex_unlock(&c->e->mu);
        c->u = NULL;
    }
    if (c->done)
        c->done(c->arg, rc, c->u ? c->u->session : "", NULL);
    if (c->u)
        free(c->u->event_doc);
    free(c->u);
    free(c);
}

static void persist_change(qod_engine *e, sess *x, qod_engine_done done, void *arg)
{
    qod_store_batch *b = qod_store_batch_new();
    change_ctx *c = calloc(1, sizeof *c);
    unsaved *u = calloc(1, sizeof *u);
    int rc = b && c && u ? add_session_row(e, b, x, false) : QOD_ERR_NOMEM;
    rc = rc ? rc : add_event_row(e, b, x, u);
    if (rc == QOD_OK && x->unsaved) {
        /* An earlier change of this session still waits for the store: stay behind it to keep the order. */
        keep_unsaved(e, u);
        u = NULL;
        rc = QOD_ERR_BUSY;
    } else if (rc == QOD_OK) {
        *c = (change_ctx){e, done, arg, u};
        rc = qod_store_submit(e->o.store, b, change_committed, c);
        b = NULL;
        c = NULL;
        u = NULL;
    }
    if (rc != QOD_OK) {
        QOD_ERROR("engine", "persist_delayed", "session=%s err=\"%s\"", x->s.id, qod_strerror(rc));
        if (done)
            done(arg, rc, x->s.id, NULL);
    }
    qod_store_batch_free(b);
    free(c);
    if (u)
        free(u->event_doc);
    free(u);
}

static void retried(int rc, void *arg)
{
    qod_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    e->retry_inflight = false;
    unsaved *list = e->uhead;
    if (rc == QOD_OK) {
        e->uhead = e->utail = NULL;
        e->retry_at = 0;
    } else {
        e->retry_at = qod_time_mono_ms() + 1000;
        list = NULL;
    }
    for (unsaved *u = list, *next; u; u = next) {
        next = u->next;
        sess *x = qod_hmap_get(&e->by_id, u->session);
        if (x && x->unsaved)
            x->unsaved--;
        free(u->event_doc);
        free(u);
    }
    pthread_mutex_unlock(&e->mu);
    after_change_commit(rc, e);
    if (rc == QOD_OK)
        QOD_INFO("engine", "unsaved_changes_committed", "%s", "");
}

/* Retries the failed changes, all in one batch and in order. Caller holds the lock (engine tick). */
static void retry_unsaved(qod_engine *e, int64_t now)
{
    if (!e->uhead || e->retry_inflight || now < e->retry_at)
        return;
    qod_store_batch *b = qod_store_batch_new();
    int rc = b ? QOD_OK : QOD_ERR_NOMEM;
    for (unsaved *u = e->uhead; rc == QOD_OK && u; u = u->next) {
        sess *x = qod_hmap_get(&e->by_id, u->session);
        if (x)
            rc = add_session_row(e, b, x, false);
        rc = rc ? rc : add_unsaved_event(b, u);
    }
    if (rc == QOD_OK && qod_store_submit(e->o.store, b, retried, e) == QOD_OK) {
        e->retry_inflight = true;
        return;
    }
    if (rc != QOD_OK)
        qod_store_batch_free(b);
    e->retry_at = now + 1000;
}

static void purge(qod_engine *e, sess *x)
{
    qod_timers_cancel(&e->timers, &x->timers[SLOT_LIFE]);
    qod_timers_cancel(&e->timers, &x->timers[SLOT_NET]);
    index_del(e, x);
    qod_store_batch *b = qod_store_batch_new();
    /* Delivered events go with the session; pending and dead ones stay until delivered or replayed. */
    if (b && add_fence(e, b, x->s.id) == QOD_OK && qod_store_batch_del(b, QOD_TBL_SESSIONS, x->s.id) == QOD_OK &&
        qod_store_batch_event_del_session(b, x->s.id) == QOD_OK)
        qod_store_submit(e->o.store, b, after_change_commit, e);
    else
        qod_store_batch_free(b);
    QOD_DEBUG("engine", "session_purged", "session=%s", x->s.id);
    sess_free(x);
}

static void fire(qod_engine *e, qod_timer *t)
{
    sess *x = sess_of_timer(t);
    switch (t->kind) {
    case TK_EXPIRE:
        change(e, x, QOD_EV_EXPIRED, "duration elapsed", NULL, NULL);
        break;
    case TK_PURGE:
        purge(e, x);
        break;
    case TK_NET_AVAILABLE:
        change(e, x, QOD_EV_PROVISIONED, "network granted", NULL, NULL);
        break;
    case TK_NET_REFUSED:
        change(e, x, QOD_EV_REFUSED, "network refused", NULL, NULL);
        break;
    case TK_NET_TERMINATED:
        change(e, x, QOD_EV_TERMINATED, "network terminated", NULL, NULL);
        break;
    default:
        break;
    }
}

/* Whether an idempotency record is past its 24 h (a pending one is kept until its create is decided). */
static bool idem_past(const idem_rec *r, int64_t now_wall)
{
    return !r->pending && now_wall - r->created_ms > IDEM_TTL_MS;
}

static bool idem_expired(const qod_engine *e, int64_t now_wall)
{
    return e->idem_head && idem_past(e->idem_head, now_wall);
}

/* Whether a loop of work under the lock, at its n-th step, has spent its budget (until: monotonic ns, 0: none);
 * the clock is read every 16 steps. */
static bool budget_spent(unsigned n, int64_t until)
{
    return until && n && n % 16 == 0 && qod_time_mono_ns() >= until;
}

/* Drops the idempotency records past their 24 h, oldest first, until the monotonic ns `until` (0: all). */
static void prune_idem(qod_engine *e, int64_t now_wall, int64_t until)
{
    for (unsigned n = 1; idem_expired(e, now_wall); n++) {
        if (budget_spent(n, until))
            break;
        idem_rec *r = e->idem_head;
        e->idem_head = r->next;
        if (!e->idem_head)
            e->idem_tail = NULL;
        qod_hmap_del(&e->idem, r->key);
        qod_store_batch *b = qod_store_batch_new();
        if (b && qod_store_batch_del(b, QOD_TBL_IDEMPOTENCY, r->key) == QOD_OK)
            qod_store_submit(e->o.store, b, NULL, NULL);
        else
            qod_store_batch_free(b);
        free(r->key);
        free(r->body);
        free(r);
    }
}

/* The lock time a loop tick may take for due timers and idempotency records. A mass expiry ends thousands of
 * sessions at one instant, several microseconds each, all under the engine lock: in one go they would stall every
 * API request for tens of milliseconds. In slices, requests get the lock between them, and the loop comes back at
 * once for the rest. */
#define TICK_BUDGET_NS 1000000
/* Batches the store may hold queued before due timers wait for its writer (a session's end is about 2.5 KiB of
 * batch): a million sessions ending at once must not queue gigabytes. Requests are never held back, and neither
 * are timers once the writer has got through nothing for STORE_STALL_MS: sessions then end on time in memory and
 * their writes queue, as they would without this. */
#define STORE_QUEUE_HIGH 65536
#define STORE_WAIT_MS 1
#define STORE_STALL_MS 2000

/* Whether due timers wait for the store's writer: its queue is long and it is getting through it. Caller holds
 * the lock. */
static bool store_backlogged(qod_engine *e, int64_t now)
{
    uint64_t done = 0;
    if (qod_store_queued(e->o.store, &done) < STORE_QUEUE_HIGH)
        return e->store_backlog = false;
    /* A stall is timed from the backlog's start at the earliest, never from the last progress of an earlier one. */
    if (!e->store_backlog || done != e->store_done) {
        e->store_backlog = true;
        e->store_done = done;
        e->store_moved_ms = now;
    }
    return now - e->store_moved_ms < STORE_STALL_MS;
}

/* Fires timers due by now and drops expired idempotency records, for at most budget_ns of lock time (0: no
 * limit), while the store's queue is below STORE_QUEUE_HIGH; returns the next deadline, and in *held whether due
 * timers wait for the store. */
static int64_t run_due(qod_engine *e, int64_t now, int64_t budget_ns, bool *held)
{
    pthread_mutex_lock(&e->mu);
    int64_t until = budget_ns ? qod_time_mono_ns() + budget_ns : 0;
    *held = false;
    for (unsigned n = 0;; n++) {
        if (budget_spent(n, until))
            break;
        qod_timer *t = qod_timers_peek(&e->timers);
        if (!t || t->due > now)
            break;
        /* The store is asked only when a timer is due: a tick with nothing to fire takes no store lock. */
        if (n % 256 == 0 && (*held = store_backlogged(e, qod_time_mono_ms())))
            break;
        qod_timers_cancel(&e->timers, t);
        fire(e, t);
    }
    int64_t wall = qod_time_wall_ms();
    if (!*held)
        prune_idem(e, wall, until); /* its deletions are store batches too */
    retry_unsaved(e, now);
    qod_timer *next = qod_timers_peek(&e->timers);
    int64_t due = *held ? now + STORE_WAIT_MS : idem_expired(e, wall) ? now : next ? next->due : now + 60000;
    if (e->uhead && !e->retry_inflight && e->retry_at < due)
        due = e->retry_at;
    if (e->idem_head && due > now + 60000)
        due = now + 60000;
    atomic_store(&e->deadline, due);
    pthread_mutex_unlock(&e->mu);
    return due;
}

/* Lets go of the lock held by a long walk, for a moment. */
static void let_waiters_in(qod_engine *e)
{
    pthread_mutex_unlock(&e->mu);
    qod_time_lock_pause();
    pthread_mutex_lock(&e->mu);
}

static int64_t tick(void *arg, int64_t now)
{
    bool held;
    int64_t due = run_due(arg, now, TICK_BUDGET_NS, &held);
    if (due <= now)
        qod_time_lock_pause(); /* the budget ran out with timers still due */
    return due;
}

/* ---- the backend's sink ------------------------------------------------------------------------------------ */

static int outcome_kind(qod_net_outcome o)
{
    return o == QOD_NET_AVAILABLE ? TK_NET_AVAILABLE : o == QOD_NET_REFUSED ? TK_NET_REFUSED : TK_NET_TERMINATED;
}

/* Called by backends with the engine lock held. */
static void sink_report(void *ctx, const char *id, qod_net_outcome o, const char *why)
{
    qod_engine *e = ctx;
    sess *x = qod_hmap_get(&e->by_id, id);
    if (!x || x->pending)
        return;
    if (x->s.releasing) {
        /* Revoked: the release (or the network ending it first) ends it as the app asked; nothing else does. */
        if (o == QOD_NET_RELEASED || o == QOD_NET_TERMINATED)
            change(e, x, QOD_EV_DELETED, why, NULL, NULL);
        return;
    }
    if (o == QOD_NET_RELEASED)
        return; /* the end of an ordinary release: the session ended already */
    static const qod_session_event evs[] = {QOD_EV_PROVISIONED, QOD_EV_REFUSED, QOD_EV_TERMINATED};
    change(e, x, evs[o], why, NULL, NULL);
}

static void sink_report_unlocked(void *ctx, const char *id, qod_net_outcome o, const char *why)
{
    qod_engine *e = ctx;
    pthread_mutex_lock(&e->mu);
    sink_report(ctx, id, o, why);
    pthread_mutex_unlock(&e->mu);
}

static void sink_notice(void *ctx, const char *id, const char *what)
{
    qod_engine *e = ctx;
    atomic_fetch_add(&e->notices, 1);
    QOD_WARN("engine", "network_notice", "session=%s what=\"%s\"", id, what);
}

static void sink_report_after(void *ctx, const char *id, int64_t delay_ms, qod_net_outcome o, const char *why)
{
    (void)why;
    qod_engine *e = ctx;
    sess *x = qod_hmap_get(&e->by_id, id);
    if (!x || x->s.st.state == QOD_SS_ENDED)
        return;
    arm(e, x, SLOT_NET, qod_time_mono_ms() + (delay_ms > 0 ? delay_ms : 0), outcome_kind(o));
}

/* ---- create --------------------------------------------------------------------------------------------------- */

typedef struct {
    qod_engine *e;
    qod_engine_done done;
    void *arg;
    sess *x;
    idem_rec *idem;
    char *body;
} create_ctx;

static void idem_unlink(qod_engine *e, idem_rec *r)
{
    qod_hmap_del(&e->idem, r->key);
    idem_rec **p = &e->idem_head, *prev = NULL;
    while (*p && *p != r) {
        prev = *p;
        p = &(*p)->next;
    }
    if (*p)
        *p = r->next;
    if (e->idem_tail == r)
        e->idem_tail = prev;
    free(r->key);
    free(r->body);
    free(r);
}

static void create_committed(int rc, void *arg)
{
    create_ctx *c = arg;
    qod_engine *e = c->e;
    if (rc == QOD_ERR_BUSY)
        rc = QOD_ERR_STORE; /* a transient store refusal (a lost fence, a PostgreSQL serialization failure): 503 */
    char id[37];
    snprintf(id, sizeof id, "%s", c->x->s.id);
    pthread_mutex_lock(&e->mu);
    if (rc == QOD_OK) {
        c->x->pending = false;
        if (c->idem)
            c->idem->pending = false;
        e->created++;
        call_backend(e, c->x, NET_PROVISION);
    } else {
        /* Nothing was written: forget the session as if it had never been asked for. */
        qod_timers_cancel(&e->timers, &c->x->timers[SLOT_LIFE]);
        index_del(e, c->x);
        if (qod_hmap_get(&e->by_dev, c->x->s.device_key) == c->x)
            qod_hmap_del(&e->by_dev, c->x->s.device_key);
        app_count *cnt = count_of(e, c->x->s.app_id, false);
        if (cnt && cnt->active > 0)
            cnt->active--;
        if (c->idem)
            idem_unlink(e, c->idem);
        sess_free(c->x);
    }
    pthread_mutex_unlock(&e->mu);
    c->done(c->arg, rc, id, rc == QOD_OK ? c->body : NULL);
    free(c->body);
    free(c);
}

/* The key of "one active item per device": a live device is the registered subscriber whichever identifier
 * names it (phone, IPv4 or IPv6); a sandbox device is its identifier. */
int qod_engine_device_key(qod_engine *e, bool sandbox, const qod_device *d, qod_device_kind kind, char *key, size_t cap)
{
    qod_subscriber sub;
    if (!sandbox && qod_registry_find(e->o.registry, d, kind, &sub) == QOD_OK) {
        int n = snprintf(key, cap, "tel:%s", sub.phone);
        return n > 0 && (size_t)n < cap ? QOD_OK : QOD_ERR_LIMIT;
    }
    return qod_device_key(d, kind, key, cap);
}

static int device_key_for(qod_engine *e, const qod_create_spec *sp, char *key, size_t cap)
{
    return qod_engine_device_key(e, sp->sandbox, sp->device, sp->kind, key, cap);
}

static sess *new_session(qod_engine *e, const qod_create_spec *sp)
{
    sess *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    qod_timer_init(&x->timers[SLOT_LIFE], SLOT_LIFE);
    qod_timer_init(&x->timers[SLOT_NET], SLOT_NET);
    qod_session *s = &x->s;
    if (e->o.new_id)
        e->o.new_id(e->o.cluster_ctx, s->id);
    else
        qod_uuid_v7(s->id);
    snprintf(s->app_id, sizeof s->app_id, "%s", sp->app_id);
    s->st = (qod_session_status){QOD_SS_REQUESTED, QOD_END_NONE};
    s->surface = sp->surface;
    s->sandbox = sp->sandbox;
    s->profile = sp->profile;
    s->duration_s = sp->duration_s;
    s->created_ms = qod_time_wall_ms();
    if (sp->surface == QOD_SURFACE_V0)
        s->expires_ms = s->created_ms + sp->duration_s * 1000;
    char key[QOD_DEVICE_KEY_MAX];
    qod_buf dj;
    qod_buf_init(&dj, 4096);
    qod_device_to_json(sp->device, sp->kind, &dj);
    s->device_json = qod_buf_steal(&dj);
    s->device_key = device_key_for(e, sp, key, sizeof key) == QOD_OK ? strdup(key) : NULL;
    s->url = strdup(sp->url ? sp->url : "");
    s->token = sp->token ? strdup(sp->token) : NULL;
    s->extra = sp->extra ? strdup(sp->extra) : NULL;
    if (!s->device_json || !s->device_key || !s->url || (sp->token && !s->token) || (sp->extra && !s->extra)) {
        sess_free(x);
        return NULL;
    }
    return x;
}

/* Idempotency check of app_id's key with the body's hash; returns QOD_OK to go on (with *key set, when key_out is
 * not NULL, to the record's key that must then be made). Caller holds the lock. */
static int check_idem(qod_engine *e, const char *app_id, const char *idem_key, const char *idem_hash, char **key_out,
                      qod_replay *replay)
{
    if (key_out)
        *key_out = NULL;
    if (!idem_key)
        return QOD_OK;
    size_t n = strlen(app_id) + strlen(idem_key) + 2;
    char *k = malloc(n);
    if (!k)
        return QOD_ERR_NOMEM;
    snprintf(k, n, "%s:%s", app_id, idem_key);
    idem_rec *r = qod_hmap_get(&e->idem, k);
    int64_t wall = qod_time_wall_ms();
    if (r && idem_past(r, wall)) {
        /* Past its 24 h, not dropped yet (the loop's next tick would): the records before it are older still. */
        prune_idem(e, wall, 0);
        r = qod_hmap_get(&e->idem, k);
    }
    if (!r) {
        if (key_out)
            *key_out = k;
        else
            free(k);
        return QOD_OK;
    }
    free(k);
    if (r->pending)
        return QOD_ERR_BUSY;
    if (strcmp(r->hash, idem_hash) != 0)
        return QOD_ERR_INVALID;
    replay->status = r->status;
    replay->body = strdup(r->body ? r->body : "");
    snprintf(replay->session_id, sizeof replay->session_id, "%s", r->session_id);
    return replay->body ? QOD_ENGINE_REPLAYED : QOD_ERR_NOMEM;
}

static int admit(qod_engine *e, const qod_create_spec *sp)
{
    char key[QOD_DEVICE_KEY_MAX];
    if (device_key_for(e, sp, key, sizeof key) != QOD_OK)
        return QOD_ERR_INVALID;
    if (qod_hmap_get(&e->by_dev, key))
        return QOD_ERR_EXISTS;
    app_count *c = count_of(e, sp->app_id, false);
    if (sp->max_sessions > 0 && c && c->active >= sp->max_sessions)
        return QOD_ERR_LIMIT;
    qod_subscriber sub;
    bool live = !sp->sandbox;
    if (live && qod_registry_find(e->o.registry, sp->device, sp->kind, &sub) != QOD_OK)
        return QOD_ERR_NOTFOUND;
    if (live && !sub.eligible)
        return QOD_ERR_UNSUPPORTED;
    qod_net_session ns = {"", sp->device, sp->kind, sp->profile, sp->sandbox, live ? &sub : NULL, sp->extra};
    return e->o.backend->check(e->be, &ns);
}

static idem_rec *idem_add(qod_engine *e, char *key, const qod_create_spec *sp, const sess *x, const char *body)
{
    idem_rec *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->key = key;
    snprintf(r->hash, sizeof r->hash, "%s", sp->idem_hash);
    snprintf(r->session_id, sizeof r->session_id, "%s", x->s.id);
    r->status = 201;
    r->body = strdup(body);
    r->pending = true;
    r->created_ms = x->s.created_ms;
    if (!r->body || qod_hmap_put(&e->idem, r->key, r) != QOD_OK) {
        free(r->body);
        free(r);
        return NULL;
    }
    if (e->idem_tail)
        e->idem_tail->next = r;
    else
        e->idem_head = r;
    e->idem_tail = r;
    return r;
}

static int idem_row(qod_store_batch *b, const idem_rec *r, const char *app_id)
{
    qod_buf doc;
    qod_buf_init(&doc, 0);
    qod_buf_printf(&doc, "{\"hash\":\"%s\",\"session\":\"%s\",\"status\":%u,\"body\":", r->hash, r->session_id,
                   r->status);
    qod_buf_json_str(&doc, r->body);
    qod_buf_puts(&doc, "}");
    int rc = qod_store_batch_put(b, QOD_TBL_IDEMPOTENCY, r->key, app_id, r->session_id, 0, r->created_ms, doc.data);
    qod_buf_dispose(&doc);
    return rc;
}

/* Registers the new session in memory (pending) and builds its batch. Caller holds the lock. */
static int stage_create(qod_engine *e, const qod_create_spec *sp, char *idem_key, create_ctx *c, qod_store_batch *b)
{
    sess *x = new_session(e, sp);
    if (!x)
        return QOD_ERR_NOMEM;
    x->pending = true;
    qod_buf body;
    qod_buf_init(&body, 0);
    sp->render(sp->render_arg, &x->s, &body);
    c->body = qod_buf_steal(&body);
    int rc = c->body ? QOD_OK : QOD_ERR_NOMEM;
    rc = rc ? rc : index_add(e, x);
    rc = rc ? rc : qod_hmap_put(&e->by_dev, x->s.device_key, x);
    if (rc == QOD_OK && idem_key && !(c->idem = idem_add(e, idem_key, sp, x, c->body)))
        rc = QOD_ERR_NOMEM;
    idem_key = rc == QOD_OK ? NULL : idem_key;
    /* Several nodes: the quota counts every node's sessions, in the store, in the create's transaction. */
    if (rc == QOD_OK && e->o.owns && sp->max_sessions > 0)
        rc = qod_store_batch_cap(b, QOD_TBL_SESSIONS, x->s.app_id, (int64_t)QOD_SS_ENDED * 10, sp->max_sessions);
    rc = rc ? rc : add_session_row(e, b, x, true);
    rc = rc ? rc : (c->idem ? idem_row(b, c->idem, x->s.app_id) : QOD_OK);
    app_count *cnt = rc == QOD_OK ? count_of(e, x->s.app_id, true) : NULL;
    if (rc == QOD_OK && !cnt)
        rc = QOD_ERR_NOMEM;
    if (rc != QOD_OK) {
        if (c->idem)
            idem_unlink(e, c->idem);
        index_del(e, x);
        if (qod_hmap_get(&e->by_dev, x->s.device_key) == x)
            qod_hmap_del(&e->by_dev, x->s.device_key);
        free(idem_key);
        sess_free(x);
        return rc;
    }
    cnt->active++;
    if (x->s.surface == QOD_SURFACE_V0)
        arm(e, x, SLOT_LIFE, qod_time_mono_ms() + x->s.duration_s * 1000, TK_EXPIRE);
    c->x = x;
    return QOD_OK;
}

int qod_engine_replay(qod_engine *e, const char *app_id, const char *idem_key, const char *idem_hash,
                      qod_replay *replay)
{
    pthread_mutex_lock(&e->mu);
    int rc = check_idem(e, app_id, idem_key, idem_hash, NULL, replay);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int qod_engine_create_session(qod_engine *e, const qod_create_spec *sp, qod_engine_done done, void *arg,
                              qod_replay *replay)
{
    char *idem_key = NULL;
    create_ctx *c = calloc(1, sizeof *c);
    qod_store_batch *b = qod_store_batch_new();
    if (!c || !b) {
        free(c);
        qod_store_batch_free(b);
        return QOD_ERR_NOMEM;
    }
    pthread_mutex_lock(&e->mu);
    int rc = check_idem(e, sp->app_id, sp->idem_key, sp->idem_hash, &idem_key, replay);
    rc = rc ? rc : admit(e, sp);
    if (rc == QOD_OK) {
        rc = stage_create(e, sp, idem_key, c, b);
        idem_key = NULL;
    }
    pthread_mutex_unlock(&e->mu);
    free(idem_key);
    if (rc != QOD_OK) {
        free(c);
        qod_store_batch_free(b);
        return rc;
    }
    c->e = e;
    c->done = done;
    c->arg = arg;
    if (qod_store_submit(e->o.store, b, create_committed, c) != QOD_OK)
        create_committed(QOD_ERR_CLOSED, c);
    return QOD_OK;
}

/* ---- reads and other operations -------------------------------------------------------------------------------- */

bool qod_kind_matches(qod_kind kind, qod_surface surface)
{
    switch (kind) {
    case QOD_KIND_ANY:
        return true;
    case QOD_KIND_SESSION:
        return surface != QOD_SURFACE_PROV;
    case QOD_KIND_ASSIGNMENT:
        return surface == QOD_SURFACE_PROV;
    case QOD_KIND_V0:
        return surface == QOD_SURFACE_V0;
    case QOD_KIND_V1:
        return surface == QOD_SURFACE_V1;
    }
    return false;
}

static bool kind_matches(const sess *x, qod_kind kind)
{
    return qod_kind_matches(kind, x->s.surface);
}

static int find_owned(qod_engine *e, const char *id, const char *app_id, qod_kind kind, sess **out)
{
    sess *x = qod_hmap_get(&e->by_id, id);
    if (!x || x->pending || !kind_matches(x, kind))
        return QOD_ERR_NOTFOUND;
    if (app_id && strcmp(app_id, x->s.app_id) != 0)
        return QOD_ERR_DENIED;
    *out = x;
    return QOD_OK;
}

int qod_engine_read(qod_engine *e, const char *id, const char *app_id, qod_kind kind,
                    void (*fn)(void *arg, const qod_session *s), void *arg)
{
    sess *x = NULL;
    pthread_mutex_lock(&e->mu);
    int rc = find_owned(e, id, app_id, kind, &x);
    if (rc == QOD_OK)
        fn(arg, &x->s);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int qod_engine_delete_session(qod_engine *e, const char *id, const char *app_id, qod_kind kind, qod_engine_done done,
                              void *arg)
{
    sess *x = NULL;
    pthread_mutex_lock(&e->mu);
    int rc = find_owned(e, id, app_id, kind, &x);
    if (rc == QOD_OK)
        rc = change(e, x, QOD_EV_DELETED, "deleted by the app", done, arg);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* A row-only write (extend, revoke) and its answer. */
typedef struct {
    qod_engine *e;
    qod_engine_done done;
    void *arg;
    char id[37];
    char *body; /* the answer (revoke), or NULL */
    bool revoking;
} extend_ctx;

static void extend_committed(int rc, void *arg)
{
    extend_ctx *c = arg;
    if (c->revoking) {
        /* Committed: the network may release it now. Failed: it stays AVAILABLE, as the 503 says. */
        pthread_mutex_lock(&c->e->mu);
        sess *x = qod_hmap_get(&c->e->by_id, c->id);
        if (x && x->s.releasing && x->s.st.state != QOD_SS_ENDED) {
            if (rc == QOD_OK)
                call_backend(c->e, x, NET_RELEASE);
            else
                x->s.releasing = false;
        }
        pthread_mutex_unlock(&c->e->mu);
    }
    c->done(c->arg, rc, c->id, rc == QOD_OK ? c->body : NULL);
    free(c->body);
    free(c);
}

/* Submits b (owned) with c (owned); done runs once. */
static void submit_row_write(qod_engine *e, qod_store_batch *b, extend_ctx *c)
{
    if (qod_store_submit(e->o.store, b, extend_committed, c) != QOD_OK)
        extend_committed(QOD_ERR_CLOSED, c);
}

int qod_engine_revoke(qod_engine *e, const char *id, const char *app_id,
                      void (*render)(void *arg, const qod_session *s, qod_buf *out), void *render_arg,
                      qod_engine_done done, void *arg)
{
    sess *x = NULL;
    pthread_mutex_lock(&e->mu);
    int rc = find_owned(e, id, app_id, QOD_KIND_ASSIGNMENT, &x);
    if (rc != QOD_OK || x->s.st.state != QOD_SS_AVAILABLE || !release_async(e, x)) {
        /* Ended already (QOD_ERR_STATE), or released at once: an ordinary delete. */
        rc = rc ? rc : change(e, x, QOD_EV_DELETED, "deleted by the app", done, arg);
        pthread_mutex_unlock(&e->mu);
        return rc;
    }
    extend_ctx *c = calloc(1, sizeof *c);
    qod_store_batch *b = qod_store_batch_new();
    qod_buf body;
    qod_buf_init(&body, 0);
    rc = c && b ? QOD_OK : QOD_ERR_NOMEM;
    if (rc == QOD_OK) {
        /* A repeated revocation while the release runs answers the same and writes the same. */
        bool was = x->s.releasing;
        x->s.releasing = true;
        rc = add_session_row(e, b, x, false);
        render(render_arg, &x->s, &body);
        if (rc != QOD_OK || !body.data)
            x->s.releasing = was;
        rc = rc ? rc : body.data ? QOD_OK : QOD_ERR_NOMEM;
    }
    pthread_mutex_unlock(&e->mu);
    if (rc != QOD_OK) {
        free(c);
        qod_store_batch_free(b);
        qod_buf_dispose(&body);
        return rc;
    }
    *c = (extend_ctx){e, done, arg, "", qod_buf_steal(&body), true};
    qod_buf_dispose(&body);
    snprintf(c->id, sizeof c->id, "%s", id);
    QOD_INFO("engine", "revocation_requested", "session=%s app=%s", c->id, app_id ? app_id : "");
    submit_row_write(e, b, c);
    return QOD_OK;
}

int qod_engine_extend_session(qod_engine *e, const char *id, const char *app_id, int64_t add_s, int64_t max_total_s,
                              qod_engine_done done, void *arg)
{
    sess *x = NULL;
    extend_ctx *c = calloc(1, sizeof *c);
    qod_store_batch *b = qod_store_batch_new();
    int rc = c && b ? QOD_OK : QOD_ERR_NOMEM;
    pthread_mutex_lock(&e->mu);
    rc = rc ? rc : find_owned(e, id, app_id, QOD_KIND_V1, &x);
    if (rc == QOD_OK && x->s.st.state != QOD_SS_AVAILABLE)
        rc = QOD_ERR_STATE;
    if (rc == QOD_OK) {
        /* The overall duration never exceeds the profile's maximum: the excess is dropped silently. */
        int64_t total = x->s.duration_s + add_s;
        if (total > max_total_s)
            total = max_total_s;
        int64_t added_ms = (total - x->s.duration_s) * 1000;
        x->s.duration_s = total;
        x->s.expires_ms += added_ms;
        if (qod_timer_armed(&x->timers[SLOT_LIFE]))
            arm(e, x, SLOT_LIFE, x->timers[SLOT_LIFE].due + added_ms, TK_EXPIRE);
        rc = add_session_row(e, b, x, false);
    }
    pthread_mutex_unlock(&e->mu);
    if (rc == QOD_OK) {
        *c = (extend_ctx){e, done, arg, "", NULL, false};
        snprintf(c->id, sizeof c->id, "%s", id);
        submit_row_write(e, b, c);
        return QOD_OK;
    }
    free(c);
    qod_store_batch_free(b);
    return rc;
}

int qod_engine_find_by_device(qod_engine *e, const char *device_key, const char *app_id, qod_kind kind,
                              void (*fn)(void *arg, const qod_session *s), void *arg)
{
    int n = 0;
    pthread_mutex_lock(&e->mu);
    sess *x = qod_hmap_get(&e->by_dev, device_key);
    if (x && !x->pending && strcmp(x->s.app_id, app_id) == 0 && kind_matches(x, kind)) {
        fn(arg, &x->s);
        n = 1;
    }
    pthread_mutex_unlock(&e->mu);
    return n;
}

int qod_engine_network_event(qod_engine *e, const char *id, const char *app_id, qod_net_outcome o, qod_engine_done done,
                             void *arg)
{
    static const qod_session_event evs[] = {QOD_EV_PROVISIONED, QOD_EV_REFUSED, QOD_EV_TERMINATED};
    sess *x = NULL;
    pthread_mutex_lock(&e->mu);
    int rc = find_owned(e, id, app_id, QOD_KIND_ANY, &x);
    qod_session_status st = x ? x->s.st : (qod_session_status){0};
    /* A transition the session cannot make changes nothing, not even the pending simulated outcome. */
    if (rc == QOD_OK && (rc = qod_session_apply(&st, evs[o])) == QOD_OK) {
        qod_timers_cancel(&e->timers, &x->timers[SLOT_NET]);
        rc = change(e, x, evs[o], "forced network event", done, arg);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* Buckets of by_id (about as many sessions) that qod_engine_each walks per hold of the lock. */
#define EACH_BUCKETS 256

typedef struct {
    const char *app_id;
    int (*fn)(void *, const qod_session *);
    void *arg;
} each_ctx;

static int each_one(void *arg, const char *key, void *val)
{
    (void)key;
    each_ctx *c = arg;
    sess *x = val;
    if (x->pending || (c->app_id && strcmp(c->app_id, x->s.app_id) != 0))
        return 0;
    return c->fn(c->arg, &x->s);
}

void qod_engine_each(qod_engine *e, const char *app_id, int (*fn)(void *arg, const qod_session *s), void *arg)
{
    each_ctx c = {app_id, fn, arg};
    size_t cursor = 0;
    int stopped = 0;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        cursor = qod_hmap_scan(&e->by_id, cursor, EACH_BUCKETS, each_one, &c, &stopped);
        if (!cursor || stopped)
            break;
        let_waiters_in(e);
    }
    pthread_mutex_unlock(&e->mu);
}

void qod_engine_stats_get(qod_engine *e, qod_engine_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&e->mu);
    out->sessions = qod_hmap_count(&e->by_id);
    out->requested = e->in_state[QOD_SS_REQUESTED];
    out->available = e->in_state[QOD_SS_AVAILABLE];
    out->ended = e->in_state[QOD_SS_ENDED];
    out->timers = qod_timers_count(&e->timers);
    out->created = e->created;
    out->events = e->events;
    pthread_mutex_unlock(&e->mu);
}

void qod_engine_metrics(void *arg, qod_buf *out)
{
    qod_engine_stats st;
    qod_engine_stats_get(arg, &st);
    qod_buf_printf(out,
                   "# HELP qod_sessions Sessions held, by engine state.\n# TYPE qod_sessions gauge\n"
                   "qod_sessions{state=\"requested\"} %zu\nqod_sessions{state=\"available\"} %zu\n"
                   "qod_sessions{state=\"ended\"} %zu\n"
                   "# HELP qod_timers Armed engine timers.\n# TYPE qod_timers gauge\nqod_timers %zu\n"
                   "# HELP qod_sessions_created_total Sessions created since start.\n"
                   "# TYPE qod_sessions_created_total counter\nqod_sessions_created_total %llu\n"
                   "# HELP qod_status_events_total Status-change events written to the outbox since start.\n"
                   "# TYPE qod_status_events_total counter\nqod_status_events_total %llu\n"
                   "# HELP qod_network_notices_total Network notices without a status change (QoS not guaranteed).\n"
                   "# TYPE qod_network_notices_total counter\nqod_network_notices_total %llu\n",
                   st.requested, st.available, st.ended, st.timers, (unsigned long long)st.created,
                   (unsigned long long)st.events, (unsigned long long)atomic_load(&((qod_engine *)arg)->notices));
    qod_engine *e = arg;
    if (e->o.backend->metrics)
        e->o.backend->metrics(e->be, out);
}

int qod_engine_network_notify(qod_engine *e, const char *token, const char *body, size_t len)
{
    if (!e->o.backend->notify)
        return QOD_ERR_NOTFOUND;
    return e->o.backend->notify(e->be, token, body, len);
}

qod_loop *qod_engine_loop(qod_engine *e)
{
    return e->loop;
}

/* ---- start-up: load, reconcile, run ------------------------------------------------------------------------- */

static int dup_field(const cJSON *o, const char *key, char **out, bool required)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, key);
    *out = NULL;
    if (!it || cJSON_IsNull(it))
        return required ? QOD_ERR_INVALID : QOD_OK;
    *out = cJSON_IsString(it) ? strdup(it->valuestring) : cJSON_PrintUnformatted(it);
    return *out ? QOD_OK : QOD_ERR_NOMEM;
}

static int64_t num_field(const cJSON *o, const char *key)
{
    int64_t v = 0;
    qod_json_int(o, key, INT64_MIN / 2, INT64_MAX / 2, &v);
    return v;
}

static sess *session_from_doc(qod_engine *e, const char *doc)
{
    cJSON *o = NULL;
    const char *id = NULL, *app = NULL, *state = NULL, *reason = NULL, *profile = NULL;
    sess *x = calloc(1, sizeof *x);
    int rc = x ? qod_json_parse_own(doc, strlen(doc), &o) : QOD_ERR_NOMEM;
    rc = rc ? rc : qod_json_str(o, "id", &id);
    rc = rc ? rc : qod_json_str(o, "app", &app);
    rc = rc ? rc : qod_json_str(o, "state", &state);
    rc = rc ? rc : qod_json_str(o, "reason", &reason);
    rc = rc ? rc : qod_json_str(o, "profile", &profile);
    rc = rc ? rc : (qod_uuid_valid(id) && strlen(app) < sizeof x->s.app_id ? QOD_OK : QOD_ERR_INVALID);
    rc = rc ? rc : qod_session_state_parse(state, &x->s.st.state);
    rc = rc ? rc : qod_end_reason_parse(reason, &x->s.st.reason);
    if (rc == QOD_OK && !(x->s.profile = qod_profiles_find(e->o.profiles, profile))) {
        QOD_ERROR("engine", "unknown_profile", "profile=%s", profile);
        rc = QOD_ERR_INVALID;
    }
    rc = rc ? rc : dup_field(o, "device", &x->s.device_json, true);
    rc = rc ? rc : dup_field(o, "device_key", &x->s.device_key, true);
    rc = rc ? rc : dup_field(o, "url", &x->s.url, true);
    rc = rc ? rc : dup_field(o, "token", &x->s.token, false);
    if (rc == QOD_OK && x->s.token) {
        char *plain = NULL;
        rc = qod_seal_decrypt(e->o.seal, x->s.token, &plain);
        free(x->s.token);
        x->s.token = plain;
    }
    rc = rc ? rc : dup_field(o, "extra", &x->s.extra, false);
    if (rc == QOD_OK) {
        snprintf(x->s.id, sizeof x->s.id, "%s", id);
        snprintf(x->s.app_id, sizeof x->s.app_id, "%s", app);
        int64_t surf = num_field(o, "surface");
        x->s.surface = surf == 1 ? QOD_SURFACE_V1 : surf == 2 ? QOD_SURFACE_PROV : QOD_SURFACE_V0;
        x->s.sandbox = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "sandbox"));
        x->s.releasing = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "releasing"));
        x->s.duration_s = num_field(o, "duration");
        x->s.created_ms = num_field(o, "created_ms");
        x->s.available_ms = num_field(o, "available_ms");
        x->s.expires_ms = num_field(o, "expires_ms");
        x->s.ended_ms = num_field(o, "ended_ms");
        x->nevents = (uint32_t)num_field(o, "events");
        qod_timer_init(&x->timers[SLOT_LIFE], SLOT_LIFE);
        qod_timer_init(&x->timers[SLOT_NET], SLOT_NET);
    }
    cJSON_Delete(o);
    if (rc != QOD_OK) {
        sess_free(x);
        return NULL;
    }
    return x;
}

/* Puts a loaded session back in the tables with its timers. Caller holds the lock (start-up). */
static void restore(qod_engine *e, sess *x, int64_t now_wall, int64_t now_mono)
{
    if (index_add(e, x) != QOD_OK) {
        sess_free(x);
        return;
    }
    if (x->s.st.state == QOD_SS_ENDED) {
        int64_t left = x->s.ended_ms + e->o.retention_ms - now_wall;
        arm(e, x, SLOT_LIFE, now_mono + (left > 0 ? left : 0), TK_PURGE);
        return;
    }
    app_count *c = count_of(e, x->s.app_id, true);
    if (c)
        c->active++;
    qod_hmap_put(&e->by_dev, x->s.device_key, x);
    if (x->s.expires_ms > 0) {
        /* What is left can never exceed the duration: a wall clock that ran fast before the restart (and was
         * corrected since) must not stretch a session. */
        int64_t left = x->s.expires_ms > now_wall ? x->s.expires_ms - now_wall : 0;
        if (left > x->s.duration_s * 1000) {
            left = x->s.duration_s * 1000;
            x->s.expires_ms = now_wall + left;
        }
        arm(e, x, SLOT_LIFE, now_mono + left, TK_EXPIRE);
    }
}

static int load_session(void *arg, const qod_store_row *row)
{
    qod_engine *e = arg;
    if (e->o.owns && !e->o.owns(e->o.cluster_ctx, row->key))
        return 0; /* another node's */
    sess *x = session_from_doc(e, row->doc);
    if (!x) {
        QOD_ERROR("engine", "corrupt_session_row", "session=%s", row->key);
        return 0;
    }
    restore(e, x, qod_time_wall_ms(), qod_time_mono_ms());
    return 0;
}

typedef struct {
    idem_rec **v;
    size_t n, cap;
    int64_t now;
} idem_load;

static int load_idem(void *arg, const qod_store_row *row)
{
    idem_load *l = arg;
    cJSON *o = NULL;
    const char *hash = NULL, *sid = NULL, *body = NULL;
    if (l->now - row->num > IDEM_TTL_MS)
        return 0;
    int rc = qod_json_parse_own(row->doc, strlen(row->doc), &o);
    rc = rc ? rc : qod_json_str(o, "hash", &hash);
    rc = rc ? rc : qod_json_str(o, "session", &sid);
    rc = rc ? rc : qod_json_str(o, "body", &body);
    idem_rec *r = rc == QOD_OK ? calloc(1, sizeof *r) : NULL;
    if (r && l->n == l->cap) {
        idem_rec **v = realloc(l->v, (l->cap * 2 + 64) * sizeof *l->v);
        if (v) {
            l->v = v;
            l->cap = l->cap * 2 + 64;
        }
    }
    if (r && l->n < l->cap) {
        r->key = strdup(row->key);
        r->body = strdup(body);
        snprintf(r->hash, sizeof r->hash, "%s", hash);
        snprintf(r->session_id, sizeof r->session_id, "%s", sid);
        r->status = (unsigned)num_field(o, "status");
        r->created_ms = row->num;
        l->v[l->n++] = r;
    } else {
        free(r);
    }
    cJSON_Delete(o);
    return 0;
}

static int by_created(const void *a, const void *b)
{
    const idem_rec *x = *(idem_rec *const *)a, *y = *(idem_rec *const *)b;
    return (x->created_ms > y->created_ms) - (x->created_ms < y->created_ms);
}

/* Merges the loaded records that are not in memory yet into the list, which stays oldest first (its pruning looks
 * at the head only), and frees the others. Caller holds the lock. */
static void link_idem(qod_engine *e, idem_load *l)
{
    size_t kept = 0;
    for (size_t i = 0; i < l->n; i++) {
        idem_rec *r = l->v[i];
        if (!r->key || !r->body || qod_hmap_get(&e->idem, r->key) || qod_hmap_put(&e->idem, r->key, r) != QOD_OK) {
            free(r->key);
            free(r->body);
            free(r);
            continue;
        }
        l->v[kept++] = r;
    }
    if (kept)
        qsort(l->v, kept, sizeof *l->v, by_created);
    idem_rec *old = e->idem_head, *head = NULL, **at = &head, *last = NULL;
    for (size_t i = 0; i < kept || old;) {
        idem_rec *r;
        if (i < kept && (!old || l->v[i]->created_ms < old->created_ms)) {
            r = l->v[i++];
        } else {
            r = old;
            old = old->next;
        }
        *at = last = r;
        at = &r->next;
    }
    *at = NULL;
    e->idem_head = head;
    e->idem_tail = last;
    free(l->v);
    *l = (idem_load){0};
}

static int load_all(qod_engine *e)
{
    idem_load l = {NULL, 0, 0, qod_time_wall_ms()};
    pthread_mutex_lock(&e->mu);
    int rc = qod_store_scan(e->o.store, QOD_TBL_SESSIONS, NULL, load_session, e);
    if (rc == QOD_OK)
        rc = qod_store_scan(e->o.store, QOD_TBL_IDEMPOTENCY, NULL, load_idem, &l);
    link_idem(e, &l);
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int qod_engine_create(const qod_engine_opts *opts, qod_engine **out, char *err, size_t errcap)
{
    *out = NULL;
    qod_engine *e = calloc(1, sizeof *e);
    if (!e)
        return QOD_ERR_NOMEM;
    e->o = *opts;
    pthread_mutex_init(&e->mu, NULL);
    qod_hmap_init(&e->by_id);
    qod_hmap_init(&e->by_dev);
    qod_hmap_init(&e->apps);
    qod_hmap_init(&e->idem);
    qod_timers_init(&e->timers);
    atomic_store(&e->deadline, INT64_MAX);
    qod_net_sink sink = {e, sink_report, sink_report_after, sink_report_unlocked, sink_notice};
    int rc = qod_loop_create(&e->loop);
    qod_net_config net = opts->net;
    net.loop = e->loop;
    if (rc == QOD_OK)
        rc = opts->backend->create(&net, &sink, &e->be, err, errcap);
    if (rc == QOD_OK && (rc = load_all(e)) != QOD_OK)
        snprintf(err, errcap, "cannot load sessions: %s", qod_strerror(rc));
    if (rc != QOD_OK) {
        qod_engine_destroy(e);
        return rc;
    }
    qod_loop_add_tick(e->loop, tick, e);
    qod_loop_set_name(e->loop, "qod-engine");
    *out = e;
    return QOD_OK;
}

static int reprovision(void *arg, const char *key, void *val)
{
    (void)key;
    qod_engine *e = arg;
    sess *x = val;
    bool expired = x->s.expires_ms > 0 && x->s.expires_ms <= qod_time_wall_ms();
    if (x->s.st.state != QOD_SS_ENDED && !expired) {
        call_backend(e, x, NET_PROVISION);
        if (x->s.st.state == QOD_SS_AVAILABLE)
            call_backend(e, x, NET_ACTIVATED);
        if (x->s.releasing && release_async(e, x))
            call_backend(e, x, NET_RELEASE); /* a revocation the stop interrupted: the backend finds it again */
        else if (x->s.releasing)
            change(e, x, QOD_EV_DELETED, "revoked before the restart", NULL, NULL);
    }
    return 0;
}

typedef struct adopt_row {
    struct adopt_row *next;
    char *doc;
} adopt_row;

typedef struct {
    qod_engine *e;
    adopt_row *head;
    int err;
} adopt_ctx;

/* Collects the rows this node owns (all of them without a cluster) and does not hold; the scan runs without the
 * engine lock. */
static int collect_adoptable(void *arg, const qod_store_row *row)
{
    adopt_ctx *a = arg;
    qod_engine *e = a->e;
    if (e->o.owns && !e->o.owns(e->o.cluster_ctx, row->key))
        return 0;
    pthread_mutex_lock(&e->mu);
    bool held = qod_hmap_get(&e->by_id, row->key) != NULL;
    pthread_mutex_unlock(&e->mu);
    if (held)
        return 0;
    adopt_row *r = malloc(sizeof *r);
    if (!r || !(r->doc = strdup(row->doc))) {
        free(r);
        a->err = QOD_ERR_NOMEM;
        return 1;
    }
    r->next = a->head;
    a->head = r;
    return 0;
}

int qod_engine_adopt(qod_engine *e)
{
    adopt_ctx a = {e, NULL, QOD_OK};
    int rc = qod_store_scan(e->o.store, QOD_TBL_SESSIONS, NULL, collect_adoptable, &a);
    int n = 0, seen = 0;
    pthread_mutex_lock(&e->mu);
    for (adopt_row *r = a.head, *next; r; r = next) {
        next = r->next;
        if (++seen % 256 == 0) /* a shard may hold many sessions: let API requests in between */
            let_waiters_in(e);
        int64_t wall = qod_time_wall_ms(), mono = qod_time_mono_ms();
        sess *x = rc == QOD_OK ? session_from_doc(e, r->doc) : NULL;
        if (x && qod_hmap_get(&e->by_id, x->s.id)) {
            sess_free(x); /* created here meanwhile */
        } else if (x) {
            char id[37];
            snprintf(id, sizeof id, "%s", x->s.id);
            restore(e, x, wall, mono);
            if ((x = qod_hmap_get(&e->by_id, id)) != NULL) {
                reprovision(e, id, x);
                n++;
            }
        }
        free(r->doc);
        free(r);
    }
    pthread_mutex_unlock(&e->mu);
    /* The Idempotency-Keys of the creates that made them: a repeat is answered as the first create was (a record
     * past its time is not loaded). */
    idem_load l = {NULL, 0, 0, qod_time_wall_ms()};
    if (n && rc == QOD_OK && qod_store_scan(e->o.store, QOD_TBL_IDEMPOTENCY, NULL, load_idem, &l) != QOD_OK)
        QOD_WARN("engine", "adopt_idempotency_partial", "loaded=%zu", l.n);
    if (l.n) {
        pthread_mutex_lock(&e->mu);
        link_idem(e, &l);
        pthread_mutex_unlock(&e->mu);
    }
    free(l.v);
    if (n && e->o.events_committed)
        e->o.events_committed(e->o.events_ctx); /* their pending callbacks are ours now */
    if (n)
        QOD_INFO("engine", "adopted", "sessions=%d", n);
    return rc != QOD_OK ? rc : a.err != QOD_OK ? a.err : n;
}

void qod_engine_set_events_hook(qod_engine *e, void (*fn)(void *ctx), void *ctx)
{
    e->o.events_committed = fn;
    e->o.events_ctx = ctx;
}

int qod_engine_start(qod_engine *e)
{
    pthread_mutex_lock(&e->mu);
    qod_hmap_each(&e->by_id, reprovision, e);
    pthread_mutex_unlock(&e->mu);
    /* Sessions whose expiry passed while the daemon was down end now, with their events, before the API opens:
     * left to the loop's first tick, a read right after the start could still see them AVAILABLE. */
    int64_t now = qod_time_mono_ms();
    bool held = false;
    for (int i = 0; i < 256;) {
        int64_t due = run_due(e, now, 0, &held);
        if (held)
            nanosleep(&(struct timespec){0, STORE_WAIT_MS * 1000000L}, NULL); /* the writer catches up */
        else if (due > now || ++i == 256) /* i: timers a firing armed for now, if any */
            break;
    }
    int rc = qod_loop_start(e->loop);
    pthread_mutex_lock(&e->mu);
    e->running = rc == QOD_OK;
    pthread_mutex_unlock(&e->mu);
    return rc;
}

static int free_sess(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    sess_free(val);
    return 0;
}

static int free_val(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    free(val);
    return 0;
}

void qod_engine_stop(qod_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    qod_loop *l = e->loop;
    e->loop = NULL;
    if (l)
        e->stopped_loop = l;
    pthread_mutex_unlock(&e->mu);
    /* Joined outside the lock: the loop's last tick may be waiting for it. The memory is freed only by
     * qod_engine_destroy: the store thread, still draining, may post to it (posts then fail cleanly). */
    qod_loop_stop(l);
    if (!l)
        return; /* stopped before (qod_engine_destroy stops again): the store may be closed by now */
    /* Changes the store refused earlier (a full disk, a lock held too long) get one more try now rather than at
     * the next second's retry, which will not come: the store drains it before it closes. What still fails is
     * logged as lost by qod_engine_destroy. */
    pthread_mutex_lock(&e->mu);
    e->retry_at = 0;
    retry_unsaved(e, qod_time_mono_ms());
    pthread_mutex_unlock(&e->mu);
}

void qod_engine_destroy(qod_engine *e)
{
    if (!e)
        return;
    qod_engine_stop(e);
    if (e->be)
        e->o.backend->destroy(e->be);
    qod_loop_destroy(e->stopped_loop);
    qod_hmap_each(&e->by_id, free_sess, NULL);
    qod_hmap_each(&e->apps, free_val, NULL);
    for (idem_rec *r = e->idem_head, *next; r; r = next) {
        next = r->next;
        free(r->key);
        free(r->body);
        free(r);
    }
    for (unsaved *u = e->uhead, *next; u; u = next) {
        next = u->next;
        QOD_ERROR("engine", "unsaved_change_lost_at_stop", "session=%s event=%s", u->session, u->event_id);
        free(u->event_doc);
        free(u);
    }
    qod_hmap_dispose(&e->by_id);
    qod_hmap_dispose(&e->by_dev);
    qod_hmap_dispose(&e->apps);
    qod_hmap_dispose(&e->idem);
    qod_timers_dispose(&e->timers);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
