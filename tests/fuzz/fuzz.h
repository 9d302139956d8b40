/* Helpers shared by the libFuzzer targets (tests/fuzz/fuzz_*.c, one translation unit each).
 * - FUZZ_CHECK: a property that must hold; a failure aborts, which libFuzzer records as a crash with its input.
 * - fuzz_in / fuzz_next: splits one input into several NUL-separated fields, so a target can feed a parser
 *   several strings (a header and a body, argv entries, …) and the fuzzer can still mutate each one.
 * - UBSan is made fatal here: the fuzz build compiles with recoverable UBSan, whose reports would otherwise be
 *   printed and ignored instead of counting as crashes. */
#ifndef QOD_FUZZ_H
#define QOD_FUZZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* libFuzzer's entry point: one call per input; everything it allocates is freed before it returns. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Read by the UBSan runtime at start-up (a weak hook); the environment's UBSAN_OPTIONS still override it. */
const char *__ubsan_default_options(void);
const char *__ubsan_default_options(void)
{
    return "halt_on_error=1:print_stacktrace=1";
}

/* Aborts, naming the property that failed. */
static inline void fuzz_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "%s:%d: property failed: %s\n", file, line, what);
    abort();
}

#define FUZZ_CHECK(cond) ((cond) ? (void)0 : fuzz_fail(#cond, __FILE__, __LINE__))

/* The unread part of an input. */
typedef struct {
    const uint8_t *p;
    size_t n;
} fuzz_in;

/* A NUL-terminated copy of n bytes (which may hold NULs of their own); owned by the caller (free). */
static inline char *fuzz_strndup(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s)
        abort();
    if (n)
        memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

/* The next field: the bytes up to the next NUL (consumed), or the rest of the input; owned by the caller (free).
 * An exhausted input yields empty strings. */
static inline char *fuzz_next(fuzz_in *in)
{
    const uint8_t *nul = in->n ? memchr(in->p, '\0', in->n) : NULL;
    size_t len = nul ? (size_t)(nul - in->p) : in->n;
    char *s = fuzz_strndup(in->p, len);
    in->p += len + (nul ? 1 : 0);
    in->n -= len + (nul ? 1 : 0);
    return s;
}

/* The next byte, or 0 when the input is exhausted. */
static inline uint8_t fuzz_byte(fuzz_in *in)
{
    if (!in->n)
        return 0;
    in->n--;
    return *in->p++;
}

/* The next 4 bytes as a little-endian number (missing bytes read as 0). */
static inline uint32_t fuzz_u32(fuzz_in *in)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)fuzz_byte(in) << (8 * i);
    return v;
}

#endif
