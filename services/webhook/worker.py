"""The delivery worker: claims due deliveries under a lease, sends them, records what happened.

Runs as asyncio tasks inside the webhook service. Nothing it holds is only in memory: a claim is
a lease in PostgreSQL (renewed while the attempt runs and until its result is written), so a
worker killed at any point loses nothing; its deliveries become due again when their leases run
out (at-least-once, same `webhook-id`). Several workers, in one process or many, never hold the
same delivery at once.

Claims come in batches (each with everything its attempts need), attempts run concurrently up to
`concurrency`, and results are written in batches (services/webhook/batching.py), so the
database sees a few statements per batch rather than several transactions per delivery. While
the queue has no backlog, a new delivery need not be claimed at all: publication leases it to
this worker in the transaction that queues it and hands it over (`reserve`, `hand_over`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Protocol

from services.webhook import metrics
from services.webhook.batching import GroupCommit
from services.webhook.events import NewEvent, disabled_event
from services.webhook.policy import AttemptResult, AttemptStatus, Outcome, RetryPolicy
from services.webhook.sender import Sender

logger = logging.getLogger("catalytic.webhook.worker")

STATS_INTERVAL_S = 5.0
# After an unexpected error (the database away), the loop waits this long, doubling to the cap.
ERROR_BACKOFF_S = 0.5
ERROR_BACKOFF_MAX_S = 15.0
# The tenant's log entry for an attempt whose signing secret could not be opened.
UNSIGNABLE = "not sent: the endpoint's signing secret is unavailable to the platform"


@dataclass(frozen=True)
class Claim:
    """A delivery leased to this worker; `lease_token` proves it when writing the result."""

    delivery_id: str
    tenant_id: str
    lease_token: str


@dataclass(frozen=True)
class Job:
    """Everything one attempt needs, read in the delivery's tenant transaction."""

    claim: Claim
    webhook_id: str
    url: str
    enabled: bool
    ordered: bool
    # The current secret first, then the previous one while its overlap lasts; empty when
    # the current one could not be opened (the attempt then fails without being sent).
    secrets: tuple[str, ...] = field(repr=False)
    failing_since: datetime | None
    event_id: str
    event_type: str
    body: bytes = field(repr=False)
    attempts_made: int


@dataclass(frozen=True)
class Attempted:
    """An attempt made, with what follows from it, waiting to be written."""

    job: Job
    result: AttemptResult
    outcome: Outcome
    attempted_at: datetime
    # The webhook.disabled event for the tenant's other endpoints, when `outcome` disables.
    disabled: NewEvent | None = None


@dataclass(frozen=True)
class Recorded:
    """What writing an attempt's result did."""

    # False when the lease had been lost (another worker owns the delivery): nothing written.
    held: bool
    # True when this attempt disabled the endpoint (it was enabled until now).
    disabled: bool = False


@dataclass(frozen=True)
class QueueStats:
    """The shared queue, for the gauges."""

    depth: int
    oldest_age_s: float


class DeliveryQueue(Protocol):
    """The durable queue as the worker uses it (PostgreSQL in production)."""

    async def claim(self, limit: int, lease_s: float) -> list[Job]:
        """Leases up to `limit` due deliveries (skipping any another worker holds) and returns
        each with everything its attempt needs."""

    async def renew(self, claims: Sequence[Claim], lease_s: float) -> None:
        """Extends the leases still held."""

    async def release(self, claims: Sequence[Claim]) -> None:
        """Gives the leases up: those deliveries are due again at once."""

    async def pause(self, claim: Claim) -> None:
        """Parks the delivery until its endpoint is enabled, and releases it."""

    async def defer(self, claim: Claim, delay_s: float) -> None:
        """Makes it due again in `delay_s` without counting an attempt, and releases it."""

    async def record(
        self, tenant_id: str, attempts: Sequence[Attempted], first_delay_s: float
    ) -> list[Recorded]:
        """Writes attempts of deliveries of `tenant_id` and what follows from them in one
        transaction, releasing their leases: the log rows, the deliveries' states, the next
        PENDING rows; the endpoints' failure clocks; for an outcome that disables its endpoint,
        the endpoint, its paused deliveries and the attempt's `disabled` event (queued to the
        tenant's other endpoints). One Recorded per attempt, in order."""

    async def stats(self) -> QueueStats:
        """Depth and age of the oldest waiting delivery."""


class EndpointLimiter(Protocol):
    """The per-endpoint delivery rate (Redis, shared by every replica, in production)."""

    async def wait_s(self, webhook_id: str) -> float:
        """0 when an attempt to the endpoint may go now, else how long until one may."""


class DeliveryWorker:
    """Up to `concurrency` attempts at once; see the module docstring."""

    def __init__(
        self,
        queue: DeliveryQueue,
        sender: Sender,
        policy: RetryPolicy,
        *,
        limiter: EndpointLimiter | None = None,
        concurrency: int,
        lease_s: float,
        poll_interval_s: float,
        stats_interval_s: float = STATS_INTERVAL_S,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if concurrency < 1:
            raise ValueError("a worker sends at least one delivery at a time")
        self._queue = queue
        self._sender = sender
        self._policy = policy
        # None: no per-endpoint limit (WEBHOOK_ENDPOINT_RATE_PER_S=0).
        self._limiter = limiter
        self._concurrency = concurrency
        self._lease_s = lease_s
        self._poll_interval_s = poll_interval_s
        self._stats_interval_s = stats_interval_s
        self._clock = clock
        # Claims are re-filled in batches when the queue has more than we took.
        self._refill_at = max(1, concurrency // 4)
        self._backlog = False
        # Slots promised to deliveries being leased at publication (see reserve()).
        self._reserved = 0
        self._signal = asyncio.Event()
        self._stopping = asyncio.Event()
        self._in_flight: dict[Claim, asyncio.Task[None]] = {}
        self._results: GroupCommit[Attempted, Recorded] = GroupCommit(self._write_results)
        self._tasks: list[asyncio.Task[None]] = []
        self._stop_task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Starts claiming, renewing leases and reporting the queue's gauges."""
        if self._tasks:
            return
        self._tasks = [
            asyncio.create_task(self._claim_loop(), name="webhook-claims"),
            asyncio.create_task(self._renew_loop(), name="webhook-leases"),
            asyncio.create_task(self._stats_loop(), name="webhook-stats"),
        ]

    def wake(self) -> None:
        """New deliveries may be due: look now instead of at the next poll."""
        self._signal.set()

    @property
    def lease_s(self) -> float:
        """How long a lease lasts unless renewed."""
        return self._lease_s

    def reserve(self, wanted: int) -> int:
        """Promises up to `wanted` slots to deliveries that publication leases to this worker
        in the transaction queueing them; hand_over() gives them (and the promise) back.

        0 while the queue has a backlog (new deliveries then wait their turn behind it), while
        stopping, or before start. A quarter of the slots stays for claims, so deliveries due
        from the queue (retries, ordered endpoints, other replicas' work) keep moving.
        """
        if not self._tasks or self._stopping.is_set() or self._backlog:
            return 0
        spare = self._concurrency - self._refill_at - len(self._in_flight) - self._reserved
        granted = max(0, min(wanted, spare))
        self._reserved += granted
        return granted

    def hand_over(self, jobs: Sequence[Job], reserved: int) -> None:
        """Starts `jobs`, leased to this worker at publication (no more than were reserved),
        and ends the promise of `reserved` slots. Once stopping it starts nothing: those
        leases run out and any worker sends the deliveries then."""
        self._reserved -= reserved
        if self._stopping.is_set():
            return
        for job in jobs:
            self._spawn(job)

    async def stop(self, grace: float) -> None:
        """Stops claiming, lets attempts in flight finish for `grace` s, gives up the rest.

        Claimed deliveries not yet sent are released at once (due again for any worker); an
        attempt cut off at the deadline is released too and will be sent again (the receiver
        may see it twice, with the same webhook-id). Safe to call more than once.
        """
        if self._stop_task is None:
            self._stop_task = asyncio.create_task(self._stop(grace))
        await asyncio.shield(self._stop_task)

    async def _stop(self, grace: float) -> None:
        self._stopping.set()
        self._signal.set()
        claims, loops = self._tasks[:1], self._tasks[1:]
        # The claim loop only waits on the signal or runs one short query: it ends by itself.
        await asyncio.gather(*claims, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(list(self._in_flight.values()), timeout=grace)
        leftover = dict(self._in_flight)
        for task in leftover.values():
            task.cancel()
        await asyncio.gather(*leftover.values(), return_exceptions=True)
        # Results already handed over are written before the leases are given up.
        await self._results.drain()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if leftover:
            try:
                await self._queue.release(list(leftover))
            except Exception:
                logger.exception(
                    "could not release %d leases; they expire by themselves", len(leftover)
                )
            logger.info("released %d deliveries cut off by the shutdown", len(leftover))

    # ------------------------------------------------------------------ loops
    async def _claim_loop(self) -> None:
        backoff = ERROR_BACKOFF_S
        while not self._stopping.is_set():
            self._signal.clear()
            free = self._concurrency - len(self._in_flight) - self._reserved
            timeout = self._poll_interval_s
            if free > 0:
                try:
                    jobs = await self._queue.claim(free, self._lease_s)
                except Exception:
                    logger.exception("claiming deliveries failed; retrying in %.1f s", backoff)
                    timeout, backoff = backoff, min(backoff * 2, ERROR_BACKOFF_MAX_S)
                    jobs = []
                else:
                    backoff = ERROR_BACKOFF_S
                self._backlog = bool(jobs) and len(jobs) == free
                for job in jobs:
                    self._spawn(job)
                if self._backlog:
                    continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._signal.wait(), timeout)

    def _spawn(self, job: Job) -> None:
        claim = job.claim
        task = asyncio.create_task(self._deliver(job), name=f"webhook-{claim.delivery_id}")
        self._in_flight[claim] = task

        def done(_: asyncio.Task[None]) -> None:
            self._in_flight.pop(claim, None)
            free = self._concurrency - len(self._in_flight) - self._reserved
            if self._backlog and free >= self._refill_at:
                self._signal.set()

        task.add_done_callback(done)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self._lease_s / 3)
            claims = list(self._in_flight)
            if not claims:
                continue
            try:
                await self._queue.renew(claims, self._lease_s)
            except Exception:
                logger.exception("renewing %d leases failed", len(claims))

    async def _stats_loop(self) -> None:
        while True:
            try:
                stats = await self._queue.stats()
            except Exception:
                logger.exception("reading the queue's depth failed")
            else:
                metrics.QUEUE_DEPTH.set(stats.depth)
                metrics.OLDEST_PENDING_AGE.set(stats.oldest_age_s)
            await asyncio.sleep(self._stats_interval_s)

    # ------------------------------------------------------------------ one delivery
    async def _deliver(self, job: Job) -> None:
        try:
            await self._attempt(job)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease is left to run out, so the delivery is retried (by us or another).
            logger.exception("delivery %s failed in the worker", job.claim.delivery_id)

    async def _attempt(self, job: Job) -> None:
        claim = job.claim
        if not job.enabled:
            await self._queue.pause(claim)
            return
        if self._stopping.is_set():
            # Shutting down: what is not sent yet goes back to the queue at once.
            await self._queue.release([claim])
            return
        wait_s = await self._limiter.wait_s(job.webhook_id) if self._limiter else 0.0
        if wait_s > 0:
            await self._queue.defer(claim, wait_s)
            return
        attempted_at = self._clock()
        if job.secrets:
            result = await self._sender.send(job.url, job.event_id, job.body, job.secrets)
        else:
            # Never sent unsigned: the secret would not open (its KEK is not in the ring, ADR
            # 56). The attempt fails like any other, so it is retried and shows in the log.
            result = AttemptResult(status_code=0, error=UNSIGNABLE)
        attempt = job.attempts_made + 1
        outcome = self._policy.decide(attempt, result, self._clock(), job.failing_since)
        disabled = (
            disabled_event(job.webhook_id, job.url, outcome.disable_reason, self._clock())
            if outcome.disable_reason
            else None
        )
        recorded = await self._results.submit(
            claim.tenant_id, Attempted(job, result, outcome, attempted_at, disabled)
        )
        metrics.ATTEMPT_DURATION.observe(result.duration_s)
        if not recorded.held:
            logger.warning(
                "delivery %s: lease lost during attempt %d; its result was not recorded",
                claim.delivery_id,
                attempt,
            )
            return
        metrics.DELIVERIES.labels(outcome.status.value.lower()).inc()
        self._log(job, attempt, result, outcome)
        if recorded.disabled:
            metrics.ENDPOINTS_DISABLED.labels(outcome.disable_kind).inc()
        if recorded.disabled or (job.ordered and outcome.status is not AttemptStatus.FAILED):
            # A webhook.disabled event, or the next delivery of an ordered endpoint, is due.
            self.wake()

    async def _write_results(self, tenant_id: str, attempts: Sequence[Attempted]) -> list[Recorded]:
        return await self._queue.record(tenant_id, attempts, self._policy.first_delay_s())

    @staticmethod
    def _log(job: Job, attempt: int, result: AttemptResult, outcome: Outcome) -> None:
        # Successes are the bulk (and are in the tenant's log); failures are worth a look.
        level = logging.DEBUG if outcome.status is AttemptStatus.SUCCEEDED else logging.WARNING
        if not logger.isEnabledFor(level):
            return
        logger.log(
            level,
            "delivery %s attempt %d: %s",
            job.claim.delivery_id,
            attempt,
            outcome.status.value,
            extra={
                "tenant_id": job.claim.tenant_id,
                "webhook_id": job.webhook_id,
                "event_id": job.event_id,
                "response_status": result.status_code,
                "error": result.error,
                "duration_ms": round(result.duration_s * 1000, 3),
                "disabled": outcome.disable_reason,
            },
        )
