/* filters_internal.h -- what the filter families (filters_value.c,
 * filters_text.c, filters_list.c) share with the table in filters.c. Inside
 * dsl/ only. Every filter takes a borrowed input and borrowed arguments and
 * returns a new reference, or NULL with ERR set. */
#ifndef LOOM_DSL_FILTERS_INTERNAL_H
#define LOOM_DSL_FILTERS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

#include "common/containers.h"
#include "dsl/template.h"

/* Sets ERR's message (when ERR is not NULL); returns NULL so a filter can
 * `return dsl_flt_err(...)`. */
json_t *dsl_flt_err(dsl_eval_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* "filter 'F' expects WANT, got TYPE-OF-IN". NULL. */
json_t *dsl_flt_type_err(dsl_eval_error *err, const char *f, const char *want, const json_t *in);
/* V, or an out-of-memory error when V is NULL (a jansson result). */
json_t *dsl_flt_ok(json_t *v, dsl_eval_error *err);

/* B (capped at DSL_MAX_TEXT_BYTES) as a new string value for filter F; frees
 * B's bytes. FAILED: an append already failed. */
json_t *dsl_flt_text_finish(sbuf *b, int failed, const char *f, dsl_eval_error *err);
/* IN as JSON text (a new string value), through the capped buffer. */
json_t *dsl_flt_dump_text(const char *f, const json_t *in, size_t flags, dsl_eval_error *err);

/* Code points of S (N bytes of UTF-8), and the byte offset of code point K
 * (N when S has fewer). */
size_t dsl_flt_cp_count(const char *s, size_t n);
size_t dsl_flt_cp_offset(const char *s, size_t n, size_t k);
int dsl_flt_is_blank(char c);
/* Narrows *S, *N to the text without leading and trailing blanks. */
void dsl_flt_trim_span(const char **s, size_t *n);
/* A's integer value in *OUT: 0, or -1 when A is not an integer. */
int dsl_flt_int_arg(const json_t *a, long long *out);

json_t *dsl_flt_abs(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_bool(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_contains(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_default(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_ends_with(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_eq(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_first(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_flatten(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_get(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_int(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_join(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_json(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_keys(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_last(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_length(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_lines(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_lower(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_max(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_min(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_not(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_number(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_parse_json(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_pretty(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_replace(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_reverse(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_round(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_slice(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_sort(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_split(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_starts_with(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_string(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_sum(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_trim(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_truncate(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_type(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_unique(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_upper(json_t *in, const json_t *args, dsl_eval_error *err);
json_t *dsl_flt_values(json_t *in, const json_t *args, dsl_eval_error *err);

#endif
