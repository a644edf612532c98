/* ops_check.h -- the one place where the socket protocol's request fields
 * are checked: which fields each op takes, their types and their ranges.
 *
 * Every op names its fields in a table; a request is checked against it
 * before the op runs, so a typo never half-runs anything:
 * - a field the op does not take is refused with `unknown_field` (and the
 *   nearest field the op does take, when one is a plausible typo);
 * - a field of the wrong type, or a number out of its range, is refused with
 *   `invalid_request`, the message naming the field and its range.
 * "op" and "id" are taken by every op.
 *
 * Owns: nothing (tables are constant). May call: the server (to answer),
 * dsl/suggest.h, jansson. Reactor thread only, like every op. */
#ifndef LOOM_DAEMON_OPS_CHECK_H
#define LOOM_DAEMON_OPS_CHECK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "daemon/server/server.h"

typedef enum {
    OPS_STRING,        /* a string */
    OPS_INTEGER,       /* an integer in [min, max] */
    OPS_SECONDS,       /* a finite number of seconds in [min, max] */
    OPS_BOOL_SECONDS,  /* true, false, or seconds as OPS_SECONDS */
    OPS_ANY,           /* any JSON */
} ops_type;

typedef struct ops_field {
    const char *name;
    ops_type type;
    bool required;
    double min, max;   /* OPS_INTEGER, OPS_SECONDS, OPS_BOOL_SECONDS */
} ops_field;

/* The longest wait a request may ask for: a year, in seconds. */
#define OPS_MAX_WAIT_S (86400.0 * 365)
/* `list`'s page size. */
#define OPS_LIST_LIMIT_MIN 1
#define OPS_LIST_LIMIT_MAX 1000
/* `submit`'s priority. */
#define OPS_PRIORITY_MIN (-1000000)
#define OPS_PRIORITY_MAX 1000000

/* The fields of the op called OP (borrowed, terminated by a NULL name), or
 * NULL for an op that has no table. */
const ops_field *ops_fields(const char *op);

/* Checks REQ (borrowed) against FIELDS (borrowed). True when it passes;
 * otherwise the error is answered on CONN (with ID, borrowed) and false is
 * returned. */
bool ops_check(server_conn_t *conn, json_t *req, json_t *id, const ops_field *fields);

/* The size of V (borrowed) as one compact JSON line, counted without
 * building it; once past CAP the count stops and CAP + 1 is returned. */
size_t ops_json_size(const json_t *v, size_t cap);

#endif
