#include "api/metrics.h"

#include "util/err.h"

#include <stdatomic.h>
#include <stdlib.h>

static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};
#define N_BUCKETS ((int)(sizeof bucket_le / sizeof bucket_le[0]))
#define N_STATUS 500 /* 100..599 */

typedef struct {
    atomic_ullong count[N_STATUS];
    atomic_ullong bucket[N_BUCKETS + 1];
    atomic_ullong sum_ns;
} route_stats;

typedef struct {
    void (*fn)(void *, qod_buf *);
    void *arg;
} writer;

struct qod_metrics {
    const char *const *names;
    int n;
    route_stats *routes; /* n + 1: the last one is "unmatched" */
    writer writers[16];
    int nwriters;
};

qod_metrics *qod_metrics_create(const char *const *route_names, int n)
{
    if (n < 0 || n > QOD_METRICS_MAX_ROUTES)
        return NULL;
    qod_metrics *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->routes = calloc((size_t)n + 1, sizeof *m->routes);
    if (!m->routes) {
        free(m);
        return NULL;
    }
    m->names = route_names;
    m->n = n;
    return m;
}

void qod_metrics_destroy(qod_metrics *m)
{
    if (!m)
        return;
    free(m->routes);
    free(m);
}

void qod_metrics_observe(qod_metrics *m, int route, unsigned status, uint64_t dur_ns)
{
    route_stats *rs = &m->routes[route >= 0 && route < m->n ? route : m->n];
    if (status < 100 || status > 599)
        status = 500;
    atomic_fetch_add_explicit(&rs->count[status - 100], 1, memory_order_relaxed);
    double s = (double)dur_ns / 1e9;
    int b = 0;
    while (b < N_BUCKETS && s > bucket_le[b])
        b++;
    atomic_fetch_add_explicit(&rs->bucket[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&rs->sum_ns, dur_ns, memory_order_relaxed);
}

int qod_metrics_add_writer(qod_metrics *m, void (*fn)(void *arg, qod_buf *out), void *arg)
{
    if (m->nwriters >= 16)
        return QOD_ERR_LIMIT;
    m->writers[m->nwriters++] = (writer){fn, arg};
    return QOD_OK;
}

static void render_route(const route_stats *rs, const char *name, qod_buf *out, qod_buf *hist)
{
    unsigned long long total = 0;
    for (int s = 0; s < N_STATUS; s++) {
        unsigned long long c = atomic_load_explicit(&rs->count[s], memory_order_relaxed);
        if (!c)
            continue;
        total += c;
        qod_buf_printf(out, "qod_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n", name, s + 100, c);
    }
    if (!total)
        return;
    unsigned long long cum = 0;
    for (int b = 0; b <= N_BUCKETS; b++) {
        cum += atomic_load_explicit(&rs->bucket[b], memory_order_relaxed);
        if (b < N_BUCKETS)
            qod_buf_printf(hist, "qod_http_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", name,
                           bucket_le[b], cum);
        else
            qod_buf_printf(hist, "qod_http_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", name,
                           cum);
    }
    qod_buf_printf(hist, "qod_http_request_duration_seconds_sum{route=\"%s\"} %.6f\n", name,
                   (double)atomic_load_explicit(&rs->sum_ns, memory_order_relaxed) / 1e9);
    qod_buf_printf(hist, "qod_http_request_duration_seconds_count{route=\"%s\"} %llu\n", name, cum);
}

int qod_metrics_render(qod_metrics *m, qod_buf *out)
{
    qod_buf hist;
    qod_buf_init(&hist, 0);
    qod_buf_puts(out, "# HELP qod_http_requests_total HTTP requests by route and status.\n"
                      "# TYPE qod_http_requests_total counter\n");
    for (int i = 0; i <= m->n; i++)
        render_route(&m->routes[i], i < m->n ? m->names[i] : "unmatched", out, &hist);
    qod_buf_puts(out, "# HELP qod_http_request_duration_seconds HTTP request latency by route.\n"
                      "# TYPE qod_http_request_duration_seconds histogram\n");
    int rc = qod_buf_append(out, hist.data ? hist.data : "", hist.len);
    qod_buf_dispose(&hist);
    for (int i = 0; i < m->nwriters; i++)
        m->writers[i].fn(m->writers[i].arg, out);
    return rc;
}
