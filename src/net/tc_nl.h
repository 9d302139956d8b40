/* The netlink side of the tc backend (libnl-route-3): installs and removes HTB classes, bfifo leaves and u32
 * filters planned by tc_plan, and dumps what an interface holds (for reconciliation and for tests/tools).
 *
 * Every call is a synchronous netlink request; the kernel handles it inside sendmsg, waiting there for its RTNL
 * lock, so a receive timeout bounds only a kernel that does not answer once it has the request. Not thread-safe: one
 * caller at a time per handle. Errors are QOD_ERR_NETWORK (the kernel refused; why in err), QOD_ERR_UNSUPPORTED (a
 * kernel feature is missing), QOD_ERR_DENIED (no CAP_NET_ADMIN) or QOD_ERR_NOTFOUND (no such interface). */
#ifndef QOD_NET_TC_NL_H
#define QOD_NET_TC_NL_H

#include "net/tc_plan.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct qod_tc_nl qod_tc_nl;

/* Opens a netlink route socket. */
int qod_tc_nl_open(qod_tc_nl **out, char *err, size_t errcap);
/* Closes; NULL is a no-op. */
void qod_tc_nl_close(qod_tc_nl *nl);
/* The interface index of dev. */
int qod_tc_nl_ifindex(qod_tc_nl *nl, const char *dev, int *ifindex, char *err, size_t errcap);

/* Makes the interface's root an HTB qdisc 1: with the link class 1:1 and the best-effort default class 1:fffe
 * and its leaf, then checks that the kernel has the u32 classifier. An HTB 1: defaulting to 1:fffe (ours, from
 * an earlier run) is kept with its classes; any other root qdisc is replaced. */
int qod_tc_nl_setup(qod_tc_nl *nl, int ifindex, const qod_tc_class_spec *link, const qod_tc_class_spec *be, char *err,
                    size_t errcap);
/* Creates or changes class 1:minor under 1:parent_minor, with its bfifo leaf minor:. */
int qod_tc_nl_class_put(qod_tc_nl *nl, int ifindex, uint32_t minor, uint32_t parent_minor, const qod_tc_class_spec *c,
                        char *err, size_t errcap);
/* Deletes class 1:minor (and its leaf). A class that does not exist is not an error. */
int qod_tc_nl_class_del(qod_tc_nl *nl, int ifindex, uint32_t minor, char *err, size_t errcap);
/* Replaces the u32 filters of filter priority pref (under 1:) by one filter per match, each sending to class
 * 1:minor; upstream selects which end of the packet is the device. */
int qod_tc_nl_filters_put(qod_tc_nl *nl, int ifindex, uint32_t pref, uint32_t minor, const qod_tc_matches *m,
                          bool upstream, char *err, size_t errcap);
/* Deletes every filter of priority pref (> 0) under 1:, whatever its protocol. Nothing there is not an error. */
int qod_tc_nl_filters_del(qod_tc_nl *nl, int ifindex, uint32_t pref, char *err, size_t errcap);

#define QOD_TC_DUMP_KEYS 8

typedef struct {
    uint32_t handle; /* full handle, e.g. 0x10100 for 1:100 */
    uint32_t parent;
    char kind[16];
    uint64_t rate_bps, ceil_bps;
    uint32_t prio;
    char leaf[16];       /* kind of the leaf qdisc, "" when none */
    uint32_t leaf_limit; /* its limit (bytes for bfifo, packets for pfifo) */
} qod_tc_class_info;

typedef struct {
    uint32_t pref;
    uint16_t protocol; /* host order ETH_P_* */
    uint32_t handle;
    char kind[16];
    uint32_t classid; /* 0 when none (e.g. a u32 hash table entry) */
    int nkeys;
    qod_tc_key keys[QOD_TC_DUMP_KEYS];
} qod_tc_filter_info;

typedef struct {
    char root_kind[16]; /* "" when the interface has no root qdisc of its own */
    uint32_t root_handle;
    uint32_t defcls; /* HTB default class minor, when the root is HTB */
    qod_tc_class_info *classes;
    size_t nclasses;
    qod_tc_filter_info *filters; /* filters attached to 1: */
    size_t nfilters;
} qod_tc_state;

/* Dumps the root qdisc, every class and every filter under 1: of an interface. Dispose the result. */
int qod_tc_nl_dump(qod_tc_nl *nl, int ifindex, qod_tc_state *out, char *err, size_t errcap);
/* Frees a dump; a zeroed state is fine. */
void qod_tc_state_dispose(qod_tc_state *s);

#endif
