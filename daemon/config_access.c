/* config_access.c -- `access:` in the config file (config_access.h): a list
 * of rules, names resolved to numbers at load with the reentrant NSS calls
 * (getpwnam_r, getgrnam_r), so matching a connection never blocks on NSS. */
#include "daemon/config_access.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dsl/dsl.h"
#include "dsl/suggest.h"

static const char *const rule_keys[] = { "uid", "user", "gid", "group", "everyone", "tenant",
                                         "role", NULL };
static const char *const matcher_keys[] = { "uid", "user", "gid", "group", "everyone", NULL };
static const char *const role_names[] = { "read", "submit", "admin", NULL };

const char *config_role_name(config_role r)
{
    return r >= CONFIG_ROLE_READ && r <= CONFIG_ROLE_ADMIN ? role_names[r - 1] : "?";
}

/* getpwnam_r / getgrnam_r need a buffer whose size sysconf only hints at:
 * grow it while they say ERANGE. 0 and *ID set; -ENOENT (no such name);
 * another negative errno (NSS failed). */
static int lookup_id(const char *name, bool group, unsigned long *id)
{
    long hint = sysconf(group ? _SC_GETGR_R_SIZE_MAX : _SC_GETPW_R_SIZE_MAX);
    size_t size = hint > 0 ? (size_t)hint : 1024;
    for (;;) {
        char *buf = malloc(size);
        if (!buf)
            return -ENOMEM;
        int rc;
        bool found;
        if (group) {
            struct group gr, *res = NULL;
            rc = getgrnam_r(name, &gr, buf, size, &res);
            found = res != NULL;
            if (found)
                *id = (unsigned long)gr.gr_gid;
        } else {
            struct passwd pw, *res = NULL;
            rc = getpwnam_r(name, &pw, buf, size, &res);
            found = res != NULL;
            if (found)
                *id = (unsigned long)pw.pw_uid;
        }
        free(buf);
        if (rc == ERANGE && size < ((size_t)1 << 24)) {
            size *= 2;
            continue;
        }
        if (found)
            return 0;
        return rc == 0 || rc == ENOENT || rc == ESRCH ? -ENOENT : -rc;
    }
}

static int get_number_id(dsl_diags *d, const dsl_ynode *x, const char *key, unsigned long *id)
{
    int64_t v;
    if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) != DSL_YT_INT || dsl_yscalar_int(x, &v) < 0) {
        dsl_type_error(d, x, key, "a number");
        return -1;
    }
    /* (uid_t)-1 means "no id" to the kernel */
    if (v < 0 || v >= (int64_t)UINT32_MAX) {
        dsl_error(d, x->line, x->col, "'%s' must be from 0 to %lu, got %lld", key,
                  (unsigned long)UINT32_MAX - 1, (long long)v);
        return -1;
    }
    *id = (unsigned long)v;
    return 0;
}

static int get_name_id(dsl_diags *d, const dsl_ynode *x, const char *key, bool group,
                       unsigned long *id)
{
    if (x->kind != DSL_Y_SCALAR || x->u.scalar.len == 0) {
        dsl_type_error(d, x, key, group ? "a group name" : "a user name");
        return -1;
    }
    int rc = lookup_id(x->u.scalar.str, group, id);
    if (rc == -ENOENT) {
        dsl_error(d, x->line, x->col, "no %s '%s' on this system", group ? "group" : "user",
                  x->u.scalar.str);
        return -1;
    }
    if (rc < 0) {
        dsl_error(d, x->line, x->col, "cannot look up %s '%s': %s", group ? "group" : "user",
                  x->u.scalar.str, strerror(-rc));
        return -1;
    }
    return 0;
}

/* The rule's one matcher into R. 0 or -1 (reported). */
static int parse_matcher(dsl_diags *d, const dsl_ynode *y, config_access_rule *r)
{
    const dsl_ynode *found = NULL, *x;
    const char *which = NULL;
    for (size_t i = 0; matcher_keys[i]; i++)
        if ((x = dsl_ymap_get(y, matcher_keys[i]))) {
            if (found) {
                dsl_error(d, x->line, x->col,
                          "a rule matches on one of uid, user, gid, group or everyone; this one "
                          "has both '%s' and '%s'", which, matcher_keys[i]);
                return -1;
            }
            found = x;
            which = matcher_keys[i];
        }
    if (!found) {
        dsl_error(d, y->line, y->col,
                  "a rule needs one of uid, user, gid, group or everyone: true");
        return -1;
    }
    if (strcmp(which, "uid") == 0 || strcmp(which, "user") == 0)
        r->match = CONFIG_MATCH_UID;
    else if (strcmp(which, "gid") == 0 || strcmp(which, "group") == 0)
        r->match = CONFIG_MATCH_GID;
    else
        r->match = CONFIG_MATCH_EVERYONE;
    if (strcmp(which, "uid") == 0 || strcmp(which, "gid") == 0)
        return get_number_id(d, found, which, &r->id);
    if (strcmp(which, "user") == 0 || strcmp(which, "group") == 0)
        return get_name_id(d, found, which, which[0] == 'g', &r->id);
    int on;
    if (found->kind != DSL_Y_SCALAR || dsl_yscalar_bool(found, &on) < 0 || !on) {
        dsl_error(d, found->line, found->col, "'everyone' can only be true");
        return -1;
    }
    return 0;
}

/* The names of TENANTS and `default`, NULL-terminated (new array of
 * borrowed strings), for "did you mean"; NULL when out of memory. */
static const char **tenant_names(const config_tenants *t)
{
    const char **v = calloc(t->n + 2, sizeof *v);
    if (!v)
        return NULL;
    size_t k = 0;
    v[k++] = CONFIG_TENANT_DEFAULT;
    for (size_t i = 0; i < t->n; i++)
        v[k++] = t->v[i].name;
    return v;
}

static void parse_rule(dsl_diags *d, const dsl_ynode *y, const config_tenants *tenants,
                       config_access_rule *r)
{
    const dsl_ynode *x;
    r->line = y->line;
    r->col = y->col;
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "access", "a rule: a mapping with a matcher, tenant and role");
        return;
    }
    dsl_check_keys(d, y, rule_keys, "access rule");
    (void)parse_matcher(d, y, r);
    if (!(x = dsl_ymap_get(y, "role"))) {
        dsl_error(d, y->line, y->col, "missing required key 'role' (read, submit or admin)");
    } else {
        for (size_t i = 0; role_names[i] && x->kind == DSL_Y_SCALAR; i++)
            if (strcmp(x->u.scalar.str, role_names[i]) == 0)
                r->role = (config_role)(i + 1);
        if (!r->role) {
            const char *near = x->kind == DSL_Y_SCALAR
                                   ? dsl_suggest(x->u.scalar.str, x->u.scalar.len, role_names,
                                                 (size_t)-1)
                                   : NULL;
            dsl_error(d, x->line, x->col, "'role' must be read, submit or admin%s%s%s",
                      near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
        }
    }
    const char *tenant = CONFIG_TENANT_DEFAULT;
    if ((x = dsl_ymap_get(y, "tenant"))) {
        if (x->kind != DSL_Y_SCALAR || dsl_yscalar_type(x) != DSL_YT_STRING) {
            dsl_type_error(d, x, "tenant", "a tenant name");
            return;
        }
        tenant = x->u.scalar.str;
        if (!config_tenant_known(tenants, tenant)) {
            const char **names = tenant_names(tenants);
            const char *near = names ? dsl_suggest(tenant, strlen(tenant), names, (size_t)-1)
                                     : NULL;
            dsl_error(d, x->line, x->col, "no tenant '%s' in 'tenants'%s%s%s", tenant,
                      near ? "; did you mean '" : "", near ? near : "", near ? "'?" : "");
            free(names);
            return;
        }
    }
    if (!(r->tenant = strdup(tenant)))
        dsl_error(d, y->line, y->col, "out of memory");
}

void config_access_parse(dsl_diags *d, const dsl_ynode *y, const config_tenants *tenants,
                         config_access *a)
{
    a->set = true;
    if (y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_NULL)
        return; /* `access:` with no rule: nobody gets in, as written */
    if (y->kind != DSL_Y_SEQ) {
        dsl_type_error(d, y, "access", "a list of rules");
        return;
    }
    if (!(a->rules = calloc(y->u.seq.n + 1, sizeof *a->rules))) {
        dsl_error(d, y->line, y->col, "out of memory");
        return;
    }
    a->n = y->u.seq.n;
    for (size_t i = 0; i < y->u.seq.n; i++)
        parse_rule(d, y->u.seq.items[i], tenants, &a->rules[i]);
}

void config_access_free(config_access *a)
{
    for (size_t i = 0; i < a->n; i++)
        free(a->rules[i].tenant);
    free(a->rules);
    *a = (config_access){ 0 };
}

const config_access_rule *config_access_match(const config_access *a, uid_t uid, gid_t gid,
                                              const gid_t *groups, size_t ngroups)
{
    for (size_t i = 0; i < a->n; i++) {
        const config_access_rule *r = &a->rules[i];
        switch (r->match) {
        case CONFIG_MATCH_EVERYONE:
            return r;
        case CONFIG_MATCH_UID:
            if ((unsigned long)uid == r->id)
                return r;
            break;
        case CONFIG_MATCH_GID:
            if ((unsigned long)gid == r->id)
                return r;
            for (size_t k = 0; groups && k < ngroups; k++)
                if ((unsigned long)groups[k] == r->id)
                    return r;
            break;
        }
    }
    return NULL;
}
