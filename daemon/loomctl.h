/* loomctl.h -- what loomctl's command files share: the command table's entry
 * type, option parsing and exit codes.
 *
 * A command is a function taking its own argv (argv[0] is the command's
 * name) and returning the process exit status. Adding a command is adding a
 * file with its function and one line in the table in loomctl.c. */
#ifndef LOOM_DAEMON_LOOMCTL_H
#define LOOM_DAEMON_LOOMCTL_H

#include <stdbool.h>

#include "daemon/config_file.h"
#include "dsl/graph.h"

/* Exit statuses, the same for every command. */
enum {
    LOOMCTL_OK = 0,
    LOOMCTL_FAILED = 1, /* the command ran and the answer is "no" (invalid file, failed job) */
    LOOMCTL_USAGE = 2   /* the command line was wrong */
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

/* The commands of loomctl_dsl.c and loomctl_run.c. */
int loomctl_cmd_validate(int argc, char **argv);
int loomctl_cmd_graph(int argc, char **argv);
int loomctl_cmd_run(int argc, char **argv);

/* A workflow compiled for running, with the workflows `use` can reach. */
typedef struct loomctl_compiled {
    dsl_graph *main;     /* borrowed from ALL (all[0]) */
    dsl_graph **all;     /* references: the file, then its valid siblings */
    size_t n;
} loomctl_compiled;

/* Compiles FILE with its sibling files, checking provider names against CFG
 * and lambda names against LAMBDAS (NULL-terminated, borrowed; NULL: not
 * checked). Errors are printed. 0, or -1 when FILE is not valid. */
int loomctl_compile(const char *file, const config *cfg, const char *const *lambdas,
                    loomctl_compiled *out);
void loomctl_compiled_free(loomctl_compiled *c);

#endif
