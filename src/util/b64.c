#include "util/b64.h"

#include <string.h>

static const char std_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alpha[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t qod_b64_enc_len(size_t n, int url)
{
    if (url)
        return (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0) + 1;
    return ((n + 2) / 3) * 4 + 1;
}

long qod_b64_encode(const void *in, size_t n, char *out, size_t cap, int url)
{
    const unsigned char *s = in;
    const char *a = url ? url_alpha : std_alpha;
    if (cap < qod_b64_enc_len(n, url))
        return -1;
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        out[o++] = a[v >> 6 & 63];
        out[o++] = a[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0);
        out[o++] = a[v >> 18 & 63];
        out[o++] = a[v >> 12 & 63];
        if (i + 1 < n)
            out[o++] = a[v >> 6 & 63];
        else if (!url)
            out[o++] = '=';
        if (!url)
            out[o++] = '=';
    }
    out[o] = '\0';
    return (long)o;
}

static int dec_char(char c, int url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

long qod_b64_decode(const char *in, size_t n, unsigned char *out, size_t cap, int url)
{
    if (!url) {
        if (n % 4)
            return -1;
        if (n && in[n - 1] == '=')
            n--;
        if (n && in[n - 1] == '=')
            n--;
    }
    if (n % 4 == 1)
        return -1;
    size_t need = n / 4 * 3 + (n % 4 ? n % 4 - 1 : 0);
    if (need > cap)
        return -1;
    size_t o = 0;
    unsigned acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = dec_char(in[i], url);
        if (v < 0)
            return -1;
        acc = acc << 6 | (unsigned)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits & 0xff);
        }
    }
    /* Non-canonical encodings (stray low bits) are rejected so a token has one spelling. */
    if (bits && (acc & ((1u << bits) - 1)))
        return -1;
    return (long)o;
}
