#include "util/rand.h"

#include "util/b64.h"
#include "util/err.h"

#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int qod_rand_bytes(void *buf, size_t n)
{
    return RAND_bytes(buf, (int)n) == 1 ? QOD_OK : QOD_ERR_CRYPTO;
}

static void uuid_text(unsigned char b[16], int version, char out[QOD_UUID_LEN + 1])
{
    b[6] = (unsigned char)((b[6] & 0x0f) | (version << 4));
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

int qod_uuid_v4(char out[QOD_UUID_LEN + 1])
{
    unsigned char b[16];
    int rc = qod_rand_bytes(b, sizeof b);
    if (rc == QOD_OK)
        uuid_text(b, 4, out);
    return rc;
}

/* Random bytes for identifiers, taken from a per-thread pool that RAND_bytes refills 500 bytes at a time: the
 * same generator's output, but one DRBG call (and its fork-check getpid) per 50 ids instead of one per id. Ids are
 * public once issued; keys and secrets use qod_rand_bytes directly. qodd never forks, so pools are never shared. */
static int id_bytes(unsigned char *out, size_t n)
{
    static _Thread_local unsigned char pool[500];
    static _Thread_local size_t left;
    if (n > sizeof pool)
        return qod_rand_bytes(out, n);
    if (left < n) {
        if (qod_rand_bytes(pool, sizeof pool) != QOD_OK)
            return QOD_ERR_CRYPTO;
        left = sizeof pool;
    }
    unsigned char *p = pool + sizeof pool - left;
    memcpy(out, p, n);
    memset(p, 0, n); /* handed out once */
    left -= n;
    return QOD_OK;
}

int qod_uuid_v7(char out[QOD_UUID_LEN + 1])
{
    unsigned char b[16];
    int rc = id_bytes(b + 6, 10);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (int i = 5; i >= 0; i--, ms >>= 8)
        b[i] = (unsigned char)(ms & 0xff);
    if (rc == QOD_OK)
        uuid_text(b, 7, out);
    return rc;
}

void qod_uuid_fast(char out[QOD_UUID_LEN + 1])
{
    unsigned char b[16];
    for (int i = 0; i < 16; i += 4) {
        uint32_t v = (uint32_t)(qod_rand_unit() * 4294967296.0);
        memcpy(b + i, &v, 4);
    }
    uuid_text(b, 4, out);
}

bool qod_uuid_valid(const char *s)
{
    for (int i = 0; i < QOD_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-')
                return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return s[QOD_UUID_LEN] == '\0';
}

int qod_rand_token(size_t n, char *out, size_t cap)
{
    unsigned char b[128];
    if (n > sizeof b)
        return QOD_ERR_LIMIT;
    int rc = qod_rand_bytes(b, n);
    if (rc != QOD_OK)
        return rc;
    return qod_b64_encode(b, n, out, cap, 1) < 0 ? QOD_ERR_LIMIT : QOD_OK;
}

double qod_rand_unit(void)
{
    static _Thread_local uint64_t s;
    if (s == 0 && qod_rand_bytes(&s, sizeof s) != QOD_OK)
        s = 0x9e3779b97f4a7c15ull;
    s |= 1;
    /* xorshift64*: plenty for jitter, never for secrets. */
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return (double)((s * 2685821657736338717ull) >> 11) / 9007199254740992.0;
}
