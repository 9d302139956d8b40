#include "api/oauth.h"

#include "api/errors.h"
#include "api/form.h"
#include "api/ratelimit.h"
#include "auth/scope.h"
#include "util/b64.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/time.h"

#include <math.h>
#include <stdio.h>
#include <time.h>
#include <string.h>
#include <strings.h>

#define GRANT_CLIENT_CREDENTIALS "client_credentials"

/* Client credentials from "Authorization: Basic" (RFC 6749 §2.3.1: both parts form-urlencoded) or from the
 * form. Returns 1 when found, 0 when absent, -1 when malformed or given twice. */
static int client_credentials(qod_req *r, const qod_form *f, char *id, size_t idcap, char *secret, size_t scap)
{
    const char *auth = qod_req_header(r, "Authorization");
    const char *fid = qod_form_get(f, "client_id"), *fsecret = qod_form_get(f, "client_secret");
    if (auth && strncasecmp(auth, "Basic ", 6) == 0) {
        if (fsecret)
            return -1; /* RFC 6749 §2.3: one authentication method per request */
        const char *b = auth + 6;
        while (*b == ' ')
            b++;
        unsigned char raw[512];
        long n = qod_b64_decode(b, strlen(b), raw, sizeof raw - 1, 0);
        if (n <= 0)
            return -1;
        raw[n] = '\0';
        char *colon = memchr(raw, ':', (size_t)n);
        if (!colon)
            return -1;
        if (qod_form_decode((char *)raw, (size_t)(colon - (char *)raw), id, idcap) < 0 ||
            qod_form_decode(colon + 1, (size_t)(n - (colon + 1 - (char *)raw)), secret, scap) < 0)
            return -1;
        return 1;
    }
    if (auth)
        return -1;
    if (!fid || !fsecret)
        return 0;
    if (strlen(fid) >= idcap || strlen(fsecret) >= scap)
        return -1;
    snprintf(id, idcap, "%s", fid);
    snprintf(secret, scap, "%s", fsecret);
    return 1;
}

/* Issues a token for the app with the given scope and answers 200. */
static void issue(qod_call *c, qod_req *r, const qod_app *app, const char *scope, const char *device)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    qod_jwt_claims cl;
    memset(&cl, 0, sizeof cl);
    int64_t now = qod_time_wall_ms() / 1000;
    snprintf(cl.iss, sizeof cl.iss, "%s", d->public_url);
    snprintf(cl.client_id, sizeof cl.client_id, "%s", app->client_id);
    snprintf(cl.sub, sizeof cl.sub, "%s", app->client_id);
    snprintf(cl.scope, sizeof cl.scope, "%s", scope);
    if (device)
        snprintf(cl.device, sizeof cl.device, "%s", device);
    qod_uuid_v4(cl.jti);
    cl.iat = now;
    cl.exp = now + d->token_ttl_s;
    qod_buf tok, body;
    qod_buf_init(&tok, 8192);
    qod_buf_init(&body, 16384);
    int rc = qod_jwt_sign(d->key, &cl, &tok);
    if (rc == QOD_OK) {
        qod_buf_puts(&body, "{\"access_token\":");
        qod_buf_json_str(&body, tok.data);
        qod_buf_printf(&body, ",\"token_type\":\"Bearer\",\"expires_in\":%lld,\"scope\":", (long long)d->token_ttl_s);
        qod_buf_json_str(&body, scope);
        qod_buf_puts(&body, "}");
        qod_req_add_header(r, "Pragma", "no-cache");
        qod_api_json(r, 200, body.data, body.len);
        QOD_DEBUG("oauth", "token_issued", "client_id=%s jti=%s", app->client_id, cl.jti);
    } else {
        QOD_ERROR("oauth", "sign_failed", "err=\"%s\"", qod_strerror(rc));
        qod_oauth_error(r, 500, "server_error", NULL);
    }
    qod_buf_dispose(&tok);
    qod_buf_dispose(&body);
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void retry_after(qod_req *r, double s)
{
    char v[32];
    snprintf(v, sizeof v, "%.0f", ceil(s) < 1 ? 1 : ceil(s));
    qod_req_add_header(r, "Retry-After", v);
}

/* The token endpoint's own limits: per source address, then per client_id (before the secret is checked,
 * so guessing secrets is slow too). */
static bool token_limited(qod_call *c, qod_req *r, const char *client_id)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    qod_rl_result res;
    const char *key = client_id ? client_id : qod_req_peer(r);
    qod_ratelimit *rl = client_id ? qod_api_rl_token_client(c->api) : qod_api_rl_token_ip(c->api);
    double rate = client_id ? d->token_rate_client : d->token_rate_ip;
    qod_ratelimit_take(rl, key, rate, 2 * rate, mono_ns(), &res);
    if (res.allowed)
        return false;
    retry_after(r, res.retry_after_s);
    qod_oauth_error(r, 429, "slow_down", "too many token requests; retry after the Retry-After delay");
    return true;
}

void qod_oauth_token(qod_call *c, qod_req *r)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    qod_form f = {0};
    const char *why = NULL;
    size_t len = 0;
    const char *body = qod_req_body(r, &len);
    char id[128], secret[256];
    qod_app app;
    if (token_limited(c, r, NULL))
        goto out;
    if (!qod_req_content_type_is(r, "application/x-www-form-urlencoded")) {
        qod_oauth_error(r, 400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded");
        goto out;
    }
    if (qod_form_parse(body, len, &f, &why) != QOD_OK) {
        qod_oauth_error(r, 400, "invalid_request", why);
        goto out;
    }
    const char *grant = qod_form_get(&f, "grant_type");
    if (!grant) {
        qod_oauth_error(r, 400, "invalid_request", "grant_type is required");
        goto out;
    }
    int cred = client_credentials(r, &f, id, sizeof id, secret, sizeof secret);
    if (cred < 0) {
        qod_oauth_error(r, 400, "invalid_request", "malformed or repeated client authentication");
        goto out;
    }
    if (cred > 0 && token_limited(c, r, id))
        goto out;
    if (cred == 0 || qod_apps_authenticate(d->apps, id, secret, &app) != QOD_OK) {
        qod_oauth_error(r, 401, "invalid_client", "client authentication failed");
        goto out;
    }
    if (strcmp(grant, GRANT_CLIENT_CREDENTIALS) != 0) {
        qod_oauth_error(r, 400, "unsupported_grant_type", "supported: client_credentials");
        goto out;
    }
    const char *scope = qod_form_get(&f, "scope");
    if (scope && (!qod_scope_valid(scope, sizeof app.scopes) || !qod_scope_subset(scope, app.scopes))) {
        qod_oauth_error(r, 400, "invalid_scope", "the requested scope is not granted to this client");
        goto out;
    }
    issue(c, r, &app, scope ? scope : app.scopes, NULL);
out:
    qod_form_dispose(&f);
}

void qod_oauth_jwks(qod_call *c, qod_req *r)
{
    qod_buf b;
    qod_buf_init(&b, 8192);
    qod_jwt_key_jwks(qod_api_deps_of(c->api)->key, &b);
    qod_req_add_header(r, "Cache-Control", "public, max-age=300");
    qod_req_respond(r, 200, "application/jwk-set+json", b.data ? b.data : "", b.len);
    qod_buf_dispose(&b);
}

void qod_oauth_discovery(qod_call *c, qod_req *r)
{
    const char *u = qod_api_deps_of(c->api)->public_url;
    qod_buf b;
    qod_buf_init(&b, 16384);
    qod_buf_puts(&b, "{\"issuer\":");
    qod_buf_json_str(&b, u);
    qod_buf_printf(&b,
                   ",\"token_endpoint\":\"%s/oauth2/token\",\"jwks_uri\":\"%s/.well-known/jwks.json\","
                   "\"grant_types_supported\":[\"client_credentials\"],"
                   "\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\",\"client_secret_post\"],"
                   "\"id_token_signing_alg_values_supported\":[\"ES256\"],"
                   "\"scopes_supported\":[",
                   u, u);
    const char *p = qod_scopes_all;
    for (bool first = true; *p; first = false) {
        const char *e = strchr(p, ' ');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        qod_buf_printf(&b, "%s\"%.*s\"", first ? "" : ",", (int)l, p);
        p += l + (e ? 1 : 0);
    }
    qod_buf_puts(&b, "]}");
    qod_api_json(r, 200, b.data, b.len);
    qod_buf_dispose(&b);
}

/* The app's token bucket. Every authenticated response carries the RateLimit fields (IETF httpapi draft):
 * RateLimit-Policy: "app";q=RATE;w=1 and RateLimit: "app";r=REMAINING;t=SECONDS. */
static bool rate_ok(qod_call *c, qod_req *r)
{
    if (c->app.rate_limit <= 0)
        return true;
    qod_rl_result res;
    qod_ratelimit_take(qod_api_rl_apps(c->api), c->app.client_id, c->app.rate_limit, c->app.burst, mono_ns(), &res);
    char v[96];
    snprintf(v, sizeof v, "\"app\";q=%.0f;w=1", c->app.rate_limit);
    qod_req_add_header(r, "RateLimit-Policy", v);
    snprintf(v, sizeof v, "\"app\";r=%lld;t=%.0f", (long long)res.remaining, ceil(res.reset_s));
    qod_req_add_header(r, "RateLimit", v);
    if (res.allowed)
        return true;
    retry_after(r, res.retry_after_s);
    qod_api_error(r, 429, "TOO_MANY_REQUESTS", "Rate limit reached: retry after the Retry-After delay.");
    return false;
}

static void unauthenticated(qod_req *r, const char *why)
{
    qod_req_add_header(r, "WWW-Authenticate", "Bearer realm=\"qod\", error=\"invalid_token\"");
    qod_api_error(r, 401, "UNAUTHENTICATED", why);
}

bool qod_oauth_check(qod_call *c, qod_req *r, const char *scope)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    const char *auth = qod_req_header(r, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0) {
        unauthenticated(r, "Request not authenticated due to missing, invalid, or expired credentials.");
        return false;
    }
    const char *tok = auth + 7;
    while (*tok == ' ')
        tok++;
    size_t len = strlen(tok);
    int64_t now = qod_time_wall_ms() / 1000;
    if (!qod_tokcache_get(d->tokens, tok, len, now, &c->claims)) {
        int rc = qod_jwt_verify(d->key, tok, len, d->public_url, now, &c->claims);
        if (rc != QOD_OK) {
            unauthenticated(r, rc == QOD_ERR_RANGE ? "The access token expired." : "The access token is invalid.");
            return false;
        }
        qod_tokcache_put(d->tokens, tok, len, &c->claims);
    }
    /* The app must still exist: deleting an app revokes its tokens at once. */
    if (qod_apps_get(d->apps, c->claims.client_id, &c->app) != QOD_OK) {
        unauthenticated(r, "The client of this token no longer exists.");
        return false;
    }
    if (!rate_ok(c, r))
        return false;
    if (!qod_scope_has(c->claims.scope, scope)) {
        qod_api_errorf(r, 403, "PERMISSION_DENIED", "The access token lacks the scope '%s'.", scope);
        return false;
    }
    c->authenticated = true;
    return true;
}
