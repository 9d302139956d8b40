/* Error responses. API errors use the CAMARA body {"status","code","message"}; the OAuth2 endpoints use the
 * RFC 6749 §5.2 body {"error","error_description"}. Messages never contain secrets. */
#ifndef QOD_API_ERRORS_H
#define QOD_API_ERRORS_H

#include "api/http.h"

/* Responds with a CAMARA error. message is copied; it may be NULL for the code's default text. */
void qod_api_error(qod_req *r, unsigned status, const char *code, const char *message);
/* printf-style message. */
void qod_api_errorf(qod_req *r, unsigned status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Responds with an RFC 6749 error; 401 invalid_client adds WWW-Authenticate. */
void qod_oauth_error(qod_req *r, unsigned status, const char *error, const char *description);
/* Maps a qod_err to an HTTP status and CAMARA code (for unexpected internal failures). */
void qod_api_error_from(qod_req *r, int err);
/* Responds with a JSON body (copied) and the given status. */
void qod_api_json(qod_req *r, unsigned status, const char *json, size_t len);
/* Completion of a deferred DELETE (arg = the request): 204 after the commit, else the error. */
void qod_api_deleted(void *arg, int rc, const char *id, const char *body);

#endif
