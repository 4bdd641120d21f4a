"""Generated blocks inside hand-written Markdown: find them by name and replace what they hold.

A block is the text between `<!-- BEGIN GENERATED: name -->` and `<!-- END GENERATED: name -->`,
each marker on a line of its own. Everything outside the blocks is left byte for byte as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_MARKER = re.compile(r"^<!-- (BEGIN|END) GENERATED: (.+?) -->$", re.MULTILINE)


class BlockError(ValueError):
    """Markers that do not pair up, or blocks and contents that do not match."""


def begin(name: str) -> str:
    return f"<!-- BEGIN GENERATED: {name} -->"


def end(name: str) -> str:
    return f"<!-- END GENERATED: {name} -->"


def _spans(text: str) -> list[tuple[str, int, int]]:
    """(name, start of the content, end of the content) of every block, in order."""
    spans: list[tuple[str, int, int]] = []
    open_name: str | None = None
    content_start = 0
    for match in _MARKER.finditer(text):
        kind, name = match.group(1), match.group(2)
        if kind == "BEGIN":
            if open_name is not None:
                raise BlockError(f"block {name!r} begins inside block {open_name!r}")
            open_name, content_start = name, match.end() + 1
        else:
            if open_name != name:
                raise BlockError(f"END of block {name!r} without its BEGIN")
            spans.append((name, content_start, match.start()))
            open_name = None
    if open_name is not None:
        raise BlockError(f"block {open_name!r} has no END marker")
    names = [name for name, _, _ in spans]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BlockError(f"blocks named twice: {', '.join(duplicates)}")
    return spans


def names(text: str) -> list[str]:
    """The names of the blocks in `text`, in order."""
    return [name for name, _, _ in _spans(text)]


def headings_above(text: str) -> dict[str, str]:
    """Block name -> the text of the last heading before the block (outside code fences)."""
    out: dict[str, str] = {}
    heading, fenced, position = "", False, 0
    spans = iter(_spans(text))
    span = next(spans, None)
    for line in text.splitlines(keepends=True):
        while span is not None and span[1] <= position:
            out[span[0]] = heading
            span = next(spans, None)
        fenced ^= line.startswith("```")
        if line.startswith("#") and not fenced:
            heading = line.lstrip("#").strip()
        position += len(line)
    return out


def fill(text: str, contents: Mapping[str, str]) -> str:
    """`text` with each block holding `contents[name]`; every block must have contents and
    every contents a block."""
    spans = _spans(text)
    found = {name for name, _, _ in spans}
    unknown = sorted(found - set(contents))
    if unknown:
        raise BlockError(f"no generated contents for the blocks {', '.join(unknown)}")
    missing = sorted(set(contents) - found)
    if missing:
        raise BlockError(
            "no block for "
            + ", ".join(missing)
            + ": add each as an empty block (`"
            + begin(missing[0])
            + "` and `"
            + end(missing[0])
            + "` on lines of their own) where it belongs"
        )
    out, last = [], 0
    for name, start, stop in spans:
        out.append(text[last:start])
        out.append(contents[name].strip("\n") + "\n")
        last = stop
    out.append(text[last:])
    return "".join(out)
