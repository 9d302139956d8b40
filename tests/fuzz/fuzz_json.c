/* Fuzzes qod_json_parse, the bounded strict parser in front of every JSON request body, and the typed field
 * accessors over the tree it returns. Besides memory errors it checks:
 * - a parsed tree respects the limits (depth, members per object, no duplicate key);
 * - each accessor agrees with the item's cJSON type, and qod_json_int only returns whole in-range numbers;
 * - qod_json_only_keys accepts an object's own key list and names the first key missing from a shorter list;
 * - what cJSON prints from an accepted tree is accepted again and prints the same (the daemon stores cJSON output,
 *   such as device and profile JSON, and parses it again later). */
#include "fuzz.h"

#include "util/err.h"
#include "util/json.h"

#include <math.h>

/* Checks every accessor against the type of one member of obj. */
static void check_member(const cJSON *obj, const cJSON *it)
{
    const char *s = NULL;
    const cJSON *o = NULL;
    int64_t v = 0;
    bool b = false;
    bool null = cJSON_IsNull(it);
    int rc = qod_json_str(obj, it->string, &s);
    FUZZ_CHECK(null ? rc == QOD_ERR_NOTFOUND : (rc == QOD_OK) == (cJSON_IsString(it) != 0));
    FUZZ_CHECK(rc != QOD_OK || s == it->valuestring);
    rc = qod_json_obj(obj, it->string, &o);
    FUZZ_CHECK(null ? rc == QOD_ERR_NOTFOUND : (rc == QOD_OK) == (cJSON_IsObject(it) != 0));
    FUZZ_CHECK(rc != QOD_OK || o == it);
    rc = qod_json_bool(obj, it->string, &b);
    FUZZ_CHECK(null ? rc == QOD_ERR_NOTFOUND : (rc == QOD_OK) == (cJSON_IsBool(it) != 0));
    static const int64_t ranges[][2] = {{INT64_MIN, INT64_MAX}, {0, 65535}, {1, INT32_MAX}, {-5, 5}};
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++) {
        rc = qod_json_int(obj, it->string, ranges[i][0], ranges[i][1], &v);
        FUZZ_CHECK(!null || rc == QOD_ERR_NOTFOUND);
        FUZZ_CHECK(rc == QOD_OK || rc == QOD_ERR_NOTFOUND || rc == QOD_ERR_INVALID || rc == QOD_ERR_RANGE);
        if (rc == QOD_OK) {
            FUZZ_CHECK(cJSON_IsNumber(it) && floor(it->valuedouble) == it->valuedouble);
            FUZZ_CHECK(v >= ranges[i][0] && v <= ranges[i][1] && (double)v == it->valuedouble);
            FUZZ_CHECK(qod_json_is_int(it, ranges[i][0], ranges[i][1]));
        }
    }
}

/* Checks an object's members and its key list; returns the tree's depth below item. */
static int walk(const cJSON *item)
{
    int deepest = 0;
    if (cJSON_IsObject(item)) {
        const char *keys[QOD_JSON_MAX_MEMBERS + 1];
        int n = 0;
        for (const cJSON *it = item->child; it; it = it->next) {
            FUZZ_CHECK(it->string != NULL && n < QOD_JSON_MAX_MEMBERS);
            for (int k = 0; k < n; k++)
                FUZZ_CHECK(strcmp(keys[k], it->string) != 0);
            keys[n++] = it->string;
            check_member(item, it);
        }
        keys[n] = NULL;
        const char *bad = NULL;
        FUZZ_CHECK(qod_json_only_keys(item, keys, &bad));
        if (n) {
            /* Keys are unique, so without the last one exactly that key is unknown. */
            const char *last = keys[n - 1];
            keys[n - 1] = NULL;
            FUZZ_CHECK(!qod_json_only_keys(item, keys, &bad) && strcmp(bad, last) == 0);
        }
    }
    for (const cJSON *it = item->child; it; it = it->next) {
        int d = walk(it);
        if (d > deepest)
            deepest = d;
    }
    return deepest + (cJSON_IsObject(item) || cJSON_IsArray(item) ? 1 : 0);
}

/* What cJSON prints from an accepted tree parses again and prints identically. */
static void check_reprint(const cJSON *root, int max_depth)
{
    char err[128];
    char *text = cJSON_PrintUnformatted(root);
    FUZZ_CHECK(text != NULL);
    cJSON *again = NULL;
    FUZZ_CHECK(qod_json_parse(text, strlen(text), max_depth, &again, err, sizeof err) == QOD_OK);
    char *text2 = cJSON_PrintUnformatted(again);
    FUZZ_CHECK(text2 != NULL && strcmp(text, text2) == 0);
    cJSON_free(text2);
    cJSON_Delete(again);
    cJSON_free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* A first byte below 0x10 picks the depth limit (0 is the default of 16; callers pass 1 for a JWT header up to
     * 8), so that the seed corpus can be plain JSON. */
    int max_depth = 0;
    if (size && data[0] < 0x10) {
        max_depth = data[0] % 10;
        data++;
        size--;
    }
    char err[128] = "";
    cJSON *root = NULL;
    /* The body is passed without a terminator, as the HTTP layer does: the parser must stay inside size bytes. */
    int rc = qod_json_parse((const char *)data, size, max_depth, &root, err, sizeof err);
    FUZZ_CHECK(rc == QOD_OK || rc == QOD_ERR_INVALID || rc == QOD_ERR_LIMIT);
    FUZZ_CHECK((rc == QOD_OK) == (root != NULL));
    if (rc != QOD_OK) {
        FUZZ_CHECK(strlen(err) > 0 && strlen(err) < sizeof err);
        return 0;
    }
    FUZZ_CHECK(walk(root) <= (max_depth ? max_depth : QOD_JSON_MAX_DEPTH));
    check_reprint(root, max_depth);
    cJSON_Delete(root);
    return 0;
}
