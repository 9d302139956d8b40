/* HTTP server glue over libmicrohttpd: an epoll thread pool, per-request state, bounded bodies, and
 * suspend/resume so a handler can answer after a durable write without blocking its thread.
 *
 * A handler gets a qod_req on the final call of a request (body complete). It either responds at once
 * (qod_req_respond), or starts asynchronous work and calls qod_req_defer; the work later calls
 * qod_req_respond then qod_req_complete from any thread. Every request ends in exactly one response. */
#ifndef QOD_API_HTTP_H
#define QOD_API_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qod_http qod_http;
typedef struct qod_req qod_req;

typedef struct {
    const char *listen;       /* "HOST:PORT" or "[V6]:PORT" */
    unsigned threads;         /* 0 = number of cores */
    unsigned conn_timeout_s;  /* idle / slow-client timeout */
    unsigned per_ip_limit;    /* connections per client address; 0 = none */
    unsigned conn_limit;      /* total connections (beyond it connections are not accepted) */
    unsigned busy_conns;      /* above this many open connections, requests get 503 + Retry-After; 0 = 90% */
    size_t max_body;          /* bytes; larger bodies get 413 */
    size_t max_header_bytes;  /* per-connection memory for headers */
    const char *tls_cert_pem; /* owned by the caller, NULL without TLS */
    const char *tls_key_pem;
    void (*dispatch)(void *ctx, qod_req *req); /* called once per request, body complete */
    void (*done)(void *ctx, qod_req *req, unsigned status, uint64_t dur_ns); /* after the response; may be NULL */
    void *ctx;
} qod_http_opts;

/* Binds and starts serving. On failure writes why into err. */
int qod_http_start(const qod_http_opts *opts, qod_http **out, char *err, size_t errcap);
/* Stops accepting (from now on a new connection is closed at once, and a new request on an open one is refused),
 * waits up to drain_ms for in-flight requests to finish, then stops. NULL is a no-op. */
void qod_http_stop(qod_http *h, int drain_ms);
/* The bound port (useful with port 0). */
unsigned qod_http_port(const qod_http *h);
/* Requests currently being handled. */
long qod_http_inflight(const qod_http *h);

/* Request accessors; returned strings are borrowed for the life of the request. */
const char *qod_req_method(const qod_req *r);
const char *qod_req_path(const qod_req *r);
/* A request header (case-insensitive), or NULL. */
const char *qod_req_header(const qod_req *r, const char *name);
/* A query-string argument, or NULL. */
const char *qod_req_query(const qod_req *r, const char *name);
/* Calls fn for each query-string argument in arrival order, decoded (value NULL for "?flag"); stops at the
 * first non-zero return and returns it, else 0. libmicrohttpd keeps no raw query string: this is how a proxy
 * rebuilds one. */
int qod_req_query_each(const qod_req *r, int (*fn)(void *arg, const char *key, const char *value), void *arg);
/* The body (NUL-terminated; len may be 0). */
const char *qod_req_body(const qod_req *r, size_t *len);
/* True when the body was larger than max_body (the body is then empty). */
bool qod_req_body_too_large(const qod_req *r);
/* The client address as text ("" when unknown). */
const char *qod_req_peer(qod_req *r);
/* Monotonic start time in nanoseconds. */
uint64_t qod_req_start_ns(const qod_req *r);

/* Per-request slots for the API layer (route index for metrics, authenticated principal). */
void qod_req_set_user(qod_req *r, void *user, void (*free_fn)(void *));
void *qod_req_user(const qod_req *r);

/* A response header set so far (case-insensitive; the first of that name), or NULL. Borrowed until the
 * response changes. */
const char *qod_req_response_header(const qod_req *r, const char *name);
/* Adds a response header (copied). At most 24 per response. */
int qod_req_add_header(qod_req *r, const char *name, const char *value);
/* Sets the response; body is copied. May be called from any thread while the request is suspended. */
int qod_req_respond(qod_req *r, unsigned status, const char *content_type, const char *body, size_t len);
/* Called by a handler after it started asynchronous work that will answer the request: suspends the
 * connection unless the work already completed. */
void qod_req_defer(qod_req *r);
/* Called by the asynchronous work after qod_req_respond (any thread): resumes the connection. Exactly once
 * per deferred request. */
void qod_req_complete(qod_req *r);
/* True when the server had more open connections than busy_conns, or was stopping, when this request started. */
bool qod_req_overloaded(const qod_req *r);
/* True when the server was stopping (qod_http_stop) when this request started. */
bool qod_req_draining(const qod_req *r);
/* The status of the response set so far (0 when none). */
unsigned qod_req_status(const qod_req *r);

#endif
