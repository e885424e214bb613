#!/usr/bin/env bash
# The base images docker-compose.yml needs: the official ones where a registry answers, local stand-ins
# built from the Debian archive and PyPI where none does (a machine without access to Docker Hub).
#
#   eval "$(bash scripts/images.sh)"      # sets PYTHON_IMAGE, LOCALSTACK_IMAGE, POSTGRES_IMAGE
#   docker compose up -d --build --wait
#
# For each image it keeps a value you exported; otherwise it uses the official image if it is present or
# `docker pull` gets it (a registry that does not answer fails fast), and only then a stand-in:
#   PYTHON_IMAGE      python:3.11-slim-bookworm    | modelgate-standin/python:3.11-bookworm
#                     (debootstrap --variant=minbase bookworm + Debian's python3.11, `docker import`)
#   LOCALSTACK_IMAGE  localstack/localstack:4.14.0 | modelgate-standin/localstack:2026.3.0
#                     (localstack-core with scripts/localstack-pins.txt, as scripts/localstack.sh; Python 3.13)
#   POSTGRES_IMAGE    postgres:17-bookworm         | modelgate-standin/postgres:17
#                     (Debian's postgresql-17, the official image's environment and init-script contract)
# The stand-ins serve only where the official images are unavailable; they are not published anywhere.
# A stand-in whose tag exists is reused (`docker rmi` it to rebuild). Stand-ins need root (debootstrap).
#
# stdout: `export NAME=value` lines (also written to var/images.env, for `docker compose --env-file`);
# progress goes to stderr. Environment: MODELGATE_DEBIAN_MIRROR (default: the mirror apt uses, else
# http://deb.debian.org/debian); PIP_CERT (the host's CA bundle, e.g. a TLS-inspecting proxy's: the
# stand-ins trust it, so pip works in them and in the service builds on them). The builds use the classic
# builder (DOCKER_BUILDKIT=0): Debian's docker.io has no buildx plugin.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STANDINS="$REPO_ROOT/infra/standins"
ENV_FILE="$REPO_ROOT/var/images.env"

OFFICIAL_PYTHON=python:3.11-slim-bookworm
OFFICIAL_LOCALSTACK=localstack/localstack:4.14.0
OFFICIAL_POSTGRES=postgres:17-bookworm
STANDIN_PYTHON=modelgate-standin/python:3.11-bookworm
STANDIN_LOCALSTACK=modelgate-standin/localstack:2026.3.0
STANDIN_POSTGRES=modelgate-standin/postgres:17
STANDIN_TRIXIE=modelgate-standin/debian:trixie   # the base of the LocalStack and PostgreSQL stand-ins

say() { echo "[images] $*" >&2; }
die() { echo "[images] ERROR: $*" >&2; exit 1; }

WORK="$(mktemp -d)"
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

mirror() {
    if [[ -n "${MODELGATE_DEBIAN_MIRROR:-}" ]]; then echo "$MODELGATE_DEBIAN_MIRROR"; return; fi
    local found
    found="$(grep -hoE 'https?://[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list \
        2>/dev/null | head -n1 || true)"
    echo "${found:-http://deb.debian.org/debian}"
}

# A Debian root filesystem imported as an image: $1 suite, $2 tag, $3 extra packages (comma-separated).
debian_image() {
    local suite="$1" tag="$2" packages="$3" root="$WORK/rootfs-$1" started=$SECONDS
    command -v debootstrap >/dev/null || {
        say "installing debootstrap"
        apt-get install -y -qq debootstrap >/dev/null 2>&1 \
            || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
    }
    say "debootstrap --variant=minbase $suite ($packages) from $(mirror)"
    debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$(mirror)" \
        >"$WORK/debootstrap-$suite.log" 2>&1 || { tail -n 20 "$WORK/debootstrap-$suite.log" >&2; die "debootstrap $suite failed"; }
    # What a slim image leaves out too: package caches and lists, documentation, other locales.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
        "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/log/*.log "$root"/tmp/*
    find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
    local changes=(--change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]')
    if [[ -s "$(host_ca)" ]]; then
        cp "$(host_ca)" "$root/etc/ssl/host-ca.crt"
        changes+=(--change 'ENV PIP_CERT=/etc/ssl/host-ca.crt')
    fi
    tar -C "$root" --exclude=./proc/* --exclude=./sys/* --exclude=./dev/* -c . \
        | docker import "${changes[@]}" - "$tag" >/dev/null
    rm -rf "$root"
    say "$tag imported in $((SECONDS - started)) s"
}

# The host's CA bundle (PIP_CERT), or nothing.
host_ca() { if [[ -n "${PIP_CERT:-}" && -s "$PIP_CERT" ]]; then echo "$PIP_CERT"; fi; }

# docker build with the host's CA bundle in the context (host-ca.crt): $1 tag, $2 Dockerfile, $3 context.
build_image() {
    local tag="$1" dockerfile="$2" context="$3" started=$SECONDS
    if [[ -n "$(host_ca)" ]]; then cp "$(host_ca)" "$context/host-ca.crt"; else : >"$context/host-ca.crt"; fi
    say "building $tag ($dockerfile)"
    DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$STANDIN_TRIXIE" \
        -f "$dockerfile" -t "$tag" "$context" >"$WORK/build.log" 2>&1 \
        || { tail -n 40 "$WORK/build.log" >&2; die "building $tag failed"; }
    say "$tag built in $((SECONDS - started)) s"
}

trixie_base() {
    have_image "$STANDIN_TRIXIE" || debian_image trixie "$STANDIN_TRIXIE" ca-certificates
}

build_python() {
    debian_image bookworm "$STANDIN_PYTHON" python3,python3-venv,python-is-python3,ca-certificates
}

build_localstack() {
    trixie_base
    mkdir -p "$WORK/localstack"
    cp "$REPO_ROOT/scripts/localstack-pins.txt" "$REPO_ROOT/scripts/localstack-constraints-py313.txt" \
        "$WORK/localstack/"
    build_image "$STANDIN_LOCALSTACK" "$STANDINS/localstack.Dockerfile" "$WORK/localstack"
}

build_postgres() {
    trixie_base
    mkdir -p "$WORK/postgres"
    cp "$STANDINS/postgres-entrypoint.sh" "$WORK/postgres/"
    build_image "$STANDIN_POSTGRES" "$STANDINS/postgres.Dockerfile" "$WORK/postgres"
}

# Sets the variable $1 to: its exported value, else the official image $2 if present or pullable, else the
# stand-in $3 (built by $4 unless its tag exists).
choose() {
    local name="$1" official="$2" standin="$3" builder="$4" chosen
    if [[ -n "${!name:-}" ]]; then
        chosen="${!name}"
        say "$name=$chosen (from the environment)"
    elif have_image "$official" || docker pull -q "$official" >/dev/null 2>&1; then
        chosen="$official"
        say "$name=$chosen (official)"
    else
        if have_image "$standin"; then
            say "$name: $official cannot be pulled; reusing the stand-in $standin"
        else
            say "$name: $official cannot be pulled; building the stand-in $standin"
            "$builder"
        fi
        chosen="$standin"
    fi
    printf -v "$name" '%s' "$chosen"
    export "${name?}"
}

main() {
    docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/test-compose.sh installs and starts one)"
    choose PYTHON_IMAGE "$OFFICIAL_PYTHON" "$STANDIN_PYTHON" build_python
    choose LOCALSTACK_IMAGE "$OFFICIAL_LOCALSTACK" "$STANDIN_LOCALSTACK" build_localstack
    choose POSTGRES_IMAGE "$OFFICIAL_POSTGRES" "$STANDIN_POSTGRES" build_postgres
    mkdir -p "$(dirname "$ENV_FILE")"
    printf 'PYTHON_IMAGE=%s\nLOCALSTACK_IMAGE=%s\nPOSTGRES_IMAGE=%s\n' \
        "$PYTHON_IMAGE" "$LOCALSTACK_IMAGE" "$POSTGRES_IMAGE" >"$ENV_FILE"
    printf 'export PYTHON_IMAGE=%q\nexport LOCALSTACK_IMAGE=%q\nexport POSTGRES_IMAGE=%q\n' \
        "$PYTHON_IMAGE" "$LOCALSTACK_IMAGE" "$POSTGRES_IMAGE"
}

main "$@"
