"""Refuses migrations that would break the previous release's code unless marked as contracts.

Usage: python -m services.common.migration_lint check [migrations/]

Release N-1 keeps running while release N's migrations are applied (rolling deploys, the
Kubernetes Job before the new pods), so a migration may only *expand* the schema. Statements
that remove or reshape what N-1 uses are allowed only in a file whose leading comments carry
`-- contract: <why; which release stopped using it>` (migrations/README.md, ADR 52).

This is a tokenizer, not a SQL parser: it knows quotes, dollar-quoting and comments well
enough to split our files into statements and read their leading keywords.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from services.common.migrate import FILENAME, checksum

# `-- contract: reason` among the comments before the first statement.
CONTRACT_MARKER = re.compile(r"^--\s*contract:\s*(?P<reason>\S.*?)\s*$", re.MULTILINE)

# Files applied before the rule existed that it would refuse. They cannot gain a marker (an
# applied file never changes: its checksum is recorded), so they are listed here, pinned to
# their checksum and with the reason they were safe for the release before them.
GRANDFATHERED: dict[str, tuple[str, str]] = {
    "0005_tenant_scoped_foreign_keys.sql": (
        "fd52366dc42f2c0b7ddc7599964aeb9efcaeba8d4b1abd7babda60b92b001b3c",
        "drops two single-column foreign keys and adds (tenant_id, id) ones in the same "
        "statement: every row the previous release writes satisfies the new keys",
    ),
}

# Objects whose DROP is a replacement, and allowed, when the same file creates the same name.
_REPLACEABLE = frozenset({"POLICY", "TRIGGER", "FUNCTION", "PROCEDURE", "VIEW"})


class LintError(Exception):
    """A file the tokenizer cannot read (an unterminated string, identifier or comment)."""


@dataclass(frozen=True, slots=True)
class Token:
    """One token; kind: word (keyword or bare name), ident ("quoted"), string, dollar, number,
    punct."""

    kind: str
    text: str
    line: int

    @property
    def keyword(self) -> str | None:
        """The upper-cased word, or None for anything that cannot be a keyword."""
        return self.text.upper() if self.kind == "word" else None


@dataclass(frozen=True, slots=True)
class Statement:
    """The tokens of one statement, without its `;`."""

    tokens: tuple[Token, ...]

    @property
    def line(self) -> int:
        return self.tokens[0].line

    def keywords(self) -> list[str | None]:
        return [t.keyword for t in self.tokens]


@dataclass(frozen=True, slots=True)
class Finding:
    """One refused statement."""

    filename: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.line}: {self.what}"


_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$")


def tokenize(sql: str) -> list[Token]:
    """The tokens of `sql`; comments and whitespace are dropped."""
    tokens: list[Token] = []
    i, line, n = 0, 1, len(sql)

    def closing(end: int, what: str) -> int:
        if end < 0:
            raise LintError(f"line {line}: unterminated {what}")
        return end

    while i < n:
        c = sql[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            i = n if end < 0 else end
        elif sql.startswith("/*", i):
            # PostgreSQL block comments nest.
            depth, j = 1, i + 2
            while depth:
                if j >= n:
                    raise LintError(f"line {line}: unterminated /* comment")
                if sql.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif sql.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            line += sql.count("\n", i, j)
            i = j
        elif c == "'" or (c in "eE" and sql.startswith("'", i + 1)):
            backslashes = c != "'"
            j = i + (2 if backslashes else 1)
            while True:
                if j >= n:
                    raise LintError(f"line {line}: unterminated string")
                if backslashes and sql[j] == "\\":
                    j += 2
                elif sql[j] == "'":
                    if sql.startswith("'", j + 1):
                        j += 2
                    else:
                        break
                else:
                    j += 1
            tokens.append(Token("string", sql[i : j + 1], line))
            line += sql.count("\n", i, j)
            i = j + 1
        elif c == '"':
            j = i + 1
            while True:
                j = closing(sql.find('"', j), 'quoted identifier (")')
                if sql.startswith('"', j + 1):
                    j += 2
                else:
                    break
            tokens.append(Token("ident", sql[i + 1 : j].replace('""', '"'), line))
            line += sql.count("\n", i, j)
            i = j + 1
        elif c == "$" and (tag := _DOLLAR_TAG.match(sql, i)):
            end = closing(sql.find(tag.group(), tag.end()), f"{tag.group()} quote")
            tokens.append(Token("dollar", sql[tag.end() : end], line))
            line += sql.count("\n", i, end)
            i = end + len(tag.group())
        elif word := _WORD.match(sql, i):
            tokens.append(Token("word", word.group(), line))
            i = word.end()
        elif c.isdigit():
            j = i
            while j < n and (sql[j].isdigit() or sql[j] == "."):
                j += 1
            tokens.append(Token("number", sql[i:j], line))
            i = j
        else:
            tokens.append(Token("punct", c, line))
            i += 1
    return tokens


def split_statements(sql: str) -> list[Statement]:
    """The statements of a file, split on `;` outside quotes, dollar-quotes and comments."""
    statements: list[Statement] = []
    current: list[Token] = []
    for token in tokenize(sql):
        if token.kind == "punct" and token.text == ";":
            if current:
                statements.append(Statement(tuple(current)))
            current = []
        else:
            current.append(token)
    if current:
        statements.append(Statement(tuple(current)))
    return statements


def contract_reason(sql: str) -> str | None:
    """The reason in a `-- contract:` line before the first statement, or None."""
    tokens = tokenize(sql)
    header = sql if not tokens else "\n".join(sql.splitlines()[: tokens[0].line - 1])
    match = CONTRACT_MARKER.search(header)
    return match["reason"] if match else None


def _top_level(tokens: Sequence[Token]) -> list[tuple[Token, int]]:
    """Each token with its parenthesis depth."""
    out, depth = [], 0
    for token in tokens:
        if token.kind == "punct" and token.text == "(":
            depth += 1
        elif token.kind == "punct" and token.text == ")":
            depth -= 1
        out.append((token, depth))
    return out


def _subcommands(tokens: Sequence[Token]) -> list[list[Token]]:
    """An ALTER TABLE's actions, split on commas outside parentheses."""
    parts: list[list[Token]] = [[]]
    for token, depth in _top_level(tokens):
        if depth == 0 and token.kind == "punct" and token.text == ",":
            parts.append([])
        else:
            parts[-1].append(token)
    return [p for p in parts if p]


def _name_after(tokens: Sequence[Token], start: int) -> tuple[str, int]:
    """A possibly qualified name from `start` (after IF EXISTS), lower-cased unless quoted."""
    i = start
    if [t.keyword for t in tokens[i : i + 2]] == ["IF", "EXISTS"]:
        i += 2
    parts: list[str] = []
    while i < len(tokens) and tokens[i].kind in ("word", "ident"):
        word = tokens[i]
        parts.append(word.text.lower() if word.kind == "word" else word.text)
        if i + 1 < len(tokens) and tokens[i + 1].text == "." and tokens[i + 1].kind == "punct":
            i += 2
        else:
            i += 1
            break
    return ".".join(parts), i


def _created_names(statements: Sequence[Statement]) -> set[tuple[str, str]]:
    """(kind, name) of every policy, trigger, function, procedure and view a file creates."""
    created = set()
    for statement in statements:
        words = statement.keywords()
        if words[0] != "CREATE":
            continue
        i = 1
        if words[1:3] == ["OR", "REPLACE"]:
            i = 3
        if i < len(words) and words[i] in ("MATERIALIZED", "CONSTRAINT"):
            i += 1
        if i < len(words) and words[i] in _REPLACEABLE:
            name, _ = _name_after(statement.tokens, i + 1)
            created.add((str(words[i]), name))
    return created


def _check_drop(statement: Statement, created: set[tuple[str, str]]) -> str | None:
    words = statement.keywords()
    kind = words[2] if words[1] == "MATERIALIZED" else words[1]
    if kind in _REPLACEABLE:
        name, _ = _name_after(statement.tokens, 3 if words[1] == "MATERIALIZED" else 2)
        if (str(kind), name) in created:
            return None
        return f"DROP {kind} {name} (not created again in this file)"
    return f"DROP {kind}"


def _check_alter_table(tokens: Sequence[Token]) -> list[str]:
    """Refusals among an ALTER TABLE's actions; `tokens` start after the table's name."""
    refused = []
    for action in _subcommands(tokens):
        words = [t.keyword for t in action]
        if words[0] == "DROP":
            if words[1] == "CONSTRAINT":
                refused.append("ALTER TABLE ... DROP CONSTRAINT")
            else:
                refused.append("ALTER TABLE ... DROP COLUMN")
        elif words[0] == "ALTER":
            start = 2 if words[1] == "COLUMN" else 1
            rest = words[start + 1 :]
            if rest[:1] == ["TYPE"] or rest[:3] == ["SET", "DATA", "TYPE"]:
                refused.append("ALTER COLUMN ... TYPE")
            elif rest[:3] == ["SET", "NOT", "NULL"]:
                refused.append("ALTER COLUMN ... SET NOT NULL")
            elif rest[:1] == ["DROP"] and rest[1:3] != ["NOT", "NULL"]:
                refused.append(f"ALTER COLUMN ... DROP {rest[1]}")
        elif words[0] == "ADD" and words[1] not in (
            "CONSTRAINT",
            "PRIMARY",
            "UNIQUE",
            "FOREIGN",
            "CHECK",
            "EXCLUDE",
        ):
            top = [t.keyword for t, depth in _top_level(action) if depth == 0]
            not_null = any(top[i : i + 2] == ["NOT", "NULL"] for i in range(len(top)))
            if not_null and "DEFAULT" not in top and "GENERATED" not in top:
                refused.append("ADD COLUMN ... NOT NULL without a DEFAULT")
        elif words[:2] == ["SET", "SCHEMA"]:
            refused.append("ALTER TABLE ... SET SCHEMA")
    return refused


def check_statement(statement: Statement, created: set[tuple[str, str]]) -> list[str]:
    """What in one statement would break the previous release (empty: nothing)."""
    words = statement.keywords()
    first = words[0]
    if first == "DROP":
        refused = _check_drop(statement, created)
        return [refused] if refused else []
    if first == "TRUNCATE":
        return ["TRUNCATE"]
    if first == "REVOKE":
        return ["REVOKE"]
    if first == "DELETE":
        top = [t.keyword for t, depth in _top_level(statement.tokens) if depth == 0]
        return [] if "WHERE" in top else ["DELETE without WHERE"]
    if first == "DO":
        body = next((t.text for t in statement.tokens if t.kind == "dollar"), "")
        inside = {t.keyword for t in tokenize(body)}
        found = sorted(w for w in inside if w in {"DROP", "TRUNCATE", "RENAME", "REVOKE", "DELETE"})
        return [f"{word} inside a DO block" for word in found]
    if first == "ALTER":
        top = [t.keyword for t, depth in _top_level(statement.tokens) if depth == 0]
        if "RENAME" in top:
            return [f"ALTER {words[1]} ... RENAME"]
        if words[1] == "TABLE":
            start = 4 if words[2:4] == ["IF", "EXISTS"] else 2
            start += 1 if words[start] == "ONLY" else 0
            _, after = _name_after(statement.tokens, start)
            return _check_alter_table(statement.tokens[after:])
        if any(top[i : i + 2] == ["SET", "SCHEMA"] for i in range(len(top))):
            return [f"ALTER {words[1]} ... SET SCHEMA"]
        if words[1] in ("TYPE", "DOMAIN") and "DROP" in top:
            return [f"ALTER {words[1]} ... DROP"]
    return []


def check_sql(sql: str, filename: str) -> list[Finding]:
    """Every refused statement of one file; none when it is a contract migration."""
    try:
        if contract_reason(sql) is not None:
            return []
        statements = split_statements(sql)
    except LintError as exc:
        return [Finding(filename, 0, str(exc))]
    created = _created_names(statements)
    return [
        Finding(filename, statement.line, what)
        for statement in statements
        for what in check_statement(statement, created)
    ]


def check_directory(directory: Path) -> list[Finding]:
    """Every refused statement of every `NNNN_name.sql` in `directory`."""
    findings = []
    for path in sorted(directory.glob("*.sql")):
        data = path.read_bytes()
        pinned = GRANDFATHERED.get(path.name)
        if pinned is not None and pinned[0] == checksum(data) and FILENAME.fullmatch(path.name):
            continue
        findings.extend(check_sql(data.decode(), path.name))
    return findings


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.migration_lint",
        description="Refuse destructive statements outside contract migrations "
        "(migrations/README.md, 'Expand and contract').",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="lint every migration in a directory")
    check.add_argument("directory", nargs="?", type=Path, default=Path("migrations"))
    args = parser.parse_args(argv)
    findings = check_directory(args.directory)
    for finding in findings:
        print(
            f"{finding}: breaks the previous release; expand now and contract in a later "
            "release, in a file headed `-- contract: <why>` (migrations/README.md)",
            file=sys.stderr,
        )
    if not findings:
        print(f"{args.directory}: every migration expands or is marked as a contract")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
