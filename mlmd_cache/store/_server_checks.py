"""Checks that a database or gRPC server answers, before MLMD's client (which has no connect
timeout, and rarely says why a connection failed) is handed the address."""
from __future__ import annotations

import hashlib
import socket
import struct
import time

from ..errors import StoreConnectionError

__all__ = ["CONNECT_TIMEOUT_SECONDS", "check_server_answers", "MysqlLogin", "probe_postgresql"]

CONNECT_TIMEOUT_SECONDS = 5.0
"""How long :func:`mlmd_cache.connect` waits for a MySQL, PostgreSQL or gRPC server to answer."""


def _one_line(text: str) -> str:
    return " ".join(text.split())


class _Refused(Exception):
    """The server answered, and said no (its message is the exception's)."""


def check_server_answers(host: str, port: int, shown: str, probe, timeout: float) -> None:
    """Raise StoreConnectionError unless host:port accepts TCP (and ``probe(sock, deadline)`` passes)."""
    deadline = time.monotonic() + timeout
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as error:
        raise StoreConnectionError(f"cannot reach {shown}: cannot resolve host {host!r} ({error.strerror})") from None
    except ConnectionRefusedError:
        raise StoreConnectionError(
            f"cannot reach {shown}: connection to {where} refused (is the server running on that port?)"
        ) from None
    except (socket.timeout, TimeoutError):
        raise StoreConnectionError(
            f"cannot reach {shown}: no answer from {where} within {timeout:g} s"
        ) from None
    except OSError as error:
        raise StoreConnectionError(f"cannot reach {shown}: {where}: {error.strerror or error}") from None
    try:
        if probe is not None:
            probe(sock, deadline)
    except (socket.timeout, TimeoutError):
        raise StoreConnectionError(
            f"cannot open {shown}: {where} accepts connections but did not answer within "
            f"{timeout:g} s (is it the right kind of server?)"
        ) from None
    except _Refused as error:
        raise StoreConnectionError(f"cannot open {shown}: {_one_line(str(error))}") from None
    except (OSError, EOFError, ValueError, IndexError, struct.error) as error:
        raise StoreConnectionError(
            f"cannot open {shown}: {where} does not answer like the right kind of server "
            f"({_one_line(str(error)) or type(error).__name__})"
        ) from None
    finally:
        sock.close()


def _recv_exact(sock: socket.socket, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out")
        sock.settimeout(remaining)
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise EOFError("the server closed the connection")
        data += chunk
    return data


def probe_postgresql(sock: socket.socket, deadline: float) -> None:
    # A GSSENCRequest: a PostgreSQL server answers one byte, 'N' (or 'G'); a server older than
    # 12 answers with an error message ('E'). A connection closed right after that leaves no
    # line in the server's log (unlike an SSLRequest answered 'S' and then dropped).
    sock.sendall(struct.pack("!ii", 8, 80877104))
    answer = _recv_exact(sock, 1, deadline)
    if answer not in (b"N", b"G", b"E"):
        raise ValueError(f"answered {answer!r} to a PostgreSQL request")


# MySQL client/server protocol (the subset needed to log in with mysql_native_password).
_CLIENT_LONG_PASSWORD = 0x1
_CLIENT_LONG_FLAG = 0x4
_CLIENT_PROTOCOL_41 = 0x200
_CLIENT_TRANSACTIONS = 0x2000
_CLIENT_SECURE_CONNECTION = 0x8000
_CLIENT_PLUGIN_AUTH = 0x80000
_NATIVE_PASSWORD = b"mysql_native_password"


def _mysql_read_packet(sock: socket.socket, deadline: float) -> tuple[int, bytes]:
    header = _recv_exact(sock, 4, deadline)
    length = header[0] | header[1] << 8 | header[2] << 16
    return header[3], _recv_exact(sock, length, deadline)


def _mysql_write_packet(sock: socket.socket, sequence: int, payload: bytes) -> None:
    sock.sendall(struct.pack("<I", len(payload))[:3] + bytes([sequence & 0xFF]) + payload)


def _mysql_error(payload: bytes) -> str:
    errno = struct.unpack("<H", payload[1:3])[0]
    message = payload[3:]
    if message[:1] == b"#":
        message = message[6:]
    return f"the MySQL server said: {message.decode('utf-8', 'replace')} (error {errno})"


def _mysql_native_scramble(password: bytes, salt: bytes) -> bytes:
    if not password:
        return b""
    stage1 = hashlib.sha1(password).digest()
    stage2 = hashlib.sha1(stage1).digest()
    mix = hashlib.sha1(salt + stage2).digest()
    return bytes(a ^ b for a, b in zip(stage1, mix))


class MysqlLogin:
    """A probe that logs in with ``mysql_native_password`` (MLMD's plugin) and quits cleanly."""

    def __init__(self, user: str, password: str) -> None:
        self.user, self.password = user, password

    def __call__(self, sock: socket.socket, deadline: float) -> None:
        sequence, greeting = _mysql_read_packet(sock, deadline)
        if greeting[:1] == b"\xff":  # e.g. too many connections, host blocked
            raise _Refused(_mysql_error(greeting))
        if greeting[:1] != b"\x0a":
            raise ValueError("no MySQL greeting")
        rest = greeting[greeting.index(b"\0", 1) + 1:]  # after the server version
        salt = rest[4:12]
        capabilities = struct.unpack("<H", rest[13:15])[0]
        plugin = _NATIVE_PASSWORD
        if len(rest) > 18:
            capabilities |= struct.unpack("<H", rest[18:20])[0] << 16
            salt_length = rest[20]
            more = rest[31:]
            salt += more[:max(13, salt_length - 8) - 1]
            if capabilities & _CLIENT_PLUGIN_AUTH:
                plugin = more[max(13, salt_length - 8):].split(b"\0", 1)[0] or _NATIVE_PASSWORD
        if not capabilities & _CLIENT_PROTOCOL_41:
            return  # a server this old: leave it to MLMD
        password = self.password.encode("utf-8")
        flags = (_CLIENT_LONG_PASSWORD | _CLIENT_LONG_FLAG | _CLIENT_PROTOCOL_41 | _CLIENT_TRANSACTIONS
                 | _CLIENT_SECURE_CONNECTION | _CLIENT_PLUGIN_AUTH)
        scramble = _mysql_native_scramble(password, salt[:20]) if plugin == _NATIVE_PASSWORD else b""
        response = (struct.pack("<IIB", flags, 1 << 24, 33) + bytes(23) + self.user.encode("utf-8") + b"\0"
                    + bytes([len(scramble)]) + scramble + _NATIVE_PASSWORD + b"\0")
        _mysql_write_packet(sock, sequence + 1, response)
        sequence, answer = _mysql_read_packet(sock, deadline)
        if answer[:1] == b"\xfe" and len(answer) > 1:  # the account wants another plugin
            name, _, data = answer[1:].partition(b"\0")
            if name != _NATIVE_PASSWORD:
                return  # not ours to speak (MLMD's client may); leave the verdict to MLMD
            _mysql_write_packet(sock, sequence + 1, _mysql_native_scramble(password, data.rstrip(b"\0")[:20]))
            sequence, answer = _mysql_read_packet(sock, deadline)
        if answer[:1] == b"\xff":
            raise _Refused(_mysql_error(answer))
        if answer[:1] == b"\x00":
            _mysql_write_packet(sock, 0, b"\x01")  # COM_QUIT: a clean goodbye, no "aborted" log line
