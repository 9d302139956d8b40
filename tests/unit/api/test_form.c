#include "api/form.h"

#include "qtest.h"
#include "util/buf.h"
#include "util/err.h"

#include <string.h>

/* Parses a NUL-terminated body. */
static int parse(const char *s, qod_form *f, const char **why)
{
    return qod_form_parse(s, strlen(s), f, why);
}

QTEST(parse_two_fields)
{
    qod_form f;
    const char *why = "unset";
    QT_EQ_INT(parse("a=1&b=2", &f, &why), QOD_OK);
    QT_TRUE(why == NULL);
    QT_EQ_INT(f.n, 2);
    QT_EQ_STR(qod_form_get(&f, "a"), "1");
    QT_EQ_STR(qod_form_get(&f, "b"), "2");
    qod_form_dispose(&f);
}

QTEST(parse_empty_body)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("", &f, &why), QOD_OK);
    QT_EQ_INT(f.n, 0);
    qod_form_dispose(&f);
}

QTEST(parse_respects_length)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(qod_form_parse("a=1&b=2", 3, &f, &why), QOD_OK);
    QT_EQ_INT(f.n, 1);
    QT_TRUE(qod_form_get(&f, "b") == NULL);
    qod_form_dispose(&f);
}

QTEST(plus_decodes_to_space)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("scope=qod+quality-on-demand%3Asessions%3Aread&na+me=x", &f, &why), QOD_OK);
    QT_EQ_STR(qod_form_get(&f, "scope"), "qod quality-on-demand:sessions:read");
    QT_EQ_STR(qod_form_get(&f, "na me"), "x");
    qod_form_dispose(&f);
}

QTEST(percent_decodes)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("v=a%20b%2Bc%2bd%26e%3Df%25", &f, &why), QOD_OK);
    QT_EQ_STR(qod_form_get(&f, "v"), "a b+c+d&e=f%");
    qod_form_dispose(&f);
}

QTEST(percent_decodes_utf8_bytes)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("v=caf%C3%A9", &f, &why), QOD_OK);
    QT_EQ_STR(qod_form_get(&f, "v"), "caf\xc3\xa9");
    qod_form_dispose(&f);
}

QTEST(empty_value_ok)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=&b", &f, &why), QOD_OK);
    QT_EQ_STR(qod_form_get(&f, "a"), "");
    QT_EQ_STR(qod_form_get(&f, "b"), "");
    qod_form_dispose(&f);
}

QTEST(empty_segments_skipped)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("&&a=1&&b=2&", &f, &why), QOD_OK);
    QT_EQ_INT(f.n, 2);
    qod_form_dispose(&f);
}

QTEST(value_may_contain_equals)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=b=c", &f, &why), QOD_OK);
    QT_EQ_STR(qod_form_get(&f, "a"), "b=c");
    qod_form_dispose(&f);
}

QTEST(repeated_field_invalid)
{
    qod_form f;
    const char *why = NULL;
    QT_EQ_INT(parse("grant_type=a&scope=x&grant_type=b", &f, &why), QOD_ERR_INVALID);
    QT_TRUE(why != NULL && strstr(why, "repeated") != NULL);
    qod_form_dispose(&f);
}

QTEST(repeated_field_after_decoding_invalid)
{
    qod_form f;
    const char *why = NULL;
    QT_EQ_INT(parse("a=1&%61=2", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
}

QTEST(sixteen_fields_ok)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    for (int i = 0; i < QOD_FORM_MAX_FIELDS; i++)
        qod_buf_printf(&b, "%sf%d=%d", i ? "&" : "", i, i);
    qod_form f;
    const char *why;
    int rc = qod_form_parse(b.data, b.len, &f, &why);
    int n = f.n;
    qod_form_dispose(&f);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(n, QOD_FORM_MAX_FIELDS);
}

QTEST(seventeen_fields_limit)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    for (int i = 0; i <= QOD_FORM_MAX_FIELDS; i++)
        qod_buf_printf(&b, "%sf%d=%d", i ? "&" : "", i, i);
    qod_form f;
    const char *why = NULL;
    int rc = qod_form_parse(b.data, b.len, &f, &why);
    qod_form_dispose(&f);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_ERR_LIMIT);
    QT_TRUE(why != NULL);
}

QTEST(bad_escape_invalid)
{
    qod_form f;
    const char *why = NULL;
    QT_EQ_INT(parse("a=%zz", &f, &why), QOD_ERR_INVALID);
    QT_TRUE(why != NULL);
    qod_form_dispose(&f);
}

QTEST(half_bad_escape_invalid)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=%4g", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
}

QTEST(truncated_escape_invalid)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=%4", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
    QT_EQ_INT(parse("a=%", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
    QT_EQ_INT(parse("a=%4&b=1", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
}

QTEST(escape_at_end_of_value_ok)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=%41", &f, &why), QOD_OK);
    QT_EQ_STR(qod_form_get(&f, "a"), "A");
    qod_form_dispose(&f);
}

QTEST(bad_escape_in_name_invalid)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("%zz=1", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
}

QTEST(encoded_nul_invalid)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=x%00y", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
}

QTEST(encoded_control_bytes_invalid)
{
    static const char *const bad[] = {"a=%0A", "a=%0d", "a=%1F", "a=%7F", "a=%09", "%0a=1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qod_form f;
        const char *why;
        int rc = parse(bad[i], &f, &why);
        qod_form_dispose(&f);
        QT_EQ_INT(rc, QOD_ERR_INVALID);
    }
}

QTEST(raw_control_bytes_invalid)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=x\ny", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
    QT_EQ_INT(qod_form_parse("a=x\0y", 5, &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
    QT_EQ_INT(parse("a=x\x7fy", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
}

QTEST(empty_name_invalid)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("=value", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
    QT_EQ_INT(parse("a=1&=2", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
}

QTEST(value_of_1024_bytes_ok)
{
    char body[2 + QOD_FORM_MAX_VALUE + 1];
    memcpy(body, "a=", 2);
    memset(body + 2, 'v', QOD_FORM_MAX_VALUE);
    body[sizeof body - 1] = '\0';
    qod_form f;
    const char *why;
    int rc = parse(body, &f, &why);
    size_t len = rc == QOD_OK ? strlen(qod_form_get(&f, "a")) : 0;
    qod_form_dispose(&f);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(len, QOD_FORM_MAX_VALUE);
}

QTEST(value_of_1025_bytes_invalid)
{
    char body[2 + QOD_FORM_MAX_VALUE + 2];
    memcpy(body, "a=", 2);
    memset(body + 2, 'v', QOD_FORM_MAX_VALUE + 1);
    body[sizeof body - 1] = '\0';
    qod_form f;
    const char *why = NULL;
    int rc = parse(body, &f, &why);
    qod_form_dispose(&f);
    QT_TRUE(rc != QOD_OK);
    QT_TRUE(why != NULL);
}

QTEST(value_limit_counts_decoded_bytes)
{
    /* 1024 decoded bytes written as 3072 escaped bytes are within the limit. */
    qod_buf b;
    qod_buf_init(&b, 0);
    qod_buf_puts(&b, "a=");
    for (int i = 0; i < QOD_FORM_MAX_VALUE; i++)
        qod_buf_puts(&b, "%41");
    qod_form f;
    const char *why;
    int rc = qod_form_parse(b.data, b.len, &f, &why);
    size_t len = rc == QOD_OK ? strlen(qod_form_get(&f, "a")) : 0;
    qod_form_dispose(&f);
    qod_buf_dispose(&b);
    QT_EQ_INT(rc, QOD_OK);
    QT_EQ_INT(len, QOD_FORM_MAX_VALUE);
}

QTEST(name_longer_than_1024_invalid)
{
    char body[QOD_FORM_MAX_VALUE + 4];
    memset(body, 'n', QOD_FORM_MAX_VALUE + 1);
    memcpy(body + QOD_FORM_MAX_VALUE + 1, "=1", 3);
    qod_form f;
    const char *why;
    int rc = parse(body, &f, &why);
    qod_form_dispose(&f);
    QT_TRUE(rc != QOD_OK);
}

QTEST(get_absent_is_null)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=1", &f, &why), QOD_OK);
    QT_TRUE(qod_form_get(&f, "b") == NULL);
    QT_TRUE(qod_form_get(&f, "A") == NULL);
    QT_TRUE(qod_form_get(&f, "") == NULL);
    qod_form_dispose(&f);
}

QTEST(dispose_then_parse_again)
{
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=1", &f, &why), QOD_OK);
    qod_form_dispose(&f);
    QT_EQ_INT(f.n, 0);
    QT_EQ_INT(parse("b=2", &f, &why), QOD_OK);
    QT_EQ_STR(qod_form_get(&f, "b"), "2");
    QT_TRUE(qod_form_get(&f, "a") == NULL);
    qod_form_dispose(&f);
}

QTEST(failure_keeps_earlier_fields_disposable)
{
    /* The fields parsed before the bad one belong to the form; dispose frees them (ASan checks). */
    qod_form f;
    const char *why;
    QT_EQ_INT(parse("a=1&b=2&c=%zz", &f, &why), QOD_ERR_INVALID);
    qod_form_dispose(&f);
    QT_EQ_INT(f.n, 0);
}

QTEST(decode_direct)
{
    char out[16];
    QT_EQ_INT(qod_form_decode("a+b%21", 6, out, sizeof out), 4);
    QT_EQ_STR(out, "a b!");
    QT_EQ_INT(qod_form_decode("", 0, out, sizeof out), 0);
    QT_EQ_STR(out, "");
}

QTEST(decode_overflow_rejected)
{
    char out[4];
    QT_EQ_INT(qod_form_decode("abc", 3, out, sizeof out), 3);
    QT_EQ_INT(qod_form_decode("abcd", 4, out, sizeof out), -1);
}

QTEST_MAIN(QT_CASE(parse_two_fields), QT_CASE(parse_empty_body), QT_CASE(parse_respects_length),
           QT_CASE(plus_decodes_to_space), QT_CASE(percent_decodes), QT_CASE(percent_decodes_utf8_bytes),
           QT_CASE(empty_value_ok), QT_CASE(empty_segments_skipped), QT_CASE(value_may_contain_equals),
           QT_CASE(repeated_field_invalid), QT_CASE(repeated_field_after_decoding_invalid), QT_CASE(sixteen_fields_ok),
           QT_CASE(seventeen_fields_limit), QT_CASE(bad_escape_invalid), QT_CASE(half_bad_escape_invalid),
           QT_CASE(truncated_escape_invalid), QT_CASE(escape_at_end_of_value_ok), QT_CASE(bad_escape_in_name_invalid),
           QT_CASE(encoded_nul_invalid), QT_CASE(encoded_control_bytes_invalid), QT_CASE(raw_control_bytes_invalid),
           QT_CASE(empty_name_invalid), QT_CASE(value_of_1024_bytes_ok), QT_CASE(value_of_1025_bytes_invalid),
           QT_CASE(value_limit_counts_decoded_bytes), QT_CASE(name_longer_than_1024_invalid),
           QT_CASE(get_absent_is_null), QT_CASE(dispose_then_parse_again),
           QT_CASE(failure_keeps_earlier_fields_disposable), QT_CASE(decode_direct), QT_CASE(decode_overflow_rejected))
