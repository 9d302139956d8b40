/* The route table: every endpoint of the daemon, its required scope and body type. */
#ifndef QOD_API_ROUTES_H
#define QOD_API_ROUTES_H

#include "api/api.h"

enum { QOD_BODY_NONE = 0, QOD_BODY_JSON, QOD_BODY_FORM };
enum {
    QOD_ROUTE_NO_STORE = 1,
    QOD_ROUTE_OPS = 2,     /* health and metrics: answered even when overloaded */
    QOD_ROUTE_SESSION = 4, /* the first path parameter names a session or assignment: its node answers (peers.h) */
    QOD_ROUTE_CREATE = 8   /* makes a session or assignment: forwarded when this node holds no shard (peers.h) */
};

typedef struct {
    const char *method;
    const char *pattern; /* "{name}" captures one path segment; also the metrics label */
    qod_handler fn;
    const char *scope; /* required scope, or NULL for public routes */
    int body;          /* QOD_BODY_* */
    unsigned flags;
} qod_route;

/* Terminated by an entry with method NULL. */
extern const qod_route qod_routes[];

#endif
