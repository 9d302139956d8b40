#include "notify/delivery.h"

#include "core/loop.h"
#include "core/timers.h"
#include "notify/sign.h"
#include "util/err.h"
#include "util/hmap.h"
#include "util/json.h"
#include "util/list.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/time.h"

#include <curl/curl.h>
#include <math.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#define RETRY_AFTER_MAX_S 86400
#define MAX_RENDERERS 4
#define RESPONSE_BODY_MAX 4096

enum { EV_PENDING = 0, EV_DELIVERED = 1, EV_DEAD = 2 };
enum { R_TIMEOUT, R_CONNECT, R_TLS, R_HTTP_3XX, R_HTTP_4XX, R_HTTP_5XX, R_GONE, R_GUARD, R_OTHER, R_COUNT };
static const char *const reason_names[R_COUNT] = {"timeout",  "connect", "tls",   "redirect", "http_4xx",
                                                  "http_5xx", "gone",    "guard", "other"};
static const double lat_le[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600};
#define N_LAT ((int)(sizeof lat_le / sizeof lat_le[0]))

/* One outbox event held in memory. The row's delivery fields are decoded once, at load, so that an attempt
 * does not parse JSON: the strings point into the item's own allocation (strs). */
typedef struct item {
    int64_t seq;
    char id[40];
    int64_t created_ms;
    int attempts;
    int64_t due_wall;
    const char *url, *app, *state, *reason, *session;
    const char *token; /* sealed bearer token for the receiver, or NULL */
    const char *extra; /* the surface's extra JSON object as text, or NULL */
    int surface;
    int64_t at_ms, available_ms;
    bool unreadable; /* a required field is missing: the event goes dead when its turn comes */
    struct item *next;
    char strs[];
} item;

typedef struct host host;

typedef struct sq {
    char *session;
    char *url;
    item *head, *tail;
    qod_timer t;
    bool busy;            /* an attempt is in flight or the queue waits for a slot */
    int64_t requeue_from; /* an operator replay waiting for the queue to be idle (0 = none) */
    struct sq *wait_next;
    host *h;
} sq;

struct host {
    char *key;
    int inflight;
    sq *wait_head, *wait_tail;
    bool in_ring;
    bool used; /* a queue uses it (set and cleared by sweep_hosts) */
    host *ring_next;
};

#define N_HDRS 7 /* Content-Type, webhook-id, -timestamp, -signature, x-correlator, Expect, Authorization */
#define HDR_TEXT_MAX 4608
#define POOL_BODY_KEEP (64u << 10) /* a pooled attempt keeps a body buffer up to this size */
#define HOST_CACHE_MAX 4096        /* URLs remembered with their host */
/* Hosts no queue uses are forgotten once more than this many are known, at most every HOSTS_SWEEP_MS: otherwise an
 * app that gives each session a host of its own (a subdomain per session, say) would grow memory for ever. */
#define HOSTS_SWEEP_AT 4096
#define HOSTS_SWEEP_MS 10000
/* Outcomes are gathered this long, or up to this many, before they go to the store as one batch: under a stream
 * of callbacks an idle store would otherwise commit (and fsync) a few outcomes at a time, thousands of times a
 * second. Nothing waits for these writes; a crash before one only means that event may be sent again. */
#define OUTCOME_FLUSH_MS 10
#define OUTCOME_FLUSH_MAX 2048

/* An attempt owns its easy handle, set up once with the options every request shares, and its buffers; finished
 * attempts go back to a pool, so an attempt allocates nothing in the common case. */
typedef struct attempt {
    qod_delivery *d;
    sq *q;
    qod_link link; /* in the list of attempts in flight, or in the pool */
    CURL *easy;
    struct curl_slist hdrs[N_HDRS]; /* curl only reads the list: its lines live in hdr_text */
    char hdr_text[HDR_TEXT_MAX];
    qod_buf body, sig;
    bool sandbox;
    const char *guard_why;
    long retry_after_s;
    size_t resp_len;
    size_t hdr_len; /* bytes of hdr_text in use (wiped when the attempt is done) */
} attempt;

typedef struct state_write state_write;

struct qod_delivery {
    qod_delivery_opts o;
    qod_loop *loop; /* the delivery's own thread */
    CURLM *multi;
    qod_render_fn render[MAX_RENDERERS];
    qod_hmap queues;     /* session → sq */
    qod_hmap ids;        /* event id → item (loaded) */
    qod_hmap hosts;      /* host key → host */
    qod_hmap host_urls;  /* URL → host, a bounded cache that spares a URL parse per session */
    qod_hmap gone;       /* URL → gone_url after a 410 */
    qod_list gone_order; /* the gone_urls, oldest first */
    qod_timers timers;
    host *ring;            /* hosts with waiting queues */
    qod_list running;      /* attempts in flight */
    qod_list pool;         /* finished attempts, ready for reuse (the last one put back is taken first) */
    state_write *outcomes; /* outcome writes not yet submitted, oldest first (loop thread) */
    state_write **outcomes_tail;
    size_t outcomes_n;      /* how many */
    int64_t outcomes_since; /* monotonic ms when the oldest was gathered */
    pthread_mutex_t retry_mu;
    state_write *retry_writes; /* outcome writes that failed, newest first */
    int64_t retry_writes_at;
    int inflight;
    size_t loaded;
    size_t scanned; /* events the current outbox scan has passed to load_one */
    int64_t last_seq;
    bool rescanning;     /* load_job reads the outbox from its start again (qod_delivery_rescan) */
    bool rescan_held;    /* test hook: rescans wait for qod_delivery_hold_rescans(d, false) */
    bool rescan_waiting; /* one was asked for while held */
    bool more;           /* the store holds pending events not loaded yet */
    int64_t curl_due;    /* monotonic ms of curl's next timeout, -1 none */
    int64_t hosts_swept; /* monotonic ms of the last sweep_hosts */
    atomic_bool kick_posted;
    atomic_ullong attempts, delivered, dead, failures[R_COUNT], lat[N_LAT + 1];
    atomic_ullong backlog, nhosts, ngone;
};

/* ---- helpers -------------------------------------------------------------------------------------------------- */

int qod_retry_schedule_parse(const char *text, qod_delivery_opts *o, char *err, size_t errcap)
{
    o->nschedule = 0;
    const char *p = text;
    while (*p) {
        char *end = NULL;
        double v = strtod(p, &end);
        if (end == p || !isfinite(v) || v < 0 || v > 7 * 86400 || (*end && *end != ',') ||
            o->nschedule >= QOD_RETRY_MAX) {
            snprintf(err, errcap, "expected up to %d comma-separated seconds from 0 to 604800", QOD_RETRY_MAX);
            return QOD_ERR_INVALID;
        }
        o->schedule[o->nschedule++] = v;
        p = *end ? end + 1 : end;
    }
    if (!o->nschedule) {
        snprintf(err, errcap, "the retry schedule needs at least one value");
        return QOD_ERR_INVALID;
    }
    return QOD_OK;
}

static void item_free(item *it)
{
    free(it);
}

static int64_t wall_to_mono(int64_t wall_ms)
{
    int64_t now = qod_time_wall_ms();
    return qod_time_mono_ms() + (wall_ms > now ? wall_ms - now : 0);
}

static host *host_of_key(qod_delivery *d, const char *key)
{
    host *h = qod_hmap_get(&d->hosts, key);
    if (!h && (h = calloc(1, sizeof *h))) {
        h->key = strdup(key);
        if (!h->key || qod_hmap_put(&d->hosts, h->key, h) != QOD_OK) {
            free(h->key);
            free(h);
            h = NULL;
        }
        atomic_store(&d->nhosts, qod_hmap_count(&d->hosts));
    }
    return h;
}

static host *host_for(qod_delivery *d, const char *url)
{
    host *h = qod_hmap_get(&d->host_urls, url);
    if (h)
        return h;
    char key[512] = "";
    CURLU *u = curl_url();
    char *scheme = NULL, *hn = NULL, *port = NULL;
    if (u && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK) {
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
        curl_url_get(u, CURLUPART_HOST, &hn, 0);
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT);
        snprintf(key, sizeof key, "%s://%s:%s", scheme ? scheme : "", hn ? hn : "", port ? port : "");
    }
    curl_free(scheme);
    curl_free(hn);
    curl_free(port);
    curl_url_cleanup(u);
    h = host_of_key(d, key);
    /* Most sessions of an app share a few URLs; a cache miss only costs the parse above. */
    char *u_copy = h && qod_hmap_count(&d->host_urls) < HOST_CACHE_MAX ? strdup(url) : NULL;
    if (u_copy && qod_hmap_put(&d->host_urls, u_copy, h) != QOD_OK)
        free(u_copy);
    return h;
}

/* One outcome to write: an event's state, attempts and next due time. */
struct state_write {
    int64_t seq, state, attempts, next_ms;
    char session[40]; /* for the fence of its shard (several nodes) */
    struct state_write *next;
};

/* The outcomes of one store batch, kept until the batch is committed so that a failed batch can be resubmitted. */
typedef struct {
    qod_delivery *d;
    state_write *list; /* oldest first */
} outcome_group;

static void free_writes(state_write *w)
{
    while (w) {
        state_write *n = w->next;
        free(w);
        w = n;
    }
}

/* An outcome that could not be written (disk full) is written again until it sticks: otherwise an acknowledged
 * event would be sent again after a restart, possibly after a later one of its session. Store thread. */
static void outcomes_written(int rc, void *arg)
{
    outcome_group *g = arg;
    if (rc == QOD_OK) {
        free_writes(g->list);
        free(g);
        return;
    }
    qod_delivery *d = g->d;
    pthread_mutex_lock(&d->retry_mu);
    /* retry_writes is newest first: push the group's writes in their order. */
    while (g->list) {
        state_write *w = g->list;
        g->list = w->next;
        w->next = d->retry_writes;
        d->retry_writes = w;
    }
    pthread_mutex_unlock(&d->retry_mu);
    free(g);
}

/* Submits the outcomes gathered since the last flush as one store batch: one savepoint and one completion for
 * many events instead of one each. Loop thread: from the tick through flush_outcomes_due, and at once before a
 * replay's own write, before a rescan and at stop. */
static void flush_outcomes(qod_delivery *d)
{
    if (!d->outcomes)
        return;
    outcome_group *g = calloc(1, sizeof *g);
    qod_store_batch *b = g ? qod_store_batch_new() : NULL;
    int rc = b ? QOD_OK : QOD_ERR_NOMEM;
    for (state_write *w = d->outcomes; w && rc == QOD_OK; w = w->next) {
        if (d->o.fence)
            rc = d->o.fence(d->o.owns_ctx, b, w->session);
        rc = rc ? rc : qod_store_batch_event_state(b, w->seq, w->state, w->attempts, w->next_ms);
    }
    if (g) {
        *g = (outcome_group){d, d->outcomes};
        d->outcomes = NULL;
        d->outcomes_tail = &d->outcomes;
        d->outcomes_n = 0;
    }
    if (rc == QOD_OK && qod_store_submit(d->o.store, b, outcomes_written, g) == QOD_OK)
        return;
    if (rc != QOD_OK)
        qod_store_batch_free(b);
    if (g)
        outcomes_written(QOD_ERR_NOMEM, g);
    /* Without even a group, the writes stay gathered for the next flush. */
}

/* Flushes the gathered outcomes once enough of them, or the oldest, waited long enough; otherwise returns the
 * monotonic ms at which to come back (-1: nothing gathered). */
static int64_t flush_outcomes_due(qod_delivery *d, int64_t now)
{
    if (!d->outcomes)
        return -1;
    if (d->outcomes_n < OUTCOME_FLUSH_MAX && now < d->outcomes_since + OUTCOME_FLUSH_MS)
        return d->outcomes_since + OUTCOME_FLUSH_MS;
    flush_outcomes(d);
    return d->outcomes ? now + OUTCOME_FLUSH_MS : -1; /* still held: the store refused the batch */
}

static void persist_state(qod_delivery *d, const item *it, int state, int64_t next_ms)
{
    state_write *w = calloc(1, sizeof *w);
    if (!w)
        return;
    *w = (state_write){.seq = it->seq, .state = state, .attempts = it->attempts, .next_ms = next_ms};
    if (d->o.fence) /* only several nodes fence their outcomes */
        snprintf(w->session, sizeof w->session, "%s", it->session ? it->session : "");
    if (!d->outcomes)
        d->outcomes_since = qod_time_mono_ms();
    *d->outcomes_tail = w;
    d->outcomes_tail = &w->next;
    d->outcomes_n++;
}

/* Gathers failed outcome writes again, oldest first, at most once a second (loop thread). */
static void retry_state_writes(qod_delivery *d, int64_t now)
{
    if (now < d->retry_writes_at)
        return;
    d->retry_writes_at = now + 1000;
    pthread_mutex_lock(&d->retry_mu);
    state_write *list = d->retry_writes;
    d->retry_writes = NULL;
    pthread_mutex_unlock(&d->retry_mu);
    state_write *rev = NULL;
    while (list) {
        state_write *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    if (!rev)
        return;
    /* Before the outcomes gathered since: within the batch, a later outcome of the same event wins. */
    state_write *last = rev;
    size_t n = 1;
    for (; last->next; n++)
        last = last->next;
    last->next = d->outcomes;
    if (!d->outcomes) {
        d->outcomes_tail = &last->next;
        d->outcomes_since = now;
    }
    d->outcomes = rev;
    d->outcomes_n += n;
}

/* ---- queueing --------------------------------------------------------------------------------------------------- */

static void try_start(qod_delivery *d, sq *q);

static void arm_queue(qod_delivery *d, sq *q)
{
    if (!q->head || q->busy)
        return;
    qod_timers_arm(&d->timers, &q->t, wall_to_mono(q->head->due_wall), 0);
}

/* A URL that answered 410 Gone: nothing is sent to it again, until it is forgotten. */
typedef struct {
    qod_link link; /* in gone_order */
    char url[];
} gone_url;

static void drop_gone(qod_delivery *d, gone_url *g)
{
    qod_hmap_del(&d->gone, g->url);
    qod_list_remove(&d->gone_order, &g->link);
    free(g);
    atomic_store(&d->ngone, qod_hmap_count(&d->gone));
}

/* Adds url to the URLs that answered 410 Gone, once. Past gone_max, the oldest is forgotten, here and in the
 * store: receivers that answer 410 to a URL of their own per session cannot grow memory without bound, and a
 * forgotten URL that is still gone costs one attempt before it is remembered again. On the loop thread, or before
 * it runs. */
static void remember_gone(qod_delivery *d, const char *url)
{
    if (qod_hmap_get(&d->gone, url))
        return;
    size_t len = strlen(url);
    gone_url *g = malloc(sizeof *g + len + 1);
    if (!g)
        return;
    memcpy(g->url, url, len + 1);
    if (qod_hmap_put(&d->gone, g->url, g) != QOD_OK) {
        free(g);
        return;
    }
    qod_list_append(&d->gone_order, &g->link);
    while (qod_hmap_count(&d->gone) > d->o.gone_max) {
        gone_url *old = QOD_LIST_ELEM(d->gone_order.head, gone_url, link);
        QOD_INFO("delivery", "gone_url_forgotten", "url=\"%s\" kept=%zu", old->url, d->o.gone_max);
        qod_store_batch *b = qod_store_batch_new();
        if (b && qod_store_batch_del(b, QOD_TBL_META, old->url) == QOD_OK)
            qod_store_submit(d->o.store, b, NULL, NULL);
        else
            qod_store_batch_free(b);
        drop_gone(d, old);
    }
    atomic_store(&d->ngone, qod_hmap_count(&d->gone));
}

/* Drops the head item (delivered or dead) and moves on to the session's next event. */
static void pop_head(qod_delivery *d, sq *q)
{
    item *it = q->head;
    q->head = it->next;
    if (!q->head)
        q->tail = NULL;
    qod_hmap_del(&d->ids, it->id);
    item_free(it);
    d->loaded--;
    atomic_store(&d->backlog, d->loaded);
    if (d->more && d->loaded < d->o.max_loaded / 2)
        qod_delivery_kick(d);
    if (q->head) {
        arm_queue(d, q);
        return;
    }
    qod_timers_cancel(&d->timers, &q->t);
    qod_hmap_del(&d->queues, q->session);
    free(q->session);
    free(q->url);
    free(q);
}

static void mark_dead(qod_delivery *d, sq *q, const char *why)
{
    item *it = q->head;
    QOD_WARN("delivery", "event_dead", "event_id=%s session=%s attempts=%d why=\"%s\"", it->id, q->session,
             it->attempts, why);
    persist_state(d, it, EV_DEAD, qod_time_wall_ms());
    atomic_fetch_add(&d->dead, 1);
    pop_head(d, q);
}

static void ring_add(qod_delivery *d, host *h)
{
    if (h->in_ring)
        return;
    h->in_ring = true;
    h->ring_next = d->ring;
    d->ring = h;
}

static void wait_for_slot(qod_delivery *d, sq *q)
{
    q->wait_next = NULL;
    if (q->h->wait_tail)
        q->h->wait_tail->wait_next = q;
    else
        q->h->wait_head = q;
    q->h->wait_tail = q;
    ring_add(d, q->h);
}

static sq *wait_pop(host *h)
{
    sq *q = h->wait_head;
    if (q) {
        h->wait_head = q->wait_next;
        if (!h->wait_head)
            h->wait_tail = NULL;
    }
    return q;
}

/* Starts waiting queues while slots are free: hosts in turn, one queue each round. */
static void pump(qod_delivery *d)
{
    bool progress = true;
    while (progress && d->inflight < d->o.global) {
        progress = false;
        host **pp = &d->ring;
        while (*pp && d->inflight < d->o.global) {
            host *h = *pp;
            if (!h->wait_head) {
                h->in_ring = false;
                *pp = h->ring_next;
                continue;
            }
            if (h->inflight < d->o.per_host) {
                sq *q = wait_pop(h);
                q->busy = false;
                try_start(d, q);
                progress = true;
            }
            pp = &h->ring_next;
        }
    }
}

/* ---- one attempt ----------------------------------------------------------------------------------------------- */

static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    attempt *at = clientp;
    (void)purpose;
    /* The exact address curl is about to connect to: checking it here pins the connection to a vetted address,
     * whatever DNS answered before or answers after. */
    at->guard_why = qod_addr_refusal(&a->addr, at->sandbox, at->d->o.allow);
    if (at->guard_why)
        return CURL_SOCKET_BAD;
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static size_t on_header(char *buf, size_t size, size_t n, void *userdata)
{
    attempt *at = userdata;
    size_t len = size * n;
    long s = qod_time_retry_after(buf, len);
    if (s >= 0)
        at->retry_after_s = s;
    return len;
}

static size_t on_body(char *buf, size_t size, size_t n, void *userdata)
{
    (void)buf;
    attempt *at = userdata;
    /* The response body is not used; stop a receiver that streams without end. */
    at->resp_len += size * n;
    return at->resp_len > RESPONSE_BODY_MAX * 256 ? 0 : size * n;
}

/* The signature header: the current secret, plus the previous one during its grace period. */
static int sign_all(const qod_app *app, const char *id, int64_t ts, const char *body, size_t len, qod_buf *sig)
{
    int rc = qod_webhook_sign(app->webhook_secret, id, ts, body, len, sig);
    if (rc == QOD_OK && app->webhook_secret_old[0] && qod_time_wall_ms() < app->webhook_old_until_ms) {
        qod_buf_puts(sig, " ");
        rc = qod_webhook_sign(app->webhook_secret_old, id, ts, body, len, sig);
    }
    return rc;
}

/* Appends one header line to the attempt's list, its text in hdr_text; false when hdr_text is full. */
static bool __attribute__((format(printf, 4, 5))) put_hdr(attempt *at, int *n, size_t *off, const char *fmt, ...)
{
    if (*n >= N_HDRS)
        return false;
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(at->hdr_text + *off, sizeof at->hdr_text - *off, fmt, ap);
    va_end(ap);
    if (len < 0 || (size_t)len >= sizeof at->hdr_text - *off)
        return false;
    at->hdrs[*n] = (struct curl_slist){at->hdr_text + *off, NULL};
    if (*n > 0)
        at->hdrs[*n - 1].next = &at->hdrs[*n];
    *off += (size_t)len + 1;
    (*n)++;
    return true;
}

/* Builds body and headers into the attempt; QOD_ERR_STATE (with *why) when the event must be dropped.
 * token is the unsealed bearer token or NULL (borrowed). */
static int prepare(qod_delivery *d, attempt *at, const item *it, const char *token, const char **why)
{
    qod_app app;
    int rc = qod_apps_get(d->o.apps, it->app, &app);
    if (rc == QOD_ERR_NOTFOUND) {
        *why = "the app was deleted";
        return QOD_ERR_STATE;
    }
    if (rc != QOD_OK)
        return QOD_ERR_BUSY; /* the store could not say (another node's new app): not a reason to give up */
    at->sandbox = app.env == QOD_APP_SANDBOX;
    qod_render_fn render = it->surface < MAX_RENDERERS ? d->render[it->surface] : NULL;
    qod_event_view v = {it->id,    it->session, it->app,     it->state, it->reason,
                        it->extra, token,       it->surface, it->at_ms, it->available_ms};
    qod_buf_reset(&at->body);
    qod_buf_reset(&at->sig);
    const char *ct = "application/json";
    rc = render ? render(&v, &at->body, &ct, &token) : QOD_ERR_STATE;
    if (rc == QOD_RENDER_SKIP)
        return QOD_RENDER_SKIP;
    if (rc != QOD_OK) {
        *why = render ? "the event is not deliverable (its credential expired)" : "no renderer for this API";
        return QOD_ERR_STATE;
    }
    int64_t ts = qod_time_wall_ms() / 1000;
    rc = sign_all(&app, it->id, ts, at->body.data ? at->body.data : "", at->body.len, &at->sig);
    if (rc != QOD_OK) {
        *why = "the app's webhook secret cannot sign";
        return QOD_ERR_STATE;
    }
    int n = 0;
    size_t off = 0;
    bool ok = put_hdr(at, &n, &off, "Content-Type: %s", ct) && put_hdr(at, &n, &off, "webhook-id: %s", it->id) &&
              put_hdr(at, &n, &off, "webhook-timestamp: %lld", (long long)ts) &&
              put_hdr(at, &n, &off, "webhook-signature: %s", at->sig.data) &&
              put_hdr(at, &n, &off, "x-correlator: %s", it->id) && put_hdr(at, &n, &off, "Expect:");
    /* A token too long for a header line is left out rather than cut. */
    if (ok && token && strlen(token) < 2092)
        ok = put_hdr(at, &n, &off, "Authorization: Bearer %s", token);
    at->hdr_len = ok ? off : sizeof at->hdr_text; /* a line cut short may lie past off */
    if (!ok) {
        *why = "the request headers are too long";
        return QOD_ERR_STATE;
    }
    return QOD_OK;
}

/* A new easy handle with the options every request shares; the request's own are set by start_request. */
static CURL *make_easy(qod_delivery *d, attempt *at)
{
    CURL *e = curl_easy_init();
    if (!e)
        return NULL;
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)d->o.timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)(d->o.timeout_ms < 10000 ? d->o.timeout_ms : 10000));
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "Konera-QoD-Webhooks/1.0");
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, at);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, at);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, at);
    curl_easy_setopt(e, CURLOPT_PRIVATE, at);
    if (d->o.ca_file) {
        curl_easy_setopt(e, CURLOPT_CAINFO, d->o.ca_file);
        curl_easy_setopt(e, CURLOPT_CAPATH, "/etc/ssl/certs");
    }
    return e;
}

/* An attempt from the pool, or a new one; NULL when out of memory. */
static attempt *attempt_get(qod_delivery *d)
{
    attempt *at = QOD_LIST_ELEM(d->pool.tail, attempt, link);
    if (at) {
        qod_list_remove(&d->pool, &at->link);
    } else {
        if (!(at = calloc(1, sizeof *at)))
            return NULL;
        at->d = d;
        qod_buf_init(&at->body, 1u << 20);
        qod_buf_init(&at->sig, 1024);
        if (!(at->easy = make_easy(d, at))) {
            free(at);
            return NULL;
        }
    }
    at->q = NULL;
    at->sandbox = false;
    at->guard_why = NULL;
    at->retry_after_s = -1; /* no Retry-After header seen */
    at->resp_len = 0;
    return at;
}

/* Returns a finished (or never started) attempt to the pool; the bearer token leaves memory. */
static void attempt_put(qod_delivery *d, attempt *at)
{
    OPENSSL_cleanse(at->hdr_text, at->hdr_len);
    at->hdr_len = 0;
    if (at->body.cap > POOL_BODY_KEEP)
        qod_buf_dispose(&at->body);
    qod_list_append(&d->pool, &at->link);
}

static void attempt_destroy(attempt *at)
{
    curl_easy_cleanup(at->easy);
    qod_buf_dispose(&at->body);
    qod_buf_dispose(&at->sig);
    OPENSSL_cleanse(at->hdr_text, sizeof at->hdr_text);
    free(at);
}

/* Prepares the head event of q into at and hands it to curl. */
static int start_request(qod_delivery *d, attempt *at, sq *q, const char **why)
{
    item *it = q->head;
    char *token = NULL;
    int rc = QOD_OK;
    if (it->token && qod_seal_decrypt(d->o.seal, it->token, &token) != QOD_OK) {
        *why = "the callback token cannot be unsealed (wrong secrets.key?)";
        rc = QOD_ERR_STATE;
    }
    at->q = q;
    rc = rc ? rc : prepare(d, at, it, token, why);
    if (token) {
        OPENSSL_cleanse(token, strlen(token));
        free(token);
    }
    if (rc != QOD_OK)
        return rc;
    curl_easy_setopt(at->easy, CURLOPT_URL, q->url);
    curl_easy_setopt(at->easy, CURLOPT_POSTFIELDS, at->body.data ? at->body.data : "");
    curl_easy_setopt(at->easy, CURLOPT_POSTFIELDSIZE, (long)at->body.len);
    curl_easy_setopt(at->easy, CURLOPT_HTTPHEADER, &at->hdrs[0]);
    return curl_multi_add_handle(d->multi, at->easy) == CURLM_OK ? QOD_OK : QOD_ERR_NOMEM;
}

static void requeue_now(qod_delivery *d, const char *session, int64_t from_seq);

static void try_start(qod_delivery *d, sq *q)
{
    item *it = q->head;
    if (!it || q->busy)
        return;
    if (q->requeue_from) {
        char *session = strdup(q->session);
        int64_t from = q->requeue_from;
        q->requeue_from = 0;
        if (session)
            requeue_now(d, session, from);
        free(session);
        return;
    }
    if (!q->url[0]) {
        /* A session without a callback URL (CAMARA sink is optional): nothing to send. */
        persist_state(d, it, EV_DELIVERED, qod_time_wall_ms());
        pop_head(d, q);
        return;
    }
    if (qod_hmap_get(&d->gone, q->url)) {
        mark_dead(d, q, "the URL answered 410 Gone before");
        return;
    }
    if (d->inflight >= d->o.global || q->h->inflight >= d->o.per_host) {
        q->busy = true;
        wait_for_slot(d, q);
        return;
    }
    const char *why = "the outbox row is unreadable";
    attempt *at = it->unreadable ? NULL : attempt_get(d);
    int rc = it->unreadable ? QOD_ERR_STATE : at ? start_request(d, at, q, &why) : QOD_ERR_NOMEM;
    if (rc != QOD_OK && at)
        attempt_put(d, at);
    if (rc == QOD_RENDER_SKIP) {
        /* Nothing to send for this API: the event is done. */
        persist_state(d, it, EV_DELIVERED, qod_time_wall_ms());
        pop_head(d, q);
        return;
    }
    if (rc != QOD_OK) {
        if (rc == QOD_ERR_NOMEM || rc == QOD_ERR_BUSY) {
            /* Out of memory, or the store not answering, is transient: try again a little later. */
            q->head->due_wall = qod_time_wall_ms() + 1000;
            arm_queue(d, q);
        } else {
            mark_dead(d, q, why);
        }
        return;
    }
    q->busy = true;
    qod_list_append(&d->running, &at->link);
    it->attempts++;
    d->inflight++;
    q->h->inflight++;
    atomic_fetch_add(&d->attempts, 1);
}

/* ---- outcomes --------------------------------------------------------------------------------------------------- */

static int classify(CURLcode cc, long status, const attempt *at)
{
    if (at->guard_why)
        return R_GUARD;
    switch (cc) {
    case CURLE_OK:
        break;
    case CURLE_OPERATION_TIMEDOUT:
        return R_TIMEOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_GOT_NOTHING:
        return R_CONNECT;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
        return R_TLS;
    default:
        return R_OTHER;
    }
    if (status == 410)
        return R_GONE;
    if (status >= 300 && status < 400)
        return R_HTTP_3XX;
    if (status >= 400 && status < 500)
        return R_HTTP_4XX;
    return R_HTTP_5XX;
}

static void record_latency(qod_delivery *d, const item *it)
{
    double s = (double)(qod_time_wall_ms() - it->created_ms) / 1000.0;
    int b = 0;
    while (b < N_LAT && s > lat_le[b])
        b++;
    atomic_fetch_add(&d->lat[b], 1);
}

static void schedule_retry(qod_delivery *d, sq *q, long status, long retry_after)
{
    item *it = q->head;
    if (it->attempts >= d->o.nschedule) {
        mark_dead(d, q, "the retry schedule is exhausted");
        return;
    }
    double wait = d->o.schedule[it->attempts] * (0.9 + 0.2 * qod_rand_unit());
    if ((status == 429 || status == 503) && retry_after >= 0)
        wait = (double)(retry_after < RETRY_AFTER_MAX_S ? retry_after : RETRY_AFTER_MAX_S);
    it->due_wall = qod_time_wall_ms() + (int64_t)(wait * 1000);
    persist_state(d, it, EV_PENDING, it->due_wall);
    arm_queue(d, q);
}

static void finish_outcome(qod_delivery *d, attempt *at, CURLcode cc);

/* Handles a finished attempt, then an operator replay that waited for it. */
static void finish(qod_delivery *d, attempt *at, CURLcode cc)
{
    int64_t from = at->q->requeue_from;
    char *session = from ? strdup(at->q->session) : NULL;
    at->q->requeue_from = 0;
    finish_outcome(d, at, cc);
    if (session)
        requeue_now(d, session, from);
    free(session);
}

static void finish_outcome(qod_delivery *d, attempt *at, CURLcode cc)
{
    sq *q = at->q;
    qod_list_remove(&d->running, &at->link);
    long status = 0;
    curl_easy_getinfo(at->easy, CURLINFO_RESPONSE_CODE, &status);
    d->inflight--;
    q->h->inflight--;
    q->busy = false;
    item *it = q->head;
    if (cc == CURLE_OK && status >= 200 && status < 300) {
        atomic_fetch_add(&d->delivered, 1);
        record_latency(d, it);
        persist_state(d, it, EV_DELIVERED, qod_time_wall_ms());
        QOD_DEBUG("delivery", "delivered", "event_id=%s session=%s status=%ld attempts=%d", it->id, q->session, status,
                  it->attempts);
        pop_head(d, q);
    } else {
        int r = classify(cc, status, at);
        atomic_fetch_add(&d->failures[r], 1);
        QOD_INFO("delivery", "attempt_failed", "event_id=%s session=%s attempt=%d reason=%s status=%ld curl=\"%s\"",
                 it->id, q->session, it->attempts, reason_names[r], status, curl_easy_strerror(cc));
        if (r == R_GONE) {
            remember_gone(d, q->url);
            /* Remembered across restarts: the receiver said the URL is gone for good. */
            /* And by the other nodes sharing the store (no-op on SQLite). */
            qod_store_batch *b = qod_store_batch_new();
            if (b &&
                qod_store_batch_put(b, QOD_TBL_META, q->url, "gone", "gone", 0, qod_time_wall_ms(), "{}") == QOD_OK &&
                qod_store_batch_notify(b, "gone", q->url) == QOD_OK)
                qod_store_submit(d->o.store, b, NULL, NULL);
            else
                qod_store_batch_free(b);
            mark_dead(d, q, "the receiver answered 410 Gone");
        } else if (r == R_GUARD) {
            mark_dead(d, q, at->guard_why);
        } else {
            schedule_retry(d, q, status, at->retry_after_s);
        }
    }
    attempt_put(d, at);
}

static void check_done(qod_delivery *d)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(d->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        attempt *at = NULL;
        CURL *e = m->easy_handle;
        CURLcode cc = m->data.result;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&at);
        curl_multi_remove_handle(d->multi, e);
        finish(d, at, cc);
    }
    pump(d);
}

static void on_socket_event(void *arg, int fd, uint32_t events)
{
    qod_delivery *d = arg;
    int flags = (events & EPOLLIN ? CURL_CSELECT_IN : 0) | (events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    int running = 0;
    curl_multi_socket_action(d->multi, fd, flags, &running);
    check_done(d);
}

static int on_curl_socket(CURL *e, curl_socket_t s, int what, void *userp, void *socketp)
{
    (void)e;
    (void)socketp;
    qod_delivery *d = userp;
    uint32_t ev = what == CURL_POLL_IN      ? EPOLLIN
                  : what == CURL_POLL_OUT   ? EPOLLOUT
                  : what == CURL_POLL_INOUT ? EPOLLIN | EPOLLOUT
                                            : 0;
    qod_loop_watch(d->loop, s, what == CURL_POLL_REMOVE ? 0 : ev, on_socket_event, d);
    return 0;
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    qod_delivery *d = userp;
    d->curl_due = timeout_ms < 0 ? -1 : qod_time_mono_ms() + timeout_ms;
    return 0;
}

/* ---- the loop side ------------------------------------------------------------------------------------------------
 */

static int mark_used_host(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    ((sq *)val)->h->used = true;
    return 0;
}

typedef struct {
    host **v;
    size_t n, cap;
} host_list;

/* Collects the hosts nothing refers to: no queue (the queues hold the attempts in flight), no attempt counted, not in
 * the ring of hosts with waiting queues. */
static int collect_unused_host(void *arg, const char *key, void *val)
{
    (void)key;
    host_list *l = arg;
    host *h = val;
    if (!h->used && !h->inflight && !h->in_ring && !h->wait_head && l->n < l->cap)
        l->v[l->n++] = h;
    h->used = false;
    return 0;
}

static int free_key(void *arg, const char *key, void *val);

/* Forgets the hosts no queue uses once there are more than HOSTS_SWEEP_AT, at most every HOSTS_SWEEP_MS. The URL
 * cache points at hosts, so it is emptied first (it fills again as sessions come). Loop thread. */
static void sweep_hosts(qod_delivery *d, int64_t now)
{
    size_t n = qod_hmap_count(&d->hosts);
    if (n <= HOSTS_SWEEP_AT || now - d->hosts_swept < HOSTS_SWEEP_MS)
        return;
    d->hosts_swept = now;
    host_list l = {malloc(n * sizeof *l.v), 0, n};
    if (!l.v)
        return;
    qod_hmap_each(&d->host_urls, free_key, NULL);
    qod_hmap_dispose(&d->host_urls);
    qod_hmap_init(&d->host_urls);
    qod_hmap_each(&d->queues, mark_used_host, NULL);
    qod_hmap_each(&d->hosts, collect_unused_host, &l);
    for (size_t i = 0; i < l.n; i++) {
        qod_hmap_del(&d->hosts, l.v[i]->key);
        free(l.v[i]->key);
        free(l.v[i]);
    }
    free(l.v);
    atomic_store(&d->nhosts, qod_hmap_count(&d->hosts));
    QOD_DEBUG("delivery", "hosts_swept", "forgotten=%zu kept=%zu", l.n, qod_hmap_count(&d->hosts));
}

static int64_t tick(void *arg, int64_t now)
{
    qod_delivery *d = arg;
    retry_state_writes(d, now);
    sweep_hosts(d, now);
    if (d->curl_due >= 0 && d->curl_due <= now) {
        int running = 0;
        d->curl_due = -1;
        curl_multi_socket_action(d->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(d);
    }
    for (int n = 0; n < 4096; n++) {
        qod_timer *t = qod_timers_pop_due(&d->timers, now);
        if (!t)
            break;
        try_start(d, (sq *)(void *)((char *)t - offsetof(sq, t)));
    }
    qod_timer *next = qod_timers_peek(&d->timers);
    int64_t due = qod_loop_sooner(next ? next->due : -1, d->curl_due);
    pthread_mutex_lock(&d->retry_mu);
    bool writes = d->retry_writes != NULL;
    pthread_mutex_unlock(&d->retry_mu);
    if (writes)
        due = qod_loop_sooner(due, d->retry_writes_at);
    if (qod_hmap_count(&d->hosts) > HOSTS_SWEEP_AT) /* wake for the next sweep, even with nothing else to do */
        due = qod_loop_sooner(due, d->hosts_swept + HOSTS_SWEEP_MS);
    return qod_loop_sooner(due, flush_outcomes_due(d, now));
}

/* Appends a copy of s (or nothing for NULL) at *p in an item's strings. */
static const char *put_str(char **p, const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    memcpy(*p, s, n);
    const char *r = *p;
    *p += n;
    return r;
}

/* Decodes an outbox row into a new item, strings and all in one allocation. QOD_ERR_INVALID for a row without
 * JSON or URL (skipped, as corrupt); a row missing another field loads as unreadable and goes dead in turn. */
static int item_from_event(const qod_store_event *e, item **out)
{
    *out = NULL;
    cJSON *o = NULL;
    const char *url = NULL;
    /* Outbox rows are written by qodd itself (this node or another): the scans for hostile input are not needed. */
    if (qod_json_parse_own(e->doc, strlen(e->doc), &o) != QOD_OK || qod_json_str(o, "url", &url) != QOD_OK) {
        cJSON_Delete(o);
        return QOD_ERR_INVALID;
    }
    const char *app = "", *state = "", *reason = "", *session = "", *token = NULL;
    bool unreadable = qod_json_str(o, "app", &app) != QOD_OK || qod_json_str(o, "state", &state) != QOD_OK ||
                      qod_json_str(o, "reason", &reason) != QOD_OK || qod_json_str(o, "session", &session) != QOD_OK;
    if (unreadable)
        app = state = reason = session = "";
    else if (qod_json_str(o, "token", &token) != QOD_OK)
        token = NULL;
    int64_t surface = 0, at_ms = 0, available_ms = 0;
    qod_json_int(o, "surface", 0, MAX_RENDERERS - 1, &surface);
    qod_json_int(o, "at_ms", 0, INT64_MAX / 2, &at_ms);
    qod_json_int(o, "available_ms", 0, INT64_MAX / 2, &available_ms);
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(o, "extra");
    char *extra = ex && !cJSON_IsNull(ex) ? cJSON_PrintUnformatted(ex) : NULL;
    const char *strs[] = {url, app, state, reason, session, token, extra};
    size_t len = 0;
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        len += strs[i] ? strlen(strs[i]) + 1 : 0;
    item *it = calloc(1, sizeof *it + len);
    int rc = it ? QOD_OK : QOD_ERR_NOMEM;
    if (it) {
        char *p = it->strs;
        it->url = put_str(&p, url);
        it->app = put_str(&p, app);
        it->state = put_str(&p, state);
        it->reason = put_str(&p, reason);
        it->session = put_str(&p, session);
        it->token = put_str(&p, token);
        it->extra = put_str(&p, extra);
        it->unreadable = unreadable;
        it->surface = (int)surface;
        it->at_ms = at_ms;
        it->available_ms = available_ms;
        snprintf(it->id, sizeof it->id, "%s", e->id);
        it->seq = e->seq;
        it->created_ms = e->created_ms;
        it->attempts = (int)e->attempts;
        it->due_wall = e->next_ms;
    }
    free(extra);
    cJSON_Delete(o);
    *out = it;
    return rc;
}

static sq *queue_for(qod_delivery *d, const char *session, const char *url)
{
    sq *q = qod_hmap_get(&d->queues, session);
    if (q || !(q = calloc(1, sizeof *q)))
        return q;
    q->session = strdup(session);
    q->url = strdup(url);
    q->h = host_for(d, url);
    qod_timer_init(&q->t, 0);
    if (!q->session || !q->url || !q->h || qod_hmap_put(&d->queues, q->session, q) != QOD_OK) {
        free(q->session);
        free(q->url);
        free(q);
        q = NULL;
    }
    return q;
}

/* True when an outcome of seq still waits to be written again (the store refused it): the store's row is stale. */
static bool outcome_unwritten(qod_delivery *d, int64_t seq)
{
    bool found = false;
    pthread_mutex_lock(&d->retry_mu);
    for (state_write *w = d->retry_writes; w && !found; w = w->next)
        found = w->seq == seq;
    pthread_mutex_unlock(&d->retry_mu);
    return found;
}

/* Past last_seq, the scan only ever looks at events after it: it moves over an event once that event is loaded or
 * needs no loading, never over one left in the store for want of room. */
static void seen(qod_delivery *d, int64_t seq)
{
    if (seq > d->last_seq)
        d->last_seq = seq;
}

static int load_one(void *arg, const qod_store_event *e)
{
    qod_delivery *d = arg;
    d->scanned++;
    if (qod_hmap_get(&d->ids, e->id) || (d->o.owns && !d->o.owns(d->o.owns_ctx, e->session))) {
        /* Loaded already, or another node's session: that node delivers it (qod_delivery_rescan if it becomes
         * ours). */
        seen(d, e->seq);
        return 0;
    }
    if (d->rescanning && outcome_unwritten(d, e->seq)) {
        seen(d, e->seq); /* delivered (or dead) already: only its outcome waits for the store */
        return 0;
    }
    if (d->loaded >= d->o.max_loaded) {
        d->more = true;
        return 1;
    }
    item *it = NULL;
    int rc = item_from_event(e, &it);
    if (rc == QOD_ERR_INVALID) {
        QOD_ERROR("delivery", "corrupt_event", "seq=%lld", (long long)e->seq);
        seen(d, e->seq);
        return 0;
    }
    sq *q = it ? queue_for(d, e->session, it->url) : NULL;
    if (!q || qod_hmap_put(&d->ids, it->id, it) != QOD_OK) {
        item_free(it);
        d->more = true;
        return 1;
    }
    seen(d, e->seq);
    /* A due time is never further away than its schedule step: a wall clock stepped back must not park an
     * event (the stored time is wall-clock so that it survives restarts). */
    int64_t now_wall = qod_time_wall_ms();
    double step = d->o.schedule[it->attempts < d->o.nschedule ? it->attempts : d->o.nschedule - 1];
    int64_t latest = now_wall + (int64_t)(step * 1100) + 1000;
    if (it->due_wall > latest)
        it->due_wall = latest;
    if (it->attempts == 0 && d->o.schedule[0] > 0 && e->next_ms == e->created_ms)
        it->due_wall += (int64_t)(d->o.schedule[0] * 1000); /* value 0 of the schedule: the wait before attempt 0 */
    if (q->tail)
        q->tail->next = it;
    else
        q->head = it;
    q->tail = it;
    d->loaded++;
    if (q->head == it)
        arm_queue(d, q);
    return 0;
}

static void load_job(void *arg)
{
    qod_delivery *d = arg;
    atomic_store(&d->kick_posted, false);
    d->more = false;
    /* A scan reads as many events as there is room left, counting those it passes over (loaded already, another
     * node's): while one comes back full with room still free, the next part is read. */
    while (!d->more && d->loaded < d->o.max_loaded) {
        size_t room = d->o.max_loaded - d->loaded;
        d->scanned = 0;
        if (qod_store_scan_events(d->o.store, EV_PENDING, d->last_seq, room, load_one, d) != QOD_OK ||
            d->scanned < room)
            break;
    }
    /* Room full: the store may hold more, loaded once half the room is free again (pop_head). Nothing else would
     * ask: no commit may come. */
    if (d->loaded >= d->o.max_loaded)
        d->more = true;
    atomic_store(&d->backlog, d->loaded);
    tick(d, qod_time_mono_ms());
}

/* Replays a session's events from from_seq, in order: forget them in memory, mark them pending in the store (at
 * once, on this thread, so no result of ours can overwrite the replay), and load them again. Runs only while
 * the session has no attempt in flight or waiting. */
static void requeue_now(qod_delivery *d, const char *session, int64_t from_seq)
{
    sq *q = qod_hmap_get(&d->queues, session);
    if (q && q->busy) {
        q->requeue_from = q->requeue_from && q->requeue_from < from_seq ? q->requeue_from : from_seq;
        return;
    }
    while (q) {
        bool last = !q->head || !q->head->next;
        if (q->head)
            pop_head(d, q); /* frees q with its last item */
        if (last)
            break;
    }
    /* Outcomes gathered so far go first: committed after the replay they would undo it. */
    flush_outcomes(d);
    qod_store_batch *b = qod_store_batch_new();
    int rc = b ? qod_store_batch_event_requeue(b, session, from_seq, qod_time_wall_ms()) : QOD_ERR_NOMEM;
    if (rc == QOD_OK && d->o.owns && !d->o.owns(d->o.owns_ctx, session)) {
        /* Another node delivers this session: it replays it too (its memory may hold later events). If it is
         * down, the node that takes the session over finds the events pending. */
        char payload[64];
        snprintf(payload, sizeof payload, "%lld %s", (long long)from_seq, session);
        rc = qod_store_batch_notify(b, "requeue", payload);
    }
    if (rc == QOD_OK)
        qod_store_commit(d->o.store, b);
    else
        qod_store_batch_free(b);
    QOD_INFO("delivery", "replay", "session=%s from_seq=%lld", session, (long long)from_seq);
    d->last_seq = 0;
    load_job(d);
}

typedef struct {
    qod_delivery *d;
    char *session;
    int64_t from_seq;
} requeue_job_arg;

static void requeue_job(void *arg)
{
    requeue_job_arg *j = arg;
    requeue_now(j->d, j->session, j->from_seq);
    free(j->session);
    free(j);
}

int qod_delivery_requeue(qod_delivery *d, const char *session, int64_t from_seq)
{
    requeue_job_arg *j = calloc(1, sizeof *j);
    if (!j || !(j->session = strdup(session))) {
        free(j);
        return QOD_ERR_NOMEM;
    }
    j->d = d;
    j->from_seq = from_seq;
    int rc = qod_loop_post(d->loop, requeue_job, j);
    if (rc != QOD_OK) {
        free(j->session);
        free(j);
    }
    return rc;
}

typedef struct {
    qod_delivery *d;
    char *url;
} gone_job_arg;

static void gone_job(void *arg)
{
    gone_job_arg *j = arg;
    remember_gone(j->d, j->url);
    free(j->url);
    free(j);
}

static void forget_gone_job(void *arg)
{
    gone_job_arg *j = arg;
    gone_url *g = qod_hmap_get(&j->d->gone, j->url);
    if (g)
        drop_gone(j->d, g);
    free(j->url);
    free(j);
}

static int post_gone_job(qod_delivery *d, const char *url, void (*fn)(void *arg))
{
    gone_job_arg *j = calloc(1, sizeof *j);
    if (!j || !(j->url = strdup(url))) {
        free(j);
        return QOD_ERR_NOMEM;
    }
    j->d = d;
    int rc = qod_loop_post(d->loop, fn, j);
    if (rc != QOD_OK) {
        free(j->url);
        free(j);
    }
    return rc;
}

int qod_delivery_gone(qod_delivery *d, const char *url)
{
    return post_gone_job(d, url, gone_job);
}

int qod_delivery_forget_gone(qod_delivery *d, const char *url)
{
    return post_gone_job(d, url, forget_gone_job);
}

static void rescan_job(void *arg)
{
    qod_delivery *d = arg;
    if (d->rescan_held) {
        d->rescan_waiting = true;
        return;
    }
    /* The outcomes of attempts made so far must be in the store before it is read from the start again:
     * otherwise an event delivered a moment ago reads as pending and goes out again, after its session's later
     * events (an empty commit is the barrier: batches commit in order). */
    flush_outcomes(d);
    qod_store_batch *barrier = qod_store_batch_new();
    if (barrier)
        qod_store_commit(d->o.store, barrier);
    if (d->o.owns_refresh)
        d->o.owns_refresh(d->o.owns_ctx);
    d->rescanning = true;
    d->last_seq = 0;
    load_job(d);
    d->rescanning = false;
}

int qod_delivery_rescan(qod_delivery *d)
{
    return qod_loop_post(d->loop, rescan_job, d);
}

static void hold_rescans_job(void *arg)
{
    ((qod_delivery *)arg)->rescan_held = true;
}

static void release_rescans_job(void *arg)
{
    qod_delivery *d = arg;
    d->rescan_held = false;
    if (d->rescan_waiting) {
        d->rescan_waiting = false;
        rescan_job(d);
    }
}

int qod_delivery_hold_rescans(qod_delivery *d, bool hold)
{
    return qod_loop_post(d->loop, hold ? hold_rescans_job : release_rescans_job, d);
}

void qod_delivery_kick(void *arg)
{
    qod_delivery *d = arg;
    if (!atomic_exchange(&d->kick_posted, true) && qod_loop_post(d->loop, load_job, d) != QOD_OK)
        atomic_store(&d->kick_posted, false);
}

/* ---- lifecycle and metrics ------------------------------------------------------------------------------------------
 */

int qod_delivery_create(const qod_delivery_opts *opts, qod_delivery **out)
{
    *out = NULL;
    qod_delivery *d = calloc(1, sizeof *d);
    if (!d)
        return QOD_ERR_NOMEM;
    d->o = *opts;
    if (d->o.per_host <= 0)
        d->o.per_host = 8;
    if (d->o.global <= 0)
        d->o.global = 512;
    if (d->o.max_loaded == 0)
        d->o.max_loaded = 200000;
    if (d->o.gone_max == 0)
        d->o.gone_max = 100000;
    d->curl_due = -1;
    d->outcomes_tail = &d->outcomes;
    pthread_mutex_init(&d->retry_mu, NULL);
    qod_hmap_init(&d->queues);
    qod_hmap_init(&d->ids);
    qod_hmap_init(&d->hosts);
    qod_hmap_init(&d->host_urls);
    qod_hmap_init(&d->gone);
    qod_timers_init(&d->timers);
    int rc = qod_loop_create(&d->loop);
    if (rc == QOD_OK)
        qod_loop_set_name(d->loop, "qod-delivery");
    d->multi = rc == QOD_OK ? curl_multi_init() : NULL;
    if (!d->multi) {
        qod_delivery_destroy(d);
        return rc ? rc : QOD_ERR_NOMEM;
    }
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
    curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)d->o.per_host);
    curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)d->o.global);
    *out = d;
    return QOD_OK;
}

void qod_delivery_set_renderer(qod_delivery *d, int surface, qod_render_fn fn)
{
    if (surface >= 0 && surface < MAX_RENDERERS)
        d->render[surface] = fn;
}

static int load_gone(void *arg, const qod_store_row *r)
{
    remember_gone(arg, r->key); /* the scan reads the "gone" rows only */
    return 0;
}

int qod_delivery_start(qod_delivery *d)
{
    if (d->o.owns_refresh)
        d->o.owns_refresh(d->o.owns_ctx); /* the thread does not run yet */
    qod_store_scan(d->o.store, QOD_TBL_META, "gone", load_gone, d);
    int rc = qod_loop_add_tick(d->loop, tick, d);
    rc = rc ? rc : qod_loop_start(d->loop);
    if (rc == QOD_OK)
        qod_delivery_kick(d);
    return rc;
}

void qod_delivery_stop(qod_delivery *d)
{
    if (!d || !d->loop)
        return;
    qod_loop_stop(d->loop);
    /* The outcomes the thread gathered last go to the store, which is still open. */
    flush_outcomes(d);
}

static int free_queue(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    sq *q = val;
    for (item *it = q->head, *next; it; it = next) {
        next = it->next;
        item_free(it);
    }
    free(q->session);
    free(q->url);
    free(q);
    return 0;
}

static int free_host(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    host *h = val;
    free(h->key);
    free(h);
    return 0;
}

static int free_gone(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    free(val);
    return 0;
}

static int free_key(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)val;
    free((char *)key);
    return 0;
}

void qod_delivery_destroy(qod_delivery *d)
{
    if (!d)
        return;
    qod_loop_stop(d->loop);
    if (d->multi) {
        /* The loop is gone by now: curl must not call back into it while handles are removed. */
        curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, NULL);
        curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, NULL);
    }
    /* Attempts still in flight are abandoned: their events stay pending in the store and go out after restart. */
    for (attempt *at; (at = QOD_LIST_ELEM(d->running.head, attempt, link)) != NULL;) {
        qod_list_remove(&d->running, &at->link);
        curl_multi_remove_handle(d->multi, at->easy);
        attempt_destroy(at);
    }
    for (attempt *at; (at = QOD_LIST_ELEM(d->pool.head, attempt, link)) != NULL;) {
        qod_list_remove(&d->pool, &at->link);
        attempt_destroy(at);
    }
    curl_multi_cleanup(d->multi);
    qod_loop_destroy(d->loop);
    free_writes(d->outcomes);
    qod_hmap_each(&d->queues, free_queue, NULL);
    qod_hmap_each(&d->hosts, free_host, NULL);
    qod_hmap_each(&d->gone, free_gone, NULL);
    qod_hmap_each(&d->host_urls, free_key, NULL);
    qod_hmap_dispose(&d->queues);
    qod_hmap_dispose(&d->ids);
    qod_hmap_dispose(&d->hosts);
    qod_hmap_dispose(&d->host_urls);
    qod_hmap_dispose(&d->gone);
    qod_timers_dispose(&d->timers);
    free_writes(d->retry_writes);
    pthread_mutex_destroy(&d->retry_mu);
    free(d);
}

void qod_delivery_metrics(void *arg, qod_buf *out)
{
    qod_delivery *d = arg;
    qod_buf_printf(out,
                   "# HELP qod_delivery_attempts_total Callback delivery attempts.\n"
                   "# TYPE qod_delivery_attempts_total counter\nqod_delivery_attempts_total %llu\n"
                   "# HELP qod_delivery_success_total Callbacks acknowledged with a 2xx.\n"
                   "# TYPE qod_delivery_success_total counter\nqod_delivery_success_total %llu\n"
                   "# HELP qod_delivery_dead_total Callbacks given up after the last attempt (or 410, or guard).\n"
                   "# TYPE qod_delivery_dead_total counter\nqod_delivery_dead_total %llu\n"
                   "# HELP qod_delivery_backlog Callback events waiting in memory.\n"
                   "# TYPE qod_delivery_backlog gauge\nqod_delivery_backlog %llu\n"
                   "# HELP qod_delivery_hosts Callback receivers known (scheme, host and port).\n"
                   "# TYPE qod_delivery_hosts gauge\nqod_delivery_hosts %llu\n"
                   "# HELP qod_delivery_gone_urls Callback URLs that answered 410 Gone, to which nothing is sent.\n"
                   "# TYPE qod_delivery_gone_urls gauge\nqod_delivery_gone_urls %llu\n"
                   "# HELP qod_delivery_failures_total Failed attempts by reason.\n"
                   "# TYPE qod_delivery_failures_total counter\n",
                   (unsigned long long)atomic_load(&d->attempts), (unsigned long long)atomic_load(&d->delivered),
                   (unsigned long long)atomic_load(&d->dead), (unsigned long long)atomic_load(&d->backlog),
                   (unsigned long long)atomic_load(&d->nhosts), (unsigned long long)atomic_load(&d->ngone));
    for (int r = 0; r < R_COUNT; r++)
        qod_buf_printf(out, "qod_delivery_failures_total{reason=\"%s\"} %llu\n", reason_names[r],
                       (unsigned long long)atomic_load(&d->failures[r]));
    qod_buf_puts(out, "# HELP qod_delivery_latency_seconds From the status change to its acknowledged delivery.\n"
                      "# TYPE qod_delivery_latency_seconds histogram\n");
    unsigned long long cum = 0;
    for (int b = 0; b <= N_LAT; b++) {
        cum += atomic_load(&d->lat[b]);
        if (b < N_LAT)
            qod_buf_printf(out, "qod_delivery_latency_seconds_bucket{le=\"%g\"} %llu\n", lat_le[b], cum);
        else
            qod_buf_printf(out, "qod_delivery_latency_seconds_bucket{le=\"+Inf\"} %llu\n", cum);
    }
    qod_buf_printf(out, "qod_delivery_latency_seconds_count %llu\n", cum);
}
