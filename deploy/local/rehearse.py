"""A rollback rehearsed on the dev overlay: release N, N+1 over it, back to N; no data lost.

Steps (each timed, all printed as a table at the end, and written to
.run/deploy-local/rehearsal.json):

1. a clean start (pods and the database volume removed);
2. release N played whole (its migration pod brings the schema to N), N's own smoke suite;
3. canary A written through the API on N (a lattice, transformed so its field is not trivial);
4. release N+1 played over it (its migration pod: schema N+1; then the services and the
   gateway; the data stores untouched), N+1's smoke suite; A read back;
   canary B written on N+1;
5. the rollback: the services and the gateway replayed with N's images, the migration NOT
   re-run (the schema stays at N+1, as after `kubectl rollout undo`), N's smoke suite;
   A and B read back bit for bit, the schema still N+1's, a token issued on N still refreshes.

N defaults to the release before the newest migration (release.previous_schema_release), so
that the rehearsal crosses a schema change; N+1 is this checkout's images (`make images`).
"""

from __future__ import annotations

import base64
import json
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from deploy.local import podman, release, smoke, stack

SIDE = 8


@dataclass
class Step:
    name: str
    release: str
    seconds: float = 0.0
    outcome: str = ""


@dataclass
class Rehearsal:
    previous: str
    current: str
    steps: list[Step] = field(default_factory=list)

    def run(self, name: str, release_tag: str, action: Callable[[], str | None]) -> None:
        step = Step(name, release_tag)
        self.steps.append(step)
        stack.say(f"--- {name} ({release_tag})")
        start = time.monotonic()
        try:
            step.outcome = action() or "ok"
        except BaseException as exc:
            step.outcome = f"FAILED: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            raise
        finally:
            step.seconds = time.monotonic() - start

    def table(self) -> str:
        lines = [
            "| # | step | release | seconds | outcome |",
            "|---|---|---|---|---|",
        ]
        for number, step in enumerate(self.steps, 1):
            lines.append(
                f"| {number} | {step.name} | {step.release} | {step.seconds:.1f} | {step.outcome} |"
            )
        return "\n".join(lines)


@dataclass
class Canary:
    """A lattice written through the API, and what it must read back as."""

    lattice_id: str
    version: str
    checksum: str
    values: str


class Api:
    def __init__(self, port: int) -> None:
        self.client = httpx.Client(base_url=smoke.gateway_url(port), timeout=30)
        self.access_token = ""
        self.refresh_token = ""

    def log_in(self) -> None:
        reply = self.client.post(
            "/v1/auth/login", json={"email": smoke.SMOKE_EMAIL, "password": smoke.SMOKE_PASSWORD}
        )
        body = _ok(reply)
        self.access_token, self.refresh_token = body["access_token"], body["refresh_token"]

    def refresh(self) -> str:
        body = _ok(self.client.post("/v1/auth/refresh", json={"refresh_token": self.refresh_token}))
        self.access_token, self.refresh_token = body["access_token"], body["refresh_token"]
        return "refreshed"

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.access_token}"}

    def write_canary(self, label: str) -> Canary:
        lattice = _ok(
            self.client.post(
                "/v1/lattices",
                json={
                    "name": f"rehearsal-{label}-{uuid.uuid4().hex[:6]}",
                    "dimensions": 2,
                    "size": SIDE,
                    "constant": {"value": 1.5},
                },
                headers=self.headers,
            )
        )
        transformed = _ok(
            self.client.post(
                f"/v1/lattices/{lattice['id']}/transform",
                json={"xor": {"key": 0x5EED}},
                headers=self.headers,
            )
        )["lattice"]
        return Canary(
            lattice["id"],
            transformed["version"],
            transformed["checksum"],
            self.field(lattice["id"]),
        )

    def field(self, lattice_id: str) -> str:
        body = _ok(
            self.client.get(
                f"/v1/lattices/{lattice_id}/field",
                params={"offset": 0, "limit": SIDE * SIDE},
                headers=self.headers,
            )
        )
        return str(body["values"])

    def check(self, canary: Canary) -> None:
        read = _ok(self.client.get(f"/v1/lattices/{canary.lattice_id}", headers=self.headers))
        found = (read["version"], read["checksum"])
        if found != (canary.version, canary.checksum):
            raise AssertionError(
                f"lattice {canary.lattice_id}: version/checksum {found}, "
                f"expected {(canary.version, canary.checksum)}"
            )
        if self.field(canary.lattice_id) != canary.values:
            raise AssertionError(f"lattice {canary.lattice_id}: field values differ")
        if len(base64.b64decode(canary.values)) != 4 * SIDE * SIDE:
            raise AssertionError(f"lattice {canary.lattice_id}: field is not {SIDE}x{SIDE} floats")


def _ok(reply: httpx.Response) -> dict[str, Any]:
    if reply.status_code != 200:
        raise AssertionError(
            f"{reply.request.method} {reply.request.url}: {reply.status_code} {reply.text[:300]}"
        )
    body: dict[str, Any] = reply.json()
    return body


def schema_version() -> int:
    out = podman.run(
        [
            "exec",
            "postgres-postgres",
            "psql",
            "-h",
            "127.0.0.1",
            "-U",
            "catalytic_admin",
            "-d",
            "catalytic",
            "-tAc",
            "SELECT max(version) FROM schema_migrations",
        ]
    )
    return int(out.strip())


def _suite(port: int, tree: Path | None) -> str:
    code = smoke.run_suite(port, ["-q", "--no-header", "-p", "no:randomly"], tree=tree)
    if code != 0:
        raise AssertionError(f"smoke suite exited {code}")
    return "smoke passed"


def rehearse(rehearsal: Rehearsal, port: int, *, keep: bool = False) -> None:
    previous, current = rehearsal.previous, rehearsal.current
    gateway_changes = release.changed_since(previous)
    stack.say(
        f"rollback rehearsal: N = {previous}, N+1 = {current}; the gateway image is N+1's in both"
        + (
            f" (its inputs changed since N: {', '.join(gateway_changes[:5])})"
            if gateway_changes
            else " (its inputs are the same in both)"
        )
    )
    previous_tree = release.RELEASES / previous
    canaries: list[Canary] = []
    api = Api(port)
    schema: dict[str, int] = {}

    rehearsal.run(
        "build N's services images",
        previous,
        lambda: f"catalytic/*:{release.build_services_images(previous)}",
    )
    rehearsal.run(
        "clean start", "-", lambda: (stack.down(volumes=True), "pods and volume removed")[1]
    )

    def play(tag: str, stages: tuple[str, ...] | None = None) -> str:
        stack.up(tag, port, gateway_tag=current, stages=stages, quiet=True)
        schema[tag] = schema_version()
        return f"up; schema version {schema[tag]}"

    rehearsal.run("play N (migrate + all pods)", previous, lambda: play(previous))
    rehearsal.run("N's smoke suite", previous, lambda: _suite(port, previous_tree))

    def write(label: str) -> str:
        api.log_in()
        canaries.append(api.write_canary(label))
        return f"lattice {canaries[-1].lattice_id} v{canaries[-1].version}"

    rehearsal.run("write canary A on N", previous, lambda: write("a"))
    # A release does not touch the data stores: the migration, then the services and gateway.
    rehearsal.run(
        "upgrade to N+1 (migrate, services, gateway)",
        current,
        lambda: play(current, stages=("migrate", "services", "gateway")),
    )
    rehearsal.run("N+1's smoke suite", current, lambda: _suite(port, None))

    def read_back() -> str:
        for canary in canaries:
            api.check(canary)
        return f"{len(canaries)} canar{'y' if len(canaries) == 1 else 'ies'} intact"

    rehearsal.run("read canary A on N+1", current, read_back)
    rehearsal.run("write canary B on N+1", current, lambda: write("b"))
    before_rollback = schema[current]
    rehearsal.run(
        "roll back: services + gateway to N, no migration",
        previous,
        lambda: play(previous, stages=("services", "gateway")),
    )

    def schema_kept() -> str:
        if schema[previous] != before_rollback:
            raise AssertionError(
                f"schema {schema[previous]} after the rollback, {before_rollback} before"
            )
        return f"schema version {before_rollback} kept (N runs on N+1's schema)"

    rehearsal.run("schema after the rollback", previous, schema_kept)
    rehearsal.run("N's smoke suite on schema N+1", previous, lambda: _suite(port, previous_tree))
    rehearsal.run("read canaries A and B on N", previous, read_back)
    rehearsal.run("refresh a token issued on N+1", previous, api.refresh)
    if not keep:

        def stop() -> str:
            ungraceful = stack.down()
            if ungraceful:
                raise AssertionError(f"not graceful: {', '.join(ungraceful)}")
            return "every container exited 0 on SIGTERM"

        rehearsal.run("stop (SIGTERM, 30 s grace)", previous, stop)


def main(previous_ref: str | None, port: int, keep: bool, current_tag: str | None = None) -> int:
    """Runs the rehearsal; prints its table (also on failure) and writes rehearsal.json."""
    previous = (
        release.short_sha(previous_ref) if previous_ref else release.previous_schema_release()
    )
    rehearsal = Rehearsal(previous=previous, current=current_tag or stack.git_tag())
    failure = None
    try:
        rehearse(rehearsal, port, keep=keep)
    except (
        AssertionError,
        SystemExit,
        OSError,
        podman.PodmanError,
        subprocess.CalledProcessError,
    ) as exc:
        failure = exc
    print()
    print(rehearsal.table())
    print()
    stack.STATE.mkdir(parents=True, exist_ok=True)
    (stack.STATE / "rehearsal.json").write_text(json.dumps(asdict(rehearsal), indent=2))
    if failure is not None:
        stack.say(f"rollback rehearsal FAILED: {failure}")
        return 1
    stack.say(f"rollback rehearsal passed: N = {rehearsal.previous}, N+1 = {rehearsal.current}")
    return 0
