"""Run ``mlmd-cache serve`` as a real subprocess for tests, as a user or a KFP manifest runs it."""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from typing import Iterator, Optional

_STARTED = re.compile(r"on grpcs?://(?P<host>[^ ]+):(?P<port>\d+) over ")


@contextlib.contextmanager
def serving(*args: str, timeout: float = 30.0, log: Optional[list[str]] = None
            ) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start ``mlmd-cache serve ARGS --port 0`` and yield (process, "grpc://host:port") once it
    listens; stop it with SIGTERM afterwards (and fail if it does not stop). ``log`` (a list) gets
    the server's stderr lines as they come."""
    command = [sys.executable, "-m", "mlmd_cache", "serve", "--port", "0", *args]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    lines = log if log is not None else []
    try:
        for line in process.stderr:
            lines.append(line)
            match = _STARTED.search(line)
            if match:
                break
        else:
            process.wait(timeout)
            raise RuntimeError(f"mlmd-cache serve exited {process.returncode}: {''.join(lines)}")
        # Keep draining stderr, so a chatty server never blocks on a full pipe.
        threading.Thread(target=lines.extend, args=(process.stderr,), daemon=True).start()
        yield process, f"grpc://{match['host']}:{match['port']}"
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
