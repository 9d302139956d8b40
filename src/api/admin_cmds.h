/* The admin commands behind the admin socket (qodctl's verbs). */
#ifndef QOD_API_ADMIN_CMDS_H
#define QOD_API_ADMIN_CMDS_H

#include "api/admin.h"

typedef struct {
    const char *name; /* "app.create" */
    qod_admin_fn fn;
} qod_admin_cmd;

/* The command named name, or NULL. */
const qod_admin_cmd *qod_admin_find(const char *name);

#endif
