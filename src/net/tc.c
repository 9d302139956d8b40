/* The Linux traffic-control backend (--network tc). Not implemented yet: selecting it fails at start with a
 * clear error instead of pretending to enforce anything. */
#include "net/backend.h"

#include "util/err.h"

#include <stdio.h>

static int tc_create(const qod_net_config *cfg, const qod_net_sink *sink, void **self, char *err, size_t errcap)
{
    (void)cfg;
    (void)sink;
    *self = NULL;
    snprintf(err, errcap, "the tc network backend is not available in this build");
    return QOD_ERR_UNSUPPORTED;
}

static void tc_destroy(void *self)
{
    (void)self;
}

static int tc_check(void *self, const qod_net_session *s)
{
    (void)self;
    (void)s;
    return QOD_ERR_UNSUPPORTED;
}

static int tc_provision(void *self, const qod_net_session *s)
{
    (void)self;
    (void)s;
    return QOD_ERR_UNSUPPORTED;
}

static void tc_noop(void *self, const qod_net_session *s)
{
    (void)self;
    (void)s;
}

const qod_net_backend qod_net_tc = {
    .name = "tc",
    .create = tc_create,
    .destroy = tc_destroy,
    .check = tc_check,
    .provision = tc_provision,
    .activated = tc_noop,
    .release = tc_noop,
};
