"""A private Redis server under the run directory, with an append-only file for durability."""

from __future__ import annotations

import signal
from pathlib import Path

import redis as redis_client

from devstack.binaries import redis_server
from devstack.procs import Child, wait_until


class Redis:
    """redis-server on 127.0.0.1:port with its data in <run_dir>/redis."""

    def __init__(self, run_dir: Path, port: int) -> None:
        self.port = port
        self.data_dir = run_dir / "redis"
        self.log_path = run_dir / "logs" / "redis.log"
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(redis_server()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "yes",
            "--dir",
            str(self.data_dir),
            "--appendonly",
            "yes",
            "--save",
            "",  # the AOF is the durable copy; no RDB snapshots
            "--daemonize",
            "no",
            "--logfile",
            "",  # stdout, which goes to our log file
        ]
        # SIGTERM makes redis flush the AOF and exit cleanly.
        self.child = Child("redis", argv, self.log_path, stop_signal=signal.SIGTERM)
        self.child.start()
        wait_until(self._pong, what="redis", timeout=timeout, child=self.child)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(grace=15.0)

    def _pong(self) -> bool:
        client = redis_client.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
