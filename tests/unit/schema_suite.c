/* schema_suite.c -- runs the official JSON Schema Test Suite's draft-4 cases
 * through dsl/schema.h and prints TAP: one test per keyword file, each
 * saying how many of its cases passed, then the total.
 *
 *   schema_suite DRAFT4-DIR
 *
 * Every file of a supported keyword runs, every case in it. A group whose
 * schema this validator refuses on purpose is listed below with the reason
 * and counted as skipped; any other refusal is a failure, so a keyword that
 * stops compiling cannot hide as a skip. A file of an unsupported feature
 * (remote $ref) is named with its reason and not run. */
#include <dirent.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/schema.h"

/* The supported keywords' files, in the suite's names. */
static const char *const keyword_files[] = {
    "additionalItems", "additionalProperties", "allOf", "anyOf", "default", "definitions",
    "dependencies", "enum", "items", "maxItems", "maxLength", "maxProperties", "maximum",
    "minItems", "minLength", "minProperties", "minimum", "multipleOf", "not", "oneOf",
    "pattern", "patternProperties", "properties", "ref", "required", "type", "uniqueItems",
};
#define NFILES (sizeof keyword_files / sizeof keyword_files[0])

/* Files of features not supported, not run. */
static const struct {
    const char *file, *reason;
} not_run[] = {
    {"refRemote", "$ref to other documents (only references within the document are supported)"},
};

/* Groups refused on purpose: the file, the group's description, and why. */
static const struct {
    const char *file, *group, *reason;
} expected_refusals[] = {
    {"ref", "remote ref, containing refs itself", "a $ref to another document"},
    {"definitions", "valid definition", "a $ref to another document (the draft-4 meta-schema)"},
    {"definitions", "invalid definition", "a $ref to another document (the draft-4 meta-schema)"},
    {"ref", "escaped pointer ref",
     "its schema has members that are not keywords (\"tilda~field\"), which are errors here"},
};

static const char *refusal_reason(const char *file, const char *group)
{
    for (size_t i = 0; i < sizeof expected_refusals / sizeof expected_refusals[0]; i++)
        if (strcmp(expected_refusals[i].file, file) == 0 &&
            strcmp(expected_refusals[i].group, group) == 0)
            return expected_refusals[i].reason;
    return NULL;
}

typedef struct tally {
    int passed, failed, skipped;
} tally;

/* Runs every group of FILE (the suite's file for keyword NAME); details of
 * failures go to stdout as TAP comments. */
static int run_file(const char *path, const char *name, tally *t)
{
    json_error_t je;
    json_t *groups = json_load_file(path, 0, &je);
    if (!json_is_array(groups)) {
        printf("# %s: cannot read it: %s\n", path, je.text);
        json_decref(groups);
        return -1;
    }
    size_t gi;
    json_t *g;
    json_array_foreach(groups, gi, g) {
        const char *desc = json_string_value(json_object_get(g, "description"));
        json_t *tests = json_object_get(g, "tests");
        char ptr[256], msg[512];
        dsl_schema *s = dsl_schema_compile(json_object_get(g, "schema"), ptr, sizeof ptr, msg,
                                           sizeof msg);
        const char *why = refusal_reason(name, desc ? desc : "");
        if (!s) {
            if (why) {
                t->skipped += (int)json_array_size(tests);
                printf("# %s / %s: %zu cases skipped: %s\n", name, desc, json_array_size(tests),
                       why);
            } else {
                t->failed += (int)json_array_size(tests);
                printf("# %s / %s: the schema did not compile: at '%s': %s\n", name, desc, ptr,
                       msg);
            }
            continue;
        }
        if (why) {
            printf("# %s / %s: compiled, but is listed as refused (%s)\n", name, desc, why);
            t->failed++;
        }
        size_t ti;
        json_t *c;
        json_array_foreach(tests, ti, c) {
            bool want = json_is_true(json_object_get(c, "valid"));
            char vmsg[512];
            bool got = dsl_schema_validate(s, json_object_get(c, "data"), vmsg, sizeof vmsg) == 0;
            if (got == want) {
                t->passed++;
            } else {
                t->failed++;
                printf("# %s / %s / %s: expected %s, got %s%s%s\n", name, desc,
                       json_string_value(json_object_get(c, "description")),
                       want ? "valid" : "invalid", got ? "valid" : "invalid", got ? "" : ": ",
                       got ? "" : vmsg);
            }
        }
        dsl_schema_free(s);
    }
    json_decref(groups);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: schema_suite DRAFT4-DIR\n");
        return 2;
    }
    const char *dir = argv[1];
    /* every file in the folder is either run or named as not run, so a
     * suite that grows a keyword file is noticed */
    DIR *d = opendir(dir);
    if (!d) {
        printf("1..1\nnot ok 1 - cannot open %s\n", dir);
        return 1;
    }
    struct dirent *e;
    int unknown = 0;
    while ((e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0)
            continue;
        bool known = false;
        for (size_t i = 0; i < NFILES && !known; i++)
            known = strlen(keyword_files[i]) == len - 5 &&
                    strncmp(keyword_files[i], e->d_name, len - 5) == 0;
        for (size_t i = 0; i < sizeof not_run / sizeof not_run[0] && !known; i++)
            known = strlen(not_run[i].file) == len - 5 &&
                    strncmp(not_run[i].file, e->d_name, len - 5) == 0;
        if (!known) {
            printf("# %s: a file this runner does not know\n", e->d_name);
            unknown++;
        }
    }
    closedir(d);

    printf("1..%zu\n", NFILES + 1);
    tally all = {0, 0, 0};
    int bad = 0;
    for (size_t i = 0; i < NFILES; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.json", dir, keyword_files[i]);
        tally t = {0, 0, 0};
        int rc = run_file(path, keyword_files[i], &t);
        int total = t.passed + t.failed + t.skipped;
        bool ok = rc == 0 && t.failed == 0;
        printf("%s %zu - %s: %d of %d cases passed", ok ? "ok" : "not ok", i + 1,
               keyword_files[i], t.passed, total);
        if (t.skipped)
            printf(" (%d skipped)", t.skipped);
        printf("\n");
        bad |= !ok;
        all.passed += t.passed;
        all.failed += t.failed;
        all.skipped += t.skipped;
    }
    for (size_t i = 0; i < sizeof not_run / sizeof not_run[0]; i++)
        printf("# %s.json not run: %s\n", not_run[i].file, not_run[i].reason);
    printf("# optional/ not run: the suite's optional cases (big numbers, formats, and 1.0 "
           "as a non-integer, which later drafts reversed and this validator follows)\n");
    int total = all.passed + all.failed + all.skipped;
    printf("%s %zu - all draft-4 files of supported keywords: %d of %d cases passed, %d "
           "skipped, %d failed%s\n",
           bad || unknown ? "not ok" : "ok", NFILES + 1, all.passed, total, all.skipped,
           all.failed, unknown ? " (and files this runner does not know)" : "");
    return bad || unknown ? 1 : 0;
}
