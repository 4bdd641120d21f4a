"""Numba kernels for shortest paths on the implicit grid; neighbours come from index arithmetic.

Every kernel reads the field through its raw bits (a uint32 view): a vertex is open exactly when
`bits < OPEN_LIMIT` — sign bit clear and exponent not all ones — so one unsigned comparison covers
NaN, +-inf, negatives and -0.0. Per-vertex working arrays come from the caller, which counts
their bytes; the priority queues live inside the kernels and report the capacity they grew to.
Coordinates come from float multiplies rather than integer divisions (see `coordinates`).

Moves: move `j` in 0 .. 2d-1 steps along axis `j >> 1`, by `+stride` when `j` is even and by
`-stride` when odd, so the move back is `j ^ 1`. Parent links store the move from a vertex to its
parent in one byte.
"""

from __future__ import annotations

from typing import cast

import numpy as np
import numpy.typing as npt
from numba import njit

from services.lattice.engine.field import OPEN_LIMIT

# Priority searches: a settled vertex has this bit in its state byte; the low bits hold its parent
# move plus one (0 = not reached yet). Parent moves are below 2 * 10, so they never reach the bit.
SETTLED = np.uint8(0x80)
MOVE_MASK = np.uint8(0x7F)
ROOT = np.uint8(0x7F)

FOUND, UNREACHABLE, OUT_OF_BUDGET = 0, 1, 2
# Scans of the whole field work in chunks, so that each chunk vectorises and a hit exits early.
_CHUNK = 4096

U32Array = npt.NDArray[np.uint32]
F32Array = npt.NDArray[np.float32]
I64Array = npt.NDArray[np.int64]


@njit(cache=True)
def coordinates(u, size, inv_size, coord):  # type: ignore[no-untyped-def]
    """Writes the coordinates of vertex u into coord (last axis fastest).

    floor(r / size) by a float multiply, several times faster than an integer division: the
    fraction of (r + 0.5) / size stays at least 0.5 / size away from an integer, while float64
    rounding errs by about r / size * 2**-52, so for r < 2**31 the floor is exact.
    """
    r = u
    for k in range(coord.size - 1, -1, -1):
        q = np.int64((r + 0.5) * inv_size)
        coord[k] = r - q * size
        r = q


@njit(cache=True)
def step(v, move, strides):  # type: ignore[no-untyped-def]
    """The vertex one move away from v (the caller has checked the move stays on the grid)."""
    stride = strides[move >> 1]
    return v - stride if move & 1 else v + stride


@njit(cache=True)
def _max_bits(bits):  # type: ignore[no-untyped-def]
    """True when some vertex is blocked; stops at the first chunk holding one."""
    n = bits.size
    for lo in range(0, n, _CHUNK):
        top = np.uint32(0)
        for i in range(lo, min(lo + _CHUNK, n)):
            top = max(top, bits[i])
        if top >= OPEN_LIMIT:
            return True
    return False


@njit(cache=True)
def _uniform_open(bits):  # type: ignore[no-untyped-def]
    """True when every vertex holds the same open value (bit for bit)."""
    n = bits.size
    first = bits[0]
    if first >= OPEN_LIMIT:
        return False
    for lo in range(0, n, _CHUNK):
        diff = np.uint32(0)
        for i in range(lo, min(lo + _CHUNK, n)):
            diff |= bits[i] ^ first
        if diff != 0:
            return False
    return True


@njit(cache=True)
def _open_bits_range(bits):  # type: ignore[no-untyped-def]
    """(lowest, highest) bits of an open value; positive floats order as their bits do."""
    low = OPEN_LIMIT
    high = np.uint32(0)
    for i in range(bits.size):
        b = bits[i]
        is_open = b < OPEN_LIMIT
        low = min(low, b if is_open else OPEN_LIMIT)
        high = max(high, b if is_open else np.uint32(0))
    return low, high


def any_blocked(bits: U32Array) -> bool:
    """Whether any vertex is blocked; exits early on the first blocked chunk."""
    return bool(_max_bits(bits))


def uniform_open(bits: U32Array) -> bool:
    """Whether every vertex holds one and the same open value."""
    return bool(_uniform_open(bits))


def open_value_range(bits: U32Array) -> tuple[float, float]:
    """(smallest, largest) value of an open vertex; (inf, 0.0) when none is open."""
    low, high = _open_bits_range(bits)
    values = np.array([low, high], dtype=np.uint32).view(np.float32)
    return float(values[0]), float(values[1])


@njit(cache=True)
def _trace(state, strides, v, length, codes_lo, out, out_pos, direction):  # type: ignore[no-untyped-def]
    """Follows `length` parent moves from v; writes v first, at out_pos, then steps by direction."""
    for _ in range(length + 1):
        out[out_pos] = v
        out_pos += direction
        code = np.int64(state[v]) - codes_lo
        if code < 0 or code >= 2 * strides.size:
            break
        v = step(v, code, strides)


# BFS state byte: blocked vertices are cached here on first sight, so each field value is read
# once however many neighbours look at it.
BLOCKED = np.uint8(0xFF)


@njit(cache=True)
def _bfs_visit(bits, state, queue, w, code, other_lo, two_d, top, base, sign):  # type: ignore[no-untyped-def]
    """Claims w for the expanding side; returns (new top, whether w belongs to the other side)."""
    sw = state[w]
    if sw == 0:
        if bits[w] < OPEN_LIMIT:
            queue[base + sign * top] = w
            state[w] = np.uint8(code)
            return top + 1, False
        state[w] = BLOCKED
        return top, False
    return top, np.uint8(sw - other_lo) <= two_d


@njit(cache=True)
def _bfs_level(bits, size, strides, state, queue, j_lo, j_hi, base, sign, own_lo, other_lo):  # type: ignore[no-untyped-def]
    """Expands entries j_lo .. j_hi - 1 of one side; returns (new top, u, w), u >= 0 on contact.

    Entry j of a side lives at queue[base + sign * j]. The coordinates come out one axis at a
    time (last axis first) as the moves along that axis are tried, so none is stored.
    """
    d = strides.size
    two_d = 2 * d
    inv_size = 1.0 / size
    top = j_hi
    for j in range(j_lo, j_hi):
        u = np.int64(queue[base + sign * j])
        r = u
        for k in range(d - 1, -1, -1):
            # floor(r / size), exactly, as in `coordinates`.
            q = np.int64((r + 0.5) * inv_size)
            c = r - q * size
            r = q
            stride = strides[k]
            if c < size - 1:
                w = u + stride
                top, hit = _bfs_visit(
                    bits, state, queue, w, own_lo + 2 * k + 1, other_lo, two_d, top, base, sign
                )
                if hit:
                    return top, u, w
            if c > 0:
                w = u - stride
                top, hit = _bfs_visit(
                    bits, state, queue, w, own_lo + 2 * k, other_lo, two_d, top, base, sign
                )
                if hit:
                    return top, u, w
    return top, -1, -1


@njit(cache=True)
def _bidirectional_bfs(bits, size, strides, s, t, state, queue):  # type: ignore[no-untyped-def]
    """Bidirectional BFS, one whole level at a time, smaller frontier first.

    state[v]: 0 unseen, BLOCKED, 1 + move to parent on the start side (root 2d + 1), 2d + 2 + move
    on the end side (root 4d + 2). A side owns what it claims first. The start side's vertices sit
    at queue[0 ..], the end side's at queue[n - 1 ..] downwards; both together are at most n.

    The first edge found between the sides is on a shortest path: while none has been seen, each
    side's set is exactly its ball, the balls are disjoint and a + b < D; an edge (u, w) seen
    while expanding level a then gives D <= a + 1 + b, hence D = a + 1 + b.
    Returns (status, expanded, path).
    """
    n = state.size
    two_d = 2 * strides.size
    a_lo, b_lo = 1, two_d + 2
    state[s] = two_d + 1
    state[t] = 2 * two_d + 2
    queue[0] = s
    queue[n - 1] = t
    # Per side: [lo, hi) is the frontier's range of entries, radius its distance from the root.
    lo = np.zeros(2, np.int64)
    hi = np.ones(2, np.int64)
    radius = np.zeros(2, np.int64)
    base = np.array([0, n - 1], np.int64)
    sign = np.array([1, -1], np.int64)
    own = np.array([a_lo, b_lo], np.int64)
    expanded = 0
    while True:
        x = 0 if hi[0] - lo[0] <= hi[1] - lo[1] else 1
        top, u, w = _bfs_level(
            bits, size, strides, state, queue, lo[x], hi[x], base[x], sign[x], own[x], own[1 - x]
        )
        expanded += hi[x] - lo[x]
        if u >= 0:
            a_end, b_end = (u, w) if x == 0 else (w, u)
            ra, rb = radius[0], radius[1]
            path = np.empty(ra + rb + 2, np.uint32)
            _trace(state, strides, a_end, ra, a_lo, path, ra, np.int64(-1))
            _trace(state, strides, b_end, rb, b_lo, path, ra + 1, np.int64(1))
            return FOUND, expanded, path
        if top == hi[x]:
            return UNREACHABLE, expanded, np.empty(0, np.uint32)
        lo[x] = hi[x]
        hi[x] = top
        radius[x] += 1


def bidirectional_bfs(
    bits: U32Array,
    size: int,
    strides: I64Array,
    start: int,
    end: int,
    state: npt.NDArray[np.uint8],
    queue: npt.NDArray[np.int32],
) -> tuple[bool, int, U32Array]:
    """(found, vertices expanded, path) for UNIT cost; start != end, both open.

    state: n zeros; queue: n slots.
    """
    status, expanded, path = _bidirectional_bfs(bits, size, strides, start, end, state, queue)
    return status == FOUND, int(expanded), cast(U32Array, path)


# Priority searches' state byte: bit 7 = settled (blocked vertices are cached as settled, so one
# test skips both); low bits: 0 unseen, 1 + move to parent, or ROOT.
_SEARCH_BLOCKED = np.uint8(0xFE)


@njit(cache=True)
def _trace_to_root(state, strides, t):  # type: ignore[no-untyped-def]
    """The path root .. t by the parent moves in state's low bits."""
    hops = 0
    v = t
    while state[v] & MOVE_MASK != ROOT:
        v = step(v, (state[v] & MOVE_MASK) - 1, strides)
        hops += 1
    path = np.empty(hops + 1, np.uint32)
    v = t
    for i in range(hops, -1, -1):
        path[i] = v
        if i:
            v = step(v, (state[v] & MOVE_MASK) - 1, strides)
    return path


# Calendar queue (Dijkstra and A*): keys waiting in the queue lie within `window` (the dearest
# step, plus h_scale for A*) of the last key popped, so BUCKETS - 2 buckets of width
# window / (BUCKETS - 2) cover them without wrapping round. Only the current bucket is kept in
# order, in a small binary heap; later buckets are unsorted linked lists in a pool, and a bitmap
# finds the next non-empty one. Versus one binary heap this about halves Dijkstra's time.
BUCKETS = 4096
_BUCKET_MASK = BUCKETS - 1
_WORDS = BUCKETS // 64
_DEBRUIJN = np.uint64(0x03F7_9D71_B4CB_0A89)
_DEBRUIJN_INDEX = np.array(
    [
        0, 1, 48, 2, 57, 49, 28, 3, 61, 58, 50, 42, 38, 29, 17, 4,
        62, 55, 59, 36, 53, 51, 43, 22, 45, 39, 33, 30, 24, 18, 12, 5,
        63, 47, 56, 27, 60, 41, 37, 16, 54, 35, 52, 21, 44, 32, 23, 11,
        46, 26, 40, 15, 34, 20, 31, 10, 25, 14, 19, 9, 13, 8, 7, 6,
    ],
    dtype=np.int64,
)  # fmt: skip


@njit(cache=True)
def _lowest_bit(word):  # type: ignore[no-untyped-def]
    """Index of the lowest set bit of a non-zero uint64 (de Bruijn multiplication)."""
    low = word & (~word + np.uint64(1))
    return _DEBRUIJN_INDEX[(low * _DEBRUIJN) >> np.uint64(58)]


@njit(cache=True)
def _next_bucket(occupied, slot):  # type: ignore[no-untyped-def]
    """The first occupied bucket at or after slot, going round; the caller knows one exists."""
    w = slot >> 6
    word = occupied[w] & (np.uint64(0xFFFF_FFFF_FFFF_FFFF) << np.uint64(slot & 63))
    for _ in range(_WORDS + 1):
        if word != 0:
            return (w << 6) + _lowest_bit(word)
        w = (w + 1) % _WORDS
        word = occupied[w]
    return -1


@njit(cache=True)
def _empty_calendar():  # type: ignore[no-untyped-def]
    """(bucket list heads, all -1; occupancy bitmap, all clear).

    Filled by loops: numba compiles np.full and np.zeros noticeably slower.
    """
    head = np.empty(BUCKETS, np.int32)
    for i in range(BUCKETS):
        head[i] = -1
    occupied = np.empty(_WORDS, np.uint64)
    for i in range(_WORDS):
        occupied[i] = 0
    return head, occupied


@njit(cache=True)
def _heap_push(hk, hv, n, key, v):  # type: ignore[no-untyped-def]
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if hk[p] <= key:
            break
        hk[i] = hk[p]
        hv[i] = hv[p]
        i = p
    hk[i] = key
    hv[i] = v


@njit(cache=True)
def _heap_sift_down(hk, hv, n, i):  # type: ignore[no-untyped-def]
    key = hk[i]
    v = hv[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and hk[c + 1] < hk[c]:
            c += 1
        if hk[c] >= key:
            break
        hk[i] = hk[c]
        hv[i] = hv[c]
        i = c
    hk[i] = key
    hv[i] = v


@njit(cache=True)
def _grow_f64(a, used):  # type: ignore[no-untyped-def]
    # Element loops, not slice assignment: numba compiles slicing several times slower.
    b = np.empty(2 * a.size, np.float64)
    for i in range(used):
        b[i] = a[i]
    return b


@njit(cache=True)
def _grow_i32(a, used):  # type: ignore[no-untyped-def]
    b = np.empty(2 * a.size, np.int32)
    for i in range(used):
        b[i] = a[i]
    return b


@njit(cache=True)
def _dijkstra(vals, bits, size, strides, s, t, unit, window, state):  # type: ignore[no-untyped-def]
    """Dijkstra over a calendar queue.

    Entering v always costs field[v], so the first settled neighbour of v — the one with the
    least distance — already gives v its final distance: every vertex is queued once, with its
    distance as the key, and no distance array is needed.
    Returns (status, settled, heap capacity, pool capacity, cost, path).
    """
    d = strides.size
    inv_size = 1.0 / size
    # A window that small (or zero) gets one bucket: the calendar degenerates to a plain heap.
    inv_width = (BUCKETS - 2) / window if window > 1e-30 else 0.0
    head, occupied = _empty_calendar()
    pk = np.empty(1024, np.float64)
    pv = np.empty(1024, np.int32)
    pn = np.empty(1024, np.int32)
    used = 0
    free = -1
    pending = 0
    hk = np.empty(1024, np.float64)
    hv = np.empty(1024, np.int32)
    hk[0] = 0.0
    hv[0] = s
    n = 1
    current = 0
    state[s] = ROOT
    settled = 0
    while True:
        if n == 0:
            if pending == 0:
                return UNREACHABLE, settled, hk.size, pk.size, 0.0, np.empty(0, np.uint32)
            slot = _next_bucket(occupied, (current + 1) & _BUCKET_MASK)
            current += 1 + ((slot - current - 1) & _BUCKET_MASK)
            occupied[slot >> 6] &= ~(np.uint64(1) << np.uint64(slot & 63))
            e = head[slot]
            head[slot] = -1
            while e >= 0:
                if n == hk.size:
                    hk = _grow_f64(hk, n)
                    hv = _grow_i32(hv, n)
                hk[n] = pk[e]
                hv[n] = pv[e]
                n += 1
                nxt = pn[e]
                pn[e] = free
                free = e
                e = nxt
                pending -= 1
            for i in range((n - 2) // 2, -1, -1):
                _heap_sift_down(hk, hv, n, i)
        u = np.int64(hv[0])
        g = hk[0]
        n -= 1
        if n > 0:
            hk[0] = hk[n]
            hv[0] = hv[n]
            _heap_sift_down(hk, hv, n, 0)
        state[u] |= SETTLED
        settled += 1
        if u == t:
            return FOUND, settled, hk.size, pk.size, g, _trace_to_root(state, strides, t)
        r = u
        for k in range(d - 1, -1, -1):
            q = np.int64((r + 0.5) * inv_size)
            c = r - q * size
            r = q
            for move in range(2 * k, 2 * k + 2):
                if move & 1:
                    if c == 0:
                        continue
                    w = u - strides[k]
                else:
                    if c == size - 1:
                        continue
                    w = u + strides[k]
                if state[w] != 0:
                    continue
                if bits[w] >= OPEN_LIMIT:
                    state[w] = _SEARCH_BLOCKED
                    continue
                state[w] = np.uint8((move ^ 1) + 1)
                key = g + (1.0 if unit else np.float64(vals[w]))
                bucket = np.int64(key * inv_width)
                if bucket <= current:
                    if n == hk.size:
                        hk = _grow_f64(hk, n)
                        hv = _grow_i32(hv, n)
                    _heap_push(hk, hv, n, key, w)
                    n += 1
                    continue
                if free >= 0:
                    e = free
                    free = pn[e]
                else:
                    if used == pk.size:
                        pk = _grow_f64(pk, used)
                        pv = _grow_i32(pv, used)
                        pn = _grow_i32(pn, used)
                    e = used
                    used += 1
                slot = bucket & _BUCKET_MASK
                pk[e] = key
                pv[e] = w
                pn[e] = head[slot]
                head[slot] = e
                occupied[slot >> 6] |= np.uint64(1) << np.uint64(slot & 63)
                pending += 1


# Bytes per queue entry: heap (key float64, vertex int32), pool (the same plus a link).
HEAP_ENTRY_BYTES = 8 + 4
POOL_ENTRY_BYTES = 8 + 4 + 4
CALENDAR_BYTES = BUCKETS * 4 + _WORDS * 8


def dijkstra(
    field: F32Array,
    bits: U32Array,
    size: int,
    strides: I64Array,
    start: int,
    end: int,
    *,
    unit: bool,
    window: float,
    state: npt.NDArray[np.uint8],
) -> tuple[bool, int, int, float, U32Array]:
    """(found, settled, queue bytes, cost, path); start != end, both open.

    window: the largest step cost (1 for UNIT, else the largest open value); state: n zeros.
    """
    status, settled, heap_cap, pool_cap, cost, path = _dijkstra(
        field, bits, size, strides, start, end, unit, window, state
    )
    queue_bytes = heap_cap * HEAP_ENTRY_BYTES + pool_cap * POOL_ENTRY_BYTES + CALENDAR_BYTES
    return status == FOUND, int(settled), queue_bytes, float(cost), cast(U32Array, path)


# Dinitz's buckets (Dijkstra when every open value lies in [low, high] with low > 0): a vertex
# whose distance lies in the lowest non-empty bucket of width `low` is final, since any other way
# to it passes a vertex at least as far and then pays at least `low`. So a bucket is settled in
# the order its vertices came, with no heap, and distances relax through a float64 array: about
# 30% faster than the calendar queue on 100^3 (docs/performance.md), for 8 bytes a vertex. The
# width is a hair under `low` so that rounding never puts a vertex a bucket too low; at most
# DINITZ_MAX_BUCKETS buckets are live at once (high / low below that), in a ring.
DINITZ_MAX_BUCKETS = 64
_DINITZ_WIDTH_SHRINK = 1.0 - 1e-6
_RING_START = 1024


@njit(cache=True)
def _grow_ring(ring, counts):  # type: ignore[no-untyped-def]
    buckets, capacity = ring.shape
    bigger = np.empty((buckets, 2 * capacity), np.int32)
    for b in range(buckets):
        for i in range(counts[b]):
            bigger[b, i] = ring[b, i]
    return bigger


@njit(cache=True)
def _dinitz(vals, bits, size, strides, s, t, unit, low, high, state, dist):  # type: ignore[no-untyped-def]
    """Dijkstra over Dinitz's buckets; `dist` is n float64 of any content (written before read).

    Returns (status, settled, ring capacity in entries, cost, path).
    """
    d = strides.size
    inv_size = 1.0 / size
    inv_width = 1.0 / (low * _DINITZ_WIDTH_SHRINK)
    buckets = np.int64(high * inv_width) + 2
    ring = np.empty((buckets, _RING_START), np.int32)
    counts = np.zeros(buckets, np.int64)
    dist[s] = 0.0
    state[s] = ROOT
    ring[0, 0] = s
    counts[0] = 1
    pending = 1
    current = np.int64(0)
    settled = 0
    while pending > 0:
        slot = current % buckets
        i = 0
        while i < counts[slot]:  # rounding may still add to this bucket while it is read
            u = np.int64(ring[slot, i])
            i += 1
            if state[u] & SETTLED:
                continue  # settled from a lower bucket since it was queued here
            state[u] |= SETTLED
            settled += 1
            g = dist[u]
            if u == t:
                return FOUND, settled, ring.size, g, _trace_to_root(state, strides, t)
            r = u
            for k in range(d - 1, -1, -1):
                q = np.int64((r + 0.5) * inv_size)
                c = r - q * size
                r = q
                for move in range(2 * k, 2 * k + 2):
                    if move & 1:
                        if c == 0:
                            continue
                        w = u - strides[k]
                    else:
                        if c == size - 1:
                            continue
                        w = u + strides[k]
                    seen = state[w]
                    if seen & SETTLED:  # settled, or blocked (_SEARCH_BLOCKED has the bit)
                        continue
                    if seen == 0 and bits[w] >= OPEN_LIMIT:
                        state[w] = _SEARCH_BLOCKED
                        continue
                    nd = g + (1.0 if unit else np.float64(vals[w]))
                    b = np.int64(nd * inv_width)
                    if seen != 0:
                        if nd >= dist[w]:
                            continue
                        if b == np.int64(dist[w] * inv_width):
                            dist[w] = nd  # already queued in that bucket
                            state[w] = np.uint8((move ^ 1) + 1)
                            continue
                    dist[w] = nd
                    state[w] = np.uint8((move ^ 1) + 1)
                    if b < current:
                        b = current
                    slot_w = b % buckets
                    if counts[slot_w] == ring.shape[1]:
                        ring = _grow_ring(ring, counts)
                    ring[slot_w, counts[slot_w]] = w
                    counts[slot_w] += 1
                    pending += 1
        pending -= counts[slot]
        counts[slot] = 0
        current += 1
    return UNREACHABLE, settled, ring.size, 0.0, np.empty(0, np.uint32)


def dinitz_applies(low: float, high: float) -> bool:
    """Whether Dinitz's buckets fit values in [low, high]: a cheapest step above zero, and few
    enough buckets live at once."""
    return low > 0.0 and high / (low * _DINITZ_WIDTH_SHRINK) + 2 <= DINITZ_MAX_BUCKETS


def dinitz(
    field: F32Array,
    bits: U32Array,
    size: int,
    strides: I64Array,
    start: int,
    end: int,
    *,
    unit: bool,
    low: float,
    high: float,
    state: npt.NDArray[np.uint8],
    dist: npt.NDArray[np.float64],
) -> tuple[bool, int, int, float, U32Array]:
    """(found, settled, queue bytes, cost, path); start != end, both open, and
    dinitz_applies(low, high) (1, 1 for UNIT). state: n zeros; dist: n float64 (any content)."""
    status, settled, ring_entries, cost, path = _dinitz(
        field, bits, size, strides, start, end, unit, low, high, state, dist
    )
    return status == FOUND, int(settled), int(ring_entries) * 4, float(cost), cast(U32Array, path)


@njit(cache=True)
def _less(k1, t1, k2, t2):  # type: ignore[no-untyped-def]
    return k1 < k2 or (k1 == k2 and t1 < t2)


@njit(cache=True)
def _tied_sift_down(hk, ht, hv, n, i):  # type: ignore[no-untyped-def]
    key = hk[i]
    tie = ht[i]
    v = hv[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and _less(hk[c + 1], ht[c + 1], hk[c], ht[c]):
            c += 1
        if not _less(hk[c], ht[c], key, tie):
            break
        hk[i] = hk[c]
        ht[i] = ht[c]
        hv[i] = hv[c]
        i = c
    hk[i] = key
    ht[i] = tie
    hv[i] = v


@njit(cache=True)
def _tied_push(hk, ht, hv, n, key, tie, v):  # type: ignore[no-untyped-def]
    i = n
    while i > 0:
        p = (i - 1) >> 1
        if not _less(key, tie, hk[p], ht[p]):
            break
        hk[i] = hk[p]
        ht[i] = ht[p]
        hv[i] = hv[p]
        i = p
    hk[i] = key
    ht[i] = tie
    hv[i] = v


@njit(cache=True)
def _astar(  # type: ignore[no-untyped-def]
    vals, bits, size, strides, s, t, unit, h_scale, window, budget, dist, state, coord, target
):
    """A* with h = h_scale * manhattan(v, t) over the calendar queue, keys (g + h, h).

    h is consistent when h_scale is at most the cheapest step, so keys pop in order, stay within
    `window` (dearest step + h_scale) of the last one, and a vertex's first pop is final (closed
    set); a vertex reached again more cheaply is queued again. Ties go to the smaller h — the
    deeper vertex — which keeps A* from widening across plateaus. dist[v] is read only once
    state says v was reached, so it needs no filling. It gives up (OUT_OF_BUDGET) once it has
    settled `budget` vertices without reaching t.
    Returns (status, settled, heap capacity, pool capacity, cost, path).
    """
    d = strides.size
    inv_size = 1.0 / size
    inv_width = (BUCKETS - 2) / window if window > 1e-30 else 0.0
    head, occupied = _empty_calendar()
    pk = np.empty(1024, np.float64)
    pt = np.empty(1024, np.float64)
    pv = np.empty(1024, np.int32)
    pn = np.empty(1024, np.int32)
    used = 0
    free = -1
    pending = 0
    hk = np.empty(1024, np.float64)
    ht = np.empty(1024, np.float64)
    hv = np.empty(1024, np.int32)
    coordinates(t, size, inv_size, target)
    coordinates(s, size, inv_size, coord)
    man = 0
    for k in range(d):
        man += abs(coord[k] - target[k])
    hk[0] = h_scale * man
    ht[0] = hk[0]
    hv[0] = s
    n = 1
    current = np.int64(hk[0] * inv_width)
    dist[s] = 0.0
    state[s] = ROOT
    settled = 0
    while True:
        if n == 0:
            if pending == 0:
                return UNREACHABLE, settled, hk.size, pk.size, 0.0, np.empty(0, np.uint32)
            slot = _next_bucket(occupied, (current + 1) & _BUCKET_MASK)
            current += 1 + ((slot - current - 1) & _BUCKET_MASK)
            occupied[slot >> 6] &= ~(np.uint64(1) << np.uint64(slot & 63))
            e = head[slot]
            head[slot] = -1
            while e >= 0:
                if n == hk.size:
                    hk = _grow_f64(hk, n)
                    ht = _grow_f64(ht, n)
                    hv = _grow_i32(hv, n)
                hk[n] = pk[e]
                ht[n] = pt[e]
                hv[n] = pv[e]
                n += 1
                nxt = pn[e]
                pn[e] = free
                free = e
                e = nxt
                pending -= 1
            for i in range((n - 2) // 2, -1, -1):
                _tied_sift_down(hk, ht, hv, n, i)
        u = np.int64(hv[0])
        n -= 1
        if n > 0:
            hk[0] = hk[n]
            ht[0] = ht[n]
            hv[0] = hv[n]
            _tied_sift_down(hk, ht, hv, n, 0)
        su = state[u]
        if su & SETTLED:
            continue
        state[u] = su | SETTLED
        settled += 1
        g = dist[u]
        if u == t:
            return FOUND, settled, hk.size, pk.size, g, _trace_to_root(state, strides, t)
        if settled >= budget:
            return OUT_OF_BUDGET, settled, hk.size, pk.size, 0.0, np.empty(0, np.uint32)
        coordinates(u, size, inv_size, coord)
        man = 0
        for k in range(d):
            man += abs(coord[k] - target[k])
        for move in range(2 * d):
            k = move >> 1
            ck = coord[k]
            if move & 1:
                if ck == 0:
                    continue
                w = u - strides[k]
                h = h_scale * (man + (1 if ck <= target[k] else -1))
            else:
                if ck == size - 1:
                    continue
                w = u + strides[k]
                h = h_scale * (man + (1 if ck >= target[k] else -1))
            sw = state[w]
            if sw & SETTLED:
                continue
            if sw == 0 and bits[w] >= OPEN_LIMIT:
                state[w] = _SEARCH_BLOCKED
                continue
            ng = g + (1.0 if unit else np.float64(vals[w]))
            if sw != 0 and ng >= dist[w]:
                continue
            dist[w] = ng
            state[w] = np.uint8((move ^ 1) + 1)
            key = ng + h
            bucket = np.int64(key * inv_width)
            if bucket <= current:
                if n == hk.size:
                    hk = _grow_f64(hk, n)
                    ht = _grow_f64(ht, n)
                    hv = _grow_i32(hv, n)
                _tied_push(hk, ht, hv, n, key, h, w)
                n += 1
                continue
            if free >= 0:
                e = free
                free = pn[e]
            else:
                if used == pk.size:
                    pk = _grow_f64(pk, used)
                    pt = _grow_f64(pt, used)
                    pv = _grow_i32(pv, used)
                    pn = _grow_i32(pn, used)
                e = used
                used += 1
            slot = bucket & _BUCKET_MASK
            pk[e] = key
            pt[e] = h
            pv[e] = w
            pn[e] = head[slot]
            head[slot] = e
            occupied[slot >> 6] |= np.uint64(1) << np.uint64(slot & 63)
            pending += 1


# Bytes per A* queue entry: heap (key, tie float64; vertex int32), pool (the same plus a link).
ASTAR_HEAP_ENTRY_BYTES = 8 + 8 + 4
ASTAR_POOL_ENTRY_BYTES = 8 + 8 + 4 + 4


def astar(
    field: F32Array,
    bits: U32Array,
    size: int,
    strides: I64Array,
    start: int,
    end: int,
    *,
    unit: bool,
    h_scale: float,
    window: float,
    budget: int,
    dist: npt.NDArray[np.float64],
    state: npt.NDArray[np.uint8],
    coord: I64Array,
    target: I64Array,
) -> tuple[int, int, int, float, U32Array]:
    """(status, settled, queue bytes, cost, path); start != end, both open.

    h_scale: at most the cheapest step (1 for UNIT); window: the dearest step plus h_scale;
    budget: settled vertices before giving up; dist: n float64 (any content); state: n zeros;
    coord, target: d int64 scratch.
    """
    status, settled, heap_cap, pool_cap, cost, path = _astar(
        field,
        bits,
        size,
        strides,
        start,
        end,
        unit,
        h_scale,
        window,
        budget,
        dist,
        state,
        coord,
        target,
    )
    queue_bytes = (
        heap_cap * ASTAR_HEAP_ENTRY_BYTES + pool_cap * ASTAR_POOL_ENTRY_BYTES + CALENDAR_BYTES
    )
    return int(status), int(settled), int(queue_bytes), float(cost), cast(U32Array, path)
