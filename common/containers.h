/* containers.h -- the small containers every part of Loom uses: an
 * intrusive doubly linked list, a growable array, a binary heap and a
 * string buffer.
 *
 * Owns: nothing but the memory a vector or a buffer allocates.
 * May call: libc only. Header-only (static inline), so dsl/, the daemon's
 * modules, the client and the built-in plugins share one copy without a
 * library to link.
 * Must never call: anything of Loom's. Threads: none of its own; a container
 * is touched by one thread at a time, like any plain struct.
 *
 * Lists: embed a `list_link` in the element and keep a `list_link` head;
 * LIST_OWNER turns a link back into its element. A head is empty when its
 * links point at itself (list_init). Elements are never allocated or freed
 * here.
 *
 * Vectors: `vec_reserve(&arr, n, &cap, sizeof *arr, first)` makes room for
 * element index N (so N + 1 elements), however far past the capacity N is:
 * the capacity doubles until it fits (from FIRST when it was 0), so growing
 * one element at a time stays amortised O(1).
 *
 * Heaps: a `void **` vector kept in heap order by heap_ops (the order, and
 * how each element records its slot), for timers and queues that remove
 * from the middle.
 *
 * String buffers: `sbuf` holds bytes with a NUL kept after the last one (so
 * `b.p` is a C string once anything was added), an optional cap on the
 * length (`max`, 0 = none) and a sticky failure flag, so a run of appends
 * can be checked once at the end. */
#ifndef LOOM_COMMON_CONTAINERS_H
#define LOOM_COMMON_CONTAINERS_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- intrusive doubly linked list */

typedef struct list_link {
    struct list_link *prev, *next;
} list_link;

#define LIST_OWNER(ptr, type, member) ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

/* Iterates over the links of HEAD; L may be unlinked (not freed before the
 * next step is read: NEXT holds it) inside the loop. */
#define LIST_EACH_SAFE(l, nx, head) \
    for (list_link *l = (head)->next, *nx = l->next; l != (head); l = nx, nx = l->next)

static inline void list_init(list_link *h)
{
    h->prev = h->next = h;
}

static inline bool list_empty(const list_link *h)
{
    return h->next == h;
}

/* Links N (not in any list) at the end of H. */
static inline void list_add_tail(list_link *h, list_link *n)
{
    n->prev = h->prev;
    n->next = h;
    h->prev->next = n;
    h->prev = n;
}

/* Links N (not in any list) at the front of H. */
static inline void list_add_head(list_link *h, list_link *n)
{
    n->next = h->next;
    n->prev = h;
    h->next->prev = n;
    h->next = n;
}

/* Unlinks N and leaves it self-linked, so a second list_del is harmless and
 * list_linked tells whether it is in a list. */
static inline void list_del(list_link *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

/* Whether N (list_init'ed or unlinked by list_del) is in a list. */
static inline bool list_linked(const list_link *n)
{
    return n->next != n;
}

/* The first link of H, or NULL when H is empty. */
static inline list_link *list_first(const list_link *h)
{
    return h->next == h ? NULL : h->next;
}

/* Moves every link of FROM, in order, to the end of TO; FROM is left empty.
 * O(1): how a queue is handed from one thread's lock to another's. */
static inline void list_splice_tail(list_link *to, list_link *from)
{
    if (list_empty(from))
        return;
    from->next->prev = to->prev;
    to->prev->next = from->next;
    from->prev->next = to;
    to->prev = from->prev;
    list_init(from);
}

/* ---- growable array */

/* Makes room for element number N in the array *VP (ELEM bytes each, *CAP
 * allocated), doubling the allocation (from FIRST elements, at least 1)
 * until N fits. VP is the address of any object pointer (T **). Returns 0,
 * or -1 when out of memory or on overflow (*VP and *CAP are then
 * unchanged). */
static inline int vec_reserve(void *vp, size_t n, size_t *cap, size_t elem, size_t first)
{
    if (n < *cap)
        return 0;
    if (elem == 0 || n >= SIZE_MAX / elem)
        return -1;
    size_t c = *cap ? *cap : (first ? first : 1);
    while (c <= n) {
        if (c > SIZE_MAX / 2)
            return -1;
        c *= 2;
    }
    if (c > SIZE_MAX / elem)
        c = SIZE_MAX / elem; /* > n by the check above */
    void *v;
    /* vp points at a T *: copy the pointer in and out, whatever T is */
    memcpy(&v, vp, sizeof v);
    void *nv = realloc(v, c * elem);
    if (!nv)
        return -1;
    memcpy(vp, &nv, sizeof nv);
    *cap = c;
    return 0;
}

/* ---- binary min-heap of elements that know their slot */

/* How a heap orders its elements and tells each one where it now sits, so
 * that any element (a cancelled timer) is removed in O(log n). The array is
 * a plain `void **` grown with vec_reserve; a push is `h[n] = e;
 * heap_sift_up(h, n++, ops)`. */
typedef struct heap_ops {
    bool (*before)(const void *a, const void *b); /* A comes out first */
    void (*moved)(void *elem, size_t slot);       /* ELEM now sits at SLOT */
} heap_ops;

static inline void heap_put(void **h, size_t i, void *e, const heap_ops *ops)
{
    h[i] = e;
    ops->moved(e, i);
}

/* Moves the element at slot I up to where it belongs. */
static inline void heap_sift_up(void **h, size_t i, const heap_ops *ops)
{
    void *e = h[i];
    while (i > 0 && ops->before(e, h[(i - 1) / 2])) {
        heap_put(h, i, h[(i - 1) / 2], ops);
        i = (i - 1) / 2;
    }
    heap_put(h, i, e, ops);
}

/* Moves the element at slot I of the N in H down to where it belongs. */
static inline void heap_sift_down(void **h, size_t n, size_t i, const heap_ops *ops)
{
    void *e = h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && ops->before(h[c + 1], h[c]))
            c++;
        if (!ops->before(h[c], e))
            break;
        heap_put(h, i, h[c], ops);
        i = c;
    }
    heap_put(h, i, e, ops);
}

/* Takes the element at slot I out of the *N in H (not freed; *N shrinks). */
static inline void heap_take(void **h, size_t *n, size_t i, const heap_ops *ops)
{
    void *last = h[--*n];
    if (i == *n)
        return;
    heap_put(h, i, last, ops);
    if (i > 0 && ops->before(last, h[(i - 1) / 2]))
        heap_sift_up(h, i, ops);
    else
        heap_sift_down(h, *n, i, ops);
}

/* ---- string buffer */

typedef struct sbuf {
    char *p;          /* owned; NULL until the first append */
    size_t n, cap;    /* bytes held (without the NUL), bytes allocated */
    size_t max;       /* longest length allowed (0 = SIZE_MAX / 2) */
    bool failed;      /* an append failed: out of memory or over max */
    bool too_big;     /* ... because of max */
} sbuf;

#define SBUF_INIT { NULL, 0, 0, 0, false, false }

/* An empty buffer capped at MAX bytes (0 = no cap). */
static inline void sbuf_init(sbuf *b, size_t max)
{
    *b = (sbuf)SBUF_INIT;
    b->max = max;
}

/* Makes room for N more bytes (and the NUL). 0, or -1 with b->failed set. */
static inline int sbuf_grow(sbuf *b, size_t n)
{
    size_t max = b->max ? b->max : SIZE_MAX / 2;
    if (b->failed)
        return -1;
    if (n > max - b->n) {
        b->failed = b->too_big = true;
        return -1;
    }
    if (b->cap - b->n > n)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->n <= n)
        cap *= 2; /* cannot overflow: n + b->n <= SIZE_MAX / 2 */
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

/* Appends the N bytes at S. 0, or -1 (b->failed is then set). */
static inline int sbuf_add(sbuf *b, const void *s, size_t n)
{
    if (sbuf_grow(b, n) < 0)
        return -1;
    if (n)
        memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

static inline int sbuf_adds(sbuf *b, const char *s)
{
    return sbuf_add(b, s, strlen(s));
}

static inline int sbuf_addc(sbuf *b, char c)
{
    return sbuf_add(b, &c, 1);
}

/* Appends printf-style text. 0, or -1 (b->failed is then set). */
static inline int sbuf_vaddf(sbuf *b, const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    int k = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (k < 0) {
        b->failed = true;
        return -1;
    }
    if (sbuf_grow(b, (size_t)k) < 0)
        return -1;
    vsnprintf(b->p + b->n, b->cap - b->n, fmt, ap);
    b->n += (size_t)k;
    return 0;
}

static inline int sbuf_addf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int sbuf_addf(sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = sbuf_vaddf(b, fmt, ap);
    va_end(ap);
    return rc;
}

/* Empties B, keeping its allocation. */
static inline void sbuf_reset(sbuf *b)
{
    b->n = 0;
    b->failed = b->too_big = false;
    if (b->p)
        b->p[0] = '\0';
}

/* Hands B's bytes to the caller (a new NUL-terminated string, "" when empty;
 * free it) and leaves B empty. NULL when B failed or out of memory (B is
 * freed either way). *LEN (may be NULL) gets the length. */
static inline char *sbuf_steal(sbuf *b, size_t *len)
{
    char *p = NULL;
    if (!b->failed)
        p = b->p ? b->p : calloc(1, 1);
    else
        free(b->p);
    if (len)
        *len = p ? b->n : 0;
    size_t max = b->max;
    sbuf_init(b, max);
    return p;
}

static inline void sbuf_free(sbuf *b)
{
    free(b->p);
    size_t max = b->max;
    sbuf_init(b, max);
}

#endif
