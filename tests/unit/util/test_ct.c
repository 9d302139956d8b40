#include "util/ct.h"

#include "qtest.h"

#include <string.h>

QTEST(equal_buffers_of_every_length_up_to_40)
{
    unsigned char a[40], b[40];
    for (size_t i = 0; i < sizeof a; i++)
        a[i] = b[i] = (unsigned char)(i * 37 + 11);
    for (size_t n = 0; n <= sizeof a; n++)
        QT_TRUE(qod_ct_equal(a, b, n));
}

QTEST(one_bit_differs_anywhere)
{
    unsigned char a[40], b[40];
    memset(a, 0x5a, sizeof a);
    for (size_t n = 1; n <= sizeof a; n++) {
        for (size_t i = 0; i < n; i++) {
            for (int bit = 0; bit < 8; bit++) {
                memcpy(b, a, sizeof b);
                b[i] ^= (unsigned char)(1u << bit);
                QT_TRUE(!qod_ct_equal(a, b, n));
            }
        }
    }
}

QTEST(unaligned_pointers)
{
    char a[64] = "xthe quick brown fox jumps over the lazy dog, twice over!";
    char b[64] = "yythe quick brown fox jumps over the lazy dog, twice over!";
    QT_TRUE(qod_ct_equal(a + 1, b + 2, 50));
    b[40] = '#';
    QT_TRUE(!qod_ct_equal(a + 1, b + 2, 50));
}

QTEST_MAIN(QT_CASE(equal_buffers_of_every_length_up_to_40), QT_CASE(one_bit_differs_anywhere),
           QT_CASE(unaligned_pointers))
