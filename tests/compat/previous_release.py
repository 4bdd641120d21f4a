"""Release N-1 from git history, set up to run its own tests on this checkout's schema (ADR 52).

N-1 is the last code that ran without the newest migration: the parent of the commit that added
it, or HEAD while that file is not committed yet. COMPAT_BASE_REF names another baseline (a
release tag). `prepare` exports it with `git archive`, puts this checkout's migrations/ in its
place, so its own test harness migrates to schema N, and runs its own protoc step.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.migrate import FILENAME, checksum, discover

# The baseline's suites run by default: the smoke suite through its own local stack (PostgreSQL,
# Redis, the services, Envoy) and the integration tests of its stores. About a minute.
DEFAULT_SUITES = ("tests/smoke", "tests/integration")

# Baseline tests left out, by node id, with the reason: an old test that forbade what a new
# expand migration grants on purpose (never an old test that new schema broke by accident).
# A row goes once the default baseline has moved past the change.
_REVIEWED_CONTEXTS = (
    "0010 adds the reviewed, owner-only webhooks_key_maintenance_read policy (ADR 56) and 0011"
    " two reviewed read-only service views (ADR 57: revoked_access_tokens_rebuild_read,"
    " api_keys_revoked_rebuild_read, the latter narrowed to revoked rows); releases before them"
    " list every such policy and view by name and refuse any other"
)
_SEED_SKIPS_TRIGGERS = (
    "0013 gives every new user a membership by trigger (users_home_membership) and keys refresh"
    " tokens and API keys on memberships; releases before it seed the plan check's database in"
    " session_replication_role = replica (loadtest/sql/seed.sql), which skips that trigger, so"
    " their seeded users have no membership and their hot-path log-in's refresh token breaks the"
    " key. Their real writes fire it (tests/integration/test_memberships_sql.py plays them)"
)
_GENERIC_SEED_MEETS_AUDIT_CHECKS = (
    "0014 adds audit_events, whose CHECKs (a dotted action name, 32-byte hashes, a known actor"
    " type) refuse the values releases before it seed every tenant table with generically"
    " (tests/integration/test_isolation_sql.py); those releases never write the table, and this"
    " checkout's isolation matrix seeds it with valid rows and checks it"
)
_FLAKY_SECRET_CUT = (
    "releases before 2026-12-06 cut the key's secret at its last '_', which URL-safe base64 may"
    " hold, and then looked for a few random bytes in the listing's wire form: it failed by"
    " chance (a clean-clone CI saw b'4'); fixed in tests/integration/test_auth_api_keys.py"
)
DESELECTED: dict[str, str] = {
    "tests/integration/test_auth_api_keys.py::test_create_list_delete": _FLAKY_SECRET_CUT,
    **{
        f"tests/integration/test_isolation_sql.py::{test}": _GENERIC_SEED_MEETS_AUDIT_CHECKS
        for test in (
            "test_no_tenant_can_see_or_touch_another_tenants_rows",
            "test_the_check_reports_a_sabotaged_policy",
        )
    },
    **{
        f"tests/integration/test_row_level_security.py::{test}": _GENERIC_SEED_MEETS_AUDIT_CHECKS
        for test in (
            "test_tenant_context_does_not_leak_past_the_transaction",
            "test_a_pooled_connection_forgets_its_tenant",
            "test_a_one_round_trip_read_sees_one_tenant_and_leaves_no_trace",
        )
    },
    **{
        f"tests/integration/test_row_level_security.py::{test}": _REVIEWED_CONTEXTS
        for test in (
            "test_service_context_policies_are_reviewed_read_only_and_open_one_table",
            "test_lookup_policies_only_read_by_one_exact_key",
            "test_a_lookup_admits_exactly_the_named_row_and_nothing_else",
        )
    },
    **{
        f"tests/integration/test_query_plans.py::{test}": _SEED_SKIPS_TRIGGERS
        for test in (
            "test_every_store_method_is_planned",
            "test_no_hot_query_scans_a_big_table_sequentially",
            "test_the_expected_sequential_scans_still_happen",
            "test_the_check_sees_a_sequential_scan_when_an_index_is_missing",
        )
    },
}

# What must not leak from the outer test run into the baseline's: its own pytest state, and
# settings that would point the baseline's stack at this checkout's files or at a deployment.
_DROPPED_VARS = frozenset({"GATEWAY_URL", "GATEWAY_DESCRIPTOR", "PYTHONPATH", "PYTHONSTARTUP"})


class HistoryUnavailable(Exception):
    """No release N-1 to be had here (not a git checkout, a shallow clone): the test skips."""


class CompatSetupError(Exception):
    """The baseline exists but cannot be used as asked (a bad ref, a foreign migration)."""


@dataclass(frozen=True, slots=True)
class Baseline:
    """The commit whose code plays release N-1, and how it was chosen (for messages)."""

    commit: str
    why: str

    @property
    def short(self) -> str:
        return self.commit[:10]


@dataclass(frozen=True, slots=True)
class RunResult:
    """The baseline's pytest run: its exit status, its whole output, and where its stack's
    logs were kept (its conftest keeps them when a test failed)."""

    returncode: int
    output: str
    logs_dir: Path | None


def git(repo: Path, *args: str) -> str:
    """`git -C repo args...`'s standard output; CalledProcessError when it fails."""
    result = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout.strip()


def _git_ok(repo: Path, *args: str) -> str | None:
    try:
        return git(repo, *args)
    except subprocess.CalledProcessError:
        return None


def choose_baseline(repo: Path, migrations: Path, ref: str | None = None) -> Baseline:
    """Release N-1 for the schema in `migrations`: `ref` when given, else the last commit that
    ran without the newest migration file."""
    repo = repo.resolve()
    try:
        top = git(repo, "rev-parse", "--show-toplevel")
    except FileNotFoundError:
        raise HistoryUnavailable("git is not installed") from None
    except subprocess.CalledProcessError:
        raise HistoryUnavailable(f"{repo} is not a git checkout") from None
    if Path(top).resolve() != repo:
        raise HistoryUnavailable(f"{repo} is not a git checkout of its own (inside {top})")
    if ref:
        commit = _git_ok(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        if commit is None:
            raise CompatSetupError(f"COMPAT_BASE_REF={ref!r} is not a commit in this repository")
        baseline = Baseline(commit, f"COMPAT_BASE_REF={ref}")
    else:
        baseline = _before_newest_migration(repo, migrations)
    _check_schema_is_newer(repo, migrations, baseline)
    return baseline


def _before_newest_migration(repo: Path, migrations: Path) -> Baseline:
    found = discover(migrations)
    if not found:
        raise HistoryUnavailable(f"{migrations} holds no migration")
    newest = found[-1].filename
    path = (migrations.resolve() / newest).relative_to(repo).as_posix()
    if _git_ok(repo, "rev-parse", "--verify", "--quiet", "HEAD^{commit}") is None:
        raise HistoryUnavailable("the repository has no commit yet")
    if _git_ok(repo, "cat-file", "-e", f"HEAD:{path}") is None:
        # Not committed yet: the code HEAD holds is the last that ran without it.
        return Baseline(git(repo, "rev-parse", "HEAD"), f"HEAD, since {newest} is not committed")
    added = git(
        repo, "log", "-n1", "--no-renames", "--diff-filter=A", "--format=%H", "HEAD", "--", path
    )
    parent = _git_ok(repo, "rev-parse", "--verify", "--quiet", f"{added}^1^{{commit}}")
    if not added or parent is None:
        if git(repo, "rev-parse", "--is-shallow-repository") == "true":
            raise HistoryUnavailable(
                f"shallow clone: its history stops at {added[:10]}, so the commit before "
                f"{newest} was added is missing (`git fetch --unshallow` brings it)"
            )
        raise HistoryUnavailable(f"{newest} came with the first commit: there is no release N-1")
    return Baseline(parent, f"the parent of {added[:10]}, which added {newest}")


def _check_schema_is_newer(repo: Path, migrations: Path, baseline: Baseline) -> None:
    """Every migration the baseline ships is here unchanged, or schema N does not extend its."""
    here = {m.filename: m.checksum for m in discover(migrations)}
    folder = migrations.resolve().relative_to(repo).as_posix()
    listing = _git_ok(repo, "ls-tree", "--name-only", f"{baseline.commit}:{folder}") or ""
    for name in listing.splitlines():
        if not FILENAME.fullmatch(name):
            continue
        if name not in here:
            raise CompatSetupError(
                f"the baseline {baseline.short} ({baseline.why}) ships {name}, which this "
                "checkout lacks: it is not an earlier release of this schema"
            )
        theirs = subprocess.run(
            ["git", "-C", str(repo), "show", f"{baseline.commit}:{folder}/{name}"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        if checksum(theirs) != here[name]:
            raise CompatSetupError(
                f"{name} differs between the baseline {baseline.short} and this checkout; "
                "applied migrations are never edited (migrations/README.md)"
            )


def prepare(repo: Path, migrations: Path, baseline: Baseline, workspace: Path) -> Path:
    """The baseline's files in `workspace`/tree, with this checkout's migrations/ and the
    baseline's own generated code (its Makefile's `protos`, run with this interpreter's tools);
    `workspace`/tmp for its temporary files. Returns the tree."""
    # World-searchable: the test stack's PostgreSQL runs as an unprivileged user under root.
    workspace.chmod(0o755)
    dest = workspace / "tree"
    for directory in (dest, workspace / "tmp"):
        directory.mkdir()
        directory.chmod(0o755)
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", "--format=tar", baseline.commit],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(dest, filter="tar")
    folder = migrations.resolve().relative_to(repo.resolve())
    shutil.rmtree(dest / folder, ignore_errors=True)
    shutil.copytree(migrations, dest / folder)
    # The gateway serves /docs and /redoc from the npm packages (`make web-assets`); the smoke
    # suite asks for both pages.
    if (repo / "node_modules").is_dir():
        (dest / "node_modules").symlink_to(repo.resolve() / "node_modules")
    venv, bin_dir = Path(sys.prefix), Path(sys.executable).parent
    # `-o`: take the virtual environment as installed; never `pip install` the baseline into it.
    result = subprocess.run(
        [
            "make",
            "-C",
            str(dest),
            "-o",
            f"{venv}/.installed",
            f"VENV={venv}",
            f"PY={sys.executable}",
            f"BIN={bin_dir}",
            "protos",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        raise CompatSetupError(
            f"`make protos` in the baseline failed ({result.returncode}):\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
    return dest


def baseline_env(tree: Path) -> dict[str, str]:
    """The environment the baseline's tests run in: its own code first on the path, and its
    temporary files (the stack's run directory among them) in `tree`'s sibling tmp/."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in _DROPPED_VARS and not key.startswith("PYTEST_")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(tree), str(tree / "gen" / "python")])
    env["TMPDIR"] = str(tree.parent / "tmp")
    env["COLUMNS"] = "200"  # whole test ids in its summary
    return env


def check_imports_from(tree: Path) -> None:
    """The baseline's interpreter imports the baseline's packages and migrates from `tree`'s
    migrations/, not this checkout's (the editable install and its .pth point here)."""
    probe = (
        "import devstack, services, services.common.migrate as m;"
        "print(devstack.__file__); print(services.__file__);"
        "print(getattr(m, 'DEFAULT_DIR', ''))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tree,
        env=baseline_env(tree),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise CompatSetupError(f"the baseline's packages do not import:\n{result.stderr[-2000:]}")
    root = tree.resolve()
    for line in filter(None, result.stdout.splitlines()):
        if not Path(line).resolve().is_relative_to(root):
            raise CompatSetupError(f"the baseline's run would use {line}, outside {root}")


def run_suites(tree: Path, suites: Sequence[str], timeout_s: float) -> RunResult:
    """The baseline's pytest on `suites` inside `tree`; its output also goes to compat.log."""
    log_path = tree / "compat.log"
    with open(log_path, "w+", encoding="utf-8", errors="replace") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pytest",
                *suites,
                *(f"--deselect={node}" for node in DESELECTED),
                "-p",
                "no:cacheprovider",
                "--tb=short",
            ],
            cwd=tree,
            env=baseline_env(tree),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = False
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            # Ctrl-C lets its fixtures stop the stack; its children die with it anyway
            # (devstack starts them with a parent-death signal).
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            returncode = proc.returncode or 1
        log.seek(0)
        output = log.read()
    if timed_out:
        output += f"\n[compat] stopped after {timeout_s:g} s"
    # Its conftest keeps the stack's run directory when a test failed.
    kept = sorted((tree.parent / "tmp").glob("catalytic-test-stack-*/logs"))
    return RunResult(returncode, output, kept[-1] if kept else None)


def summary(output: str) -> list[str]:
    """pytest's short test summary (FAILED and ERROR ids) and its closing line."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if "short test summary info" in line]
    return lines[starts[-1] + 1 :] if starts else lines[-40:]


# An exception's last line, as a traceback ends: `psycopg.errors.UndefinedColumn: column ...`.
_EXCEPTION = re.compile(
    r"^(?:E\s+)?((?:(?:[a-z_]\w*\.)+_?[A-Z]\w*|_?[A-Z]\w*(?:Error|Exception)): \S.*)"
)


def exceptions(output: str, logs_dir: Path | None, limit: int = 8) -> list[str]:
    """The distinct exceptions raised in the baseline's tests and in its stack's services:
    where an SQL error on the new schema shows (a test through the gateway only sees
    INTERNAL and a request id)."""
    sources = [("tests", output.splitlines())]
    for path in sorted(logs_dir.glob("*.log")) if logs_dir is not None else ():
        sources.append((path.stem, _log_lines(path)))
    found: list[str] = []
    for where, lines in sources:
        for line in lines:
            match = _EXCEPTION.match(line)
            if match and not match[1].startswith("AssertionError"):
                entry = f"{where}: {match[1][:300]}"
                if entry not in found:
                    found.append(entry)
    return found[:limit]


def _log_lines(path: Path) -> list[str]:
    """A service log's lines, with the traceback of each JSON record (`exc_info`) unfolded."""
    lines: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            lines.append(line)
            continue
        if isinstance(record, dict) and isinstance(record.get("exc_info"), str):
            lines += record["exc_info"].splitlines()
    return lines
