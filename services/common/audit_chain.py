"""The audit trail's hash chain: each row's canonical form, its hash, and the verifier.

A row's hash is SHA-256(prev_hash || canonical), where canonical is the row's columns (all but
the two hashes) as JSON with sorted keys, no spaces, UTF-8, and the time as UTC ISO 8601 with
microseconds. Only the columns count, so anyone holding an export or read access to the table
can recompute every hash with this module or ten lines of their own (docs/operations/audit.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS_HASH = bytes(32)
# The columns the hash covers, in the export's order.
CHAINED_COLUMNS = (
    "tenant_id",
    "seq",
    "id",
    "occurred_at",
    "actor_type",
    "actor_id",
    "action",
    "target_type",
    "target_id",
    "outcome",
    "reason",
    "client_address",
    "user_agent",
    "request_id",
    "details",
)


def timestamp_text(moment: datetime) -> str:
    """The canonical form of a time: UTC, microseconds, `+00:00`."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def canonical(row: Mapping[str, Any]) -> bytes:
    """The bytes a row's hash covers (`row` holds at least CHAINED_COLUMNS)."""
    fields: dict[str, Any] = {}
    for column in CHAINED_COLUMNS:
        value = row[column]
        if isinstance(value, datetime):
            value = timestamp_text(value)
        elif column in ("tenant_id", "id"):
            value = str(value)
        fields[column] = value
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def chain_hash(prev_hash: bytes, row: Mapping[str, Any]) -> bytes:
    """The hash of `row` following a row whose hash is `prev_hash`."""
    return hashlib.sha256(bytes(prev_hash) + canonical(row)).digest()


@dataclass(frozen=True)
class Anchor:
    """Where a chain's retained rows start (after `seq`, whose hash was `hash`) and its head."""

    pruned_seq: int = 0
    pruned_hash: bytes = GENESIS_HASH
    head_seq: int | None = None
    head_hash: bytes | None = None


@dataclass(frozen=True)
class Verdict:
    """The verifier's answer: how many rows it checked, and the first fault (None: intact)."""

    rows: int
    fault: str | None

    @property
    def intact(self) -> bool:
        return self.fault is None


def verify(rows: Iterable[Mapping[str, Any]], anchor: Anchor = Anchor()) -> Verdict:
    """Walks one tenant's rows in seq order; the first row that was edited, removed, inserted
    or reordered is named in the fault."""
    expected_seq = anchor.pruned_seq + 1
    prev_hash = bytes(anchor.pruned_hash)
    checked = 0
    for row in rows:
        seq = int(row["seq"])
        where = f"row seq {seq} (id {row['id']})"
        if seq != expected_seq:
            gap = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
            missing = f"seq {gap}"
            return Verdict(checked, f"{where}: {missing} missing (removed from the chain)")
        if bytes(row["prev_hash"]) != prev_hash:
            return Verdict(
                checked, f"{where}: prev_hash does not match the hash of the row before it"
            )
        recomputed = chain_hash(prev_hash, row)
        if recomputed != bytes(row["hash"]):
            return Verdict(checked, f"{where}: content does not match its hash (edited)")
        prev_hash = recomputed
        expected_seq += 1
        checked += 1
    last_seq = expected_seq - 1
    if anchor.head_seq is not None:
        if anchor.head_seq != last_seq:
            return Verdict(
                checked,
                f"the chain ends at seq {last_seq} but its head says seq {anchor.head_seq}"
                " (rows removed from the end)",
            )
        if anchor.head_hash is not None and bytes(anchor.head_hash) != prev_hash:
            return Verdict(checked, f"the head's hash does not match row seq {last_seq}")
    return Verdict(checked, None)


def export_line(row: Mapping[str, Any]) -> str:
    """One row as a JSON line for a SIEM: the chained columns plus both hashes (hex)."""
    fields = json.loads(canonical(row))
    fields["prev_hash"] = bytes(row["prev_hash"]).hex()
    fields["hash"] = bytes(row["hash"]).hex()
    return json.dumps(fields, sort_keys=True, ensure_ascii=False)
