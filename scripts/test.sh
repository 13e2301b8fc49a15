#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests need (venv and packages,
# MariaDB and PostgreSQL, Docker and the stand-in images), starts the services, runs pytest, and
# stops what it started. Extra arguments go to pytest.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -k cache -x     # a subset
#   MLMD_TEST_DOCKER=0 scripts/test.sh   # without the docker-compose tests
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=$(realpath -m "${VENV:-.venv}")
VENV="$VENV" bash scripts/venv.sh

# What this run started, and so stops on exit (servers someone else started are left running).
stop_databases=0
stop_docker=0
cleanup() {
    if [ "$stop_docker" = 1 ]; then bash scripts/docker.sh stop >/dev/null 2>&1 || true; fi
    if [ "$stop_databases" = 1 ]; then bash scripts/databases.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

# Graphviz's dot draws `mlmd-lineage export --format svg|png` (tests/test_lineage.py).
if ! command -v dot >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz; } \
        >/dev/null 2>&1 || echo "test.sh: graphviz (dot) was not installed; the SVG/PNG export tests will say so" >&2
fi

# Headless Chromium opens `mlmd-lineage export --format html` pages (tests/test_lineage_export.py).
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; } \
        >/dev/null 2>&1 || echo "test.sh: chromium was not installed; the HTML export tests will say so" >&2
fi

# MariaDB and PostgreSQL on loopback for the backend tests.
databases=$(bash scripts/databases.sh start)
eval "$databases"
stop_databases=$MLMD_TEST_DATABASES_STARTED

# Docker for the docker-compose.yml tests (tests/test_docker_compose.py, the `compose` backend) and
# the tests of `run-pipeline --task-env docker` (tests/test_docker_mode.py): installed and started
# when missing. Unless MLMD_MYSQL_IMAGE and MLMD_SERVER_IMAGE name images to use (e.g. the official
# ones), and MLMD_PYTHON_IMAGE the Python image of the docker-mode tests, stand-ins are built without
# a registry, once (reused while their inputs are unchanged). If Docker cannot run, those tests say
# why: skipped, or failed under CI=true (MLMD_TEST_DOCKER=0 switches them off).
if [ "${MLMD_TEST_DOCKER:-}" != 0 ]; then
    docker_was_up=0
    docker info >/dev/null 2>&1 && docker_was_up=1
    if bash scripts/docker.sh start; then
        [ "$docker_was_up" = 1 ] || stop_docker=1
        stand_ins=()
        [ -n "${MLMD_MYSQL_IMAGE:-}${MLMD_SERVER_IMAGE:-}" ] || stand_ins+=(mysql server)
        [ -n "${MLMD_PYTHON_IMAGE:-}" ] || stand_ins+=(python)
        if [ ${#stand_ins[@]} -gt 0 ]; then
            images=$(PYTHON="$VENV/bin/python" bash scripts/build_local_images.sh "${stand_ins[@]}") && eval "$images" ||
                echo "test.sh: the stand-in images were not built; the docker tests will say so" >&2
        fi
    fi
fi

export PATH="$VENV/bin:$PATH"
"$VENV/bin/python" -m pytest "$@"
