#!/usr/bin/env bash
# mcp_server_test.sh -- `loomctl mcp` serves a real loomd's workflows (on
# the mock provider) to a real MCP client from the npm registry: it lists
# the tools, calls them, sees progress, and cancels. Prints TAP.
#
# The client is the MCP TypeScript SDK's (@modelcontextprotocol/sdk, Client
# and StdioClientTransport) driven by tests/mcp/mcp_server_client.cjs. The
# MCP inspector's CLI is not used: every @modelcontextprotocol/inspector
# release needs Node >= 22.7.5 (v2: >= 22.19), while Debian 12 ships Node
# 18, and the separate @modelcontextprotocol/inspector-cli package does not
# start on its own (it reads a package.json of the inspector's repository
# layout). The SDK is the library the inspector itself is built on.
#
# Installed at test time through tests/npm/npm_install.sh; skipped, with the
# reason, only when node and npm are missing or the registry cannot be
# reached.
set -u
builddir=${LOOM_BUILDDIR:-.}
srcdir=${LOOM_SRCDIR:-$(cd "$(dirname "$0")/../.." && pwd)}
# 1.32.2: engines node >= 18
SDK=@modelcontextprotocol/sdk@1.32.2
. "$srcdir/tests/npm/npm_install.sh"
if ! npm_install mcp-server "$SDK"; then
    echo "1..0 # SKIP $NPM_SKIP"
    exit 0
fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/loom-mcp-server-XXXXXX") || exit 1
loomd_pid=
cleanup() {
    if [ -n "$loomd_pid" ]; then
        kill "$loomd_pid" 2>/dev/null && wait "$loomd_pid" 2>/dev/null
    fi
    rm -rf "$scratch"
}
trap cleanup EXIT
echo "1..10"
now() { date +%s; }

mkdir -p "$scratch/wf" "$scratch/state"
# `slow` runs one quick step, then one that would take ten minutes: long
# enough that only a cancel ends it within the test
cat >"$scratch/loomd.yaml" <<CONFIG
socket: $scratch/loomd.sock
state: $scratch/state
workflows: $scratch/wf
providers:
  default: { plugin: mock, latency: 20ms }
  slow: { plugin: mock, latency: 10m }
CONFIG
cat >"$scratch/wf/echo.yaml" <<'WORKFLOW'
loom: 1
name: echo
description: Echoes the text back.
input:
  text: { type: string, description: what to echo }
  times: { type: integer, default: 1 }
do:
  call: "echo {{ input.text }}"
  output: { said: "{{ output }}" }
WORKFLOW
printf 'loom: 1\nname: any\ndo: { call: "hi" }\n' >"$scratch/wf/any.yaml"
cat >"$scratch/wf/steps.yaml" <<'WORKFLOW'
loom: 1
name: steps
do:
  chain:
    - call: "one"
    - call: "two"
    - call: "echo three"
WORKFLOW
cat >"$scratch/wf/slow.yaml" <<'WORKFLOW'
loom: 1
name: slow
do:
  chain:
    - call: "start"
    - call: { provider: slow, prompt: "wait" }
WORKFLOW
"$builddir/loomd" --foreground --config "$scratch/loomd.yaml" >"$scratch/loomd.log" 2>&1 &
loomd_pid=$!
deadline=$(($(now) + 15))
up=
while [ "$(now)" -le "$deadline" ] && kill -0 "$loomd_pid" 2>/dev/null; do
    if "$builddir/loomctl" workflows --socket "$scratch/loomd.sock" --timeout 1 >/dev/null 2>&1; then
        up=1
        break
    fi
    sleep 0.1
done
if [ -n "$up" ]; then
    echo "ok 1 - loomd serves the workflows"
else
    echo "not ok 1 - loomd serves the workflows"
    sed 's/^/# /' "$scratch/loomd.log"
    exit 1
fi

NODE_PATH="$NPM_DIR/node_modules" timeout 300 node "$srcdir/tests/mcp/mcp_server_client.cjs" \
    "$builddir/loomctl" "$scratch/loomd.sock" "$scratch/loomctl.log" 2
rc=$?
if [ $rc != 0 ]; then
    sed 's/^/# loomctl mcp: /' "$scratch/loomctl.log" 2>/dev/null | tail -30
    sed 's/^/# loomd: /' "$scratch/loomd.log" | tail -20
fi
exit $rc
