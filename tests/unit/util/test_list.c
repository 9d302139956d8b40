#include "util/list.h"

#include "qtest.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    int v;
    qod_link link;
} item;

/* The values from head to tail, then from tail to head, as "1 2 3|3 2 1". */
static const char *walk(const qod_list *l, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (const qod_link *e = l->head; e && n < cap; e = e->next)
        n += (size_t)snprintf(out + n, cap - n, "%s%d", e == l->head ? "" : " ", QOD_LIST_ELEM(e, const item, link)->v);
    n += n < cap ? (size_t)snprintf(out + n, cap - n, "|") : 0;
    for (const qod_link *e = l->tail; e && n < cap; e = e->prev)
        n += (size_t)snprintf(out + n, cap - n, "%s%d", e == l->tail ? "" : " ", QOD_LIST_ELEM(e, const item, link)->v);
    return out;
}

QTEST(appended_elements_keep_their_order_both_ways)
{
    qod_list l = {0};
    item it[3] = {{.v = 1}, {.v = 2}, {.v = 3}};
    char buf[64];
    QT_EQ_STR(walk(&l, buf, sizeof buf), "|");
    for (int i = 0; i < 3; i++)
        qod_list_append(&l, &it[i].link);
    QT_EQ_STR(walk(&l, buf, sizeof buf), "1 2 3|3 2 1");
    QT_TRUE(QOD_LIST_ELEM(l.head, item, link) == &it[0]);
    QT_TRUE(QOD_LIST_ELEM((qod_link *)NULL, item, link) == NULL);
}

QTEST(removal_from_the_head_the_middle_and_the_tail)
{
    qod_list l = {0};
    item it[5];
    char buf[64];
    for (int i = 0; i < 5; i++) {
        it[i].v = i + 1;
        qod_list_append(&l, &it[i].link);
    }
    qod_list_remove(&l, &it[2].link);
    QT_EQ_STR(walk(&l, buf, sizeof buf), "1 2 4 5|5 4 2 1");
    QT_TRUE(it[2].link.prev == NULL && it[2].link.next == NULL);
    qod_list_remove(&l, &it[0].link);
    QT_EQ_STR(walk(&l, buf, sizeof buf), "2 4 5|5 4 2");
    qod_list_remove(&l, &it[4].link);
    QT_EQ_STR(walk(&l, buf, sizeof buf), "2 4|4 2");
    qod_list_append(&l, &it[2].link); /* a removed element may come back */
    QT_EQ_STR(walk(&l, buf, sizeof buf), "2 4 3|3 4 2");
    qod_list_remove(&l, &it[1].link);
    qod_list_remove(&l, &it[3].link);
    qod_list_remove(&l, &it[2].link);
    QT_EQ_STR(walk(&l, buf, sizeof buf), "|");
    QT_TRUE(l.head == NULL && l.tail == NULL);
}

QTEST_MAIN(QT_CASE(appended_elements_keep_their_order_both_ways),
           QT_CASE(removal_from_the_head_the_middle_and_the_tail))
