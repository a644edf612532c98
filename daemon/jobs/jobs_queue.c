/* jobs_queue.c -- the daemon's live jobs: a hash table by id, and the
 * queue of jobs waiting to start (a binary heap: highest priority first,
 * then first come), so that 100,000 queued jobs cost O(log n) each. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobs/jobs.h"

/* ---- the table of live jobs (by id) */

static size_t hash_id(const char *s, size_t size)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return (size_t)h & (size - 1);
}

int jobs_table_grow(jobs_t *js)
{
    size_t size = js->table_size ? js->table_size * 2 : 1024;
    ljob **t = calloc(size, sizeof *t);
    if (!t)
        return -ENOMEM;
    for (size_t i = 0; i < js->table_size; i++)
        for (ljob *j = js->table[i], *next; j; j = next) {
            next = j->hnext;
            size_t h = hash_id(j->id, size);
            j->hnext = t[h];
            t[h] = j;
        }
    free(js->table);
    js->table = t;
    js->table_size = size;
    return 0;
}

ljob *jobs_find(jobs_t *js, const char *id)
{
    if (!js->table_size)
        return NULL;
    for (ljob *j = js->table[hash_id(id, js->table_size)]; j; j = j->hnext)
        if (strcmp(j->id, id) == 0)
            return j;
    return NULL;
}

int jobs_table_add(jobs_t *js, ljob *j)
{
    if ((js->njobs + 1) * 4 > js->table_size * 3 && jobs_table_grow(js) < 0)
        return -ENOMEM;
    size_t h = hash_id(j->id, js->table_size);
    j->hnext = js->table[h];
    js->table[h] = j;
    js->njobs++;
    return 0;
}

void jobs_table_del(jobs_t *js, ljob *j)
{
    ljob **p = &js->table[hash_id(j->id, js->table_size)];
    while (*p && *p != j)
        p = &(*p)->hnext;
    if (*p) {
        *p = j->hnext;
        js->njobs--;
    }
}

/* ---- the queue: a binary heap, highest priority then oldest first */

static bool before(const void *a, const void *b)
{
    const ljob *x = a, *y = b;
    return x->priority != y->priority ? x->priority > y->priority : x->seq < y->seq;
}

static void moved(void *e, size_t slot)
{
    ((ljob *)e)->heap_at = slot;
}

static const heap_ops queue_ops = { before, moved };

int jobs_queue_push(jobs_t *js, ljob *j)
{
    if (vec_reserve(&js->queue, js->nqueue, &js->queue_cap, sizeof *js->queue, 256) < 0)
        return -ENOMEM;
    js->queue[js->nqueue] = j;
    heap_sift_up(js->queue, js->nqueue++, &queue_ops);
    return 0;
}

void jobs_queue_remove(jobs_t *js, ljob *j)
{
    heap_take(js->queue, &js->nqueue, j->heap_at, &queue_ops);
}
