/* Constant-time comparison of secrets (tokens, MACs): the time taken depends on the length only, never on how
 * many bytes match. Word-wide, so comparing a 1 KiB bearer token on every request stays cheap. */
#ifndef QOD_UTIL_CT_H
#define QOD_UTIL_CT_H

#include <stdbool.h>
#include <stddef.h>

/* True when the n bytes at a and b are equal. */
bool qod_ct_equal(const void *a, const void *b, size_t n);

#endif
