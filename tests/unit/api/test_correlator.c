#include "api/api.h"

#include "qtest.h"

#include <string.h>

/* Returns whether a string of n copies of c is a valid correlator. */
static bool repeated_valid(char c, size_t n)
{
    char s[QOD_CORRELATOR_MAX + 8];
    memset(s, c, n);
    s[n] = '\0';
    return qod_correlator_valid(s);
}

QTEST(accepts_uuid)
{
    QT_TRUE(qod_correlator_valid("b4333c46-49c0-4f62-80d7-f0ef930f1c46"));
}

QTEST(accepts_empty)
{
    QT_TRUE(qod_correlator_valid(""));
}

QTEST(accepts_letters_and_digits)
{
    QT_TRUE(qod_correlator_valid("abcXYZ0123456789"));
}

QTEST(accepts_allowed_punctuation)
{
    QT_TRUE(qod_correlator_valid("-_:;./<>{}"));
    QT_TRUE(qod_correlator_valid("req-1_a:b;c.d/e<f>{g}"));
}

QTEST(accepts_each_allowed_punctuation_alone)
{
    for (const char *p = "-_:;./<>{}"; *p; p++) {
        char s[2] = {*p, 0};
        QT_TRUE(qod_correlator_valid(s));
    }
}

QTEST(accepts_256_chars)
{
    QT_TRUE(repeated_valid('a', QOD_CORRELATOR_MAX));
}

QTEST(rejects_257_chars)
{
    QT_TRUE(!repeated_valid('a', QOD_CORRELATOR_MAX + 1));
}

QTEST(rejects_space)
{
    QT_TRUE(!qod_correlator_valid("abc def"));
    QT_TRUE(!qod_correlator_valid(" "));
}

QTEST(rejects_at_sign)
{
    QT_TRUE(!qod_correlator_valid("user@example"));
}

QTEST(rejects_other_punctuation)
{
    for (const char *p = "!\"#$%&'()*+,=?[\\]^`|~"; *p; p++) {
        char s[4] = {'a', *p, 'b', 0};
        QT_TRUE(!qod_correlator_valid(s));
    }
}

QTEST(rejects_non_ascii)
{
    QT_TRUE(!qod_correlator_valid("caf\xc3\xa9"));
    QT_TRUE(!qod_correlator_valid("\xff"));
    QT_TRUE(!qod_correlator_valid("a\x80"));
}

QTEST(rejects_control_chars)
{
    QT_TRUE(!qod_correlator_valid("a\tb"));
    QT_TRUE(!qod_correlator_valid("a\r\nX-Injected: 1"));
    QT_TRUE(!qod_correlator_valid("\x01"));
    QT_TRUE(!qod_correlator_valid("a\x7f"));
}

QTEST_MAIN(QT_CASE(accepts_uuid), QT_CASE(accepts_empty), QT_CASE(accepts_letters_and_digits),
           QT_CASE(accepts_allowed_punctuation), QT_CASE(accepts_each_allowed_punctuation_alone),
           QT_CASE(accepts_256_chars), QT_CASE(rejects_257_chars), QT_CASE(rejects_space), QT_CASE(rejects_at_sign),
           QT_CASE(rejects_other_punctuation), QT_CASE(rejects_non_ascii), QT_CASE(rejects_control_chars))
