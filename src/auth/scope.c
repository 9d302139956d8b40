#include "auth/scope.h"

#include "auth/apps.h"

#include <string.h>

const char qod_scopes_all[] = "qod quality-on-demand:sessions:create quality-on-demand:sessions:read "
                              "quality-on-demand:sessions:update quality-on-demand:sessions:delete "
                              "quality-on-demand:sessions:retrieve-by-device qos-profiles:read "
                              "qos-provisioning:qos-assignments:create qos-provisioning:qos-assignments:read "
                              "qos-provisioning:qos-assignments:delete "
                              "qos-provisioning:qos-assignments:read-by-device";

static bool has_n(const char *list, const char *s, size_t n)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if ((size_t)(e - p) == n && n && memcmp(p, s, n) == 0)
            return true;
        p = e;
    }
    return false;
}

bool qod_scope_has(const char *list, const char *scope)
{
    return has_n(list, scope, strlen(scope));
}

bool qod_scope_subset(const char *want, const char *have)
{
    const char *p = want;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if (e > p && !has_n(have, p, (size_t)(e - p)))
            return false;
        p = e;
    }
    return true;
}

bool qod_scope_valid(const char *list, size_t cap)
{
    size_t len = strlen(list), n = 0, tok = 0;
    if (len == 0 || len >= cap || list[0] == ' ' || list[len - 1] == ' ')
        return false;
    for (const char *p = list; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == ' ') {
            if (p[1] == ' ')
                return false;
            tok = 0;
            continue;
        }
        if (c < 0x21 || c > 0x7e || c == '"' || c == '\\')
            return false;
        if (tok++ == 0)
            n++;
        if (tok > 128 || n > 32)
            return false;
    }
    return true;
}

bool qod_scope_known(const char *list, const char **bad, size_t *badlen)
{
    const char *p = list;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *e = p;
        while (*e && *e != ' ')
            e++;
        if (e > p && !has_n(qod_scopes_all, p, (size_t)(e - p))) {
            *bad = p;
            *badlen = (size_t)(e - p);
            return false;
        }
        p = e;
    }
    return true;
}
