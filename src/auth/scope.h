/* OAuth2 scope lists: space-separated tokens (RFC 6749 §3.3). */
#ifndef QOD_AUTH_SCOPE_H
#define QOD_AUTH_SCOPE_H

#include <stdbool.h>
#include <stddef.h>

/* True when the space-separated list contains scope exactly. */
bool qod_scope_has(const char *list, const char *scope);
/* True when every scope of `want` is in `have`. An empty `want` is a subset. */
bool qod_scope_subset(const char *want, const char *have);
/* True when the list is well formed: 1..32 scopes of printable ASCII without '"' or '\\', single spaces,
 * each of at most 128 bytes, total at most cap-1 bytes. */
bool qod_scope_valid(const char *list, size_t cap);
/* True when every scope of the list is one the product knows (qod_scopes_all). */
bool qod_scope_known(const char *list, const char **bad, size_t *badlen);

#endif
