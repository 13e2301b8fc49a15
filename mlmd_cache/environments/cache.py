"""The cache of task environments: one virtual environment per requirement set, built once by uv,
reused by every later task and run that needs the same set.

Layout under the cache directory (:func:`default_cache_dir`)::

    KEY/                      an environment, ready: it holds ENV_RECORD
    KEY/mlmd-cache-env.json   the set it was built from, its Python, when
    KEY/.last-used            touched by every run that uses it (its mtime)
    KEY/.compiled             its packages are byte-compiled (done beside the first run that uses it)
    .locks/KEY.lock           flock: exclusive while the set is built or pruned, shared while a run uses it
    .build-KEY-XXXX/          a build in progress (or one a killed process left: removed by the next build)
    builds.log                one line per build: when, which set, how long, by which process

Built atomically: ``uv venv --relocatable`` (no pip of its own: a task's ``pip`` is the shim of
:mod:`mlmd_cache.runner.shims`, and a task's program that runs ``sys.executable -m pip install``
cannot change an environment that other tasks share) in a temporary directory, the set's ``pip install``s
run there with ``uv pip install`` in order, the record written last, then renamed into place, so
that a directory named by a key is complete or absent. Built once under concurrency: the key's lock
is exclusive across processes (``fcntl.flock``, one open file each, so threads of one process
exclude each other too), and whoever gets it second finds the environment ready. Offline: when uv
cannot reach an index it retries from its own cache (``--offline``); a ``--find-links`` folder
(the task's, or ``UV_FIND_LINKS``) works either way. Where uv cannot run at all, ``python -m venv``
and the runner's pip build it (not relocatable: in place, the record written last).

``fcntl`` rather than the ``filelock`` package: prune must tell an environment some run is using
(a shared lock) from a free one, and ``filelock`` has exclusive locks only.
"""
from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from ..defaults import user_cache_dir
from ..errors import InvalidArgumentError, TaskEnvironmentError
from .requirements import RequirementSet, base_interpreter, uv_arguments

__all__ = ["parse_size", "EnvironmentCache", "Environment", "EnvironmentInfo", "TaskEnvironmentError", "default_cache_dir",
           "ENV_DIR_VARIABLE"]

ENV_DIR_VARIABLE = "MLMD_CACHE_ENV_DIR"
ENV_RECORD = "mlmd-cache-env.json"
_LAST_USED = ".last-used"
_COMPILED = ".compiled"
_LOCKS = ".locks"
_BUILD_PREFIX = ".build-"
_TRASH_PREFIX = ".trash-"
# uv's messages when no index answers: the build is tried again from uv's cache alone.
_OFFLINE_SIGNS = ("Failed to fetch", "error sending request", "dns error", "Could not connect",
                  "Connection refused", "failed to lookup address", "tcp connect error", "Network is unreachable")


def default_cache_dir() -> Path:
    """``$MLMD_CACHE_ENV_DIR``, else ``$XDG_CACHE_HOME/mlmd-cache/envs`` (``~/.cache/mlmd-cache/envs``)."""
    return user_cache_dir(ENV_DIR_VARIABLE, "envs")


@dataclass(frozen=True)
class Environment:
    """A ready environment: its directory, its ``bin`` and what it was built from."""

    path: Path
    requirements: RequirementSet

    @property
    def bin(self) -> Path:
        return self.path / "bin"

    @property
    def python(self) -> Path:
        return self.bin / "python"

    def site_packages(self) -> list[str]:
        return sorted(str(path) for path in self.path.glob("lib/python*/site-packages"))


@dataclass(frozen=True)
class EnvironmentInfo:
    """An environment of the cache as ``mlmd-cache envs`` lists it."""

    key: str
    path: Path
    python: str
    requirements: tuple[str, ...]
    size: int  # bytes, each file once
    created: Optional[datetime.datetime]
    last_used: Optional[datetime.datetime]
    in_use: bool

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "path": str(self.path), "python": self.python,
                "requirements": list(self.requirements), "size": self.size,
                "created": self.created.isoformat() if self.created else None,
                "last_used": self.last_used.isoformat() if self.last_used else None, "in_use": self.in_use}


def _uv() -> Optional[str]:
    try:
        from uv import find_uv_bin
    except ImportError:
        return shutil.which("uv")
    try:
        return find_uv_bin()
    except FileNotFoundError:
        return shutil.which("uv")


class EnvironmentCache:
    """The environments under ``root``; :meth:`ensure` gives a set's (building it when missing)
    and keeps it from being pruned until :meth:`close`. Safe to share between threads.
    ``use_uv=False`` builds with ``python -m venv`` and pip, as where uv cannot run."""

    def __init__(self, root: Optional[os.PathLike] = None, *, python: Optional[str] = None,
                 on_process: Optional[Callable[[subprocess.Popen, bool], None]] = None, use_uv: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.use_uv = use_uv
        self.interpreter = python or base_interpreter()
        self._on_process = on_process  # (process, started?): the runner's watchdog follows builds
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self._ready: dict[str, Environment] = {}
        self._offline = False  # set when an index did not answer: later builds go to uv's cache at once
        self._held: list[int] = []  # shared flocks of the environments handed out

    def check_root(self, *, writable: bool = True) -> None:
        """Refuse (:class:`InvalidArgumentError`, one line) a cache directory that cannot be one: a
        file, a path under a file, or (``writable``) a folder this user cannot write. Creates nothing:
        a run whose tasks are all cached never makes the directory."""
        existing = self.root
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            where = "" if existing == self.root else f" ({existing} is a file)"
            raise InvalidArgumentError(f"environment cache {self.root} is not a directory{where}")
        if writable and not os.access(existing, os.W_OK | os.X_OK):
            raise InvalidArgumentError(f"environment cache {self.root}: {existing} is not writable by this user")

    # ---------------------------------------------------------------- use

    def ensure(self, requirements: RequirementSet, cancelled: Optional[threading.Event] = None) -> Environment:
        """The set's environment, built first when the cache has none (raises
        :class:`TaskEnvironmentError` with one line when it cannot be built)."""
        with self._lock:
            key_lock = self._key_locks.setdefault(requirements.key, threading.Lock())
        with key_lock:
            if requirements.key in self._ready:
                return self._ready[requirements.key]
            path = self.root / requirements.key
            try:
                (self.root / _LOCKS).mkdir(parents=True, exist_ok=True)
                descriptor = os.open(self.root / _LOCKS / f"{requirements.key}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise TaskEnvironmentError(f"cannot use the environment cache {self.root}: "
                                           f"{error.strerror or error}") from None
            try:
                _flock(descriptor, fcntl.LOCK_SH, cancelled)
                if not self._is_ready(path):
                    _flock(descriptor, fcntl.LOCK_EX, cancelled)  # one builder; the others wait here, then find it
                    if not self._is_ready(path):
                        self._build(requirements, path, cancelled)
                    _flock(descriptor, fcntl.LOCK_SH, cancelled)
                _touch(path / _LAST_USED)
                environment = Environment(path, requirements)
                if not (path / _COMPILED).exists():
                    self._compile(environment)
            except BaseException:
                os.close(descriptor)
                raise
            with self._lock:
                self._held.append(descriptor)
            self._ready[requirements.key] = environment
            return environment

    def close(self) -> None:
        """Let go of the environments handed out (they may be pruned again)."""
        with self._lock:
            held, self._held = self._held, []
            self._ready.clear()
        for descriptor in held:
            os.close(descriptor)

    def __enter__(self) -> "EnvironmentCache":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _compile(self, environment: Environment) -> None:
        """Byte-compile the environment's packages beside the run, not in its build: uv writes no
        ``.pyc`` files (compiling the 40 packages of kfp with its dependencies would double a build),
        and a task that imports from source under ``PYTHONDONTWRITEBYTECODE`` pays for it on every
        start. Nothing waits for it: CPython writes each ``.pyc`` atomically, and a compile cut off
        when the run ends is done again by the next run that uses the environment."""
        try:
            process = subprocess.Popen([str(environment.python), "-m", "compileall", "-q", "-j", "0",
                                        *environment.site_packages()],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        except OSError:
            return
        if self._on_process is not None:
            self._on_process(process, True)

        def wait() -> None:
            if process.wait() == 0:
                _touch(environment.path / _COMPILED)
            if self._on_process is not None:
                self._on_process(process, False)

        threading.Thread(target=wait, name="mlmd-cache-compileall", daemon=True).start()

    @staticmethod
    def _is_ready(path: Path) -> bool:
        return (path / ENV_RECORD).is_file() and (path / "bin" / "python").exists()

    # ---------------------------------------------------------------- build

    def _build(self, requirements: RequirementSet, path: Path, cancelled: Optional[threading.Event]) -> None:
        """Under the key's exclusive lock: what an earlier, killed build left is removed first."""
        began = time.monotonic()
        self._build_into(requirements, path, cancelled)
        try:
            with open(self.root / "builds.log", "a", encoding="utf-8") as log:
                log.write(f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} "
                          f"{requirements.key} {time.monotonic() - began:.2f}s pid {os.getpid()}: "
                          f"{requirements.describe()}\n")
        except OSError:
            pass

    def _build_into(self, requirements: RequirementSet, path: Path, cancelled: Optional[threading.Event]) -> None:
        for leftover in self.root.glob(f"{_BUILD_PREFIX}{requirements.key}-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        if path.exists():  # incomplete (a killed in-place build) or its interpreter is gone
            _remove(path)
        uv = _uv() if self.use_uv else None
        if uv is not None and self._runs(uv):
            work = Path(tempfile.mkdtemp(prefix=f"{_BUILD_PREFIX}{requirements.key}-", dir=self.root))
            try:
                self._uv([uv, "venv", "--quiet", "--clear", "--relocatable", "--python", self.interpreter, str(work)],
                         requirements, None, cancelled)
                for args in requirements.installs:
                    self._uv([uv, "pip", "install", "--quiet", "--python", str(work / "bin" / "python"),
                              *uv_arguments(args)], requirements, args, cancelled)
                _write_record(work, requirements)
                work.chmod(0o755)  # mkdtemp's 0700 would keep other users' runs out
                os.rename(work, path)
            finally:
                if work.exists():
                    shutil.rmtree(work, ignore_errors=True)
        else:
            # No pip inside either (as uv builds them): the runner's pip installs into it (pip >= 22.3).
            self._run([self.interpreter, "-m", "venv", "--without-pip", str(path)], requirements, None, cancelled)
            for args in requirements.installs:
                self._run([sys.executable, "-m", "pip", "--python", str(path / "bin" / "python"), "install",
                           "--quiet", "--disable-pip-version-check", *args], requirements, args, cancelled)
            _write_record(path, requirements)

    @staticmethod
    def _runs(uv: str) -> bool:
        try:
            return subprocess.run([uv, "--version"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def _uv(self, command: list[str], requirements: RequirementSet, args: Optional[tuple[str, ...]],
            cancelled: Optional[threading.Event]) -> None:
        """A uv command; when no index answers, again from uv's cache alone (and so every later
        one of this cache object: each would otherwise spend uv's retries first)."""
        if not self._offline:
            try:
                return self._run(command, requirements, args, cancelled)
            except TaskEnvironmentError as error:
                if not any(sign in str(error) for sign in _OFFLINE_SIGNS):
                    raise
                self._offline = True
        self._run([*command, "--offline"], requirements, args, cancelled)

    def _run(self, command: list[str], requirements: RequirementSet, args: Optional[tuple[str, ...]],
             cancelled: Optional[threading.Event]) -> None:
        env = {name: value for name, value in os.environ.items()
               if name not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "CONDA_PREFIX")}
        with tempfile.TemporaryFile() as output:
            try:
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                           cwd=self.root, env=env, start_new_session=True)
            except OSError as error:
                raise TaskEnvironmentError(f"cannot run {command[0]}: {error.strerror or error}") from None
            if self._on_process is not None:
                self._on_process(process, True)
            try:
                while True:
                    try:
                        returncode = process.wait(timeout=0.1)
                        break
                    except subprocess.TimeoutExpired:
                        if cancelled is not None and cancelled.is_set():
                            _kill_group(process)
                            raise TaskEnvironmentError("the environment build was stopped") from None
            finally:
                if self._on_process is not None:
                    self._on_process(process, False)
            if returncode != 0:
                output.seek(0)
                what = f"pip install {' '.join(args)}" if args is not None else "creating the environment"
                raise TaskEnvironmentError(f"cannot build the task environment ({what}): "
                                           f"{_one_line(output.read().decode(errors='replace'))}")

    # ---------------------------------------------------------------- listing and pruning

    def list(self) -> list[EnvironmentInfo]:
        """Every ready environment, least recently used first."""
        found = []
        if not self.root.is_dir():
            return found
        for path in sorted(self.root.iterdir()):
            if path.name.startswith(".") or not self._is_ready(path):
                continue
            try:
                record = json.loads((path / ENV_RECORD).read_text())
            except (OSError, ValueError):
                record = {}
            requirements = RequirementSet(record.get("python", "?"),
                                          tuple(tuple(args) for args in record.get("installs", [])))
            found.append(EnvironmentInfo(
                path.name, path, requirements.python, requirements.requirements, _size(path),
                _parse_time(record.get("created")), _mtime(path / _LAST_USED), self._in_use(path.name)))
        return sorted(found, key=lambda info: (info.last_used or info.created or _EPOCH, info.key))

    def _in_use(self, key: str) -> bool:
        lock = self.root / _LOCKS / f"{key}.lock"
        if not lock.exists():
            return False
        with _try_exclusive(lock) as free:
            return not free

    def prune(self, older_than: Optional[datetime.timedelta] = None, max_size: Optional[int] = None,
              dry_run: bool = False) -> list[EnvironmentInfo]:
        """Remove environments not used for ``older_than``, then the least recently used until all
        take at most ``max_size`` bytes; never one a run is using. Also what killed builds left.
        Returns what was (or, with ``dry_run``, would be) removed."""
        now = datetime.datetime.now(datetime.timezone.utc)
        environments = self.list()
        chosen: list[EnvironmentInfo] = []
        if older_than is not None:
            chosen = [info for info in environments
                      if now - (info.last_used or info.created or _EPOCH) >= older_than and not info.in_use]
        if max_size is not None:
            total = sum(info.size for info in environments if info not in chosen)
            for info in environments:
                if total <= max_size:
                    break
                if info not in chosen and not info.in_use:
                    chosen.append(info)
                    total -= info.size
        removed = []
        for info in chosen:
            if dry_run:
                removed.append(info)
                continue
            with _try_exclusive(self.root / _LOCKS / f"{info.key}.lock") as free:
                if free:  # not taken by a run since it was listed
                    _remove(info.path)
                    removed.append(info)
        if not dry_run and self.root.is_dir():
            for leftover in self.root.glob(f"{_BUILD_PREFIX}*"):
                key = leftover.name[len(_BUILD_PREFIX):].rsplit("-", 1)[0]
                with _try_exclusive(self.root / _LOCKS / f"{key}.lock") as free:
                    if free:
                        shutil.rmtree(leftover, ignore_errors=True)
        return removed


_EPOCH = datetime.datetime.fromtimestamp(0, datetime.timezone.utc)


def _flock(descriptor: int, mode: int, cancelled: Optional[threading.Event]) -> None:
    """``flock`` that a stopped task gives up: another process's build may take a while, and a
    worker thread blocked in ``flock`` would hold up the run's Ctrl-C until it ends. (``flock``
    itself, not ``filelock``'s FileLock: every run using an environment holds it shared, so that a
    prune passes it by, while one builder holds it exclusive; FileLock is exclusive only.)"""
    while True:
        try:
            fcntl.flock(descriptor, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if cancelled is not None and cancelled.wait(0.05):
                raise TaskEnvironmentError("the environment build was stopped") from None
            if cancelled is None:
                time.sleep(0.05)


@contextlib.contextmanager
def _try_exclusive(lock: Path) -> Iterator[bool]:
    try:
        descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)


def _write_record(path: Path, requirements: RequirementSet) -> None:
    record = {"key": requirements.key, "python": requirements.python,
              "installs": [list(args) for args in requirements.installs],
              "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    temporary = path / f"{ENV_RECORD}.tmp"
    temporary.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(temporary, path / ENV_RECORD)


def _remove(path: Path) -> None:
    """Renamed out of the way first: a reader never sees half an environment under its key."""
    trash = path.with_name(f"{_TRASH_PREFIX}{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, trash)
    except OSError:
        return
    shutil.rmtree(trash, ignore_errors=True)


def _touch(path: Path) -> None:
    try:
        path.touch()
        os.utime(path)
    except OSError:
        pass


def _mtime(path: Path) -> Optional[datetime.datetime]:
    try:
        return datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc)
    except OSError:
        return None


def _parse_time(text: Any) -> Optional[datetime.datetime]:
    try:
        return datetime.datetime.fromisoformat(text) if isinstance(text, str) else None
    except ValueError:
        return None


def _size(path: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for directory, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        pass
    process.wait()


def _one_line(text: str) -> str:
    """uv's (or pip's) message on one line: its box drawing and hints left out."""
    lines = []
    for line in text.splitlines():
        line = line.strip().lstrip("×╰─▶│ ").strip()
        if not line or line.startswith(("hint:", "help:", "Using ", "Resolved ", "Prepared ")):
            continue
        for prefix in ("error: ", "ERROR: ", "cause: "):
            line = line.removeprefix(prefix)
        lines.append(line.rstrip(":"))
    return "; ".join(lines)[:600] or "failed with no message"


_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MB": 1 << 20,
               "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30, "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}


def parse_size(text: str, option: str = "size") -> int:
    """Bytes of ``500M``, ``5G``, ``1.5GB``, ``1024`` (binary units).

    >>> parse_size("1.5G")
    1610612736
    """
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text or "")
    if match is None or match.group(2).upper() not in _SIZE_UNITS:
        raise InvalidArgumentError(f"{option}: {text!r} is not a size (e.g. 500M, 5G)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).upper()])
