#include "api/oauth.h"

#include "api/errors.h"
#include "api/form.h"
#include "api/ratelimit.h"
#include "auth/ciba.h"
#include "auth/scope.h"
#include "core/cluster.h"
#include "core/device.h"
#include "core/registry.h"
#include "util/b64.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/time.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define GRANT_CLIENT_CREDENTIALS "client_credentials"
#define GRANT_CIBA "urn:openid:params:grant-type:ciba"

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
static void issue(qod_call *c, qod_req *r, const qod_app *app, const char *scope, const char *device,
                  const char *subject)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    qod_jwt_claims cl;
    memset(&cl, 0, sizeof cl);
    int64_t now = qod_time_wall_ms() / 1000;
    snprintf(cl.iss, sizeof cl.iss, "%s", d->public_url);
    snprintf(cl.client_id, sizeof cl.client_id, "%s", app->client_id);
    snprintf(cl.sub, sizeof cl.sub, "%s", subject ? subject : app->client_id);
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
    qod_ratelimit_take(rl, key, rate, 2 * rate, qod_time_mono_ns(), &res);
    if (res.allowed)
        return false;
    retry_after(r, res.retry_after_s);
    qod_oauth_error(r, 429, "slow_down", "too many token requests; retry after the Retry-After delay");
    return true;
}

/* Parses the form and authenticates the client (RFC 6749 §2.3.1). Responds and returns false on failure. */
static bool form_client(qod_call *c, qod_req *r, qod_form *f, qod_app *app, bool need_grant)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    const char *why = NULL;
    size_t len = 0;
    const char *body = qod_req_body(r, &len);
    char id[128], secret[256];
    if (token_limited(c, r, NULL))
        return false;
    if (!qod_req_content_type_is(r, "application/x-www-form-urlencoded")) {
        qod_oauth_error(r, 400, "invalid_request", "Content-Type must be application/x-www-form-urlencoded");
        return false;
    }
    if (qod_form_parse(body, len, f, &why) != QOD_OK) {
        qod_oauth_error(r, 400, "invalid_request", why);
        return false;
    }
    if (need_grant && !qod_form_get(f, "grant_type")) {
        qod_oauth_error(r, 400, "invalid_request", "grant_type is required");
        return false;
    }
    int cred = client_credentials(r, f, id, sizeof id, secret, sizeof secret);
    if (cred < 0) {
        qod_oauth_error(r, 400, "invalid_request", "malformed or repeated client authentication");
        return false;
    }
    if (cred > 0 && token_limited(c, r, id))
        return false;
    int arc = cred == 0 ? QOD_ERR_DENIED : qod_apps_authenticate(d->apps, id, secret, app);
    if (arc != QOD_OK) {
        /* Why, for the operator (the client learns nothing more): no such app, a wrong secret, or a store error. */
        QOD_DEBUG("oauth", "client_auth_failed", "client_id=%.64s reason=%s", cred ? id : "-",
                  cred == 0                 ? "no_credentials"
                  : arc == QOD_ERR_NOTFOUND ? "unknown_client"
                  : arc == QOD_ERR_DENIED   ? "wrong_secret"
                                            : qod_strerror(arc));
        qod_oauth_error(r, 401, "invalid_client", "client authentication failed");
        return false;
    }
    return true;
}

/* The scope of a request: "openid" (CIBA's marker) dropped; the rest must be granted to the app. */
static bool requested_scope(qod_req *r, const qod_app *app, const char *scope, char *out, size_t cap)
{
    out[0] = '\0';
    if (!scope) {
        snprintf(out, cap, "%s", app->scopes);
        return true;
    }
    size_t o = 0;
    for (const char *p = scope; *p;) {
        const char *e = strchr(p, ' ');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n && !(n == 6 && strncmp(p, "openid", 6) == 0) && o + n + 2 < cap) {
            o += (size_t)snprintf(out + o, cap - o, "%s%.*s", o ? " " : "", (int)n, p);
        }
        p += n + (e ? 1 : 0);
    }
    if (!out[0] || !qod_scope_valid(out, cap) || !qod_scope_subset(out, app->scopes)) {
        qod_oauth_error(r, 400, "invalid_scope", "the requested scope is not granted to this client");
        return false;
    }
    return true;
}

static void ciba_grant(qod_call *c, qod_req *r, const qod_form *f, const qod_app *app)
{
    const char *id = qod_form_get(f, "auth_req_id");
    qod_ciba_grant g;
    if (!id) {
        qod_oauth_error(r, 400, "invalid_request", "auth_req_id is required");
        return;
    }
    switch (qod_ciba_poll_token(qod_api_deps_of(c->api)->ciba, id, app->client_id, qod_time_mono_ms(), &g)) {
    case QOD_CIBA_GRANTED:
        issue(c, r, app, g.scope, g.device, g.subject);
        return;
    case QOD_CIBA_PENDING:
        qod_oauth_error(r, 400, "authorization_pending", "the end-user has not approved the request yet");
        return;
    case QOD_CIBA_SLOW_DOWN:
        qod_oauth_error(r, 400, "slow_down", "poll no faster than the interval (now 5 seconds longer)");
        return;
    case QOD_CIBA_EXPIRED:
        qod_oauth_error(r, 400, "expired_token", "the authentication request expired");
        return;
    default:
        qod_oauth_error(r, 400, "invalid_grant", "unknown, used or foreign auth_req_id");
        return;
    }
}

void qod_oauth_token(qod_call *c, qod_req *r)
{
    qod_form f = {0};
    qod_app app;
    char scope[512];
    if (form_client(c, r, &f, &app, true)) {
        const char *grant = qod_form_get(&f, "grant_type");
        if (strcmp(grant, GRANT_CIBA) == 0)
            ciba_grant(c, r, &f, &app);
        else if (strcmp(grant, GRANT_CLIENT_CREDENTIALS) != 0)
            qod_oauth_error(r, 400, "unsupported_grant_type", "supported: client_credentials, " GRANT_CIBA);
        else if (requested_scope(r, &app, qod_form_get(&f, "scope"), scope, sizeof scope))
            issue(c, r, &app, scope, NULL, NULL);
    }
    qod_form_dispose(&f);
}

/* login_hint "tel:+E164", "ipv4:A.B.C.D" or "ipv6:ADDR" → subject and device JSON. */
static bool parse_hint(const char *hint, qod_ciba_grant *g, qod_device *dev)
{
    char norm[46];
    memset(dev, 0, sizeof *dev);
    dev->ipv4_port = -1;
    if (strncmp(hint, "tel:", 4) == 0 && qod_phone_valid(hint + 4)) {
        snprintf(dev->phone, sizeof dev->phone, "%s", hint + 4);
        dev->present = QOD_DEV_PHONE;
        snprintf(g->subject, sizeof g->subject, "tel:%s", hint + 4);
        snprintf(g->device, sizeof g->device, "{\"phoneNumber\":\"%s\"}", hint + 4);
    } else if (strncmp(hint, "ipv4:", 5) == 0 && qod_ipv4_norm(hint + 5, dev->ipv4_public)) {
        /* Without NAT the public and private addresses are the same (CAMARA DeviceIpv4Addr). */
        memcpy(dev->ipv4_private, dev->ipv4_public, sizeof dev->ipv4_private);
        memcpy(norm, dev->ipv4_public, sizeof dev->ipv4_public);
        dev->present = QOD_DEV_IPV4;
        snprintf(g->subject, sizeof g->subject, "ipv4:%s", norm);
        snprintf(g->device, sizeof g->device, "{\"ipv4Address\":{\"publicAddress\":\"%s\",\"privateAddress\":\"%s\"}}",
                 norm, norm);
    } else if (strncmp(hint, "ipv6:", 5) == 0 && qod_ipv6_norm(hint + 5, norm)) {
        snprintf(dev->ipv6, sizeof dev->ipv6, "%s", norm);
        dev->present = QOD_DEV_IPV6;
        snprintf(g->subject, sizeof g->subject, "ipv6:%s", norm);
        snprintf(g->device, sizeof g->device, "{\"ipv6Address\":\"%s\"}", norm);
    } else {
        return false;
    }
    return true;
}

void qod_oauth_bc_authorize(qod_call *c, qod_req *r)
{
    const qod_api_deps *d = qod_api_deps_of(c->api);
    qod_form f = {0};
    qod_app app;
    qod_ciba_grant g;
    qod_device dev;
    qod_subscriber sub;
    char id[48];
    memset(&g, 0, sizeof g);
    if (!form_client(c, r, &f, &app, false))
        goto out;
    const char *hint = qod_form_get(&f, "login_hint");
    if (!hint || !parse_hint(hint, &g, &dev)) {
        qod_oauth_error(r, 400, "invalid_request", "login_hint must be tel:+E164, ipv4:ADDRESS or ipv6:ADDRESS");
        goto out;
    }
    const char *scope = qod_form_get(&f, "scope");
    if (!scope || !qod_scope_has(scope, "openid")) {
        qod_oauth_error(r, 400, "invalid_scope", "an authentication request's scope must include openid");
        goto out;
    }
    if (!requested_scope(r, &app, scope, g.scope, sizeof g.scope))
        goto out;
    bool live = app.env == QOD_APP_LIVE;
    if (live && qod_registry_find(d->registry, &dev, qod_device_choose(&dev), &sub) != QOD_OK) {
        qod_oauth_error(r, 400, "unknown_user_id", "the login_hint does not identify a known subscriber");
        goto out;
    }
    snprintf(g.client_id, sizeof g.client_id, "%s", app.client_id);
    if (qod_ciba_start(d->ciba, &g, !live || d->ciba_auto_approve, qod_time_mono_ms(), id, sizeof id) != QOD_OK) {
        qod_oauth_error(r, 503, "temporarily_unavailable", "too many pending authentication requests");
        goto out;
    }
    char body[256];
    int n = snprintf(body, sizeof body, "{\"auth_req_id\":\"%s\",\"expires_in\":%d,\"interval\":%d}", id,
                     QOD_CIBA_TTL_S, QOD_CIBA_INTERVAL_S);
    qod_api_json(r, 200, body, (size_t)n);
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
                   "\"grant_types_supported\":[\"client_credentials\",\"" GRANT_CIBA "\"],"
                   "\"backchannel_authentication_endpoint\":\"%s/oauth2/bc-authorize\","
                   "\"backchannel_token_delivery_modes_supported\":[\"poll\"],"
                   "\"token_endpoint_auth_methods_supported\":[\"client_secret_basic\",\"client_secret_post\"],"
                   "\"id_token_signing_alg_values_supported\":[\"ES256\"],"
                   "\"scopes_supported\":[",
                   u, u, u);
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
 * RateLimit-Policy: "app";q=BURST;w=BURST/RATE and RateLimit: "app";r=REMAINING;t=SECONDS. */
static bool rate_ok(qod_call *c, qod_req *r)
{
    if (c->app.rate_limit <= 0)
        return true;
    qod_rl_result res;
    /* Several nodes: each takes its share of the app's rate and burst, so that the cluster as a whole stays within
     * them (approximate: an app that uses fewer nodes than there are gets less; docs/operations.md). */
    const qod_cluster *cl = qod_api_deps_of(c->api)->cluster;
    double share = cl ? 1.0 / qod_cluster_nodes(cl) : 1.0, rate = c->app.rate_limit * share;
    double burst = c->app.burst * share >= 1 ? c->app.burst * share : 1;
    qod_ratelimit_take(qod_api_rl_apps(c->api), c->app.client_id, rate, burst, qod_time_mono_ns(), &res);
    /* The bucket holds `burst` requests and refills in burst/rate seconds: that is the quota and its window. */
    char v[96];
    snprintf(v, sizeof v, "\"app\";q=%.0f;w=%.0f", floor(burst), ceil(burst / rate));
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
            unauthenticated(r, rc == QOD_ERR_RANGE   ? "The access token expired."
                               : rc == QOD_ERR_STATE ? "The access token is not valid yet: it was issued in the future."
                                                     : "The access token is invalid.");
            return false;
        }
        qod_tokcache_put(d->tokens, tok, len, &c->claims);
    }
    /* The app must still exist: deleting an app revokes its tokens at once. */
    int arc = qod_apps_get(d->apps, c->claims.client_id, &c->app);
    if (arc == QOD_ERR_NOTFOUND) {
        unauthenticated(r, "The client of this token no longer exists.");
        return false;
    }
    if (arc != QOD_OK) {
        /* Another node's new app, and the store could not be asked: not the client's fault. */
        qod_req_add_header(r, "Retry-After", "1");
        qod_api_error(r, 503, "UNAVAILABLE", "Service unavailable. Retry later.");
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
