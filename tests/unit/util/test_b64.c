#include "util/b64.h"

#include "qtest.h"

#include <string.h>

/* The RFC 4648 §10 test vectors; url forms are the same text without padding (no '+' or '/' occur). */
static const struct {
    const char *plain, *std, *url;
} vectors[] = {
    {"", "", ""},
    {"f", "Zg==", "Zg"},
    {"fo", "Zm8=", "Zm8"},
    {"foo", "Zm9v", "Zm9v"},
    {"foob", "Zm9vYg==", "Zm9vYg"},
    {"fooba", "Zm9vYmE=", "Zm9vYmE"},
    {"foobar", "Zm9vYmFy", "Zm9vYmFy"},
};
#define N_VECTORS (sizeof vectors / sizeof vectors[0])

/* Decodes a NUL-terminated string into out (cap bytes). */
static long dec(const char *in, unsigned char *out, size_t cap, int url)
{
    return qod_b64_decode(in, strlen(in), out, cap, url);
}

QTEST(encode_std_rfc4648_vectors)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        char out[32];
        long n = qod_b64_encode(vectors[i].plain, strlen(vectors[i].plain), out, sizeof out, 0);
        QT_EQ_INT(n, strlen(vectors[i].std));
        QT_EQ_STR(out, vectors[i].std);
    }
}

QTEST(encode_url_rfc4648_vectors_without_padding)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        char out[32];
        long n = qod_b64_encode(vectors[i].plain, strlen(vectors[i].plain), out, sizeof out, 1);
        QT_EQ_INT(n, strlen(vectors[i].url));
        QT_EQ_STR(out, vectors[i].url);
    }
}

QTEST(decode_std_rfc4648_vectors)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        unsigned char out[32];
        long n = dec(vectors[i].std, out, sizeof out, 0);
        QT_EQ_INT(n, strlen(vectors[i].plain));
        QT_TRUE(memcmp(out, vectors[i].plain, (size_t)n) == 0);
    }
}

QTEST(decode_url_rfc4648_vectors)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        unsigned char out[32];
        long n = dec(vectors[i].url, out, sizeof out, 1);
        QT_EQ_INT(n, strlen(vectors[i].plain));
        QT_TRUE(memcmp(out, vectors[i].plain, (size_t)n) == 0);
    }
}

QTEST(enc_len_counts_the_terminator)
{
    for (size_t i = 0; i < N_VECTORS; i++) {
        size_t n = strlen(vectors[i].plain);
        QT_EQ_INT(qod_b64_enc_len(n, 0), strlen(vectors[i].std) + 1);
        QT_EQ_INT(qod_b64_enc_len(n, 1), strlen(vectors[i].url) + 1);
    }
}

QTEST(encode_fails_when_output_too_small)
{
    char out[9];
    /* "foobar" needs 8 characters plus the terminator: 9 fits, 8 does not. */
    QT_EQ_INT(qod_b64_encode("foobar", 6, out, 9, 0), 8);
    QT_EQ_INT(qod_b64_encode("foobar", 6, out, 8, 0), -1);
    QT_EQ_INT(qod_b64_encode("f", 1, out, 2, 1), -1);
}

QTEST(url_alphabet_uses_dash_and_underscore)
{
    static const unsigned char raw[] = {0xfb, 0xff, 0xbf};
    char out[8];
    QT_EQ_INT(qod_b64_encode(raw, sizeof raw, out, sizeof out, 0), 4);
    QT_EQ_STR(out, "+/+/");
    QT_EQ_INT(qod_b64_encode(raw, sizeof raw, out, sizeof out, 1), 4);
    QT_EQ_STR(out, "-_-_");
    unsigned char back[4];
    QT_EQ_INT(dec("-_-_", back, sizeof back, 1), 3);
    QT_TRUE(memcmp(back, raw, 3) == 0);
    QT_EQ_INT(dec("+/+/", back, sizeof back, 0), 3);
    QT_TRUE(memcmp(back, raw, 3) == 0);
}

QTEST(decode_rejects_other_alphabet)
{
    unsigned char out[8];
    QT_EQ_INT(dec("-_-_", out, sizeof out, 0), -1);
    QT_EQ_INT(dec("+/+/", out, sizeof out, 1), -1);
}

QTEST(decode_rejects_bad_chars)
{
    unsigned char out[16];
    QT_EQ_INT(dec("Zm9v!mFy", out, sizeof out, 0), -1);
    QT_EQ_INT(dec("Zm9v YmFy", out, sizeof out, 1), -1);
    QT_EQ_INT(dec("Zm9v\nYmFy", out, sizeof out, 1), -1);
    QT_EQ_INT(dec("Zm9v\xc3\xa9mF", out, sizeof out, 1), -1);
    QT_EQ_INT(qod_b64_decode("Zm\0v", 4, out, sizeof out, 0), -1);
}

QTEST(decode_std_rejects_missing_padding)
{
    unsigned char out[8];
    QT_EQ_INT(dec("Zg", out, sizeof out, 0), -1);
    QT_EQ_INT(dec("Zm8", out, sizeof out, 0), -1);
}

QTEST(decode_rejects_impossible_length)
{
    unsigned char out[8];
    /* One leftover character carries only 6 bits: no byte can end there. */
    QT_EQ_INT(dec("Z", out, sizeof out, 1), -1);
    QT_EQ_INT(dec("Zm9vY", out, sizeof out, 1), -1);
    QT_EQ_INT(dec("Zm9vY===", out, sizeof out, 0), -1);
}

QTEST(decode_std_rejects_misplaced_padding)
{
    unsigned char out[16];
    QT_EQ_INT(dec("Zg==Zg==", out, sizeof out, 0), -1);
    QT_EQ_INT(dec("Z=g=", out, sizeof out, 0), -1);
    QT_EQ_INT(dec("====", out, sizeof out, 0), -1);
}

QTEST(decode_url_rejects_padding)
{
    unsigned char out[8];
    QT_EQ_INT(dec("Zg==", out, sizeof out, 1), -1);
    QT_EQ_INT(dec("Zm8=", out, sizeof out, 1), -1);
}

QTEST(decode_rejects_noncanonical_trailing_bits)
{
    unsigned char out[8];
    /* "Zg" is 'f'; "Zh" carries the same byte plus non-zero spare bits. */
    QT_EQ_INT(dec("Zh", out, sizeof out, 1), -1);
    QT_EQ_INT(dec("Zh==", out, sizeof out, 0), -1);
    QT_EQ_INT(dec("Zm9=", out, sizeof out, 0), -1);
    QT_EQ_INT(dec("Zm9", out, sizeof out, 1), -1);
}

QTEST(decode_rejects_too_small_output)
{
    unsigned char out[8];
    QT_EQ_INT(dec("Zm9vYmFy", out, 5, 0), -1);
    QT_EQ_INT(dec("Zm9vYmE", out, 4, 1), -1);
    QT_EQ_INT(dec("Zm9vYmE", out, 5, 1), 5);
    QT_EQ_INT(dec("Zg", out, 0, 1), -1);
}

QTEST(round_trip_all_byte_values)
{
    unsigned char raw[256], back[256];
    char enc[400];
    for (int i = 0; i < 256; i++)
        raw[i] = (unsigned char)i;
    for (size_t n = 0; n <= sizeof raw; n += 37) {
        for (int url = 0; url <= 1; url++) {
            long e = qod_b64_encode(raw, n, enc, sizeof enc, url);
            QT_TRUE(e >= 0);
            QT_EQ_INT(qod_b64_decode(enc, (size_t)e, back, sizeof back, url), n);
            QT_TRUE(memcmp(raw, back, n) == 0);
        }
    }
}

QTEST_MAIN(QT_CASE(encode_std_rfc4648_vectors), QT_CASE(encode_url_rfc4648_vectors_without_padding),
           QT_CASE(decode_std_rfc4648_vectors), QT_CASE(decode_url_rfc4648_vectors),
           QT_CASE(enc_len_counts_the_terminator), QT_CASE(encode_fails_when_output_too_small),
           QT_CASE(url_alphabet_uses_dash_and_underscore), QT_CASE(decode_rejects_other_alphabet),
           QT_CASE(decode_rejects_bad_chars), QT_CASE(decode_std_rejects_missing_padding),
           QT_CASE(decode_rejects_impossible_length), QT_CASE(decode_std_rejects_misplaced_padding),
           QT_CASE(decode_url_rejects_padding), QT_CASE(decode_rejects_noncanonical_trailing_bits),
           QT_CASE(decode_rejects_too_small_output), QT_CASE(round_trip_all_byte_values))
