#include "util/buf.h"

#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define QOD_BUF_DEFAULT_MAX (16u * 1024 * 1024)

void qod_buf_init(qod_buf *b, size_t max)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
    b->max = max ? max : QOD_BUF_DEFAULT_MAX;
}

void qod_buf_dispose(qod_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int reserve(qod_buf *b, size_t extra)
{
    if (extra > b->max || b->len + extra > b->max)
        return QOD_ERR_LIMIT;
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return QOD_OK;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (!p)
        return QOD_ERR_NOMEM;
    b->data = p;
    b->cap = cap;
    return QOD_OK;
}

int qod_buf_append(qod_buf *b, const void *p, size_t n)
{
    int rc = reserve(b, n);
    if (rc != QOD_OK)
        return rc;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return QOD_OK;
}

int qod_buf_put_i64(qod_buf *b, int64_t v)
{
    char tmp[24], *p = tmp + sizeof tmp;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        *--p = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        *--p = '-';
    return qod_buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

int qod_buf_puts(qod_buf *b, const char *s)
{
    return qod_buf_append(b, s, strlen(s));
}

int qod_buf_printf(qod_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    int rc = QOD_ERR_INVALID;
    if (n >= 0) {
        rc = reserve(b, (size_t)n);
        if (rc == QOD_OK) {
            vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap2);
            b->len += (size_t)n;
        }
    }
    va_end(ap2);
    return rc;
}

/* Length of the valid UTF-8 sequence at p (1..4) within avail bytes, or 0 when the bytes there are not valid
 * UTF-8 (or the sequence runs past avail). */
static int utf8_len(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    int n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
    if (n == 0 || (size_t)n > avail || (n == 2 && c < 0xc2) || (n == 4 && c > 0xf4))
        return 0;
    for (int i = 1; i < n; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    if (n == 3 && ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f)))
        return 0; /* overlong, or a UTF-16 surrogate */
    if (n == 4 && ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f)))
        return 0;
    return n;
}

int qod_buf_json_str(qod_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    int rc = qod_buf_append(b, "\"", 1);
    const char *run = s;
    const char *p = s;
    while (rc == QOD_OK && *p) {
        unsigned char c = (unsigned char)*p;
        /* A NUL-terminated string: a continuation byte is never NUL, so strnlen bounds the sequence. */
        int n = c >= 0x80 ? utf8_len((const unsigned char *)p, strnlen(p, 4)) : 1;
        if (n > 1) {
            p += n;
            continue;
        }
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            p++;
            continue;
        }
        rc = qod_buf_append(b, run, (size_t)(p - run));
        if (rc != QOD_OK)
            break;
        char esc[7] = {'\\', (char)c, 0};
        size_t len = 2;
        if (n == 0) {
            /* Invalid UTF-8 (a client's bytes, or a message cut mid-character): U+FFFD keeps the JSON valid. */
            memcpy(esc, "\\ufffd", 6);
            len = 6;
        } else if (c == '\n')
            esc[1] = 'n';
        else if (c == '\r')
            esc[1] = 'r';
        else if (c == '\t')
            esc[1] = 't';
        else if (c < 0x20) {
            esc[1] = 'u';
            esc[2] = '0';
            esc[3] = '0';
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            len = 6;
        }
        rc = qod_buf_append(b, esc, len);
        p++;
        run = p;
    }
    if (rc == QOD_OK)
        rc = qod_buf_puts(b, run);
    if (rc == QOD_OK)
        rc = qod_buf_append(b, "\"", 1);
    return rc;
}

bool qod_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    while (p < end) {
        if (*p < 0x80) {
            p++;
            continue;
        }
        int l = utf8_len(p, (size_t)(end - p));
        if (!l)
            return false;
        p += l;
    }
    return true;
}

char *qod_buf_steal(qod_buf *b)
{
    char *p = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return p;
}

void qod_buf_reset(qod_buf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}
