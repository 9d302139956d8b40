#include "api/health.h"

#include "api/errors.h"
#include "util/buf.h"
#include "util/err.h"

void qod_health_live(qod_call *c, qod_req *r)
{
    (void)c;
    static const char ok[] = "{\"status\":\"ok\"}";
    qod_api_json(r, 200, ok, sizeof ok - 1);
}

void qod_health_ready(qod_call *c, qod_req *r)
{
    if (qod_store_ping(qod_api_deps_of(c->api)->store, QOD_HEALTH_STORE_WAIT_MS) != QOD_OK) {
        qod_req_add_header(r, "Retry-After", "1");
        qod_api_error(r, 503, "UNAVAILABLE", "The store does not answer.");
        return;
    }
    static const char ok[] = "{\"status\":\"ready\"}";
    qod_api_json(r, 200, ok, sizeof ok - 1);
}

void qod_health_metrics(qod_call *c, qod_req *r)
{
    qod_buf b;
    qod_buf_init(&b, 64u << 20);
    qod_metrics_render(qod_api_metrics(c->api), &b);
    qod_req_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", b.data ? b.data : "", b.len);
    qod_buf_dispose(&b);
}
