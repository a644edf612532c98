/* yaml_internal.h -- helpers shared by dsl/yaml_tree.c and dsl/yaml_scalar.c,
 * for the loader's messages about the source text. Not part of the API. */
#ifndef LOOM_DSL_YAML_INTERNAL_H
#define LOOM_DSL_YAML_INTERNAL_H

#include <stddef.h>

/* The 1-based line and column (in characters, as libyaml counts them) of the
 * byte at OFF in S (LEN bytes); OFF past the end means the end. */
void dsl_ysrc_linecol(const unsigned char *s, size_t len, size_t off, int *line, int *col);

/* The offset of the first byte of the first invalid UTF-8 sequence in S (LEN
 * bytes): bad lead or continuation bytes, truncation, overlong forms,
 * surrogates, values past U+10FFFF. LEN when all of S is valid UTF-8. */
size_t dsl_yutf8_invalid(const unsigned char *s, size_t len);

#endif
