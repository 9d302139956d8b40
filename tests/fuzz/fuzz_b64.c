/* Fuzzes base64 (src/util/b64.h): standard with padding (webhook secrets, Basic credentials) and base64url without
 * padding (JWT segments). The first byte picks the mode and a buffer shortfall. Properties:
 * - decoding never writes past cap, and fails exactly when the decoded length exceeds cap;
 * - a text that decodes is canonical: encoding the bytes gives the same text back (one spelling per value);
 * - any bytes encode to qod_b64_enc_len - 1 characters of the mode's alphabet and decode back to themselves. */
#include "fuzz.h"

#include "util/b64.h"

static bool in_alphabet(const char *s, size_t n, int url)
{
    const char *alpha = url ? "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                            : "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=";
    for (size_t i = 0; i < n; i++)
        if (!s[i] || !strchr(alpha, s[i]))
            return false;
    return true;
}

/* Decodes text; when it decodes, re-encodes and compares. Buffers are sized exactly, so ASan sees overruns. */
static void check_decode(const char *text, size_t n, int url, size_t shortfall)
{
    unsigned char *full = malloc(n + 1);
    if (!full)
        abort();
    long m = qod_b64_decode(text, n, full, n + 1, url);
    if (m >= 0) {
        FUZZ_CHECK(in_alphabet(text, n, url));
        size_t cap = qod_b64_enc_len((size_t)m, url);
        char *enc = malloc(cap);
        if (!enc)
            abort();
        FUZZ_CHECK(qod_b64_encode(full, (size_t)m, enc, cap, url) == (long)n && memcmp(enc, text, n) == 0);
        free(enc);
        /* The exact size works; anything smaller fails without writing. */
        size_t small_cap = (size_t)m > shortfall ? (size_t)m - shortfall : 0;
        unsigned char *small = malloc(small_cap ? small_cap : 1);
        if (!small)
            abort();
        long r = qod_b64_decode(text, n, small, small_cap, url);
        FUZZ_CHECK(shortfall ? r == -1 || (size_t)m == 0 : r == m);
        free(small);
    }
    free(full);
}

/* Encodes bytes into an exactly sized buffer, checks the length and alphabet, and decodes back. */
static void check_encode(const uint8_t *p, size_t n, int url)
{
    size_t cap = qod_b64_enc_len(n, url);
    char *enc = malloc(cap);
    unsigned char *back = malloc(n + 1);
    if (!enc || !back)
        abort();
    long m = qod_b64_encode(p, n, enc, cap, url);
    FUZZ_CHECK(m == (long)cap - 1 && enc[m] == '\0' && in_alphabet(enc, (size_t)m, url));
    FUZZ_CHECK(qod_b64_encode(p, n, enc, cap - 1, url) == -1);
    FUZZ_CHECK(qod_b64_decode(enc, (size_t)m, back, n, url) == (long)n && (n == 0 || memcmp(back, p, n) == 0));
    free(enc);
    free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size)
        return 0;
    int url = data[0] & 1;
    size_t shortfall = (data[0] >> 1) & 3;
    /* The text is passed without a terminator, as callers pass token segments. */
    check_decode((const char *)data + 1, size - 1, url, shortfall);
    check_encode(data + 1, size - 1, url);
    return 0;
}
