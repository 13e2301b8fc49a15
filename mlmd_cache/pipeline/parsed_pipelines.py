"""Compiled pipelines parsed once: :func:`load_pipeline` keeps what
:func:`mlmd_cache.pipeline.spec.load_pipeline` made of a file, keyed by the file's content, so that the
next ``run-pipeline`` or ``plan`` of the same file skips PyYAML's import, the YAML parse, the checks
and protobuf's pure-Python ``json_format.ParseDict`` (~35 ms of a cached re-run of 40 tasks) and reads
the ``PipelineSpec`` and its executors as protobuf's binary encoding instead.

An entry is a file ``<key>.pb`` in ``$MLMD_CACHE_PIPELINE_DIR``, else
``$XDG_CACHE_HOME/mlmd-cache/pipelines`` (``~/.cache/mlmd-cache/pipelines``). The key is the SHA-256
of the pipeline file's bytes and of everything else the parse depends on: this entry format,
mlmd-cache's version and the source of the modules that parse and check a pipeline (an edited
checkout is a new key), protobuf's version and the installed kfp-pipeline-spec's descriptor (what a
newer SDK's fields are checked against). Only a file that loaded without error is kept: a bad file is
parsed, and told, every time. An entry is written to a temporary file in the directory and renamed
into place (a reader never sees half of one); it carries the SHA-256 of its body and the key it was
written for, and anything that does not match or does not decode (a torn or edited entry) is ignored
and written again. Nothing here is needed: when the directory cannot be made or written, pipelines are
parsed as before, and so they are when the directory is not this user's or others may write to it.
The directory keeps at most :data:`MAX_ENTRIES` entries, the least recently written removed first.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

from .. import _protobuf
from .._version import __version__
from ..defaults import user_cache_dir
from ..key import json_values
from ..store import ids
from . import compiled, expressions, platform, spec as pipeline_spec
from .compiled import CompiledPipeline, ExecutorSpec, pipeline_spec_pb2

__all__ = ["load_pipeline", "cache_directory", "map_orders", "MAX_ENTRIES"]

FORMAT = b"mlmd-cache parsed pipeline 1\n"
MAX_ENTRIES = 256
_DIGEST = hashlib.sha256().digest_size


def cache_directory() -> Path:
    """``$MLMD_CACHE_PIPELINE_DIR``, else ``$XDG_CACHE_HOME/mlmd-cache/pipelines``."""
    return user_cache_dir("MLMD_CACHE_PIPELINE_DIR", "pipelines")


def _environment() -> Optional[bytes]:
    """What a parse depends on besides the file (see the module's doc), hashed; None when a module's
    source cannot be read (then nothing is cached)."""
    from google.protobuf import __version__ as protobuf_version

    digest = hashlib.sha256(FORMAT)
    digest.update(f"{__version__}\0{protobuf_version}\0{sys.version_info[:2]}\0".encode())
    digest.update(pipeline_spec_pb2.DESCRIPTOR.serialized_pb)
    for module in (pipeline_spec, compiled, platform, expressions, json_values, ids, _protobuf, sys.modules[__name__]):
        try:
            with open(module.__file__, "rb") as source:
                digest.update(source.read())
        except (OSError, TypeError):
            return None
    return digest.digest()


def load_pipeline(path: str) -> CompiledPipeline:
    """:func:`mlmd_cache.pipeline.spec.load_pipeline` (the same result, the same errors), from the
    parsed-pipeline cache when this file's bytes were loaded before."""
    if str(path).endswith(".py"):  # refused by name, whatever the bytes
        return pipeline_spec.load_pipeline(path)
    try:
        with open(path, "rb") as file:
            data = file.read()
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError, MemoryError):
        return pipeline_spec.load_pipeline(path)  # it says what is wrong, in its words
    environment = _environment()
    if environment is None:
        return pipeline_spec.load_pipeline(path, text)
    directory = cache_directory()
    if not _trusted(directory):
        return pipeline_spec.load_pipeline(path, text)
    key = hashlib.sha256(environment + hashlib.sha256(data).digest()).hexdigest()
    entry = directory / f"{key}.pb"
    cached = _read(entry, key)
    if cached is not None:
        return cached
    pipeline = pipeline_spec.load_pipeline(path, text)  # from the bytes hashed: never another version's
    _write(entry, key, pipeline)
    return pipeline


def _trusted(directory: Path) -> bool:
    """Whether the cache may be used: its directory is this user's and no one else may write to it (an
    entry is a pipeline the runner runs: another user must not be able to put theirs under a file's
    key). A directory not there yet is made, 0700, by the first write."""
    try:
        status = os.stat(directory)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return status.st_uid == os.getuid() and not status.st_mode & 0o022


def _read(entry: Path, key: str) -> Optional[CompiledPipeline]:
    """The pipeline of an intact entry written for ``key``, else None."""
    try:
        with open(entry, "rb") as file:
            data = file.read()
    except OSError:
        return None
    try:
        if not data.startswith(FORMAT):
            return None
        digest, body = data[len(FORMAT):len(FORMAT) + _DIGEST], data[len(FORMAT) + _DIGEST:]
        if hashlib.sha256(body).digest() != digest:
            return None
        size = int.from_bytes(body[:4], "big")
        header = json.loads(body[4:4 + size])
        if header["key"] != key:
            return None
        offset = 4 + size
        spec_size = header["spec"]
        spec = pipeline_spec_pb2.PipelineSpec.FromString(body[offset:offset + spec_size])
        offset += spec_size
        executors = {}
        for label, executor_size in header["executors"]:
            executors[label] = ExecutorSpec.FromString(body[offset:offset + executor_size])
            offset += executor_size
        if offset != len(body):
            return None
        timeouts = {label: float(seconds) for label, seconds in header["timeouts"].items()}
        return CompiledPipeline(spec, executors, timeouts)
    except Exception:  # any entry that does not decode is no entry: the file is parsed again
        return None


def map_orders(message: Any) -> list[list[str]]:
    """The iteration order of every map (a ``Struct``'s fields too) in a message, depth first."""
    orders = []
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            orders.append(list(value))
            if field.message_type.fields_by_name["value"].message_type is not None:
                for item in value.values():
                    orders += map_orders(item)
        else:
            for item in (value if _protobuf.is_repeated(field) else (value,)):
                orders += map_orders(item)
    return orders


def _encode(key: str, pipeline: CompiledPipeline) -> Optional[bytes]:
    """The entry of ``pipeline``; None when its decoding would not iterate a map in the order the parsed
    pipeline does. (The order of a protobuf map follows the order its keys were inserted in, and the
    runner goes through tasks, components and executors in it: a hit must be the parse, order and all.
    Maps are encoded with their keys sorted, the order KFP's compiler writes them in, so that a
    compiled pipeline's entry decodes as ParseDict made it; a hand-written file may not.)"""
    spec = pipeline.spec.SerializeToString(deterministic=True)
    if map_orders(pipeline_spec_pb2.PipelineSpec.FromString(spec)) != map_orders(pipeline.spec):
        return None
    executors = [(label, executor.SerializeToString(deterministic=True)) for label, executor in pipeline.executors.items()]
    for (_, blob), executor in zip(executors, pipeline.executors.values()):
        if map_orders(ExecutorSpec.FromString(blob)) != map_orders(executor):
            return None
    header = json.dumps({"key": key, "spec": len(spec), "executors": [[label, len(blob)] for label, blob in executors],
                         "timeouts": dict(pipeline.timeouts)}).encode()
    body = b"".join([len(header).to_bytes(4, "big"), header, spec, *(blob for _, blob in executors)])
    return FORMAT + hashlib.sha256(body).digest() + body


def _write(entry: Path, key: str, pipeline: CompiledPipeline) -> None:
    """Write the entry whole or not at all (a temporary file renamed into place); never fails."""
    temporary = entry.with_name(f".{entry.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        data = _encode(key, pipeline)
        if data is None:
            return
        entry.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(descriptor, "wb") as file:
                file.write(data)
            os.replace(temporary, entry)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _prune(entry.parent)
    except (OSError, ValueError, OverflowError):  # a read-only or full disk, an unencodable message: no entry
        pass


def _prune(directory: Path) -> None:
    """Keep the :data:`MAX_ENTRIES` most recently written entries."""
    entries = []
    with os.scandir(directory) as scan:
        for item in scan:
            if item.name.endswith(".pb") and not item.name.startswith("."):
                try:
                    entries.append((item.stat().st_mtime_ns, item.path))
                except OSError:
                    pass
    if len(entries) <= MAX_ENTRIES:
        return
    for _, old in sorted(entries)[:len(entries) - MAX_ENTRIES]:
        try:
            os.unlink(old)
        except OSError:
            pass
