/* jobs_queue.c -- the daemon's live jobs: a hash table by id, and the
 * queue of jobs waiting to start.
 *
 * The queue is fair between tenants: each tenant's jobs wait in a binary
 * heap of its own (highest priority first, then first come, so 100,000
 * queued jobs cost O(log n) each), and the tenants with queued jobs take
 * turns by deficit round robin. Every job costs one start, so a turn is
 * `weight` starts: under contention tenants start jobs in proportion to
 * their weights, and a tenant alone gets every slot. A tenant at its
 * max_running gives up its turn (it could not use it, and saves no credit)
 * and goes to the back of the rotation. Priority orders jobs within a
 * tenant, never across tenants: a tenant's high priority cannot starve
 * another tenant. */
#include <errno.h>
#include <stdio.h>
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

/* ---- a tenant's queue: a binary heap, highest priority then oldest first */

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

/* ---- tenants and their turns */

jobs_tenant *jobs_tenant_get(jobs_t *js, const char *name)
{
    if (!name)
        name = "default";
    list_link *l;
    for (l = js->tenants.next; l != &js->tenants; l = l->next) {
        jobs_tenant *t = LIST_OWNER(l, jobs_tenant, link);
        if (strcmp(t->name, name) == 0)
            return t;
    }
    jobs_tenant *t = calloc(1, sizeof *t);
    if (!t || !(t->name = strdup(name))) {
        free(t);
        return NULL;
    }
    t->weight = 1;
    list_init(&t->turn);
    list_add_tail(&js->tenants, &t->link);
    return t;
}

int jobs_tenant_set(jobs_t *js, const char *name, int64_t weight, int64_t max_running,
                    int64_t max_queued)
{
    jobs_tenant *t = jobs_tenant_get(js, name);
    if (!t)
        return -ENOMEM;
    t->weight = weight > 0 ? weight : 1;
    t->max_running = max_running > 0 ? max_running : 0;
    t->max_queued = max_queued > 0 ? max_queued : 0;
    if (t->deficit > t->weight) /* a lower weight applies from this turn */
        t->deficit = t->weight;
    return 0;
}

void jobs_tenants_reset(jobs_t *js)
{
    for (list_link *l = js->tenants.next; l != &js->tenants; l = l->next) {
        jobs_tenant *t = LIST_OWNER(l, jobs_tenant, link);
        t->weight = 1;
        t->max_running = t->max_queued = 0;
        if (t->deficit > 1)
            t->deficit = 1;
    }
}

void jobs_tenants_free(jobs_t *js)
{
    while (!list_empty(&js->tenants)) {
        jobs_tenant *t = LIST_OWNER(js->tenants.next, jobs_tenant, link);
        list_del(&t->link);
        list_del(&t->turn);
        free(t->queue);
        free(t->name);
        free(t);
    }
}

json_t *jobs_tenants_json(const jobs_t *js, const char *only)
{
    json_t *o = json_object();
    for (const list_link *l = js->tenants.next; o && l != &js->tenants; l = l->next) {
        const jobs_tenant *t = LIST_OWNER(l, jobs_tenant, link);
        if (only && strcmp(only, t->name) != 0)
            continue;
        json_object_set_new(o, t->name,
                            json_pack("{s:I, s:I, s:I, s:I, s:I}", "running",
                                      (json_int_t)t->nrunning, "queued", (json_int_t)t->nqueue,
                                      "weight", (json_int_t)t->weight, "submitted",
                                      (json_int_t)t->submitted, "rejected",
                                      (json_int_t)t->rejected));
    }
    return o;
}

/* T's turn ends: to the back of the rotation, or out of it when it has
 * nothing queued (a tenant that comes back later starts a fresh turn with
 * no credit saved up). */
static void turn_end(jobs_t *js, jobs_tenant *t)
{
    t->in_turn = false;
    list_del(&t->turn);
    if (t->nqueue)
        list_add_tail(&js->active, &t->turn);
    else
        t->deficit = 0;
}

int jobs_queue_push(jobs_t *js, ljob *j)
{
    jobs_tenant *t = j->tenant;
    if (vec_reserve(&t->queue, t->nqueue, &t->queue_cap, sizeof *t->queue, 16) < 0)
        return -ENOMEM;
    t->queue[t->nqueue] = j;
    heap_sift_up(t->queue, t->nqueue++, &queue_ops);
    js->nqueue++;
    if (!list_linked(&t->turn))
        list_add_tail(&js->active, &t->turn);
    return 0;
}

void jobs_queue_remove(jobs_t *js, ljob *j)
{
    jobs_tenant *t = j->tenant;
    heap_take(t->queue, &t->nqueue, j->heap_at, &queue_ops);
    js->nqueue--;
    if (!t->nqueue) {
        t->in_turn = false;
        t->deficit = 0;
        list_del(&t->turn);
    }
}

static bool tenant_full(const jobs_tenant *t)
{
    return t->max_running > 0 && (int64_t)t->nrunning >= t->max_running;
}

ljob *jobs_queue_next(jobs_t *js)
{
    /* every tenant is looked at once at most: a pass that finds each one
     * full ends with no job */
    size_t seen = 0, active = 0;
    for (list_link *l = js->active.next; l != &js->active; l = l->next)
        active++;
    while (seen++ < active) {
        jobs_tenant *t = LIST_OWNER(js->active.next, jobs_tenant, turn);
        if (tenant_full(t)) {
            t->deficit = 0; /* a turn it cannot use is not saved up */
            turn_end(js, t);
            continue;
        }
        if (!t->in_turn) {
            t->deficit += t->weight;
            t->in_turn = true;
        }
        return t->queue[0];
    }
    return NULL;
}

void jobs_queue_take(jobs_t *js, ljob *j)
{
    jobs_tenant *t = j->tenant;
    jobs_queue_remove(js, j);
    if (t->in_turn && --t->deficit <= 0) {
        t->deficit = 0;
        turn_end(js, t);
    }
}
