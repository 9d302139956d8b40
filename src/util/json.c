#include "util/json.h"

#include "util/buf.h"
#include "util/err.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* Scans the raw text: nesting depth outside strings (stops early past the limit), and strings that cJSON
 * would silently cut short or that RFC 8259 forbids (a NUL byte, "\u0000", raw control characters).
 * Returns the depth, or -1 for such a string. */
static int scan_text(const char *s, size_t n, int limit)
{
    int depth = 0, max = 0;
    bool in_str = false;
    if (memchr(s, '\0', n))
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if ((unsigned char)c < 0x20)
                return -1;
            if (c == '\\') {
                if (i + 5 < n && s[i + 1] == 'u' && memcmp(s + i + 2, "0000", 4) == 0)
                    return -1;
                i++;
            } else if (c == '"') {
                in_str = false;
            }
            continue;
        }
        if (c == '"')
            in_str = true;
        else if (c == '{' || c == '[') {
            if (++depth > max)
                max = depth;
            if (max > limit)
                return max;
        } else if (c == '}' || c == ']')
            depth--;
    }
    return max;
}

/* Returns the first duplicate key found in any object of the tree, or NULL. */
static const char *find_duplicate(const cJSON *item, int *members_over)
{
    for (; item; item = item->next) {
        if (cJSON_IsObject(item)) {
            int count = 0;
            for (const cJSON *a = item->child; a; a = a->next) {
                if (++count > QOD_JSON_MAX_MEMBERS) {
                    *members_over = 1;
                    return NULL;
                }
                for (const cJSON *b = a->next; b; b = b->next)
                    if (a->string && b->string && strcmp(a->string, b->string) == 0)
                        return a->string;
            }
        }
        if (item->child) {
            const char *d = find_duplicate(item->child, members_over);
            if (d || *members_over)
                return d;
        }
    }
    return NULL;
}

int qod_json_parse(const char *s, size_t n, int max_depth, cJSON **out, char *err, size_t errcap)
{
    *out = NULL;
    if (max_depth <= 0)
        max_depth = QOD_JSON_MAX_DEPTH;
    int depth = scan_text(s, n, max_depth);
    if (depth >= 0 && !qod_utf8_valid(s, n))
        depth = -2;
    if (depth == -2) {
        snprintf(err, errcap, "malformed JSON: the body is not valid UTF-8");
        return QOD_ERR_INVALID;
    }
    if (depth < 0) {
        snprintf(err, errcap, "malformed JSON: a string holds a NUL or a raw control character");
        return QOD_ERR_INVALID;
    }
    if (depth > max_depth) {
        snprintf(err, errcap, "JSON nesting deeper than %d levels", max_depth);
        return QOD_ERR_LIMIT;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!root) {
        snprintf(err, errcap, "malformed JSON near byte %zu", end && end >= s ? (size_t)(end - s) : (size_t)0);
        return QOD_ERR_INVALID;
    }
    /* Only whitespace may follow the value. */
    for (const char *p = end; p && p < s + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            snprintf(err, errcap, "unexpected data after the JSON value");
            return QOD_ERR_INVALID;
        }
    }
    int over = 0;
    const char *dup = find_duplicate(root, &over);
    if (dup || over) {
        if (over)
            snprintf(err, errcap, "an object has more than %d members", QOD_JSON_MAX_MEMBERS);
        else
            snprintf(err, errcap, "duplicate key \"%.64s\"", dup);
        cJSON_Delete(root);
        return over ? QOD_ERR_LIMIT : QOD_ERR_INVALID;
    }
    *out = root;
    return QOD_OK;
}

int qod_json_parse_own(const char *s, size_t n, cJSON **out)
{
    *out = NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!root)
        return QOD_ERR_INVALID;
    for (const char *p = end; p && p < s + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
            cJSON_Delete(root);
            return QOD_ERR_INVALID;
        }
    }
    *out = root;
    return QOD_OK;
}

static const cJSON *member(const cJSON *obj, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return it && !cJSON_IsNull(it) ? it : NULL;
}

int qod_json_str(const cJSON *obj, const char *key, const char **out)
{
    const cJSON *it = member(obj, key);
    if (!it)
        return QOD_ERR_NOTFOUND;
    if (!cJSON_IsString(it) || !it->valuestring)
        return QOD_ERR_INVALID;
    *out = it->valuestring;
    return QOD_OK;
}

bool qod_json_is_int(const cJSON *item, int64_t min, int64_t max)
{
    if (!cJSON_IsNumber(item))
        return false;
    double d = item->valuedouble;
    return isfinite(d) && floor(d) == d && d >= (double)min && d <= (double)max;
}

int qod_json_int(const cJSON *obj, const char *key, int64_t min, int64_t max, int64_t *out)
{
    const cJSON *it = member(obj, key);
    if (!it)
        return QOD_ERR_NOTFOUND;
    if (!cJSON_IsNumber(it))
        return QOD_ERR_INVALID;
    double d = it->valuedouble;
    if (!isfinite(d) || floor(d) != d || fabs(d) > 9007199254740992.0)
        return QOD_ERR_INVALID;
    if (d < (double)min || d > (double)max)
        return QOD_ERR_RANGE;
    *out = (int64_t)d;
    return QOD_OK;
}

int qod_json_bool(const cJSON *obj, const char *key, bool *out)
{
    const cJSON *it = member(obj, key);
    if (!it)
        return QOD_ERR_NOTFOUND;
    if (!cJSON_IsBool(it))
        return QOD_ERR_INVALID;
    *out = cJSON_IsTrue(it);
    return QOD_OK;
}

int qod_json_obj(const cJSON *obj, const char *key, const cJSON **out)
{
    const cJSON *it = member(obj, key);
    if (!it)
        return QOD_ERR_NOTFOUND;
    if (!cJSON_IsObject(it))
        return QOD_ERR_INVALID;
    *out = it;
    return QOD_OK;
}

bool qod_json_only_keys(const cJSON *obj, const char *const *allowed, const char **bad)
{
    for (const cJSON *it = obj->child; it; it = it->next) {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++)
            ok = strcmp(*a, it->string) == 0;
        if (!ok) {
            *bad = it->string;
            return false;
        }
    }
    return true;
}
