"""The GPU backend's logic that runs without a GPU: its permutation tables against transforms.py,
its shortest-path design (relaxation keys, walk back, float64 re-costing) emulated on the CPU,
and its routing answers. The kernels themselves are tested in test_gpu.py, on a device."""

from __future__ import annotations

import itertools
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.common.errors import NotFound
from services.lattice.engine import gpu_kernels
from services.lattice.engine.backends import Work
from services.lattice.engine.fills import (
    GOLDEN,
    U64_MASK,
    RandomFill,
    make_field,
    random_parameters,
)
from services.lattice.engine.geometry import Grid
from services.lattice.engine.gpu import GpuBackend, load_cupy
from services.lattice.engine.paths import Algorithm, Cost, find_path
from services.lattice.engine.transforms import (
    Flip,
    Normalize,
    Offset,
    Rotate,
    Scale,
    TransformOp,
    Xor,
    apply_transform,
)

Field = npt.NDArray[np.float32]
OPEN = 0x7F80_0000


def test_the_module_imports_and_probes_cleanly_without_a_device() -> None:
    if load_cupy() is not None:
        pytest.skip("a GPU is present here")
    assert GpuBackend.probe() is None


# The gather tables the ROTATE and FLIP kernels are generated from


def gather(expression_a: str, expression_b: str, grid: Grid, a: int, b: int) -> npt.NDArray:
    """Evaluates the kernel's source-coordinate expressions with numpy, as the kernel would."""
    n = grid.size
    i = np.arange(grid.vertex_count, dtype=np.int64)
    sa, sb = grid.strides[a], grid.strides[b]
    xa, xb = (i // sa) % n, (i // sb) % n
    base = i - xa * sa - xb * sb
    scope = {"n": n, "xa": xa, "xb": xb}
    ya = eval(expression_a, {}, scope)
    yb = eval(expression_b, {}, scope)
    return base + ya * sa + yb * sb


@pytest.mark.parametrize(("dimensions", "size"), [(2, 5), (3, 4), (4, 3), (3, 2)])
def test_rotate_sources_are_the_engines_rotation(dimensions: int, size: int) -> None:
    grid = Grid.of(dimensions, size)
    field = np.arange(grid.vertex_count, dtype=np.float32) + 1
    for a, b in itertools.permutations(range(dimensions), 2):
        for turns in range(-5, 6):
            expected = field.copy()
            apply_transform(grid, expected, Rotate(a, b, turns))
            # The backend's normalisation: a > b is the other way round from b to a.
            k, low, high = turns % 4, a, b
            if low > high:
                low, high, k = high, low, (4 - k) % 4
            if k == 0:
                assert expected.tobytes() == field.tobytes()
                continue
            source = gather(*gpu_kernels.ROTATE_SOURCES[k], grid, low, high)
            assert field[source].tobytes() == expected.tobytes(), (a, b, turns)


@pytest.mark.parametrize(("dimensions", "size"), [(1, 7), (2, 5), (3, 4), (4, 3)])
def test_flip_source_is_the_engines_flip(dimensions: int, size: int) -> None:
    grid = Grid.of(dimensions, size)
    field = np.arange(grid.vertex_count, dtype=np.float32) + 1
    for axis in range(dimensions):
        expected = field.copy()
        apply_transform(grid, expected, Flip(axis))
        i = np.arange(grid.vertex_count, dtype=np.int64)
        inner = grid.strides[axis]
        c = (i // inner) % size
        source = eval(gpu_kernels.FLIP_SOURCE, {}, {"i": i, "n": size, "c": c, "inner": inner})
        assert field[source].tobytes() == expected.tobytes()


# The FIELD-cost design: relaxation rounds on 64-bit keys, then the walk back


def neighbours(grid: Grid, v: int) -> list[int]:
    out = []
    for stride in grid.strides:
        c = (v // stride) % grid.size
        if c > 0:
            out.append(v - stride)
        if c < grid.size - 1:
            out.append(v + stride)
    return out


def emulate_relaxation(grid: Grid, field: Field, s: int, t: int, seed: int) -> np.ndarray:
    """The relax_round kernel's rounds, one thread at a time in a shuffled order (any order is
    a schedule the GPU may run): keys = (float32 distance bits << 32) | hops."""
    bits = field.view(np.uint32)
    keys = np.full(grid.vertex_count, gpu_kernels.UNREACHED, dtype=np.uint64)
    keys[s] = 0
    frontier = [s]
    shuffle = random.Random(seed).shuffle
    while frontier:
        shuffle(frontier)
        following: list[int] = []
        queued: set[int] = set()
        for u in frontier:
            ku = int(keys[u])
            du = np.array([ku >> 32], np.uint32).view(np.float32)[0]
            hops = (ku & 0xFFFF_FFFF) + 1
            bound = int(keys[t]) >> 32
            for w in neighbours(grid, u):
                if bits[w] >= OPEN:
                    continue
                nd = int(np.array([du + field[w]], np.float32).view(np.uint32)[0])
                if nd > bound:
                    continue
                candidate = (nd << 32) | hops
                if candidate < int(keys[w]):
                    keys[w] = candidate
                    if w not in queued:
                        queued.add(w)
                        following.append(w)
        frontier = following
    return keys


FIELD_VALUES = st.one_of(
    st.just(0.0),  # free vertices make zero-cost plateaus, where a careless walk would cycle
    st.just(1e-30),  # too small to change a float32 sum: plateaus again
    st.floats(0.0, 4.0, width=32),
    st.just(float("inf")),  # blocked
    st.just(-1.0),  # blocked
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dimensions=st.integers(1, 3),
    size=st.integers(2, 6),
    data=st.data(),
    seed=st.integers(0, 2**16),
)
def test_relaxation_keys_walk_back_to_an_optimal_path(
    dimensions: int, size: int, data: st.DataObject, seed: int
) -> None:
    grid = Grid.of(dimensions, size)
    values = data.draw(
        st.lists(FIELD_VALUES, min_size=grid.vertex_count, max_size=grid.vertex_count)
    )
    field = np.array(values, dtype=np.float32)
    open_vertices = np.flatnonzero(field.view(np.uint32) < OPEN)
    if open_vertices.size < 2:
        return
    s, t = (int(v) for v in data.draw(st.permutations(open_vertices.tolist()))[:2])
    keys = emulate_relaxation(grid, field, s, t, seed)
    start, end = grid.coordinates_of(s), grid.coordinates_of(t)
    try:
        cpu = find_path(
            grid, field.copy(), start, end, algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD
        )
    except NotFound:
        assert keys[t] == gpu_kernels.UNREACHED
        return
    strides = np.array(grid.strides, dtype=np.int64)
    path = gpu_kernels.walk_back(keys, field, size, strides, s, t)
    assert path is not None
    assert path[0] == s
    assert path[-1] == t
    assert all(b in neighbours(grid, int(a)) for a, b in itertools.pairwise(path.tolist()))
    assert (field.view(np.uint32)[path] < OPEN).all()
    # The walk follows float32 sums exactly to the target's key ...
    total = np.float32(0)
    for v in path[1:]:
        total = np.float32(total + field[v])
    assert total.view(np.uint32) == int(keys[t]) >> 32
    # ... and its float64 re-costing is the CPU's optimum, to float32 accumulation error.
    cost = gpu_kernels.path_cost(field, path)
    assert cost == pytest.approx(cpu.cost, rel=1e-5, abs=1e-30)
    assert cost == sum(float(field[v]) for v in path[1:])


def test_path_cost_adds_in_path_order_like_the_cpu() -> None:
    field = np.array([0.0, 1e16, 1.0, -1e16, 1.0], dtype=np.float32)
    path = np.array([0, 1, 2], dtype=np.uint32)
    assert gpu_kernels.path_cost(field, path) == (0.0 + float(field[1])) + float(field[2])


def test_bfs_trace_follows_parents_from_the_target() -> None:
    parent = np.array([0, 0, 1, 2, -1], dtype=np.int32)
    assert gpu_kernels.bfs_trace(parent, 3, 3).tolist() == [0, 1, 2, 3]


# Which work the GPU takes


def bare_backend() -> GpuBackend:
    """The routing answers need no device: a backend object without its CuPy parts."""
    backend = GpuBackend.__new__(GpuBackend)
    backend._cooldown_until = 0.0
    return backend


def test_the_gpu_takes_only_what_its_kernels_implement() -> None:
    gpu = bare_backend()
    v = 1 << 20
    assert gpu.supports(Work("fill", v, fill=RandomFill(1, 0, 1, 0)))
    assert gpu.supports(Work("transform", v, op=Xor(1)))
    assert gpu.supports(Work("transform", v, op=Rotate(0, 1, 1)))
    assert gpu.supports(Work("transform", v, op=Scale(2)))
    assert not gpu.supports(Work("transform", v, op=Normalize()))
    assert not gpu.supports(Work("analysis", v))
    assert gpu.supports(Work("path", v, algorithm=Algorithm.BFS, cost=Cost.UNIT))
    # AUTO + UNIT is the CPU's closed form unless something is known to be blocked.
    assert not gpu.supports(Work("path", v, algorithm=Algorithm.AUTO, cost=Cost.UNIT))
    assert not gpu.supports(
        Work("path", v, algorithm=Algorithm.AUTO, cost=Cost.UNIT, blocked_count=0)
    )
    assert gpu.supports(Work("path", v, algorithm=Algorithm.AUTO, cost=Cost.UNIT, blocked_count=9))
    assert gpu.supports(Work("path", v, algorithm=Algorithm.DIJKSTRA, cost=Cost.FIELD))
    assert gpu.supports(Work("path", v, algorithm=Algorithm.AUTO, cost=Cost.FIELD))
    assert not gpu.supports(Work("path", v, algorithm=Algorithm.ASTAR, cost=Cost.FIELD))
    assert not gpu.supports(Work("path", v, algorithm=Algorithm.CATALYTIC, cost=Cost.UNIT))
    gpu._cooldown_until = float("inf")  # after a kernel error the GPU sits out
    assert not gpu.supports(Work("transform", v, op=Xor(1)))


def test_memory_needs_cover_each_kernels_arrays() -> None:
    gpu = bare_backend()
    v = 1000
    assert gpu.memory_need(Work("transform", v, op=Xor(1))) == 4 * v
    assert gpu.memory_need(Work("transform", v, op=Flip(0))) == 8 * v
    assert gpu.memory_need(Work("path", v, cost=Cost.UNIT)) == 16 * v
    assert gpu.memory_need(Work("path", v, cost=Cost.FIELD)) == 24 * v


# The kernels' CUDA bodies, compiled for the host (IEEE single precision, one rounding per
# operation, like the _rn intrinsics), against the engine: the arithmetic and index formulas
# the device will run, checked bit for bit without a device.

HARNESS = r"""
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#define __device__
#define __forceinline__ inline
using std::isfinite; using std::signbit;
static inline float __fmul_rn(float a, float b) { volatile float r = a * b; return r; }
static inline float __fadd_rn(float a, float b) { volatile float r = a + b; return r; }
static inline float __fsub_rn(float a, float b) { volatile float r = a - b; return r; }
static inline float __uint2float_rn(unsigned int x) { return (float)x; }
static inline float __int_as_float(int x) { float f; std::memcpy(&f, &x, 4); return f; }
static inline float as_float(const char* s) {
    unsigned int b = std::strtoul(s, 0, 10); float f; std::memcpy(&f, &b, 4); return f;
}
MIX
int main(int argc, char** argv) {
    int which = std::atoi(argv[1]);
    long long count = std::atoll(argv[2]), n = std::atoll(argv[3]);
    long long sa = std::atoll(argv[4]), sb = std::atoll(argv[5]), inner = sa;
    int turns = std::atoi(argv[6]);
    float p = as_float(argv[7]), q = as_float(argv[8]), r = as_float(argv[9]);
    unsigned long long base_value = std::strtoull(argv[10], 0, 10);
    unsigned long long base_blocked = std::strtoull(argv[11], 0, 10);
    unsigned long long step = std::strtoull(argv[12], 0, 10), first = 0;
    unsigned int threshold = std::strtoul(argv[13], 0, 10);
    std::vector<float> field(count);
    std::vector<unsigned int> gathered(count);
    if (which != 4) std::fread(field.data(), 4, count, stdin);
    const unsigned int* src = reinterpret_cast<const unsigned int*>(field.data());
    for (long long i = 0; i < count; ++i) {
        float& x = field[i];
        unsigned int& dst = gathered[i];
        if (which == 0) {
            float factor = p;
            if (isfinite(x)) x = __fmul_rn(x, factor);
        } else if (which == 1) {
            float value = p, below_value = q;
            OFFSET
        } else if (which == 2) {
            ROTATE
        } else if (which == 3) {
            long long c = (i / inner) % n;
            dst = src[FLIP];
        } else {
            float& out = x, low = p, span = q, below_high = r;
            RANDOM_FILL
        }
    }
    std::fwrite(which == 2 || which == 3 ? (void*)gathered.data() : (void*)field.data(), 4, count,
                stdout);
    return 0;
}
"""


@pytest.fixture(scope="module")
def host_kernels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        pytest.skip("needs a C++ compiler")
    source = (
        HARNESS.replace("MIX", gpu_kernels._MIX)
        .replace("OFFSET", gpu_kernels._OFFSET)
        .replace("ROTATE", gpu_kernels._ROTATE)
        .replace("FLIP", gpu_kernels.FLIP_SOURCE)
        .replace("RANDOM_FILL", gpu_kernels._RANDOM_FILL)
    )
    folder = tmp_path_factory.mktemp("host_kernels")
    (folder / "kernels.cpp").write_text(source)
    binary = folder / "kernels"
    subprocess.run(
        [compiler, "-O2", "-ffp-contract=off", "-o", str(binary), str(folder / "kernels.cpp")],
        check=True,
    )
    return binary


def bits(value: float) -> str:
    return str(int(np.float32(value).view(np.uint32)))


def run_host(binary: Path, which: int, field: Field | None, count: int, **kw: Any) -> bytes:
    args = [
        which, count, kw.get("n", 0), kw.get("sa", 0), kw.get("sb", 0), kw.get("turns", 0),
        bits(kw.get("p", 0.0)), bits(kw.get("q", 0.0)), bits(kw.get("r", 0.0)),
        kw.get("base_value", 0), kw.get("base_blocked", 0), kw.get("step", 0),
        kw.get("threshold", 0),
    ]  # fmt: skip
    done = subprocess.run(
        [str(binary), *map(str, args)],
        input=b"" if field is None else field.tobytes(),
        capture_output=True,
        check=True,
    )
    return done.stdout


def noisy(grid: Grid, seed: int) -> Field:
    rng = np.random.default_rng(seed)
    field = rng.standard_normal(grid.vertex_count) * 10.0 ** rng.integers(-3, 4, grid.vertex_count)
    field = field.astype(np.float32)
    special = [0, 0x8000_0000, 0x7F80_0000, 0xFF80_0000, 0x7FC0_0000, 0xFFC0_0001, 0x7F80_0001,
               0xFFBF_FFFF, 0x0000_0001, 0x8000_0001, 0x0080_0000]  # fmt: skip
    field.view(np.uint32)[rng.choice(grid.vertex_count, 44)] = np.resize(special, 44)
    return field


@pytest.mark.parametrize(("dimensions", "size"), [(2, 33), (3, 20), (4, 9)])
def test_transform_bodies_are_bit_exact_on_the_host(
    host_kernels: Path, dimensions: int, size: int
) -> None:
    grid = Grid.of(dimensions, size)
    field = noisy(grid, size)
    count = grid.vertex_count

    def engine(op: TransformOp) -> bytes:
        out = field.copy()
        apply_transform(grid, out, op)
        return out.tobytes()

    for factor in (2.0, -0.3, 1e-20):
        assert run_host(host_kernels, 0, field, count, p=factor) == engine(Scale(factor))
    for value in (1.5, -2.25, 1e-40):
        below = np.nextafter(np.float32(value), np.float32(-np.inf))
        got = run_host(host_kernels, 1, field, count, p=value, q=below)
        assert got == engine(Offset(value))
    for a, b in itertools.permutations(range(dimensions), 2):
        for turns in (1, 2, 3):
            low, high, k = (a, b, turns) if a < b else (b, a, (4 - turns) % 4)
            sa, sb = grid.strides[low], grid.strides[high]
            got = run_host(host_kernels, 2, field, count, n=size, sa=sa, sb=sb, turns=k)
            assert got == engine(Rotate(a, b, turns)), (a, b, turns)
    for axis in range(dimensions):
        got = run_host(host_kernels, 3, field, count, n=size, sa=grid.strides[axis])
        assert got == engine(Flip(axis))


@pytest.mark.parametrize(
    "fill",
    [
        RandomFill(seed=0, low=0.0, high=1.0, blocked_fraction=0.0),
        RandomFill(seed=7, low=0.5, high=3.0, blocked_fraction=0.25),
        RandomFill(seed=2**64 - 1, low=1e-3, high=1e30, blocked_fraction=0.999),
        RandomFill(seed=123456789, low=1.0, high=1.0000001, blocked_fraction=0.5),
    ],
    ids=repr,
)
def test_random_fill_body_is_bit_exact_on_the_host(host_kernels: Path, fill: RandomFill) -> None:
    grid = Grid.of(3, 70)  # beyond one CPU chunk (2**18 vertices)
    parameters = random_parameters(fill)
    got = run_host(
        host_kernels,
        4,
        None,
        grid.vertex_count,
        p=parameters.low,
        q=parameters.span,
        r=parameters.below_high,
        base_value=(parameters.seed + GOLDEN) & U64_MASK,
        base_blocked=(parameters.seed + 2 * GOLDEN) & U64_MASK,
        step=(2 * GOLDEN) & U64_MASK,
        threshold=parameters.threshold,
    )
    assert got == make_field(grid, fill).tobytes()
