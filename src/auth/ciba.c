#include "auth/ciba.h"

#include "util/err.h"
#include "util/hmap.h"
#include "util/rand.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CIBA_MAX 100000

typedef struct {
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

typedef struct {
    int64_t now;
    req *victim;
} sweep_ctx;

static int find_expired(void *arg, const char *key, void *val)
{
    (void)key;
    sweep_ctx *s = arg;
    req *r = val;
    if (r->expires_ms <= s->now) {
        s->victim = r;
        return 1;
    }
    return 0;
}

/* Drops up to a few expired requests; caller holds the lock. Bounded work per call. */
static void sweep(qod_ciba *c, int64_t now)
{
    for (int i = 0; i < 8; i++) {
        sweep_ctx s = {now, NULL};
        qod_hmap_each(&c->reqs, find_expired, &s);
        if (!s.victim)
            return;
        qod_hmap_del(&c->reqs, s.victim->id);
        free(s.victim);
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
    if (qod_hmap_count(&c->reqs) >= CIBA_MAX / 2)
        sweep(c, now_ms);
    if (rc == QOD_OK && qod_hmap_count(&c->reqs) >= CIBA_MAX)
        rc = QOD_ERR_LIMIT;
    if (rc == QOD_OK)
        rc = qod_hmap_put(&c->reqs, r->id, r);
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
        qod_hmap_del(&c->reqs, id);
        free(r);
    } else if (r->approved) {
        res = QOD_CIBA_GRANTED;
        *out = r->g;
        qod_hmap_del(&c->reqs, id);
        free(r);
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
