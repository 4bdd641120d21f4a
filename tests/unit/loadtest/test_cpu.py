"""loadtest/cpu.py: CPU by kind of process, and `other` from the whole machine's reading."""

from __future__ import annotations

import os

from loadtest import cpu

HZ = os.sysconf("SC_CLK_TCK")


def test_other_is_what_the_machine_used_beyond_the_stack() -> None:
    # A process that came and went between the snapshots is in neither, but in the machine's.
    before = {cpu.MACHINE: (1000, "machine"), 10: (0, "lattice"), 11: (0, "client")}
    after = {cpu.MACHINE: (1000 + 3 * HZ, "machine"), 10: (HZ, "lattice"), 11: (HZ, "client")}
    assert cpu.cores_used(before, after, 1.0) == {"client": 1.0, "lattice": 1.0, "other": 1.0}


def test_other_processes_seen_in_both_count_when_the_machine_reading_is_lower() -> None:
    before = {cpu.MACHINE: (0, "machine"), 10: (0, "lattice"), 20: (0, "other")}
    after = {cpu.MACHINE: (HZ, "machine"), 10: (HZ, "lattice"), 20: (HZ, "other")}
    assert cpu.cores_used(before, after, 1.0)["other"] == 1.0


def test_per_request_is_the_same_ticks_over_the_requests() -> None:
    before = {cpu.MACHINE: (0, "machine"), 10: (0, "envoy")}
    after = {cpu.MACHINE: (HZ, "machine"), 10: (HZ, "envoy")}
    assert cpu.per_request_ms(before, after, 1000) == {"envoy": 1.0}
