"""The record of a lease: a ``mlmd_cache.Reservation`` context's name and properties, and the reads
that find a key's newest reservation (plain MLMD calls, or one call of the cache service).

Below both :mod:`mlmd_cache.cache.leases` (which writes and watches leases) and
:mod:`mlmd_cache.cache.recovery` (whose ``recover`` closes a holder whose lease ran out), so that
neither imports the other for it; in the store, as the cache service's client
(:mod:`.cache_service`) falls back to these reads and ``mlmd-cache serve`` runs them itself."""
from __future__ import annotations

import time
from typing import Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from . import records

__all__ = ["RESERVATION_CONTEXT_TYPE", "LEASE_EXPIRES_AT", "LEASE_SECONDS", "GENERATION", "DEFAULT_LEASE_SECONDS",
           "expires_at", "lease_of", "lapsed", "reservation_name", "newest", "read_newest"]

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


def reservation_name(pipeline: str, fingerprint: str, generation: int) -> str:
    """The context name of a key's reservation ``generation`` (fixed length, as the cache-source one)."""
    return f"{records.cache_source_context_name(pipeline, fingerprint)}.{generation}"


def _read(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str, generation: int
          ) -> Optional[mlmd.Context]:
    return store.get_context_by_type_and_name(RESERVATION_CONTEXT_TYPE, reservation_name(pipeline, fingerprint,
                                                                                          generation))


def newest(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str, known: int = 0
           ) -> tuple[int, Optional[mlmd.Context]]:
    """The newest generation of the key's reservation and its context ((0, None) when it was never
    reserved), galloping up from ``known`` (a generation that exists) and bisecting back."""
    low = max(known, 0)
    low_context = _read(store, pipeline, fingerprint, low) if low else None
    if low and low_context is None:  # not there after all: look from the start
        low = 0
    step = 1
    high = low + step
    high_context = _read(store, pipeline, fingerprint, high)
    while high_context is not None:
        low, low_context = high, high_context
        step *= 2
        high = low + step
        high_context = _read(store, pipeline, fingerprint, high)
    while high - low > 1:  # low exists (or is 0), high does not
        middle = (low + high) // 2
        middle_context = _read(store, pipeline, fingerprint, middle)
        if middle_context is None:
            high = middle
        else:
            low, low_context = middle, middle_context
    return low, low_context


def read_newest(store: metadata_store.MetadataStore, pipeline: str, fingerprint: str, known: int = 0, *,
                via_service: bool = True) -> tuple[int, Optional[mlmd.Context], list[mlmd.Execution]]:
    """:func:`newest` and the executions associated with it (its holder): over ``serve``, one
    ``Reservation`` call of its cache service (:mod:`mlmd_cache.server.cache_service`), unless
    ``via_service`` is false or the server has none."""
    service = getattr(store, "cache_service", None) if via_service else None
    if service is not None:
        return service.reservation(pipeline, fingerprint, known)
    generation, context = newest(store, pipeline, fingerprint, known)
    holders = store.get_executions_by_context(context.id) if context is not None else []
    return generation, context, holders
