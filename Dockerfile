# syntax=docker/dockerfile:1
# One image recipe for the four services; the service is a build argument. Build from the repository root:
#   docker build --build-arg SERVICE=registrar --build-arg PORT=8081 --build-arg EXTRAS=comet -t modelgate/registrar:local .
#   docker build --build-arg SERVICE=approver  --build-arg PORT=8082                          -t modelgate/approver:local .
#   docker build --build-arg SERVICE=deployer  --build-arg PORT=8083 --build-arg EXTRAS=serve -t modelgate/deployer:local .
#   docker build --build-arg SERVICE=notifier  --build-arg PORT=8084                          -t modelgate/notifier:local .
# (docker-compose.yml passes exactly these; tests/unit/test_dockerfiles.py keeps them in step.)
#
# EXTRAS are pyproject.toml's optional dependencies an image carries besides the core: `serve` (the model
# libraries services/inference loads; the deployer's local target runs it), `comet` (the registrar's Comet
# import and write-back). Nothing else: no training stack (`demo`), no dev tools.
#
# PYTHON_IMAGE is the base; its default is the official image. Only where no registry answers, use the local
# stand-in scripts/images.sh builds from the Debian archive (it sets PYTHON_IMAGE for compose).
# Builds with the classic builder too (no BuildKit-only feature): Debian's docker.io has no buildx. Behind a
# TLS-inspecting proxy pip needs the proxy's CA: the stand-in base trusts the host's (PIP_CERT in its ENV).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build stage: a virtualenv with modelgate installed the way the Makefile installs it --------------
FROM ${PYTHON_IMAGE} AS build
ARG EXTRAS=""

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /app
RUN python -m venv /opt/venv
# The dependencies first, from pyproject.toml alone (the core and the image's EXTRAS), so that a change of
# the code rebuilds only the layers below. Every dependency ships manylinux wheels: no compiler here either.
COPY pyproject.toml README.md ./
RUN python -c "import os, tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; extras = [e for e in os.environ['EXTRAS'].split(',') if e]; print('\n'.join(p['dependencies'] + [r for e in extras for r in p['optional-dependencies'][e]]))" >/tmp/requirements.txt \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt
# Then modelgate itself, as `make install` does (`pip install -e .`), with the image's extras instead of dev.
COPY shared/ shared/
COPY services/ services/
COPY modelgate/ modelgate/
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps -e ".${EXTRAS:+[$EXTRAS]}" \
    && /opt/venv/bin/pip check

# --- runtime stage: the base, the virtualenv and the source, nothing else -----------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG SERVICE=registrar
ARG PORT=8081

LABEL org.opencontainers.image.title="modelgate-${SERVICE}" \
      org.opencontainers.image.description="modelgate ${SERVICE} service" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODELGATE_IMAGE_SERVICE=${SERVICE} \
    MODELGATE_HTTP_HOST=0.0.0.0 \
    MODELGATE_HTTP_PORT=${PORT}

# An unprivileged user with a fixed numeric id (ECS and Kubernetes can check runAsNonRoot with it).
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin modelgate

WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app
# var/ holds the default SQLite database when MODELGATE_DATABASE_URL is unset; it is the only
# writable path. The code itself stays owned by root.
RUN mkdir -p /app/var && chown 10001:10001 /app/var

USER 10001:10001
EXPOSE ${PORT}

# /healthz answers while the process is alive; the port comes from the environment so an override of
# MODELGATE_HTTP_PORT keeps the check right. python is used because the slim image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ['MODELGATE_HTTP_PORT'], timeout=4)"]

# SIGTERM (the default stop signal) drains in-flight messages within MODELGATE_DRAIN_SECONDS (25 s):
# give the container at least 30 s to stop (compose stop_grace_period, ECS stopTimeout).
# `exec`: python is PID 1 and gets the signal. compose and the ECS task definitions give the command too.
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec python -m \"services.$MODELGATE_IMAGE_SERVICE\""]
