#include "util/buf.h"

#include "qtest.h"
#include "util/err.h"

#include <stdlib.h>
#include <string.h>

/* Appends s as a JSON string into a fresh buffer and compares with want. Returns 1 when equal. */
static int json_str_is(const char *s, const char *want)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    int ok = qod_buf_json_str(&b, s) == QOD_OK && b.len == strlen(want) && strcmp(b.data, want) == 0;
    if (!ok)
        printf("  json_str(\"%s\") gave %s, expected %s\n", s, b.data ? b.data : "(null)", want);
    qod_buf_dispose(&b);
    return ok;
}

QTEST(init_is_empty)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_TRUE(b.data == NULL);
    QT_EQ_INT(b.len, 0);
    QT_TRUE(b.max > 0);
    qod_buf_dispose(&b);
}

QTEST(append_grows_and_terminates)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_append(&b, "abc", 3), QOD_OK);
    QT_EQ_INT(qod_buf_append(&b, "defgh", 2), QOD_OK);
    QT_EQ_INT(b.len, 5);
    QT_EQ_STR(b.data, "abcde");
    qod_buf_dispose(&b);
}

QTEST(append_binary_with_nul)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_append(&b, "a\0b", 3), QOD_OK);
    QT_EQ_INT(b.len, 3);
    QT_TRUE(memcmp(b.data, "a\0b", 4) == 0);
    qod_buf_dispose(&b);
}

QTEST(append_empty_is_ok_and_terminates)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_append(&b, NULL, 0), QOD_OK);
    QT_EQ_INT(b.len, 0);
    QT_TRUE(b.data != NULL);
    QT_EQ_STR(b.data, "");
    qod_buf_dispose(&b);
}

QTEST(append_many_grows_past_initial_capacity)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    for (int i = 0; i < 10000; i++)
        QT_EQ_INT(qod_buf_append(&b, "0123456789", 10), QOD_OK);
    QT_EQ_INT(b.len, 100000);
    QT_TRUE(b.cap > b.len);
    QT_EQ_INT(b.data[b.len], '\0');
    QT_TRUE(memcmp(b.data + 99990, "0123456789", 10) == 0);
    qod_buf_dispose(&b);
}

QTEST(puts_appends_string)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_puts(&b, "hello"), QOD_OK);
    QT_EQ_INT(qod_buf_puts(&b, ", world"), QOD_OK);
    QT_EQ_STR(b.data, "hello, world");
    qod_buf_dispose(&b);
}

QTEST(printf_appends_formatted)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_puts(&b, "x="), QOD_OK);
    QT_EQ_INT(qod_buf_printf(&b, "%d %s %.2f", 42, "y", 1.5), QOD_OK);
    QT_EQ_STR(b.data, "x=42 y 1.50");
    QT_EQ_INT(b.len, strlen("x=42 y 1.50"));
    qod_buf_dispose(&b);
}

QTEST(printf_long_output)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    char big[5000];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    QT_EQ_INT(qod_buf_printf(&b, "<%s>", big), QOD_OK);
    QT_EQ_INT(b.len, sizeof big + 1);
    QT_EQ_INT(b.data[0], '<');
    QT_EQ_INT(b.data[b.len - 1], '>');
    QT_EQ_INT(b.data[b.len], '\0');
    qod_buf_dispose(&b);
}

QTEST(append_exactly_to_limit_ok)
{
    qod_buf b;
    qod_buf_init(&b, 8);
    QT_EQ_INT(qod_buf_append(&b, "12345678", 8), QOD_OK);
    QT_EQ_INT(b.len, 8);
    QT_EQ_STR(b.data, "12345678");
    qod_buf_dispose(&b);
}

QTEST(append_past_limit_is_limit)
{
    qod_buf b;
    qod_buf_init(&b, 8);
    QT_EQ_INT(qod_buf_append(&b, "12345", 5), QOD_OK);
    QT_EQ_INT(qod_buf_append(&b, "6789", 4), QOD_ERR_LIMIT);
    /* The failed append leaves the buffer unchanged. */
    QT_EQ_INT(b.len, 5);
    QT_EQ_STR(b.data, "12345");
    qod_buf_dispose(&b);
}

QTEST(append_huge_is_limit)
{
    qod_buf b;
    qod_buf_init(&b, 8);
    QT_EQ_INT(qod_buf_append(&b, "x", 1), QOD_OK);
    QT_EQ_INT(qod_buf_append(&b, "x", (size_t)-1), QOD_ERR_LIMIT);
    QT_EQ_INT(b.len, 1);
    qod_buf_dispose(&b);
}

QTEST(printf_past_limit_is_limit)
{
    qod_buf b;
    qod_buf_init(&b, 8);
    QT_EQ_INT(qod_buf_printf(&b, "%s", "1234"), QOD_OK);
    QT_EQ_INT(qod_buf_printf(&b, "%d", 12345), QOD_ERR_LIMIT);
    QT_EQ_INT(b.len, 4);
    QT_EQ_STR(b.data, "1234");
    qod_buf_dispose(&b);
}

QTEST(default_limit_is_16_mib)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(b.max, 16u * 1024 * 1024);
    QT_EQ_INT(qod_buf_append(&b, "x", 1), QOD_OK);
    QT_EQ_INT(qod_buf_append(&b, "x", 16u * 1024 * 1024), QOD_ERR_LIMIT);
    qod_buf_dispose(&b);
}

QTEST(json_str_plain)
{
    QT_TRUE(json_str_is("hello", "\"hello\""));
}

QTEST(json_str_empty)
{
    QT_TRUE(json_str_is("", "\"\""));
}

QTEST(json_str_escapes_quote)
{
    QT_TRUE(json_str_is("say \"hi\"", "\"say \\\"hi\\\"\""));
}

QTEST(json_str_escapes_backslash)
{
    QT_TRUE(json_str_is("a\\b", "\"a\\\\b\""));
}

QTEST(json_str_escapes_newline_tab_cr)
{
    QT_TRUE(json_str_is("a\nb\tc\rd", "\"a\\nb\\tc\\rd\""));
}

QTEST(json_str_escapes_control_chars_as_u)
{
    QT_TRUE(json_str_is("\x01", "\"\\u0001\""));
    QT_TRUE(json_str_is("x\x1fy", "\"x\\u001fy\""));
    QT_TRUE(json_str_is("\b\f", "\"\\u0008\\u000c\""));
}

QTEST(json_str_passes_utf8_and_slash)
{
    QT_TRUE(json_str_is("caf\xc3\xa9 a/b", "\"caf\xc3\xa9 a/b\""));
}

QTEST(json_str_appends_after_existing)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_puts(&b, "{\"k\":"), QOD_OK);
    QT_EQ_INT(qod_buf_json_str(&b, "v\""), QOD_OK);
    QT_EQ_INT(qod_buf_puts(&b, "}"), QOD_OK);
    QT_EQ_STR(b.data, "{\"k\":\"v\\\"\"}");
    qod_buf_dispose(&b);
}

QTEST(json_str_past_limit_is_limit)
{
    qod_buf b;
    qod_buf_init(&b, 6);
    QT_EQ_INT(qod_buf_json_str(&b, "abcd"), QOD_OK);
    qod_buf_reset(&b);
    QT_EQ_INT(qod_buf_json_str(&b, "abcde"), QOD_ERR_LIMIT);
    qod_buf_reset(&b);
    QT_EQ_INT(qod_buf_json_str(&b, "\x01"), QOD_ERR_LIMIT);
    qod_buf_dispose(&b);
}

QTEST(steal_transfers_ownership_and_resets)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_puts(&b, "owned"), QOD_OK);
    char *p = qod_buf_steal(&b);
    QT_EQ_STR(p, "owned");
    QT_TRUE(b.data == NULL);
    QT_EQ_INT(b.len, 0);
    QT_EQ_INT(b.cap, 0);
    free(p);
    /* The buffer is usable again after a steal. */
    QT_EQ_INT(qod_buf_puts(&b, "again"), QOD_OK);
    QT_EQ_STR(b.data, "again");
    qod_buf_dispose(&b);
}

QTEST(steal_empty_returns_null)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    char *p = qod_buf_steal(&b);
    QT_TRUE(p == NULL);
    qod_buf_dispose(&b);
}

QTEST(reset_empties_and_keeps_memory)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_puts(&b, "some text"), QOD_OK);
    char *before = b.data;
    size_t cap = b.cap;
    qod_buf_reset(&b);
    QT_EQ_INT(b.len, 0);
    QT_EQ_STR(b.data, "");
    QT_TRUE(b.data == before);
    QT_EQ_INT(b.cap, cap);
    QT_EQ_INT(qod_buf_puts(&b, "new"), QOD_OK);
    QT_EQ_STR(b.data, "new");
    qod_buf_dispose(&b);
}

QTEST(reset_frees_budget_for_limit)
{
    qod_buf b;
    qod_buf_init(&b, 4);
    QT_EQ_INT(qod_buf_puts(&b, "abcd"), QOD_OK);
    QT_EQ_INT(qod_buf_puts(&b, "e"), QOD_ERR_LIMIT);
    qod_buf_reset(&b);
    QT_EQ_INT(qod_buf_puts(&b, "wxyz"), QOD_OK);
    qod_buf_dispose(&b);
}

QTEST(dispose_then_reuse)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_puts(&b, "one"), QOD_OK);
    qod_buf_dispose(&b);
    QT_TRUE(b.data == NULL);
    qod_buf_init(&b, 0);
    QT_EQ_INT(qod_buf_puts(&b, "two"), QOD_OK);
    QT_EQ_STR(b.data, "two");
    qod_buf_dispose(&b);
}

QTEST(put_i64_matches_printf)
{
    static const int64_t vals[] = {0, 7, -7, 10, 99, 100, 1234567890123LL, INT64_MAX, INT64_MIN, -1};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        qod_buf a, b;
        qod_buf_init(&a, 0);
        qod_buf_init(&b, 0);
        QT_EQ_INT(qod_buf_put_i64(&a, vals[i]), QOD_OK);
        qod_buf_printf(&b, "%lld", (long long)vals[i]);
        QT_EQ_STR(a.data, b.data);
        qod_buf_dispose(&a);
        qod_buf_dispose(&b);
    }
}

QTEST_MAIN(QT_CASE(put_i64_matches_printf), QT_CASE(init_is_empty), QT_CASE(append_grows_and_terminates),
           QT_CASE(append_binary_with_nul), QT_CASE(append_empty_is_ok_and_terminates),
           QT_CASE(append_many_grows_past_initial_capacity), QT_CASE(puts_appends_string),
           QT_CASE(printf_appends_formatted), QT_CASE(printf_long_output), QT_CASE(append_exactly_to_limit_ok),
           QT_CASE(append_past_limit_is_limit), QT_CASE(append_huge_is_limit), QT_CASE(printf_past_limit_is_limit),
           QT_CASE(default_limit_is_16_mib), QT_CASE(json_str_plain), QT_CASE(json_str_empty),
           QT_CASE(json_str_escapes_quote), QT_CASE(json_str_escapes_backslash),
           QT_CASE(json_str_escapes_newline_tab_cr), QT_CASE(json_str_escapes_control_chars_as_u),
           QT_CASE(json_str_passes_utf8_and_slash), QT_CASE(json_str_appends_after_existing),
           QT_CASE(json_str_past_limit_is_limit), QT_CASE(steal_transfers_ownership_and_resets),
           QT_CASE(steal_empty_returns_null), QT_CASE(reset_empties_and_keeps_memory),
           QT_CASE(reset_frees_budget_for_limit), QT_CASE(dispose_then_reuse))
