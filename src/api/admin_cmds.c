#include "api/admin_cmds.h"

#include "auth/ciba.h"
#include "core/engine.h"
#include "core/registry.h"
#include "notify/delivery.h"
#include "store/store.h"
#include "util/err.h"
#include "util/json.h"
#include "util/rand.h"
#include "util/time.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Reads an optional number argument; -1 when absent. */
static int opt_number(const cJSON *args, const char *key, double max, double *out, char *err, size_t errcap)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(args, key);
    *out = -1;
    if (!it || cJSON_IsNull(it))
        return QOD_OK;
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || it->valuedouble < 0 || it->valuedouble > max) {
        snprintf(err, errcap, "%s must be a number from 0 to %g", key, max);
        return QOD_ERR_INVALID;
    }
    *out = it->valuedouble;
    return QOD_OK;
}

static int need_id(const cJSON *args, const char **id, char *err, size_t errcap)
{
    if (qod_json_str(args, "client_id", id) != QOD_OK || !**id) {
        snprintf(err, errcap, "client_id is required");
        return QOD_ERR_INVALID;
    }
    return QOD_OK;
}

/* The result of create and rotate: the app plus its secrets, shown this once. */
static int app_with_secret(const qod_app *app, const char *secret, qod_buf *out)
{
    qod_buf_puts(out, "{\"client_id\":");
    qod_buf_json_str(out, app->client_id);
    qod_buf_puts(out, ",\"client_secret\":");
    qod_buf_json_str(out, secret);
    qod_buf_puts(out, ",\"webhook_secret\":");
    qod_buf_json_str(out, app->webhook_secret);
    qod_buf_printf(out, ",\"env\":\"%s\",\"scopes\":", qod_app_env_name(app->env));
    qod_buf_json_str(out, app->scopes);
    qod_buf_puts(out, ",\"name\":");
    qod_buf_json_str(out, app->name);
    return qod_buf_printf(out, ",\"rate_limit\":%.15g,\"burst\":%.15g,\"max_sessions\":%lld}", app->rate_limit,
                          app->burst, (long long)app->max_sessions);
}

static int app_create(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    qod_app_params p = {.env = QOD_APP_SANDBOX};
    const char *env = NULL;
    double ms = -1;
    int rc = qod_json_str(args, "name", &p.name);
    if (rc != QOD_OK) {
        snprintf(err, errcap, "name is required");
        return QOD_ERR_INVALID;
    }
    if (qod_json_str(args, "env", &env) == QOD_OK && qod_app_env_parse(env, &p.env) != QOD_OK) {
        snprintf(err, errcap, "env must be sandbox or live");
        return QOD_ERR_INVALID;
    }
    if (qod_json_str(args, "scopes", &p.scopes) == QOD_ERR_INVALID) {
        snprintf(err, errcap, "scopes must be a string");
        return QOD_ERR_INVALID;
    }
    rc = opt_number(args, "rate_limit", 1e6, &p.rate_limit, err, errcap);
    rc = rc ? rc : opt_number(args, "burst", 1e7, &p.burst, err, errcap);
    rc = rc ? rc : opt_number(args, "max_sessions", 1e8, &ms, err, errcap);
    if (rc != QOD_OK)
        return rc;
    p.max_sessions = ms < 0 ? -1 : (int64_t)ms;
    qod_app app;
    char secret[96];
    rc = qod_apps_add(d->apps, &p, &app, secret, sizeof secret, err, errcap);
    if (rc == QOD_OK)
        rc = app_with_secret(&app, secret, out);
    memset(secret, 0, sizeof secret);
    return rc;
}

/* The JSON array a list command answers with. Each entry is rendered on its own and then appended whole, so a list
 * that would pass QOD_ADMIN_MAX_RESULT ends with a clear error, never with a cut or malformed answer. */
typedef struct {
    qod_buf *out;
    qod_buf item;
    size_t n, limit;
    int rc;
    const char *client_id; /* the entries' owner to keep, or NULL for all */
} entry_list;

static void list_open(entry_list *l, qod_buf *out, size_t limit, const char *client_id)
{
    *l = (entry_list){.out = out, .limit = limit, .client_id = client_id};
    qod_buf_init(&l->item, 0);
    l->rc = qod_buf_puts(out, "[");
}

/* The buffer to render the next entry in (separator included), or NULL once the list is full or has failed. */
static qod_buf *list_item(entry_list *l)
{
    if (l->rc != QOD_OK || l->n >= l->limit)
        return NULL;
    qod_buf_reset(&l->item);
    qod_buf_puts(&l->item, l->n ? "," : "");
    return &l->item;
}

/* Appends the entry rendered in list_item's buffer; non-zero once the list is full or has failed. */
static int list_add(entry_list *l)
{
    l->rc = qod_buf_append(l->out, l->item.data, l->item.len);
    return l->rc != QOD_OK || ++l->n >= l->limit;
}

/* Closes the array; hint names the options that shorten the list, for the error of one too long. */
static int list_close(entry_list *l, const char *hint, char *err, size_t errcap)
{
    qod_buf_dispose(&l->item);
    int rc = l->rc != QOD_OK ? l->rc : qod_buf_puts(l->out, "]");
    if (rc == QOD_ERR_LIMIT)
        snprintf(err, errcap, "the list does not fit in one answer (at most %u MiB; the first %zu entries fit); %s",
                 (unsigned)(QOD_ADMIN_MAX_RESULT >> 20), l->n, hint);
    return rc;
}

static void list_app(void *arg, const qod_app *app)
{
    qod_buf *item = list_item(arg);
    if (item) {
        qod_app_to_json(app, item);
        list_add(arg);
    }
}

static int app_list(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    (void)args;
    entry_list l;
    list_open(&l, out, SIZE_MAX, NULL);
    qod_apps_each(d->apps, list_app, &l);
    return list_close(&l, "remove apps no longer in use", err, errcap);
}

static int app_show(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *id;
    qod_app app;
    int rc = need_id(args, &id, err, errcap);
    if (rc == QOD_OK && (rc = qod_apps_get(d->apps, id, &app)) != QOD_OK)
        snprintf(err, errcap, "no app with client_id '%.64s'", id);
    return rc ? rc : qod_app_to_json(&app, out);
}

static int app_delete(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *id;
    int rc = need_id(args, &id, err, errcap);
    if (rc == QOD_OK && (rc = qod_apps_delete(d->apps, id)) == QOD_ERR_NOTFOUND)
        snprintf(err, errcap, "no app with client_id '%.64s'", id);
    if (rc == QOD_OK) {
        qod_tokcache_forget_client(d->tokens, id);
        rc = qod_buf_puts(out, "{\"deleted\":true}");
    }
    return rc;
}

static int app_rotate(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *id;
    qod_app app;
    char secret[96];
    int rc = need_id(args, &id, err, errcap);
    if (rc == QOD_OK && (rc = qod_apps_rotate_secret(d->apps, id, &app, secret, sizeof secret)) == QOD_ERR_NOTFOUND)
        snprintf(err, errcap, "no app with client_id '%.64s'", id);
    if (rc == QOD_OK)
        rc = app_with_secret(&app, secret, out);
    memset(secret, 0, sizeof secret);
    return rc;
}

static int app_rotate_webhook(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *id;
    double grace = -1;
    qod_app app;
    int rc = need_id(args, &id, err, errcap);
    rc = rc ? rc : opt_number(args, "grace_s", 30 * 86400, &grace, err, errcap);
    if (rc == QOD_OK && (rc = qod_apps_rotate_webhook_secret(d->apps, id, (int64_t)((grace < 0 ? 86400 : grace) * 1000),
                                                             &app)) == QOD_ERR_NOTFOUND)
        snprintf(err, errcap, "no app with client_id '%.64s'", id);
    if (rc == QOD_OK) {
        char until[32];
        qod_time_fmt(app.webhook_old_until_ms, until, sizeof until);
        qod_buf_puts(out, "{\"client_id\":");
        qod_buf_json_str(out, app.client_id);
        qod_buf_puts(out, ",\"webhook_secret\":");
        qod_buf_json_str(out, app.webhook_secret);
        rc = qod_buf_printf(out, ",\"previous_secret_valid_until\":\"%s\"}", until);
    }
    return rc;
}

static int app_set_limits(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *id;
    double rate, burst, ms;
    qod_app app;
    int rc = need_id(args, &id, err, errcap);
    rc = rc ? rc : opt_number(args, "rate_limit", 1e6, &rate, err, errcap);
    rc = rc ? rc : opt_number(args, "burst", 1e7, &burst, err, errcap);
    rc = rc ? rc : opt_number(args, "max_sessions", 1e8, &ms, err, errcap);
    if (rc == QOD_OK &&
        (rc = qod_apps_set_limits(d->apps, id, rate, burst, ms < 0 ? -1 : (int64_t)ms, &app)) == QOD_ERR_NOTFOUND)
        snprintf(err, errcap, "no app with client_id '%.64s'", id);
    return rc ? rc : qod_app_to_json(&app, out);
}

/* A session as operators see it: engine status words, owner and timestamps. */
static void session_json(const qod_session *s, qod_buf *out)
{
    char created[32], expires[32] = "", ended[32] = "";
    qod_time_fmt(s->created_ms, created, sizeof created);
    if (s->expires_ms)
        qod_time_fmt(s->expires_ms, expires, sizeof expires);
    if (s->ended_ms)
        qod_time_fmt(s->ended_ms, ended, sizeof ended);
    qod_buf_printf(out,
                   "{\"sessionId\":\"%s\",\"client_id\":\"%s\",\"state\":\"%s\",\"reason\":\"%s\",\"api\":\"%s\","
                   "\"sandbox\":%s,\"qosProfile\":",
                   s->id, s->app_id, qod_session_state_name(s->st.state), qod_end_reason_name(s->st.reason),
                   s->surface == QOD_SURFACE_V1     ? "v1"
                   : s->surface == QOD_SURFACE_PROV ? "provisioning"
                                                    : "v0",
                   s->sandbox ? "true" : "false");
    qod_buf_json_str(out, s->profile->name);
    qod_buf_printf(out, ",\"duration\":%lld,\"createdAt\":\"%s\",\"expiresAt\":\"%s\",\"endedAt\":\"%s\",\"device\":",
                   (long long)s->duration_s, created, expires, ended);
    qod_buf_puts(out, s->device_json);
    qod_buf_puts(out, ",\"notificationUrl\":");
    qod_buf_json_str(out, s->url);
    qod_buf_puts(out, "}");
}

static int list_session(void *arg, const qod_session *s)
{
    qod_buf *item = list_item(arg);
    if (!item)
        return 1;
    session_json(s, item);
    return list_add(arg);
}

static int session_list(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *app = NULL;
    double limit = -1;
    if (qod_json_str(args, "client_id", &app) == QOD_ERR_INVALID) {
        snprintf(err, errcap, "client_id must be a string");
        return QOD_ERR_INVALID;
    }
    int rc = opt_number(args, "limit", 1e7, &limit, err, errcap);
    if (rc != QOD_OK)
        return rc;
    entry_list l;
    list_open(&l, out, limit > 0 ? (size_t)limit : 10000, NULL);
    qod_engine_each(d->engine, app, list_session, &l);
    return list_close(&l, "ask for fewer with --limit, or one app's with --app", err, errcap);
}

static void show_session(void *arg, const qod_session *s)
{
    session_json(s, arg);
}

static int session_show(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *id = NULL;
    if (qod_json_str(args, "session_id", &id) != QOD_OK || !qod_uuid_valid(id)) {
        snprintf(err, errcap, "session_id must be a UUID");
        return QOD_ERR_INVALID;
    }
    int rc = qod_engine_read(d->engine, id, NULL, QOD_KIND_ANY, show_session, out);
    if (rc == QOD_ERR_NOTFOUND)
        snprintf(err, errcap, "no session %s (never created, or purged after its retention)", id);
    return rc;
}

static int copy_arg(const cJSON *args, const char *key, char *dst, size_t cap, char *err, size_t errcap)
{
    const char *v = NULL;
    int rc = qod_json_str(args, key, &v);
    if (rc == QOD_ERR_NOTFOUND)
        return QOD_OK;
    if (rc != QOD_OK || strlen(v) >= cap) {
        snprintf(err, errcap, "%s must be a string of at most %zu bytes", key, cap - 1);
        return QOD_ERR_INVALID;
    }
    memcpy(dst, v, strlen(v) + 1);
    return QOD_OK;
}

static int device_add(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    qod_subscriber s = {.eligible = true};
    double cell = 0;
    bool inel = false;
    int rc = copy_arg(args, "phone", s.phone, sizeof s.phone, err, errcap);
    rc = rc ? rc : copy_arg(args, "ipv4", s.ipv4, sizeof s.ipv4, err, errcap);
    rc = rc ? rc : copy_arg(args, "ipv6", s.ipv6, sizeof s.ipv6, err, errcap);
    rc = rc ? rc : opt_number(args, "cell", 1e9, &cell, err, errcap);
    if (rc == QOD_OK && qod_json_bool(args, "ineligible", &inel) == QOD_ERR_INVALID) {
        snprintf(err, errcap, "ineligible must be a boolean");
        rc = QOD_ERR_INVALID;
    }
    if (rc != QOD_OK)
        return rc;
    s.cell = cell < 0 ? 0 : (int)cell;
    s.eligible = !inel;
    rc = qod_registry_put(d->registry, &s, err, errcap);
    return rc ? rc : qod_subscriber_to_json(&s, out);
}

static int list_device(void *arg, const qod_subscriber *s)
{
    qod_buf *item = list_item(arg);
    if (!item)
        return 1;
    qod_subscriber_to_json(s, item);
    return list_add(arg);
}

static int device_list(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    (void)args;
    entry_list l;
    list_open(&l, out, SIZE_MAX, NULL);
    qod_registry_each(d->registry, list_device, &l);
    return list_close(&l, "the registry is too large to list at once", err, errcap);
}

static int device_remove(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *phone = NULL;
    if (qod_json_str(args, "phone", &phone) != QOD_OK) {
        snprintf(err, errcap, "phone is required");
        return QOD_ERR_INVALID;
    }
    int rc = qod_registry_remove(d->registry, phone);
    if (rc == QOD_ERR_NOTFOUND)
        snprintf(err, errcap, "no device with phone %.20s", phone);
    return rc ? rc : qod_buf_puts(out, "{\"removed\":true}");
}

static int list_event(void *arg, const qod_store_event *e)
{
    static const char *const states[] = {"pending", "delivered", "dead"};
    entry_list *l = arg;
    if (l->client_id && strcmp(l->client_id, e->owner) != 0)
        return 0;
    qod_buf *item = list_item(l);
    if (!item)
        return 1;
    char created[32], next[32];
    qod_time_fmt(e->created_ms, created, sizeof created);
    qod_time_fmt(e->next_ms, next, sizeof next);
    cJSON *doc = cJSON_Parse(e->doc);
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(doc, "url");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(doc, "state");
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(doc, "reason");
    qod_buf_printf(item,
                   "{\"event_id\":\"%s\",\"seq\":%lld,\"session\":\"%s\",\"client_id\":\"%s\",\"delivery\":\"%s\","
                   "\"attempts\":%lld,\"created_at\":\"%s\",\"next_at\":\"%s\",\"status\":\"%s%s%s\",\"url\":",
                   e->id, (long long)e->seq, e->session, e->owner, (unsigned)e->state < 3 ? states[e->state] : "?",
                   (long long)e->attempts, created, next, cJSON_IsString(st) ? st->valuestring : "",
                   cJSON_IsString(rs) && *rs->valuestring ? "/" : "", cJSON_IsString(rs) ? rs->valuestring : "");
    qod_buf_json_str(item, cJSON_IsString(url) ? url->valuestring : "");
    qod_buf_puts(item, "}");
    cJSON_Delete(doc);
    return list_add(l);
}

/* Outbox rows a deliveries list reads per scan. */
#define EVENT_PAGE 512

typedef struct {
    entry_list *l;
    int64_t last_seq;
    size_t seen;
    int stop;
} event_page;

static int page_event(void *arg, const qod_store_event *e)
{
    event_page *p = arg;
    p->last_seq = e->seq;
    p->seen++;
    return p->stop = list_event(p->l, e);
}

static int state_arg(const cJSON *args, int64_t *state, char *err, size_t errcap)
{
    static const char *const names[] = {"pending", "delivered", "dead", "all"};
    const char *s = "dead";
    if (qod_json_str(args, "state", &s) == QOD_ERR_INVALID)
        s = "";
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *state = i == 3 ? -1 : i;
            return QOD_OK;
        }
    snprintf(err, errcap, "state must be pending, delivered, dead or all");
    return QOD_ERR_INVALID;
}

static int deliveries_list(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    int64_t state = 2;
    double limit = -1;
    const char *app = NULL;
    int rc = state_arg(args, &state, err, errcap);
    rc = rc ? rc : opt_number(args, "limit", 1e7, &limit, err, errcap);
    if (rc != QOD_OK)
        return rc;
    qod_json_str(args, "client_id", &app);
    entry_list l;
    list_open(&l, out, limit > 0 ? (size_t)limit : 1000, app);
    /* In pages: a scan holds the store's read connection, which delivery needs to load the outbox. */
    event_page p = {&l, 0, 0, 0};
    do {
        p.seen = 0;
        rc = qod_store_scan_events(d->store, state, p.last_seq, EVENT_PAGE, page_event, &p);
    } while (rc == QOD_OK && !p.stop && p.seen == EVENT_PAGE);
    int lrc = list_close(&l, "ask for fewer with --limit, --state or --app", err, errcap);
    return rc != QOD_OK ? rc : lrc;
}

typedef struct {
    qod_delivery *delivery;
    const char *event_id;
    size_t n;
    int rc;
} requeue_ctx;

static int requeue_one(void *arg, const qod_store_event *e)
{
    requeue_ctx *c = arg;
    if (c->event_id && strcmp(c->event_id, e->id) != 0)
        return 0;
    /* The delivery replays from this event on, re-sending the session's later events too, so order is kept. */
    c->rc = qod_delivery_requeue(c->delivery, e->session, e->seq);
    c->n += c->rc == QOD_OK;
    return c->event_id != NULL || c->rc != QOD_OK;
}

static int deliveries_retry(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    requeue_ctx c = {d->delivery, NULL, 0, QOD_OK};
    bool all = false;
    qod_json_bool(args, "all", &all);
    int rc = QOD_OK;
    if (qod_json_str(args, "event_id", &c.event_id) != QOD_OK && !all) {
        snprintf(err, errcap, "give an event id, or --all");
        rc = QOD_ERR_INVALID;
    }
    rc = rc ? rc : qod_store_scan_events(d->store, 2, 0, 0, requeue_one, &c);
    rc = rc ? rc : c.rc;
    if (rc == QOD_OK && c.event_id && c.n == 0) {
        snprintf(err, errcap, "no dead event %.64s", c.event_id);
        rc = QOD_ERR_NOTFOUND;
    }
    return rc ? rc : qod_buf_printf(out, "{\"requeued\":%zu}", c.n);
}

static int list_gone(void *arg, const qod_store_row *r)
{
    qod_buf *item = list_item(arg);
    if (!item)
        return 1;
    char since[32];
    qod_time_fmt(r->num, since, sizeof since);
    qod_buf_puts(item, "{\"url\":");
    qod_buf_json_str(item, r->key);
    qod_buf_printf(item, ",\"since\":\"%s\"}", since);
    return list_add(arg);
}

/* The callback URLs that answered 410 Gone, from the store (every node's). */
static int deliveries_gone(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    double limit = -1;
    int rc = opt_number(args, "limit", 1e7, &limit, err, errcap);
    if (rc != QOD_OK)
        return rc;
    entry_list l;
    list_open(&l, out, limit > 0 ? (size_t)limit : 1000, NULL);
    rc = qod_store_scan(d->store, QOD_TBL_META, "gone", list_gone, &l);
    int lrc = list_close(&l, "ask for fewer with --limit", err, errcap);
    return rc != QOD_OK ? rc : lrc;
}

static void row_is_gone(void *arg, const qod_store_row *r)
{
    *(bool *)arg = strcmp(r->owner, "gone") == 0;
}

/* Callbacks may go to a URL that answered 410 Gone again: forgotten in the store, by this node and, told through
 * the store, by the others. Its dead events stay dead until replayed. */
static int deliveries_forget_gone(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *url = NULL;
    bool gone = false;
    if (qod_json_str(args, "url", &url) != QOD_OK) {
        snprintf(err, errcap, "url is required");
        return QOD_ERR_INVALID;
    }
    int rc = qod_store_get(d->store, QOD_TBL_META, url, row_is_gone, &gone);
    if (rc == QOD_ERR_NOTFOUND || (rc == QOD_OK && !gone)) {
        snprintf(err, errcap, "no callback URL '%.200s' answered 410 Gone", url);
        return QOD_ERR_NOTFOUND;
    }
    qod_store_batch *b = rc == QOD_OK ? qod_store_batch_new() : NULL;
    if (rc == QOD_OK && !b)
        rc = QOD_ERR_NOMEM;
    rc = rc ? rc : qod_store_batch_del(b, QOD_TBL_META, url);
    rc = rc ? rc : qod_store_batch_notify(b, "ungone", url);
    if (rc == QOD_OK) {
        rc = qod_store_commit(d->store, b);
        b = NULL;
    }
    qod_store_batch_free(b);
    rc = rc ? rc : qod_delivery_forget_gone(d->delivery, url);
    if (rc != QOD_OK)
        return rc;
    qod_buf_puts(out, "{\"forgotten\":");
    qod_buf_json_str(out, url);
    return qod_buf_puts(out, "}");
}

static int consent_approve(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *id = NULL;
    if (qod_json_str(args, "auth_req_id", &id) != QOD_OK) {
        snprintf(err, errcap, "auth_req_id is required");
        return QOD_ERR_INVALID;
    }
    int rc = qod_ciba_approve(d->ciba, id, qod_time_mono_ms());
    if (rc == QOD_ERR_NOTFOUND)
        snprintf(err, errcap, "no pending request %.64s (unknown or expired)", id);
    return rc ? rc : qod_buf_puts(out, "{\"approved\":true}");
}

static int consent_list(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    (void)args;
    (void)err;
    (void)errcap;
    return qod_ciba_list(d->ciba, qod_time_mono_ms(), out);
}

static int test_hooks_on(const qod_admin_deps *d, char *err, size_t errcap)
{
    if (d->test_hooks)
        return QOD_OK;
    snprintf(err, errcap, "test hooks are disabled (start qodd with --test-hooks)");
    return QOD_ERR_DENIED;
}

/* Shifts the wall clock (fault tests of clock jumps): expiry must keep following the monotonic clock. */
static int test_clock(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    int64_t off = 0;
    int rc = test_hooks_on(d, err, errcap);
    if (rc != QOD_OK)
        return rc;
    if (qod_json_int(args, "offset_ms", -(1LL << 40), 1LL << 40, &off) != QOD_OK) {
        snprintf(err, errcap, "offset_ms must be an integer");
        return QOD_ERR_INVALID;
    }
    qod_time_set_wall_offset(off);
    return qod_buf_printf(out, "{\"offset_ms\":%lld}", (long long)off);
}

/* Holds the delivery's rescans, or releases them (fault tests of a shard's adoption in a cluster): the sessions
 * of a shard taken over are this node's to deliver only from the rescan that follows. */
static int test_hold_rescans(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    bool release = false;
    int rc = test_hooks_on(d, err, errcap);
    if (rc != QOD_OK)
        return rc;
    if (qod_json_bool(args, "release", &release) == QOD_ERR_INVALID) {
        snprintf(err, errcap, "release must be true or false");
        return QOD_ERR_INVALID;
    }
    rc = qod_delivery_hold_rescans(d->delivery, !release);
    if (rc == QOD_ERR_CLOSED)
        snprintf(err, errcap, "the delivery is stopping");
    if (rc != QOD_OK)
        return rc; /* other errors (out of memory) are named by qod_admin_handle */
    return qod_buf_printf(out, "{\"held\":%s}", release ? "false" : "true");
}

static const qod_admin_cmd cmds[] = {
    {"test.clock", test_clock},
    {"test.hold-rescans", test_hold_rescans},
    {"consent.approve", consent_approve},
    {"consent.list", consent_list},
    {"deliveries.list", deliveries_list},
    {"deliveries.retry", deliveries_retry},
    {"deliveries.gone", deliveries_gone},
    {"deliveries.forget-gone", deliveries_forget_gone},
    {"session.list", session_list},
    {"session.show", session_show},
    {"device.add", device_add},
    {"device.list", device_list},
    {"device.remove", device_remove},
    {"app.create", app_create},
    {"app.list", app_list},
    {"app.show", app_show},
    {"app.delete", app_delete},
    {"app.rotate-secret", app_rotate},
    {"app.set-limits", app_set_limits},
    {"app.rotate-webhook-secret", app_rotate_webhook},
};

const qod_admin_cmd *qod_admin_find(const char *name)
{
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}
