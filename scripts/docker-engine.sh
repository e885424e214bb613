# Sourced by scripts/test-compose.sh and scripts/test-ecs.sh: `ensure_docker` makes a Docker Engine answer,
# installing Debian's docker.io and starting dockerd (as root) when none does. Needs say, die, LOG_DIR and
# DOCKERD_PID from the script that sources it. dockerd keeps running afterwards (its pid in DOCKERD_PID).

ensure_docker() {
    if docker info >/dev/null 2>&1; then return 0; fi
    [[ "$(id -u)" == 0 ]] || die "no Docker engine answers, and installing one needs root (apt-get install docker.io)"
    if ! command -v dockerd >/dev/null; then
        say "installing Docker Engine (Debian's docker.io)"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io >"$LOG_DIR/docker-install.log" 2>&1 \
            || { tail -n 20 "$LOG_DIR/docker-install.log" >&2; die "apt-get install docker.io failed"; }
    fi
    mkdir -p "$(dirname "$DOCKERD_PID")"
    say "starting dockerd in the background (log $LOG_DIR/dockerd.log; it keeps running afterwards)"
    setsid nohup dockerd >>"$LOG_DIR/dockerd.log" 2>&1 </dev/null &
    echo $! >"$DOCKERD_PID"
    local deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        ((SECONDS < deadline)) || { tail -n 20 "$LOG_DIR/dockerd.log" >&2; die "dockerd did not answer within 60 s"; }
        sleep 0.5
    done
}
