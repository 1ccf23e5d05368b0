#!/usr/bin/env bash
# The seed's blue/green release through two teal instances that share their switch state in etcd
# (docker/docker-compose.cluster.yml), run for real in Docker, with a load client on each
# instance's default route from the host through all of it.
#
#   docker/e2e-cluster.sh
#
# Steps: build teal's image (host-built static binary) and etcd's (Debian's etcd with the libraries
# ldd lists, FROM scratch); up; both instances serve blue 0.0.1 on `/`; recreate both green
# servers as 0.0.2; preview /green through A; `teal switch green --wait` inside A: the next
# request to B and to A is green (0.0.2), both report the same revision, `teal status` lists both;
# roll back through B's admin API (no wait): A serves blue within a second; four more switches
# alternating A and B, the other following each within a second (the delays are in the summary);
# an edit of `active` in the mounted file is refused by both (they keep the store's pool);
# stop the etcd container: both keep serving, the admin
# switch answers 503 on both, /healthz stays 200, /status and /metrics show the store
# disconnected; start etcd: a switch with ?wait=applied works again and both serve it; stop B (its
# load client first): a wait=applied switch through A answers at once, B no longer counted; switch
# through A, start B: its first answer is the store's pool, not its file's; down, and a
# summary. Fails on the first failed request to either default route. Cleans up its containers,
# volumes, network and images even when it fails. Loopback and its own containers only; bounded
# in time (a watchdog ends it after TEAL_E2E_TIMEOUT seconds, 300 by default, build excluded).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

started=$(date +%s)
RUN_ID="teal-e2e-cluster-$$"
export COMPOSE_PROJECT_NAME="$RUN_ID"
export TEAL_IMAGE="$RUN_ID:latest"
export ETCD_IMAGE="$RUN_ID-etcd:latest"
export TEAL_PORT_A=${TEAL_E2E_PORT_A:-18580}
export TEAL_PORT_B=${TEAL_E2E_PORT_B:-18581}
export TEAL_ADMIN_PORT_A=${TEAL_E2E_ADMIN_PORT_A:-18598}
export TEAL_ADMIN_PORT_B=${TEAL_E2E_ADMIN_PORT_B:-18599}
export TEAL_SUBNET=${TEAL_E2E_CLUSTER_SUBNET:-172.28.88.0/24}
GATEWAY="${TEAL_SUBNET%.*}.1"
PREFIX=/teal/e2e
TIMEOUT=${TEAL_E2E_TIMEOUT:-300}
WORK=$(mktemp -d /tmp/teal-e2e-cluster.XXXXXX)
export TEAL_CONFIG_DIR="$WORK/config"
COMPOSE_FILE="$ROOT/docker/docker-compose.cluster.yml"
TOKEN="e2e-$RANDOM$RANDOM"

# say, fail (to fd 4, the script's own stderr), compose and COMPOSE_CMD, need_tools,
# build_teal_image, body_or_err, json_field, wait_for, cleanup pieces
source docker/e2e-lib.sh

cleanup() {
  local rc=$?
  exec 1>&3 2>&4
  trap - TERM
  if [ -f "$WORK/watchdog.pid" ]; then # its sleep first, so that the watchdog ends without a kill
    pkill -P "$(cat "$WORK/watchdog.pid")" 2>/dev/null || true
    kill "$(cat "$WORK/watchdog.pid")" 2>/dev/null || true
  fi
  kill_load_clients
  if [ $rc -ne 0 ]; then
    for s in loadbalancer-a loadbalancer-b etcd; do
      echo "--- $s logs (last 30 lines, access log left out)" >&2
      compose logs --no-color "$s" 2>/dev/null | grep -v 'teal::access' | tail -30 >&2 || true
    done
  fi
  remove_all "$TEAL_IMAGE" "$ETCD_IMAGE"
  exit $rc
}
trap cleanup EXIT

# The host side needs curl and python3 (the load client, JSON), and etcd (Debian's etcd-server)
# for the etcd image; install them if this machine lacks them.
need_tools curl python3
if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
fi

say "build the static binary, teal's image and etcd's image"
build_teal_image
mkdir -p "$WORK/etcd-ctx" "$TEAL_CONFIG_DIR"
# etcd's context: the two binaries and every library ldd lists, at the same paths.
for f in "$(command -v etcd)" "$(command -v etcdctl)"; do
  for dep in "$f" $(ldd "$f" | grep -o '/[^ ]*'); do
    mkdir -p "$WORK/etcd-ctx/rootfs$(dirname "$dep")"
    cp -L "$dep" "$WORK/etcd-ctx/rootfs$dep"
  done
done
[ -f "$WORK/etcd-ctx/rootfs/usr/bin/etcd" ] || fail "etcd is not /usr/bin/etcd: $(command -v etcd)"
mkdir -m 0700 "$WORK/etcd-ctx/data"
docker build -q -f docker/etcd/Dockerfile -t "$ETCD_IMAGE" "$WORK/etcd-ctx" >/dev/null
for image in "$TEAL_IMAGE" "$ETCD_IMAGE"; do
  size=$(docker image inspect -f '{{.Size}}' "$image")
  echo "image $image: $((size / 1024 / 1024)) MB"
done

# From here on, bounded: the watchdog ends the run (and cleanup removes everything).
(sleep "$TIMEOUT" && kill -TERM $$) >/dev/null 2>&1 &
echo $! >"$WORK/watchdog.pid"
trap 'fail "timed out after ${TIMEOUT}s"' TERM

# The mounted config (read-only in the containers): the shipped cluster one with this run's token
# and the network's gateway (where requests from this host arrive from) on the preview allowlist.
sed -e "s/token = \"change-me\"/token = \"$TOKEN\"/" \
  -e "s/^allow = \[.*\]/allow = [\"$GATEWAY\"]/" docker/config-cluster/teal.toml >"$TEAL_CONFIG_DIR/teal.toml"
grep -q "^prefix = \"$PREFIX\"" "$TEAL_CONFIG_DIR/teal.toml" || fail "config-cluster/teal.toml: prefix is not $PREFIX"
chmod 0755 "$TEAL_CONFIG_DIR"
chmod 0644 "$TEAL_CONFIG_DIR/teal.toml"

port_of() { [ "$1" = A ] && echo "$TEAL_PORT_A" || echo "$TEAL_PORT_B"; }
admin_port_of() { [ "$1" = A ] && echo "$TEAL_ADMIN_PORT_A" || echo "$TEAL_ADMIN_PORT_B"; }
# get A|B PATH: the body, or "ERR <status>".
get() {
  curl -s -m 5 -w '\n%{http_code}' "http://127.0.0.1:$(port_of "$1")$2" | body_or_err
}
# admin A|B METHOD PATH: writes the body to $WORK/admin.body, prints the status code.
admin() {
  curl -s -m 15 -X "$2" -H "Authorization: Bearer $TOKEN" -o "$WORK/admin.body" -w '%{http_code}' \
    "http://127.0.0.1:$(admin_port_of "$1")$3" || true
}
body() { cat "$WORK/admin.body" 2>/dev/null; }
# json EXPR: evaluates EXPR with d = the JSON on stdin (e.g. 'd["cluster"]["revision"]').
json() { python3 -c 'import json, sys; d = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
answers() { [ "$(get "$1" "$2")" = "$3" ]; }
version_of() { get "$1" "$2" | json_field version; }
versions() { # versions A|B PATH VERSION: 10 answers in a row from VERSION
  for _ in $(seq 1 10); do [ "$(version_of "$1" "$2")" = "$3" ] || return 1; done
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
# serves_within MS A|B POOL VERSION SINCE_MS: polls / until it is POOL and prints the milliseconds
# since SINCE_MS (one curl per poll, so that is close to the real delay); fails after MS. Then
# /info must be VERSION, 10 times (from both servers behind the pool).
serves_within() {
  local limit=$1 who=$2 pool=$3 version=$4 since=$5 ms
  until [ "$(get "$who" /)" = "$pool" ]; do
    [ $(($(now_ms) - since)) -le "$limit" ] || fail "$who did not serve $pool within ${limit}ms"
    sleep 0.01
  done
  ms=$(($(now_ms) - since))
  [ "$ms" -le "$limit" ] || fail "$who served $pool only after ${ms}ms (over ${limit}ms)"
  versions "$who" /info "$version" || fail "$who serves $pool but not $version"
  echo "$ms"
}
# in_container A|B COMMAND...: runs teal's CLI inside the instance's container, bounded.
in_container() {
  local service=loadbalancer-a
  [ "$1" = A ] || service=loadbalancer-b
  shift
  timeout 30 "${COMPOSE_CMD[@]}" exec -T "$service" "$@"
}
# cluster_view A|B: "<connected> <revision> <instances as name=revision/active, sorted>" from /status.
cluster_view() {
  [ "$(admin "$1" GET /status)" = 200 ] || return 1
  body | json '" ".join([str(d["cluster"]["connected"]), str(d["cluster"]["revision"])] + sorted("%s=%s/%s" % (i["name"], i["revision"], i["active"]) for i in d["cluster"]["instances"]))'
}
# agreed REVISION POOL: both instances connected, on REVISION, and each lists both at REVISION/POOL.
agreed() {
  local want="True $1 loadbalancer-a:9900=$1/$2 loadbalancer-b:9900=$1/$2"
  [ "$(cluster_view A)" = "$want" ] && [ "$(cluster_view B)" = "$want" ]
}
# both_listed: each instance's /status lists both instances.
both_listed() {
  for who in A B; do
    cluster_view "$who" | grep -q ' loadbalancer-a:9900=[^ ]* loadbalancer-b:9900=' || return 1
  done
}
stored_active() {
  timeout 15 "${COMPOSE_CMD[@]}" exec -T etcd etcdctl get --print-value-only "$PREFIX/state" |
    json 'd["active"]'
}

# The load client (docker/e2e-lib.sh): keep-alive GETs of / on one instance from this host until
# told to stop. Exits non-zero on the first failed request.
write_load_client
check_load() {
  for tag in A B; do
    [ -f "$WORK/load-$tag.pid" ] || continue # finished on purpose
    if ! kill -0 "$(cat "$WORK/load-$tag.pid")" 2>/dev/null; then
      fail "load client on $tag stopped: $(cat "$WORK/load-$tag.count" 2>/dev/null)"
    fi
  done
}

switches=0
recreations=0

say "up: etcd, loadbalancer-a, loadbalancer-b and four servers"
compose up -d >/dev/null 2>&1 || compose up -d
for who in A B; do
  wait_for 60 "$who: / never answered blue" answers "$who" / blue
  [ "$(version_of "$who" /info)" = 0.0.1 ] || fail "$who: / is not blue 0.0.1"
done
[ "$(stored_active)" = blue ] || fail "etcd's $PREFIX/state is not blue: $(stored_active)"
wait_for 15 "the instances never both listed each other" both_listed
echo "A and B serve blue 0.0.1; $PREFIX/state is blue; each /status lists both instances"
start_load A "$TEAL_PORT_A" 400
start_load B "$TEAL_PORT_B" 400
echo "load clients running on A and B"

say "recreate server1-green and server2-green as 0.0.2 (no teal reload)"
for s in server1-green server2-green; do
  GREEN_VERSION=0.0.2 compose up -d --no-deps --force-recreate "$s" >/dev/null 2>&1
  recreations=$((recreations + 1))
  check_load
done
wait_for 30 "A: /green did not answer 0.0.2 from both servers" versions A /green/info 0.0.2
[ "$(get B /green)" = green ] || fail "B: /green is not green"
echo "/green answers 0.0.2 through A (preview)"

say "teal switch green --wait, inside loadbalancer-a (health-gated)"
# Refused (409) until both recreated green servers passed their health checks.
wait_for 30 "teal switch green --wait was refused" in_container A teal switch green --wait
switches=$((switches + 1))
# --wait answered once both instances reported the new revision: their next request is green.
first_b=$(get B /)
first_a=$(get A /)
[ "$first_b" = green ] && [ "$first_a" = green ] ||
  fail "after teal switch green --wait returned, B answered '$first_b' and A '$first_a'"
versions B /info 0.0.2 && versions A /info 0.0.2 || fail "A and B do not both serve green 0.0.2"
[ "$(stored_active)" = green ] || fail "etcd's $PREFIX/state is not green"
[ "$(admin A GET /status)" = 200 ] || fail "A: GET /status: $(body)"
rev=$(body | json 'd["cluster"]["revision"]')
wait_for 2 "A and B do not both report revision $rev, green" agreed "$rev" green
in_container B teal status >"$WORK/status.out" 2>&1 || fail "teal status in B: $(cat "$WORK/status.out")"
grep -q loadbalancer-a "$WORK/status.out" && grep -q loadbalancer-b "$WORK/status.out" ||
  fail "teal status in B does not list both instances: $(cat "$WORK/status.out")"
check_load
echo "the first request to B and to A after the switch returned: green (0.0.2); both on revision $rev"

say "roll back through B's admin API (no wait): A follows within a second"
code=$(admin B POST "/switch?to=blue")
[ "$code" = 200 ] || fail "B: rollback answered $code: $(body)"
committed=$(now_ms)
switches=$((switches + 1))
ms_rollback=$(serves_within 1000 A blue 0.0.1 "$committed")
[ "$(get B /)" = blue ] && versions B /info 0.0.1 || fail "B does not serve blue 0.0.1 after its own switch"
rev_back=$(body | json 'd["revision"]')
[ "$rev_back" -gt "$rev" ] || fail "B: rollback revision $rev_back is not above $rev"
wait_for 2 "A and B do not both report revision $rev_back, blue" agreed "$rev_back" blue
check_load
echo "A served blue ${ms_rollback}ms after B's switch was committed (revision $rev_back)"

say "four more switches without wait, alternating A and B: the other follows within a second"
follows="$ms_rollback"
for step in "A green 0.0.2" "B blue 0.0.1" "A green 0.0.2" "B blue 0.0.1"; do
  read -r via pool version <<<"$step"
  other=A
  [ "$via" = B ] || other=B
  code=$(admin "$via" POST "/switch?to=$pool")
  [ "$code" = 200 ] || fail "$via: switch to $pool answered $code: $(body)"
  committed=$(now_ms)
  switches=$((switches + 1))
  ms=$(serves_within 1000 "$other" "$pool" "$version" "$committed")
  follows="$follows $ms"
  [ "$(get "$via" /)" = "$pool" ] || fail "$via does not serve $pool after its own switch"
done
check_load
follows=$(echo "$follows" | tr ' ' '\n' | sort -n | tr '\n' ' ' | sed 's/ $//')
echo "the other instance followed after (ms, sorted, the rollback included): $follows"

say "an edit of active in the mounted file is refused on both (the store holds it)"
sed -i 's/^active = .*/active = "green"/' "$TEAL_CONFIG_DIR/teal.toml"
refused() {
  for s in loadbalancer-a loadbalancer-b; do
    compose logs --no-color "$s" 2>/dev/null | grep -v 'teal::access' | grep -q 'use `teal switch`' || return 1
  done
}
wait_for 15 "the edit of active was not refused with 'use \`teal switch\`' in both logs" refused
for who in A B; do versions "$who" /info 0.0.1 || fail "$who left blue 0.0.1 after the file edit"; done
sed -i 's/^active = .*/active = "blue"/' "$TEAL_CONFIG_DIR/teal.toml"
check_load
echo "both logged the refusal (use \`teal switch\`) and still serve blue; the file is put back"

say "stop the etcd container: traffic goes on, switches answer 503"
compose stop -t 5 etcd >/dev/null 2>&1
stopped=$(now_ms)
for who in A B; do
  code=$(admin "$who" POST "/switch?to=green")
  [ "$code" = 503 ] || fail "$who: switch with etcd stopped answered $code, not 503: $(body)"
  body | grep -q 'cluster store unreachable' || fail "$who: 503 without the reason: $(body)"
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$(admin_port_of "$who")/healthz" || true)
  [ "$code" = 200 ] || fail "$who: /healthz answered $code with etcd stopped"
  versions "$who" /info 0.0.1 || fail "$who: / is not blue 0.0.1 with etcd stopped"
done
disconnected() { for who in A B; do cluster_view "$who" | grep -q '^False ' || return 1; done; }
wait_for 20 "/status did not show the store disconnected on both" disconnected
ms_disconnected=$(($(now_ms) - stopped))
for who in A B; do
  curl -s -m 5 "http://127.0.0.1:$(admin_port_of "$who")/metrics" | grep -q '^teal_cluster_connected 0' ||
    fail "$who: /metrics does not say teal_cluster_connected 0"
done
in_container A teal switch green >"$WORK/switch.out" 2>&1 && fail "teal switch succeeded with etcd stopped"
sleep 2
check_load
[ "$(get A /)" = blue ] && [ "$(get B /)" = blue ] || fail "an instance left blue with etcd stopped"
echo "both serve blue; switches answer 503 (cluster store unreachable); /healthz 200; /status disconnected after ${ms_disconnected}ms"

say "start etcd: a switch works again (?wait=applied through B)"
compose start etcd >/dev/null 2>&1
restarted=$(now_ms)
switch_applied() {
  [ "$(admin B POST "/switch?to=green&wait=applied")" = 200 ]
}
deadline=$(($(date +%s) + 40))
until switch_applied; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the switch through B never worked again after etcd started (40s); last answer: $(body)"
  sleep 0.2
done
switched=$(now_ms)
first_a=$(get A /)
first_b=$(get B /)
[ "$first_a" = green ] && [ "$first_b" = green ] ||
  fail "after POST /switch?wait=applied through B returned, A answered '$first_a' and B '$first_b'"
ms_switch_again=$((switched - restarted))
switches=$((switches + 1))
[ "$(body | json 'd["applied"]["all"]')" = True ] || fail "B: wait=applied did not report all applied: $(body)"
rev_again=$(body | json 'd["revision"]')
[ "$rev_again" -gt "$rev_back" ] || fail "revision $rev_again after the restart is not above $rev_back"
versions A /info 0.0.2 && versions B /info 0.0.2 || fail "A and B do not both serve green 0.0.2"
wait_for 5 "A and B do not both report revision $rev_again, green, connected" agreed "$rev_again" green
for who in A B; do
  curl -s -m 5 "http://127.0.0.1:$(admin_port_of "$who")/metrics" | grep -q '^teal_cluster_connected 1' ||
    fail "$who: /metrics does not say teal_cluster_connected 1"
done
check_load
echo "a switch worked ${ms_switch_again}ms after etcd started; the first request to A and B after it: green; both on revision $rev_again"

say "stop loadbalancer-b: it leaves the fleet at once; started again, it takes the store's state"
touch "$WORK/load-B.stop"
wait "$(cat "$WORK/load-B.pid")" || fail "load client on B: $(cat "$WORK/load-B.count")"
rm -f "$WORK/load-B.pid"
compose stop -t 40 loadbalancer-b >/dev/null 2>&1
code=$(docker inspect -f '{{.State.ExitCode}}' "$(compose ps -q loadbalancer-b)")
[ "$code" = 0 ] || fail "loadbalancer-b exited with $code"
t0=$(now_ms)
code=$(admin A POST "/switch?to=blue&wait=applied")
ms_alone=$(($(now_ms) - t0))
[ "$code" = 200 ] || fail "A: switch to blue with B stopped answered $code: $(body)"
switches=$((switches + 1))
[ "$(body | json 'd["applied"]["all"]')" = True ] || fail "A: wait=applied with B stopped, not all applied: $(body)"
[ "$(body | json '",".join(i["name"] for i in d["applied"]["instances"])')" = loadbalancer-a:9900 ] ||
  fail "A: wait=applied with B stopped still counts other instances: $(body)"
[ "$ms_alone" -lt 2000 ] || fail "A: wait=applied took ${ms_alone}ms with B stopped (B's key outlived it)"
# Now the store says green and B's file says blue: started again, B must answer green at once.
code=$(admin A POST "/switch?to=green")
[ "$code" = 200 ] || fail "A: switch to green answered $code: $(body)"
switches=$((switches + 1))
rev_last=$(body | json 'd["revision"]')
compose start loadbalancer-b >/dev/null 2>&1
first_b="ERR"
for _ in $(seq 1 150); do
  first_b=$(get B /)
  case "$first_b" in ERR*) sleep 0.2 ;; *) break ;; esac
done
[ "$first_b" = green ] || fail "B's first answer after its restart: '$first_b', not the store's green"
wait_for 15 "A and B do not both report revision $rev_last, green, after B's restart" agreed "$rev_last" green
check_load
echo "wait=applied through A with B stopped took ${ms_alone}ms (A alone); B restarted answered green (the store's) from its first request"

touch "$WORK/load.stop"
wait "$(cat "$WORK/load-A.pid")" || fail "load client on A: $(cat "$WORK/load-A.count")"
rm -f "$WORK/load-A.pid"
read -r sent_a blue_a green_a result_a <"$WORK/load-A.count"
read -r sent_b blue_b green_b result_b <"$WORK/load-B.count"

say "down"
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
elapsed=$(($(date +%s) - started))
echo "e2e-cluster summary: requests A $sent_a (blue $blue_a, green $green_a), B $sent_b (blue $blue_b, green $green_b), failed 0 ($result_a, $result_b), switches $switches, recreations $recreations, first requests after --wait and wait=applied on the new pool, wait=applied with B stopped ${ms_alone}ms, the other instance following a switch without wait: $follows ms, etcd stopped: disconnected after ${ms_disconnected}ms, switching again ${ms_switch_again}ms after its start, ${elapsed}s"
