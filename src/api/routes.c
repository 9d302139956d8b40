#include "api/routes.h"

#include "api/health.h"
#include "api/konera_v0.h"
#include "api/konera_v1.h"
#include "api/oauth.h"
#include "api/provisioning.h"
#include "api/qos_profiles.h"

#include <stddef.h>

const qod_route qod_routes[] = {
    {"GET", "/healthz", qod_health_live, NULL, QOD_BODY_NONE, QOD_ROUTE_OPS},
    {"GET", "/readyz", qod_health_ready, NULL, QOD_BODY_NONE, QOD_ROUTE_OPS},
    {"GET", "/metrics", qod_health_metrics, NULL, QOD_BODY_NONE, QOD_ROUTE_OPS},
    {"POST", "/oauth2/token", qod_oauth_token, NULL, QOD_BODY_FORM, QOD_ROUTE_NO_STORE},
    {"POST", "/oauth2/bc-authorize", qod_oauth_bc_authorize, NULL, QOD_BODY_FORM, QOD_ROUTE_NO_STORE},
    {"GET", "/.well-known/jwks.json", qod_oauth_jwks, NULL, QOD_BODY_NONE, 0},
    {"GET", "/.well-known/openid-configuration", qod_oauth_discovery, NULL, QOD_BODY_NONE, 0},
    {"POST", "/camara/qod/v0/sessions", qod_v0_create, "qod", QOD_BODY_JSON, QOD_ROUTE_NO_STORE | QOD_ROUTE_CREATE},
    {"GET", "/camara/qod/v0/sessions/{sessionId}", qod_v0_get, "qod", QOD_BODY_NONE,
     QOD_ROUTE_NO_STORE | QOD_ROUTE_SESSION},
    {"DELETE", "/camara/qod/v0/sessions/{sessionId}", qod_v0_delete, "qod", QOD_BODY_NONE,
     QOD_ROUTE_NO_STORE | QOD_ROUTE_SESSION},
    {"GET", "/camara/qod/v0/qos-profiles", qod_v0_profiles, "qod", QOD_BODY_NONE, 0},
    {"GET", "/camara/qod/v0/openapi.yaml", qod_v0_openapi, NULL, QOD_BODY_NONE, 0},
    {"POST", "/sandbox/v0/sessions/{sessionId}/network-events", qod_sandbox_network_event, "qod", QOD_BODY_JSON,
     QOD_ROUTE_NO_STORE | QOD_ROUTE_SESSION},
    {"POST", "/nef/v1/notifications/{token}", qod_nef_notification, NULL, QOD_BODY_JSON, 0},
    {"POST", "/quality-on-demand/v1/sessions", qod_v1_create, "quality-on-demand:sessions:create", QOD_BODY_JSON,
     QOD_ROUTE_NO_STORE | QOD_ROUTE_CREATE},
    {"GET", "/quality-on-demand/v1/sessions/{sessionId}", qod_v1_get, "quality-on-demand:sessions:read", QOD_BODY_NONE,
     QOD_ROUTE_NO_STORE | QOD_ROUTE_SESSION},
    {"DELETE", "/quality-on-demand/v1/sessions/{sessionId}", qod_v1_delete, "quality-on-demand:sessions:delete",
     QOD_BODY_NONE, QOD_ROUTE_NO_STORE | QOD_ROUTE_SESSION},
    {"POST", "/quality-on-demand/v1/sessions/{sessionId}/extend", qod_v1_extend, "quality-on-demand:sessions:update",
     QOD_BODY_JSON, QOD_ROUTE_NO_STORE | QOD_ROUTE_SESSION},
    {"POST", "/quality-on-demand/v1/retrieve-sessions", qod_v1_retrieve,
     "quality-on-demand:sessions:retrieve-by-device", QOD_BODY_JSON, QOD_ROUTE_NO_STORE},
    {"GET", "/qos-profiles/v1/qos-profiles/{name}", qod_profiles_get, "qos-profiles:read", QOD_BODY_NONE, 0},
    {"POST", "/qos-profiles/v1/retrieve-qos-profiles", qod_profiles_retrieve, "qos-profiles:read", QOD_BODY_JSON, 0},
    {"POST", "/qos-provisioning/v0.3/qos-assignments", qod_prov_create, "qos-provisioning:qos-assignments:create",
     QOD_BODY_JSON, QOD_ROUTE_NO_STORE | QOD_ROUTE_CREATE},
    {"GET", "/qos-provisioning/v0.3/qos-assignments/{assignmentId}", qod_prov_get,
     "qos-provisioning:qos-assignments:read", QOD_BODY_NONE, QOD_ROUTE_NO_STORE | QOD_ROUTE_SESSION},
    {"DELETE", "/qos-provisioning/v0.3/qos-assignments/{assignmentId}", qod_prov_delete,
     "qos-provisioning:qos-assignments:delete", QOD_BODY_NONE, QOD_ROUTE_NO_STORE | QOD_ROUTE_SESSION},
    {"POST", "/qos-provisioning/v0.3/retrieve-qos-assignment", qod_prov_retrieve,
     "qos-provisioning:qos-assignments:read-by-device", QOD_BODY_JSON, QOD_ROUTE_NO_STORE},
    {NULL, NULL, NULL, NULL, 0, 0},
};
