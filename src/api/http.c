#include "api/http.h"

#include "util/buf.h"
#include "util/err.h"
#include "util/list.h"
#include "util/log.h"
#include "util/stopper.h"
#include "util/time.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_RESP_HEADERS 24
/* libmicrohttpd's memory pool per connection: request line, headers and read buffer. It is cleared for every
 * request, so its size is CPU on every request (about 3 % of a GET at 32 KiB); 16 KiB still holds headers far
 * beyond what our clients send (a bearer token is about 1 KiB). */
#define QOD_HTTP_POOL_BYTES 16384
/* Past the drain, how long qod_http_stop still waits for suspended requests to be completed by their owners. */
#define STOP_SUSPENDED_MAX_MS 30000

typedef struct {
    char *name, *value;
} hdr;

struct qod_req {
    qod_http *h;
    struct MHD_Connection *conn;
    const char *method;
    char *path;
    qod_buf body;
    bool too_large;
    bool dispatched;
    bool observed; /* counted in the metrics already */
    bool overloaded;
    bool draining;      /* the daemon was stopping when the request came (overloaded is then set too) */
    pthread_mutex_t mu; /* guards suspended/completed between the handler and the completing thread */
    bool suspended;
    bool completed;
    char peer[INET6_ADDRSTRLEN];
    uint64_t start_ns;
    void *user;
    void (*user_free)(void *);
    unsigned status;
    char *resp_body;
    size_t resp_len;
    char *content_type;
    hdr headers[MAX_RESP_HEADERS];
    int nheaders;
};

/* One open connection, for the slow-client sweeper. */
typedef struct conn_track {
    int fd;
    _Atomic int64_t since_ms; /* when the current request (or idle wait for one) began, monotonic */
    atomic_bool in_request;   /* headers complete, response not yet sent */
    qod_link link;
} conn_track;

struct qod_http {
    struct MHD_Daemon *d;
    qod_http_opts opts;
    atomic_long inflight;
    atomic_long suspended; /* requests suspended by qod_req_defer and not completed yet (never more than inflight) */
    atomic_long conns;
    unsigned port;
    pthread_mutex_t track_mu;
    qod_list tracks;
    pthread_t sweeper;
    bool sweeper_started;
    qod_stopper stop;     /* ends the sweeper, at once */
    atomic_bool draining; /* stop requested: new requests are refused so none can be suspended at the end */
};

static void req_free(qod_req *r)
{
    if (!r)
        return;
    if (r->user_free)
        r->user_free(r->user);
    pthread_mutex_destroy(&r->mu);
    free(r->path);
    qod_buf_dispose(&r->body);
    free(r->resp_body);
    free(r->content_type);
    for (int i = 0; i < r->nheaders; i++) {
        free(r->headers[i].name);
        free(r->headers[i].value);
    }
    free(r);
}

static void peer_text(struct MHD_Connection *c, char *out, size_t cap)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    out[0] = '\0';
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, (socklen_t)cap);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, (socklen_t)cap);
}

static conn_track *track_of(struct MHD_Connection *c)
{
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    return ci ? ci->socket_context : NULL;
}

static enum MHD_Result queue_response(qod_req *r)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->resp_len, r->resp_body ? r->resp_body : (void *)"",
                                        r->resp_body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    r->resp_body = NULL; /* now owned by the response */
    /* Our own Date header, formatted once a second per thread: libmicrohttpd's own calls gmtime_r, which takes
     * glibc's time-zone lock on every answer. (With a Date header present it adds none.) */
    static _Thread_local int64_t date_s = -1;
    static _Thread_local char date_text[QOD_HTTP_DATE_LEN + 1];
    int64_t now_s = (int64_t)time(NULL);
    if (now_s != date_s) {
        qod_time_http_date(now_s, date_text);
        date_s = now_s;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_DATE, date_text);
    if (r->content_type)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->content_type);
    for (int i = 0; i < r->nheaders; i++)
        MHD_add_response_header(resp, r->headers[i].name, r->headers[i].value);
    enum MHD_Result ret = MHD_queue_response(r->conn, r->status, resp);
    MHD_destroy_response(resp);
    /* Counted when queued, so that a client reading /metrics right after an answer sees it counted. */
    if (r->h->opts.done && r->dispatched && !r->observed) {
        r->observed = true;
        r->h->opts.done(r->h->opts.ctx, r, r->status, (uint64_t)qod_time_mono_ns() - r->start_ns);
    }
    return ret;
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                 const char *version, const char *upload_data, size_t *upload_size, void **con_cls)
{
    (void)version;
    qod_http *h = cls;
    qod_req *r = *con_cls;
    if (!r) {
        /* First call: headers only. Answering now would lose keep-alive, so just set up. */
        r = calloc(1, sizeof *r);
        if (!r)
            return MHD_NO;
        r->h = h;
        r->conn = conn;
        pthread_mutex_init(&r->mu, NULL);
        r->method = method;
        r->path = strdup(url);
        r->start_ns = (uint64_t)qod_time_mono_ns();
        qod_buf_init(&r->body, h->opts.max_body ? h->opts.max_body : 65536);
        atomic_fetch_add(&h->inflight, 1);
        conn_track *t = track_of(conn);
        if (t) {
            atomic_store(&t->since_ms, qod_time_mono_ms());
            atomic_store(&t->in_request, true);
        }
        /* inflight is counted before this check: qod_http_stop sets draining, then waits for inflight, so every
         * request either sees draining (and is refused with 503, never suspended) or is waited for. */
        r->draining = atomic_load(&h->draining);
        r->overloaded = r->draining || atomic_load(&h->conns) > (long)h->opts.busy_conns;
        *con_cls = r;
        return r->path ? MHD_YES : MHD_NO;
    }
    if (*upload_size) {
        /* Keep reading an over-long body but drop it: the 413 goes out once the client has sent it all. */
        if (!r->too_large && qod_buf_append(&r->body, upload_data, *upload_size) != QOD_OK) {
            r->too_large = true;
            qod_buf_dispose(&r->body);
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (!r->dispatched) {
        r->dispatched = true;
        if (!r->body.data)
            qod_buf_append(&r->body, "", 0);
        h->opts.dispatch(h->opts.ctx, r);
        pthread_mutex_lock(&r->mu);
        bool suspended = r->suspended;
        pthread_mutex_unlock(&r->mu);
        if (suspended)
            return MHD_YES;
    }
    if (!r->status) {
        /* A resumed request whose response is not set yet: the resume was early; wait for the next. */
        return MHD_YES;
    }
    return queue_response(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls, enum MHD_RequestTerminationCode toe)
{
    (void)toe;
    qod_http *h = cls;
    qod_req *r = *con_cls;
    if (!r)
        return;
    if (r->suspended)
        atomic_fetch_sub(&h->suspended, 1);
    if (h->opts.done && r->dispatched && !r->observed)
        h->opts.done(h->opts.ctx, r, r->status ? r->status : 500, (uint64_t)qod_time_mono_ns() - r->start_ns);
    conn_track *t = track_of(conn);
    if (t) {
        /* Waiting for the next request on a kept-alive connection: the header clock restarts. */
        atomic_store(&t->in_request, false);
        atomic_store(&t->since_ms, qod_time_mono_ms());
    }
    req_free(r);
    *con_cls = NULL;
    atomic_fetch_sub(&h->inflight, 1);
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_ctx,
                          enum MHD_ConnectionNotificationCode tc)
{
    qod_http *h = cls;
    atomic_fetch_add(&h->conns, tc == MHD_CONNECTION_NOTIFY_STARTED ? 1 : -1);
    conn_track *t = *socket_ctx;
    pthread_mutex_lock(&h->track_mu);
    if (tc == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
        t = ci ? calloc(1, sizeof *t) : NULL;
        if (t) {
            t->fd = ci->connect_fd;
            atomic_store(&t->since_ms, qod_time_mono_ms());
            qod_list_append(&h->tracks, &t->link);
        }
        *socket_ctx = t;
    } else if (t) {
        qod_list_remove(&h->tracks, &t->link);
        free(t);
        *socket_ctx = NULL;
    }
    pthread_mutex_unlock(&h->track_mu);
}

/* libmicrohttpd's timeout restarts with every byte, so a client trickling one byte a second holds a connection
 * forever. This sweeper gives the headers conn_timeout and the whole request twice that, then shuts the socket
 * down (the server then closes the connection as it would after a client error). */
static void *sweep_main(void *arg)
{
    qod_http *h = arg;
    pthread_setname_np(pthread_self(), "qod-sweeper");
    int64_t header_ms = (int64_t)(h->opts.conn_timeout_s ? h->opts.conn_timeout_s : 30) * 1000;
    while (!qod_stopper_wait(&h->stop, 250)) {
        int64_t now = qod_time_mono_ms();
        pthread_mutex_lock(&h->track_mu);
        for (qod_link *e = h->tracks.head; e; e = e->next) {
            conn_track *t = QOD_LIST_ELEM(e, conn_track, link);
            int64_t age = now - atomic_load(&t->since_ms);
            if (age > (atomic_load(&t->in_request) ? 2 * header_ms : header_ms)) {
                shutdown(t->fd, SHUT_RDWR);
                atomic_store(&t->since_ms, INT64_MAX / 2); /* once */
            }
        }
        pthread_mutex_unlock(&h->track_mu);
    }
    return NULL;
}

/* Once the stop has begun, a new connection is closed as soon as it is accepted. This is how the server stops
 * accepting: libmicrohttpd 0.9.75's MHD_quiesce_daemon races the threads of an epoll pool for the listening
 * socket, and the loser aborts the process ("Failed to remove listen FD from epoll set"). */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
    (void)addr;
    (void)addrlen;
    const qod_http *h = cls;
    return atomic_load(&h->draining) ? MHD_NO : MHD_YES;
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t l = strlen(msg);
    while (l && (msg[l - 1] == '\n' || msg[l - 1] == '"'))
        msg[--l] = '\0';
    for (char *p = msg; *p; p++)
        if (*p == '"')
            *p = '\'';
    QOD_DEBUG("http", "mhd", "msg=\"%s\"", msg);
}

/* Resolves "HOST:PORT" or "[V6]:PORT" to a socket address. */
static int resolve_listen(const char *listen, struct sockaddr_storage *ss, char *err, size_t errcap)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host) {
        snprintf(err, errcap, "listen address '%s' is not HOST:PORT", listen);
        return QOD_ERR_INVALID;
    }
    const char *hs = listen;
    size_t hl = (size_t)(colon - listen);
    if (hs[0] == '[' && hl > 2 && hs[hl - 1] == ']') {
        hs++;
        hl -= 2;
    }
    memcpy(host, hs, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    int g = getaddrinfo(host, colon + 1, &hints, &res);
    if (g != 0 || !res) {
        snprintf(err, errcap, "cannot resolve listen address '%s': %s", listen, gai_strerror(g));
        return QOD_ERR_INVALID;
    }
    memcpy(ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return QOD_OK;
}

static void http_free(qod_http *h)
{
    qod_stopper_destroy(&h->stop);
    pthread_mutex_destroy(&h->track_mu);
    free(h);
}

int qod_http_start(const qod_http_opts *opts, qod_http **out, char *err, size_t errcap)
{
    *out = NULL;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    int rc = resolve_listen(opts->listen, &ss, err, errcap);
    if (rc != QOD_OK)
        return rc;
    qod_http *h = calloc(1, sizeof *h);
    if (!h)
        return QOD_ERR_NOMEM;
    h->opts = *opts;
    pthread_mutex_init(&h->track_mu, NULL);
    qod_stopper_init(&h->stop);
    if (!h->opts.conn_limit)
        h->opts.conn_limit = 4096;
    if (!h->opts.busy_conns)
        h->opts.busy_conns = h->opts.conn_limit * 9 / 10;
    unsigned threads = opts->threads ? opts->threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    if (opts->tls_cert_pem)
        flags |= MHD_USE_TLS;
    struct MHD_OptionItem tls[] = {
        {opts->tls_cert_pem ? MHD_OPTION_HTTPS_MEM_CERT : MHD_OPTION_END, 0, (void *)opts->tls_cert_pem},
        {opts->tls_cert_pem ? MHD_OPTION_HTTPS_MEM_KEY : MHD_OPTION_END, 0, (void *)opts->tls_key_pem},
        {MHD_OPTION_END, 0, NULL},
    };
    h->d = MHD_start_daemon(flags, 0, on_accept, h, on_access, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                            MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_LISTENING_ADDRESS_REUSE,
                            (unsigned)1, MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_TIMEOUT,
                            opts->conn_timeout_s ? opts->conn_timeout_s : 30u, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
                            opts->per_ip_limit, MHD_OPTION_CONNECTION_LIMIT, h->opts.conn_limit,
                            MHD_OPTION_NOTIFY_CONNECTION, on_connection, h, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                            opts->max_header_bytes ? opts->max_header_bytes : (size_t)QOD_HTTP_POOL_BYTES,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
    if (!h->d) {
        snprintf(err, errcap, "cannot listen on %s (address in use, or bad TLS files)", opts->listen);
        http_free(h);
        return QOD_ERR_INVALID;
    }
    h->sweeper_started = pthread_create(&h->sweeper, NULL, sweep_main, h) == 0;
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = di ? di->port : 0;
    *out = h;
    return QOD_OK;
}

void qod_http_stop(qod_http *h, int drain_ms)
{
    if (!h)
        return;
    atomic_store(&h->draining, true); /* from now on new connections are closed (on_accept) */
    int64_t deadline = qod_time_mono_ms() + drain_ms;
    while (atomic_load(&h->inflight) > 0 && qod_time_mono_ms() < deadline) {
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    /* libmicrohttpd must never be stopped with a connection still suspended. A suspended request always ends:
     * its owner completes it once the store answers (commit or failure), so past the drain we wait for those
     * alone, and say so. Were one never to end, stopping the server would abort: it is left to process exit. */
    bool stuck = false;
    for (int64_t next_log = 0; atomic_load(&h->suspended) > 0;) {
        int64_t now = qod_time_mono_ms();
        if (now >= deadline + STOP_SUSPENDED_MAX_MS) {
            stuck = true;
            break;
        }
        if (now >= next_log) {
            QOD_WARN("http", "stop_waits_for_suspended", "requests=%ld", atomic_load(&h->suspended));
            next_log = now + 1000;
        }
        struct timespec ts = {0, 2 * 1000000};
        nanosleep(&ts, NULL);
    }
    qod_stopper_stop(&h->stop);
    if (h->sweeper_started)
        pthread_join(h->sweeper, NULL);
    if (stuck) {
        QOD_ERROR("http", "stop_left_suspended", "requests=%ld", atomic_load(&h->suspended));
        return;
    }
    MHD_stop_daemon(h->d);
    http_free(h);
}

unsigned qod_http_port(const qod_http *h)
{
    return h->port;
}

long qod_http_inflight(const qod_http *h)
{
    return atomic_load(&((qod_http *)h)->inflight);
}

const char *qod_req_method(const qod_req *r)
{
    return r->method;
}

const char *qod_req_path(const qod_req *r)
{
    return r->path;
}

const char *qod_req_header(const qod_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

const char *qod_req_query(const qod_req *r, const char *name)
{
    return MHD_lookup_connection_value(r->conn, MHD_GET_ARGUMENT_KIND, name);
}

typedef struct {
    int (*fn)(void *arg, const char *key, const char *value);
    void *arg;
    int rc;
} query_walk;

static enum MHD_Result query_arg(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
    (void)kind;
    query_walk *w = cls;
    w->rc = w->fn(w->arg, key, value);
    return w->rc ? MHD_NO : MHD_YES;
}

int qod_req_query_each(const qod_req *r, int (*fn)(void *arg, const char *key, const char *value), void *arg)
{
    query_walk w = {fn, arg, 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, query_arg, &w);
    return w.rc;
}

const char *qod_req_body(const qod_req *r, size_t *len)
{
    *len = r->body.len;
    return r->body.data ? r->body.data : "";
}

bool qod_req_body_too_large(const qod_req *r)
{
    return r->too_large;
}

const char *qod_req_peer(qod_req *r)
{
    /* Formatted on first use: few requests need it (inet_ntop was a visible share of a GET). */
    if (!r->peer[0])
        peer_text(r->conn, r->peer, sizeof r->peer);
    return r->peer;
}

uint64_t qod_req_start_ns(const qod_req *r)
{
    return r->start_ns;
}

void qod_req_set_user(qod_req *r, void *user, void (*free_fn)(void *))
{
    r->user = user;
    r->user_free = free_fn;
}

void *qod_req_user(const qod_req *r)
{
    return r->user;
}

const char *qod_req_response_header(const qod_req *r, const char *name)
{
    if (r->content_type && strcasecmp(name, MHD_HTTP_HEADER_CONTENT_TYPE) == 0)
        return r->content_type;
    for (int i = 0; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

int qod_req_add_header(qod_req *r, const char *name, const char *value)
{
    if (r->nheaders >= MAX_RESP_HEADERS)
        return QOD_ERR_LIMIT;
    hdr *x = &r->headers[r->nheaders];
    x->name = strdup(name);
    x->value = strdup(value);
    if (!x->name || !x->value) {
        free(x->name);
        free(x->value);
        return QOD_ERR_NOMEM;
    }
    r->nheaders++;
    return QOD_OK;
}

int qod_req_respond(qod_req *r, unsigned status, const char *content_type, const char *body, size_t len)
{
    char *copy = NULL;
    if (len) {
        copy = malloc(len);
        if (!copy)
            return QOD_ERR_NOMEM;
        memcpy(copy, body, len);
    }
    free(r->resp_body);
    free(r->content_type);
    r->resp_body = copy;
    r->resp_len = len;
    r->content_type = content_type ? strdup(content_type) : NULL;
    r->status = status;
    return QOD_OK;
}

void qod_req_defer(qod_req *r)
{
    pthread_mutex_lock(&r->mu);
    if (!r->completed) {
        r->suspended = true;
        atomic_fetch_add(&r->h->suspended, 1);
        MHD_suspend_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
}

void qod_req_complete(qod_req *r)
{
    pthread_mutex_lock(&r->mu);
    r->completed = true;
    bool suspended = r->suspended;
    struct MHD_Connection *conn = r->conn;
    pthread_mutex_unlock(&r->mu);
    /* r may be freed as soon as the connection resumes: touch nothing of it after this call. */
    if (suspended)
        MHD_resume_connection(conn);
}

bool qod_req_overloaded(const qod_req *r)
{
    return r->overloaded;
}

bool qod_req_draining(const qod_req *r)
{
    return r->draining;
}

unsigned qod_req_status(const qod_req *r)
{
    return r->status;
}
