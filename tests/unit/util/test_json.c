#include "util/json.h"

#include "qtest.h"
#include "util/buf.h"
#include "util/err.h"

#include <string.h>

/* Parses a NUL-terminated text with the default depth limit; *err receives the reason on failure. */
static int parse(const char *s, cJSON **out, char *err, size_t errcap)
{
    return qod_json_parse(s, strlen(s), QOD_JSON_MAX_DEPTH, out, err, errcap);
}

/* Builds n nested arrays ("[[...]]") into b. */
static void nested_arrays(qod_buf *b, int n)
{
    for (int i = 0; i < n; i++)
        qod_buf_puts(b, "[");
    for (int i = 0; i < n; i++)
        qod_buf_puts(b, "]");
}

/* Builds an object with n members "k0".."k<n-1>" into b. */
static void object_with_members(qod_buf *b, int n)
{
    qod_buf_puts(b, "{");
    for (int i = 0; i < n; i++)
        qod_buf_printf(b, "%s\"k%d\":%d", i ? "," : "", i, i);
    qod_buf_puts(b, "}");
}

QTEST(parse_ok_object)
{
    cJSON *j = NULL;
    char err[128] = "";
    QT_EQ_INT(parse("{\"a\": 1, \"b\": [true, null, \"x\"], \"c\": {\"d\": -2.5}}", &j, err, sizeof err), QOD_OK);
    QT_TRUE(cJSON_IsObject(j));
    QT_EQ_INT(cJSON_GetArraySize(cJSON_GetObjectItem(j, "b")), 3);
    cJSON_Delete(j);
}

QTEST(parse_ok_with_surrounding_whitespace)
{
    cJSON *j = NULL;
    char err[128] = "";
    QT_EQ_INT(parse(" \t\r\n{}\r\n \t", &j, err, sizeof err), QOD_OK);
    QT_TRUE(cJSON_IsObject(j));
    cJSON_Delete(j);
}

QTEST(parse_respects_length_not_nul)
{
    cJSON *j = NULL;
    char err[128] = "";
    /* Only the first 7 bytes are the document; the rest of the buffer must not be looked at. */
    const char text[] = "{\"a\":1}garbage";
    QT_EQ_INT(qod_json_parse(text, 7, 0, &j, err, sizeof err), QOD_OK);
    cJSON_Delete(j);
}

QTEST(parse_malformed_is_invalid)
{
    static const char *const bad[] = {"", "{", "{\"a\":}", "{\"a\" 1}", "[1,]", "{'a':1}", "nul", "\"open"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *j = (cJSON *)1;
        char err[128] = "";
        QT_EQ_INT(parse(bad[i], &j, err, sizeof err), QOD_ERR_INVALID);
        QT_TRUE(j == NULL);
        QT_TRUE(err[0] != '\0');
    }
}

QTEST(parse_trailing_garbage_is_invalid)
{
    static const char *const bad[] = {"{} x", "{}{}", "[1] 2", "{}\0", "1 1"};
    static const size_t len[] = {4, 4, 5, 3, 3};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cJSON *j = NULL;
        char err[128] = "";
        QT_EQ_INT(qod_json_parse(bad[i], len[i], 0, &j, err, sizeof err), QOD_ERR_INVALID);
        QT_TRUE(j == NULL);
    }
}

/* A string holding U+0000 cannot be represented as a C string: accepting it would silently truncate the value
 * ("x\u0000y" read as "x"), so our reading of the body would differ from every other parser's. */
QTEST(parse_escaped_nul_in_string_rejected)
{
    cJSON *j = NULL;
    char err[128] = "";
    int rc = parse("{\"a\":\"x\\u0000y\"}", &j, err, sizeof err);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(parse_raw_nul_in_string_rejected)
{
    static const char text[] = "{\"a\":\"x\0y\"}";
    cJSON *j = NULL;
    char err[128] = "";
    int rc = qod_json_parse(text, sizeof text - 1, 0, &j, err, sizeof err);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
}

QTEST(parse_depth_at_limit_ok)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    nested_arrays(&b, 16);
    cJSON *j = NULL;
    char err[128] = "";
    int rc = qod_json_parse(b.data, b.len, 16, &j, err, sizeof err);
    cJSON_Delete(j);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
}

QTEST(parse_depth_over_limit_is_limit)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    nested_arrays(&b, 17);
    cJSON *j = NULL;
    char err[128] = "";
    int rc = qod_json_parse(b.data, b.len, 16, &j, err, sizeof err);
    cJSON_Delete(j);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_ERR_LIMIT);
    QT_TRUE(j == NULL);
    QT_TRUE(strstr(err, "16") != NULL);
}

QTEST(parse_depth_mixed_objects_and_arrays)
{
    cJSON *j = NULL;
    char err[128] = "";
    static const char deep[] = "{\"a\":[{\"b\":[1]}]}", ok[] = "{\"a\":[{\"b\":1}]}";
    QT_EQ_INT(qod_json_parse(deep, sizeof deep - 1, 3, &j, err, sizeof err), QOD_ERR_LIMIT);
    QT_EQ_INT(qod_json_parse(ok, sizeof ok - 1, 3, &j, err, sizeof err), QOD_OK);
    cJSON_Delete(j);
}

QTEST(parse_depth_ignores_brackets_in_strings)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    /* 20 brackets inside a string, and an escaped quote that must not end the string early. */
    qod_buf_puts(&b, "{\"s\":\"\\\"[[[[[[[[[[{{{{{{{{{{\",\"t\":\"]]]]\"}");
    cJSON *j = NULL;
    char err[128] = "";
    int rc = qod_json_parse(b.data, b.len, 2, &j, err, sizeof err);
    cJSON_Delete(j);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
}

QTEST(parse_depth_default_when_zero)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    nested_arrays(&b, QOD_JSON_MAX_DEPTH + 1);
    cJSON *j = NULL;
    char err[128] = "";
    int rc = qod_json_parse(b.data, b.len, 0, &j, err, sizeof err);
    cJSON_Delete(j);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_ERR_LIMIT);
}

QTEST(parse_duplicate_key_top_level_is_invalid)
{
    cJSON *j = NULL;
    char err[128] = "";
    QT_EQ_INT(parse("{\"a\":1,\"b\":2,\"a\":3}", &j, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(j == NULL);
    QT_TRUE(strstr(err, "\"a\"") != NULL);
}

QTEST(parse_duplicate_key_nested_is_invalid)
{
    cJSON *j = NULL;
    char err[128] = "";
    QT_EQ_INT(parse("{\"x\":[1,{\"y\":{\"k\":1,\"k\":2}}]}", &j, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(j == NULL);
    QT_TRUE(strstr(err, "\"k\"") != NULL);
}

QTEST(parse_duplicate_key_in_later_sibling_is_invalid)
{
    cJSON *j = NULL;
    char err[128] = "";
    QT_EQ_INT(parse("[{\"a\":1},{\"b\":1,\"b\":2}]", &j, err, sizeof err), QOD_ERR_INVALID);
    QT_TRUE(j == NULL);
}

QTEST(parse_same_key_in_different_objects_ok)
{
    cJSON *j = NULL;
    char err[128] = "";
    QT_EQ_INT(parse("{\"a\":{\"a\":{\"a\":1}},\"b\":[{\"a\":1},{\"a\":2}]}", &j, err, sizeof err), QOD_OK);
    cJSON_Delete(j);
}

QTEST(parse_keys_differing_in_case_ok)
{
    cJSON *j = NULL;
    char err[128] = "";
    QT_EQ_INT(parse("{\"a\":1,\"A\":2}", &j, err, sizeof err), QOD_OK);
    cJSON_Delete(j);
}

QTEST(parse_256_members_ok)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    object_with_members(&b, QOD_JSON_MAX_MEMBERS);
    cJSON *j = NULL;
    char err[128] = "";
    int rc = qod_json_parse(b.data, b.len, 0, &j, err, sizeof err);
    cJSON_Delete(j);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
}

QTEST(parse_257_members_rejected)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    object_with_members(&b, QOD_JSON_MAX_MEMBERS + 1);
    cJSON *j = NULL;
    char err[128] = "";
    int rc = qod_json_parse(b.data, b.len, 0, &j, err, sizeof err);
    cJSON_Delete(j);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_ERR_LIMIT);
    QT_TRUE(strstr(err, "256") != NULL);
    QT_TRUE(j == NULL);
}

QTEST(parse_257_members_nested_rejected)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_buf_puts(&b, "{\"outer\":[");
    object_with_members(&b, QOD_JSON_MAX_MEMBERS + 1);
    qod_buf_puts(&b, "]}");
    cJSON *j = NULL;
    char err[128] = "";
    int rc = qod_json_parse(b.data, b.len, 0, &j, err, sizeof err);
    cJSON_Delete(j);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_ERR_LIMIT);
}

/* The document the field accessors are tested on. */
static cJSON *sample(void)
{
    static const char text[] = "{\"s\":\"text\",\"n\":42,\"neg\":-7,\"f\":1.5,\"big\":1e300,\"ns\":\"42\",\"nul\":null,"
                               "\"t\":true,\"o\":{\"x\":1},\"a\":[1]}";
    cJSON *j = NULL;
    char err[128];
    qod_json_parse(text, sizeof text - 1, 0, &j, err, sizeof err);
    return j;
}

QTEST(parse_own_reads_what_qodd_writes)
{
    static const char doc[] = "{\"id\":\"a\",\"n\":3,\"x\":{\"y\":[1,2]}}  \n";
    cJSON *o = NULL;
    QT_EQ_INT(qod_json_parse_own(doc, sizeof doc - 1, &o), QOD_OK);
    const char *id = NULL;
    QT_EQ_INT(qod_json_str(o, "id", &id), QOD_OK);
    QT_EQ_STR(id, "a");
    cJSON_Delete(o);
}

QTEST(parse_own_refuses_broken_and_trailing_text)
{
    cJSON *o = NULL;
    QT_EQ_INT(qod_json_parse_own("{\"id\":", 6, &o), QOD_ERR_INVALID);
    QT_TRUE(o == NULL);
    QT_EQ_INT(qod_json_parse_own("{} x", 4, &o), QOD_ERR_INVALID);
    QT_TRUE(o == NULL);
    QT_EQ_INT(qod_json_parse_own("", 0, &o), QOD_ERR_INVALID);
    /* The length is honoured: a row cut short is broken, not read past. */
    QT_EQ_INT(qod_json_parse_own("{\"a\":1}", 5, &o), QOD_ERR_INVALID);
}

QTEST(json_int_ok)
{
    cJSON *j = sample();
    int64_t v = 0;
    int rc = qod_json_int(j, "n", 0, 100, &v);
    int rc2 = qod_json_int(j, "neg", -10, 0, &v);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(rc2, QOD_OK);
    QT_EQ_INT(v, -7);
}

QTEST(json_int_bounds_inclusive)
{
    cJSON *j = sample();
    int64_t v = 0;
    int lo = qod_json_int(j, "n", 42, 100, &v);
    int hi = qod_json_int(j, "n", 0, 42, &v);
    cJSON_Delete(j);
    QT_EQ_INT(lo, QOD_OK);
    QT_EQ_INT(hi, QOD_OK);
    QT_EQ_INT(v, 42);
}

QTEST(json_int_rejects_fraction)
{
    cJSON *j = sample();
    int64_t v = 99;
    int rc = qod_json_int(j, "f", 0, 100, &v);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_EQ_INT(v, 99);
}

QTEST(json_int_rejects_huge)
{
    cJSON *j = sample();
    int64_t v = 99;
    int rc = qod_json_int(j, "big", INT64_MIN, INT64_MAX, &v);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_EQ_INT(v, 99);
}

QTEST(json_int_rejects_string)
{
    cJSON *j = sample();
    int64_t v = 99;
    int rc = qod_json_int(j, "ns", 0, 100, &v);
    int rc2 = qod_json_int(j, "t", 0, 100, &v);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_ERR_INVALID);
    QT_EQ_INT(rc2, QOD_ERR_INVALID);
}

QTEST(json_int_out_of_bounds_is_range)
{
    cJSON *j = sample();
    int64_t v = 99;
    int above = qod_json_int(j, "n", 0, 41, &v);
    int below = qod_json_int(j, "neg", 0, 100, &v);
    cJSON_Delete(j);
    QT_EQ_INT(above, QOD_ERR_RANGE);
    QT_EQ_INT(below, QOD_ERR_RANGE);
    QT_EQ_INT(v, 99);
}

QTEST(json_int_absent_and_null_are_notfound)
{
    cJSON *j = sample();
    int64_t v = 0;
    int absent = qod_json_int(j, "missing", 0, 100, &v);
    int null = qod_json_int(j, "nul", 0, 100, &v);
    cJSON_Delete(j);
    QT_EQ_INT(absent, QOD_ERR_NOTFOUND);
    QT_EQ_INT(null, QOD_ERR_NOTFOUND);
}

QTEST(json_str_ok_borrowed)
{
    cJSON *j = sample();
    const char *s = NULL;
    int rc = qod_json_str(j, "s", &s);
    int same = s == cJSON_GetObjectItem(j, "s")->valuestring;
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_STR(s, "text");
    cJSON_Delete(j);
    QT_TRUE(same);
}

QTEST(json_str_wrong_type_is_invalid)
{
    cJSON *j = sample();
    const char *s = NULL;
    int num = qod_json_str(j, "n", &s);
    int obj = qod_json_str(j, "o", &s);
    int arr = qod_json_str(j, "a", &s);
    int bol = qod_json_str(j, "t", &s);
    cJSON_Delete(j);
    QT_EQ_INT(num, QOD_ERR_INVALID);
    QT_EQ_INT(obj, QOD_ERR_INVALID);
    QT_EQ_INT(arr, QOD_ERR_INVALID);
    QT_EQ_INT(bol, QOD_ERR_INVALID);
    QT_TRUE(s == NULL);
}

QTEST(json_str_absent_is_notfound)
{
    cJSON *j = sample();
    const char *s = NULL;
    int rc = qod_json_str(j, "missing", &s);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_ERR_NOTFOUND);
}

QTEST(json_str_null_is_notfound)
{
    cJSON *j = sample();
    const char *s = NULL;
    int rc = qod_json_str(j, "nul", &s);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_ERR_NOTFOUND);
}

QTEST(json_str_key_is_case_sensitive)
{
    cJSON *j = sample();
    const char *s = NULL;
    int rc = qod_json_str(j, "S", &s);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_ERR_NOTFOUND);
}

QTEST(json_bool_ok)
{
    cJSON *j = sample();
    bool b = false;
    int rc = qod_json_bool(j, "t", &b);
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_OK);
    QT_TRUE(b);
}

QTEST(json_bool_wrong_type_is_invalid)
{
    cJSON *j = sample();
    bool b = false;
    int num = qod_json_bool(j, "n", &b);
    int str = qod_json_bool(j, "s", &b);
    cJSON_Delete(j);
    QT_EQ_INT(num, QOD_ERR_INVALID);
    QT_EQ_INT(str, QOD_ERR_INVALID);
}

QTEST(json_obj_ok)
{
    cJSON *j = sample();
    const cJSON *o = NULL;
    int rc = qod_json_obj(j, "o", &o);
    int has_x = o && cJSON_GetObjectItem(o, "x") != NULL;
    cJSON_Delete(j);
    QT_EQ_INT(rc, QOD_OK);
    QT_TRUE(has_x);
}

QTEST(json_obj_array_is_invalid_and_null_notfound)
{
    cJSON *j = sample();
    const cJSON *o = NULL;
    int arr = qod_json_obj(j, "a", &o);
    int nul = qod_json_obj(j, "nul", &o);
    cJSON_Delete(j);
    QT_EQ_INT(arr, QOD_ERR_INVALID);
    QT_EQ_INT(nul, QOD_ERR_NOTFOUND);
}

QTEST(json_is_int)
{
    cJSON *j = sample();
    bool n = qod_json_is_int(cJSON_GetObjectItem(j, "n"), 0, 100);
    bool nr = qod_json_is_int(cJSON_GetObjectItem(j, "n"), 0, 10);
    bool f = qod_json_is_int(cJSON_GetObjectItem(j, "f"), 0, 100);
    bool s = qod_json_is_int(cJSON_GetObjectItem(j, "ns"), 0, 100);
    cJSON_Delete(j);
    QT_TRUE(n);
    QT_TRUE(!nr);
    QT_TRUE(!f);
    QT_TRUE(!s);
}

QTEST(only_keys_accepts_subset)
{
    static const char *const allowed[] = {"a", "b", "c", NULL};
    cJSON *j = NULL;
    char err[64];
    QT_EQ_INT(parse("{\"a\":1,\"c\":2}", &j, err, sizeof err), QOD_OK);
    const char *bad = NULL;
    bool ok = qod_json_only_keys(j, allowed, &bad);
    cJSON_Delete(j);
    QT_TRUE(ok);
    QT_TRUE(bad == NULL);
}

QTEST(only_keys_accepts_empty_object)
{
    static const char *const allowed[] = {NULL};
    cJSON *j = NULL;
    char err[64];
    QT_EQ_INT(parse("{}", &j, err, sizeof err), QOD_OK);
    const char *bad = NULL;
    bool ok = qod_json_only_keys(j, allowed, &bad);
    cJSON_Delete(j);
    QT_TRUE(ok);
}

QTEST(only_keys_reports_first_unknown)
{
    static const char *const allowed[] = {"a", "b", NULL};
    cJSON *j = NULL;
    char err[64];
    QT_EQ_INT(parse("{\"a\":1,\"zz\":2,\"yy\":3}", &j, err, sizeof err), QOD_OK);
    const char *bad = NULL;
    bool ok = qod_json_only_keys(j, allowed, &bad);
    QT_TRUE(!ok);
    QT_EQ_STR(bad, "zz");
    cJSON_Delete(j);
}

QTEST_MAIN(QT_CASE(parse_own_reads_what_qodd_writes), QT_CASE(parse_own_refuses_broken_and_trailing_text),
           QT_CASE(parse_ok_object), QT_CASE(parse_ok_with_surrounding_whitespace),
           QT_CASE(parse_respects_length_not_nul), QT_CASE(parse_malformed_is_invalid),
           QT_CASE(parse_trailing_garbage_is_invalid), QT_CASE(parse_escaped_nul_in_string_rejected),
           QT_CASE(parse_raw_nul_in_string_rejected), QT_CASE(parse_depth_at_limit_ok),
           QT_CASE(parse_depth_over_limit_is_limit), QT_CASE(parse_depth_mixed_objects_and_arrays),
           QT_CASE(parse_depth_ignores_brackets_in_strings), QT_CASE(parse_depth_default_when_zero),
           QT_CASE(parse_duplicate_key_top_level_is_invalid), QT_CASE(parse_duplicate_key_nested_is_invalid),
           QT_CASE(parse_duplicate_key_in_later_sibling_is_invalid), QT_CASE(parse_same_key_in_different_objects_ok),
           QT_CASE(parse_keys_differing_in_case_ok), QT_CASE(parse_256_members_ok), QT_CASE(parse_257_members_rejected),
           QT_CASE(parse_257_members_nested_rejected), QT_CASE(json_int_ok), QT_CASE(json_int_bounds_inclusive),
           QT_CASE(json_int_rejects_fraction), QT_CASE(json_int_rejects_huge), QT_CASE(json_int_rejects_string),
           QT_CASE(json_int_out_of_bounds_is_range), QT_CASE(json_int_absent_and_null_are_notfound),
           QT_CASE(json_str_ok_borrowed), QT_CASE(json_str_wrong_type_is_invalid), QT_CASE(json_str_absent_is_notfound),
           QT_CASE(json_str_null_is_notfound), QT_CASE(json_str_key_is_case_sensitive), QT_CASE(json_bool_ok),
           QT_CASE(json_bool_wrong_type_is_invalid), QT_CASE(json_obj_ok),
           QT_CASE(json_obj_array_is_invalid_and_null_notfound), QT_CASE(json_is_int),
           QT_CASE(only_keys_accepts_subset), QT_CASE(only_keys_accepts_empty_object),
           QT_CASE(only_keys_reports_first_unknown))
