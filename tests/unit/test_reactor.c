/* test_reactor.c -- the event loop: file events, timers, posts, stopping.
 *
 * Nothing here asserts how long anything took: a timer is only checked to
 * fire no earlier than its deadline and in the right order, and waits are
 * bounded by the test timeout alone, so a loaded machine cannot fail them. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "daemon/core/reactor.h"

/* ---- helpers */

static void make_pipe(int fds[2])
{
    cr_assert(eq(int, pipe2(fds, O_NONBLOCK | O_CLOEXEC), 0));
}

static void put_byte(int fd)
{
    cr_assert(eq(long, (long)write(fd, "x", 1), 1L));
}

/* A small deterministic generator, so a failing order is reproducible. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *state = x;
}

/* ---- file events */

typedef struct fd_probe {
    int calls;
    int last_fd;
    int last_events;
    bool delete_self;
    char buf[16];
} fd_probe;

static void on_fd(reactor_t *r, int fd, int events, void *ud)
{
    fd_probe *p = ud;
    p->calls++;
    p->last_fd = fd;
    p->last_events = events;
    if (events & REACTOR_READ)
        (void)!read(fd, p->buf, sizeof p->buf);
    if (p->delete_self)
        cr_assert(eq(int, reactor_del_fd(r, fd), 0));
}

Test(reactor_fd, pipe_readable, .timeout = 30)
{
    reactor_t *r = reactor_new();
    cr_assert(r != NULL);
    int fds[2];
    make_pipe(fds);
    fd_probe p = {0};
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_READ, on_fd, &p), 0));
    cr_assert(eq(int, reactor_run_once(r, 0), 0), "nothing is readable yet");
    put_byte(fds[1]);
    while (p.calls == 0)
        reactor_run_once(r, 100);
    cr_assert(eq(int, p.calls, 1));
    cr_assert(eq(int, p.last_fd, fds[0]));
    cr_assert(eq(int, p.last_events, REACTOR_READ));
    cr_assert(eq(chr, p.buf[0], 'x'));
    cr_assert(eq(int, reactor_run_once(r, 0), 0), "the byte was consumed");
    reactor_free(r);
    close(fds[0]);
    close(fds[1]);
}

/* A descriptor number far past the table grows it in one step; the slots
 * in between must read as unregistered, and the low one must keep working. */
Test(reactor_fd, high_descriptor_grows_the_table, .timeout = 30)
{
    reactor_t *r = reactor_new();
    cr_assert(r != NULL);
    int fds[2];
    make_pipe(fds);
    int high = fcntl(fds[0], F_DUPFD_CLOEXEC, 900);
    cr_assert(ge(int, high, 900));
    fd_probe lo = {0}, hi = {0};
    cr_assert(eq(int, reactor_add_fd(r, fds[1], 0, on_fd, &lo), 0));
    cr_assert(eq(int, reactor_add_fd(r, high, REACTOR_READ, on_fd, &hi), 0));
    cr_assert(eq(int, reactor_mod_fd(r, high - 1, REACTOR_READ), -ENOENT));
    cr_assert(eq(int, reactor_del_fd(r, high - 100), -ENOENT));
    cr_assert(eq(int, reactor_add_fd(r, fds[1], 0, on_fd, &lo), -EEXIST));
    put_byte(fds[1]);
    while (hi.calls == 0)
        reactor_run_once(r, 100);
    cr_assert(eq(int, hi.last_fd, high));
    cr_assert(eq(int, lo.calls, 0));
    reactor_free(r);
    close(high);
    close(fds[0]);
    close(fds[1]);
}

Test(reactor_fd, socketpair_write_then_read, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int sv[2];
    cr_assert(eq(int, socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0));
    fd_probe p = {0};
    cr_assert(eq(int, reactor_add_fd(r, sv[0], REACTOR_READ | REACTOR_WRITE, on_fd, &p), 0));
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, p.last_events, REACTOR_WRITE), "an empty socket is writable only");
    cr_assert(eq(int, reactor_mod_fd(r, sv[0], REACTOR_READ), 0));
    cr_assert(eq(int, reactor_run_once(r, 0), 0), "no longer asked for writability");
    put_byte(sv[1]);
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, p.last_events, REACTOR_READ));
    reactor_free(r);
    close(sv[0]);
    close(sv[1]);
}

Test(reactor_fd, quiet_registration_ignores_hangup, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int fds[2];
    make_pipe(fds);
    fd_probe p = {0};
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_READ, on_fd, &p), 0));
    cr_assert(eq(int, reactor_mod_fd(r, fds[0], 0), 0));
    put_byte(fds[1]);
    close(fds[1]); /* a hangup, which epoll reports whatever the mask */
    for (int i = 0; i < 10; i++)
        cr_assert(eq(int, reactor_run_once(r, 0), 0));
    cr_assert(eq(int, p.calls, 0));
    cr_assert(eq(int, reactor_mod_fd(r, fds[0], REACTOR_READ), 0));
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, p.last_events, REACTOR_READ), "data, then end of file, read as READ");
    reactor_free(r);
    close(fds[0]);
}

Test(reactor_fd, delete_inside_own_callback, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int fds[2];
    make_pipe(fds);
    fd_probe p = {.delete_self = true};
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_READ, on_fd, &p), 0));
    put_byte(fds[1]);
    put_byte(fds[1]);
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    put_byte(fds[1]);
    for (int i = 0; i < 5; i++)
        cr_assert(eq(int, reactor_run_once(r, 0), 0));
    cr_assert(eq(int, p.calls, 1));
    cr_assert(eq(int, reactor_del_fd(r, fds[0]), -ENOENT));
    /* The descriptor can be registered again afterwards. */
    p.delete_self = false;
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_READ, on_fd, &p), 0));
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, p.calls, 2));
    reactor_free(r);
    close(fds[0]);
    close(fds[1]);
}

/* Two pipes are ready in the same pass. Whichever callback runs first
 * deletes the other, closes it and puts a fresh, empty pipe under the same
 * descriptor number: the event already collected for the old pipe must
 * reach neither the old callback nor the new registration. */
typedef struct swap_ctx {
    int a, b;
    int first_calls, new_calls;
    int fresh[2];
} swap_ctx;

static void on_swap_new(reactor_t *r, int fd, int events, void *ud)
{
    swap_ctx *c = ud;
    c->new_calls++;
    char buf[4];
    (void)!read(fd, buf, sizeof buf);
}

static void on_swap_first(reactor_t *r, int fd, int events, void *ud)
{
    swap_ctx *c = ud;
    c->first_calls++;
    char buf[4];
    (void)!read(fd, buf, sizeof buf);
    int other = fd == c->a ? c->b : c->a;
    cr_assert(eq(int, reactor_del_fd(r, other), 0));
    close(other);
    int p[2];
    make_pipe(p);
    if (p[0] != other) { /* the lowest free number is usually OTHER already */
        cr_assert(eq(int, dup2(p[0], other), other));
        close(p[0]);
    }
    c->fresh[0] = other;
    c->fresh[1] = p[1];
    cr_assert(eq(int, reactor_add_fd(r, other, REACTOR_READ, on_swap_new, c), 0));
}

Test(reactor_fd, delete_other_and_reuse_number_in_same_pass, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int pa[2], pb[2];
    make_pipe(pa);
    make_pipe(pb);
    swap_ctx c = {.a = pa[0], .b = pb[0]};
    cr_assert(eq(int, reactor_add_fd(r, pa[0], REACTOR_READ, on_swap_first, &c), 0));
    cr_assert(eq(int, reactor_add_fd(r, pb[0], REACTOR_READ, on_swap_first, &c), 0));
    put_byte(pa[1]);
    put_byte(pb[1]);
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, c.first_calls, 1));
    cr_assert(eq(int, c.new_calls, 0));
    cr_assert(eq(int, reactor_run_once(r, 0), 0), "the fresh pipe is empty");
    put_byte(c.fresh[1]);
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, c.new_calls, 1));
    reactor_free(r);
    int survivor = c.fresh[0] == pa[0] ? pb[0] : pa[0];
    close(survivor);
    close(c.fresh[0]);
    close(c.fresh[1]);
    close(pa[1]);
    close(pb[1]);
}

Test(reactor_fd, argument_errors, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int fds[2];
    make_pipe(fds);
    fd_probe p = {0};
    cr_assert(eq(int, reactor_add_fd(r, -1, REACTOR_READ, on_fd, &p), -EINVAL));
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_ERROR, on_fd, &p), -EINVAL));
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_READ, NULL, &p), -EINVAL));
    cr_assert(eq(int, reactor_mod_fd(r, fds[0], REACTOR_READ), -ENOENT));
    cr_assert(eq(int, reactor_del_fd(r, fds[0]), -ENOENT));
    cr_assert(eq(int, reactor_del_fd(r, 100000), -ENOENT));
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_READ, on_fd, &p), 0));
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_READ, on_fd, &p), -EEXIST));
    cr_assert(eq(int, reactor_add_fd(r, 54321, REACTOR_READ, on_fd, &p), -EBADF));
    int devnull = open("/dev/null", O_RDONLY);
    cr_assert(devnull >= 0);
    cr_assert(eq(int, reactor_add_fd(r, devnull, REACTOR_READ, on_fd, &p), -EPERM),
              "epoll refuses regular files and /dev/null");
    cr_assert(eq(int, reactor_add_fd(r, devnull, REACTOR_READ, on_fd, &p), -EPERM),
              "a refused add leaves nothing registered");
    close(devnull);
    reactor_free(r);
    close(fds[0]);
    close(fds[1]);
}

/* ---- timers */

typedef struct fire_log {
    size_t n, cap;
    uint64_t *deadline;
    size_t *index;
    bool late_check_failed;
} fire_log;

typedef struct fire_arg {
    fire_log *log;
    size_t index;
} fire_arg;

static void on_fire_logged(reactor_t *r, reactor_timer_t *t, void *ud)
{
    fire_arg *a = ud;
    fire_log *l = a->log;
    cr_assert(l->n < l->cap);
    l->deadline[l->n] = reactor_timer_deadline_us(t);
    l->index[l->n] = a->index;
    l->n++;
    if (reactor_now_us(r) < reactor_timer_deadline_us(t))
        l->late_check_failed = true;
}

static void fire_log_init(fire_log *l, size_t cap)
{
    *l = (fire_log){.cap = cap};
    l->deadline = calloc(cap, sizeof *l->deadline);
    l->index = calloc(cap, sizeof *l->index);
    cr_assert(l->deadline && l->index);
}

/* Every timer fired once, never early, in (deadline, insertion) order. */
static void fire_log_check(const fire_log *l, size_t expected)
{
    cr_assert(eq(sz, l->n, expected));
    cr_assert(not(l->late_check_failed), "a timer fired before its deadline");
    bool *seen = calloc(expected, 1);
    cr_assert(seen != NULL);
    for (size_t i = 0; i < l->n; i++) {
        cr_assert(l->index[i] < expected);
        cr_assert(not(seen[l->index[i]]), "timer %zu fired twice", l->index[i]);
        seen[l->index[i]] = true;
        if (i == 0)
            continue;
        cr_assert(l->deadline[i - 1] <= l->deadline[i], "out of deadline order at %zu", i);
        if (l->deadline[i - 1] == l->deadline[i])
            cr_assert(l->index[i - 1] < l->index[i], "equal deadlines out of insertion order at %zu", i);
    }
    free(seen);
}

#define MANY_TIMERS 100000

Test(reactor_timer, hundred_thousand_random_delays_fire_in_order, .timeout = 30)
{
    reactor_t *r = reactor_new();
    fire_log log;
    fire_log_init(&log, MANY_TIMERS);
    fire_arg *args = calloc(MANY_TIMERS, sizeof *args);
    cr_assert(args != NULL);
    uint64_t seed = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < MANY_TIMERS; i++) {
        args[i] = (fire_arg){&log, i};
        uint64_t delay = next_random(&seed) % (200 * REACTOR_MSEC);
        cr_assert(reactor_timer_add(r, delay, on_fire_logged, &args[i]) != NULL);
    }
    cr_assert(eq(sz, reactor_timer_count(r), (size_t)MANY_TIMERS));
    while (reactor_timer_count(r) > 0)
        cr_assert(reactor_run_once(r, -1) >= 0);
    fire_log_check(&log, MANY_TIMERS);
    free(args);
    free(log.deadline);
    free(log.index);
    reactor_free(r);
}

Test(reactor_timer, hundred_thousand_absolute_deadlines_with_ties, .timeout = 30)
{
    reactor_t *r = reactor_new();
    fire_log log;
    fire_log_init(&log, MANY_TIMERS);
    fire_arg *args = calloc(MANY_TIMERS, sizeof *args);
    uint64_t *expect = calloc(MANY_TIMERS, sizeof *expect);
    cr_assert(args && expect);
    uint64_t base = reactor_now_us(r) + 1000, seed = 42;
    for (size_t i = 0; i < MANY_TIMERS; i++) {
        args[i] = (fire_arg){&log, i};
        /* 1,000 distinct deadlines: about 100 timers share each. */
        expect[i] = base + next_random(&seed) % 1000 * 50;
        cr_assert(reactor_timer_at(r, expect[i], on_fire_logged, &args[i]) != NULL);
    }
    while (reactor_timer_count(r) > 0)
        cr_assert(reactor_run_once(r, -1) >= 0);
    fire_log_check(&log, MANY_TIMERS);
    for (size_t i = 0; i < log.n; i++)
        cr_assert(eq(u64, log.deadline[i], expect[log.index[i]]));
    free(expect);
    free(args);
    free(log.deadline);
    free(log.index);
    reactor_free(r);
}

Test(reactor_timer, equal_deadlines_fire_in_insertion_order, .timeout = 30)
{
    reactor_t *r = reactor_new();
    fire_log log;
    fire_log_init(&log, 1000);
    fire_arg args[1000];
    uint64_t when = reactor_now_us(r) + 2 * REACTOR_MSEC;
    for (size_t i = 0; i < 1000; i++) {
        args[i] = (fire_arg){&log, i};
        cr_assert(reactor_timer_at(r, when, on_fire_logged, &args[i]) != NULL);
    }
    while (reactor_timer_count(r) > 0)
        reactor_run_once(r, -1);
    fire_log_check(&log, 1000);
    for (size_t i = 0; i < 1000; i++)
        cr_assert(eq(sz, log.index[i], i));
    free(log.deadline);
    free(log.index);
    reactor_free(r);
}

static void on_fire_count(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (*(int *)ud)++;
}

Test(reactor_timer, cancel_before_firing, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int fired = 0, kept = 0;
    reactor_timer_t *t = reactor_timer_add(r, 0, on_fire_count, &fired);
    reactor_timer_t *u = reactor_timer_add(r, 1 * REACTOR_MSEC, on_fire_count, &kept);
    reactor_timer_t *v = reactor_timer_add(r, 1 * REACTOR_SEC, on_fire_count, &fired);
    cr_assert(t && u && v);
    reactor_timer_cancel(r, t);
    reactor_timer_cancel(r, v);
    reactor_timer_cancel(r, NULL);
    cr_assert(eq(sz, reactor_timer_count(r), (size_t)1));
    while (kept == 0)
        reactor_run_once(r, -1);
    cr_assert(eq(int, fired, 0));
    cr_assert(eq(sz, reactor_timer_count(r), (size_t)0));
    reactor_free(r);
}

Test(reactor_timer, cancel_half_of_many_in_random_order, .timeout = 30)
{
    reactor_t *r = reactor_new();
    enum { N = 20000 };
    fire_log log;
    fire_log_init(&log, N);
    fire_arg *args = calloc(N, sizeof *args);
    reactor_timer_t **handles = calloc(N, sizeof *handles);
    size_t *order = calloc(N, sizeof *order);
    cr_assert(args && handles && order);
    uint64_t seed = 7, base = reactor_now_us(r) + 1000;
    for (size_t i = 0; i < N; i++) {
        args[i] = (fire_arg){&log, i};
        handles[i] = reactor_timer_at(r, base + next_random(&seed) % 20000, on_fire_logged, &args[i]);
        cr_assert(handles[i] != NULL);
        order[i] = i;
    }
    for (size_t i = N - 1; i > 0; i--) { /* shuffle, then cancel the odd ones */
        size_t j = next_random(&seed) % (i + 1), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    for (size_t i = 0; i < N; i++)
        if (order[i] % 2 == 1)
            reactor_timer_cancel(r, handles[order[i]]);
    cr_assert(eq(sz, reactor_timer_count(r), (size_t)N / 2));
    while (reactor_timer_count(r) > 0)
        reactor_run_once(r, -1);
    cr_assert(eq(sz, log.n, (size_t)N / 2));
    for (size_t i = 0; i < log.n; i++) {
        cr_assert(eq(sz, log.index[i] % 2, (size_t)0), "a cancelled timer fired");
        if (i > 0)
            cr_assert(log.deadline[i - 1] <= log.deadline[i]);
    }
    free(order);
    free(handles);
    free(args);
    free(log.deadline);
    free(log.index);
    reactor_free(r);
}

/* A and B fall due in the same pass; A, firing first, cancels B. */
typedef struct pair_ctx {
    reactor_timer_t *victim;
    int a_calls, b_calls;
} pair_ctx;

static void on_pair_a(reactor_t *r, reactor_timer_t *t, void *ud)
{
    pair_ctx *c = ud;
    c->a_calls++;
    reactor_timer_cancel(r, c->victim);
}

static void on_pair_b(reactor_t *r, reactor_timer_t *t, void *ud)
{
    ((pair_ctx *)ud)->b_calls++;
}

Test(reactor_timer, cancel_due_timer_from_another_callback, .timeout = 30)
{
    reactor_t *r = reactor_new();
    pair_ctx c = {0};
    uint64_t when = reactor_now_us(r) + 1 * REACTOR_MSEC;
    cr_assert(reactor_timer_at(r, when, on_pair_a, &c) != NULL);
    c.victim = reactor_timer_at(r, when, on_pair_b, &c);
    cr_assert(c.victim != NULL);
    while (c.a_calls == 0)
        reactor_run_once(r, -1);
    cr_assert(eq(int, c.b_calls, 0));
    cr_assert(eq(sz, reactor_timer_count(r), (size_t)0));
    reactor_free(r);
}

static void on_self_cancel(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (*(int *)ud)++;
    reactor_timer_cancel(r, t);
    reactor_timer_cancel(r, t); /* still the running timer: still a no-op */
}

Test(reactor_timer, self_cancel_inside_callback, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int fired = 0;
    cr_assert(reactor_timer_add(r, 0, on_self_cancel, &fired) != NULL);
    while (fired == 0)
        reactor_run_once(r, -1);
    for (int i = 0; i < 3; i++)
        reactor_run_once(r, 0);
    cr_assert(eq(int, fired, 1));
    cr_assert(eq(sz, reactor_timer_count(r), (size_t)0));
    reactor_free(r);
}

/* A zero-delay timer that re-arms itself: each pass must fire exactly one
 * generation, and never from inside the previous callback. */
typedef struct chain_ctx {
    int depth, max_depth, fired, limit;
} chain_ctx;

static void on_chain(reactor_t *r, reactor_timer_t *t, void *ud)
{
    chain_ctx *c = ud;
    c->depth++;
    if (c->depth > c->max_depth)
        c->max_depth = c->depth;
    c->fired++;
    if (c->fired < c->limit)
        cr_assert(reactor_timer_add(r, 0, on_chain, c) != NULL);
    c->depth--;
}

Test(reactor_timer, zero_delay_rearm_is_not_recursive, .timeout = 30)
{
    reactor_t *r = reactor_new();
    chain_ctx c = {.limit = 100};
    cr_assert(reactor_timer_add(r, 0, on_chain, &c) != NULL);
    for (int pass = 1; pass <= 100; pass++) {
        cr_assert(eq(int, reactor_run_once(r, -1), 1), "pass %d", pass);
        cr_assert(eq(int, c.fired, pass));
    }
    cr_assert(eq(int, c.max_depth, 1));
    cr_assert(eq(int, reactor_run_once(r, 0), 0));
    reactor_free(r);
}

Test(reactor_timer, now_is_cached_per_pass_and_monotonic, .timeout = 30)
{
    reactor_t *r = reactor_new();
    uint64_t before = reactor_now_us(r);
    cr_assert(before > 0);
    int fired = 0;
    reactor_timer_t *t = reactor_timer_add(r, 3 * REACTOR_MSEC, on_fire_count, &fired);
    uint64_t deadline = reactor_timer_deadline_us(t);
    cr_assert(deadline >= before + 3 * REACTOR_MSEC);
    while (fired == 0)
        reactor_run_once(r, -1);
    cr_assert(reactor_now_us(r) >= deadline);
    uint64_t at = reactor_now_us(r);
    cr_assert(eq(u64, reactor_now_us(r), at), "no pass, no change");
    reactor_free(r);
}

/* ---- posts */

static void on_post_count(reactor_t *r, void *ud)
{
    (*(int *)ud)++;
}

typedef struct nested_ctx {
    int outer, inner;
    int inner_seen_by_outer;
} nested_ctx;

static void on_post_inner(reactor_t *r, void *ud)
{
    ((nested_ctx *)ud)->inner++;
}

static void on_post_outer(reactor_t *r, void *ud)
{
    nested_ctx *c = ud;
    c->outer++;
    cr_assert(eq(int, reactor_post(r, on_post_inner, c), 0));
    c->inner_seen_by_outer = c->inner;
}

Test(reactor_post, from_reactor_thread_runs_on_a_later_pass, .timeout = 30)
{
    reactor_t *r = reactor_new();
    nested_ctx c = {0};
    cr_assert(eq(int, reactor_post(r, on_post_outer, &c), 0));
    cr_assert(eq(int, c.outer, 0), "a post never runs inside reactor_post");
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, c.outer, 1));
    cr_assert(eq(int, c.inner, 0), "posted from a post: not in the same drain");
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, c.inner, 1));
    cr_assert(eq(int, c.inner_seen_by_outer, 0));
    reactor_free(r);
}

Test(reactor_post, embedded_entry_cancel_and_double_post, .timeout = 30)
{
    reactor_t *r = reactor_new();
    reactor_post_t a = {0}, b = {0};
    int ran_a = 0, ran_b = 0;
    cr_assert(eq(int, reactor_post_embedded(r, &a, on_post_count, &ran_a), 0));
    cr_assert(eq(int, reactor_post_embedded(r, &a, on_post_count, &ran_a), -EBUSY));
    cr_assert(eq(int, reactor_post_embedded(r, &b, on_post_count, &ran_b), 0));
    cr_assert(reactor_post_cancel(r, &a));
    cr_assert(not(reactor_post_cancel(r, &a)), "already off the queue");
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, ran_a, 0));
    cr_assert(eq(int, ran_b, 1));
    cr_assert(not(reactor_post_cancel(r, &b)), "already ran");
    /* An entry can be posted again once its callback has started. */
    cr_assert(eq(int, reactor_post_embedded(r, &b, on_post_count, &ran_b), 0));
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, ran_b, 2));
    reactor_free(r);
}

#define POST_THREADS 4
#define POSTS_PER_THREAD 10000

typedef struct post_record {
    struct post_ctx *ctx;
    int thread, seq;
} post_record;

typedef struct post_ctx {
    reactor_t *r;
    pthread_t reactor_thread;
    int next[POST_THREADS];
    int delivered, out_of_order, wrong_thread;
    atomic_int post_failures;
    post_record *records[POST_THREADS];
} post_ctx;

static void on_post_record(reactor_t *r, void *ud)
{
    post_record *rec = ud;
    post_ctx *c = rec->ctx;
    if (!pthread_equal(pthread_self(), c->reactor_thread))
        c->wrong_thread++;
    if (c->next[rec->thread] != rec->seq)
        c->out_of_order++;
    c->next[rec->thread] = rec->seq + 1;
    c->delivered++;
}

static void *post_thread(void *arg)
{
    post_record *recs = arg;
    for (int i = 0; i < POSTS_PER_THREAD; i++)
        if (reactor_post(recs[i].ctx->r, on_post_record, &recs[i]) != 0)
            atomic_fetch_add(&recs[i].ctx->post_failures, 1);
    return NULL;
}

Test(reactor_post, four_threads_ten_thousand_each_exactly_once_in_order, .timeout = 30)
{
    post_ctx c = {.r = reactor_new(), .reactor_thread = pthread_self()};
    cr_assert(c.r != NULL);
    atomic_init(&c.post_failures, 0);
    pthread_t threads[POST_THREADS];
    for (int t = 0; t < POST_THREADS; t++) {
        c.records[t] = calloc(POSTS_PER_THREAD, sizeof(post_record));
        cr_assert(c.records[t] != NULL);
        for (int i = 0; i < POSTS_PER_THREAD; i++)
            c.records[t][i] = (post_record){&c, t, i};
    }
    for (int t = 0; t < POST_THREADS; t++)
        cr_assert(eq(int, pthread_create(&threads[t], NULL, post_thread, c.records[t]), 0));
    while (c.delivered < POST_THREADS * POSTS_PER_THREAD)
        cr_assert(reactor_run_once(c.r, 100) >= 0);
    for (int t = 0; t < POST_THREADS; t++)
        pthread_join(threads[t], NULL);
    cr_assert(eq(int, reactor_run_once(c.r, 0), 0), "nothing delivered twice");
    cr_assert(eq(int, c.delivered, POST_THREADS * POSTS_PER_THREAD));
    cr_assert(eq(int, c.out_of_order, 0));
    cr_assert(eq(int, c.wrong_thread, 0));
    cr_assert(eq(int, atomic_load(&c.post_failures), 0));
    for (int t = 0; t < POST_THREADS; t++) {
        cr_assert(eq(int, c.next[t], POSTS_PER_THREAD));
        free(c.records[t]);
    }
    reactor_free(c.r);
}

/* ---- running and stopping */

static void *stop_thread(void *arg)
{
    reactor_stop(arg);
    return NULL;
}

Test(reactor_loop, stop_from_another_thread, .timeout = 30)
{
    reactor_t *r = reactor_new();
    pthread_t th;
    cr_assert(eq(int, pthread_create(&th, NULL, stop_thread, r), 0));
    cr_assert(eq(int, reactor_run(r), 0));
    pthread_join(th, NULL);
    reactor_free(r);
}

static void on_timer_stop(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (*(int *)ud)++;
    reactor_stop(r);
}

Test(reactor_loop, stop_from_a_callback_and_run_again, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int fired = 0;
    cr_assert(reactor_timer_add(r, 1 * REACTOR_MSEC, on_timer_stop, &fired) != NULL);
    cr_assert(eq(int, reactor_run(r), 0));
    cr_assert(eq(int, fired, 1));
    /* The stop flag was consumed: a second run needs a second stop. */
    cr_assert(reactor_timer_add(r, 1 * REACTOR_MSEC, on_timer_stop, &fired) != NULL);
    cr_assert(eq(int, reactor_run(r), 0));
    cr_assert(eq(int, fired, 2));
    reactor_stop(r);
    cr_assert(eq(int, reactor_run(r), 0), "a stop before the run makes it return at once");
    reactor_free(r);
}

Test(reactor_loop, run_once_with_nothing_to_do, .timeout = 30)
{
    reactor_t *r = reactor_new();
    cr_assert(eq(int, reactor_run_once(r, 0), 0));
    cr_assert(eq(int, reactor_run_once(r, 1), 0));
    reactor_free(r);
}

static void on_reenter(reactor_t *r, void *ud)
{
    *(int *)ud = reactor_run_once(r, 0);
}

Test(reactor_loop, run_once_refuses_reentry, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int inner = 1;
    cr_assert(eq(int, reactor_post(r, on_reenter, &inner), 0));
    cr_assert(eq(int, reactor_run_once(r, -1), 1));
    cr_assert(eq(int, inner, -EDEADLK));
    reactor_free(r);
}

Test(reactor_loop, free_drops_pending_timers_and_posts, .timeout = 30)
{
    reactor_t *r = reactor_new();
    int never = 0;
    for (int i = 0; i < 1000; i++) {
        cr_assert(reactor_timer_add(r, (uint64_t)i * REACTOR_SEC, on_fire_count, &never) != NULL);
        cr_assert(eq(int, reactor_post(r, on_post_count, &never), 0));
    }
    reactor_post_t kept = {0};
    cr_assert(eq(int, reactor_post_embedded(r, &kept, on_post_count, &never), 0));
    int fds[2];
    make_pipe(fds);
    cr_assert(eq(int, reactor_add_fd(r, fds[0], REACTOR_READ, on_fd, NULL), 0));
    reactor_free(r); /* leaks would show under ASan and valgrind */
    cr_assert(eq(int, never, 0));
    cr_assert(eq(int, fcntl(fds[0], F_GETFD) >= 0, 1), "registered descriptors stay open");
    close(fds[0]);
    close(fds[1]);
    reactor_free(NULL);
}

/* ---- hand-backs */

typedef struct hb_item {
    list_link link;
    int value;
} hb_item;

typedef struct hb_test {
    pthread_mutex_t lock;
    reactor_handback_t hb;
    hb_item items[1000];
    int delivered[1000];
    int ndelivered, batches;
} hb_test;

static void hb_deliver(list_link *batch, void *ud)
{
    hb_test *t = ud;
    t->batches++;
    LIST_EACH_SAFE(l, nx, batch) {
        list_del(l);
        t->delivered[t->ndelivered++] = LIST_OWNER(l, hb_item, link)->value;
    }
}

static void *hb_producer(void *arg)
{
    hb_test *t = arg;
    for (int i = 0; i < 1000; i++) {
        pthread_mutex_lock(&t->lock);
        reactor_handback_add_locked(&t->hb, &t->items[i].link);
        pthread_mutex_unlock(&t->lock);
    }
    return NULL;
}

Test(reactor_handback, another_threads_items_arrive_once_in_order, .timeout = 30)
{
    reactor_t *r = reactor_new();
    hb_test *t = calloc(1, sizeof *t);
    pthread_t th;
    cr_assert(r != NULL && t != NULL);
    pthread_mutex_init(&t->lock, NULL);
    reactor_handback_init(&t->hb, r, &t->lock, hb_deliver, t);
    for (int i = 0; i < 1000; i++)
        t->items[i].value = i;
    cr_assert(eq(int, pthread_create(&th, NULL, hb_producer, t), 0));
    while (t->ndelivered < 1000) /* the test's timeout is the deadline */
        cr_assert(ge(int, reactor_run_once(r, -1), 0));
    pthread_join(th, NULL);
    for (int i = 0; i < 1000; i++)
        cr_assert(eq(int, t->delivered[i], i));
    cr_expect(le(int, t->batches, 1000));
    cr_assert(eq(int, reactor_run_once(r, 0), 0), "no delivery left armed");
    pthread_mutex_destroy(&t->lock);
    free(t);
    reactor_free(r);
}

Test(reactor_handback, take_disarms_and_keeps_the_order, .timeout = 30)
{
    reactor_t *r = reactor_new();
    hb_test *t = calloc(1, sizeof *t);
    list_link batch;
    cr_assert(r != NULL && t != NULL);
    pthread_mutex_init(&t->lock, NULL);
    reactor_handback_init(&t->hb, r, &t->lock, hb_deliver, t);
    list_init(&batch);
    pthread_mutex_lock(&t->lock);
    for (int i = 0; i < 3; i++) {
        t->items[i].value = i;
        reactor_handback_add_locked(&t->hb, &t->items[i].link);
    }
    reactor_handback_take_locked(&t->hb, &batch);
    pthread_mutex_unlock(&t->lock);
    cr_assert(eq(int, reactor_run_once(r, 0), 0), "the post was taken back");
    cr_assert(eq(int, t->batches, 0));
    hb_deliver(&batch, t);
    cr_assert(eq(int, t->ndelivered, 3));
    for (int i = 0; i < 3; i++)
        cr_assert(eq(int, t->delivered[i], i));
    pthread_mutex_destroy(&t->lock);
    free(t);
    reactor_free(r);
}

/* ---- lag */

static void lag_busy(reactor_t *r, void *ud)
{
    /* holds the thread for *ud microseconds, as a long compile would */
    uint64_t until = reactor_now_us(r) + *(uint64_t *)ud;
    struct timespec ts;
    do
        clock_gettime(CLOCK_MONOTONIC, &ts);
    while ((uint64_t)ts.tv_sec * REACTOR_SEC + (uint64_t)ts.tv_nsec / 1000u < until);
}

static void lag_count(reactor_t *r, reactor_timer_t *t, void *ud)
{
    (void)r;
    (void)t;
    ++*(int *)ud;
}

/* A descriptor callback that holds the thread for a quarter of a
 * millisecond and counts itself. */
typedef struct slow_reader {
    int *count;
    int fd;
} slow_reader;

static void slow_read(reactor_t *r, int fd, int events, void *ud)
{
    slow_reader *s = ud;
    char b;
    (void)events;
    (void)read(fd, &b, 1);
    reactor_del_fd(r, fd);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t t = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uint64_t until = t + 250;
    while (t < until) {
        clock_gettime(CLOCK_MONOTONIC, &ts);
        t = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    }
    (*s->count)++;
}

static void note_reads_seen(reactor_t *r, reactor_timer_t *t, void *ud)
{
    int **v = ud; /* {count of reads, where to note it} */
    (void)r;
    (void)t;
    *v[1] = *v[0];
}

/* A pass with many ready descriptors fires the timers that are due once it
 * has spent a slice on them: eight callbacks of 250 us each are two
 * milliseconds, so a timer due before the pass runs after the eighth
 * callback, not after all 64. */
Test(reactor_lag, a_long_pass_lets_due_timers_in, .timeout = 30)
{
    enum { N = 64 };
    reactor_t *r = reactor_new();
    cr_assert(not(eq(ptr, r, NULL)));
    int fds[N][2], reads = 0, seen = -1;
    slow_reader sr[N];
    for (int i = 0; i < N; i++) {
        make_pipe(fds[i]);
        put_byte(fds[i][1]);
        sr[i] = (slow_reader){ .count = &reads, .fd = fds[i][0] };
        cr_assert(eq(int, reactor_add_fd(r, fds[i][0], REACTOR_READ, slow_read, &sr[i]), 0));
    }
    int *v[2] = { &reads, &seen };
    cr_assert(not(eq(ptr, reactor_timer_add(r, 0, note_reads_seen, v), NULL)));
    while (reads < N || seen < 0)
        cr_assert(ge(int, reactor_run_once(r, -1), 0));
    cr_assert(eq(int, seen, 8), "the timer ran after %d of %d callbacks", seen, N);
    for (int i = 0; i < N; i++) {
        close(fds[i][0]);
        close(fds[i][1]);
    }
    reactor_free(r);
}

Test(reactor_lag, a_blocked_pass_shows_as_timer_lag, .timeout = 30)
{
    reactor_t *r = reactor_new();
    cr_assert(not(eq(ptr, r, NULL)));
    reactor_lag_t lag;
    reactor_lag(r, &lag);
    cr_assert(eq(sz, lag.samples, 0));
    int fired = 0;
    /* a timer due now, and a post in the same pass that holds the thread
     * for BUSY: the timer runs at least BUSY late */
    uint64_t busy = 30 * REACTOR_MSEC;
    cr_assert(not(eq(ptr, reactor_timer_add(r, 0, lag_count, &fired), NULL)));
    cr_assert(eq(int, reactor_post(r, lag_busy, &busy), 0));
    while (fired < 1)
        cr_assert(ge(int, reactor_run_once(r, -1), 0));
    reactor_lag(r, &lag);
    cr_assert(eq(sz, lag.samples, 1));
    cr_assert(ge(u64, lag.max_us, busy));
    cr_assert(eq(u64, lag.p99_us, lag.max_us));
    /* the window keeps the last REACTOR_LAG_WINDOW timers only */
    for (int i = 0; i < REACTOR_LAG_WINDOW + 10; i++)
        cr_assert(not(eq(ptr, reactor_timer_add(r, 0, lag_count, &fired), NULL)));
    while (fired < REACTOR_LAG_WINDOW + 11)
        cr_assert(ge(int, reactor_run_once(r, -1), 0));
    reactor_lag(r, &lag);
    cr_assert(eq(sz, lag.samples, REACTOR_LAG_WINDOW));
    cr_assert(eq(u64, lag.timers_fired, REACTOR_LAG_WINDOW + 11));
    cr_assert(lt(u64, lag.p50_us, busy), "the busy pass left the window");
    reactor_free(r);
}
