/* test_store_batch.c -- the store's provider batch tables (schema v7): a
 * batch and its lines written in one request, updates as it goes,
 * outcomes of every line in one request, what a restart reads back (the
 * JSONL until the batch is created, lines of finished jobs left out),
 * dropping a job's lines and the batches left empty.
 *
 * Built twice, as tests/unit/test_store_batch on SQLite and as
 * tests/unit/test_store_batch_pg (-DSTORE_TEST_PG) on a fresh database of
 * the test PostgreSQL each, as test_store.c is. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "daemon/store/store.h"
#ifdef STORE_TEST_PG
#include "tests/unit/pgtest.h"

static char *g_uri; /* the test's own database */
#else
static char g_dir[256];
#endif
static reactor_t *g_r;
static store_t *g_s;

static void setup(void)
{
    char err[256] = "";
#ifdef STORE_TEST_PG
    cr_assert(pgtest_admin_uri() != NULL, "no PostgreSQL for the tests (see stderr)");
    g_uri = pgtest_fresh_db("sbatch");
    cr_assert(g_uri != NULL, "cannot create a test database (see stderr)");
    const char *where = g_uri;
#else
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/loom-sbatch-XXXXXX", tmp && *tmp ? tmp : P_tmpdir);
    cr_assert(mkdtemp(g_dir) != NULL, "mkdtemp: %s", strerror(errno));
    const char *where = g_dir;
#endif
    g_r = reactor_new();
    cr_assert(g_r != NULL);
    g_s = store_open(where, g_r, NULL, err, sizeof err);
    cr_assert(g_s != NULL, "%s", err);
}

#ifdef STORE_TEST_PG
static void teardown(void)
{
    store_close(g_s);
    reactor_free(g_r);
    pgtest_drop_db(g_uri); /* a failed drop is said, not fatal */
    free(g_uri);
}
#else

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void teardown(void)
{
    store_close(g_s);
    reactor_free(g_r);
    nftw(g_dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}
#endif

TestSuite(store_batch, .init = setup, .fini = teardown);

static bool truth(bool b)
{
    return b;
}

typedef struct done {
    int calls, status;
    char error[256];
} done_t;

static void on_done(void *ud, const store_result_t *res)
{
    done_t *d = ud;
    d->calls++;
    d->status = res->status;
    snprintf(d->error, sizeof d->error, "%s", res->error);
}

/* Runs the reactor until D has its completion (the store thread's commit
 * hands it back), for at most 20 s. */
static void wait_done(done_t *d)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (d->calls == 0) {
        clock_gettime(CLOCK_MONOTONIC, &t);
        cr_assert(t.tv_sec - t0.tv_sec < 20, "no completion");
        reactor_run_once(g_r, 50);
    }
}

static void ok(int queued, done_t *d)
{
    cr_assert(eq(int, queued, 0));
    wait_done(d);
    cr_assert(eq(int, d->status, 0), "%s", d->error);
}

static void new_id(char id[STORE_ID_SIZE])
{
    cr_assert(eq(int, store_new_job_id(g_s, id), 0));
}

/* Writes batch NAME with N lines of job JOB (steps k0, k1, ...). */
static void write_batch(const char *name, const char *job, int n)
{
    store_batch_line_t lines[8];
    char cid[8][8], key[8][8], text[8][32];
    cr_assert(n <= 8);
    for (int i = 0; i < n; i++) {
        snprintf(cid[i], sizeof cid[i], "l%d", i);
        snprintf(key[i], sizeof key[i], "k%d", i);
        snprintf(text[i], sizeof text[i], "{\"custom_id\":\"l%d\"}", i);
        lines[i] = (store_batch_line_t){ .custom_id = cid[i], .job_id = job, .key = key[i],
                                         .node = "n", .attempt = 1, .text = text[i],
                                         .len = strlen(text[i]) };
    }
    store_batch_spec_t spec = { .name = name, .provider = "p", .model = "m", .kind = "chat",
                                .deadline_ms = 86400000, .lines = lines, .nlines = (size_t)n };
    done_t d = { 0 };
    ok(store_batch_insert(g_s, &spec, on_done, &d), &d);
}

static json_t *load(void)
{
    char err[256] = "";
    json_t *all = NULL;
    cr_assert(eq(int, store_batch_load(g_s, &all, err, sizeof err), 0), "%s", err);
    return all;
}

Test(store_batch, a_batch_and_its_lines_are_read_back_in_file_order_with_their_jsonl)
{
    char job[STORE_ID_SIZE], err[256] = "";
    new_id(job);
    write_batch("loom-a", job, 3);
    json_t *all = load();
    cr_assert(eq(sz, json_array_size(all), 1));
    json_t *b = json_array_get(all, 0);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(b, "state")), "written"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(b, "kind")), "chat"));
    cr_assert(eq(i64, json_integer_value(json_object_get(b, "deadline_ms")), 86400000));
    cr_assert(truth(json_is_null(json_object_get(b, "remote_id"))));
    json_t *lines = json_object_get(b, "lines");
    cr_assert(eq(sz, json_array_size(lines), 3));
    for (int i = 0; i < 3; i++) {
        json_t *l = json_array_get(lines, (size_t)i);
        char want[8];
        snprintf(want, sizeof want, "k%d", i);
        cr_assert(eq(str, (char *)json_string_value(json_object_get(l, "key")), want));
        cr_assert(eq(str, (char *)json_string_value(json_object_get(l, "job")), job));
        cr_assert(truth(json_is_false(json_object_get(l, "done"))));
    }
    json_decref(all);
    char *text = NULL;
    size_t len = 0;
    cr_assert(eq(int, store_batch_text(g_s, "loom-a", &text, &len, err, sizeof err), 0), "%s",
              err);
    cr_assert(eq(str, text, "{\"custom_id\":\"l0\"}\n{\"custom_id\":\"l1\"}\n"
                            "{\"custom_id\":\"l2\"}\n"));
    cr_assert(eq(sz, len, strlen(text)));
    free(text);
}

Test(store_batch, updates_keep_what_they_do_not_name_and_creating_drops_the_jsonl)
{
    char job[STORE_ID_SIZE], err[256] = "";
    new_id(job);
    write_batch("loom-b", job, 2);
    done_t d = { 0 };
    ok(store_batch_update(g_s, "loom-b", &(store_batch_set_t){ .state = "uploaded",
                                                               .file_id = "file-1" },
                          on_done, &d), &d);
    memset(&d, 0, sizeof d);
    ok(store_batch_update(g_s, "loom-b", &(store_batch_set_t){ .state = "created",
                                                               .remote_id = "batch_9",
                                                               .drop_text = true },
                          on_done, &d), &d);
    json_t *all = load();
    json_t *b = json_array_get(all, 0);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(b, "state")), "created"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(b, "file_id")), "file-1"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(b, "remote_id")), "batch_9"));
    json_decref(all);
    char *text = NULL;
    size_t len = 1;
    cr_assert(eq(int, store_batch_text(g_s, "loom-b", &text, &len, err, sizeof err), 0));
    cr_assert(eq(sz, len, 0), "the lines' JSONL is gone once the batch is created");
    free(text);
    memset(&d, 0, sizeof d);
    cr_assert(eq(int, store_batch_update(g_s, "loom-none", &(store_batch_set_t){ .state =
                                                                                     "done" },
                                         on_done, &d), 0));
    wait_done(&d);
    cr_assert(eq(int, d.status, -ENOENT));
}

Test(store_batch, a_state_that_skips_its_ids_is_refused_by_the_schema)
{
    char job[STORE_ID_SIZE];
    new_id(job);
    write_batch("loom-c", job, 1);
    done_t d = { 0 };
    cr_assert(eq(int, store_batch_update(g_s, "loom-c", &(store_batch_set_t){ .state =
                                                                                  "created" },
                                         on_done, &d), 0));
    wait_done(&d);
    cr_assert(eq(int, d.status, -EINVAL), "created without an upload or a batch id: %s",
              d.error);
}

Test(store_batch, outcomes_of_every_line_are_stored_at_once_and_read_by_line)
{
    char job[STORE_ID_SIZE], err[256] = "", msg[128];
    new_id(job);
    write_batch("loom-d", job, 3);
    const char *res0 = "{\"custom_id\":\"l0\",\"response\":{\"status_code\":200}}";
    store_batch_outcome_t o[] = {
        { .custom_id = "l0", .result = res0, .len = strlen(res0) },
        { .custom_id = "l1", .code = 3, .message = "the batch expired before this line ran" },
        { .custom_id = "gone", .code = 3, .message = "a line the batch no longer has" },
    };
    json_t *r = NULL;
    int code = -1;
    cr_assert(eq(int, store_batch_result(g_s, "loom-d", "l0", &r, &code, msg, sizeof msg, err,
                                         sizeof err), -EAGAIN));
    done_t d = { 0 };
    ok(store_batch_finish(g_s, "loom-d", "expired", o, 3, on_done, &d), &d);
    cr_assert(eq(int, store_batch_result(g_s, "loom-d", "l0", &r, &code, msg, sizeof msg, err,
                                         sizeof err), 0), "%s", err);
    cr_assert(eq(i64, json_integer_value(json_object_get(json_object_get(r, "response"),
                                                         "status_code")), 200));
    json_decref(r);
    cr_assert(eq(int, store_batch_result(g_s, "loom-d", "l1", &r, &code, msg, sizeof msg, err,
                                         sizeof err), 0));
    cr_assert(truth(r == NULL));
    cr_assert(eq(int, code, 3));
    cr_assert(eq(str, msg, "the batch expired before this line ran"));
    cr_assert(eq(int, store_batch_result(g_s, "loom-d", "l2", &r, &code, msg, sizeof msg, err,
                                         sizeof err), -EAGAIN), "a line without an outcome");
    cr_assert(eq(int, store_batch_result(g_s, "loom-d", "l9", &r, &code, msg, sizeof msg, err,
                                         sizeof err), -ENOENT));
    json_t *all = load();
    json_t *b = json_array_get(all, 0);
    cr_assert(eq(str, (char *)json_string_value(json_object_get(b, "state")), "done"));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(b, "remote_state")), "expired"));
    json_t *l1 = json_array_get(json_object_get(b, "lines"), 1);
    cr_assert(truth(json_is_true(json_object_get(l1, "done"))));
    cr_assert(eq(i64, json_integer_value(json_object_get(l1, "code")), 3));
    json_decref(all);
}

Test(store_batch, dropping_a_job_deletes_its_lines_and_the_batches_left_empty_unless_sent)
{
    char j1[STORE_ID_SIZE], j2[STORE_ID_SIZE];
    new_id(j1);
    new_id(j2);
    write_batch("loom-e1", j1, 2); /* written: nothing sent */
    write_batch("loom-e2", j1, 1); /* created: to be cancelled by its owner */
    write_batch("loom-e3", j2, 1);
    done_t d = { 0 };
    ok(store_batch_update(g_s, "loom-e2", &(store_batch_set_t){ .state = "created",
                                                                .remote_id = "b2" },
                          on_done, &d), &d);
    memset(&d, 0, sizeof d);
    ok(store_batch_drop_job(g_s, j1, on_done, &d), &d);
    json_t *all = load();
    cr_assert(eq(sz, json_array_size(all), 2));
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_array_get(all, 0), "name")),
                 "loom-e2"));
    cr_assert(eq(sz, json_array_size(json_object_get(json_array_get(all, 0), "lines")), 0));
    cr_assert(eq(sz, json_array_size(json_object_get(json_array_get(all, 1), "lines")), 1));
    json_decref(all);
    memset(&d, 0, sizeof d);
    ok(store_batch_delete(g_s, "loom-e2", on_done, &d), &d);
    all = load();
    cr_assert(eq(sz, json_array_size(all), 1));
    json_decref(all);
}

Test(store_batch, a_new_line_for_a_step_replaces_the_one_an_earlier_batch_had)
{
    char job[STORE_ID_SIZE];
    new_id(job);
    write_batch("loom-f1", job, 1);
    store_batch_outcome_t o = { .custom_id = "l0", .code = 3, .message = "expired" };
    done_t d = { 0 };
    ok(store_batch_finish(g_s, "loom-f1", "expired", &o, 1, on_done, &d), &d);
    write_batch("loom-f2", job, 1); /* the step's retry, in a later batch */
    json_t *all = load();
    cr_assert(eq(sz, json_array_size(all), 1), "the done batch left empty is gone");
    cr_assert(eq(str, (char *)json_string_value(json_object_get(json_array_get(all, 0), "name")),
                 "loom-f2"));
    json_decref(all);
}

Test(store_batch, lines_of_finished_jobs_are_left_out_and_dropped_together)
{
    char live[STORE_ID_SIZE], ended[STORE_ID_SIZE];
    done_t d = { 0 };
    store_job_spec_t spec = { .workflow = "wf" };
    cr_assert(eq(int, store_insert_job(g_s, &spec, on_done, &d), 0));
    wait_done(&d);
    json_t *jobs = NULL;
    char err[256];
    store_list_query_t q = { 0 };
    cr_assert(eq(int, store_list_jobs(g_s, &q, &jobs, err, sizeof err), 0));
    snprintf(ended, sizeof ended, "%s",
             json_string_value(json_object_get(json_array_get(jobs, 0), "id")));
    json_decref(jobs);
    new_id(live);
    write_batch("loom-g1", ended, 1);
    write_batch("loom-g2", live, 1);
    memset(&d, 0, sizeof d);
    ok(store_cancel_job(g_s, ended, on_done, &d), &d);
    json_t *all = load();
    cr_assert(eq(sz, json_array_size(json_object_get(json_array_get(all, 0), "lines")), 0),
              "the finished job's line is not loaded");
    json_decref(all);
    memset(&d, 0, sizeof d);
    ok(store_batch_drop_job(g_s, NULL, on_done, &d), &d);
    all = load();
    cr_assert(eq(sz, json_array_size(all), 1), "its batch, never sent, went with it");
    json_decref(all);
}

Test(store_batch, bad_arguments_are_refused_before_anything_is_queued)
{
    store_batch_line_t l = { .custom_id = "l0", .job_id = "j", .key = NULL, .text = "{}",
                             .len = 2 };
    store_batch_spec_t spec = { .name = "n", .provider = "p", .model = "m", .kind = "chat",
                                .lines = &l, .nlines = 1 };
    cr_assert(eq(int, store_batch_insert(g_s, &spec, NULL, NULL), -EINVAL));
    cr_assert(eq(int, store_batch_drop_job(g_s, "not-an-id", NULL, NULL), -EINVAL));
    cr_assert(eq(int, store_batch_update(g_s, NULL, &(store_batch_set_t){ 0 }, NULL, NULL),
                 -EINVAL));
}
