#!/bin/sh
# run_examples.sh -- every example in workflows/ runs offline, end to end:
# `loomctl run` with its sample input against the mock provider scripted by
# contrib/offline.yaml, and its output must equal workflows/NAME.output.json.
# An example that waits for a signal (wait_for) gets the one written in
# workflows/NAME.signal (NAME=JSON, one line) when it waits.
# Prints TAP. To accept a deliberate change: LOOM_UPDATE_GOLDEN=1.
set -u
src=${LOOM_SRCDIR:-.}
bin=${LOOM_BUILDDIR:-.}/loomctl
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
set -- "$src"/workflows/*.yaml
echo "1..$#"
n=0 failed=0
for wf in "$@"; do
    n=$((n + 1))
    name=$(basename "$wf" .yaml)
    golden="$src/workflows/$name.output.json"
    sig="$src/workflows/$name.signal"
    [ -f "$sig" ] || sig=
    if ! "$bin" run "$wf" --input "$src/workflows/$name.input.json" \
            --config "$src/contrib/offline.yaml" --seed 1 ${sig:+--signal "$(cat "$sig")"} \
            >"$tmp/out" 2>"$tmp/err"; then
        echo "not ok $n - $name: the job failed"
        sed 's/^/# /' "$tmp/err"
        failed=1
        continue
    fi
    if [ "${LOOM_UPDATE_GOLDEN:-0}" = 1 ]; then
        cp "$tmp/out" "$golden"
    fi
    if cmp -s "$tmp/out" "$golden"; then
        echo "ok $n - $name"
    else
        echo "not ok $n - $name: output differs from workflows/$name.output.json"
        diff "$golden" "$tmp/out" 2>&1 | head -20 | sed 's/^/# /'
        failed=1
    fi
done
exit $failed
