#include "auth/scope.h"

#include "auth/apps.h"
#include "qtest.h"
#include "util/buf.h"

#include <string.h>

#define READ "quality-on-demand:sessions:read"
#define CREATE "quality-on-demand:sessions:create"

QTEST(has_finds_each_token)
{
    QT_TRUE(qod_scope_has("qod " CREATE " " READ, "qod"));
    QT_TRUE(qod_scope_has("qod " CREATE " " READ, CREATE));
    QT_TRUE(qod_scope_has("qod " CREATE " " READ, READ));
}

QTEST(has_single_token_list)
{
    QT_TRUE(qod_scope_has(READ, READ));
}

QTEST(has_requires_whole_token)
{
    QT_TRUE(!qod_scope_has(READ, "quality-on-demand:sessions"));
    QT_TRUE(!qod_scope_has("quality-on-demand:sessions", READ));
    QT_TRUE(!qod_scope_has("qodx qo", "qod"));
    QT_TRUE(!qod_scope_has(READ, "read"));
}

QTEST(has_is_case_sensitive)
{
    QT_TRUE(!qod_scope_has("qod", "QOD"));
}

QTEST(has_empty_scope_never_matches)
{
    QT_TRUE(!qod_scope_has("qod", ""));
    QT_TRUE(!qod_scope_has("", ""));
    QT_TRUE(!qod_scope_has("a  b", ""));
}

QTEST(has_in_empty_list_false)
{
    QT_TRUE(!qod_scope_has("", "qod"));
}

QTEST(subset_true_when_all_present)
{
    QT_TRUE(qod_scope_subset(READ " qod", "qod " CREATE " " READ));
    QT_TRUE(qod_scope_subset("qod", "qod"));
}

QTEST(subset_false_when_one_missing)
{
    QT_TRUE(!qod_scope_subset("qod " CREATE, "qod " READ));
    QT_TRUE(!qod_scope_subset(CREATE, ""));
}

QTEST(subset_empty_want_is_subset)
{
    QT_TRUE(qod_scope_subset("", "qod"));
    QT_TRUE(qod_scope_subset("", ""));
}

QTEST(subset_partial_token_is_not_enough)
{
    QT_TRUE(!qod_scope_subset("qo", "qod"));
    QT_TRUE(!qod_scope_subset("qod", "qo"));
}

QTEST(valid_accepts_well_formed)
{
    QT_TRUE(qod_scope_valid("qod", 64));
    QT_TRUE(qod_scope_valid("qod " CREATE " " READ, 512));
    QT_TRUE(qod_scope_valid("a!#$%&'()*+,-./:;<=>?@[]^_`{|}~", 64));
}

QTEST(valid_rejects_empty)
{
    QT_TRUE(!qod_scope_valid("", 64));
}

QTEST(valid_rejects_double_space)
{
    QT_TRUE(!qod_scope_valid("qod  " READ, 512));
}

QTEST(valid_rejects_leading_space)
{
    QT_TRUE(!qod_scope_valid(" qod", 64));
}

QTEST(valid_rejects_trailing_space)
{
    QT_TRUE(!qod_scope_valid("qod ", 64));
}

QTEST(valid_rejects_only_space)
{
    QT_TRUE(!qod_scope_valid(" ", 64));
}

QTEST(valid_rejects_quote_backslash_and_controls)
{
    QT_TRUE(!qod_scope_valid("a\"b", 64));
    QT_TRUE(!qod_scope_valid("a\\b", 64));
    QT_TRUE(!qod_scope_valid("a\tb", 64));
    QT_TRUE(!qod_scope_valid("a\nb", 64));
    QT_TRUE(!qod_scope_valid("a\x7f", 64));
    QT_TRUE(!qod_scope_valid("caf\xc3\xa9", 64));
}

QTEST(valid_total_length_bounded_by_cap)
{
    /* "qod read" is 8 bytes: it needs cap >= 9. */
    QT_TRUE(qod_scope_valid("qod read", 9));
    QT_TRUE(!qod_scope_valid("qod read", 8));
}

QTEST(valid_token_length_128_ok_129_not)
{
    char tok[131];
    memset(tok, 'x', 128);
    tok[128] = '\0';
    QT_TRUE(qod_scope_valid(tok, sizeof tok));
    tok[128] = 'x';
    tok[129] = '\0';
    QT_TRUE(!qod_scope_valid(tok, sizeof tok));
}

QTEST(valid_32_scopes_ok_33_not)
{
    qod_buf b;
    qod_buf_init(&b, 0);
    for (int i = 0; i < 32; i++)
        qod_buf_printf(&b, "%ss%d", i ? " " : "", i);
    bool ok32 = qod_scope_valid(b.data, 4096);
    qod_buf_puts(&b, " s32");
    bool ok33 = qod_scope_valid(b.data, 4096);
    qod_buf_dispose(&b);
    QT_TRUE(ok32);
    QT_TRUE(!ok33);
}

QTEST(known_accepts_product_scopes)
{
    const char *bad = NULL;
    size_t badlen = 0;
    QT_TRUE(qod_scope_known("qod " CREATE " " READ " qos-profiles:read", &bad, &badlen));
    QT_TRUE(bad == NULL);
}

QTEST(known_accepts_the_full_list)
{
    const char *bad = NULL;
    size_t badlen = 0;
    QT_TRUE(qod_scope_known(qod_scopes_all, &bad, &badlen));
}

QTEST(known_accepts_empty_list)
{
    const char *bad = NULL;
    size_t badlen = 0;
    QT_TRUE(qod_scope_known("", &bad, &badlen));
}

QTEST(known_reports_bad_token)
{
    const char *list = "qod quality-on-demand:sessions:steal " READ;
    const char *bad = NULL;
    size_t badlen = 0;
    QT_TRUE(!qod_scope_known(list, &bad, &badlen));
    QT_TRUE(bad == list + 4);
    QT_EQ_INT(badlen, strlen("quality-on-demand:sessions:steal"));
}

QTEST(known_rejects_prefix_of_known_scope)
{
    const char *bad = NULL;
    size_t badlen = 0;
    QT_TRUE(!qod_scope_known("quality-on-demand:sessions", &bad, &badlen));
    QT_EQ_INT(badlen, strlen("quality-on-demand:sessions"));
}

QTEST(known_reports_first_of_several_bad)
{
    const char *list = "qod zzz yyy";
    const char *bad = NULL;
    size_t badlen = 0;
    QT_TRUE(!qod_scope_known(list, &bad, &badlen));
    QT_TRUE(bad == list + 4);
    QT_EQ_INT(badlen, 3);
}

QTEST_MAIN(QT_CASE(has_finds_each_token), QT_CASE(has_single_token_list), QT_CASE(has_requires_whole_token),
           QT_CASE(has_is_case_sensitive), QT_CASE(has_empty_scope_never_matches), QT_CASE(has_in_empty_list_false),
           QT_CASE(subset_true_when_all_present), QT_CASE(subset_false_when_one_missing),
           QT_CASE(subset_empty_want_is_subset), QT_CASE(subset_partial_token_is_not_enough),
           QT_CASE(valid_accepts_well_formed), QT_CASE(valid_rejects_empty), QT_CASE(valid_rejects_double_space),
           QT_CASE(valid_rejects_leading_space), QT_CASE(valid_rejects_trailing_space),
           QT_CASE(valid_rejects_only_space), QT_CASE(valid_rejects_quote_backslash_and_controls),
           QT_CASE(valid_total_length_bounded_by_cap), QT_CASE(valid_token_length_128_ok_129_not),
           QT_CASE(valid_32_scopes_ok_33_not), QT_CASE(known_accepts_product_scopes),
           QT_CASE(known_accepts_the_full_list), QT_CASE(known_accepts_empty_list), QT_CASE(known_reports_bad_token),
           QT_CASE(known_rejects_prefix_of_known_scope), QT_CASE(known_reports_first_of_several_bad))
