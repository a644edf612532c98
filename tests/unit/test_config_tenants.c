/* test_config_tenants.c -- the config's `tenants` and `access` sections:
 * defaults, every key's range, names resolved at load, and errors at their
 * FILE:LINE:COL. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/config_file.h"
#include "tests/unit/config_testlib.h"

/* a plain condition for cr_assert (which wants a criterion or a call) */
static bool truth(bool b)
{
    return b;
}

/* The one error of TEXT, as FILE:LINE:COL: error: ... */
static void expect_error(const char *text, const char *want)
{
    ct_parsed p = ct_parse(text);
    cr_assert(eq(ptr, p.c, NULL), "accepted:\n%s", text);
    cr_assert(not(eq(ptr, strstr(ct_dump(&p, false), want), NULL)), "want \"%s\", got:\n%s", want,
              ct_dump(&p, false));
    ct_done(&p);
}

Test(config_tenants, absent_sections_change_nothing)
{
    ct_parsed p = ct_parse("max_running_jobs: 4\n");
    cr_assert(not(eq(ptr, p.c, NULL)), "%s", ct_dump(&p, false));
    cr_expect(eq(sz, p.c->tenants.n, 0));
    cr_expect(truth(!p.c->access.set), "no access section: everyone as before");
    cr_expect(truth(config_tenant_known(&p.c->tenants, "default")));
    cr_expect(truth(!config_tenant_known(&p.c->tenants, "other")));
    ct_done(&p);
}

Test(config_tenants, every_key_and_the_defaults)
{
    ct_parsed p = ct_parse("tenants:\n"
                     "  search: { weight: 3, max_running_jobs: 50, max_queued_jobs: 5000,\n"
                     "            budget: { usd_per_day: 20, usd_per_month: 400.5 } }\n"
                     "  batch: {}\n"
                     "  bare:\n");
    cr_assert(not(eq(ptr, p.c, NULL)), "%s", ct_dump(&p, false));
    cr_assert(eq(sz, p.c->tenants.n, 3));
    const config_tenant *s = config_tenant_find(&p.c->tenants, "search");
    cr_assert(s != NULL);
    cr_expect(eq(i64, s->weight, 3));
    cr_expect(eq(i64, s->max_running_jobs, 50));
    cr_expect(eq(i64, s->max_queued_jobs, 5000));
    cr_expect(eq(dbl, s->usd_per_day, 20.0));
    cr_expect(eq(dbl, s->usd_per_month, 400.5));
    for (const char *n = "batch"; n; n = strcmp(n, "batch") == 0 ? "bare" : NULL) {
        const config_tenant *t = config_tenant_find(&p.c->tenants, n);
        cr_assert(t != NULL, "%s", n);
        cr_expect(eq(i64, t->weight, 1));
        cr_expect(eq(i64, t->max_running_jobs, 0));
        cr_expect(eq(i64, t->max_queued_jobs, 0));
        cr_expect(lt(dbl, t->usd_per_day, 0.0), "no budget");
        cr_expect(lt(dbl, t->usd_per_month, 0.0), "no budget");
    }
    ct_done(&p);
}

Test(config_tenants, errors_at_their_positions)
{
    expect_error("tenants:\n  a: { weight: 0 }\n",
                 "c.yaml:2:16: error: 'weight' must be from 1 to 1000, got 0");
    expect_error("tenants:\n  a: { wieght: 2 }\n", "c.yaml:2:8: error: unknown key 'wieght'");
    expect_error("tenants:\n  a: { max_running_jobs: -1 }\n",
                 "c.yaml:2:26: error: 'max_running_jobs' must be from 1");
    expect_error("tenants:\n  a:\n    budget: { usd_per_day: lots }\n",
                 "c.yaml:3:28: error:");
    expect_error("tenants:\n  a:\n    budget: { usd_per_day: -3 }\n",
                 "c.yaml:3:28: error: 'usd_per_day' must be from 0");
    expect_error("tenants:\n  'a b': {}\n", "c.yaml:2:3: error: tenant name 'a b'");
    expect_error("tenants: [a, b]\n", "c.yaml:1:10: error:");
}

/* A user and a group that exist here (root's, which every system has). */
static void root_names(char *user, size_t ul, char *group, size_t gl)
{
    struct passwd *pw = getpwuid(0);
    struct group *gr = getgrgid(0);
    cr_assert(not(eq(ptr, pw, NULL)));
    cr_assert(not(eq(ptr, gr, NULL)));
    snprintf(user, ul, "%s", pw->pw_name);
    snprintf(group, gl, "%s", gr->gr_name);
}

Test(config_access, rules_resolve_names_and_match_first)
{
    char user[64], group[64], text[1024];
    root_names(user, sizeof user, group, sizeof group);
    snprintf(text, sizeof text,
             "tenants: { search: { weight: 2 }, ml: {} }\n"
             "access:\n"
             "  - { uid: 4242, tenant: search, role: submit }\n"
             "  - { user: %s, role: admin }\n"
             "  - { gid: 777, tenant: ml, role: read }\n"
             "  - { group: %s, tenant: ml, role: submit }\n"
             "  - { everyone: true, tenant: search, role: read }\n",
             user, group);
    ct_parsed p = ct_parse(text);
    cr_assert(not(eq(ptr, p.c, NULL)), "%s", ct_dump(&p, false));
    const config_access *a = &p.c->access;
    cr_assert(truth(a->set));
    cr_assert(eq(sz, a->n, 5));
    cr_expect(eq(int, a->rules[1].match, CONFIG_MATCH_UID));
    cr_expect(eq(u64, (uint64_t)a->rules[1].id, 0), "user name resolved to its uid");
    cr_expect(eq(str, a->rules[1].tenant, "default"), "a rule's tenant defaults to default");
    cr_expect(eq(int, a->rules[3].match, CONFIG_MATCH_GID));
    cr_expect(eq(u64, (uint64_t)a->rules[3].id, 0), "group name resolved to its gid");
    const config_access_rule *r = config_access_match(a, 4242, 5, NULL, 0);
    cr_assert(eq(ptr, (void *)r, (void *)&a->rules[0]));
    cr_expect(eq(int, r->role, CONFIG_ROLE_SUBMIT));
    cr_expect(eq(str, r->tenant, "search"));
    /* uid 0 is matched by the second rule before its group could */
    cr_expect(eq(ptr, (void *)config_access_match(a, 0, 0, NULL, 0), (void *)&a->rules[1]));
    /* a supplementary group matches as the primary does */
    gid_t sup[] = { 12, 777 };
    cr_expect(eq(ptr, (void *)config_access_match(a, 1000, 1000, sup, 2),
                 (void *)&a->rules[2]));
    cr_expect(eq(ptr, (void *)config_access_match(a, 1000, 0, NULL, 0), (void *)&a->rules[3]));
    cr_expect(eq(ptr, (void *)config_access_match(a, 1000, 1000, NULL, 0),
                 (void *)&a->rules[4]), "everyone catches the rest");
    ct_done(&p);
}

Test(config_access, no_match_without_a_catch_all)
{
    ct_parsed p = ct_parse("access:\n  - { uid: 4242, role: read }\n");
    cr_assert(not(eq(ptr, p.c, NULL)), "%s", ct_dump(&p, false));
    cr_expect(eq(ptr, (void *)config_access_match(&p.c->access, 1, 1, NULL, 0), NULL));
    ct_done(&p);
    p = ct_parse("access:\n");
    cr_assert(not(eq(ptr, p.c, NULL)), "%s", ct_dump(&p, false));
    cr_expect(truth(p.c->access.set), "an empty section lets nobody in, as written");
    cr_expect(eq(ptr, (void *)config_access_match(&p.c->access, 0, 0, NULL, 0), NULL));
    ct_done(&p);
}

Test(config_access, errors_at_their_positions)
{
    expect_error("access:\n  - { user: no-such-user-here, role: read }\n",
                 "c.yaml:2:13: error: no user 'no-such-user-here' on this system");
    expect_error("access:\n  - { group: no-such-group-here, role: read }\n",
                 "c.yaml:2:14: error: no group 'no-such-group-here' on this system");
    expect_error("tenants: { search: {} }\naccess:\n  - { uid: 1, tenant: serch, role: read }\n",
                 "c.yaml:3:23: error: no tenant 'serch' in 'tenants'; did you mean 'search'?");
    expect_error("access:\n  - { uid: 1, role: reader }\n",
                 "c.yaml:2:21: error: 'role' must be read, submit or admin; did you mean 'read'?");
    expect_error("access:\n  - { uid: 1 }\n", "c.yaml:2:5: error: missing required key 'role'");
    expect_error("access:\n  - { tenant: default, role: read }\n",
                 "c.yaml:2:5: error: a rule needs one of uid, user, gid, group or everyone");
    expect_error("access:\n  - { uid: 1, gid: 2, role: read }\n",
                 "c.yaml:2:20: error: a rule matches on one of uid, user, gid, group or everyone; "
                 "this one has both 'uid' and 'gid'");
    expect_error("access:\n  - { uid: -1, role: read }\n", "c.yaml:2:12: error: 'uid' must be from 0");
    expect_error("access:\n  - { everyone: false, role: read }\n",
                 "c.yaml:2:17: error: 'everyone' can only be true");
    expect_error("access:\n  - { uid: 1, role: read, tennant: x }\n",
                 "c.yaml:2:27: error: unknown key 'tennant'");
    expect_error("access: { uid: 1 }\n", "c.yaml:1:9: error: 'access' must be a list of rules");
}
