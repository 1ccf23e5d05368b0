#!/usr/bin/env bash
# Big bodies through each proxy and straight to the upstream (issue 19, target 5): a 1 GiB
# download, a 1 GiB upload with Content-Length and one chunked, and the download read slowly
# (backpressure: the client reads at RATE, default 50M/s, for SLOW_SECONDS, default 5).
#
#   benches/bodies.sh                 # ROUNDS=3 (medians), SIZE_MB=1024
#   ROUNDS=5 SIZE_MB=1024 benches/bodies.sh
#   BASELINE=/path/to/old/teal benches/bodies.sh   # adds "base": an older build, interleaved
#   KINDS="upload-cl upload-chunked" benches/bodies.sh   # only these transfers
#
# Upstreams: nginx (1 worker, sendfile) serving a SIZE_MB file for downloads, and `teal upstream`
# (hyper; reads the whole body and answers with its length) for uploads, which answers only
# after the last byte, so an upload's time is the whole body's. Proxies: teal as shipped (no
# body limit) and nginx with the fair streaming setup (`proxy_request_buffering off`,
# `proxy_buffering off`, `client_max_body_size 0`, upstream keepalive). Clients: curl, one
# transfer at a time (`-T file`: Content-Length; `-T -` from stdin: chunked). Columns: MB/s
# (medians), the proxy's peak RSS during the transfers of that kind (the kernel's high-water
# mark, VmHWM, reset before each transfer; summed over the process tree), its CPU seconds per
# transfer (user + system, the process tree, median: steadier than MB/s on a shared host), the
# whole host's busy CPU seconds per transfer (client, proxy, upstream and kernel together), and
# the ratios. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
SIZE_MB=${SIZE_MB:-1024}
RATE=${RATE:-50M}
SLOW_SECONDS=${SLOW_SECONDS:-5}
WORK=$(mktemp -d /tmp/teal-bodies.XXXXXX)
chmod 755 "$WORK" # nginx workers (www-data) read the file
TEAL=${TEAL:-$PWD/target/release/teal}
BASELINE=${BASELINE:-}
targets=(teal nginx direct)
[ -n "$BASELINE" ] && targets=(teal base nginx direct)
command -v nginx >/dev/null && command -v curl >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light curl >/dev/null
}
cargo build --release --quiet

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for c in up px; do [ -f "$WORK/$c.pid" ] && nginx -c "$WORK/$c.conf" -s quit 2>/dev/null || true; done
  sleep 0.3
  rm -rf "$WORK"
}
trap cleanup EXIT


head -c $((SIZE_MB * 1024 * 1024)) /dev/zero | tr '\0' 'x' >"$WORK/big.bin"
cat >"$WORK/up.conf" <<CONF
worker_processes 1;
pid $WORK/up.pid;
error_log $WORK/up.err;
events { worker_connections 1024; }
http {
  access_log off;
  sendfile on;
  server { listen 127.0.0.1:18581; location /big { alias $WORK/big.bin; } }
}
CONF
cat >"$WORK/px.conf" <<CONF
worker_processes auto;
pid $WORK/px.pid;
error_log $WORK/px.err;
events { worker_connections 1024; }
http {
  access_log off;
  client_max_body_size 0;
  proxy_request_buffering off;
  proxy_buffering off;
  upstream down { server 127.0.0.1:18581; keepalive 16; }
  upstream up { server 127.0.0.1:18582; keepalive 16; }
  server {
    listen 127.0.0.1:18590;
    location /big { proxy_pass http://down; proxy_http_version 1.1; proxy_set_header Connection ""; }
    location /up { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
cat >"$WORK/teal.toml" <<CONF
active = "down"
[proxy]
listen = "127.0.0.1:18580"
[admin]
listen = "127.0.0.1:18680"
[log]
access = false
[pools.down]
servers = ["127.0.0.1:18581"]
[pools.up]
servers = ["127.0.0.1:18582"]
[preview]
allow = ["127.0.0.1/32"]
CONF
sed -e 's/18580/18579/' -e 's/18680/18679/' "$WORK/teal.toml" >"$WORK/base.toml"
nginx -c "$WORK/up.conf"
nginx -c "$WORK/px.conf"
TEAL_LOG=warn setsid "$TEAL" upstream --listen 127.0.0.1:18582 --pool up 2>/dev/null &
pids+=($!)
TEAL_LOG=warn setsid "$TEAL" run -c "$WORK/teal.toml" 2>/dev/null &
pids+=($!)
teal_pid=$!
if [ -n "$BASELINE" ]; then
  TEAL_LOG=warn setsid "$BASELINE" run -c "$WORK/base.toml" 2>/dev/null &
  pids+=($!)
  base_pid=$!
fi
sleep 1

# Where each target takes a download and an upload. teal sends /up/... to pool "up" with the
# prefix stripped (its preview route), nginx by location; straight: each upstream itself.
down_url() { case $1 in teal) echo http://127.0.0.1:18580/big ;; base) echo http://127.0.0.1:18579/big ;; nginx) echo http://127.0.0.1:18590/big ;; direct) echo http://127.0.0.1:18581/big ;; esac; }
up_url() { case $1 in teal) echo http://127.0.0.1:18580/up/sink ;; base) echo http://127.0.0.1:18579/up/sink ;; nginx) echo http://127.0.0.1:18590/up ;; direct) echo http://127.0.0.1:18582/up ;; esac; }
pid_of() { case $1 in teal) echo "$teal_pid" ;; base) echo "$base_pid" ;; nginx) cat "$WORK/px.pid" ;; direct) echo "" ;; esac; }
# Peak RSS without sampling: the kernel keeps each process's high-water mark (VmHWM), which
# writing 5 to /proc/PID/clear_refs resets. A sampling loop beside the transfer (forking awk and
# pgrep every 20 ms, or even reading /proc with shell builtins) ran on the same two cores as the
# client, the proxy and the upstream, and cut the proxied rates (not the straight ones, which
# have no proxy to sample) by a third or more: uploads 0.56x straight with it, 0.81x without.
procs_of() { echo "$1" $(pgrep -P "$1" || true); }
reset_peaks() { local p; for p in "$@"; do echo 5 >"/proc/$p/clear_refs" 2>/dev/null || true; done; }
# The summed VmHWM (KiB) of the given processes since their reset.
peak_kb() {
  local m=0 p k v rest
  for p in "$@"; do
    while read -r k v rest; do
      if [ "$k" = VmHWM: ]; then m=$((m + v)); break; fi
    done <"/proc/$p/status" 2>/dev/null || true
  done
  echo "$m"
}

# The CPU time (user + system, clock ticks) of a process and its children.
cpu_ticks() {
  local m=0 p v
  for p in $1 $(pgrep -P "$1" || true); do
    v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true)
    m=$((m + ${v:-0}))
  done
  echo "$m"
}
HZ=$(getconf CLK_TCK)

# The whole host's busy time (user, nice, system, irq, softirq, steal; clock ticks, all CPUs):
# what the client, the proxy, the upstream and the kernel's TCP work for them cost together.
host_ticks() { awk '$1=="cpu"{print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }

# transfer KIND TARGET: prints "MB/s peak_rss_kb cpu_seconds host_cpu_seconds"
transfer() {
  local kind=$1 t=$2 pid out procs="" peak=0 cpu0=0 cpu1=0 host0 host1
  pid=$(pid_of "$t")
  if [ -n "$pid" ]; then
    procs=$(procs_of "$pid")
    # shellcheck disable=SC2086 # the list is meant to split
    reset_peaks $procs
    cpu0=$(cpu_ticks "$pid")
  fi
  host0=$(host_ticks)
  case $kind in
    download) out=$(curl -sS -o /dev/null -w '%{speed_download} %{size_download}' "$(down_url "$t")") ;;
    upload-cl) out=$(curl -sS -o "$WORK/answer" -w '%{speed_upload} %{size_upload}' -X POST -T "$WORK/big.bin" \
      -H 'Content-Type: application/octet-stream' "$(up_url "$t")") ;;
    upload-chunked) out=$(curl -sS -o "$WORK/answer" -w '%{speed_upload} %{size_upload}' -X POST -T - \
      -H 'Content-Type: application/octet-stream' "$(up_url "$t")" <"$WORK/big.bin") ;;
    slow-download) out=$(curl -sS -o /dev/null --limit-rate "$RATE" --max-time "$SLOW_SECONDS" \
      -w '%{speed_download} %{size_download}' "$(down_url "$t")" 2>/dev/null || true) ;;
  esac
  host1=$(host_ticks)
  if [ -n "$pid" ]; then
    cpu1=$(cpu_ticks "$pid")
    # shellcheck disable=SC2086
    peak=$(peak_kb $procs)
  fi
  local bytes=${out#* }
  if [ "$kind" = download ] && [ "$bytes" != $((SIZE_MB * 1024 * 1024)) ]; then echo "$t: short download ($bytes)" >&2; exit 1; fi
  if [[ $kind == upload* ]] && ! grep -q "$((SIZE_MB * 1024 * 1024))" "$WORK/answer"; then
    echo "$t: the upstream did not get the whole upload: $(head -c 300 "$WORK/answer")" >&2; exit 1
  fi
  awk -v s="${out% *}" -v p="$peak" -v c=$((cpu1 - cpu0)) -v h=$((host1 - host0)) -v hz="$HZ" \
    'BEGIN{printf "%.1f %s %.2f %.2f\n", s / 1048576, p, c / hz, h / hz}'
}

median() { sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
echo "bodies: ${SIZE_MB} MiB, $ROUNDS rounds (interleaved); slow reader at $RATE for ${SLOW_SECONDS}s"
kinds=${KINDS:-"download upload-cl upload-chunked slow-download"}
for kind in $kinds; do
  order=("${targets[@]}")
  for r in $(seq 1 "$ROUNDS"); do
    for t in "${order[@]}"; do transfer "$kind" "$t" >>"$WORK/$kind.$t"; done
    mapfile -t order < <(printf '%s\n' "${order[@]}" | tac)
  done
done
printf '\n%-15s %-7s %10s %12s %9s %11s %9s %9s\n' kind target "MB/s" "peak RSS MB" "CPU s" "host CPU s" "x direct" "x nginx"
for kind in $kinds; do
  d=$(cut -d' ' -f1 "$WORK/$kind.direct" | median)
  n=$(cut -d' ' -f1 "$WORK/$kind.nginx" | median)
  for t in "${targets[@]}"; do
    v=$(cut -d' ' -f1 "$WORK/$kind.$t" | median)
    peak=$(cut -d' ' -f2 "$WORK/$kind.$t" | sort -n | tail -1)
    cpu=$(cut -d' ' -f3 "$WORK/$kind.$t" | median)
    host=$(cut -d' ' -f4 "$WORK/$kind.$t" | median)
    printf '%-15s %-7s %10s %12s %9s %11s %9s %9s\n' "$kind" "$t" "$v" \
      "$(awk -v p="$peak" 'BEGIN{ if (p > 0) printf "%.1f", p / 1024; else print "-" }')" \
      "$(awk -v c="$cpu" -v t="$t" 'BEGIN{ if (t != "direct") printf "%.2f", c; else print "-" }')" \
      "$host" \
      "$(awk -v a="$v" -v b="$d" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')" \
      "$(awk -v a="$v" -v b="$n" 'BEGIN{printf "%.2f", (b>0)?a/b:0}')"
  done
done
