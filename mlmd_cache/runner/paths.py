"""Directory names under the pipeline root for run, task and output names, which may hold anything.

A name from the command line or the IR becomes one directory name that cannot leave the folder it
is put in: ``/``, ``\\``, ``%``, NUL and other control characters are percent-encoded, ``.`` and
``..`` are encoded as a whole, and a name longer than a file system takes (255 bytes) is cut and
given a digest of the whole name, so that two long names stay apart. Names that are already plain
(KFP's own task and output names) stay as they are. The real names stay in MLMD.

>>> safe_name("train-model")
'train-model'
>>> safe_name("../../x")
'..%2F..%2Fx'
>>> safe_name("..")
'%2E%2E'
>>> task_directory("for-loop-2/0/train")
PurePosixPath('for-loop-2/0/train')
"""
from __future__ import annotations

import hashlib
from pathlib import PurePosixPath

__all__ = ["safe_name", "task_directory", "MAX_NAME_BYTES"]

MAX_NAME_BYTES = 255  # NAME_MAX of ext4, xfs, btrfs and tmpfs
_KEEP_BYTES = 200  # of a cut name, leaving room for "~" and 16 hex digits of its digest


def _encoded(character: str) -> str:
    if character in "/\\%" or ord(character) < 0x20 or ord(character) == 0x7F or 0xD800 <= ord(character) <= 0xDFFF:
        return "".join(f"%{byte:02X}" for byte in character.encode("utf-8", "surrogatepass"))
    return character


def safe_name(name: str) -> str:
    """One directory name for ``name``, never ``.``, ``..``, empty, or with a path separator."""
    if name in ("", ".", ".."):
        return "%2E" * len(name) or "%"
    encoded = "".join(_encoded(character) for character in name)
    if len(encoded.encode("utf-8")) <= MAX_NAME_BYTES:
        return encoded
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    cut = encoded.encode("utf-8")[:_KEEP_BYTES].decode("utf-8", "ignore")
    if "%" in cut[-2:]:  # no half escape at the cut
        cut = cut[:cut.rindex("%")]
    return f"{cut}~{digest}"


def task_directory(report_path: str) -> PurePosixPath:
    """The relative directory of a task from its report path (``loop/0/task``): one safe name per level."""
    return PurePosixPath(*(safe_name(part) for part in report_path.split("/") if part != "")) \
        if report_path.strip("/") else PurePosixPath(safe_name(report_path))
