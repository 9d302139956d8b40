#include "api/admin_cmds.h"

#include "util/err.h"
#include "util/json.h"

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

typedef struct {
    qod_buf *out;
    bool first;
} list_ctx;

static void list_one(void *arg, const qod_app *app)
{
    list_ctx *l = arg;
    if (!l->first)
        qod_buf_puts(l->out, ",");
    l->first = false;
    qod_app_to_json(app, false, l->out);
}

static int app_list(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    (void)args;
    (void)err;
    (void)errcap;
    list_ctx l = {out, true};
    qod_buf_puts(out, "[");
    qod_apps_each(d->apps, list_one, &l);
    return qod_buf_puts(out, "]");
}

static int app_show(const qod_admin_deps *d, const cJSON *args, qod_buf *out, char *err, size_t errcap)
{
    const char *id;
    qod_app app;
    int rc = need_id(args, &id, err, errcap);
    if (rc == QOD_OK && (rc = qod_apps_get(d->apps, id, &app)) != QOD_OK)
        snprintf(err, errcap, "no app with client_id '%.64s'", id);
    return rc ? rc : qod_app_to_json(&app, false, out);
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
    return rc ? rc : qod_app_to_json(&app, false, out);
}

static const qod_admin_cmd cmds[] = {
    {"app.create", app_create},   {"app.list", app_list},           {"app.show", app_show},
    {"app.delete", app_delete},   {"app.rotate-secret", app_rotate}, {"app.set-limits", app_set_limits},
};

const qod_admin_cmd *qod_admin_find(const char *name)
{
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++)
        if (strcmp(cmds[i].name, name) == 0)
            return &cmds[i];
    return NULL;
}
