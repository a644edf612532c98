#!/bin/sh
# layering.sh -- modules depend one way. Every project include of every
# source and header must name a folder its module may use: the substrate
# (daemon/core) nothing above it, the engine nothing of the store, the
# server, the workflow directory, the jobs or the daemon's top, dsl/ nothing
# of the daemon at all, and so on (docs/architecture.md draws the picture).
# Prints TAP: one test per module folder, each listing its offending lines.
set -u
src=${LOOM_SRCDIR:-.}

# folder: the include prefixes it may use besides its own (space-separated)
rules='
common:
dsl: common/
plugins: common/ loom/ plugins/
daemon/core: common/ loom/
daemon/trace: common/
daemon/plugins: common/ loom/ dsl/ daemon/core/
daemon/upstream: common/ loom/ daemon/core/
daemon/isolate: common/ loom/ daemon/core/ daemon/plugins/
daemon/mcp: common/ daemon/core/
daemon/engine: common/ loom/ dsl/ daemon/core/ daemon/plugins/ daemon/upstream/ daemon/isolate/ daemon/trace/
daemon/store: common/ daemon/core/
daemon/batch: common/ loom/ daemon/core/ daemon/upstream/ daemon/store/
daemon/cluster: common/ loom/ daemon/core/ daemon/store/ daemon/upstream/
daemon/metrics: common/ daemon/core/
daemon/server: common/ loom/ daemon/core/
daemon/wfdir: common/ dsl/ daemon/core/
daemon/jobs: common/ loom/ dsl/ daemon/core/ daemon/engine/ daemon/plugins/ daemon/upstream/ daemon/store/ daemon/server/ daemon/wfdir/ daemon/trace/
daemon: common/ loom/ dsl/ daemon/ config.h
client: common/ loom/ dsl/ daemon/ config.h
'

n=$(printf '%s\n' "$rules" | grep -c ':')
echo "1..$n"
i=0 failed=0
printf '%s\n' "$rules" | grep ':' > "${TMPDIR:-/tmp}/layering.$$"
while IFS= read -r line; do
    i=$((i + 1))
    dir=${line%%:*}
    allowed="$dir/ ${line#*:}"
    bad=""
    # the module's own files only: daemon/'s top is daemon/*.[ch], not the
    # module folders below it
    for f in "$src/$dir"/*.c "$src/$dir"/*.h "$src/$dir"/*/*.c "$src/$dir"/*/*.h; do
        [ -f "$f" ] || continue
        rel=${f#"$src/"}
        case $dir in
            daemon) case $rel in daemon/*/*) continue ;; esac ;;
            plugins) ;;
            *) case $rel in "$dir"/*/*) continue ;; esac ;;
        esac
        while IFS= read -r inc; do
            ok=0
            for a in $allowed; do
                case $inc in "$a"*) ok=1 ;; esac
            done
            # a file's own sibling header, named without a folder
            case $inc in */*) ;; *) ok=1 ;; esac
            [ $ok = 1 ] || bad="$bad
# $rel includes \"$inc\""
        done <<EOF
$(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f")
EOF
    done
    if [ -z "$bad" ]; then
        echo "ok $i - $dir"
    else
        echo "not ok $i - $dir includes what it may not$bad"
        failed=1
    fi
done < "${TMPDIR:-/tmp}/layering.$$"
rm -f "${TMPDIR:-/tmp}/layering.$$"
exit $failed
