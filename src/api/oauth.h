/* OAuth2: the client-credentials token endpoint (RFC 6749 §4.4), the JWKS (RFC 7517) and OpenID discovery
 * documents, and bearer-token authentication of API calls. */
#ifndef QOD_API_OAUTH_H
#define QOD_API_OAUTH_H

#include "api/api.h"

/* POST /oauth2/token */
void qod_oauth_token(qod_call *c, qod_req *r);
/* POST /oauth2/bc-authorize (OpenID CIBA) */
void qod_oauth_bc_authorize(qod_call *c, qod_req *r);
/* GET /.well-known/jwks.json */
void qod_oauth_jwks(qod_call *c, qod_req *r);
/* GET /.well-known/openid-configuration */
void qod_oauth_discovery(qod_call *c, qod_req *r);
/* Authenticates the bearer token of r and checks `scope`; fills c->app and c->claims. On failure responds
 * (401 UNAUTHENTICATED or 403 PERMISSION_DENIED) and returns false. */
bool qod_oauth_check(qod_call *c, qod_req *r, const char *scope);

#endif
