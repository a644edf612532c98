/* fuzz_compile.c -- libFuzzer target: the whole workflow compiler on any bytes.
 *
 * Compiles the input, then runs everything a valid graph feeds (the `use`
 * check, the JSON and DOT emitters) and formats every diagnostic. Besides
 * the sanitizers' findings, it traps when dsl_compile breaks its contract:
 * a graph must come with no errors, and no graph with at least one. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "dsl/dsl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    dsl_diags diags;
    if (dsl_diags_init(&diags, "fuzz.yaml") != 0) {
        dsl_diags_free(&diags);
        return 0;
    }
    dsl_graph *g = dsl_compile("fuzz.yaml", (const char *)data, size, NULL, &diags);
    if (g && diags.nerrors != 0)
        __builtin_trap();
    if (!g && diags.nerrors == 0 && !diags.oom)
        __builtin_trap();
    if (g) {
        dsl_diags *dp = &diags;
        dsl_check_uses(&g, NULL, 1, NULL, &dp);
        json_t *j = dsl_emit_json(g);
        json_decref(j);
        free(dsl_emit_dot(g, NULL));
        dsl_graph_unref(g);
    }
    for (size_t i = 0; i < diags.n; i++)
        free(dsl_diag_format(&diags, i));
    free(dsl_diags_text(&diags, NULL));
    dsl_diags_free(&diags);
    return 0;
}
