/* Fuzzes the table-driven configuration parser (src/util/config.h) three ways: the input as a --config file, as
 * argv entries (split on NUL bytes) and as environment entries (likewise). The first byte picks the table: a small
 * one with every option type, or qodd's own (src/daemon/options.c, with its check functions). Every parse names our
 * own --config file first, so the fuzzer's "--config PATH" never opens anything else. Properties: the result is
 * QOD_OK or QOD_ERR_INVALID with a message; after QOD_OK every option holds a value its table entry allows; dispose
 * frees every string (the leak checker sees any left behind). */
#include "fuzz.h"

#include "daemon/options.h"
#include "util/config.h"
#include "util/err.h"

#include <math.h>
#include <sys/mman.h>
#include <unistd.h>

#define MAX_ENTRIES 64

/* The small table: one option of each type, with the edges qodd's table lacks (bounds far from zero, options
 * without a default, a string without a length limit but with a check). */
typedef struct {
    char *config;
    char *label;
    long long count;
    double offset;
    bool flag;
    char *level;
    char *secret;
} small_cfg;

/* Secrets must carry the "sec_" prefix and at least one character after it. */
static int check_secret(const char *v, char *err, size_t errcap)
{
    if (strncmp(v, "sec_", 4) != 0 || !v[4]) {
        snprintf(err, errcap, "a secret looks like sec_…");
        return -1;
    }
    return 0;
}

static const qod_cfg_opt small_table[] = {
    {"config", QOD_CFG_STR, offsetof(small_cfg, config), 0, 4096, NULL, NULL, NULL, "Read options from FILE."},
    {"label", QOD_CFG_STR, offsetof(small_cfg, label), 0, 8, "x", NULL, NULL, "A short label."},
    {"count", QOD_CFG_INT, offsetof(small_cfg, count), -1e15, 1e15, "-7", NULL, NULL, "A wide whole number."},
    {"offset", QOD_CFG_DOUBLE, offsetof(small_cfg, offset), -1, 1, NULL, NULL, NULL, "No default."},
    {"flag", QOD_CFG_BOOL, offsetof(small_cfg, flag), 0, 0, NULL, NULL, NULL, "No default."},
    {"level", QOD_CFG_ENUM, offsetof(small_cfg, level), 0, 0, "mid", "low|mid|high", NULL, "One of three."},
    {"secret", QOD_CFG_STR, offsetof(small_cfg, secret), 0, 0, NULL, NULL, check_secret, "Checked, unbounded."},
};

static bool in_choices(const char *choices, const char *v)
{
    size_t n = strlen(v);
    for (const char *p = choices;;) {
        size_t l = strcspn(p, "|");
        if (l == n && strncmp(p, v, n) == 0)
            return true;
        if (!p[l])
            return false;
        p += l + 1;
    }
}

/* Every option holds a value its entry allows (or no value, for options without a default). */
static void check_values(const qod_cfg_opt *t, size_t n, const void *target)
{
    for (size_t i = 0; i < n; i++) {
        const void *f = (const char *)target + t[i].offset;
        const char *s = t[i].type == QOD_CFG_STR || t[i].type == QOD_CFG_ENUM ? *(char *const *)f : NULL;
        char err[256];
        switch (t[i].type) {
        case QOD_CFG_INT: {
            long long v = *(const long long *)f;
            FUZZ_CHECK(v >= t[i].min && v <= t[i].max);
            break;
        }
        case QOD_CFG_DOUBLE: {
            double v = *(const double *)f;
            FUZZ_CHECK(isfinite(v) && v >= t[i].min && v <= t[i].max);
            break;
        }
        case QOD_CFG_BOOL:
            break;
        case QOD_CFG_ENUM:
            FUZZ_CHECK(!s || in_choices(t[i].choices, s));
            break;
        case QOD_CFG_STR:
            FUZZ_CHECK(!s || t[i].max <= 0 || strlen(s) <= t[i].max);
            FUZZ_CHECK(!s || !t[i].check || t[i].check(s, err, sizeof err) == 0);
            break;
        }
    }
}

static void parse(const qod_cfg_opt *t, size_t n, void *target, int argc, char **argv, char **envp)
{
    char err[512] = "";
    bool help = false;
    int rc = qod_config_parse(t, n, target, argc, argv, envp, &help, err, sizeof err);
    FUZZ_CHECK(rc == QOD_OK || (rc == QOD_ERR_INVALID && err[0] != '\0'));
    if (rc == QOD_OK && !help)
        check_values(t, n, target);
    qod_config_dispose(t, n, target);
    for (size_t i = 0; i < n; i++)
        if (t[i].type == QOD_CFG_STR || t[i].type == QOD_CFG_ENUM)
            FUZZ_CHECK(*(char **)((char *)target + t[i].offset) == NULL);
}

/* Splits the input on NUL bytes into at most MAX_ENTRIES strings after the given prefix; returns the count. */
static int split(const uint8_t *data, size_t size, char **out, int prefix)
{
    fuzz_in in = {data, size};
    int n = prefix;
    while (in.n && n < MAX_ENTRIES + prefix)
        out[n++] = fuzz_next(&in);
    out[n] = NULL;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    const qod_cfg_opt *t = data[0] & 1 ? qod_option_table : small_table;
    size_t n = data[0] & 1 ? qod_option_count : sizeof small_table / sizeof small_table[0];
    qod_options big;
    small_cfg small;
    void *target = data[0] & 1 ? (void *)&big : (void *)&small;
    size_t tsize = data[0] & 1 ? sizeof big : sizeof small;
    data++;
    size--;

    char path[64], prog[] = "qodd", flag[] = "--config";
    int fd = memfd_create("fuzz_config", MFD_CLOEXEC);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size)
        abort();
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    char *base[] = {prog, flag, path, NULL}, *no_env[] = {NULL};
    char *args[MAX_ENTRIES + 4] = {prog, flag, path}, *env[MAX_ENTRIES + 1];

    /* As a config file. */
    memset(target, 0, tsize);
    parse(t, n, target, 3, base, no_env);
    /* As argv, then as the environment, with an empty config file. */
    if (ftruncate(fd, 0) != 0)
        abort();
    int argc = split(data, size, args, 3);
    memset(target, 0, tsize);
    parse(t, n, target, argc, args, no_env);
    int envc = split(data, size, env, 0);
    memset(target, 0, tsize);
    parse(t, n, target, 3, base, env);

    for (int i = 3; i < argc; i++)
        free(args[i]);
    for (int i = 0; i < envc; i++)
        free(env[i]);
    close(fd);
    return 0;
}
