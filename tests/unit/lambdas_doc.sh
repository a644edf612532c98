#!/bin/sh
# lambdas_doc.sh -- docs/lambdas.md in the source tree is what the build
# generates from the built-in plugins' descriptors (`loomctl plugins
# --builtin --markdown`, written to the build directory's docs/lambdas.md),
# so the reference read on the web cannot drift from the code. Prints TAP.
set -u
src=${LOOM_SRCDIR:-.}
build=${LOOM_BUILDDIR:-.}
echo "1..1"
if [ ! -f "$build/docs/lambdas.md" ]; then
    echo "not ok 1 - $build/docs/lambdas.md was not generated (run make first)"
    exit 0
fi
if cmp -s "$src/docs/lambdas.md" "$build/docs/lambdas.md"; then
    echo "ok 1 - docs/lambdas.md is the generated reference"
    exit 0
fi
echo "not ok 1 - docs/lambdas.md differs from what the built-in plugins declare"
echo "# The built-in plugins' descriptors changed; regenerate the committed copy from the"
echo "# build directory:"
echo "#   ./loomctl plugins --builtin --markdown > \"$src/docs/lambdas.md\""
diff -u "$src/docs/lambdas.md" "$build/docs/lambdas.md" | head -40 | sed 's/^/# /'
exit 0
