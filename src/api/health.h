/* Operational endpoints: liveness, readiness (the store answers) and Prometheus metrics. */
#ifndef QOD_API_HEALTH_H
#define QOD_API_HEALTH_H

#include "api/api.h"

/* GET /healthz */
void qod_health_live(qod_call *c, qod_req *r);
/* How long /readyz waits for the store's answer before it answers 503 (a database that does not answer at all
 * must not hold the HTTP thread). */
#define QOD_HEALTH_STORE_WAIT_MS 2000

/* GET /readyz */
void qod_health_ready(qod_call *c, qod_req *r);
/* GET /metrics */
void qod_health_metrics(qod_call *c, qod_req *r);

#endif
