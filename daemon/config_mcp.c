/* config_mcp.c -- `mcp` in the config file:
 *
 *   mcp:
 *     files:                                  # a stdio server loomd starts
 *       command: [npx, -y, "@modelcontextprotocol/server-filesystem", /srv/docs]
 *       env: { NODE_OPTIONS: --max-old-space-size=256 }
 *       timeout: 30s                          # each call's (default 30s)
 *     search:                                 # a Streamable HTTP server
 *       url: https://mcp.example.com/mcp
 *       headers: { X-Team: research }
 *       headers_env: { Authorization: SEARCH_MCP_AUTH }   # from loomd's environment
 *
 * Errors are FILE:LINE:COL like the rest of the file. A server is stdio
 * (command) or HTTP (url), never both. Secrets do not belong in the file:
 * headers_env names the environment variable that holds a header's value. */
#include "daemon/config_mcp.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dsl/dsl.h"

static const char *const entry_keys[] = { "command", "env", "url", "headers", "headers_env",
                                          "timeout", NULL };

static void strv_free(char **v)
{
    for (size_t i = 0; v && v[i]; i++)
        free(v[i]);
    free(v);
}

static bool is_string(const dsl_ynode *y)
{
    return y && y->kind == DSL_Y_SCALAR && dsl_yscalar_type(y) == DSL_YT_STRING && y->u.scalar.len;
}

/* NAME of a server: what a tool item names, and a key of `stats`. */
static bool good_name(const char *s)
{
    if (!*s || strlen(s) > 64)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
            return false;
    return true;
}

static bool env_name(const char *s)
{
    if (!isalpha((unsigned char)*s) && *s != '_')
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_')
            return false;
    return true;
}

/* An HTTP header name: a token (RFC 9110). */
static bool header_name(const char *s)
{
    if (!*s)
        return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
            return false;
    return true;
}

static char **strv_new(size_t n)
{
    return calloc(n + 1, sizeof(char *));
}

static void parse_command(dsl_diags *d, const dsl_ynode *y, config_mcp_server *e)
{
    if (y->kind != DSL_Y_SEQ || y->u.seq.n == 0) {
        dsl_type_error(d, y, "command", "a list: the program, then its arguments");
        return;
    }
    char **v = strv_new(y->u.seq.n);
    if (!v) {
        dsl_error(d, y->line, y->col, "out of memory");
        return;
    }
    for (size_t i = 0; i < y->u.seq.n; i++) {
        const dsl_ynode *x = y->u.seq.items[i];
        if (x->kind != DSL_Y_SCALAR || (i == 0 && !x->u.scalar.len)) {
            dsl_type_error(d, x, "command", i == 0 ? "a program name" : "a string");
            strv_free(v);
            return;
        }
        if (!(v[i] = strdup(x->u.scalar.str))) {
            dsl_error(d, x->line, x->col, "out of memory");
            strv_free(v);
            return;
        }
    }
    e->command = v;
}

/* A mapping of KEY to scalar values into "KEYSEPVALUE" strings. CHECK_KEY
 * says whether a key is allowed; WHAT names it in messages. */
static char **parse_pairs(dsl_diags *d, const dsl_ynode *y, const char *key, const char *sep,
                          bool (*check_key)(const char *), const char *key_what, bool value_is_env)
{
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, key, "a mapping");
        return NULL;
    }
    char **v = strv_new(y->u.map.n);
    if (!v) {
        dsl_error(d, y->line, y->col, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *k = y->u.map.pairs[i].key, *x = y->u.map.pairs[i].value;
        if (k->kind != DSL_Y_SCALAR || !check_key(k->u.scalar.str)) {
            dsl_error(d, k->line, k->col, "'%s' is not %s", k->kind == DSL_Y_SCALAR ? k->u.scalar.str
                                                                                  : "a name",
                      key_what);
            goto fail;
        }
        if (!x || x->kind != DSL_Y_SCALAR || (value_is_env && !env_name(x->u.scalar.str))) {
            dsl_type_error(d, x ? x : k, k->u.scalar.str,
                           value_is_env ? "the name of an environment variable" : "a string");
            goto fail;
        }
        if (strpbrk(x->u.scalar.str, "\r\n")) {
            dsl_error(d, x->line, x->col, "'%s' must be one line", k->u.scalar.str);
            goto fail;
        }
        if (asprintf(&v[i], "%s%s%s", k->u.scalar.str, sep, x->u.scalar.str) < 0) {
            v[i] = NULL;
            dsl_error(d, x->line, x->col, "out of memory");
            goto fail;
        }
    }
    return v;
fail:
    strv_free(v);
    return NULL;
}

static void parse_entry(dsl_diags *d, const dsl_ynode *key, const dsl_ynode *y, config_mcp_server *e)
{
    const dsl_ynode *x, *cmd, *url;
    if (!y || y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y ? y : key, key->u.scalar.str,
                       "a mapping with 'command' (stdio) or 'url' (Streamable HTTP)");
        return;
    }
    dsl_check_keys(d, y, entry_keys, "mcp server");
    cmd = dsl_ymap_get(y, "command");
    url = dsl_ymap_get(y, "url");
    if (!cmd && !url) {
        dsl_error(d, y->line, y->col, "MCP server '%s' needs 'command' (a program loomd starts, "
                                      "speaking stdio) or 'url' (Streamable HTTP)", e->name);
        return;
    }
    if (cmd && url) {
        dsl_error(d, url->line, url->col, "MCP server '%s' has both 'command' and 'url': one "
                                          "server is one or the other", e->name);
        return;
    }
    if (cmd) {
        parse_command(d, cmd, e);
        if ((x = dsl_ymap_get(y, "env")))
            e->env = parse_pairs(d, x, "env", "=", env_name, "an environment variable name",
                                 false);
        const char *http_only[] = { "headers", "headers_env" };
        for (size_t i = 0; i < 2; i++)
            if ((x = dsl_ymap_get(y, http_only[i])))
                dsl_error(d, x->line, x->col, "'%s' is for Streamable HTTP servers (with 'url'), "
                                              "not for one loomd starts", http_only[i]);
    } else {
        if (!is_string(url)) {
            dsl_type_error(d, url, "url", "an http:// or https:// URL");
        } else if (strncasecmp(url->u.scalar.str, "http://", 7) != 0 &&
                   strncasecmp(url->u.scalar.str, "https://", 8) != 0) {
            dsl_error(d, url->line, url->col, "'url' must be an http:// or https:// URL, got '%s'",
                      url->u.scalar.str);
        } else if (!(e->url = strdup(url->u.scalar.str))) {
            dsl_error(d, url->line, url->col, "out of memory");
        }
        if ((x = dsl_ymap_get(y, "headers")))
            e->headers = parse_pairs(d, x, "headers", ": ", header_name, "an HTTP header name",
                                     false);
        if ((x = dsl_ymap_get(y, "headers_env")))
            e->headers_env = parse_pairs(d, x, "headers_env", ": ", header_name,
                                         "an HTTP header name", true);
        if ((x = dsl_ymap_get(y, "env")))
            dsl_error(d, x->line, x->col, "'env' is for servers loomd starts (with 'command'), "
                                          "not for one it reaches by URL");
    }
    if ((x = dsl_ymap_get(y, "timeout"))) {
        uint64_t ms;
        const char *why = NULL;
        if (x->kind != DSL_Y_SCALAR ||
            dsl_parse_duration(x->u.scalar.str, x->u.scalar.len, &ms, &why) < 0)
            dsl_error(d, x->line, x->col, "'timeout' must be a duration such as 30s%s%s",
                      why ? ": " : "", why ? why : "");
        else if (ms < CONFIG_MCP_MIN_TIMEOUT_MS || ms > CONFIG_MCP_MAX_TIMEOUT_MS)
            dsl_error(d, x->line, x->col, "'timeout' must be from 10ms to 24h");
        else
            e->timeout_ms = ms;
    }
}

void config_mcp_parse(dsl_diags *d, const dsl_ynode *y, config_mcp *m)
{
    if (y->kind != DSL_Y_MAP) {
        dsl_type_error(d, y, "mcp", "a mapping of server names to servers");
        return;
    }
    for (size_t i = 0; i < y->u.map.n; i++) {
        const dsl_ynode *key = y->u.map.pairs[i].key;
        if (key->kind != DSL_Y_SCALAR || !good_name(key->u.scalar.str)) {
            dsl_error(d, key->line, key->col, "an MCP server's name is 1 to 64 letters, digits, "
                                              "'_', '-' or '.'");
            continue;
        }
        config_mcp_server *v = realloc(m->v, (m->n + 1) * sizeof *v);
        if (!v) {
            dsl_error(d, key->line, key->col, "out of memory");
            return;
        }
        m->v = v;
        config_mcp_server *e = &v[m->n];
        memset(e, 0, sizeof *e);
        if (!(e->name = strdup(key->u.scalar.str))) {
            dsl_error(d, key->line, key->col, "out of memory");
            return;
        }
        m->n++;
        e->line = key->line;
        e->col = key->col;
        parse_entry(d, key, y->u.map.pairs[i].value, e);
    }
}

void config_mcp_free(config_mcp *m)
{
    for (size_t i = 0; i < m->n; i++) {
        config_mcp_server *e = &m->v[i];
        free(e->name);
        strv_free(e->command);
        strv_free(e->env);
        free(e->url);
        strv_free(e->headers);
        strv_free(e->headers_env);
    }
    free(m->v);
    m->v = NULL;
    m->n = 0;
}
