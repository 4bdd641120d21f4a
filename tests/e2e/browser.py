"""Headless Chromium driven over the DevTools protocol, for tests that click through a page.

Chromium's `--remote-debugging-pipe` speaks the protocol over two pipes (it reads commands from
its fd 3 and writes answers to its fd 4, each message JSON ending in a NUL byte), so no
WebSocket client and no open port are needed. Every wait is bounded.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

JSON = dict[str, Any]


class BrowserError(RuntimeError):
    """Chromium failed, answered with an error, or a wait ran out."""


class Page:
    """One tab, attached in flat mode: commands carry its session id."""

    def __init__(self, browser: Browser, session_id: str) -> None:
        self.browser = browser
        self.session_id = session_id

    def send(self, method: str, params: JSON | None = None) -> JSON:
        return self.browser.send(method, params, session_id=self.session_id)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (awaited when it is a promise)."""
        reply = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in reply:
            raise BrowserError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def wait_for(self, expression: str, *, timeout: float, what: str) -> Any:
        """Evaluates `expression` until it is truthy; its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)


class Browser:
    """A headless Chromium child process and the pipe pair to talk to it."""

    def __init__(self, binary: str, profile: str, *, timeout: float) -> None:
        self.timeout = timeout
        # A file, not a pipe: Chromium logs freely and must never block on a full pipe.
        self.log_path = os.path.join(profile, "chromium.log")
        log = open(self.log_path, "wb")  # noqa: SIM115 (closed right after the start)
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        args = [
            f"--user-data-dir={profile}",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-proxy-server",
            "--no-first-run",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        # The shell puts the pipe ends on the descriptors Chromium expects, 3 and 4.
        self.process = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{commands_read} 4>&{answers_write}', binary, *args],
            pass_fds=(commands_read, answers_write),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        os.close(commands_read)
        os.close(answers_write)
        self._next_id = 0
        self._replies: queue.Queue[JSON | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buffer = b""
        with os.fdopen(self._answers, "rb", buffering=0) as answers:
            while chunk := answers.read(65536):
                buffer += chunk
                *messages, buffer = buffer.split(b"\0")
                for message in messages:
                    self._replies.put(json.loads(message))
        self._replies.put(None)  # Chromium closed its end: it has exited

    def send(self, method: str, params: JSON | None = None, *, session_id: str = "") -> JSON:
        """Sends one command and waits for its answer (events in between are dropped)."""
        self._next_id += 1
        message: JSON = {"id": self._next_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                reply = self._replies.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise BrowserError(f"no answer to {method} within {self.timeout} s") from None
            if reply is None:
                raise BrowserError(f"chromium exited during {method}: {self.log_tail()}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error']}")
                result: JSON = reply.get("result", {})
                return result

    def new_page(self) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        attached = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        page = Page(self, attached["sessionId"])
        page.send("Page.enable")
        page.send("Runtime.enable")
        return page

    def log_tail(self) -> str:
        with open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")[-800:]

    def close(self) -> None:
        with suppress(BrowserError):  # it may be gone already
            self.send("Browser.close")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        os.close(self._commands)


@contextmanager
def chromium(timeout: float = 30.0) -> Iterator[Browser]:
    """A headless Chromium (Debian `chromium`) with a throw-away profile, closed afterwards."""
    binary = shutil.which("chromium")
    if binary is None:
        raise BrowserError("chromium is not installed (run `make system-deps`)")
    with tempfile.TemporaryDirectory(prefix="catalytic-test-chromium-") as profile:
        browser = Browser(binary, profile, timeout=timeout)
        try:
            yield browser
        finally:
            browser.close()
