/* test_config_mcp.c -- `mcp` in the daemon's config file: none by default,
 * stdio and Streamable HTTP servers with their keys, and every error at its
 * FILE:LINE:COL. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/config_file.h"
#include "tests/unit/config_testlib.h"

Test(config_mcp, none_unless_configured)
{
    ct_parsed p = ct_parse("workers: 2\n");
    cr_assert(p.c != NULL);
    cr_assert(eq(sz, p.c->mcp.n, 0));
    ct_done(&p);
}

Test(config_mcp, a_stdio_and_an_http_server)
{
    ct_parsed p = ct_parse("mcp:\n"
                           "  files:\n"
                           "    command: [npx, -y, \"@modelcontextprotocol/server-filesystem\", /srv]\n"
                           "    env: { NODE_ENV: production, DEBUG: 1 }\n"
                           "    timeout: 5s\n"
                           "  search:\n"
                           "    url: https://mcp.example.com/mcp\n"
                           "    headers: { X-Team: research }\n"
                           "    headers_env: { Authorization: SEARCH_AUTH }\n");
    cr_assert(p.c != NULL, "%s", ct_dump(&p, false));
    cr_assert(eq(sz, p.c->mcp.n, 2));
    const config_mcp_server *f = &p.c->mcp.v[0], *s = &p.c->mcp.v[1];
    cr_assert(eq(str, f->name, "files"));
    cr_assert(eq(str, f->command[0], "npx"));
    cr_assert(eq(str, f->command[2], "@modelcontextprotocol/server-filesystem"));
    cr_assert(eq(ptr, f->command[4], NULL));
    cr_assert(eq(str, f->env[0], "NODE_ENV=production"));
    cr_assert(eq(str, f->env[1], "DEBUG=1"));
    cr_assert(eq(u64, f->timeout_ms, 5000));
    cr_assert(eq(ptr, f->url, NULL));
    cr_assert(eq(int, f->line, 2));
    cr_assert(eq(str, s->url, "https://mcp.example.com/mcp"));
    cr_assert(eq(str, s->headers[0], "X-Team: research"));
    cr_assert(eq(str, s->headers_env[0], "Authorization: SEARCH_AUTH"));
    cr_assert(eq(u64, s->timeout_ms, 0)); /* the default */
    cr_assert(eq(ptr, s->command, NULL));
    ct_done(&p);
}

Test(config_mcp, errors_at_their_position)
{
    ct_refused("mcp:\n  x: { env: { A: b } }\n", "c.yaml:2:6: error: MCP server 'x' needs 'command'");
    ct_refused("mcp:\n  x: { command: [a], url: http://h/mcp }\n",
            "c.yaml:2:27: error: MCP server 'x' has both 'command' and 'url'");
    ct_refused("mcp:\n  x: { command: [] }\n", "c.yaml:2:17: error: 'command' must be a list");
    ct_refused("mcp:\n  x: { command: a }\n", "c.yaml:2:17: error: 'command' must be a list");
    ct_refused("mcp:\n  x: { url: ftp://h/ }\n",
            "c.yaml:2:13: error: 'url' must be an http:// or https:// URL");
    ct_refused("mcp:\n  x: { command: [a], timeout: 1ms }\n",
            "c.yaml:2:31: error: 'timeout' must be from 10ms to 24h");
    ct_refused("mcp:\n  x: { command: [a], timeout: soon }\n", "c.yaml:2:31: error: 'timeout'");
    ct_refused("mcp:\n  x: { command: [a], env: { 1A: b } }\n",
            "c.yaml:2:29: error: '1A' is not an environment variable name");
    ct_refused("mcp:\n  x: { command: [a], headers: { A: b } }\n",
            "c.yaml:2:31: error: 'headers' is for Streamable HTTP servers");
    ct_refused("mcp:\n  x: { url: http://h/, env: { A: b } }\n", "error: 'env' is for servers loomd starts");
    ct_refused("mcp:\n  x: { url: http://h/, headers: { \"a b\": c } }\n",
            "error: 'a b' is not an HTTP header name");
    ct_refused("mcp:\n  x: { url: http://h/, headers_env: { A: \"not a var\" } }\n",
            "the name of an environment variable");
    ct_refused("mcp:\n  \"bad name\": { command: [a] }\n", "c.yaml:2:3: error: an MCP server's name");
    ct_refused("mcp:\n  x: { command: [a], timout: 1s }\n", "did you mean 'timeout'");
    ct_refused("mcp: [a]\n", "c.yaml:1:6: error: 'mcp' must be a mapping");
    ct_refused("mcp:\n  x: 3\n", "c.yaml:2:6:");
}
