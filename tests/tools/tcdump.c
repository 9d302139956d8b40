/* tcdump: prints the traffic-control state qodd's tc backend manages on an interface, as one JSON object, and
 * plants stray classes and filters for reconciliation tests. It goes through the backend's own netlink layer.
 *
 *   tcdump show DEV
 *       {"root":{"kind","handle","default"},"classes":[{"id","parent","kind","rate_kbit","ceil_kbit","prio",
 *        "leaf","leaf_limit"}],"filters":[{"pref","handle","kind","classid","keys":[{"off","val","mask"}]}]}
 *       (filters attached to 1: only; hash-table entries have classid "")
 *   tcdump stray DEV MINOR DEV_IPV4
 *       adds class 1:MINOR (1 mbit) and a u32 filter of priority MINOR sending DEV_IPV4 to it, the way a session
 *       of an earlier run would have left them.
 * Exit status 0 on success, 1 on a netlink error (printed on stderr), 2 on bad usage. */
#include "net/tc_nl.h"
#include "net/tc_plan.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void handle_str(uint32_t h, char *out, size_t cap)
{
    if (h == 0xffffffffu)
        snprintf(out, cap, "root");
    else if (h == 0)
        out[0] = '\0';
    else
        snprintf(out, cap, "%x:%x", h >> 16, h & 0xffffu);
}

static void print_state(const qod_tc_state *st)
{
    char a[32], b[32];
    handle_str(st->root_handle, a, sizeof a);
    printf("{\"root\":{\"kind\":\"%s\",\"handle\":\"%s\",\"default\":\"%x\"},\"classes\":[", st->root_kind, a,
           st->defcls);
    for (size_t i = 0; i < st->nclasses; i++) {
        const qod_tc_class_info *c = &st->classes[i];
        handle_str(c->handle, a, sizeof a);
        handle_str(c->parent, b, sizeof b);
        printf("%s{\"id\":\"%s\",\"parent\":\"%s\",\"kind\":\"%s\",\"rate_kbit\":%llu,\"ceil_kbit\":%llu,"
               "\"prio\":%u,\"leaf\":\"%s\",\"leaf_limit\":%u}",
               i ? "," : "", a, b, c->kind, (unsigned long long)(c->rate_bps * 8 / 1000),
               (unsigned long long)(c->ceil_bps * 8 / 1000), c->prio, c->leaf, c->leaf_limit);
    }
    printf("],\"filters\":[");
    for (size_t i = 0; i < st->nfilters; i++) {
        const qod_tc_filter_info *f = &st->filters[i];
        handle_str(f->classid, a, sizeof a);
        printf("%s{\"pref\":%u,\"handle\":\"%x\",\"kind\":\"%s\",\"classid\":\"%s\",\"keys\":[", i ? "," : "", f->pref,
               f->handle, f->kind, a);
        for (int k = 0; k < f->nkeys; k++)
            printf("%s{\"off\":%d,\"val\":\"%08x\",\"mask\":\"%08x\"}", k ? "," : "", f->keys[k].off,
                   ntohl(f->keys[k].val), ntohl(f->keys[k].mask));
        printf("]}");
    }
    printf("]}\n");
}

static int stray(qod_tc_nl *nl, int ifindex, const char *minor_s, const char *ip, char *err, size_t errcap)
{
    char *end = NULL;
    unsigned long minor = strtoul(minor_s, &end, 16);
    qod_tc_matches m;
    if (!end || *end || minor == 0 || minor > 0xffff || qod_tc_plan_matches(ip, NULL, &m, err, errcap) != 0) {
        snprintf(err, errcap, "stray needs a hex class minor (1..ffff) and an IPv4 address");
        return 2;
    }
    qod_tc_class_spec c = qod_tc_plan_session_class(1000, 0, 1000, 50, 0);
    int rc = qod_tc_nl_class_put(nl, ifindex, (uint32_t)minor, QOD_TC_MINOR_LINK, &c, err, errcap);
    rc = rc ? rc : qod_tc_nl_filters_put(nl, ifindex, (uint32_t)minor, (uint32_t)minor, &m, false, err, errcap);
    return rc ? 1 : 0;
}

int main(int argc, char **argv)
{
    char err[256] = "";
    qod_tc_nl *nl = NULL;
    int ifindex = 0, status = 1;
    bool show = argc == 3 && strcmp(argv[1], "show") == 0;
    bool plant = argc == 5 && strcmp(argv[1], "stray") == 0;
    if (!show && !plant) {
        fprintf(stderr, "usage: tcdump show DEV | tcdump stray DEV MINOR_HEX DEV_IPV4\n");
        return 2;
    }
    if (qod_tc_nl_open(&nl, err, sizeof err) == 0 && qod_tc_nl_ifindex(nl, argv[2], &ifindex, err, sizeof err) == 0) {
        if (show) {
            qod_tc_state st;
            if (qod_tc_nl_dump(nl, ifindex, &st, err, sizeof err) == 0) {
                print_state(&st);
                qod_tc_state_dispose(&st);
                status = 0;
            }
        } else {
            status = stray(nl, ifindex, argv[3], argv[4], err, sizeof err);
        }
    }
    if (status)
        fprintf(stderr, "tcdump: %s\n", err);
    qod_tc_nl_close(nl);
    return status;
}
