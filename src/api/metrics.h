/* Prometheus metrics. HTTP requests are counted by route and status with a latency histogram, lock-free
 * (relaxed atomics). Other modules add their own series through writer callbacks. */
#ifndef QOD_API_METRICS_H
#define QOD_API_METRICS_H

#include "util/buf.h"

#include <stdint.h>

#define QOD_METRICS_MAX_ROUTES 64

typedef struct qod_metrics qod_metrics;

/* Creates the registry; route_names[i] labels route index i (n <= QOD_METRICS_MAX_ROUTES). Names are borrowed. */
qod_metrics *qod_metrics_create(const char *const *route_names, int n);
/* Frees; NULL is a no-op. */
void qod_metrics_destroy(qod_metrics *m);
/* Records one request of route index `route` (-1 for unmatched). */
void qod_metrics_observe(qod_metrics *m, int route, unsigned status, uint64_t dur_ns);
/* Adds a writer that appends its own exposition text. At most 16. */
int qod_metrics_add_writer(qod_metrics *m, void (*fn)(void *arg, qod_buf *out), void *arg);
/* Appends the whole exposition (text format 0.0.4). */
int qod_metrics_render(qod_metrics *m, qod_buf *out);

#endif
