/* test_containers.c -- common/containers.h on its own: the intrusive list,
 * vec_reserve, the heap and the string buffer, including the ways each can
 * refuse. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/containers.h"

/* ---- lists */

typedef struct item {
    int value;
    list_link link;
} item;

/* The values of H in order, into OUT (at most MAX); returns how many. */
static size_t values_of(const list_link *h, int *out, size_t max)
{
    size_t n = 0;
    for (const list_link *l = h->next; l != h && n < max; l = l->next)
        out[n++] = LIST_OWNER(l, item, link)->value;
    return n;
}

static void expect_values(const list_link *h, const int *want, size_t n)
{
    int got[16];
    cr_assert(eq(sz, values_of(h, got, 16), n));
    for (size_t i = 0; i < n; i++)
        cr_expect(eq(int, got[i], want[i]), "element %zu", i);
    /* and backwards, so the prev links agree with the next links */
    size_t i = n;
    for (const list_link *l = h->prev; l != h; l = l->prev)
        cr_expect(eq(int, LIST_OWNER(l, item, link)->value, want[--i]));
    cr_expect(eq(sz, i, 0));
}

Test(list, starts_empty)
{
    list_link h;
    list_init(&h);
    cr_expect(list_empty(&h));
    cr_expect(eq(ptr, list_first(&h), NULL));
    cr_expect(not(list_linked(&h)));
}

Test(list, add_tail_and_head_keep_order)
{
    list_link h;
    item a = {.value = 1}, b = {.value = 2}, c = {.value = 3};
    list_init(&h);
    list_add_tail(&h, &b.link);
    list_add_tail(&h, &c.link);
    list_add_head(&h, &a.link);
    expect_values(&h, (int[]){1, 2, 3}, 3);
    cr_expect(not(list_empty(&h)));
    cr_expect(eq(ptr, list_first(&h), &a.link));
    cr_expect(list_linked(&b.link));
}

Test(list, del_from_every_position)
{
    list_link h;
    item it[4] = {{.value = 0}, {.value = 1}, {.value = 2}, {.value = 3}};
    list_init(&h);
    for (int i = 0; i < 4; i++)
        list_add_tail(&h, &it[i].link);
    list_del(&it[1].link); /* middle */
    expect_values(&h, (int[]){0, 2, 3}, 3);
    list_del(&it[0].link); /* first */
    expect_values(&h, (int[]){2, 3}, 2);
    list_del(&it[3].link); /* last */
    expect_values(&h, (int[]){2}, 1);
    list_del(&it[2].link); /* only */
    cr_expect(list_empty(&h));
    cr_expect(not(list_linked(&it[2].link)));
}

Test(list, double_del_is_harmless)
{
    list_link h;
    item a = {.value = 1}, b = {.value = 2};
    list_init(&h);
    list_add_tail(&h, &a.link);
    list_add_tail(&h, &b.link);
    list_del(&a.link);
    list_del(&a.link);
    cr_expect(not(list_linked(&a.link)));
    expect_values(&h, (int[]){2}, 1);
    /* an unlinked element can be added again */
    list_add_head(&h, &a.link);
    expect_values(&h, (int[]){1, 2}, 2);
}

Test(list, each_safe_removes_while_iterating)
{
    list_link h, odd;
    item it[10];
    list_init(&h);
    list_init(&odd);
    for (int i = 0; i < 10; i++) {
        it[i].value = i;
        list_add_tail(&h, &it[i].link);
    }
    int seen = 0;
    LIST_EACH_SAFE(l, nx, &h) {
        item *x = LIST_OWNER(l, item, link);
        seen++;
        if (x->value % 2) {
            list_del(l);
            list_add_tail(&odd, l); /* moving it must not derail the walk */
        }
    }
    cr_expect(eq(int, seen, 10));
    expect_values(&h, (int[]){0, 2, 4, 6, 8}, 5);
    expect_values(&odd, (int[]){1, 3, 5, 7, 9}, 5);
    LIST_EACH_SAFE(l, nx, &h)
        list_del(l);
    cr_expect(list_empty(&h));
}

Test(list, splice_tail_moves_everything_in_order)
{
    list_link a, b;
    item it[5];
    list_init(&a);
    list_init(&b);
    for (int i = 0; i < 5; i++) {
        it[i].value = i;
        list_add_tail(i < 2 ? &a : &b, &it[i].link);
    }
    list_splice_tail(&a, &b);
    expect_values(&a, (int[]){0, 1, 2, 3, 4}, 5);
    cr_expect(list_empty(&b));
    list_splice_tail(&a, &b); /* an empty source changes nothing */
    expect_values(&a, (int[]){0, 1, 2, 3, 4}, 5);
    list_splice_tail(&b, &a); /* into an empty destination */
    expect_values(&b, (int[]){0, 1, 2, 3, 4}, 5);
    cr_expect(list_empty(&a));
}

/* ---- vec_reserve */

Test(vec, grows_to_an_index_far_past_capacity)
{
    int *v = NULL;
    size_t cap = 0;
    cr_assert(eq(int, vec_reserve(&v, 0, &cap, sizeof *v, 4), 0));
    cr_expect(eq(sz, cap, 4));
    v[0] = 7;
    /* one call, far past the capacity: the old doubling-once bug stopped at 8 */
    cr_assert(eq(int, vec_reserve(&v, 1000, &cap, sizeof *v, 4), 0));
    cr_expect(ge(sz, cap, 1001));
    for (size_t i = 1; i <= 1000; i++)
        v[i] = (int)i; /* ASan says whether the room is really there */
    cr_expect(eq(int, v[0], 7));
    size_t before = cap;
    cr_assert(eq(int, vec_reserve(&v, 1000, &cap, sizeof *v, 4), 0));
    cr_expect(eq(sz, cap, before), "no growth when the index already fits");
    free(v);
}

Test(vec, first_zero_starts_at_one_and_doubles)
{
    char *v = NULL;
    size_t cap = 0;
    cr_assert(eq(int, vec_reserve(&v, 0, &cap, 1, 0), 0));
    cr_expect(eq(sz, cap, 1));
    cr_assert(eq(int, vec_reserve(&v, 1, &cap, 1, 0), 0));
    cr_expect(eq(sz, cap, 2));
    cr_assert(eq(int, vec_reserve(&v, 5, &cap, 1, 0), 0));
    cr_expect(eq(sz, cap, 8));
    memset(v, 'x', cap);
    free(v);
}

Test(vec, overflow_is_refused_with_the_array_unchanged)
{
    long *v = NULL;
    size_t cap = 0;
    cr_assert(eq(int, vec_reserve(&v, 3, &cap, sizeof *v, 4), 0));
    long *kept = v;
    cr_expect(eq(int, vec_reserve(&v, SIZE_MAX / sizeof *v, &cap, sizeof *v, 4), -1));
    cr_expect(eq(int, vec_reserve(&v, SIZE_MAX, &cap, sizeof *v, 4), -1));
    cr_expect(eq(int, vec_reserve(&v, SIZE_MAX - 1, &cap, 1, 4), -1), "doubling past SIZE_MAX");
    cr_expect(eq(ptr, v, kept));
    cr_expect(eq(sz, cap, 4));
    free(v);
    v = NULL;
    cap = 0;
    cr_expect(eq(int, vec_reserve(&v, 0, &cap, 0, 4), -1), "zero-sized elements");
    cr_expect(eq(ptr, v, NULL));
}

/* ---- heap */

typedef struct hitem {
    int key;
    size_t slot;
} hitem;

static bool hitem_before(const void *a, const void *b)
{
    return ((const hitem *)a)->key < ((const hitem *)b)->key;
}

static void hitem_moved(void *e, size_t slot)
{
    ((hitem *)e)->slot = slot;
}

static const heap_ops hops = {hitem_before, hitem_moved};

Test(heap, pops_in_order_after_removals_anywhere)
{
    enum { N = 1000 };
    static hitem items[N];
    void **h = NULL;
    size_t n = 0, cap = 0;
    uint64_t x = 88172645463325252u; /* xorshift: a reproducible order */
    for (int i = 0; i < N; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        items[i].key = (int)(x % 5000); /* with ties */
        cr_assert(eq(int, vec_reserve(&h, n, &cap, sizeof *h, 4), 0));
        h[n] = &items[i];
        heap_sift_up(h, n++, &hops);
    }
    for (size_t i = 0; i < n; i++)
        cr_assert(eq(sz, ((hitem *)h[i])->slot, i), "every element knows its slot");
    /* every third item out, wherever it sits */
    for (int i = 0; i < N; i += 3)
        heap_take(h, &n, items[i].slot, &hops);
    cr_assert(eq(sz, n, N - (N + 2) / 3));
    int last = -1;
    while (n > 0) {
        hitem *top = h[0];
        cr_assert(ge(int, top->key, last));
        cr_assert(eq(sz, top->slot, 0));
        last = top->key;
        heap_take(h, &n, 0, &hops);
    }
    free(h);
}

/* ---- sbuf */

Test(sbuf, appends_keep_a_nul_after_the_bytes)
{
    sbuf b = SBUF_INIT;
    cr_assert(eq(int, sbuf_adds(&b, "hello"), 0));
    cr_assert(eq(int, sbuf_addc(&b, ' '), 0));
    cr_assert(eq(int, sbuf_add(&b, "world!!", 5), 0));
    cr_assert(eq(int, sbuf_add(&b, "a\0b", 3), 0)); /* bytes, NUL included */
    cr_expect(eq(sz, b.n, 14));
    cr_expect(eq(int, memcmp(b.p, "hello worlda\0b", 15), 0));
    cr_expect(not(b.failed));
    sbuf_free(&b);
    cr_expect(eq(ptr, b.p, NULL));
}

Test(sbuf, addf_formats_and_grows)
{
    sbuf b = SBUF_INIT;
    cr_assert(eq(int, sbuf_addf(&b, "%s=%d", "n", 42), 0));
    cr_expect(eq(str, b.p, "n=42"));
    /* longer than the first allocation, so vsnprintf must write after a grow */
    char big[300];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cr_assert(eq(int, sbuf_addf(&b, ";%s", big), 0));
    cr_expect(eq(sz, b.n, 4 + 1 + 299));
    cr_expect(eq(int, b.p[b.n], 0));
    cr_expect(eq(int, b.p[b.n - 1], 'y'));
    sbuf_free(&b);
}

Test(sbuf, cap_sets_too_big_and_keeps_the_bytes)
{
    sbuf b;
    sbuf_init(&b, 8);
    cr_assert(eq(int, sbuf_adds(&b, "12345678"), 0), "exactly the cap fits");
    cr_expect(eq(int, sbuf_addc(&b, '9'), -1));
    cr_expect(b.failed);
    cr_expect(b.too_big);
    cr_expect(eq(str, b.p, "12345678"));
    sbuf_free(&b);
    cr_expect(eq(sz, b.max, 8), "free keeps the cap");
    cr_expect(not(b.failed));

    sbuf_init(&b, 8);
    cr_expect(eq(int, sbuf_addf(&b, "%d", 123456789), -1));
    cr_expect(b.too_big);
    sbuf_free(&b);
}

Test(sbuf, failure_is_sticky)
{
    sbuf b;
    sbuf_init(&b, 4);
    cr_assert(eq(int, sbuf_adds(&b, "ab"), 0));
    cr_expect(eq(int, sbuf_adds(&b, "cdef"), -1));
    /* later appends fail too, even ones that would fit */
    cr_expect(eq(int, sbuf_addc(&b, 'c'), -1));
    cr_expect(eq(int, sbuf_addf(&b, "%c", 'c'), -1));
    cr_expect(eq(str, b.p, "ab"));
    size_t len = 99;
    cr_expect(eq(ptr, sbuf_steal(&b, &len), NULL), "a failed buffer gives nothing");
    cr_expect(eq(sz, len, 0));
    cr_expect(eq(ptr, b.p, NULL));
    cr_expect(not(b.failed));
    cr_expect(eq(sz, b.max, 4));
}

Test(sbuf, reset_clears_failure_and_keeps_memory)
{
    sbuf b;
    sbuf_init(&b, 4);
    cr_assert(eq(int, sbuf_adds(&b, "abc"), 0));
    cr_expect(eq(int, sbuf_adds(&b, "de"), -1));
    char *mem = b.p;
    sbuf_reset(&b);
    cr_expect(eq(sz, b.n, 0));
    cr_expect(not(b.failed));
    cr_expect(not(b.too_big));
    cr_expect(eq(ptr, b.p, mem));
    cr_expect(eq(str, b.p, ""));
    cr_assert(eq(int, sbuf_adds(&b, "wxyz"), 0));
    cr_expect(eq(str, b.p, "wxyz"));
    sbuf_free(&b);
}

Test(sbuf, steal_hands_over_the_string)
{
    sbuf b = SBUF_INIT;
    size_t len = 0;
    char *s = sbuf_steal(&b, &len);
    cr_assert(not(eq(ptr, s, NULL)), "an empty buffer steals as \"\"");
    cr_expect(eq(str, s, ""));
    cr_expect(eq(sz, len, 0));
    free(s);

    cr_assert(eq(int, sbuf_adds(&b, "kept"), 0));
    s = sbuf_steal(&b, &len);
    cr_expect(eq(str, s, "kept"));
    cr_expect(eq(sz, len, 4));
    cr_expect(eq(ptr, b.p, NULL));
    cr_expect(eq(sz, b.n, 0));
    free(s);
    s = sbuf_steal(&b, NULL); /* LEN may be NULL */
    cr_expect(eq(str, s, ""));
    free(s);
}
