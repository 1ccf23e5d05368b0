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
