/* One error convention for the whole project: QOD_OK is zero, failures are negative.
 * System errors are returned as -errno; the project's own codes start at -1000 so the two never collide. */
#ifndef QOD_UTIL_ERR_H
#define QOD_UTIL_ERR_H

/* Project error codes. Append only: values are stable across releases. */
typedef enum {
    QOD_OK = 0,
    QOD_ERR_INVALID = -1000,     /* malformed input */
    QOD_ERR_NOTFOUND = -1001,    /* no such object */
    QOD_ERR_EXISTS = -1002,      /* object already exists / conflict */
    QOD_ERR_LIMIT = -1003,       /* a size or count limit was hit */
    QOD_ERR_CRYPTO = -1004,      /* a cryptographic operation failed */
    QOD_ERR_STORE = -1005,       /* the store failed */
    QOD_ERR_STATE = -1006,       /* operation not allowed in the current state */
    QOD_ERR_DENIED = -1007,      /* caller is not allowed */
    QOD_ERR_RANGE = -1008,       /* value out of range */
    QOD_ERR_BUSY = -1009,        /* temporarily unavailable, retry later */
    QOD_ERR_UNSUPPORTED = -1010, /* valid but not supported here */
    QOD_ERR_NOSPACE = -1011,     /* storage is full */
    QOD_ERR_CLOSED = -1012,      /* component is shutting down */
    QOD_ERR_NOMEM = -1013,       /* allocation failed */
    QOD_ERR_NETWORK = -1014,     /* the network backend refused or failed */
} qod_err;

/* Human-readable text for a qod_err or a -errno value; never NULL, never freed. */
const char *qod_strerror(int err);

#endif
