/* test_config_isolate.c -- plugins.isolate in the daemon's config file:
 * both forms of `plugins`, the defaults of an entry, every key's range, and
 * errors at their FILE:LINE:COL. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "tests/unit/config_testlib.h"

Test(config_isolate, the_list_form_still_works_and_isolates_nothing)
{
    ct_parsed p = ct_parse("plugins: [/a, /b]\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, false));
    cr_expect(eq(str, p.c->plugin_dirs[1], "/b"));
    cr_expect(eq(sz, p.c->nisolate, 0));
    ct_done(&p);
}

Test(config_isolate, the_mapping_form_with_every_key_and_the_defaults)
{
    ct_parsed p = ct_parse("plugins:\n"
                     "  dirs: [/a]\n"
                     "  isolate:\n"
                     "    scraper: { processes: 3, memory: 512MiB, cpu_seconds: 5, timeout: 1500ms }\n"
                     "    other: {}\n"
                     "    bare:\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, false));
    cr_expect(eq(str, p.c->plugin_dirs[0], "/a"));
    cr_assert(eq(sz, p.c->nisolate, 3));
    const config_isolate *s = &p.c->isolate[0];
    cr_expect(eq(str, s->plugin, "scraper"));
    cr_expect(eq(int, s->processes, 3));
    cr_expect(eq(u64, s->memory_bytes, (uint64_t)512 << 20));
    cr_expect(eq(u64, s->cpu_seconds, 5));
    cr_expect(eq(u64, s->timeout_ms, 1500));
    cr_expect(eq(int, s->line, 4));
    cr_expect(eq(int, s->col, 5));
    for (size_t i = 1; i < 3; i++) {
        const config_isolate *o = &p.c->isolate[i];
        cr_expect(eq(int, o->processes, CONFIG_ISOLATE_PROCESSES));
        cr_expect(eq(u64, o->memory_bytes, CONFIG_ISOLATE_MEMORY));
        cr_expect(eq(u64, o->cpu_seconds, CONFIG_ISOLATE_CPU_SECONDS));
        cr_expect(eq(u64, o->timeout_ms, CONFIG_ISOLATE_TIMEOUT_MS));
    }
    ct_done(&p);
}

Test(config_isolate, a_list_of_names_and_unlimited_memory)
{
    ct_parsed p = ct_parse("plugins:\n  isolate: [a, b]\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, false));
    cr_assert(eq(sz, p.c->nisolate, 2));
    cr_expect(eq(str, p.c->isolate[1].plugin, "b"));
    ct_done(&p);
    p = ct_parse("plugins: { isolate: { a: { memory: unlimited, cpu_seconds: 0 } } }\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, false));
    cr_expect(eq(u64, p.c->isolate[0].memory_bytes, 0));
    cr_expect(eq(u64, p.c->isolate[0].cpu_seconds, 0));
    ct_done(&p);
}

Test(config_isolate, every_bad_value_is_reported_where_it_is)
{
    ct_parsed p = ct_parse("plugins:\n"
                     "  dirs: [/a]\n"
                     "  isolate:\n"
                     "    a: { processes: 0, memory: 12MiB, cpu_seconds: -1, timeout: 5ms }\n"
                     "    b: { processes: 65, memory: lots, timout: 1s }\n"
                     "    a: {}\n"
                     "  isolte: {}\n");
    cr_assert(p.c == NULL);
    const char *out = ct_dump(&p, false);
    cr_expect(strstr(out, "c.yaml:4:21: error: 'processes' must be from 1 to 64, got 0") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:4:32: error: 'memory' must be at least 64MiB") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:4:52: error: 'cpu_seconds' must be from 0") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:4:65: error: 'timeout' must be from 10ms to 24h") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:5:21: error: 'processes' must be from 1 to 64, got 65") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:5:33: error: 'memory' must be a size") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:5:39: error: unknown key 'timout'") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:6:5: error: duplicate key 'a'") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:7:3: error: unknown key 'isolte'") != NULL, "%s", out);
    ct_done(&p);
    p = ct_parse("plugins: { isolate: [a, b, a], dirs: /x }\n");
    cr_assert(p.c == NULL);
    out = ct_dump(&p, false);
    cr_expect(strstr(out, "c.yaml:1:28: error: plugin 'a' is isolated twice") != NULL, "%s", out);
    cr_expect(strstr(out, "c.yaml:1:38: error: 'plugins' must be a list of directories") != NULL,
              "%s", out);
    ct_done(&p);
}
