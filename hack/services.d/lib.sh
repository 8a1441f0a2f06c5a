# shellcheck shell=bash disable=SC2034  # sourced by hack/services; its variables are used there
# Helpers shared by hack/services and the per-service scripts in hack/services.d/<name>.sh.
# Sourced, never run. Every service script defines (in a subshell of its own, so names do not clash):
#   svc_packages   print the Debian packages still missing for this service (nothing when installed)
#   svc_fetch      optional: download what apt does not provide (Kafka's jars); must be idempotent
#   svc_start      render config, initialise the data dir once, start the daemon with `spawn`
#   svc_setup      optional: create the test users/databases, idempotently, once the daemon is `alive`
#   svc_stop       optional: stop the daemon (default: SIGTERM to its process group, then SIGKILL)
#   SVC_TIMEOUT    optional: seconds to wait for readiness (default 120)

SERVICES_D=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SERVICES_D/../.." && pwd)
SERVICES_DIR=${CAPSTAN_SERVICES_DIR:-$HOME/.cache/capstan/services}
CACHE_DIR=${CAPSTAN_CACHE_DIR:-$HOME/.cache/capstan}
ALL_SERVICES=(redis rabbitmq postgres mariadb nats mosquitto prometheus kafka)
# shellcheck source=hack/services.d/ports.env
source "$SERVICES_D/ports.env"

say() { printf '%s\n' "$*"; }
warn() { printf '%s\n' "$*" >&2; }
die() { warn "hack/services: $*"; exit 1; }

# Seconds since $1 (an $EPOCHREALTIME value), one decimal.
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

probe() { python3 "$SERVICES_D/catalog.py" probe "$@"; }

# render TEMPLATE OUTPUT KEY=VALUE...   replaces each @KEY@ in TEMPLATE.
render() {
  local template=$1 out=$2 text kv
  shift 2
  text=$(<"$template")
  for kv in "$@"; do
    text=${text//@${kv%%=*}@/${kv#*=}}
  done
  printf '%s\n' "$text" >"$out.tmp" && mv "$out.tmp" "$out"
}

# The pid file holds "PID STARTTIME": the start time (field 22 of /proc/PID/stat) tells our daemon apart from
# an unrelated process that got the same pid after a reboot or a crash.
proc_starttime() { awk '{ sub(/.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null; }

# Is PID a live process? A zombie counts as dead: exited daemons are reparented to PID 1, which may reap them
# only after a while, and kill -0 succeeds on zombies.
running() { [[ $(awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) =~ ^[^ZX]$ ]]; }

# pid of the service's daemon if it is still the process we started, else nothing (and status 1).
svc_pid() {
  local pid start
  read -r pid start 2>/dev/null <"$SVC_DIR/daemon.pid" || return 1
  [[ -n $pid && $(proc_starttime "$pid") == "$start" ]] && running "$pid" || return 1
  echo "$pid"
}

# spawn CMD...   start CMD in the background in a session of its own (so `down` can signal the whole process
# group, and a terminal's Ctrl-C does not reach it), output to $SVC_DIR/daemon.log, stdin closed, and without
# the lock descriptor 9 (a daemon holding it would block every later `up`).
spawn() {
  local pid
  {
    printf '\n==== %s starting: %s\n' "$(date -Is)" "$*"
  } >>"$SVC_DIR/daemon.log"
  setsid "$@" </dev/null >>"$SVC_DIR/daemon.log" 2>&1 8>&- 9>&- &
  pid=$!
  echo "$pid $(proc_starttime "$pid")" >"$SVC_DIR/daemon.pid"
}

# stop_daemon [SIGNAL]   signal the process group, wait up to 30 s, then SIGKILL it.
stop_daemon() {
  local sig=${1:-TERM} pid i
  pid=$(svc_pid) || { rm -f "$SVC_DIR/daemon.pid"; return 0; }
  kill "-$sig" -- "-$pid" 2>/dev/null || kill "-$sig" "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    running "$pid" || break
    sleep 0.1
  done
  if running "$pid"; then
    warn "$SVC_NAME: still running 30 s after SIG$sig; killing it"
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$SVC_DIR/daemon.pid"
}

# wait_stage STAGE TIMEOUT   poll the probe until it passes; fail early when the daemon has exited.
wait_stage() {
  local stage=$1 timeout=$2 start=$EPOCHREALTIME delay=0.1 err
  while true; do
    if err=$(probe "$SVC_NAME" "$stage" 2>&1); then
      return 0
    fi
    if ! svc_pid >/dev/null; then
      warn "$SVC_NAME: the daemon exited before it became $stage (last probe: $err)"
      return 1
    fi
    if awk -v a="$start" -v b="$EPOCHREALTIME" -v t="$timeout" 'BEGIN { exit !(b - a > t) }'; then
      warn "$SVC_NAME: not $stage after ${timeout}s (last probe: $err)"
      return 1
    fi
    sleep "$delay"
    delay=0.25
  done
}

log_tail() {
  warn "---- last lines of $SVC_DIR/daemon.log"
  tail -n 40 "$SVC_DIR/daemon.log" >&2 2>/dev/null || true
  warn "----"
}

# Is something else listening on PORT? (Used to explain a failure instead of waiting for a timeout.)
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Daemons that refuse root (PostgreSQL) run as a non-root uid. The private dirs live under $HOME, which is
# usually mode 0700 for root, so a plain `runuser -u postgres` could not reach them; instead a user namespace
# maps that user's uid onto root, which keeps every file owned by the caller and changes no permissions.
# unprivileged_prefix USER   sets the array UNPRIV to the command prefix (empty when not root).
unprivileged_prefix() {
  UNPRIV=()
  if ((EUID == 0)); then
    local uid gid
    uid=$(id -u "$1" 2>/dev/null || echo 1000)
    gid=$(id -g "$1" 2>/dev/null || echo 1000)
    UNPRIV=(unshare --user --map-user="$uid" --map-group="$gid" --)
  fi
}

# Defaults for the optional hooks; a service script overrides them by defining its own.
svc_fetch() { :; }
svc_setup() { :; }
svc_stop() { stop_daemon TERM; }
SVC_TIMEOUT=120
