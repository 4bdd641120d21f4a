"""The short disaster-recovery drill (`make dr-drill` runs the long one): a stack of its own,
PostgreSQL killed and its data directory deleted under writes, restored to the latest point
and to a point in time, every integrity check and the RPO/RTO targets held."""

from __future__ import annotations

import pytest

from devstack.dr_drill import RPO_TARGET_S, RTO_TARGET_S, Settings, run


@pytest.mark.e2e
@pytest.mark.timeout(600)
def test_the_short_drill_restores_everything_acknowledged_within_the_targets() -> None:
    figures = run(Settings.short())
    print(figures.table())
    assert figures.failures == []
    rows = {measure: value for measure, value, _ in figures.rows}
    rpo = float(rows["RPO (newest acknowledged writes lost)"].split(" s ")[0])
    rto = float(rows["RTO (SIGKILL + data deleted → API verified, outbox resumed)"].split(" s ")[0])
    assert rpo <= RPO_TARGET_S
    assert rto <= RTO_TARGET_S
    assert (
        rows["row-level security FORCED"].split("/")[0]
        == rows["row-level security FORCED"].split("/")[1].split(" ")[0]
    )
    assert "the later write absent" in rows["PITR to just before an accidental DELETE"]
    assert "0 delivered under a second id" in rows["outbox after the restore"]
