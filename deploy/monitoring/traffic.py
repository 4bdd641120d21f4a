"""A small, bounded mix of real API traffic through the gateway, so every panel has data.

Used by the live monitoring test and by `make monitor-snapshot` (before drawing the pictures):
each round registers nothing new; it creates, transforms, walks, analyses and deletes a small
lattice, reads through an API key, delivers a webhook to a receiver on loopback, and makes a
few client mistakes (404, 401, 400) so that error panels have series too. Everything stays on
127.0.0.1 and within the free plan's limits.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx


class _Sink(BaseHTTPRequestHandler):
    """A webhook endpoint that accepts every delivery."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def webhook_sink() -> Iterator[str]:
    """A receiver on 127.0.0.1 that answers 200 to every delivery; yields its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Counts:
    """Replies by HTTP status, for the caller to check that traffic really flowed."""

    by_status: dict[int, int]

    @property
    def total(self) -> int:
        return sum(self.by_status.values())

    def ok(self) -> int:
        return sum(n for status, n in self.by_status.items() if status < 300)


class Traffic:
    """One tenant's worth of varied requests against `gateway_url`."""

    def __init__(self, gateway_url: str, webhook_url: str) -> None:
        self.http = httpx.Client(base_url=gateway_url, timeout=20, trust_env=False)
        self.webhook_url = webhook_url
        self.counts = Counts({})
        self.headers: dict[str, str] = {}
        self.api_key: dict[str, str] = {}
        self.refresh_token = ""

    def close(self) -> None:
        self.http.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        reply = self.http.request(method, path, **kwargs)
        self.counts.by_status[reply.status_code] = (
            self.counts.by_status.get(reply.status_code, 0) + 1
        )
        if reply.status_code == 429:
            # Over the plan's rate: back off as told (bounded), as a polite client would.
            time.sleep(min(float(reply.headers.get("retry-after") or 1), 2.0))
        return reply

    def sign_up(self) -> None:
        """A new tenant, a token, an API key and a webhook endpoint to the sink."""
        unique = uuid.uuid4().hex[:12]
        email, password = f"monitor-{unique}@example.com", f"monitor passphrase {unique}"
        body = {"email": email, "password": password, "tenant_name": f"monitor-{unique}"}
        self._call("POST", "/v1/auth/register", json=body).raise_for_status()
        login = self._call("POST", "/v1/auth/login", json={"email": email, "password": password})
        login.raise_for_status()
        self.headers = {"authorization": f"Bearer {login.json()['access_token']}"}
        self.refresh_token = login.json()["refresh_token"]
        key = self._call("POST", "/v1/api-keys", json={"name": "monitor"}, headers=self.headers)
        key.raise_for_status()
        self.api_key = {"x-api-key": key.json()["key"]}
        hook = {"url": self.webhook_url, "event_types": ["*"], "description": "monitoring"}
        self._call("POST", "/v1/webhooks", json=hook, headers=self.headers).raise_for_status()

    def round(self, seed: int) -> None:
        """One pass over the API: a lattice's life, reads, deliveries and a few mistakes."""
        h = self.headers
        create = {
            "name": f"m{seed}",
            "dimensions": 2,
            "size": 30,
            "random": {"seed": seed, "low": 0, "high": 1, "blocked_fraction": 0.1},
        }
        reply = self._call("POST", "/v1/lattices", json=create, headers=h)
        if reply.status_code != 200:
            return
        lattice = reply.json()["id"]
        base = f"/v1/lattices/{lattice}"
        self._call("GET", base, headers=h)
        self._call("GET", "/v1/lattices", headers=self.api_key)
        self._call("GET", f"{base}/field", params={"offset": 0, "limit": 100}, headers=h)
        self._call("POST", f"{base}/transform", json={"xor": {"key": seed + 1}}, headers=h)
        self._call("POST", f"{base}/transform", json={"flip": {"axis": 1}}, headers=h)
        for algorithm, cost in (("AUTO", "UNIT"), ("CATALYTIC", "UNIT"), ("DIJKSTRA", "FIELD")):
            params = {"start": [0, 0], "end": [29, 29], "algorithm": algorithm, "cost": cost}
            self._call("GET", f"{base}/path", params=params, headers=h)
        self._call("GET", f"{base}/analysis", headers=h)
        self._call("GET", "/v1/users/me", headers=h)
        self._call("GET", "/v1/webhooks", headers=h)
        self._call("GET", "/.well-known/jwks.json")
        # Client mistakes: not found, unauthenticated, invalid argument.
        self._call("GET", f"/v1/lattices/{uuid.uuid4()}", headers=h)
        self._call("GET", "/v1/users/me", headers={"authorization": "Bearer not.a.token"})
        self._call("POST", "/v1/lattices", json={"name": "x", "dimensions": 0}, headers=h)
        self._call("DELETE", base, headers=h)
        if seed % 5 == 0:
            refreshed = self._call(
                "POST", "/v1/auth/refresh", json={"refresh_token": self.refresh_token}
            )
            if refreshed.status_code == 200:
                self.refresh_token = refreshed.json()["refresh_token"]
                self.headers = {"authorization": f"Bearer {refreshed.json()['access_token']}"}


def drive(
    gateway_url: str,
    *,
    rounds: int = 10,
    duration_s: float | None = None,
    pause_s: float = 0.2,
) -> Counts:
    """Sign up one tenant and run `rounds` rounds (or rounds until `duration_s` has passed),
    `pause_s` apart."""
    with webhook_sink() as sink:
        traffic = Traffic(gateway_url, sink)
        try:
            traffic.sign_up()
            deadline = time.monotonic() + duration_s if duration_s is not None else None
            seed = 0
            while (deadline is None and seed < rounds) or (
                deadline is not None and time.monotonic() < deadline
            ):
                traffic.round(seed)
                seed += 1
                time.sleep(pause_s)
            return traffic.counts
        finally:
            traffic.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.monitoring.traffic",
        description="Drive a bounded mix of API traffic through a running gateway.",
    )
    parser.add_argument("--gateway", default="http://127.0.0.1:8080")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    args = parser.parse_args(argv)
    counts = drive(args.gateway, duration_s=args.duration)
    print(f"{counts.total} requests; by status: {dict(sorted(counts.by_status.items()))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
