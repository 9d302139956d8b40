/* The 3GPP NEF AsSessionWithQoS backend (--network nef). Not implemented yet: selecting it fails at start
 * with a clear error instead of pretending to provision anything. */
#include "net/backend.h"

#include "util/err.h"

#include <stdio.h>

static int nef_create(const qod_net_config *cfg, const qod_net_sink *sink, void **self, char *err, size_t errcap)
{
    (void)cfg;
    (void)sink;
    *self = NULL;
    snprintf(err, errcap, "the nef network backend is not available in this build");
    return QOD_ERR_UNSUPPORTED;
}

static void nef_destroy(void *self)
{
    (void)self;
}

static int nef_check(void *self, const qod_net_session *s)
{
    (void)self;
    (void)s;
    return QOD_ERR_UNSUPPORTED;
}

static int nef_provision(void *self, const qod_net_session *s)
{
    (void)self;
    (void)s;
    return QOD_ERR_UNSUPPORTED;
}

static void nef_noop(void *self, const qod_net_session *s)
{
    (void)self;
    (void)s;
}

const qod_net_backend qod_net_nef = {
    .name = "nef",
    .create = nef_create,
    .destroy = nef_destroy,
    .check = nef_check,
    .provision = nef_provision,
    .activated = nef_noop,
    .release = nef_noop,
};
