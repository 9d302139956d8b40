#include "util/config.h"

#include "util/err.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CFG_MAX_LINE 4096
#define CFG_MAX_FILE_LINES 10000

static const qod_cfg_opt *find_opt(const qod_cfg_opt *t, size_t n, const char *name, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(t[i].name) == len && strncmp(t[i].name, name, len) == 0)
            return &t[i];
    return NULL;
}

static bool parse_bool(const char *v, bool *out)
{
    static const char *const yes[] = {"1", "true", "yes", "on"};
    static const char *const no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static bool in_choices(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == vl && strncmp(p, v, l) == 0)
            return true;
        p += l + (bar ? 1 : 0);
    }
    return false;
}

static int set_number(const qod_cfg_opt *o, void *field, const char *value, char *err, size_t errcap)
{
    char *end = NULL;
    errno = 0;
    double d = strtod(value, &end);
    if (errno || end == value || *end || !isfinite(d)) {
        snprintf(err, errcap, "option '%s': '%s' is not a number", o->name, value);
        return QOD_ERR_INVALID;
    }
    if (d < o->min || d > o->max) {
        snprintf(err, errcap, "option '%s': %s is out of range [%g, %g]", o->name, value, o->min, o->max);
        return QOD_ERR_RANGE;
    }
    if (o->type == QOD_CFG_INT) {
        if (floor(d) != d) {
            snprintf(err, errcap, "option '%s': '%s' is not a whole number", o->name, value);
            return QOD_ERR_INVALID;
        }
        *(long long *)field = (long long)d;
    } else {
        *(double *)field = d;
    }
    return QOD_OK;
}

int qod_config_set(const qod_cfg_opt *o, void *target, const char *value, char *err, size_t errcap)
{
    void *field = (char *)target + o->offset;
    if (o->check && o->check(value, err, errcap) != 0) {
        char why[256];
        snprintf(why, sizeof why, "%s", err);
        snprintf(err, errcap, "option '%s': %s", o->name, why);
        return QOD_ERR_INVALID;
    }
    switch (o->type) {
    case QOD_CFG_INT:
    case QOD_CFG_DOUBLE:
        return set_number(o, field, value, err, errcap);
    case QOD_CFG_BOOL:
        if (!parse_bool(value, (bool *)field)) {
            snprintf(err, errcap, "option '%s': '%s' is not a boolean", o->name, value);
            return QOD_ERR_INVALID;
        }
        return QOD_OK;
    case QOD_CFG_ENUM:
        if (!in_choices(o->choices, value)) {
            snprintf(err, errcap, "option '%s': '%s' is not one of %s", o->name, value, o->choices);
            return QOD_ERR_INVALID;
        }
        break;
    case QOD_CFG_STR:
        if (o->max > 0 && (double)strlen(value) > o->max) {
            snprintf(err, errcap, "option '%s': value longer than %g bytes", o->name, o->max);
            return QOD_ERR_RANGE;
        }
        break;
    }
    char *copy = strdup(value);
    if (!copy) {
        snprintf(err, errcap, "option '%s': out of memory", o->name);
        return QOD_ERR_NOMEM;
    }
    free(*(char **)field);
    *(char **)field = copy;
    return QOD_OK;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t l = strlen(s);
    while (l && isspace((unsigned char)s[l - 1]))
        s[--l] = '\0';
    return s;
}

static int parse_file(const qod_cfg_opt *t, size_t n, void *target, const char *path, char *err, size_t errcap)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errcap, "option 'config': cannot open %s: %s", path, strerror(errno));
        return QOD_ERR_INVALID;
    }
    char line[CFG_MAX_LINE];
    int rc = QOD_OK, lineno = 0;
    while (rc == QOD_OK && fgets(line, sizeof line, f)) {
        if (++lineno > CFG_MAX_FILE_LINES || (!strchr(line, '\n') && !feof(f))) {
            snprintf(err, errcap, "option 'config': %s:%d: line too long or file too large", path, lineno);
            rc = QOD_ERR_LIMIT;
            break;
        }
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *eq = strchr(s, '=');
        if (!eq) {
            snprintf(err, errcap, "option 'config': %s:%d: expected 'name = value'", path, lineno);
            rc = QOD_ERR_INVALID;
            break;
        }
        *eq = '\0';
        char *name = trim(s), *value = trim(eq + 1);
        const qod_cfg_opt *o = find_opt(t, n, name, strlen(name));
        if (!o || strcmp(name, "config") == 0) {
            snprintf(err, errcap, "unknown option '%s' in %s:%d", name, path, lineno);
            rc = QOD_ERR_INVALID;
            break;
        }
        rc = qod_config_set(o, target, value, err, errcap);
    }
    fclose(f);
    return rc;
}

/* Environment name of an option: QOD_ + upper case, '-' becomes '_'. */
static void env_name(const char *opt, char *out, size_t cap)
{
    size_t o = (size_t)snprintf(out, cap, "QOD_");
    for (const char *p = opt; *p && o + 1 < cap; p++)
        out[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
    out[o] = '\0';
}

static const char *env_lookup(char **envp, const char *name)
{
    size_t l = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (strncmp(*e, name, l) == 0 && (*e)[l] == '=')
            return *e + l + 1;
    return NULL;
}

/* Finds --config in argv (flag wins) or the environment. */
static const char *find_config(int argc, char **argv, char **envp)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            return argv[i + 1];
        if (strncmp(argv[i], "--config=", 9) == 0)
            return argv[i] + 9;
    }
    return env_lookup(envp, "QOD_CONFIG");
}

static int parse_env(const qod_cfg_opt *t, size_t n, void *target, char **envp, char *err, size_t errcap)
{
    /* Variables with the prefix that name no option are left alone: other tools (qodctl, the test suite)
     * share the QOD_ prefix, and a daemon must not refuse to start because of them. */
    for (char **e = envp; e && *e; e++) {
        if (strncmp(*e, "QOD_", 4) != 0)
            continue;
        const char *eq = strchr(*e, '=');
        if (!eq)
            continue;
        const qod_cfg_opt *o = NULL;
        char name[96];
        for (size_t i = 0; i < n && !o; i++) {
            env_name(t[i].name, name, sizeof name);
            if (strlen(name) == (size_t)(eq - *e) && strncmp(name, *e, (size_t)(eq - *e)) == 0)
                o = &t[i];
        }
        if (!o)
            continue;
        if (strcmp(o->name, "config") == 0)
            continue;
        int rc = qod_config_set(o, target, eq + 1, err, errcap);
        if (rc != QOD_OK)
            return rc;
    }
    return QOD_OK;
}

static int parse_argv(const qod_cfg_opt *t, size_t n, void *target, int argc, char **argv, bool *help, char *err,
                      size_t errcap)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = true;
            return QOD_OK;
        }
        if (strncmp(a, "--", 2) != 0) {
            snprintf(err, errcap, "unexpected argument '%s'", a);
            return QOD_ERR_INVALID;
        }
        a += 2;
        const char *eq = strchr(a, '=');
        size_t nl = eq ? (size_t)(eq - a) : strlen(a);
        const qod_cfg_opt *o = find_opt(t, n, a, nl);
        if (!o) {
            snprintf(err, errcap, "unknown option '%.*s'", (int)nl, a);
            return QOD_ERR_INVALID;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value && o->type == QOD_CFG_BOOL && (i + 1 >= argc || strncmp(argv[i + 1], "--", 2) == 0))
            value = "true";
        if (!value) {
            if (i + 1 >= argc) {
                snprintf(err, errcap, "option '%s' needs a value", o->name);
                return QOD_ERR_INVALID;
            }
            value = argv[++i];
        }
        if (strcmp(o->name, "config") == 0)
            continue;
        int rc = qod_config_set(o, target, value, err, errcap);
        if (rc != QOD_OK)
            return rc;
    }
    return QOD_OK;
}

int qod_config_parse(const qod_cfg_opt *t, size_t n, void *target, int argc, char **argv, char **envp, bool *help,
                     char *err, size_t errcap)
{
    *help = false;
    int rc = QOD_OK;
    for (size_t i = 0; i < n && rc == QOD_OK; i++)
        if (t[i].def)
            rc = qod_config_set(&t[i], target, t[i].def, err, errcap);
    for (int i = 1; i < argc && rc == QOD_OK; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            *help = true;
            return QOD_OK;
        }
    const char *cfg = rc == QOD_OK ? find_config(argc, argv, envp) : NULL;
    if (cfg) {
        const qod_cfg_opt *o = find_opt(t, n, "config", 6);
        if (o)
            rc = qod_config_set(o, target, cfg, err, errcap);
        if (rc == QOD_OK)
            rc = parse_file(t, n, target, cfg, err, errcap);
    }
    if (rc == QOD_OK)
        rc = parse_env(t, n, target, envp, err, errcap);
    if (rc == QOD_OK)
        rc = parse_argv(t, n, target, argc, argv, help, err, errcap);
    /* Every failure is one kind for callers; err says which option and why. */
    return rc < 0 ? QOD_ERR_INVALID : QOD_OK;
}

void qod_config_dispose(const qod_cfg_opt *t, size_t n, void *target)
{
    for (size_t i = 0; i < n; i++) {
        if (t[i].type == QOD_CFG_STR || t[i].type == QOD_CFG_ENUM) {
            char **f = (char **)((char *)target + t[i].offset);
            free(*f);
            *f = NULL;
        }
    }
}

void qod_config_help(const qod_cfg_opt *t, size_t n, const char *prog, FILE *out)
{
    fprintf(out,
            "Usage: %s [--option value]...\n\nEach option may also be set as the environment variable "
            "QOD_<NAME> or as 'name = value' in --config FILE.\nPrecedence: flag, environment, file, default.\n\n",
            prog);
    for (size_t i = 0; i < n; i++) {
        char env[96];
        env_name(t[i].name, env, sizeof env);
        fprintf(out, "  --%-22s %s\n", t[i].name, t[i].help);
        fprintf(out, "  %-24s env %s", "", env);
        if (t[i].def)
            fprintf(out, "; default %s", t[i].def[0] ? t[i].def : "(empty)");
        if (t[i].type == QOD_CFG_INT || t[i].type == QOD_CFG_DOUBLE)
            fprintf(out, "; range [%g, %g]", t[i].min, t[i].max);
        if (t[i].type == QOD_CFG_ENUM)
            fprintf(out, "; one of %s", t[i].choices);
        fputc('\n', out);
    }
}
