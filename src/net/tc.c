/* The Linux traffic-control backend (--network tc): enforces each live session on the router that carries the
 * devices' traffic, through netlink (tc_nl), with an HTB tree planned by tc_plan.
 *
 * - At start: an HTB root 1: on --tc-dev (and --tc-uplink-dev) with the link class 1:1 and the best-effort
 *   default class 1:fffe. Missing kernel features (htb, bfifo, u32) or a missing interface fail the start.
 * - provision: admission (the guaranteed rates of enforced sessions stay within --tc-guaranteed-share of the
 *   link, per direction), then one HTB class 1:N per session with the profile's guaranteed rate, ceiling,
 *   priority and a delay-sized queue, and u32 filters of priority N sending the device's packets (narrowed by
 *   applicationServer and ports) into it; downstream on --tc-dev (device = destination), upstream on the uplink
 *   (device = source). The outcome is reported through the sink: AVAILABLE when enforced; otherwise the
 *   session ends (TERMINATED: UNAVAILABLE for a request, NETWORK_TERMINATED for a session already available).
 * - release: the session's filters, then its class (the kernel refuses to delete a class filters point to).
 * - Reconciliation, without a gap in enforcement: at create, the classes 1:100..1:fffd and filter priorities
 *   0x100..0xfffd found on the managed interfaces (left by an earlier run) are kept but marked stale, and new
 *   sessions never get their handles. The engine then provisions every active session again (fresh handles);
 *   the first tick of the engine loop, which runs only after that, removes everything stale. Until then an old
 *   class may still carry its device's traffic, with the same parameters. Nothing outside the range is touched.
 * - Sandbox sessions are delegated to an embedded simulated network (the sandbox phone-number table keeps
 *   working), without enforcement.
 * Devices are IPv4 only: a live device without an IPv4 address in the subscriber registry, or named by its IPv6
 * address, is refused at check (SERVICE_NOT_APPLICABLE), as is a flow description that cannot be expressed as u32
 * filters.
 *
 * Threads: the vtable calls come with the engine lock held; the reconciliation tick (loop thread) and metrics
 * come without it. A mutex of our own guards the state and the netlink socket; it is never held while calling
 * the sink. Each call does a few netlink round trips (0.1-0.5 ms each, growing with the sessions installed; the
 * kernel handles each inside sendmsg and waits there for its RTNL lock, so nothing bounds one while another
 * process holds that lock). */
#include "net/backend.h"

#include "net/tc_nl.h"
#include "net/tc_plan.h"
#include "util/err.h"
#include "util/hmap.h"
#include "util/log.h"

#include <net/if.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NMINORS 0x10000u
#define SWEEP_RETRY_MS 5000

typedef struct {
    char id[37];
    uint32_t minor;
    int64_t down_kbps, up_kbps; /* reserved for admission */
} grant;

/* One shaped interface (downstream or upstream). */
typedef struct {
    const char *name;
    int ifindex;
    bool upstream;
    int64_t used_kbps;
} side;

typedef struct {
    qod_net_config cfg;
    qod_net_sink sink;
    void *sim;          /* the simulated network for sandbox sessions */
    pthread_mutex_t mu; /* guards everything below */
    qod_tc_nl *nl;
    side down, up;              /* up.ifindex is 0 without an uplink */
    int64_t budget_kbps;        /* guaranteed rates allowed per direction */
    qod_hmap grants;            /* session id → grant */
    uint8_t used[NMINORS / 8];  /* handles held by a grant or stale */
    uint8_t stale[NMINORS / 8]; /* handles found at start or left by a failed release, removed by the tick */
    uint32_t next_minor;
    bool swept;       /* nothing stale is left to remove */
    int64_t sweep_at; /* monotonic ms of the next try at what was not */
    uint64_t refused, failures;
} tc;

static bool bit(const uint8_t *map, uint32_t m)
{
    return map[m / 8] & (1u << (m % 8));
}

static void set_bit(uint8_t *map, uint32_t m, bool on)
{
    if (on)
        map[m / 8] |= (uint8_t)(1u << (m % 8));
    else
        map[m / 8] &= (uint8_t) ~(1u << (m % 8));
}

/* The next free session class, round robin (so a handle is not reused at once); 0 when all are taken. */
static uint32_t minor_alloc(tc *t)
{
    uint32_t span = QOD_TC_MINOR_LAST - QOD_TC_MINOR_FIRST + 1;
    for (uint32_t i = 0; i < span; i++) {
        uint32_t m = QOD_TC_MINOR_FIRST + (t->next_minor - QOD_TC_MINOR_FIRST + i) % span;
        if (!bit(t->used, m)) {
            set_bit(t->used, m, true);
            t->next_minor = m + 1 > QOD_TC_MINOR_LAST ? QOD_TC_MINOR_FIRST : m + 1;
            return m;
        }
    }
    return 0;
}

/* ---- reconciliation -------------------------------------------------------------------------------------------- */

/* Marks every class and filter priority of our range on one interface as stale. */
static int mark_stale(tc *t, const side *s, char *err, size_t errcap)
{
    qod_tc_state st;
    int rc = qod_tc_nl_dump(t->nl, s->ifindex, &st, err, errcap);
    for (size_t i = 0; rc == QOD_OK && i < st.nfilters; i++)
        if (qod_tc_plan_owned(st.filters[i].pref))
            set_bit(t->stale, st.filters[i].pref, true);
    for (size_t i = 0; rc == QOD_OK && i < st.nclasses; i++) {
        uint32_t h = st.classes[i].handle;
        if (h >> 16 == QOD_TC_MAJOR && qod_tc_plan_owned(h & 0xffffu))
            set_bit(t->stale, h & 0xffffu, true);
    }
    qod_tc_state_dispose(&st);
    for (uint32_t m = QOD_TC_MINOR_FIRST; m <= QOD_TC_MINOR_LAST; m++)
        if (bit(t->stale, m))
            set_bit(t->used, m, true);
    return rc;
}

/* Removes one handle's filters, then its class, from one interface. */
static int remove_handle(tc *t, const side *s, uint32_t minor, char *err, size_t errcap)
{
    int rc = qod_tc_nl_filters_del(t->nl, s->ifindex, minor, err, errcap);
    return rc ? rc : qod_tc_nl_class_del(t->nl, s->ifindex, minor, err, errcap);
}

/* Removes everything stale; the number of handles that could not be. Caller holds the mutex. */
static int sweep(tc *t)
{
    int removed = 0, failed = 0;
    for (uint32_t m = QOD_TC_MINOR_FIRST; m <= QOD_TC_MINOR_LAST; m++) {
        if (!bit(t->stale, m))
            continue;
        char why[256];
        int rc = remove_handle(t, &t->down, m, why, sizeof why);
        if (rc == QOD_OK && t->up.ifindex)
            rc = remove_handle(t, &t->up, m, why, sizeof why);
        if (rc != QOD_OK) {
            /* The handle stays reserved, so no session is ever put in a class we could not clean. */
            QOD_ERROR("tc", "reconcile_failed", "class=1:%x why=\"%s\"", m, why);
            failed++;
            continue;
        }
        set_bit(t->stale, m, false);
        set_bit(t->used, m, false);
        removed++;
    }
    t->swept = failed == 0;
    QOD_INFO("tc", "reconciled", "removed_stale_classes=%d failed=%d enforced_sessions=%zu", removed, failed,
             qod_hmap_count(&t->grants));
    return failed;
}

/* The first tick of the engine loop runs after the engine re-provisioned every active session at start. Handles
 * that could not be removed (then, or at a session's release) are tried again every SWEEP_RETRY_MS. */
static int64_t tc_tick(void *arg, int64_t now)
{
    tc *t = arg;
    int64_t next = -1;
    pthread_mutex_lock(&t->mu);
    if (!t->swept && now >= t->sweep_at && sweep(t) > 0)
        t->sweep_at = now + SWEEP_RETRY_MS;
    if (!t->swept)
        next = t->sweep_at;
    pthread_mutex_unlock(&t->mu);
    return next;
}

/* ---- start ---------------------------------------------------------------------------------------------------- */

static int side_open(tc *t, side *s, const char *name, bool upstream, char *err, size_t errcap)
{
    char why[256] = "";
    s->name = name;
    s->upstream = upstream;
    qod_tc_class_spec link = qod_tc_plan_link_class(t->cfg.tc_link_kbps);
    qod_tc_class_spec be = qod_tc_plan_best_effort_class(t->cfg.tc_link_kbps, t->cfg.tc_share);
    int rc = qod_tc_nl_ifindex(t->nl, name, &s->ifindex, why, sizeof why);
    rc = rc ? rc : qod_tc_nl_setup(t->nl, s->ifindex, &link, &be, why, sizeof why);
    rc = rc ? rc : mark_stale(t, s, why, sizeof why);
    if (rc != QOD_OK)
        snprintf(err, errcap, "tc: %s: %s", name, why);
    return rc;
}

static void tc_destroy(void *self);

static int tc_create(const qod_net_config *cfg, const qod_net_sink *sink, void **self, char *err, size_t errcap)
{
    *self = NULL;
    if (!cfg->tc_dev || !cfg->tc_dev[0]) {
        snprintf(err, errcap, "tc: --tc-dev is required with --network tc");
        return QOD_ERR_INVALID;
    }
    if (cfg->tc_link_kbps <= 0) {
        snprintf(err, errcap, "tc: --tc-link-rate must be a positive rate");
        return QOD_ERR_INVALID;
    }
    tc *t = calloc(1, sizeof *t);
    if (!t)
        return QOD_ERR_NOMEM;
    t->cfg = *cfg;
    t->sink = *sink;
    t->budget_kbps = qod_tc_plan_budget_kbps(cfg->tc_link_kbps, cfg->tc_share);
    t->next_minor = QOD_TC_MINOR_FIRST;
    qod_hmap_init(&t->grants);
    pthread_mutex_init(&t->mu, NULL);
    int rc = qod_net_sim.create(cfg, sink, &t->sim, err, errcap);
    unsigned down_if = if_nametoindex(cfg->tc_dev);
    if (rc == QOD_OK && down_if && cfg->tc_uplink_dev && cfg->tc_uplink_dev[0] &&
        if_nametoindex(cfg->tc_uplink_dev) == down_if) {
        /* One tree would hold both directions under the same handles: the second would replace the first. Checked
         * before either is touched. */
        snprintf(err, errcap,
                 "tc: --tc-uplink-dev %s is the --tc-dev interface itself; name the interface toward the servers, or "
                 "leave it out",
                 cfg->tc_uplink_dev);
        rc = QOD_ERR_INVALID;
    }
    rc = rc ? rc : qod_tc_nl_open(&t->nl, err, errcap);
    rc = rc ? rc : side_open(t, &t->down, cfg->tc_dev, false, err, errcap);
    if (rc == QOD_OK && cfg->tc_uplink_dev && cfg->tc_uplink_dev[0])
        rc = side_open(t, &t->up, cfg->tc_uplink_dev, true, err, errcap);
    /* Without an engine loop (tools, tests) there is no later moment: reconcile now. */
    if (rc == QOD_OK && (!cfg->loop || qod_loop_add_tick(cfg->loop, tc_tick, t) != QOD_OK))
        sweep(t);
    if (rc != QOD_OK) {
        tc_destroy(t);
        return rc;
    }
    QOD_INFO("tc", "started", "dev=%s uplink=%s link_kbps=%lld guaranteed_budget_kbps=%lld", cfg->tc_dev,
             t->up.ifindex ? cfg->tc_uplink_dev : "-", (long long)cfg->tc_link_kbps, (long long)t->budget_kbps);
    *self = t;
    return QOD_OK;
}

static int free_grant(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    free(val);
    return 0;
}

/* The classes stay in the kernel: enforcement goes on while qodd restarts, and the next start reconciles. */
static void tc_destroy(void *self)
{
    tc *t = self;
    if (!t)
        return;
    qod_hmap_each(&t->grants, free_grant, NULL);
    qod_hmap_dispose(&t->grants);
    qod_tc_nl_close(t->nl);
    qod_net_sim.destroy(t->sim);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

/* ---- sessions ---------------------------------------------------------------------------------------------- */

static int tc_check(void *self, const qod_net_session *ns)
{
    tc *t = self;
    if (ns->sandbox)
        return qod_net_sim.check(t->sim, ns);
    if (!ns->sub)
        return QOD_ERR_NOTFOUND;
    if (qod_device_choose(ns->device) == QOD_DEV_IPV6) {
        /* The filters match IPv4 only: a device the app names by its IPv6 address talks IPv6 to it, which would
         * stay best effort behind an AVAILABLE session. */
        QOD_INFO("tc", "not_applicable", "phone=%s why=\"named by its IPv6 address; only IPv4 is shaped\"",
                 ns->sub->phone);
        return QOD_ERR_UNSUPPORTED;
    }
    char why[256];
    qod_tc_matches *m = malloc(sizeof *m);
    if (!m)
        return QOD_ERR_NOMEM;
    int rc = qod_tc_plan_matches(ns->sub->ipv4, ns->flows, m, why, sizeof why);
    free(m);
    if (rc != QOD_OK) {
        QOD_INFO("tc", "not_applicable", "phone=%s why=\"%s\"", ns->sub->phone, why);
        return rc == QOD_ERR_NOMEM ? rc : QOD_ERR_UNSUPPORTED;
    }
    return QOD_OK;
}

/* Installs (or re-installs) one direction of a session: class, leaf, filters. */
static int install_side(tc *t, const side *s, uint32_t minor, const qod_profile *p, const qod_tc_matches *m, char *err,
                        size_t errcap)
{
    qod_tc_class_spec c = s->upstream ? qod_tc_plan_session_class(p->min_up_kbps, p->max_up_kbps, t->cfg.tc_link_kbps,
                                                                  p->priority, p->delay_budget_us)
                                      : qod_tc_plan_session_class(p->min_down_kbps, p->max_down_kbps,
                                                                  t->cfg.tc_link_kbps, p->priority, p->delay_budget_us);
    int rc = qod_tc_nl_class_put(t->nl, s->ifindex, minor, QOD_TC_MINOR_LINK, &c, err, errcap);
    return rc ? rc : qod_tc_nl_filters_put(t->nl, s->ifindex, minor, minor, m, s->upstream, err, errcap);
}

/* Removes a session's classes and filters and returns its reservation. Caller holds the mutex. */
static void drop_grant(tc *t, grant *g)
{
    const side *sides[2] = {&t->down, t->up.ifindex ? &t->up : NULL};
    bool clean = true;
    for (int i = 0; i < 2; i++) {
        char why[256];
        if (sides[i] && remove_handle(t, sides[i], g->minor, why, sizeof why) != QOD_OK) {
            QOD_ERROR("tc", "release_failed", "session=%s dev=%s class=1:%x why=\"%s\"", g->id, sides[i]->name,
                      g->minor, why);
            t->failures++;
            clean = false;
        }
    }
    t->down.used_kbps -= g->down_kbps;
    t->up.used_kbps -= g->up_kbps;
    /* A handle that could not be cleaned is never reused before it is: the loop's tick tries again. */
    if (clean) {
        set_bit(t->used, g->minor, false);
    } else {
        set_bit(t->stale, g->minor, true);
        t->swept = false;
        if (t->cfg.loop)
            qod_loop_wake(t->cfg.loop);
    }
    qod_hmap_del(&t->grants, g->id);
    free(g);
}

/* Admits the session (or finds its earlier grant) and reserves a class; why in err on refusal. */
static grant *admit(tc *t, const qod_net_session *ns, char *err, size_t errcap)
{
    grant *g = qod_hmap_get(&t->grants, ns->id);
    if (g)
        return g;
    if (qod_hmap_count(&t->grants) >= QOD_TC_SESSIONS_MAX) {
        snprintf(err, errcap, "%d sessions are enforced already, the most one interface takes", QOD_TC_SESSIONS_MAX);
        return NULL;
    }
    int64_t down = qod_tc_plan_reserved_kbps(ns->profile->min_down_kbps, t->cfg.tc_link_kbps);
    int64_t up = t->up.ifindex ? qod_tc_plan_reserved_kbps(ns->profile->min_up_kbps, t->cfg.tc_link_kbps) : 0;
    if (t->down.used_kbps + down > t->budget_kbps || t->up.used_kbps + up > t->budget_kbps) {
        snprintf(err, errcap, "guaranteed capacity exhausted: needs %lld/%lld kbps down/up, %lld/%lld of %lld in use",
                 (long long)down, (long long)up, (long long)t->down.used_kbps, (long long)t->up.used_kbps,
                 (long long)t->budget_kbps);
        return NULL;
    }
    g = calloc(1, sizeof *g);
    if (!g || !(g->minor = minor_alloc(t))) {
        snprintf(err, errcap, g ? "no free traffic class" : "out of memory");
        free(g);
        return NULL;
    }
    snprintf(g->id, sizeof g->id, "%s", ns->id);
    g->down_kbps = down;
    g->up_kbps = up;
    if (qod_hmap_put(&t->grants, g->id, g) != QOD_OK) {
        set_bit(t->used, g->minor, false);
        free(g);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    t->down.used_kbps += down;
    t->up.used_kbps += up;
    return g;
}

/* Admits and installs a live session; QOD_OK, QOD_ERR_LIMIT (admission) or another error, why in err. */
static int enforce(tc *t, const qod_net_session *ns, const qod_tc_matches *m, uint32_t *minor, char *err, size_t errcap)
{
    pthread_mutex_lock(&t->mu);
    grant *g = admit(t, ns, err, errcap);
    int rc = g ? QOD_OK : QOD_ERR_LIMIT;
    if (g) {
        *minor = g->minor;
        rc = install_side(t, &t->down, g->minor, ns->profile, m, err, errcap);
        if (rc == QOD_OK && t->up.ifindex)
            rc = install_side(t, &t->up, g->minor, ns->profile, m, err, errcap);
        if (rc != QOD_OK) {
            t->failures++;
            drop_grant(t, g);
        }
    } else {
        t->refused++;
    }
    pthread_mutex_unlock(&t->mu);
    return rc;
}

static int tc_provision(void *self, const qod_net_session *ns)
{
    tc *t = self;
    if (ns->sandbox)
        return qod_net_sim.provision(t->sim, ns);
    char why[256] = "";
    uint32_t minor = 0;
    int rc = QOD_ERR_NOTFOUND;
    qod_tc_matches *m = malloc(sizeof *m);
    if (!m) {
        snprintf(why, sizeof why, "out of memory");
        rc = QOD_ERR_NOMEM;
    } else if (!ns->sub) {
        snprintf(why, sizeof why, "the device is no longer in the subscriber registry");
    } else if ((rc = qod_tc_plan_matches(ns->sub->ipv4, ns->flows, m, why, sizeof why)) == QOD_OK) {
        rc = enforce(t, ns, m, &minor, why, sizeof why);
    }
    free(m);
    if (rc == QOD_OK) {
        QOD_INFO("tc", "enforced", "session=%s device=%s profile=%s class=1:%x", ns->id, ns->sub->ipv4,
                 ns->profile->name, minor);
        t->sink.report_after(t->sink.ctx, ns->id, 0, QOD_NET_AVAILABLE, "enforced");
        return QOD_OK;
    }
    if (rc == QOD_ERR_LIMIT)
        QOD_INFO("tc", "admission_refused", "session=%s profile=%s why=\"%s\"", ns->id, ns->profile->name, why);
    else
        QOD_ERROR("tc", "provision_failed", "session=%s class=1:%x why=\"%s\"", ns->id, minor, why);
    /* TERMINATED ends a request as refused (UNAVAILABLE) and an available session as network-terminated,
     * which is right both for the first provision and for the one at restart. */
    t->sink.report_after(t->sink.ctx, ns->id, 0, QOD_NET_TERMINATED, why);
    return QOD_OK;
}

static void tc_activated(void *self, const qod_net_session *ns)
{
    tc *t = self;
    if (ns->sandbox)
        qod_net_sim.activated(t->sim, ns);
}

static void tc_release(void *self, const qod_net_session *ns)
{
    tc *t = self;
    if (ns->sandbox) {
        qod_net_sim.release(t->sim, ns);
        return;
    }
    pthread_mutex_lock(&t->mu);
    grant *g = qod_hmap_get(&t->grants, ns->id);
    if (g) {
        QOD_INFO("tc", "released", "session=%s class=1:%x", ns->id, g->minor);
        drop_grant(t, g);
    }
    pthread_mutex_unlock(&t->mu);
}

static void tc_metrics(void *self, qod_buf *out)
{
    tc *t = self;
    pthread_mutex_lock(&t->mu);
    qod_buf_printf(out,
                   "# HELP qod_tc_sessions Sessions enforced by traffic control.\n# TYPE qod_tc_sessions gauge\n"
                   "qod_tc_sessions %zu\n"
                   "# HELP qod_tc_guaranteed_kbps Guaranteed rates reserved, by direction.\n"
                   "# TYPE qod_tc_guaranteed_kbps gauge\n"
                   "qod_tc_guaranteed_kbps{direction=\"down\"} %lld\nqod_tc_guaranteed_kbps{direction=\"up\"} %lld\n"
                   "# HELP qod_tc_guaranteed_budget_kbps Guaranteed rates allowed per direction (share of the link).\n"
                   "# TYPE qod_tc_guaranteed_budget_kbps gauge\nqod_tc_guaranteed_budget_kbps %lld\n"
                   "# HELP qod_tc_admission_refusals_total Sessions refused for lack of guaranteed capacity.\n"
                   "# TYPE qod_tc_admission_refusals_total counter\nqod_tc_admission_refusals_total %llu\n"
                   "# HELP qod_tc_netlink_failures_total Sessions the kernel failed to install or remove.\n"
                   "# TYPE qod_tc_netlink_failures_total counter\nqod_tc_netlink_failures_total %llu\n",
                   qod_hmap_count(&t->grants), (long long)t->down.used_kbps, (long long)t->up.used_kbps,
                   (long long)t->budget_kbps, (unsigned long long)t->refused, (unsigned long long)t->failures);
    pthread_mutex_unlock(&t->mu);
}

const qod_net_backend qod_net_tc = {
    .name = "tc",
    .create = tc_create,
    .destroy = tc_destroy,
    .check = tc_check,
    .provision = tc_provision,
    .activated = tc_activated,
    .release = tc_release,
    .metrics = tc_metrics,
};
