"""CATALYTIC shortest paths (UNIT cost): the field's free sign bits are the search's visited set.

Every open vertex has its sign bit clear (that is what open means), so setting it marks the vertex
as seen — and, conveniently, makes it look blocked to the search itself. What a mark cannot do is
say who set it: an original negative value and a marked open value look alike, so the field can
only be restored by clearing exactly the vertices the search marked, and the search must know
them without a V-sized list. Three facts make that possible:

1. Lattices are bipartite, so a BFS level L(k+1) is adjacent only to L(k) and L(k+2). A BFS needs
   only the window L(k-1), L(k), L(k+1) marked to expand L(k) correctly: older levels are
   unmarked (from the stored level list) as soon as L(k+1) exists. Marks never cover more than
   three levels, and each is stored as an explicit list, so restoring is exact.
2. Two searches, one from each end, keep their own windows; only the side that is expanding has
   its window marked (switching sides unmarks one window and re-marks the other from its lists).
   After a side's step, a vertex of the other side's frontier that is now marked lies in the new
   level: the balls have just met, at a vertex m with dist(s, m) = a and dist(m, t) = b, and
   since they had not met one step earlier, a + b = D, the distance.
3. Divide and conquer rebuilds the path from such meeting points alone (Hirschberg's trick):
   the meeting vertex m is path[a]; recurse on (s, m) and (m, t) with their distances known.
   Each side's radius is capped at D' - max(1, D' // 4) for a piece of length D', so the pieces
   shrink geometrically (depth about log_{4/3} D) and every piece strictly shrinks.

Extra memory: two level-window buffers of int32 vertex indices (three BFS levels each, sized to
the largest window seen, starting at about 4 * V^((d-1)/d) and doubling on demand — a kernel
that runs out first clears its marks and returns, so the field is clean whenever Python code
runs), a 2 KiB segment stack, and the returned path. On 100^3 with 20% blocked, corner to
corner: 322 KB, against 5 MB for the bidirectional BFS (1 byte of state and a 4-byte queue slot
per vertex) and 4 MB for the field itself. Time: the first bidirectional search plus
geometrically smaller ones for the pieces — there, 1.7x the expansions and about twice the time
of the bidirectional BFS.

The field is restored bit for bit: checksums are taken before and after, and a mismatch raises
FieldNotRestoredError instead of returning (the caller must then treat its in-memory field as
lost). While the search runs the field is in use: nobody else may read or write it meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from services.lattice.engine.field import OPEN_LIMIT, SIGN_BIT, Field, checksum
from services.lattice.engine.path_kernels import I64Array, U32Array

_CLEAR = np.uint32(0x7FFF_FFFF)
_FOUND, _UNREACHABLE, _OVERFLOW, _BROKEN = 0, 1, 2, 3
# Pieces shrink to at most 3/4 (+1) per level, so 2**24 vertices need fewer than 70 levels.
_STACK_SEGMENTS = 128
# Initial window buffer: WINDOW_FACTOR * V^((d-1)/d) entries (a BFS level of an unblocked cube
# is at most about a cross-section), at least MIN_WINDOW and at most V.
WINDOW_FACTOR = 4
MIN_WINDOW = 1024

I32Array = npt.NDArray[np.int32]


class FieldNotRestoredError(RuntimeError):
    """The field's checksum after a catalytic search differs from before: an internal fault."""


@njit(cache=True)
def _mark(bits, buf, lo, hi):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        bits[buf[i]] |= SIGN_BIT


@njit(cache=True)
def _unmark(bits, buf, lo, hi):  # type: ignore[no-untyped-def]
    for i in range(lo, hi):
        bits[buf[i]] &= _CLEAR


@njit(cache=True)
def _advance(bits, size, strides, bx, plen, clen, by, yp, yc):  # type: ignore[no-untyped-def]
    """One level for side X, whose window bx[0 : plen + clen] (previous, current) is marked.

    Claims and marks the new level after the current one, unmarks the previous level, then looks
    for a now-marked vertex in Y's frontier by[yp : yp + yc] and moves (current, new) to the
    front. Returns (status, new previous length, new current length, meeting vertex or -1).
    On overflow returns (_OVERFLOW, top, 0, -1) with bx[0 : top] still marked.
    """
    d = strides.size
    inv_size = 1.0 / size
    top = plen + clen
    cap = bx.size
    for j in range(plen, plen + clen):
        u = np.int64(bx[j])
        r = u
        for k in range(d - 1, -1, -1):
            q = np.int64((r + 0.5) * inv_size)
            c = r - q * size
            r = q
            for move in range(2):
                if move:
                    if c == 0:
                        continue
                    w = u - strides[k]
                else:
                    if c == size - 1:
                        continue
                    w = u + strides[k]
                if bits[w] < OPEN_LIMIT:
                    if top == cap:
                        return _OVERFLOW, top, 0, -1
                    bits[w] |= SIGN_BIT
                    bx[top] = w
                    top += 1
    _unmark(bits, bx, 0, plen)
    meet = -1
    for i in range(yp, yp + yc):
        if bits[by[i]] & SIGN_BIT:
            meet = int(by[i])
            break
    nlen = top - plen - clen
    for i in range(clen + nlen):
        bx[i] = bx[plen + i]
    return _FOUND, clen, nlen, meet


@njit(cache=True)
def _meet(bits, size, strides, src, dst, cap_a, cap_b, buf_a, buf_b):  # type: ignore[no-untyped-def]
    """Bidirectional windowed BFS from src and dst until the balls meet (see the module doc).

    Side radii stay within cap_a and cap_b (cap_a + cap_b >= the distance, when known).
    Returns (status, a, b, meeting vertex, expanded, overflowing side); every mark is cleared.
    """
    if src == dst:
        return _FOUND, 0, 0, src, 0, -1
    buf_a[0] = src
    buf_b[0] = dst
    # Typed (not literal) from the start, so that _advance compiles once.
    pa, ca, ra = np.int64(0), np.int64(1), np.int64(0)
    pb, cb, rb = np.int64(0), np.int64(1), np.int64(0)
    active = -1
    expanded = np.int64(0)
    while True:
        if ra >= cap_a:
            x = 1
        elif rb >= cap_b:
            x = 0
        else:
            x = 0 if ca <= cb else 1
        if active != x:
            if active == 0:
                _unmark(bits, buf_a, 0, pa + ca)
            elif active == 1:
                _unmark(bits, buf_b, 0, pb + cb)
            if x == 0:
                _mark(bits, buf_a, 0, pa + ca)
            else:
                _mark(bits, buf_b, 0, pb + cb)
            active = x
        if x == 0:
            expanded += ca
            status, pa, ca, meet = _advance(bits, size, strides, buf_a, pa, ca, buf_b, pb, cb)
            if status == _OVERFLOW:
                _unmark(bits, buf_a, 0, pa)
                return _OVERFLOW, 0, 0, -1, expanded, 0
            ra += 1
            done = meet >= 0 or ca == 0
            if done:
                _unmark(bits, buf_a, 0, pa + ca)
        else:
            expanded += cb
            status, pb, cb, meet = _advance(bits, size, strides, buf_b, pb, cb, buf_a, pa, ca)
            if status == _OVERFLOW:
                _unmark(bits, buf_b, 0, pb)
                return _OVERFLOW, 0, 0, -1, expanded, 1
            rb += 1
            done = meet >= 0 or cb == 0
            if done:
                _unmark(bits, buf_b, 0, pb + cb)
        if done:
            if meet < 0:
                return _UNREACHABLE, ra, rb, -1, expanded, -1
            return _FOUND, ra, rb, meet, expanded, -1


@njit(cache=True)
def _solve(bits, size, strides, path, stack, top, buf_a, buf_b):  # type: ignore[no-untyped-def]
    """Fills path[lo + 1 .. hi - 1] for every segment (lo, hi) on the stack, deepest first.

    A segment leaves the stack only once solved, so after an overflow the caller grows the
    buffers and calls again with the same stack. Returns (status, top, expanded, side).
    """
    expanded = 0
    while top > 0:
        lo = stack[2 * top - 2]
        hi = stack[2 * top - 1]
        length = hi - lo
        cap = length - max(1, length // 4)
        status, a, b, m, e, side = _meet(
            bits, size, strides, np.int64(path[lo]), np.int64(path[hi]), cap, cap, buf_a, buf_b
        )
        expanded += e
        if status == _OVERFLOW:
            return _OVERFLOW, top, expanded, side
        if status != _FOUND or a + b != length or a == 0 or b == 0:
            return _BROKEN, top, expanded, -1
        top -= 1
        mid = lo + a
        path[mid] = m
        for seg_lo, seg_hi in ((lo, mid), (mid, hi)):
            if seg_hi - seg_lo > 1:
                if top == stack.size // 2:
                    return _BROKEN, top, expanded, -1
                stack[2 * top] = seg_lo
                stack[2 * top + 1] = seg_hi
                top += 1
    return _FOUND, 0, expanded, -1


class _Buffers:
    """The two level-window buffers, grown (doubling, at most V) when a side runs out."""

    def __init__(self, dimensions: int, vertex_count: int) -> None:
        guess = WINDOW_FACTOR * round(vertex_count ** ((dimensions - 1) / dimensions))
        initial = min(vertex_count, max(MIN_WINDOW, guess))
        self.limit = vertex_count
        self.sides = [np.empty(initial, np.int32), np.empty(initial, np.int32)]

    def grow(self, side: int) -> None:
        old = self.sides[side]
        if old.size >= self.limit:
            # A window holds distinct vertices of one side, so V entries always suffice.
            raise RuntimeError("catalytic level window outgrew the vertex count")
        self.sides[side] = np.empty(min(self.limit, 2 * old.size), np.int32)

    @property
    def nbytes(self) -> int:
        return sum(int(b.nbytes) for b in self.sides)


@dataclass(frozen=True)
class CatalyticRun:
    """What a catalytic search found and what it cost."""

    path: U32Array | None  # None: end is not reachable from start
    expanded: int  # vertex expansions over every search, pieces included
    extra_bytes: int  # working memory beyond the borrowed field (the path not included)
    checksum_before: str
    checksum_after: str


def catalytic_path(
    field: Field, size: int, strides: I64Array, start: int, end: int
) -> CatalyticRun:
    """A shortest UNIT path found with the field's sign bits as the visited set.

    start != end, both open; field writable and C-contiguous. Raises FieldNotRestoredError
    (whatever else went wrong) if the field's checksum afterwards differs from before.
    """
    bits = field.reshape(-1).view(np.uint32)
    before = checksum(field)
    try:
        path, expanded, extra = _search(bits, size, strides, start, end)
    finally:
        after = checksum(field)
        if after != before:
            raise FieldNotRestoredError(
                f"field checksum changed during a catalytic search: {before} -> {after}"
            )
    return CatalyticRun(path, expanded, extra, before, after)


def _search(
    bits: U32Array, size: int, strides: I64Array, start: int, end: int
) -> tuple[U32Array | None, int, int]:
    """(path or None, expanded, extra bytes); kernels leave no marks behind when they return."""
    buffers = _Buffers(strides.size, bits.size)
    stack: I64Array = np.empty(2 * _STACK_SEGMENTS, np.int64)
    expanded = 0
    while True:
        status, a, b, m, e, side = _meet(
            bits, size, strides, start, end, bits.size, bits.size, *buffers.sides
        )
        expanded += int(e)
        if status != _OVERFLOW:
            break
        buffers.grow(int(side))
    if status == _UNREACHABLE:
        return None, expanded, buffers.nbytes + int(stack.nbytes)
    split, distance = int(a), int(a) + int(b)
    path: U32Array = np.empty(distance + 1, np.uint32)
    path[0], path[distance] = start, end
    segments = [(0, distance)]
    if 0 < split < distance:
        path[split] = m
        segments = [(0, split), (split, distance)]
    top = 0
    for lo, hi in segments:
        if hi - lo > 1:
            stack[2 * top], stack[2 * top + 1] = lo, hi
            top += 1
    while True:
        status, top, e, side = _solve(bits, size, strides, path, stack, top, *buffers.sides)
        expanded += int(e)
        if status != _OVERFLOW:
            break
        buffers.grow(int(side))
    if status != _FOUND:
        raise RuntimeError("catalytic path reconstruction lost its invariant")
    return path, expanded, buffers.nbytes + int(stack.nbytes)
