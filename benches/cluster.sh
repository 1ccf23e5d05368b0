#!/usr/bin/env bash
# Cluster switch propagation: how long a switch made through one teal takes to reach every teal.
#
# A single-node etcd (temporary data dir, 127.0.0.1:12379), two upstreams (`teal upstream`: blue
# on 12381, green on 12382) and three release teals in cluster mode ([cluster] on that etcd,
# prefix /teal/bench; proxies on 12391-12393, admin APIs on 12491-12493). Then SWITCHES switches
# (alternating green, blue, ...), each `POST /switch` to a random instance's admin API; from its
# 200 on, every instance is polled at once with `GET /`, each on a keep-alive connection of its
# own, every POLL_MS ms until it serves the new pool (at most 5 s). Prints p50, p99 and max of
# the delay until every instance serves it and until the first other instance does, and the
# switch's own answer time; the delay of the instance switched through (it serves the new pool
# before its 200) is the floor of the measurement. benches/cluster_propagation.py measures.
#
#   benches/cluster.sh                        # 100 switches, 1 ms polls
#   SWITCHES=20 POLL_MS=2 benches/cluster.sh
#
# Loopback only; bounded: 5 s per switch at most, 10 s for each process to come up. Everything
# it starts is stopped and its files removed on exit. Installs etcd-server if etcd is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SWITCHES=${SWITCHES:-100}
POLL_MS=${POLL_MS:-1}
TEAL=${TEAL:-$PWD/target/release/teal}
ETCD=${ETCD:-etcd}
WORK=$(mktemp -d /tmp/teal-cluster.XXXXXX)
INSTANCES=(1 2 3)

if ! command -v "$ETCD" >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
fi
cargo build --release --quiet

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for _ in $(seq 1 30); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Refuse to start beside something already on one of the ports: its answers would be measured.
for port in 12379 12380 12381 12382 1239{1,2,3} 1249{1,2,3}; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "127.0.0.1:$port is in use; stop what listens there first" >&2
    exit 1
  fi
done
# up WHAT URL [EXPECT]: waits up to 10 s for URL to answer (and to contain EXPECT).
up() {
  for _ in $(seq 1 100); do
    if out=$(curl -sf --max-time 1 "$2" 2>/dev/null) && [[ "$out" == *"${3:-}"* ]]; then return 0; fi
    sleep 0.1
  done
  echo "$1 did not come up ($2)" >&2
  tail -n 20 "$WORK"/*.log >&2 || true
  exit 1
}

# Every server in a session of its own, as benches/load/run.sh does (autogroup scheduling).
setsid "$ETCD" --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls http://127.0.0.1:12379 --advertise-client-urls http://127.0.0.1:12379 \
  --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
  --initial-cluster bench=http://127.0.0.1:12380 >"$WORK/etcd.log" 2>&1 &
pids+=($!)
setsid "$TEAL" upstream --listen 127.0.0.1:12381 --pool blue --name b1 >"$WORK/blue.log" 2>&1 &
pids+=($!)
setsid "$TEAL" upstream --listen 127.0.0.1:12382 --pool green --name g1 >"$WORK/green.log" 2>&1 &
pids+=($!)
up etcd http://127.0.0.1:12379/health '"true"'
up blue http://127.0.0.1:12381/ blue
up green http://127.0.0.1:12382/ green

for i in "${INSTANCES[@]}"; do
  cat >"$WORK/teal$i.toml" <<EOF
active = "blue"
[proxy]
listen = "127.0.0.1:1239$i"
[admin]
listen = "127.0.0.1:1249$i"
[log]
access = false
[pools.blue]
servers = ["127.0.0.1:12381"]
[pools.green]
servers = ["127.0.0.1:12382"]
[cluster]
etcd = ["http://127.0.0.1:12379"]
prefix = "/teal/bench"
EOF
  "$TEAL" check -c "$WORK/teal$i.toml" >/dev/null
  TEAL_LOG=warn setsid "$TEAL" run -c "$WORK/teal$i.toml" >"$WORK/teal$i.log" 2>&1 &
  pids+=($!)
done
for i in "${INSTANCES[@]}"; do
  up "teal $i" "http://127.0.0.1:1249$i/status" '"connected":true'
  up "teal $i" "http://127.0.0.1:1239$i/" blue
done

echo "etcd $("$ETCD" --version | awk '/etcd Version/{print $3}') (one node, data on $(df --output=fstype "$WORK" | tail -1)), ${#INSTANCES[@]} teals, $SWITCHES switches"
# In the background and waited for, so a signal to this script runs the cleanup at once.
timeout $((SWITCHES * 6 + 30)) python3 benches/cluster_propagation.py "$SWITCHES" "$POLL_MS" \
  $(for i in "${INSTANCES[@]}"; do printf '1239%s:1249%s ' "$i" "$i"; done) &
pids+=($!)
rc=0
wait $! || rc=$?
for i in "${INSTANCES[@]}"; do
  if grep -qE 'ERROR|panicked' "$WORK/teal$i.log"; then
    echo "teal $i logged errors:" >&2
    grep -E 'ERROR|panicked' "$WORK/teal$i.log" | tail -n 5 >&2
    rc=1
  fi
done
exit "$rc"
