#include "util/log.h"

#include "util/err.h"
#include "util/time.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

int qod_log_threshold = QOD_LOG_INFO;
static qod_log_format g_format = QOD_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

void qod_log_setup(qod_log_level level, qod_log_format format)
{
    qod_log_threshold = (int)level;
    g_format = format;
}

int qod_log_level_parse(const char *s, qod_log_level *out)
{
    for (int i = 0; i <= QOD_LOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (qod_log_level)i;
            return QOD_OK;
        }
    }
    return QOD_ERR_INVALID;
}

/* Appends s to out as JSON string content (without quotes), escaping what JSON requires. */
static size_t json_escape(char *out, size_t cap, size_t pos, const char *s, size_t n)
{
    for (size_t i = 0; i < n && pos + 7 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[pos++] = '\\';
            out[pos++] = (char)c;
        } else if (c < 0x20) {
            pos += (size_t)snprintf(out + pos, cap - pos, "\\u%04x", c);
        } else {
            out[pos++] = (char)c;
        }
    }
    return pos;
}

/* Converts `k=v k2="a b"` into `,"k":"v","k2":"a b"`. Tokens without '=' are kept under "msg". */
static size_t fields_to_json(char *out, size_t cap, size_t pos, const char *f)
{
    while (*f && pos + 16 < cap) {
        while (*f == ' ')
            f++;
        if (!*f)
            break;
        const char *eq = NULL;
        const char *p = f;
        while (*p && *p != ' ' && *p != '=')
            p++;
        if (*p == '=')
            eq = p;
        const char *key = f, *val;
        size_t klen, vlen;
        if (eq) {
            klen = (size_t)(eq - f);
            val = eq + 1;
            if (*val == '"') {
                val++;
                const char *end = val;
                while (*end && !(*end == '"' && end[-1] != '\\'))
                    end++;
                vlen = (size_t)(end - val);
                f = *end ? end + 1 : end;
            } else {
                const char *end = val;
                while (*end && *end != ' ')
                    end++;
                vlen = (size_t)(end - val);
                f = end;
            }
        } else {
            key = "detail";
            klen = 6;
            val = f;
            const char *end = f;
            while (*end && *end != ' ')
                end++;
            vlen = (size_t)(end - val);
            f = end;
        }
        out[pos++] = ',';
        out[pos++] = '"';
        pos = json_escape(out, cap, pos, key, klen);
        out[pos++] = '"';
        out[pos++] = ':';
        out[pos++] = '"';
        pos = json_escape(out, cap, pos, val, vlen);
        if (pos + 2 < cap)
            out[pos++] = '"';
    }
    return pos;
}

void qod_log_write(qod_log_level level, const char *mod, const char *event, const char *fields, ...)
{
    char body[2048];
    char line[4608];
    va_list ap;
    va_start(ap, fields);
    int n = vsnprintf(body, sizeof body, fields, ap);
    va_end(ap);
    if (n < 0)
        body[0] = '\0';

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char tbuf[32];
    qod_time_fmt_ms((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000, tbuf, sizeof tbuf);
    const char *lname = level_names[level <= QOD_LOG_OFF ? level : QOD_LOG_ERROR];

    size_t pos;
    if (g_format == QOD_LOG_JSON) {
        pos = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"mod\":\"%s\",\"event\":\"", tbuf,
                               lname, mod);
        pos = json_escape(line, sizeof line, pos, event, strlen(event));
        line[pos++] = '"';
        pos = fields_to_json(line, sizeof line - 3, pos, body);
        line[pos++] = '}';
    } else {
        pos = (size_t)snprintf(line, sizeof line, "%s level=%s mod=%s event=%s%s%s", tbuf, lname, mod, event,
                               body[0] ? " " : "", body);
        if (pos >= sizeof line - 1)
            pos = sizeof line - 2;
    }
    line[pos++] = '\n';
    /* One write per line keeps lines whole when threads log at once. */
    fwrite(line, 1, pos, stderr);
}
