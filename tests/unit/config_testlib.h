/* config_testlib.h -- parsing a daemon config from a string in tests, and
 * its diagnostics as text. */
#ifndef LOOM_TESTS_CONFIG_TESTLIB_H
#define LOOM_TESTS_CONFIG_TESTLIB_H

#include <stdbool.h>

#include "daemon/config_file.h"

/* A parse: the config (NULL when refused) and its diagnostics. */
typedef struct ct_parsed {
    config *c;
    dsl_diags d;
} ct_parsed;

/* TEXT (borrowed) parsed as if read from "c.yaml". Free with ct_done. */
ct_parsed ct_parse(const char *text);

/* Every diagnostic of P, one a line, each FILE:LINE:COL: ..., or without
 * the "c.yaml:" in front when STRIP_FILE. A static buffer, rewritten by
 * the next call (tests run one at a time in a process). */
const char *ct_dump(const ct_parsed *p, bool strip_file);

void ct_done(ct_parsed *p);

/* Asserts (Criterion) that TEXT is refused with exactly one error, whose
 * line holds WANT. */
void ct_refused(const char *text, const char *want);

#endif
