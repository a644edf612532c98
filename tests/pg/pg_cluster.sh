#!/usr/bin/env bash
# tests/pg/pg_cluster.sh -- a throwaway PostgreSQL cluster for the tests.
#
#   pg_cluster.sh start DIR     starts a cluster in DIR (or reuses the one
#                               already answering there), prints its admin URI
#                               postgresql://loom@127.0.0.1:PORT/postgres on one
#                               line and writes it to DIR/uri
#   pg_cluster.sh restart DIR   pg_ctl restart -m fast, same port; returns once
#                               the server answers again (outage tests)
#   pg_cluster.sh stop DIR      pg_ctl stop -m fast
#
# Debian's postgresql (the newest under /usr/lib/postgresql/*/bin; scripts/deps
# installs it when missing). The cluster listens on 127.0.0.1 only, on a free
# port from 10000 to 19999: below 32768 (the kernel's ephemeral range starts
# above it, so a client socket cannot take it between the check and the
# bind) and below 20000, where the other tests pick the ports of their own
# servers (nghttpx, MCP servers, Prometheus) the same way: a cluster there
# could take a port one of them checked a moment before, and answer its
# TLS handshake as PostgreSQL. It trusts local TCP for
# the user `loom`, and keeps fsync on: the cluster tests claim durability
# across a PostgreSQL restart, which a cluster without fsync would not test.
# full_page_writes is off (torn pages need a power cut, not a restart).
#
# initdb refuses to run as root: root runs the server as the unprivileged
# system user `loomtest` (created once) through runuser, and gives it DIR.
#
# Several tests start the same DIR at once: a lock on DIR/lock makes one of
# them create the cluster and the others reuse it. Reads no stdin; the
# server's log is DIR/log, pg_ctl's output DIR/pg_ctl.log; errors go to stderr
# with the log's last lines.
set -euo pipefail

PROG=pg_cluster.sh
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGUSER_NAME=loom          # the cluster's superuser (initdb -U)
RUN_AS=loomtest           # the system user root runs the server as
START_TIMEOUT=60          # seconds pg_ctl waits for a start or a restart

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage() {
    echo "usage: $PROG start|stop|restart DIR" >&2
    exit 2
}

newest_bindir() {
    local d
    for d in /usr/lib/postgresql/*/bin; do
        if [[ -d "$d" ]]; then printf '%s\n' "$d"; fi
    done | sort -V | tail -n 1
}

# The newest installed major version's bin directory, installing postgresql
# through scripts/deps when there is none.
find_bindir() {
    local dir
    dir=$(newest_bindir)
    if [[ -z "$dir" ]]; then
        echo "$PROG: no PostgreSQL under /usr/lib/postgresql; running scripts/deps" >&2
        bash "$SRC/scripts/deps" </dev/null >&2 || die "scripts/deps failed: cannot install postgresql"
        dir=$(newest_bindir)
    fi
    [[ -n "$dir" && -x "$dir/initdb" && -x "$dir/pg_ctl" ]] ||
        die "no PostgreSQL server binaries (initdb, pg_ctl) under /usr/lib/postgresql/*/bin"
    echo "$dir"
}

# as_owner CMD...: runs CMD as the cluster's owner (loomtest when root),
# without the lock's descriptor: a server started with it would hold the lock
# for its whole life.
AS=()
setup_owner() {
    if [[ $(id -u) -ne 0 ]]; then
        return 0
    fi
    if ! getent passwd "$RUN_AS" >/dev/null; then
        # two starts may race to create it: the loser's useradd fails, the
        # user exists all the same
        useradd --system --no-create-home --shell /usr/sbin/nologin "$RUN_AS" </dev/null >/dev/null 2>&1 || true
        getent passwd "$RUN_AS" >/dev/null || die "cannot create the system user $RUN_AS (useradd failed)"
    fi
    AS=(runuser -u "$RUN_AS" --)
}
as_owner() {
    "${AS[@]}" "$@" 9>&-
}

# port_in_use PORT: true when something accepts a connection on it.
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

free_port() {
    local i port
    for ((i = 0; i < 200; i++)); do
        port=$((10000 + RANDOM % 10000))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1 between 10000 and 19999"
}

# The last lines of the server's and pg_ctl's logs, for an error.
show_logs() {
    local f
    for f in "$DIR/pg_ctl.log" "$DIR/log"; do
        if [[ -s "$f" ]]; then
            echo "$PROG: last lines of $f:" >&2
            tail -n 15 "$f" >&2
        fi
    done
}

answers() {
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$1" -U "$PGUSER_NAME" -d postgres -t 5 </dev/null
}

# wait_answering PORT: pg_ctl -w returns when the postmaster is ready; this
# confirms TCP connections are accepted, within START_TIMEOUT.
wait_answering() {
    local deadline=$((SECONDS + START_TIMEOUT))
    until answers "$1"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

uri_port() {
    sed -n 's|^postgresql://[^@]*@127\.0\.0\.1:\([0-9][0-9]*\)/.*$|\1|p' "$DIR/uri" 2>/dev/null | head -n 1 || true
}

conf_port() {
    sed -n "s/^port = \([0-9][0-9]*\)$/\1/p" "$DATA/loom_port.conf" 2>/dev/null | head -n 1 || true
}

write_uri() {
    local uri="postgresql://$PGUSER_NAME@127.0.0.1:$1/postgres"
    printf '%s\n' "$uri" >"$DIR/uri.tmp"
    chmod 644 "$DIR/uri.tmp"
    mv -f "$DIR/uri.tmp" "$DIR/uri"
    printf '%s\n' "$uri"
}

init_cluster() {
    rm -rf "$DATA"
    if ! as_owner "$BIN/initdb" -D "$DATA" -A trust -U "$PGUSER_NAME" --no-sync -E UTF8 \
            --locale=C </dev/null >"$DIR/initdb.log" 2>&1; then
        echo "$PROG: initdb failed:" >&2
        tail -n 20 "$DIR/initdb.log" >&2
        exit 1
    fi
    # A socket path longer than sun_path (108 bytes) cannot bind: the tests
    # use TCP, so such a DIR gets no socket rather than a failed start.
    local sockdir="$DIR"
    if ((${#DIR} + 20 > 100)); then
        sockdir=""
    fi
    {
        echo ""
        echo "# tests/pg/pg_cluster.sh"
        echo "listen_addresses = '127.0.0.1'"
        echo "unix_socket_directories = '${sockdir//\'/\'\'}'"
        echo "max_connections = 200"
        echo "fsync = on"
        echo "synchronous_commit = on"
        echo "full_page_writes = off"
        echo "logging_collector = off"
        echo "log_min_messages = warning"
        echo "include 'loom_port.conf'"
    } | as_owner tee -a "$DATA/postgresql.conf" >/dev/null
}

set_port() {
    echo "port = $1" | as_owner tee "$DATA/loom_port.conf" >/dev/null
}

# pg_ctl_start: starts the server on a free port (the configured one when it
# is still free), retrying with another port if one was taken meanwhile.
pg_ctl_start() {
    local port attempt logsize
    port=$(conf_port)
    for ((attempt = 0; attempt < 5; attempt++)); do
        if [[ -z "$port" ]] || port_in_use "$port"; then
            port=$(free_port)
        fi
        set_port "$port"
        logsize=$(stat -c %s "$DIR/log" 2>/dev/null || echo 0)
        if as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/log" -w -t "$START_TIMEOUT" start \
                </dev/null >"$DIR/pg_ctl.log" 2>&1 && wait_answering "$port"; then
            write_uri "$port"
            return 0
        fi
        # another process took the port between the check and the bind
        if tail -c +$((logsize + 1)) "$DIR/log" 2>/dev/null | grep -q 'could not bind\|Address already in use'; then
            as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop </dev/null >/dev/null 2>&1 || true
            port=""
            continue
        fi
        break
    done
    echo "$PROG: the server in $DATA did not start" >&2
    show_logs
    exit 1
}

cmd_start() {
    local port
    port=$(uri_port)
    if [[ -n "$port" ]] && answers "$port"; then
        cat "$DIR/uri"
        return 0
    fi
    # A cluster left by an earlier run (stopped, or killed with the machine)
    # starts again; a half-made one (initdb interrupted) is made anew.
    if [[ ! -f "$DATA/PG_VERSION" || ! -f "$DATA/loom_port.conf" ]]; then
        init_cluster
    elif as_owner "$BIN/pg_ctl" -D "$DATA" status </dev/null >/dev/null 2>&1; then
        # running but not answering on the recorded port: stop it first
        as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop </dev/null >/dev/null 2>&1 || true
    fi
    pg_ctl_start
}

cmd_restart() {
    local port
    [[ -f "$DATA/PG_VERSION" ]] || die "no cluster in $DIR (run: $PROG start $DIR)"
    port=$(conf_port)
    [[ -n "$port" ]] || die "no port configured in $DATA/loom_port.conf"
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -l "$DIR/log" -w -t "$START_TIMEOUT" -m fast restart \
            </dev/null >"$DIR/pg_ctl.log" 2>&1; then
        echo "$PROG: restart of the server in $DATA failed" >&2
        show_logs
        exit 1
    fi
    wait_answering "$port" || { echo "$PROG: the server does not answer on port $port after the restart" >&2; show_logs; exit 1; }
}

cmd_stop() {
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        echo "$PROG: no cluster in $DIR; nothing to stop" >&2
        return 0
    fi
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" status </dev/null >/dev/null 2>&1; then
        return 0
    fi
    if ! as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w -t "$START_TIMEOUT" stop \
            </dev/null >"$DIR/pg_ctl.log" 2>&1; then
        echo "$PROG: stop of the server in $DATA failed" >&2
        show_logs
        exit 1
    fi
}

# The server outlives this script: it must not hold the caller's
# descriptors (a test's pipes to its runner, its sockets), so every one
# above stderr is closed first.
for fd in "/proc/$$/fd"/*; do
    fd=${fd##*/}
    if [[ $fd =~ ^[0-9]+$ ]] && ((fd > 2)); then
        eval "exec $fd>&-" 2>/dev/null || true
    fi
done

(($# == 2)) || usage
ACTION=$1
case $ACTION in
    start | stop | restart) ;;
    *) usage ;;
esac
[[ -n "$2" ]] || usage
if [[ $ACTION == start ]]; then
    mkdir -p "$2" || die "cannot create $2"
elif [[ ! -d "$2" ]]; then
    die "no cluster in $2 (no such directory)"
fi
DIR=$(cd "$2" && pwd)
DATA="$DIR/data"
BIN=$(find_bindir)
setup_owner

if ((${#AS[@]} > 0)); then
    chown "$RUN_AS" "$DIR" || die "cannot give $DIR to $RUN_AS"
    # a data directory root made or copied goes to the owner once; never
    # while a server runs in it (it creates and removes files meanwhile)
    if [[ -d "$DATA" && $(stat -c %U "$DATA") != "$RUN_AS" ]]; then
        chown -R "$RUN_AS" "$DATA" || die "cannot give $DATA to $RUN_AS"
    fi
    as_owner test -w "$DIR" -a -x "$DIR" ||
        die "$DIR is not reachable by the user $RUN_AS (a parent directory is closed to others?)"
fi
# the owner's commands run in DIR: the caller's directory may be closed to it
cd "$DIR"

exec 9>>"$DIR/lock"
flock -w 120 9 || die "timed out waiting for the lock on $DIR/lock"

case $ACTION in
    start) cmd_start ;;
    restart) cmd_restart ;;
    stop) cmd_stop ;;
esac
