/* loomctl.h -- what loomctl's command files share: the command table's entry
 * type, option parsing, exit codes and the client side of loomd's socket
 * protocol (docs/protocol.md).
 *
 * A command is a function taking its own argv (argv[0] is the command's
 * name) and returning the process exit status. Adding a command is adding a
 * file with its function and one line in the table in loomctl.c. */
#ifndef LOOM_DAEMON_LOOMCTL_H
#define LOOM_DAEMON_LOOMCTL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "daemon/config_file.h"
#include "daemon/plugins/plugins.h"
#include "dsl/graph.h"

/* Exit statuses, the same for every command. */
enum {
    LOOMCTL_OK = 0,
    LOOMCTL_FAILED = 1, /* the command ran and the answer is "no" (invalid file, failed job) */
    LOOMCTL_USAGE = 2,  /* the command line was wrong */
    LOOMCTL_UNREACHABLE = 3, /* loomd cannot be reached, or the connection broke */
    LOOMCTL_REFUSED = 4, /* loomd answered with an error reply */
    LOOMCTL_TIMEOUT = 5  /* a time limit passed before the answer came */
};

typedef int (*loomctl_fn)(int argc, char **argv);

typedef struct loomctl_command {
    const char *name;
    loomctl_fn fn;
    const char *summary; /* one line for `loomctl --help` */
    const char *usage;   /* the synopsis after "loomctl " */
    const char *help;    /* the option list and details for `loomctl help NAME` */
} loomctl_command;

/* The command called NAME, or NULL. */
const loomctl_command *loomctl_command_find(const char *name);

/* One option a command accepts: --NAME (and -SHORT when SHORT is not 0).
 * Options that take a value store it (borrowed from argv) in *VALUE and accept
 * "--name VALUE" and "--name=VALUE"; flags set *FLAG. Each option is stored
 * into the caller's variables, so parsing keeps no state of its own. */
typedef struct loomctl_option {
    const char *name;
    char short_name;
    const char **value;
    bool *flag;
} loomctl_option;

/* Parses ARGV[1..ARGC-1] for command CMD against OPTS (ended by a NULL name).
 * Options and operands may be mixed; "--" ends options; "-" alone is an
 * operand. Operands are moved, in order, to the front of ARGV from index 1
 * and their count stored in *NOPERANDS. "-h"/"--help" print CMD's help to
 * stdout.
 * Returns -1 to go on, or the exit status the command should return now
 * (LOOMCTL_OK after help, LOOMCTL_USAGE after a usage error, reported). */
int loomctl_parse_options(const loomctl_command *cmd, int argc, char **argv,
                          const loomctl_option *opts, int *noperands);

/* Prints "loomctl CMD: MESSAGE", the command's usage line and a pointer to
 * `loomctl help CMD` to stderr. Returns LOOMCTL_USAGE. */
int loomctl_usage_error(const loomctl_command *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The commands of loomctl_dsl.c, loomctl_run.c, loomctl_jobs.c and
 * loomctl_watch.c. */
int loomctl_cmd_validate(int argc, char **argv);
int loomctl_cmd_graph(int argc, char **argv);
int loomctl_cmd_run(int argc, char **argv);
int loomctl_cmd_submit(int argc, char **argv);
int loomctl_cmd_get(int argc, char **argv);
int loomctl_cmd_wait(int argc, char **argv);
int loomctl_cmd_cancel(int argc, char **argv);
int loomctl_cmd_retry(int argc, char **argv);
int loomctl_cmd_signal(int argc, char **argv);
int loomctl_cmd_list(int argc, char **argv);
int loomctl_cmd_workflows(int argc, char **argv);
int loomctl_cmd_stats(int argc, char **argv);
int loomctl_cmd_metrics(int argc, char **argv);
int loomctl_cmd_watch(int argc, char **argv);
int loomctl_cmd_plugins(int argc, char **argv);
/* (loomctl_mcp.c) */
int loomctl_cmd_mcp(int argc, char **argv);

/* (loomctl_markdown.c) DOC, the document of the `plugins` op (borrowed), as
 * a Markdown reference page headed TITLE: a new string, or NULL when out of
 * memory. The same document always gives the same bytes. */
char *loomctl_plugins_markdown(const json_t *doc, const char *title);

/* A workflow compiled for running, with the workflows `use` can reach. */
typedef struct loomctl_compiled {
    dsl_graph *main;     /* borrowed from ALL (all[0]) */
    dsl_graph **all;     /* references: the file, then its valid siblings */
    size_t n;
} loomctl_compiled;

/* Compiles FILE with its sibling files, checking provider names against CFG
 * and lambda names and arguments against the lambdas of PLUGINS (borrowed).
 * Errors are printed. 0, or -1 when FILE is not valid. */
int loomctl_compile(const char *file, const config *cfg, const plugins_t *plugins,
                    loomctl_compiled *out);
void loomctl_compiled_free(loomctl_compiled *c);

/* ---- talking to loomd (loomctl_client.c)
 *
 * One connection, one request at a time (plus the lines a subscription
 * streams). Every failure is printed on stderr as "loomctl: ..." where it
 * happens, and its exit status returned, so a command only passes the status
 * on. Times are in milliseconds; a negative timeout means no limit. */

#define LOOMCTL_DEFAULT_SOCKET "./loom.sock"
/* How long a request that loomd answers at once may take (--timeout overrides). */
#define LOOMCTL_REPLY_TIMEOUT_MS 30000
/* The longest line loomctl reads; loomd cuts a client off well before. */
#define LOOMCTL_MAX_LINE ((size_t)256 << 20)

typedef struct loomctl_conn loomctl_conn;

/* The socket to use: OPTION when given, else $LOOM_SOCKET when set and not
 * empty, else LOOMCTL_DEFAULT_SOCKET. Borrowed. */
const char *loomctl_socket_path(const char *option);

/* Connects to the socket at PATH (copied). NULL when it cannot, reported
 * (the exit status is then LOOMCTL_UNREACHABLE). */
loomctl_conn *loomctl_connect(const char *path, int64_t timeout_ms);

/* Closes C and frees it. NULL is a no-op. */
void loomctl_close(loomctl_conn *c);

/* A line that is not the reply being waited for (a subscription's event):
 * MSG is borrowed for the call. */
typedef void (*loomctl_message_fn)(json_t *msg, void *ud);

/* Sends REQUEST (an object; borrowed, and its "id" is set here) and reads
 * lines until the reply with that id, giving any other line to OTHER (may be
 * NULL: such lines are dropped). *REPLY receives the reply (new reference)
 * when it came, ok or not. Returns LOOMCTL_OK for {"ok":true}, LOOMCTL_REFUSED
 * for an error reply (printed as "loomctl: CODE: MESSAGE"), or
 * LOOMCTL_UNREACHABLE / LOOMCTL_TIMEOUT (printed; *REPLY is then NULL). */
int loomctl_request(loomctl_conn *c, json_t *request, int64_t timeout_ms, loomctl_message_fn other,
                    void *ud, json_t **reply);

/* The first half of loomctl_request, for a caller that reads the reply
 * among other lines itself: sends REQUEST (its "id" set here). Returns the
 * id (> 0), or minus the LOOMCTL_* status of the failure (printed; when loomd
 * had refused before hanging up, its reply is in *REPLY, a new reference). */
json_int_t loomctl_send(loomctl_conn *c, json_t *request, int64_t timeout_ms, json_t **reply);

/* Whether MSG is the reply to the request with id ID. */
bool loomctl_is_reply(const json_t *msg, json_int_t id);

/* Prints an error reply as "loomctl: CODE: MESSAGE" on stderr. */
void loomctl_print_error_reply(const json_t *reply);

/* After loomd refused REQ with unknown_workflow (REPLY), prints on stderr the
 * served workflow nearest to the name REQ gave, when one is a plausible
 * typo, asking loomd on C for the list. Says nothing when loomd's message
 * already has a suggestion, or when anything else goes wrong: it is a hint. */
void loomctl_hint_workflow(loomctl_conn *c, const json_t *req, const json_t *reply);

/* Reads the next line as JSON into *MSG (new reference). Returns LOOMCTL_OK,
 * LOOMCTL_TIMEOUT when nothing came within TIMEOUT_MS, or LOOMCTL_UNREACHABLE.
 * Unlike the other functions it prints nothing (the caller may just be
 * ticking, or have a progress line to end first): loomctl_conn_error says
 * what went wrong. */
int loomctl_read(loomctl_conn *c, int64_t timeout_ms, json_t **msg);

/* Why C's last loomctl_read failed, for people (owned by C). */
const char *loomctl_conn_error(const loomctl_conn *c);

/* C's socket, for a caller that polls it beside other descriptors (loomctl
 * mcp): once it is readable, loomctl_read with a timeout of 0 takes the
 * lines that came, until it answers LOOMCTL_TIMEOUT. Borrowed from C. */
int loomctl_conn_fd(const loomctl_conn *c);

/* Milliseconds on the monotonic clock, and since the epoch (for job times). */
int64_t loomctl_now_ms(void);
int64_t loomctl_wall_ms(void);

/* Parses TEXT as a number of seconds (non-negative, fractions allowed) into
 * *MS. 0, or -1 when it is not one. */
int loomctl_parse_seconds(const char *text, int64_t *ms);

/* Prints D's diagnostics on stderr (the compiler only formats them). */
void loomctl_print_diags(const dsl_diags *d);

/* Prints V on stdout: compact on one line (--json), or indented. */
void loomctl_print_json(const json_t *v, bool pretty);

/* (loomctl_table.c) A table for people: fill it with rows, then print it
 * (and free it) at once, with columns as wide as their widest cell. Set
 * ncols (at most LOOMCTL_TABLE_MAX_COLS) and align, zero the rest. */
#define LOOMCTL_TABLE_MAX_COLS 12

typedef struct loomctl_table {
    size_t ncols, nrows, cap, notes_cap;
    const char *align;   /* 'l' or 'r' per column */
    char **cells;        /* nrows * ncols, owned */
    char **notes;        /* per row: lines printed under it, or NULL; owned */
    bool oom;
} loomctl_table;

/* Adds a row of T->ncols cells (const char *, copied; NULL prints as ""). */
void loomctl_table_row(loomctl_table *t, ...);
/* Lines to print under the last row (copied). */
void loomctl_table_note(loomctl_table *t, const char *text);
/* Prints T on stdout ("out of memory" on stderr instead if a row or note
 * could not be kept) and frees what it holds. */
void loomctl_table_print_free(loomctl_table *t);

/* (loomctl_jobs.c) Prints a job's typed error (docs/protocol.md) on stderr as
 * "loomctl: job ID failed: CODE at NODE after N attempts: MESSAGE". */
void loomctl_print_job_error(const char *job, const json_t *error);

/* Writes a typed job error ERROR (borrowed) to F as "CODE at NODE after N
 * attempts: MESSAGE", the parts it lacks left out. */
void loomctl_describe_job_error(FILE *f, const json_t *error);

/* The job input of command CMD from PATH ("-": stdin), at most
 * LOOMCTL_MAX_INPUT bytes of JSON. A new reference, or NULL after printing
 * why (FILE:LINE:COL for bad JSON). */
#define LOOMCTL_MAX_INPUT ((size_t)256 << 20)
json_t *loomctl_read_input(const char *cmd, const char *path);

#endif
