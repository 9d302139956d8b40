/* The 3GPP NEF AsSessionWithQoS backend (--network nef): each live QoD session becomes a TS 29.122
 * AsSessionWithQoSSubscription at the NEF, and the NEF's user plane notifications become session status.
 *
 * Threads. The engine calls check/provision/activated/release with its lock held, from any thread: they only
 * build what the request needs and post a job to the engine loop. Everything else (the subscriptions, libcurl's
 * multi handle, retry timers, the OAuth2 token) lives on the loop thread, which reports outcomes with
 * sink.report_unlocked. notify() runs on an HTTP thread: it reads the token map under `mu`, the only state
 * shared with the loop thread, and never holds `mu` while calling the engine.
 *
 * Subscriptions. provision POSTs {nef}/3gpp-as-session-with-qos/v1/{scsAsId}/subscriptions and keeps the
 * Location; release DELETEs it (404 counts as gone; transient failures are retried a few times). The
 * notification destination is {public_url}/nef/v1/notifications/{token}, with a fresh 32-byte random token per
 * subscription: the token is the only credential of a notification, so an unknown one is answered 404.
 * Timeouts, 5xx, 429 and connection errors of a POST are retried with backoff (0.5, 1, 2, 4 s, at most 30 s in
 * all); then the session is refused (or, if it was already available, terminated) with the reason logged.
 *
 * Restart. At create the backend lists our subscriptions at the NEF; provisions (the engine re-provisions every
 * active session before the loop runs) wait for that list. An available session adopts a listed subscription
 * of the same UE and qosReference (keeping its token, so the NEF's notifications still reach us); every other
 * listed subscription whose notification destination is ours is an orphan and is deleted. Sandbox sessions go
 * to an embedded simulated network. */
#include "net/backend.h"

#include "core/loop.h"
#include "core/timers.h"
#include "net/nef_msg.h"
#include "util/err.h"
#include "util/hmap.h"
#include "util/json.h"
#include "util/log.h"
#include "util/rand.h"
#include "util/time.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <unistd.h>

#define TOKEN_BYTES 32
#define TOKEN_CAP 64
#define NOTIFY_PATH "/nef/v1/notifications/"
#define API_PATH "/3gpp-as-session-with-qos/v1/"
#define CREATE_BUDGET_MS 30000
#define DELETE_TRIES 4
#define DELETE_RETRY_MAX_MS 60000
#define LIST_TRIES 5
#define RESP_MAX (QOD_NEF_LIST_MAX + 1)
#define OAUTH_DEFAULT_TTL_S 300
#define OAUTH_MARGIN_MS 5000
#define ID_CAP 48

static const int64_t backoff_ms[] = {500, 1000, 2000, 4000};
#define NBACKOFF ((int)(sizeof backoff_ms / sizeof backoff_ms[0]))

enum { OP_CREATE, OP_DELETE, OP_LIST, OP_TOKEN, OP_FIND, OP_COUNT };
static const char *const op_names[OP_COUNT] = {"create", "delete", "list", "token", "find"};
enum { OUT_OK, OUT_4XX, OUT_5XX, OUT_TIMEOUT, OUT_CONNECT, OUT_OTHER, OUT_COUNT };
static const char *const out_names[OUT_COUNT] = {"ok", "http_4xx", "http_5xx", "timeout", "connect", "other"};

/* One subscription (or a session on its way to one). Loop thread only, except token/id read under mu. */
typedef struct sub {
    char id[ID_CAP];                 /* the session id, or "orphan-N" */
    char token[TOKEN_CAP];           /* our notification token, "" for orphans */
    char key[256];                   /* "ipv4:…|qosReference" for adoption at restart */
    char *body;                      /* the POST body */
    char *location;                  /* the subscription resource once known (set under mu: set_location) */
    char res_id[QOD_NEF_RES_ID_MAX]; /* its id (the last path segment), "" when unknown; read under mu */
    bool ended;                      /* released: delete the subscription as soon as it is known */
    bool activated;                  /* the session is available: a failure terminates it instead of refusing it */
    bool busy;                       /* a request is in flight */
    bool wait_list;                  /* waiting for the start-up list */
    bool awaiting;                   /* subscribed, waiting for the allocation's outcome: t is its deadline */
    bool lookup;                     /* the last POST may have been made (timeout, 5xx): look before posting again */
    int attempts;
    int64_t first_ms;
    qod_timer t;
} sub;

typedef struct nef nef;

typedef struct req {
    nef *n;
    sub *s; /* NULL for the list and the token */
    int op;
    char *url;
    char *body;
    CURL *easy;
    struct curl_slist *hdrs;
    qod_buf resp;
    char location[1024];
    long retry_after_s;      /* the answer's Retry-After, -1 without */
    bool reauthed;           /* already retried after a 401 */
    struct req *prev, *next; /* running or waiting list */
} req;

struct nef {
    qod_net_config cfg;
    qod_net_sink sink;
    void *sim;
    char base[1100];         /* {nef}/3gpp-as-session-with-qos/v1/{scsAsId}/subscriptions */
    char notify_prefix[400]; /* {public_url}/nef/v1/notifications/ */
    bool oauth;
    CURLM *multi;
    int64_t curl_due;
    qod_timers timers;
    qod_hmap subs;          /* session id → sub (loop thread) */
    pthread_mutex_t mu;     /* guards tokens */
    qod_hmap tokens;        /* token → sub */
    req *running, *waiting; /* requests in flight / waiting for an OAuth2 token */
    char *access_token;
    int64_t token_until; /* monotonic ms */
    bool fetching;
    bool listing; /* the start-up list is in flight */
    int list_attempts;
    int64_t list_first_ms;
    qod_timer list_t; /* the start-up list's next attempt */
    bool closing;
    int orphans;
    atomic_ullong requests[OP_COUNT][OUT_COUNT];
    atomic_ullong notifications[QOD_NEF_EV_COUNT];
    atomic_ullong rejected_unknown, rejected_malformed, rejected_stale, not_guaranteed;
    atomic_llong held; /* subscriptions known to exist at the NEF */
};

/* ---- subscriptions ---------------------------------------------------------------------------------------- */

static void sub_free(nef *n, sub *s)
{
    qod_timers_cancel(&n->timers, &s->t);
    if (qod_hmap_get(&n->subs, s->id) == s)
        qod_hmap_del(&n->subs, s->id);
    pthread_mutex_lock(&n->mu);
    if (s->token[0] && qod_hmap_get(&n->tokens, s->token) == s)
        qod_hmap_del(&n->tokens, s->token);
    pthread_mutex_unlock(&n->mu);
    if (s->location)
        atomic_fetch_sub(&n->held, 1);
    free(s->body);
    free(s->location);
    free(s);
}

/* Frees an ended subscription and tells the engine the release is over (a revocation waits for it). Loop
 * thread. */
static void sub_released(nef *n, sub *s)
{
    char id[ID_CAP];
    snprintf(id, sizeof id, "%s", s->id);
    sub_free(n, s);
    n->sink.report_unlocked(n->sink.ctx, id, QOD_NET_RELEASED, "released by the NEF");
}

static void set_token(nef *n, sub *s, const char *token)
{
    pthread_mutex_lock(&n->mu);
    if (s->token[0] && qod_hmap_get(&n->tokens, s->token) == s)
        qod_hmap_del(&n->tokens, s->token);
    snprintf(s->token, sizeof s->token, "%s", token);
    if (s->token[0] && qod_hmap_put(&n->tokens, s->token, s) != QOD_OK)
        QOD_ERROR("nef", "token_map_failed", "session=%s", s->id);
    pthread_mutex_unlock(&n->mu);
}

/* s's subscription resource is loc (taken; NULL frees it). */
static void set_location(nef *n, sub *s, char *loc)
{
    pthread_mutex_lock(&n->mu);
    free(s->location);
    s->location = loc;
    if (!loc || !qod_nef_resource_id(loc, s->res_id, sizeof s->res_id))
        s->res_id[0] = '\0';
    pthread_mutex_unlock(&n->mu);
}

/* ---- HTTP requests on the loop ------------------------------------------------------------------------------ */

static void list_add(req **head, req *r)
{
    r->prev = NULL;
    r->next = *head;
    if (*head)
        (*head)->prev = r;
    *head = r;
}

static void list_del(req **head, req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else if (*head == r)
        *head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void req_reset(req *r)
{
    curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->hdrs);
    r->easy = NULL;
    r->hdrs = NULL;
    qod_buf_reset(&r->resp);
    r->location[0] = '\0';
    r->retry_after_s = -1;
}

static void req_free(req *r)
{
    if (!r)
        return;
    req_reset(r);
    qod_buf_dispose(&r->resp);
    free(r->url);
    free(r->body);
    free(r);
}

static size_t on_body(char *buf, size_t size, size_t nmemb, void *arg)
{
    req *r = arg;
    return qod_buf_append(&r->resp, buf, size * nmemb) == QOD_OK ? size * nmemb : 0;
}

static size_t on_header(char *buf, size_t size, size_t nmemb, void *arg)
{
    req *r = arg;
    size_t len = size * nmemb;
    long retry_after = qod_time_retry_after(buf, len);
    if (retry_after >= 0)
        r->retry_after_s = retry_after;
    if (len > 9 && strncasecmp(buf, "Location:", 9) == 0) {
        size_t i = 9, end = len;
        while (i < len && (buf[i] == ' ' || buf[i] == '\t'))
            i++;
        while (end > i && (buf[end - 1] == '\r' || buf[end - 1] == '\n' || buf[end - 1] == ' '))
            end--;
        if (end - i < sizeof r->location) {
            memcpy(r->location, buf + i, end - i);
            r->location[end - i] = '\0';
        }
    }
    return len;
}

/* True when a and b have the same scheme, host and port. */
static bool same_origin(const char *a, const char *b)
{
    static const CURLUPart parts[] = {CURLUPART_SCHEME, CURLUPART_HOST, CURLUPART_PORT};
    CURLU *u[2] = {curl_url(), curl_url()};
    bool same = u[0] && u[1] && curl_url_set(u[0], CURLUPART_URL, a, 0) == CURLUE_OK &&
                curl_url_set(u[1], CURLUPART_URL, b, 0) == CURLUE_OK;
    for (size_t i = 0; same && i < sizeof parts / sizeof parts[0]; i++) {
        char *x = NULL, *y = NULL;
        same = curl_url_get(u[0], parts[i], &x, CURLU_DEFAULT_PORT) == CURLUE_OK &&
               curl_url_get(u[1], parts[i], &y, CURLU_DEFAULT_PORT) == CURLUE_OK && strcasecmp(x, y) == 0;
        curl_free(x);
        curl_free(y);
    }
    curl_url_cleanup(u[0]);
    curl_url_cleanup(u[1]);
    return same;
}

static void done(req *r, int outcome, long status, const char *why);

static int launch(req *r)
{
    nef *n = r->n;
    char auth[4200];
    CURL *e = r->easy = curl_easy_init();
    if (!e)
        return QOD_ERR_NOMEM;
    curl_easy_setopt(e, CURLOPT_URL, r->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)n->cfg.nef_timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)n->cfg.nef_timeout_ms);
    curl_easy_setopt(e, CURLOPT_PRIVATE, r);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, r);
    if (n->cfg.nef_ca && n->cfg.nef_ca[0])
        curl_easy_setopt(e, CURLOPT_CAINFO, n->cfg.nef_ca);
    if (n->cfg.nef_client_cert && n->cfg.nef_client_cert[0]) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, n->cfg.nef_client_cert);
        curl_easy_setopt(e, CURLOPT_SSLKEY, n->cfg.nef_client_key);
    }
    r->hdrs = curl_slist_append(r->hdrs, "Accept: application/json");
    if (r->op == OP_TOKEN) {
        /* RFC 6749 2.3.1: the client id and secret are form-urlencoded before they go into HTTP Basic. */
        char *id = curl_easy_escape(e, n->cfg.nef_client_id, 0),
             *secret = curl_easy_escape(e, n->cfg.nef_client_secret, 0);
        if (id && secret) {
            curl_easy_setopt(e, CURLOPT_USERNAME, id);
            curl_easy_setopt(e, CURLOPT_PASSWORD, secret);
        }
        bool escaped = id && secret;
        curl_free(id);
        curl_free(secret);
        if (!escaped)
            return QOD_ERR_NOMEM;
        curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
    } else {
        /* Our token goes to the NEF's origin only: a resource URI elsewhere (a Location, a listed self) gets none. */
        const char *tok = n->oauth ? n->access_token : n->cfg.nef_bearer;
        if (tok && *tok && same_origin(r->url, n->base)) {
            snprintf(auth, sizeof auth, "Authorization: Bearer %s", tok);
            r->hdrs = curl_slist_append(r->hdrs, auth);
        }
    }
    if (r->body) {
        r->hdrs = curl_slist_append(r->hdrs, r->op == OP_TOKEN ? "Content-Type: application/x-www-form-urlencoded"
                                                               : "Content-Type: application/json");
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, r->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(r->body));
    } else if (r->op == OP_DELETE) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, "DELETE");
    }
    if (!r->hdrs)
        return QOD_ERR_NOMEM;
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, r->hdrs);
    if (curl_multi_add_handle(n->multi, e) != CURLM_OK)
        return QOD_ERR_NOMEM;
    list_add(&n->running, r);
    return QOD_OK;
}

static void fetch_token(nef *n);

/* Sends r now, or after an OAuth2 token arrives. r's outcome always comes through done(). */
static void send_req(req *r)
{
    nef *n = r->n;
    if (r->op != OP_TOKEN && n->oauth && (!n->access_token || n->token_until <= qod_time_mono_ms())) {
        list_add(&n->waiting, r);
        fetch_token(n);
        return;
    }
    if (launch(r) != QOD_OK)
        done(r, OUT_OTHER, 0, "cannot start the request");
}

static req *req_new(nef *n, sub *s, int op, const char *url, const char *body)
{
    req *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->n = n;
    r->s = s;
    r->op = op;
    r->retry_after_s = -1;
    qod_buf_init(&r->resp, RESP_MAX);
    r->url = strdup(url);
    r->body = body ? strdup(body) : NULL;
    if (!r->url || (body && !r->body)) {
        req_free(r);
        return NULL;
    }
    return r;
}

static void fetch_token(nef *n)
{
    if (n->fetching)
        return;
    char body[600] = "grant_type=client_credentials";
    if (n->cfg.nef_scope && n->cfg.nef_scope[0]) {
        char *scope = curl_easy_escape(NULL, n->cfg.nef_scope, 0);
        if (scope && strlen(scope) < sizeof body - 40)
            snprintf(body, sizeof body, "grant_type=client_credentials&scope=%s", scope);
        curl_free(scope);
    }
    req *r = req_new(n, NULL, OP_TOKEN, n->cfg.nef_token_url, body);
    if (!r) {
        QOD_ERROR("nef", "token_failed", "why=\"out of memory\"");
        return;
    }
    n->fetching = true;
    send_req(r);
}

/* ---- operations ----------------------------------------------------------------------------------------------- */

/* The UE's subscriptions at the NEF (GET …/subscriptions?ip-addrs=[IpAddr]): the one with s's token is s's, made
 * by a POST whose answer was lost. False when s has no UE address to ask by (a GPSI). */
static bool start_find(nef *n, sub *s)
{
    const char *bar = strchr(s->key, '|');
    bool v4 = strncmp(s->key, "ipv4:", 5) == 0, v6 = strncmp(s->key, "ipv6:", 5) == 0;
    if (!bar || (!v4 && !v6))
        return false;
    char addrs[160], url[sizeof n->base + 400];
    snprintf(addrs, sizeof addrs, "[{\"%s\":\"%.*s\"}]", v4 ? "ipv4Addr" : "ipv6Addr", (int)(bar - s->key - 5),
             s->key + 5);
    char *q = curl_easy_escape(NULL, addrs, 0);
    req *r = NULL;
    if (q && snprintf(url, sizeof url, "%s?ip-addrs=%s", n->base, q) < (int)sizeof url)
        r = req_new(n, s, OP_FIND, url, NULL);
    curl_free(q);
    if (!r)
        return false;
    s->busy = true;
    send_req(r);
    return true;
}

static void start_create(nef *n, sub *s)
{
    if (s->lookup && start_find(n, s))
        return;
    s->lookup = false;
    if (!s->attempts)
        s->first_ms = qod_time_mono_ms();
    s->attempts++;
    req *r = req_new(n, s, OP_CREATE, n->base, s->body);
    if (!r) {
        QOD_ERROR("nef", "create_failed", "session=%s why=\"out of memory\"", s->id);
        return;
    }
    s->busy = true;
    send_req(r);
}

static void start_delete(nef *n, sub *s)
{
    if (!s->attempts)
        s->first_ms = qod_time_mono_ms();
    s->attempts++;
    req *r = req_new(n, s, OP_DELETE, s->location, NULL);
    if (!r) {
        QOD_ERROR("nef", "delete_failed", "session=%s why=\"out of memory\"", s->id);
        sub_released(n, s);
        return;
    }
    s->busy = true;
    send_req(r);
}

/* The create of s failed for good: the session ends with the reason. */
static void give_up(nef *n, sub *s, const char *why)
{
    char id[ID_CAP];
    bool activated = s->activated;
    snprintf(id, sizeof id, "%s", s->id);
    QOD_WARN("nef", "subscription_failed", "session=%s attempts=%d why=\"%s\"", id, s->attempts, why);
    sub_free(n, s);
    n->sink.report_unlocked(n->sink.ctx, id, activated ? QOD_NET_TERMINATED : QOD_NET_REFUSED, why);
}

/* A failure worth another attempt: the NEF overloaded, slow or out of reach (not one it refused for good). */
static bool is_transient(int outcome, long status)
{
    return outcome == OUT_5XX || outcome == OUT_TIMEOUT || outcome == OUT_CONNECT || status == 429;
}

/* The wait before attempt number attempts + 1: the backoff with ±10 % jitter (a NEF back from an outage does not
 * get every retry at once), or longer when the NEF's Retry-After asks (-1: none). */
static int64_t retry_wait(int attempts, long retry_after_s)
{
    int i = attempts - 1 < NBACKOFF ? (attempts > 0 ? attempts - 1 : 0) : NBACKOFF - 1;
    int64_t wait = (int64_t)((double)backoff_ms[i] * (0.9 + 0.2 * qod_rand_unit()));
    int64_t asked = retry_after_s < 86400 ? (int64_t)retry_after_s * 1000 : 86400 * 1000; /* a day at most */
    return retry_after_s >= 0 && asked > wait ? asked : wait;
}

/* Schedules another attempt of s after a transient failure; false when the budget is spent. */
static bool retry_later(nef *n, sub *s, int max_attempts, int64_t budget_ms, long retry_after_s)
{
    int64_t now = qod_time_mono_ms(), wait = retry_wait(s->attempts, retry_after_s);
    if (s->attempts >= max_attempts || now + wait - s->first_ms > budget_ms)
        return false;
    qod_timers_arm(&n->timers, &s->t, now + wait, 0);
    return true;
}

/* Resolves a Location (possibly relative) against the request URL. */
static char *absolute(const char *base, const char *loc)
{
    char *out = NULL, *tmp = NULL;
    CURLU *u = curl_url();
    if (u && curl_url_set(u, CURLUPART_URL, base, 0) == CURLUE_OK &&
        curl_url_set(u, CURLUPART_URL, loc, 0) == CURLUE_OK && curl_url_get(u, CURLUPART_URL, &tmp, 0) == CURLUE_OK)
        out = strdup(tmp);
    curl_free(tmp);
    curl_url_cleanup(u);
    return out;
}

/* s's subscription is loc (taken), found by what (a 201, or a lookup after a POST whose answer was lost). */
static void subscribed(nef *n, sub *s, char *loc, const char *what)
{
    set_location(n, s, loc);
    atomic_fetch_add(&n->held, 1);
    QOD_INFO("nef", what, "session=%s location=%s attempts=%d", s->id, s->location, s->attempts);
    s->attempts = 0;
    if (s->ended) {
        start_delete(n, s);
    } else if (!s->activated) {
        s->awaiting = true;
        qod_timers_arm(&n->timers, &s->t, qod_time_mono_ms() + n->cfg.nef_allocation_ms, 0);
    }
}

typedef struct {
    nef *n;
    const char *token;
    char *self;
} find_ctx;

static void on_found(void *arg, const qod_nef_listed *l)
{
    find_ctx *f = arg;
    char token[TOKEN_CAP];
    if (!f->self && l->self[0] &&
        qod_nef_token_of(l->notification_destination, f->n->notify_prefix, token, sizeof token) &&
        strcmp(token, f->token) == 0)
        f->self = absolute(f->n->base, l->self);
}

/* The answer to start_find: s's subscription found (adopted), or a POST now (also when the lookup failed). */
static void find_done(nef *n, req *r, int outcome)
{
    sub *s = r->s;
    char err[160];
    find_ctx f = {n, s->token, NULL};
    s->busy = false;
    s->lookup = false;
    if (outcome == OUT_OK)
        qod_nef_list_parse(r->resp.data ? r->resp.data : "", r->resp.len, on_found, &f, err, sizeof err);
    if (f.self)
        subscribed(n, s, f.self, "found_after_retry");
    else if (s->ended)
        sub_released(n, s);
    else
        start_create(n, s);
}

static void create_done(nef *n, req *r, int outcome, long status, const char *why)
{
    sub *s = r->s;
    s->busy = false;
    char *loc = outcome == OUT_OK && r->location[0] ? absolute(r->url, r->location) : NULL;
    if (loc) {
        subscribed(n, s, loc, "subscribed");
        return;
    }
    if (s->ended) {
        sub_released(n, s);
        return;
    }
    bool transient = is_transient(outcome, status);
    char text[300];
    if (outcome == OUT_OK)
        snprintf(text, sizeof text, "the NEF answered %ld without a Location", status);
    else
        snprintf(text, sizeof text, "%s", why);
    QOD_INFO("nef", "create_attempt_failed", "session=%s attempt=%d outcome=%s status=%ld why=\"%s\"", s->id,
             s->attempts, out_names[outcome], status, text);
    s->lookup = outcome == OUT_TIMEOUT || outcome == OUT_5XX; /* the NEF may have made it all the same */
    if (!transient || !retry_later(n, s, NBACKOFF + 1, CREATE_BUDGET_MS, r->retry_after_s))
        give_up(n, s, text);
}

/* Puts s in the subscriptions map under a new id (it must not be in the map). */
static bool rename_sub(nef *n, sub *s, const char *id)
{
    snprintf(s->id, sizeof s->id, "%s", id);
    return qod_hmap_put(&n->subs, s->id, s) == QOD_OK;
}

/* The NEF would not delete s's subscription within the budget (down, overloaded): it stays there, with its QoS.
 * The session's release is reported now, so that the engine does not wait for the NEF, and s is kept as an orphan
 * whose DELETE is tried again, at most a minute apart, until the NEF answers it (if qodd stops first, the start-up
 * list finds it). */
static void keep_deleting(nef *n, sub *s, long status, const char *why, long retry_after_s)
{
    int shift = s->attempts - DELETE_TRIES < 4 ? s->attempts - DELETE_TRIES : 4;
    int64_t wait = retry_wait(NBACKOFF, -1) << (shift > 0 ? shift : 0);
    wait = wait < DELETE_RETRY_MAX_MS ? wait : DELETE_RETRY_MAX_MS;
    int64_t asked = retry_wait(1, retry_after_s); /* the NEF's Retry-After, up to a day, when it asks longer */
    wait = retry_after_s >= 0 && asked > wait ? asked : wait;
    if (strncmp(s->id, "orphan-", 7) != 0 && strncmp(s->id, "stale-", 6) != 0) {
        char id[ID_CAP], orphan[ID_CAP];
        snprintf(id, sizeof id, "%s", s->id);
        snprintf(orphan, sizeof orphan, "orphan-%d", ++n->orphans);
        qod_hmap_del(&n->subs, s->id);
        set_token(n, s, ""); /* its notifications no longer reach the session */
        bool kept = rename_sub(n, s, orphan);
        n->sink.report_unlocked(n->sink.ctx, id, QOD_NET_RELEASED,
                                "released (the NEF's subscription is deleted later)");
        if (!kept) {
            QOD_ERROR("nef", "delete_failed", "session=%s location=%s why=\"out of memory\"", id, s->location);
            sub_free(n, s);
            return;
        }
        QOD_WARN("nef", "delete_retrying", "session=%s orphan=%s", id, s->id);
    }
    QOD_WARN("nef", "delete_attempt_failed", "orphan=%s location=%s attempts=%d status=%ld why=\"%s\" retry_ms=%lld",
             s->id, s->location, s->attempts, status, why, (long long)wait);
    qod_timers_arm(&n->timers, &s->t, qod_time_mono_ms() + wait, 0);
}

static void delete_done(nef *n, req *r, int outcome, long status, const char *why)
{
    sub *s = r->s;
    s->busy = false;
    if (outcome == OUT_OK || status == 404) {
        QOD_INFO("nef", "unsubscribed", "session=%s location=%s status=%ld", s->id, s->location, status);
        sub_released(n, s);
        return;
    }
    /* TS 29.122 lists 307 and 308 for the DELETE, with the resource's other URI: followed there, on the NEF's own
     * origin only (our bearer token goes with it), a few times at most. */
    char *moved = (status == 307 || status == 308) && r->location[0] ? absolute(r->url, r->location) : NULL;
    if (moved && same_origin(moved, n->base) && s->attempts < DELETE_TRIES + 4) {
        QOD_INFO("nef", "delete_redirected", "session=%s from=%s to=%s status=%ld", s->id, s->location, moved, status);
        set_location(n, s, moved);
        start_delete(n, s);
        return;
    }
    free(moved);
    bool transient = is_transient(outcome, status);
    if (transient && retry_later(n, s, DELETE_TRIES, CREATE_BUDGET_MS, r->retry_after_s))
        return;
    if (transient) {
        keep_deleting(n, s, status, why, r->retry_after_s);
        return;
    }
    QOD_WARN("nef", "delete_failed", "session=%s location=%s status=%ld why=\"%s\"", s->id, s->location, status, why);
    sub_released(n, s);
}

static void token_done(nef *n, req *r, int outcome, const char *why)
{
    n->fetching = false;
    cJSON *o = NULL;
    char err[128] = "";
    const char *tok = NULL;
    int64_t ttl = OAUTH_DEFAULT_TTL_S;
    if (outcome == OUT_OK &&
        qod_json_parse(r->resp.data ? r->resp.data : "", r->resp.len, 4, &o, err, sizeof err) == QOD_OK &&
        qod_json_str(o, "access_token", &tok) == QOD_OK && *tok && strlen(tok) < 4000) {
        qod_json_int(o, "expires_in", 1, 86400 * 365, &ttl);
        free(n->access_token);
        n->access_token = strdup(tok);
        /* Refresh a little before the end, so no request leaves with a token about to expire. */
        int64_t life = ttl * 1000;
        n->token_until = qod_time_mono_ms() + (life > 2 * OAUTH_MARGIN_MS ? life - OAUTH_MARGIN_MS : life / 2);
        QOD_INFO("nef", "token", "expires_in=%lld", (long long)ttl);
    } else {
        QOD_WARN("nef", "token_failed", "url=%s why=\"%s\"", n->cfg.nef_token_url,
                 outcome == OUT_OK ? "no access_token in the answer" : why);
    }
    cJSON_Delete(o);
    req *w = n->waiting;
    n->waiting = NULL;
    while (w) {
        req *next = w->next;
        w->prev = w->next = NULL;
        if (n->access_token && n->token_until > qod_time_mono_ms())
            send_req(w);
        else
            done(w, OUT_CONNECT, 0, "no OAuth2 token from the NEF's token endpoint");
        w = next;
    }
}

static void reconcile(nef *n, req *r, int outcome, long status, const char *why);

/* Every request ends here exactly once: metrics, then the operation's own handling; r is freed. */
static void done(req *r, int outcome, long status, const char *why)
{
    nef *n = r->n;
    atomic_fetch_add(&n->requests[r->op][outcome], 1);
    /* A 401 may mean our cached token was revoked or expired early: fetch a new one and try once more. */
    if (status == 401 && n->oauth && r->op != OP_TOKEN && !r->reauthed) {
        r->reauthed = true;
        free(n->access_token);
        n->access_token = NULL;
        req_reset(r);
        send_req(r);
        return;
    }
    if (r->op == OP_CREATE)
        create_done(n, r, outcome, status, why);
    else if (r->op == OP_DELETE)
        delete_done(n, r, outcome, status, why);
    else if (r->op == OP_TOKEN)
        token_done(n, r, outcome, why);
    else if (r->op == OP_FIND)
        find_done(n, r, outcome);
    else
        reconcile(n, r, outcome, status, why);
    req_free(r);
}

static int classify(CURLcode cc, long status)
{
    if (cc == CURLE_OPERATION_TIMEDOUT)
        return OUT_TIMEOUT;
    if (cc == CURLE_COULDNT_CONNECT || cc == CURLE_COULDNT_RESOLVE_HOST || cc == CURLE_SEND_ERROR ||
        cc == CURLE_RECV_ERROR || cc == CURLE_GOT_NOTHING)
        return OUT_CONNECT;
    if (cc != CURLE_OK)
        return OUT_OTHER;
    if (status >= 200 && status < 300)
        return OUT_OK;
    if (status >= 500)
        return OUT_5XX;
    return status >= 400 && status < 500 ? OUT_4XX : OUT_OTHER;
}

static void check_done(nef *n)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(n->multi, &left))) {
        if (m->msg != CURLMSG_DONE)
            continue;
        req *r = NULL;
        long status = 0;
        CURLcode cc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        curl_easy_getinfo(m->easy_handle, CURLINFO_RESPONSE_CODE, &status);
        curl_multi_remove_handle(n->multi, m->easy_handle);
        list_del(&n->running, r);
        char why[300], problem[200];
        if (cc != CURLE_OK)
            snprintf(why, sizeof why, "%s", curl_easy_strerror(cc));
        else if (status >= 300 && r->resp.data &&
                 qod_nef_problem_text(r->resp.data, r->resp.len, problem, sizeof problem))
            snprintf(why, sizeof why, "the NEF answered %ld (%s)", status, problem);
        else
            snprintf(why, sizeof why, "the NEF answered %ld", status);
        done(r, classify(cc, status), cc == CURLE_OK ? status : 0, why);
    }
}

/* ---- start-up reconciliation ----------------------------------------------------------------------------------- */

typedef struct {
    nef *n;
    qod_hmap candidates; /* key → sub: available sessions waiting for the list */
    int adopted, orphans;
} recon;

static void ue_key(char *out, size_t cap, const char *v4, const char *v6, const char *gpsi, const char *qos)
{
    if (v4 && *v4)
        snprintf(out, cap, "ipv4:%s|%s", v4, qos);
    else if (v6 && *v6)
        snprintf(out, cap, "ipv6:%s|%s", v6, qos);
    else
        snprintf(out, cap, "gpsi:%s|%s", gpsi ? gpsi : "", qos);
}

/* Deletes the subscription at loc (taken; NULL: out of memory), which no session owns, under id in the
 * subscriptions map; logs what. False when it could not be started. */
static bool delete_unowned(nef *n, const char *id, char *loc, const char *what)
{
    sub *o = loc ? calloc(1, sizeof *o) : NULL;
    if (!o) {
        free(loc);
        return false;
    }
    qod_timer_init(&o->t, 0);
    o->ended = true;
    set_location(n, o, loc);
    atomic_fetch_add(&n->held, 1);
    if (!rename_sub(n, o, id)) {
        sub_free(n, o);
        return false;
    }
    QOD_INFO("nef", what, "location=%s", o->location);
    start_delete(n, o);
    return true;
}

/* Deletes the subscription res_id of our SCS/AS, once (its DELETE in flight or waiting is not started again). */
static void delete_stale(nef *n, const char *res_id)
{
    char id[ID_CAP];
    if (strlen(res_id) + 6 >= sizeof id)
        snprintf(id, sizeof id, "orphan-%d", ++n->orphans); /* an id too long to remember: deleted again if seen */
    else if (snprintf(id, sizeof id, "stale-%s", res_id) > 0 && qod_hmap_get(&n->subs, id))
        return;
    size_t cap = strlen(n->base) + strlen(res_id) + 2;
    char *loc = malloc(cap);
    if (loc)
        snprintf(loc, cap, "%s/%s", n->base, res_id);
    delete_unowned(n, id, loc, "stale_delete");
}

static void on_listed(void *arg, const qod_nef_listed *l)
{
    recon *c = arg;
    nef *n = c->n;
    char token[TOKEN_CAP], key[256];
    if (!qod_nef_token_of(l->notification_destination, n->notify_prefix, token, sizeof token) || !l->self[0])
        return; /* not ours (another SCS/AS instance), or not addressable */
    char rid[QOD_NEF_RES_ID_MAX] = "";
    pthread_mutex_lock(&n->mu);
    sub *k = qod_hmap_get(&n->tokens, token);
    /* A second subscription with the token of one already ours (a create's retry left it): deleted. */
    bool dup = k && k->res_id[0] && qod_nef_resource_id(l->self, rid, sizeof rid) && strcmp(rid, k->res_id) != 0;
    pthread_mutex_unlock(&n->mu);
    if (dup)
        delete_stale(n, rid);
    if (k)
        return;
    ue_key(key, sizeof key, l->ue_ipv4, l->ue_ipv6, l->gpsi, l->qos_reference);
    sub *s = qod_hmap_del(&c->candidates, key);
    char *loc = s ? absolute(n->base, l->self) : NULL; /* self may be relative */
    if (loc) {
        set_location(n, s, loc);
        atomic_fetch_add(&n->held, 1);
        set_token(n, s, token);
        c->adopted++;
        QOD_INFO("nef", "adopted", "session=%s location=%s", s->id, s->location);
        return;
    }
    char id[ID_CAP];
    snprintf(id, sizeof id, "orphan-%d", ++n->orphans);
    if (delete_unowned(n, id, absolute(n->base, l->self), "orphan"))
        c->orphans++;
}

static int collect_waiting(void *arg, const char *key, void *val)
{
    (void)key;
    recon *c = arg;
    sub *s = val;
    if (s->wait_list && s->activated && !s->ended)
        qod_hmap_put(&c->candidates, s->key, s);
    return 0;
}

typedef struct {
    sub **v;
    size_t n, cap;
} sub_vec;

static int gather(void *arg, const char *key, void *val)
{
    (void)key;
    sub_vec *v = arg;
    sub *s = val;
    if (s->wait_list && v->n < v->cap)
        v->v[v->n++] = s;
    return 0;
}

static void reconcile(nef *n, req *r, int outcome, long status, const char *why)
{
    recon c = {.n = n};
    char err[160] = "";
    /* Not answered now (down, overloaded, no OAuth2 token): asked again, the sessions still waiting. Subscribing
     * them afresh would leave the subscriptions they hold at the NEF behind, with their QoS. */
    bool transient = is_transient(outcome, status);
    int64_t now = qod_time_mono_ms(), wait = retry_wait(n->list_attempts + 1, r->retry_after_s);
    if (transient && ++n->list_attempts < LIST_TRIES && now + wait - n->list_first_ms <= CREATE_BUDGET_MS) {
        QOD_WARN("nef", "list_attempt_failed", "attempt=%d status=%ld why=\"%s\" retry_ms=%lld", n->list_attempts,
                 status, why, (long long)wait);
        qod_timers_arm(&n->timers, &n->list_t, now + wait, 0);
        return;
    }
    qod_hmap_init(&c.candidates);
    n->listing = false;
    qod_hmap_each(&n->subs, collect_waiting, &c);
    if (outcome == OUT_OK &&
        qod_nef_list_parse(r->resp.data ? r->resp.data : "", r->resp.len, on_listed, &c, err, sizeof err) == QOD_OK)
        QOD_INFO("nef", "reconciled", "adopted=%d orphans=%d", c.adopted, c.orphans);
    else
        QOD_WARN("nef", "reconcile_failed", "why=\"%s\"", outcome == OUT_OK ? err : why);
    qod_hmap_dispose(&c.candidates);
    /* The sessions that waited for the list: adopted ones are done, the others subscribe now. */
    sub_vec v = {calloc(qod_hmap_count(&n->subs) + 1, sizeof(sub *)), 0, qod_hmap_count(&n->subs)};
    if (v.v)
        qod_hmap_each(&n->subs, gather, &v);
    for (size_t i = 0; i < v.n; i++) {
        sub *s = v.v[i];
        s->wait_list = false;
        if (s->ended && s->location)
            start_delete(n, s); /* adopted, but released meanwhile */
        else if (s->ended)
            sub_released(n, s);
        else if (!s->location)
            start_create(n, s);
    }
    free(v.v);
}

static void list_job(void *arg)
{
    nef *n = arg;
    if (!n->list_attempts)
        n->list_first_ms = qod_time_mono_ms();
    req *r = req_new(n, NULL, OP_LIST, n->base, NULL);
    if (!r) {
        n->listing = false;
        return;
    }
    send_req(r);
}

/* ---- the loop side ---------------------------------------------------------------------------------------------- */

static void on_socket_event(void *arg, int fd, uint32_t events)
{
    nef *n = arg;
    int flags = (events & EPOLLIN ? CURL_CSELECT_IN : 0) | (events & EPOLLOUT ? CURL_CSELECT_OUT : 0) |
                (events & (EPOLLERR | EPOLLHUP) ? CURL_CSELECT_ERR : 0);
    int running = 0;
    curl_multi_socket_action(n->multi, fd, flags, &running);
    check_done(n);
}

static int on_curl_socket(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e;
    (void)socketp;
    nef *n = userp;
    if (n->closing)
        return 0; /* the loop is gone: nothing to unwatch */
    uint32_t ev = what == CURL_POLL_IN      ? EPOLLIN
                  : what == CURL_POLL_OUT   ? EPOLLOUT
                  : what == CURL_POLL_INOUT ? EPOLLIN | EPOLLOUT
                                            : 0;
    qod_loop_watch(n->cfg.loop, fd, what == CURL_POLL_REMOVE ? 0 : ev, on_socket_event, n);
    return 0;
}

static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    (void)m;
    nef *n = userp;
    n->curl_due = timeout_ms < 0 ? -1 : qod_time_mono_ms() + timeout_ms;
    return 0;
}

static sub *sub_of_timer(qod_timer *t)
{
    return (sub *)(void *)((char *)t - offsetof(sub, t));
}

/* No SUCCESSFUL_ or FAILED_RESOURCES_ALLOCATION came for s within --nef-allocation-timeout (a NEF that does not
 * report it, or a notification lost): the session would stay requested, and its device taken, for good. It is
 * refused; the engine's release then deletes the subscription. */
static void allocation_overdue(nef *n, sub *s)
{
    s->awaiting = false;
    if (s->activated || s->ended)
        return;
    QOD_WARN("nef", "allocation_overdue", "session=%s location=%s waited_ms=%lld", s->id, s->location,
             (long long)n->cfg.nef_allocation_ms);
    n->sink.report_unlocked(n->sink.ctx, s->id, QOD_NET_REFUSED, "no resource allocation reported by the NEF in time");
}

static int64_t tick(void *arg, int64_t now)
{
    nef *n = arg;
    if (n->curl_due >= 0 && n->curl_due <= now) {
        int running = 0;
        n->curl_due = -1;
        curl_multi_socket_action(n->multi, CURL_SOCKET_TIMEOUT, 0, &running);
        check_done(n);
    }
    for (int i = 0; i < 4096; i++) {
        qod_timer *t = qod_timers_pop_due(&n->timers, now);
        if (!t)
            break;
        if (t == &n->list_t) {
            list_job(n);
            continue;
        }
        sub *s = sub_of_timer(t);
        if (s->awaiting) {
            allocation_overdue(n, s);
            continue;
        }
        if (s->location)
            start_delete(n, s);
        else
            start_create(n, s);
    }
    qod_timer *next = qod_timers_peek(&n->timers);
    return qod_loop_sooner(next ? next->due : -1, n->curl_due);
}

/* ---- jobs from the engine's calls ---------------------------------------------------------------------------------
 */

enum { JOB_PROVISION, JOB_ACTIVATED, JOB_RELEASE, JOB_DELETE_STALE };

typedef struct {
    nef *n;
    int what;
    char id[ID_CAP];
    char token[TOKEN_CAP];
    char key[256]; /* a provision's UE key, or a stale subscription's id */
    char *body;
} job;

static void provision_job(nef *n, job *j)
{
    sub *s = qod_hmap_get(&n->subs, j->id);
    if (s)
        return; /* provisioned already (a repeated call): one subscription per session */
    s = calloc(1, sizeof *s);
    if (!s) {
        n->sink.report_unlocked(n->sink.ctx, j->id, QOD_NET_REFUSED, "out of memory");
        return;
    }
    snprintf(s->id, sizeof s->id, "%s", j->id);
    snprintf(s->key, sizeof s->key, "%s", j->key);
    s->body = j->body;
    j->body = NULL;
    qod_timer_init(&s->t, 0);
    if (qod_hmap_put(&n->subs, s->id, s) != QOD_OK) {
        sub_free(n, s);
        n->sink.report_unlocked(n->sink.ctx, j->id, QOD_NET_REFUSED, "out of memory");
        return;
    }
    set_token(n, s, j->token);
    if (n->listing)
        s->wait_list = true;
    else
        start_create(n, s);
}

static void no_deadline(nef *n, sub *s)
{
    if (s->awaiting) {
        qod_timers_cancel(&n->timers, &s->t);
        s->awaiting = false;
    }
}

static void release_job(nef *n, sub *s)
{
    no_deadline(n, s);
    s->ended = true;
    if (s->busy || s->wait_list || (s->location && qod_timer_armed(&s->t)))
        return; /* the request in flight, the list or the pending delete retry takes it from here */
    if (s->location) {
        s->attempts = 0;
        start_delete(n, s);
    } else {
        sub_released(n, s);
    }
}

static void run_job(void *arg)
{
    job *j = arg;
    nef *n = j->n;
    sub *s = j->what == JOB_PROVISION || j->what == JOB_DELETE_STALE ? NULL : qod_hmap_get(&n->subs, j->id);
    if (j->what == JOB_DELETE_STALE)
        delete_stale(n, j->key);
    else if (j->what == JOB_PROVISION)
        provision_job(n, j);
    else if (s && j->what == JOB_ACTIVATED && (s->activated = true))
        no_deadline(n, s);
    else if (s && j->what == JOB_RELEASE)
        release_job(n, s);
    else if (j->what == JOB_RELEASE)
        n->sink.report_unlocked(n->sink.ctx, j->id, QOD_NET_RELEASED, "nothing held at the NEF");
    free(j->body);
    free(j);
}

static int post_job(nef *n, int what, const char *id, const char *token, const char *key, char *body)
{
    job *j = calloc(1, sizeof *j);
    if (!j) {
        free(body);
        return QOD_ERR_NOMEM;
    }
    *j = (job){.n = n, .what = what, .body = body};
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->token, sizeof j->token, "%s", token ? token : "");
    snprintf(j->key, sizeof j->key, "%s", key ? key : "");
    int rc = qod_loop_post(n->cfg.loop, run_job, j);
    if (rc != QOD_OK) {
        free(j->body);
        free(j);
    }
    return rc;
}

/* ---- the backend ----------------------------------------------------------------------------------------------------
 */

static void nef_destroy(void *self);

static bool id_ok(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n <= 128 && strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~") == n;
}

static int nef_create(const qod_net_config *cfg, const qod_net_sink *sink, void **self, char *err, size_t errcap)
{
    *self = NULL;
    const char *scs = cfg->nef_scs_as_id ? cfg->nef_scs_as_id : "";
    bool oauth = cfg->nef_token_url && cfg->nef_token_url[0];
    if (!cfg->nef_url || !cfg->nef_url[0]) {
        snprintf(err, errcap, "nef: --nef-url is required with --network nef");
        return QOD_ERR_INVALID;
    }
    if (!id_ok(scs)) {
        snprintf(err, errcap, "nef: --nef-scs-as-id must be 1 to 128 characters of A-Z a-z 0-9 - . _ ~");
        return QOD_ERR_INVALID;
    }
    if (oauth && (!cfg->nef_client_id || !cfg->nef_client_id[0])) {
        snprintf(err, errcap, "nef: --nef-token-url needs --nef-client-id (and --nef-client-secret)");
        return QOD_ERR_INVALID;
    }
    if (!cfg->loop || !cfg->public_url || strlen(cfg->public_url) > 300) {
        snprintf(err, errcap, "nef: no engine loop or public URL");
        return QOD_ERR_INVALID;
    }
    /* Read now, so that a wrong path stops the start rather than every request. */
    const char *files[][2] = {
        {"nef-ca", cfg->nef_ca}, {"nef-client-cert", cfg->nef_client_cert}, {"nef-client-key", cfg->nef_client_key}};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        if (files[i][1] && files[i][1][0] && access(files[i][1], R_OK) != 0) {
            snprintf(err, errcap, "nef: cannot read --%s %s: %s", files[i][0], files[i][1], strerror(errno));
            return QOD_ERR_INVALID;
        }
    }
    nef *n = calloc(1, sizeof *n);
    if (!n)
        return QOD_ERR_NOMEM;
    n->cfg = *cfg;
    n->sink = *sink;
    n->oauth = oauth;
    n->curl_due = -1;
    n->listing = true;
    qod_timer_init(&n->list_t, 0);
    if (n->cfg.nef_timeout_ms <= 0)
        n->cfg.nef_timeout_ms = 10000;
    if (n->cfg.nef_allocation_ms <= 0)
        n->cfg.nef_allocation_ms = 60000;
    size_t ul = strlen(cfg->nef_url);
    while (ul && cfg->nef_url[ul - 1] == '/')
        ul--;
    snprintf(n->base, sizeof n->base, "%.*s" API_PATH "%s/subscriptions", (int)(ul < 1024 ? ul : 1024), cfg->nef_url,
             scs);
    snprintf(n->notify_prefix, sizeof n->notify_prefix, "%s" NOTIFY_PATH, cfg->public_url);
    pthread_mutex_init(&n->mu, NULL);
    qod_hmap_init(&n->subs);
    qod_hmap_init(&n->tokens);
    qod_timers_init(&n->timers);
    int rc = qod_net_sim.create(cfg, sink, &n->sim, err, errcap);
    if (rc == QOD_OK && !(n->multi = curl_multi_init()))
        rc = QOD_ERR_NOMEM;
    if (rc == QOD_OK) {
        curl_multi_setopt(n->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
        curl_multi_setopt(n->multi, CURLMOPT_SOCKETDATA, n);
        curl_multi_setopt(n->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
        curl_multi_setopt(n->multi, CURLMOPT_TIMERDATA, n);
        rc = qod_loop_add_tick(cfg->loop, tick, n);
    }
    /* Posted before the engine re-provisions the active sessions, so the list is asked for first. */
    rc = rc ? rc : qod_loop_post(cfg->loop, list_job, n);
    if (rc != QOD_OK) {
        if (!err[0])
            snprintf(err, errcap, "nef: cannot start: %s", qod_strerror(rc));
        nef_destroy(n);
        return rc;
    }
    QOD_INFO("nef", "started", "api=%s auth=%s timeout_ms=%lld", n->base,
             oauth                                   ? "oauth2"
             : cfg->nef_bearer && cfg->nef_bearer[0] ? "bearer"
                                                     : "none",
             (long long)n->cfg.nef_timeout_ms);
    *self = n;
    return QOD_OK;
}

static int free_sub_cb(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    sub *s = val;
    free(s->body);
    free(s->location);
    free(s);
    return 0;
}

/* Subscriptions stay at the NEF: the sessions go on while qodd restarts, and the next start reconciles. */
static void nef_destroy(void *self)
{
    nef *n = self;
    if (!n)
        return;
    n->closing = true;
    /* The engine loop is gone by now: curl must not call back into it while handles are removed. */
    if (n->multi) {
        curl_multi_setopt(n->multi, CURLMOPT_SOCKETFUNCTION, NULL);
        curl_multi_setopt(n->multi, CURLMOPT_TIMERFUNCTION, NULL);
    }
    while (n->running) {
        req *r = n->running;
        list_del(&n->running, r);
        curl_multi_remove_handle(n->multi, r->easy);
        req_free(r);
    }
    while (n->waiting) {
        req *r = n->waiting;
        list_del(&n->waiting, r);
        req_free(r);
    }
    curl_multi_cleanup(n->multi);
    qod_hmap_each(&n->subs, free_sub_cb, NULL);
    qod_hmap_dispose(&n->subs);
    qod_hmap_dispose(&n->tokens);
    qod_timers_dispose(&n->timers);
    pthread_mutex_destroy(&n->mu);
    qod_net_sim.destroy(n->sim);
    free(n->access_token);
    free(n);
}

/* The UE address the subscription names, its address in the PDU session that the PCF binds the policy to: the
 * registry's (live), else the device's private address (behind a NAT), else its public one; "" when none. */
static const char *ue_ipv4(const qod_net_session *ns)
{
    if (ns->sub && ns->sub->ipv4[0])
        return ns->sub->ipv4;
    return ns->device->ipv4_private[0] ? ns->device->ipv4_private : ns->device->ipv4_public;
}

static const char *ue_ipv6(const qod_net_session *ns)
{
    if (ns->sub && ns->sub->ipv6[0])
        return ns->sub->ipv6;
    return ns->device->ipv6;
}

static const char *ue_phone(const qod_net_session *ns)
{
    return ns->sub && ns->sub->phone[0] ? ns->sub->phone : ns->device->phone;
}

static const char *qos_ref(const qod_net_session *ns)
{
    return ns->profile->qos_reference[0] ? ns->profile->qos_reference : ns->profile->name;
}

/* Builds the subscription of a session; QOD_OK or an error with why in err. */
static int build(nef *n, const qod_net_session *ns, const char *token, qod_buf *body, char *key, size_t keycap,
                 char *err, size_t errcap)
{
    char dest[512];
    const char *phone = ue_phone(ns);
    snprintf(dest, sizeof dest, "%s%s", n->notify_prefix, token);
    qod_nef_sub_spec spec = {dest,        ue_ipv4(ns), ue_ipv6(ns), phone[0] == '+' ? phone + 1 : phone,
                             qos_ref(ns), ns->flows};
    int rc = qod_nef_subscription_body(&spec, body, err, errcap);
    char gpsi[40];
    snprintf(gpsi, sizeof gpsi, "msisdn-%s", spec.gpsi_msisdn);
    ue_key(key, keycap, spec.ue_ipv4, spec.ue_ipv6, gpsi, spec.qos_reference);
    return rc;
}

static int nef_check(void *self, const qod_net_session *ns)
{
    nef *n = self;
    if (ns->sandbox)
        return qod_net_sim.check(n->sim, ns);
    if (!ns->sub)
        return QOD_ERR_NOTFOUND;
    char err[256], key[256];
    qod_buf body;
    qod_buf_init(&body, 65536);
    int rc = build(n, ns, "check", &body, key, sizeof key, err, sizeof err);
    qod_buf_dispose(&body);
    if (rc == QOD_ERR_NOMEM)
        return rc;
    if (rc != QOD_OK) {
        QOD_INFO("nef", "not_applicable", "session=%s why=\"%s\"", ns->id, err);
        return QOD_ERR_UNSUPPORTED;
    }
    return QOD_OK;
}

static int nef_provision(void *self, const qod_net_session *ns)
{
    nef *n = self;
    if (ns->sandbox)
        return qod_net_sim.provision(n->sim, ns);
    char token[TOKEN_CAP], err[256] = "", key[256];
    qod_buf body;
    qod_buf_init(&body, 65536);
    int rc = qod_rand_token(TOKEN_BYTES, token, sizeof token);
    if (rc != QOD_OK)
        snprintf(err, sizeof err, "no random token: %s", qod_strerror(rc));
    rc = rc ? rc : build(n, ns, token, &body, key, sizeof key, err, sizeof err);
    if (rc == QOD_OK) {
        rc = post_job(n, JOB_PROVISION, ns->id, token, key, qod_buf_steal(&body));
        if (rc != QOD_OK)
            snprintf(err, sizeof err, "cannot reach the engine loop: %s", qod_strerror(rc));
    }
    qod_buf_dispose(&body);
    if (rc != QOD_OK) {
        QOD_WARN("nef", "provision_failed", "session=%s why=\"%s\"", ns->id, err);
        /* TERMINATED refuses a request and ends an available session: right at first and at restart. */
        n->sink.report_after(n->sink.ctx, ns->id, 0, QOD_NET_TERMINATED, err);
    }
    return QOD_OK;
}

static void nef_activated(void *self, const qod_net_session *ns)
{
    nef *n = self;
    if (ns->sandbox)
        qod_net_sim.activated(n->sim, ns);
    else if (post_job(n, JOB_ACTIVATED, ns->id, NULL, NULL, NULL) != QOD_OK)
        QOD_ERROR("nef", "post_failed", "session=%s what=activated", ns->id);
}

/* A live session's subscription is DELETEd at the NEF: that takes a round trip (and retries). */
static bool nef_release_async(void *self, const qod_net_session *ns)
{
    (void)self;
    return !ns->sandbox;
}

static void nef_release(void *self, const qod_net_session *ns)
{
    nef *n = self;
    if (ns->sandbox)
        qod_net_sim.release(n->sim, ns);
    else if (post_job(n, JOB_RELEASE, ns->id, NULL, NULL, NULL) != QOD_OK)
        QOD_ERROR("nef", "post_failed", "session=%s what=release", ns->id); /* stopping: nothing will answer */
}

/* ---- notifications ----------------------------------------------------------------------------------------------- */

static int nef_notify(void *self, const char *token, const char *body, size_t len)
{
    nef *n = self;
    char id[ID_CAP] = "", err[160] = "", res_id[QOD_NEF_RES_ID_MAX] = "";
    if (strlen(token) < TOKEN_CAP) {
        pthread_mutex_lock(&n->mu);
        sub *s = qod_hmap_get(&n->tokens, token);
        if (s) {
            snprintf(id, sizeof id, "%s", s->id);
            snprintf(res_id, sizeof res_id, "%s", s->res_id);
        }
        pthread_mutex_unlock(&n->mu);
    }
    if (!id[0]) {
        atomic_fetch_add(&n->rejected_unknown, 1);
        QOD_WARN("nef", "notification_unknown", "len=%zu", len);
        return QOD_ERR_NOTFOUND;
    }
    qod_nef_notification nt;
    if (qod_nef_notification_parse(body ? body : "", body ? len : 0, &nt, err, sizeof err) != QOD_OK) {
        atomic_fetch_add(&n->rejected_malformed, 1);
        QOD_WARN("nef", "notification_malformed", "session=%s why=\"%s\"", id, err);
        return QOD_ERR_INVALID;
    }
    if (res_id[0] && nt.subscription[0] && strcmp(res_id, nt.subscription) != 0) {
        /* Another subscription with the session's token: one a create's retry left behind (the NEF made it, but
         * its answer was lost). Its events are not the session's; it is deleted. */
        atomic_fetch_add(&n->rejected_stale, 1);
        QOD_WARN("nef", "notification_stale", "session=%s subscription=%s current=%s", id, nt.subscription, res_id);
        if (post_job(n, JOB_DELETE_STALE, "", NULL, nt.subscription, NULL) != QOD_OK)
            QOD_ERROR("nef", "post_failed", "session=%s what=delete_stale", id);
        return QOD_OK;
    }
    for (int i = 0; i < nt.n; i++) {
        qod_nef_event ev = nt.ev[i];
        atomic_fetch_add(&n->notifications[ev], 1);
        QOD_INFO("nef", "notification", "session=%s event=%s", id, qod_nef_event_name(ev));
        switch (ev) {
        case QOD_NEF_EV_SUCCESSFUL_RESOURCES_ALLOCATION:
            n->sink.report_unlocked(n->sink.ctx, id, QOD_NET_AVAILABLE, "NEF: SUCCESSFUL_RESOURCES_ALLOCATION");
            break;
        case QOD_NEF_EV_FAILED_RESOURCES_ALLOCATION:
        case QOD_NEF_EV_SESSION_TERMINATION:
            n->sink.report_unlocked(n->sink.ctx, id, QOD_NET_TERMINATED, qod_nef_event_name(ev));
            break;
        case QOD_NEF_EV_QOS_NOT_GUARANTEED:
            atomic_fetch_add(&n->not_guaranteed, 1);
            n->sink.notice(n->sink.ctx, id, "NEF: QOS_NOT_GUARANTEED");
            break;
        default:
            break; /* QOS_GUARANTEED and events we did not ask for: logged above */
        }
    }
    return QOD_OK;
}

static void nef_metrics(void *self, qod_buf *out)
{
    nef *n = self;
    qod_buf_puts(out, "# HELP qod_nef_requests_total Requests to the NEF by operation and outcome.\n"
                      "# TYPE qod_nef_requests_total counter\n");
    for (int o = 0; o < OP_COUNT; o++)
        for (int k = 0; k < OUT_COUNT; k++)
            qod_buf_printf(out, "qod_nef_requests_total{op=\"%s\",outcome=\"%s\"} %llu\n", op_names[o], out_names[k],
                           (unsigned long long)atomic_load(&n->requests[o][k]));
    qod_buf_puts(out, "# HELP qod_nef_notifications_total NEF notifications accepted, by user plane event.\n"
                      "# TYPE qod_nef_notifications_total counter\n");
    for (int e = 0; e < QOD_NEF_EV_COUNT; e++)
        qod_buf_printf(out, "qod_nef_notifications_total{event=\"%s\"} %llu\n", qod_nef_event_name((qod_nef_event)e),
                       (unsigned long long)atomic_load(&n->notifications[e]));
    qod_buf_printf(out,
                   "# HELP qod_nef_notifications_rejected_total NEF notifications refused (unknown token, malformed) "
                   "or not acted on (stale: of another subscription than the session's).\n"
                   "# TYPE qod_nef_notifications_rejected_total counter\n"
                   "qod_nef_notifications_rejected_total{reason=\"unknown\"} %llu\n"
                   "qod_nef_notifications_rejected_total{reason=\"malformed\"} %llu\n"
                   "qod_nef_notifications_rejected_total{reason=\"stale\"} %llu\n"
                   "# HELP qod_nef_qos_not_guaranteed_total QOS_NOT_GUARANTEED notifications.\n"
                   "# TYPE qod_nef_qos_not_guaranteed_total counter\nqod_nef_qos_not_guaranteed_total %llu\n"
                   "# HELP qod_nef_subscriptions Subscriptions held at the NEF.\n"
                   "# TYPE qod_nef_subscriptions gauge\nqod_nef_subscriptions %lld\n",
                   (unsigned long long)atomic_load(&n->rejected_unknown),
                   (unsigned long long)atomic_load(&n->rejected_malformed),
                   (unsigned long long)atomic_load(&n->rejected_stale),
                   (unsigned long long)atomic_load(&n->not_guaranteed), (long long)atomic_load(&n->held));
}

const qod_net_backend qod_net_nef = {
    .name = "nef",
    .create = nef_create,
    .destroy = nef_destroy,
    .check = nef_check,
    .provision = nef_provision,
    .activated = nef_activated,
    .release = nef_release,
    .release_async = nef_release_async,
    .notify = nef_notify,
    .metrics = nef_metrics,
};
