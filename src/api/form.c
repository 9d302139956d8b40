#include "api/form.h"

#include "util/err.h"

#include <stdlib.h>
#include <string.h>

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

long qod_form_decode(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (i + 2 >= n)
                return -1;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi << 4 | lo;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f || o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return (long)o;
}

void qod_form_dispose(qod_form *f)
{
    for (int i = 0; i < f->n; i++) {
        free(f->names[i]);
        free(f->values[i]);
    }
    f->n = 0;
}

const char *qod_form_get(const qod_form *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->names[i], name) == 0)
            return f->values[i];
    return NULL;
}

static char *decode_dup(const char *s, size_t n)
{
    if (n > 3 * QOD_FORM_MAX_VALUE)
        return NULL;
    char *out = malloc(QOD_FORM_MAX_VALUE + 1);
    if (out && qod_form_decode(s, n, out, QOD_FORM_MAX_VALUE + 1) < 0) {
        free(out);
        out = NULL;
    }
    return out;
}

int qod_form_parse(const char *s, size_t len, qod_form *f, const char **why)
{
    f->n = 0;
    *why = NULL;
    size_t i = 0;
    while (i < len) {
        size_t end = i;
        while (end < len && s[end] != '&')
            end++;
        if (end > i) {
            const char *eq = memchr(s + i, '=', end - i);
            size_t nl = eq ? (size_t)(eq - (s + i)) : end - i;
            if (f->n >= QOD_FORM_MAX_FIELDS) {
                *why = "too many form fields";
                return QOD_ERR_LIMIT;
            }
            char *name = decode_dup(s + i, nl);
            char *value = eq ? decode_dup(eq + 1, (size_t)(s + end - eq - 1)) : strdup("");
            if (!name || !value || !*name) {
                free(name);
                free(value);
                *why = "malformed form field (bad escape, control character or too long)";
                return QOD_ERR_INVALID;
            }
            if (qod_form_get(f, name)) {
                *why = "a form field is repeated";
                free(name);
                free(value);
                return QOD_ERR_INVALID;
            }
            f->names[f->n] = name;
            f->values[f->n] = value;
            f->n++;
        }
        i = end + 1;
    }
    return QOD_OK;
}
