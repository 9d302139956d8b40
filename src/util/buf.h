/* A growable byte buffer with a hard size limit. The buffer owns its memory; qod_buf_dispose frees it. */
#ifndef QOD_UTIL_BUF_H
#define QOD_UTIL_BUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Always NUL-terminated when len > 0 or after any successful append. */
typedef struct {
    char *data;
    size_t len;
    size_t cap;
    size_t max; /* appends that would exceed this fail with QOD_ERR_LIMIT; 0 = 16 MiB */
} qod_buf;

/* Initialises an empty buffer with the given limit (0 = default limit). */
void qod_buf_init(qod_buf *b, size_t max);
/* Frees the memory; the buffer may be reused after qod_buf_init. */
void qod_buf_dispose(qod_buf *b);
/* Appends n bytes; QOD_OK, QOD_ERR_LIMIT or QOD_ERR_NOMEM. */
int qod_buf_append(qod_buf *b, const void *p, size_t n);
/* Appends a NUL-terminated string. */
int qod_buf_puts(qod_buf *b, const char *s);
/* Appends printf-formatted text. */
int qod_buf_printf(qod_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s as a JSON string literal, quotes included; invalid UTF-8 bytes become U+FFFD. */
int qod_buf_json_str(qod_buf *b, const char *s);
/* Appends v in decimal (cheaper than qod_buf_printf on hot paths). */
int qod_buf_put_i64(qod_buf *b, int64_t v);
/* True when n bytes of s are valid UTF-8 (no overlongs, no surrogates). */
bool qod_utf8_valid(const char *s, size_t n);
/* Transfers ownership of the data to the caller (may be NULL when empty) and resets the buffer. */
char *qod_buf_steal(qod_buf *b);
/* Empties the buffer without freeing. */
void qod_buf_reset(qod_buf *b);

#endif
