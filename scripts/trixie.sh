#!/usr/bin/env bash
# The suite at the other end of the supported range (issue 22): Debian 13 (trixie), Python 3.13,
# and what `pip install '.[test]'` resolves there by itself (ml-metadata 1.21, kfp 2.17, protobuf
# 6), run in a chroot beside the host's Debian 12 / Python 3.11 / MLMD 1.17.1 suite. CI runs both.
#
#   eval "$(bash scripts/databases.sh start)"   # MariaDB and PostgreSQL on 127.0.0.1 (as root)
#   bash scripts/trixie.sh -q -rs               # pytest in the root; arguments go to pytest
#   bash scripts/trixie.sh --versions           # only prepare the root and print the versions
#   bash scripts/trixie.sh --run python scripts/make_store_fixture.py   # a command in /src there
#
# The root (debootstrap minbase, this machine's certificate authorities, Graphviz, the MariaDB and
# PostgreSQL clients, MariaDB's server programs for tests/test_faults.py, a venv with the project
# installed editable from /src with its test extra) is cached as a tarball under
# $MLMD_TRIXIE_CACHE_DIR (default /var/cache/mlmd-cache-trixie), keyed by a hash of this script,
# setup.cfg, pyproject.toml, the mirror and the certificates: a run where only the sources changed
# unpacks it (~10 s) and uses them as they are, since the checkout is bind-mounted at /src. pip's,
# uv's and the task environments' caches persist beside the tarball, so the root's own task
# environments (Python 3.13) are built once, like the host's.
#
# The chroot shares this machine's network, so the databases that scripts/databases.sh started
# are reachable at the URLs of MLMD_TEST_MYSQL_URL and MLMD_TEST_POSTGRESQL_URL, passed through
# with CI. Docker and headless Chromium are the host's only: MLMD_TEST_DOCKER=0 and
# MLMD_TEST_BROWSER=0 switch those tests off there with that reason (skips, also under CI=true).
# Everything mounted is unmounted and the unpacked root deleted on exit, also after a failure.
# Needs root, debootstrap (apt-get installs it when missing), and tar.
{  # read whole before it runs: an edit of this file during a run does not change the run
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$(pwd)

SUITE=trixie
CACHE_DIR=${MLMD_TRIXIE_CACHE_DIR:-/var/cache/mlmd-cache-trixie}
VENV=/opt/venv

log() { echo "trixie.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap, mount and chroot need it)"
if ! command -v debootstrap >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap; } \
        >/dev/null 2>&1 || die "debootstrap is not installed and apt-get could not install it"
fi

versions_only=0 run_command=0
if [ "${1:-}" = --versions ]; then versions_only=1; shift; fi
if [ "${1:-}" = --run ]; then run_command=1; shift; fi  # --run COMMAND...: in /src in the root, not pytest

# The mirror apt uses here, for this machine's own suite (the same mirror serves trixie):
# shellcheck source=scripts/debian_mirror.sh
. scripts/debian_mirror.sh  # the working directory is the checkout (cd above)
MIRROR=$(debian_mirror "$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")")

# This machine's certificate authorities (an HTTPS proxy's, say): pip and uv in the root reach the
# package index through whatever the host reaches it through.
extra_cas() { compgen -G "/usr/local/share/ca-certificates/*.crt" || true; }

key=$( {
    printf '%s\n' "$SUITE" "$MIRROR" "$(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || true)"
    sha256sum scripts/trixie.sh setup.cfg pyproject.toml
    # shellcheck disable=SC2046
    cat /etc/pip.conf $(extra_cas) 2>/dev/null || true
} | sha256sum | cut -c1-16)
TARBALL=$CACHE_DIR/$SUITE-root-$key.tar
mkdir -p "$CACHE_DIR/cache" "$CACHE_DIR/task-envs"

root=$(mktemp -d /var/tmp/mlmd-cache-trixie.XXXXXX)
chmod 755 "$root"  # the root's / (mktemp made it 0700): the postgres user of tests/test_store_faults.py must enter it
cleanup() {  # also after a failure: unmount what is mounted under the root (deepest first), delete it
    local dir
    for dir in $(awk -v root="$root/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$dir" 2>/dev/null || umount -l "$dir" 2>/dev/null || true
    done
    if awk -v root="$root/" 'index($2, root) == 1 { found = 1 } END { exit !found }' /proc/mounts; then
        log "error: something is still mounted under $root; it is left in place"
    else
        rm -rf --one-file-system "$root"
    fi
    rm -f "$root".*.log
}
trap cleanup EXIT

mount_root() {  # what a chroot needs: /proc, /sys, the host's /dev (pseudo-terminals, /dev/shm), the checkout, caches
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
    mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev"
    mkdir -p "$root/src" "$root/root/.cache" "$root/var/cache/mlmd-task-envs"
    mount --bind "$SRC" "$root/src"
    # The checkout's .venv is the host's (Python 3.11): what the tests run in the root (examples/demo.sh
    # through scripts/venv.sh) finds the root's own venv there instead, installed (its stamp set).
    mkdir -p "$SRC/.venv" "$root$VENV"
    mount --bind "$root$VENV" "$root/src/.venv"
    mount --bind "$CACHE_DIR/cache" "$root/root/.cache"
    mount --bind "$CACHE_DIR/task-envs" "$root/var/cache/mlmd-task-envs"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
}

unmount_root() {
    local dir
    for dir in $(awk -v root="$root/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount "$dir" 2>/dev/null || umount -l "$dir"
    done
}

in_root() {
    chroot "$root" /usr/bin/env -i PATH="$VENV/bin:/usr/sbin:/usr/bin:/sbin:/bin" HOME=/root LC_ALL=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 \
        PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
        REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt "$@"
}

prepare() {  # debootstrap, packages, certificates, the venv; then the tarball
    local started=$SECONDS
    log "debootstrap --variant=minbase $SUITE from $MIRROR"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        "$SUITE" "$root" "$MIRROR" >"$root.debootstrap.log" 2>&1 ||
        { tail -n 30 "$root.debootstrap.log" >&2; rm -f "$root.debootstrap.log"; die "debootstrap failed (log above)"; }
    rm -f "$root.debootstrap.log"
    log "  $((SECONDS - started))s: debootstrap done"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"   # no service starts in the chroot
    chmod 755 "$root/usr/sbin/policy-rc.d"
    local ca
    for ca in $(extra_cas); do cp "$ca" "$root/usr/local/share/ca-certificates/"; done
    [ ! -f /etc/pip.conf ] || cp /etc/pip.conf "$root/etc/pip.conf"
    mount_root
    in_root update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the root"
    # dot: the SVG/PNG exports; chattr (e2fsprogs): tests/test_hostile.py; the clients: tests/backends.py makes and drops databases with them;
    # MariaDB's and PostgreSQL's server programs: tests/test_faults.py and tests/test_store_faults.py start
    # private servers of their own (and restart them under a runner).
    in_root apt-get -o APT::Sandbox::User=root update -qq >&2
    in_root apt-get -o APT::Sandbox::User=root install -y -qq --no-install-recommends e2fsprogs graphviz mariadb-client mariadb-server \
        postgresql-client postgresql >"$root.apt.log" 2>&1 ||
        { tail -n 30 "$root.apt.log" >&2; rm -f "$root.apt.log"; die "apt-get install in the root failed (log above)"; }
    rm -f "$root.apt.log"
    log "  $((SECONDS - started))s: packages installed"
    in_root python3 -m venv "$VENV"
    in_root "$VENV/bin/pip" install --quiet -e '/src[test]' >&2 || die "pip install -e '/src[test]' failed in the root"
    touch "$root$VENV/.installed-$(sha256sum setup.cfg pyproject.toml | sha256sum | cut -c1-16)"  # scripts/venv.sh's stamp
    log "  $((SECONDS - started))s: venv ready"
    unmount_root
    in_root apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/tmp/*
    tar --numeric-owner -C "$root" -cf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    find "$CACHE_DIR" -maxdepth 1 -name "$SUITE-root-*.tar*" ! -name "$(basename "$TARBALL")" -delete
    log "  $((SECONDS - started))s: root prepared (cached as $TARBALL)"
}

if [ -s "$TARBALL" ]; then
    tar --numeric-owner -C "$root" -xf "$TARBALL"
else
    prepare
fi
mount_root

# The stack pip chose (issue 22: ml-metadata 1.21.x, kfp 2.17.x, protobuf 6 on Python 3.13).
in_root python -c '
import sys
from importlib.metadata import version
names = ("ml-metadata", "kfp", "kfp-pipeline-spec", "protobuf", "grpcio")
print("trixie root: Python %d.%d.%d, " % sys.version_info[:3] + ", ".join(f"{n} {version(n)}" for n in names))
v = {n: tuple(int(p) for p in version(n).split(".")[:2]) for n in names}
sys.exit(0 if v["ml-metadata"] >= (1, 21) and v["kfp"] >= (2, 17) and v["protobuf"][0] == 6 else
         "trixie root: expected ml-metadata 1.21, kfp 2.17 and protobuf 6")' >&2
[ "$versions_only" = 0 ] || exit 0

pass=(CI="${CI:-}" MLMD_TEST_DOCKER=0 MLMD_TEST_BROWSER=0 MLMD_CACHE_ENV_DIR=/var/cache/mlmd-task-envs
      TERM="${TERM:-dumb}")
for variable in MLMD_TEST_MYSQL_URL MLMD_TEST_POSTGRESQL_URL; do
    [ -z "${!variable:-}" ] || pass+=("$variable=${!variable}")
done
status=0
if [ "$run_command" = 1 ]; then
    in_root "${pass[@]}" sh -c 'cd /src && exec "$@"' sh "$@" || status=$?
    exit $status
fi
in_root "${pass[@]}" sh -c 'cd /src && exec python -m pytest "$@"' pytest "$@" || status=$?
exit $status
}
