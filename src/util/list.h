/* An intrusive doubly linked list: each element embeds a qod_link, and the list holds both ends, so that an element
 * is appended, and removed from anywhere, in constant time and without an allocation. Not thread-safe. */
#ifndef QOD_UTIL_LIST_H
#define QOD_UTIL_LIST_H

#include <stddef.h>

typedef struct qod_link {
    struct qod_link *prev, *next;
} qod_link;

typedef struct {
    qod_link *head, *tail; /* the first element appended that is still in, and the last; NULL when empty */
} qod_list;

/* The element of type `type` whose member `member` is the link l (NULL stays NULL). */
#define QOD_LIST_ELEM(l, type, member) ((l) ? (type *)(void *)((char *)(l)-offsetof(type, member)) : (type *)NULL)

/* Appends e, which is in no list, at the tail. */
void qod_list_append(qod_list *l, qod_link *e);
/* Removes e, which is in l; its links are cleared. */
void qod_list_remove(qod_list *l, qod_link *e);

#endif
