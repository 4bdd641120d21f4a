"""The optional CuPy backend: transforms, random fill, frontier BFS and parallel shortest paths.

CuPy is imported only by `load_cupy()`; without it (or without a device) `GpuBackend.probe()`
returns None and everything runs on the CPU. Work runs in one thread at a time (a GPU job holds
the device and its memory budget); the event loop only awaits it. BFS levels and relaxation
rounds are driven from the host, so a deadline or a cancellation stops a search between two
kernels. Any failure but a domain error is raised as GpuFailure, which the Router answers by
running the same call on the CPU.

Kernels and their exactness: gpu_kernels.py. Which calls the GPU takes: `GpuBackend.supports`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import math
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

from services.common.errors import DeadlineExceeded, DomainError, FailedPrecondition, NotFound
from services.lattice.engine import gpu_kernels
from services.lattice.engine.backends import (
    AnalysisOutcome,
    FieldLike,
    FieldOutcome,
    GpuFailure,
    PathOutcome,
    TransformOutcome,
    Work,
)
from services.lattice.engine.fair_queue import Share
from services.lattice.engine.field import FIELD_DTYPE, Field, checksum
from services.lattice.engine.fills import GOLDEN, U64_MASK, Fill, RandomFill, random_parameters
from services.lattice.engine.geometry import Grid
from services.lattice.engine.paths import Algorithm, Cost, PathResult
from services.lattice.engine.transforms import (
    Flip,
    Offset,
    Rotate,
    Scale,
    TransformOp,
    Xor,
    validate,
)

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

# Without GPU_MEMORY_LIMIT_BYTES, the CuPy pool may take this share of the device's memory.
DEFAULT_MEMORY_FRACTION = 0.8
# After a kernel or driver error (not out-of-memory) the GPU sits out this long.
COOLDOWN_S = 60.0
_F32_MAX = float(np.finfo(np.float32).max)
_INF_BITS = 0x7F80_0000


def load_cupy() -> Any | None:
    """The cupy module when it imports and sees at least one device; None otherwise."""
    try:
        with warnings.catch_warnings():
            # A CuPy without its CUDA libraries warns on import; absence is an answer, not a fault.
            warnings.simplefilter("ignore")
            cp = importlib.import_module("cupy")
            if int(cp.cuda.runtime.getDeviceCount()) < 1:
                return None
    except Exception:
        return None
    return cp


class _Stopped(Exception):
    """The caller gave up (deadline or cancellation); the search stopped between kernels."""


class GpuBackend:
    """The engine's GPU kernels behind the ComputeBackend interface (see compute.py)."""

    def __init__(self, cp: Any, *, memory_limit_bytes: int | None = None) -> None:
        self._cp = cp
        self._pool = cp.get_default_memory_pool()
        _, total = cp.cuda.runtime.memGetInfo()
        self.device_memory_bytes = int(total)
        self.memory_limit_bytes = memory_limit_bytes or int(total * DEFAULT_MEMORY_FRACTION)
        self._pool.set_limit(size=self.memory_limit_bytes)
        self._kernels = gpu_kernels.Kernels(cp)
        self._busy = asyncio.Lock()
        self._cooldown_until = 0.0
        self.device_name = _device_name(cp)

    @classmethod
    def probe(cls, *, memory_limit_bytes: int | None = None) -> GpuBackend | None:
        """A warmed-up backend (every kernel compiled), or None without a working GPU."""
        cp = load_cupy()
        if cp is None:
            return None
        try:
            backend = cls(cp, memory_limit_bytes=memory_limit_bytes)
            backend.warm_up()
        except Exception:
            logger.warning("a GPU is present but unusable; computing on the CPU", exc_info=True)
            return None
        logger.info(
            "GPU backend on %s, memory pool capped at %d bytes",
            backend.device_name,
            backend.memory_limit_bytes,
        )
        return backend

    def warm_up(self) -> None:
        """Compiles every kernel (NVRTC, then CuPy's on-disk cache) on a tiny lattice."""
        grid = Grid.of(3, 4)
        stop = threading.Event()
        field = self._fill(grid, RandomFill(seed=7, low=0.5, high=2.0, blocked_fraction=0.2))
        for op in (Xor(1), Flip(1), Rotate(0, 2, 1), Scale(2.0), Offset(0.5)):
            self._transform(grid, field, op)
        bits = field.view(np.uint32)
        open_vertices = np.flatnonzero(bits < _INF_BITS)
        if open_vertices.size >= 2:
            s, t = int(open_vertices[0]), int(open_vertices[-1])
            for cost in Cost:
                with contextlib.suppress(NotFound):
                    self._path(grid, field, s, t, cost, stop)

    # What the Router asks

    def supports(self, work: Work) -> bool:
        if time.monotonic() < self._cooldown_until:
            return False
        if work.kind == "fill":
            return isinstance(work.fill, RandomFill)
        if work.kind == "transform":
            return isinstance(work.op, Xor | Rotate | Flip | Scale | Offset)
        if work.kind == "path":
            if work.cost is Cost.UNIT:
                # AUTO on a lattice with nothing blocked is the CPU's closed form, O(d * size);
                # AUTO with an unknown blocked count might be too.
                return work.algorithm is Algorithm.BFS or (
                    work.algorithm is Algorithm.AUTO and (work.blocked_count or 0) > 0
                )
            return work.algorithm in (Algorithm.AUTO, Algorithm.DIJKSTRA)
        return False

    def memory_need(self, work: Work) -> int:
        field = 4 * work.vertices
        if work.kind == "transform" and isinstance(work.op, Rotate | Flip):
            return 2 * field  # gathered out of place
        if work.kind == "path" and work.cost is Cost.UNIT:
            return 4 * field  # bits, parent, two frontiers
        if work.kind == "path":
            return 6 * field  # bits, 8-byte keys, queued flags, two frontiers
        return field

    def free_bytes(self) -> int:
        free, _ = self._cp.cuda.runtime.memGetInfo()
        reusable = int(free) + int(self._pool.free_bytes())
        under_cap = self.memory_limit_bytes - int(self._pool.used_bytes())
        return max(0, min(reusable, under_cap))

    def memory_in_use_bytes(self) -> int:
        return int(self._pool.used_bytes())

    def memory_total_bytes(self) -> int:
        return self.device_memory_bytes

    # ComputeBackend

    async def make_field(
        self, grid: Grid, fill: Fill, *, deadline_s: float | None = None, share: Share | None = None
    ) -> FieldOutcome:
        if not isinstance(fill, RandomFill):
            raise GpuFailure("unsupported", "only the random fill runs on the GPU")
        work = Work("fill", grid.vertex_count, fill=fill)
        field, elapsed = await self._run(work, deadline_s, lambda _: self._fill(grid, fill))
        return FieldOutcome(field, "gpu", elapsed)

    async def transform(
        self,
        grid: Grid,
        field: FieldLike,
        op: TransformOp,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> TransformOutcome:
        validate(grid, op)
        host = _host_field(field, grid.vertex_count)
        work = Work("transform", grid.vertex_count, op=op)
        (out, inverse), elapsed = await self._run(
            work, deadline_s, lambda _: self._transform(grid, host, op)
        )
        return TransformOutcome(out, inverse, "gpu", elapsed)

    async def find_path(
        self,
        grid: Grid,
        field: FieldLike,
        start: Sequence[int],
        end: Sequence[int],
        algorithm: Algorithm = Algorithm.AUTO,
        cost: Cost = Cost.UNIT,
        *,
        blocked_count: int | None = None,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> PathOutcome:
        work = Work(
            "path", grid.vertex_count, algorithm=algorithm, cost=cost, blocked_count=blocked_count
        )
        if not self.supports(work):
            raise GpuFailure("unsupported", f"{algorithm.value} with {cost.value} cost")
        host = _host_field(field, grid.vertex_count)
        s = grid.index_of(start, field="start")
        t = grid.index_of(end, field="end")
        bits = host.view(np.uint32)
        if bits[s] >= _INF_BITS or bits[t] >= _INF_BITS:
            # The CPU words that error (both endpoints, with their values).
            raise GpuFailure("declined", "an endpoint is blocked")
        result, elapsed = await self._run(
            work, deadline_s, lambda stop: self._path(grid, host, s, t, cost, stop)
        )
        return PathOutcome(result, "gpu", elapsed)

    async def analyze(
        self,
        grid: Grid,
        field: FieldLike,
        *,
        deadline_s: float | None = None,
        share: Share | None = None,
    ) -> AnalysisOutcome:
        raise GpuFailure("unsupported", "analysis runs on the CPU")

    async def close(self) -> None:
        async with self._busy:
            self._pool.free_all_blocks()

    # Running work

    async def _run(
        self, work: Work, deadline_s: float | None, job: Callable[[threading.Event], _T]
    ) -> tuple[_T, float]:
        """Runs `job` in a thread holding the device; (its result, elapsed ms)."""
        if self.memory_need(work) > self.free_bytes():
            raise GpuFailure("insufficient_memory", f"{self.memory_need(work)} bytes needed")
        stop = threading.Event()
        loop = asyncio.get_running_loop()
        deadline = None if deadline_s is None else loop.time() + deadline_s
        try:
            async with asyncio.timeout_at(deadline):
                await self._busy.acquire()
        except TimeoutError:
            raise DeadlineExceeded("the deadline passed while waiting for the GPU") from None
        task = asyncio.ensure_future(asyncio.to_thread(self._guarded, job, stop))
        # The device stays held until the thread ends, even if the caller leaves sooner.
        task.add_done_callback(self._finished)
        try:
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(task)
        except TimeoutError:
            stop.set()
            raise DeadlineExceeded("the computation did not finish before the deadline") from None
        except asyncio.CancelledError:
            stop.set()
            raise

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._busy.release()
        if not task.cancelled():
            task.exception()  # Retrieved here, so an abandoned failure is not reported twice.

    def _guarded(
        self, job: Callable[[threading.Event], _T], stop: threading.Event
    ) -> tuple[_T, float]:
        started = time.perf_counter()
        cp = self._cp
        try:
            result = job(stop)
            cp.cuda.get_current_stream().synchronize()
        except (DomainError, GpuFailure, _Stopped):
            raise
        except cp.cuda.memory.OutOfMemoryError as error:
            self._pool.free_all_blocks()
            raise GpuFailure("out_of_memory", str(error)) from error
        except Exception as error:
            self._cooldown_until = time.monotonic() + COOLDOWN_S
            logger.exception("GPU kernel failed; the GPU sits out %.0f s", COOLDOWN_S)
            raise GpuFailure("kernel_error", repr(error)) from error
        return result, (time.perf_counter() - started) * 1000

    # The work itself (in the worker thread)

    def _fill(self, grid: Grid, fill: RandomFill) -> Field:
        cp, parameters = self._cp, random_parameters(fill)
        out = cp.empty(grid.vertex_count, dtype=cp.float32)
        self._kernels.random_fill(
            np.uint64((parameters.seed + GOLDEN) & U64_MASK),
            np.uint64((parameters.seed + 2 * GOLDEN) & U64_MASK),
            np.uint64((2 * GOLDEN) & U64_MASK),
            parameters.low,
            parameters.span,
            parameters.below_high,
            np.uint32(parameters.threshold),
            np.uint64(0),
            out,
        )
        result: Field = out.get()
        return result

    def _transform(self, grid: Grid, host: Field, op: TransformOp) -> tuple[Field, TransformOp]:
        """transforms.apply_transform's result and inverse, computed on the device."""
        cp, k = self._cp, self._kernels
        n, d = grid.size, grid.dimensions
        if isinstance(op, Offset) and np.float32(op.value) == 0:
            return host.copy(), Offset(0.0)
        if isinstance(op, Rotate):
            a, b, turns = op.axis_a, op.axis_b, op.quarter_turns % 4
            inverse: TransformOp = Rotate(a, b, (4 - op.quarter_turns % 4) % 4)
            if a > b:
                a, b, turns = b, a, (4 - turns) % 4
            if turns == 0:
                return host.copy(), inverse
        x = cp.asarray(host).view(cp.uint32)
        if isinstance(op, Xor):
            k.xor(np.uint32(op.key), x)
            inverse = op
        elif isinstance(op, Flip):
            y = cp.empty_like(x)
            k.flip(x, np.int64(n), np.int64(n ** (d - 1 - op.axis)), y)
            x, inverse = y, op
        elif isinstance(op, Rotate):
            y = cp.empty_like(x)
            k.rotate(
                x,
                np.int64(n),
                np.int64(n ** (d - 1 - a)),
                np.int64(n ** (d - 1 - b)),
                np.int32(turns),
                y,
            )
            x = y
        elif isinstance(op, Scale):
            factor = np.float32(op.factor)
            self._refuse_overflow(x, lambda v: v * float(factor), "scale")
            k.scale(factor, x.view(cp.float32))
            inverse = Scale(1.0 / float(factor))
        elif isinstance(op, Offset):
            value = np.float32(op.value)
            self._refuse_overflow(x, lambda v: v + float(value), "offset")
            k.offset(value, np.nextafter(value, np.float32(-np.inf)), x.view(cp.float32))
            inverse = Offset(-float(value))
        else:
            raise GpuFailure("unsupported", type(op).__name__)
        result: Field = x.view(cp.float32).get()
        return result, inverse

    def _refuse_overflow(self, bits: Any, image: Callable[[float], float], name: str) -> None:
        """transforms.py's overflow refusal: the image of the finite extremes must stay finite."""
        low, high, low_negative, high_negative = (int(r(bits)) for r in self._kernels.extremes)
        if low == _INF_BITS:
            high = _INF_BITS
        if low_negative == _INF_BITS:
            high_negative = _INF_BITS
        values = np.array([low, high, low_negative, high_negative], np.uint32).view(np.float32)
        finite = [float(v) for v in values[:2] if math.isfinite(v)]
        finite += [-float(v) for v in values[2:] if math.isfinite(v)]
        if any(abs(image(v)) > _F32_MAX for v in finite):
            raise FailedPrecondition(f"{name} would overflow float32 for some values of this field")

    def _path(
        self, grid: Grid, host: Field, s: int, t: int, cost: Cost, stop: threading.Event
    ) -> PathResult:
        digest = checksum(host)  # The host field is only read: before and after are one.
        unit = cost is Cost.UNIT
        algorithm = Algorithm.BFS if unit else Algorithm.DIJKSTRA
        path: npt.NDArray[np.uint32] | None
        if s == t:
            path = np.array([s], np.uint32)
            method, extra, visited = "closed_form", 0, 0
        elif unit:
            path, extra, visited = self._bfs(grid, host, s, t, stop)
            method = "gpu_frontier_bfs"
        else:
            path, extra, visited = self._shortest(grid, host, s, t, stop)
            method = "gpu_relaxation"
        if path is None:
            start, end = grid.coordinates_of(s), grid.coordinates_of(t)
            raise NotFound(
                f"no path from start to end: {start} and {end} are not connected"
                " through open vertices"
            )
        hops = int(path.size) - 1
        return PathResult(
            vertices=path,
            hops=hops,
            cost=float(hops) if unit else gpu_kernels.path_cost(host, path),
            algorithm=algorithm,
            method=method,
            checksum_before=digest,
            checksum_after=digest,
            extra_bytes=extra,
            visited=visited,
        )

    def _bfs(
        self, grid: Grid, host: Field, s: int, t: int, stop: threading.Event
    ) -> tuple[npt.NDArray[np.uint32] | None, int, int]:
        """Level-synchronous BFS from s: one kernel per level, atomicCAS claims parents."""
        cp, vertices = self._cp, grid.vertex_count
        bits = cp.asarray(host).view(cp.uint32)
        parent = cp.full(vertices, -1, dtype=cp.int32)
        parent[s] = s
        frontier = cp.empty(vertices, dtype=cp.int32)
        following = cp.empty(vertices, dtype=cp.int32)
        frontier[0] = s
        counter = cp.zeros(2, dtype=cp.int32)
        strides = cp.asarray(np.array(grid.strides, dtype=np.int32))
        extra = parent.nbytes + frontier.nbytes + following.nbytes + bits.nbytes
        size, level, visited, found = 1, 0, 0, False
        while size and not found:
            if stop.is_set():
                raise _Stopped
            counter.fill(0)
            self._kernels.bfs_level(
                gpu_kernels.blocks(size),
                (gpu_kernels.BLOCK,),
                (
                    bits,
                    parent,
                    frontier,
                    np.int32(size),
                    following,
                    counter,
                    np.int32(grid.size),
                    np.int32(grid.dimensions),
                    strides,
                    np.int32(t),
                ),
            )
            visited += size
            level += 1
            size, found_flag = (int(v) for v in counter.get())
            found = bool(found_flag)
            frontier, following = following, frontier
        if not found:
            return None, extra, visited
        return gpu_kernels.bfs_trace(parent.get(), t, level), extra + 4 * vertices, visited

    def _shortest(
        self, grid: Grid, host: Field, s: int, t: int, stop: threading.Event
    ) -> tuple[npt.NDArray[np.uint32] | None, int, int]:
        """Frontier Bellman-Ford: each round relaxes the vertices whose key fell last round."""
        cp, vertices = self._cp, grid.vertex_count
        bits = cp.asarray(host).view(cp.uint32)
        keys = cp.full(vertices, gpu_kernels.UNREACHED, dtype=cp.uint64)
        keys[s] = 0
        queued = cp.zeros(vertices, dtype=cp.uint32)
        frontier = cp.empty(vertices, dtype=cp.int32)
        following = cp.empty(vertices, dtype=cp.int32)
        frontier[0] = s
        counter = cp.zeros(1, dtype=cp.int32)
        strides = cp.asarray(np.array(grid.strides, dtype=np.int32))
        extra = bits.nbytes + keys.nbytes + queued.nbytes + frontier.nbytes + following.nbytes
        size, visited = 1, 0
        while size:
            if stop.is_set():
                raise _Stopped
            counter.fill(0)
            grid_dim = gpu_kernels.blocks(size)
            self._kernels.clear_queued(
                grid_dim, (gpu_kernels.BLOCK,), (frontier, np.int32(size), queued)
            )
            self._kernels.relax_round(
                grid_dim,
                (gpu_kernels.BLOCK,),
                (
                    bits,
                    keys,
                    frontier,
                    np.int32(size),
                    following,
                    counter,
                    queued,
                    np.int32(grid.size),
                    np.int32(grid.dimensions),
                    strides,
                    np.int32(t),
                ),
            )
            visited += size
            size = int(counter.get()[0])
            frontier, following = following, frontier
        host_keys = keys.get()
        if host_keys[t] == gpu_kernels.UNREACHED:
            return None, extra, visited
        if not math.isfinite(float(np.uint32(host_keys[t] >> np.uint64(32)).view(np.float32))):
            raise GpuFailure("declined", "the path's float32 cost overflows")
        path = gpu_kernels.walk_back(
            host_keys, host, grid.size, np.array(grid.strides, np.int64), s, t
        )
        if path is None:
            raise GpuFailure("kernel_error", "relaxation keys are inconsistent")
        return path, extra + host_keys.nbytes, visited


def _host_field(field: FieldLike, vertices: int) -> Field:
    array = field if isinstance(field, np.ndarray) else np.frombuffer(field, dtype=FIELD_DTYPE)
    if array.dtype != FIELD_DTYPE or array.shape != (vertices,):
        raise ValueError(f"the field must be {vertices} {FIELD_DTYPE} values")
    return np.ascontiguousarray(array)


def _device_name(cp: Any) -> str:
    try:
        properties = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        name = properties["name"]
        return name.decode() if isinstance(name, bytes) else str(name)
    except Exception:
        return "an unnamed CUDA device"
