"""``mlmd_cache.connection``, the module path of :func:`connect` before the packages: it is
:mod:`mlmd_cache.store.connection` itself under this name (every name, and what a test patches on
it, is that module's)."""
from __future__ import annotations

import sys

from .store import connection as _connection

sys.modules[__name__] = _connection
