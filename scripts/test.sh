#!/usr/bin/env bash
# The project's test command (README, CI): installs what the tests need, starts the test databases,
# runs pytest, and stops what it started. Extra arguments go to pytest.
#
#   scripts/test.sh                 # everything
#   scripts/test.sh -k cache -x     # a subset
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
VENV=${VENV:-.venv}

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
# Reinstall only when the package definition changed since the last install.
stamp="$VENV/.installed-$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
if [ ! -e "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    rm -f "$VENV"/.installed-* && touch "$stamp"
fi

# MariaDB and PostgreSQL on loopback for the backend tests; stopped again on exit.
eval "$(bash scripts/databases.sh start)"
trap 'bash scripts/databases.sh stop >/dev/null 2>&1 || true' EXIT

export PATH="$PWD/$VENV/bin:$PATH"
"$VENV/bin/python" -m pytest "$@"
