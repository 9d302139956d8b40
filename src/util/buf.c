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

int qod_buf_json_str(qod_buf *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    int rc = qod_buf_append(b, "\"", 1);
    const char *run = s;
    for (const char *p = s; rc == QOD_OK && *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        rc = qod_buf_append(b, run, (size_t)(p - run));
        if (rc != QOD_OK)
            break;
        char esc[7] = {'\\', (char)c, 0};
        size_t n = 2;
        if (c == '\n')
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
            n = 6;
        }
        rc = qod_buf_append(b, esc, n);
        run = p + 1;
    }
    if (rc == QOD_OK)
        rc = qod_buf_puts(b, run);
    if (rc == QOD_OK)
        rc = qod_buf_append(b, "\"", 1);
    return rc;
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
