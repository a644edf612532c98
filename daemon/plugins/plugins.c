/* plugins.c -- the plugin loader and the registry of lambdas and providers.
 *
 * A plugin is checked completely before anything of it is kept: ABI version
 * and struct sizes first (the only fields whose layout we may trust before
 * that), then names. Between the two, every descriptor the plugin hands us
 * (the plugin, its lambdas, its providers, their option arrays) is copied
 * into structs of the host's own size, walking each array with the plugin's
 * stride and reading only the bytes the plugin's minor defines: this file is
 * the only place that knows a plugin's memory layout, and everything else in
 * the host reads the normalised copies, where a field newer than the plugin
 * is zero.
 * Everything the registry will need is allocated before the plugin's init
 * runs, so once init has succeeded, registering cannot fail and no plugin is
 * ever left initialised but unregistered. Every refusal is one log line,
 * "ORIGIN: reason", and the caller goes on with the next plugin: one bad file
 * in a plugin directory must not take the others down.
 *
 * Lambdas and providers are kept individually allocated (the pointers the
 * lookups return stay valid while more plugins load) and indexed by arrays
 * of pointers sorted by name, for binary search. The NULL-terminated name
 * arrays are kept alongside, in the same order. */
#include "daemon/plugins/plugins.h"

#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/containers.h"
#include "dsl/suggest.h"

/* Defined by plugins/std and plugins/mock, built with LOOM_BUILTIN_PLUGIN. */
extern const loom_plugin *loom_builtin_std_entry(void);
extern const loom_plugin *loom_builtin_mock_entry(void);
extern const loom_plugin *loom_builtin_openai_entry(void);
extern const loom_plugin *loom_builtin_anthropic_entry(void);

/* ---- what each minor of 2.x defines ----
 *
 * For each struct, the end of the fields minor M defines (index M): a
 * plugin built against minor M is read up to there, or up to its own size
 * if that is smaller (which only a corrupt descriptor has), never further,
 * even when its sizeof is larger (padding, or a field a later minor put
 * there). Index 0 is also the smallest size accepted. A new minor appends
 * one entry to each (the offset of its first new field ends the previous
 * minor), and the static assertions below keep the tables in step with
 * LOOM_ABI_MINOR. */
static const size_t plugin_ends[] = { offsetof(loom_plugin, reload), sizeof(loom_plugin),
                                      sizeof(loom_plugin), sizeof(loom_plugin),
                                      sizeof(loom_plugin) };
static const size_t lambda_ends[] = { offsetof(loom_lambda, doc), sizeof(loom_lambda),
                                      sizeof(loom_lambda), sizeof(loom_lambda),
                                      sizeof(loom_lambda) };
static const size_t provider_ends[] = { offsetof(loom_provider, doc),
                                        offsetof(loom_provider, stream),
                                        offsetof(loom_provider, batch_line),
                                        offsetof(loom_provider, batch_line),
                                        sizeof(loom_provider) };
static const size_t option_ends[] = { sizeof(loom_option), sizeof(loom_option),
                                      sizeof(loom_option), sizeof(loom_option),
                                      sizeof(loom_option) };
_Static_assert(sizeof plugin_ends / sizeof plugin_ends[0] == LOOM_ABI_MINOR + 1, "plugin_ends");
_Static_assert(sizeof lambda_ends / sizeof lambda_ends[0] == LOOM_ABI_MINOR + 1, "lambda_ends");
_Static_assert(sizeof provider_ends / sizeof provider_ends[0] == LOOM_ABI_MINOR + 1,
               "provider_ends");
_Static_assert(sizeof option_ends / sizeof option_ends[0] == LOOM_ABI_MINOR + 1, "option_ends");

/* The six fields every 2.x descriptor starts with: read before anything
 * else, through this struct rather than loom_plugin, so no more bytes of
 * the plugin's memory are touched than these. */
typedef struct plugin_header {
    uint32_t abi_major, abi_minor;
    uint32_t plugin_size, lambda_size, provider_size, option_size;
} plugin_header;
_Static_assert(offsetof(loom_plugin, option_size) == offsetof(plugin_header, option_size),
               "the header fields lead loom_plugin");

typedef struct plugin_slot {
    loom_plugin desc;              /* the normalised copy: lambdas and providers
                                      point at the arrays below */
    loom_lambda *lambdas;          /* owned copies, nlambdas */
    loom_provider *providers;      /* owned copies, nproviders */
    loom_option **optsets;         /* owned copies of every option array */
    size_t noptsets;
    void *state;                   /* from the plugin's init; the plugin's */
    void *handle;                  /* dlopen handle, NULL for built-ins */
    char *origin;                  /* the file, or "built-in" (owned) */
    json_t *config;                /* the checked configuration applied (owned), or NULL */
    bool elsewhere;                /* init, reload and fini run in another process */
} plugin_slot;

/* The public struct first, so a lookup result converts back to its slot. */
typedef struct lambda_slot {
    plugins_lambda pub;
    /* CLOCK_MONOTONIC ms of the last "too slow for the reactor" line, so a
     * lambda that is always slow says so once a minute, not per call */
    _Atomic uint64_t slow_logged_ms;
} lambda_slot;

typedef struct provider_slot {
    plugins_provider pub;
    const char *origin;            /* borrowed from the plugin's slot */
} provider_slot;

struct plugins {
    plugins_log_fn log;
    plugins_level_log_fn level_log; /* takes precedence over log */
    void *ud;
    bool trial_init;               /* run each init in a child first */
    size_t errors;                 /* lines reported at LOOM_LOG_ERROR */

    json_t *configs;               /* plugins_set_configs: NAME -> entry (owned ref) */
    plugins_config_where_fn where; /* places messages about an entry */
    void *where_ud;
    json_t *offered;               /* names of plugins offered for loading (a set) */
    char **elsewhere;              /* plugins_set_init_elsewhere (owned, NULL-terminated) */
    bool no_init;                  /* plugins_set_no_init: every plugin is elsewhere */

    plugin_slot **plugins;         /* in load order (fini runs in reverse) */
    size_t nplugins, cap_plugins;

    lambda_slot **lambdas;         /* sorted by name */
    size_t nlambdas, cap_lambdas;
    const char **lambda_names;     /* same order, NULL-terminated */
    size_t cap_lambda_names;

    provider_slot **providers;     /* sorted by name */
    size_t nproviders, cap_providers;
    const char **provider_names;
    size_t cap_provider_names;
};

/* One line to whichever callback there is; nothing counted. Any thread:
 * it reads only what is set before loading. The callback without levels
 * (loomctl run's stderr) is spared plugins' debug lines: it cannot filter
 * them itself. */
static void emit(const plugins_t *p, int level, const char *line)
{
    if (p->level_log)
        p->level_log(p->ud, level, line);
    else if (p->log && level < LOOM_LOG_DEBUG)
        p->log(p->ud, line);
}

static void report_at(plugins_t *p, int level, const char *origin, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void report_at(plugins_t *p, int level, const char *origin, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;

    if (level == LOOM_LOG_ERROR)
        p->errors++;
    if (!p->log && !p->level_log)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char line[1400];
    snprintf(line, sizeof line, "%s: %s", origin, msg);
    emit(p, level, line);
}

/* Every refusal is an error; the few other lines say their level. */
#define report(p, ...) report_at((p), LOOM_LOG_ERROR, __VA_ARGS__)

void plugins_vlog(const plugins_t *p, const char *plugin, int level, const char *fmt,
                  va_list ap)
{
    char msg[1024], line[1200];

    if (!p || (!p->log && !p->level_log))
        return;
    if (level < LOOM_LOG_ERROR)
        level = LOOM_LOG_ERROR;
    if (level > LOOM_LOG_DEBUG)
        level = LOOM_LOG_DEBUG;
    vsnprintf(msg, sizeof msg, fmt, ap);
    snprintf(line, sizeof line, "%s: %s", plugin ? plugin : "plugin", msg);
    emit(p, level, line);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void plugins_lambda_overran(const plugins_t *p, const plugins_lambda *l, uint64_t elapsed_us)
{
    /* the registry owns the slot; the timestamp is its one mutable field */
    lambda_slot *s = (lambda_slot *)((char *)(uintptr_t)l - offsetof(lambda_slot, pub));
    uint64_t now = mono_ms(), last = atomic_load(&s->slow_logged_ms);
    char line[600];

    if (!p || (last && now - last < PLUGINS_SLOW_LOG_EVERY_MS) ||
        !atomic_compare_exchange_strong(&s->slow_logged_ms, &last, now ? now : 1))
        return;
    snprintf(line, sizeof line,
             "%s: a PURE|FAST lambda took %.1f ms on the reactor thread (budget %.1f ms), "
             "holding up every job meanwhile: drop LOOM_LAMBDA_FAST so it runs on the pool",
             l->name, (double)elapsed_us / 1000.0, (double)PLUGINS_INLINE_BUDGET_US / 1000.0);
    emit(p, LOOM_LOG_WARN, line);
}

/* ---- the host side of a plugin's init and reload: errors into a buffer,
 * logs to the registry's log with the plugin's name ---- */

typedef struct load_ctx {
    loom_ctx base;                 /* first: plugins see only this */
    plugins_t *p;
    const char *name;              /* the plugin's: prefixes its lines */
    int has_error;
    char error[512];
} load_ctx;

static load_ctx *load_ctx_of(loom_ctx *ctx)
{
    return (load_ctx *)(void *)((char *)ctx - offsetof(load_ctx, base));
}

static void load_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    load_ctx *lc = load_ctx_of(ctx);

    if (lc->has_error)             /* the first error is the cause */
        return;
    lc->has_error = 1;
    vsnprintf(lc->error, sizeof lc->error, fmt, ap);
}

/* A plugin's own lines keep their level and never count as the loader's
 * errors (those are refusals). */
static void load_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    load_ctx *lc = load_ctx_of(ctx);
    plugins_vlog(lc->p, lc->name, level, fmt, ap);
}

static void load_retry_after(loom_ctx *ctx, uint64_t ms)
{
    load_ctx *lc = load_ctx_of(ctx);
    report_at(lc->p, LOOM_LOG_WARN, lc->name, "retry_after called outside a call (ignored)");
}

/* The call-side hooks have no meaning at load: there is no call. They are
 * still set so a confused plugin does not jump through NULL; complete frees
 * what it was given, as the contract says it steals it. */
static void load_complete(loom_call *call, json_t *output, const loom_usage *usage)
{
    json_decref(output);
}

static void load_fail(loom_call *call, loom_errcode code, const char *message)
{
}

static void load_fail_after(loom_call *call, loom_errcode code, uint64_t ms, const char *message)
{
}

static void *load_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud)
{
    return NULL;
}

static void load_timer_cancel(loom_call *call, void *timer)
{
}

static uint64_t load_deadline_ms(loom_ctx *ctx)
{
    return 0;
}

static int load_cancelled(loom_ctx *ctx)
{
    return 0;
}

static void load_call_vlog(loom_call *call, int level, const char *fmt, va_list ap)
{
}

static void load_complete_tools(loom_call *call, json_t *output, json_t *tool_calls,
                                const loom_usage *usage)
{
    json_decref(output);
    json_decref(tool_calls);
}

static const loom_host_api load_api = {
    .verror = load_verror,
    .vlog = load_vlog,
    .retry_after = load_retry_after,
    .complete = load_complete,
    .fail = load_fail,
    .timer_add = load_timer_add,
    .timer_cancel = load_timer_cancel,
    .fail_after = load_fail_after,
    .deadline_ms = load_deadline_ms,
    .cancelled = load_cancelled,
    .call_vlog = load_call_vlog,
    .complete_tools = load_complete_tools,
};

/* ---- the registry ---- */

/* A child whose init came back exits with this: any other end is a crash
 * (a sanitizer turns a signal into an exit status). */
#define TRIAL_RETURNED 77

void plugins_set_level_log(plugins_t *p, plugins_level_log_fn log, void *ud)
{
    p->level_log = log;
    p->ud = ud;
}

void plugins_set_trial_init(plugins_t *p, bool on)
{
    p->trial_init = on;
}

size_t plugins_errors(const plugins_t *p)
{
    return p->errors;
}

plugins_t *plugins_new(plugins_log_fn log, void *ud)
{
    plugins_t *p = calloc(1, sizeof *p);

    if (!p)
        return NULL;
    p->log = log;
    p->ud = ud;
    /* The name arrays always exist, so an empty registry lists no names
     * rather than returning NULL. */
    if (vec_reserve(&p->lambda_names, 0, &p->cap_lambda_names, sizeof(char *), 16) < 0 ||
        vec_reserve(&p->provider_names, 0, &p->cap_provider_names, sizeof(char *), 8) < 0)
        goto fail;
    p->lambda_names[0] = NULL;
    p->provider_names[0] = NULL;
    return p;
fail:
    free(p->lambda_names);
    free(p->provider_names);
    free(p);
    return NULL;
}

/* Frees S and its copies (not the plugin's state: fini's business). */
static void slot_free(plugin_slot *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->noptsets; i++)
        free(s->optsets[i]);
    free(s->optsets);
    free(s->lambdas);
    free(s->providers);
    free(s->origin);
    json_decref(s->config);
    free(s);
}

void plugins_free(plugins_t *p)
{
    if (!p)
        return;
    for (size_t i = p->nplugins; i-- > 0;) {
        plugin_slot *s = p->plugins[i];
        if (s->desc.fini && !s->elsewhere)
            s->desc.fini(s->state);
        /* After fini: the descriptor's strings and the code live in the object. */
        if (s->handle)
            dlclose(s->handle);
        slot_free(s);
    }
    for (size_t i = 0; i < p->nlambdas; i++) {
        free((char *)p->lambdas[i]->pub.name);
        free(p->lambdas[i]);
    }
    for (size_t i = 0; i < p->nproviders; i++)
        free(p->providers[i]);
    free(p->plugins);
    free(p->lambdas);
    free(p->lambda_names);
    free(p->providers);
    free(p->provider_names);
    json_decref(p->configs);
    json_decref(p->offered);
    for (size_t i = 0; p->elsewhere && p->elsewhere[i]; i++)
        free(p->elsewhere[i]);
    free(p->elsewhere);
    free(p);
}

/* Index in a name-sorted array where NAME is or would go; *FOUND says which.
 * NAME_AT reads the name of element I. */
static size_t search(const void *arr, size_t n, const char *name,
                     const char *(*name_at)(const void *arr, size_t i), int *found)
{
    size_t lo = 0, hi = n;

    *found = 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(name, name_at(arr, mid));
        if (c == 0) {
            *found = 1;
            return mid;
        }
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static const char *lambda_name_at(const void *arr, size_t i)
{
    return ((lambda_slot *const *)arr)[i]->pub.name;
}

static const char *provider_name_at(const void *arr, size_t i)
{
    return ((provider_slot *const *)arr)[i]->pub.name;
}

const plugins_lambda *plugins_lambda_find(const plugins_t *p, const char *name)
{
    int found;
    size_t i;

    if (!p || !name)
        return NULL;
    i = search(p->lambdas, p->nlambdas, name, lambda_name_at, &found);
    return found ? &p->lambdas[i]->pub : NULL;
}

const plugins_provider *plugins_provider_find(const plugins_t *p, const char *name)
{
    int found;
    size_t i;

    if (!p || !name)
        return NULL;
    i = search(p->providers, p->nproviders, name, provider_name_at, &found);
    return found ? &p->providers[i]->pub : NULL;
}

const char *const *plugins_lambda_names(const plugins_t *p)
{
    return p->lambda_names;
}

const char *const *plugins_provider_names(const plugins_t *p)
{
    return p->provider_names;
}

size_t plugins_count(const plugins_t *p)
{
    return p->nplugins;
}

const loom_plugin *plugins_nth(const plugins_t *p, size_t i, const char **origin, bool *builtin)
{
    if (i >= p->nplugins)
        return NULL;
    if (origin)
        *origin = p->plugins[i]->origin;
    if (builtin)
        *builtin = !p->plugins[i]->handle;
    return &p->plugins[i]->desc;
}

/* ---- checking a descriptor ---- */

static int valid_plugin_name(const char *s)
{
    if (!s || !*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_'))
            return 0;
    return 1;
}

/* Lambda and provider names: no dot (it separates plugin from lambda in
 * "plugin.lambda"), nothing a workflow could not spell. */
static int valid_member_name(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
              (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
            return 0;
    return 1;
}

/* The version and the sizes, read from RAW (the plugin's memory) into *H:
 * 0, or -1 after reporting. The version is read first and alone: only the
 * two version fields are at the same place in every major (1.x had them
 * too), so a plugin of another major is refused before its sizes are read. */
static int check_header(plugins_t *p, const void *raw, const char *origin, plugin_header *h)
{
    uint32_t version[2];

    if (!raw) {
        report(p, origin, "the plugin entry returned no descriptor");
        return -1;
    }
    memcpy(version, raw, sizeof version);
    if (version[0] != LOOM_ABI_MAJOR || version[1] > LOOM_ABI_MINOR) {
        report(p, origin, "built for plugin ABI %u.%u, this loomd has %u.%u%s",
               (unsigned)version[0], (unsigned)version[1], LOOM_ABI_MAJOR, LOOM_ABI_MINOR,
               version[0] == LOOM_ABI_MAJOR ? " (a newer minor: rebuild it or upgrade loomd)"
                                            : "");
        return -1;
    }
    memcpy(h, raw, sizeof *h);
    struct {
        const char *what;
        uint32_t size;
        size_t need;
    } sizes[] = {
        { "loom_plugin", h->plugin_size, plugin_ends[h->abi_minor] },
        { "loom_lambda", h->lambda_size, lambda_ends[h->abi_minor] },
        { "loom_provider", h->provider_size, provider_ends[h->abi_minor] },
        { "loom_option", h->option_size, option_ends[h->abi_minor] },
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        if (sizes[i].size < sizes[i].need) {
            report(p, origin,
                   "descriptor sizes do not match plugin ABI %u.%u: %s is %u bytes, at least "
                   "%zu expected (start the descriptor with LOOM_PLUGIN_HEADER)",
                   (unsigned)h->abi_major, (unsigned)h->abi_minor, sizes[i].what,
                   (unsigned)sizes[i].size, sizes[i].need);
            return -1;
        }
    return 0;
}

/* How many bytes of a struct of SIZE bytes from a plugin of minor MINOR the
 * host reads, given ENDS (one of the tables above). */
static size_t readable(uint32_t size, uint32_t minor, const size_t *ends)
{
    return size < ends[minor] ? size : ends[minor];
}

/* A host-owned copy of the NULL-name terminated option array RAW (the
 * plugin's memory, H's stride), kept in S (so freed with it). NULL RAW
 * gives NULL. 0, or -1 when out of memory. */
static int copy_options(plugin_slot *s, const plugin_header *h, const void *raw,
                        const loom_option **out)
{
    const unsigned char *base = raw;
    size_t n = 0, len = readable(h->option_size, h->abi_minor, option_ends);
    loom_option *copy, one;

    *out = NULL;
    if (!raw)
        return 0;
    for (;; n++) {
        memset(&one, 0, sizeof one);
        memcpy(&one, base + n * h->option_size, len);
        if (!one.name)
            break;
    }
    loom_option **sets = realloc(s->optsets, (s->noptsets + 1) * sizeof *sets);
    if (!sets)
        return -1;
    s->optsets = sets;
    if (!(copy = calloc(n + 1, sizeof *copy)))
        return -1;
    s->optsets[s->noptsets++] = copy;
    for (size_t i = 0; i < n; i++)
        memcpy(&copy[i], base + i * h->option_size, len);
    *out = copy;
    return 0;
}

/* Fills S->desc, S->lambdas and S->providers (and the option arrays they
 * point to) from the plugin's descriptor RAW, read with H's sizes. 0, or -1
 * when out of memory (S then holds what was made, for slot_free). */
static int normalise(plugin_slot *s, const plugin_header *h, const void *raw)
{
    loom_plugin *d = &s->desc;

    memset(d, 0, sizeof *d);
    memcpy(d, raw, readable(h->plugin_size, h->abi_minor, plugin_ends));
    /* what this copy is: the host's own layout from here on */
    d->plugin_size = sizeof(loom_plugin);
    d->lambda_size = sizeof(loom_lambda);
    d->provider_size = sizeof(loom_provider);
    d->option_size = sizeof(loom_option);
    if (copy_options(s, h, d->options, &d->options) < 0)
        return -1;
    if (d->nlambdas && d->lambdas) {
        const unsigned char *base = (const void *)d->lambdas;
        size_t len = readable(h->lambda_size, h->abi_minor, lambda_ends);
        if (!(s->lambdas = calloc(d->nlambdas, sizeof *s->lambdas)))
            return -1;
        for (size_t i = 0; i < d->nlambdas; i++) {
            memcpy(&s->lambdas[i], base + i * h->lambda_size, len);
            if (copy_options(s, h, s->lambdas[i].args, &s->lambdas[i].args) < 0)
                return -1;
        }
        d->lambdas = s->lambdas;
    }
    if (d->nproviders && d->providers) {
        const unsigned char *base = (const void *)d->providers;
        size_t len = readable(h->provider_size, h->abi_minor, provider_ends);
        if (!(s->providers = calloc(d->nproviders, sizeof *s->providers)))
            return -1;
        for (size_t i = 0; i < d->nproviders; i++) {
            memcpy(&s->providers[i], base + i * h->provider_size, len);
            if (copy_options(s, h, s->providers[i].options, &s->providers[i].options) < 0)
                return -1;
        }
        d->providers = s->providers;
    }
    return 0;
}

/* Every check of the normalised descriptor D that needs no allocation, in
 * the order a reader would expect the first problem to be named. 0, or -1
 * after reporting. */
static int check_desc(plugins_t *p, const loom_plugin *d, const char *origin)
{
    if (!d->name) {
        report(p, origin, "the plugin has no name");
        return -1;
    }
    if (!valid_plugin_name(d->name)) {
        report(p, origin, "invalid plugin name '%s' (lower-case letters, digits and '_' only)",
               d->name);
        return -1;
    }
    for (size_t i = 0; i < p->nplugins; i++)
        if (strcmp(p->plugins[i]->desc.name, d->name) == 0) {
            report(p, origin, "plugin name '%s' is already taken by %s", d->name,
                   p->plugins[i]->origin);
            return -1;
        }
    if ((d->nlambdas && !d->lambdas) || (d->nproviders && !d->providers)) {
        report(p, origin, "plugin '%s' counts lambdas or providers it does not define", d->name);
        return -1;
    }
    for (size_t i = 0; i < d->nlambdas; i++) {
        const loom_lambda *l = &d->lambdas[i];
        if (!l->name || !l->fn) {
            report(p, origin, "lambda #%zu of plugin '%s' has no %s", i + 1, d->name,
                   l->name ? "function" : "name");
            return -1;
        }
        if (!valid_member_name(l->name)) {
            report(p, origin, "invalid lambda name '%s.%s'", d->name, l->name);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->lambdas[j].name, l->name) == 0) {
                report(p, origin, "lambda '%s.%s' is defined twice", d->name, l->name);
                return -1;
            }
    }
    for (size_t i = 0; i < d->nproviders; i++) {
        const loom_provider *v = &d->providers[i];
        int found;
        size_t at;
        if (!v->name) {
            report(p, origin, "provider #%zu of plugin '%s' has no name", i + 1, d->name);
            return -1;
        }
        if (!valid_member_name(v->name)) {
            report(p, origin, "invalid provider name '%s'", v->name);
            return -1;
        }
        if (!((v->encode && v->decode) || v->invoke)) {
            report(p, origin, "provider '%s' has neither encode and decode nor invoke", v->name);
            return -1;
        }
        at = search(p->providers, p->nproviders, v->name, provider_name_at, &found);
        if (found) {
            report(p, origin, "provider '%s' is already defined by %s", v->name,
                   p->providers[at]->origin);
            return -1;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(d->providers[j].name, v->name) == 0) {
                report(p, origin, "provider '%s' is defined twice", v->name);
                return -1;
            }
    }
    return 0;
}

/* Waits for the trial child PID until PLUGINS_TRIAL_INIT_TIMEOUT_MS have
 * passed: 1 with its status in *ST, 0 when it is still running then, -1 on
 * an error (errno). A pidfd says when it ends; without pidfds (Linux before
 * 5.3) it is asked every 5 ms, as the isolation helpers are. */
static int wait_trial(pid_t pid, int *st)
{
    uint64_t until = mono_ms() + PLUGINS_TRIAL_INIT_TIMEOUT_MS;
    int fd = -1, rc;

#ifdef SYS_pidfd_open
    fd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    for (;;) {
        pid_t w = waitpid(pid, st, WNOHANG);
        if (w == pid) {
            rc = 1;
            break;
        }
        if (w < 0 && errno != EINTR) {
            rc = -1;
            break;
        }
        uint64_t now = mono_ms();
        if (now >= until) {
            rc = 0;
            break;
        }
        uint64_t left = until - now;
        struct pollfd pf = { .fd = fd, .events = POLLIN };
        if (fd >= 0)
            (void)poll(&pf, 1, (int)left);
        else
            (void)poll(NULL, 0, left < 5 ? (int)left : 5);
    }
    if (fd >= 0) {
        int e = errno;
        close(fd);
        errno = e;
    }
    return rc;
}

/* Runs D's init in a forked child, so a plugin that dies in it is named
 * instead of taking the checker down, and one that hangs in it cannot hang
 * the check: 0 when the child's init returned (whatever it answered: the
 * real run reports a refusal), -1 when it died or was killed for taking
 * longer than PLUGINS_TRIAL_INIT_TIMEOUT_MS. The child exits without fini or
 * any cleanup: its memory is a copy. */
static int trial_init(plugins_t *p, const loom_plugin *d, const char *origin, json_t *config)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        report(p, origin, "cannot check plugin '%s' in a child process: %s", d->name,
               strerror(errno));
        return -1;
    }
    if (pid == 0) {
        p->log = NULL; /* the real run reports what init says */
        p->level_log = NULL;
        void *state = NULL;
        load_ctx lc = { .base = { .api = &load_api }, .p = p, .name = d->name };
        (void)d->init(&lc.base, config, &state);
        _exit(TRIAL_RETURNED);
    }
    int st = 0, w = wait_trial(pid, &st);
    if (w < 0) {
        report(p, origin, "cannot check plugin '%s': %s", d->name, strerror(errno));
        return -1;
    }
    if (w == 0) {
        kill(pid, SIGKILL);
        while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
            ;
        report(p, origin, "plugin '%s': init did not return within %d s", d->name,
               PLUGINS_TRIAL_INIT_TIMEOUT_MS / 1000);
        return -1;
    }
    if (WIFEXITED(st) && WEXITSTATUS(st) == TRIAL_RETURNED)
        return 0;
    if (WIFSIGNALED(st))
        report(p, origin, "plugin '%s' crashed in init (signal %d)", d->name, WTERMSIG(st));
    else
        report(p, origin, "plugin '%s' crashed in init (exit status %d)", d->name,
               WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    return -1;
}

/* Inserts ITEM at AT in the array of N pointers (room already reserved). */
static void insert_at(void *arr, size_t n, size_t at, void *item)
{
    void **a = arr;
    memmove(&a[at + 1], &a[at], (n - at) * sizeof *a);
    a[at] = item;
}

/* ---- per-plugin configuration ---- */

static bool name_in(char *const *names, const char *name)
{
    for (size_t i = 0; names && names[i]; i++)
        if (strcmp(names[i], name) == 0)
            return true;
    return false;
}

/* Reports a problem with PLUGIN's entry at KEY (NULL or "": the entry) as
 * "FILE:LINE:COL: error: plugins.config.PLUGIN: MSG" when WHERE places it,
 * else as "ORIGIN: plugins.config.PLUGIN: MSG". */
static void report_entry(plugins_t *p, plugins_config_where_fn where, void *ud,
                         const char *origin, const char *plugin, const char *key,
                         const char *msg)
{
    char pos[600];

    if (where) {
        pos[0] = '\0';
        where(ud, plugin, key && *key ? key : NULL, pos, sizeof pos);
        report(p, pos, "error: plugins.config.%s: %s", plugin, msg);
    } else {
        report(p, origin, "plugins.config.%s: %s", plugin, msg);
    }
}

/* The configuration D gets from ENTRY (borrowed; NULL or JSON null for
 * none): checked against D's options into *OUT (a new reference: a checked
 * copy, or ENTRY itself for a plugin without options; NULL for none). 0, or
 * -1 after reporting (AFTER, may be "", ends the message). */
static int check_config(plugins_t *p, const loom_plugin *d, const char *origin, json_t *entry,
                        plugins_config_where_fn where, void *ud, const char *after,
                        json_t **out)
{
    char err[512], key[256], msg[900];

    *out = NULL;
    if (json_is_null(entry))       /* `NAME:` with nothing under it */
        entry = NULL;
    if (!d->options) {
        *out = json_incref(entry);
        return 0;
    }
    /* a copy: the check adds defaults, and ENTRY is the config file's */
    json_t *copy = entry ? json_deep_copy(entry) : json_object();
    if (!copy) {
        report(p, origin, "out of memory while checking the configuration of '%s'", d->name);
        return -1;
    }
    if (plugins_check_options_at(d->options, copy, err, sizeof err, key, sizeof key) < 0) {
        json_decref(copy);
        snprintf(msg, sizeof msg, "%s%s", err, after);
        report_entry(p, where, ud, origin, d->name, key, msg);
        return -1;
    }
    *out = copy;
    return 0;
}

/* An entry for NAME, which no plugin offered for loading has: an error,
 * with the nearest name of a plugin offered (loaded, or refused for another
 * reason). */
static void report_unknown_entry(plugins_t *p, plugins_config_where_fn where, void *ud,
                                 const char *name)
{
    char msg[600];
    size_t n = 0, noffered = json_object_size(p->offered);
    const char **names = calloc(p->nplugins + noffered + 1, sizeof *names);
    const char *near = NULL, *key;
    json_t *v;

    if (names) {
        for (size_t i = 0; i < p->nplugins; i++)
            names[n++] = p->plugins[i]->desc.name;
        json_object_foreach(p->offered, key, v) {
            if (n < p->nplugins + noffered)
                names[n++] = key;
        }
        near = dsl_suggest(name, strlen(name), names, n);
    }
    if (near)
        snprintf(msg, sizeof msg, "no plugin '%s' is loaded; did you mean '%s'?", name, near);
    else
        snprintf(msg, sizeof msg, "no plugin '%s' is loaded", name);
    free(names);
    report_entry(p, where, ud, "config", name, NULL, msg);
}

int plugins_set_configs(plugins_t *p, json_t *configs, plugins_config_where_fn where, void *ud)
{
    json_t *offered = json_object();

    if (!offered)
        return -1;
    json_decref(p->configs);
    json_decref(p->offered);
    p->configs = json_is_object(configs) ? json_incref(configs) : NULL;
    p->offered = offered;
    p->where = where;
    p->where_ud = ud;
    return 0;
}

int plugins_check_unused_configs(plugins_t *p)
{
    const char *name;
    json_t *v;
    int n = 0;

    json_object_foreach(p->configs, name, v) {
        if (json_object_get(p->offered, name))
            continue;
        report_unknown_entry(p, p->where, p->where_ud, name);
        n++;
    }
    return n;
}

static plugin_slot *find_slot(const plugins_t *p, const char *name)
{
    for (size_t i = 0; name && i < p->nplugins; i++)
        if (strcmp(p->plugins[i]->desc.name, name) == 0)
            return p->plugins[i];
    return NULL;
}

json_t *plugins_config(const plugins_t *p, const char *plugin)
{
    const plugin_slot *s = p ? find_slot(p, plugin) : NULL;
    return s ? s->config : NULL;
}

int plugins_set_init_elsewhere(plugins_t *p, const char *const *names)
{
    size_t n = 0;
    char **v;

    while (names && names[n])
        n++;
    if (!(v = calloc(n + 1, sizeof *v)))
        return -1;
    for (size_t i = 0; i < n; i++)
        if (!(v[i] = strdup(names[i]))) {
            for (size_t k = 0; k < i; k++)
                free(v[k]);
            free(v);
            return -1;
        }
    for (size_t i = 0; p->elsewhere && p->elsewhere[i]; i++)
        free(p->elsewhere[i]);
    free(p->elsewhere);
    p->elsewhere = v;
    return 0;
}

void plugins_set_no_init(plugins_t *p, bool on)
{
    p->no_init = on;
}

/* The configuration D starts with: GIVEN (the caller's, may be NULL) or
 * its plugins_set_configs entry, checked. 0 with *OUT set (a new reference
 * or NULL), or -1 after reporting. */
static int initial_config(plugins_t *p, const loom_plugin *d, const char *origin, json_t *given,
                          json_t **out)
{
    json_t *entry = json_object_get(p->configs, d->name);

    /* offered, whatever becomes of it: an entry for a plugin refused for
     * another reason is not also "no plugin loaded" */
    if (p->offered && json_object_set_new(p->offered, d->name, json_true()) < 0) {
        report(p, origin, "out of memory while loading");
        return -1;
    }
    return check_config(p, d, origin, given ? given : entry, p->where, p->where_ud, "", out);
}

/* The whole registration, HANDLE (may be NULL) included: on success the
 * registry owns HANDLE; on refusal the caller still does. RAW is the
 * plugin's descriptor, in the plugin's layout. */
static int add_plugin(plugins_t *p, const loom_plugin *raw, const char *origin, json_t *config,
                      void *handle)
{
    plugin_slot *slot = NULL;
    lambda_slot **lambdas = NULL;
    provider_slot **providers = NULL;
    plugin_header h;
    const loom_plugin *d;
    size_t nl = 0, nv = 0;

    if (check_header(p, raw, origin, &h) < 0)
        return -1;
    if (!(slot = calloc(1, sizeof *slot)) || normalise(slot, &h, raw) < 0)
        goto nomem;
    d = &slot->desc;
    if (check_desc(p, d, origin) < 0 || initial_config(p, d, origin, config, &slot->config) < 0)
        goto refuse;
    slot->elsewhere = p->no_init || name_in(p->elsewhere, d->name);
    nl = d->nlambdas;
    nv = d->nproviders;

    /* Reserve every byte registration needs, before init. vec_reserve takes
     * the last index wanted, however far past the capacity: index N + NL is
     * the NULL after the N + NL lambda names (likewise for providers); the
     * pointer arrays get the same, one spare, so an empty plugin needs no
     * special case. */
    if (vec_reserve(&p->plugins, p->nplugins, &p->cap_plugins, sizeof(void *), 8) < 0 ||
        vec_reserve(&p->lambdas, p->nlambdas + nl, &p->cap_lambdas, sizeof(void *), 32) < 0 ||
        vec_reserve(&p->lambda_names, p->nlambdas + nl, &p->cap_lambda_names, sizeof(char *),
                    16) < 0 ||
        vec_reserve(&p->providers, p->nproviders + nv, &p->cap_providers, sizeof(void *), 8) < 0 ||
        vec_reserve(&p->provider_names, p->nproviders + nv, &p->cap_provider_names,
                    sizeof(char *), 8) < 0)
        goto nomem;
    lambdas = calloc(nl ? nl : 1, sizeof *lambdas);
    providers = calloc(nv ? nv : 1, sizeof *providers);
    if (!lambdas || !providers || !(slot->origin = strdup(origin)))
        goto nomem;
    slot->handle = handle;
    for (size_t i = 0; i < nl; i++) {
        size_t len = strlen(d->name) + 1 + strlen(d->lambdas[i].name) + 1;
        char *name;
        if (!(lambdas[i] = calloc(1, sizeof **lambdas)) || !(name = malloc(len)))
            goto nomem;
        snprintf(name, len, "%s.%s", d->name, d->lambdas[i].name);
        lambdas[i]->pub.name = name;
        lambdas[i]->pub.def = &d->lambdas[i];
        lambdas[i]->pub.plugin = d;
    }
    for (size_t i = 0; i < nv; i++) {
        if (!(providers[i] = calloc(1, sizeof **providers)))
            goto nomem;
        providers[i]->pub.name = d->providers[i].name;
        providers[i]->pub.def = &d->providers[i];
        providers[i]->pub.plugin = d;
        providers[i]->origin = slot->origin;
    }

    if (d->init && !slot->elsewhere && handle && p->trial_init &&
        trial_init(p, d, origin, slot->config) < 0)
        goto refuse;
    if (d->init && !slot->elsewhere) {
        load_ctx lc = { .base = { .api = &load_api }, .p = p, .name = d->name };
        if (handle && p->level_log) /* so a crash inside init is named in the log */
            report_at(p, LOOM_LOG_INFO, origin, "loading plugin '%s'", d->name);
        if (d->init(&lc.base, slot->config, &slot->state) < 0) {
            report(p, origin, "plugin '%s' failed to initialise: %s", d->name,
                   lc.has_error ? lc.error : "no reason given");
            goto refuse;
        }
    }

    /* Commit: nothing below allocates. */
    p->plugins[p->nplugins++] = slot;
    for (size_t i = 0; i < nl; i++) {
        int found;
        size_t at = search(p->lambdas, p->nlambdas, lambdas[i]->pub.name, lambda_name_at, &found);
        lambdas[i]->pub.state = slot->state;
        insert_at(p->lambdas, p->nlambdas++, at, lambdas[i]);
    }
    for (size_t i = 0; i < nv; i++) {
        int found;
        size_t at = search(p->providers, p->nproviders, providers[i]->pub.name,
                           provider_name_at, &found);
        providers[i]->pub.plugin_state = slot->state;
        insert_at(p->providers, p->nproviders++, at, providers[i]);
    }
    for (size_t i = 0; i < p->nlambdas; i++)
        p->lambda_names[i] = p->lambdas[i]->pub.name;
    p->lambda_names[p->nlambdas] = NULL;
    for (size_t i = 0; i < p->nproviders; i++)
        p->provider_names[i] = p->providers[i]->pub.name;
    p->provider_names[p->nproviders] = NULL;
    free(lambdas);
    free(providers);
    return 0;

nomem:
    report(p, origin, "out of memory while loading");
refuse:
    for (size_t i = 0; lambdas && i < nl; i++) {
        if (lambdas[i])
            free((char *)lambdas[i]->pub.name);
        free(lambdas[i]);
    }
    for (size_t i = 0; providers && i < nv; i++)
        free(providers[i]);
    free(lambdas);
    free(providers);
    slot_free(slot);
    return -1;
}

int plugins_add(plugins_t *p, const loom_plugin *desc, const char *origin, json_t *config)
{
    return add_plugin(p, desc, origin ? origin : "built-in", config, NULL);
}

int plugins_add_builtins(plugins_t *p)
{
    int rc = 0;

    if (plugins_add(p, loom_builtin_std_entry(), "built-in", NULL) < 0)
        rc = -1;
    if (plugins_add(p, loom_builtin_mock_entry(), "built-in", NULL) < 0)
        rc = -1;
    if (plugins_add(p, loom_builtin_openai_entry(), "built-in", NULL) < 0)
        rc = -1;
    if (plugins_add(p, loom_builtin_anthropic_entry(), "built-in", NULL) < 0)
        rc = -1;
    return rc;
}

int plugins_load_file(plugins_t *p, const char *path, json_t *config)
{
    const loom_plugin *(*entry)(void);
    void *handle, *sym;

    /* RTLD_NOW: an unresolved symbol is a refusal now, not a crash at the
     * first call. RTLD_LOCAL: every plugin exports loom_plugin_entry. */
    handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        report(p, path, "%s", why ? why : "cannot be loaded");
        return -1;
    }
    dlerror();
    sym = dlsym(handle, LOOM_PLUGIN_ENTRY_NAME);
    if (!sym) {
        report(p, path, "no %s symbol: not a Loom plugin", LOOM_PLUGIN_ENTRY_NAME);
        goto fail;
    }
    /* POSIX guarantees this conversion for dlsym results. */
    memcpy(&entry, &sym, sizeof entry);
    if (add_plugin(p, entry(), path, config, handle) < 0)
        goto fail;
    return 0;
fail:
    dlclose(handle);
    return -1;
}

static int has_so_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 3 && strcmp(name + n - 3, ".so") == 0;
}

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int plugins_load_dir(plugins_t *p, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int loaded = -1;

    if (!d) {
        report(p, dir, "cannot read the plugin directory: %s", strerror(errno));
        return -1;
    }
    /* Name order, so which of two clashing plugins wins does not depend on
     * the file system. */
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !has_so_suffix(e->d_name))
            continue;
        if (vec_reserve(&names, n, &cap, sizeof *names, 16) < 0 ||
            !(names[n] = strdup(e->d_name))) {
            report(p, dir, "out of memory while listing plugins");
            goto out;
        }
        n++;
    }
    if (n > 1) /* qsort wants a non-NULL array even for nothing */
        qsort(names, n, sizeof *names, compare_names);
    loaded = 0;
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(dir) + 1 + strlen(names[i]) + 1;
        char *path = malloc(len);
        if (!path) {
            report(p, dir, "out of memory while loading plugins");
            continue;
        }
        snprintf(path, len, "%s/%s", dir, names[i]);
        if (plugins_load_file(p, path, NULL) == 0)
            loaded++;
        free(path);
    }
out:
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    closedir(d);
    return loaded;
}

static bool same_config(const json_t *a, const json_t *b)
{
    return a == b || (a && b && json_equal(a, b));
}

int plugins_reload_at(plugins_t *p, json_t *configs, plugins_config_where_fn where, void *ud)
{
    const char *name;
    json_t *v;
    int failed = 0;

    if (!json_is_object(configs))
        configs = NULL;
    for (size_t i = 0; i < p->nplugins; i++) {
        plugin_slot *s = p->plugins[i];
        json_t *config;
        if (check_config(p, &s->desc, s->origin, json_object_get(configs, s->desc.name), where,
                         ud, " (the plugin keeps its configuration)", &config) < 0) {
            failed++;
            continue;
        }
        if (s->elsewhere) {        /* its helper reloads it, from plugins_config */
            json_decref(s->config);
            s->config = config;
            continue;
        }
        /* zero for a plugin of minor 0: its descriptor had no such field */
        if (!s->desc.reload) {
            if (!same_config(config, s->config))
                report_at(p, LOOM_LOG_WARN, s->origin,
                          "plugin '%s' has no reload hook: its configuration change needs a "
                          "restart", s->desc.name);
            json_decref(config);
            continue;
        }
        load_ctx lc = { .base = { .api = &load_api }, .p = p, .name = s->desc.name };
        if (s->desc.reload(&lc.base, s->state, config) < 0) {
            report(p, s->origin, "plugin '%s' kept its configuration: %s", s->desc.name,
                   lc.has_error ? lc.error : "reload failed");
            json_decref(config);
            failed++;
            continue;
        }
        json_decref(s->config);
        s->config = config;
    }
    json_object_foreach(configs, name, v) {
        if (!find_slot(p, name) && !json_object_get(p->offered, name))
            report_unknown_entry(p, where, ud, name);
    }
    return failed;
}

int plugins_reload(plugins_t *p, json_t *configs)
{
    return plugins_reload_at(p, configs, NULL, NULL);
}
