/* The simulated network. Sandbox sessions follow the phone-number table of the interface contract; live
 * sessions go through a capacity model: each cell has a guaranteed capacity, each profile consumes its
 * guaranteed downstream rate, and admission refuses a profile when the device's cell is full. */
#include "net/backend.h"

#include "util/err.h"
#include "util/hmap.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SIM_SLOW_DELAY_MS 10000
#define SIM_TERMINATE_AFTER_MS 5000

typedef struct {
    char id[37];
    int cell;
    int64_t kbps;
} grant;

typedef struct {
    qod_net_config cfg;
    qod_net_sink sink;
    qod_hmap grants; /* session id → grant (live sessions holding capacity) */
    qod_hmap cells;  /* cell id text → cell_use */
} sim;

typedef struct {
    char id[16];
    int64_t used_kbps;
} cell_use;

static int sim_create(const qod_net_config *cfg, const qod_net_sink *sink, void **self, char *err, size_t errcap)
{
    (void)err;
    (void)errcap;
    sim *s = calloc(1, sizeof *s);
    if (!s)
        return QOD_ERR_NOMEM;
    s->cfg = *cfg;
    s->sink = *sink;
    qod_hmap_init(&s->grants);
    qod_hmap_init(&s->cells);
    *self = s;
    return QOD_OK;
}

static int free_grant(void *arg, const char *key, void *val)
{
    (void)arg;
    (void)key;
    free(val);
    return 0;
}

static void sim_destroy(void *self)
{
    sim *s = self;
    if (!s)
        return;
    qod_hmap_each(&s->grants, free_grant, NULL);
    qod_hmap_each(&s->cells, free_grant, NULL);
    qod_hmap_dispose(&s->grants);
    qod_hmap_dispose(&s->cells);
    free(s);
}

static const char *sandbox_phone(const qod_net_session *ns)
{
    return ns->sandbox && ns->kind == QOD_DEV_PHONE ? ns->device->phone : "";
}

static int sim_check(void *self, const qod_net_session *ns)
{
    (void)self;
    const char *p = sandbox_phone(ns);
    if (strcmp(p, "+99999990404") == 0)
        return QOD_ERR_NOTFOUND;
    if (strcmp(p, "+99999990422") == 0)
        return QOD_ERR_UNSUPPORTED;
    return QOD_OK;
}

/* The use of a cell, created on first use: memory follows the cells in use, not the largest cell id. */
static cell_use *cell_of(sim *s, int cell)
{
    char key[16];
    snprintf(key, sizeof key, "%d", cell);
    cell_use *c = qod_hmap_get(&s->cells, key);
    if (!c && (c = calloc(1, sizeof *c))) {
        memcpy(c->id, key, sizeof key);
        if (qod_hmap_put(&s->cells, c->id, c) != QOD_OK) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

/* Live admission: reserve the profile's guaranteed rate in the device's cell, or refuse. */
static int admit(sim *s, const qod_net_session *ns)
{
    int64_t need = ns->profile->min_down_kbps;
    int cell = ns->sub ? ns->sub->cell : 0;
    cell_use *use = cell_of(s, cell);
    if (!use || use->used_kbps + need > s->cfg.cell_capacity_kbps)
        return QOD_ERR_LIMIT;
    grant *g = calloc(1, sizeof *g);
    if (!g)
        return QOD_ERR_NOMEM;
    snprintf(g->id, sizeof g->id, "%s", ns->id);
    g->cell = cell;
    g->kbps = need;
    if (qod_hmap_put(&s->grants, g->id, g) != QOD_OK) {
        free(g);
        return QOD_ERR_NOMEM;
    }
    use->used_kbps += need;
    return QOD_OK;
}

static int sim_provision(void *self, const qod_net_session *ns)
{
    sim *s = self;
    const char *p = sandbox_phone(ns);
    int64_t delay = s->cfg.sandbox_delay_ms;
    if (strcmp(p, "+99999991001") == 0) {
        s->sink.report_after(s->sink.ctx, ns->id, delay, QOD_NET_REFUSED, "congestion");
    } else if (strcmp(p, "+99999991003") == 0) {
        s->sink.report_after(s->sink.ctx, ns->id, SIM_SLOW_DELAY_MS, QOD_NET_AVAILABLE, "slow provisioning");
    } else if (ns->sandbox) {
        s->sink.report_after(s->sink.ctx, ns->id, delay, QOD_NET_AVAILABLE, "provisioned");
    } else if (qod_hmap_get(&s->grants, ns->id)) {
        s->sink.report_after(s->sink.ctx, ns->id, delay, QOD_NET_AVAILABLE, "provisioned");
    } else {
        int rc = admit(s, ns);
        if (rc == QOD_OK)
            s->sink.report_after(s->sink.ctx, ns->id, delay, QOD_NET_AVAILABLE, "provisioned");
        else
            s->sink.report_after(s->sink.ctx, ns->id, delay, QOD_NET_REFUSED, "cell capacity exhausted");
    }
    return QOD_OK;
}

static void sim_activated(void *self, const qod_net_session *ns)
{
    sim *s = self;
    if (strcmp(sandbox_phone(ns), "+99999991002") == 0)
        s->sink.report_after(s->sink.ctx, ns->id, SIM_TERMINATE_AFTER_MS, QOD_NET_TERMINATED,
                             "network terminated the session");
}

static void sim_release(void *self, const qod_net_session *ns)
{
    sim *s = self;
    grant *g = qod_hmap_del(&s->grants, ns->id);
    if (!g)
        return;
    cell_use *use = cell_of(s, g->cell);
    if (use)
        use->used_kbps -= g->kbps;
    free(g);
}

const qod_net_backend qod_net_sim = {
    .name = "sim",
    .create = sim_create,
    .destroy = sim_destroy,
    .check = sim_check,
    .provision = sim_provision,
    .activated = sim_activated,
    .release = sim_release,
};
