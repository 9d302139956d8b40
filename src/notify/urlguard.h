/* The callback URL guard (server-side request forgery protection), first part: the URL's shape.
 * Live apps must use https; sandbox apps may use http (and loopback) to test locally. */
#ifndef QOD_NOTIFY_URLGUARD_H
#define QOD_NOTIFY_URLGUARD_H

#include <stdbool.h>
#include <stddef.h>

#define QOD_URL_MAX 2048

/* Checks a callback URL at session creation. QOD_OK, or QOD_ERR_INVALID with why in err. */
int qod_url_check(const char *url, bool sandbox, char *err, size_t errcap);

#endif
