#include "util/ct.h"

#include <stdint.h>
#include <string.h>

bool qod_ct_equal(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    uint64_t diff = 0;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t u, v;
        memcpy(&u, x + i, 8);
        memcpy(&v, y + i, 8);
        diff |= u ^ v;
    }
    for (; i < n; i++)
        diff |= (uint64_t)(x[i] ^ y[i]);
    /* Folded without a branch on the data; the volatile read keeps the compiler from stopping early. */
    volatile uint64_t sink = diff;
    return sink == 0;
}
