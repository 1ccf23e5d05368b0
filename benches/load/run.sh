#!/usr/bin/env bash
# Load benchmark: teal beside nginx and HAProxy, same upstreams, same machine, interleaved.
#
#   benches/load/run.sh                          # throughput table (default: 16 64 256 conns)
#   CONNS="64" SECONDS_PER_RUN=10 ROUNDS=5 benches/load/run.sh
#   PIN=1 benches/load/run.sh                    # wrk on core 0, proxies on core 1 (taskset)
#   POST=1 benches/load/run.sh                   # POST a 22-byte JSON body instead of GET
#   MODE=idle benches/load/run.sh                # RSS/PSS with 50,000 idle keep-alive clients (IDLE=n)
#   MODE=tls CONNS="16 64" benches/load/run.sh   # HTTPS: teal-tls beside nginx-tls (see below)
#   MODE=storm benches/load/run.sh               # the switch storm (benches/switch_storm.sh)
#   MODE=h2c benches/load/run.sh                 # HTTP/2 from clients, h2c prior knowledge (h2load)
#   MODE=instructions benches/load/run.sh        # teal's instructions per request (callgrind)
#   TLS=1 MODE=instructions benches/load/run.sh  # the same over TLS: HTTP/1.1 and HTTP/2
#   LOG=1 MODE=instructions benches/load/run.sh  # also with the access log on (teal text, JSON; nginx)
#   BASELINE=/path/to/old/teal benches/load/run.sh   # adds "teal-base": an older build, interleaved
#   BASE_LOG=true BASELINE=... TARGETS="teal-log nginx-log" benches/load/run.sh   # teal-base logging
#   TARGETS="teal teal-mirror nginx" benches/load/run.sh   # teal copying 100% of GETs to a mirror pool
#   TARGETS="teal teal-cluster" CONNS="64" ROUNDS=5 SECONDS_PER_RUN=10 benches/load/run.sh   # [cluster] on etcd
#   TEAL=/path/to/teal BASELINE=/path/to/old MODE=instructions benches/load/run.sh   # both counted
#
# Upstreams: one nginx (1 worker) answering "blue\n" on two ports, identical for every target.
# Targets: teal (access log off), teal-canary (teal with a 50% canary, sticky = "cookie": wrk
# sends every request a fixed `Cookie: session=...; teal_bucket=42; theme=dark`, so each request
# pays for finding and parsing its bucket and goes to the canary pool, which has the same two
# upstream ports as blue), teal-log (its default access log, text, on stderr to a file), teal-json
# (the same as JSON; not in the default TARGETS), nginx
# (worker_processes auto, upstream keepalive, HTTP/1.1 upstream, Connection ""), nginx-log (its
# default `combined` access log line, to a file), HAProxy
# (nbthread 2, http-reuse always), and "direct" (wrk straight at one upstream: the ceiling).
# On request (TARGETS), teal-mirror: teal with [mirror] copying 100% of GETs to pool green (the
# upstream's third port, 18283), max_in_flight 1000; its CPU per request includes the copies.
# On request (TARGETS), teal-cluster: teal's config plus [cluster] on a single-node etcd started
# for it (127.0.0.1:18479, temporary data dir, prefix /teal/load): the shared state's watch and
# lease renewals run beside the traffic; its CPU per request is teal's alone (not etcd's).
# Each cell is the median over ROUNDS rounds; rounds run the targets in alternating order
# (A B C D, D C B A, ...) so drift on a shared machine hits everyone alike. Proxy CPU comes from
# /proc (utime+stime of the whole process tree), memory from /proc/*/smaps_rollup.
# MODE=tls: teal's [tls] listener beside an nginx `ssl` server block (http2, TLSv1.2 and 1.3),
# the same ECDSA P-256 certificate (made here with openssl), the same upstreams. Three kinds of
# run: keep-alive HTTP/1.1 over TLS (wrk https), new connections (wrk with `Connection: close`:
# both servers close after each response and wrk reconnects, and neither wrk nor h2load resumes
# sessions, so every request pays a full handshake; the "conn/req" column proves it from teal's
# teal_tls_handshakes_total and nginx's stub_status accepts), and HTTP/2 over TLS (h2load, 10
# streams per connection). Session resumption is alike on paper (teal: stateless tickets, rustls
# with ring; nginx: ssl_session_tickets on, no session cache) and unused by these clients.
# Loopback only; everything is bounded by SECONDS_PER_RUN. Installs wrk, nginx, haproxy if missing
# (and h2load from nghttp2-client for MODE=tls); etcd-server for teal-cluster.
set -euo pipefail
cd "$(dirname "$0")/../.."

MODE=${MODE:-throughput}
CONNS=${CONNS:-"16 64 256"}
DURATION=${SECONDS_PER_RUN:-5}
ROUNDS=${ROUNDS:-3}
TARGETS=${TARGETS:-"teal teal-canary teal-log nginx nginx-log haproxy direct"}
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ] && [[ " $TARGETS " != *" teal-base "* ]]; then TARGETS="teal teal-base ${TARGETS#teal }"; fi
WORK=$(mktemp -d /tmp/teal-load.XXXXXX)
TEAL=${TEAL:-$PWD/target/release/teal}
TICK=$(getconf CLK_TCK)

if [ "$MODE" = storm ]; then exec benches/switch_storm.sh; fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx || ! need haproxy || { [ "$MODE" = instructions ] && ! need valgrind; }; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light haproxy valgrind >/dev/null
fi
if [[ " $TARGETS " == *" teal-cluster "* ]] && ! need etcd; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
if { [ "$MODE" = tls ] || [ "$MODE" = h2c ]; } && ! need h2load; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null
fi
cargo build --release --quiet
# MODE=idle's clients: as many as one process may hold open files here, at most (the issue asks
# for 50,000; a machine whose hard limit `ulimit -Hn` is higher, or where root may raise it, runs
# IDLE=50000). teal and nginx need one descriptor per client; HAProxy reserves two per `maxconn`,
# so it gets at most (limit - 100) / 2 clients.
ulimit -n 1000000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
files=$(ulimit -n)
IDLE=${IDLE:-$((files > 51000 ? 50000 : files - 1000))}
IDLE_HAPROXY=$((IDLE < (files - 100) / 2 ? IDLE : (files - 100) / 2))
# Connection limits: what the throughput runs need, or MODE=idle's clients. nginx's per worker
# (it does not spread connections evenly), teal's and HAProxy's for the whole process.
conn_limit=20000
hap_maxconn=9000
if [ "$MODE" = idle ]; then conn_limit=$((IDLE + 1000)) hap_maxconn=$IDLE_HAPROXY; fi

wrk_script=""
if [ "${POST:-0}" = 1 ]; then
  cat >"$WORK/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"item": 10, "qty": 2}'
wrk.headers["Content-Type"] = "application/json"
EOF
  wrk_script="-s $WORK/post.lua"
fi
# teal-canary's requests carry a bucket cookie (as a returning browser's do), POST or not.
cat >"$WORK/canary.lua" <<'EOF'
wrk.headers["Cookie"] = "session=0123456789abcdef; teal_bucket=42; theme=dark"
EOF
if [ "${POST:-0}" = 1 ]; then cat "$WORK/post.lua" >>"$WORK/canary.lua"; fi
canary_script="-s $WORK/canary.lua"
pin_proxy=""
pin_wrk=""
if [ "${PIN:-0}" = 1 ]; then
  pin_wrk="taskset -c 0"
  pin_proxy="taskset -c 1"
fi

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in up px px-log px-tls px-h2c; do [ -f "$WORK/$c.pid" ] && nginx -c "$WORK/$c.conf" -s quit 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/up.conf" <<EOF
worker_processes 1;
pid $WORK/up.pid;
error_log $WORK/up.err;
events { worker_connections 20000; }
http {
  access_log off;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:18281; listen 127.0.0.1:18282; listen 127.0.0.1:18283; location / { return 200 "blue\n"; } }
}
EOF
cat >"$WORK/px.conf" <<EOF
worker_processes auto;
pid $WORK/px.pid;
error_log $WORK/px.err;
events { worker_connections $conn_limit; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream blue { server 127.0.0.1:18281; server 127.0.0.1:18282; keepalive 256; }
  server {
    listen 127.0.0.1:18290;
    location / { proxy_pass http://blue; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
# nginx-log: the same proxy writing its default access log line (`combined`) to a file, as
# teal-log writes its own. Log files live in a folder of their own (teal watches its config's
# folder) and are emptied before every run.
mkdir -p "$WORK/logs"
sed -e "s#access_log off;#access_log $WORK/logs/nginx-log.log;#" -e 's/18290/18289/' \
  -e "s#$WORK/px.pid#$WORK/px-log.pid#" "$WORK/px.conf" >"$WORK/px-log.conf"
cat >"$WORK/haproxy.cfg" <<EOF
global
  nbthread 2
  maxconn $hap_maxconn
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend fe
  bind 127.0.0.1:18291
  default_backend be
backend be
  balance roundrobin
  server s1 127.0.0.1:18281
  server s2 127.0.0.1:18282
EOF
teal_conf() { # $1 port $2 access [$3 more tables]; $GREEN: green's server
  cat <<EOF
active = "blue"
[proxy]
listen = "127.0.0.1:$1"
[admin]
listen = "127.0.0.1:$(($1 + 100))"
[log]
access = $2
[limits]
max_connections = $conn_limit
[pools.blue]
servers = ["127.0.0.1:18281", "127.0.0.1:18282"]
[pools.green]
servers = ["${GREEN:-127.0.0.1:18281}"]
${3:-}
EOF
}
teal_conf 18280 false >"$WORK/teal.toml"
teal_conf 18288 true >"$WORK/teal-log.toml"
teal_conf 18293 true | sed 's/^access = true$/access = true\nformat = "json"/' >"$WORK/teal-json.toml"
teal_conf 18286 "${BASE_LOG:-false}" >"$WORK/teal-base.toml"
teal_conf 18284 false | sed 's/^servers = \["127.0.0.1:18281"\]$/servers = ["127.0.0.1:18281", "127.0.0.1:18282"]/' >"$WORK/teal-canary.toml"
printf '[canary]\npool = "green"\npercent = 50\nsticky = "cookie"\n' >>"$WORK/teal-canary.toml"
GREEN=127.0.0.1:18283 teal_conf 18285 false $'[mirror]\npool = "green"\npercent = 100\nmax_in_flight = 1000' >"$WORK/teal-mirror.toml"
teal_conf 18292 false $'[cluster]\netcd = ["http://127.0.0.1:18479"]\nprefix = "/teal/load"' >"$WORK/teal-cluster.toml"

# Every server runs in a session of its own, as nginx does when it daemonizes and as a service
# or container does in production: with the kernel's autogroup scheduling (on by default) a
# process left in this script's session would share one CPU share with wrk, while nginx gets a
# whole one. (Started from here without setsid, teal measured about 15% fewer req/s at 64
# connections, with the machine idle 5 us per request instead of 1.) setsid execs in place, so $!
# is the server's pid.
nginx -c "$WORK/up.conf"
$pin_proxy nginx -c "$WORK/px.conf"
$pin_proxy nginx -c "$WORK/px-log.conf"
setsid $pin_proxy haproxy -q -f "$WORK/haproxy.cfg" &
pids+=($!)
TEAL_LOG=warn setsid $pin_proxy "$TEAL" run -c "$WORK/teal.toml" 2>/dev/null &
pids+=($!)
teal_pid=$!
TEAL_LOG=warn setsid $pin_proxy "$TEAL" run -c "$WORK/teal-canary.toml" 2>/dev/null &
pids+=($!)
teal_canary_pid=$!
TEAL_LOG=info setsid $pin_proxy "$TEAL" run -c "$WORK/teal-log.toml" >/dev/null 2>>"$WORK/logs/teal-log.log" &
pids+=($!)
teal_log_pid=$!
if [[ " $TARGETS " == *" teal-json "* ]]; then
  TEAL_LOG=info setsid $pin_proxy "$TEAL" run -c "$WORK/teal-json.toml" >/dev/null 2>>"$WORK/logs/teal-json.log" &
  pids+=($!)
  teal_json_pid=$!
fi
if [ -n "$BASELINE" ]; then
  if [ "${BASE_LOG:-false}" = true ]; then
    TEAL_LOG=info setsid $pin_proxy "$BASELINE" run -c "$WORK/teal-base.toml" >/dev/null 2>>"$WORK/logs/teal-base.log" &
  else
    TEAL_LOG=warn setsid $pin_proxy "$BASELINE" run -c "$WORK/teal-base.toml" 2>/dev/null &
  fi
  pids+=($!)
  teal_base_pid=$!
fi
if [[ " $TARGETS " == *" teal-mirror "* ]]; then
  TEAL_LOG=warn setsid $pin_proxy "$TEAL" run -c "$WORK/teal-mirror.toml" 2>/dev/null &
  pids+=($!)
  teal_mirror_pid=$!
fi
if [[ " $TARGETS " == *" teal-cluster "* ]]; then
  setsid etcd --name load --data-dir "$WORK/etcd" \
    --listen-client-urls http://127.0.0.1:18479 --advertise-client-urls http://127.0.0.1:18479 \
    --listen-peer-urls http://127.0.0.1:18480 --initial-advertise-peer-urls http://127.0.0.1:18480 \
    --initial-cluster load=http://127.0.0.1:18480 >"$WORK/etcd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 1 100); do curl -sf --max-time 1 127.0.0.1:18479/health | grep -q '"true"' && break; sleep 0.1; done
  TEAL_LOG=warn setsid $pin_proxy "$TEAL" run -c "$WORK/teal-cluster.toml" 2>/dev/null &
  pids+=($!)
  teal_cluster_pid=$!
  for _ in $(seq 1 100); do curl -sf --max-time 1 127.0.0.1:18392/status | grep -q '"connected":true' && break; sleep 0.1; done
  curl -sf 127.0.0.1:18392/status | grep -q '"connected":true' || { echo "teal-cluster is not connected to etcd"; exit 1; }
fi
haproxy_pid=${pids[0]}
if [ "$MODE" = tls ] || { [ "$MODE" = instructions ] && [ -n "${TLS:-}" ]; }; then
  # One certificate for both: ECDSA P-256, PKCS#8 key.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$WORK/tls.key" -out "$WORK/tls.pem" 2>/dev/null
  cat >"$WORK/px-tls.conf" <<EOF
worker_processes auto;
pid $WORK/px-tls.pid;
error_log $WORK/px-tls.err;
events { worker_connections $conn_limit; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream blue { server 127.0.0.1:18281; server 127.0.0.1:18282; keepalive 256; }
  server {
    listen 127.0.0.1:18444 ssl http2;
    ssl_certificate $WORK/tls.pem;
    ssl_certificate_key $WORK/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_tickets on;
    ssl_session_cache off;
    location / { proxy_pass http://blue; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server { listen 127.0.0.1:18445; location / { stub_status; } }
}
EOF
  tls_table=$(printf '[tls]\nlisten = "127.0.0.1:18443"\n[[tls.certs]]\ncert = "%s"\nkey = "%s"' "$WORK/tls.pem" "$WORK/tls.key")
  teal_conf 18287 false "$tls_table" >"$WORK/teal-tls.toml"
  $pin_proxy nginx -c "$WORK/px-tls.conf"
  TEAL_LOG=warn setsid $pin_proxy "$TEAL" run -c "$WORK/teal-tls.toml" 2>/dev/null &
  pids+=($!)
  teal_tls_pid=$!
fi
sleep 1

port_of() { case $1 in teal-tls) echo 18443 ;; nginx-tls) echo 18444 ;; teal) echo 18280 ;; teal-canary) echo 18284 ;; teal-mirror) echo 18285 ;; teal-cluster) echo 18292 ;; teal-base) echo 18286 ;; teal-log) echo 18288 ;; teal-json) echo 18293 ;; nginx) echo 18290 ;; nginx-log) echo 18289 ;; haproxy) echo 18291 ;; direct) echo 18281 ;; esac; }
pid_of() {
  case $1 in
    teal-tls) echo "$teal_tls_pid" ;; nginx-tls) cat "$WORK/px-tls.pid" ;;
    teal) echo "$teal_pid" ;; teal-canary) echo "$teal_canary_pid" ;; teal-mirror) echo "$teal_mirror_pid" ;; teal-cluster) echo "$teal_cluster_pid" ;; teal-base) echo "$teal_base_pid" ;; teal-log) echo "$teal_log_pid" ;; teal-json) echo "$teal_json_pid" ;;
    nginx) cat "$WORK/px.pid" ;; nginx-log) cat "$WORK/px-log.pid" ;; haproxy) echo "$haproxy_pid" ;; direct) cat "$WORK/up.pid" ;;
  esac
}
tree() { echo "$1"; pgrep -P "$1" || true; }
cpu_ticks() { # utime+stime of a process and its children
  local t=0
  for p in $(tree "$1"); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
user_ticks() { # utime alone: the proxy's own work, without the kernel's socket path
  local t=0
  for p in $(tree "$1"); do
    t=$((t + $(awk '{print $14}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
mem_kb() { # $1 pid, $2 Rss|Pss: summed over the tree
  local m=0
  for p in $(tree "$1"); do
    m=$((m + $(awk -v k="$2:" '$1==k{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
  done
  echo "$m"
}
for t in $TARGETS; do curl -sf "127.0.0.1:$(port_of "$t")/" >/dev/null || { echo "$t does not answer"; exit 1; }; done

if [ "$MODE" = instructions ]; then
  # Instructions executed in user space per request, counted by callgrind: unlike time on a shared
  # machine, this moves by well under 1% from run to run, so small changes show. teal runs with
  # its usual workers; nginx as one process (master_process off) with the same proxy config.
  sed -e 's/^worker_processes.*/master_process off; daemon off; worker_processes 1;/' \
    -e 's/18290/18271/' -e "s#$WORK/px.pid#$WORK/cgpx.pid#" "$WORK/px.conf" >"$WORK/cgpx.conf"
  teal_conf 18270 false >"$WORK/teal-cg.toml"
  teal_conf 18270 true >"$WORK/teal-cg-log.toml"
  teal_conf 18270 true | sed 's/^access = true$/access = true\nformat = "json"/' >"$WORK/teal-cg-json.toml"
  # The logs go to files in a folder of their own: teal watches its config's folder, and a log
  # written there would wake that watcher on every line.
  mkdir -p "$WORK/logs"
  sed -e 's#access_log off;#access_log '"$WORK"'/logs/cg-nginx-access.log;#' "$WORK/cgpx.conf" >"$WORK/cgpx-log.conf"
  # instructions NAME URL [KIND] -- COMMAND: KIND is wrk (keep-alive HTTP/1.1, the default) or
  # h2 (h2load, 16 connections of 10 streams, a fixed count of requests).
  instructions() {
    local name=$1 url=$2 kind=wrk cg out n ir
    shift 2
    if [ "$1" != -- ]; then kind=$1; shift; fi
    shift
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$name.%p" --log-file="$WORK/cg.$name.log" \
      "$@" >/dev/null 2>"$WORK/logs/cg.$name.out" &
    cg=$!
    for _ in $(seq 1 100); do curl -skf "$url" >/dev/null && break; sleep 0.3; done
    wrk -t1 -c16 -d2s "$url" >/dev/null # fill the upstream connection pools
    callgrind_control -z "$cg" >/dev/null 2>&1
    if [ "$kind" = h2 ]; then
      out=$(h2load -t1 -c16 -m10 -n$((DURATION * 2000)) "$url")
      n=$(awk '/^requests:/{print $8}' <<<"$out")
    else
      out=$(wrk -t1 -c16 -d"${DURATION}s" "$url")
      n=$(awk '/requests in/{print $1}' <<<"$out")
    fi
    callgrind_control -d "$cg" >/dev/null 2>&1
    sleep 1
    kill "$cg"
    wait "$cg" 2>/dev/null || true
    ir=$(cat "$WORK"/cg."$name".*.1 | awk '/^totals:/{s+=$2} END{print s}')
    rm -f "$WORK"/cg."$name".*
    printf '%-10s %8s requests %14s instructions %8s per request\n' "$name" "$n" "$ir" "$((ir / n))"
  }
  if [ -n "${TLS:-}" ]; then
    # The same over TLS: keep-alive HTTP/1.1 (wrk) and HTTP/2 (h2load), teal and nginx each on
    # one process, the same certificate.
    sed -e 's/^worker_processes.*/master_process off; daemon off; worker_processes 1;/' \
      -e 's/18444/18454/' -e 's/18445/18455/' -e "s#$WORK/px-tls.pid#$WORK/cgtls.pid#" "$WORK/px-tls.conf" >"$WORK/cgtls.conf"
    sed -e 's/18443/18453/' -e 's/18287/18297/' -e 's/18387/18397/' "$WORK/teal-tls.toml" >"$WORK/teal-cgtls.toml"
    echo "instructions per request under callgrind, over TLS (wrk -t1 -c16 ${DURATION}s; h2load -c16 -m10)"
    TEAL_LOG=warn instructions teal-h1 https://127.0.0.1:18453/ -- "$TEAL" run -c "$WORK/teal-cgtls.toml"
    instructions nginx-h1 https://127.0.0.1:18454/ -- nginx -c "$WORK/cgtls.conf"
    TEAL_LOG=warn instructions teal-h2 https://127.0.0.1:18453/ h2 -- "$TEAL" run -c "$WORK/teal-cgtls.toml"
    instructions nginx-h2 https://127.0.0.1:18454/ h2 -- nginx -c "$WORK/cgtls.conf"
    exit 0
  fi
  echo "instructions per request under callgrind (wrk -t1 -c16, ${DURATION}s)"
  TEAL_LOG=warn instructions teal http://127.0.0.1:18270/ -- "$TEAL" run -c "$WORK/teal-cg.toml"
  if [ -n "$BASELINE" ]; then TEAL_LOG=warn instructions base http://127.0.0.1:18270/ -- "$BASELINE" run -c "$WORK/teal-cg.toml"; fi
  instructions nginx http://127.0.0.1:18271/ -- nginx -c "$WORK/cgpx.conf"
  if [ -n "${LOG:-}" ]; then
    # The access log on, as shipped: teal's text and JSON lines (to a file, through stderr) and
    # nginx's default `combined` line to a file. The difference to the rows above is the line.
    TEAL_LOG=info instructions teal-log http://127.0.0.1:18270/ -- "$TEAL" run -c "$WORK/teal-cg-log.toml"
    TEAL_LOG=info instructions teal-json http://127.0.0.1:18270/ -- "$TEAL" run -c "$WORK/teal-cg-json.toml"
    if [ -n "$BASELINE" ]; then TEAL_LOG=info instructions base-log http://127.0.0.1:18270/ -- "$BASELINE" run -c "$WORK/teal-cg-log.toml"; fi
    instructions nginx-log http://127.0.0.1:18271/ -- nginx -c "$WORK/cgpx-log.conf"
  fi
  exit 0
fi

if [ "$MODE" = idle ]; then
  # IDLE clients (default 50,000), each with one request answered and then idle on its kept-alive
  # connection, from source addresses 127.0.1.1, 127.0.1.2, ... (20,000 each: one source address
  # has about 28,000 ephemeral ports towards one listener).
  echo "idle: $IDLE kept-alive client connections (one request each, then idle; open files: $files)"
  printf '%-9s %8s %10s %10s %10s %12s\n' target clients "RSS before" "RSS after" "PSS after" "KB per conn"
  net=0
  for t in teal nginx haproxy; do
    pid=$(pid_of "$t")
    n=$IDLE
    if [ "$t" = haproxy ]; then n=$IDLE_HAPROXY; fi
    before=$(mem_kb "$pid" Rss)
    python3 - "$(port_of "$t")" "$WORK/idle.$t" "$n" "$((++net))" <<'PY' &
import os, socket, sys, time
port, flag, count, net = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
socks = []
deadline = time.time() + 300
for i in range(count):
    s = socket.socket()
    # The port is picked at connect, unique per destination (IP_BIND_ADDRESS_NO_PORT); each
    # target's clients come from addresses of their own (127.0.<net>.x), clear of the last
    # target's connections in TIME_WAIT.
    s.setsockopt(socket.IPPROTO_IP, 24, 1)
    s.bind((f"127.0.{net}.{1 + i // 20000}", 0))
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = s.recv(4096)
    if not answer.startswith(b"HTTP/1.1 200"):
        sys.exit(f"client {i}: {answer[:80]!r}")
    socks.append(s)
    if time.time() > deadline:
        sys.exit(f"only {i + 1} clients connected in 300 s")
open(flag, "w").close()
deadline = time.time() + 120
while not os.path.exists(flag + ".done") and time.time() < deadline:
    time.sleep(0.1)
PY
    holder=$!
    for _ in $(seq 1 3000); do [ -f "$WORK/idle.$t" ] && break; kill -0 "$holder" 2>/dev/null || break; sleep 0.1; done
    [ -f "$WORK/idle.$t" ] || { echo "$t: the idle clients did not all connect"; exit 1; }
    sleep 2
    after=$(mem_kb "$pid" Rss)
    pss=$(mem_kb "$pid" Pss)
    touch "$WORK/idle.$t.done"
    wait "$holder" || true
    printf '%-9s %8s %7s KB %7s KB %7s KB %12s\n' "$t" "$n" "$before" "$after" "$pss" \
      "$(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN{printf "%.2f", (a-b)/n}')"
    sleep 2 # the connections close before the next target's turn
  done
  exit 0
fi

median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }

if [ "$MODE" = h2c ]; then
  # HTTP/2 from clients without TLS (prior knowledge, as h2load and gRPC clients speak it) to
  # teal's plain listener, nginx (`listen ... http2`) and HAProxy (`bind ... proto h2`), each
  # proxying to the same HTTP/1.1 upstreams. h2load: 2 threads, CONNS connections (default 16),
  # STREAMS concurrent streams per connection (default "1 16 100"); p99 from its per-request log.
  H2_CONNS=${CONNS:-16}
  [ "$H2_CONNS" = "16 64 256" ] && H2_CONNS=16
  sed -e 's#listen 127.0.0.1:18290;#listen 127.0.0.1:18294 http2;#' \
    -e "s#$WORK/px.pid#$WORK/px-h2c.pid#" "$WORK/px.conf" >"$WORK/px-h2c.conf"
  nginx -c "$WORK/px-h2c.conf"
  sed -e 's#bind 127.0.0.1:18291#bind 127.0.0.1:18295 proto h2#' "$WORK/haproxy.cfg" >"$WORK/haproxy-h2c.cfg"
  setsid $pin_proxy haproxy -q -f "$WORK/haproxy-h2c.cfg" &
  pids+=($!)
  haproxy_h2c_pid=$!
  sleep 1
  h2c_port() { case $1 in teal) echo 18280 ;; nginx) echo 18294 ;; haproxy) echo 18295 ;; esac; }
  h2c_pid() { case $1 in teal) echo "$teal_pid" ;; nginx) cat "$WORK/px-h2c.pid" ;; haproxy) echo "$haproxy_h2c_pid" ;; esac; }
  # h2c_run TARGET STREAMS: "req/s p50_ms p99_ms errors cpu_us_per_req rss_kb"
  h2c_run() {
    local t=$1 m=$2 pid c0 c1 out reqs errs
    pid=$(h2c_pid "$t")
    rm -f "$WORK/logs/h2c.log"
    c0=$(cpu_ticks "$pid")
    out=$($pin_wrk h2load -t2 -c"$H2_CONNS" -m"$m" -D"$DURATION" --log-file="$WORK/logs/h2c.log" \
      "http://127.0.0.1:$(h2c_port "$t")/" 2>&1)
    c1=$(cpu_ticks "$pid")
    grep -q "Application protocol: h2c" <<<"$out" || { echo "$t: not h2c: $out" >&2; exit 1; }
    reqs=$(awk '/^requests:/{print $8}' <<<"$out")
    errs=$(awk '/^requests:/{print $10 + $12 + $14}' <<<"$out")
    awk -F'\t' '$2 != 200 {bad++} {print $3} END{if (bad) print "non-200: " bad > "/dev/stderr"}' "$WORK/logs/h2c.log" |
      sort -n | awk -v r="$reqs" -v d="$DURATION" -v e="$errs" -v t=$((c1 - c0)) -v tk="$TICK" -v m="$(mem_kb "$pid" Rss)" \
        '{a[NR]=$1} END{printf "%.0f %.3f %.3f %s %.1f %s\n", r / d, a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000, e, t / tk * 1e6 / r, m}'
  }
  for t in teal nginx haproxy; do
    curl -sf --http2-prior-knowledge "http://127.0.0.1:$(h2c_port "$t")/" >/dev/null || { echo "$t does not answer h2c"; exit 1; }
  done
  STREAMS=${STREAMS:-"1 16 100"}
  echo "h2c: h2load -t2 -c$H2_CONNS, ${DURATION}s per run, $ROUNDS rounds (interleaved), streams: $STREAMS${PIN:+, pinned}"
  for m in $STREAMS; do
    order=(teal nginx haproxy)
    for r in $(seq 1 "$ROUNDS"); do
      for t in "${order[@]}"; do h2c_run "$t" "$m" >>"$WORK/h2c.$t.$m"; done
      mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
    done
  done
  printf '\n%-8s %7s %10s %8s %8s %6s %9s %7s %7s %7s\n' target streams req/s p50ms p99ms errors "cpu us/r" RSS_MB "x rps" "x cpu"
  for m in $STREAMS; do
    nginx_rps=$(cut -d' ' -f1 "$WORK/h2c.nginx.$m" | median)
    nginx_cpu=$(cut -d' ' -f5 "$WORK/h2c.nginx.$m" | median)
    for t in teal nginx haproxy; do
      f="$WORK/h2c.$t.$m"
      rps=$(cut -d' ' -f1 "$f" | median)
      printf '%-8s %7s %10.0f %8s %8s %6s %9s %7.1f %7.2f %7.2f\n' "$t" "$m" "$rps" \
        "$(cut -d' ' -f2 "$f" | median)" "$(cut -d' ' -f3 "$f" | median)" \
        "$(cut -d' ' -f4 "$f" | awk '{s+=$1} END{print s}')" "$(cut -d' ' -f5 "$f" | median)" \
        "$(cut -d' ' -f6 "$f" | median | awk '{print $1/1024}')" \
        "$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')" \
        "$(cut -d' ' -f5 "$f" | median | awk -v b="$nginx_cpu" '{printf "%.2f", (b>0)?$1/b:0}')"
    done
  done
  exit 0
fi

if [ "$MODE" = tls ]; then
  connections() { # connections made so far: teal's completed handshakes, nginx's accepts
    case $1 in
      teal-tls) curl -s 127.0.0.1:18387/metrics | awk '/^teal_tls_handshakes_total\{outcome="ok"\}/{print $2}' ;;
      nginx-tls) curl -s 127.0.0.1:18445/ | awk 'NR==3{print $1}' ;;
    esac
  }
  # tls_run KIND TARGET CONNS: one run; prints "rps errors cpu_us_per_req rss_kb conns_per_req"
  tls_run() {
    local kind=$1 t=$2 c=$3 url pid c0 c1 n0 n1 out rps reqs errs
    url="https://127.0.0.1:$(port_of "$t")/"
    pid=$(pid_of "$t")
    n0=$(connections "$t")
    c0=$(cpu_ticks "$pid")
    case $kind in
      keepalive) out=$($pin_wrk wrk -t2 -c"$c" -d"${DURATION}s" "$url" 2>&1) ;;
      newconn) out=$($pin_wrk wrk -t2 -c"$c" -d"${DURATION}s" -H "Connection: close" "$url" 2>&1) ;;
      h2) out=$($pin_wrk h2load -t2 -c"$c" -m10 -D"$DURATION" "$url" 2>&1) ;;
    esac
    c1=$(cpu_ticks "$pid")
    n1=$(connections "$t")
    if [ "$kind" = h2 ]; then
      grep -q "Application protocol: h2" <<<"$out" || { echo "$t: not h2: $out" >&2; exit 1; }
      reqs=$(awk '/^requests:/{print $8}' <<<"$out")
      rps=$(awk -v n="$reqs" -v d="$DURATION" 'BEGIN{print n / d}')
      errs=$(awk '/^requests:/{print $10 + $12 + $14}' <<<"$out")
    else
      rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
      reqs=$(awk '/requests in/{print $1}' <<<"$out")
      errs=$(awk -F'[ ,]+' '/Socket errors/{s=$5+$7+$9+$11} /Non-2xx/{s+=$NF} END{print s+0}' <<<"$out")
    fi
    awk -v r="$rps" -v e="$errs" -v d=$((c1 - c0)) -v tk="$TICK" -v n="$reqs" -v m="$(mem_kb "$pid" Rss)" \
      -v k=$((n1 - n0)) 'BEGIN{printf "%s %s %.1f %s %.3f\n", r, e, d / tk * 1e6 / n, m, k / n}'
  }
  for t in teal-tls nginx-tls; do curl -skf "https://127.0.0.1:$(port_of "$t")/" >/dev/null || { echo "$t does not answer"; exit 1; }; done
  echo "tls: ${DURATION}s per run, $ROUNDS rounds (interleaved), conns: $CONNS${PIN:+, pinned}"
  for kind in keepalive newconn h2; do
    for c in $CONNS; do
      order=(teal-tls nginx-tls)
      for r in $(seq 1 "$ROUNDS"); do
        for t in "${order[@]}"; do tls_run "$kind" "$t" "$c" >>"$WORK/$kind.$t.$c"; done
        mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
      done
    done
  done
  printf '\n%-9s %-10s %5s %10s %6s %9s %8s %8s %8s %8s\n' kind target conns req/s errors "cpu us/r" RSS_MB conn/req "x rps" "x cpu"
  for kind in keepalive newconn h2; do
    for c in $CONNS; do
      nginx_rps=$(cut -d' ' -f1 "$WORK/$kind.nginx-tls.$c" | median)
      nginx_cpu=$(cut -d' ' -f3 "$WORK/$kind.nginx-tls.$c" | median)
      for t in teal-tls nginx-tls; do
        f="$WORK/$kind.$t.$c"
        rps=$(cut -d' ' -f1 "$f" | median)
        errs=$(cut -d' ' -f2 "$f" | awk '{s+=$1} END{print s}')
        cpu=$(cut -d' ' -f3 "$f" | median)
        rss=$(cut -d' ' -f4 "$f" | median)
        per=$(cut -d' ' -f5 "$f" | median)
        printf '%-9s %-10s %5s %10.0f %6s %9s %8.1f %8s %8.2f %8.2f\n' "$kind" "$t" "$c" "$rps" "$errs" "$cpu" \
          "$(awk -v r="$rss" 'BEGIN{print r/1024}')" "$per" \
          "$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')" \
          "$(awk -v a="$cpu" -v b="$nginx_cpu" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')"
      done
    done
  done
  exit 0
fi

# run TARGET CONNS: one wrk run; prints "rps p50_ms p99_ms errors cpu_us_per_req rss_kb
# user_us_per_req"
run() {
  local t=$1 c=$2 port pid c0 c1 u0 u1 out script=$wrk_script
  if [ "$t" = teal-canary ]; then script=$canary_script; fi
  port=$(port_of "$t")
  pid=$(pid_of "$t")
  for f in "$WORK"/logs/*.log; do : >"$f"; done
  c0=$(cpu_ticks "$pid")
  u0=$(user_ticks "$pid")
  out=$($pin_wrk wrk -t2 -c"$c" -d"${DURATION}s" --latency $script "http://127.0.0.1:$port/" 2>&1)
  c1=$(cpu_ticks "$pid")
  u1=$(user_ticks "$pid")
  local rps reqs p50 p99 errs rss
  rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
  reqs=$(awk '/requests in/{print $1}' <<<"$out")
  p50=$(awk '$1=="50%"{print $2}' <<<"$out")
  p99=$(awk '$1=="99%"{print $2}' <<<"$out")
  errs=$(awk -F'[ ,]+' '/Socket errors/{s=$5+$7+$9+$11} /Non-2xx/{s+=$NF} END{print s+0}' <<<"$out")
  rss=$(mem_kb "$pid" Rss)
  local cpu_us
  cpu_us=$(awk -v d=$((c1 - c0)) -v tk="$TICK" -v n="$reqs" 'BEGIN{printf "%.1f", d / tk * 1e6 / n}')
  user_us=$(awk -v d=$((u1 - u0)) -v tk="$TICK" -v n="$reqs" 'BEGIN{printf "%.2f", d / tk * 1e6 / n}')
  echo "$rps $(to_ms "$p50") $(to_ms "$p99") $errs $cpu_us $rss $user_us"
}
to_ms() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us/,"",v); printf "%.3f", v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v); printf "%.3f", v} else {sub(/s/,"",v); printf "%.3f", v*1000} }'; }

echo "load: wrk -t2, ${DURATION}s per run, $ROUNDS rounds (interleaved), conns: $CONNS${PIN:+, pinned}${wrk_script:+, POST}"
for c in $CONNS; do
  order=($TARGETS)
  for r in $(seq 1 "$ROUNDS"); do
    for t in "${order[@]}"; do run "$t" "$c" >>"$WORK/$t.$c"; done
    mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
  done
done

printf '\n%-12s %5s %10s %8s %8s %6s %9s %8s %8s %8s %9s %7s\n' target conns req/s p50ms p99ms errors "cpu us/r" RSS_MB "x rps" "x cpu" "user us/r" "x user"
for c in $CONNS; do
  nginx_rps=$(cut -d' ' -f1 "$WORK/nginx.$c" 2>/dev/null | median || echo 0)
  nginx_cpu=$(cut -d' ' -f5 "$WORK/nginx.$c" 2>/dev/null | median || echo 0)
  nginx_user=$(cut -d' ' -f7 "$WORK/nginx.$c" 2>/dev/null | median || echo 0)
  for t in $TARGETS; do
    f="$WORK/$t.$c"
    rps=$(cut -d' ' -f1 "$f" | median)
    p50=$(cut -d' ' -f2 "$f" | median)
    p99=$(cut -d' ' -f3 "$f" | median)
    errs=$(cut -d' ' -f4 "$f" | awk '{s+=$1} END{print s}')
    cpu=$(cut -d' ' -f5 "$f" | median)
    rss=$(cut -d' ' -f6 "$f" | median)
    user=$(cut -d' ' -f7 "$f" | median)
    printf '%-12s %5s %10.0f %8s %8s %6s %9s %8.1f %8.2f %8s %9s %7s\n' "$t" "$c" "$rps" "$p50" "$p99" "$errs" "$cpu" \
      "$(awk -v r="$rss" 'BEGIN{print r/1024}')" "$(awk -v a="$rps" -v b="$nginx_rps" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')" \
      "$(awk -v a="$cpu" -v b="$nginx_cpu" 'BEGIN{if (b>0 && a>0) printf "%.2f", a/b; else print "-"}')" "$user" \
      "$(awk -v a="$user" -v b="$nginx_user" 'BEGIN{if (b>0 && a>0) printf "%.2f", a/b; else print "-"}')"
  done
done
