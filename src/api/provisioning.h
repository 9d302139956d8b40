/* CAMARA QoS Provisioning 0.3.0 (/qos-provisioning/v0.3): a QoS profile assigned to a device with no end date.
 * Assignments run on the session engine (surface "provisioning": no duration, no expiry) and share its
 * one-active-item-per-device rule, so an assignment and a session never contradict each other in the network:
 * a device holds either one session or one assignment. */
#ifndef QOD_API_PROVISIONING_H
#define QOD_API_PROVISIONING_H

#include "api/api.h"
#include "notify/delivery.h"

/* POST /qos-provisioning/v0.3/qos-assignments */
void qod_prov_create(qod_call *c, qod_req *r);
/* GET /qos-provisioning/v0.3/qos-assignments/{assignmentId} */
void qod_prov_get(qod_call *c, qod_req *r);
/* DELETE /qos-provisioning/v0.3/qos-assignments/{assignmentId} */
void qod_prov_delete(qod_call *c, qod_req *r);
/* POST /qos-provisioning/v0.3/retrieve-qos-assignment */
void qod_prov_retrieve(qod_call *c, qod_req *r);
/* Renders an assignment notification (CloudEvent org.camaraproject.qos-provisioning.v0.status-changed). */
int qod_prov_render_event(const qod_event_view *ev, qod_buf *body, const char **content_type, const char **token);

#endif
