#!/usr/bin/env bash
# Runs the whole test suite against a real LocalStack, starting it first if nothing answers on its port,
# and stopping it afterwards only if this script started it.
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

# Under CI, the containers too: the ECS task definitions booted locally (installs Docker if missing).
if [ "${CI:-}" = "true" ]; then
  bash scripts/test-ecs.sh
fi
