#include "net/tc_plan.h"

#include "core/flows.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/json.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#define MIN_RATE_KBPS 8
#define DEFAULT_BUDGET_US 100000
#define BE_QUEUE_US 100000
#define LEAF_MIN_BYTES (4 * QOD_TC_MTU_BYTES)
/* A session's leaf holds at least one GSO/GRO super-packet (64 KiB) and a frame: a smaller queue drops a TCP
 * flow's bursts and cuts its throughput tenfold (measured: QOS_L's 6,250 bytes gave a bulk TCP flow 0.7-1.6 of its
 * 19 Mbit/s). */
#define SESSION_LEAF_MIN_BYTES (65536u + QOD_TC_MTU_BYTES)
#define LEAF_MAX_BYTES (4u << 20)

bool qod_tc_plan_owned(uint32_t minor)
{
    return minor >= QOD_TC_MINOR_FIRST && minor <= QOD_TC_MINOR_LAST;
}

uint32_t qod_tc_plan_htb_prio(int camara_priority)
{
    int p = camara_priority < 1 ? 1 : camara_priority > 100 ? 100 : camara_priority;
    return (uint32_t)((p - 1) * 8 / 100);
}

int qod_tc_plan_port_blocks(uint16_t from, uint16_t to, qod_tc_port_block *out, int cap)
{
    if (from > to)
        return -1;
    int n = 0;
    uint32_t lo = from;
    while (lo <= to) {
        /* The largest block starting at lo that is aligned on its own size and does not pass to. */
        uint32_t size = lo ? (lo & -lo) : 0x10000u;
        while (lo + size - 1 > to)
            size >>= 1;
        if (n >= cap)
            return -1;
        out[n].value = (uint16_t)lo;
        out[n].mask = (uint16_t) ~(size - 1);
        n++;
        lo += size;
    }
    return n;
}

static uint64_t kbps_to_bytes(int64_t kbps)
{
    return (uint64_t)kbps * 1000 / 8;
}

static uint32_t clamp_u32(uint64_t v, uint32_t lo, uint32_t hi)
{
    return v < lo ? lo : v > hi ? hi : (uint32_t)v;
}

/* Common shaping parameters: the DRR quantum HTB would derive itself (rate / r2q, r2q = 10), kept within the
 * range where HTB does not warn about it; bursts of one millisecond at the rate plus one frame. */
static void fill_common(qod_tc_class_spec *c)
{
    c->quantum = clamp_u32(c->rate_bps / 10, 1600, 60000);
    c->buffer = clamp_u32(c->rate_bps / 1000 + 1600, 1600, 1u << 24);
    c->cbuffer = clamp_u32(c->ceil_bps / 1000 + 1600, 1600, 1u << 24);
}

static uint32_t queue_bytes(uint64_t rate_bps, int64_t budget_us)
{
    return clamp_u32(rate_bps * (uint64_t)budget_us / 1000000, LEAF_MIN_BYTES, LEAF_MAX_BYTES);
}

int64_t qod_tc_plan_reserved_kbps(int64_t min_kbps, int64_t link_kbps)
{
    int64_t r = min_kbps < MIN_RATE_KBPS ? MIN_RATE_KBPS : min_kbps;
    return r > link_kbps ? link_kbps : r;
}

int64_t qod_tc_plan_budget_kbps(int64_t link_kbps, double share)
{
    return (int64_t)((double)link_kbps * share);
}

qod_tc_class_spec qod_tc_plan_session_class(int64_t min_kbps, int64_t max_kbps, int64_t link_kbps, int priority,
                                            int64_t budget_us)
{
    qod_tc_class_spec c = {0};
    int64_t rate = qod_tc_plan_reserved_kbps(min_kbps, link_kbps);
    int64_t ceil = max_kbps > 0 && max_kbps < link_kbps ? max_kbps : link_kbps;
    if (ceil < rate)
        ceil = rate;
    c.rate_bps = kbps_to_bytes(rate);
    c.ceil_bps = kbps_to_bytes(ceil);
    c.prio = qod_tc_plan_htb_prio(priority);
    fill_common(&c);
    /* The delay budget at the rate the class drains at when it borrows up to its ceiling. */
    uint32_t q = queue_bytes(c.ceil_bps, budget_us > 0 ? budget_us : DEFAULT_BUDGET_US);
    c.leaf_limit = q > SESSION_LEAF_MIN_BYTES ? q : SESSION_LEAF_MIN_BYTES;
    return c;
}

qod_tc_class_spec qod_tc_plan_link_class(int64_t link_kbps)
{
    qod_tc_class_spec c = {0};
    c.rate_bps = c.ceil_bps = kbps_to_bytes(link_kbps);
    fill_common(&c);
    return c;
}

qod_tc_class_spec qod_tc_plan_best_effort_class(int64_t link_kbps, double share)
{
    qod_tc_class_spec c = {0};
    int64_t rate = link_kbps - qod_tc_plan_budget_kbps(link_kbps, share);
    c.rate_bps = kbps_to_bytes(rate < MIN_RATE_KBPS ? MIN_RATE_KBPS : rate);
    c.ceil_bps = kbps_to_bytes(link_kbps);
    c.prio = 7;
    fill_common(&c);
    /* Best effort drains at up to the link rate: size its queue to 100 ms there. */
    c.leaf_limit = queue_bytes(c.ceil_bps, BE_QUEUE_US);
    return c;
}

/* ---- flows → matches ------------------------------------------------------------------------------------- */

static int port_blocks_of(bool has, const qod_ports *ports, const char *key, qod_tc_port_block *out, int *n, char *err,
                          size_t errcap)
{
    *n = 0;
    if (!has) {
        out[0] = (qod_tc_port_block){0, 0};
        *n = 1;
        return QOD_OK;
    }
    int rc = QOD_OK;
    for (int i = 0; rc == QOD_OK && i < ports->n; i++) {
        int k = qod_tc_plan_port_blocks(ports->from[i], ports->to[i], out + *n, QOD_TC_MATCH_MAX - *n);
        if (k < 0) {
            snprintf(err, errcap, "%s needs more than %d port filters", key, QOD_TC_MATCH_MAX);
            rc = QOD_ERR_UNSUPPORTED;
        } else {
            *n += k;
        }
    }
    return rc;
}

static int server_of(const qod_flows *f, uint32_t *addr, uint32_t *mask, char *err, size_t errcap)
{
    *addr = *mask = 0;
    if (!f->has_server)
        return QOD_OK;
    if (f->server.ipv4_prefix < 0) {
        snprintf(err, errcap, "an IPv6 application server cannot be enforced (IPv4 only)");
        return QOD_ERR_UNSUPPORTED;
    }
    struct in_addr a;
    if (inet_pton(AF_INET, f->server.ipv4, &a) != 1) {
        snprintf(err, errcap, "applicationServer.ipv4Address is not an IPv4 address");
        return QOD_ERR_INVALID;
    }
    int prefix = f->server.ipv4_prefix;
    *mask = prefix ? ~0u << (32 - prefix) : 0;
    *addr = ntohl(a.s_addr) & *mask;
    return QOD_OK;
}

int qod_tc_plan_matches(const char *dev_ipv4, const char *flows, qod_tc_matches *out, char *err, size_t errcap)
{
    struct in_addr dev;
    qod_flows f;
    qod_tc_port_block devp[QOD_TC_MATCH_MAX], peerp[QOD_TC_MATCH_MAX];
    int ndev = 1, npeer = 1, rc = QOD_OK;
    uint32_t peer = 0, peer_mask = 0;
    out->n = 0;
    devp[0] = peerp[0] = (qod_tc_port_block){0, 0};
    if (!dev_ipv4 || inet_pton(AF_INET, dev_ipv4, &dev) != 1) {
        snprintf(err, errcap, "the device has no IPv4 address");
        return QOD_ERR_UNSUPPORTED;
    }
    rc = qod_flows_read(flows, &f, err, errcap);
    rc = rc ? rc : server_of(&f, &peer, &peer_mask, err, errcap);
    rc = rc ? rc : port_blocks_of(f.has_device_ports, &f.device_ports, "devicePorts", devp, &ndev, err, errcap);
    rc = rc ? rc
            : port_blocks_of(f.has_server_ports, &f.server_ports, "applicationServerPorts", peerp, &npeer, err, errcap);
    if (rc == QOD_OK && ndev * npeer > QOD_TC_MATCH_MAX) {
        snprintf(err, errcap, "the port ranges need %d filters, more than the %d enforced per session", ndev * npeer,
                 QOD_TC_MATCH_MAX);
        rc = QOD_ERR_UNSUPPORTED;
    }
    for (int i = 0; rc == QOD_OK && i < ndev; i++)
        for (int j = 0; j < npeer; j++)
            out->m[out->n++] = (qod_tc_match){ntohl(dev.s_addr), devp[i], peer, peer_mask, peerp[j]};
    if (rc != QOD_OK)
        out->n = 0;
    return rc;
}

int qod_tc_plan_keys(const qod_tc_match *m, bool upstream, qod_tc_key keys[QOD_TC_KEYS_MAX])
{
    /* IPv4 header offsets: source address 12, destination 16; after a 20-byte header, ports at 20. */
    int n = 0;
    int dev_off = upstream ? 12 : 16, peer_off = upstream ? 16 : 12;
    keys[n++] = (qod_tc_key){htonl(m->dev_addr), 0xffffffffu, dev_off};
    if (m->peer_mask)
        keys[n++] = (qod_tc_key){htonl(m->peer_addr & m->peer_mask), htonl(m->peer_mask), peer_off};
    if (m->dev_port.mask || m->peer_port.mask) {
        const qod_tc_port_block *src = upstream ? &m->dev_port : &m->peer_port;
        const qod_tc_port_block *dst = upstream ? &m->peer_port : &m->dev_port;
        uint32_t val = (uint32_t)(src->value & src->mask) << 16 | (uint32_t)(dst->value & dst->mask);
        uint32_t mask = (uint32_t)src->mask << 16 | dst->mask;
        keys[n++] = (qod_tc_key){htonl(0x05000000u), htonl(0x0f000000u), 0}; /* IHL = 5 */
        keys[n++] = (qod_tc_key){0, htonl(0x00001fffu), 4};                  /* fragment offset 0 */
        keys[n++] = (qod_tc_key){htonl(val), htonl(mask), 20};
    }
    return n;
}
