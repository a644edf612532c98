/* yaml_internal.h -- helpers shared by dsl/yaml_tree.c, dsl/yaml_doc.c and
 * dsl/yaml_scalar.c: a document's arena, and the loader's messages about the
 * source text. Not part of the API. */
#ifndef LOOM_DSL_YAML_INTERNAL_H
#define LOOM_DSL_YAML_INTERNAL_H

#include <stddef.h>

#include "dsl/yaml_tree.h"

/* The arena of one document (its `arena` field): memory handed out in
 * chunks and freed all at once by dsl_ydoc_free. */
typedef struct dsl_yarena dsl_yarena;

/* A new empty document over SRC (LEN bytes, borrowed), with an empty arena.
 * Free with dsl_ydoc_free. NULL when out of memory. */
dsl_ydoc *dsl_ydoc_new(const char *src, size_t len);

/* N bytes aligned to ALIGN (a power of two), owned by A; NULL when out of
 * memory. */
void *dsl_yarena_alloc(dsl_yarena *a, size_t n, size_t align);

/* The 1-based line and column (in characters, as libyaml counts them) of the
 * byte at OFF in S (LEN bytes); OFF past the end means the end. */
void dsl_ysrc_linecol(const unsigned char *s, size_t len, size_t off, int *line, int *col);

/* The offset of the first byte of the first invalid UTF-8 sequence in S (LEN
 * bytes): bad lead or continuation bytes, truncation, overlong forms,
 * surrogates, values past U+10FFFF. LEN when all of S is valid UTF-8. */
size_t dsl_yutf8_invalid(const unsigned char *s, size_t len);

#endif
