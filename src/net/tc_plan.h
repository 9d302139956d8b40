/* Pure planning for the tc backend: what HTB classes, leaf queues and u32 matches a session needs, computed
 * without touching the kernel so that every rule can be unit-tested. The netlink side (tc_nl) applies a plan.
 *
 * Handle layout on each managed interface (all under the HTB root 1:):
 *   1:1              the link class (rate = ceil = link rate)
 *   1:fffe           best effort, the HTB default class (low priority, rate = link - guaranteed share)
 *   1:100 .. 1:fffd  one class per enforced session; its u32 filters all use the filter priority equal to the
 *                    class minor, so "everything of session X" is one class and one filter priority.
 * Only that range is ours: reconciliation never touches another class or filter priority. */
#ifndef QOD_NET_TC_PLAN_H
#define QOD_NET_TC_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define QOD_TC_MAJOR 1u
#define QOD_TC_MINOR_LINK 0x1u
#define QOD_TC_MINOR_FIRST 0x100u
#define QOD_TC_MINOR_LAST 0xfffdu
#define QOD_TC_MINOR_BE 0xfffeu
/* At most this many u32 filters per session and direction (the cross product of port blocks). */
#define QOD_TC_MATCH_MAX 64
/* An aligned range of 2^k ports is at most 16 blocks per [from, to] range side; 30 covers any range. */
#define QOD_TC_BLOCKS_MAX 32
#define QOD_TC_MTU_BYTES 1514u
/* The most sessions enforced at once per interface. Each session's filters have a u32 priority of their own, and
 * the kernel takes at most 2,047 u32 priorities on one qdisc; a restart installs every session again beside its
 * old filters before it sweeps them, so twice this many must fit. */
#define QOD_TC_SESSIONS_MAX 1023

/* True when minor is a session class handle (the range reconciliation owns). */
bool qod_tc_plan_owned(uint32_t minor);

/* CAMARA priority 1 (highest) .. 100 onto HTB prio 0 (served first) .. 7, in eight equal bands. */
uint32_t qod_tc_plan_htb_prio(int camara_priority);

/* A port block: ports p with (p & mask) == value. mask 0 means any port. */
typedef struct {
    uint16_t value;
    uint16_t mask;
} qod_tc_port_block;

/* Splits [from, to] into the fewest aligned power-of-two blocks (u32 can only match value/mask). Returns the
 * count, or -1 when from > to or more than cap blocks would be needed. */
int qod_tc_plan_port_blocks(uint16_t from, uint16_t to, qod_tc_port_block *out, int cap);

/* One HTB class with its leaf queue. Rates in bytes per second, sizes in bytes. */
typedef struct {
    uint64_t rate_bps;   /* guaranteed (bytes/s) */
    uint64_t ceil_bps;   /* ceiling (bytes/s) */
    uint32_t prio;       /* HTB prio 0..7 */
    uint32_t quantum;    /* DRR quantum when borrowing, bytes */
    uint32_t buffer;     /* burst at rate, bytes */
    uint32_t cbuffer;    /* burst at ceil, bytes */
    uint32_t leaf_limit; /* bfifo limit, bytes */
} qod_tc_class_spec;

/* The class of one session direction: guaranteed min_kbps (at least 8 kbit/s), ceiling max_kbps (0 = the link),
 * both capped at the link rate; CAMARA priority; queue sized so that a full queue drains within the packet
 * delay budget at the guaranteed rate (budget_us 0 = 100 ms), never below 4 full frames nor above 4 MiB. */
qod_tc_class_spec qod_tc_plan_session_class(int64_t min_kbps, int64_t max_kbps, int64_t link_kbps, int priority,
                                            int64_t budget_us);
/* The link class 1:1 and the best-effort default class 1:fffe for a link rate and guaranteed share. */
qod_tc_class_spec qod_tc_plan_link_class(int64_t link_kbps);
qod_tc_class_spec qod_tc_plan_best_effort_class(int64_t link_kbps, double share);
/* The guaranteed rate admission reserves for a session direction: what its class really guarantees. */
int64_t qod_tc_plan_reserved_kbps(int64_t min_kbps, int64_t link_kbps);
/* The admission budget: share of the link that guaranteed rates may take in all. */
int64_t qod_tc_plan_budget_kbps(int64_t link_kbps, double share);

/* One u32 filter, direction-neutral: the device's address and port block, the application server's prefix and
 * port block. Addresses in host byte order; a zero mask matches anything. */
typedef struct {
    uint32_t dev_addr;
    qod_tc_port_block dev_port;
    uint32_t peer_addr;
    uint32_t peer_mask;
    qod_tc_port_block peer_port;
} qod_tc_match;

typedef struct {
    int n;
    qod_tc_match m[QOD_TC_MATCH_MAX];
} qod_tc_matches;

/* Plans the filters of a session: device address dev_ipv4 (dotted quad), narrowed by the flow description
 * flows (the session's JSON object {applicationServer?, devicePorts?, applicationServerPorts?}, or NULL).
 * QOD_ERR_UNSUPPORTED with why in err when the flows cannot be enforced here (an IPv6-only application server,
 * more than QOD_TC_MATCH_MAX filters); QOD_ERR_INVALID when an address or the JSON is malformed. */
int qod_tc_plan_matches(const char *dev_ipv4, const char *flows, qod_tc_matches *out, char *err, size_t errcap);

/* One 32-bit u32 key in network order at byte offset off of the IPv4 header. */
typedef struct {
    uint32_t val;
    uint32_t mask;
    int off;
} qod_tc_key;

#define QOD_TC_KEYS_MAX 5

/* The u32 keys of one match, for downstream (device = destination) or upstream (device = source). Port keys
 * assume a 20-byte IPv4 header and a first fragment, so both are matched too whenever ports are; packets with
 * IP options or later fragments then stay best effort. Ports are matched whatever the transport protocol
 * (TCP, UDP and SCTP all start with the two ports). Returns the number of keys. */
int qod_tc_plan_keys(const qod_tc_match *m, bool upstream, qod_tc_key keys[QOD_TC_KEYS_MAX]);

#endif
