#include "util/file.h"

#include "util/err.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int qod_file_read(const char *path, size_t max, char **out, size_t *len, char *why, size_t whycap)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f) {
        int rc = -errno;
        snprintf(why, whycap, "cannot open %s: %s", path, strerror(errno));
        return rc;
    }
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    int rc = QOD_OK;
    if (!buf) {
        rc = QOD_ERR_NOMEM;
    } else if (ferror(f)) {
        rc = -EIO;
        snprintf(why, whycap, "cannot read %s", path);
    } else if (n > max) {
        rc = QOD_ERR_LIMIT;
        snprintf(why, whycap, "%s is larger than %zu bytes", path, max);
    }
    fclose(f);
    if (rc != QOD_OK) {
        free(buf);
        return rc;
    }
    buf[n] = '\0';
    *out = buf;
    *len = n;
    return QOD_OK;
}
