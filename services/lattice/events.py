"""The events the lattice service announces, as plain data for the outbox (no gRPC here).

Each event's `data` is what a webhook receives as the body's `data`; its `id` is the outbox
row's id, sent as PublishEvent's event_id and so as the delivery's `webhook-id`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from services.common.errors import DeadlineExceeded, DomainError, Unavailable
from services.common.status import status_code_for
from services.lattice.engine.paths import Cost, PathResult
from services.lattice.engine.transforms import (
    Denormalize,
    Flip,
    Normalize,
    Offset,
    Rotate,
    Scale,
    TransformOp,
    Xor,
)
from services.lattice.records import LatticeRecord, LatticeStore, OutboxEvent

logger = logging.getLogger(__name__)

LATTICE_CREATED = "lattice.created"
LATTICE_DELETED = "lattice.deleted"
LATTICE_TRANSFORMED = "lattice.transformed"
PATH_COMPUTED = "path.computed"
COMPUTATION_FAILED = "computation.failed"
EVENT_TYPES = (
    LATTICE_CREATED,
    LATTICE_DELETED,
    LATTICE_TRANSFORMED,
    PATH_COMPUTED,
    COMPUTATION_FAILED,
)

JsonObject = dict[str, Any]


def _event(event_type: str, data: JsonObject) -> OutboxEvent:
    return OutboxEvent(id=str(uuid.uuid4()), type=event_type, data=data)


def op_name(op: TransformOp) -> str:
    """The op's JSON key (`xor`, `rotate`, ...), also its metrics label."""
    return type(op).__name__.lower()


def op_json(op: TransformOp) -> JsonObject:
    """The op in the API's JSON shape, e.g. {"xor": {"key": 5}}."""
    body: JsonObject
    match op:
        case Xor(key=key):
            body = {"key": key}
        case Rotate(axis_a=a, axis_b=b, quarter_turns=turns):
            body = {"axis_a": a, "axis_b": b, "quarter_turns": turns}
        case Flip(axis=axis):
            body = {"axis": axis}
        case Scale(factor=factor):
            body = {"factor": factor}
        case Offset(value=value):
            body = {"value": value}
        case Normalize():
            body = {}
        case Denormalize(mean=mean, std=std):
            body = {"mean": mean, "std": std}
    return {op_name(op): body}


def _lattice(record: LatticeRecord) -> JsonObject:
    return {
        "lattice_id": record.id,
        "name": record.name,
        "dimensions": record.dimensions,
        "size": record.size,
        "vertex_count": record.vertex_count,
        "version": record.version,
        "checksum": record.checksum,
    }


def lattice_created(record: LatticeRecord) -> OutboxEvent:
    return _event(LATTICE_CREATED, _lattice(record))


def lattice_deleted(record: LatticeRecord) -> OutboxEvent:
    return _event(LATTICE_DELETED, {"lattice_id": record.id, "name": record.name})


def lattice_transformed(
    record: LatticeRecord, op: TransformOp, inverse: TransformOp, device: str, elapsed_ms: float
) -> OutboxEvent:
    return _event(
        LATTICE_TRANSFORMED,
        {
            **_lattice(record),
            "op": op_json(op),
            "inverse": op_json(inverse),
            "device": device,
            "elapsed_ms": elapsed_ms,
        },
    )


def path_computed(
    record: LatticeRecord,
    start: list[int],
    end: list[int],
    cost: Cost,
    result: PathResult,
    device: str,
    elapsed_ms: float,
) -> OutboxEvent:
    return _event(
        PATH_COMPUTED,
        {
            "lattice_id": record.id,
            "version": record.version,
            "start": start,
            "end": end,
            "algorithm": result.algorithm.value,
            "cost_model": cost.value,
            "hops": result.hops,
            "cost": result.cost,
            "device": device,
            "elapsed_ms": elapsed_ms,
        },
    )


def computation_failed(operation: str, lattice_id: str, error: BaseException) -> OutboxEvent:
    """A computation that was accepted but did not complete (deadline, worker lost, fault)."""
    if isinstance(error, DomainError):
        code, message = str(status_code_for(error).name), error.message
    else:
        # An internal fault: its text stays in the log, as for the RPC's own answer.
        code, message = "INTERNAL", "internal error"
    return _event(
        COMPUTATION_FAILED,
        {"lattice_id": lattice_id, "operation": operation, "code": code, "message": message},
    )


def is_computation_failure(error: BaseException) -> bool:
    """Whether `error` ended an accepted computation for reasons not the caller's: a deadline,
    a lost worker or an internal fault. Refusals (bad input, no path, a full queue) and callers
    that went away are not announced."""
    if isinstance(error, DeadlineExceeded | Unavailable):
        return True
    return isinstance(error, Exception) and not isinstance(error, DomainError)


class EventLog:
    """Writes events that have no change to commit with, and wakes the relay after any write."""

    def __init__(self, store: LatticeStore, wake: Callable[[], None] = lambda: None) -> None:
        self._store = store
        self._wake = wake
        self._writing: set[asyncio.Task[None]] = set()

    def written(self) -> None:
        """Call after committing a transaction that wrote events."""
        self._wake()

    async def standalone(self, tenant_id: str, event: OutboxEvent) -> None:
        """Writes the event in a transaction of its own (unless no webhook wants it: then the
        relay has nothing to do either)."""
        if await self._store.add_event(tenant_id, event):
            self._wake()

    async def failure(
        self, tenant_id: str, operation: str, lattice_id: str, error: BaseException
    ) -> None:
        """Announces a failed computation when `error` is one; never raises but a
        cancellation of its own caller (who is already failing with `error`, which must be
        what its client sees).

        The write runs in a task of its own that the caller's cancellation does not stop: gRPC
        cancels a handler when its deadline passes, possibly while this is being written.
        """
        if not is_computation_failure(error):
            return
        event = computation_failed(operation, lattice_id, error)
        task = asyncio.ensure_future(self._write_failure(tenant_id, event))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)
        await asyncio.shield(task)

    async def _write_failure(self, tenant_id: str, event: OutboxEvent) -> None:
        try:
            await self.standalone(tenant_id, event)
        except Exception:
            logger.exception("could not record %s", COMPUTATION_FAILED)
