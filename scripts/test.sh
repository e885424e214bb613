#!/usr/bin/env bash
# Runs the whole test suite against a real LocalStack, starting it first if nothing answers on its port,
# and stopping it afterwards only if this script started it; then
# scripts/test-compose.sh: the stack in containers (Docker installed if missing), the journey through it, and
# scripts/test-ecs.sh: the ECS task definitions booted in containers on the same images, the journey again.
# Both build images (a cold build takes tens of minutes on a 2-core machine: README, "Containers"), so they
# run only with MODELGATE_TEST_CONTAINERS=1 for now; `make test-compose` and `make test-ecs` run each alone.
# When they run, they fail rather than skip.
set -euo pipefail
cd "$(dirname "$0")/.."

started_here=0
if ! bash scripts/localstack.sh status >/dev/null 2>&1; then
  bash scripts/localstack.sh start
  started_here=1
fi
cleanup() { if [ "$started_here" = 1 ]; then bash scripts/localstack.sh stop; fi; }
trap cleanup EXIT

mkdir -p test-artifacts
.venv/bin/pytest tests -q -p no:cacheprovider "$@"

# The containers: the compose stack, then the template's ECS task definitions booted on the same images.
if [ "${MODELGATE_TEST_CONTAINERS:-}" = 1 ]; then
  bash scripts/test-compose.sh
  bash scripts/test-ecs.sh
else
  echo "[test] containers not tested: MODELGATE_TEST_CONTAINERS=1 (or make test-compose / make test-ecs) runs them"
fi
