/* The Konera v0 API (/camara/qod/v0), exactly as the user guide shows it, plus the sandbox's network-event
 * endpoint. Engine statuses map to v0 words: REQUESTED, AVAILABLE, and for ended sessions EXPIRED,
 * UNAVAILABLE (refused or terminated by the network) or DELETED. */
#ifndef QOD_API_KONERA_V0_H
#define QOD_API_KONERA_V0_H

#include "api/api.h"
#include "core/engine.h"
#include "notify/delivery.h"

/* POST /camara/qod/v0/sessions */
void qod_v0_create(qod_call *c, qod_req *r);
/* GET /camara/qod/v0/sessions/{sessionId} */
void qod_v0_get(qod_call *c, qod_req *r);
/* DELETE /camara/qod/v0/sessions/{sessionId} */
void qod_v0_delete(qod_call *c, qod_req *r);
/* GET /camara/qod/v0/qos-profiles */
void qod_v0_profiles(qod_call *c, qod_req *r);
/* GET /camara/qod/v0/openapi.yaml */
void qod_v0_openapi(qod_call *c, qod_req *r);
/* POST /sandbox/v0/sessions/{sessionId}/network-events */
void qod_sandbox_network_event(qod_call *c, qod_req *r);
/* POST /nef/v1/notifications/{token}: notifications from the 3GPP NEF (network backend nef). */
void qod_nef_notification(qod_call *c, qod_req *r);
/* The v0 word for an engine status. */
const char *qod_v0_status(qod_session_status st);
/* Renders the body of a v0 callback: {"sessionId","event":"QOS_STATUS_CHANGED","qosStatus"}. */
int qod_v0_render_event(const qod_event_view *ev, qod_buf *body, const char **content_type, const char **token);
/* Appends the v0 JSON of a session. */
void qod_v0_render(const qod_session *s, qod_buf *out);

#endif
