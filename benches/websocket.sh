#!/usr/bin/env bash
# WebSockets through each proxy and straight to the upstream (issue 19, targets 6 and 3):
# message relay throughput, the latency a proxy adds to an echo round trip, and the memory of
# thousands of idle WebSockets.
#
#   benches/websocket.sh                          # ROUNDS=5 (medians), all three parts
#   ROUNDS=5 SECS=5 CONNS=100 benches/websocket.sh
#   PARTS="idle" IDLE_CONNS=9900 benches/websocket.sh
#   TARGETS="teal nginx direct" benches/websocket.sh   # without HAProxy
#   BASELINE=/path/to/old/teal benches/websocket.sh    # adds "teal-base": an older build, interleaved
#
# Upstream: the echo mode of benches/websocket.rs (tokio-tungstenite, every data message sent
# back). Targets: teal (release build, access log off, [limits] max_connections raised), nginx
# (worker_processes auto, proxy_http_version 1.1, Upgrade/Connection "upgrade", long
# proxy_read_timeout), HAProxy (nbthread 2, timeout tunnel 1h), and "direct" (the client straight
# at the echo upstream). Clients: the same tool.
# - relay: CONNS connections (default 100), each with WINDOW messages (default 4) of SIZE bytes
#   (default 32) in flight, for SECS seconds (default 5): echoed messages per second, and the
#   proxy's CPU time (utime+stime of its process tree, from /proc) per message.
# - latency: LAT_CONNS connection(s) (default 1), LAT_ROUNDS round trips (default 5000) one at a
#   time: p50/p99 in microseconds, and what the proxy adds to straight's.
# - idle: IDLE_CONNS WebSockets opened (handshake done) and held; the proxy's RSS (summed over its
#   process tree, from /proc/*/smaps_rollup) before and 2 s after all are open; KB per WebSocket
#   is the difference over IDLE_CONNS: each tunnel is a client socket, an upstream socket and
#   whatever buffers and state the proxy keeps for them (kernel socket buffers are not in RSS).
#   One run per target (not interleaved: each run holds thousands of sockets).
#   Default: 10,000, or fewer when the open-file limit cannot hold two sockets per tunnel in one
#   process (teal is one process; the hard limit here was 20,000, so 9,900).
# Rounds of relay and latency run the targets in alternating order (A B C D, D C B A, ...) so
# drift on a shared machine hits everyone alike. Loopback only; every run is bounded by SECS or a
# count.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-5}
SECS=${SECS:-5}
CONNS=${CONNS:-100}
WINDOW=${WINDOW:-4}
SIZE=${SIZE:-32}
LAT_CONNS=${LAT_CONNS:-1}
LAT_ROUNDS=${LAT_ROUNDS:-5000}
PARTS=${PARTS:-"relay latency idle"}
TARGETS=${TARGETS:-"teal nginx haproxy direct"}
WORK=$(mktemp -d /tmp/teal-ws.XXXXXX)
TEAL=${TEAL:-$PWD/target/release/teal}
BASELINE=${BASELINE:-}
if [ -n "$BASELINE" ] && [[ " $TARGETS " != *" teal-base "* ]]; then TARGETS="teal teal-base ${TARGETS#teal }"; fi

need() { command -v "$1" >/dev/null 2>&1; }
if ! need nginx || { [[ " $TARGETS " == *" haproxy "* ]] && ! need haproxy; }; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light haproxy >/dev/null
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
LIMIT=$(ulimit -n)
IDLE_CONNS=${IDLE_CONNS:-$(( (LIMIT - 200) / 2 < 10000 ? (LIMIT - 200) / 2 / 100 * 100 : 10000 ))}
cargo build --release --quiet
WS=$(cargo bench --bench websocket --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "websocket" and m.get("executable"): print(m["executable"])')
[ -x "$WS" ] || { echo "could not build benches/websocket.rs" >&2; exit 1; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/px.pid" ] && nginx -c "$WORK/px.conf" -s quit 2>/dev/null || true
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/px.conf" <<CONF
worker_processes auto;
worker_rlimit_nofile $LIMIT;
pid $WORK/px.pid;
error_log $WORK/px.err;
events { worker_connections $LIMIT; }
http {
  access_log off;
  upstream echo { server 127.0.0.1:24781; }
  server {
    listen 127.0.0.1:24790;
    location / {
      proxy_pass http://echo;
      proxy_http_version 1.1;
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }
  }
}
CONF
cat >"$WORK/haproxy.cfg" <<CONF
global
  nbthread 2
  maxconn $((LIMIT / 2 - 50))
defaults
  mode http
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  timeout tunnel 1h
frontend fe
  bind 127.0.0.1:24791
  default_backend be
backend be
  server s1 127.0.0.1:24781
CONF
cat >"$WORK/teal.toml" <<CONF
active = "blue"
[proxy]
listen = "127.0.0.1:24780"
[admin]
listen = "127.0.0.1:24880"
[log]
access = false
[limits]
max_connections = 40000
[pools.blue]
servers = ["127.0.0.1:24781"]
CONF

sed -e 's/24780/24783/' -e 's/24880/24883/' "$WORK/teal.toml" >"$WORK/teal-base.toml"

# teal listens with SO_REUSEPORT, so a port another program holds would not fail: check first.
for port in 24780 24781 24783 24790 24791 24880 24883; do
  if ss -ltn | awk '{print $4}' | grep -q ":$port\$"; then echo "port $port is taken" >&2; exit 1; fi
done

# Every server in a session of its own (see benches/load/run.sh); setsid execs in place, so $!
# is the server's pid.
setsid "$WS" echo 127.0.0.1:24781 2>"$WORK/echo.err" &
pids+=($!)
echo_pid=$!
nginx -c "$WORK/px.conf"
TEAL_LOG=warn setsid "$TEAL" run -c "$WORK/teal.toml" 2>"$WORK/teal.err" &
pids+=($!)
teal_pid=$!
teal_base_pid=""
if [ -n "$BASELINE" ]; then
  TEAL_LOG=warn setsid "$BASELINE" run -c "$WORK/teal-base.toml" 2>"$WORK/teal-base.err" &
  pids+=($!)
  teal_base_pid=$!
fi
haproxy_pid=""
if [[ " $TARGETS " == *" haproxy "* ]]; then
  setsid haproxy -q -f "$WORK/haproxy.cfg" &
  pids+=($!)
  haproxy_pid=$!
fi
sleep 1
kill -0 "$echo_pid" 2>/dev/null || { echo "the echo upstream did not start: $(cat "$WORK/echo.err")" >&2; exit 1; }

url_of() { case $1 in teal) echo ws://127.0.0.1:24780/ ;; teal-base) echo ws://127.0.0.1:24783/ ;; nginx) echo ws://127.0.0.1:24790/ ;;
  haproxy) echo ws://127.0.0.1:24791/ ;; direct) echo ws://127.0.0.1:24781/ ;; esac; }
pid_of() { case $1 in teal) echo "$teal_pid" ;; teal-base) echo "$teal_base_pid" ;; nginx) cat "$WORK/px.pid" ;; haproxy) echo "$haproxy_pid" ;; direct) echo "" ;; esac; }
tree() { echo "$1"; for c in $(pgrep -P "$1" || true); do tree "$c"; done; }
rss_kb() { # summed over the process tree
  local m=0
  for p in $(tree "$1"); do
    m=$((m + $(awk '$1=="Rss:"{print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)))
  done
  echo "$m"
}
TICK=$(getconf CLK_TCK)
cpu_ticks() { # utime+stime of the process tree
  local t=0 p
  for p in $(tree "$1"); do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done
  echo "$t"
}
median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b > 0) printf "%.2f", a / b; else print "-" }'; }
for t in $TARGETS; do
  timeout 10 "$WS" latency "$(url_of "$t")" 1 10 "$SIZE" >/dev/null || { echo "$t does not echo" >&2; exit 1; }
done

echo "websocket: $ROUNDS rounds (interleaved); relay $CONNS conns x $WINDOW in flight x $SIZE B for ${SECS}s;" \
  "latency $LAT_CONNS conn x $LAT_ROUNDS round trips; idle $IDLE_CONNS WebSockets"
if [[ " $PARTS " == *" relay "* ]] || [[ " $PARTS " == *" latency "* ]]; then
  read -r -a order <<<"$TARGETS"
  for r in $(seq 1 "$ROUNDS"); do
    for t in "${order[@]}"; do
      if [[ " $PARTS " == *" relay "* ]]; then
        pid=$(pid_of "$t")
        c0=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
        rate=$(timeout $((SECS + 30)) "$WS" relay "$(url_of "$t")" "$CONNS" "$WINDOW" "$SIZE" "$SECS" | awk '{print $2}')
        c1=$( [ -n "$pid" ] && cpu_ticks "$pid" || echo 0)
        # CPU per message: the proxy's whole run (connecting and closing too) over the messages
        # counted in SECS; less noisy than the rate on a shared machine.
        echo "$rate $(awk -v c=$((c1 - c0)) -v t="$TICK" -v r="$rate" -v s="$SECS" 'BEGIN{printf "%.2f", c / t * 1e6 / (r * s)}')" >>"$WORK/relay.$t"
      fi
      if [[ " $PARTS " == *" latency "* ]]; then
        timeout 120 "$WS" latency "$(url_of "$t")" "$LAT_CONNS" "$LAT_ROUNDS" "$SIZE" |
          awk '{print $2, $4}' >>"$WORK/latency.$t"
      fi
    done
    mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
  done
fi

if [[ " $PARTS " == *" relay "* ]]; then
  n=$(cut -d' ' -f1 "$WORK/relay.nginx" | median)
  d=0
  [ -f "$WORK/relay.direct" ] && d=$(cut -d' ' -f1 "$WORK/relay.direct" | median)
  printf '\n%-9s %12s %9s %9s %12s   %s\n' target "relay msg/s" "x nginx" "x direct" "CPU us/msg" "rounds (msg/s)"
  for t in $TARGETS; do
    v=$(cut -d' ' -f1 "$WORK/relay.$t" | median)
    cpu=$(cut -d' ' -f2 "$WORK/relay.$t" | median)
    [ "$t" = direct ] && cpu=-
    printf '%-9s %12s %9s %9s %12s   %s\n' "$t" "$v" "$(ratio "$v" "$n")" "$(ratio "$v" "$d")" "$cpu" "$(cut -d' ' -f1 "$WORK/relay.$t" | tr '\n' ' ')"
  done
fi
if [[ " $PARTS " == *" latency "* ]]; then
  d50=0 d99=0
  [ -f "$WORK/latency.direct" ] && d50=$(cut -d' ' -f1 "$WORK/latency.direct" | median)
  [ -f "$WORK/latency.direct" ] && d99=$(cut -d' ' -f2 "$WORK/latency.direct" | median)
  printf '\n%-9s %9s %9s %12s %12s   %s\n' target "p50 us" "p99 us" "added p50" "added p99" "rounds (p50)"
  for t in $TARGETS; do
    p50=$(cut -d' ' -f1 "$WORK/latency.$t" | median)
    p99=$(cut -d' ' -f2 "$WORK/latency.$t" | median)
    printf '%-9s %9s %9s %12s %12s   %s\n' "$t" "$p50" "$p99" \
      "$(awk -v a="$p50" -v b="$d50" 'BEGIN{printf "%.1f", a - b}')" \
      "$(awk -v a="$p99" -v b="$d99" 'BEGIN{printf "%.1f", a - b}')" "$(cut -d' ' -f1 "$WORK/latency.$t" | tr '\n' ' ')"
  done
fi

if [[ " $PARTS " == *" idle "* ]]; then
  printf '\n%-9s %10s %12s %16s\n' target "RSS before" "RSS after" "KB per WebSocket"
  for t in $TARGETS; do
    [ "$t" = direct ] && continue
    pid=$(pid_of "$t")
    before=$(rss_kb "$pid")
    rm -f "$WORK/idle.out" "$WORK/idle.done"
    timeout 300 "$WS" idle "$(url_of "$t")" "$IDLE_CONNS" 240 "$WORK/idle.done" >"$WORK/idle.out" 2>"$WORK/idle.err" &
    holder=$!
    for _ in $(seq 1 2400); do grep -q '^open' "$WORK/idle.out" 2>/dev/null && break
      kill -0 "$holder" 2>/dev/null || break; sleep 0.1; done
    if ! grep -q "^open $IDLE_CONNS" "$WORK/idle.out"; then
      echo "$t: could not open $IDLE_CONNS WebSockets: $(head -c 300 "$WORK/idle.err")" >&2
      touch "$WORK/idle.done"; wait "$holder" || true; continue
    fi
    sleep 2
    after=$(rss_kb "$pid")
    touch "$WORK/idle.done"
    wait "$holder" || true
    printf '%-9s %7s KB %9s KB %16s\n' "$t" "$before" "$after" \
      "$(awk -v a="$after" -v b="$before" -v n="$IDLE_CONNS" 'BEGIN{printf "%.2f", (a - b) / n}')"
    sleep 3 # the tunnels close before the next target
  done
fi
