#!/usr/bin/env bash
# tests/npm/npm_install.sh -- sourced by the test scripts that need packages
# from the npm registry (MCP servers and clients, the JSON Schema test
# suite). They are installed at test time, never copied into the tree.
#
#   . "$srcdir/tests/npm/npm_install.sh"
#   npm_install mcp @modelcontextprotocol/sdk@1.32.2 || { echo "1..0 # SKIP $NPM_SKIP"; exit 0; }
#   node "$NPM_DIR/node_modules/..."
#
# npm_install NAME PKG@VERSION... installs the packages (pinned versions, so
# a run is repeatable) into $LOOM_NPM_DIR/NAME, by default a folder under the
# user's cache so the two builds of one CI run and later runs download them
# once. A lock keeps parallel tests from installing into one folder at once.
# Sets NPM_DIR; returns 1 with the reason in NPM_SKIP when node or npm is
# missing or the registry cannot be reached (the only reasons to skip).
npm_install() {
    local name=$1
    shift
    NPM_SKIP=
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        NPM_SKIP="node and npm are not installed (scripts/deps installs them)"
        return 1
    fi
    local root=${LOOM_NPM_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/loom-test-npm}
    NPM_DIR=$root/$name
    mkdir -p "$NPM_DIR" || { NPM_SKIP="cannot create $NPM_DIR"; return 1; }
    local want
    want=$(printf '%s\n' "$@" | sort | tr '\n' ' ')
    (
        flock -w 600 9 || exit 1
        if [ "$(cat "$NPM_DIR/.installed" 2>/dev/null)" = "$want" ]; then
            exit 0
        fi
        [ -f "$NPM_DIR/package.json" ] || echo '{"private": true}' >"$NPM_DIR/package.json"
        if ! timeout 600 npm install --prefix "$NPM_DIR" --no-audit --no-fund \
            --loglevel=error "$@" >"$NPM_DIR/.install.log" 2>&1; then
            exit 1
        fi
        printf '%s' "$want" >"$NPM_DIR/.installed"
    ) 9>"$root/.$name.lock"
    if [ $? -ne 0 ]; then
        NPM_SKIP="npm install $* failed (registry unreachable?): $(tail -n 3 "$NPM_DIR/.install.log" 2>/dev/null | tr '\n' ' ')"
        return 1
    fi
    return 0
}
