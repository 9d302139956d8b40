#include "net/tc_nl.h"

#include "util/err.h"
#include "util/log.h"

#include <linux/if_ether.h>
#include <netlink/netlink.h>
#include <netlink/route/class.h>
#include <netlink/route/classifier.h>
#include <netlink/route/cls/u32.h>
#include <netlink/route/link.h>
#include <netlink/route/qdisc.h>
#include <netlink/route/qdisc/fifo.h>
#include <netlink/route/qdisc/htb.h>
#include <netlink/route/tc.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>

/* A kernel that has not answered a tc request within this time is treated as failed. */
#define NL_TIMEOUT_S 2
#define HANDLE(maj, min) (((uint32_t)(maj) << 16) | ((uint32_t)(min)&0xffffu))
#define TCP(x) ((struct rtnl_tc *)(x))

struct qod_tc_nl {
    struct nl_sock *sk;
};

/* Translates a libnl error of operation `what` into ours, with the reason in err. */
static int fail(int nlerr, const char *what, char *err, size_t errcap)
{
    int e = nlerr < 0 ? -nlerr : nlerr;
    if (e == NLE_PERM) {
        snprintf(err, errcap, "%s: %s (qodd needs CAP_NET_ADMIN for --network tc)", what, nl_geterror(e));
        return QOD_ERR_DENIED;
    }
    snprintf(err, errcap, "%s: %s", what, nl_geterror(e));
    return QOD_ERR_NETWORK;
}

int qod_tc_nl_open(qod_tc_nl **out, char *err, size_t errcap)
{
    *out = NULL;
    qod_tc_nl *nl = calloc(1, sizeof *nl);
    if (!nl)
        return QOD_ERR_NOMEM;
    int rc = QOD_OK;
    nl->sk = nl_socket_alloc();
    if (!nl->sk) {
        rc = QOD_ERR_NOMEM;
    } else {
        int e = nl_connect(nl->sk, NETLINK_ROUTE);
        if (e < 0)
            rc = fail(e, "cannot open a netlink route socket", err, errcap);
    }
    if (rc == QOD_OK) {
        struct timeval tv = {NL_TIMEOUT_S, 0};
        setsockopt(nl_socket_get_fd(nl->sk), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        *out = nl;
    } else {
        qod_tc_nl_close(nl);
    }
    return rc;
}

void qod_tc_nl_close(qod_tc_nl *nl)
{
    if (!nl)
        return;
    if (nl->sk)
        nl_socket_free(nl->sk);
    free(nl);
}

int qod_tc_nl_ifindex(qod_tc_nl *nl, const char *dev, int *ifindex, char *err, size_t errcap)
{
    struct rtnl_link *link = NULL;
    int e = rtnl_link_get_kernel(nl->sk, 0, dev, &link);
    if (e < 0) {
        if (e == -NLE_OBJ_NOTFOUND || e == -NLE_NODEV) {
            snprintf(err, errcap, "no network interface named '%s'", dev);
            return QOD_ERR_NOTFOUND;
        }
        return fail(e, "cannot look up the interface", err, errcap);
    }
    *ifindex = rtnl_link_get_ifindex(link);
    rtnl_link_put(link);
    return QOD_OK;
}

/* ---- classes and leaves ---------------------------------------------------------------------------------- */

static int leaf_put(qod_tc_nl *nl, int ifindex, uint32_t minor, uint32_t limit, char *err, size_t errcap)
{
    struct rtnl_qdisc *q = rtnl_qdisc_alloc();
    if (!q)
        return QOD_ERR_NOMEM;
    rtnl_tc_set_ifindex(TCP(q), ifindex);
    rtnl_tc_set_parent(TCP(q), HANDLE(QOD_TC_MAJOR, minor));
    rtnl_tc_set_handle(TCP(q), HANDLE(minor, 0));
    int e = rtnl_tc_set_kind(TCP(q), "bfifo");
    e = e < 0 ? e : rtnl_qdisc_fifo_set_limit(q, (int)limit);
    e = e < 0 ? e : rtnl_qdisc_add(nl->sk, q, NLM_F_CREATE | NLM_F_REPLACE);
    if (e == -NLE_INVAL) {
        /* A leaf of another kind holds the handle (e.g. a pfifo left by hand): replace it. */
        rtnl_qdisc_delete(nl->sk, q);
        e = rtnl_qdisc_add(nl->sk, q, NLM_F_CREATE | NLM_F_REPLACE);
    }
    rtnl_qdisc_put(q);
    if (e == -NLE_OBJ_NOTFOUND) {
        snprintf(err, errcap, "the kernel has no 'bfifo' queueing discipline (module sch_fifo)");
        return QOD_ERR_UNSUPPORTED;
    }
    return e < 0 ? fail(e, "cannot install the leaf queue", err, errcap) : QOD_OK;
}

int qod_tc_nl_class_put(qod_tc_nl *nl, int ifindex, uint32_t minor, uint32_t parent_minor, const qod_tc_class_spec *c,
                        char *err, size_t errcap)
{
    struct rtnl_class *cl = rtnl_class_alloc();
    if (!cl)
        return QOD_ERR_NOMEM;
    rtnl_tc_set_ifindex(TCP(cl), ifindex);
    rtnl_tc_set_parent(TCP(cl), parent_minor ? HANDLE(QOD_TC_MAJOR, parent_minor) : HANDLE(QOD_TC_MAJOR, 0));
    rtnl_tc_set_handle(TCP(cl), HANDLE(QOD_TC_MAJOR, minor));
    int e = rtnl_tc_set_kind(TCP(cl), "htb");
    e = e < 0 ? e : rtnl_htb_set_rate64(cl, c->rate_bps);
    e = e < 0 ? e : rtnl_htb_set_ceil64(cl, c->ceil_bps);
    e = e < 0 ? e : rtnl_htb_set_prio(cl, c->prio);
    e = e < 0 ? e : rtnl_htb_set_quantum(cl, c->quantum);
    e = e < 0 ? e : rtnl_htb_set_rbuffer(cl, c->buffer);
    e = e < 0 ? e : rtnl_htb_set_cbuffer(cl, c->cbuffer);
    /* Without NLM_F_EXCL the kernel changes an existing class in place, so traffic never falls out of it. */
    e = e < 0 ? e : rtnl_class_add(nl->sk, cl, NLM_F_CREATE);
    rtnl_class_put(cl);
    if (e < 0)
        return fail(e, "cannot install the HTB class", err, errcap);
    return c->leaf_limit ? leaf_put(nl, ifindex, minor, c->leaf_limit, err, errcap) : QOD_OK;
}

int qod_tc_nl_class_del(qod_tc_nl *nl, int ifindex, uint32_t minor, char *err, size_t errcap)
{
    struct rtnl_class *cl = rtnl_class_alloc();
    if (!cl)
        return QOD_ERR_NOMEM;
    rtnl_tc_set_ifindex(TCP(cl), ifindex);
    rtnl_tc_set_handle(TCP(cl), HANDLE(QOD_TC_MAJOR, minor));
    int e = rtnl_class_delete(nl->sk, cl);
    rtnl_class_put(cl);
    if (e == -NLE_OBJ_NOTFOUND)
        return QOD_OK;
    return e < 0 ? fail(e, "cannot delete the HTB class", err, errcap) : QOD_OK;
}

/* ---- filters ---------------------------------------------------------------------------------------------- */

static struct rtnl_cls *filter_alloc(int ifindex, uint32_t pref, uint16_t protocol)
{
    struct rtnl_cls *f = rtnl_cls_alloc();
    if (!f)
        return NULL;
    rtnl_tc_set_ifindex(TCP(f), ifindex);
    rtnl_tc_set_parent(TCP(f), HANDLE(QOD_TC_MAJOR, 0));
    rtnl_cls_set_prio(f, (uint16_t)pref);
    rtnl_cls_set_protocol(f, protocol);
    return f;
}

int qod_tc_nl_filters_del(qod_tc_nl *nl, int ifindex, uint32_t pref, char *err, size_t errcap)
{
    /* Priority 0 would flush every filter of the qdisc: never ask for that. */
    if (pref == 0 || pref > 0xffff) {
        snprintf(err, errcap, "filter priority %u is not one of ours", pref);
        return QOD_ERR_INVALID;
    }
    struct rtnl_cls *f = filter_alloc(ifindex, pref, 0);
    if (!f)
        return QOD_ERR_NOMEM;
    int e = rtnl_cls_delete(nl->sk, f, 0);
    rtnl_cls_put(f);
    if (e == -NLE_OBJ_NOTFOUND)
        return QOD_OK;
    return e < 0 ? fail(e, "cannot delete the u32 filters", err, errcap) : QOD_OK;
}

static int filter_add(qod_tc_nl *nl, int ifindex, uint32_t pref, uint32_t minor, const qod_tc_key *keys, int nkeys,
                      char *err, size_t errcap)
{
    struct rtnl_cls *f = filter_alloc(ifindex, pref, ETH_P_IP);
    if (!f)
        return QOD_ERR_NOMEM;
    int e = rtnl_tc_set_kind(TCP(f), "u32");
    e = e < 0 ? e : rtnl_u32_set_classid(f, HANDLE(QOD_TC_MAJOR, minor));
    e = e < 0 ? e : rtnl_u32_set_cls_terminal(f);
    for (int i = 0; e >= 0 && i < nkeys; i++)
        e = rtnl_u32_add_key(f, keys[i].val, keys[i].mask, keys[i].off, 0);
    e = e < 0 ? e : rtnl_cls_add(nl->sk, f, NLM_F_CREATE);
    rtnl_cls_put(f);
    if (e == -NLE_OBJ_NOTFOUND) {
        snprintf(err, errcap, "the kernel has no 'u32' classifier (module cls_u32)");
        return QOD_ERR_UNSUPPORTED;
    }
    return e < 0 ? fail(e, "cannot install the u32 filter", err, errcap) : QOD_OK;
}

int qod_tc_nl_filters_put(qod_tc_nl *nl, int ifindex, uint32_t pref, uint32_t minor, const qod_tc_matches *m,
                          bool upstream, char *err, size_t errcap)
{
    int rc = qod_tc_nl_filters_del(nl, ifindex, pref, err, errcap);
    for (int i = 0; rc == QOD_OK && i < m->n; i++) {
        qod_tc_key keys[QOD_TC_KEYS_MAX];
        int n = qod_tc_plan_keys(&m->m[i], upstream, keys);
        rc = filter_add(nl, ifindex, pref, minor, keys, n, err, errcap);
    }
    if (rc != QOD_OK) {
        char ignored[64];
        qod_tc_nl_filters_del(nl, ifindex, pref, ignored, sizeof ignored);
    }
    return rc;
}

/* ---- the root ------------------------------------------------------------------------------------------- */

static int root_put(qod_tc_nl *nl, int ifindex, char *err, size_t errcap)
{
    struct rtnl_qdisc *q = rtnl_qdisc_alloc();
    if (!q)
        return QOD_ERR_NOMEM;
    rtnl_tc_set_ifindex(TCP(q), ifindex);
    rtnl_tc_set_parent(TCP(q), TC_H_ROOT);
    rtnl_tc_set_handle(TCP(q), HANDLE(QOD_TC_MAJOR, 0));
    int e = rtnl_tc_set_kind(TCP(q), "htb");
    e = e < 0 ? e : rtnl_htb_set_defcls(q, QOD_TC_MINOR_BE);
    e = e < 0 ? e : rtnl_htb_set_rate2quantum(q, 10);
    e = e < 0 ? e : rtnl_qdisc_add(nl->sk, q, NLM_F_CREATE | NLM_F_REPLACE);
    if (e == -NLE_INVAL) {
        /* A root with our handle cannot be changed into ours (e.g. an HTB 1: of someone else's): start afresh. */
        rtnl_qdisc_delete(nl->sk, q);
        e = rtnl_qdisc_add(nl->sk, q, NLM_F_CREATE | NLM_F_REPLACE);
    }
    rtnl_qdisc_put(q);
    if (e == -NLE_OBJ_NOTFOUND) {
        snprintf(err, errcap, "the kernel has no 'htb' queueing discipline (module sch_htb)");
        return QOD_ERR_UNSUPPORTED;
    }
    return e < 0 ? fail(e, "cannot install the HTB root qdisc", err, errcap) : QOD_OK;
}

/* Adds then removes a u32 filter at a priority of ours, so a kernel without u32 fails at start, not at the
 * first session. The probe matches 0.0.0.0 and sends to best effort, where the traffic goes anyway. */
static int probe_u32(qod_tc_nl *nl, int ifindex, char *err, size_t errcap)
{
    qod_tc_key key = {0, 0xffffffffu, 16};
    int rc = filter_add(nl, ifindex, QOD_TC_MINOR_LAST, QOD_TC_MINOR_BE, &key, 1, err, errcap);
    if (rc == QOD_OK)
        rc = qod_tc_nl_filters_del(nl, ifindex, QOD_TC_MINOR_LAST, err, errcap);
    return rc;
}

int qod_tc_nl_setup(qod_tc_nl *nl, int ifindex, const qod_tc_class_spec *link, const qod_tc_class_spec *be, char *err,
                    size_t errcap)
{
    qod_tc_state st = {0};
    int rc = qod_tc_nl_dump(nl, ifindex, &st, err, errcap);
    /* Our own HTB 1: (from an earlier run) is kept as it is, so its classes keep shaping while the sessions are
     * installed again; any other root qdisc is replaced. */
    bool adopt = rc == QOD_OK && strcmp(st.root_kind, "htb") == 0 && st.root_handle == HANDLE(QOD_TC_MAJOR, 0) &&
                 st.defcls == QOD_TC_MINOR_BE;
    /* u32 filters kept from an earlier run prove the classifier is there; probing could disturb one of them. */
    bool has_u32 = false;
    for (size_t i = 0; adopt && i < st.nfilters; i++)
        has_u32 |= strcmp(st.filters[i].kind, "u32") == 0;
    /* Say what was there: an operator's own tree is replaced (or, an HTB 1: defaulting to 1:fffe, taken for ours). */
    if (rc == QOD_OK && adopt)
        QOD_INFO("tc", "root_adopted", "ifindex=%d classes=%zu filters=%zu", ifindex, st.nclasses, st.nfilters);
    else if (rc == QOD_OK && st.root_kind[0] && strcmp(st.root_kind, "noqueue") != 0)
        QOD_WARN("tc", "root_replaced", "ifindex=%d kind=%s handle=%x: classes=%zu filters=%zu", ifindex, st.root_kind,
                 st.root_handle >> 16, st.nclasses, st.nfilters);
    qod_tc_state_dispose(&st);
    if (rc == QOD_OK && !adopt)
        rc = root_put(nl, ifindex, err, errcap);
    rc = rc ? rc : qod_tc_nl_class_put(nl, ifindex, QOD_TC_MINOR_LINK, 0, link, err, errcap);
    rc = rc ? rc : qod_tc_nl_class_put(nl, ifindex, QOD_TC_MINOR_BE, QOD_TC_MINOR_LINK, be, err, errcap);
    return rc || has_u32 ? rc : probe_u32(nl, ifindex, err, errcap);
}

/* ---- dump ------------------------------------------------------------------------------------------------- */

typedef struct {
    int ifindex;
    qod_tc_state *st;
    struct nl_cache *qdiscs;
    int rc;
} dump_ctx;

static void copy_kind(char *dst, size_t cap, struct rtnl_tc *tc)
{
    const char *k = rtnl_tc_get_kind(tc);
    snprintf(dst, cap, "%s", k ? k : "");
}

static void on_qdisc(struct nl_object *o, void *arg)
{
    dump_ctx *c = arg;
    struct rtnl_tc *tc = (struct rtnl_tc *)o;
    if (rtnl_tc_get_ifindex(tc) != c->ifindex || rtnl_tc_get_parent(tc) != TC_H_ROOT)
        return;
    copy_kind(c->st->root_kind, sizeof c->st->root_kind, tc);
    c->st->root_handle = rtnl_tc_get_handle(tc);
    if (strcmp(c->st->root_kind, "htb") == 0)
        c->st->defcls = rtnl_htb_get_defcls((struct rtnl_qdisc *)o) & 0xffffu;
}

static void on_class(struct nl_object *o, void *arg)
{
    dump_ctx *c = arg;
    struct rtnl_tc *tc = (struct rtnl_tc *)o;
    if (c->rc != QOD_OK || rtnl_tc_get_ifindex(tc) != c->ifindex)
        return;
    qod_tc_class_info *v = realloc(c->st->classes, (c->st->nclasses + 1) * sizeof *v);
    if (!v) {
        c->rc = QOD_ERR_NOMEM;
        return;
    }
    c->st->classes = v;
    qod_tc_class_info *ci = &v[c->st->nclasses++];
    memset(ci, 0, sizeof *ci);
    ci->handle = rtnl_tc_get_handle(tc);
    ci->parent = rtnl_tc_get_parent(tc);
    copy_kind(ci->kind, sizeof ci->kind, tc);
    if (strcmp(ci->kind, "htb") == 0) {
        struct rtnl_class *cl = (struct rtnl_class *)o;
        if (rtnl_htb_get_rate64(cl, &ci->rate_bps) < 0)
            ci->rate_bps = rtnl_htb_get_rate(cl);
        if (rtnl_htb_get_ceil64(cl, &ci->ceil_bps) < 0)
            ci->ceil_bps = rtnl_htb_get_ceil(cl);
        ci->prio = rtnl_htb_get_prio(cl);
    }
    struct rtnl_qdisc *leaf = rtnl_qdisc_get_by_parent(c->qdiscs, c->ifindex, ci->handle);
    if (leaf) {
        copy_kind(ci->leaf, sizeof ci->leaf, TCP(leaf));
        if (strcmp(ci->leaf, "bfifo") == 0 || strcmp(ci->leaf, "pfifo") == 0) {
            int lim = rtnl_qdisc_fifo_get_limit(leaf);
            ci->leaf_limit = lim > 0 ? (uint32_t)lim : 0;
        }
        rtnl_qdisc_put(leaf);
    }
}

static void on_filter(struct nl_object *o, void *arg)
{
    dump_ctx *c = arg;
    struct rtnl_cls *f = (struct rtnl_cls *)o;
    if (c->rc != QOD_OK || rtnl_tc_get_ifindex(TCP(f)) != c->ifindex)
        return;
    qod_tc_filter_info *v = realloc(c->st->filters, (c->st->nfilters + 1) * sizeof *v);
    if (!v) {
        c->rc = QOD_ERR_NOMEM;
        return;
    }
    c->st->filters = v;
    qod_tc_filter_info *fi = &v[c->st->nfilters++];
    memset(fi, 0, sizeof *fi);
    fi->pref = rtnl_cls_get_prio(f);
    fi->protocol = rtnl_cls_get_protocol(f);
    fi->handle = rtnl_tc_get_handle(TCP(f));
    copy_kind(fi->kind, sizeof fi->kind, TCP(f));
    if (strcmp(fi->kind, "u32") != 0)
        return;
    uint32_t classid = 0;
    if (rtnl_u32_get_classid(f, &classid) == 0)
        fi->classid = classid;
    for (int i = 0; i < QOD_TC_DUMP_KEYS; i++) {
        uint32_t val, mask;
        int off, offmask;
        if (rtnl_u32_get_key(f, (uint8_t)i, &val, &mask, &off, &offmask) < 0)
            break;
        fi->keys[fi->nkeys++] = (qod_tc_key){val, mask, off};
    }
}

int qod_tc_nl_dump(qod_tc_nl *nl, int ifindex, qod_tc_state *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof *out);
    struct nl_cache *qdiscs = NULL, *classes = NULL, *filters = NULL;
    dump_ctx c = {ifindex, out, NULL, QOD_OK};
    int e = rtnl_qdisc_alloc_cache(nl->sk, &qdiscs);
    e = e < 0 ? e : rtnl_class_alloc_cache(nl->sk, ifindex, &classes);
    e = e < 0 ? e : rtnl_cls_alloc_cache(nl->sk, ifindex, HANDLE(QOD_TC_MAJOR, 0), &filters);
    if (e < 0) {
        c.rc = fail(e, "cannot dump traffic control state", err, errcap);
    } else {
        c.qdiscs = qdiscs;
        nl_cache_foreach(qdiscs, on_qdisc, &c);
        nl_cache_foreach(classes, on_class, &c);
        nl_cache_foreach(filters, on_filter, &c);
    }
    if (filters)
        nl_cache_free(filters);
    if (classes)
        nl_cache_free(classes);
    if (qdiscs)
        nl_cache_free(qdiscs);
    if (c.rc != QOD_OK)
        qod_tc_state_dispose(out);
    return c.rc;
}

void qod_tc_state_dispose(qod_tc_state *s)
{
    free(s->classes);
    free(s->filters);
    memset(s, 0, sizeof *s);
}
