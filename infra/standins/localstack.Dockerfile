# syntax=docker/dockerfile:1
# A LocalStack stand-in, ONLY for machines where localstack/localstack:4.14.0 cannot be pulled (no image
# registry answers). scripts/images.sh builds it, from a Debian trixie base (Python 3.13) it makes with
# debootstrap, installing localstack-core with the pins and constraints scripts/localstack.sh uses
# (scripts/localstack-pins.txt). It behaves like the official image where compose relies on it: the gateway
# on 0.0.0.0:4566, /_localstack/health, SERVICES from the environment, curl for the health check.
ARG BASE_IMAGE=modelgate-standin/debian:trixie
FROM ${BASE_IMAGE}

# The CA bundle of the host that builds it (scripts/images.sh copies PIP_CERT's file; empty if none): pip
# and apt over TLS work behind the same TLS-inspecting proxy as the host.
COPY host-ca.crt /etc/ssl/host-ca.crt

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

COPY localstack-pins.txt localstack-constraints-py313.txt /opt/localstack-pins/
RUN if [ -s /etc/ssl/host-ca.crt ]; then export PIP_CERT=/etc/ssl/host-ca.crt; fi; \
    python3 -m venv /opt/localstack \
    && awk '!/^#/ && NF == 2 && ($1 == "py313" || $1 == "all") { print $2 }' /opt/localstack-pins/localstack-pins.txt \
        > /opt/localstack-pins/requirements.txt \
    && /opt/localstack/bin/pip install --no-cache-dir --disable-pip-version-check \
        -c /opt/localstack-pins/localstack-constraints-py313.txt -r /opt/localstack-pins/requirements.txt \
    && /opt/localstack/bin/python -c 'import localstack.runtime.main'

# The service catalog index the official image ships (built once here; without it LocalStack indexes every
# AWS spec on its first request and uses twice the memory): copied into the cache on start.
RUN /opt/localstack/bin/python -c "import os; from localstack.aws.spec import _get_catalog_filename as f, build_service_index_cache as b; os.makedirs('/opt/localstack-catalog'); b(os.path.join('/opt/localstack-catalog', f()))"

ENV GATEWAY_LISTEN=0.0.0.0:4566 \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    DNS_ADDRESS=0 \
    DISABLE_EVENTS=1 \
    PATH=/opt/localstack/bin:$PATH
EXPOSE 4566
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=30 \
    CMD ["curl", "-fsS", "http://127.0.0.1:4566/_localstack/health"]
WORKDIR /var/lib/localstack
CMD ["sh", "-c", "mkdir -p /var/lib/localstack/cache && cp -n /opt/localstack-catalog/* /var/lib/localstack/cache/ && exec python -m localstack.runtime.main"]
