"""The delivery worker over a fake queue and a fake sender: claims, outcomes, leases, shutdown."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY

from services.webhook.events import NewEvent
from services.webhook.policy import AttemptResult, AttemptStatus, Outcome, RetryPolicy
from services.webhook.worker import (
    UNSIGNABLE,
    Attempted,
    Claim,
    DeliveryWorker,
    Job,
    QueueStats,
    Recorded,
)

from .support import TENANT

_ids = itertools.count()


def job_for(
    claim: Claim, *, enabled: bool = True, ordered: bool = False, signable: bool = True
) -> Job:
    return Job(
        claim=claim,
        webhook_id="w-1",
        url="https://hooks.example.com/",
        enabled=enabled,
        ordered=ordered,
        secrets=("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",) if signable else (),
        failing_since=None,
        event_id=f"evt_{claim.delivery_id}",
        event_type="lattice.created",
        body=b"{}",
        attempts_made=0,
    )


@dataclass
class Record:
    job: Job
    result: AttemptResult
    outcome: Outcome
    disabled: NewEvent | None


@dataclass
class FakeQueue:
    due: list[Claim] = field(default_factory=list)
    jobs: dict[Claim, Job] = field(default_factory=dict)
    records: list[Record] = field(default_factory=list)
    released: list[Claim] = field(default_factory=list)
    renewed: list[Claim] = field(default_factory=list)
    paused: list[Claim] = field(default_factory=list)
    deferred: list[tuple[Claim, float]] = field(default_factory=list)
    hold: bool = True
    claim_errors: int = 0
    # The size of each record() call: results written together.
    batches: list[int] = field(default_factory=list)

    def add(self, **job: bool) -> Claim:
        number = next(_ids)
        claim = Claim(f"d-{number}", TENANT, f"lease-{number}")
        self.due.append(claim)
        self.jobs[claim] = job_for(claim, **job)
        return claim

    async def claim(self, limit: int, lease_s: float) -> list[Job]:
        if self.claim_errors:
            self.claim_errors -= 1
            raise OSError("database away")
        taken, self.due = self.due[:limit], self.due[limit:]
        return [self.jobs[claim] for claim in taken]

    async def renew(self, claims: Sequence[Claim], lease_s: float) -> None:
        self.renewed += claims

    async def release(self, claims: Sequence[Claim]) -> None:
        self.released += claims

    async def pause(self, claim: Claim) -> None:
        self.paused.append(claim)

    async def defer(self, claim: Claim, delay_s: float) -> None:
        self.deferred.append((claim, delay_s))

    async def record(
        self, tenant_id: str, attempts: Sequence[Attempted], first_delay_s: float
    ) -> list[Recorded]:
        self.batches.append(len(attempts))
        for item in attempts:
            assert item.job.claim.tenant_id == tenant_id
            self.records.append(Record(item.job, item.result, item.outcome, item.disabled))
        return [
            Recorded(held=self.hold, disabled=bool(item.outcome.disable_reason))
            for item in attempts
        ]

    async def stats(self) -> QueueStats:
        return QueueStats(depth=len(self.due), oldest_age_s=1.5)


@dataclass
class FakeSender:
    status: int = 200
    gate: asyncio.Event | None = None
    sent: list[str] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def send(
        self, url: str, message_id: str, body: bytes, secrets: Sequence[str]
    ) -> AttemptResult:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0.01)
            self.sent.append(message_id)
            error = "" if 200 <= self.status < 300 else f"HTTP {self.status}"
            return AttemptResult(self.status, error, duration_s=0.01)
        finally:
            self.in_flight -= 1


@dataclass
class FixedWait:
    wait: float

    async def wait_s(self, webhook_id: str) -> float:
        return self.wait


POLICY = RetryPolicy([0, 5], jitter=0, retry_after_max_s=60, disable_after_s=3600)


def worker(queue: FakeQueue, sender: FakeSender, **options: object) -> DeliveryWorker:
    settings: dict[str, object] = {
        "concurrency": 4,
        "lease_s": 0.3,
        "poll_interval_s": 0.02,
        "stats_interval_s": 0.02,
        **options,
    }
    return DeliveryWorker(queue, sender, POLICY, **settings)  # type: ignore[arg-type]


async def until(condition: Callable[[], object], within: float = 5.0) -> None:
    """Polls: the fakes change from the worker's tasks, which signal nothing."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_due_deliveries_are_sent_at_most_concurrency_at_a_time() -> None:
    queue, sender = FakeQueue(), FakeSender()
    claims = [queue.add() for _ in range(10)]
    before = sample("catalytic_webhook_deliveries_total", outcome="succeeded")
    running = worker(queue, sender)
    running.start()
    await until(lambda: len(queue.records) == 10)
    await running.stop(1)

    assert sorted(sender.sent) == sorted(f"evt_{claim.delivery_id}" for claim in claims)
    assert 1 < sender.most_in_flight <= 4
    assert {r.outcome.status for r in queue.records} == {AttemptStatus.SUCCEEDED}
    assert sample("catalytic_webhook_deliveries_total", outcome="succeeded") == before + 10
    assert queue.released == []


async def test_a_failure_schedules_the_retry_and_a_410_disables() -> None:
    queue, sender = FakeQueue(), FakeSender(status=500)
    queue.add()
    running = worker(queue, sender)
    running.start()
    await until(lambda: len(queue.records) == 1)
    [failed] = queue.records
    assert failed.outcome == Outcome(AttemptStatus.FAILED, retry_in_s=5)
    assert failed.disabled is None

    before = sample("catalytic_webhook_endpoints_disabled_total", reason="gone")
    sender.status = 410
    queue.add()
    running.wake()
    await until(lambda: len(queue.records) == 2)
    await running.stop(1)
    gone = queue.records[1]
    assert gone.outcome.status is AttemptStatus.DEAD
    assert gone.disabled is not None
    assert gone.disabled.type == "webhook.disabled"
    assert sample("catalytic_webhook_endpoints_disabled_total", reason="gone") == before + 1


async def test_an_attempt_whose_secret_would_not_open_fails_without_being_sent() -> None:
    """The store found the secret unopenable (its KEK is gone): never sent unsigned, retried."""
    queue, sender = FakeQueue(), FakeSender()
    queue.add(signable=False)
    running = worker(queue, sender)
    running.start()
    await until(lambda: len(queue.records) == 1)
    await running.stop(1)

    [failed] = queue.records
    assert sender.sent == []
    assert failed.result == AttemptResult(0, UNSIGNABLE)
    assert failed.outcome == Outcome(AttemptStatus.FAILED, retry_in_s=5)


async def test_disabled_endpoints_pause_and_limited_ones_defer() -> None:
    queue, sender = FakeQueue(), FakeSender()
    paused = queue.add(enabled=False)
    running = worker(queue, sender, limiter=FixedWait(0.25))
    limited = queue.add()
    running.start()
    await until(lambda: queue.paused and queue.deferred)
    await running.stop(1)

    assert queue.paused == [paused]
    assert queue.deferred == [(limited, 0.25)]
    assert sender.sent == []
    assert queue.records == []


async def test_shutdown_finishes_what_it_can_and_releases_the_rest() -> None:
    queue, sender = FakeQueue(), FakeSender(gate=asyncio.Event())
    stuck = queue.add()
    running = worker(queue, sender)
    running.start()
    await until(lambda: sender.in_flight == 1)

    await running.stop(0.05)

    assert queue.released == [stuck]
    assert queue.records == []
    # Nothing claimed after the stop.
    queue.add()
    await asyncio.sleep(0.1)
    assert len(queue.due) == 1


async def test_shutdown_waits_for_attempts_that_finish_within_the_grace() -> None:
    queue, sender = FakeQueue(), FakeSender(gate=asyncio.Event())
    queue.add()
    running = worker(queue, sender)
    running.start()
    await until(lambda: sender.in_flight == 1)

    stopping = asyncio.create_task(running.stop(5))
    await asyncio.sleep(0.05)
    sender.gate.set()  # type: ignore[union-attr]
    await stopping

    assert len(queue.records) == 1
    assert queue.released == []


async def test_leases_are_renewed_while_an_attempt_runs() -> None:
    queue, sender = FakeQueue(), FakeSender(gate=asyncio.Event())
    claim = queue.add()
    running = worker(queue, sender, lease_s=0.06)
    running.start()
    await until(lambda: queue.renewed.count(claim) >= 2)
    sender.gate.set()  # type: ignore[union-attr]
    await until(lambda: len(queue.records) == 1)
    renewals = len(queue.renewed)
    await asyncio.sleep(0.1)
    await running.stop(1)
    assert len(queue.renewed) == renewals, "no renewals once the attempt is recorded"


async def test_a_lost_lease_records_nothing_and_counts_nothing() -> None:
    queue, sender = FakeQueue(hold=False), FakeSender()
    queue.add()
    before = sample("catalytic_webhook_deliveries_total", outcome="succeeded")
    running = worker(queue, sender)
    running.start()
    await until(lambda: len(queue.records) == 1)
    await running.stop(1)
    assert sample("catalytic_webhook_deliveries_total", outcome="succeeded") == before


async def test_the_loop_survives_database_errors_and_reports_the_queue() -> None:
    queue, sender = FakeQueue(claim_errors=2), FakeSender()
    queue.add()
    running = worker(queue, sender)
    running.start()
    await until(lambda: len(queue.records) == 1)
    await until(lambda: sample("catalytic_webhook_oldest_pending_age_seconds") == 1.5)
    await until(lambda: sample("catalytic_webhook_queue_depth") == 0)
    await running.stop(1)


def test_concurrency_is_at_least_one() -> None:
    with pytest.raises(ValueError, match="at least one"):
        worker(FakeQueue(), FakeSender(), concurrency=0)


async def test_results_that_end_together_are_written_together() -> None:
    queue, sender = FakeQueue(), FakeSender(gate=asyncio.Event())
    for _ in range(6):
        queue.add()
    running = worker(queue, sender, concurrency=6)
    running.start()
    await until(lambda: sender.in_flight == 6)
    sender.gate.set()  # type: ignore[union-attr]
    await until(lambda: len(queue.records) == 6)
    await running.stop(1)

    assert sum(queue.batches) == 6
    assert len(queue.batches) < 6, f"one write per result: {queue.batches}"


async def test_deliveries_leased_at_publication_are_handed_over() -> None:
    queue, sender = FakeQueue(), FakeSender()
    running = worker(queue, sender, concurrency=8)
    assert running.reserve(5) == 0, "not started"
    running.start()

    granted = running.reserve(100)
    assert granted == 6, "a quarter of the slots stays for claims"
    assert running.reserve(1) == 0
    jobs = [job_for(Claim(f"h-{n}", TENANT, "lease-h")) for n in range(2)]
    running.hand_over(jobs, granted)
    await until(lambda: len(queue.records) == 2)
    assert sorted(sender.sent) == ["evt_h-0", "evt_h-1"]
    assert running.reserve(3) == 3
    running.hand_over([], 3)

    await running.stop(1)
    assert running.reserve(1) == 0, "stopping"
