#!/usr/bin/env bash
# Install, start, stop and health-check LocalStack as a plain host process (no Docker).
#
# Usage: scripts/localstack.sh {install|start|stop|status|wait}
#
#   install  create/update the LocalStack virtualenv (fast no-op when up to date)
#   start    start LocalStack in the background and wait until it is healthy
#            (reuses an instance that already answers healthy on the port)
#   stop     stop the instance started by `start` (pidfile), fine if not running
#   status   print the health JSON and exit 0, or "not running" and exit 1
#   wait     wait until LocalStack is healthy
#
# Environment:
#   LOCALSTACK_VENV          virtualenv path (default .localstack/venv, relative to repo root)
#   LOCALSTACK_PORT          gateway port on 127.0.0.1 (default 4566)
#   LOCALSTACK_PYTHON        force the interpreter used by `install` (skips auto-detection)
#   LOCALSTACK_WAIT_TIMEOUT  seconds to wait for health in start/wait (default 60)
#   LOCALSTACK_RUN_DIR       where the log, pid and data files below go (default var, relative to repo
#                            root): a second LocalStack on another port needs its own
#   LOCALSTACK_SQS_ENDPOINT_STRATEGY  SQS queue URL style (default path):
#       path -> http://127.0.0.1:4566/queue/us-east-1/000000000000/<name>
#       off  -> http://127.0.0.1:4566/000000000000/<name>
#
# Files (in $LOCALSTACK_RUN_DIR, default var/):
#   log/localstack.log   LocalStack output (previous run: localstack.log.prev)
#   run/localstack.pid   pid of the LocalStack process (also its process group id)
#   localstack/          LocalStack's own files (FILESYSTEM_ROOT)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

VENV="${LOCALSTACK_VENV:-.localstack/venv}"
[[ "$VENV" == /* ]] || VENV="$REPO_ROOT/$VENV"
MARKER="$VENV/.localstack-recipe"
CONSTRAINTS_PY313="$REPO_ROOT/scripts/localstack-constraints-py313.txt"
PINS="$REPO_ROOT/scripts/localstack-pins.txt"

HOST=127.0.0.1
PORT="${LOCALSTACK_PORT:-4566}"
HEALTH_URL="http://$HOST:$PORT/_localstack/health"
WAIT_TIMEOUT="${LOCALSTACK_WAIT_TIMEOUT:-60}"
SERVICES=sqs,sns,ssm,s3,events,sts,iam,secretsmanager,ses,cloudformation,kms
SQS_ENDPOINT_STRATEGY="${LOCALSTACK_SQS_ENDPOINT_STRATEGY:-path}"

RUN_DIR="${LOCALSTACK_RUN_DIR:-var}"
[[ "$RUN_DIR" == /* ]] || RUN_DIR="$REPO_ROOT/$RUN_DIR"
LOG_FILE="$RUN_DIR/log/localstack.log"
INSTALL_LOG="$REPO_ROOT/var/log/localstack-install.log"
PID_FILE="$RUN_DIR/run/localstack.pid"
DATA_DIR="$RUN_DIR/localstack"

# Bump when the install steps below change, so existing venvs get rebuilt.
RECIPE_REVISION=1

say() { echo "[localstack] $*"; }
die() { echo "[localstack] ERROR: $*" >&2; exit 1; }
now_ms() { date +%s%3N; }

# ---------------------------------------------------------------- install ---

# Print the real path of a usable interpreter (needs venv + ensurepip), or nothing.
python_exe() {
    "$1" -c 'import sys, venv, ensurepip; print(sys.executable)' 2>/dev/null || true
}

python_version() {
    "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'
}

# Candidates for one minor version ($1, e.g. 3.13): PATH first, then pyenv, newest first.
python_candidates() {
    local pyenv_root="${PYENV_ROOT:-$HOME/.pyenv}" path
    echo "python$1"
    for path in "$pyenv_root"/versions/"$1".*/bin/"python$1"; do
        if [[ -x "$path" ]]; then echo "$path"; fi
    done | sort -rV
}

# Print the first working interpreter of minor version $1, or fail.
find_python() {
    local candidate exe
    while read -r candidate; do
        exe="$(python_exe "$candidate")"
        if [[ -n "$exe" && "$(python_version "$exe")" == "$1".* ]]; then
            echo "$exe"
            return 0
        fi
    done < <(python_candidates "$1")
    return 1
}

# Sets PY (absolute path), PY_VERSION and FLAVOR (py313, py312 or py311).
choose_python() {
    if [[ -n "${LOCALSTACK_PYTHON:-}" ]]; then
        PY="$(python_exe "$LOCALSTACK_PYTHON")"
        [[ -n "$PY" ]] || die "LOCALSTACK_PYTHON=$LOCALSTACK_PYTHON is not a working Python with venv"
    else
        PY="$(find_python 3.13 || find_python 3.12 || find_python 3.11 || true)"
        [[ -n "$PY" ]] || die "no Python 3.13, 3.12 or 3.11 found (PATH or ~/.pyenv/versions)"
    fi
    PY_VERSION="$(python_version "$PY")"
    case "$PY_VERSION" in
        3.13.*) FLAVOR=py313 ;;
        3.12.*) FLAVOR=py312 ;;
        3.11.*) FLAVOR=py311 ;;
        *) die "Python $PY_VERSION is not supported (need 3.13, 3.12 or 3.11)" ;;
    esac
}

# Sets PACKAGES and PIP_CONSTRAINT_ARGS for the chosen FLAVOR, from scripts/localstack-pins.txt (the
# LocalStack stand-in image of scripts/images.sh installs the same).
choose_packages() {
    mapfile -t PACKAGES < <(awk -v flavor="$FLAVOR" \
        '!/^#/ && NF == 2 && ($1 == flavor || $1 == "all") { print $2 }' "$PINS")
    [[ ${#PACKAGES[@]} -gt 1 ]] || die "no pins for $FLAVOR in $PINS"
    PIP_CONSTRAINT_ARGS=()
    if [[ "$FLAVOR" == py313 ]]; then PIP_CONSTRAINT_ARGS=(-c "$CONSTRAINTS_PY313"); fi
}

# The recipe recorded in the venv; any difference triggers a rebuild.
recipe() {
    echo "revision=$RECIPE_REVISION"
    echo "python=$PY ($PY_VERSION)"
    echo "flavor=$FLAVOR"
    echo "packages=${PACKAGES[*]}"
    if [[ "$FLAVOR" == py313 ]]; then
        echo "constraints-sha256=$(sha256sum <"$CONSTRAINTS_PY313" | cut -d' ' -f1)"
    fi
}

installed_localstack_version() {
    "$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("localstack-core"))'
}

describe_install() {
    echo "LocalStack $(installed_localstack_version) on Python $PY_VERSION ($PY) [$FLAVOR], venv $VENV"
}

create_venv() {
    if [[ -e "$VENV" ]]; then
        [[ -f "$VENV/pyvenv.cfg" ]] || die "$VENV exists but is not a virtualenv; refusing to delete it"
        say "removing outdated venv $VENV"
        rm -rf "$VENV"
    fi
    say "creating venv $VENV with Python $PY_VERSION ($PY)"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV"
}

# Python 3.12 lacks warnings.deprecated (3.13+), which LocalStack 2026.x uses.
write_py312_shim() {
    local site_packages
    site_packages="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    say "Python 3.12: adding warnings.deprecated shim ($site_packages/sitecustomize.py)"
    cat >"$site_packages/sitecustomize.py" <<'EOF'
# Added by scripts/localstack.sh: LocalStack 2026.x needs warnings.deprecated (Python 3.13+).
import warnings

if not hasattr(warnings, "deprecated"):
    try:
        import typing_extensions

        warnings.deprecated = typing_extensions.deprecated
    except ImportError:
        pass
EOF
}

pip_install() {
    mkdir -p "$(dirname "$INSTALL_LOG")"
    say "pip install ${PACKAGES[*]} ${PIP_CONSTRAINT_ARGS[*]:-}"
    say "(pip output: $INSTALL_LOG)"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check \
        "${PIP_CONSTRAINT_ARGS[@]}" "${PACKAGES[@]}" >"$INSTALL_LOG" 2>&1; then
        tail -n 30 "$INSTALL_LOG" >&2
        die "pip install failed (full log: $INSTALL_LOG)"
    fi
}

check_import() {
    if ! "$VENV/bin/python" -c 'import localstack.runtime.main' >>"$INSTALL_LOG" 2>&1; then
        tail -n 30 "$INSTALL_LOG" >&2
        die "LocalStack installed but cannot be imported (log: $INSTALL_LOG)"
    fi
}

# LocalStack indexes every AWS service's spec on its first request unless it finds this index in its cache
# (its Docker image ships one, built at image build time). Building it once here, and copying it into each
# run's cache, halves LocalStack's memory: ~320 MB instead of ~650 MB with SQS, SNS, S3, SSM and STS in use.
CATALOG_DIR_NAME="service-catalog"

build_catalog() {
    mkdir -p "$(dirname "$INSTALL_LOG")"
    "$VENV/bin/python" - "$VENV/$CATALOG_DIR_NAME" >>"$INSTALL_LOG" 2>&1 <<'EOF_PY' || die "could not build LocalStack's service catalog index (log: $INSTALL_LOG)"
import os, sys
from localstack.aws.spec import _get_catalog_filename, build_service_index_cache
os.makedirs(sys.argv[1], exist_ok=True)
build_service_index_cache(os.path.join(sys.argv[1], _get_catalog_filename()))
EOF_PY
}

seed_catalog_cache() {
    local cache="$DATA_DIR/var/lib/localstack/cache"
    if ! compgen -G "$VENV/$CATALOG_DIR_NAME/service-catalog-*.dill" >/dev/null; then
        say "building LocalStack's service catalog index (once per install)"
        build_catalog
    fi
    mkdir -p "$cache"
    local index
    for index in "$VENV/$CATALOG_DIR_NAME"/service-catalog-*.dill; do
        [[ -e "$cache/$(basename "$index")" ]] || cp "$index" "$cache/"
    done
}

cmd_install() {
    choose_python
    choose_packages
    local wanted
    wanted="$(recipe)"
    if [[ -x "$VENV/bin/python" && -f "$MARKER" && "$(cat "$MARKER")" == "$wanted" ]]; then
        say "up to date: $(describe_install)"
        return 0
    fi
    local started
    started="$(now_ms)"
    rm -f "$MARKER"
    create_venv
    if [[ "$FLAVOR" == py312 ]]; then write_py312_shim; fi
    pip_install
    check_import
    build_catalog
    echo "$wanted" >"$MARKER"
    say "installed in $(( ($(now_ms) - started) / 1000 )) s: $(describe_install)"
}

# ----------------------------------------------------------------- health ---

# Prints the health JSON. Exit 0: all our services are running/available,
# 1: nothing answers, 2: answers but not (yet) healthy. Bypasses any HTTP proxy.
HEALTH_CHECK_PY='
import json, sys, urllib.request
url, wanted = sys.argv[1], sys.argv[2].split(",")
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    body = opener.open(url, timeout=2).read().decode()
    states = json.loads(body).get("services", {})
except Exception:
    sys.exit(1)
print(body)
bad = [name for name in wanted if states.get(name) not in ("running", "available")]
sys.exit(2 if bad else 0)
'

health_json() {
    python3 -c "$HEALTH_CHECK_PY" "$HEALTH_URL" "$SERVICES"
}

is_healthy() {
    health_json >/dev/null
}

port_in_use() {
    (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null
}

# Wait for health until the deadline. If a pid is given, give up as soon as it dies.
wait_healthy() {
    local pid="${1:-}"
    local deadline=$((SECONDS + WAIT_TIMEOUT))
    while ((SECONDS < deadline)); do
        if is_healthy; then return 0; fi
        if [[ -n "$pid" ]] && ! is_alive "$pid"; then return 1; fi
        sleep 0.5
    done
    return 1
}

# ------------------------------------------------------------ process ---

read_pid() {
    [[ -f "$PID_FILE" ]] && cat "$PID_FILE"
}

# True if process $1 exists and is not a zombie.
is_alive() {
    [[ -r "/proc/$1/stat" ]] || return 1
    [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]
}

# True if $1 is a live LocalStack runtime process (guards against reused pids).
is_localstack_pid() {
    is_alive "$1" || return 1
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -q 'localstack.runtime.main'
}

launch() {
    mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")" "$DATA_DIR"
    seed_catalog_cache
    if [[ -f "$LOG_FILE" ]]; then mv -f "$LOG_FILE" "$LOG_FILE.prev"; fi
    # setsid: own session and process group (pid == pgid), detached from the caller's
    # terminal so `make up` can return. cd: keep the repo off LocalStack's sys.path.
    (
        cd "$DATA_DIR"
        exec env -u PYTHONPATH \
            OVERRIDE_IN_DOCKER=0 \
            FILESYSTEM_ROOT="$DATA_DIR" \
            SKIP_SSL_CERT_DOWNLOAD=1 \
            GATEWAY_LISTEN="$HOST:$PORT" \
            LOCALSTACK_HOST="$HOST:$PORT" \
            SQS_ENDPOINT_STRATEGY="$SQS_ENDPOINT_STRATEGY" \
            DNS_ADDRESS=0 \
            DISABLE_EVENTS=1 \
            SERVICES="$SERVICES" \
            setsid nohup "$VENV/bin/python" -m localstack.runtime.main
    ) >"$LOG_FILE" 2>&1 </dev/null &
    echo $! >"$PID_FILE"
    disown
}

show_log_tail() {
    echo "---- last lines of $LOG_FILE ----" >&2
    tail -n 30 "$LOG_FILE" >&2 || true
    echo "----" >&2
}

# SIGTERM the process group, wait up to 10 s, then SIGKILL.
terminate() {
    local pid="$1" i
    say "stopping LocalStack (pid $pid)"
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do
        is_localstack_pid "$pid" || break
        sleep 0.5
    done
    if is_localstack_pid "$pid"; then
        say "still running after 10 s, sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    # Clean up anything left in its process group.
    kill -KILL -- "-$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------- commands ---

cmd_start() {
    local pid started
    if is_healthy; then
        say "already running and healthy on $HOST:$PORT (reusing it)"
        return 0
    fi
    pid="$(read_pid || true)"
    if [[ -n "$pid" ]] && is_localstack_pid "$pid"; then
        say "already starting (pid $pid), waiting for health"
        cmd_wait
        return
    fi
    if port_in_use; then
        die "port $PORT is in use, but not by a healthy LocalStack ($HEALTH_URL)"
    fi
    [[ -x "$VENV/bin/python" ]] || die "not installed; run: scripts/localstack.sh install"

    started="$(now_ms)"
    launch
    pid="$(read_pid)"
    say "started pid $pid on $HOST:$PORT (log: $LOG_FILE), waiting for health"
    if ! wait_healthy "$pid"; then
        show_log_tail
        if ! is_alive "$pid"; then
            rm -f "$PID_FILE"
            die "LocalStack exited before becoming healthy (see $LOG_FILE)"
        fi
        terminate "$pid"
        rm -f "$PID_FILE"
        die "LocalStack did not become healthy within ${WAIT_TIMEOUT} s (stopped it)"
    fi
    say "healthy after $(( $(now_ms) - started )) ms: $HEALTH_URL"
}

cmd_stop() {
    local pid
    pid="$(read_pid || true)"
    if [[ -z "$pid" ]]; then
        if port_in_use; then
            say "something answers on port $PORT but was not started by this script (no $PID_FILE); leaving it alone"
            return 1
        fi
        say "not running"
        return 0
    fi
    if is_localstack_pid "$pid"; then
        terminate "$pid"
        say "stopped"
    else
        say "not running (removing stale pidfile, pid $pid)"
    fi
    rm -f "$PID_FILE"
}

cmd_status() {
    local rc=0
    health_json || rc=$?
    case "$rc" in
        0) return 0 ;;
        2) say "answers on $HOST:$PORT but not all of $SERVICES are running/available" >&2 ;;
        *) echo "not running" ;;
    esac
    return 1
}

cmd_wait() {
    if wait_healthy; then
        say "healthy: $HEALTH_URL"
        return 0
    fi
    if [[ -f "$LOG_FILE" ]]; then show_log_tail; fi
    die "LocalStack not healthy after ${WAIT_TIMEOUT} s ($HEALTH_URL)"
}

usage() {
    echo "usage: $0 {install|start|stop|status|wait}" >&2
    exit 2
}

main() {
    [[ $# -eq 1 ]] || usage
    case "$1" in
        install) cmd_install ;;
        start) cmd_start ;;
        stop) cmd_stop ;;
        status) cmd_status ;;
        wait) cmd_wait ;;
        *) usage ;;
    esac
}

main "$@"
