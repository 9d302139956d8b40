/* Request forwarding between the nodes of a cluster (see forward.h).
 *
 * Threads. qod_forward_request runs on an HTTP thread: it copies everything the exchange needs out of the
 * request (URL, method, body, header lines), reserves an in-flight slot and posts the exchange to the loop;
 * from then on only the loop thread touches the exchange, and it touches the request once more, to answer and
 * complete it. The loop thread owns the multi handle, the running list and the pool of idle easy handles.
 *
 * Connections. All exchanges share one multi handle, whose connection cache keeps connections to the peers
 * open between exchanges; at most MAX_HOST_CONNS run at once towards one peer (the others queue inside libcurl,
 * their timeout running), which keeps us under the peer's per-address connection limit. */
#include "api/forward.h"

#include "api/errors.h"
#include "core/loop.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/list.h"
#include "util/log.h"
#include "util/time.h"

#include <curl/curl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>

#define MAX_HOST_CONNS 256L
#define POOL_MAX 64
#define NODE_MAX 255
#define KEEP_MAX 16 /* relayed response headers kept per exchange; more is a malformed answer */
#define FAIL_MESSAGE "The node that holds this session is not reachable; retry."

/* The request headers sent on. Those marked always are named even when absent: an empty "Name:" line stops
 * libcurl from inventing its own (a form-urlencoded Content-Type for bodies, "Accept: *\/\*"). */
static const struct {
    const char *name;
    bool always;
} req_headers[] = {
    {"Authorization", false}, {"Content-Type", true}, {"Idempotency-Key", false},
    {"x-correlator", false},  {"Accept", true},
};
#define NREQ ((int)(sizeof req_headers / sizeof req_headers[0]))

/* The response headers relayed, Content-Type apart (it goes with the body). */
static const char *const resp_headers[] = {"x-correlator",  "Retry-After",      "Location",
                                           "RateLimit",     "RateLimit-Policy", "Idempotent-Replayed",
                                           "Cache-Control", "WWW-Authenticate"};
#define NRESP ((int)(sizeof resp_headers / sizeof resp_headers[0]))

typedef struct fwd {
    qod_forward *f;
    qod_req *r; /* borrowed until completed */
    char *method;
    char *url;
    char *body; /* NULL when the request has none */
    size_t body_len;
    struct curl_slist *hdrs;
    CURL *easy;
    qod_buf resp;
    char *ctype; /* the peer's Content-Type */
    struct {
        int name; /* index in resp_headers */
        char *value;
    } keep[KEEP_MAX];
    int nkeep;
    const char *bad; /* why the peer's answer is unusable, NULL while it is fine */
    qod_link link;   /* running list */
} fwd;

struct qod_forward {
    qod_loop *loop;
    CURLM *multi;
    int64_t timeout_ms;
    int64_t curl_due;     /* loop thread: when libcurl wants its timeout action, -1 for never */
    qod_list running;     /* loop thread */
    CURL *pool[POOL_MAX]; /* loop thread: idle easy handles */
    int npool;
    atomic_bool closing;
    atomic_int inflight; /* accepted and not completed yet */
    atomic_ullong forwarded, failed;
};

/* ---- copying the request (HTTP thread) --------------------------------------------------------------------- */

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

/* Appends s, percent-encoding every byte that is neither unreserved nor in keep. libmicrohttpd hands over the
 * path and the query arguments decoded, so they are encoded again for the peer. */
static int put_encoded(qod_buf *b, const char *s, const char *keep)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = QOD_OK;
    for (; *s && rc == QOD_OK; s++) {
        unsigned char c = (unsigned char)*s;
        if (unreserved(c) || strchr(keep, c)) {
            rc = qod_buf_append(b, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            rc = qod_buf_append(b, e, sizeof e);
        }
    }
    return rc;
}

typedef struct {
    qod_buf *b;
    bool first;
} query_ctx;

static int put_query_arg(void *arg, const char *key, const char *value)
{
    query_ctx *q = arg;
    int rc = qod_buf_puts(q->b, q->first ? "?" : "&");
    q->first = false;
    rc = rc ? rc : put_encoded(q->b, key, "");
    if (value) {
        rc = rc ? rc : qod_buf_puts(q->b, "=");
        rc = rc ? rc : put_encoded(q->b, value, "");
    }
    return rc;
}

/* The length of base_url to use (trailing slashes dropped), or 0 when it is not an http(s) URL we accept. */
static size_t base_url_len(const char *u)
{
    size_t n = u ? strlen(u) : 0;
    size_t scheme = n && strncasecmp(u, "http://", 7) == 0 ? 7 : n && strncasecmp(u, "https://", 8) == 0 ? 8 : 0;
    while (n > scheme && u[n - 1] == '/')
        n--;
    if (!scheme || n <= scheme || n > QOD_FORWARD_MAX_BASE || u[scheme] == '/')
        return 0;
    for (size_t i = scheme; i < n; i++)
        if ((unsigned char)u[i] <= 0x20 || (unsigned char)u[i] >= 0x7f || u[i] == '?' || u[i] == '#')
            return 0;
    return n;
}

/* A header value we may put on a line of our own: bounded, no control characters but tab. */
static int value_check(const char *v, size_t n)
{
    if (n > QOD_FORWARD_MAX_HEADER)
        return QOD_ERR_LIMIT;
    for (size_t i = 0; i < n; i++)
        if (((unsigned char)v[i] < 0x20 && v[i] != '\t') || v[i] == 0x7f)
            return QOD_ERR_INVALID;
    return QOD_OK;
}

/* Appends "Name: value" to the list; an empty value is sent as "Name;" (libcurl's way to send one). */
static int add_line(struct curl_slist **list, const char *name, const char *value)
{
    char line[64 + QOD_FORWARD_MAX_HEADER];
    size_t n = value ? strlen(value) : 0;
    int rc = value ? value_check(value, n) : QOD_OK;
    if (rc != QOD_OK)
        return rc;
    if (value && n)
        snprintf(line, sizeof line, "%s: %s", name, value);
    else
        snprintf(line, sizeof line, value ? "%s;" : "%s:", name);
    struct curl_slist *l = curl_slist_append(*list, line);
    if (!l)
        return QOD_ERR_NOMEM;
    *list = l;
    return QOD_OK;
}

static void fwd_free(fwd *w)
{
    if (!w)
        return;
    curl_slist_free_all(w->hdrs);
    qod_buf_dispose(&w->resp);
    for (int i = 0; i < w->nkeep; i++)
        free(w->keep[i].value);
    free(w->ctype);
    free(w->method);
    free(w->url);
    free(w->body);
    free(w);
}

static int copy_headers(fwd *w, const qod_req *r, const char *from_node)
{
    int rc = QOD_OK;
    for (int i = 0; i < NREQ && rc == QOD_OK; i++) {
        const char *name = req_headers[i].name, *v = NULL;
        /* The correlator this node answers with (the client's, or one made up for it) is the one the peer
         * should log and echo, so that both nodes' logs and the answer agree. */
        if (strcasecmp(name, "x-correlator") == 0)
            v = qod_req_response_header(r, name);
        if (!v)
            v = qod_req_header(r, name);
        if (v || req_headers[i].always)
            rc = add_line(&w->hdrs, name, v);
    }
    rc = rc ? rc : add_line(&w->hdrs, QOD_FORWARD_HEADER, from_node);
    /* No "Expect: 100-continue" round trip for larger bodies: the peer is one of ours. */
    rc = rc ? rc : add_line(&w->hdrs, "Expect", NULL);
    return rc;
}

static int copy_request(fwd *w, const qod_req *r, const char *base_url, size_t base_len, const char *from_node)
{
    qod_buf url;
    qod_buf_init(&url, QOD_FORWARD_MAX_URL);
    query_ctx q = {&url, true};
    int rc = qod_buf_append(&url, base_url, base_len);
    rc = rc ? rc : put_encoded(&url, qod_req_path(r), "/!$&'()*+,;=:@");
    rc = rc ? rc : qod_req_query_each(r, put_query_arg, &q);
    if (rc == QOD_OK && !(w->url = qod_buf_steal(&url)))
        rc = QOD_ERR_NOMEM;
    qod_buf_dispose(&url);
    size_t len = 0;
    const char *body = qod_req_body(r, &len);
    if (rc == QOD_OK && !(w->method = strdup(qod_req_method(r))))
        rc = QOD_ERR_NOMEM;
    if (rc == QOD_OK && len) {
        w->body = malloc(len);
        if (w->body) {
            memcpy(w->body, body, len);
            w->body_len = len;
        } else {
            rc = QOD_ERR_NOMEM;
        }
    }
    return rc ? rc : copy_headers(w, r, from_node);
}

/* ---- answering (loop thread, or the destroying thread once the loop is gone) ------------------------------- */

static void add_missing_header(qod_req *r, const char *name, const char *value)
{
    if (!qod_req_response_header(r, name))
        qod_req_add_header(r, name, value);
}

static void recycle(qod_forward *f, CURL *e)
{
    if (!e)
        return;
    if (f->npool < POOL_MAX) {
        curl_easy_reset(e);
        f->pool[f->npool++] = e;
    } else {
        curl_easy_cleanup(e);
    }
}

/* Answers w's request with the peer's answer (status > 0) or with the 503, completes it and frees w. */
static void finish(fwd *w, long status, const char *why)
{
    qod_forward *f = w->f;
    qod_req *r = w->r;
    bool relayed = status > 0 && qod_req_respond(r, (unsigned)status, w->ctype, w->resp.data, w->resp.len) == QOD_OK;
    if (relayed) {
        for (int i = 0; i < w->nkeep; i++)
            add_missing_header(r, resp_headers[w->keep[i].name], w->keep[i].value);
        atomic_fetch_add(&f->forwarded, 1);
    } else {
        QOD_WARN("forward", "failed", "method=%s url=\"%s\" why=\"%s\"", w->method, w->url,
                 why ? why : "out of memory");
        add_missing_header(r, "Retry-After", "1");
        qod_api_error(r, 503, "UNAVAILABLE", FAIL_MESSAGE);
        atomic_fetch_add(&f->failed, 1);
    }
    qod_req_complete(r); /* r may be gone from here on */
    recycle(f, w->easy);
    w->easy = NULL;
    fwd_free(w);
    atomic_fetch_sub(&f->inflight, 1);
}

/* ---- the exchange (loop thread) ----------------------------------------------------------------------------- */

static size_t on_body(char *buf, size_t size, size_t nmemb, void *arg)
{
    fwd *w = arg;
    if (qod_buf_append(&w->resp, buf, size * nmemb) == QOD_OK)
        return size * nmemb;
    w->bad =
        w->resp.len + size * nmemb > QOD_FORWARD_MAX_BODY ? "the answer's body is over the limit" : "out of memory";
    return 0;
}

int qod_forward_header_parse(const char *line, size_t len, qod_forward_header *out)
{
    *out = (qod_forward_header){QOD_FORWARD_HDR_IGNORED, -1, 0, 0};
    const char *colon = memchr(line, ':', len);
    if (!colon || colon == line || line[0] == ' ' || line[0] == '\t')
        return QOD_ERR_INVALID;
    size_t nl = (size_t)(colon - line), vs = nl + 1, ve = len;
    while (vs < ve && (line[vs] == ' ' || line[vs] == '\t'))
        vs++;
    while (ve > vs && (line[ve - 1] == ' ' || line[ve - 1] == '\t'))
        ve--;
    out->value_at = vs;
    out->value_len = ve - vs;
    if (nl == 12 && strncasecmp(line, "Content-Type", 12) == 0)
        out->kind = QOD_FORWARD_HDR_CONTENT_TYPE;
    for (int i = 0; i < NRESP && out->kind == QOD_FORWARD_HDR_IGNORED; i++) {
        if (strlen(resp_headers[i]) == nl && strncasecmp(line, resp_headers[i], nl) == 0) {
            out->kind = QOD_FORWARD_HDR_RELAYED;
            out->relayed = i;
        }
    }
    if (out->kind != QOD_FORWARD_HDR_IGNORED)
        return value_check(line + vs, ve - vs);
    return QOD_OK;
}

/* Keeps one relayed header line. Returns false when the answer is malformed or over a limit. */
static bool keep_header(fwd *w, const char *line, size_t len)
{
    qod_forward_header h;
    if (qod_forward_header_parse(line, len, &h) != QOD_OK)
        return false;
    if (h.kind == QOD_FORWARD_HDR_IGNORED)
        return true;
    bool ctype = h.kind == QOD_FORWARD_HDR_CONTENT_TYPE;
    int which = h.relayed;
    size_t vs = h.value_at, ve = h.value_at + h.value_len;
    if ((which >= 0 && w->nkeep >= KEEP_MAX) || (ctype && w->ctype))
        return false;
    char *v = strndup(line + vs, ve - vs);
    if (!v)
        return false;
    if (ctype) {
        w->ctype = v;
    } else {
        w->keep[w->nkeep].name = which;
        w->keep[w->nkeep++].value = v;
    }
    return true;
}

static void forget_headers(fwd *w)
{
    for (int i = 0; i < w->nkeep; i++)
        free(w->keep[i].value);
    w->nkeep = 0;
    free(w->ctype);
    w->ctype = NULL;
}

static size_t on_header(char *buf, size_t size, size_t nmemb, void *arg)
{
    fwd *w = arg;
    size_t len = size * nmemb, n = len;
    while (n && (buf[n - 1] == '\r' || buf[n - 1] == '\n'))
        n--;
    if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0) {
        forget_headers(w); /* a new response begins (after a 1xx): only the final one's headers count */
        return len;
    }
    if (n == 0)
        return len;
    /* Folded lines are obsolete (RFC 9112 §5.2) and would smuggle text into a relayed value: refuse them. */
    if (buf[0] == ' ' || buf[0] == '\t' || !keep_header(w, buf, n)) {
        w->bad = "a malformed or oversized header in the answer";
        return 0;
    }
    return len;
}

/* Sets the method and the body; false when libcurl refuses an option. */
static bool set_method(fwd *w, CURL *e)
{
    const char *m = w->method;
    if (strcmp(m, "GET") == 0)
        return curl_easy_setopt(e, CURLOPT_HTTPGET, 1L) == CURLE_OK;
    if (strcmp(m, "HEAD") == 0)
        return curl_easy_setopt(e, CURLOPT_NOBODY, 1L) == CURLE_OK;
    bool ok = true;
    /* Bodies go as they came; POST, PUT and PATCH always carry one (Content-Length: 0 when empty). */
    if (w->body || strcmp(m, "POST") == 0 || strcmp(m, "PUT") == 0 || strcmp(m, "PATCH") == 0)
        ok = curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)w->body_len) == CURLE_OK &&
             curl_easy_setopt(e, CURLOPT_POSTFIELDS, w->body ? w->body : "") == CURLE_OK;
    return ok && (strcmp(m, "POST") == 0 || curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, m) == CURLE_OK);
}

static int launch(fwd *w)
{
    qod_forward *f = w->f;
    CURL *e = w->easy = f->npool ? f->pool[--f->npool] : curl_easy_init();
    if (!e)
        return QOD_ERR_NOMEM;
    bool ok = curl_easy_setopt(e, CURLOPT_URL, w->url) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)f->timeout_ms) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)f->timeout_ms) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_PRIVATE, w) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_WRITEDATA, w) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HEADERDATA, w) == CURLE_OK &&
              curl_easy_setopt(e, CURLOPT_HTTPHEADER, w->hdrs) == CURLE_OK && set_method(w, e);
    if (!ok || curl_multi_add_handle(f->multi, e) != CURLM_OK)
        return QOD_ERR_NOMEM;
    qod_list_append(&f->running, &w->link);
    return QOD_OK;
}

/* The posted job: starts the exchange, or answers 503 when the forwarder is closing or libcurl refuses. */
static void start_job(void *arg)
{
    fwd *w = arg;
    if (atomic_load(&w->f->closing))
        finish(w, 0, "the forwarder is shutting down");
    else if (launch(w) != QOD_OK)
        finish(w, 0, "cannot start the exchange");
}

static void check_done(qod_forward *f)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(f->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        fwd *w = NULL;
        long status = 0;
        CURLcode cc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&w);
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(f->multi, m->easy_handle);
        qod_list_remove(&f->running, &w->link);
        const char *why = w->bad ? w->bad : cc != CURLE_OK ? curl_easy_strerror(cc) : NULL;
        if (!why && (status < 200 || status > 599))
            why = "no valid status in the answer";
        finish(w, why ? 0 : status, why);
    }
}

static void on_socket_event(void *arg, int fd, uint32_t events)
{
    qod_forward *f = arg;
    int flags = (events & EPOLLIN ? CURL_CSELECT_IN : 0) | (events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    int running = 0;
    curl_multi_socket_action(f->multi, fd, flags, &running);
    check_done(f);
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e;
    (void)socketp;
    qod_forward *f = userp;
    uint32_t ev = what == CURL_POLL_IN      ? EPOLLIN
                  : what == CURL_POLL_OUT   ? EPOLLOUT
                  : what == CURL_POLL_INOUT ? EPOLLIN | EPOLLOUT
                                            : 0;
    /* On failure (out of memory) the transfer hears nothing and ends at its timeout, answered 503. */
    if (qod_loop_watch(f->loop, fd, what == CURL_POLL_REMOVE ? 0 : ev, on_socket_event, f) != QOD_OK)
        QOD_ERROR("forward", "watch_failed", "fd=%d", (int)fd);
    return 0;
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    qod_forward *f = userp;
    f->curl_due = timeout_ms < 0 ? -1 : qod_time_mono_ms() + timeout_ms;
    return 0;
}

static int64_t tick(void *arg, int64_t now)
{
    qod_forward *f = arg;
    if (f->curl_due >= 0 && f->curl_due <= now) {
        int running = 0;
        f->curl_due = -1;
        curl_multi_socket_action(f->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(f);
    }
    return f->curl_due;
}

/* ---- the public side ------------------------------------------------------------------------------------------ */

int qod_forward_create(int64_t timeout_ms, qod_forward **out)
{
    *out = NULL;
    if (timeout_ms <= 0 || timeout_ms > 3600 * 1000)
        return QOD_ERR_RANGE;
    qod_forward *f = calloc(1, sizeof *f);
    if (!f)
        return QOD_ERR_NOMEM;
    f->timeout_ms = timeout_ms;
    f->curl_due = -1;
    int rc = qod_loop_create(&f->loop);
    if (rc == QOD_OK && !(f->multi = curl_multi_init()))
        rc = QOD_ERR_NOMEM;
    if (rc == QOD_OK) {
        curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
        curl_multi_setopt(f->multi, CURLMOPT_SOCKETDATA, f);
        curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        curl_multi_setopt(f->multi, CURLMOPT_TIMERDATA, f);
        curl_multi_setopt(f->multi, CURLMOPT_MAX_HOST_CONNECTIONS, MAX_HOST_CONNS);
        curl_multi_setopt(f->multi, CURLMOPT_MAXCONNECTS, MAX_HOST_CONNS);
        qod_loop_set_name(f->loop, "qod-forward");
        rc = qod_loop_add_tick(f->loop, tick, f);
    }
    rc = rc ? rc : qod_loop_start(f->loop);
    if (rc != QOD_OK) {
        qod_forward_destroy(f);
        return rc;
    }
    *out = f;
    return QOD_OK;
}

void qod_forward_destroy(qod_forward *f)
{
    if (!f)
        return;
    atomic_store(&f->closing, true);
    /* Joins the thread; exchanges posted but not started are answered 503 by start_job, on this thread. */
    qod_loop_stop(f->loop);
    if (f->multi) {
        /* The loop thread is gone: libcurl must not call back into the loop while handles are removed. */
        curl_multi_setopt(f->multi, CURLMOPT_SOCKETFUNCTION, NULL);
        curl_multi_setopt(f->multi, CURLMOPT_TIMERFUNCTION, NULL);
    }
    for (fwd *w; (w = QOD_LIST_ELEM(f->running.head, fwd, link)) != NULL;) {
        qod_list_remove(&f->running, &w->link);
        curl_multi_remove_handle(f->multi, w->easy);
        finish(w, 0, "the forwarder is shutting down");
    }
    while (f->npool)
        curl_easy_cleanup(f->pool[--f->npool]);
    curl_multi_cleanup(f->multi);
    qod_loop_destroy(f->loop);
    free(f);
}

bool qod_forward_is_forwarded(const qod_req *r)
{
    return qod_req_header(r, QOD_FORWARD_HEADER) != NULL;
}

static int node_check(const char *node)
{
    size_t n = node ? strlen(node) : 0;
    if (!n || n > NODE_MAX)
        return QOD_ERR_INVALID;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)node[i] <= 0x20 || (unsigned char)node[i] >= 0x7f)
            return QOD_ERR_INVALID;
    return QOD_OK;
}

int qod_forward_request(qod_forward *f, qod_req *r, const char *base_url, const char *from_node)
{
    fwd *w = NULL;
    size_t base_len = base_url_len(base_url);
    int rc = base_len ? node_check(from_node) : QOD_ERR_INVALID;
    if (rc == QOD_OK && qod_req_body_too_large(r))
        rc = QOD_ERR_LIMIT; /* the body was dropped: there is nothing faithful to send */
    if (rc == QOD_OK && atomic_fetch_add(&f->inflight, 1) >= QOD_FORWARD_MAX_INFLIGHT) {
        atomic_fetch_sub(&f->inflight, 1);
        rc = QOD_ERR_BUSY;
    } else if (rc == QOD_OK) {
        w = calloc(1, sizeof *w);
        rc = w ? QOD_OK : QOD_ERR_NOMEM;
        if (w) {
            w->f = f;
            w->r = r;
            qod_buf_init(&w->resp, QOD_FORWARD_MAX_BODY);
            rc = copy_request(w, r, base_url, base_len, from_node);
        }
        /* Everything the exchange needs is copied: once posted, r may be answered at any moment. */
        rc = rc ? rc : qod_loop_post(f->loop, start_job, w);
        if (rc != QOD_OK) {
            fwd_free(w);
            w = NULL;
            atomic_fetch_sub(&f->inflight, 1);
        }
    }
    if (rc != QOD_OK) {
        atomic_fetch_add(&f->failed, 1);
        QOD_WARN("forward", "refused", "why=\"%s\"", qod_strerror(rc));
        return rc;
    }
    qod_req_defer(r);
    return QOD_OK;
}

void qod_forward_stats(const qod_forward *f, uint64_t *forwarded, uint64_t *failed)
{
    qod_forward *m = (qod_forward *)f;
    *forwarded = atomic_load(&m->forwarded);
    *failed = atomic_load(&m->failed);
}
