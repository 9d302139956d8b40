#include "util/err.h"

#include <string.h>

const char *qod_strerror(int err)
{
    switch (err) {
    case QOD_OK:
        return "ok";
    case QOD_ERR_INVALID:
        return "invalid input";
    case QOD_ERR_NOTFOUND:
        return "not found";
    case QOD_ERR_EXISTS:
        return "already exists";
    case QOD_ERR_LIMIT:
        return "limit exceeded";
    case QOD_ERR_CRYPTO:
        return "cryptographic failure";
    case QOD_ERR_STORE:
        return "store failure";
    case QOD_ERR_STATE:
        return "not allowed in this state";
    case QOD_ERR_DENIED:
        return "permission denied";
    case QOD_ERR_RANGE:
        return "out of range";
    case QOD_ERR_BUSY:
        return "busy, retry later";
    case QOD_ERR_UNSUPPORTED:
        return "unsupported";
    case QOD_ERR_NOSPACE:
        return "no space left";
    case QOD_ERR_CLOSED:
        return "shutting down";
    case QOD_ERR_NOMEM:
        return "out of memory";
    case QOD_ERR_NETWORK:
        return "network backend failure";
    default:
        break;
    }
    if (err < 0 && err > -1000)
        return strerror(-err); /* glibc's strerror returns static text for valid errnos */
    return "unknown error";
}
