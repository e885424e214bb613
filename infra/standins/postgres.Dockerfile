# syntax=docker/dockerfile:1
# A PostgreSQL 17 stand-in, ONLY for machines where postgres:17-bookworm cannot be pulled (no image
# registry answers). scripts/images.sh builds it from Debian trixie's postgresql-17 package. It keeps the
# part of the official image's contract that docker-compose.yml uses: POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB; the data directory /var/lib/postgresql/data (a volume); on an empty data directory, the
# *.sql and *.sh files of /docker-entrypoint-initdb.d run once, in name order, while the server listens
# on its socket only; pg_isready on PATH.
ARG BASE_IMAGE=modelgate-standin/debian:trixie
FROM ${BASE_IMAGE}

# The CA bundle of the host that builds it (scripts/images.sh copies PIP_CERT's file; empty if none): pip
# and apt over TLS work behind the same TLS-inspecting proxy as the host.
COPY host-ca.crt /etc/ssl/host-ca.crt

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-17 \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql \
    && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql

COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/17/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["postgres"]
