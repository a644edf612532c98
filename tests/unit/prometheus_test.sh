#!/usr/bin/env bash
# prometheus_test.sh -- a real Prometheus (Debian's package) scrapes a real
# loomd while jobs run on the mock provider, and its HTTP API answers for
# the token and duration series: what an operator's Prometheus would see.
# Every wait is for the event itself with a deadline. Skipped, with the
# reason, only when the prometheus binary is absent. Prints TAP.
set -u
builddir=${LOOM_BUILDDIR:-.}
if ! command -v prometheus >/dev/null 2>&1; then
    echo "1..0 # SKIP prometheus is not installed (Debian package prometheus; scripts/deps installs it)"
    exit 0
fi
scratch=$(mktemp -d "${TMPDIR:-/tmp}/loom-prometheus-XXXXXX") || exit 1
loomd_pid= prom_pid= jobs_pid=
cleanup() {
    for p in $jobs_pid $prom_pid $loomd_pid; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    rm -rf "$scratch"
}
trap cleanup EXIT
echo "1..5"
failed=0
ok() { echo "ok $1 - $2"; }
not_ok() { echo "not ok $1 - $2"; failed=1; }
now() { date +%s; }

# GET URL (http://127.0.0.1:PORT/PATH) into stdout: the body; status 0 on
# a 200. bash's /dev/tcp, so that nothing but bash and coreutils is needed.
http_get() {
    local hostport=${1#http://} path
    path=/${hostport#*/}
    hostport=${hostport%%/*}
    { exec 9<>"/dev/tcp/${hostport%:*}/${hostport#*:}"; } 2>/dev/null || return 1
    printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$path" "$hostport" >&9
    local resp
    resp=$(timeout 10 cat <&9)
    exec 9>&-
    case $resp in "HTTP/1."?" 200"*) ;; *) return 1 ;; esac
    printf '%s\n' "${resp#*$'\r\n\r\n'}"
}

# loomd with the endpoint on a port of the system's choice (it logs which)
mkdir -p "$scratch/wf" "$scratch/state"
cat >"$scratch/loomd.yaml" <<EOF
socket: $scratch/loomd.sock
state: $scratch/state
workflows: $scratch/wf
providers:
  default: { plugin: mock, latency: 20ms }
metrics: { listen: "127.0.0.1:0" }
EOF
printf "loom: 1\nname: echo\ndo: { call: 'echo {{ input.text }}' }\n" >"$scratch/wf/echo.yaml"
"$builddir/loomd" --foreground --config "$scratch/loomd.yaml" >"$scratch/loomd.log" 2>&1 &
loomd_pid=$!
port=
deadline=$(($(now) + 15))
while [ -z "$port" ] && [ "$(now)" -le "$deadline" ] && kill -0 "$loomd_pid" 2>/dev/null; do
    port=$(sed -n 's/.*serving GET \/metrics on port \([0-9]*\).*/\1/p' "$scratch/loomd.log")
    [ -n "$port" ] || sleep 0.1
done
if [ -n "$port" ] && http_get "http://127.0.0.1:$port/metrics" | grep -q '^# TYPE gen_ai_client_token_usage histogram$'; then
    ok 1 "loomd serves /metrics on 127.0.0.1:$port"
else
    sed 's/^/# /' "$scratch/loomd.log"; not_ok 1 "loomd serves /metrics"
    exit 1
fi

# Prometheus scraping it every second, its API on a port below the
# ephemeral range (tried again on another if that one is taken)
cat >"$scratch/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: loomd
    static_configs:
      - targets: ["127.0.0.1:$port"]
EOF
ready=
for try in 1 2 3 4 5; do
    pport=$((20000 + ($$ * 7 + try * 997) % 10000))
    prometheus --config.file="$scratch/prometheus.yml" --storage.tsdb.path="$scratch/tsdb" \
        --web.listen-address="127.0.0.1:$pport" >"$scratch/prometheus.log" 2>&1 &
    prom_pid=$!
    deadline=$(($(now) + 30))
    while [ "$(now)" -le "$deadline" ] && kill -0 "$prom_pid" 2>/dev/null; do
        if http_get "http://127.0.0.1:$pport/-/ready" >/dev/null; then
            ready=1
            break
        fi
        sleep 0.2
    done
    [ -n "$ready" ] && break
    kill "$prom_pid" 2>/dev/null; wait "$prom_pid" 2>/dev/null; prom_pid=
    grep -q "address already in use" "$scratch/prometheus.log" || break
done
if [ -n "$ready" ]; then
    ok 2 "prometheus is ready on 127.0.0.1:$pport"
else
    sed 's/^/# /' "$scratch/prometheus.log"; not_ok 2 "prometheus starts"
    exit 1
fi

# jobs running all along, until the end of the test
(
    while :; do
        echo '{"text":"hi"}' | "$builddir/loomctl" submit --socket "$scratch/loomd.sock" \
            --input - --wait 10 echo >/dev/null 2>&1 || sleep 0.2
    done
) &
jobs_pid=$!

# QUERY (URL-encoded) until its result holds WANT, within 60 s: scrapes
# come every second, so the series show up within a few of them
query_until() {
    local q=$1 want=$2 body deadline=$(($(now) + 60))
    while [ "$(now)" -le "$deadline" ]; do
        body=$(http_get "http://127.0.0.1:$pport/api/v1/query?query=$q")
        case $body in *'"status":"success"'*"$want"*) return 0 ;; esac
        sleep 0.5
    done
    echo "# last answer to $q: $body"
    return 1
}

if query_until 'up%7Bjob%3D%22loomd%22%7D' '"value":[' &&
    query_until 'up%7Bjob%3D%22loomd%22%7D%3D%3D1' '"job":"loomd"'; then
    ok 3 "prometheus scrapes loomd (up == 1)"
else
    not_ok 3 "prometheus scrapes loomd"
fi
if query_until 'gen_ai_client_token_usage_count%7Bgen_ai_token_type%3D%22input%22%7D%3E0' \
        '"gen_ai_provider_name":"mock"'; then
    ok 4 "gen_ai_client_token_usage (input tokens) reaches prometheus"
else
    not_ok 4 "gen_ai_client_token_usage reaches prometheus"
fi
if query_until 'rate(gen_ai_client_operation_duration_seconds_count%5B5s%5D)%3E0' \
        '"loom_provider":"default"' &&
    query_until 'histogram_quantile(0.5%2Csum%20by%20(le)(gen_ai_client_operation_duration_seconds_bucket))%3E0' \
        '"value":['; then
    ok 5 "gen_ai_client_operation_duration_seconds grows and has a median while jobs run"
else
    not_ok 5 "gen_ai_client_operation_duration_seconds reaches prometheus"
fi
if [ $failed != 0 ]; then
    sed 's/^/# loomd: /' "$scratch/loomd.log" | tail -20
    sed 's/^/# prometheus: /' "$scratch/prometheus.log" | tail -20
fi
exit $failed
