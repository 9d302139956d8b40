#include "notify/urlguard.h"

#include "util/err.h"

#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int qod_url_check(const char *url, bool sandbox, char *err, size_t errcap)
{
    size_t n = strlen(url);
    if (n == 0 || n > QOD_URL_MAX) {
        snprintf(err, errcap, "notification URL must be 1 to %d bytes", QOD_URL_MAX);
        return QOD_ERR_INVALID;
    }
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
            snprintf(err, errcap, "notification URL contains a space, control or non-ASCII character");
            return QOD_ERR_INVALID;
        }
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *user = NULL;
    int rc = QOD_OK;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !host || !*host) {
        snprintf(err, errcap, "notification URL is not an absolute URL with a host");
        rc = QOD_ERR_INVALID;
    } else if (strcasecmp(scheme, "https") != 0 && !(sandbox && strcasecmp(scheme, "http") == 0)) {
        snprintf(err, errcap, sandbox ? "notification URL must use http or https"
                                      : "notification URL must use https (live apps)");
        rc = QOD_ERR_INVALID;
    } else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK && user) {
        snprintf(err, errcap, "notification URL must not carry credentials");
        rc = QOD_ERR_INVALID;
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(user);
    curl_url_cleanup(u);
    return rc;
}
