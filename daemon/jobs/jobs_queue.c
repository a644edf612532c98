/* jobs_queue.c -- the daemon's live jobs: a hash table by id, and the
 * queue of jobs waiting to start (a binary heap: highest priority first,
 * then first come), so that 100,000 queued jobs cost O(log n) each. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/loomd.h"
#include "dsl/util.h"

/* ---- the table of live jobs (by id) */

static size_t hash_id(const char *s, size_t size)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h & (size - 1);
}

int jobs_table_grow(loomd *d)
{
    size_t size = d->table_size ? d->table_size * 2 : 1024;
    ljob **t = calloc(size, sizeof *t);
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < d->table_size; i++)
        for (ljob *j = d->table[i], *next; j; j = next) {
            next = j->hnext;
            size_t h = hash_id(j->id, size);
            j->hnext = t[h];
            t[h] = j;
        }
    free(d->table);
    d->table = t;
    d->table_size = size;
    return 0;
}

ljob *jobs_find(loomd *d, const char *id)
{
    if (!d->table_size)
        return NULL;
    for (ljob *j = d->table[hash_id(id, d->table_size)]; j; j = j->hnext)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

int jobs_table_add(loomd *d, ljob *j)
{
    if ((d->njobs + 1) * 4 > d->table_size * 3 && jobs_table_grow(d) < 0)
        return -ENOMEM;
    size_t h = hash_id(j->id, d->table_size);
    j->hnext = d->table[h];
    d->table[h] = j;
    d->njobs++;
    return 0;
}

void jobs_table_del(loomd *d, ljob *j)
{
    ljob **p = &d->table[hash_id(j->id, d->table_size)];
    while (*p && *p != j)
        p = &(*p)->hnext;
    if (*p) {
        *p = j->hnext;
        d->njobs--;
    }
}

/* ---- the queue: a binary heap, highest priority then oldest first */

static bool before(const ljob *a, const ljob *b)
{
    return a->priority != b->priority ? a->priority > b->priority : a->seq < b->seq;
}

static void heap_set(loomd *d, size_t i, ljob *j)
{
    d->queue[i] = j;
    j->heap_at = i;
}

static void heap_up(loomd *d, size_t i)
{
    ljob *j = d->queue[i];
    while (i > 0 && before(j, d->queue[(i - 1) / 2])) {
        heap_set(d, i, d->queue[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    heap_set(d, i, j);
}

static void heap_down(loomd *d, size_t i)
{
    ljob *j = d->queue[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= d->nqueue)
            break;
        if (c + 1 < d->nqueue && before(d->queue[c + 1], d->queue[c]))
            c++;
        if (!before(d->queue[c], j))
            break;
        heap_set(d, i, d->queue[c]);
        i = c;
    }
    heap_set(d, i, j);
}

int jobs_queue_push(loomd *d, ljob *j)
{
    if (dsl_vec_reserve(&d->queue, d->nqueue, &d->queue_cap, sizeof *d->queue, 256) < 0)
        return -ENOMEM;
    heap_set(d, d->nqueue++, j);
    heap_up(d, d->nqueue - 1);
    return 0;
}

void jobs_queue_remove(loomd *d, ljob *j)
{
    size_t i = j->heap_at;
    ljob *last = d->queue[--d->nqueue];
    if (i < d->nqueue) {
        heap_set(d, i, last);
        heap_down(d, i);
        heap_up(d, last->heap_at);
    }
}
