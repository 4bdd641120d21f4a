"""The CPU worker process: the jobs it runs, its message loop, shared-memory attach and warm-up.

Everything here runs inside a child of `cpu_pool.CpuPool` (the parent side: queue, lanes,
deadlines, segment life cycle). The parent pickles jobs by qualified name, so every job class and
`worker_main` must stay importable from this module; `PRELOAD` names what the forkserver imports
once so that each new worker starts with numpy, numba and the engine already loaded.

Wire protocol on a worker's duplex pipe: the worker sends `READY` once warm; the parent sends
`(job_id, job, segment_name, vertices)` or None (leave the loop); the worker answers
`(job_id, status, payload, compute_ms)`, status "ok" (payload: the job's value) or "error"
(payload: `portable(exc)`, rebuilt by the parent).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sys
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import numpy as np

from services.common import errors
from services.common.errors import DomainError
from services.lattice.engine.analysis import Analysis, analyze
from services.lattice.engine.field import FIELD_DTYPE, Field
from services.lattice.engine.fills import Fill, RandomFill, make_field
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, PathResult, find_path
from services.lattice.engine.transforms import (
    Denormalize,
    Flip,
    Normalize,
    Offset,
    Rotate,
    Scale,
    TransformOp,
    Xor,
    apply_transform,
)

T_co = TypeVar("T_co", covariant=True)

FieldMode = Literal["read", "write", "fill"]

READY = "ready"
# The forkserver imports these before forking any worker.
PRELOAD = (__name__,)


class Job(Protocol[T_co]):
    """Work for a worker process: picklable, with `run` executed there on the mapped field."""

    field_mode: ClassVar[FieldMode]

    def run(self, field: Field) -> T_co: ...


@dataclass(frozen=True)
class TransformJob:
    """`apply_transform` in place on the segment; the result is the inverse op."""

    field_mode: ClassVar[FieldMode] = "write"
    grid: Grid
    op: TransformOp

    def run(self, field: Field) -> TransformOp:
        return apply_transform(self.grid, field, self.op)


@dataclass(frozen=True)
class AnalyzeJob:
    """`analyze` on the segment (read only)."""

    field_mode: ClassVar[FieldMode] = "read"
    grid: Grid

    def run(self, field: Field) -> Analysis:
        return analyze(self.grid, field)


@dataclass(frozen=True)
class FillJob:
    """`make_field` written straight into the segment (nothing is copied in)."""

    field_mode: ClassVar[FieldMode] = "fill"
    grid: Grid
    fill: Fill

    def run(self, field: Field) -> None:
        make_field(self.grid, self.fill, out=field)


@dataclass(frozen=True)
class PathJob:
    """`find_path` on the segment; CATALYTIC borrows it and restores it before returning."""

    field_mode: ClassVar[FieldMode] = "read"
    grid: Grid
    start: tuple[int, ...]
    end: tuple[int, ...]
    algorithm: Algorithm
    cost: Cost
    blocked_count: int | None = None

    def run(self, field: Field) -> PathResult:
        return find_path(
            self.grid,
            field,
            self.start,
            self.end,
            algorithm=self.algorithm,
            cost=self.cost,
            blocked_count=self.blocked_count,
        )


# Test hooks: jobs that misbehave like a crashing or never-ending kernel. A pool refuses them
# unless it was built with test_hooks=True.


@dataclass(frozen=True)
class CrashJob:
    """Ends the worker process abruptly (as a segfault or the OOM killer would)."""

    field_mode: ClassVar[FieldMode] = "read"
    exit_code: int = 70

    def run(self, field: Field) -> None:
        os._exit(self.exit_code)


@dataclass(frozen=True)
class SpinJob:
    """Burns a core for `seconds` without ever yielding, like a long numba kernel."""

    field_mode: ClassVar[FieldMode] = "read"
    seconds: float

    def run(self, field: Field) -> int:
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            pass
        return os.getpid()


TEST_JOBS = (CrashJob, SpinJob)


# Errors cross the pipe as data: DomainError subclasses do not all survive pickling (their
# constructors take other arguments than `args`), and arbitrary exceptions may not pickle at all.
# The parent turns the tuple back into an exception (cpu_pool._rebuild).


def portable(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, DomainError) and getattr(errors, type(exc).__name__, None) is type(exc):
        return ("domain", type(exc).__name__, exc.message, dict(vars(exc)))
    text = "".join(traceback.format_exception(exc))
    return ("internal", type(exc).__name__, str(exc), text)


def worker_main(conn: Connection, warm: bool, nice: int = 0) -> None:
    """The worker's entry point: lower its CPU priority by `nice`, warm up, report READY, then
    run jobs until told to stop."""
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if nice:
        # Below the serving processes (the event loop, Envoy, PostgreSQL): on a saturated host
        # a long search yields the CPU to the request path, not the other way round (ADR 50).
        os.nice(nice)
    if warm:
        warm_up()
    attachments = Attachments()
    conn.send(READY)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return  # The parent has gone.
        if message is None:
            return
        job_id, job, segment_name, vertices, forget = message
        attachments.forget(forget)
        reply = (job_id, *_execute(job, attachments, segment_name, vertices))
        try:
            conn.send(reply)
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            conn.send((job_id, "error", portable(exc), reply[3]))
        except OSError:
            return


def leaves_field_intact(job: Job[Any], value: Any) -> bool:
    """Whether a job that returned `value` left its segment as it found it: read-only jobs do,
    and a path search proves it (CATALYTIC borrows the field and restores it) by checksums."""
    if job.field_mode != "read":
        return False
    if isinstance(value, PathResult):
        return bool(value.checksum_before == value.checksum_after)
    return True


class Attachments:
    """The segments this worker has mapped, kept mapped while the parent keeps them.

    The parent reuses segments, so mapping each one once saves the page faults of mapping it
    per job. The parent names the segments it discards with the next job (`forget`); at most
    MAX_ATTACHED stay mapped in any case, oldest unmapped first.
    """

    MAX_ATTACHED = 16

    def __init__(self) -> None:
        self._mapped: OrderedDict[str, SharedMemory] = OrderedDict()

    def get(self, name: str) -> SharedMemory:
        segment = self._mapped.get(name)
        if segment is None:
            segment = _attach(name)
            self._mapped[name] = segment
            while len(self._mapped) > self.MAX_ATTACHED:
                _close(self._mapped.popitem(last=False)[1])
        else:
            self._mapped.move_to_end(name)
        return segment

    def forget(self, names: Iterable[str]) -> None:
        for name in names:
            segment = self._mapped.pop(name, None)
            if segment is not None:
                _close(segment)


def _close(segment: SharedMemory) -> None:
    with contextlib.suppress(BufferError):
        # A view still alive (e.g. inside a result) keeps the mapping until it is collected.
        segment.close()


def _execute(
    job: Job[Any], attachments: Attachments, segment_name: str, vertices: int
) -> tuple[str, Any, float]:
    started = time.perf_counter()
    try:
        segment = attachments.get(segment_name)
    except Exception as exc:
        return ("error", portable(exc), (time.perf_counter() - started) * 1000)
    try:
        value = job.run(np.ndarray((vertices,), dtype=FIELD_DTYPE, buffer=segment.buf))
        result: tuple[str, Any] = ("ok", value)
    except Exception as exc:
        result = ("error", portable(exc))
    return (*result, (time.perf_counter() - started) * 1000)


def _attach(name: str) -> SharedMemory:
    """Maps a segment the parent created, without registering it with the resource tracker:
    the parent owns (and unlinks) it, and a second registration would make the tracker warn
    or unlink it early."""
    if sys.version_info >= (3, 13):
        return SharedMemory(name=name, track=False)
    register = resource_tracker.register
    resource_tracker.register = _no_register
    try:
        return SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def _no_register(name: Any, rtype: str) -> None:
    return None


def warm_up() -> None:
    """Runs every engine kernel once on a tiny lattice so numba loads (or compiles) them now."""
    grid = Grid.of(3, 4)
    field = make_field(grid, RandomFill(seed=7, low=0.5, high=2.0, blocked_fraction=0.2))
    ops: Sequence[TransformOp] = (
        Xor(1),
        Xor(1),
        Rotate(0, 1, 1),
        Flip(2),
        Scale(2.0),
        Offset(0.5),
        Normalize(),
        Denormalize(1.0, 2.0),
    )
    for op in ops:
        with contextlib.suppress(DomainError):
            apply_transform(grid, field, op)
    analyze(grid, field)
    analyze(grid, np.ones(grid.vertex_count, dtype=FIELD_DTYPE))
    open_vertices = np.flatnonzero(field.view(np.uint32) < 0x7F80_0000)
    if open_vertices.size < 2:
        return
    start = grid.coordinates_of(int(open_vertices[0]))
    end = grid.coordinates_of(int(open_vertices[-1]))
    for algorithm in Algorithm:
        for cost in Cost:
            with contextlib.suppress(DomainError):
                find_path(grid, field, start, end, algorithm=algorithm, cost=cost)
