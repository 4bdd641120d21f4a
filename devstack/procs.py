"""Child processes: start each in its own process group with its log file, stop it for sure."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

# setpriv (util-linux) lets a child die with us even if we are SIGKILLed, and drops privileges
# without a wrapper process staying around; without it we fall back to Popen(user=...).
_SETPRIV = shutil.which("setpriv")


class ProcessError(RuntimeError):
    """A child process failed to start, died, or did not become ready in time."""


def log_tail(path: Path, lines: int = 30) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    tail = text.splitlines()[-lines:]
    return "\n".join(f"    | {line}" for line in tail) or f"(log {path} is empty)"


class Child:
    """One long-running child process, in its own process group, logging to one file."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        user: str | None = None,
        stop_signal: signal.Signals = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.user = user
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        """Start the process (appending to its log); a no-op when it is already running."""
        if self.running():
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = self.argv
        popen_user: str | None = None
        if _SETPRIV is not None:
            wrap = [_SETPRIV, f"--pdeathsig={self.stop_signal.name.removeprefix('SIG')}"]
            if self.user is not None:
                wrap += ["--reuid", self.user, "--regid", self.user, "--init-groups"]
            argv = [*wrap, "--", *argv]
        elif self.user is not None:
            popen_user = self.user
        with open(self.log_path, "ab") as log:
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start {self.name}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                user=popen_user,
                group=pwd.getpwnam(popen_user).pw_gid if popen_user else None,
                extra_groups=[] if popen_user else None,
            )

    def check_alive(self) -> None:
        """Raise ProcessError with the log tail when the process has exited."""
        if self.proc is None:
            raise ProcessError(f"{self.name} was never started")
        code = self.proc.poll()
        if code is not None:
            raise ProcessError(
                f"{self.name} exited with status {code}; log {self.log_path}:\n"
                f"{log_tail(self.log_path)}"
            )

    def stop(self, grace: float = 10.0) -> None:
        """Send the stop signal, wait up to `grace` seconds, then SIGKILL the process group."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            # To the leader only: it shuts its own workers down in order.
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self.stop_signal)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)
        # Also reaps helpers the child left behind in its group (workers, forked pools).
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL the whole process group at once (simulates a crash)."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)

    def _signal_group(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        # The child leads its own session, so its pid is its process group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)


def wait_until(
    check: Callable[[], bool],
    *,
    what: str,
    timeout: float,
    child: Child | None = None,
    interval: float = 0.1,
) -> None:
    """Poll `check()` until it returns True; fail early when `child` dies, late on timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        if child is not None:
            child.check_alive()
        try:
            if check():
                return
        except Exception as exc:  # any failure just means "not ready yet"
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            tail = ""
            if child is not None:
                tail = f"\nlog {child.log_path}:\n{log_tail(child.log_path)}"
            raise ProcessError(f"{what} not ready after {timeout:.0f} s{detail}{tail}")
        time.sleep(interval)
