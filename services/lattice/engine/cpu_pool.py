"""CPU worker processes for the engine: shared-memory fields, a bounded queue, killable deadlines.

This is the parent side; what runs inside a worker (the jobs, the message loop, warm-up) is
cpu_worker.py. Design (README.md in this folder has the long form):

- Workers are our own processes (forkserver, else spawn: never a fork of a process that runs
  gRPC threads), one duplex pipe each. A job that outlives its deadline, or whose caller is
  cancelled, cannot be interrupted inside a numba kernel, so its worker is killed (SIGKILL) and
  replaced; the other workers never notice.
- A field travels through a POSIX shared-memory segment (segments.py): the parent takes one,
  copies the field in (unless the segment already holds that read-only field), sends the
  segment's name and length; the worker maps it and works in place. A segment whose job ended
  cleanly is kept for the next job of its size; any other is unlinked in `finally` (error after
  sending, deadline, cancellation, worker crash). Workers never register segments with the
  resource tracker, so only the parent owns them, and if the parent itself dies the tracker
  unlinks what is left.
- Waiting jobs queue per tenant and are served in turn, each tenant within a cap on its running
  jobs and a fair share of `max_queue` waiting ones; a tenant over its share is refused at once
  (ResourceExhausted), never one within it. The rules are fair_queue.py's.
- Lanes: `light_workers` workers are reserved for LIGHT jobs (small lattices, closed forms), and
  for a tenant's only job when nothing else is free (fair_queue.py); light jobs spill over onto
  idle shared workers.
- Each worker warms the numba kernels up (from the on-disk cache) before it takes work.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from multiprocessing.shared_memory import SharedMemory
from typing import Any, Generic, Literal, TypeVar

import numpy as np

from services.common import errors
from services.common.errors import DeadlineExceeded, ResourceExhausted, Unavailable
from services.lattice.engine.backends import FieldLike
from services.lattice.engine.cpu_worker import (
    PRELOAD,
    READY,
    TEST_JOBS,
    AnalyzeJob,
    CrashJob,
    FillJob,
    Job,
    PathJob,
    SpinJob,
    TransformJob,
    leaves_field_intact,
    worker_main,
)
from services.lattice.engine.fair_queue import UNATTRIBUTED, FairQueue, Lane, QueueFull, Share
from services.lattice.engine.field import FIELD_DTYPE, Field
from services.lattice.engine.segments import DEFAULT_KEEP_BYTES, SegmentStock, copy_into, copy_out

# The job types are defined in cpu_worker (workers unpickle them from there); callers that build
# a pool import them from here, with it.
__all__ = [
    "AnalyzeJob",
    "CpuPool",
    "CrashJob",
    "FillJob",
    "Job",
    "JobOutcome",
    "Lane",
    "PathJob",
    "PoolStats",
    "Share",
    "SpinJob",
    "TransformJob",
    "WorkerError",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Copies of fields at least this large run in a thread, so the event loop never stalls on them.
THREAD_COPY_BYTES = 1 << 20
START_TIMEOUT_S = 600.0
_RESPAWN_BACKOFF_S = (0.5, 30.0)


@dataclass(frozen=True)
class JobOutcome(Generic[T]):
    """What a job returned, the field as it left it (write/fill jobs), and its timings."""

    value: T
    field: Field | None
    elapsed_ms: float  # worker assigned -> result back: copies in and out, IPC and compute
    compute_ms: float  # the job's own run time, measured inside the worker


@dataclass(frozen=True)
class PoolStats:
    """A snapshot for metrics: workers alive and ready, jobs running and waiting, tenants with
    jobs in the pool, and refusals so far by reason (fair_queue.QueueFull)."""

    workers: int
    ready: int
    busy: int
    waiting: int
    max_queue: int
    tenants: int = 0
    refusals: dict[str, int] = field(default_factory=dict)


class WorkerError(RuntimeError):
    """A job failed inside a worker with an unexpected (non-domain) exception."""

    def __init__(self, kind: str, message: str, remote_traceback: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.remote_traceback = remote_traceback


class CpuPool:
    """Worker processes behind an asyncio interface; `await start()`, then `run(...)`."""

    def __init__(
        self,
        *,
        workers: int,
        light_workers: int | None = None,
        max_queue: int | None = None,
        start_method: Literal["forkserver", "spawn"] | None = None,
        warm_up: bool = True,
        test_hooks: bool = False,
        keep_segment_bytes: int = DEFAULT_KEEP_BYTES,
        nice: int = 0,
    ) -> None:
        if workers < 1:
            raise ValueError("a pool needs at least one worker")
        if light_workers is None:
            light_workers = 1 if workers >= 2 else 0
        if not 0 <= light_workers < workers:
            raise ValueError("light_workers must leave at least one worker for heavy jobs")
        self.workers = workers
        self.light_workers = light_workers
        self.max_queue = 2 * workers if max_queue is None else max_queue
        if self.max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        if start_method is None:
            methods = multiprocessing.get_all_start_methods()
            start_method = "forkserver" if "forkserver" in methods else "spawn"
        if start_method not in ("forkserver", "spawn"):
            # A fork of a process running gRPC threads can deadlock in the child.
            raise ValueError(f"start_method must be forkserver or spawn, not {start_method!r}")
        self._context: ForkServerContext | SpawnContext
        if start_method == "forkserver":
            self._context = multiprocessing.get_context("forkserver")
            # Workers fork from a server that has numpy, numba and the engine imported already.
            self._context.set_forkserver_preload(list(PRELOAD))
        else:
            self._context = multiprocessing.get_context("spawn")
        self._warm_up = warm_up
        if not 0 <= nice <= 19:
            raise ValueError("nice must be 0 to 19")
        self._nice = nice
        self._test_hooks = test_hooks
        # Our segments' names start with this, so a leak is attributable (and testable).
        self.segment_prefix = f"lat{os.getpid()}{secrets.token_hex(2)}_"
        self._stock = SegmentStock(self.segment_prefix, keep_bytes=keep_segment_bytes)
        self._job_ids = itertools.count()
        self._slots: list[_Worker | None] = [None] * workers
        # A tenant never holds every worker: one is always left for the others.
        self._queue: FairQueue[asyncio.Future[_Worker]] = FairQueue(
            max_queue=self.max_queue, tenant_cap=max(1, workers - 1)
        )
        self._refusals = {"share": 0, "plan": 0}
        self._background: set[asyncio.Task[None]] = set()
        self._idle_changed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._closed = asyncio.Event()
        self._started = False
        self._closing = False
        self._failures = 0

    # Life cycle

    async def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Starts every worker and waits until all have warmed up; raises if one cannot."""
        if self._started:
            return
        self._started = True
        try:
            await asyncio.gather(*(self._spawn(slot) for slot in range(self.workers)))
            async with asyncio.timeout(timeout_s):
                while not all(w is not None and w.ready for w in self._slots):
                    if self._failures:
                        raise RuntimeError("a compute worker exited while starting; see logs")
                    self._idle_changed.clear()
                    await self._idle_changed.wait()
        except BaseException:
            await self.close(grace_s=0)
            raise

    async def close(self, grace_s: float = 10.0) -> None:
        """Refuses new jobs, fails waiting ones, lets running ones finish for `grace_s`, stops
        every worker and waits for their processes to end."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self._stopping.set()
        for ticket in self._queue.drain():
            if not ticket.item.done():
                ticket.item.set_exception(Unavailable("the compute pool is shutting down"))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                while any(w is not None and w.busy and not w.dead for w in self._slots):
                    self._idle_changed.clear()
                    await self._idle_changed.wait()
        for worker in self._slots:
            if worker is None or worker.dead:
                continue
            if worker.busy or not worker.ready:
                self._retire(worker, kill=True)
            else:
                with contextlib.suppress(OSError):
                    worker.conn.send(None)  # Asks it to leave its loop.
                self._retire(worker, kill=False)
        # Each retired process has one reaper task; none respawns while closing.
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self._stock.clear()
        self._closed.set()

    async def __aenter__(self) -> CpuPool:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def stats(self) -> PoolStats:
        alive = [w for w in self._slots if w is not None and not w.dead]
        return PoolStats(
            workers=len(alive),
            ready=sum(w.ready for w in alive),
            busy=sum(w.busy for w in alive),
            waiting=self._queue.waiting(),
            max_queue=self.max_queue,
            tenants=self._queue.active_tenants(),
            refusals=dict(self._refusals),
        )

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for metrics and tests)."""
        return [
            w.process.pid
            for w in self._slots
            if w is not None and not w.dead and w.process.pid is not None
        ]

    # Running jobs

    async def run(
        self,
        job: Job[T],
        field: FieldLike | None,
        *,
        vertices: int,
        lane: Lane = Lane.HEAVY,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> JobOutcome[T]:
        """Runs `job` on a worker with `field` (V = `vertices` float32) in shared memory.

        `deadline_s` is the time left (gRPC's `time_remaining()`), None for none; `share` the
        tenant it runs for and its plan's caps (None: unattributed). Raises ResourceExhausted
        when the tenant's share of the queue is full, DeadlineExceeded when the deadline passes
        (the worker is killed and replaced), Unavailable when the worker dies or the pool is
        closing, the job's own DomainError, or WorkerError for anything unexpected.
        """
        if self._closing or not self._started:
            raise Unavailable("the compute pool is not running")
        if isinstance(job, TEST_JOBS) and not self._test_hooks:
            raise ValueError(f"{type(job).__name__} is a test hook; this pool refuses it")
        mode = job.field_mode
        source = None if mode == "fill" else _as_field(field, vertices)
        loop = asyncio.get_running_loop()
        deadline = None if deadline_s is None else loop.time() + deadline_s
        if deadline is not None and deadline <= loop.time():
            raise DeadlineExceeded("the deadline passed before the computation started")
        share = share or Share(UNATTRIBUTED)
        worker = await self._acquire(share, lane, deadline)
        assigned = time.perf_counter()
        segment: SharedMemory | None = None
        held, sent, finished, intact = True, False, False, False
        try:
            segment, copy_needed = self._stock.take(vertices, source)
            if source is not None and copy_needed:
                await _copy(copy_into, source.nbytes, segment, source)
            while True:
                try:
                    worker.conn.send(
                        (next(self._job_ids), job, segment.name, vertices, self._forget(worker))
                    )
                    break
                except OSError:
                    # It died while idle, before its pipe's EOF reached the loop; the job has
                    # not started, so another worker may take it.
                    held = False
                    self._retire(worker, kill=True)
                    worker = await self._acquire(share, lane, deadline)
                    held = True
            reply = loop.create_future()
            worker.reply = reply
            sent = True
            try:
                async with asyncio.timeout_at(deadline):
                    status, payload, compute_ms = await reply
            except TimeoutError:
                raise DeadlineExceeded(
                    "the computation did not finish before the deadline"
                ) from None
            finished = True
            if status != "ok":
                raise _rebuild(payload)
            intact = leaves_field_intact(job, payload)
            nbytes = vertices * FIELD_DTYPE.itemsize
            out = await _copy(copy_out, nbytes, segment, vertices) if mode != "read" else None
            elapsed_ms = (time.perf_counter() - assigned) * 1000
            return JobOutcome(payload, out, elapsed_ms, compute_ms)
        finally:
            if held:
                worker.reply = None
                if sent and not finished:
                    # Timed out, cancelled or crashed: the worker may still be burning a core.
                    self._retire(worker, kill=True)
                else:
                    self._release(worker)
            if segment is not None:
                if finished and not self._closing:
                    # The worker is done with it (or dead): what it holds is known.
                    self._stock.keep(segment, vertices, source if intact else None)
                else:
                    self._stock.discard(segment)

    def kept_segments(self) -> list[str]:
        """Names of the shared-memory segments kept for reuse (for tests and diagnostics)."""
        return self._stock.kept_names()

    def _forget(self, worker: _Worker) -> tuple[str, ...]:
        """The discarded segment names `worker` has not been told about yet."""
        discarded = self._stock.take_forgotten()
        if discarded:
            for other in self._slots:
                if other is not None and not other.dead:
                    other.forget.extend(discarded)
        names, worker.forget = tuple(worker.forget), []
        return names

    # Workers and the queue

    async def _acquire(self, share: Share, lane: Lane, deadline: float | None) -> _Worker:
        queue = self._queue
        if queue.may_start(share):
            worker = self._idle_worker(lane, spill=queue.running(share.tenant) == 0)
            if worker is not None:
                self._take(worker, share)
                return worker
        try:
            queue.check_room(share)
        except QueueFull as full:
            self._refusals[full.reason] += 1
            raise ResourceExhausted("compute queue is full", retry_after_s=1) from None
        future: asyncio.Future[_Worker] = asyncio.get_running_loop().create_future()
        ticket = queue.push(share, lane, future)
        try:
            async with asyncio.timeout_at(deadline):
                return await future
        except BaseException as exc:
            queue.remove(ticket)
            if future.done() and not future.cancelled() and future.exception() is None:
                # Handed a worker just as we gave up: give it back.
                self._release(future.result())
            if isinstance(exc, TimeoutError):
                raise DeadlineExceeded(
                    "the deadline passed while waiting for a compute worker"
                ) from None
            raise

    def _idle_worker(self, lane: Lane, spill: bool = False) -> _Worker | None:
        idle = [w for w in self._slots if w is not None and w.ready and not w.busy and not w.dead]
        # Shared workers first for heavy work; reserved ones first for light work, so the
        # shared ones stay free for heavy work. A heavy job spills only when told to.
        idle.sort(key=lambda w: w.reserved is (lane is Lane.HEAVY))
        if lane is Lane.HEAVY and not spill:
            idle = [w for w in idle if not w.reserved]
        return idle[0] if idle else None

    def _take(self, worker: _Worker, share: Share) -> None:
        worker.busy, worker.share = True, share
        self._queue.started(share)

    def _release(self, worker: _Worker) -> None:
        if worker.share is not None:
            self._queue.finished(worker.share)
        worker.busy, worker.share = False, None
        self._dispatch()

    def _dispatch(self) -> None:
        while (found := self._queue.pop_next(self._idle_worker, _pending)) is not None:
            ticket, worker = found
            worker.busy, worker.share = True, ticket.share  # pop_next counted it as started
            ticket.item.set_result(worker)
        self._idle_changed.set()

    async def _spawn(self, slot: int) -> None:
        parent_end, child_end = self._context.Pipe(duplex=True)
        process = self._context.Process(
            target=worker_main,
            args=(child_end, self._warm_up, self._nice),
            name=f"lattice-compute-{slot}",
            daemon=True,
        )
        worker = _Worker(slot, slot < self.light_workers, process, parent_end)
        try:
            # A forkserver's first start waits for its preload imports: not on the loop.
            await _in_thread(process.start)
        except BaseException:
            parent_end.close()
            if process.pid is not None:
                with contextlib.suppress(OSError):
                    process.kill()
                self._track(_reap(process))
            raise
        finally:
            child_end.close()
        self._slots[slot] = worker
        asyncio.get_running_loop().add_reader(parent_end.fileno(), self._on_readable, worker)
        if self._closing:
            self._retire(worker, kill=True)

    def _on_readable(self, worker: _Worker) -> None:
        try:
            while not worker.dead and worker.conn.poll():
                self._on_message(worker, worker.conn.recv())
        except (EOFError, OSError):
            self._on_exit(worker)

    def _on_message(self, worker: _Worker, message: Any) -> None:
        if message == READY:
            worker.ready = True
            self._failures = 0
            self._dispatch()
            return
        _, status, payload, compute_ms = message
        if worker.reply is not None and not worker.reply.done():
            worker.reply.set_result((status, payload, compute_ms))

    def _on_exit(self, worker: _Worker) -> None:
        if worker.dead:
            return
        if not worker.ready:
            self._failures += 1
        logger.warning(
            "compute worker %s (pid %s) exited unexpectedly", worker.slot, worker.process.pid
        )
        self._retire(worker, kill=False)

    def _retire(self, worker: _Worker, *, kill: bool) -> None:
        """Takes a worker out of service (killing it first if asked) and schedules its successor."""
        if worker.dead:
            return
        worker.dead = True
        if kill:
            with contextlib.suppress(OSError, ValueError):
                worker.process.kill()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(worker.conn.fileno())
        worker.conn.close()
        if worker.reply is not None and not worker.reply.done():
            worker.reply.set_exception(Unavailable("a compute worker stopped; please retry"))
        if worker.share is not None:
            # Its job is over: the tenant's turn may come on another worker.
            self._queue.finished(worker.share)
            worker.share = None
        self._track(self._replace(worker))
        self._dispatch()

    async def _replace(self, worker: _Worker) -> None:
        """Reaps a retired worker's process, then (unless closing) starts its successor."""
        await _reap(worker.process)
        if self._failures:
            # Workers that die while warming up would otherwise respawn in a tight loop.
            low, high = _RESPAWN_BACKOFF_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(high, low * 2 ** (self._failures - 1))):
                    await self._stopping.wait()
        if not self._closing and self._slots[worker.slot] is worker:
            await self._spawn(worker.slot)

    def _track(self, coroutine: Any) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


@dataclass(eq=False)
class _Worker:
    slot: int
    reserved: bool
    process: BaseProcess
    conn: Connection
    ready: bool = False
    busy: bool = False
    dead: bool = False
    share: Share | None = None  # whose job it runs, while busy
    reply: asyncio.Future[tuple[str, Any, float]] | None = field(default=None, repr=False)
    # Segments discarded since this worker's last job: it unmaps them with the next one.
    forget: list[str] = field(default_factory=list, repr=False)


def _pending(future: asyncio.Future[_Worker]) -> bool:
    return not future.done()


async def _reap(process: BaseProcess) -> None:
    """Waits for a process to end (killing it after a grace period), off the event loop."""
    if process.pid is None:
        return
    await asyncio.to_thread(process.join, 5.0)
    if process.exitcode is None:
        with contextlib.suppress(OSError):
            process.kill()
        await asyncio.to_thread(process.join, 5.0)
    with contextlib.suppress(ValueError):
        process.close()


async def _copy(function: Callable[..., T], nbytes: int, *args: Any) -> T:
    """Runs a copy of `nbytes`: inline when small, else in a thread."""
    if nbytes < THREAD_COPY_BYTES:
        return function(*args)
    return await _in_thread(function, *args)


async def _in_thread(function: Callable[..., T], *args: Any) -> T:
    """Runs a short blocking call in a thread. Cancellation waits for the thread to finish:
    the buffers or processes it touches are released right after."""
    task = asyncio.ensure_future(asyncio.to_thread(function, *args))
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        raise


def _as_field(field: FieldLike | None, vertices: int) -> Field:
    if field is None:
        raise ValueError("this job needs a field")
    array = field if isinstance(field, np.ndarray) else np.frombuffer(field, dtype=FIELD_DTYPE)
    if array.dtype != FIELD_DTYPE or array.shape != (vertices,):
        raise ValueError(f"the field must be {vertices} {FIELD_DTYPE} values")
    return array


# A worker's error reply carries cpu_worker.portable(exc); this turns it back into an exception.


def _rebuild(payload: tuple[Any, ...]) -> Exception:
    if payload[0] == "domain":
        _, name, message, state = payload
        cls = getattr(errors, name)
        exc: Exception = cls.__new__(cls)
        Exception.__init__(exc, message)
        exc.__dict__.update(state)
        return exc
    _, kind, message, text = payload
    logger.error("compute job failed in a worker: %s", text)
    return WorkerError(kind, message, text)
