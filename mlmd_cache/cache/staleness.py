"""Max cache staleness: a source older than a limit is not reused (KFP v1's ``max_cache_staleness``).

KFP v2 has no such limit (kubeflow/pipelines#6554). As in KFP v1, a source's age is counted from
when its execution started (MLMD's ``create_time_since_epoch``), so a long task's result is as old
as the inputs it read.

>>> import datetime
>>> from ml_metadata.proto import metadata_store_pb2 as mlmd
>>> source = mlmd.Execution(id=12, create_time_since_epoch=0)
>>> staleness_problem(source, datetime.timedelta(days=7), now=8 * 86400)
'source execution 12 is 8d old, older than the maximum cache staleness of 7d'
>>> staleness_problem(source, datetime.timedelta(days=7), now=6 * 86400) is None
True
"""
from __future__ import annotations

import datetime
import time
from typing import Optional

from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..durations import format_duration

__all__ = ["staleness_problem", "source_age"]


def source_age(execution: mlmd.Execution, now: Optional[float] = None) -> datetime.timedelta:
    """How long ago ``execution`` started (``now`` in seconds since the epoch; default: the clock)."""
    now = time.time() if now is None else now
    return datetime.timedelta(seconds=max(0.0, now - execution.create_time_since_epoch / 1000))


def staleness_problem(execution: mlmd.Execution, max_staleness: Optional[datetime.timedelta],
                      now: Optional[float] = None) -> Optional[str]:
    """Why a source is too old to reuse under ``max_staleness`` (None: no limit), or None."""
    if max_staleness is None:
        return None
    age = source_age(execution, now)
    if age <= max_staleness:
        return None
    shown = format_duration(datetime.timedelta(seconds=int(age.total_seconds())))
    return (f"source execution {execution.id} is {shown} old, older than the maximum cache staleness of "
            f"{format_duration(max_staleness)}")
