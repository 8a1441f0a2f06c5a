# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Shared settings for hack/kube-build, hack/kube-up and hack/kube-down.
# Versions are pinned here; the wrapper modules in hack/kube/{k8s,etcd} pin the rest of the graph.

KUBE_VERSION=1.36.3          # k8s.io/kubernetes (kube-apiserver, -controller-manager, -scheduler)
KUBE_STAGING_VERSION=0.36.3  # every k8s.io/* staging module replaced in hack/kube/k8s/go.mod
ETCD_VERSION=3.6.16          # go.etcd.io/etcd/server/v3
KWOK_VERSION=0.8.0           # sigs.k8s.io/kwok

KUBE_REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
KUBE_CACHE_ROOT=${CAPSTAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/capstan}
# One folder per Kubernetes version; etcd and kwok versions are part of the binaries' --version checks.
KUBE_CACHE_DIR=$KUBE_CACHE_ROOT/kube-v$KUBE_VERSION
KUBE_BIN_DIR=$KUBE_CACHE_DIR/bin
KUBE_SHARE_DIR=$KUBE_CACHE_DIR/share
KUBE_DEFAULT_STATE_DIR=${CAPSTAN_KUBE_STATE:-$KUBE_CACHE_ROOT/kube-state}

# Components started by hack/kube-up, in start order (kube-down stops them in reverse).
KUBE_COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

kube_log() {
  printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2
}

kube_die() {
  kube_log "ERROR: $*"
  exit 1
}

# Seconds since the given epoch second, formatted as "Mm SSs".
kube_elapsed() {
  local secs=$(( $(date +%s) - $1 ))
  printf '%dm%02ds' $((secs / 60)) $((secs % 60))
}

# kube_pid_alive PID: the process exists and is not a zombie waiting to be reaped.
kube_pid_alive() {
  local stat
  [[ -n ${1:-} ]] && stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # drop "pid (comm) ", leaving the state letter first
  [[ ${stat:0:1} != Z ]]
}

# kube_pid_ours PID STATE_DIR: PID is a live process of the cluster in STATE_DIR. Every component gets a flag
# pointing into its state directory, so its command line names it; a recycled PID or a zombie (whose
# command line is empty) does not match.
kube_pid_ours() {
  kube_pid_alive "$1" && tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/"
}

# kube_dir_has_files DIR: DIR holds something besides the lock file.
kube_dir_has_files() {
  [[ -n $(find "$1" -mindepth 1 -maxdepth 1 ! -name .lock -print -quit 2>/dev/null) ]]
}
