/* The forwarder between two real HTTP servers on loopback: an "upstream" node answering fixed responses (and
 * echoing what it received), and a "front" node whose handler forwards every request to it. A libcurl client
 * talks to the front. */
#include "api/errors.h"
#include "api/forward.h"
#include "api/http.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/time.h"

#include "qtest.h"

#include <curl/curl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BIG_BODY (1536 * 1024)
#define PARALLEL 200

typedef struct {
    qod_http *up, *front;
    qod_forward *fw;
    char base[64]; /* the upstream as the front forwards to it */
    char front_url[64];
    atomic_int slow_ms; /* how long /slow sleeps */
} fixture;

static void echo_header(qod_buf *b, const qod_req *r, const char *name)
{
    const char *v = qod_req_header(r, name);
    qod_buf_printf(b, "%s=%s\n", name, v ? v : "(none)");
}

/* The upstream node: /echo reports the request and sets every relayed response header (and two that must
 * not be relayed); /slow answers late; /big answers a body over the forwarder's limit; others 200 "ok". */
static void upstream_dispatch(void *ctx, qod_req *r)
{
    fixture *fx = ctx;
    const char *path = qod_req_path(r);
    if (strcmp(path, "/slow") == 0) {
        qt_sleep_ms(atomic_load(&fx->slow_ms));
        qod_req_respond(r, 200, "text/plain", "late", 4);
        return;
    }
    if (strcmp(path, "/big") == 0) {
        char *big = malloc(BIG_BODY);
        memset(big, 'x', BIG_BODY);
        qod_req_respond(r, 200, "text/plain", big, BIG_BODY);
        free(big);
        return;
    }
    if (strncmp(path, "/echo", 5) != 0) {
        qod_req_respond(r, 200, "text/plain", "ok", 2);
        return;
    }
    qod_buf b;
    qod_buf_init(&b, 65536);
    size_t len;
    const char *body = qod_req_body(r, &len);
    qod_buf_printf(&b, "method=%s\npath=%s\nbody=%.*s\n", qod_req_method(r), path, (int)len, body);
    const char *q = qod_req_query(r, "i"), *s = qod_req_query(r, "s");
    qod_buf_printf(&b, "i=%s\ns=%s\n", q ? q : "(none)", s ? s : "(none)");
    static const char *const names[] = {"Authorization",   "Content-Type", "Idempotency-Key", "x-correlator", "Accept",
                                        "X-Qod-Forwarded", "Cookie",       "X-Other",         "Expect"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        echo_header(&b, r, names[i]);
    const char *corr = qod_req_header(r, "x-correlator");
    qod_req_add_header(r, "x-correlator", corr ? corr : "upstream-made");
    qod_req_add_header(r, "Location", "/echo/42");
    qod_req_add_header(r, "Retry-After", "7");
    qod_req_add_header(r, "RateLimit", "limit=10, remaining=9, reset=1");
    qod_req_add_header(r, "RateLimit-Policy", "10;w=1");
    qod_req_add_header(r, "Idempotent-Replayed", "true");
    qod_req_add_header(r, "Cache-Control", "no-store");
    qod_req_add_header(r, "WWW-Authenticate", "Bearer realm=\"qod\"");
    qod_req_add_header(r, "X-Internal", "secret");
    qod_req_add_header(r, "Set-Cookie", "a=b");
    qod_req_respond(r, 201, "text/plain; charset=utf-8", b.data, b.len);
    qod_buf_dispose(&b);
}

/* The front node: like api.c it sets the x-correlator of its answer first (the client's, else its own). */
static void front_dispatch(void *ctx, qod_req *r)
{
    fixture *fx = ctx;
    if (qod_forward_is_forwarded(r)) {
        qod_api_error(r, 508, "LOOP", "Forwarded twice.");
        return;
    }
    const char *corr = qod_req_header(r, "x-correlator");
    qod_req_add_header(r, "x-correlator", corr ? corr : "front-made");
    int rc = qod_forward_request(fx->fw, r, fx->base, "node-a");
    if (rc != QOD_OK) {
        qod_req_add_header(r, "X-Refused", qod_strerror(rc));
        qod_api_error(r, rc == QOD_ERR_BUSY ? 503 : 500, "INTERNAL", "not forwarded");
    }
}

static int start_server(void (*dispatch)(void *, qod_req *), fixture *fx, qod_http **out)
{
    char err[256];
    qod_http_opts o = {.listen = "127.0.0.1:0",
                       .threads = 4,
                       .conn_timeout_s = 10,
                       .max_body = 1 << 20,
                       .dispatch = dispatch,
                       .ctx = fx};
    return qod_http_start(&o, out, err, sizeof err);
}

/* A loopback port with nothing listening on it. */
static unsigned dead_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t l = sizeof a;
    bind(s, (struct sockaddr *)&a, sizeof a);
    getsockname(s, (struct sockaddr *)&a, &l);
    close(s);
    return ntohs(a.sin_port);
}

static int setup(fixture *fx, int64_t timeout_ms, bool upstream_down)
{
    memset(fx, 0, sizeof *fx);
    atomic_store(&fx->slow_ms, 1200);
    int rc = upstream_down ? QOD_OK : start_server(upstream_dispatch, fx, &fx->up);
    rc = rc ? rc : start_server(front_dispatch, fx, &fx->front);
    rc = rc ? rc : qod_forward_create(timeout_ms, &fx->fw);
    snprintf(fx->base, sizeof fx->base, "http://127.0.0.1:%u", fx->up ? qod_http_port(fx->up) : dead_port());
    snprintf(fx->front_url, sizeof fx->front_url, "http://127.0.0.1:%u", fx->front ? qod_http_port(fx->front) : 0);
    return rc;
}

/* The front stops first (its suspended requests are answered by the live forwarder), then the forwarder. */
static void teardown(fixture *fx)
{
    qod_http_stop(fx->front, 5000);
    qod_forward_destroy(fx->fw);
    qod_http_stop(fx->up, 5000);
}

typedef struct {
    long status;
    qod_buf body, hdrs;
} resp;

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    return qod_buf_append(arg, p, size * n) == QOD_OK ? size * n : 0;
}

static CURL *client(const char *method, const char *url, const char *body, struct curl_slist *h, resp *out)
{
    memset(out, 0, sizeof *out);
    qod_buf_init(&out->body, 4 << 20);
    qod_buf_init(&out->hdrs, 1 << 16);
    CURL *e = curl_easy_init();
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, 20000L);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body)
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &out->body);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &out->hdrs);
    return e;
}

static long http_do(const char *method, const char *url, const char *body, struct curl_slist *h, resp *out)
{
    CURL *e = client(method, url, body, h, out);
    if (curl_easy_perform(e) == CURLE_OK)
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &out->status);
    curl_easy_cleanup(e);
    return out->status;
}

static void resp_dispose(resp *r)
{
    qod_buf_dispose(&r->body);
    qod_buf_dispose(&r->hdrs);
}

/* The value of the n-th response header called name (case-insensitive), into out; false when absent. */
static bool header_n(const resp *r, const char *name, int n, char *out, size_t cap)
{
    size_t nl = strlen(name);
    for (const char *p = r->hdrs.data; p && *p;) {
        const char *eol = strstr(p, "\r\n");
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        if (len > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':' && n-- == 0) {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            snprintf(out, cap, "%.*s", (int)(len - (size_t)(v - p)), v);
            return true;
        }
        p = eol ? eol + 2 : p + len;
    }
    return false;
}

static const char *header(const resp *r, const char *name, char *out, size_t cap)
{
    return header_n(r, name, 0, out, cap) ? out : NULL;
}

static bool body_has(const resp *r, const char *s)
{
    return r->body.data && strstr(r->body.data, s) != NULL;
}

static bool is_unavailable(const resp *r)
{
    char v[64];
    return r->status == 503 && header(r, "Retry-After", v, sizeof v) && strcmp(v, "1") == 0 &&
           body_has(r, "\"status\":503") && body_has(r, "\"code\":\"UNAVAILABLE\"") &&
           body_has(r, "not reachable; retry.");
}

QTEST(relays_method_body_and_headers_both_ways)
{
    fixture fx;
    resp r;
    char url[128], v[256];
    QT_EQ_INT(setup(&fx, 5000, false), QOD_OK);
    snprintf(url, sizeof url, "%s/echo/a%%20b?i=7&s=x%%26y", fx.front_url);
    struct curl_slist *h = curl_slist_append(NULL, "Authorization: Bearer tok");
    h = curl_slist_append(h, "Content-Type: application/json");
    h = curl_slist_append(h, "Idempotency-Key: key-1");
    h = curl_slist_append(h, "x-correlator: corr-1");
    h = curl_slist_append(h, "Accept: application/json");
    h = curl_slist_append(h, "Cookie: c=d");
    h = curl_slist_append(h, "X-Other: 1");
    http_do("PATCH", url, "{\"a\":1}", h, &r);
    curl_slist_free_all(h);
    uint64_t fwd = 0, failed = 0;
    qod_forward_stats(fx.fw, &fwd, &failed);
    teardown(&fx);
    QT_EQ_INT(r.status, 201);
    QT_TRUE(body_has(&r, "method=PATCH\n"));
    QT_TRUE(body_has(&r, "path=/echo/a b\n"));
    QT_TRUE(body_has(&r, "body={\"a\":1}\n"));
    QT_TRUE(body_has(&r, "i=7\ns=x&y\n"));
    QT_TRUE(body_has(&r, "Authorization=Bearer tok\n"));
    QT_TRUE(body_has(&r, "Content-Type=application/json\n"));
    QT_TRUE(body_has(&r, "Idempotency-Key=key-1\n"));
    QT_TRUE(body_has(&r, "x-correlator=corr-1\n"));
    QT_TRUE(body_has(&r, "Accept=application/json\n"));
    QT_TRUE(body_has(&r, "X-Qod-Forwarded=node-a\n"));
    QT_TRUE(body_has(&r, "Cookie=(none)\n"));
    QT_TRUE(body_has(&r, "X-Other=(none)\n"));
    QT_TRUE(body_has(&r, "Expect=(none)\n"));
    QT_EQ_STR(header(&r, "Content-Type", v, sizeof v), "text/plain; charset=utf-8");
    QT_EQ_STR(header(&r, "x-correlator", v, sizeof v), "corr-1");
    QT_TRUE(!header_n(&r, "x-correlator", 1, v, sizeof v)); /* the front's and the upstream's: once */
    QT_EQ_STR(header(&r, "Location", v, sizeof v), "/echo/42");
    QT_EQ_STR(header(&r, "Retry-After", v, sizeof v), "7");
    QT_EQ_STR(header(&r, "RateLimit", v, sizeof v), "limit=10, remaining=9, reset=1");
    QT_EQ_STR(header(&r, "RateLimit-Policy", v, sizeof v), "10;w=1");
    QT_EQ_STR(header(&r, "Idempotent-Replayed", v, sizeof v), "true");
    QT_EQ_STR(header(&r, "Cache-Control", v, sizeof v), "no-store");
    QT_EQ_STR(header(&r, "WWW-Authenticate", v, sizeof v), "Bearer realm=\"qod\"");
    QT_TRUE(!header(&r, "X-Internal", v, sizeof v));
    QT_TRUE(!header(&r, "Set-Cookie", v, sizeof v));
    QT_EQ_INT(fwd, 1);
    QT_EQ_INT(failed, 0);
    resp_dispose(&r);
}

QTEST(sends_no_invented_headers_and_the_fronts_correlator)
{
    fixture fx;
    resp r;
    char url[128], v[64];
    QT_EQ_INT(setup(&fx, 5000, false), QOD_OK);
    snprintf(url, sizeof url, "%s/echo", fx.front_url);
    /* No Content-Type and no Accept from the client: the forwarder must not make them up. */
    struct curl_slist *h = curl_slist_append(NULL, "Content-Type:");
    h = curl_slist_append(h, "Accept:");
    http_do("POST", url, "", h, &r);
    curl_slist_free_all(h);
    teardown(&fx);
    QT_EQ_INT(r.status, 201);
    QT_TRUE(body_has(&r, "method=POST\n"));
    QT_TRUE(body_has(&r, "body=\n"));
    QT_TRUE(body_has(&r, "Content-Type=(none)\n"));
    QT_TRUE(body_has(&r, "Accept=(none)\n"));
    QT_TRUE(body_has(&r, "Authorization=(none)\n"));
    QT_TRUE(body_has(&r, "x-correlator=front-made\n"));
    QT_EQ_STR(header(&r, "x-correlator", v, sizeof v), "front-made");
    QT_TRUE(!header_n(&r, "x-correlator", 1, v, sizeof v));
    resp_dispose(&r);
}

QTEST(relays_get_and_delete_without_body_trailing_slash_ignored)
{
    fixture fx;
    resp g, d;
    char url[128];
    QT_EQ_INT(setup(&fx, 5000, false), QOD_OK);
    strcat(fx.base, "/"); /* ignored */
    snprintf(url, sizeof url, "%s/echo/x", fx.front_url);
    http_do("GET", url, NULL, NULL, &g);
    http_do("DELETE", url, NULL, NULL, &d);
    teardown(&fx);
    QT_EQ_INT(g.status, 201);
    QT_TRUE(body_has(&g, "method=GET\n"));
    QT_EQ_INT(d.status, 201);
    QT_TRUE(body_has(&d, "method=DELETE\n"));
    QT_TRUE(body_has(&d, "body=\n"));
    QT_TRUE(body_has(&d, "path=/echo/x\n"));
    resp_dispose(&g);
    resp_dispose(&d);
}

QTEST(forwarded_request_is_recognised)
{
    fixture fx;
    resp r;
    char url[128];
    QT_EQ_INT(setup(&fx, 5000, false), QOD_OK);
    snprintf(url, sizeof url, "%s/echo", fx.front_url);
    struct curl_slist *h = curl_slist_append(NULL, "X-Qod-Forwarded: node-b");
    http_do("GET", url, NULL, h, &r);
    curl_slist_free_all(h);
    teardown(&fx);
    QT_EQ_INT(r.status, 508);
    resp_dispose(&r);
}

QTEST(upstream_down_is_503_retry_after_1)
{
    fixture fx;
    resp r;
    char url[128];
    QT_EQ_INT(setup(&fx, 5000, true), QOD_OK);
    snprintf(url, sizeof url, "%s/echo", fx.front_url);
    http_do("GET", url, NULL, NULL, &r);
    uint64_t fwd = 9, failed = 0;
    qod_forward_stats(fx.fw, &fwd, &failed);
    teardown(&fx);
    QT_TRUE(is_unavailable(&r));
    QT_EQ_INT(fwd, 0);
    QT_EQ_INT(failed, 1);
    resp_dispose(&r);
}

QTEST(upstream_slower_than_timeout_is_503)
{
    fixture fx;
    resp r;
    char url[128];
    QT_EQ_INT(setup(&fx, 300, false), QOD_OK);
    snprintf(url, sizeof url, "%s/slow", fx.front_url);
    int64_t t0 = qod_time_mono_ms();
    http_do("GET", url, NULL, NULL, &r);
    int64_t took = qod_time_mono_ms() - t0;
    teardown(&fx);
    QT_TRUE(is_unavailable(&r));
    QT_TRUE(took < 1200);
    resp_dispose(&r);
}

QTEST(upstream_body_over_1mib_is_503)
{
    fixture fx;
    resp r;
    char url[128];
    QT_EQ_INT(setup(&fx, 5000, false), QOD_OK);
    snprintf(url, sizeof url, "%s/big", fx.front_url);
    http_do("GET", url, NULL, NULL, &r);
    teardown(&fx);
    QT_TRUE(is_unavailable(&r));
    resp_dispose(&r);
}

QTEST(refuses_bad_base_url_leaving_the_request_to_the_caller)
{
    static const char *const bad[] = {"ftp://127.0.0.1:1", "127.0.0.1:1", "http://", "http:///x",
                                      "http://a b",        "http://h/?q", ""};
    fixture fx;
    QT_EQ_INT(setup(&fx, 5000, false), QOD_OK);
    bool all = true;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        resp r;
        char url[128], v[64];
        snprintf(fx.base, sizeof fx.base, "%s", bad[i]);
        snprintf(url, sizeof url, "%s/echo", fx.front_url);
        http_do("GET", url, NULL, NULL, &r);
        all = all && r.status == 500 && header(&r, "X-Refused", v, sizeof v);
        resp_dispose(&r);
    }
    teardown(&fx);
    QT_TRUE(all);
}

QTEST(parallel_requests_are_all_answered)
{
    fixture fx;
    QT_EQ_INT(setup(&fx, 10000, false), QOD_OK);
    static resp rs[PARALLEL];
    CURL *es[PARALLEL];
    CURLM *m = curl_multi_init();
    for (int i = 0; i < PARALLEL; i++) {
        char url[128];
        snprintf(url, sizeof url, "%s/echo?i=%d", fx.front_url, i);
        es[i] = client("GET", url, NULL, NULL, &rs[i]);
        curl_multi_add_handle(m, es[i]);
    }
    int running = 1;
    while (running) {
        curl_multi_perform(m, &running);
        curl_multi_poll(m, NULL, 0, 100, NULL);
    }
    int ok = 0;
    for (int i = 0; i < PARALLEL; i++) {
        char want[32];
        snprintf(want, sizeof want, "\ni=%d\n", i);
        curl_easy_getinfo(es[i], CURLINFO_RESPONSE_CODE, &rs[i].status);
        ok += rs[i].status == 201 && body_has(&rs[i], want);
        curl_multi_remove_handle(m, es[i]);
        curl_easy_cleanup(es[i]);
        resp_dispose(&rs[i]);
    }
    curl_multi_cleanup(m);
    uint64_t fwd = 0, failed = 0;
    qod_forward_stats(fx.fw, &fwd, &failed);
    teardown(&fx);
    QT_EQ_INT(ok, PARALLEL);
    QT_EQ_INT(fwd, PARALLEL);
    QT_EQ_INT(failed, 0);
}

typedef struct {
    const char *url;
    resp r;
} bg_call;

static void *bg_get(void *arg)
{
    bg_call *c = arg;
    http_do("GET", c->url, NULL, NULL, &c->r);
    return NULL;
}

QTEST(destroy_answers_in_flight_with_503)
{
    fixture fx;
    char url[128];
    QT_EQ_INT(setup(&fx, 10000, false), QOD_OK);
    snprintf(url, sizeof url, "%s/slow", fx.front_url);
    bg_call c = {.url = url};
    pthread_t t;
    pthread_create(&t, NULL, bg_get, &c);
    qt_sleep_ms(300); /* the exchange is waiting for /slow */
    int64_t t0 = qod_time_mono_ms();
    qod_forward_destroy(fx.fw);
    fx.fw = NULL;
    pthread_join(t, NULL);
    int64_t took = qod_time_mono_ms() - t0;
    teardown(&fx);
    QT_TRUE(is_unavailable(&c.r));
    QT_TRUE(took < 1000);
    resp_dispose(&c.r);
}

QTEST(create_rejects_bad_timeout_and_destroy_null_is_noop)
{
    qod_forward *f = (qod_forward *)1;
    QT_EQ_INT(qod_forward_create(0, &f), QOD_ERR_RANGE);
    QT_TRUE(f == NULL);
    qod_forward_destroy(NULL);
}

QTEST_MAIN(QT_CASE(relays_method_body_and_headers_both_ways),
           QT_CASE(sends_no_invented_headers_and_the_fronts_correlator),
           QT_CASE(relays_get_and_delete_without_body_trailing_slash_ignored), QT_CASE(forwarded_request_is_recognised),
           QT_CASE(upstream_down_is_503_retry_after_1), QT_CASE(upstream_slower_than_timeout_is_503),
           QT_CASE(upstream_body_over_1mib_is_503), QT_CASE(refuses_bad_base_url_leaving_the_request_to_the_caller),
           QT_CASE(parallel_requests_are_all_answered), QT_CASE(destroy_answers_in_flight_with_503),
           QT_CASE(create_rejects_bad_timeout_and_destroy_null_is_noop))
