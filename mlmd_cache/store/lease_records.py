"""The record of a lease: a ``mlmd_cache.Reservation`` context's properties, read from a context
already in hand (no store). Below both :mod:`.leases` (which writes and watches leases) and
:mod:`.recovery` (whose ``recover`` closes a holder whose lease ran out), so that neither imports the
other for it."""
from __future__ import annotations

import time
from typing import Optional

from ml_metadata.proto import metadata_store_pb2 as mlmd

__all__ = ["RESERVATION_CONTEXT_TYPE", "LEASE_EXPIRES_AT", "LEASE_SECONDS", "GENERATION", "DEFAULT_LEASE_SECONDS",
           "expires_at", "lease_of", "lapsed"]

RESERVATION_CONTEXT_TYPE = "mlmd_cache.Reservation"
LEASE_EXPIRES_AT = "lease_expires_at"
LEASE_SECONDS = "lease_seconds"
GENERATION = "generation"
DEFAULT_LEASE_SECONDS = 30.0


def expires_at(context: mlmd.Context) -> float:
    """When the lease runs out (seconds since the epoch, the holder's clock); 0: released."""
    value = context.custom_properties.get(LEASE_EXPIRES_AT)
    return value.double_value if value is not None else 0.0


def lease_of(context: mlmd.Context) -> float:
    """The holder's lease (every version writes it; a context without it counts as the default)."""
    value = context.custom_properties.get(LEASE_SECONDS)
    return value.double_value if value is not None and value.double_value > 0 else DEFAULT_LEASE_SECONDS


def lapsed(context: mlmd.Context, now: Optional[float] = None) -> Optional[float]:
    """Seconds since a reservation's lease ran out, when that was a whole lease ago or more by this
    host's clock (else None): for a single look (``recover``), which cannot watch the beats."""
    expiry, lease = expires_at(context), lease_of(context)
    late = (time.time() if now is None else now) - expiry
    return late if expiry > 0 and late >= lease else None
