#include "api/errors.h"

#include "util/buf.h"
#include "util/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *default_message(const char *code)
{
    static const struct {
        const char *code, *msg;
    } table[] = {
        {"INVALID_ARGUMENT", "Client specified an invalid argument, request body or query param."},
        {"OUT_OF_RANGE", "Client specified an invalid range."},
        {"UNAUTHENTICATED", "Request not authenticated due to missing, invalid, or expired credentials."},
        {"PERMISSION_DENIED", "Client does not have sufficient permissions to perform this action."},
        {"NOT_FOUND", "The specified resource is not found."},
        {"METHOD_NOT_ALLOWED", "The requested method is not allowed on this resource."},
        {"CONFLICT", "Conflict with the current state of the resource."},
        {"UNSUPPORTED_MEDIA_TYPE", "The request content type is not supported."},
        {"TOO_MANY_REQUESTS", "Rate limit reached."},
        {"QUOTA_EXCEEDED", "Out of resource quota."},
        {"INTERNAL", "Unknown server error. Typically a server bug."},
        {"UNAVAILABLE", "Service unavailable. Retry later."},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].code, code) == 0)
            return table[i].msg;
    return "Error.";
}

void qod_api_json(qod_req *r, unsigned status, const char *json, size_t len)
{
    qod_req_respond(r, status, "application/json", json, len);
}

void qod_api_deleted(void *arg, int rc, const char *id, const char *body)
{
    (void)id;
    (void)body;
    qod_req *r = arg;
    if (rc == QOD_OK)
        qod_req_respond(r, 204, NULL, NULL, 0);
    else
        qod_api_error_from(r, rc);
    qod_req_complete(r);
}

void qod_api_error(qod_req *r, unsigned status, const char *code, const char *message)
{
    qod_buf b;
    qod_buf_init(&b, 8192);
    qod_buf_printf(&b, "{\"status\":%u,\"code\":", status);
    qod_buf_json_str(&b, code);
    qod_buf_puts(&b, ",\"message\":");
    qod_buf_json_str(&b, message ? message : default_message(code));
    qod_buf_puts(&b, "}");
    qod_api_json(r, status, b.data, b.len);
    qod_buf_dispose(&b);
}

void qod_api_errorf(qod_req *r, unsigned status, const char *code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    qod_api_error(r, status, code, msg);
}

void qod_oauth_error(qod_req *r, unsigned status, const char *error, const char *description)
{
    qod_buf b;
    qod_buf_init(&b, 4096);
    qod_buf_puts(&b, "{\"error\":");
    qod_buf_json_str(&b, error);
    if (description) {
        qod_buf_puts(&b, ",\"error_description\":");
        qod_buf_json_str(&b, description);
    }
    qod_buf_puts(&b, "}");
    if (status == 401)
        qod_req_add_header(r, "WWW-Authenticate", "Basic realm=\"qod\", charset=\"UTF-8\"");
    /* Cache-Control: no-store comes with the OAuth2 routes (route flag), once. */
    qod_req_add_header(r, "Pragma", "no-cache");
    qod_api_json(r, status, b.data, b.len);
    qod_buf_dispose(&b);
}

void qod_api_error_from(qod_req *r, int err)
{
    switch (err) {
    case QOD_ERR_NOSPACE:
    case QOD_ERR_BUSY:
    case QOD_ERR_STORE:
    case QOD_ERR_CLOSED:
        qod_req_add_header(r, "Retry-After", "1");
        qod_api_error(r, 503, "UNAVAILABLE", err == QOD_ERR_NOSPACE ? "Storage is full. Retry later." : NULL);
        break;
    case QOD_ERR_NOTFOUND:
        qod_api_error(r, 404, "NOT_FOUND", NULL);
        break;
    case QOD_ERR_DENIED:
        qod_api_error(r, 403, "PERMISSION_DENIED", NULL);
        break;
    default:
        qod_api_error(r, 500, "INTERNAL", NULL);
        break;
    }
}
