#!/usr/bin/env bash
# Docker for the docker-compose tests of mlmd-cache (tests/test_docker_compose.py, the `compose` backend).
#
#   bash scripts/docker.sh start   # install what is missing, start a Docker daemon if none answers
#   bash scripts/docker.sh stop    # stop the daemon that `start` started (none other)
#
# `start` installs Debian's docker.io, a Compose (the `docker compose` plugin when the docker CLI
# has it, else Debian's docker-compose, Compose v1) and debootstrap (for
# scripts/build_local_images.sh) when they are missing. When no daemon answers it starts dockerd
# itself, with no bridge network and no iptables rules (the compose file uses the host's network, on
# loopback), keeping its pid file and log under $MLMD_TEST_DOCKER_DIR (default /tmp/mlmd-cache-docker);
# images stay in dockerd's usual data root, so stand-in images are built once. A daemon that already
# runs is left alone. Needs root; progress and errors go to stderr, and it exits non-zero when Docker
# cannot run here (the tests then skip with the reason, or fail under CI=true).
set -euo pipefail

STATE_DIR=${MLMD_TEST_DOCKER_DIR:-/tmp/mlmd-cache-docker}
PID_FILE=$STATE_DIR/dockerd.pid
LOG_FILE=$STATE_DIR/dockerd.log
WAIT_SECONDS=60

log() { echo "docker.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

ours_alive() {  # the dockerd that `start` started runs (its pid file names a live dockerd)
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid=$(head -n 1 "$PID_FILE" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ]
}

have_compose() { docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1; }

install_missing() {
    local packages=()
    { command -v docker >/dev/null && command -v dockerd >/dev/null; } || packages+=(docker.io)
    { command -v docker >/dev/null && have_compose; } || packages+=(docker-compose)
    command -v debootstrap >/dev/null || packages+=(debootstrap)
    [ ${#packages[@]} -eq 0 ] && return 0
    log "installing ${packages[*]} (apt-get)"
    # Keep the packages' maintainer scripts from starting a system-wide daemon (as databases.sh does).
    local policy=/usr/sbin/policy-rc.d made_policy="" status=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    mkdir -p "$STATE_DIR"
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
    } >"$STATE_DIR/apt.log" 2>&1 || status=$?
    [ -n "$made_policy" ] && rm -f "$policy"
    [ $status -eq 0 ] || { tail -n 20 "$STATE_DIR/apt.log" >&2; die "apt-get install ${packages[*]} failed (exit $status)"; }
}

daemon_answers() { timeout 20 docker info >/dev/null 2>&1; }

start() {
    [ "$(id -u)" -eq 0 ] || die "run as root (installs packages and runs dockerd)"
    install_missing
    if daemon_answers; then
        log "a Docker daemon already answers ($(docker info --format '{{.ServerVersion}}' 2>/dev/null))"
        return 0
    fi
    mkdir -p "$STATE_DIR"
    log "starting dockerd (log: $LOG_FILE)"
    setsid dockerd --pidfile="$PID_FILE" --bridge=none --iptables=false --ip-masq=false \
        --ip-forward=false </dev/null >"$LOG_FILE" 2>&1 &
    local waited=0
    until daemon_answers; do
        if ! kill -0 $! 2>/dev/null || [ $waited -ge $((WAIT_SECONDS * 5)) ]; then
            tail -n 15 "$LOG_FILE" >&2 || true
            kill $! 2>/dev/null || true
            die "dockerd did not start (log: $LOG_FILE)"
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
    log "dockerd $(docker info --format '{{.ServerVersion}}' 2>/dev/null) ready (pid $(head -n 1 "$PID_FILE"))"
}

stop() {
    if ! ours_alive; then
        log "no dockerd of ours is running"
        return 0
    fi
    local pid waited=0
    pid=$(head -n 1 "$PID_FILE" | tr -dc 0-9)
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        if [ $waited -ge $((WAIT_SECONDS * 5)) ]; then
            log "dockerd pid $pid still running; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.2
        waited=$((waited + 1))
    done
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    *)
        echo "usage: $0 start|stop" >&2
        echo "  start: install docker.io, Compose and debootstrap if missing; start dockerd if none answers" >&2
        echo "  stop:  stop the dockerd that start started" >&2
        exit 2
        ;;
esac
