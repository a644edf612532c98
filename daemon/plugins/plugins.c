/* plugins.c -- the plugin loader and the registry of lambdas and providers.
 *
 * A plugin is checked completely before anything of it is kept: ABI version
 * first (the only fields whose layout we may trust before that), then names.
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/containers.h"

/* Defined by plugins/std and plugins/mock, built with LOOM_BUILTIN_PLUGIN. */
extern const loom_plugin *loom_builtin_std_entry(void);
extern const loom_plugin *loom_builtin_mock_entry(void);
extern const loom_plugin *loom_builtin_openai_entry(void);
extern const loom_plugin *loom_builtin_anthropic_entry(void);

typedef struct plugin_slot {
    const loom_plugin *desc;
    void *state;                   /* from the plugin's init; the plugin's */
    void *handle;                  /* dlopen handle, NULL for built-ins */
    char *origin;                  /* the file, or "built-in" (owned) */
} plugin_slot;

/* The public struct first, so a lookup result converts back to its slot. */
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

    plugin_slot **plugins;         /* in load order (fini runs in reverse) */
    size_t nplugins, cap_plugins;

    plugins_lambda **lambdas;      /* sorted by name */
    size_t nlambdas, cap_lambdas;
    const char **lambda_names;     /* same order, NULL-terminated */
    size_t cap_lambda_names;

    provider_slot **providers;     /* sorted by name */
    size_t nproviders, cap_providers;
    const char **provider_names;
    size_t cap_provider_names;
};

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
    if (p->level_log)
        p->level_log(p->ud, level, line);
    else
        p->log(p->ud, line);
}

/* Every refusal is an error; the few other lines say their level. */
#define report(p, ...) report_at((p), LOOM_LOG_ERROR, __VA_ARGS__)

/* ---- the host side of a plugin's init: errors into a buffer, logs out ---- */

typedef struct load_ctx {
    loom_ctx base;                 /* first: plugins see only this */
    plugins_t *p;
    const char *origin;
    int has_error;
    char error[512];
} load_ctx;

static void load_verror(loom_ctx *ctx, loom_errcode code, const char *fmt, va_list ap)
{
    load_ctx *lc = (load_ctx *)ctx;

    if (lc->has_error)             /* the first error is the cause */
        return;
    lc->has_error = 1;
    vsnprintf(lc->error, sizeof lc->error, fmt, ap);
}

static void load_vlog(loom_ctx *ctx, int level, const char *fmt, va_list ap)
{
    load_ctx *lc = (load_ctx *)ctx;
    char msg[1024];

    vsnprintf(msg, sizeof msg, fmt, ap);
    /* a plugin's own lines never count as the loader's errors */
    report_at(lc->p, level <= LOOM_LOG_WARN ? LOOM_LOG_WARN : LOOM_LOG_INFO, lc->origin, "%s", msg);
}

static void load_retry_after(loom_ctx *ctx, uint64_t ms)
{
    load_ctx *lc = (load_ctx *)ctx;
    report_at(lc->p, LOOM_LOG_WARN, lc->origin, "retry_after called during init (ignored)");
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

static void *load_timer_add(loom_call *call, uint64_t delay_ms, void (*cb)(void *ud), void *ud)
{
    return NULL;
}

static void load_timer_cancel(loom_call *call, void *timer)
{
}

static const loom_host_api load_api = {
    .verror = load_verror,
    .vlog = load_vlog,
    .retry_after = load_retry_after,
    .complete = load_complete,
    .fail = load_fail,
    .timer_add = load_timer_add,
    .timer_cancel = load_timer_cancel,
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

void plugins_free(plugins_t *p)
{
    if (!p)
        return;
    for (size_t i = p->nplugins; i-- > 0;) {
        plugin_slot *s = p->plugins[i];
        if (s->desc->fini)
            s->desc->fini(s->state);
        /* After fini: the descriptor and the code live in the object. */
        if (s->handle)
            dlclose(s->handle);
        free(s->origin);
        free(s);
    }
    for (size_t i = 0; i < p->nlambdas; i++) {
        free((char *)p->lambdas[i]->name);
        free(p->lambdas[i]);
    }
    for (size_t i = 0; i < p->nproviders; i++)
        free(p->providers[i]);
    free(p->plugins);
    free(p->lambdas);
    free(p->lambda_names);
    free(p->providers);
    free(p->provider_names);
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
    return ((plugins_lambda *const *)arr)[i]->name;
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
    return found ? p->lambdas[i] : NULL;
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

/* Every check that needs no allocation, in the order a reader would expect
 * the first problem to be named. 0, or -1 after reporting. */
static int check_desc(plugins_t *p, const loom_plugin *d, const char *origin)
{
    if (!d) {
        report(p, origin, "the plugin entry returned no descriptor");
        return -1;
    }
    if (d->abi_major != LOOM_ABI_MAJOR || d->abi_minor > LOOM_ABI_MINOR) {
        report(p, origin, "built for plugin ABI %u.%u, this loomd has %u.%u%s",
               (unsigned)d->abi_major, (unsigned)d->abi_minor, LOOM_ABI_MAJOR, LOOM_ABI_MINOR,
               d->abi_major == LOOM_ABI_MAJOR ? " (a newer minor: rebuild it or upgrade loomd)" : "");
        return -1;
    }
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
        if (strcmp(p->plugins[i]->desc->name, d->name) == 0) {
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

/* Inserts ITEM at AT in the array of N pointers (room already reserved). */
/* Runs D's init in a forked child, so a plugin that dies in it is named
 * instead of taking the checker down: 0 when the child's init returned
 * (whatever it answered: the real run reports a refusal), -1 when it died.
 * The child exits without fini or any cleanup: its memory is a copy. */
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
        load_ctx lc = { .base = { .api = &load_api }, .p = p, .origin = origin };
        (void)d->init(&lc.base, config, &state);
        _exit(TRIAL_RETURNED);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) {
            report(p, origin, "cannot check plugin '%s': %s", d->name, strerror(errno));
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

static void insert_at(void *arr, size_t n, size_t at, void *item)
{
    void **a = arr;
    memmove(&a[at + 1], &a[at], (n - at) * sizeof *a);
    a[at] = item;
}

/* The whole registration, HANDLE (may be NULL) included: on success the
 * registry owns HANDLE; on refusal the caller still does. */
static int add_plugin(plugins_t *p, const loom_plugin *d, const char *origin, json_t *config,
                      void *handle)
{
    plugin_slot *slot = NULL;
    plugins_lambda **lambdas = NULL;
    provider_slot **providers = NULL;
    size_t nl, nv;

    if (check_desc(p, d, origin) < 0)
        return -1;
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
    slot = calloc(1, sizeof *slot);
    lambdas = calloc(nl ? nl : 1, sizeof *lambdas);
    providers = calloc(nv ? nv : 1, sizeof *providers);
    if (!slot || !lambdas || !providers || !(slot->origin = strdup(origin)))
        goto nomem;
    slot->desc = d;
    slot->handle = handle;
    for (size_t i = 0; i < nl; i++) {
        size_t len = strlen(d->name) + 1 + strlen(d->lambdas[i].name) + 1;
        char *name;
        if (!(lambdas[i] = calloc(1, sizeof **lambdas)) || !(name = malloc(len)))
            goto nomem;
        snprintf(name, len, "%s.%s", d->name, d->lambdas[i].name);
        lambdas[i]->name = name;
        lambdas[i]->def = &d->lambdas[i];
        lambdas[i]->plugin = d;
    }
    for (size_t i = 0; i < nv; i++) {
        if (!(providers[i] = calloc(1, sizeof **providers)))
            goto nomem;
        providers[i]->pub.name = d->providers[i].name;
        providers[i]->pub.def = &d->providers[i];
        providers[i]->pub.plugin = d;
        providers[i]->origin = slot->origin;
    }

    if (d->init && handle && p->trial_init && trial_init(p, d, origin, config) < 0)
        goto refuse;
    if (d->init) {
        load_ctx lc = { .base = { .api = &load_api }, .p = p, .origin = origin };
        if (handle && p->level_log) /* so a crash inside init is named in the log */
            report_at(p, LOOM_LOG_INFO, origin, "loading plugin '%s'", d->name);
        if (d->init(&lc.base, config, &slot->state) < 0) {
            report(p, origin, "plugin '%s' failed to initialise: %s", d->name,
                   lc.has_error ? lc.error : "no reason given");
            goto refuse;
        }
    }

    /* Commit: nothing below allocates. */
    p->plugins[p->nplugins++] = slot;
    for (size_t i = 0; i < nl; i++) {
        int found;
        size_t at = search(p->lambdas, p->nlambdas, lambdas[i]->name, lambda_name_at, &found);
        lambdas[i]->state = slot->state;
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
        p->lambda_names[i] = p->lambdas[i]->name;
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
            free((char *)lambdas[i]->name);
        free(lambdas[i]);
    }
    for (size_t i = 0; providers && i < nv; i++)
        free(providers[i]);
    free(lambdas);
    free(providers);
    if (slot)
        free(slot->origin);
    free(slot);
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
