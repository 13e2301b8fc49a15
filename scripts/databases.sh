#!/usr/bin/env bash
# Private MariaDB and PostgreSQL servers for the real-server tests of mlmd-cache.
#
#   eval "$(bash scripts/databases.sh start)"   # install if missing, start, print export lines
#   bash scripts/databases.sh stop              # stop what `start` started
#
# Both listen on 127.0.0.1 only, on ports that do not collide with system servers
# (MariaDB $MLMD_TEST_MYSQL_PORT, default 13306; PostgreSQL $MLMD_TEST_POSTGRESQL_PORT,
# default 15432), and keep their data, sockets, logs and pid files under
# $MLMD_TEST_DB_DIR (default /tmp/mlmd-cache-dbs). Each has a user `mlmd` with password
# `mlmd-test-pw` owning a database `mlmd_test`; `start` prints
#
#   export MLMD_TEST_MYSQL_URL=mysql://mlmd:mlmd-test-pw@127.0.0.1:13306/mlmd_test
#   export MLMD_TEST_POSTGRESQL_URL=postgresql://mlmd:mlmd-test-pw@127.0.0.1:15432/mlmd_test
#
# on stdout (progress goes to stderr). A second user, `mlmd_special`, has a password with the
# characters a URL must percent-encode, p@ss:w/rd a'b\c"#?% (tests/backends.py names it
# with database `mlmd_test_special`). `start` is idempotent: a server already running is
# left alone, and the user and database are (re)made every time. Needs root (it runs
# apt-get, and runs the servers as the `mysql` and `postgres` system users).
set -euo pipefail

DB_DIR=${MLMD_TEST_DB_DIR:-/tmp/mlmd-cache-dbs}
MYSQL_PORT=${MLMD_TEST_MYSQL_PORT:-13306}
PG_PORT=${MLMD_TEST_POSTGRESQL_PORT:-15432}
DB_USER=mlmd
DB_PASSWORD=mlmd-test-pw
DB_NAME=mlmd_test
WAIT_SECONDS=60

MY_DIR=$DB_DIR/mariadb
MY_DATA=$MY_DIR/data
MY_SOCKET=$MY_DIR/mysqld.sock
MY_PID=$MY_DIR/mysqld.pid
MY_LOG=$MY_DIR/mysqld.log

PG_DIR=$DB_DIR/postgresql
PG_DATA=$PG_DIR/data
PG_LOG=$PG_DIR/postgresql.log
PG_PID=$PG_DATA/postmaster.pid   # written by the postmaster itself

log() { echo "databases.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

mariadb_bin() {  # the first of the given program names that exists
    local name
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
        if [ -x "/usr/sbin/$name" ]; then echo "/usr/sbin/$name"; return 0; fi
        if [ -x "/usr/bin/$name" ]; then echo "/usr/bin/$name"; return 0; fi
    done
    return 1
}

pg_bindir() {  # the newest /usr/lib/postgresql/VERSION/bin with initdb
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && echo "$dir"
}

install_missing() {
    local packages=()
    mariadb_bin mariadbd mysqld >/dev/null || packages+=(mariadb-server)
    pg_bindir >/dev/null || packages+=(postgresql)
    mariadb_bin mariadb mysql >/dev/null || packages+=(mariadb-client)
    [ ${#packages[@]} -eq 0 ] && return 0
    log "installing ${packages[*]} (apt-get)"
    # Keep the packages' maintainer scripts from starting the system-wide servers on the
    # default ports: a policy-rc.d that forbids every service start, only while installing.
    local policy=/usr/sbin/policy-rc.d made_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        made_policy=1
    fi
    local status=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
    } >&2 || status=$?
    [ -n "$made_policy" ] && rm -f "$policy"
    [ $status -eq 0 ] || die "apt-get install ${packages[*]} failed (exit $status)"
}

pid_alive() {  # pid_alive FILE: the process named by the first line of FILE runs
    local pid
    [ -f "$1" ] || return 1
    pid=$(head -n 1 "$1" 2>/dev/null | tr -dc 0-9)
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# ---------------------------------------------------------------- MariaDB

my_client() { "$(mariadb_bin mariadb mysql)" --no-defaults --protocol=socket --socket="$MY_SOCKET" -uroot "$@"; }

mariadb_start() {
    mkdir -p "$MY_DIR"
    chown mysql:mysql "$MY_DIR"
    if pid_alive "$MY_PID" && my_client -e 'SELECT 1' >/dev/null 2>&1; then
        log "MariaDB already running (pid $(head -n 1 "$MY_PID"), port $MYSQL_PORT)"
    else
        STARTED_HERE=1
        if [ ! -d "$MY_DATA/mysql" ]; then
            log "initialising MariaDB data directory $MY_DATA"
            rm -rf "$MY_DATA"
            # root may log in only over the socket as the OS root user (unix_socket auth).
            "$(mariadb_bin mariadb-install-db mysql_install_db)" --no-defaults --user=mysql \
                --datadir="$MY_DATA" --auth-root-authentication-method=socket \
                --skip-test-db >"$MY_DIR/install.log" 2>&1 ||
                { cat "$MY_DIR/install.log" >&2; die "mariadb-install-db failed"; }
        fi
        rm -f "$MY_PID" "$MY_SOCKET"
        log "starting MariaDB on 127.0.0.1:$MYSQL_PORT"
        setsid "$(mariadb_bin mariadbd mysqld)" --no-defaults --user=mysql \
            --datadir="$MY_DATA" --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
            --socket="$MY_SOCKET" --pid-file="$MY_PID" --log-error="$MY_LOG" \
            --skip-name-resolve --skip-log-bin --innodb-buffer-pool-size=32M \
            --max-connections=200 </dev/null >/dev/null 2>&1 &
        local waited=0
        until my_client -e 'SELECT 1' >/dev/null 2>&1; do
            if [ $waited -ge $((WAIT_SECONDS * 5)) ]; then
                tail -n 20 "$MY_LOG" >&2 || true
                die "MariaDB did not accept connections within ${WAIT_SECONDS}s (log: $MY_LOG)"
            fi
            sleep 0.2
            waited=$((waited + 1))
        done
    fi
    # MLMD's client logs in with mysql_native_password; MLMD runs CREATE DATABASE IF NOT
    # EXISTS on connect, so the user also gets every privilege on databases named
    # mlmd_test* (the tests use fresh ones to see a database created on first connect).
    my_client <<SQL
CREATE DATABASE IF NOT EXISTS \`$DB_NAME\`;
CREATE USER IF NOT EXISTS '$DB_USER'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('$DB_PASSWORD');
ALTER USER '$DB_USER'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('$DB_PASSWORD');
GRANT ALL PRIVILEGES ON \`mlmd\\_test%\`.* TO '$DB_USER'@'%';
SQL
    # The special password, literally p@ss:w/rd a'b\c"#?% (quoted here-document: no shell expansion).
    my_client <<'SQL'
CREATE USER IF NOT EXISTS 'mlmd_special'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('p@ss:w/rd a''b\\c"#?%');
ALTER USER 'mlmd_special'@'%' IDENTIFIED VIA mysql_native_password USING PASSWORD('p@ss:w/rd a''b\\c"#?%');
GRANT ALL PRIVILEGES ON `mlmd\_test%`.* TO 'mlmd_special'@'%';
FLUSH PRIVILEGES;
SQL
}

mariadb_stop() {
    if pid_alive "$MY_PID"; then
        local pid
        pid=$(head -n 1 "$MY_PID" | tr -dc 0-9)
        log "stopping MariaDB (pid $pid)"
        kill -TERM "$pid"
        local waited=0
        while kill -0 "$pid" 2>/dev/null; do
            [ $waited -ge $((WAIT_SECONDS * 5)) ] && { log "MariaDB pid $pid still running; sending KILL"; kill -KILL "$pid" || true; break; }
            sleep 0.2
            waited=$((waited + 1))
        done
    else
        log "MariaDB not running"
    fi
    rm -f "$MY_PID"
}

# ---------------------------------------------------------------- PostgreSQL

as_postgres() { runuser -u postgres -- "$@"; }
pg_sql() { as_postgres "$(pg_bindir)/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_DIR" -p "$PG_PORT" -U postgres -d postgres "$@"; }

postgresql_start() {
    local bindir
    bindir=$(pg_bindir) || die "no PostgreSQL server under /usr/lib/postgresql"
    mkdir -p "$PG_DIR"
    chown postgres:postgres "$PG_DIR"
    as_postgres test -w "$PG_DIR" || die "the postgres user cannot write $PG_DIR (is a parent directory of MLMD_TEST_DB_DIR closed to other users?)"
    if pid_alive "$PG_PID" && as_postgres "$bindir/pg_isready" -q -h "$PG_DIR" -p "$PG_PORT"; then
        log "PostgreSQL already running (pid $(head -n 1 "$PG_PID"), port $PG_PORT)"
    else
        STARTED_HERE=1
        if [ ! -f "$PG_DATA/PG_VERSION" ]; then
            log "initialising PostgreSQL data directory $PG_DATA"
            rm -rf "$PG_DATA"
            # Superuser: only the postgres OS user over the socket (peer). Everyone over TCP:
            # a password, checked with SCRAM-SHA-256 (MLMD's bundled libpq speaks it).
            as_postgres "$bindir/initdb" -D "$PG_DATA" -U postgres --auth-local=peer \
                --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
                >"$PG_DIR/initdb.log" 2>&1 || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
        fi
        log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
        # pg_ctl -w returns once the server accepts connections (or failed to start).
        as_postgres "$bindir/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -w -t "$WAIT_SECONDS" \
            -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories='$PG_DIR' -c password_encryption=scram-sha-256 -c max_connections=200" \
            start >&2 || { tail -n 20 "$PG_LOG" >&2 || true; die "PostgreSQL did not start (log: $PG_LOG)"; }
    fi
    # CREATEDB: MLMD connects to the `postgres` database first and creates the target
    # database when it is missing; with it the tests can see that happen.
    pg_sql <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_USER') THEN
    CREATE ROLE $DB_USER LOGIN CREATEDB;
  END IF;
END \$\$;
ALTER ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD';
SQL
    # The special password, literally p@ss:w/rd a'b\c"#?% (standard_conforming_strings: '\' is plain).
    pg_sql <<'SQL'
DO $$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mlmd_special') THEN
    CREATE ROLE mlmd_special LOGIN;
  END IF;
END $$;
ALTER ROLE mlmd_special LOGIN PASSWORD 'p@ss:w/rd a''b\c"#?%';
SQL
    local db owner
    for db in "$DB_NAME:$DB_USER" "mlmd_test_special:mlmd_special"; do
        owner=${db#*:}
        db=${db%%:*}
        if [ -z "$(pg_sql -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'")" ]; then
            pg_sql -c "CREATE DATABASE $db OWNER $owner"
        fi
    done
}

postgresql_stop() {
    local bindir
    if pid_alive "$PG_PID" && bindir=$(pg_bindir); then
        log "stopping PostgreSQL (pid $(head -n 1 "$PG_PID"))"
        as_postgres "$bindir/pg_ctl" -D "$PG_DATA" -m fast -w -t "$WAIT_SECONDS" stop >&2
    else
        log "PostgreSQL not running"
    fi
}

# ---------------------------------------------------------------- main

case "${1:-}" in
    start)
        [ "$(id -u)" -eq 0 ] || die "run as root (installs packages and runs servers as the mysql and postgres users)"
        started=$(date +%s)
        install_missing
        mkdir -p "$DB_DIR"
        chmod 755 "$DB_DIR"
        mariadb_start
        postgresql_start
        log "ready in $(($(date +%s) - started))s"
        echo "export MLMD_TEST_MYSQL_URL=mysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$MYSQL_PORT/$DB_NAME"
        echo "export MLMD_TEST_POSTGRESQL_URL=postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME"
        # 1 when this call started a server: a caller then stops them, and leaves alone servers
        # that someone else started (and is still using).
        echo "export MLMD_TEST_DATABASES_STARTED=${STARTED_HERE:-0}"
        ;;
    stop)
        [ "$(id -u)" -eq 0 ] || die "run as root"
        mariadb_stop
        postgresql_stop
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        echo "  start: install MariaDB and PostgreSQL if missing, start private servers under" >&2
        echo "         \$MLMD_TEST_DB_DIR (default /tmp/mlmd-cache-dbs), print export lines" >&2
        echo "  stop:  stop them" >&2
        exit 2
        ;;
esac
