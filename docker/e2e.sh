#!/usr/bin/env bash
# The seed's whole blue/green release, with teal in nginx's place, run for real in Docker, with
# a load client hitting the default route from the host through all of it.
#
#   docker/e2e.sh
#
# Steps: up; `/` is blue 0.0.1 and `/green` green 0.0.1; recreate both green servers as 0.0.2
# (new containers, maybe new IPs, no teal reload); `teal switch green` inside the loadbalancer
# container (health-gated); roll back by editing the mounted config on the host; switch to green
# through the admin API; recreate the loadbalancer (the switch persists); a container that is not
# on preview.allow gets 403 on /blue; `stop loadbalancer` during a slow request (it completes,
# exit code 0); HTTPS on the published 443 (a certificate made here with openssl, mounted
# read-only; HTTP/1.1 and HTTP/2) right after up; down, and a summary. Fails on the first failed request to the default route.
# Cleans up its containers, network and image even when it fails. Loopback and its own
# containers only; bounded in time.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

started=$(date +%s)
RUN_ID="teal-e2e-$$"
export COMPOSE_PROJECT_NAME="$RUN_ID"
export TEAL_IMAGE="$RUN_ID:latest"
export TEAL_PORT=${TEAL_E2E_PORT:-18480}
export TEAL_ADMIN_PORT=${TEAL_E2E_ADMIN_PORT:-18499}
export TEAL_TLS_PORT=${TEAL_E2E_TLS_PORT:-18443}
export TEAL_SUBNET=${TEAL_E2E_SUBNET:-172.28.87.0/24}
GATEWAY="${TEAL_SUBNET%.*}.1"
WORK=$(mktemp -d /tmp/teal-e2e.XXXXXX)
export TEAL_CONFIG_DIR="$WORK/config"
export TEAL_CERT_DIR="$WORK/certs"
COMPOSE_FILE="$ROOT/docker/docker-compose.yml"
TOKEN="e2e-$RANDOM$RANDOM"
URL="http://127.0.0.1:$TEAL_PORT"
ADMIN="http://127.0.0.1:$TEAL_ADMIN_PORT"

# say, fail, compose, need_tools, build_teal_image, body_or_err, json_field, wait_for, cleanup pieces
source docker/e2e-lib.sh

cleanup() {
  local rc=$?
  kill_load_clients
  if [ $rc -ne 0 ]; then
    echo "--- loadbalancer logs (last 40 lines)" >&2
    compose logs --no-color --tail 40 loadbalancer >&2 2>/dev/null || true
  fi
  remove_all "$TEAL_IMAGE"
  exit $rc
}
trap cleanup EXIT

# The host side needs curl, python3 (the load client) and openssl (the certificate); install them
# if this machine lacks them.
need_tools curl python3 openssl

say "build the static binary and the image"
build_teal_image
mkdir -p "$TEAL_CONFIG_DIR" "$TEAL_CERT_DIR"
size=$(docker image inspect -f '{{.Size}}' "$TEAL_IMAGE")
echo "image $TEAL_IMAGE: $((size / 1024 / 1024)) MB ($size bytes)"
[ "$size" -lt 10000000 ] || fail "image is $size bytes, over 10 MB"

# The mounted config: the shipped one, with this run's token and the network's gateway (where
# requests from this host arrive from) on the preview allowlist. Writable by the container user.
sed -e "s/token = \"change-me\"/token = \"$TOKEN\"/" \
  -e "s/allow = \[.*\]/allow = [\"$GATEWAY\"]/" docker/config/teal.toml >"$TEAL_CONFIG_DIR/teal.toml"
chmod 0777 "$TEAL_CONFIG_DIR"
chmod 0666 "$TEAL_CONFIG_DIR/teal.toml"
# HTTPS with a certificate for app.test made here (ECDSA P-256, self-signed: curl trusts it with
# --cacert), mounted read-only at /certs; the key readable by the container user.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=app.test \
  -addext "subjectAltName=DNS:app.test" -keyout "$TEAL_CERT_DIR/app.key" -out "$TEAL_CERT_DIR/app.pem" 2>/dev/null
chmod 0644 "$TEAL_CERT_DIR/app.key"
printf '\n[tls]\nlisten = "0.0.0.0:443"\n\n[[tls.certs]]\ncert = "/certs/app.pem"\nkey = "/certs/app.key"\n' \
  >>"$TEAL_CONFIG_DIR/teal.toml"

# get PATH: the body, or "ERR <status>" (curl is only used from the host).
get() { curl -s -m 5 -w '\n%{http_code}' "$URL$1" | body_or_err; }
answers() { [ "$(get "$1")" = "$2" ]; }
version_of() { get "$1" | json_field version; }
both_versions() { # both_versions PATH VERSION: 10 answers in a row from VERSION
  for _ in $(seq 1 10); do [ "$(version_of "$1")" = "$2" ] || return 1; done
}

# The load client (docker/e2e-lib.sh): keep-alive GETs of / from this host until told to stop;
# pauses while the loadbalancer is deliberately down. Exits non-zero on the first failed request.
write_load_client
pause_load() {
  touch "$WORK/load.pause"
  wait_for 10 "load client did not pause" test -f "$WORK/load.paused"
}
resume_load() { rm -f "$WORK/load.pause" "$WORK/load.paused"; }
check_load() {
  if ! kill -0 "$(cat "$WORK/load.pid")" 2>/dev/null; then
    fail "load client stopped: $(cat "$WORK/load.count" 2>/dev/null)"
  fi
}

switches=0
recreations=0

say "up: loadbalancer and four servers"
compose up -d >/dev/null 2>&1 || compose up -d
wait_for 60 "/ never answered blue" answers / blue
[ "$(version_of /info)" = 0.0.1 ] || fail "/ is not blue 0.0.1"
wait_for 30 "/green never answered green" answers /green green
[ "$(version_of /green/info)" = 0.0.1 ] || fail "/green is not green 0.0.1"
for proto in http1.1 http2; do # "<body> <HTTP version>" over TLS, verified against the cert
  out=$(curl -s -m 5 "--$proto" --cacert "$TEAL_CERT_DIR/app.pem" -w ' %{http_version}' \
    --resolve "app.test:$TEAL_TLS_PORT:127.0.0.1" "https://app.test:$TEAL_TLS_PORT/" | tr -d '\n')
  want="blue $([ "$proto" = http2 ] && echo 2 || echo 1.1)"
  [ "$out" = "$want" ] || fail "HTTPS --$proto: expected '$want', got '$out'"
done
echo "HTTPS on :443 answers blue over HTTP/1.1 and HTTP/2"
start_load "" "$TEAL_PORT" 600
echo "/ is blue 0.0.1, /green is green 0.0.1; load client running"

say "recreate server1-green and server2-green as 0.0.2 (no teal reload)"
for s in server1-green server2-green; do
  GREEN_VERSION=0.0.2 compose up -d --no-deps --force-recreate "$s" >/dev/null 2>&1
  recreations=$((recreations + 1))
  check_load
done
wait_for 30 "/green did not answer 0.0.2 from both servers" both_versions /green/info 0.0.2
echo "/green answers 0.0.2"

say "teal switch green, inside the loadbalancer container (health-gated)"
# Refused (409) until both recreated green servers passed their health checks.
wait_for 30 "teal switch green was refused" compose exec -T loadbalancer teal switch green
switches=$((switches + 1))
[ "$(get /)" = green ] || fail "/ is not green after the switch"
[ "$(version_of /info)" = 0.0.2 ] || fail "/ is not green 0.0.2"
check_load
echo "/ is green 0.0.2"

say "roll back by editing the mounted config on the host"
sed -i 's/^active = .*/active = "blue"/' "$TEAL_CONFIG_DIR/teal.toml"
switches=$((switches + 1))
wait_for 5 "/ did not go back to blue after the edit" answers / blue
check_load
echo "/ is blue again"

say "switch to green through the admin API, then recreate the loadbalancer"
curl -sf -X POST -H "Authorization: Bearer $TOKEN" "$ADMIN/switch?to=green" >/dev/null ||
  fail "admin switch refused"
switches=$((switches + 1))
[ "$(get /)" = green ] || fail "/ is not green after the admin switch"
grep -q '^active = "green"' "$TEAL_CONFIG_DIR/teal.toml" || fail "the switch was not persisted"
pause_load
compose up -d --no-deps --force-recreate loadbalancer >/dev/null 2>&1
recreations=$((recreations + 1))
wait_for 30 "the new loadbalancer never answered" answers / green
resume_load
echo "/ is still green after the loadbalancer was recreated"

say "a container on the network but not on preview.allow gets 403 on /blue"
network=$(docker network ls -q --filter "label=com.docker.compose.project=$COMPOSE_PROJECT_NAME" | head -1)
[ -n "$network" ] || fail "the compose network was not found"
out=$(docker run --rm --network "$network" "$TEAL_IMAGE" health --url http://loadbalancer/blue/ 2>&1 || true)
echo "$out"
echo "$out" | grep -q "403 Forbidden" || fail "expected 403 from /blue inside the network, got: $out"
check_load

say "stop the loadbalancer during a slow request"
pause_load
slow=$(mktemp -p "$WORK")
curl -s -m 30 -o "$slow" -w '%{http_code}' "$URL/slow?delay_ms=3000" >"$slow.code" &
slow_pid=$!
sleep 1
compose stop -t 30 loadbalancer >/dev/null 2>&1
wait "$slow_pid" || true
[ "$(cat "$slow.code")" = 200 ] || fail "the slow request did not complete: $(cat "$slow.code")"
grep -q '"path":"/slow?delay_ms=3000"' "$slow" || fail "unexpected slow answer: $(cat "$slow")"
container=$(compose ps -q loadbalancer)
code=$(docker inspect -f '{{.State.ExitCode}}' "$container")
[ "$code" = 0 ] || fail "loadbalancer exited with $code"
echo "the slow request completed; loadbalancer exited 0"

touch "$WORK/load.stop"
rm -f "$WORK/load.pause"
wait "$(cat "$WORK/load.pid")" || fail "load client: $(cat "$WORK/load.count")"
rm -f "$WORK/load.pid"
read -r sent _ _ result <"$WORK/load.count"

say "down"
compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1
elapsed=$(($(date +%s) - started))
echo "e2e summary: requests $sent, failed 0 ($result), switches $switches, recreations $recreations, ${elapsed}s"
