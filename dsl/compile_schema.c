/* compile_schema.c -- a JSON Schema written in a workflow (`schema:`),
 * compiled when the workflow compiles.
 *
 * The schema compiler names what is wrong by JSON pointer; the author wrote
 * YAML, so the pointer is walked back through the YAML tree to the line and
 * column of the offending key or value. A schema kept in a file is read
 * through the caller's read_file (the compiler does no I/O of its own) and
 * its errors name the file, line and column inside it. */
#include "dsl/compile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The YAML node JSON pointer PTR names in ROOT, and in *KEY the mapping key
 * it sits under (NULL for a sequence item or the root). Stops at the deepest
 * node it can find. */
static const dsl_ynode *ynode_at(const dsl_ynode *root, const char *ptr, const dsl_ynode **key)
{
    const dsl_ynode *n = root;
    *key = NULL;
    char seg[512];
    while (*ptr == '/' && n) {
        ptr++;
        size_t sl = strcspn(ptr, "/"), w = 0;
        for (size_t i = 0; i < sl && w + 1 < sizeof seg; i++) {
            if (ptr[i] == '~' && i + 1 < sl && (ptr[i + 1] == '0' || ptr[i + 1] == '1')) {
                seg[w++] = ptr[i + 1] == '0' ? '~' : '/';
                i++;
            } else {
                seg[w++] = ptr[i];
            }
        }
        seg[w] = '\0';
        ptr += sl;
        const dsl_ynode *next = NULL, *nkey = NULL;
        if (n->kind == DSL_Y_MAP) {
            for (size_t i = 0; i < n->u.map.n; i++) {
                const dsl_ynode *k = n->u.map.pairs[i].key;
                if (k->kind == DSL_Y_SCALAR && k->u.scalar.len == w &&
                    memcmp(k->u.scalar.str, seg, w) == 0) {
                    next = n->u.map.pairs[i].value;
                    nkey = k;
                    break;
                }
            }
        } else if (n->kind == DSL_Y_SEQ) {
            char *end;
            unsigned long idx = strtoul(seg, &end, 10);
            if (*seg && *end == '\0' && idx < n->u.seq.n)
                next = n->u.seq.items[idx];
        }
        if (!next)
            break;
        n = next;
        *key = nkey;
    }
    return n;
}

/* Where to point for an error at PTR: an unknown keyword at its key (the
 * word to fix), anything else at the value. */
static const dsl_ynode *error_site(const dsl_ynode *root, const char *ptr, const char *msg)
{
    const dsl_ynode *key;
    const dsl_ynode *n = ynode_at(root, ptr, &key);
    if (key && strncmp(msg, "unsupported keyword", 19) == 0)
        return key;
    return n;
}

/* FILE's folder joined with NAME (NAME itself when absolute or FILE has no
 * folder). Arena string, or NULL. */
static char *beside(dsl_cc *cc, const char *file, const char *name)
{
    const char *slash = file ? strrchr(file, '/') : NULL;
    if (name[0] == '/' || !slash)
        return dsl_arena_strdup(cc->a, name);
    size_t dl = (size_t)(slash - file) + 1, nl = strlen(name);
    char *p = dsl_arena_alloc(cc->a, dl + nl + 1);
    if (!p)
        return NULL;
    memcpy(p, file, dl);
    memcpy(p + dl, name, nl + 1);
    return p;
}

/* The schema file named by scalar Y, loaded as YAML (JSON is YAML) into a
 * new document with its text in *BUF (both the caller frees); NULL after
 * reporting at Y. */
static dsl_ydoc *load_file(dsl_cc *cc, const dsl_ynode *y, const char *key, const char *path,
                           char **buf)
{
    *buf = NULL;
    if (!cc->opt || !cc->opt->read_file) {
        dsl_error(cc->d, y->line, y->col,
                  "'%s' names a file, which cannot be read here (the workflow came "
                  "without its folder); write the schema in place",
                  key);
        return NULL;
    }
    size_t len;
    *buf = cc->opt->read_file(path, dsl_max_file_size(cc->opt), &len);
    if (!*buf) {
        int e = errno;
        dsl_error(cc->d, y->line, y->col, "cannot read the %s file '%.200s': %s", key, path,
                  e == EFBIG ? "too large" : strerror(e));
        return NULL;
    }
    dsl_diags fd;
    if (dsl_diags_init(&fd, path) < 0) {
        dsl_diags_free(&fd);
        cc_oom(cc);
        return NULL;
    }
    dsl_ydoc *doc = dsl_yaml_load(*buf, len, &cc->opt->limits, &fd);
    if (fd.nerrors || !doc || !doc->root) {
        dsl_diags_sort(&fd);
        char *first = fd.n ? dsl_diag_format(&fd, 0) : NULL;
        dsl_error(cc->d, y->line, y->col, "the %s file is not JSON or YAML: %s", key,
                  first ? first : (doc ? "it is empty" : "out of memory"));
        free(first);
        dsl_diags_free(&fd);
        dsl_ydoc_free(doc);
        return NULL;
    }
    dsl_diags_free(&fd);
    return doc;
}

const dsl_schema *cc_schema(dsl_cc *cc, const dsl_ynode *y, const char *key)
{
    const dsl_ynode *root = y;
    dsl_ydoc *fdoc = NULL;
    char *fbuf = NULL;
    const char *path = NULL;
    dsl_schema *s = NULL;
    json_t *doc = NULL;

    if (y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_STRING) {
        if (!(path = beside(cc, cc->g->file, y->u.scalar.str))) {
            cc_oom(cc);
            return NULL;
        }
        if (!(fdoc = load_file(cc, y, key, path, &fbuf)))
            return NULL;
        root = fdoc->root;
    }
    if (root->kind != DSL_Y_MAP && !(root->kind == DSL_Y_SCALAR &&
                                     dsl_yscalar_type(root) == DSL_YT_BOOL)) {
        dsl_error(cc->d, y->line, y->col,
                  "'%s' must be a JSON Schema (a mapping) or the name of a file holding one, "
                  "got %s%s",
                  key, path ? "a file holding a " : "a ", dsl_ynode_describe(root));
        goto out;
    }
    if (!(doc = cc_json(cc, root)))
        goto out;
    char ptr[512], msg[512];
    s = dsl_schema_compile(doc, ptr, sizeof ptr, msg, sizeof msg);
    if (!s) {
        const dsl_ynode *at = error_site(root, ptr, msg);
        if (path)
            dsl_error(cc->d, y->line, y->col, "in the %s file, %s:%d:%d (%s): %s", key,
                      path, at->line, at->col, *ptr ? ptr : "the root", msg);
        else
            dsl_error(cc->d, at->line, at->col, "%s%s%s: %s", key, *ptr ? " at " : "", ptr, msg);
        goto out;
    }
    if (dsl_arena_own_schema(cc->a, s) < 0) {
        s = NULL; /* freed by the arena's refusal */
        cc_oom(cc);
    }
out:
    json_decref(doc); /* the schema holds its own reference */
    dsl_ydoc_free(fdoc);
    free(fbuf);
    return s;
}
