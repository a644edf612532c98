#!/usr/bin/env bash
# schema_suite.sh -- the official JSON Schema Test Suite, as the npm
# registry's json-schema-test-suite package carries it (pinned; installed at
# test time, never copied into the tree), run over dsl/schema.h: every
# draft-4 case of the supported keywords, with how many passed per keyword
# and in all (tests/unit/schema_suite.c prints the TAP). Skipped, with the
# reason, only when npm cannot install the package.
set -u
srcdir=${LOOM_SRCDIR:-.}
builddir=${LOOM_BUILDDIR:-.}
. "$srcdir/tests/npm/npm_install.sh"
if ! npm_install schema-suite json-schema-test-suite@0.0.10; then
    echo "1..0 # SKIP $NPM_SKIP"
    exit 0
fi
draft4=$NPM_DIR/node_modules/json-schema-test-suite/tests/draft4
if [ ! -f "$draft4/type.json" ]; then
    echo "1..1"
    echo "not ok 1 - the package has no draft-4 files at $draft4"
    exit 1
fi
exec "$builddir/tests/unit/schema_suite" "$draft4"
