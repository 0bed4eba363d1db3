# shellcheck shell=bash
# Shared helpers for the ci/ scripts: `source "$(dirname "$0")/lib.sh"`.
# Kept tiny on purpose: logging, dying, the root check and the repo root.

# The script's own name, for messages ("setup: ...", "containerd: ...").
LOG_NAME=${LOG_NAME:-$(basename "$0")}

# Seconds since the first script of this run started (shared with the scripts it calls), so
# every log line says where the time goes: "test [14m05s]: ...".
export LOCKSTEP_CI_START=${LOCKSTEP_CI_START:-$(date +%s)}

# log MSG...: one line on stderr, so stdout stays free for results.
log() {
  local elapsed=$(($(date +%s) - LOCKSTEP_CI_START))
  printf '%s [%dm%02ds]: %s\n' "$LOG_NAME" $((elapsed / 60)) $((elapsed % 60)) "$*" >&2
}

# die MSG...: log and exit 1.
die() { log "error: $*"; exit 1; }

# need_root: exit unless running as root.
need_root() { [ "$(id -u)" -eq 0 ] || die "must run as root"; }

# repo_root: the work tree these scripts belong to (the parent of ci/).
repo_root() { (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); }
