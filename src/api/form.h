/* application/x-www-form-urlencoded bodies (the OAuth2 token and CIBA endpoints). Bounded: at most
 * QOD_FORM_MAX_FIELDS fields, each name and value at most QOD_FORM_MAX_VALUE bytes after decoding.
 * A repeated field is an error (RFC 6749 §3.1). */
#ifndef QOD_API_FORM_H
#define QOD_API_FORM_H

#include <stddef.h>

#define QOD_FORM_MAX_FIELDS 16
#define QOD_FORM_MAX_VALUE 1024

typedef struct {
    int n;
    char *names[QOD_FORM_MAX_FIELDS];
    char *values[QOD_FORM_MAX_FIELDS];
} qod_form;

/* Parses len bytes. QOD_OK, QOD_ERR_INVALID (bad escape, repeated field, control byte) or QOD_ERR_LIMIT.
 * On failure `why` names the problem. The form owns its strings: call qod_form_dispose in every case. */
int qod_form_parse(const char *s, size_t len, qod_form *f, const char **why);
/* The value of a field, or NULL. Borrowed from the form. */
const char *qod_form_get(const qod_form *f, const char *name);
/* Frees the strings; the form may be parsed into again. */
void qod_form_dispose(qod_form *f);
/* Decodes %XX and '+' in place over n bytes into out (cap bytes, NUL-terminated); -1 on a bad escape,
 * a NUL or control byte, or overflow; else the decoded length. */
long qod_form_decode(const char *in, size_t n, char *out, size_t cap);

#endif
