/* loomd_harness.h -- a real loomd in a temporary directory, for integration
 * tests: its config, its workflows directory, a fake provider server, and a
 * line-JSON client for its socket.
 *
 * Everything is bounded: starting waits at most 10 s for the socket, every
 * read has a deadline. Functions fail the test (cr_assert) on setup errors;
 * the client returns NULL on a timeout so tests can assert on it. */
#ifndef LOOM_TESTS_LOOMD_HARNESS_H
#define LOOM_TESTS_LOOMD_HARNESS_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tests/unit/fake_server.h"

typedef struct lh_daemon {
    char dir[256];             /* the temporary directory */
    char sock[320], cfg[320], wf[320], state[320];
    pid_t pid;
    fake_server fake;          /* started when the config asks for it */
} lh_daemon;

/* Makes DIR with workflows/ and a config whose extra provider lines are
 * PROVIDERS (YAML under `providers:`, may be NULL; "@FAKE@" is replaced by
 * the fake server's base URL, which is then started with FAKE_ARGS, where an
 * argument starting with "@DIR@" has it replaced by DIR). */
void lh_setup(lh_daemon *d, const char *providers, const char *const *fake_args);
/* Writes workflows/NAME.yaml with TEXT (atomically: temp file + rename). */
void lh_workflow(lh_daemon *d, const char *name, const char *text);
/* Starts loomd --foreground on the config (no core dumps, stderr to
 * DIR/loomd.log) and waits for its socket; fails the test if it dies first. */
void lh_start(lh_daemon *d);
/* Starts it without waiting (it may die first: a supervisor loop). */
void lh_spawn(lh_daemon *d);
/* Waits up to BOUND_MS for the spawned loomd's socket: 0 once it listens,
 * or its exit status (128+signal) when it died first (d->pid is then 0). */
int lh_wait_listening(lh_daemon *d, long bound_ms);
/* Sends SIG and waits for the exit; returns the exit status (or 128+signal). */
int lh_stop(lh_daemon *d, int sig);
/* Kills everything and removes the directory. */
void lh_teardown(lh_daemon *d);

/* A client connection; -1 on failure. */
int lh_connect(lh_daemon *d);
/* Sends one line (adds the newline). */
void lh_send(int fd, const char *line);
/* The next line as JSON (new reference), or NULL after TIMEOUT_MS or EOF. */
json_t *lh_recv(int fd, int timeout_ms);
/* Sends REQ (JSON text) on a new connection and returns the reply. */
json_t *lh_call(lh_daemon *d, const char *req, int timeout_ms);

/* ---- waiting for events, each with a deadline (tests never sleep) */

/* Lines of loomd's log (every start appends) holding NEEDLE and, unless
 * NULL, AND_TOO. loomd writes each line with one write(2). */
int lh_log_count(const lh_daemon *d, const char *needle, const char *and_too);
/* Waits until lh_log_count reaches N; fails the test after TIMEOUT_MS. */
void lh_wait_log(const lh_daemon *d, const char *needle, const char *and_too, int n,
                 int timeout_ms);

/* A connection subscribed to the events of every job (the `events` op);
 * events are not stored, so subscribe before causing them. */
int lh_subscribe(lh_daemon *d);
/* The next event named EVENT (of JOB unless NULL) on FD, as a new
 * reference, skipping others; NULL after TIMEOUT_MS or at EOF. */
json_t *lh_wait_event(int fd, const char *event, const char *job, int timeout_ms);

/* The steps the job store has committed for JOB, read from its database
 * (read-only, beside a running loomd or after it died); -1 when the
 * database cannot be read. */
long lh_store_steps(const lh_daemon *d, const char *job);

/* Makes DIR/plugins holding a link to each built test plugin named in NAMES
 * (tests/plugins/NAME.la's shared object) and writes that directory's path
 * into OUT (OUTLEN bytes), for the config's `plugins:`. */
void lh_plugin_dir(lh_daemon *d, const char *const *names, char *out, size_t outlen);

/* Replaces the first OLD in the config with NEW (the config must hold it). */
void lh_config_replace(lh_daemon *d, const char *old, const char *new_text);
/* Runs loomd --check on the config; returns its exit status (or 128+signal)
 * and puts what it printed (stdout and stderr) in OUT (OUTLEN bytes). */
int lh_check(lh_daemon *d, char *out, size_t outlen);

/* Runs the built loomctl ($LOOM_BUILDDIR, else .) with ARGS (shell words);
 * its stdout in *OUT (a new string), stderr to the test's. Returns its exit
 * status, or 128 + the signal that ended it. */
int lh_loomctl(const char *args, char **out);
/* The time since an arbitrary start, in milliseconds and microseconds
 * (CLOCK_MONOTONIC, the clock the fake server logs with). */
long lh_now_ms(void);
int64_t lh_now_us(void);
/* The next number of splitmix64 state *S: the same plan for a seed on
 * every libc (the kill tests' LOOM_*_SEED). */
uint64_t lh_rng_next(uint64_t *s);

/* ---- pipelining clients (the crash and chaos tests) */

/* One connection's descriptor (-1: not connected), its unparsed input and
 * the replies it still waits for. */
typedef struct lh_pipe {
    int fd;
    char *buf;
    size_t len, cap;
    int pending;
} lh_pipe;

/* Reads what P's descriptor has without blocking and hands every complete
 * line, parsed, to ON_LINE(UD, LINE) (LINE borrowed); a line that is not
 * JSON fails the test. Returns false when the connection ended. */
bool lh_pipe_read(lh_pipe *p, void (*on_line)(void *ud, json_t *line), void *ud);
/* Sends all N bytes of DATA on FD (blocking); false when the connection
 * failed. */
bool lh_send_all(int fd, const char *data, size_t n);

/* Puts D (set up, not started) on the PostgreSQL database DB_URI as node
 * NODE: its `state:` becomes DB_URI, with a `cluster:` section naming NODE,
 * its local state in D's directory and CLUSTER_FIELDS ("lease: 2s, poll:
 * 250ms", or ""), then the lines EXTRA (or ""). */
void lh_use_pg(lh_daemon *d, const char *db_uri, const char *node, const char *cluster_fields,
               const char *extra);

/* What `list` showed of a workflow's jobs (lh_list_count). */
typedef struct lh_listed {
    int listed;   /* ids, with repeats */
    int distinct; /* different ids */
    int found;    /* ids of WANT among them */
    int retries;  /* pages asked again after store_error */
} lh_listed;

/* Pages through `list` of WORKFLOW on D, oldest first, PAGE jobs at a time,
 * and counts what it shows against the N job ids of WANT. A page answered
 * store_error (a read cut by a PostgreSQL restart) is asked again after a
 * second, up to 4 times; any other failure, or more than 2 N jobs, fails
 * the test. */
void lh_list_count(lh_daemon *d, const char *workflow, int page, const char *const *want, int n,
                   lh_listed *out);

#endif
