"""Store URLs and connections, on the real MLMD core.

The MySQL and PostgreSQL tests need servers: ``eval "$(bash scripts/databases.sh start)"`` sets
``MLMD_TEST_MYSQL_URL`` and ``MLMD_TEST_POSTGRESQL_URL``. Without them those tests are skipped,
except under CI (``CI=true``), where a missing server is a failure.
"""
from __future__ import annotations

import logging
import socket
import time
import uuid
from urllib.parse import quote, urlsplit

import pytest
from ml_metadata.proto import metadata_store_pb2 as mlmd

import mlmd_cache
from mlmd_cache import MlmdCacheError, StoreConnectionError, StoreURLError, connect, redact_url
from mlmd_cache.connection import connection_config, default_store_path, default_store_url
from tests.backends import SPECIAL_DATABASE, SPECIAL_PASSWORD, SPECIAL_USER, drop_database, free_port, server_url

SECRET = "s3cret-Pw"


def one_line(error: BaseException) -> str:
    text = str(error)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    return text


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.netloc.rpartition(':')[0]}:{port}").geturl()


def round_trip(store, marker: str) -> int:
    type_id = store.put_artifact_type(mlmd.ArtifactType(name=f"Probe_{marker}"))
    [artifact_id] = store.put_artifacts([mlmd.Artifact(type_id=type_id, uri=f"mem://{marker}")])
    return artifact_id


# ---------------------------------------------------------------- URL parsing


def test_sqlite_relative_path_is_against_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = connection_config("sqlite:///stores/m.sqlite")
    assert config.sqlite.filename_uri == str(tmp_path / "stores" / "m.sqlite")
    assert config.sqlite.connection_mode == mlmd.SqliteMetadataSourceConfig.READWRITE_OPENCREATE


def test_sqlite_absolute_path():
    assert connection_config("sqlite:////var/data/m.sqlite").sqlite.filename_uri == "/var/data/m.sqlite"
    assert connection_config("sqlite:////var/my%20data/m.sqlite").sqlite.filename_uri == "/var/my data/m.sqlite"


def test_sqlite_in_memory():
    assert connection_config("sqlite:///:memory:").sqlite.filename_uri == ":memory:"


def test_mysql_url():
    config = connection_config(f"mysql://alice:{SECRET}@db.example:3307/meta_data")
    assert (config.mysql.host, config.mysql.port, config.mysql.database) == ("db.example", 3307, "meta_data")
    assert (config.mysql.user, config.mysql.password) == ("alice", SECRET)


def test_mysql_aliases_and_default_port():
    for url in ("mariadb://alice:pw@db/meta", "MySQL://alice:pw@db/meta"):
        config = connection_config(url)
        assert (config.mysql.host, config.mysql.port, config.mysql.database) == ("db", 3306, "meta")


def test_mysql_percent_encoded_user_and_password():
    config = connection_config(f"mysql://{quote('a@b', safe='')}:{quote(SPECIAL_PASSWORD, safe='')}@db/meta")
    assert (config.mysql.user, config.mysql.password) == ("a@b", SPECIAL_PASSWORD)
    assert connection_config("mysql://u:p%40ss:w%2Frd@db/meta").mysql.password == "p@ss:w/rd"


def test_mysql_without_password():
    config = connection_config("mysql://alice@db/meta")
    assert config.mysql.user == "alice" and not config.mysql.HasField("password")


def test_postgresql_url():
    config = connection_config(f"postgresql://alice:{SECRET}@db.example:5433/meta")
    pg = config.postgresql
    # MLMD pastes host, port, user and password into a libpq connection string: they are quoted.
    assert (pg.host, pg.port, pg.user, pg.password) == ("'db.example'", "'5433'", "'alice'", f"'{SECRET}'")
    assert pg.dbname == "meta"


def test_postgresql_aliases_and_default_port():
    for url in ("postgres://alice:pw@db/meta", "postgresql://alice:pw@db/meta"):
        assert connection_config(url).postgresql.port == "'5432'"


def test_postgresql_password_is_escaped_for_libpq():
    url = f"postgresql://alice:{quote(SPECIAL_PASSWORD, safe='')}@db/meta"
    assert connection_config(url).postgresql.password == "'p@ss:w/rd a\\'b\\\\c\"#?%'"


def test_postgresql_without_password_leaves_it_to_libpq():
    assert not connection_config("postgresql://alice@db/meta").postgresql.HasField("password")


def test_grpc_url():
    config = connection_config("grpc://mlmd.example:8080")
    assert isinstance(config, mlmd.MetadataStoreClientConfig)
    assert (config.host, config.port) == ("mlmd.example", 8080)
    assert connection_config("grpc://[::1]:8080/").host == "::1"
    assert not config.HasField("ssl_config")


def test_grpcs_url_reads_its_pem_files(tmp_path):
    (tmp_path / "my ca.pem").write_text("CA PEM")
    (tmp_path / "client.pem").write_text("CLIENT PEM")
    (tmp_path / "client.key").write_text("KEY PEM")
    config = connection_config("grpcs://mlmd.example:8443")
    assert config.HasField("ssl_config") and not config.ssl_config.HasField("custom_ca")  # the system's roots
    config = connection_config(f"grpcs://mlmd.example:8443?ca={quote(str(tmp_path / 'my ca.pem'))}"
                               f"&cert={tmp_path / 'client.pem'}&key={tmp_path / 'client.key'}")
    assert (config.host, config.port) == ("mlmd.example", 8443)
    assert (config.ssl_config.custom_ca, config.ssl_config.server_cert, config.ssl_config.client_key) == (
        "CA PEM", "CLIENT PEM", "KEY PEM")


@pytest.mark.parametrize(
    "url, expected",
    [
        ("", "an empty store URL"),
        ("metadata.sqlite", "not a store URL"),
        ("ftp://host/x", "unsupported store URL scheme 'ftp'"),
        ("sqlite://host/x.sqlite", "has no host"),
        ("sqlite:///", "names no file"),
        ("sqlite:///m.sqlite?mode=ro", "no ?query"),
        (f"mysql://u:{SECRET}@db:99999/meta", "invalid port"),
        (f"mysql://u:{SECRET}@db:port/meta", "invalid port"),
        (f"mysql://u:{SECRET}@db:0/meta", "invalid port"),
        (f"mysql://u:{SECRET}@/meta", "names no host"),
        (f"mysql://u:{SECRET}@db:3306", "names no database"),
        (f"mysql://u:{SECRET}@db:3306/", "names no database"),
        (f"mysql://u:{SECRET}@db:3306/a/b", "names no database"),
        (f"mysql://u:{SECRET}@db/my-db", "not a plain identifier"),
        (f"mysql://u:{SECRET}@db/1db", "not a plain identifier"),
        (f"mysql://u:{SECRET}@db/meta;DROP", "not a plain identifier"),
        (f"mysql://u:{SECRET}@db/meta?ssl=1", "no ?query"),
        ("mysql://u:s3cret/Pw@db/meta", "must be percent-encoded"),
        ("mysql://u:s3cret#Pw@db/meta", "must be percent-encoded"),
        ("mysql://u:s3cret?Pw@db/meta", "must be percent-encoded"),
        (f"postgresql://:{SECRET}@db/meta", "names no user"),
        (f"postgresql://u:{SECRET}@db:5432x/meta", "invalid port"),
        ("grpc://mlmd.example", "names no port"),
        ("grpc://mlmd.example:8080/meta", "has no path"),
        (f"grpc://u:{SECRET}@mlmd.example:8080", "no user or password"),
        ("grpc://mlmd.example:8080?ca=/ca.pem", "no ?query"),
        ("grpcs://mlmd.example", "names no port"),
        ("grpcs://mlmd.example:8443?ca=/no/such/ca.pem", "cannot read the ca file '/no/such/ca.pem': No such file"),
        ("grpcs://mlmd.example:8443?cert=/c.pem", "a client certificate needs both cert and key"),
        ("grpcs://mlmd.example:8443?ca=/a.pem&ca=/b.pem", "ca is given twice"),
        ("grpcs://mlmd.example:8443?verify=no", "unknown parameter 'verify'"),
    ],
)
def test_malformed_urls(url, expected):
    with pytest.raises(StoreURLError) as caught:
        connection_config(url)
    message = one_line(caught.value)
    assert expected in message
    assert "s3cret" not in message
    assert isinstance(caught.value, (MlmdCacheError, ValueError))
    with pytest.raises(StoreURLError):  # connect() refuses it before touching MLMD
        connect(url or "not a url")


def test_connection_config_refuses_non_strings():
    with pytest.raises(StoreURLError):
        connection_config(None)


# ---------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    "url, shown",
    [
        (f"mysql://u:{SECRET}@db:3306/meta", "mysql://u:***@db:3306/meta"),
        (f"postgresql://alice:{SECRET}@db/meta", "postgresql://alice:***@db/meta"),
        ("mysql://u:p%40ss%3Aw%2Frd@db/meta", "mysql://u:***@db/meta"),
        ("mysql://u:pa/ss@word@db/meta", "mysql://u:***@db/meta"),  # unencoded '/' and '@'
        ("mysql://u:pa#ss@db/meta", "mysql://u:***@db/meta"),
        ("mysql://u@db/meta", "mysql://u@db/meta"),
        ("grpc://mlmd:8080", "grpc://mlmd:8080"),
        ("sqlite:////tmp/m.sqlite", "sqlite:////tmp/m.sqlite"),
        ("not a url", "not a url"),
    ],
)
def test_redact_url(url, shown):
    assert redact_url(url) == shown


# ---------------------------------------------------------------- SQLite and the default store


def test_sqlite_relative_store_is_created_in_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    artifact_id = round_trip(connect("sqlite:///sub/dir/m.sqlite"), "relative")
    path = tmp_path / "sub" / "dir" / "m.sqlite"
    assert path.is_file()
    monkeypatch.chdir("/")
    [artifact] = connect(f"sqlite:///{path}").get_artifacts_by_id([artifact_id])
    assert artifact.uri == "mem://relative"


def test_sqlite_absolute_store(tmp_path):
    path = tmp_path / "abs" / "m.sqlite"
    url = f"sqlite:///{path}"
    assert url.startswith("sqlite:////")
    artifact_id = round_trip(connect(url), "absolute")
    assert path.is_file()
    assert connect(url).get_artifacts_by_id([artifact_id])[0].uri == "mem://absolute"


def test_sqlite_in_memory_store():
    store = connect("sqlite:///:memory:")
    round_trip(store, "memory")


def test_sqlite_file_that_is_not_a_database(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("not a database\n" * 100)
    with pytest.raises(StoreConnectionError) as caught:
        connect(f"sqlite:///{path}")
    message = one_line(caught.value)
    assert "file is not a database" in message and "CREATE TABLE" not in message
    assert path.read_text() == "not a database\n" * 100


def test_sqlite_path_that_is_a_directory(tmp_path):
    with pytest.raises(StoreConnectionError) as caught:
        connect(f"sqlite:///{tmp_path}")
    assert "is a directory" in one_line(caught.value)


def test_sqlite_directory_that_cannot_be_made(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreConnectionError) as caught:
        connect(f"sqlite:///{tmp_path / 'file' / 'm.sqlite'}")
    assert "cannot create the directory" in one_line(caught.value)


def test_default_store_is_mlmd_db(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'from-env.sqlite'}"
    monkeypatch.setenv("MLMD_DB", url)
    assert default_store_url() == url
    round_trip(connect(), "env")
    assert (tmp_path / "from-env.sqlite").is_file()


def test_default_store_under_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MLMD_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    expected = tmp_path / "data" / "mlmd-cache" / "metadata.sqlite"
    assert default_store_path() == expected
    assert default_store_url() == f"sqlite:///{expected}"
    round_trip(connect(None), "xdg")
    assert expected.is_file()


def test_default_store_without_xdg_data_home(monkeypatch, tmp_path):
    monkeypatch.delenv("MLMD_DB", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_store_path() == tmp_path / ".local" / "share" / "mlmd-cache" / "metadata.sqlite"


def test_public_names():
    assert mlmd_cache.connect is connect and mlmd_cache.redact_url is redact_url
    assert issubclass(StoreConnectionError, MlmdCacheError) and issubclass(StoreURLError, MlmdCacheError)


# ---------------------------------------------------------------- servers that are not there


@pytest.mark.parametrize("scheme", ["mysql", "postgresql", "grpc"])
def test_refused_port_fails_at_once(scheme):
    port = free_port()
    url = f"grpc://127.0.0.1:{port}" if scheme == "grpc" else f"{scheme}://u:{SECRET}@127.0.0.1:{port}/meta"
    started = time.monotonic()
    with pytest.raises(StoreConnectionError) as caught:
        connect(url)
    assert time.monotonic() - started < 2
    message = one_line(caught.value)
    assert "refused" in message and f"127.0.0.1:{port}" in message and SECRET not in message


@pytest.fixture
def silent_server():
    """host:port of a server that accepts TCP connections (the kernel does) and never says a word."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield "127.0.0.1:%d" % sock.getsockname()[1]


@pytest.mark.parametrize("scheme", ["mysql", "postgresql", "grpc"])
def test_silent_server_times_out(scheme, silent_server):
    # MLMD's own MySQL and PostgreSQL clients wait for such a server indefinitely.
    url = f"grpc://{silent_server}" if scheme == "grpc" else f"{scheme}://u:{SECRET}@{silent_server}/meta"
    started = time.monotonic()
    with pytest.raises(StoreConnectionError) as caught:
        connect(url, timeout=1.0)
    assert time.monotonic() - started < 3
    message = one_line(caught.value)
    assert silent_server in message and "within 1 s" in message and SECRET not in message


def test_unresolvable_host():
    with pytest.raises(StoreConnectionError) as caught:
        connect(f"mysql://u:{SECRET}@no-such-host.invalid:3306/meta")
    message = one_line(caught.value)
    assert "cannot resolve host 'no-such-host.invalid'" in message and SECRET not in message


# ---------------------------------------------------------------- real MySQL and PostgreSQL servers


@pytest.fixture(params=["mysql", "postgresql"])
def db_url(request) -> str:
    return server_url(f"MLMD_TEST_{request.param.upper()}_URL")


def url_with(url: str, *, user=None, password=None, database=None, port=None) -> str:
    parts = urlsplit(url)
    user = parts.username if user is None else user
    password = parts.password if password is None else quote(password, safe="")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = f"{user}:{password}@{host}:{parts.port if port is None else port}"
    path = parts.path if database is None else f"/{database}"
    return parts._replace(netloc=netloc, path=path).geturl()


def test_server_round_trip(db_url, caplog, capfd):
    password = urlsplit(db_url).password
    marker = uuid.uuid4().hex
    with caplog.at_level(logging.DEBUG):
        artifact_id = round_trip(connect(db_url), marker)
    # MLMD logs its ConnectionConfig at DEBUG level: with the password hidden.
    assert "ConnectionConfig" in caplog.text and "***" in caplog.text
    assert password not in caplog.text
    [artifact] = connect(db_url).get_artifacts_by_id([artifact_id])  # a second connection sees it
    assert artifact.uri == f"mem://{marker}"
    captured = capfd.readouterr()  # MLMD's C++ INFO lines ("Connecting to database.") are not passed on
    assert "Connecting to database" not in captured.err and password not in captured.err + captured.out


def test_server_wrong_password(db_url, capfd):
    right = urlsplit(db_url).password
    wrong = f"wrong-{uuid.uuid4().hex[:8]}"
    with pytest.raises(StoreConnectionError) as caught:
        connect(url_with(db_url, password=wrong))
    message = one_line(caught.value)
    assert wrong not in message and right not in message and ":***@" in message
    assert "Access denied" in message or "password authentication failed" in message
    captured = capfd.readouterr()
    assert wrong not in captured.err + captured.out
    assert "PostgreSQL error" not in captured.err and "MySQL database was not initialized" not in captured.err


def test_server_unknown_user(db_url):
    with pytest.raises(StoreConnectionError) as caught:
        connect(url_with(db_url, user="no_such_user"))
    message = one_line(caught.value)
    assert "no_such_user" in message and urlsplit(db_url).password not in message


def test_server_unreachable_port_is_quick(db_url):
    password = urlsplit(db_url).password
    url = url_with(db_url, port=free_port())
    started = time.monotonic()
    with pytest.raises(StoreConnectionError) as caught:
        connect(url)
    assert time.monotonic() - started < 5
    message = one_line(caught.value)
    assert "refused" in message and password not in message


def test_server_creates_a_missing_database(db_url):
    # MLMD creates a database that does not exist yet (the test user may create mlmd_test*).
    database = f"mlmd_test_{uuid.uuid4().hex[:12]}"
    try:
        store = connect(url_with(db_url, database=database))
        artifact_id = round_trip(store, database)
        assert connect(url_with(db_url, database=database)).get_artifacts_by_id([artifact_id])
        assert f"Probe_{database}" not in {t.name for t in connect(db_url).get_artifact_types()}  # not mlmd_test
    finally:
        drop_database(url_with(db_url, database=database))


def test_mysql_database_that_may_not_be_created():
    url = server_url("MLMD_TEST_MYSQL_URL")
    with pytest.raises(StoreConnectionError) as caught:
        connect(url_with(url, database="forbidden_db"))
    message = one_line(caught.value)
    assert "creating database forbidden_db" in message and "Access denied" in message


def test_server_password_with_special_characters(db_url):
    # scripts/databases.sh makes the user mlmd_special with password p@ss:w/rd a'b\c"#?%.
    url = url_with(db_url, user=SPECIAL_USER, password=SPECIAL_PASSWORD, database=SPECIAL_DATABASE)
    assert "p%40ss%3Aw%2Frd%20a%27b%5Cc%22%23%3F%25" in url
    round_trip(connect(url), uuid.uuid4().hex)
    with pytest.raises(StoreConnectionError) as caught:
        connect(url_with(url, password=SPECIAL_PASSWORD + "x"))
    message = one_line(caught.value)
    assert "p@ss" not in message and "a'b" not in message
