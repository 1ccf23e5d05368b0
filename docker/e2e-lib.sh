# Shell pieces docker/e2e.sh and docker/e2e-cluster.sh share; each sources this file once it has
# set WORK (its temporary directory) and COMPOSE_FILE, from the repository's root.

# fd 3 and 4: the script's own stdout and stderr, for a failure (a watchdog's included) that
# happens inside a command whose output is redirected.
exec 3>&1 4>&2
say() { printf '\n== %s\n' "$*"; }
fail() {
  printf '\nFAILED: %s\n' "$*" >&4
  exit 1
}

if docker compose version >/dev/null 2>&1; then
  COMPOSE_CMD=(docker compose -f "$COMPOSE_FILE")
else
  COMPOSE_CMD=(docker-compose -f "$COMPOSE_FILE")
fi
compose() { "${COMPOSE_CMD[@]}" "$@"; }

# need_tools PACKAGE...: installs the packages (apt) if one of the commands of the same names is
# missing.
need_tools() {
  local tool
  for tool in "$@"; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
      break
    fi
  done
}

# build_teal_image: the static binary (release, x86_64-unknown-linux-gnu, under CARGO_TARGET_DIR
# if set) and $TEAL_IMAGE from it and the shipped config (context $WORK/ctx).
build_teal_image() {
  RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet \
    --target x86_64-unknown-linux-gnu
  mkdir -p "$WORK/ctx"
  cp "${CARGO_TARGET_DIR:-target}/x86_64-unknown-linux-gnu/release/teal" docker/config/teal.toml "$WORK/ctx/"
  mkdir -m 0700 "$WORK/ctx/acme"
  docker build -q -f docker/Dockerfile.prebuilt -t "$TEAL_IMAGE" "$WORK/ctx" >/dev/null
}

# curl -w '\n%{http_code}' ... | body_or_err: the body, or "ERR <status>" when it is not 200.
body_or_err() { awk 'NR>1{print prev} {prev=$0} END{if (prev!="200") print "ERR " prev}'; }
json_field() { sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...: retry until COMMAND succeeds
  local limit=$1 what=$2
  shift 2
  for _ in $(seq 1 $((limit * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  fail "$what (waited ${limit}s)"
}

# For cleanup: kills the load clients still running ($WORK/load*.pid).
kill_load_clients() {
  local f
  for f in "$WORK"/load*.pid; do
    [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
  done
}

# For cleanup: removes the compose project (volumes included), the images named, and $WORK.
remove_all() {
  compose down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
  docker rmi -f "$@" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}

# The load client, $WORK/load.py PORT WORK TAG SECONDS: keep-alive GETs of / on 127.0.0.1:PORT
# from this host until $WORK/load.stop or $WORK/load-TAG.stop exists (or SECONDS pass); pauses
# (connection closed, $WORK/load.paused written) while $WORK/load.pause exists. Every answer must
# be 200 with body blue or green: it exits non-zero on the first failed request. It keeps
# "<sent> <blue> <green> <ok|failed: why>" in $WORK/load-TAG.count ($WORK/load.count without a
# TAG).
write_load_client() {
  cat >"$WORK/load.py" <<'PY'
import http.client, os, sys, time
port, work, tag, seconds = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
own = f"load-{tag}" if tag else "load"
deadline = time.time() + seconds
sent = 0
seen = {"blue": 0, "green": 0}
conn = None
def status(s):
    open(f"{work}/{own}.count", "w").write(f"{sent} {seen['blue']} {seen['green']} {s}\n")
while not any(os.path.exists(f"{work}/{f}.stop") for f in ("load", own)) and time.time() < deadline:
    if os.path.exists(f"{work}/load.pause"):
        if conn: conn.close(); conn = None
        open(f"{work}/load.paused", "w").close()
        time.sleep(0.05)
        continue
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        r = conn.getresponse()
        body = r.read().decode().strip()
        sent += 1
        if r.status != 200 or body not in seen:
            status(f"failed: {r.status} {body!r}")
            sys.exit(1)
        seen[body] += 1
    except Exception as e:
        sent += 1
        status(f"failed: {e!r}")
        sys.exit(1)
    if sent % 50 == 0:
        status("ok")
    time.sleep(0.005)
status("ok")
PY
}

# start_load TAG PORT SECONDS: the load client in the background, its pid in $WORK/load-TAG.pid
# ($WORK/load.pid with an empty TAG).
start_load() {
  python3 "$WORK/load.py" "$2" "$WORK" "$1" "$3" &
  echo $! >"$WORK/load${1:+-$1}.pid"
}
