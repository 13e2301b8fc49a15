"""Content digests of output artifacts, and cache keys that name input artifacts by content.

Two opt-ins, both off by default (then every record and fingerprint is KFP's own):

- ``digest=True`` (``run-pipeline --digest``): at publish, each output artifact with a local URI
  gets its SHA-256 and size as custom properties (:data:`DIGEST`, :data:`SIZE`); at lookup, a
  source whose recorded outputs no longer hash to what was recorded is not valid
  (:func:`artifact_change`). Remote URIs (``gs://``, ``s3://``, ...) are neither hashed nor
  checked: their bytes are not on this machine.
- ``key_by_content=True`` (``--key-by-content``, implies digests): input artifacts enter the cache
  key by digest instead of MLMD ID (:func:`content_fingerprint`), so a producer that re-ran (caching
  off, or its source invalidated) and wrote identical bytes leaves its consumers' keys unchanged
  (early cutoff, as Bazel does). Such fingerprints differ from KFP's by design: the execution
  records :data:`KEY_MODE` = ``"content"``, and the fingerprint is salted so that the two modes
  never share a ``mlmd_cache.CacheSource`` context.

The digest text names the kind of entry, so a file never matches a directory:

- a regular file: ``sha256:<hex>``, the SHA-256 of its bytes (what ``sha256sum`` prints);
- a directory: ``sha256-tree:<hex>``, the SHA-256 of :data:`TREE_HEADER` followed by one record per
  entry below it (not the directory itself), in the order of their relative paths as bytes
  (``/``-separated, file-system encoding), each record being NUL-terminated fields:
  ``f<NUL>path<NUL>size<NUL>sha256-hex<NUL>`` for a regular file,
  ``d<NUL>path<NUL>`` for a directory (so empty directories count),
  ``l<NUL>path<NUL>target<NUL>`` for a symbolic link (recorded as a link, never followed),
  ``o<NUL>path<NUL>`` for anything else (a FIFO, a socket, a device: never opened).
  No path or link target can hold NUL and each kind has a fixed number of fields, so the encoding
  is unambiguous; a file's own digest enters its record, which makes it Merkle-style;
- a symbolic link given as the artifact itself: ``sha256-link:<hex>``, the SHA-256 of its target.

The size is the sum of the regular files' sizes.

>>> import os, tempfile
>>> folder = tempfile.mkdtemp()
>>> with open(os.path.join(folder, "data.txt"), "wb") as f:
...     _ = f.write(b"hello\\n")
>>> digest_path(os.path.join(folder, "data.txt"))
Digest(text='sha256:5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03', size=6, files=1)
>>> digest_path(folder).text.startswith("sha256-tree:")
True
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import stat
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from google.protobuf import json_format
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import records
from ..errors import DigestError
from ..key.gojson import go_marshal
from ..key.cache_key import CacheKey, CacheKeyMessage
from ..terminal import printable
from .uris import local_path

__all__ = ["Digest", "digest_path", "digest_file", "record_digest", "recorded_digest", "artifact_change",
           "input_digests", "remember", "content_fingerprint", "DIGEST", "SIZE", "KEY_MODE", "KEY_MODE_ID", "KEY_MODE_CONTENT",
           "TREE_HEADER"]

log = logging.getLogger("mlmd_cache")

# Artifact custom properties.
DIGEST = "mlmd_cache_digest"
SIZE = "mlmd_cache_size"
# Execution custom property: how its fingerprint names input artifacts (absent: by MLMD ID, as KFP).
KEY_MODE = "mlmd_cache_key_mode"
KEY_MODE_ID = "id"
KEY_MODE_CONTENT = "content"

TREE_HEADER = b"mlmd-cache tree v1\x00"
# Salts a content-mode fingerprint: even a task without input artifacts (whose key would otherwise
# be KFP's very key) gets a fingerprint, and so a CacheSource context, of its own mode.
_CONTENT_SALT = b"mlmd-cache content key v1\x00"

# 1 MiB reads: large enough that the per-call cost vanishes against SHA-256 (hashlib releases the
# GIL for the update), small enough to stay in L2 cache. Measured by scripts/bench_digest.py.
_BUFFER = 1 << 20


@dataclass(frozen=True)
class Digest:
    """The digest of a file, directory or link: ``text`` as recorded (``sha256:...``,
    ``sha256-tree:...``, ``sha256-link:...``), the total size of its regular files, and their number."""

    text: str
    size: int
    files: int = 0


def digest_file(path: str | os.PathLike) -> tuple[str, int]:
    """The SHA-256 (hex) and size of the regular file at ``path``, read in 1 MiB blocks. A path that
    is a symbolic link is refused (``O_NOFOLLOW``): links are digested as links, by the caller."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    descriptor = os.open(path, flags)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(f"{os.fspath(path)} is not a regular file")
        if hasattr(os, "posix_fadvise"):  # a cold read streams: read ahead more, keep less
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        digest = hashlib.sha256()
        view = memoryview(bytearray(_BUFFER))
        size = 0
        with io.FileIO(descriptor, closefd=False) as file:
            while True:
                count = file.readinto(view)
                if not count:
                    break
                digest.update(view[:count])
                size += count
        return digest.hexdigest(), size
    finally:
        os.close(descriptor)


def _tree(root: str) -> Digest:
    entries: list[tuple[bytes, os.DirEntry]] = []
    pending = [(os.fsencode(root), b"")]
    while pending:
        directory, prefix = pending.pop()
        with os.scandir(directory) as listing:
            for entry in listing:
                relative = prefix + os.fsencode(entry.name)
                entries.append((relative, entry))
                if entry.is_dir(follow_symlinks=False):
                    pending.append((os.fsencode(entry.path), relative + b"/"))
    entries.sort(key=lambda pair: pair[0])
    tree = hashlib.sha256(TREE_HEADER)
    size = files = 0
    for relative, entry in entries:
        if entry.is_symlink():
            tree.update(b"l\x00" + relative + b"\x00" + os.fsencode(os.readlink(entry.path)) + b"\x00")
        elif entry.is_dir(follow_symlinks=False):
            tree.update(b"d\x00" + relative + b"\x00")
        elif entry.is_file(follow_symlinks=False):
            hexdigest, length = digest_file(entry.path)
            tree.update(b"f\x00" + relative + b"\x00" + str(length).encode() + b"\x00" + hexdigest.encode() + b"\x00")
            size, files = size + length, files + 1
        else:
            tree.update(b"o\x00" + relative + b"\x00")
    return Digest("sha256-tree:" + tree.hexdigest(), size, files)


def digest_path(path: str | os.PathLike) -> Digest:
    """The digest of whatever is at ``path`` (see the module docstring); the path itself is not
    followed if it is a symbolic link. Raises ``OSError`` (``FileNotFoundError`` when nothing is there)."""
    path = os.fspath(path)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        return Digest("sha256-link:" + hashlib.sha256(os.fsencode(os.readlink(path))).hexdigest(), 0)
    if stat.S_ISDIR(info.st_mode):
        return _tree(path)
    if stat.S_ISREG(info.st_mode):
        hexdigest, size = digest_file(path)
        return Digest("sha256:" + hexdigest, size, 1)
    raise DigestError(f"{path} is neither a file, a directory nor a link")


def record_digest(artifact: mlmd.Artifact, what: str) -> Optional[Digest]:
    """Set the digest and size of a (not yet stored) artifact with a local URI as its custom
    properties; None, and nothing set, for a remote URI or a path where nothing is (KFP's own rule
    already refuses such a source). ``what`` names the output in the :class:`DigestError` raised
    when the bytes cannot be read."""
    path = local_path(artifact.uri)
    if path is None:
        return None
    try:
        digest = digest_path(path)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DigestError(f"{what}: cannot digest {path}: {error.strerror or error}") from None
    except DigestError as error:
        raise DigestError(f"{what}: {error}") from None
    artifact.custom_properties[DIGEST].string_value = digest.text
    if digest.size < 2 ** 31:
        artifact.custom_properties[SIZE].int_value = digest.size
    else:  # MLMD's MySQL schema holds 32-bit ints; a double is exact up to 2**53 bytes
        artifact.custom_properties[SIZE].double_value = float(digest.size)
    return digest


def recorded_digest(artifact: mlmd.Artifact) -> Optional[str]:
    """The digest recorded on an artifact, or None."""
    value = records.read_property(artifact, DIGEST)
    return value if isinstance(value, str) and value else None


def _kind(text: str) -> str:
    return {"sha256": "a file", "sha256-tree": "a directory", "sha256-link": "a symbolic link"}.get(
        text.partition(":")[0], "something else")


def _short(text: str) -> str:
    scheme, _, hexdigest = text.partition(":")
    return f"{scheme}:{hexdigest[:12]}"


def remember(verified: dict[int, str], artifacts: Mapping[str, Sequence[mlmd.Artifact]]) -> None:
    """Add the recorded digests of local ``artifacts`` (just published, or just checked by a
    lookup) to ``verified``: the run's consumers key by them without hashing again."""
    for listed in artifacts.values():
        for artifact in listed:
            recorded = recorded_digest(artifact)
            if recorded is not None and local_path(artifact.uri) is not None:
                verified[artifact.id] = recorded


def artifact_change(artifact: mlmd.Artifact) -> Optional[str]:
    """Why an artifact's local bytes are no longer the ones recorded, or None: they hash to the
    recorded digest, or there is nothing to check (no digest recorded, a remote URI).

    The bytes are hashed again on every check. A cheaper test of (inode, size, mtime, ctime) was
    considered and left out, as not exact: a write in the same timestamp tick as the recording
    (coarse kernel clocks, 1-2 s granularity on some file systems, server clocks on NFS) or through
    a shared writable mmap leaves those unchanged until later. Only a size that differs is taken as
    a change without hashing, which is exact."""
    recorded = recorded_digest(artifact)
    path = local_path(artifact.uri)
    if recorded is None or path is None:
        return None
    changed = f"output artifact {artifact.id}'s bytes changed since it was recorded"
    try:
        info = os.lstat(path)
        now_kind = ("a directory" if stat.S_ISDIR(info.st_mode) else "a symbolic link" if stat.S_ISLNK(info.st_mode)
                    else "a file" if stat.S_ISREG(info.st_mode) else "something else")
        if now_kind != _kind(recorded):
            return f"{changed} ({_kind(recorded)} then, {now_kind} now)"
        size = records.read_property(artifact, SIZE)
        if stat.S_ISREG(info.st_mode) and isinstance(size, (int, float)) and int(size) != info.st_size:
            return f"{changed} ({int(size)} bytes then, {info.st_size} now)"
        now = digest_path(path).text
    except FileNotFoundError:
        return f"output artifact {artifact.id}'s file {path} no longer exists"
    except (OSError, DigestError) as error:
        return f"output artifact {artifact.id}'s file {path} cannot be read to check its digest: " \
               f"{getattr(error, 'strerror', None) or error}"
    if now != recorded:
        return f"{changed} ({_short(recorded)} then, {_short(now)} now)"
    return None


def input_digests(store: metadata_store.MetadataStore, artifact_ids: Mapping[str, Sequence[int]],
                  verified: Optional[dict[int, str]] = None) -> dict[str, list[str]]:
    """The content names of a task's input artifacts, by input name, in order: what
    :func:`content_fingerprint` puts into the key in place of their MLMD IDs.

    ``verified`` maps artifact IDs to digests already known to be right in this run (published by it,
    or checked at a lookup); it is extended with what is hashed here. Any other artifact with a local
    URI is hashed now, whatever it records (an artifact given by ID may have changed since its digest
    was recorded, and an importer's records none). A remote URI gives its recorded digest, or, without
    one, its ID (``id:17``), logged as a warning: such an input keys by identity, as in KFP."""
    verified = verified if verified is not None else {}
    wanted = sorted({artifact_id for ids in artifact_ids.values() for artifact_id in ids} - set(verified))
    artifacts = {artifact.id: artifact for artifact in store.get_artifacts_by_id(wanted)} if wanted else {}
    for artifact_id in wanted:
        artifact = artifacts.get(artifact_id)
        if artifact is None:
            continue  # not in the store: the task's INPUT events refuse it with a NotFoundError
        path = local_path(artifact.uri)
        if path is not None:
            try:
                verified[artifact_id] = digest_path(path).text
            except FileNotFoundError:
                verified[artifact_id] = f"id:{artifact_id}"  # gone: no source holds it, nothing to name
                continue
            except OSError as error:
                raise DigestError(f"input artifact {artifact_id}: cannot digest {path}: "
                                  f"{error.strerror or error}") from None
            except DigestError as error:
                raise DigestError(f"input artifact {artifact_id}: {error}") from None
            continue
        recorded = recorded_digest(artifact)
        if recorded is not None:
            verified[artifact_id] = recorded
        else:
            # the URI is stored text, escaped for the terminal
            log.warning("input artifact %d (%s) has no digest and is not local: it enters the cache key by its "
                        "MLMD ID", artifact_id, printable(artifact.uri))
            verified[artifact_id] = f"id:{artifact_id}"
    return {name: [verified.get(artifact_id, f"id:{artifact_id}") for artifact_id in ids]
            for name, ids in artifact_ids.items()}


def content_fingerprint(key: CacheKey, digests: Mapping[str, Sequence[str]], custom: str = "") -> str:
    """The fingerprint of ``key`` with its input artifacts named by ``digests`` (see
    :func:`input_digests`) instead of MLMD IDs: KFP's canonical bytes of that key, salted.
    ``custom`` is KFP's fingerprint of a custom cache key, which names no inputs; it is salted alike."""
    if custom:
        return hashlib.sha256(_CONTENT_SALT + b"custom\x00" + custom.encode()).hexdigest()
    message = CacheKeyMessage()
    message.CopyFrom(key.message)
    for name in list(message.inputArtifactNames):
        message.inputArtifactNames[name].ClearField("artifactNames")
        message.inputArtifactNames[name].artifactNames.extend(digests.get(name, ()))
    canonical = go_marshal(json_format.MessageToDict(message))
    return hashlib.sha256(_CONTENT_SALT + canonical).hexdigest()
