"""MLMD's own messages when a store cannot be opened: captured from its C++ log, cut to one line,
with the password hidden (also in the DEBUG record where MLMD logs its connection config).

MLMD's C++ core logs to file descriptor 2 (e.g. each failed query while a PostgreSQL server restarts,
even when the call is then retried and the run succeeds). Every call into it runs inside
:class:`mlmd_stderr_captured`, which keeps those lines here (:func:`mlmd_log`) instead of passing
them on: a command shows them (:func:`mlmd_cache.terminal.show_mlmd_log`) only when it fails."""
from __future__ import annotations

import collections
import logging
import os
import re
import sys
import tempfile
import threading
from typing import IO, Optional

__all__ = ["mlmd_stderr_captured", "mlmd_log", "reason", "store_cause", "take_mlmd_log",
           "without_sql"]


# glog's lines: "E1128 21:52:04.214982  3071 file.cc:211] text", continued by tab-indented lines.
_GLOG_LINE = re.compile(r"^([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^ \]]+:\d+\] ?(.*)$")
_GLOG_BANNER = "WARNING: Logging before InitGoogleLogging() is written to STDERR"
_LIBPQ_NOTICE = "NOTICE:  "  # e.g. "NOTICE:  relation "type" already exists, skipping" from MLMD's DDL
# Reentrant: a captured block may call MLMD again (a reconnect inside a call's retry).
_stderr_lock = threading.RLock()
_depth = threading.local()  # how many captures this thread is inside
# One file takes every capture (under _stderr_lock) and is emptied after each: a new temporary file
# per MLMD call cost ~0.1 ms, as much as a cached task's lookup.
_capture: Optional[IO[bytes]] = None


def _capture_file() -> int:
    global _capture
    if _capture is None:
        _capture = tempfile.TemporaryFile()
    return _capture.fileno()


_MLMD_LOG_LINES = 200
_mlmd_log: collections.deque[str] = collections.deque(maxlen=_MLMD_LOG_LINES)  # the latest lines


def mlmd_log() -> list[str]:
    """The warning and error lines MLMD's C++ core logged in this process (the latest
    :data:`_MLMD_LOG_LINES`), except those of a failure whose exception already says why."""
    return list(_mlmd_log)


def take_mlmd_log() -> list[str]:
    """:func:`mlmd_log`, then forgotten: what a command that failed shows
    (:func:`mlmd_cache.terminal.show_mlmd_log`), once."""
    lines = mlmd_log()
    _mlmd_log.clear()
    return lines


class _Captured:
    def __init__(self) -> None:
        self.data = b""
        self.failure: Optional[Exception] = None  # set when the block failed (it then says why)

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")


class mlmd_stderr_captured:
    """Collects what MLMD's C++ core writes to file descriptor 2 while the block runs.

    On leaving, lines that are not MLMD's log are written on to the real stderr; MLMD's INFO lines
    are dropped, and so are its warnings and errors when the block raised or set ``failure`` (its
    exception carries the reason); otherwise they are kept for :func:`take_mlmd_log`, never written
    as they come. Serialised by a (reentrant) lock, since file descriptor 2 is the process's: every
    thread's MLMD calls take turns. No task process inherits it while captured: theirs go to files.
    """

    def __enter__(self) -> _Captured:
        self.captured = _Captured()
        _stderr_lock.acquire()
        self.saved = None
        self.nested = getattr(_depth, "value", 0) > 0
        _depth.value = getattr(_depth, "value", 0) + 1
        if self.nested:  # inside another capture of this thread: its output is the outer block's to judge
            return self.captured
        try:
            for stream in (sys.stderr, sys.__stderr__):
                if stream is not None:
                    stream.flush()
            capture = _capture_file()
            self.saved = os.dup(2)
            os.dup2(capture, 2)
        except Exception:  # no usable fd 2 (closed, or a stream without one): capture nothing
            try:
                self._close()
            except OSError:
                pass
        return self.captured

    def _close(self) -> None:
        if self.saved is None:
            return
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.saved = None
        capture = _capture_file()
        size = os.fstat(capture).st_size
        if size:
            self.captured.data = os.pread(capture, size, 0)
            os.ftruncate(capture, 0)
        os.lseek(capture, 0, os.SEEK_SET)

    def __exit__(self, kind, value, traceback) -> None:
        try:
            self._close()
        finally:
            _depth.value -= 1
            _stderr_lock.release()
        if self.nested:
            return
        keep, in_glog, keep_glog = [], False, False
        for line in self.captured.text().splitlines(keepends=True):
            match = _GLOG_LINE.match(line)
            if match:
                in_glog = True
                keep_glog = kind is None and self.captured.failure is None and match.group(1) != "I"
                if keep_glog:
                    _mlmd_log.append(line)
                continue
            if line.startswith(_GLOG_BANNER) or line.startswith(_LIBPQ_NOTICE):
                continue
            if in_glog and _glog_continues(line):
                if keep_glog:
                    _mlmd_log.append(line)
                continue
            in_glog = False
            keep.append(line)
        if keep:
            try:
                os.write(2, "".join(keep).encode("utf-8", "replace"))
            except OSError:
                pass


def _glog_continues(line: str) -> bool:
    """Whether ``line``, after a glog line, still belongs to its message: indented, blank, or libpq's
    own lines of a multi-line error ("server closed the connection unexpectedly")."""
    return line.startswith(("\t", " ")) or not line.strip() or line.startswith(_LIBPQ_CONTINUATIONS)


# The lines libpq adds to an error message that MLMD logs (they are not indented).
_LIBPQ_CONTINUATIONS = ("server closed the connection", "connection to server", "could not connect",
                        "FATAL:", "ERROR:", "DETAIL:", "HINT:", "no connection to the server", "SSL SYSCALL")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# What the databases say (in MLMD's error text) for a fault of the store itself, not of the call.
_CAUSES = (
    ("full", re.compile(r"database or disk is full|no space left on device|disk full|table '[^']*' is full"
                        r"|could not extend file|could not write to file", re.I)),
    ("read-only", re.compile(r"attempt to write a readonly database|read-only (?:file system|transaction)"
                             r"|--read-only option|readonly database", re.I)),
    ("corrupt", re.compile(r"database disk image is malformed|file is not a database|file is encrypted"
                           r"|database corruption|invalid page in block|could not read block", re.I)),
    ("locked", re.compile(r"database is locked|database table is locked|lock wait timeout exceeded", re.I)),
)


# Where, in MLMD's error text, the database's own message begins: before it MLMD dumps the records
# it was writing (names and values a user chose), after it comes the SQL (values again).
_DATABASE_SAYS = re.compile(r".*?(?:Error when executing query:|metadata source error:|Execution failed:)", re.S)


def without_sql(text: str) -> str:
    """MLMD's error text cut before the SQL it ran (``... query: INSERT INTO ...``)."""
    return re.sub(r"\s+query:\s.*", "", text, flags=re.S)


def _database_said(text: str) -> str:
    """The database's message in MLMD's error text, without the records and SQL around it, so that a
    run named "disk full" is not taken for a full disk."""
    return without_sql(_DATABASE_SAYS.sub("", text, count=1))


def store_cause(text: str, config, shown: Optional[str] = None) -> Optional[str]:
    """A plain sentence for a store fault that MLMD reports with its SQL (disk full, read-only,
    corrupt, locked), naming the SQLite file or the server; None for any other error."""
    from ml_metadata.proto import metadata_store_pb2 as mlmd  # here: the CLI imports this module for --help

    said = _database_said(text)
    kind = next((name for name, pattern in _CAUSES if pattern.search(said)), None)
    if kind is None:
        return None
    sqlite = isinstance(config, mlmd.ConnectionConfig) and config.HasField("sqlite")
    if sqlite:
        path = config.sqlite.filename_uri
        return {
            "full": f"the disk holding {path} is full: the store cannot grow (nothing of the refused write was "
                    "kept); free some space and run the command again",
            "read-only": f"{path} is read-only: SQLite cannot write to it (check the permissions and attributes "
                         "of the file and its directory, and whether it is on a read-only mount)",
            "corrupt": f"{path} is corrupt (SQLite: database disk image is malformed); restore it from a backup "
                       f"(`sqlite3 {path} .recover` may save what it still holds)",
            "locked": f"{path} stayed locked by another process (SQLite: database is locked); "
                      "wait for it to end and run the command again",
        }[kind]
    if not shown:
        where = "the database server"
    elif isinstance(config, mlmd.MetadataStoreClientConfig):
        where = f"the database behind {shown}"
    else:
        where = f"the database server of {shown}"
    return {
        "full": f"{where} is out of disk space: the store cannot grow (nothing of the refused write was kept)",
        "read-only": f"{where} is read-only: it refuses every write",
        "corrupt": f"{where} reports corrupt data; restore the database from a backup",
        "locked": f"{where} kept a lock that another session holds; run the command again when it is released",
    }[kind]


def reason(error: Exception, config, stderr: str) -> str:
    """One line saying why MLMD could not open the store, without the password."""
    text = str(error).strip()
    cause = store_cause(text, config)
    if cause is not None:
        return cause
    if config.HasField("postgresql"):
        # MLMD's exception only says "connection pointer is NULL"; libpq's reason went to stderr.
        logged = re.findall(r"\] (?:PostgreSQL error|Execution failed|Creating database .*? failure"
                            r"|Checking database existence for .*? failure): (.*)", stderr)
        if "connection pointer is NULL" in text and logged:
            text = logged[-1]
        text = text.replace("PostgreSQL metadata source error: ", "")
        creating = re.search(r"\] Creating database (\S+) failure: ", stderr)
        if creating:
            text = f"creating database {creating.group(1)}: {text}"
        if 'database "postgres"' in text:
            text += " (MLMD first connects to the 'postgres' database, to create the target database if missing)"
    elif config.HasField("mysql"):
        # "mysql_query failed: errno: <message>, error: <message>" (sic): keep the message once.
        match = re.search(r"mysql_query failed: errno: (.*?), error: (.*)", text, re.S)
        if match:
            prefix = text[: match.start()]
            context = re.match(r"(Creating|Changing to) database (\S+) in ConnectImpl", prefix)
            what = f"{context.group(1).lower()} database {context.group(2)}: " if context else ""
            text = what + (match.group(2) or match.group(1))
        elif "mysql_real_connect failed" in text:
            text = ("the MySQL server refused MLMD's login (MLMD's client gives no reason; it logs in "
                    "with mysql_native_password, which a MySQL 8 account may need to be set to)")
    else:
        # SQLite: "Error when executing query: <reason> query: <the SQL>": drop the SQL.
        text = re.sub(r"^(.*? query: .*?) query: .*", r"\1", text, flags=re.S)
    text = _one_line(text) or type(error).__name__
    for secret in _passwords(config):
        text = text.replace(secret, "***")
    return text


def _passwords(config) -> list[str]:
    from ml_metadata.proto import metadata_store_pb2 as mlmd  # here: the CLI imports this module for --help

    if not isinstance(config, mlmd.ConnectionConfig):
        return []
    if config.HasField("mysql"):
        password = config.mysql.password
    elif config.HasField("postgresql"):
        password = config.postgresql.password
        if len(password) >= 2 and password[0] == password[-1] == "'":  # also its unquoted form
            plain = password[1:-1].replace("\\'", "'").replace("\\\\", "\\")
            return [p for p in (password, plain) if p]
    else:
        return []
    return [password] if password else []


class _RedactConnectionConfig(logging.Filter):
    """MLMD logs ``ConnectionConfig: <config>`` at DEBUG level: show it with the password hidden."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("ConnectionConfig") and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(_redacted(arg) for arg in args)
        return True


def _redacted(value):
    from ml_metadata.proto import metadata_store_pb2 as mlmd

    if isinstance(value, mlmd.ConnectionConfig) and _passwords(value):
        value = type(value).FromString(value.SerializeToString())
        (value.mysql if value.HasField("mysql") else value.postgresql).password = "***"
    return value


logging.getLogger("absl").addFilter(_RedactConnectionConfig())
