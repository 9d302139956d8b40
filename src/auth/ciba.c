#include "auth/ciba.h"

#include "util/err.h"
#include "util/hmap.h"
#include "util/list.h"
#include "util/rand.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Expired requests dropped per start at most: the work a start does stays bounded, and starts come faster than
 * requests expire only while the table is full. */
#define CIBA_SWEEP 64
/* How long an expired request is kept, so that the app's next poll learns it expired (expired_token) rather than
 * that it never existed; while the table is half full, expired requests are dropped at once. */
#define CIBA_KEEP_EXPIRED_MS 60000

typedef struct req {
    qod_link link; /* in the order of their start, so of their expiry (one lifetime for all) */
    char id[48];
    qod_ciba_grant g;
    int64_t expires_ms;
    int64_t last_poll_ms;
    int64_t interval_ms;
    bool approved;
} req;

struct qod_ciba {
    pthread_mutex_t mu;
    qod_hmap reqs;
    qod_list order;
};

qod_ciba *qod_ciba_create(void)
{
    qod_ciba *c = calloc(1, sizeof *c);
    if (c) {
        pthread_mutex_init(&c->mu, NULL);
        qod_hmap_init(&c->reqs);
    }
    return c;
}

static int free_req(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    free(val);
    return 0;
}

void qod_ciba_destroy(qod_ciba *c)
{
    if (!c)
        return;
    qod_hmap_each(&c->reqs, free_req, NULL);
    qod_hmap_dispose(&c->reqs);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* Forgets a request; caller holds the lock. */
static void drop(qod_ciba *c, req *r)
{
    qod_hmap_del(&c->reqs, r->id);
    qod_list_remove(&c->order, &r->link);
    free(r);
}

/* Drops expired requests from the oldest on, at most CIBA_SWEEP; caller holds the lock. A request whose poll finds
 * it expired is dropped then, so the table holds only the requests of the last three minutes. */
static void sweep(qod_ciba *c, int64_t now)
{
    int64_t before = qod_hmap_count(&c->reqs) >= QOD_CIBA_MAX / 2 ? now : now - CIBA_KEEP_EXPIRED_MS;
    for (int i = 0; i < CIBA_SWEEP; i++) {
        req *oldest = QOD_LIST_ELEM(c->order.head, req, link);
        if (!oldest || oldest->expires_ms > before)
            break;
        drop(c, oldest);
    }
}

int qod_ciba_start(qod_ciba *c, const qod_ciba_grant *g, bool approved, int64_t now_ms, char *id, size_t cap)
{
    req *r = calloc(1, sizeof *r);
    if (!r)
        return QOD_ERR_NOMEM;
    int rc = qod_rand_token(24, r->id, sizeof r->id);
    r->g = *g;
    r->expires_ms = now_ms + QOD_CIBA_TTL_S * 1000;
    r->interval_ms = QOD_CIBA_INTERVAL_S * 1000;
    r->approved = approved;
    pthread_mutex_lock(&c->mu);
    sweep(c, now_ms);
    if (rc == QOD_OK && qod_hmap_count(&c->reqs) >= QOD_CIBA_MAX)
        rc = QOD_ERR_LIMIT;
    if (rc == QOD_OK)
        rc = qod_hmap_put(&c->reqs, r->id, r);
    if (rc == QOD_OK)
        qod_list_append(&c->order, &r->link);
    pthread_mutex_unlock(&c->mu);
    if (rc != QOD_OK) {
        free(r);
        return rc;
    }
    snprintf(id, cap, "%s", r->id);
    return QOD_OK;
}

int qod_ciba_approve(qod_ciba *c, const char *id, int64_t now_ms)
{
    pthread_mutex_lock(&c->mu);
    req *r = qod_hmap_get(&c->reqs, id);
    int rc = r && r->expires_ms > now_ms ? QOD_OK : QOD_ERR_NOTFOUND;
    if (rc == QOD_OK)
        r->approved = true;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

qod_ciba_poll qod_ciba_poll_token(qod_ciba *c, const char *id, const char *client_id, int64_t now_ms,
                                  qod_ciba_grant *out)
{
    qod_ciba_poll res = QOD_CIBA_INVALID;
    pthread_mutex_lock(&c->mu);
    req *r = qod_hmap_get(&c->reqs, id);
    if (!r || strcmp(r->g.client_id, client_id) != 0) {
        res = QOD_CIBA_INVALID;
    } else if (r->expires_ms <= now_ms) {
        res = QOD_CIBA_EXPIRED;
        drop(c, r);
    } else if (r->approved) {
        res = QOD_CIBA_GRANTED;
        *out = r->g;
        drop(c, r);
    } else if (r->last_poll_ms && now_ms - r->last_poll_ms < r->interval_ms) {
        /* CIBA §11: polling too fast adds five seconds to the interval. */
        r->interval_ms += 5000;
        r->last_poll_ms = now_ms;
        res = QOD_CIBA_SLOW_DOWN;
    } else {
        r->last_poll_ms = now_ms;
        res = QOD_CIBA_PENDING;
    }
    pthread_mutex_unlock(&c->mu);
    return res;
}

typedef struct {
    qod_buf *out;
    int64_t now;
    bool first;
} list_ctx;

static int list_one(void *arg, const char *key, void *val)
{
    (void)key;
    list_ctx *l = arg;
    const req *r = val;
    if (r->expires_ms <= l->now || r->approved)
        return 0;
    qod_buf_printf(l->out, "%s{\"auth_req_id\":\"%s\",\"client_id\":\"%s\",\"subject\":", l->first ? "" : ",", r->id,
                   r->g.client_id);
    qod_buf_json_str(l->out, r->g.subject);
    qod_buf_puts(l->out, ",\"scope\":");
    qod_buf_json_str(l->out, r->g.scope);
    qod_buf_printf(l->out, ",\"expires_in\":%lld}", (long long)((r->expires_ms - l->now) / 1000));
    l->first = false;
    return 0;
}

int qod_ciba_list(qod_ciba *c, int64_t now_ms, qod_buf *out)
{
    list_ctx l = {out, now_ms, true};
    qod_buf_puts(out, "[");
    pthread_mutex_lock(&c->mu);
    qod_hmap_each(&c->reqs, list_one, &l);
    pthread_mutex_unlock(&c->mu);
    return qod_buf_puts(out, "]");
}
