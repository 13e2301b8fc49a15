"""Artifact URIs on this machine: which name a local file (a plain path, ``file://``) and which do not
(gs://, s3://, ...). Below both :mod:`.sources` (a cached output's file must still exist) and
:mod:`.digests` (a local output's bytes are hashed)."""
from __future__ import annotations

import os
from typing import Optional
from urllib.parse import unquote, urlparse

__all__ = ["local_path"]


def local_path(uri: str) -> Optional[str]:
    """The file a URI names on this machine (plain paths and ``file://``), None for remote schemes
    (gs://, s3://, ...)."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return unquote(parsed.path)
    if parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        return uri
    return None
