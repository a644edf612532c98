#!/usr/bin/env bash
# mcp_client_test.sh -- loomd's MCP client (daemon/mcp) against the real
# reference servers from the npm registry, installed at test time (pinned:
# their tools are named as checked here): server-everything over stdio and
# over Streamable HTTP, server-filesystem over stdio, and a loomd whose
# config starts server-everything and whose workflow's call uses its tools
# (the mock plays the model). Skipped, with the reason, only when node
# and npm are missing or the registry cannot be reached. Prints TAP.
set -u
builddir=${LOOM_BUILDDIR:-.}
srcdir=${LOOM_SRCDIR:-.}
. "$srcdir/tests/npm/npm_install.sh"
# 2026.8.31 of both: the tools below are theirs (server-everything renamed
# its tools in December 2025: add became get-sum)
if ! npm_install mcp-servers @modelcontextprotocol/server-everything@2026.8.31 \
        @modelcontextprotocol/server-filesystem@2026.8.31; then
    echo "1..0 # SKIP $NPM_SKIP"
    exit 0
fi
everything=$NPM_DIR/node_modules/@modelcontextprotocol/server-everything/dist/index.js
filesystem=$NPM_DIR/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js
probe=$builddir/tests/unit/mcp_probe
scratch=$(mktemp -d "${TMPDIR:-/tmp}/loom-mcp-XXXXXX") || exit 1
http_pid= loomd_pid=
cleanup() {
    for p in $http_pid $loomd_pid; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    rm -rf "$scratch"
}
trap cleanup EXIT
echo "1..10"
failed=0
ok() { echo "ok $1 - $2"; }
not_ok() {
    echo "not ok $1 - $2"
    sed 's/^/# /' "$scratch/out" "$scratch/err" 2>/dev/null | tail -30
    failed=1
}
now() { date +%s; }

# 1-3: server-everything over stdio: its tools, echo, get-sum
if "$probe" list call echo '{"message":"hello loom"}' call get-sum '{"a":20,"b":22}' \
        -- node "$everything" stdio >"$scratch/out" 2>"$scratch/err"; then
    ok 1 "server-everything (stdio) starts and the calls succeed"
else
    not_ok 1 "server-everything (stdio) starts and the calls succeed"
fi
if grep -qx echo "$scratch/out" && grep -qx get-sum "$scratch/out" &&
    grep -qx trigger-long-running-operation "$scratch/out"; then
    ok 2 "tools/list has echo, get-sum and trigger-long-running-operation"
else
    not_ok 2 "tools/list has echo, get-sum and trigger-long-running-operation"
fi
if grep -q '"text":"Echo: hello loom"' "$scratch/out" && grep -q 'The sum of 20 and 22 is 42' "$scratch/out"; then
    ok 3 "echo and get-sum answer"
else
    not_ok 3 "echo and get-sum answer"
fi

# 4: a call past its timeout ends with `timeout` (the server is told with
# notifications/cancelled; the probe then stops it)
start=$(now)
if ! "$probe" --call-timeout 500 call trigger-long-running-operation '{"duration":30,"steps":3}' \
        -- node "$everything" stdio >"$scratch/out" 2>"$scratch/err" &&
    grep -q '^error timeout: .*did not answer within 500 ms' "$scratch/out" &&
    [ $(($(now) - start)) -lt 30 ]; then
    ok 4 "a long call ends with timeout after its 500 ms"
else
    not_ok 4 "a long call ends with timeout after its 500 ms"
fi

# 5-6: server-filesystem over stdio: read a file inside the allowed
# directory; one outside is the tool's own failure (isError), not an error
mkdir -p "$scratch/files"
echo "hello from loom" >"$scratch/files/hello.txt"
if "$probe" list call read_text_file "{\"path\":\"$scratch/files/hello.txt\"}" \
        call read_text_file '{"path":"/etc/passwd"}' \
        -- node "$filesystem" "$scratch/files" >"$scratch/out" 2>"$scratch/err" &&
    grep -qx read_text_file "$scratch/out" && grep -q '"text":"hello from loom\\n"' "$scratch/out"; then
    ok 5 "server-filesystem reads a file in its directory"
else
    not_ok 5 "server-filesystem reads a file in its directory"
fi
if grep -q '"isError":true' "$scratch/out" && grep -q 'Access denied' "$scratch/out"; then
    ok 6 "a path outside its directory is the tool's failure (isError)"
else
    not_ok 6 "a path outside its directory is the tool's failure (isError)"
fi

# 7: server-everything over Streamable HTTP (sessions, SSE answers), on a
# port below Linux's ephemeral range (32768-60999, where the other tests'
# servers on port 0 land) that nobody listens on; another is tried if that
# one is taken all the same. The server says it listens before it has
# bound the port (a taken port then fails a moment later), so it counts as
# up only once the port answers while the server still runs.
port=
for try in 1 2 3 4 5; do
    p=$((20000 + ($$ * 7 + try * 997) % 10000))
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        continue # someone listens there already
    fi
    PORT=$p node "$everything" streamableHttp >"$scratch/http.log" 2>&1 &
    http_pid=$!
    deadline=$(($(now) + 60))
    while [ "$(now)" -le "$deadline" ] && kill -0 "$http_pid" 2>/dev/null; do
        if grep -q "listening on port $p" "$scratch/http.log" &&
            ! grep -q "Failed to start" "$scratch/http.log" &&
            (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null &&
            kill -0 "$http_pid" 2>/dev/null; then
            port=$p
            break
        fi
        sleep 0.2
    done
    [ -n "$port" ] && break
    kill "$http_pid" 2>/dev/null; wait "$http_pid" 2>/dev/null; http_pid=
done
if [ -n "$port" ] &&
    "$probe" --url "http://127.0.0.1:$port/mcp" list call get-sum '{"a":1,"b":2}' \
        >"$scratch/out" 2>"$scratch/err" &&
    grep -qx get-sum "$scratch/out" && grep -q 'The sum of 1 and 2 is 3' "$scratch/out" &&
    grep -q "Session initialized" "$scratch/http.log"; then
    ok 7 "server-everything over Streamable HTTP: a session, its tools, get-sum"
else
    sed 's/^/# http: /' "$scratch/http.log" | tail -10
    not_ok 7 "server-everything over Streamable HTTP"
fi

# 8-10: a loomd whose config starts server-everything: stats shows it
# ready with its tools, a workflow's call with the server's tools gets
# get-sum's answer (the mock plays the model), the stop ends the server
mkdir -p "$scratch/wf" "$scratch/state"
cat >"$scratch/loomd.yaml" <<EOF
socket: $scratch/loomd.sock
state: $scratch/state
workflows: $scratch/wf
providers:
  agent:
    plugin: mock
    latency: 1ms
    tool_script:
      - [{name: get-sum, arguments: {a: 20, b: 22}}]
      - "answer: {results}"
mcp:
  everything:
    command: [node, "$everything", stdio]
    timeout: 60s
EOF
cat >"$scratch/wf/agent.yaml" <<EOF
loom: 1
name: agent
defaults: { provider: agent }
do:
  call:
    prompt: "What is 20 + 22?"
    tools:
      - mcp: everything
EOF
"$builddir/loomd" --foreground --config "$scratch/loomd.yaml" >"$scratch/loomd.log" 2>&1 &
loomd_pid=$!
ready=
deadline=$(($(now) + 90))
while [ "$(now)" -le "$deadline" ] && kill -0 "$loomd_pid" 2>/dev/null; do
    "$builddir/loomctl" stats --socket "$scratch/loomd.sock" --json >"$scratch/out" 2>"$scratch/err"
    if grep -q '"everything": *{[^}]*"state": *"ready"' "$scratch/out" ||
        tr -d ' \n' <"$scratch/out" | grep -q '"everything":{[^}]*"state":"ready"'; then
        ready=1
        break
    fi
    sleep 0.2
done
if [ -n "$ready" ] && tr -d ' \n' <"$scratch/out" | grep -q '"everything":{[^}]*"tools":1[0-9]'; then
    ok 8 "loomd starts server-everything and stats.mcp shows it ready with its tools"
else
    sed 's/^/# loomd: /' "$scratch/loomd.log" | tail -20
    not_ok 8 "loomd starts server-everything"
fi
if echo '{}' | "$builddir/loomctl" submit --socket "$scratch/loomd.sock" --input - --wait 60 \
        --json agent >"$scratch/out" 2>"$scratch/err" &&
    grep -q 'answer: The sum of 20 and 22 is 42' "$scratch/out"; then
    ok 9 "a workflow's call runs server-everything's get-sum for the model"
else
    sed 's/^/# loomd: /' "$scratch/loomd.log" | tail -20
    not_ok 9 "a workflow's call runs server-everything's get-sum for the model"
fi
server_pid=$(sed -n 's/.*MCP server everything started.*pid \([0-9]*\)).*/\1/p' "$scratch/loomd.log" | head -1)
kill -TERM "$loomd_pid" 2>/dev/null
wait "$loomd_pid"
status=$?
loomd_pid=
if [ "$status" = 0 ] && [ -n "$server_pid" ] && ! kill -0 "$server_pid" 2>/dev/null; then
    ok 10 "loomd stops and the server is gone with it"
else
    sed 's/^/# loomd: /' "$scratch/loomd.log" | tail -20
    not_ok 10 "loomd stops and the server is gone with it (status $status, pid $server_pid)"
fi
exit $failed
