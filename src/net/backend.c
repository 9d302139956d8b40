/* The registry of network backends, chosen by name (--network). */
#include "net/backend.h"

#include <string.h>

const qod_net_backend *qod_net_find(const char *name)
{
    static const qod_net_backend *const all[] = {&qod_net_sim, &qod_net_tc, &qod_net_nef};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}
