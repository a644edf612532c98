/* loomctl_signal.c -- `loomctl signal`: sends a waiting job the signal its
 * wait_for node waits for, with data from a file, stdin or nothing. */
#include <stdio.h>
#include <string.h>

#include "client/loomctl.h"

int loomctl_cmd_signal(int argc, char **argv)
{
    const loomctl_command *self = loomctl_command_find("signal");
    const char *data_path = NULL, *socket = NULL, *timeout = NULL;
    bool json = false;
    const loomctl_option opts[] = {
        { "data", 'd', &data_path, NULL },
        { "socket", 0, &socket, NULL },
        { "timeout", 0, &timeout, NULL },
        { "json", 0, NULL, &json },
        { NULL, 0, NULL, NULL },
    };
    int nop;
    int rc = loomctl_parse_options(self, argc, argv, opts, &nop);
    if (rc >= 0)
        return rc;
    if (nop != 2)
        return loomctl_usage_error(self, "expected a job id and a signal name");
    int64_t ms = LOOMCTL_REPLY_TIMEOUT_MS;
    if (timeout && loomctl_parse_seconds(timeout, &ms) < 0)
        return loomctl_usage_error(self, "--timeout takes a number of seconds");
    /* no --data: the signal carries null (an approval needs no data) */
    json_t *data = data_path ? loomctl_read_input("signal", data_path) : json_null();
    if (!data)
        return LOOMCTL_USAGE;
    json_t *req = json_pack("{s:s, s:s, s:s, s:o}", "op", "signal", "job", argv[1], "signal",
                            argv[2], "data", data);
    if (!req) {
        fprintf(stderr, "loomctl: out of memory\n");
        return LOOMCTL_UNREACHABLE;
    }
    json_t *reply = NULL;
    rc = LOOMCTL_UNREACHABLE;
    loomctl_conn *c = loomctl_connect(loomctl_socket_path(socket), ms);
    if (c)
        rc = loomctl_request(c, req, ms, NULL, NULL, &reply);
    loomctl_close(c);
    json_decref(req);
    if (json && reply)
        loomctl_print_json(reply, false);
    else if (rc == LOOMCTL_OK && reply) {
        printf("%s %s", argv[1], json_string_value(json_object_get(reply, "state")));
        size_t i;
        json_t *n;
        const char *sep = " (";
        json_array_foreach(json_object_get(reply, "nodes"), i, n) {
            printf("%s%s", sep, json_string_value(n) ? json_string_value(n) : "?");
            sep = ", ";
        }
        printf("%s\n", *sep == ',' ? ")" : "");
    }
    json_decref(reply);
    return rc;
}
