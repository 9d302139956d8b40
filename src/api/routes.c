#include "api/routes.h"

#include "api/health.h"
#include "api/oauth.h"

#include <stddef.h>

const qod_route qod_routes[] = {
    {"GET", "/healthz", qod_health_live, NULL, QOD_BODY_NONE, 0},
    {"GET", "/readyz", qod_health_ready, NULL, QOD_BODY_NONE, 0},
    {"GET", "/metrics", qod_health_metrics, NULL, QOD_BODY_NONE, 0},
    {"POST", "/oauth2/token", qod_oauth_token, NULL, QOD_BODY_FORM, QOD_ROUTE_NO_STORE},
    {"GET", "/.well-known/jwks.json", qod_oauth_jwks, NULL, QOD_BODY_NONE, 0},
    {"GET", "/.well-known/openid-configuration", qod_oauth_discovery, NULL, QOD_BODY_NONE, 0},
    {NULL, NULL, NULL, NULL, 0, 0},
};
