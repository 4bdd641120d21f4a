"""The Envoy gateway as a child process: render its config, start it, wait for /healthz."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import httpx

from devstack.binaries import envoy as envoy_binary
from devstack.procs import Child, ProcessError, wait_until
from gateway.render import GatewayConfig, render


class Envoy:
    """Envoy with the config rendered from gateway/envoy.yaml.tmpl into <run_dir>/envoy.yaml."""

    def __init__(self, run_dir: Path, config: GatewayConfig, *, base_id: int) -> None:
        self.config = config
        # Envoy's hot-restart shared memory and sockets are keyed by base id: one per stack (we
        # use the gateway port, which no two running stacks can share) so stacks never clash.
        self.base_id = base_id
        self.config_path = run_dir / "envoy.yaml"
        self.log_path = run_dir / "logs" / "envoy.log"
        self.child: Child | None = None

    @property
    def url(self) -> str:
        return f"http://{self.config.gateway_bind}:{self.config.gateway_port}"

    def start(self, timeout: float = 30.0) -> None:
        if not self.config.descriptor.is_file():
            raise ProcessError(
                f"the descriptor set {self.config.descriptor} is missing; run `make protos`"
            )
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render(self.config))
        argv = [
            str(envoy_binary()),
            "-c",
            str(self.config_path),
            "--log-level",
            "warn",
            "--base-id",
            str(self.base_id),
        ]
        self.child = Child("envoy", argv, self.log_path, stop_signal=signal.SIGTERM)
        self.child.start()
        self.wait_healthy(timeout)

    def running(self) -> bool:
        return self.child is not None and self.child.running()

    def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until /healthz answers 200: only once Envoy's own health checks see every service
        SERVING and none is ejected."""
        wait_until(self._healthy, what="envoy", timeout=timeout, child=self.child, interval=0.2)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop(grace=10.0)
            # Envoy leaves its (tiny) hot-restart segment behind even after a clean exit; test
            # stacks use a new base id each run, so remove it rather than let them pile up.
            with contextlib.suppress(OSError):
                Path(f"/dev/shm/envoy_shared_memory_{self.base_id}0").unlink()  # noqa: S108

    def _healthy(self) -> bool:
        # trust_env=False: a proxy from the environment must never see loopback traffic.
        reply = httpx.get(f"{self.url}/healthz", timeout=2.0, trust_env=False)
        return reply.status_code == 200
