/* loomctl.c -- loomctl's entry point: the command table, help, version, and
 * the option parsing every command shares.
 *
 * Exit statuses follow the usual convention (and LOOMCTL_* in loomctl.h): 0
 * success, 1 when the command ran but the answer is "no", 2 for a command
 * line that cannot be understood; the commands that talk to loomd add 3
 * (cannot reach it), 4 (it refused) and 5 (timed out). */
#include "config.h"

#include "client/loomctl.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsl/suggest.h"
#include "common/file.h"
#include "dsl/diag.h"

static int cmd_help(int argc, char **argv);

/* The options of every command that asks loomd one question. */
#define LOOMCTL_HELP_COMMON                                                                    \
    "  --socket PATH      loomd's socket (default: $LOOM_SOCKET, else ./loom.sock)\n"         \
    "  --timeout SECONDS  how long to wait for loomd's answer (default 30)\n"                 \
    "  --json             print loomd's reply line as is, for scripts\n"

static const loomctl_command commands[] = {
    { "validate", loomctl_cmd_validate, "check workflow files for errors",
      "validate [--config FILE] [--quiet] FILE...",
      "Compiles each FILE as the daemon would and reports every error as\n"
      "FILE:LINE:COL: error: MESSAGE. `use` targets are looked up among the\n"
      "files given and the other *.yaml/*.yml files in their directories.\n"
      "\n"
      "  --config FILE  the daemon's config: provider names are checked against it\n"
      "  -q, --quiet    print nothing for valid files\n"
      "\n"
      "Exit status: 0 all files valid, 1 some file invalid, 2 usage error.\n" },
    { "graph", loomctl_cmd_graph, "print a workflow's compiled graph",
      "graph [--format json|dot] [--output FILE] [--config FILE] FILE",
      "Compiles FILE and prints the graph the daemon would run: as JSON (the\n"
      "default) or as Graphviz DOT (`loomctl graph --format dot f.yaml | dot -Tsvg`).\n"
      "\n"
      "  -f, --format FORMAT  json or dot\n"
      "  -o, --output FILE    write to FILE instead of standard output\n"
      "  --config FILE        the daemon's config: provider names are checked against it\n"
      "\n"
      "Exit status: 0 printed, 1 the file has errors (printed on stderr), 2 usage error.\n" },
    { "run", loomctl_cmd_run, "run one job of a workflow in this process",
      "run [--input FILE|-] [--config FILE] [--trace] [--seed N] [--signal NAME=JSON]\n"
      "           [--json] FILE",
      "Runs one job of FILE with no daemon: the plugins, the config's providers\n"
      "(without --config: the offline mock provider named `default`) and the\n"
      "engine all run in this process. Prints the job's output JSON on stdout.\n"
      "\n"
      "  -i, --input FILE   the job input as JSON (- for stdin; default: {})\n"
      "  -c, --config FILE  the daemon's config: providers, plugin directories, workers\n"
      "  -t, --trace        print each node's start, finish, duration and attempts on stderr\n"
      "  --seed N           seed retry jitter, for repeatable runs\n"
      "  --signal NAME=JSON when the job waits (wait_for) for signal NAME, send it\n"
      "                     with the data JSON and run on from its steps (offline,\n"
      "                     a wait's timeout never passes)\n"
      "  --json             print a failed job's error as JSON on stderr\n"
      "\n"
      "Exit status: 0 the job succeeded, 1 it failed (its typed error on stderr)\n"
      "or the workflow, input or config is invalid, 2 usage error.\n" },
    { "submit", loomctl_cmd_submit, "submit a job to loomd",
      "submit [--input FILE|-] [--key KEY] [--priority N] [--wait [SECONDS]] [--socket PATH]\n"
      "              [--timeout SECONDS] [--json] WORKFLOW",
      "Submits one job of the loaded workflow named WORKFLOW and prints its id\n"
      "alone on stdout (job=$(loomctl submit summarize) works). With --wait, waits\n"
      "for the job to end and prints its output JSON instead, or its typed error\n"
      "on stderr when it fails.\n"
      "\n"
      "  -i, --input FILE   the job input as JSON (- for stdin; default: {})\n"
      "  --key KEY          idempotency key: the same key again returns the first job\n"
      "  --priority N       higher starts first when jobs queue (default 0)\n"
      "  --wait [SECONDS]   wait for the job to end (at most SECONDS when given)\n"
      LOOMCTL_HELP_COMMON
      "(--timeout is for the submission itself: with --wait, the wait sets the limit.)\n"
      "\n"
      "Exit status: 0 submitted (with --wait: the job succeeded), 1 the job failed\n"
      "or was cancelled, 2 usage error or unreadable input, 3 loomd unreachable,\n"
      "4 loomd refused the request, 5 --wait timed out (the job goes on).\n" },
    { "get", loomctl_cmd_get, "show a job's state, usage and output",
      "get [--socket PATH] [--timeout SECONDS] [--json] JOB",
      "Prints a summary of job JOB (state, workflow, version, times, usage per\n"
      "provider, error), then its output JSON.\n"
      "\n"
      LOOMCTL_HELP_COMMON
      "\n"
      "Exit status: 0 the job was found (whatever its state), 2 usage error,\n"
      "3 loomd unreachable, 4 refused (not_found: no such job), 5 no answer in time.\n" },
    { "wait", loomctl_cmd_wait, "wait for a job to end and show it",
      "wait [--socket PATH] [--timeout SECONDS] [--json] JOB",
      "Waits until job JOB has ended, then prints it as `loomctl get` does.\n"
      "\n"
      "  --timeout SECONDS  give up after SECONDS (default: wait as long as it takes)\n"
      "  --socket PATH      loomd's socket (default: $LOOM_SOCKET, else ./loom.sock)\n"
      "  --json             print loomd's reply line as is\n"
      "\n"
      "Exit status: 0 the job succeeded, 1 it failed or was cancelled, 2 usage error,\n"
      "3 loomd unreachable or the connection broke, 4 refused, 5 timed out (the job\n"
      "goes on).\n" },
    { "cancel", loomctl_cmd_cancel, "cancel a job",
      "cancel [--socket PATH] [--timeout SECONDS] [--json] JOB",
      "Cancels job JOB: every call and timer of it is dropped. Prints the job id\n"
      "and its final state; a job that had already ended keeps its state.\n"
      "\n"
      LOOMCTL_HELP_COMMON
      "\n"
      "Exit status: 0 the job is cancelled or had ended, 2 usage error,\n"
      "3 loomd unreachable, 4 refused (not_found: no such job), 5 no answer in time.\n" },
    { "retry", loomctl_cmd_retry, "run a failed job again, keeping its checkpoints",
      "retry [--socket PATH] [--timeout SECONDS] [--json] JOB",
      "Queues the failed job JOB again as a new attempt: the same id, input and\n"
      "workflow version, with its checkpoints, so the steps that succeeded are not\n"
      "run again. A job quarantined for crashing loomd (error code crashed) is run\n"
      "again this way once its cause is fixed. Prints the job id, `queued` and the\n"
      "attempt number.\n"
      "\n"
      LOOMCTL_HELP_COMMON
      "\n"
      "Exit status: 0 queued again, 2 usage error, 3 loomd unreachable, 4 refused\n"
      "(not_found: no such job; not_retryable: the job is not failed), 5 no answer\n"
      "in time.\n" },
    { "signal", loomctl_cmd_signal, "send a waiting job the signal it waits for",
      "signal [--data FILE|-] [--socket PATH] [--timeout SECONDS] [--json] JOB NAME",
      "Sends job JOB the signal NAME: every wait_for node of the job waiting for\n"
      "NAME ends with the data as its output (checked against its schema), and the\n"
      "job is queued to go on; the steps it had finished are not run again. Prints\n"
      "the job id, `queued` and the nodes the signal reached.\n"
      "\n"
      "  -d, --data FILE    the signal's data, JSON, from FILE (\"-\": stdin);\n"
      "                     default: null\n"
      LOOMCTL_HELP_COMMON
      "\n"
      "Exit status: 0 the job goes on, 2 usage error or unreadable data, 3 loomd\n"
      "unreachable, 4 refused (not_found: no such job; not_waiting: the job is not\n"
      "waiting, or still running toward its wait; unknown_signal: it waits for other\n"
      "names, listed; invalid_signal: the data does not fit the wait's schema),\n"
      "5 no answer in time.\n" },
    { "list", loomctl_cmd_list, "list jobs, newest first",
      "list [--state STATE] [--workflow NAME] [--limit N] [--after CURSOR] [--oldest]\n"
      "            [--socket PATH] [--timeout SECONDS] [--json]",
      "Prints a table of jobs: id, state, workflow, creation time, duration. When\n"
      "there are more, the option for the next page is shown on stderr.\n"
      "\n"
      "  --state STATE      only jobs in STATE: queued, running, waiting, succeeded,\n"
      "                     failed, cancelled\n"
      "  --workflow NAME    only jobs of workflow NAME\n"
      "  --limit N          at most N jobs (1 to 1000; default 100)\n"
      "  --after CURSOR     the page after CURSOR (the `next` of the previous page)\n"
      "  --oldest           oldest first\n"
      LOOMCTL_HELP_COMMON
      "\n"
      "Exit status: 0 listed, 2 usage error, 3 loomd unreachable, 4 refused,\n"
      "5 no answer in time.\n" },
    { "workflows", loomctl_cmd_workflows, "list the workflows loomd has loaded",
      "workflows [--socket PATH] [--timeout SECONDS] [--json]",
      "Prints each workflow loomd knows: name, load number, version hash and file.\n"
      "Under a file that failed to compile come its FILE:LINE:COL: error: lines\n"
      "(its last good version, if any, is still served).\n"
      "\n"
      LOOMCTL_HELP_COMMON
      "\n"
      "Exit status: 0 listed (even if some file has errors), 2 usage error,\n"
      "3 loomd unreachable, 4 refused, 5 no answer in time.\n" },
    { "stats", loomctl_cmd_stats, "show loomd's job counts and provider load",
      "stats [--socket PATH] [--timeout SECONDS] [--json]",
      "Prints loomd's uptime, jobs by state, and per provider the calls in flight\n"
      "(of its concurrency), queued, requests, errors, 429s, tokens and latency.\n"
      "\n"
      LOOMCTL_HELP_COMMON
      "\n"
      "Exit status: 0 printed, 2 usage error, 3 loomd unreachable, 4 refused,\n"
      "5 no answer in time.\n" },
    { "metrics", loomctl_cmd_metrics, "print loomd's metrics in the Prometheus text format",
      "metrics [--socket PATH] [--timeout SECONDS] [--json]",
      "Prints what GET /metrics serves (docs/operations.md, \"Monitoring\"): provider\n"
      "calls' tokens and durations, jobs, queues, limits, cost, the store and the\n"
      "reactor, as Prometheus text format 0.0.4. Works whether or not the config\n"
      "has `metrics: { listen: ... }`. Needs the admin role when `access:` is set.\n"
      "\n"
      LOOMCTL_HELP_COMMON
      "\n"
      "Exit status: 0 printed, 2 usage error, 3 loomd unreachable, 4 refused,\n"
      "5 no answer in time.\n" },
    { "watch", loomctl_cmd_watch, "follow a job's progress live",
      "watch [--socket PATH] [--timeout SECONDS] [--json] [--tokens] JOB",
      "Follows job JOB until it ends. On a terminal, one line redrawn in place:\n"
      "state, elapsed time, steps done, map items done of total, calls in flight.\n"
      "Otherwise one line per event (time since the job started, event, node,\n"
      "details); with --json the event lines as loomd sends them. A job that has\n"
      "already ended is shown at once.\n"
      "With --tokens, the text of the job's calls is printed as the providers\n"
      "stream it, each call's under a line naming its node (and attempt), with\n"
      "the other events as plain lines between; a retry says that the text of\n"
      "the attempt before it is discarded.\n"
      "\n"
      "  --timeout SECONDS  stop watching after SECONDS (the job goes on)\n"
      "  --socket PATH      loomd's socket (default: $LOOM_SOCKET, else ./loom.sock)\n"
      "  --json             print loomd's event lines as they come\n"
      "  --tokens           print the text of the job's calls as it streams\n"
      "\n"
      "Exit status: 0 the job succeeded, 1 it failed or was cancelled, 2 usage error,\n"
      "3 loomd unreachable or the connection broke, 4 refused (not_found: no such\n"
      "job), 5 timed out (the job goes on).\n" },
    { "plugins", loomctl_cmd_plugins, "list the plugins, their lambdas and providers",
      "plugins [--json|--markdown] [--builtin|--config FILE] [--socket PATH]\n"
      "               [--timeout SECONDS]",
      "Prints every plugin loomd has loaded: its version, plugin ABI, file (or\n"
      "built-in) and whether it runs isolated, then its lambdas with their flags\n"
      "and declared arguments and its providers with their options (a required\n"
      "one is marked *, a default shown as =VALUE). With --builtin or --config no\n"
      "daemon is asked: the plugins are loaded in this process, as `loomctl run`\n"
      "does.\n"
      "\n"
      "  --json             print the document as JSON, on one line (from loomd: its\n"
      "                     reply line as is)\n"
      "  --markdown         print a Markdown reference page of the plugins (what\n"
      "                     docs/lambdas.md is made with, from --builtin)\n"
      "  --builtin          the plugins built into loomd only, without a daemon\n"
      "  -c, --config FILE  the built-ins and the plugins of the plugin directories\n"
      "                     of the daemon's config FILE, without a daemon\n"
      "  --socket PATH      loomd's socket (default: $LOOM_SOCKET, else ./loom.sock)\n"
      "  --timeout SECONDS  how long to wait for loomd's answer (default 30)\n"
      "\n"
      "Exit status: 0 printed, 1 a plugin was refused (--builtin, --config: the\n"
      "others are printed), 2 usage error, 3 loomd unreachable, 4 refused, 5 no\n"
      "answer in time.\n" },
    { "mcp", loomctl_cmd_mcp, "serve loomd's workflows as MCP tools over stdio",
      "mcp [--socket PATH] [--timeout SECONDS]",
      "Speaks the Model Context Protocol on standard input and output, for an MCP\n"
      "client that starts it (an editor, an agent): every workflow loomd serves is\n"
      "a tool of the same name whose input schema is the workflow's `input:`\n"
      "declaration. Calling a tool submits a job with the arguments as its input,\n"
      "waits for it and answers its output JSON (as text, and as structuredContent\n"
      "when it is an object); a failed job is a result with isError and its typed\n"
      "error. With a progressToken, each finished step is a progress notification;\n"
      "a cancelled request cancels its job, and so does the client's leaving\n"
      "(standard input closed) for the jobs still running. Logs go to stderr.\n"
      "\n"
      "  --socket PATH      loomd's socket (default: $LOOM_SOCKET, else ./loom.sock)\n"
      "  --timeout SECONDS  how long to wait for loomd's quick answers: listing,\n"
      "                     submitting (default 30; jobs themselves have no limit)\n"
      "\n"
      "Exit status: 0 the client closed standard input, 1 an internal error,\n"
      "2 usage error.\n" },
    { "help", cmd_help, "show help for a command", "help [COMMAND]", "" },
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

const loomctl_command *loomctl_command_find(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void print_overview(FILE *out)
{
    fputs("usage: loomctl COMMAND [OPTION]... [ARG]...\n"
          "       loomctl --help | --version\n"
          "\n"
          "Commands:\n",
          out);
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fputs("\nRun 'loomctl help COMMAND' for a command's options.\n", out);
}

static void print_command_help(const loomctl_command *cmd, FILE *out)
{
    fprintf(out, "usage: loomctl %s\n\n%s%s", cmd->usage, cmd->summary, *cmd->help ? "\n\n" : "\n");
    fputs(cmd->help, out);
}

int loomctl_usage_error(const loomctl_command *cmd, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "loomctl%s%s: ", cmd ? " " : "", cmd ? cmd->name : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    if (cmd)
        fprintf(stderr, "\nusage: loomctl %s\nTry 'loomctl help %s'.\n", cmd->usage, cmd->name);
    else
        fputs("\nusage: loomctl COMMAND [OPTION]... [ARG]...\nTry 'loomctl --help'.\n", stderr);
    return LOOMCTL_USAGE;
}

static const loomctl_option *find_long(const loomctl_option *opts, const char *name, size_t len)
{
    for (const loomctl_option *o = opts; o && o->name; o++)
        if (strlen(o->name) == len && strncmp(o->name, name, len) == 0)
            return o;
    return NULL;
}

static const loomctl_option *find_short(const loomctl_option *opts, char c)
{
    for (const loomctl_option *o = opts; o && o->name; o++)
        if (o->short_name && o->short_name == c)
            return o;
    return NULL;
}

int loomctl_parse_options(const loomctl_command *cmd, int argc, char **argv,
                          const loomctl_option *opts, int *noperands)
{
    int nop = 0;
    bool only_operands = false;
    for (int i = 1; i < argc; i++) {
        char *a = argv[i];
        if (only_operands || a[0] != '-' || a[1] == 0) {
            argv[1 + nop++] = a; /* never ahead of i: safe in place */
            continue;
        }
        if (strcmp(a, "--") == 0) {
            only_operands = true;
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            print_command_help(cmd, stdout);
            return LOOMCTL_OK;
        }
        const loomctl_option *o;
        const char *inline_value = NULL;
        if (a[1] == '-') {
            const char *eq = strchr(a + 2, '=');
            size_t len = eq ? (size_t)(eq - (a + 2)) : strlen(a + 2);
            o = find_long(opts, a + 2, len);
            inline_value = eq ? eq + 1 : NULL;
        } else {
            /* single short options only: -q, -f json; no bundling (-qf) */
            o = a[2] == 0 ? find_short(opts, a[1]) : NULL;
        }
        if (!o)
            return loomctl_usage_error(cmd, "unknown option '%s'", a);
        if (o->flag) {
            if (inline_value)
                return loomctl_usage_error(cmd, "option '--%s' takes no value", o->name);
            *o->flag = true;
            continue;
        }
        if (!inline_value) {
            if (i + 1 >= argc)
                return loomctl_usage_error(cmd, "option '%s' needs a value", a);
            inline_value = argv[++i];
        }
        *o->value = inline_value;
    }
    *noperands = nop;
    return -1;
}

static int cmd_help(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("help");
    int nop;
    int rc = loomctl_parse_options(self, argc, argv, NULL, &nop);
    if (rc >= 0)
        return rc;
    if (nop == 0) {
        print_overview(stdout);
        return LOOMCTL_OK;
    }
    if (nop > 1)
        return loomctl_usage_error(self, "expected one command name");
    const loomctl_command *cmd = loomctl_command_find(argv[1]);
    if (!cmd)
        return loomctl_usage_error(self, "unknown command '%s'", argv[1]);
    print_command_help(cmd, stdout);
    return LOOMCTL_OK;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return loomctl_usage_error(NULL, "no command given");
    const char *first = argv[1];
    if (strcmp(first, "-h") == 0 || strcmp(first, "--help") == 0) {
        print_overview(stdout);
        return LOOMCTL_OK;
    }
    if (strcmp(first, "--version") == 0 || strcmp(first, "-V") == 0) {
        printf("loomctl (%s) %s\n", PACKAGE_NAME, PACKAGE_VERSION);
        return LOOMCTL_OK;
    }
    if (first[0] == '-')
        return loomctl_usage_error(NULL, "unknown option '%s'", first);
    const loomctl_command *cmd = loomctl_command_find(first);
    if (!cmd) {
        const char *names[NCOMMANDS];
        for (size_t i = 0; i < NCOMMANDS; i++)
            names[i] = commands[i].name;
        const char *hint = dsl_suggest(first, strlen(first), names, NCOMMANDS);
        if (hint)
            return loomctl_usage_error(NULL, "unknown command '%s' (did you mean '%s'?)", first,
                                       hint);
        return loomctl_usage_error(NULL, "unknown command '%s'", first);
    }
    int rc = cmd->fn(argc - 1, argv + 1);
    errno = 0;
    /* A failed write to stdout (a closed pipe, a full disk) must not look
     * like success. */
    bool write_failed = fflush(stdout) != 0 || ferror(stdout);
    if (write_failed && rc == LOOMCTL_OK) { /* a failed command has said why already */
        fprintf(stderr, "loomctl: error writing output: %s\n", strerror(errno ? errno : EIO));
        return LOOMCTL_FAILED;
    }
    return rc;
}

void loomctl_print_diags(const dsl_diags *d)
{
    if (!d->n && !d->oom)
        return;
    char *text = dsl_diags_text(d, NULL);
    fputs(text ? text : "loomctl: out of memory while reporting errors\n", stderr);
    free(text);
}

json_t *loomctl_read_input(const char *cmd, const char *path)
{
    size_t len;
    bool in = strcmp(path, "-") == 0;
    char *buf = file_read_all(in ? "/dev/stdin" : path, LOOMCTL_MAX_INPUT, &len);
    if (!buf) {
        fprintf(stderr, "loomctl %s: cannot read input %s: %s\n", cmd, path,
                errno == EFBIG ? "larger than 256 MiB" : strerror(errno));
        return NULL;
    }
    json_error_t err;
    json_t *v = json_loadb(buf, len, JSON_DECODE_ANY, &err);
    free(buf);
    if (!v)
        fprintf(stderr, "%s:%d:%d: error: invalid JSON input: %s\n", in ? "<stdin>" : path,
                err.line, err.column, err.text);
    return v;
}
