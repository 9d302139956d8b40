#include "net/tc_plan.h"

#include "qtest.h"
#include "util/err.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

QTEST(htb_prio_bands)
{
    QT_EQ_INT(qod_tc_plan_htb_prio(1), 0);
    QT_EQ_INT(qod_tc_plan_htb_prio(10), 0); /* QOS_L: served first */
    QT_EQ_INT(qod_tc_plan_htb_prio(13), 0);
    QT_EQ_INT(qod_tc_plan_htb_prio(14), 1);
    QT_EQ_INT(qod_tc_plan_htb_prio(20), 1); /* QOS_M */
    QT_EQ_INT(qod_tc_plan_htb_prio(40), 3); /* QOS_S */
    QT_EQ_INT(qod_tc_plan_htb_prio(88), 6);
    QT_EQ_INT(qod_tc_plan_htb_prio(89), 7);
    QT_EQ_INT(qod_tc_plan_htb_prio(100), 7);
}

QTEST(htb_prio_clamps_out_of_range)
{
    QT_EQ_INT(qod_tc_plan_htb_prio(0), 0);
    QT_EQ_INT(qod_tc_plan_htb_prio(-5), 0);
    QT_EQ_INT(qod_tc_plan_htb_prio(101), 7);
}

QTEST(owned_range)
{
    QT_TRUE(!qod_tc_plan_owned(QOD_TC_MINOR_LINK));
    QT_TRUE(!qod_tc_plan_owned(0xff));
    QT_TRUE(qod_tc_plan_owned(0x100));
    QT_TRUE(qod_tc_plan_owned(0xfffd));
    QT_TRUE(!qod_tc_plan_owned(QOD_TC_MINOR_BE));
    QT_TRUE(!qod_tc_plan_owned(0xffff));
}

QTEST(port_single_is_exact)
{
    qod_tc_port_block b[QOD_TC_BLOCKS_MAX];
    QT_EQ_INT(qod_tc_plan_port_blocks(443, 443, b, QOD_TC_BLOCKS_MAX), 1);
    QT_EQ_INT(b[0].value, 443);
    QT_EQ_INT(b[0].mask, 0xffff);
}

QTEST(port_range_splits_into_aligned_blocks)
{
    qod_tc_port_block b[QOD_TC_BLOCKS_MAX];
    QT_EQ_INT(qod_tc_plan_port_blocks(5000, 5010, b, QOD_TC_BLOCKS_MAX), 3);
    QT_EQ_INT(b[0].value, 5000);
    QT_EQ_INT(b[0].mask, 0xfff8);
    QT_EQ_INT(b[1].value, 5008);
    QT_EQ_INT(b[1].mask, 0xfffe);
    QT_EQ_INT(b[2].value, 5010);
    QT_EQ_INT(b[2].mask, 0xffff);
}

QTEST(port_full_range_is_any)
{
    qod_tc_port_block b[QOD_TC_BLOCKS_MAX];
    QT_EQ_INT(qod_tc_plan_port_blocks(0, 65535, b, QOD_TC_BLOCKS_MAX), 1);
    QT_EQ_INT(b[0].mask, 0);
    QT_EQ_INT(qod_tc_plan_port_blocks(1024, 65535, b, QOD_TC_BLOCKS_MAX), 6);
    QT_EQ_INT(b[5].value, 32768);
    QT_EQ_INT(b[5].mask, 0x8000);
}

QTEST(port_worst_case_fits_the_bound)
{
    qod_tc_port_block b[QOD_TC_BLOCKS_MAX];
    QT_EQ_INT(qod_tc_plan_port_blocks(1, 65534, b, QOD_TC_BLOCKS_MAX), 30);
    QT_EQ_INT(qod_tc_plan_port_blocks(1, 65534, b, 29), -1);
    QT_EQ_INT(qod_tc_plan_port_blocks(10, 9, b, QOD_TC_BLOCKS_MAX), -1);
}

/* Every port of [from, to] is in exactly one block, and no port outside is in any. */
static int blocks_cover_exactly(uint16_t from, uint16_t to)
{
    qod_tc_port_block b[QOD_TC_BLOCKS_MAX];
    int n = qod_tc_plan_port_blocks(from, to, b, QOD_TC_BLOCKS_MAX);
    if (n < 1)
        return 0;
    for (uint32_t p = 0; p <= 65535; p++) {
        int hits = 0;
        for (int i = 0; i < n; i++)
            hits += ((uint16_t)p & b[i].mask) == b[i].value;
        if (hits != (p >= from && p <= to))
            return 0;
    }
    return 1;
}

QTEST(port_blocks_cover_exactly)
{
    static const uint16_t r[][2] = {{0, 0},       {1, 1},       {0, 1},         {1, 2},         {3, 17},
                                    {1000, 2000}, {8080, 8089}, {49152, 65535}, {65535, 65535}, {12345, 54321}};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++)
        QT_TRUE(blocks_cover_exactly(r[i][0], r[i][1]));
}

QTEST(session_class_of_qos_l)
{
    /* QOS_L: 5 Mbit/s guaranteed, 20 Mbit/s max, priority 10, 10 ms delay budget, on a 20 Mbit/s link. */
    qod_tc_class_spec c = qod_tc_plan_session_class(5000, 20000, 20000, 10, 10000);
    QT_EQ_INT(c.rate_bps, 625000);
    QT_EQ_INT(c.ceil_bps, 2500000);
    QT_EQ_INT(c.prio, 0);
    /* 10 ms at the ceiling is 25,000 bytes: less than one GSO super-packet and a frame, the floor. */
    QT_EQ_INT(c.leaf_limit, 65536 + QOD_TC_MTU_BYTES);
    QT_TRUE(c.quantum >= 1600 && c.quantum <= 60000);
    QT_TRUE(c.buffer >= 1600 && c.cbuffer >= c.buffer);
}

QTEST(session_class_caps_at_the_link)
{
    /* QOS_S on a 20 Mbit/s link: max 100 Mbit/s is capped; no max means the link. */
    qod_tc_class_spec c = qod_tc_plan_session_class(15000, 100000, 20000, 40, 150000);
    QT_EQ_INT(c.rate_bps, 1875000);
    QT_EQ_INT(c.ceil_bps, 2500000);
    QT_EQ_INT(c.prio, 3);
    c = qod_tc_plan_session_class(50000, 0, 20000, 50, 0);
    QT_EQ_INT(c.rate_bps, 2500000);
    QT_EQ_INT(c.ceil_bps, 2500000);
    QT_EQ_INT(qod_tc_plan_reserved_kbps(50000, 20000), 20000);
}

QTEST(session_class_has_a_floor)
{
    /* No guaranteed rate still gets a class (8 kbit/s); a tiny budget still queues a GSO super-packet. */
    qod_tc_class_spec c = qod_tc_plan_session_class(0, 1000, 20000, 100, 1);
    QT_EQ_INT(c.rate_bps, 1000);
    QT_EQ_INT(c.ceil_bps, 125000);
    QT_EQ_INT(c.prio, 7);
    QT_EQ_INT(c.leaf_limit, 65536 + QOD_TC_MTU_BYTES);
    QT_EQ_INT(qod_tc_plan_reserved_kbps(0, 20000), 8);
    /* QOS_S (150 ms at its 20 Mbit/s ceiling) is above the floor. */
    c = qod_tc_plan_session_class(15000, 100000, 20000, 40, 150000);
    QT_EQ_INT(c.leaf_limit, 375000);
}

QTEST(best_effort_gets_what_guarantees_leave)
{
    qod_tc_class_spec be = qod_tc_plan_best_effort_class(20000, 0.8);
    QT_EQ_INT(be.rate_bps, 500000); /* 4 Mbit/s */
    QT_EQ_INT(be.ceil_bps, 2500000);
    QT_EQ_INT(be.prio, 7);
    QT_EQ_INT(be.leaf_limit, 250000); /* 100 ms at the link rate */
    be = qod_tc_plan_best_effort_class(20000, 1.0);
    QT_EQ_INT(be.rate_bps, 1000);
    QT_EQ_INT(qod_tc_plan_budget_kbps(20000, 0.8), 16000);
    qod_tc_class_spec link = qod_tc_plan_link_class(20000);
    QT_EQ_INT(link.rate_bps, 2500000);
    QT_EQ_INT(link.ceil_bps, 2500000);
}

static uint32_t ip(const char *s)
{
    struct in_addr a;
    inet_pton(AF_INET, s, &a);
    return ntohl(a.s_addr);
}

QTEST(matches_without_flows_cover_the_device)
{
    qod_tc_matches m;
    char err[128];
    QT_EQ_INT(qod_tc_plan_matches("10.77.1.2", NULL, &m, err, sizeof err), QOD_OK);
    QT_EQ_INT(m.n, 1);
    QT_EQ_INT(m.m[0].dev_addr, ip("10.77.1.2"));
    QT_EQ_INT(m.m[0].peer_mask, 0);
    QT_EQ_INT(m.m[0].dev_port.mask, 0);
    QT_EQ_INT(m.m[0].peer_port.mask, 0);
    QT_EQ_INT(qod_tc_plan_matches("10.77.1.2", "{}", &m, err, sizeof err), QOD_OK);
    QT_EQ_INT(m.n, 1);
}

QTEST(matches_narrow_by_server_prefix_and_ports)
{
    qod_tc_matches m;
    char err[128];
    const char *flows = "{\"applicationServer\":{\"ipv4Address\":\"192.0.2.77/24\"},"
                        "\"devicePorts\":{\"ports\":[5000,6000]},"
                        "\"applicationServerPorts\":{\"ranges\":[{\"from\":8080,\"to\":8081}],\"ports\":[443]}}";
    QT_EQ_INT(qod_tc_plan_matches("10.0.0.1", flows, &m, err, sizeof err), QOD_OK);
    QT_EQ_INT(m.n, 4); /* 2 device ports x (one aligned block 8080-8081 + 443) */
    QT_EQ_INT(m.m[0].peer_addr, ip("192.0.2.0"));
    QT_EQ_INT(m.m[0].peer_mask, 0xffffff00u);
    QT_EQ_INT(m.m[0].dev_port.value, 5000);
    QT_EQ_INT(m.m[0].peer_port.value, 8080);
    QT_EQ_INT(m.m[0].peer_port.mask, 0xfffe);
    QT_EQ_INT(m.m[1].peer_port.value, 443);
    QT_EQ_INT(m.m[3].dev_port.value, 6000);
}

QTEST(matches_refuse_what_u32_cannot_enforce)
{
    qod_tc_matches m;
    char err[128];
    QT_EQ_INT(qod_tc_plan_matches("", NULL, &m, err, sizeof err), QOD_ERR_UNSUPPORTED);
    QT_EQ_INT(qod_tc_plan_matches("10.0.0.1", "{\"applicationServer\":{\"ipv6Address\":\"2001:db8::1\"}}", &m, err,
                                  sizeof err),
              QOD_ERR_UNSUPPORTED);
    /* 30 blocks on each side: 900 filters. */
    const char *wide = "{\"devicePorts\":{\"ranges\":[{\"from\":1,\"to\":65534}]},"
                       "\"applicationServerPorts\":{\"ranges\":[{\"from\":1,\"to\":65534}]}}";
    QT_EQ_INT(qod_tc_plan_matches("10.0.0.1", wide, &m, err, sizeof err), QOD_ERR_UNSUPPORTED);
    QT_EQ_INT(m.n, 0);
    QT_EQ_INT(qod_tc_plan_matches("10.0.0.1", "[1]", &m, err, sizeof err), QOD_ERR_INVALID);
    QT_EQ_INT(qod_tc_plan_matches("10.0.0.1", "{\"devicePorts\":{\"ports\":[70000]}}", &m, err, sizeof err),
              QOD_ERR_INVALID);
}

QTEST(matches_keep_ipv4_when_both_families_given)
{
    qod_tc_matches m;
    char err[128];
    const char *flows = "{\"applicationServer\":{\"ipv4Address\":\"198.51.100.7\",\"ipv6Address\":\"2001:db8::1\"}}";
    QT_EQ_INT(qod_tc_plan_matches("10.0.0.1", flows, &m, err, sizeof err), QOD_OK);
    QT_EQ_INT(m.n, 1);
    QT_EQ_INT(m.m[0].peer_addr, ip("198.51.100.7"));
    QT_EQ_INT(m.m[0].peer_mask, 0xffffffffu);
}

QTEST(keys_downstream_device_is_destination)
{
    qod_tc_match m = {ip("10.77.1.2"), {0, 0}, 0, 0, {0, 0}};
    qod_tc_key k[QOD_TC_KEYS_MAX];
    QT_EQ_INT(qod_tc_plan_keys(&m, false, k), 1);
    QT_EQ_INT(k[0].off, 16);
    QT_EQ_INT(ntohl(k[0].val), ip("10.77.1.2"));
    QT_EQ_INT(k[0].mask, 0xffffffffu);
}

QTEST(keys_upstream_swaps_addresses_and_ports)
{
    qod_tc_match m = {ip("10.77.1.2"), {5000, 0xffff}, ip("10.77.2.0"), 0xffffff00u, {443, 0xffff}};
    qod_tc_key k[QOD_TC_KEYS_MAX];
    QT_EQ_INT(qod_tc_plan_keys(&m, true, k), 5);
    QT_EQ_INT(k[0].off, 12);
    QT_EQ_INT(ntohl(k[0].val), ip("10.77.1.2"));
    QT_EQ_INT(k[1].off, 16);
    QT_EQ_INT(ntohl(k[1].val), ip("10.77.2.0"));
    QT_EQ_INT(ntohl(k[1].mask), 0xffffff00u);
    QT_EQ_INT(k[2].off, 0); /* a 20-byte header */
    QT_EQ_INT(ntohl(k[2].val), 0x05000000u);
    QT_EQ_INT(ntohl(k[2].mask), 0x0f000000u);
    QT_EQ_INT(k[3].off, 4); /* not a later fragment */
    QT_EQ_INT(ntohl(k[3].mask), 0x1fffu);
    QT_EQ_INT(k[4].off, 20);
    QT_EQ_INT(ntohl(k[4].val), (5000u << 16) | 443u);
    QT_EQ_INT(ntohl(k[4].mask), 0xffffffffu);
    QT_EQ_INT(qod_tc_plan_keys(&m, false, k), 5);
    QT_EQ_INT(ntohl(k[4].val), (443u << 16) | 5000u);
}

QTEST(keys_one_side_port_leaves_the_other_free)
{
    qod_tc_match m = {ip("10.0.0.1"), {0, 0}, 0, 0, {8080, 0xfffe}};
    qod_tc_key k[QOD_TC_KEYS_MAX];
    QT_EQ_INT(qod_tc_plan_keys(&m, false, k), 4);
    QT_EQ_INT(ntohl(k[3].val), 8080u << 16);
    QT_EQ_INT(ntohl(k[3].mask), 0xfffe0000u);
}

QTEST_MAIN(QT_CASE(htb_prio_bands), QT_CASE(htb_prio_clamps_out_of_range), QT_CASE(owned_range),
           QT_CASE(port_single_is_exact), QT_CASE(port_range_splits_into_aligned_blocks),
           QT_CASE(port_full_range_is_any), QT_CASE(port_worst_case_fits_the_bound), QT_CASE(port_blocks_cover_exactly),
           QT_CASE(session_class_of_qos_l), QT_CASE(session_class_caps_at_the_link), QT_CASE(session_class_has_a_floor),
           QT_CASE(best_effort_gets_what_guarantees_leave), QT_CASE(matches_without_flows_cover_the_device),
           QT_CASE(matches_narrow_by_server_prefix_and_ports), QT_CASE(matches_refuse_what_u32_cannot_enforce),
           QT_CASE(matches_keep_ipv4_when_both_families_given), QT_CASE(keys_downstream_device_is_destination),
           QT_CASE(keys_upstream_swaps_addresses_and_ports), QT_CASE(keys_one_side_port_leaves_the_other_free))
