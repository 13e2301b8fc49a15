"""What MLMD and its databases can store, checked before the first write.

Measured on ml-metadata 1.17.1 (see tests/test_hostile.py, which checks each rule on every backend):

* **Names** (of contexts, executions, artifacts and types) are ``VARCHAR(255)`` columns. On a MariaDB/MySQL
  database of the server's default ``latin1`` (as MLMD creates it; the tests' MariaDB 10.11) the column
  counts bytes: 255 ASCII characters fit, 256 do not, and neither do 64 emoji (4 bytes each in UTF-8)
  or 128 ``é``; on a ``utf8mb4`` database it would count characters. PostgreSQL counts characters (255
  emoji fit); SQLite has no limit. The runner composes no names: task names are properties (TEXT). A name that
  does not fit is an error after earlier records of the run were written, so every backend gets the
  strictest rule, which keeps a store movable: at most :data:`MAX_NAME_BYTES` bytes of UTF-8.
* **NUL** ends every string MLMD's C++ core passes to the database: ``a\\0b`` is stored as ``a``, and
  looking up ``a\\0b`` finds the record named ``a``. Refused in every stored string.
* **Lone surrogates** (``\\ud800``) are not Unicode text: protobuf cannot even encode them. Refused.
* **Backslashes on PostgreSQL**: MLMD's PostgreSQL source quotes a string holding a backslash as
  ``'E'...''``, so the statement fails with a syntax error, or runs the rest of the string as SQL
  (a name ``, NULL, 0, 0); CREATE TABLE t (x int); -- \\`` creates the table). Refused in every
  stored or looked-up string when the store is a direct ``postgresql://`` one. Over ``grpc://`` the
  database is not known here; the server must refuse them.
"""
from __future__ import annotations

from typing import Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..errors import InvalidArgumentError

__all__ = ["MAX_NAME_BYTES", "store_backend", "check_text", "check_name", "storable", "storable_text", "text_problem",
           "shown"]

MAX_NAME_BYTES = 255


def store_backend(store: metadata_store.MetadataStore) -> Optional[str]:
    """``"sqlite"``, ``"mysql"`` or ``"postgresql"`` for a direct store; None over gRPC (unknown)."""
    config = getattr(store, "_config", None)
    if isinstance(config, mlmd.ConnectionConfig):
        kind = config.WhichOneof("config")
        return kind if kind in ("sqlite", "mysql", "postgresql") else None
    return None


def text_problem(value: object, backend: Optional[str] = None) -> Optional[str]:
    """Why ``value`` cannot be stored as MLMD text, or None."""
    if not isinstance(value, str):
        return f"is a {type(value).__name__}, not text"
    if "\x00" in value:
        return "holds a NUL character, which MLMD cuts the text at"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        return f"holds {value[error.start]!r} at position {error.start}, which is not Unicode text (a lone surrogate)"
    if backend == "postgresql" and "\\" in value:
        return "holds a backslash, which MLMD 1.17.1 cannot write to PostgreSQL safely"
    return None


def storable(value: object, backend: Optional[str] = None) -> bool:
    """Whether MLMD can store (and so can hold) ``value`` as text on ``backend``: a look-up of text
    that cannot be stored finds nothing, and need not (must not) reach the database."""
    return text_problem(value, backend) is None


def storable_text(text: str, backend: Optional[str] = None) -> str:
    """``text`` made storable, for text of our own making that quotes user values (a reason naming
    a path): characters MLMD cannot hold on ``backend`` become ``?``."""
    if storable(text, backend):
        return text
    kept = "".join(c if storable(c, backend) else "?" for c in text)
    return kept if storable(kept, backend) else kept.encode("ascii", "replace").decode("ascii")


def check_text(what: str, value: object, backend: Optional[str] = None) -> None:
    """Raise :class:`InvalidArgumentError` unless MLMD can store ``value`` (a property value, a URI,
    a path) exactly; ``what`` names it in the message (``"task name"``)."""
    problem = text_problem(value, backend)
    if problem:
        raise InvalidArgumentError(f"{what} {shown(value)} {problem}")


def check_name(what: str, value: object, backend: Optional[str] = None) -> None:
    """Raise :class:`InvalidArgumentError` unless ``value`` is a non-empty text that MLMD stores as a
    name (context, execution, artifact or type name) on every backend."""
    check_text(what, value, backend)
    if not value:
        raise InvalidArgumentError(f"{what} is empty")
    size = len(value.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        in_bytes = "" if size == len(value) else f" ({size} bytes in UTF-8)"
        raise InvalidArgumentError(
            f"{what} is {len(value)} characters{in_bytes}; MLMD stores names of at most {MAX_NAME_BYTES} "
            f"characters ({MAX_NAME_BYTES} bytes of UTF-8, MySQL's limit, kept on every backend)")


def shown(value: object) -> str:
    """``value`` for a one-line message: escaped (no newline or terminal escape gets through), and
    cut short when long."""
    text = repr(value)  # escapes control characters (newlines, terminal escapes), keeps printable text
    return text if len(text) <= 80 else f"{text[:60]}...{text[-12:]} ({len(value)} characters)"
