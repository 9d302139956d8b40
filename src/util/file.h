/* Reading small files whole, with a size limit. */
#ifndef QOD_UTIL_FILE_H
#define QOD_UTIL_FILE_H

#include <stddef.h>

/* Reads path (at most max bytes) into a NUL-terminated buffer *out owned by the caller (free).
 * Returns QOD_OK, -errno, QOD_ERR_LIMIT (larger than max) or QOD_ERR_NOMEM; why describes a failure. */
int qod_file_read(const char *path, size_t max, char **out, size_t *len, char *why, size_t whycap);

#endif
