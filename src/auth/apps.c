#include "auth/apps.h"

#include "auth/scope.h"
#include "util/b64.h"
#include "util/err.h"
#include "util/json.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/time.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define APPS_MAX 100000

struct qod_apps {
    qod_store *st;
    const qod_seal *seal;
    pthread_rwlock_t lock;
    qod_app *v; /* sorted by client_id */
    size_t n, cap;
    uint64_t generation;
    bool shared; /* other nodes add apps too: an unknown client_id is looked up in the store */
};

const char *qod_app_env_name(qod_app_env env)
{
    return env == QOD_APP_LIVE ? "live" : "sandbox";
}

int qod_app_env_parse(const char *s, qod_app_env *out)
{
    if (strcmp(s, "sandbox") == 0)
        *out = QOD_APP_SANDBOX;
    else if (strcmp(s, "live") == 0)
        *out = QOD_APP_LIVE;
    else
        return QOD_ERR_INVALID;
    return QOD_OK;
}

static void sha256_hex(const char *s, char out[65])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(s, strlen(s), md, &len, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

static int app_json(const qod_app *app, const qod_seal *seal, qod_buf *out)
{
    int rc = qod_buf_puts(out, "{\"client_id\":");
    rc = rc ? rc : qod_buf_json_str(out, app->client_id);
    rc = rc ? rc : qod_buf_puts(out, ",\"name\":");
    rc = rc ? rc : qod_buf_json_str(out, app->name);
    rc = rc ? rc : qod_buf_printf(out, ",\"env\":\"%s\",\"scopes\":", qod_app_env_name(app->env));
    rc = rc ? rc : qod_buf_json_str(out, app->scopes);
    rc = rc ? rc
            : qod_buf_printf(out, ",\"rate_limit\":%.15g,\"burst\":%.15g,\"max_sessions\":%lld,\"created_ms\":%lld",
                             app->rate_limit, app->burst, (long long)app->max_sessions, (long long)app->created_ms);
    if (seal) {
        /* The stored form: the secret hash, and the webhook secrets sealed. */
        qod_buf sealed;
        qod_buf_init(&sealed, 0);
        rc = rc ? rc : qod_buf_puts(out, ",\"secret_hash\":");
        rc = rc ? rc : qod_buf_json_str(out, app->secret_hash);
        rc = rc ? rc : qod_seal_encrypt(seal, app->webhook_secret, &sealed);
        rc = rc ? rc : qod_buf_puts(out, ",\"webhook_secret\":");
        rc = rc ? rc : qod_buf_json_str(out, sealed.data);
        qod_buf_reset(&sealed);
        if (rc == QOD_OK && app->webhook_secret_old[0])
            rc = qod_seal_encrypt(seal, app->webhook_secret_old, &sealed);
        rc = rc ? rc : qod_buf_puts(out, ",\"webhook_secret_old\":");
        rc = rc ? rc : qod_buf_json_str(out, sealed.data ? sealed.data : "");
        rc = rc ? rc : qod_buf_printf(out, ",\"webhook_old_until_ms\":%lld", (long long)app->webhook_old_until_ms);
        qod_buf_dispose(&sealed);
    } else if (app->webhook_secret_old[0]) {
        /* The operator's view: until when callbacks also carry the previous webhook secret's signature. */
        char until[32];
        qod_time_fmt(app->webhook_old_until_ms, until, sizeof until);
        rc = rc ? rc : qod_buf_printf(out, ",\"previous_webhook_secret_valid_until\":\"%s\"", until);
    }
    return rc ? rc : qod_buf_puts(out, "}");
}

int qod_app_to_json(const qod_app *app, qod_buf *out)
{
    return app_json(app, NULL, out);
}

/* Reads a sealed secret into dst. */
static int unseal_str(const qod_seal *seal, const cJSON *o, const char *key, char *dst, size_t cap)
{
    const char *s = NULL;
    char *plain = NULL;
    dst[0] = '\0';
    if (qod_json_str(o, key, &s) != QOD_OK || !*s)
        return QOD_OK;
    int rc = qod_seal_decrypt(seal, s, &plain);
    if (rc == QOD_OK && strlen(plain) >= cap)
        rc = QOD_ERR_INVALID;
    if (rc == QOD_OK)
        memcpy(dst, plain, strlen(plain) + 1);
    free(plain);
    return rc;
}

static int copy_str(const cJSON *o, const char *key, char *dst, size_t cap, bool required)
{
    const char *s = NULL;
    int rc = qod_json_str(o, key, &s);
    if (rc == QOD_ERR_NOTFOUND && !required) {
        dst[0] = '\0';
        return QOD_OK;
    }
    if (rc != QOD_OK || strlen(s) >= cap)
        return QOD_ERR_INVALID;
    memcpy(dst, s, strlen(s) + 1);
    return QOD_OK;
}

static int app_from_json(const qod_seal *seal, const char *doc, qod_app *app)
{
    cJSON *o = NULL;
    char err[128];
    memset(app, 0, sizeof *app);
    int rc = qod_json_parse(doc, strlen(doc), 8, &o, err, sizeof err);
    const char *env = NULL;
    int64_t n = 0;
    rc = rc ? rc : copy_str(o, "client_id", app->client_id, sizeof app->client_id, true);
    rc = rc ? rc : copy_str(o, "name", app->name, sizeof app->name, true);
    rc = rc ? rc : copy_str(o, "scopes", app->scopes, sizeof app->scopes, true);
    rc = rc ? rc : copy_str(o, "secret_hash", app->secret_hash, sizeof app->secret_hash, true);
    rc = rc ? rc : unseal_str(seal, o, "webhook_secret", app->webhook_secret, sizeof app->webhook_secret);
    rc = rc ? rc : unseal_str(seal, o, "webhook_secret_old", app->webhook_secret_old, sizeof app->webhook_secret_old);
    if (rc == QOD_OK && !app->webhook_secret[0])
        rc = QOD_ERR_INVALID;
    rc = rc ? rc : qod_json_str(o, "env", &env);
    rc = rc ? rc : qod_app_env_parse(env, &app->env);
    const cJSON *it;
    if (rc == QOD_OK && (it = cJSON_GetObjectItemCaseSensitive(o, "rate_limit")) && cJSON_IsNumber(it))
        app->rate_limit = it->valuedouble;
    if (rc == QOD_OK && (it = cJSON_GetObjectItemCaseSensitive(o, "burst")) && cJSON_IsNumber(it))
        app->burst = it->valuedouble;
    if (rc == QOD_OK && qod_json_int(o, "max_sessions", 0, INT64_MAX / 2, &n) == QOD_OK)
        app->max_sessions = n;
    if (rc == QOD_OK && qod_json_int(o, "created_ms", 0, INT64_MAX / 2, &n) == QOD_OK)
        app->created_ms = n;
    if (rc == QOD_OK && qod_json_int(o, "webhook_old_until_ms", 0, INT64_MAX / 2, &n) == QOD_OK)
        app->webhook_old_until_ms = n;
    cJSON_Delete(o);
    return rc;
}

/* Binary search; returns the index of client_id or the insertion point (with *found false). */
static size_t find(const qod_apps *a, const char *client_id, bool *found)
{
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(a->v[mid].client_id, client_id);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

/* Inserts or replaces; caller holds the write lock. */
static int put_locked(qod_apps *a, const qod_app *app)
{
    bool found;
    size_t i = find(a, app->client_id, &found);
    if (!found) {
        if (a->n >= APPS_MAX)
            return QOD_ERR_LIMIT;
        if (a->n == a->cap) {
            size_t cap = a->cap ? a->cap * 2 : 16;
            qod_app *v = realloc(a->v, cap * sizeof *v);
            if (!v)
                return QOD_ERR_NOMEM;
            a->v = v;
            a->cap = cap;
        }
        memmove(&a->v[i + 1], &a->v[i], (a->n - i) * sizeof *a->v);
        a->n++;
    }
    a->v[i] = *app;
    a->v[i].generation = ++a->generation;
    return QOD_OK;
}

static int load_row(void *arg, const qod_store_row *r)
{
    qod_apps *a = arg;
    qod_app app;
    if (app_from_json(a->seal, r->doc, &app) != QOD_OK) {
        QOD_ERROR("apps", "corrupt_app_row", "client_id=%s", r->key);
        return 0;
    }
    put_locked(a, &app);
    return 0;
}

int qod_apps_create(qod_store *st, const qod_seal *seal, qod_apps **out)
{
    *out = NULL;
    qod_apps *a = calloc(1, sizeof *a);
    if (!a)
        return QOD_ERR_NOMEM;
    a->st = st;
    a->seal = seal;
    pthread_rwlock_init(&a->lock, NULL);
    int rc = qod_store_scan(st, QOD_TBL_APPS, NULL, load_row, a);
    if (rc != QOD_OK) {
        qod_apps_destroy(a);
        return rc;
    }
    *out = a;
    return QOD_OK;
}

void qod_apps_destroy(qod_apps *a)
{
    if (!a)
        return;
    pthread_rwlock_destroy(&a->lock);
    free(a->v);
    free(a);
}

/* Commits the app row; on success updates memory. Admin path only: waits for the commit. */
static int persist(qod_apps *a, const qod_app *app)
{
    qod_buf doc;
    qod_buf_init(&doc, 0);
    int rc = app_json(app, a->seal, &doc);
    qod_store_batch *b = rc == QOD_OK ? qod_store_batch_new() : NULL;
    if (rc == QOD_OK && !b)
        rc = QOD_ERR_NOMEM;
    rc = rc ? rc : qod_store_batch_put(b, QOD_TBL_APPS, app->client_id, "", "", app->env, app->created_ms, doc.data);
    rc = rc ? rc : qod_store_batch_notify(b, "apps", app->client_id);
    qod_buf_dispose(&doc);
    if (rc != QOD_OK) {
        qod_store_batch_free(b);
        return rc;
    }
    rc = qod_store_commit(a->st, b);
    if (rc == QOD_OK) {
        pthread_rwlock_wrlock(&a->lock);
        rc = put_locked(a, app);
        pthread_rwlock_unlock(&a->lock);
    }
    return rc;
}

static int new_secret(char *secret, size_t cap, char hash[65])
{
    int rc = qod_rand_token(32, secret, cap);
    if (rc == QOD_OK)
        sha256_hex(secret, hash);
    return rc;
}

static int new_whsec(char out[QOD_WHSEC_MAX])
{
    unsigned char key[32];
    int rc = qod_rand_bytes(key, sizeof key);
    memcpy(out, "whsec_", 6);
    if (rc == QOD_OK && qod_b64_encode(key, sizeof key, out + 6, QOD_WHSEC_MAX - 6, 0) < 0)
        rc = QOD_ERR_LIMIT;
    return rc;
}

static int check_params(const qod_app_params *p, char *err, size_t errcap)
{
    const char *bad = NULL;
    size_t badlen = 0;
    size_t nl = p->name ? strlen(p->name) : 0;
    if (nl == 0 || nl > QOD_APP_NAME_MAX) {
        snprintf(err, errcap, "name must be 1 to %d bytes", QOD_APP_NAME_MAX);
        return QOD_ERR_INVALID;
    }
    for (const char *c = p->name; *c; c++)
        if ((unsigned char)*c < 0x20) {
            snprintf(err, errcap, "name must not contain control characters");
            return QOD_ERR_INVALID;
        }
    if (p->scopes && !qod_scope_valid(p->scopes, QOD_SCOPES_MAX)) {
        snprintf(err, errcap, "scopes must be a space-separated list of scope names");
        return QOD_ERR_INVALID;
    }
    if (p->scopes && !qod_scope_known(p->scopes, &bad, &badlen)) {
        snprintf(err, errcap, "unknown scope '%.*s'", (int)badlen, bad);
        return QOD_ERR_INVALID;
    }
    if (p->rate_limit > 1e6 || p->burst > 1e7 || p->max_sessions > 100000000) {
        snprintf(err, errcap, "limits out of range");
        return QOD_ERR_RANGE;
    }
    return QOD_OK;
}

int qod_apps_add(qod_apps *a, const qod_app_params *p, qod_app *out, char *secret_out, size_t cap, char *err,
                 size_t errcap)
{
    int rc = check_params(p, err, errcap);
    if (rc != QOD_OK)
        return rc;
    qod_app app;
    memset(&app, 0, sizeof app);
    unsigned char id[QOD_APP_ID_LEN / 2];
    static const char hex[] = "0123456789abcdef";
    rc = qod_rand_bytes(id, sizeof id);
    for (size_t i = 0; i < sizeof id; i++) {
        app.client_id[2 * i] = hex[id[i] >> 4];
        app.client_id[2 * i + 1] = hex[id[i] & 15];
    }
    snprintf(app.name, sizeof app.name, "%s", p->name);
    app.env = p->env;
    snprintf(app.scopes, sizeof app.scopes, "%s", p->scopes ? p->scopes : qod_scopes_all);
    app.rate_limit = p->rate_limit >= 0 ? p->rate_limit : QOD_APP_DEFAULT_RATE;
    app.burst = p->burst >= 0 ? p->burst : 2 * app.rate_limit;
    app.max_sessions = p->max_sessions >= 0 ? p->max_sessions : QOD_APP_DEFAULT_MAX_SESSIONS;
    app.created_ms = qod_time_wall_ms();
    rc = rc ? rc : new_secret(secret_out, cap, app.secret_hash);
    rc = rc ? rc : new_whsec(app.webhook_secret);
    rc = rc ? rc : persist(a, &app);
    if (rc == QOD_OK) {
        *out = app;
        QOD_INFO("apps", "app_created", "client_id=%s env=%s", app.client_id, qod_app_env_name(app.env));
    } else {
        snprintf(err, errcap, "%s", qod_strerror(rc));
    }
    return rc;
}

/* Drops client_id from memory; caller holds the write lock. */
static void forget_locked(qod_apps *a, const char *client_id)
{
    bool found;
    size_t i = find(a, client_id, &found);
    if (found) {
        memmove(&a->v[i], &a->v[i + 1], (a->n - i - 1) * sizeof *a->v);
        a->n--;
    }
}

static void refresh_one(void *arg, const qod_store_row *r)
{
    qod_apps *a = arg;
    qod_app app;
    if (app_from_json(a->seal, r->doc, &app) != QOD_OK) {
        QOD_ERROR("apps", "corrupt_app_row", "client_id=%s", r->key);
        return;
    }
    pthread_rwlock_wrlock(&a->lock);
    put_locked(a, &app);
    pthread_rwlock_unlock(&a->lock);
}

int qod_apps_refresh(qod_apps *a, const char *client_id)
{
    if (!client_id) {
        /* Everything: a fresh table from the store replaces the one in memory. */
        qod_apps fresh = {.st = a->st, .seal = a->seal};
        int rc = qod_store_scan(a->st, QOD_TBL_APPS, NULL, load_row, &fresh);
        if (rc != QOD_OK) {
            free(fresh.v);
            return rc;
        }
        pthread_rwlock_wrlock(&a->lock);
        qod_app *old = a->v;
        a->v = fresh.v;
        a->n = fresh.n;
        a->cap = fresh.cap;
        a->generation += fresh.generation;
        pthread_rwlock_unlock(&a->lock);
        free(old);
        return QOD_OK;
    }
    int rc = qod_store_get(a->st, QOD_TBL_APPS, client_id, refresh_one, a);
    if (rc == QOD_ERR_NOTFOUND) {
        pthread_rwlock_wrlock(&a->lock);
        forget_locked(a, client_id);
        pthread_rwlock_unlock(&a->lock);
        rc = QOD_OK;
    }
    return rc;
}

void qod_apps_set_shared(qod_apps *a)
{
    a->shared = true;
}

static int get_cached(qod_apps *a, const char *client_id, qod_app *out)
{
    bool found = false;
    pthread_rwlock_rdlock(&a->lock);
    size_t i = find(a, client_id, &found);
    if (found)
        *out = a->v[i];
    pthread_rwlock_unlock(&a->lock);
    return found ? QOD_OK : QOD_ERR_NOTFOUND;
}

int qod_apps_get(qod_apps *a, const char *client_id, qod_app *out)
{
    int rc = get_cached(a, client_id, out);
    /* Made on another node a moment ago, before its notification reached us: the store knows. Only well-formed
     * ids are looked up, so garbage cannot turn into database reads. */
    if (rc == QOD_ERR_NOTFOUND && a->shared && strlen(client_id) == 32 && strspn(client_id, "0123456789abcdef") == 32) {
        int frc = qod_apps_refresh(a, client_id);
        rc = frc == QOD_OK ? get_cached(a, client_id, out) : frc;
    }
    return rc;
}

int qod_apps_authenticate(qod_apps *a, const char *client_id, const char *secret, qod_app *out)
{
    char hash[65];
    sha256_hex(secret, hash);
    qod_app app;
    /* Hash first and compare in constant time, so timing says nothing about the stored hash. */
    int rc = qod_apps_get(a, client_id, &app);
    if (rc != QOD_OK)
        return rc;
    if (CRYPTO_memcmp(hash, app.secret_hash, 64) != 0)
        return QOD_ERR_DENIED;
    *out = app;
    return QOD_OK;
}

int qod_apps_delete(qod_apps *a, const char *client_id)
{
    qod_app app;
    if (qod_apps_get(a, client_id, &app) != QOD_OK)
        return QOD_ERR_NOTFOUND;
    qod_store_batch *b = qod_store_batch_new();
    if (!b)
        return QOD_ERR_NOMEM;
    int rc = qod_store_batch_del(b, QOD_TBL_APPS, client_id);
    rc = rc ? rc : qod_store_batch_notify(b, "apps", client_id);
    if (rc != QOD_OK) {
        qod_store_batch_free(b);
        return rc;
    }
    rc = qod_store_commit(a->st, b);
    if (rc == QOD_OK) {
        pthread_rwlock_wrlock(&a->lock);
        forget_locked(a, client_id);
        pthread_rwlock_unlock(&a->lock);
        QOD_INFO("apps", "app_deleted", "client_id=%s", client_id);
    }
    return rc;
}

int qod_apps_rotate_secret(qod_apps *a, const char *client_id, qod_app *out, char *secret_out, size_t cap)
{
    qod_app app;
    int rc = qod_apps_get(a, client_id, &app);
    rc = rc ? rc : new_secret(secret_out, cap, app.secret_hash);
    rc = rc ? rc : persist(a, &app);
    if (rc == QOD_OK) {
        *out = app;
        QOD_INFO("apps", "secret_rotated", "client_id=%s", client_id);
    }
    return rc;
}

int qod_apps_rotate_webhook_secret(qod_apps *a, const char *client_id, int64_t grace_ms, qod_app *out)
{
    qod_app app;
    int rc = qod_apps_get(a, client_id, &app);
    if (rc != QOD_OK)
        return rc;
    memcpy(app.webhook_secret_old, app.webhook_secret, sizeof app.webhook_secret_old);
    app.webhook_old_until_ms = qod_time_wall_ms() + (grace_ms > 0 ? grace_ms : 0);
    rc = new_whsec(app.webhook_secret);
    rc = rc ? rc : persist(a, &app);
    if (rc == QOD_OK) {
        *out = app;
        QOD_INFO("apps", "webhook_secret_rotated", "client_id=%s grace_ms=%lld", client_id, (long long)grace_ms);
    }
    return rc;
}

int qod_apps_set_limits(qod_apps *a, const char *client_id, double rate, double burst, int64_t max_sessions,
                        qod_app *out)
{
    qod_app app;
    int rc = qod_apps_get(a, client_id, &app);
    if (rc != QOD_OK)
        return rc;
    if (rate > 1e6 || burst > 1e7 || max_sessions > 100000000)
        return QOD_ERR_RANGE;
    if (rate >= 0) {
        app.rate_limit = rate;
        if (burst < 0)
            app.burst = 2 * rate;
    }
    if (burst >= 0)
        app.burst = burst;
    if (max_sessions >= 0)
        app.max_sessions = max_sessions;
    rc = persist(a, &app);
    if (rc == QOD_OK)
        *out = app;
    return rc;
}

void qod_apps_each(qod_apps *a, void (*fn)(void *arg, const qod_app *app), void *arg)
{
    pthread_rwlock_rdlock(&a->lock);
    for (size_t i = 0; i < a->n; i++)
        fn(arg, &a->v[i]);
    pthread_rwlock_unlock(&a->lock);
}

size_t qod_apps_count(qod_apps *a)
{
    pthread_rwlock_rdlock(&a->lock);
    size_t n = a->n;
    pthread_rwlock_unlock(&a->lock);
    return n;
}
