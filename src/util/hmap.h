/* A string-keyed hash map with chaining. Keys are borrowed: the caller keeps each key alive while its entry
 * exists (usually the key is a field of the value). Grows by doubling; no shrinking. Not thread-safe. */
#ifndef QOD_UTIL_HMAP_H
#define QOD_UTIL_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct qod_hmap_node {
    const char *key;
    void *val;
    uint64_t hash;
    struct qod_hmap_node *next;
} qod_hmap_node;

typedef struct {
    qod_hmap_node **b;
    size_t nb, n;
} qod_hmap;

/* Empty map. */
void qod_hmap_init(qod_hmap *m);
/* Frees the nodes and buckets (not keys or values). */
void qod_hmap_dispose(qod_hmap *m);
/* The value for key, or NULL. */
void *qod_hmap_get(const qod_hmap *m, const char *key);
/* Inserts or replaces; QOD_OK or QOD_ERR_NOMEM. */
int qod_hmap_put(qod_hmap *m, const char *key, void *val);
/* Removes key; returns the old value or NULL. */
void *qod_hmap_del(qod_hmap *m, const char *key);
/* Entries. */
size_t qod_hmap_count(const qod_hmap *m);
/* Calls fn for every entry; fn must not modify the map. Stops when fn returns non-zero. */
void qod_hmap_each(const qod_hmap *m, int (*fn)(void *arg, const char *key, void *val), void *arg);
/* Calls fn for the entries of at most `buckets` buckets, starting at `cursor` (0 for the first call), and returns
 * the cursor to pass next, 0 once the whole map was scanned. The map may change between calls: an entry present
 * from the first call to the last is visited exactly once (the cursor counts in bit-reversed order, so doubling the
 * buckets keeps every visited bucket behind it, and the map never shrinks); one added or removed meanwhile may or
 * may not be. When fn returns non-zero the scan stops after that entry, *stopped is set and 0 is returned. */
size_t qod_hmap_scan(const qod_hmap *m, size_t cursor, size_t buckets, int (*fn)(void *arg, const char *key, void *val),
                     void *arg, int *stopped);
/* 64-bit FNV-1a of a string. */
uint64_t qod_hash_str(const char *s);

#endif
