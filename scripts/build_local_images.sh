#!/usr/bin/env bash
# Stand-ins for official images, built without any container registry: Debian root filesystems
# made with debootstrap and loaded with `docker import`. Two for docker-compose.yml, one for the
# tests of `run-pipeline --task-env docker`.
#
#   eval "$(bash scripts/build_local_images.sh)"   # build what is missing, print export lines
#   docker compose up -d                           # now runs the stand-ins
#   bash scripts/build_local_images.sh python      # only the images named (mysql, server, python)
#
# - MLMD_MYSQL_IMAGE (for mysql:8.0): Debian bookworm's MariaDB behind an entry point that takes
#   what the compose file gives mysql:8.0 (MYSQL_ROOT_PASSWORD, MYSQL_DATABASE, MYSQL_USER,
#   MYSQL_PASSWORD, mysqld options as arguments), with `mysqladmin` for the health check.
# - MLMD_SERVER_IMAGE (for gcr.io/tfx-oss-public/ml_metadata_store_server): `mlmd-cache serve` with
#   this project and its dependencies installed from wheels made on this machine (`pip wheel
#   --no-deps` of the project, then `pip wheel` of it, which downloads its dependencies' wheels
#   and builds those published only as source, at the versions of the venv of $PYTHON, default
#   .venv/bin/python, which must be Python 3.11 like the image's Debian python3), started
#   as `/bin/metadata_store_server` with the official server's flags.
# - MLMD_PYTHON_IMAGE (for python:3.11, the base image of KFP's lightweight components): Debian
#   bookworm's python3 (3.11) with pip and venv, and without /usr/lib/python3*/EXTERNALLY-MANAGED,
#   so that `python3 -m pip install` installs as it does in the official image (KFP's component
#   preamble runs it), trusting this machine's extra certificate authorities
#   (/usr/local/share/ca-certificates) as the host does. Tests `docker tag` it as python:3.11.
#
# Each image is tagged with a hash of what went into it (this script, and for the server the
# project's sources and the pinned dependency versions) and is built only when no image has that
# tag; older tags of the same image are removed. The debootstrap root filesystem is cached as a
# tarball under $MLMD_IMAGE_CACHE_DIR (default /var/cache/mlmd-cache-images). The Debian mirror is
# the one apt uses here (/etc/apt/sources.list{,.d}), or $MLMD_DEBIAN_MIRROR.
# Needs root, docker, debootstrap; the export lines go to stdout, progress to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=bookworm
CACHE_DIR=${MLMD_IMAGE_CACHE_DIR:-/var/cache/mlmd-cache-images}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
MYSQL_REPO=mlmd-cache-standin/mysql
SERVER_REPO=mlmd-cache-standin/ml_metadata_store_server
PYTHON_REPO=mlmd-cache-standin/python

log() { echo "build_local_images.sh: $*" >&2; }
step() { log "  $(($(date +%s) - started))s: $*"; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"
command -v docker >/dev/null || die "docker is not installed (scripts/docker.sh start installs it)"
command -v debootstrap >/dev/null || die "debootstrap is not installed (scripts/docker.sh start installs it)"
docker info >/dev/null 2>&1 || die "no Docker daemon answers (scripts/docker.sh start starts one)"
# The wheels are chosen for $PYTHON and installed on Debian bookworm's python3: both must be 3.11.
"$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null ||
    die "PYTHON=$PYTHON is not Python 3.11 (the images' Debian $SUITE python3; the default is .venv/bin/python)"

hash_of() { sha256sum "$@" | sha256sum | cut -c1-16; }

# shellcheck source=scripts/debian_mirror.sh
. scripts/debian_mirror.sh  # the working directory is the checkout (cd above)
MIRROR=$(debian_mirror "$SUITE")

work=$(mktemp -d /var/tmp/mlmd-cache-images.XXXXXX)
cleanup() {  # also after a failed build: unmount what the chroots still have mounted, then delete
    local dir
    for dir in $(awk -v work="$work/" 'index($2, work) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$dir" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# ---------------------------------------------------------------- the Debian root filesystem

base_tarball() {  # debootstrap once per suite, mirror and debootstrap version
    local key tarball
    key=$(printf '%s\n' "$SUITE" "$MIRROR" "$(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || true)" | sha256sum | cut -c1-16)
    tarball=$CACHE_DIR/$SUITE-minbase-$key.tar
    if [ ! -s "$tarball" ]; then
        mkdir -p "$CACHE_DIR"
        local root=$work/debootstrap started
        started=$(date +%s)
        log "debootstrap --variant=minbase $SUITE from $MIRROR"
        debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 ||
            { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
        tar --numeric-owner -C "$root" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
        rm -f "$CACHE_DIR"/"$SUITE"-minbase-*.tar.tmp
        find "$CACHE_DIR" -name "$SUITE-minbase-*.tar" ! -name "$(basename "$tarball")" -delete
        rm -rf --one-file-system "$root"
        log "debootstrap done in $(($(date +%s) - started))s (cached as $tarball)"
    fi
    echo "$tarball"
}

new_root() {  # new_root DIR: a fresh copy of the base system, ready for apt-get in a chroot
    local root=$1
    mkdir -p "$root"
    tar --numeric-owner -C "$root" -xf "$(base_tarball)"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"   # no service starts in the chroot
    chmod 755 "$root/usr/sbin/policy-rc.d"
    mount -t proc proc "$root/proc"
}

in_root() { local root=$1; shift; chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

apt_install() {  # apt_install ROOT PACKAGE...
    local root=$1; shift
    in_root "$root" apt-get update -qq >&2
    in_root "$root" apt-get install -y -qq --no-install-recommends "$@" >"$root.apt.log" 2>&1 ||
        { tail -n 30 "$root.apt.log" >&2; die "apt-get install $* in the chroot failed"; }
}

finish_root() {  # undo new_root's scaffolding and drop what an image does not need
    local root=$1
    umount "$root/proc"
    rm -f "$root/usr/sbin/policy-rc.d" "$root/etc/resolv.conf"
    in_root "$root" apt-get clean
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/tmp/* "$root"/var/log/*.log \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/*
}

import_image() {  # import_image ROOT TAG DOCKER-IMPORT-CHANGES...: load ROOT as TAG, drop older tags
    local root=$1 tag=$2; shift 2
    local changes=() change
    for change in "$@"; do changes+=(--change "$change"); done
    tar --numeric-owner -C "$root" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
    docker images --format '{{.Repository}}:{{.Tag}}' "${tag%%:*}" | grep -vxF "$tag" | xargs -r docker rmi >/dev/null 2>&1 || true
    rm -rf --one-file-system "$root"
}

# ---------------------------------------------------------------- mysql:8.0 stand-in (MariaDB)

build_mysql() {
    local tag=$1 root=$work/mysql started
    started=$(date +%s)
    log "building $tag (Debian $SUITE MariaDB standing in for mysql:8.0)"
    new_root "$root"
    apt_install "$root" mariadb-server mariadb-client
    # Debian's package set up a data directory; the official image starts with none.
    rm -rf "$root"/var/lib/mysql/*
    install -m 755 /dev/stdin "$root/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/bash
# Entry point of the mysql:8.0 stand-in: Debian's MariaDB, set up as the official image sets up
# MySQL on first start from MYSQL_ROOT_PASSWORD (or MYSQL_ALLOW_EMPTY_PASSWORD), MYSQL_ROOT_HOST
# (default %), MYSQL_DATABASE, MYSQL_USER and MYSQL_PASSWORD. Arguments starting with '-' are
# server options (as for mysql:8.0); MySQL-only options that MariaDB lacks are dropped.
set -euo pipefail
if [ $# -eq 0 ] || [ "${1:0:1}" = "-" ]; then set -- mysqld "$@"; fi
case "$1" in mysqld|mariadbd) shift ;; *) exec "$@" ;; esac

options=()
for option in "$@"; do
    case "$option" in
        # MariaDB authenticates with mysql_native_password by default; it has no such option.
        --default-authentication-plugin=*|--default_authentication_plugin=*) ;;
        *) options+=("$option") ;;
    esac
done
datadir=/var/lib/mysql
mkdir -p "$datadir" /run/mysqld
chown mysql:mysql "$datadir" /run/mysqld

sql_string() { local value=${1//\\/\\\\}; printf "'%s'" "${value//\'/\'\'}"; }
sql_name() { printf '`%s`' "${1//\`/\`\`}"; }

if [ ! -d "$datadir/mysql" ]; then
    if [ -z "${MYSQL_ROOT_PASSWORD:-}" ] && [ -z "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ]; then
        echo "error: database is uninitialized and MYSQL_ROOT_PASSWORD is not set (or MYSQL_ALLOW_EMPTY_PASSWORD)" >&2
        exit 1
    fi
    echo "initializing the database in $datadir" >&2
    mariadb-install-db --user=mysql --datadir="$datadir" --auth-root-authentication-method=normal \
        --skip-test-db >/dev/null
    socket=/run/mysqld/init.sock
    mariadbd --user=mysql --datadir="$datadir" "${options[@]+"${options[@]}"}" --skip-networking \
        --socket="$socket" --skip-log-bin &
    pid=$!
    for _ in $(seq 300); do
        mariadb-admin --socket="$socket" -uroot ping >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { echo "error: the server failed while initializing" >&2; exit 1; }
        sleep 0.1
    done
    # As in the official image, root@localhost is the only account to begin with.
    mariadb --socket="$socket" -uroot -N -e "SELECT CONCAT('DROP USER ', QUOTE(User), '@', QUOTE(Host), ';')
        FROM mysql.user WHERE NOT (User = 'root' AND Host = 'localhost') AND User <> 'mariadb.sys'" |
        mariadb --socket="$socket" -uroot
    root_host=${MYSQL_ROOT_HOST:-%}
    password=$(sql_string "${MYSQL_ROOT_PASSWORD:-}")
    {
        echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $password;"
        if [ "$root_host" != localhost ]; then
            echo "CREATE USER 'root'@$(sql_string "$root_host") IDENTIFIED BY $password;"
            echo "GRANT ALL ON *.* TO 'root'@$(sql_string "$root_host") WITH GRANT OPTION;"
        fi
        if [ -n "${MYSQL_DATABASE:-}" ]; then
            echo "CREATE DATABASE IF NOT EXISTS $(sql_name "$MYSQL_DATABASE");"
        fi
        if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
            echo "CREATE USER $(sql_string "$MYSQL_USER")@'%' IDENTIFIED BY $(sql_string "$MYSQL_PASSWORD");"
            if [ -n "${MYSQL_DATABASE:-}" ]; then
                echo "GRANT ALL ON $(sql_name "$MYSQL_DATABASE").* TO $(sql_string "$MYSQL_USER")@'%';"
            fi
        fi
        echo "FLUSH PRIVILEGES;"
    } | mariadb --socket="$socket" -uroot
    kill -TERM "$pid"
    wait "$pid" || true
    echo "database initialized" >&2
fi
exec mariadbd --user=mysql --datadir="$datadir" "${options[@]+"${options[@]}"}"
ENTRYPOINT
    finish_root "$root"
    import_image "$root" "$tag" \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]' 'CMD ["mysqld"]' 'EXPOSE 3306' \
        'VOLUME /var/lib/mysql' "LABEL org.opencontainers.image.description=\"mysql:8.0 stand-in: Debian $SUITE MariaDB\""
    log "built $tag in $(($(date +%s) - started))s"
}

# ---------------------------------------------------------------- ml_metadata_store_server stand-in

pip_quiet() {  # pip, less the warnings of a pip.conf whose find-links folders do not exist
    "$PYTHON" -m pip --quiet --disable-pip-version-check "$@" >&2 \
        2> >(grep -v "^WARNING: Location '.*' is ignored" >&2)
}

prepare_wheels() {  # the project's wheel and its dependencies' wheels, pinned to this venv's versions
    local wheels=$1
    "$PYTHON" -m pip freeze --exclude-editable --disable-pip-version-check | grep -v '^-e ' >"$work/constraints.txt" || true
    # Built from a copy of the sources, so the work tree gets no build/ folder.
    mkdir -p "$work/src"
    cp -r setup.cfg pyproject.toml README.md mlmd_cache lineage "$work/src/"
    find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
    pip_quiet wheel --no-deps -w "$wheels" "$work/src"
    # Its dependencies: downloaded as wheels, as `pip download` would, and those published only as
    # source (kfp, ...) built into wheels here, where the network is (pip caches what it built).
    pip_quiet wheel -w "$wheels" -c "$work/constraints.txt" "$wheels"/mlmd_cache-*.whl
}

build_server() {
    local tag=$1 root=$work/server started
    started=$(date +%s)
    log "building $tag (mlmd-cache serve standing in for the official metadata_store_server)"
    prepare_wheels "$work/wheels"
    step "wheels ready"
    new_root "$root"
    apt_install "$root" python3 python3-venv
    step "python3 installed"
    mkdir -p "$root/tmp/wheels"
    cp "$work"/wheels/*.whl "$root/tmp/wheels/"
    in_root "$root" python3 -m venv /opt/mlmd-cache
    in_root "$root" /opt/mlmd-cache/bin/pip install --quiet --disable-pip-version-check --no-index \
        --find-links /tmp/wheels mlmd-cache >&2
    in_root "$root" /opt/mlmd-cache/bin/python -c 'import mlmd_cache.server' ||
        die "the server image cannot import mlmd_cache.server"
    step "mlmd-cache installed"
    install -m 755 /dev/stdin "$root/bin/metadata_store_server" <<'WRAPPER'
#!/bin/sh
# Stand-in for the official /bin/metadata_store_server: mlmd-cache serve, with the same flags
# (--grpc_port, --mysql_config_*, --enable_database_upgrade). Like the official server it listens
# on every address, unless MLMD_SERVE_HOST names one (the compose file keeps it on loopback).
exec /opt/mlmd-cache/bin/python -m mlmd_cache serve --host "${MLMD_SERVE_HOST:-0.0.0.0}" "$@"
WRAPPER
    finish_root "$root"
    import_image "$root" "$tag" \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENTRYPOINT ["/bin/metadata_store_server"]' 'EXPOSE 8080' \
        "LABEL org.opencontainers.image.description=\"ml_metadata_store_server stand-in: mlmd-cache serve on Debian $SUITE\""
    log "built $tag in $(($(date +%s) - started))s"
}

# ---------------------------------------------------------------- python:3.11 stand-in

build_python() {
    local tag=$1 root=$work/python started
    started=$(date +%s)
    log "building $tag (Debian $SUITE python3 standing in for python:3.11)"
    new_root "$root"
    # ca-certificates: pip reaches the package index over HTTPS; python-is-python3: `python`, as the
    # official image has it.
    apt_install "$root" python3 python3-pip python3-venv python-is-python3 ca-certificates
    # This machine's own certificate authorities (an HTTPS proxy's, say): without them pip in a
    # container cannot reach the index that pip on the host reaches. Debian's pip trusts the system's.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
        in_root "$root" update-ca-certificates >/dev/null 2>&1 || die "update-ca-certificates failed in the python image"
    fi
    # The official image's Python is not Debian's: pip installs into it without --break-system-packages.
    rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
    in_root "$root" python3 -m pip --version >/dev/null || die "pip does not run in the python image"
    finish_root "$root"
    import_image "$root" "$tag" \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' 'ENV LANG=C.UTF-8' \
        'CMD ["python3"]' \
        "LABEL org.opencontainers.image.description=\"python:3.11 stand-in: Debian $SUITE python3\""
    log "built $tag in $(($(date +%s) - started))s"
}

# ---------------------------------------------------------------- main

script_hash=$(hash_of "$0")
mysql_tag=$MYSQL_REPO:$(printf '%s\n' "$script_hash" "$SUITE" "$MIRROR" | sha256sum | cut -c1-16)
# The server image follows the project's sources and the dependency versions of this venv.
server_inputs=$(find mlmd_cache lineage -name '*.py' -type f | LC_ALL=C sort)
server_tag=$SERVER_REPO:$( {
    printf '%s\n' "$script_hash" "$SUITE" "$MIRROR"
    # shellcheck disable=SC2086
    sha256sum setup.cfg pyproject.toml $server_inputs
    "$PYTHON" -m pip freeze --exclude-editable --disable-pip-version-check 2>/dev/null | grep -v '^-e '
} | sha256sum | cut -c1-16)

# The python image holds this machine's extra certificate authorities: a new one makes a new image.
python_tag=$PYTHON_REPO:$( {
    printf '%s\n' "$script_hash" "$SUITE" "$MIRROR" python
    cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true
} | sha256sum | cut -c1-16)

# The images named as arguments (mysql, server, python), else all of them.
wanted=("$@")
[ ${#wanted[@]} -gt 0 ] || wanted=(mysql server python)
images=() exports=()
for name in "${wanted[@]}"; do
    case "$name" in
        mysql) images+=("$mysql_tag:build_mysql"); exports+=("MLMD_MYSQL_IMAGE=$mysql_tag") ;;
        server) images+=("$server_tag:build_server"); exports+=("MLMD_SERVER_IMAGE=$server_tag") ;;
        python) images+=("$python_tag:build_python"); exports+=("MLMD_PYTHON_IMAGE=$python_tag") ;;
        *) die "no image $name (mysql, server, python)" ;;
    esac
done

# The missing images are built side by side (their downloads overlap), from one base system.
builds=()
for image in "${images[@]}"; do
    tag=${image%:*}
    if docker image inspect "$tag" >/dev/null 2>&1; then
        log "$tag is up to date"
    else
        builds+=("$image")
    fi
done
if [ ${#builds[@]} -gt 0 ]; then
    base_tarball >/dev/null
    pids=()
    for image in "${builds[@]}"; do
        "${image##*:}" "${image%:*}" &
        pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    [ $failed -eq 0 ] || die "an image build failed (see above)"
fi
for line in "${exports[@]}"; do echo "export $line"; done
