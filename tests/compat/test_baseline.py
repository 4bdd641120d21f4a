"""How release N-1 is chosen and set up (tests/compat/previous_release), on throw-away git
repositories: no servers, a second or two."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.compat.previous_release import (
    CompatSetupError,
    HistoryUnavailable,
    baseline_env,
    choose_baseline,
    exceptions,
    git,
    prepare,
    summary,
)

# A Makefile shaped like ours: `protos` needs the virtual environment, which must be taken as
# installed (`pip install` of an old tree into the current environment would be a disaster).
MAKEFILE = """\
VENV ?= .venv
PY := $(VENV)/bin/python
$(VENV)/.installed: Makefile
\t@echo "would install into $(VENV)" >&2; exit 1
gen/.stamp: $(VENV)/.installed
\t@mkdir -p gen/python && echo "$(PY)" > gen/.stamp
protos: gen/.stamp
"""


def _commit(repo: Path, message: str, **files: str | None) -> str:
    """Writes (or, for None, deletes) files and commits them; returns the commit's id."""
    for name, text in files.items():
        path = repo / name
        if text is None:
            path.unlink()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@example.com", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """Three releases: 0001 with the first, 0002 with the second, then code only."""
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    _commit(root, "one", **{"migrations/0001_a.sql": "SELECT 1;\n", "Makefile": MAKEFILE})
    _commit(root, "code", **{"services/x.py": "X = 1\n"})
    _commit(root, "two", **{"migrations/0002_b.sql": "SELECT 2;\n", "services/x.py": "X = 2\n"})
    _commit(root, "more code", **{"services/x.py": "X = 3\n"})
    return root


def _rev(repo: Path, ref: str) -> str:
    return git(repo, "rev-parse", ref)


def test_n_minus_1_is_the_parent_of_the_commit_that_added_the_newest_migration(repo: Path) -> None:
    baseline = choose_baseline(repo, repo / "migrations")
    assert baseline.commit == _rev(repo, "HEAD~2")
    assert "0002_b.sql" in baseline.why


def test_a_migration_not_yet_committed_makes_head_n_minus_1(repo: Path) -> None:
    (repo / "migrations" / "0003_c.sql").write_text("SELECT 3;\n")
    baseline = choose_baseline(repo, repo / "migrations")
    assert baseline.commit == _rev(repo, "HEAD")
    assert "0003_c.sql" in baseline.why


def test_compat_base_ref_chooses_any_earlier_commit(repo: Path) -> None:
    git(repo, "tag", "release-1", "HEAD~3")
    assert choose_baseline(repo, repo / "migrations", "release-1").commit == _rev(repo, "HEAD~3")
    with pytest.raises(CompatSetupError, match="not a commit"):
        choose_baseline(repo, repo / "migrations", "no-such-ref")


def test_a_baseline_with_a_migration_this_checkout_lacks_is_refused(repo: Path) -> None:
    git(repo, "checkout", "-q", "-b", "other")
    _commit(repo, "elsewhere", **{"migrations/0003_c.sql": "SELECT 3;\n"})
    git(repo, "checkout", "-q", "main")
    with pytest.raises(CompatSetupError, match=r"0003_c\.sql"):
        choose_baseline(repo, repo / "migrations", "other")


def test_a_baseline_whose_migration_was_edited_since_is_refused(repo: Path) -> None:
    (repo / "migrations" / "0001_a.sql").write_text("SELECT 'edited';\n")
    with pytest.raises(CompatSetupError, match=r"0001_a\.sql differs"):
        choose_baseline(repo, repo / "migrations")


def test_a_shallow_clone_skips_and_says_why(repo: Path, tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)],
        check=True,
        capture_output=True,
    )
    with pytest.raises(HistoryUnavailable, match="shallow clone"):
        choose_baseline(clone, clone / "migrations")


def test_without_git_history_it_skips(tmp_path: Path) -> None:
    plain = tmp_path / "export"
    (plain / "migrations").mkdir(parents=True)
    (plain / "migrations" / "0001_a.sql").write_text("SELECT 1;\n")
    # tmp_path is not inside a git checkout; should it ever be, this says "of its own".
    with pytest.raises(HistoryUnavailable, match="git checkout"):
        choose_baseline(plain, plain / "migrations")


def test_a_migration_as_old_as_the_repository_has_no_n_minus_1(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q")
    _commit(root, "one", **{"migrations/0001_a.sql": "SELECT 1;\n"})
    with pytest.raises(HistoryUnavailable, match="no release N-1"):
        choose_baseline(root, root / "migrations")


def test_prepare_swaps_in_this_schema_and_builds_the_baseline_without_installing(
    repo: Path, tmp_path: Path
) -> None:
    (repo / "migrations" / "0003_c.sql").write_text("SELECT 3;\n")
    (repo / "node_modules").mkdir()
    baseline = choose_baseline(repo, repo / "migrations", "HEAD~2")
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    tree = prepare(repo, repo / "migrations", baseline, workspace)
    assert sorted(p.name for p in (tree / "migrations").iterdir()) == [
        "0001_a.sql",
        "0002_b.sql",
        "0003_c.sql",
    ]
    assert (tree / "services" / "x.py").read_text() == "X = 1\n"  # the baseline's code
    assert (tree / "gen" / ".stamp").is_file()
    assert (tree / "node_modules").resolve() == (repo / "node_modules").resolve()
    env = baseline_env(tree)
    assert env["PYTHONPATH"].split(":")[0] == str(tree)
    assert env["TMPDIR"] == str(workspace / "tmp")


def test_the_failure_message_reads_the_summary_and_the_services_exceptions(tmp_path: Path) -> None:
    output = "\n".join(
        [
            "E   AssertionError: 500",
            'psycopg.errors.UndefinedColumn: column "name" does not exist',
            "LINE 1: SELECT name FROM lattices",
            "==== short test summary info ====",
            "FAILED tests/smoke/test_a.py::test_b - AssertionError: 500",
            "==== 1 failed, 3 passed in 9.00s ====",
        ]
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "lattice.log").write_text(
        '{"level": "ERROR", "exc_info": "Traceback (most recent call last):\\n'
        '  File \\"x.py\\", line 1\\nKeyError: \'name\'"}\n'
        "--- 2026-01-01 start lattice\n"
    )
    assert summary(output) == output.splitlines()[-2:]
    assert exceptions(output, logs) == [
        'tests: psycopg.errors.UndefinedColumn: column "name" does not exist',
        "lattice: KeyError: 'name'",
    ]
