"""The load tests' private stack: devstack on free ports in a throw-away run directory.

Every scenario runs against a stack of its own (never `make up`'s), with the gateway's backstop
lifted: GATEWAY_RATE_LIMIT_PER_S (2,000 by default) is a guard for the whole gateway, and a load
test that ran into it would measure the bucket instead of the stack (on a faster machine the
`rest` ceiling once reported 14,823 req/s, 126,303 of them 429s from it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from devstack import Stack, StackPorts
from gateway.render import DEFAULT_DESCRIPTOR

# Far above anything two cores serve; the services' own limits still apply.
LOAD_GATEWAY_RATE_LIMIT_PER_S = 1_000_000


@contextmanager
def private_stack(
    extra_env: Mapping[str, str],
    log: Callable[[str], None],
    *,
    postgres_settings: Mapping[str, str] | None = None,
    keep_logs_on_error: bool = True,
) -> Iterator[Stack]:
    """A started stack (fast PostgreSQL, its own Redis) that is stopped and deleted on exit;
    when the body raises, its logs are kept and their place printed. `postgres_settings` go on
    its PostgreSQL's command line (`pgstats.SETTINGS` for query times)."""
    run_dir = Path(tempfile.mkdtemp(prefix="catalytic-loadtest-"))
    run_dir.chmod(0o755)  # the unprivileged PostgreSQL user must enter it when run as root
    stack = Stack(
        run_dir=run_dir,
        ports=StackPorts.free(),
        fast_postgres=True,
        descriptor=Path(os.environ.get("GATEWAY_DESCRIPTOR") or DEFAULT_DESCRIPTOR),
        gateway_rate_limit_per_s=LOAD_GATEWAY_RATE_LIMIT_PER_S,
        extra_env=extra_env,
        postgres_settings=postgres_settings,
        log=log,
    )
    failed = True
    try:
        stack.start()
        yield stack
        failed = False
    finally:
        stack.stop()
        if failed and keep_logs_on_error:
            log(f"stack logs kept in {run_dir}/logs")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)
