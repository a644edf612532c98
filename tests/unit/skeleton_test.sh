#!/bin/sh
# skeleton_test.sh -- the out-of-tree plugin path, end to end: install the
# plugin header and loom-plugin.pc into a scratch DESTDIR, build
# contrib/plugin-skeleton with its own Makefile through pkg-config, load the
# result with the daemon's loader and call skeleton.greet, then use it from a
# workflow with `loomctl run`, the plugin directory named in a config, and
# configure it there (plugins.config), a misspelt option being refused at its
# line and column. Prints TAP.
srcdir=${LOOM_SRCDIR:-.}
builddir=${LOOM_BUILDDIR:-.}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/loom-skeleton-XXXXXX") || exit 1
trap 'rm -rf "$scratch"' EXIT
echo "1..8"
failed=0
ok() { echo "ok $1 - $2"; }
not_ok() { echo "not ok $1 - $2"; failed=1; }

# Only the two install targets a plugin author needs, not the programs.
if ${MAKE:-make} -s -C "$builddir" DESTDIR="$scratch/root" \
        install-loomincludeHEADERS install-pkgconfigDATA >"$scratch/install.log" 2>&1; then
    ok 1 "plugin header and loom-plugin.pc install"
else
    sed 's/^/# /' "$scratch/install.log"; not_ok 1 "plugin header and loom-plugin.pc install"
fi

# The installed .pc names the real prefix; PKG_CONFIG_SYSROOT_DIR puts the
# scratch root in front of it, as DESTDIR did.
pc=$(find "$scratch/root" -name loom-plugin.pc | head -n 1)
cp "$srcdir/contrib/plugin-skeleton/skeleton.c" "$srcdir/contrib/plugin-skeleton/Makefile" "$scratch/"
if [ -n "$pc" ] && PKG_CONFIG_PATH="$(dirname "$pc")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
        PKG_CONFIG_SYSROOT_DIR="$scratch/root" ${MAKE:-make} -s -C "$scratch" \
        CFLAGS="-O2 -g -Werror" >"$scratch/build.log" 2>&1; then
    ok 2 "skeleton.so builds against the installed header"
else
    sed 's/^/# /' "$scratch/build.log"; not_ok 2 "skeleton.so builds against the installed header"
fi

out=$("$builddir/tests/unit/skeleton_load" "$scratch/skeleton.so" skeleton.greet '{"name": "world"}' 2>&1)
if [ "$out" = '"hello, world"' ]; then
    ok 3 "skeleton.greet answers \"hello, world\""
else
    echo "$out" | sed 's/^/# /'; not_ok 3 "skeleton.greet answers \"hello, world\""
fi

out=$("$builddir/tests/unit/skeleton_load" "$scratch/skeleton.so" skeleton.greet '{"name": "Ada"}' \
      '{"greeting": "good morning"}' 2>&1)
if [ "$out" = '"good morning, Ada"' ]; then
    ok 4 "init reads the greeting from the config"
else
    echo "$out" | sed 's/^/# /'; not_ok 4 "init reads the greeting from the config"
fi
# From a workflow: the config's plugin directory is loaded, and the
# compiler knows skeleton.greet as a lambda.
mkdir -p "$scratch/plugins" "$scratch/wf"
cp "$scratch/skeleton.so" "$scratch/plugins/" 2>/dev/null
printf 'plugins: [%s]\n' "$scratch/plugins" >"$scratch/loomd.yaml"
printf 'loom: 1\nname: greet\ninput: { name: string }\ndo:\n  lambda: skeleton.greet\n' \
    >"$scratch/wf/greet.yaml"
out=$(echo '{"name": "workflow"}' | "$builddir/loomctl" run "$scratch/wf/greet.yaml" --input - \
      --config "$scratch/loomd.yaml" 2>&1)
if [ "$out" = '"hello, workflow"' ]; then
    ok 5 "a workflow calls skeleton.greet through loomctl run"
else
    echo "$out" | sed 's/^/# /'; not_ok 5 "a workflow calls skeleton.greet through loomctl run"
fi

out=$("$builddir/tests/unit/skeleton_load" "$scratch/skeleton.so" skeleton.greet '{"name": "Ada"}' \
      '{"shout": true}' 2>&1)
if [ "$out" = '"HELLO, ADA"' ]; then
    ok 6 "shout is read, and greeting gets its declared default"
else
    echo "$out" | sed 's/^/# /'; not_ok 6 "shout is read, and greeting gets its declared default"
fi

# The configuration in the daemon's config file, as a user writes it.
printf 'plugins:\n  dirs: [%s]\n  config:\n    skeleton:\n      greeting: hi\n      shout: true\n' \
    "$scratch/plugins" >"$scratch/configured.yaml"
out=$(echo '{"name": "config"}' | "$builddir/loomctl" run "$scratch/wf/greet.yaml" --input - \
      --config "$scratch/configured.yaml" 2>&1)
if [ "$out" = '"HI, CONFIG"' ]; then
    ok 7 "plugins.config reaches the plugin's init"
else
    echo "$out" | sed 's/^/# /'; not_ok 7 "plugins.config reaches the plugin's init"
fi

sed 's/greeting: hi/gretting: hi/' "$scratch/configured.yaml" >"$scratch/misspelt.yaml"
out=$("$builddir/loomctl" validate --config "$scratch/misspelt.yaml" "$scratch/wf/greet.yaml" 2>&1)
rc=$?
want="$scratch/misspelt.yaml:5:7: error: plugins.config.skeleton: unknown option 'gretting'; did you mean 'greeting'?"
if [ $rc -ne 0 ] && echo "$out" | grep -qxF "$want"; then
    ok 8 "a misspelt option is refused at its line and column"
else
    echo "$out" | sed 's/^/# /'; not_ok 8 "a misspelt option is refused at its line and column"
fi
exit $failed
