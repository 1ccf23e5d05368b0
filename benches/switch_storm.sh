#!/usr/bin/env bash
# Switch storm benchmark: what a switch costs, teal beside nginx.
#
# The same four upstreams (one nginx answering "blue" on two ports and "green" on two more) sit
# behind teal and behind nginx. wrk drives keep-alive load at the proxy for SECONDS; a second loop
# flips the live pool once a second: `POST /switch` for teal, and for nginx the seed's procedure
# (swap the config, `nginx -s reload`). Each target also runs once without switching, as the
# baseline. Prints requests, failures (socket errors + non-2xx) and p99 latency per row.
#
#   benches/switch_storm.sh                 # 60 s per row at 64 connections
#   SECONDS_PER_ROW=10 CONNECTIONS=32 benches/switch_storm.sh
#
# Loopback only; every loop is bounded by SECONDS_PER_ROW. Installs wrk and nginx if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${SECONDS_PER_ROW:-60}
CONNS=${CONNECTIONS:-64}
WORK=$(mktemp -d /tmp/teal-storm.XXXXXX)
TEAL=target/release/teal

need() { command -v "$1" >/dev/null 2>&1; }
if ! need wrk || ! need nginx; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
cargo build --release --quiet

cleanup() {
  [ -f "$WORK/teal.pid" ] && kill "$(cat "$WORK/teal.pid")" 2>/dev/null || true
  for c in up px; do [ -f "$WORK/$c.pid" ] && nginx -c "$WORK/$c.conf" -s quit 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/up.conf" <<EOF
worker_processes 1;
pid $WORK/up.pid;
error_log $WORK/up.err;
events { worker_connections 4096; }
http {
  access_log off;
  server { listen 127.0.0.1:18181; listen 127.0.0.1:18182; location / { return 200 "blue\n"; } }
  server { listen 127.0.0.1:18183; listen 127.0.0.1:18184; location / { return 200 "green\n"; } }
}
EOF

proxy_conf() { # $1 = live pool
  cat <<EOF
worker_processes auto;
pid $WORK/px.pid;
error_log $WORK/px.err;
events { worker_connections 4096; }
http {
  access_log off;
  upstream blue  { server 127.0.0.1:18181; server 127.0.0.1:18182; keepalive 128; }
  upstream green { server 127.0.0.1:18183; server 127.0.0.1:18184; keepalive 128; }
  server {
    listen 127.0.0.1:18190;
    location / { proxy_pass http://$1; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
EOF
}
proxy_conf blue >"$WORK/px-blue.conf"
proxy_conf green >"$WORK/px-green.conf"
cp "$WORK/px-blue.conf" "$WORK/px.conf"

cat >"$WORK/teal.toml" <<EOF
active = "blue"
[proxy]
listen = "127.0.0.1:18180"
[admin]
listen = "127.0.0.1:18199"
[log]
access = false
[pools.blue]
servers = ["127.0.0.1:18181", "127.0.0.1:18182"]
[pools.green]
servers = ["127.0.0.1:18183", "127.0.0.1:18184"]
EOF

nginx -c "$WORK/up.conf"
nginx -c "$WORK/px.conf"
TEAL_LOG=warn setsid "$TEAL" run -c "$WORK/teal.toml" 2>"$WORK/teal.err" & # its own session, as nginx (see load/run.sh)
echo $! >"$WORK/teal.pid"
sleep 1
curl -sf 127.0.0.1:18180/ >/dev/null && curl -sf 127.0.0.1:18190/ >/dev/null

switch_teal() { curl -sf -X POST 127.0.0.1:18199/switch >/dev/null; }
nginx_live=blue
switch_nginx() {
  if [ "$nginx_live" = blue ]; then nginx_live=green; else nginx_live=blue; fi
  cp "$WORK/px-$nginx_live.conf" "$WORK/px.conf"
  nginx -c "$WORK/px.conf" -s reload 2>/dev/null
}

# row NAME PORT SWITCHER: wrk for DURATION seconds, SWITCHER (or none) once a second meanwhile.
row() {
  local name=$1 port=$2 switcher=$3 switches=0
  wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port/" >"$WORK/wrk.out" 2>&1 &
  local wrk_pid=$!
  if [ "$switcher" != none ]; then
    for _ in $(seq 1 $((DURATION - 1))); do
      sleep 1
      $switcher && switches=$((switches + 1))
    done
  fi
  wait "$wrk_pid"
  local reqs errs non2xx p99
  reqs=$(awk '/requests in/{print $1}' "$WORK/wrk.out")
  errs=$(awk -F'[ ,]+' '/Socket errors/{print $5+$7+$9+$11}' "$WORK/wrk.out")
  non2xx=$(awk '/Non-2xx/{print $NF}' "$WORK/wrk.out")
  p99=$(awk '$1=="99%"{print $2}' "$WORK/wrk.out")
  printf '%-7s %-10s %8s %10s %9s %10s\n' "$name" "$switches" "$reqs" "$(( ${errs:-0} + ${non2xx:-0} ))" "$p99" \
    "$(awk '/Socket errors/{$1=$2="";print}' "$WORK/wrk.out" | tr -s ' ')"
}

echo "switch storm: ${DURATION}s per row, ${CONNS} keep-alive connections (wrk -t2), switch once a second"
printf '%-7s %-10s %8s %10s %9s %s\n' target switches requests failures p99 "socket errors"
row teal 18180 none
row teal 18180 switch_teal
row nginx 18190 none
row nginx 18190 switch_nginx
