"""RUNNING records whose runner is gone: how to tell, and how to close them.

A runner that is killed (``kill -9``, a lost machine) cannot mark its executions FAILED: they stay
RUNNING for ever. So every RUNNING execution the runner writes (task and DAG) carries a custom
property ``runner`` naming the process that runs it::

    host:build-7 boot:802bc29b-0353-4bb7-9ae3-e50dbe6b9779 pidns:4026531836 pid:4242 start:1893307

``start`` is the process's start time in clock ticks since boot (``/proc/<pid>/stat``), so that a
PID reused by another process does not count as the runner; ``pidns`` is the inode of its PID
namespace (``/proc/self/ns/pid``), as a PID means a process only within one namespace: a container,
a CI job or ``unshare --pid`` on the same host sees other PIDs, and must not take a live runner's
missing PID for its end. Only on the same host, boot and PID namespace is that record checked
exactly (:func:`runner_status`); a different boot ID means the machine restarted, so the runner is
gone; anywhere else (another host, another PID namespace, a record of an older version without
``pidns`` whose PID is not visible here) the runner is *unknown*: nothing about it is decided from
a PID, only from its lease of a cache key (:mod:`.leases`: recover closes a holder whose lease
expired a whole lease ago) or an age (``--older-than``). :func:`find_interrupted` lists what is
gone, :func:`mark_failed` marks it FAILED with the reason in ``interrupted_reason`` and the time in
``recovered_at``. A FAILED execution is never a
cache source (:meth:`mlmd_cache.ExecutionCache.find_source` takes COMPLETE ones only), so a re-run
executes the task anew.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from ml_metadata import errors as mlmd_errors
from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2 as mlmd

from ..store import mlmd_compat, records
from ..durations import parse_duration, rough_duration
from ..store.lease_records import RESERVATION_CONTEXT_TYPE, lapsed

__all__ = ["RUNNER", "INTERRUPTED_REASON", "RECOVERED_AT", "ALIVE", "GONE", "UNKNOWN", "runner_identity",
           "runner_status", "runner_gone", "describe_runner", "running_executions", "parse_duration", "Interrupted", "Recovery", "find_interrupted", "mark_failed",
           "recover"]

RUNNER = "runner"
INTERRUPTED_REASON = "interrupted_reason"
RECOVERED_AT = "recovered_at"

ALIVE, GONE, UNKNOWN = "alive", "gone", "unknown"

_BOOT_ID = "/proc/sys/kernel/random/boot_id"


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as file:
            return file.read()
    except OSError:
        return ""


def _boot_id() -> str:
    return _read(_BOOT_ID).strip()


def _pid_namespace() -> str:
    """The inode of this process's PID namespace, or "-" where there is none to read (not Linux)."""
    try:
        return str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        return "-"


def _stat(pid: int) -> Optional[tuple[str, str]]:
    """(state letter, start time in ticks) of a process, from ``/proc/<pid>/stat``; None if there is none.

    Read here rather than through psutil: the ``runner`` record keeps the kernel's start ticks as
    they are (psutil turns them into a float of seconds since the epoch, which a changed clock or
    boot time moves), every stored record holds them in this form, and a runner's PID namespace and
    boot ID, which psutil does not give, are read from /proc beside them anyway."""
    text = _read(f"/proc/{pid}/stat")
    # the command name (field 2) is in parentheses and may hold spaces or ')': split after the last one
    fields = text[text.rfind(")") + 2:].split() if ")" in text else []
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # fields 3 (state) and 22 (starttime) of proc(5)


_identities: dict[int, str] = {}  # by PID: a forked child is another runner


def runner_identity(pid: Optional[int] = None) -> str:
    """The ``runner`` property of a process (default: this one)."""
    pid = os.getpid() if pid is None else pid
    if pid not in _identities:
        stat = _stat(pid)
        # a process of this namespace: another PID (a child) is in it too, or in one made under it,
        # which sees none of ours; a child's record is written by that child anyway
        _identities[pid] = (f"host:{socket.gethostname()} boot:{_boot_id() or '-'} pidns:{_pid_namespace()} "
                            f"pid:{pid} start:{stat[1] if stat else '-'}")
    return _identities[pid]


def _parse_runner(runner: str) -> Optional[dict[str, str]]:
    parts = dict(part.partition(":")[::2] for part in str(runner).split())
    if not {"host", "boot", "pid", "start"} <= set(parts) or not parts["pid"].isdigit():
        return None
    return parts


def runner_status(runner: Optional[str]) -> str:
    """:data:`ALIVE`, :data:`GONE` or :data:`UNKNOWN` for a ``runner`` property. Gone is said only
    where it is certain: the same host after a restart (another boot ID), or the same host, boot
    and PID namespace with no such process (or another one under its PID, or a zombie: dead, not
    yet reaped). A runner that cannot be seen from here (no record, another host, another PID
    namespace, or a record without ``pidns`` whose process is not visible) is unknown."""
    parts = _parse_runner(runner) if runner else None
    if parts is None or parts["host"] != socket.gethostname():
        return UNKNOWN
    boot = _boot_id()
    if boot and parts["boot"] != "-" and parts["boot"] != boot:
        return GONE  # the machine restarted since
    namespace, theirs = _pid_namespace(), parts.get("pidns", "-")
    # Without namespaces to read on either side (not Linux) a PID means one process on the host.
    same_namespace = theirs == namespace and (theirs != "-" or sys.platform != "linux")
    pid = int(parts["pid"])
    stat = _stat(pid)
    if stat is None:  # no such process here, or /proc hides it (hidepid, not Linux): then whether the PID exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return GONE if same_namespace else UNKNOWN
        except OSError:  # it exists, as another user's
            pass
        return ALIVE if same_namespace else UNKNOWN
    state, start = stat
    if parts["start"] != "-" and start == parts["start"] and state not in ("Z", "X"):
        # the very process (a PID and start tick of another namespace's process matching both is
        # a coincidence a record of an older version, without pidns, is allowed)
        return ALIVE if same_namespace or theirs == "-" else UNKNOWN
    if not same_namespace:
        return UNKNOWN  # that PID here is some other process; theirs is not visible from here
    if state in ("Z", "X") or (parts["start"] != "-" and start != parts["start"]):
        return GONE
    return ALIVE


def _gone_reason(runner: str) -> str:
    parts = _parse_runner(runner) or {}
    pid, host = parts.get("pid", "?"), parts.get("host", "?")
    boot = _boot_id()
    if boot and parts.get("boot", "-") not in ("-", boot):
        return f"host {host} restarted since its runner (pid {pid}) started"
    return f"its runner (pid {pid} on {host}) has ended"


def runner_gone(runner: Optional[str]) -> bool:
    """Whether a ``runner`` property names a process known to have ended (see :func:`runner_status`)."""
    return runner_status(runner) == GONE


@dataclass(frozen=True)
class Interrupted:
    """A RUNNING execution whose runner is gone (or that is older than asked): what recovery marks FAILED."""

    execution_id: int
    type: str
    task: str  # the task's path in its run (for-loop-2/0/train; "" for a run's root DAG)
    run: Optional[str]
    runner: str
    reason: str

    @property
    def is_dag(self) -> bool:
        return self.type == records.DAG_EXECUTION_TYPE

    def to_dict(self) -> dict:
        return {"execution_id": self.execution_id, "type": self.type, "task": self.task, "run": self.run,
                "runner": self.runner, "reason": self.reason}


@dataclass(frozen=True)
class Recovery:
    """What :func:`recover` found: the interrupted executions (marked FAILED unless ``dry_run``), and
    the RUNNING ones left alone: ``alive`` (their runner runs) and ``unknown`` (their runner cannot
    be checked from here: another host or PID namespace, or no ``runner`` record; a lapsed lease or
    ``--older-than`` decides for them)."""

    interrupted: list[Interrupted] = field(default_factory=list)
    alive: int = 0
    unknown: int = 0
    dry_run: bool = False

    @property
    def runs(self) -> list[str]:
        return sorted({i.run for i in self.interrupted if i.run})

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "interrupted": [i.to_dict() for i in self.interrupted],
                "runs": self.runs, "left_running": {"alive": self.alive, "unknown": self.unknown}}


def running_executions(store: metadata_store.MetadataStore, context_id: Optional[int] = None) -> list[mlmd.Execution]:
    """RUNNING executions, by an indexed filter rather than a listing of the store (MLMD 1.21 has
    no filters: there the executions are listed and compared here)."""
    if not mlmd_compat.has_filter_query():
        try:
            listed = store.get_executions() if context_id is None else store.get_executions_by_context(context_id)
        except mlmd_errors.NotFoundError:
            return []
        return [e for e in listed if e.last_known_state == mlmd.Execution.RUNNING]
    options = metadata_store.ListOptions(filter_query="last_known_state = RUNNING")
    try:
        if context_id is None:
            return store.get_executions(list_options=options)
        return store.get_executions_by_context(context_id, list_options=options)
    except mlmd_errors.NotFoundError:  # no execution type yet: an empty store
        return []


def _age(execution: mlmd.Execution, now_ms: int) -> float:
    """Seconds since the execution was last written (a retried attempt writes it again)."""
    return max(0.0, (now_ms - (execution.last_update_time_since_epoch or execution.create_time_since_epoch)) / 1000)


def find_interrupted(store: metadata_store.MetadataStore, *, older_than: Optional[datetime.timedelta] = None,
                     now: Optional[float] = None) -> Recovery:
    """The RUNNING executions (tasks and DAGs) whose runner is gone; those whose runner cannot be
    checked from here (another host or PID namespace, or no ``runner`` record) that hold a cache
    key whose lease ran out a whole lease ago; and, with ``older_than``, the other unchecked ones
    that were last written longer ago than that. An execution whose runner is alive here is never
    taken, however old: its runner will still end it. A run with an interrupted execution has its
    other RUNNING DAG executions taken too (unless their runner is alive): that run cannot end."""
    now_ms = int((time.time() if now is None else now) * 1000)
    types = {t.id: t.name for t in store.get_execution_types()}
    found: dict[int, Interrupted] = {}
    alive: set[int] = set()  # the RUNNING executions left alone: their runner runs,
    unknown: set[int] = set()  # or cannot be checked from here
    runs: dict[int, str] = {}  # run context ID -> name, of the executions taken
    run_type = records.context_type_id(store, records.RUN_CONTEXT_TYPE)
    reservation_type = records.context_type_id(store, RESERVATION_CONTEXT_TYPE)

    def run_of(execution_id: int) -> Optional[mlmd.Context]:
        return next((c for c in store.get_contexts_by_execution(execution_id) if c.type_id == run_type), None)

    def take(execution: mlmd.Execution, runner: str, reason: str) -> None:
        context = run_of(execution.id)
        if context is not None:
            runs[context.id] = context.name
        found[execution.id] = Interrupted(execution.id, types.get(execution.type_id, ""),
                                          str(records.read_property(execution, records.TASK_NAME) or ""),
                                          context.name if context is not None else None, runner, reason)

    for execution in sorted(running_executions(store), key=lambda e: e.id):
        runner = str(records.read_property(execution, RUNNER) or "")
        status = runner_status(runner)
        if status == GONE:
            take(execution, runner, _gone_reason(runner))
        elif status == ALIVE:
            alive.add(execution.id)
        elif (lapsed := _lapsed_lease(store, reservation_type, execution.id, runner, now_ms / 1000)) is not None:
            take(execution, runner, lapsed)
        elif older_than is not None and _age(execution, now_ms) >= older_than.total_seconds():
            where = "on another host" if runner else "with no runner record"
            take(execution, runner, f"RUNNING {where} for {rough_duration(_age(execution, now_ms))} "
                                    f"(more than --older-than {rough_duration(older_than.total_seconds())})")
        else:
            unknown.add(execution.id)
    for context_id, name in sorted(runs.items()):
        for execution in running_executions(store, context_id):
            if execution.id in found or types.get(execution.type_id) != records.DAG_EXECUTION_TYPE:
                continue
            runner = str(records.read_property(execution, RUNNER) or "")
            if runner_status(runner) == ALIVE:
                continue
            found[execution.id] = Interrupted(execution.id, types.get(execution.type_id, ""),
                                              str(records.read_property(execution, records.TASK_NAME) or ""),
                                              name, runner, f"its run {name!r} was interrupted")
    paths = records.task_paths(store, store.get_executions_by_id(sorted(found))) if found else {}
    interrupted = [replace(item, task=paths.get(item.execution_id, item.task))
                   for item in sorted(found.values(), key=lambda i: i.execution_id)]
    return Recovery(interrupted, len(alive - set(found)), len(unknown - set(found)))


def _lapsed_lease(store: metadata_store.MetadataStore, reservation_type: Optional[int], execution_id: int,
                  runner: str, now: float) -> Optional[str]:
    """Why an execution whose runner cannot be checked from here is interrupted all the same: it
    holds a reservation of a cache key whose lease ran out a whole lease ago (:func:`mlmd_cache.store.lease_records.lapsed`:
    its heartbeat stopped, so its runner did); else None."""
    if reservation_type is None:  # nothing was ever reserved
        return None
    for context in store.get_contexts_by_execution(execution_id):
        late = lapsed(context, now) if context.type_id == reservation_type else None
        if late is not None:
            return f"its lease of a cache key ran out {rough_duration(late)} ago: no heartbeat from {describe_runner(runner)}"
    return None


def describe_runner(runner: str) -> str:
    """``its runner (pid 4242 on build-7)`` for a ``runner`` property, ``its runner`` when it names neither."""
    parts = dict(part.partition(":")[::2] for part in runner.split())
    if "pid" in parts and "host" in parts:
        return f"its runner (pid {parts['pid']} on {parts['host']})"
    return "its runner"


def mark_failed(store: metadata_store.MetadataStore, interrupted: Sequence[Interrupted],
                now: Optional[float] = None) -> list[Interrupted]:
    """Mark the executions FAILED, in one write, with ``interrupted_reason`` and ``recovered_at``
    (UTC, ISO 8601); those no longer RUNNING (their runner ended them meanwhile) are left alone.
    Returns the ones marked."""
    by_id = {i.execution_id: i for i in interrupted}
    if not by_id:
        return []
    stamp = datetime.datetime.fromtimestamp(time.time() if now is None else now, datetime.timezone.utc)
    stamp_text = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
    executions = [e for e in store.get_executions_by_id(sorted(by_id)) if e.last_known_state == mlmd.Execution.RUNNING]
    for execution in executions:
        execution.last_known_state = mlmd.Execution.FAILED
        execution.custom_properties[INTERRUPTED_REASON].string_value = by_id[execution.id].reason
        execution.custom_properties[RECOVERED_AT].string_value = stamp_text
    if executions:
        store.put_executions(executions)
    return [by_id[i] for i in sorted(e.id for e in executions)]


def recover(store: metadata_store.MetadataStore, *, older_than: Optional[datetime.timedelta] = None,
            dry_run: bool = False) -> Recovery:
    """:func:`find_interrupted`, then (unless ``dry_run``) :func:`mark_failed`."""
    found = find_interrupted(store, older_than=older_than)
    if dry_run:
        return Recovery(found.interrupted, found.alive, found.unknown, dry_run=True)
    return Recovery(mark_failed(store, found.interrupted), found.alive, found.unknown)

