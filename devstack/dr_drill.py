"""`make dr-drill`: lose the database under load, restore it, prove nothing acknowledged is gone.

Bounded and loopback-only. On a stack of its own (a throw-away run directory, free ports,
PostgreSQL with fsync on and WAL archived by pgBackRest):

1. seed: tenants, lattices with random fields, transforms, a webhook endpoint, deliveries;
2. a full base backup (timed);
3. a writer creates a marker lattice through the public API every 100 ms and records the
   moment each one is acknowledged;
4. the disaster: PostgreSQL is killed with SIGKILL and its data directory deleted;
5. restore to the latest point (`pgbackrest restore`), start PostgreSQL, restart the services
   (they would reconnect by themselves; the restart proves they start on what was restored);
   RTO runs until the API answers and the integrity checks pass;
6. integrity: every marker acknowledged before the disaster is there, or counted as lost (RPO:
   how long before the disaster the oldest lost one was acknowledged); the seeded fields'
   checksums match; row-level security is still FORCED on every table that had it; the outbox
   resumes (a new write's event arrives) and no event arrived under two different ids;
7. point-in-time recovery: an "accidental" DELETE of a tenant's lattices, then a restore to the
   moment just before it: the lattices are back with their checksums, later writes are not;
8. one table with the figures, and the restore throughput extrapolated to 100 GB.

`python -m devstack.dr_drill --help`; docs/operations/disaster-recovery.md has a recorded run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg

from devstack.ports import StackPorts
from devstack.stack import Stack
from devstack.webhook_receiver import Receiver, running_receiver

RPO_TARGET_S = 60.0
RTO_TARGET_S = 600.0
HOOK = "/drill"


@dataclass(frozen=True)
class Settings:
    tenants: int = 3
    lattices_per_tenant: int = 4
    side: int = 32
    write_seconds: float = 20.0
    write_interval_s: float = 0.1
    # Extra data (a table in a schema of its own, not the product's) so that the restore
    # throughput is measured on more than the fixed costs of a 30 MB database.
    ballast_mb: int = 512

    @classmethod
    def short(cls) -> Settings:
        """The version `make test` runs: the same steps, less data, a shorter write phase."""
        return cls(tenants=2, lattices_per_tenant=2, side=16, write_seconds=4.0, ballast_mb=0)


@dataclass
class Figures:
    """What the drill measured; printed as the table."""

    rows: list[tuple[str, str, str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def add(self, measure: str, value: str, target: str = "", ok: bool = True) -> None:
        self.rows.append((measure, value, target))
        if not ok:
            self.failures.append(f"{measure}: {value} (target {target})")

    def table(self) -> str:
        lines = ["| measure | value | target |", "|---|---|---|"]
        lines += [f"| {m} | {v} | {t} |" for m, v, t in self.rows]
        return "\n".join(lines)


def say(message: str) -> None:
    print(f"dr-drill: {message}", flush=True)


# ---------------------------------------------------------------------------- the API


@dataclass
class Tenant:
    email: str
    token: str
    tenant_id: str
    lattices: dict[str, str] = field(default_factory=dict)  # id -> checksum

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}


def _ok(reply: httpx.Response) -> dict[str, Any]:
    if reply.status_code != 200:
        raise AssertionError(
            f"{reply.request.method} {reply.request.url.path}: {reply.status_code} "
            f"{reply.text[:300]}"
        )
    body: dict[str, Any] = reply.json()
    return body


def register(api: httpx.Client, label: str) -> Tenant:
    email = f"drill-{label}-{uuid.uuid4().hex[:6]}@example.com"
    password = "drill passphrase long enough"  # noqa: S105 (a throw-away stack)
    body = _ok(
        api.post(
            "/v1/auth/register",
            json={"email": email, "password": password, "tenant_name": f"drill-{label}"},
        )
    )
    tenant_id = body["tenant"]["id"]
    login = _ok(api.post("/v1/auth/login", json={"email": email, "password": password}))
    return Tenant(email, login["access_token"], tenant_id)


def set_plan(admin_url: str, tenant_id: str, plan: str) -> None:
    """As the operator CLI does it (services.auth.admin): inside the tenant's RLS context."""
    with psycopg.connect(admin_url) as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (tenant_id,))
        conn.execute("UPDATE tenants SET plan = %s WHERE id = %s", (plan, tenant_id))


def create_lattice(api: httpx.Client, tenant: Tenant, name: str, side: int, seed: int) -> str:
    body = _ok(
        api.post(
            "/v1/lattices",
            json={
                "name": name,
                "dimensions": 2,
                "size": side,
                "random": {"seed": seed, "low": 0.0, "high": 10.0, "blocked_fraction": 0.1},
            },
            headers=tenant.headers,
        )
    )
    return str(body["id"])


def lattice_checksum(api: httpx.Client, tenant: Tenant, lattice_id: str) -> str | None:
    reply = api.get(f"/v1/lattices/{lattice_id}", headers=tenant.headers)
    if reply.status_code == 404:
        return None
    return str(_ok(reply)["checksum"])


def lattice_names(api: httpx.Client, tenant: Tenant) -> dict[str, str]:
    """name -> id of every lattice of the tenant (all pages)."""
    names: dict[str, str] = {}
    token = ""
    while True:
        params: dict[str, Any] = {"page_size": 100}
        if token:
            params["page_token"] = token
        body = _ok(api.get("/v1/lattices", params=params, headers=tenant.headers))
        for lattice in body.get("lattices", []):
            names[lattice["name"]] = lattice["id"]
        token = body.get("next_page_token", "")
        if not token:
            return names


# ---------------------------------------------------------------------------- the writer


@dataclass
class Ack:
    seq: int
    name: str
    lattice_id: str
    at: float  # time.time() when the 200 arrived


class MarkerWriter:
    """Creates `marker-<seq>` lattices every interval; records what was acknowledged."""

    def __init__(self, api_url: str, tenant: Tenant, interval_s: float) -> None:
        self.api = httpx.Client(base_url=api_url, timeout=5)
        self.tenant = tenant
        self.interval_s = interval_s
        self.acks: list[Ack] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._seq = 0

    def start(self) -> MarkerWriter:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self.api.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._seq += 1
            name = f"marker-{self._seq:06d}"
            try:
                reply = self.api.post(
                    "/v1/lattices",
                    json={"name": name, "dimensions": 1, "size": 2, "constant": {"value": 1.0}},
                    headers=self.tenant.headers,
                )
                if reply.status_code == 200:
                    self.acks.append(Ack(self._seq, name, reply.json()["id"], time.time()))
                else:
                    self.failures += 1
            except httpx.HTTPError:
                self.failures += 1
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))


# ---------------------------------------------------------------------------- checks


def forced_rls_tables(admin_url: str) -> set[str]:
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = 'public' AND c.relkind = 'r'"
            " AND c.relrowsecurity AND c.relforcerowsecurity"
        ).fetchall()
    return {str(row[0]) for row in rows}


def add_ballast(admin_url: str, megabytes: int) -> None:
    """About `megabytes` of hex text (compresses about 2:1, like real data more than zeros)."""
    say(f"adding {megabytes} MB of ballast (schema drill_ballast)")
    rows = megabytes * 1_000_000 // 300
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS drill_ballast")
        conn.execute(
            "CREATE TABLE drill_ballast.rows AS SELECT g AS id,"
            " md5(random()::text) || md5(random()::text) || md5(random()::text)"
            " || md5(random()::text) AS a,"
            " md5(random()::text) || md5(random()::text) || md5(random()::text)"
            " || md5(random()::text) AS b"
            " FROM generate_series(1, %s) AS g",
            (rows,),
        )
        conn.execute("CHECKPOINT")


def database_now(admin_url: str) -> str:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT now()::text").fetchone()
    assert row is not None
    return str(row[0])


def database_bytes(admin_url: str) -> int:
    with psycopg.connect(admin_url) as conn:
        row = conn.execute("SELECT sum(pg_database_size(datname)) FROM pg_database").fetchone()
    assert row is not None
    return int(row[0])


def events_by_lattice(receiver: Receiver) -> dict[str, set[str]]:
    """lattice id -> the webhook-ids its lattice.created event arrived under."""
    seen: dict[str, set[str]] = {}
    for request in receiver.received(HOOK):
        body = json.loads(request.body)
        if body.get("type") == "lattice.created":
            seen.setdefault(body["data"]["lattice_id"], set()).add(request.headers["webhook-id"])
    return seen


def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.2)
    return time.monotonic() - start


def restart_mesh(stack: Stack) -> float:
    """The services restarted on the restored database (auth first: the others fetch its keys),
    then the gateway routing to them again; seconds it took. They would reconnect by
    themselves; the restart proves they also start cleanly on what was restored."""
    start = time.monotonic()
    for name in ("webhook", "lattice", "auth"):
        stack.stop_service(name)
    for name in ("auth", "lattice", "webhook"):
        stack.start_service(name, wait_for_gateway=False)
    stack.wait_for_gateway()
    return time.monotonic() - start


def api_answers(api: httpx.Client, tenant: Tenant) -> bool:
    try:
        reply = api.get("/v1/lattices", params={"page_size": 1}, headers=tenant.headers)
    except httpx.HTTPError:
        return False
    return reply.status_code == 200


# ---------------------------------------------------------------------------- the drill


@contextmanager
def drill_stack(keep: bool) -> Iterator[Stack]:
    run_dir = Path(tempfile.mkdtemp(prefix="catalytic-dr-drill-"))
    run_dir.chmod(0o755)
    stack = Stack(
        run_dir=run_dir,
        ports=StackPorts.free(),
        backups=True,
        extra_env={
            "WEBHOOK_ALLOW_CIDRS": "127.0.0.0/8",
            "WEBHOOK_RETRY_SCHEDULE_S": "0,1,2,3,5,8",
            "RATE_LIMIT_MULTIPLIER": "100",
        },
        log=lambda line: say(f"[stack] {line}"),
    )
    stack.start()
    try:
        yield stack
    finally:
        stack.stop()
        if keep:
            say(f"kept {run_dir}")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def run(settings: Settings, *, keep: bool = False) -> Figures:
    figures = Figures()
    with (
        running_receiver() as receiver,
        drill_stack(keep) as stack,
        httpx.Client(base_url=stack.gateway_url, timeout=30) as api,
    ):
        assert stack.postgres is not None
        assert stack.backups is not None
        postgres, backups = stack.postgres, stack.backups
        admin_url = postgres.admin_url

        # 1. seed
        say("seeding tenants, lattices, transforms, a webhook endpoint")
        tenants = [register(api, f"t{i}") for i in range(settings.tenants)]
        for tenant in tenants:
            set_plan(admin_url, tenant.tenant_id, "enterprise")
        for t_index, tenant in enumerate(tenants):
            for l_index in range(settings.lattices_per_tenant):
                lattice_id = create_lattice(
                    api, tenant, f"seed-{l_index}", settings.side, seed=t_index * 100 + l_index
                )
                for key in (0x1234, 0xBEEF):
                    _ok(
                        api.post(
                            f"/v1/lattices/{lattice_id}/transform",
                            json={"xor": {"key": key}},
                            headers=tenant.headers,
                        )
                    )
                tenant.lattices[lattice_id] = lattice_checksum(api, tenant, lattice_id) or ""
        writer_tenant = tenants[0]
        _ok(
            api.post(
                "/v1/webhooks",
                json={"url": receiver.url(HOOK), "event_types": ["*"]},
                headers=writer_tenant.headers,
            )
        )
        first = create_lattice(api, writer_tenant, "seed-after-hook", settings.side, seed=7)
        writer_tenant.lattices[first] = lattice_checksum(api, writer_tenant, first) or ""
        wait_for("the first delivery", lambda: first in events_by_lattice(receiver), 30)
        rls_before = forced_rls_tables(admin_url)

        if settings.ballast_mb:
            add_ballast(admin_url, settings.ballast_mb)

        # 2. base backup
        size = database_bytes(admin_url)
        start = time.monotonic()
        backup = backups.backup("full")
        backup_s = time.monotonic() - start
        figures.add(
            "base backup (full, pgBackRest, zstd, aes-256-cbc)",
            f"{backup_s:.1f} s for {size / 1e6:.0f} MB; "
            f"repository {backup.repository_bytes / 1e6:.1f} MB",
        )

        # 3. writes under load, 4. the disaster
        say(
            f"writing a marker every {settings.write_interval_s * 1000:.0f} ms for "
            f"{settings.write_seconds:.0f} s, then SIGKILL PostgreSQL and delete its data"
        )
        writer = MarkerWriter(stack.gateway_url, writer_tenant, settings.write_interval_s).start()
        time.sleep(settings.write_seconds)
        disaster = time.time()
        disaster_mono = time.monotonic()
        assert postgres.child is not None
        postgres.child.kill()
        shutil.rmtree(postgres.data_dir)
        time.sleep(0.5)
        writer.stop()
        acked = [ack for ack in writer.acks if ack.at <= disaster]
        say(f"disaster: {len(acked)} markers acknowledged before it; data directory deleted")

        # 5. restore to the latest point
        restore_s = backups.restore()
        postgres.start()
        restart_s = restart_mesh(stack)
        api_s = wait_for("the API answering", lambda: api_answers(api, writer_tenant), 300)

        # 6. integrity
        names = lattice_names(api, writer_tenant)
        lost = [ack for ack in acked if ack.name not in names]
        rpo = disaster - min(ack.at for ack in lost) if lost else 0.0
        mismatched = [
            lattice_id
            for tenant in tenants
            for lattice_id, checksum in tenant.lattices.items()
            if lattice_checksum(api, tenant, lattice_id) != checksum
        ]
        rls_after = forced_rls_tables(admin_url)
        after_restore = create_lattice(api, writer_tenant, "after-restore", 2, seed=1)
        wait_for(
            "the outbox resuming (a new write's event delivered)",
            lambda: after_restore in events_by_lattice(receiver),
            60,
        )
        rto = time.monotonic() - disaster_mono
        present = [ack for ack in acked if ack.name in names]
        wait_for(
            "every surviving marker's event delivered",
            lambda: all(ack.lattice_id in events_by_lattice(receiver) for ack in present),
            60,
        )
        events = events_by_lattice(receiver)
        re_ided = [lattice_id for lattice_id, ids in events.items() if len(ids) > 1]
        lost_but_delivered = [ack for ack in lost if ack.lattice_id in events]

        figures.add(
            "RPO (newest acknowledged writes lost)",
            f"{rpo:.1f} s ({len(lost)} of {len(acked)} acknowledged markers lost)",
            f"≤ {RPO_TARGET_S:.0f} s",
            rpo <= RPO_TARGET_S,
        )
        figures.add(
            "RTO (SIGKILL + data deleted → API verified, outbox resumed)",
            f"{rto:.1f} s (restore {restore_s:.1f} s, services restarted in {restart_s:.1f} s, "
            f"API answering {api_s:.1f} s later)",
            f"≤ {RTO_TARGET_S:.0f} s",
            rto <= RTO_TARGET_S,
        )
        throughput = size / restore_s if restore_s > 0 else float("inf")
        figures.add(
            "restore throughput",
            f"{throughput / 1e6:.0f} MB/s ({size / 1e6:.0f} MB in {restore_s:.1f} s); "
            f"100 GB ≈ {100e9 / throughput / 60:.0f} min + WAL replay",
        )
        figures.add(
            "seeded lattices' checksums",
            f"{sum(len(t.lattices) for t in tenants) - len(mismatched)}"
            f"/{sum(len(t.lattices) for t in tenants)} match",
            "all",
            not mismatched,
        )
        figures.add(
            "row-level security FORCED",
            f"{len(rls_after & rls_before)}/{len(rls_before)} tables",
            "all",
            rls_after >= rls_before and bool(rls_before),
        )
        figures.add(
            "outbox after the restore",
            f"resumed; {len(present)} surviving markers' events delivered; "
            f"{len(re_ided)} delivered under a second id",
            "0 re-ided",
            not re_ided,
        )
        if lost_but_delivered:
            figures.add(
                "events of lost writes already delivered",
                f"{len(lost_but_delivered)} (delivered before the disaster; the write is gone)",
            )

        # 7. point-in-time recovery to just before an accidental DELETE
        victim = tenants[-1]
        before_delete = database_now(admin_url)
        time.sleep(0.2)
        for lattice_id in victim.lattices:
            reply = api.delete(f"/v1/lattices/{lattice_id}", headers=victim.headers)
            assert reply.status_code == 200, reply.text
        late = create_lattice(api, writer_tenant, "after-the-delete", 2, seed=2)
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute("SELECT pg_switch_wal()")
        backups.run("check")  # returns once the switched segment is in the repository
        postgres.stop()
        pitr_start = time.monotonic()
        pitr_restore_s = backups.restore(target_time=before_delete)
        postgres.start()
        wait_for("the API after PITR", lambda: api_answers(api, victim), 300)
        pitr_s = time.monotonic() - pitr_start
        back = [
            lid
            for lid, checksum in victim.lattices.items()
            if lattice_checksum(api, victim, lid) == checksum
        ]
        late_gone = lattice_checksum(api, writer_tenant, late) is None
        figures.add(
            "PITR to just before an accidental DELETE",
            f"{len(back)}/{len(victim.lattices)} deleted lattices back with their checksums; "
            f"the later write {'absent' if late_gone else 'PRESENT'}; {pitr_s:.1f} s "
            f"(restore {pitr_restore_s:.1f} s)",
            "all back, later absent",
            len(back) == len(victim.lattices) and late_gone,
        )
        backups.verify()  # raises BackupError on a file whose checksum does not match
        figures.add("pgbackrest verify", "every backup file and archived WAL segment checks out")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devstack.dr_drill",
        description="Disaster-recovery drill on a throw-away local stack: base backup, writes "
        "under load, SIGKILL + data directory deleted, restore to the latest point and to a "
        "point in time; prints RPO, RTO and the integrity checks.",
    )
    parser.add_argument("--short", action="store_true", help="less data, 4 s of writes (make test)")
    parser.add_argument("--write-seconds", type=float, default=None, help="the write phase (20 s)")
    parser.add_argument(
        "--ballast-mb", type=int, default=None, help="extra data for the throughput (512 MB)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory")
    args = parser.parse_args(argv)
    settings = Settings.short() if args.short else Settings()
    if args.write_seconds is not None:
        settings = Settings(**{**settings.__dict__, "write_seconds": args.write_seconds})
    if args.ballast_mb is not None:
        settings = Settings(**{**settings.__dict__, "ballast_mb": args.ballast_mb})
    started = time.monotonic()
    figures = run(settings, keep=args.keep)
    print()
    print(figures.table())
    print()
    say(
        f"{'FAILED: ' + '; '.join(figures.failures) if figures.failures else 'passed'} "
        f"({time.monotonic() - started:.0f} s; {os.cpu_count()} CPUs)"
    )
    return 1 if figures.failures else 0


if __name__ == "__main__":
    sys.exit(main())
