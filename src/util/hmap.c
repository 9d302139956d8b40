#include "util/hmap.h"

#include "util/err.h"

#include <stdlib.h>
#include <string.h>

uint64_t qod_hash_str(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3ull;
    }
    return h ^ (h >> 29);
}

void qod_hmap_init(qod_hmap *m)
{
    m->b = NULL;
    m->nb = m->n = 0;
}

void qod_hmap_dispose(qod_hmap *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (qod_hmap_node *n = m->b[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    }
    free(m->b);
    qod_hmap_init(m);
}

static qod_hmap_node **slot(const qod_hmap *m, const char *key, uint64_t h)
{
    qod_hmap_node **p = &m->b[h & (m->nb - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->key, key) != 0))
        p = &(*p)->next;
    return p;
}

void *qod_hmap_get(const qod_hmap *m, const char *key)
{
    if (!m->n)
        return NULL;
    qod_hmap_node *n = *slot(m, key, qod_hash_str(key));
    return n ? n->val : NULL;
}

static int grow(qod_hmap *m)
{
    size_t nb = m->nb ? m->nb * 2 : 64;
    qod_hmap_node **b = calloc(nb, sizeof *b);
    if (!b)
        return QOD_ERR_NOMEM;
    for (size_t i = 0; i < m->nb; i++) {
        for (qod_hmap_node *n = m->b[i], *next; n; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
    return QOD_OK;
}

int qod_hmap_put(qod_hmap *m, const char *key, void *val)
{
    if (m->n >= m->nb && grow(m) != QOD_OK)
        return QOD_ERR_NOMEM;
    uint64_t h = qod_hash_str(key);
    qod_hmap_node **p = slot(m, key, h);
    if (*p) {
        (*p)->key = key;
        (*p)->val = val;
        return QOD_OK;
    }
    qod_hmap_node *n = malloc(sizeof *n);
    if (!n)
        return QOD_ERR_NOMEM;
    *n = (qod_hmap_node){key, val, h, NULL};
    *p = n;
    m->n++;
    return QOD_OK;
}

void *qod_hmap_del(qod_hmap *m, const char *key)
{
    if (!m->n)
        return NULL;
    qod_hmap_node **p = slot(m, key, qod_hash_str(key));
    qod_hmap_node *n = *p;
    if (!n)
        return NULL;
    void *val = n->val;
    *p = n->next;
    free(n);
    m->n--;
    return val;
}

size_t qod_hmap_count(const qod_hmap *m)
{
    return m->n;
}

void qod_hmap_each(const qod_hmap *m, int (*fn)(void *arg, const char *key, void *val), void *arg)
{
    for (size_t i = 0; i < m->nb; i++)
        for (qod_hmap_node *n = m->b[i]; n; n = n->next)
            if (fn(arg, n->key, n->val))
                return;
}

static uint64_t reverse_bits(uint64_t v)
{
    v = ((v >> 1) & 0x5555555555555555ull) | ((v & 0x5555555555555555ull) << 1);
    v = ((v >> 2) & 0x3333333333333333ull) | ((v & 0x3333333333333333ull) << 2);
    v = ((v >> 4) & 0x0f0f0f0f0f0f0f0full) | ((v & 0x0f0f0f0f0f0f0f0full) << 4);
    v = ((v >> 8) & 0x00ff00ff00ff00ffull) | ((v & 0x00ff00ff00ff00ffull) << 8);
    v = ((v >> 16) & 0x0000ffff0000ffffull) | ((v & 0x0000ffff0000ffffull) << 16);
    return (v >> 32) | (v << 32);
}

size_t qod_hmap_scan(const qod_hmap *m, size_t cursor, size_t buckets, int (*fn)(void *arg, const char *key, void *val),
                     void *arg, int *stopped)
{
    *stopped = 0;
    if (!m->nb)
        return 0;
    uint64_t mask = m->nb - 1, v = cursor;
    for (size_t k = 0; k < buckets; k++) {
        for (qod_hmap_node *n = m->b[v & mask]; n; n = n->next)
            if (fn(arg, n->key, n->val)) {
                *stopped = 1;
                return 0;
            }
        /* The next bucket in bit-reversed order: increment the reversed index within the mask's bits. */
        v = reverse_bits(reverse_bits(v | ~mask) + 1);
        if (!v)
            return 0;
    }
    return (size_t)v;
}
