#include "core/registry.h"

#include "util/err.h"
#include "util/hmap.h"
#include "util/json.h"
#include "util/log.h"
#include "util/time.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct qod_registry {
    qod_store *st;
    pthread_rwlock_t lock;
    qod_hmap by_phone; /* phone → qod_subscriber* (owned) */
    qod_hmap by_ip;    /* IPv4 text or IPv6 /64 → qod_subscriber* (borrowed from by_phone) */
};

int qod_subscriber_to_json(const qod_subscriber *s, qod_buf *out)
{
    return qod_buf_printf(out, "{\"phone\":\"%s\",\"ipv4\":\"%s\",\"ipv6\":\"%s\",\"cell\":%d,\"eligible\":%s}",
                          s->phone, s->ipv4, s->ipv6, s->cell, s->eligible ? "true" : "false");
}

static int from_json(const char *doc, qod_subscriber *s)
{
    cJSON *o = NULL;
    char err[128];
    const char *phone = NULL, *v4 = NULL, *v6 = NULL;
    int64_t cell = 0;
    memset(s, 0, sizeof *s);
    int rc = qod_json_parse(doc, strlen(doc), 4, &o, err, sizeof err);
    rc = rc ? rc : qod_json_str(o, "phone", &phone);
    rc = rc ? rc : qod_json_str(o, "ipv4", &v4);
    rc = rc ? rc : qod_json_str(o, "ipv6", &v6);
    rc = rc ? rc : qod_json_int(o, "cell", 0, QOD_CELL_MAX, &cell);
    rc = rc ? rc : qod_json_bool(o, "eligible", &s->eligible);
    if (rc == QOD_OK && (!qod_phone_valid(phone) || strlen(v4) >= sizeof s->ipv4 || strlen(v6) >= sizeof s->ipv6))
        rc = QOD_ERR_INVALID;
    if (rc == QOD_OK) {
        snprintf(s->phone, sizeof s->phone, "%s", phone);
        snprintf(s->ipv4, sizeof s->ipv4, "%s", v4);
        snprintf(s->ipv6, sizeof s->ipv6, "%s", v6);
        s->cell = (int)cell;
    }
    cJSON_Delete(o);
    return rc;
}

static void unindex(qod_registry *r, qod_subscriber *s)
{
    if (s->ipv4[0] && qod_hmap_get(&r->by_ip, s->ipv4) == s)
        qod_hmap_del(&r->by_ip, s->ipv4);
    if (s->ipv6_net[0] && qod_hmap_get(&r->by_ip, s->ipv6_net) == s)
        qod_hmap_del(&r->by_ip, s->ipv6_net);
}

/* Inserts a copy; caller holds the write lock. */
static int put_locked(qod_registry *r, const qod_subscriber *in)
{
    qod_subscriber *s = malloc(sizeof *s);
    if (!s)
        return QOD_ERR_NOMEM;
    *s = *in;
    if (!s->ipv6[0] || !qod_ipv6_net64(s->ipv6, s->ipv6_net))
        s->ipv6_net[0] = '\0';
    qod_subscriber *old = qod_hmap_get(&r->by_phone, in->phone);
    if (old)
        unindex(r, old);
    int rc = qod_hmap_put(&r->by_phone, s->phone, s);
    if (rc == QOD_OK && s->ipv4[0])
        rc = qod_hmap_put(&r->by_ip, s->ipv4, s);
    if (rc == QOD_OK && s->ipv6_net[0])
        rc = qod_hmap_put(&r->by_ip, s->ipv6_net, s);
    free(old);
    return rc;
}

static int load_row(void *arg, const qod_store_row *row)
{
    qod_registry *r = arg;
    qod_subscriber s;
    if (from_json(row->doc, &s) == QOD_OK)
        put_locked(r, &s);
    else
        QOD_ERROR("registry", "corrupt_row", "phone=%s", row->key);
    return 0;
}

int qod_registry_create(qod_store *st, qod_registry **out)
{
    *out = NULL;
    qod_registry *r = calloc(1, sizeof *r);
    if (!r)
        return QOD_ERR_NOMEM;
    r->st = st;
    pthread_rwlock_init(&r->lock, NULL);
    qod_hmap_init(&r->by_phone);
    qod_hmap_init(&r->by_ip);
    int rc = qod_store_scan(st, QOD_TBL_DEVICES, NULL, load_row, r);
    if (rc != QOD_OK) {
        qod_registry_destroy(r);
        return rc;
    }
    *out = r;
    return QOD_OK;
}

static int free_sub(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    free(val);
    return 0;
}

void qod_registry_destroy(qod_registry *r)
{
    if (!r)
        return;
    qod_hmap_each(&r->by_phone, free_sub, NULL);
    qod_hmap_dispose(&r->by_phone);
    qod_hmap_dispose(&r->by_ip);
    pthread_rwlock_destroy(&r->lock);
    free(r);
}

static int commit_put(qod_registry *r, const qod_subscriber *s)
{
    qod_buf doc;
    qod_buf_init(&doc, 0);
    qod_store_batch *b = qod_store_batch_new();
    int rc = b ? qod_subscriber_to_json(s, &doc) : QOD_ERR_NOMEM;
    rc = rc ? rc : qod_store_batch_put(b, QOD_TBL_DEVICES, s->phone, "", s->ipv4, s->eligible, s->cell, doc.data);
    rc = rc ? rc : qod_store_batch_notify(b, "devices", s->phone);
    qod_buf_dispose(&doc);
    if (rc != QOD_OK) {
        qod_store_batch_free(b);
        return rc;
    }
    return qod_store_commit(r->st, b);
}

int qod_registry_put(qod_registry *r, const qod_subscriber *in, char *err, size_t errcap)
{
    qod_subscriber s = *in;
    if (!qod_phone_valid(s.phone)) {
        snprintf(err, errcap, "phone must be E.164 with '+', e.g. +14155550123");
        return QOD_ERR_INVALID;
    }
    if ((s.ipv4[0] && !qod_ipv4_norm(in->ipv4, s.ipv4)) || (s.ipv6[0] && !qod_ipv6_norm(in->ipv6, s.ipv6))) {
        snprintf(err, errcap, "ipv4/ipv6 must be single addresses");
        return QOD_ERR_INVALID;
    }
    if (s.cell < 0 || s.cell > QOD_CELL_MAX) {
        snprintf(err, errcap, "cell must be an integer from 0 to %d", QOD_CELL_MAX);
        return QOD_ERR_INVALID;
    }
    /* One IPv4 address or IPv6 /64, one subscriber: otherwise which one a session reaches would depend on
     * history. */
    char net[QOD_IPV6_NET_LEN] = "";
    if (s.ipv6[0])
        qod_ipv6_net64(s.ipv6, net);
    pthread_rwlock_rdlock(&r->lock);
    const qod_subscriber *h4 = s.ipv4[0] ? qod_hmap_get(&r->by_ip, s.ipv4) : NULL;
    const qod_subscriber *h6 = net[0] ? qod_hmap_get(&r->by_ip, net) : NULL;
    const qod_subscriber *holder = h4 && strcmp(h4->phone, s.phone) ? h4 : h6 && strcmp(h6->phone, s.phone) ? h6 : NULL;
    if (holder)
        snprintf(err, errcap, "that IP address (or IPv6 /64) already belongs to %s", holder->phone);
    pthread_rwlock_unlock(&r->lock);
    if (holder)
        return QOD_ERR_EXISTS;
    int rc = commit_put(r, &s);
    if (rc == QOD_OK) {
        pthread_rwlock_wrlock(&r->lock);
        rc = put_locked(r, &s);
        pthread_rwlock_unlock(&r->lock);
    }
    if (rc != QOD_OK)
        snprintf(err, errcap, "%s", qod_strerror(rc));
    return rc;
}

/* Drops phone's subscriber from memory. */
static void forget(qod_registry *r, const char *phone)
{
    pthread_rwlock_wrlock(&r->lock);
    qod_subscriber *s = qod_hmap_del(&r->by_phone, phone);
    if (s)
        unindex(r, s);
    free(s);
    pthread_rwlock_unlock(&r->lock);
}

int qod_registry_remove(qod_registry *r, const char *phone)
{
    pthread_rwlock_rdlock(&r->lock);
    bool known = qod_hmap_get(&r->by_phone, phone) != NULL;
    pthread_rwlock_unlock(&r->lock);
    if (!known)
        return QOD_ERR_NOTFOUND;
    qod_store_batch *b = qod_store_batch_new();
    int rc = b ? qod_store_batch_del(b, QOD_TBL_DEVICES, phone) : QOD_ERR_NOMEM;
    rc = rc ? rc : qod_store_batch_notify(b, "devices", phone);
    if (rc != QOD_OK) {
        qod_store_batch_free(b);
        return rc;
    }
    rc = qod_store_commit(r->st, b);
    if (rc == QOD_OK) {
        forget(r, phone);
    }
    return rc;
}

static void refresh_row(void *arg, const qod_store_row *row)
{
    qod_registry *r = arg;
    qod_subscriber s;
    if (from_json(row->doc, &s) != QOD_OK) {
        QOD_ERROR("registry", "corrupt_row", "phone=%s", row->key);
        return;
    }
    pthread_rwlock_wrlock(&r->lock);
    put_locked(r, &s);
    pthread_rwlock_unlock(&r->lock);
}

int qod_registry_refresh(qod_registry *r, const char *phone)
{
    if (phone) {
        int rc = qod_store_get(r->st, QOD_TBL_DEVICES, phone, refresh_row, r);
        if (rc != QOD_ERR_NOTFOUND)
            return rc;
        forget(r, phone);
        return QOD_OK;
    }
    /* Everything: fresh maps from the store replace those in memory. */
    qod_registry fresh = {.st = r->st};
    qod_hmap_init(&fresh.by_phone);
    qod_hmap_init(&fresh.by_ip);
    int rc = qod_store_scan(r->st, QOD_TBL_DEVICES, NULL, load_row, &fresh);
    pthread_rwlock_wrlock(&r->lock);
    if (rc == QOD_OK) {
        qod_hmap t = r->by_phone;
        r->by_phone = fresh.by_phone;
        fresh.by_phone = t;
        t = r->by_ip;
        r->by_ip = fresh.by_ip;
        fresh.by_ip = t;
    }
    pthread_rwlock_unlock(&r->lock);
    qod_hmap_each(&fresh.by_phone, free_sub, NULL);
    qod_hmap_dispose(&fresh.by_phone);
    qod_hmap_dispose(&fresh.by_ip);
    return rc;
}

int qod_registry_find(qod_registry *r, const qod_device *d, qod_device_kind k, qod_subscriber *out)
{
    const qod_subscriber *s = NULL;
    pthread_rwlock_rdlock(&r->lock);
    if (k == QOD_DEV_PHONE)
        s = qod_hmap_get(&r->by_phone, d->phone);
    else if (k == QOD_DEV_IPV4)
        s = qod_hmap_get(&r->by_ip, d->ipv4_private[0] ? d->ipv4_private : d->ipv4_public);
    else if (k == QOD_DEV_IPV6) {
        char net[QOD_IPV6_NET_LEN];
        s = qod_ipv6_net64(d->ipv6, net) ? qod_hmap_get(&r->by_ip, net) : NULL;
    }
    if (s)
        *out = *s;
    pthread_rwlock_unlock(&r->lock);
    return s ? QOD_OK : QOD_ERR_NOTFOUND;
}

/* Buckets of by_phone (about as many subscribers) that qod_registry_each walks per hold of the read lock. */
#define EACH_BUCKETS 256

typedef struct {
    int (*fn)(void *, const qod_subscriber *);
    void *arg;
} each_ctx;

static int each_one(void *arg, const char *key, void *val)
{
    (void)key;
    each_ctx *e = arg;
    return e->fn(e->arg, val);
}

void qod_registry_each(qod_registry *r, int (*fn)(void *arg, const qod_subscriber *s), void *arg)
{
    each_ctx e = {fn, arg};
    size_t cursor = 0;
    int stopped = 0;
    for (;;) {
        pthread_rwlock_rdlock(&r->lock);
        cursor = qod_hmap_scan(&r->by_phone, cursor, EACH_BUCKETS, each_one, &e, &stopped);
        pthread_rwlock_unlock(&r->lock);
        if (!cursor || stopped)
            break;
        qod_time_lock_pause();
    }
}
