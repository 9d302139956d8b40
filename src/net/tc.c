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
 * - Reconciliation: at create every class 1:100..1:fffd and filter priority 0x100..0xfffd left on the managed
 *   interfaces (ours, from an earlier run) is removed; the engine then calls provision for every active session
 *   before it serves any request, which installs them again. Nothing outside that range is touched.
 * - Sandbox sessions are delegated to an embedded simulated network (the sandbox phone-number table keeps
 *   working), without enforcement.
 * Devices are IPv4 only: a live device without an IPv4 address in the subscriber registry is refused at check
 * (SERVICE_NOT_APPLICABLE), as is a flow description that cannot be expressed as u32 filters.
 * Every call comes with the engine lock held; each does a few netlink round trips (microseconds each). */
#include "net/backend.h"

#include "net/tc_nl.h"
#include "net/tc_plan.h"
#include "util/err.h"
#include "util/hmap.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NMINORS 0x10000u

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
    void *sim;               /* the simulated network for sandbox sessions */
    qod_tc_nl *nl;
    side down, up;           /* up.ifindex is 0 without an uplink */
    int64_t budget_kbps;     /* guaranteed rates allowed per direction */
    qod_hmap grants;         /* session id → grant */
    uint8_t used[NMINORS / 8];
    uint32_t next_minor;
} tc;

static bool minor_used(const tc *t, uint32_t m)
{
    return t->used[m / 8] & (1u << (m % 8));
}

static void minor_mark(tc *t, uint32_t m, bool on)
{
    if (on)
        t->used[m / 8] |= (uint8_t)(1u << (m % 8));
    else
        t->used[m / 8] &= (uint8_t) ~(1u << (m % 8));
}

/* The next free session class, round robin (so a handle is not reused at once); 0 when all are taken. */
static uint32_t minor_alloc(tc *t)
{
    uint32_t span = QOD_TC_MINOR_LAST - QOD_TC_MINOR_FIRST + 1;
    for (uint32_t i = 0; i < span; i++) {
        uint32_t m = QOD_TC_MINOR_FIRST + (t->next_minor - QOD_TC_MINOR_FIRST + i) % span;
        if (!minor_used(t, m)) {
            minor_mark(t, m, true);
            t->next_minor = m + 1 > QOD_TC_MINOR_LAST ? QOD_TC_MINOR_FIRST : m + 1;
            return m;
        }
    }
    return 0;
}

/* ---- start: root tree and reconciliation ----------------------------------------------------------------- */

/* Removes every filter priority and class of our range from one interface. */
static int sweep(tc *t, const side *s, char *err, size_t errcap)
{
    qod_tc_state st;
    int rc = qod_tc_nl_dump(t->nl, s->ifindex, &st, err, errcap);
    int filters = 0, classes = 0;
    uint32_t done = 0;
    for (size_t i = 0; rc == QOD_OK && i < st.nfilters; i++) {
        uint32_t pref = st.filters[i].pref;
        /* A priority shows as several entries (hash table, nodes) in a row; one delete takes them all. */
        if (qod_tc_plan_owned(pref) && pref != done) {
            rc = qod_tc_nl_filters_del(t->nl, s->ifindex, pref, err, errcap);
            done = pref;
            filters++;
        }
    }
    for (size_t i = 0; rc == QOD_OK && i < st.nclasses; i++) {
        uint32_t h = st.classes[i].handle;
        if (h >> 16 == QOD_TC_MAJOR && qod_tc_plan_owned(h & 0xffffu)) {
            rc = qod_tc_nl_class_del(t->nl, s->ifindex, h & 0xffffu, err, errcap);
            classes++;
        }
    }
    qod_tc_state_dispose(&st);
    if (rc == QOD_OK && (filters || classes))
        QOD_INFO("tc", "reconciled", "dev=%s removed_classes=%d removed_filter_prios=%d", s->name, classes,
                 filters);
    return rc;
}

static int side_open(tc *t, side *s, const char *name, bool upstream, char *err, size_t errcap)
{
    char why[256] = "";
    s->name = name;
    s->upstream = upstream;
    qod_tc_class_spec link = qod_tc_plan_link_class(t->cfg.tc_link_kbps);
    qod_tc_class_spec be = qod_tc_plan_best_effort_class(t->cfg.tc_link_kbps, t->cfg.tc_share);
    int rc = qod_tc_nl_ifindex(t->nl, name, &s->ifindex, why, sizeof why);
    rc = rc ? rc : qod_tc_nl_setup(t->nl, s->ifindex, &link, &be, why, sizeof why);
    rc = rc ? rc : sweep(t, s, why, sizeof why);
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
    int rc = qod_net_sim.create(cfg, sink, &t->sim, err, errcap);
    rc = rc ? rc : qod_tc_nl_open(&t->nl, err, errcap);
    rc = rc ? rc : side_open(t, &t->down, cfg->tc_dev, false, err, errcap);
    if (rc == QOD_OK && cfg->tc_uplink_dev && cfg->tc_uplink_dev[0])
        rc = side_open(t, &t->up, cfg->tc_uplink_dev, true, err, errcap);
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
    char why[256];
    qod_tc_matches *m = malloc(sizeof *m);
    if (!m)
        return QOD_ERR_NOMEM;
    int rc = qod_tc_plan_matches(ns->sub->ipv4, ns->flows, m, why, sizeof why);
    free(m);
    if (rc != QOD_OK) {
        QOD_INFO("tc", "not_applicable", "phone=%s why=\"%s\"", ns->sub->phone, why);
        return QOD_ERR_UNSUPPORTED;
    }
    return QOD_OK;
}

/* Installs (or re-installs) one direction of a session: class, leaf, filters. */
static int install_side(tc *t, const side *s, uint32_t minor, const qod_net_session *ns, const qod_tc_matches *m,
                        char *err, size_t errcap)
{
    const qod_profile *p = ns->profile;
    qod_tc_class_spec c =
        s->upstream
            ? qod_tc_plan_session_class(p->min_up_kbps, p->max_up_kbps, t->cfg.tc_link_kbps, p->priority,
                                        p->delay_budget_us)
            : qod_tc_plan_session_class(p->min_down_kbps, p->max_down_kbps, t->cfg.tc_link_kbps, p->priority,
                                        p->delay_budget_us);
    int rc = qod_tc_nl_class_put(t->nl, s->ifindex, minor, QOD_TC_MINOR_LINK, &c, err, errcap);
    return rc ? rc : qod_tc_nl_filters_put(t->nl, s->ifindex, minor, minor, m, s->upstream, err, errcap);
}

/* Removes one direction of a session; failures are logged, the rest is still attempted. */
static void remove_side(tc *t, const side *s, uint32_t minor, const char *id)
{
    char why[256];
    int rc = qod_tc_nl_filters_del(t->nl, s->ifindex, minor, why, sizeof why);
    if (rc == QOD_OK)
        rc = qod_tc_nl_class_del(t->nl, s->ifindex, minor, why, sizeof why);
    if (rc != QOD_OK)
        QOD_ERROR("tc", "release_failed", "session=%s dev=%s class=1:%x why=\"%s\"", id, s->name, minor, why);
}

static void drop_grant(tc *t, grant *g)
{
    remove_side(t, &t->down, g->minor, g->id);
    if (t->up.ifindex)
        remove_side(t, &t->up, g->minor, g->id);
    t->down.used_kbps -= g->down_kbps;
    t->up.used_kbps -= g->up_kbps;
    minor_mark(t, g->minor, false);
    qod_hmap_del(&t->grants, g->id);
    free(g);
}

/* Admits the session (or finds its earlier grant) and reserves a class; why in err on refusal. */
static grant *admit(tc *t, const qod_net_session *ns, char *err, size_t errcap)
{
    grant *g = qod_hmap_get(&t->grants, ns->id);
    if (g)
        return g;
    int64_t down = qod_tc_plan_reserved_kbps(ns->profile->min_down_kbps, t->cfg.tc_link_kbps);
    int64_t up = t->up.ifindex ? qod_tc_plan_reserved_kbps(ns->profile->min_up_kbps, t->cfg.tc_link_kbps) : 0;
    if (t->down.used_kbps + down > t->budget_kbps || t->up.used_kbps + up > t->budget_kbps) {
        snprintf(err, errcap,
                 "guaranteed capacity exhausted: needs %lld/%lld kbps down/up, %lld/%lld of %lld in use",
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
        minor_mark(t, g->minor, false);
        free(g);
        snprintf(err, errcap, "out of memory");
        return NULL;
    }
    t->down.used_kbps += down;
    t->up.used_kbps += up;
    return g;
}

static int tc_provision(void *self, const qod_net_session *ns)
{
    tc *t = self;
    if (ns->sandbox)
        return qod_net_sim.provision(t->sim, ns);
    char why[256] = "";
    int rc = QOD_ERR_NOTFOUND;
    grant *g = NULL;
    qod_tc_matches *m = malloc(sizeof *m);
    if (!m) {
        snprintf(why, sizeof why, "out of memory");
        rc = QOD_ERR_NOMEM;
    } else if (!ns->sub) {
        snprintf(why, sizeof why, "the device is no longer in the subscriber registry");
    } else if ((rc = qod_tc_plan_matches(ns->sub->ipv4, ns->flows, m, why, sizeof why)) == QOD_OK) {
        g = admit(t, ns, why, sizeof why);
        rc = g ? QOD_OK : QOD_ERR_LIMIT;
    }
    if (rc == QOD_OK) {
        rc = install_side(t, &t->down, g->minor, ns, m, why, sizeof why);
        if (rc == QOD_OK && t->up.ifindex)
            rc = install_side(t, &t->up, g->minor, ns, m, why, sizeof why);
        if (rc != QOD_OK) {
            QOD_ERROR("tc", "provision_failed", "session=%s device=%s class=1:%x why=\"%s\"", ns->id,
                      ns->sub->ipv4, g->minor, why);
            drop_grant(t, g);
        }
    } else if (rc == QOD_ERR_LIMIT) {
        QOD_INFO("tc", "admission_refused", "session=%s profile=%s why=\"%s\"", ns->id, ns->profile->name, why);
    } else {
        QOD_ERROR("tc", "provision_failed", "session=%s why=\"%s\"", ns->id, why);
    }
    free(m);
    if (rc == QOD_OK) {
        QOD_INFO("tc", "enforced", "session=%s device=%s profile=%s class=1:%x down_kbps=%lld up_kbps=%lld", ns->id,
                 ns->sub->ipv4, ns->profile->name, g->minor, (long long)g->down_kbps, (long long)g->up_kbps);
        t->sink.report_after(t->sink.ctx, ns->id, 0, QOD_NET_AVAILABLE, "enforced");
    } else {
        /* TERMINATED ends a request as refused (UNAVAILABLE) and an available session as network-terminated,
         * which is right for both the first provision and the one at restart. */
        t->sink.report_after(t->sink.ctx, ns->id, 0, QOD_NET_TERMINATED, why);
    }
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
    grant *g = qod_hmap_get(&t->grants, ns->id);
    if (!g)
        return;
    QOD_INFO("tc", "released", "session=%s class=1:%x", ns->id, g->minor);
    drop_grant(t, g);
}

const qod_net_backend qod_net_tc = {
    .name = "tc",
    .create = tc_create,
    .destroy = tc_destroy,
    .check = tc_check,
    .provision = tc_provision,
    .activated = tc_activated,
    .release = tc_release,
};
