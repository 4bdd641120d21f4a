"""The GPU backend's CUDA kernels (built through CuPy on first use) and its host-side helpers.

Bit-exactness with the CPU engine:
- XOR, FLIP and ROTATE move raw uint32 bits; ROTATE and FLIP gather each output vertex from the
  source vertex given by `ROTATE_SOURCES` / `FLIP_SOURCE`, the same permutation as transforms.py.
- SCALE, OFFSET and the random fill do float32 arithmetic with one rounding per operation
  (`__fmul_rn`, `__fadd_rn`, `__fsub_rn`: never a fused multiply-add), in the CPU's order.
- Shortest paths (FIELD cost) accumulate in float32 here against float64 on the CPU, so the
  GPU's choice among near-equal paths may differ in the last bits; the backend re-costs the
  returned path in float64, in path order, exactly as the CPU reports a cost.

The shortest-path kernel keeps one 64-bit key per vertex, (float32 distance bits << 32) | hops,
and lowers it with atomicMin: non-negative float32 values order like their bit patterns, so the
key orders by distance, then by hop count. `walk_back` turns the converged keys into a path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

OPEN_LIMIT = 0x7F80_0000
UNREACHED = np.uint64(0xFFFF_FFFF_FFFF_FFFF)
BLOCK = 256

# A quarter turn in the plane of axes a < b: output (x_a, x_b) reads source (y_a, y_b), for
# k = 1, 2, 3 turns (np.rot90's direction, as transforms.py states).
ROTATE_SOURCES: dict[int, tuple[str, str]] = {
    1: ("xb", "n - 1 - xa"),
    2: ("n - 1 - xa", "n - 1 - xb"),
    3: ("n - 1 - xb", "xa"),
}
# FLIP along an axis whose stride is `inner`: output i reads source i + (n - 1 - 2c) * inner,
# where c = (i / inner) % n is i's coordinate on that axis.
FLIP_SOURCE = "i + (n - 1 - 2 * c) * inner"

_MIX = r"""
__device__ __forceinline__ unsigned long long lattice_mix64(unsigned long long z) {
    z ^= z >> 30; z *= 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 27; z *= 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z;
}
"""

_RANDOM_FILL = r"""
unsigned long long index = first + (unsigned long long)i;
unsigned long long a = lattice_mix64(index * step + base_value);
unsigned long long b = lattice_mix64(index * step + base_blocked);
if ((unsigned int)(b >> 40) < threshold) {
    out = __int_as_float(0x7f800000);
} else {
    float u = __fmul_rn(__uint2float_rn((unsigned int)(a >> 40)), 5.9604644775390625e-8f);
    out = fminf(__fadd_rn(low, __fmul_rn(span, u)), below_high);
}
"""

_OFFSET = r"""
if (isfinite(x)) {
    float y = __fadd_rn(x, value);
    if (signbit(x) && !signbit(__fsub_rn(y, value))) y = below_value;
    x = y;
}
"""

_ROTATE = (
    "long long xa = (i / sa) % n, xb = (i / sb) % n;\n"
    "long long base = i - xa * sa - xb * sb, ya, yb;\n"
    + "".join(
        f"{'if' if k == 1 else 'else if'} (turns == {k}) {{ ya = {ya}; yb = {yb}; }}\n"
        for k, (ya, yb) in ROTATE_SOURCES.items()
    )
    + "else { ya = xa; yb = xb; }\n"
    "dst = src[base + ya * sa + yb * sb];\n"
)

_SEARCH = r"""
#define OPEN_LIMIT 0x7F800000u

__device__ __forceinline__ int lattice_coordinate(int u, int stride, int n) {
    return (u / stride) % n;
}

extern "C" __global__ void bfs_level(
    const unsigned int* bits, int* parent, const int* frontier, int size, int* next,
    int* counter, int n, int d, const int* strides, int target)
{
    int t = blockDim.x * blockIdx.x + threadIdx.x;
    if (t >= size) return;
    int u = frontier[t];
    for (int k = 0; k < d; ++k) {
        int stride = strides[k];
        int c = lattice_coordinate(u, stride, n);
        for (int side = 0; side < 2; ++side) {
            if (side == 0 ? c == 0 : c == n - 1) continue;
            int w = side == 0 ? u - stride : u + stride;
            if (parent[w] != -1 || bits[w] >= OPEN_LIMIT) continue;
            if (atomicCAS(&parent[w], -1, u) == -1) {
                next[atomicAdd(&counter[0], 1)] = w;
                if (w == target) counter[1] = 1;
            }
        }
    }
}

extern "C" __global__ void clear_queued(const int* frontier, int size, unsigned int* queued)
{
    int t = blockDim.x * blockIdx.x + threadIdx.x;
    if (t < size) queued[frontier[t]] = 0u;
}

extern "C" __global__ void relax_round(
    const unsigned int* bits, unsigned long long* keys, const int* frontier, int size,
    int* next, int* counter, unsigned int* queued, int n, int d, const int* strides, int target)
{
    int t = blockDim.x * blockIdx.x + threadIdx.x;
    if (t >= size) return;
    int u = frontier[t];
    unsigned long long ku = keys[u];
    float du = __uint_as_float((unsigned int)(ku >> 32));
    unsigned int hops = (unsigned int)ku + 1u;
    // Costs are non-negative: nothing dearer than the target's current distance can improve it.
    unsigned int bound = (unsigned int)(((volatile unsigned long long*)keys)[target] >> 32);
    for (int k = 0; k < d; ++k) {
        int stride = strides[k];
        int c = lattice_coordinate(u, stride, n);
        for (int side = 0; side < 2; ++side) {
            if (side == 0 ? c == 0 : c == n - 1) continue;
            int w = side == 0 ? u - stride : u + stride;
            unsigned int b = bits[w];
            if (b >= OPEN_LIMIT) continue;
            unsigned int nd = __float_as_uint(__fadd_rn(du, __uint_as_float(b)));
            if (nd > bound) continue;
            unsigned long long candidate = ((unsigned long long)nd << 32) | hops;
            if (candidate >= keys[w]) continue;
            if (candidate < atomicMin(&keys[w], candidate) && atomicExch(&queued[w], 1u) == 0u) {
                next[atomicAdd(&counter[0], 1)] = w;
            }
        }
    }
}
"""


class Kernels:
    """The compiled kernels for one CuPy module (compiled by NVRTC on first call, then cached)."""

    def __init__(self, cp: Any) -> None:
        self.xor = cp.ElementwiseKernel("uint32 key", "uint32 x", "x ^= key", "lattice_xor")
        self.scale = cp.ElementwiseKernel(
            "float32 factor",
            "float32 x",
            "if (isfinite(x)) x = __fmul_rn(x, factor);",
            "lattice_scale",
        )
        self.offset = cp.ElementwiseKernel(
            "float32 value, float32 below_value", "float32 x", _OFFSET, "lattice_offset"
        )
        self.flip = cp.ElementwiseKernel(
            "raw uint32 src, int64 n, int64 inner",
            "uint32 dst",
            f"long long c = (i / inner) % n; dst = src[{FLIP_SOURCE}];",
            "lattice_flip",
        )
        self.rotate = cp.ElementwiseKernel(
            "raw uint32 src, int64 n, int64 sa, int64 sb, int32 turns",
            "uint32 dst",
            _ROTATE,
            "lattice_rotate",
        )
        self.random_fill = cp.ElementwiseKernel(
            "uint64 base_value, uint64 base_blocked, uint64 step, float32 low, float32 span,"
            " float32 below_high, uint32 threshold, uint64 first",
            "float32 out",
            _RANDOM_FILL,
            "lattice_random_fill",
            preamble=_MIX,
        )
        # Finite extremes for the overflow check (transforms.py's `_refuse_overflow`): the
        # smallest and largest non-negative finite values' bits and the smallest and largest
        # magnitudes of finite negative ones; 0x7F800000 where there is none.
        # (The input is `v`: `a` and `b` are the reduction's own operands.)
        finite = "((v & 0x7FFFFFFFu) < 0x7F800000u)"
        self.extremes = [
            cp.ReductionKernel(
                "uint32 v",
                "uint32 y",
                f"({finite} && !(v >> 31)) ? v : {identity}",
                reduce,
                "y = a",
                identity,
                name,
            )
            for name, reduce, identity in (
                ("lattice_low", "min(a, b)", "0x7F800000u"),
                ("lattice_high", "max(a, b)", "0u"),
            )
        ] + [
            cp.ReductionKernel(
                "uint32 v",
                "uint32 y",
                f"({finite} && (v >> 31)) ? (v & 0x7FFFFFFFu) : {identity}",
                reduce,
                "y = a",
                identity,
                name,
            )
            for name, reduce, identity in (
                ("lattice_low_negative", "min(a, b)", "0x7F800000u"),
                ("lattice_high_negative", "max(a, b)", "0u"),
            )
        ]
        module = cp.RawModule(code=_SEARCH)
        self.bfs_level = module.get_function("bfs_level")
        self.clear_queued = module.get_function("clear_queued")
        self.relax_round = module.get_function("relax_round")


def blocks(count: int) -> tuple[int]:
    """A 1-D grid of BLOCK-thread blocks covering `count` threads."""
    return ((count + BLOCK - 1) // BLOCK,)


# Host side (numba, releasing the GIL: these run in the GPU backend's thread, next to the loop).


@njit(cache=True, nogil=True)
def _bfs_trace(parent, target, length, out):  # type: ignore[no-untyped-def]
    v = target
    for k in range(length, -1, -1):
        out[k] = v
        v = parent[v]


def bfs_trace(parent: npt.NDArray[np.int32], target: int, hops: int) -> npt.NDArray[np.uint32]:
    """The path start .. target from BFS parent links (the start is its own parent)."""
    out = np.empty(hops + 1, np.uint32)
    _bfs_trace(parent, target, hops, out)
    return out


@njit(cache=True, nogil=True)
def _walk_back(keys, distances, field, size, strides, start, target, out):  # type: ignore[no-untyped-def]
    d = strides.size
    v = target
    count = 0
    out[0] = v
    while v != start:
        kv = keys[v]
        fv = field[v]
        previous = -1
        for k in range(d):
            stride = strides[k]
            c = (v // stride) % size
            for side in range(2):
                if (c == 0) if side == 0 else (c == size - 1):
                    continue
                u = v - stride if side == 0 else v + stride
                if keys[u] < kv and distances[u] + fv == distances[v]:
                    previous = u
                    break
            if previous >= 0:
                break
        if previous < 0:
            return -1
        v = previous
        count += 1
        out[count] = v
    return count


def walk_back(
    keys: npt.NDArray[np.uint64],
    field: npt.NDArray[np.float32],
    size: int,
    strides: npt.NDArray[np.int64],
    start: int,
    target: int,
) -> npt.NDArray[np.uint32] | None:
    """The path start .. target from converged keys; None if the keys are inconsistent.

    Each step goes to a neighbour u with a smaller key and float32(dist[u] + field[v]) equal to
    dist[v]; one exists for every reached vertex but the start (the last key that lowered v
    came from such a u, and a later drop of u's key either keeps the equation or would have
    lowered v again), and keys strictly fall, so the walk ends at the start.
    """
    distances = (keys >> np.uint64(32)).astype(np.uint32).view(np.float32)
    out = np.empty(min(keys.size, 1 << 31), np.uint32) if keys.size else np.empty(0, np.uint32)
    count = int(_walk_back(keys, distances, field, size, strides, start, target, out))
    if count < 0:
        return None
    path: npt.NDArray[np.uint32] = out[count::-1].copy()
    return path


@njit(cache=True, nogil=True)
def _path_cost(field, path):  # type: ignore[no-untyped-def]
    total = 0.0
    for k in range(1, path.size):
        total += np.float64(field[path[k]])
    return total


def path_cost(field: npt.NDArray[np.float32], path: npt.NDArray[np.uint32]) -> float:
    """The float64 sum of field[v] over path[1:], added in path order (the CPU's convention)."""
    return float(_path_cost(field, path))
